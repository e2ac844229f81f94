"""The parts of ``bench/gpu_check.py``, each run in its own process (``--part NAME``).

A part records its results as it goes (:class:`Recorder`, one JSON file), so a part stopped at
its cap still reports what it measured. Everything goes through the engine's public functions
and the ``lovecs`` command line, as ``bench/inference.py`` and ``bench/adaptation.py`` do.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_MODEL = ROOT / "resources" / "models" / "default.lovecs"


class Skip(Exception):
    """The part cannot run here; the message says why."""


class Recorder:
    """A part's status and results, rewritten to one JSON file at each change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"status": "running", "results": {}}
        self.flush()

    def put(self, key: str, value: Any) -> None:
        self.data["results"][key] = value
        self.flush()

    def set(self, **items: Any) -> None:
        self.data.update(items)
        self.flush()

    def flush(self) -> None:
        tmp = self.path.with_name(self.path.name + ".part")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        os.replace(tmp, self.path)


class Ctx:
    """What a part gets: the arguments, its recorder and its work folder."""

    def __init__(self, args: argparse.Namespace, rec: Recorder) -> None:
        self.args, self.rec = args, rec
        self.device: str = args.device
        self.cuda = args.device.startswith("cuda")
        self.work = Path(args.out) / "work" / args.part
        self.work.mkdir(parents=True, exist_ok=True)
        self.deadline = time.monotonic() + (args.cap_s or 1e9)

    def put(self, key: str, value: Any) -> None:
        self.rec.put(key, value)

    def left(self) -> float:
        return self.deadline - time.monotonic()


# -- shared helpers -------------------------------------------------------------------------------
def synthetic_raster(path: Path, size: int, gsd: float, seed: int = 0) -> Path:
    """A 3-band uint8 GeoTIFF ``size`` px square (smooth patches plus noise), UTM 40N, pixel
    ``gsd`` m; made once and reused by the parts."""
    if path.is_file():
        return path
    import numpy as np
    from osgeo import gdal, osr

    gdal.UseExceptions()
    rng = np.random.default_rng(seed)
    tmp = path.with_name(path.name + ".part.tif")
    ds = gdal.GetDriverByName("GTiff").Create(
        str(tmp), size, size, 3, gdal.GDT_Byte, ["TILED=YES", "BIGTIFF=IF_SAFER"]
    )
    ds.SetGeoTransform((500000.0, gsd, 0.0, 2800000.0, 0.0, -gsd))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32640)
    ds.SetProjection(srs.ExportToWkt())
    cell = 64
    patches = rng.integers(30, 220, (3, math.ceil(size / cell) + 1, math.ceil(size / cell) + 1))
    for y in range(0, size, 1024):
        h = min(1024, size - y)
        rows = np.repeat(patches[:, y // cell : (y + h) // cell + 1], cell, axis=1)
        block = np.repeat(rows, cell, axis=2)[:, (y % cell) : (y % cell) + h, :size]
        noisy = block + rng.integers(-20, 21, block.shape)
        for b in range(3):
            ds.GetRasterBand(b + 1).WriteArray(np.clip(noisy[b], 0, 255).astype(np.uint8), 0, y)
    ds = None
    os.replace(tmp, path)
    return path


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
