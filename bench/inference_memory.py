"""Peak RSS of ``lovecs predict`` against raster size and width (``bench/inference.py --memory``).

Inputs are VRT mosaics of one real scene (``target_b/scene.tif``, 1831 x 2077 RGB, tiled, with
nodata), built under ``bench/data/inference`` (git-ignored): squares from 4 MPix to 1 GPix and
very wide strips. Every run is a fresh process pinned to ``--cores`` CPU cores with as many torch
threads; its peak is the kernel's VmHWM, reset after the imports and the model load (``base``).
Models: the bundled one and a null model (the same card with a 1x1 convolution: what the read,
blend and write stages alone cost, the I/O ceiling).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data" / "inference"
PLOT = ROOT / "bench" / "inference_memory.png"
ROWS = ROOT / "bench" / "out" / "inference" / "memory-rows.json"  # kept for --keep
SHARED = Path(os.environ.get("LOVECS_SHARED_DATA", ROOT.parent / "shared" / "data"))
MODEL = ROOT / "resources" / "models" / "default.lovecs"
#: (name, width, height): squares 4 MPix ... 1 GPix, and strips (very wide, short).
SIZES = {
    "2048": (2048, 2048),
    "4096": (4096, 4096),
    "8192": (8192, 8192),
    "16384": (16384, 16384),
    "32768": (32768, 32768),
    "strip-32768x2048": (32768, 2048),
    "strip-262144x2048": (262144, 2048),
}

CHILD = """
import json, os, sys, time
cores, null = int(sys.argv[4]), sys.argv[5] == "null"
os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))
import torch
torch.set_num_threads(cores)
sys.path.insert(0, sys.argv[6])
from bench.inference_memory import load
from lovecs_core.mapping.predict import predict_raster

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

model = load(sys.argv[1], null)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # VmHWM := VmRSS: the peak from here on
base = status("VmRSS")
t0 = time.perf_counter()
r = predict_raster(model, sys.argv[2], sys.argv[3], device="cpu", batch_size=int(sys.argv[7]),
                   resample=False)
print(json.dumps({"base": base, "peak": status("VmHWM"), "seconds": time.perf_counter() - t0,
                  "tiles": r.tiles_total, "skipped": r.tiles_skipped}))
"""


def load(path: str, null: bool) -> Any:
    """The model file, or (``null``) its card with a 1x1 convolution instead of the network."""
    import dataclasses

    from lovecs_core.model.networks import architecture, build_model, model_from_file

    card, net = model_from_file(path)
    if not null:
        return card, net
    card = dataclasses.replace(
        card, architecture=architecture("tiny", csn=False, width=8, depth=0), name="null"
    )
    return card, build_model(card).eval()


def mosaic(src: Path, width: int, height: int) -> Path:
    """A VRT of ``width x height`` pixels tiling ``src`` (written once, under bench/data)."""
    out = DATA / f"mosaic-{width}x{height}.vrt"
    if not out.is_file():
        DATA.mkdir(parents=True, exist_ok=True)
        write_mosaic_vrt(src, width, height, out)
    return out


def write_mosaic_vrt(src: Path, width: int, height: int, out: Path) -> Path:
    """Write ``out``: a VRT of ``width x height`` pixels tiling ``src`` side by side (its own data
    type and nodata value; ``src`` named by absolute path, so the VRT works from any folder)."""
    from osgeo import gdal

    src = src.resolve()
    ds = gdal.Open(str(src))
    sw, sh, n = ds.RasterXSize, ds.RasterYSize, ds.RasterCount
    nodata = ds.GetRasterBand(1).GetNoDataValue()
    gt = ds.GetGeoTransform()
    bands = []
    for b in range(1, n + 1):
        sources = []
        for y in range(0, height, sh):
            for x in range(0, width, sw):
                w, h = min(sw, width - x), min(sh, height - y)
                sources.append(
                    f'<SimpleSource><SourceFilename relativeToVRT="0">{src}</SourceFilename>'
                    f"<SourceBand>{b}</SourceBand>"
                    f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
                    f'<DstRect xOff="{x}" yOff="{y}" xSize="{w}" ySize="{h}"/></SimpleSource>'
                )
        nd = "" if nodata is None else f"<NoDataValue>{nodata:g}</NoDataValue>"
        dtype = gdal.GetDataTypeName(ds.GetRasterBand(b).DataType)
        bands.append(
            f'<VRTRasterBand dataType="{dtype}" band="{b}">{nd}{"".join(sources)}</VRTRasterBand>'
        )
    out.write_text(
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">'
        f"<SRS>{ds.GetProjection()}</SRS>"
        f"<GeoTransform>{', '.join(repr(v) for v in gt)}</GeoTransform>"
        + "".join(bands)
        + "</VRTDataset>"
    )
    return out


def measure(raster: Path, null: bool, cores: int, batch: int) -> dict[str, Any]:
    out = DATA / "out.tif"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(MODEL), str(raster), str(out), str(cores)]
        + ["null" if null else "model", str(ROOT), str(batch)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    for p in DATA.glob("out.tif*"):
        p.unlink()
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--null-sizes", nargs="*", default=list(SIZES), choices=list(SIZES))
    p.add_argument(
        "--model-sizes",
        nargs="*",
        default=["2048", "4096", "8192", "strip-32768x2048", "16384", "32768"],
        choices=list(SIZES),
    )
    p.add_argument("--batch1-sizes", nargs="*", default=["8192"], choices=list(SIZES))
    p.add_argument("--cores", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=4, help="the CLI's default (4)")
    p.add_argument("--ceiling", default="8192", help="size for the 1- and 2-core I/O ceiling")
    p.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep earlier rows of other runs")
    p.add_argument("--report-only", action="store_true", help="table and plot of the kept rows")
    args = p.parse_args(argv)
    if args.report_only:
        args.keep, args.null_sizes, args.model_sizes, args.batch1_sizes = True, [], [], []
        args.ceiling = ""
    src = SHARED / "target_b" / "scene.tif"
    if not src.is_file():
        print(f"raster not found: {src} (set LOVECS_SHARED_DATA)", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = (
        json.loads(ROWS.read_text()) if args.keep and ROWS.is_file() else []
    )
    b = args.batch_size
    runs = [(s, True, args.cores, b) for s in args.null_sizes]
    if args.ceiling:  # the I/O ceiling on 1 and 2 cores
        runs += [(args.ceiling, True, c, b) for c in (1, 2) if c != args.cores]
    runs += [(s, False, args.cores, 1) for s in args.batch1_sizes]  # the API's CPU default
    runs += [(s, False, args.cores, b) for s in args.model_sizes]
    if not runs:
        write_report(rows, args)
        return 0
    for name, null, cores, batch in runs:
        w, h = SIZES[name]
        m = measure(mosaic(src, w, h), null, cores, batch)
        m.update(name=name, width=w, height=h, null=null, cores=cores, batch=batch)
        m["mpix_s"] = w * h / 1e6 / m["seconds"]
        m["date"] = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M}"
        m["commit"] = _commit()
        print(json.dumps(m), flush=True)
        key = (name, null, cores, batch)
        rows = [r for r in rows if (r["name"], r["null"], r["cores"], r["batch"]) != key] + [m]
        ROWS.parent.mkdir(parents=True, exist_ok=True)
        ROWS.write_text(json.dumps(rows))
        write_report(rows, args)  # after every run: a long sweep cut short keeps its rows
    return 0


def write_report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Print and write the table (a section of RESULTS.md) and the plot of ``rows``."""
    text = report(rows, args)
    plot(rows)
    print(text)
    if not args.no_write:
        from adaptation import write_section

        write_section(Path(args.results), "inference-memory:cpu", text)


