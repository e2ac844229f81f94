"""Side-by-side CPU comparison with the peer geoai-py (issue 12): the same model, raster and
tiling, each tool in its own fresh process, one run at a time. Not a unit test; writes the
``peer-comparison:cpu`` section of bench/RESULTS.md.

- model: smp FPN ResNet-18, random weights (``--seed``), 3 bands, 5 classes; ours reads it from
  a ``.lovecs`` file (card: plain BatchNorm, mean 0 / std 255, no GSD), the peer gets the same
  state dict loaded into ``smp.FPN`` (LoveCS's SemanticFPN is that module under ``net.``).
- raster: target_b/scene.tif (UInt16, values up to ~830) scaled once to Byte (0..1023 -> 0..255,
  nodata 0 kept) so that the peer's default preprocessing (x / 255) and our card's normalisation
  ((x - 0) / 255) give the network the same input; then VRT mosaics of that GeoTIFF at the
  asked sizes, written out as tiled GeoTIFFs (all under the git-ignored bench/data/peer).
- peer: ``geoai.inference.predict_geotiff(model, IN, OUT, tile_size=512, overlap=64,
  batch_size=4, num_classes=5, device="cpu")`` with its own ``postprocess_fn`` doing the argmax
  (uint8 output); ours: ``lovecs_core.mapping.predict.predict_raster(model_file, IN, OUT, tile=512,
  overlap=64, device="cpu", cpu_bf16=True)``, as ``lovecs predict`` runs it by default
  (bfloat16 where the CPU computes it natively, batch 1 on a CPU, overviews built), and once
  more in float32 (``cpu_bf16=False``, as ``lovecs predict --no-amp``) for the exact result.
- measured: wall seconds of each child process (imports included) and of the call alone, the
  child's peak RSS (``getrusage``), and the share of pixels (valid in our map) where the maps
  agree.

    python bench/peer_comparison.py --peer-python /work/peer-venv/bin/python
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from adaptation import DEFAULT_DATA, write_section
from inference_memory import write_mosaic_vrt

ROOT = Path(__file__).resolve().parents[1]

DATA = ROOT / "bench" / "data" / "peer"
KEY = "peer-comparison:cpu"
TILE, OVERLAP, CLASSES, BANDS = 512, 64, 5, 3

PEER_CHILD = """
import json, resource, sys, time
import numpy as np, torch
import segmentation_models_pytorch as smp
from geoai.inference import predict_geotiff
import geoai
weights, raster, out = sys.argv[1:4]
model = smp.FPN(encoder_name="resnet18", encoder_weights=None, in_channels=3, classes=5)
model.load_state_dict(torch.load(weights, map_location="cpu"), strict=True)
t0 = time.perf_counter()
predict_geotiff(model, raster, out, tile_size=512, overlap=64, batch_size=4, num_classes=5,
                device="cpu", output_dtype="uint8", output_nodata=255, verbose=False,
                postprocess_fn=lambda a: a.argmax(0).astype(np.uint8))
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                  * 1024, "version": geoai.__version__, "threads": torch.get_num_threads()}))
"""

OURS_CHILD = """
import json, resource, sys, time
import torch
sys.path.insert(0, sys.argv[4])
from lovecs_core.mapping.predict import predict_raster
model, raster, out = sys.argv[1:4]
bf16 = sys.argv[5:6] != ["float32"]  # our default: bfloat16 where the CPU computes it
t0 = time.perf_counter()
r = predict_raster(model, raster, out, tile=512, overlap=64, device="cpu", cpu_bf16=bf16)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                  * 1024, "tiles": r.tiles_total, "alignment": r.alignment,
                  "threads": torch.get_num_threads()}))
