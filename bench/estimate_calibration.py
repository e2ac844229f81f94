"""Calibrate the dock's before-run estimates (lovecs_core/compute/estimate.py) on this machine.

Runs the real engine as the dock does (``python -m lovecs_core --progress json ...``, one fresh
process per run) on small synthetic scenes and times it from its own progress events. Each
event is stamped with the engine's CPU time so far (Linux: ``/proc/PID/stat``; OpenMP threads
told not to spin), so the figures hold even when the bench runs (``nice``) on a shared, loaded
machine; the wall times are printed beside. CPU seconds become seconds on an idle machine as
the engine spends them: start-up on one core, the model's work on all cores at the speed-up
``cores ** CORE_EXPONENT`` (an assumption of estimate.py, not measured here).

* classify: start-up (process start to the first progress event) and seconds per MPix of the
  whole ``predict`` run after start-up, from two scene sizes (slope and intercept);
* adapt: seconds per self-training iteration of each preset (the gaps between ``training``
  events, the first ones left out as warm-up), pseudo-labelling seconds per MPix and scale,
  and the start-up of ``adapt``.

Presets whose batches are large are timed with a smaller batch and scaled linearly by batch
size (``--batch-divisor``), so the calibration stays small on a shared machine. Prints the
table as JSON and writes it with ``--out``; paste it into ``CALIBRATION`` in estimate.py.

    nice python bench/estimate_calibration.py --out bench/out/estimate_calibration.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from osgeo import gdal, osr

from lovecs_core.compute.estimate import CORE_EXPONENT
from lovecs_core.presets import PRESETS

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "resources" / "models" / "default.lovecs"


CORES = os.cpu_count() or 1
PARALLEL = CORES**CORE_EXPONENT  # the model's work: its speed-up on all cores


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_run(args: list[str]) -> tuple[float, list[tuple[float, dict[str, Any]]]]:
    """Run the engine; its CPU seconds at the end and at every JSON event (the wall time is
    printed)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lovecs_core", "--progress", "json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"),
    )
    events = []
    last = 0.0
    assert proc.stdout is not None
    for line in proc.stdout:
        last = cpu_seconds(proc.pid)
        if line.startswith("{"):
            events.append((last, json.loads(line)))
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"engine failed: {args}")
    cpu = usage.ru_utime + usage.ru_stime
    print(f"{args[0]}: {cpu:.1f} CPU s, {time.monotonic() - t0:.1f} s wall", file=sys.stderr)
    return max(cpu, last), events


REAL: dict[str, str] = {}  # --scene: classify windows of a real scene instead of noise


def scene(folder: Path, side: int) -> Path:
    """A ``side`` px square scene: noise at the model's GSD, or a window of ``--scene``."""
    if REAL:
        path = folder / f"real_{side}.vrt"
        gdal.Translate(str(path), REAL["path"], format="VRT", srcWin=[0, 0, side, side])
        return path
    path = folder / f"scene_{side}.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), side, side, 3, gdal.GDT_Byte)
    ds.SetGeoTransform((500000.0, 0.5, 0.0, 2800000.0, 0.0, -0.5))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32640)
    ds.SetProjection(srs.ExportToWkt())
    ds.WriteArray(np.random.default_rng(side).integers(0, 255, (3, side, side), dtype=np.uint8))
    ds = None
    return path


def model_mpix(side: int) -> float:
    """The scene's MPix at the model's GSD (0.5 m; what the engine maps)."""
    ratio = float(REAL.get("gsd", 0.5)) / 0.5
    return side * side * ratio * ratio / 1e6


def first_progress(events: list[tuple[float, dict[str, Any]]]) -> float:
    return next(t for t, e in events if e.get("type") == "progress")