def _commit() -> str:
    """The checkout's commit, with ``+`` when the engine has uncommitted changes."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "diff", "--quiet", "HEAD", "--", "lovecs_core"], cwd=ROOT
    ).returncode
    return head + ("+" if dirty else "")


def _load() -> str:
    return os.getloadavg()[0].__format__(".1f")


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    gb = 1e9
    lines = [
        "### Peak memory against raster size (tiled inference, CPU)",
        "",
        f"- command: `python bench/inference.py --memory {' '.join(sys.argv[2:])}`".rstrip(),
        f"- written: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC} (each row: when and at "
        "which commit it was measured); CPU "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared with a "
        f"training run (load average {_load()} at the end); torch threads = cores of the run",
        "- input: VRT mosaics of target_b/scene.tif (RGB, 10-bit UInt16, nodata 0); tile 512, overlap 64,"
        " no resampling; outputs: class map only; batch: tiles per forward pass (4: the CLI's"
        " default, 1: predict_raster's default on a CPU)",
        "- peak = the process's VmHWM (GB = 10^9 bytes) after imports and model load were counted"
        " as base",
        "",
        "| raster | MPix | model | batch | cores | base GB | peak GB | seconds | MPix/s | measured |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['width']} x {r['height']} | {r['width'] * r['height'] / 1e6:.0f} "
            f"| {'null (1x1 conv)' if r['null'] else 'bundled'} | {r['batch']} | {r['cores']} "
            f"| {r['base'] / gb:.2f} | {r['peak'] / gb:.2f} | {r['seconds']:.0f} "
            f"| {r['mpix_s']:.2f} | {r.get('date', '?')} UTC, {r.get('commit', '?')} |"
        )
    lines += ["", f"![peak RSS against raster size]({PLOT.name})"]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    series = [
        (False, 4, "bundled model, batch 4", "tab:blue"),
        (False, 1, "bundled model, batch 1", "tab:green"),
        (True, 4, "null model (I/O ceiling)", "tab:red"),
    ]
    for null, batch, label, colour in series:
        for strip, marker in ((False, "o-"), (True, "s")):
            pts = sorted(
                (r["width"] * r["height"] / 1e6, r["peak"] / 1e9)
                for r in rows
                if (r["null"], r["batch"], r["cores"]) == (null, batch, 1)
                and r["name"].startswith("strip") == strip
            )
            if pts:
                kind = "strips (very wide)" if strip else "squares"
                ax.plot(*zip(*pts), marker, color=colour, label=f"{label}, {kind}")
    base = sorted(r["base"] / 1e9 for r in rows)[len(rows) // 2]
    ax.axhline(base, color="grey", ls="--", lw=1, label="after imports and model load")
    ax.axhline(1.5, color="black", ls=":", lw=1, label="1.5 GB target")
    ax.set_xscale("log")
    ax.set_xlabel("raster size (MPix)")
    ax.set_ylabel("peak RSS (GB, 10^9 bytes)")
    ax.set_ylim(0, max(1.6, max(r["peak"] for r in rows) / 1e9 * 1.1))
    ax.set_title("lovecs predict on a CPU: peak memory against raster size", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)
    plt.close(fig)