"""


def byte_scene(src: Path) -> Path:
    """``src`` scaled to Byte once (0..1023 -> 0..255, nodata 0), tiled GeoTIFF."""
    from osgeo import gdal

    out = DATA / "scene-byte.tif"
    if out.is_file():
        return out
    DATA.mkdir(parents=True, exist_ok=True)
    gdal.Translate(
        str(out),
        str(src),
        outputType=gdal.GDT_Byte,
        scaleParams=[[0, 1023, 0, 255]],
        noData=0,
        creationOptions=["TILED=YES"],
    )
    return out


def mosaic(src: Path, size: int) -> Path:
    """A ``size x size`` GeoTIFF tiling ``src``: built as a VRT, then written out (the peer
    copies its input's profile for its output and so cannot run on a VRT: GDAL does not write
    through a VRT's sources)."""
    from osgeo import gdal

    tif = DATA / f"mosaic-{size}.tif"
    if tif.is_file():
        return tif
    out = write_mosaic_vrt(src, size, size, DATA / f"mosaic-{size}.vrt")
    gdal.Translate(str(tif), str(out), creationOptions=["TILED=YES"])
    return tif


def models(seed: int) -> tuple[Path, Path]:
    """The same random FPN ResNet-18 as a LoveCS model file and as an smp state dict."""
    import torch

    from lovecs_core.model.card import ClassInfo, ModelCard, save_model
    from lovecs_core.model.networks import architecture, build_model

    torch.manual_seed(seed)
    colors = ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00"]
    card = ModelCard(
        architecture=architecture("fpn", encoder="resnet18", csn=False),
        classes=[ClassInfo(i + 1, f"class {i + 1}", c) for i, c in enumerate(colors)],
        band_names=["red", "green", "blue"],
        normalization={"source": {"mean": [0.0] * BANDS, "std": [255.0] * BANDS}},
        gsd=None,
        tile_size=TILE,
        overlap=OVERLAP,
        name=f"random FPN ResNet-18 (seed {seed}) for the peer comparison",
    )
    net = build_model(card).eval()
    ours = save_model(DATA / f"fpn18-seed{seed}.lovecs", card, net.state_dict())
    peer = DATA / f"fpn18-seed{seed}.pt"
    state = {k[len("net.") :]: v for k, v in net.state_dict().items()}
    torch.save(state, peer)
    return ours, peer


def wait_for_quiet(max_load: float, latest: Optional[dt.datetime]) -> Optional[float]:
    """Block until the 1-minute load average is below ``max_load`` and return it; None once
    ``latest`` has passed (start no more runs)."""
    while True:
        if latest is not None and dt.datetime.now(dt.timezone.utc) > latest:
            return None
        load = os.getloadavg()[0]
        if load < max_load:
            return load
        print(f"  load {load:.2f} >= {max_load}: waiting", flush=True)
        time.sleep(10)


def run_child(cmd: list[str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["wall"] = wall
    return row


def agreement(ours: Path, peer: Path, offset: int = 1) -> dict[str, Any]:
    """Share of pixels valid in our map (code != 0) where peer argmax + ``offset`` == our code
    (``offset=0``: ``peer`` is one of our maps too)."""
    from osgeo import gdal

    a, b = gdal.Open(str(ours)), gdal.Open(str(peer))
    w, h = a.RasterXSize, a.RasterYSize
    same = valid = 0
    hist = np.zeros(CLASSES + 1, dtype=np.int64)
    for y in range(0, h, 1024):
        rows = min(1024, h - y)
        x = a.GetRasterBand(1).ReadAsArray(0, y, w, rows)
        p = b.GetRasterBand(1).ReadAsArray(0, y, w, rows).astype(np.int16) + offset
        m = x != 0
        valid += int(m.sum())
        same += int((x[m] == p[m]).sum())
        hist += np.bincount(x.ravel(), minlength=CLASSES + 1)[: CLASSES + 1]
    return {
        "agree": same / max(valid, 1),
        "valid": valid,
        "pixels": w * h,
        "shares": (hist[1:] / max(valid, 1)).tolist(),
    }


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-python", default="/work/peer-venv/bin/python")
    p.add_argument("--sizes", nargs="+", type=int, default=[4096, 8192])
    p.add_argument("--scene", default=str(DEFAULT_DATA / "target_b" / "scene.tif"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-load", type=float, default=1.0, help="wait until load is below this")
    p.add_argument("--latest", help="HH:MM UTC: start no run after this (rows done are written)")
    p.add_argument("--prepare", action="store_true", help="only build the inputs and models")
    p.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    latest = None
    if args.latest:
        hh, mm = (int(v) for v in args.latest.split(":"))
        latest = dt.datetime.now(dt.timezone.utc).replace(hour=hh, minute=mm, second=0)

    DATA.mkdir(parents=True, exist_ok=True)
    scene = byte_scene(Path(args.scene))
    ours_model, peer_model = models(args.seed)
    rasters = {size: mosaic(scene, size) for size in args.sizes}
    if args.prepare:
        return 0
    rows: list[dict[str, Any]] = []
    for size, raster in rasters.items():
        whos = ("peer", "ours", "float32")
        outs = {who: DATA / f"{who}-{size}.tif" for who in whos}
        for out in outs.values():
            for f in out.parent.glob(out.name + "*"):
                f.unlink()
        row: dict[str, Any] = {"size": size}
        for who in whos:
            load = wait_for_quiet(args.max_load, latest)
            if load is None:
                print(f"past {args.latest} UTC: no more runs", flush=True)
                return finish(rows, args)
            print(f"{size}: {who} (load {load:.2f})", flush=True)
            if who == "peer":
                cmd = [args.peer_python, "-c", PEER_CHILD, str(peer_model), str(raster)]
                cmd += [str(outs["peer"])]
            else:
                cmd = [sys.executable, "-c", OURS_CHILD, str(ours_model), str(raster)]
                cmd += [str(outs[who]), str(ROOT), who]
            res = run_child(cmd)
            res["load"] = load
            row[who] = res
            print(f"  {json.dumps(res)}", flush=True)
        row.update(agreement(outs["ours"], outs["peer"]))
        row["float32"]["agree_peer"] = agreement(outs["float32"], outs["peer"])["agree"]
        row["agree_float32"] = agreement(outs["ours"], outs["float32"], offset=0)["agree"]
        print(f"  agree {row['agree']:.4%}, class shares {row['shares']}", flush=True)
        rows.append(row)
        finish(rows, args)  # what is done so far is kept, whatever happens to the next size
    return 0


def finish(rows: list[dict[str, Any]], args: argparse.Namespace) -> int:
    if not rows:
        return 1
    text = report(rows, args)
    print(text, flush=True)
    if not args.no_write:
        write_section(Path(args.results), KEY, text)
    return 0


def _commit() -> str:
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "lovecs_core"], cwd=ROOT)
    return head + ("+" if dirty.returncode else "")


def bf16_native() -> bool:
    from lovecs_core.compute.runtime import cpu_bf16_supported

    return cpu_bf16_supported()


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    gb = 1e9
    version = rows[0]["peer"].get("version", "?") if rows else "?"
    loads = [r[w]["load"] for r in rows for w in ("peer", "ours", "float32") if w in r]
    lines = [
        "### Side by side with the peer geoai-py (CPU, issue 12)",
        "",
        f"- command: `python bench/peer_comparison.py {' '.join(sys.argv[1:])}`".rstrip(),
        f"- written: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}, commit {_commit()};"
        f" CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch"
        f" threads {rows[0]['ours']['threads'] if rows else '?'} in both; runs one at a time,"
        f" each started at 1-minute load {min(loads, default=0):.2f} to"
        f" {max(loads, default=0):.2f}",
        f"- peer: geoai-py {version} in a separate venv sharing this project's torch, torchvision,"
        " segmentation-models-pytorch; `predict_geotiff(model, IN, OUT, tile_size=512,"
        ' overlap=64, batch_size=4, num_classes=5, device="cpu")` with `postprocess_fn` = argmax'
        " (uint8 output; its defaults otherwise: spline blending of logits, x/255 input)",
        '- ours: `predict_raster(model_file, IN, OUT, tile=512, overlap=64, device="cpu",'
        " cpu_bf16=True)`, what `lovecs predict` and the plugin run by default (bfloat16 autocast"
        f" where the CPU computes it natively: {'yes' if bf16_native() else 'no'} on this one;"
        " batch 1 on a CPU, overviews built); ours float32: the same with `cpu_bf16=False`"
        " (`lovecs predict --no-amp`)",
        f"- model: smp FPN ResNet-18, random weights (seed {args.seed}), 3 bands, 5 classes, the"
        " same state dict in both; input: VRT mosaics of target_b/scene.tif scaled to Byte"
        " (0..1023 -> 0..255, nodata 0), written out as tiled uncompressed GeoTIFFs (the peer"
        " cannot write its output when the input is a VRT)",
        "- wall: the child process end to end (imports, model load, inference, write); call: the"
        " inference call alone; peak RSS: the child's ru_maxrss (GB = 10^9 bytes); agree: share"
        " of pixels valid in our map (the peer ignores nodata) with the same class; agree f32:"
        " our default map against our float32 map",
        "",
        "| size | peer wall s | ours wall s | peer/ours | ours f32 wall s | peer/ours f32"
        " | peer call s | ours call s | peer peak GB | ours peak GB | agree peer % |"
        " agree f32 % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        pe, ou, f32 = r["peer"], r["ours"], r["float32"]
        lines.append(
            f"| {r['size']}² | {pe['wall']:.1f} | {ou['wall']:.1f} | {pe['wall'] / ou['wall']:.2f}x"
            f" | {f32['wall']:.1f} | {pe['wall'] / f32['wall']:.2f}x"
            f" | {pe['seconds']:.1f} | {ou['seconds']:.1f} | {pe['maxrss'] / gb:.2f}"
            f" | {ou['maxrss'] / gb:.2f} | {100 * r['agree']:.2f}"
            f" | {100 * r['agree_float32']:.2f} |"
        )
    lines += [
        "",
        "Class shares in our map (classes 1..5): "
        + "; ".join(f"{r['size']}²: " + ", ".join(f"{s:.1%}" for s in r["shares"]) for r in rows),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