def classify(folder: Path, sides: tuple[int, int]) -> dict[str, float]:
    """Start-up seconds and seconds per MPix of ``predict`` (two sizes: slope, intercept)."""
    points = []
    for side in sides:
        wall, events = timed_run(
            ["predict", "--model", str(MODEL), "--raster", str(scene(folder, side)),
             "--out", str(folder / f"map_{side}.tif"), "--device", "cpu"]
        )  # fmt: skip
        start = first_progress(events)
        points.append((model_mpix(side), wall - start, start))
    (m1, w1, s1), (m2, w2, s2) = points
    slope = (w2 - w1) / (m2 - m1)
    return {
        "startup_s": round((s1 + s2) / 2, 2),
        "classify_fixed_s": round(max(0.0, w1 - slope * m1) / PARALLEL, 2),
        "classify_s_per_mpix": round(slope / PARALLEL, 2),
    }


def gaps(events: list[tuple[float, dict[str, Any]]], stage: str) -> list[tuple[float, float]]:
    """(arrival time, fraction) of the events of ``stage``."""
    return [(t, e["fraction"]) for t, e in events if e.get("stage") == stage]


def adapt_preset(folder: Path, preset: str, iterations: int, divisor: int) -> dict[str, float]:
    """Seconds per iteration of ``preset`` (batch divided by ``divisor``, scaled back)."""
    p = PRESETS[preset]
    side = max(512, p["crop"])
    wall, events = timed_run(
        ["adapt", "--model", str(MODEL), "--target", str(scene(folder, side)),
         "--out", str(folder / f"{preset}.lovecs"), "--preset", preset, "--device", "cpu",
         "--iterations", str(iterations), "--refresh-every", str(iterations),
         "--batch-size", str(max(1, p["batch_size"] // divisor)), "--bn-windows", "8"]
    )  # fmt: skip
    training = [(t, e) for t, e in events if e.get("stage") == "training"]
    its = [(t, e["extra"]["iteration"]) for t, e in training if "iteration" in e.get("extra", {})]
    (t1, i1), (t2, i2) = its[1], its[-1]  # the first iteration is warm-up
    per_iteration = (t2 - t1) / max(1, i2 - i1) * divisor / PARALLEL
    pseudo = gaps(events, "pseudo-labels")
    pl_seconds = pseudo[-1][0] - pseudo[0][0] if len(pseudo) > 1 else 0.0
    return {
        "s_per_iteration": round(per_iteration, 3),
        "pseudo_s_per_mpix_scale": round(
            pl_seconds / PARALLEL / (side * side / 1e6) / p["n_scales"], 2
        ),
        "startup_s": round(first_progress(events), 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sides", type=int, nargs=2, default=(256, 768), help="classify scene sides")
    p.add_argument("--iterations", type=int, default=5, help="adapt iterations per preset")
    p.add_argument("--batch-divisor", type=int, default=4, help="for presets of batch >= 8")
    p.add_argument("--presets", nargs="*", default=["fast", "standard"])
    p.add_argument("--scene", help="classify windows of this scene (its GSD in metres: --gsd)")
    p.add_argument("--gsd", type=float, default=0.5, help="the --scene's GSD")
    p.add_argument("--out", help="write the table here (JSON)")
    args = p.parse_args(argv)
    if args.scene:
        REAL.update(path=args.scene, gsd=str(args.gsd))
    with tempfile.TemporaryDirectory(dir=ROOT / ".tmp" if (ROOT / ".tmp").is_dir() else None) as d:
        folder = Path(d)
        table: dict[str, Any] = {"cores": CORES, **classify(folder, tuple(args.sides))}
        adapt: dict[str, float] = {}
        for preset in args.presets:
            divisor = args.batch_divisor if PRESETS[preset]["batch_size"] >= 8 else 1
            row = adapt_preset(folder, preset, args.iterations, divisor)
            adapt[preset] = row["s_per_iteration"]
            table.setdefault("pseudo_s_per_mpix_scale", row["pseudo_s_per_mpix_scale"])
            table.setdefault("adapt_startup_s", row["startup_s"])
        if "standard" in adapt:  # the paper's batch and crop are the standard preset's
            adapt.setdefault("paper", adapt["standard"])
        table["adapt_s_per_iteration"] = adapt
    table["measured"] = time.strftime("%Y-%m-%d")
    text = json.dumps(table, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
