"""The parts of ``bench/gpu_check.py``, each run in its own process (``--part NAME``): the
environment, the CUDA tests, mapping throughput and compilation here; adaptation, torchrun and
Ray in ``bench/gpu_parts_adapt.py``; the context and recorder in ``bench/gpu_context.py``.

A part records its results as it goes (:class:`Recorder`, one JSON file), so a part stopped at
its cap still reports what it measured. Everything goes through the engine's public functions
and the ``lovecs`` command line, as ``bench/inference.py`` and ``bench/adaptation.py`` do.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

from gpu_context import DEFAULT_MODEL, ROOT, Ctx, Recorder, Skip, synthetic_raster
from gpu_parts_adapt import part_adapt_fast, part_adapt_paper, part_ray, part_torchrun

__all__ = ["PARTS", "Ctx", "Recorder", "Skip", "run_in_child"]


# -- helpers ----------------------------------------------------------------------------------------
def r50_model() -> tuple[Any, Any]:
    """An FPN-ResNet-50 (the paper's network; random weights) with the bundled model's classes,
    bands and statistics."""
    import torch

    from lovecs_core.model.card import ModelCard, read_card
    from lovecs_core.model.networks import build_model
    from lovecs_core.training.source import fpn_architecture

    base = read_card(str(DEFAULT_MODEL))
    card = ModelCard(
        architecture=fpn_architecture("resnet50", (256, 128)),
        classes=base.classes,
        band_names=base.band_names,
        normalization={"source": base.normalization["source"]},
        gsd=base.gsd,
        tile_size=512,
        overlap=64,
        name="FPN-ResNet-50 (random weights)",
    )
    torch.manual_seed(0)
    return card, build_model(card).eval()


def load(which: str) -> tuple[Any, Any]:
    from lovecs_core.model.networks import model_from_file

    return model_from_file(str(DEFAULT_MODEL)) if which == "default" else r50_model()


def autocast_for(device: Any, precision: str) -> Any:
    import contextlib

    import torch

    if precision == "float32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def model_only(
    net: Any, device: Any, tiles: int, tile: int, bands: int, batch: int, precision: str
) -> dict[str, Any]:
    """The network alone on ``tiles`` random tiles already on the device (one warm-up batch,
    whose seconds are reported apart: with torch.compile it holds the compilation)."""
    import torch

    x = torch.randn(batch, bands, tile, tile, device=device)
    if device.type == "cpu":
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *a: None)
    steps = max(1, -(-tiles // batch))
    with torch.inference_mode(), autocast_for(device, precision):
        t0 = time.perf_counter()
        net(x)
        sync()
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(steps):
            net(x).float().softmax(1)
        sync()
        seconds = time.perf_counter() - t0
    rate = steps * batch / seconds
    return {
        "tiles": steps * batch,
        "batch": batch,
        "seconds": round(seconds, 3),
        "first_batch_s": round(warm, 2),
        "tiles_per_s": round(rate, 1),
        "mpix_per_s": round(rate * tile * tile / 1e6, 1),
    }


def end_to_end(ctx: Ctx, model: tuple[Any, Any], raster: Path, amp: bool, tag: str) -> dict:
    """``predict_raster`` on the raster: read, align, model, blend, write (with overviews)."""
    from lovecs_core.mapping.predict import predict_raster

    out = ctx.work / f"map-{tag}.tif"
    r = predict_raster(
        model,
        raster,
        out,
        device=ctx.device,
        tile=ctx.args.tile,
        batch_size=ctx.args.batch_size,
        amp=amp,
        resample=False,
        write_style=False,
    )
    pixels = ctx.args.size**2
    return {
        "seconds": round(r.seconds, 2),
        "precision": r.precision,
        "tiles": r.tiles_total - r.tiles_skipped,
        "tile": r.tile,
        "overlap": r.overlap,
        "raster_mpix_per_s": round(pixels / 1e6 / r.seconds, 2),
        "map_bytes": out.stat().st_size,
    }


def precisions(ctx: Ctx) -> list[str]:
    return ["float32", "bfloat16", "float16"] if ctx.cuda else ["float32"]


def tile_count(size: int, tile: int, overlap: int) -> int:
    stride = tile - overlap
    n = max(1, math.ceil((size - overlap) / stride))
    return n * n


# -- the parts ------------------------------------------------------------------------------------
def part_env(ctx: Ctx) -> None:
    import numpy as np
    import torch
    from osgeo import gdal

    put = ctx.put
    put("python", platform.python_version())
    put("platform", platform.platform())
    put("cpus", os.cpu_count())
    put("torch", torch.__version__)
    put("torch_cuda", torch.version.cuda)
    put("numpy", np.__version__)
    put("gdal", gdal.__version__)
    put("smp", _version("segmentation-models-pytorch"))
    put("ray", _version("ray"))
    put("lovecs_core", str(Path(str(__import__("lovecs_core").__file__)).parent))
    put("git", _run_text(["git", "rev-parse", "--short", "HEAD"]))
    if torch.cuda.is_available():
        i = torch.cuda.current_device()
        prop = torch.cuda.get_device_properties(i)
        put("device", f"{prop.name}, {prop.total_memory / 1024**3:.0f} GiB")
        put("capability", f"{prop.major}.{prop.minor}")
        put("multiprocessors", prop.multi_processor_count)
        put("cudnn", torch.backends.cudnn.version())
        put("nccl", ".".join(map(str, torch.cuda.nccl.version())))
        put("bf16_supported", torch.cuda.is_bf16_supported())
        put("tf32", {"cudnn": torch.backends.cudnn.allow_tf32,
                     "matmul": torch.backends.cuda.matmul.allow_tf32})  # fmt: skip
        put("nvidia_smi", _run_text(["nvidia-smi", "--query-gpu=name,driver_version,"
                                     "memory.total,clocks.max.sm", "--format=csv,noheader"]))  # fmt: skip
    else:
        put("device", f"CPU {platform.machine()}, {torch.get_num_threads()} thread(s)")
        from lovecs_core.compute.device import cuda_unavailable_reason

        put("cuda", cuda_unavailable_reason())
    if ctx.cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda but torch sees no GPU")


def _version(distribution: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def _run_text(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    return (done.stdout.strip() or done.stderr.strip())[:300]


def part_cuda_tests(ctx: Ctx) -> None:
    import xml.etree.ElementTree as ET

    xml = ctx.work / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:qgis"]
    cmd += ["-m", "cuda", "--junitxml", str(xml), "tests/core/compute", "-o", "timeout=120"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=ctx.left() - 3)
    print(done.stdout[-6000:], done.stderr[-3000:], sep="\n")
    if not xml.is_file():
        raise RuntimeError(f"pytest wrote no report (exit {done.returncode})")
    outcomes = {}
    for case in ET.parse(xml).iter("testcase"):
        kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        detail = next((c.get("message", "") for c in case if c.tag != "system-out"), "")
        outcomes[case.get("name", "?")] = kind + (f": {detail[:200]}" if detail else "")
    ctx.put("tests", outcomes)
    kinds = [v.split(":")[0] for v in outcomes.values()]
    ctx.put("summary", {k: kinds.count(k) for k in ("passed", "skipped", "failure", "error")})
    if not outcomes:
        raise RuntimeError("no test marked cuda was collected")
    if done.returncode not in (0, 5) or "failure" in kinds or "error" in kinds:
        raise RuntimeError(f"CUDA tests failed: {done.stdout.strip().splitlines()[-1:]}")
    if not ctx.cuda:
        ctx.rec.set(reason="no CUDA: every test marked cuda skips (collected and skipped)")


def mapping(ctx: Ctx, which: str) -> None:
    import torch

    from lovecs_core.compute.device import resolve_device
    from lovecs_core.mapping.predict import default_batch_size, tile_settings

    device = resolve_device(ctx.device)
    card, net = load(which)
    net.to(device)
    tile, overlap = tile_settings(card, ctx.args.tile, None)
    batch = ctx.args.batch_size or default_batch_size(device)
    raster = synthetic_raster(Path(ctx.args.out) / "work" / "raster.tif", ctx.args.size, card.gsd)
    params = sum(p.numel() for p in net.parameters())
    ctx.put(
        "model", f"{card.name}: {card.architecture.get('encoder')}, {params / 1e6:.1f} M parameters"
    )
    ctx.put("raster", f"{ctx.args.size} px square, tile {tile}, overlap {overlap}, batch {batch}")
    tiles = tile_count(ctx.args.size, tile, overlap)
    for precision in precisions(ctx):
        ctx.put(
            f"model_only_{precision}",
            model_only(net, device, tiles, tile, card.band_count, batch, precision),
        )
    for amp in (True, False) if ctx.cuda else (False,):
        tag = "amp" if amp else "float32"
        ctx.put(f"end_to_end_{tag}", end_to_end(ctx, (card, net), raster, amp, f"{which}-{tag}"))
    if ctx.cuda:
        ctx.put("peak_gpu_memory_gib", round(torch.cuda.max_memory_allocated() / 1024**3, 2))


def part_mapping_default(ctx: Ctx) -> None:
    mapping(ctx, "default")


def part_mapping_r50(ctx: Ctx) -> None:
    mapping(ctx, "r50")


#: seconds a compilation and its measures may take (inductor, one network, one precision)
COMPILE_S = 45.0


def part_compile(ctx: Ctx) -> None:
    """``torch.compile`` (inductor on CUDA; on a CPU the ``eager`` backend, which checks the
    graph capture in seconds): first the bundled model end to end, compiled (compare with
    mapping_default's end_to_end_amp), then the model alone compiled against eager, in priority
    order until the cap."""
    import torch

    from lovecs_core.compute.device import resolve_device
    from lovecs_core.mapping.predict import default_batch_size, tile_settings

    device = resolve_device(ctx.device)
    backend = "inductor" if ctx.cuda else "eager"
    ctx.put("backend", backend)
    card, net = load("default")
    net.compile(backend=backend)
    raster = synthetic_raster(Path(ctx.args.out) / "work" / "raster.tif", ctx.args.size, card.gsd)
    ctx.put("default_end_to_end_compiled", end_to_end(ctx, (card, net), raster, ctx.cuda, "compiled"))  # fmt: skip
    torch._dynamo.reset()
    batch = ctx.args.batch_size or default_batch_size(device)
    runs = [("default", "bfloat16"), ("r50", "bfloat16"), ("default", "float32"), ("r50", "float32")]  # fmt: skip
    for i, (which, precision) in enumerate(runs if ctx.cuda else []):  # a CPU: the pipeline's
        if ctx.left() < COMPILE_S:  # a compilation may not fit: say what was left out
            ctx.put("not_run", [f"{w}_{p}" for w, p in runs[i:]] + [f"{ctx.left():.0f} s left"])
            break
        card, net = load(which)
        net.to(device)
        tile, overlap = tile_settings(card, ctx.args.tile, None)
        tiles = tile_count(ctx.args.size, tile, overlap)
        eager = model_only(net, device, tiles, tile, card.band_count, batch, precision)
        net.compile(backend=backend)
        compiled = model_only(net, device, tiles, tile, card.band_count, batch, precision)
        speedup = round(eager["seconds"] / max(compiled["seconds"], 1e-9), 2)
        ctx.put(f"{which}_{precision}", {"eager": eager, "compiled": compiled, "speedup": speedup})
        torch._dynamo.reset()


PARTS: dict[str, Callable[[Ctx], None]] = {
    "env": part_env,
    "cuda_tests": part_cuda_tests,
    "mapping_default": part_mapping_default,
    "mapping_r50": part_mapping_r50,
    "adapt_fast": part_adapt_fast,
    "torchrun": part_torchrun,
    "ray": part_ray,
    "compile": part_compile,
    "adapt_paper": part_adapt_paper,
}


def run_in_child(args: argparse.Namespace) -> int:
    """Run ``args.part``; its status and results go to ``args.part_file``."""
    rec = Recorder(Path(args.part_file))
    try:
        PARTS[args.part](Ctx(args, rec))
    except Skip as exc:
        rec.set(status="skipped", reason=str(exc))
        return 0
    except Exception as exc:  # noqa: BLE001 - recorded; the orchestrator goes on
        traceback.print_exc()
        rec.set(status="failed", reason=f"{type(exc).__name__}: {exc}"[:600])
        return 1
    rec.set(status="passed")
    return 0
