"""The adaptation and cluster parts of ``bench/gpu_check.py`` (``adapt_fast``, ``adapt_paper``,
``torchrun``, ``ray``), each run in its own process through ``bench/gpu_parts.py``: ``lovecs
adapt`` on target_b, adaptation under torchrun, and mapping on a local Ray cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from gpu_context import DEFAULT_MODEL, ROOT, Ctx, Skip, synthetic_raster


def tiny_model(path: Path) -> Path:
    """A tiny network (random weights) with the bundled model's classes, bands and statistics at
    target_b's 1.5 m: the CPU rehearsal of the torchrun part."""
    import torch

    from lovecs_core.model.card import ModelCard, read_card, save_model
    from lovecs_core.model.networks import architecture, build_model

    base = read_card(str(DEFAULT_MODEL))
    card = ModelCard(
        architecture=architecture("tiny", csn=True, width=8, depth=2),
        classes=base.classes,
        band_names=base.band_names,
        normalization={"source": base.normalization["source"]},
        gsd=1.5,
        tile_size=64,
        overlap=16,
        name="tiny (random weights)",
    )
    torch.manual_seed(0)
    return save_model(path, card, build_model(card).state_dict())


# -- adaptation -----------------------------------------------------------------------------------
def target_b(ctx: Ctx) -> tuple[Path, Path]:
    """target_b's scene and labels; on a CPU a centred window of each (VRT)."""
    folder = Path(ctx.args.data) / "target_b"
    scene, labels = folder / "scene.tif", folder / "labels.tif"
    if not scene.is_file() or not labels.is_file():
        raise Skip(f"target_b not found under {ctx.args.data} (set LOVECS_SHARED_DATA or --data)")
    if ctx.cuda:
        return scene, labels
    w = CPU_WINDOW
    return crop(scene, ctx.work / "scene.vrt", w), crop(labels, ctx.work / "labels.vrt", w)


def crop(src: Path, dst: Path, size: int) -> Path:
    from osgeo import gdal

    gdal.UseExceptions()
    ds = gdal.Open(str(src))
    x0, y0 = max(0, (ds.RasterXSize - size) // 2), max(0, (ds.RasterYSize - size) // 2)
    gdal.Translate(str(dst), ds, srcWin=[x0, y0, size, size], format="VRT")
    return dst


#: ``lovecs adapt`` settings of the CPU rehearsal and of the torchrun part: one round
TINY_ADAPT = ["--iterations", "1", "--refresh-every", "1", "--batch-size", "1", "--crop", "64",
              "--pl-tile", "128", "--bn-windows", "2", "--n-scales", "1"]  # fmt: skip
#: target_b's window side for the CPU rehearsal (x3 at the bundled model's GSD)
CPU_WINDOW = 64


def adapt_args(
    ctx: Ctx, preset: str, scene: Path, out: Path, tiny: bool, model: Path = DEFAULT_MODEL
) -> list[str]:
    args = ["adapt", "--model", str(model), "--target", str(scene), "--out", str(out)]
    args += ["--preset", preset, "--device", ctx.device, "--map", str(out.with_suffix(".tif"))]
    return args + (TINY_ADAPT if tiny else [])


class Training:
    """Training iterations seen in progress events, and their rate (iterations per second)."""

    def __init__(self) -> None:
        self.first: Optional[tuple[float, int]] = None
        self.rate: Optional[float] = None

    def see(self, now: float, iteration: Any) -> None:
        if not isinstance(iteration, int):
            return
        if self.first is None:
            self.first = (now, iteration)
        elif iteration > self.first[1] and now > self.first[0]:
            self.rate = (iteration - self.first[1]) / (now - self.first[0])


def follow(ctx: Ctx, cmd: list[str], env: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """Run a ``lovecs --progress json`` command, recording its stage, training iteration and
    iteration rate as it goes (a part stopped at its cap still says how far it got and how fast
    it went); returns the result event."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
    result: dict[str, Any] = {}
    last, training = 0.0, Training()
    assert proc.stdout is not None
    for line in proc.stdout:
        event, now = _json(line), time.monotonic()
        if event.get("type") == "result":
            result = event
        elif event.get("type") == "progress":
            extra = event.get("extra") or {}
            if event.get("stage") == "training":
                training.see(now, extra.get("iteration"))
            if now - last > 5:
                last = now
                rate = None if training.rate is None else round(training.rate, 2)
                ctx.put("progress", {"stage": event.get("stage"), "message": event.get("message"),
                                     "iteration": extra.get("iteration"),
                                     "iterations_per_s": rate, "seconds": round(now - t0, 1)})  # fmt: skip
        elif event.get("type") == "error":
            ctx.put("error", event)
    rc = proc.wait()
    ctx.put("seconds", round(time.monotonic() - t0, 1))
    if training.rate is not None:
        ctx.put("iterations_per_s", round(training.rate, 2))
    if rc != 0 or not result:
        raise RuntimeError(f"{' '.join(cmd[2:5])}... exit code {rc}")
    return result


def _json(line: str) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def score(map_path: Path, labels: Path) -> dict[str, Any]:
    from lovecs_core.evaluation.metrics import evaluate_rasters
    from lovecs_core.model.card import read_card

    classes = read_card(str(DEFAULT_MODEL)).classes
    acc = evaluate_rasters(map_path, labels, [c.code for c in classes], [c.name for c in classes])
    d = acc.to_dict()
    return {"miou": round(d["miou"], 4), "overall_accuracy": round(d["overall_accuracy"], 4)}


def adapt(ctx: Ctx, preset: str) -> None:
    scene, labels = target_b(ctx)
    out = ctx.work / f"adapted-{preset}.lovecs"
    for stale in ctx.work.glob("adapted-*"):
        stale.unlink()
    ctx.put("scene", f"{scene}{'' if ctx.cuda else ' (a window, tiny settings)'}")
    cmd = [sys.executable, "-m", "lovecs_core", "--progress", "json"]
    args = adapt_args(ctx, preset, scene, out, tiny=not ctx.cuda)
    n = ctx.args.paper_iterations if preset == "paper" else None
    if n:  # a shortened paper schedule, said so in the report
        args += ["--iterations", str(n), "--refresh-every", str(max(1, 2 * n // 5))]
        ctx.put(
            "schedule", f"{n} iterations (--paper-iterations), refresh every {max(1, 2 * n // 5)}"
        )
    result = follow(ctx, cmd + args)
    health = result.get("health") or {}
    ctx.put("verdict", health.get("verdict"))
    ctx.put("delivered", "aligned source model" if result.get("rejected") else "adapted model")
    ctx.put("adapt_seconds", result.get("seconds"))
    ctx.put("device", result.get("device"))
    ctx.put("map", score(Path(result["map"]), labels))
    if result.get("rejected"):  # how the adapted model the check rejected would have scored
        from lovecs_core.mapping.predict import predict_raster

        rmap = ctx.work / "rejected.tif"
        predict_raster(result["rejected"], scene, rmap, device=ctx.device, write_style=False)
        ctx.put("rejected_model_map", score(rmap, labels))


def part_adapt_fast(ctx: Ctx) -> None:
    adapt(ctx, "fast")


def part_adapt_paper(ctx: Ctx) -> None:
    if not ctx.cuda:
        raise Skip("the paper preset (5000 iterations of 8 x 512 px) needs a GPU; on a CPU "
                   "adapt_fast runs the same code path")  # fmt: skip
    adapt(ctx, "paper")


def part_torchrun(ctx: Ctx) -> None:
    """``torchrun --nproc_per_node 1`` runs bench/gpu_rank.py: the rank joins a process group
    (NCCL for CUDA tensors) and runs ``lovecs adapt`` through the engine's multi-process path."""
    scene, _ = target_b(ctx)
    model, extra = DEFAULT_MODEL, ["--keep-adapted"]
    if ctx.cuda:
        scene = crop(scene, ctx.work / "scene.vrt", 512)
    else:  # seconds on a CPU: a tiny network, no source term
        model, extra = tiny_model(ctx.work / "tiny.lovecs"), extra + ["--source-weight", "0"]
    ctx.put("model", str(model))
    out = ctx.work / "adapted.lovecs"
    info = ctx.work / "rank.json"
    info.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    cmd += [str(ROOT / "bench" / "gpu_rank.py"), "--progress", "json"]
    cmd += adapt_args(ctx, "fast", scene, out, tiny=True, model=model) + extra
    env = {**os.environ, "GPU_CHECK_RANK_INFO": str(info), "LOVECS_DIST_TIMEOUT_S": "60"}
    result = follow(ctx, cmd, env)
    ctx.put("rank", _json(info.read_text()) if info.is_file() else "no rank info")
    ctx.put("adapt_device", result.get("device"))
    ctx.put("rounds", len(result.get("rounds") or []))


def part_ray(ctx: Ctx) -> None:
    """One Ray worker (a GPU on CUDA) maps a raster; the map must equal one process's."""
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise Skip(f"ray is not importable here ({exc}); on the device it needs the second "
                   "call of docs/gpu.md") from None  # fmt: skip
    import numpy as np
    import torch
    from osgeo import gdal

    from lovecs_core.mapping.predict import predict_raster
    from lovecs_core.mapping.ray.map import RayOptions, predict_raster_ray
    from lovecs_core.model.card import read_card

    size = 2048 if ctx.cuda else 256
    raster = synthetic_raster(
        ctx.work / "raster.tif", size, read_card(str(DEFAULT_MODEL)).gsd or 0.5
    )
    if not ctx.cuda:
        torch.set_num_threads(1)  # the worker's thread count: the same float32 sums
    common = dict(device=ctx.device, tile=ctx.args.tile, resample=False, write_style=False)
    one = predict_raster(str(DEFAULT_MODEL), raster, ctx.work / "one.tif", **common)
    ctx.put("one_process_s", round(one.seconds, 2))
    options = RayOptions(workers=1, cpus_per_worker=1)
    two = predict_raster_ray(
        str(DEFAULT_MODEL), raster, ctx.work / "ray.tif", ray_options=options, **common
    )
    ctx.put("ray_s", round(two.seconds, 2))
    ctx.put("cluster", two.cluster)
    a, b = (gdal.Open(str(p)).ReadAsArray() for p in (one.output, two.output))
    differ = int(np.count_nonzero(a != b))
    ctx.put("pixels_differing", differ)
    if differ:
        raise RuntimeError(f"the Ray map differs from one process's in {differ} pixels")
