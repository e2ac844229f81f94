#!/usr/bin/env python3
"""Cross-sensor adaptation benchmark on the team's shared data (not a unit test).

Trains a source model on ``source/`` (sensor A), adapts it to ``target_b/scene.tif`` (sensor B)
with each method, maps the scene and scores the map against ``target_b/labels.tif``; also trains
an oracle on target_b's own labels (an optimistic upper bound: it is trained and scored on the same
scene). Prints a table (mIoU, per-class IoU, OA, kappa, share of the source-only -> oracle gap
closed, time) and writes it into a section of ``bench/RESULTS.md`` with the command, device and
date. Target labels are used for scoring only; no setting is tuned on them.

    python bench/adaptation.py --budget small            # CPU, about 30-40 min on 2 cores
    python bench/adaptation.py --budget full --preset paper --device cuda
    python bench/adaptation.py --budget tiny             # smoke run: a few minutes

Models and maps go to ``bench/out/adaptation-<budget>-<preset>/``; trained source and oracle
models there are reused on a rerun with the same settings (``--retrain`` to redo them).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from osgeo import gdal  # noqa: E402

from lovecs_core.card import load_classes, read_card  # noqa: E402
from lovecs_core.csn import copy_source_to_target  # noqa: E402
from lovecs_core.data import RasterSource, band_statistics, pair_rasters  # noqa: E402
from lovecs_core.device import resolve_device  # noqa: E402
from lovecs_core.metrics import evaluate_rasters  # noqa: E402
from lovecs_core.models import model_from_file  # noqa: E402
from lovecs_core.predict import predict_raster  # noqa: E402
from lovecs_core.progress import ProgressEvent, Reporter  # noqa: E402
from lovecs_core.raster import pixel_size_metres  # noqa: E402
from lovecs_core.selftrain import METHODS, adapt, make_config  # noqa: E402
from lovecs_core.train import TrainConfig, fpn_architecture, train_source  # noqa: E402

gdal.UseExceptions()
NORMALISED = "source-only, scene band statistics"
ORACLE = "oracle (target labels)"
DEFAULT_DATA = Path(os.environ.get("LOVECS_SHARED_DATA", ROOT.parent / "shared" / "data"))

#: Source/oracle training per budget. "tiny" also crops the scene and uses a few source images.
BUDGETS: dict[str, dict[str, Any]] = {
    "tiny": dict(encoder="resnet18", decoder=(64, 32), source_iterations=6, oracle_iterations=6,
                 batch_size=4, crop=128, preset="fast", source_images=3, scene_window=384,
                 adapt_overrides=dict(iterations=4, refresh_every=2, crop=128, batch_size=2,
                                      bn_windows=4)),
    "small": dict(encoder="resnet18", decoder=(128, 64), source_iterations=700,
                  oracle_iterations=350, batch_size=8, crop=256, preset="fast"),
    "full": dict(encoder="resnet50", decoder=(256, 128), source_iterations=10000,
                 oracle_iterations=10000, batch_size=8, crop=512, preset="paper"),
}


class Progress:
    """Prints one line per stage change and every ``every`` seconds."""

    def __init__(self, label: str, every: float = 30.0) -> None:
        self.label, self.every = label, every
        self.stage, self.last = "", 0.0

    def __call__(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        if event.stage != self.stage or now - self.last > self.every:
            self.stage, self.last = event.stage, now
            print(f"  [{self.label}] {event.stage} {100 * event.fraction:5.1f}% {event.message}",
                  flush=True)


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"CUDA {torch.cuda.get_device_name(device)}"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s)"


def crop_raster(src: Path, dst: Path, size: int) -> Path:
    """A centred ``size`` x ``size`` window of a raster as a VRT (keeps the georeference)."""
    ds = gdal.Open(str(src))
    x0, y0 = max(0, (ds.RasterXSize - size) // 2), max(0, (ds.RasterYSize - size) // 2)
    gdal.Translate(str(dst), ds, srcWin=[x0, y0, size, size], format="VRT")
    return dst


def train_cached(name: str, out: Path, pairs: list, classes: list, arch: dict, cfg: TrainConfig,
                 retrain: bool) -> tuple[Path, float]:
    """Train unless ``out`` exists with the same architecture, data and iterations."""
    if out.is_file() and not retrain:
        card = read_card(out)
        same = (card.architecture == arch
                and card.provenance.get("training", {}).get("iterations") == cfg.iterations
                and card.provenance.get("source_images") == [str(p[0].resolve()) for p in pairs])
        if same:
            print(f"{name}: reusing {out}", flush=True)
            return out, float(card.provenance.get("seconds", 0.0))
    print(f"{name}: training {cfg.iterations} iterations on {len(pairs)} image(s)", flush=True)
    result = train_source(pairs, classes, out, arch=arch, config=cfg,
                          name=f"bench {name}", reporter=Reporter(Progress(name)))
    return result.output, result.seconds


def score(map_path: Path, labels: Path, classes: list) -> dict[str, Any]:
    acc = evaluate_rasters(map_path, labels, [c.code for c in classes], [c.name for c in classes])
    return acc.to_dict()


def scene_normalised_source(model: Path, scene: Path, bands: Optional[list[int]]) -> tuple:
    """The source model with the scene's own band statistics (no other change): isolates what
    input standardisation alone does."""
    card, net = model_from_file(str(model))
    stats = band_statistics([RasterSource(scene, bands)])
    card.normalization["target"] = {"mean": stats.mean, "std": stats.std}
    card.default_domain = "target"
    card.adaptation = {"method": "source-only (scene-normalised)", "target_gsd": card.gsd}
    copy_source_to_target(net)
    return card, net


def run(args: argparse.Namespace) -> int:
    budget = dict(BUDGETS[args.budget])
    preset = args.preset or budget["preset"]
    data = Path(args.data)
    if not (data / "source" / "images").is_dir() or not (data / "target_b" / "scene.tif").is_file():
        print(f"shared data not found at {data} (set LOVECS_SHARED_DATA or --data)",
              file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    work = Path(args.work or ROOT / "bench" / "out" / f"adaptation-{args.budget}-{preset}")
    work.mkdir(parents=True, exist_ok=True)
    classes = load_classes(data / "classes.json")
    t_start = time.monotonic()

    pairs = pair_rasters([data / "source" / "images"], [data / "source" / "labels"])
    scene, labels = data / "target_b" / "scene.tif", data / "target_b" / "labels.tif"
    if budget.get("source_images"):
        pairs = pairs[:budget["source_images"]]
    if budget.get("scene_window"):
        scene = crop_raster(scene, work / "scene.vrt", budget["scene_window"])
        labels = crop_raster(labels, work / "labels.vrt", budget["scene_window"])
    arch = fpn_architecture(args.encoder or budget["encoder"], budget["decoder"])
    common = dict(batch_size=budget["batch_size"], crop=budget["crop"], device=str(device),
                  amp=not args.no_amp, seed=args.seed)
    source_cfg = TrainConfig(iterations=args.source_iterations or budget["source_iterations"],
                             **common)
    oracle_cfg = TrainConfig(iterations=args.oracle_iterations or budget["oracle_iterations"],
                             **common)

    rows: list[dict[str, Any]] = []
    source_model, source_seconds = train_cached("source", work / "source.lovecs", pairs, classes,
                                                arch, source_cfg, args.retrain)
    source_card = read_card(source_model)

    def add_row(name: str, map_path: Path, seconds: float, note: str = "") -> None:
        result = score(map_path, labels, classes)
        rows.append({"method": name, "seconds": round(seconds, 1), "note": note, **result})
        print(f"{name}: mIoU {100 * result['miou']:.2f} %  ({seconds:.0f} s)", flush=True)
        (work / "scores.json").write_text(json.dumps(rows, indent=2))

    methods = args.methods or list(METHODS)
    for method in methods:
        overrides = dict(budget.get("adapt_overrides", {}))
        cfg = make_config(preset, device=str(device), amp=not args.no_amp, seed=args.seed,
                          **overrides)
        t0 = time.monotonic()
        print(f"{method}: adapting ({preset})", flush=True)
        out = work / f"{method}.lovecs"
        result = adapt(source_model, scene, out, method=method, config=cfg,
                       source_pairs=pairs, reporter=Reporter(Progress(method)))
        adapt_seconds = time.monotonic() - t0
        map_path = work / f"{method}.tif"
        pr = predict_raster(str(out), scene, map_path, device=str(device), amp=not args.no_amp,
                            reporter=Reporter(Progress(f"{method} map")))
        note = f"adapt {adapt_seconds:.0f} s + map {pr.seconds:.0f} s"
        if result.rounds:
            fractions = ", ".join(f"{100 * r['labelled_fraction']:.0f}" for r in result.rounds)
            note += f"; pseudo-labelled % per round: {fractions}"
        add_row(method, map_path, time.monotonic() - t0, note)
        if method == "source-only" and not args.methods:
            t0 = time.monotonic()
            map_path = work / "source-only-scene-normalised.tif"
            predict_raster(scene_normalised_source(source_model, scene, None), scene, map_path,
                           device=str(device), amp=not args.no_amp)
            add_row(NORMALISED, map_path, time.monotonic() - t0,
                    "extra baseline: input standardised with the scene's statistics only")

    if not args.no_oracle:
        oracle_pairs = [(scene, labels)]
        oracle_model, oracle_seconds = train_cached("oracle", work / "oracle.lovecs",
                                                    oracle_pairs, classes, arch, oracle_cfg,
                                                    args.retrain)
        t0 = time.monotonic()
        map_path = work / "oracle.tif"
        predict_raster(str(oracle_model), scene, map_path, device=str(device),
                       amp=not args.no_amp)
        add_row(ORACLE, map_path, oracle_seconds + time.monotonic() - t0,
                f"trained {oracle_cfg.iterations} iterations on target_b's labels and scored "
                "on the same scene (optimistic upper bound)")

    total = time.monotonic() - t_start
    context = {
        "command": "python bench/adaptation.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device_description(device), "total_seconds": round(total),
        "budget": args.budget, "preset": preset, "arch": arch,
        "source": {"images": len(pairs), "iterations": source_cfg.iterations,
                   "batch": source_cfg.batch_size, "crop": source_cfg.crop,
                   "seconds": round(source_seconds), "gsd": source_card.gsd},
        "scene_gsd": pixel_size_metres(gdal.Open(str(scene))),
        "settings": make_config(preset, **budget.get("adapt_overrides", {})).to_dict(),
    }
    (work / "scores.json").write_text(json.dumps({"context": context, "rows": rows}, indent=2))
    text = results_section(context, rows, [c.name for c in classes])
    print("\n" + text)
    if not args.no_write:
        write_section(Path(args.results), f"adaptation:{args.budget}-{preset}", text)
        print(f"updated {args.results}")
    return 0


def gap_closed(rows: list[dict[str, Any]], name: str, baseline: str = "source-only"
               ) -> Optional[float]:
    by = {r["method"]: r["miou"] for r in rows}
    src, oracle = by.get(baseline), by.get(ORACLE)
    if src is None or oracle is None or name not in by or oracle <= src:
        return None
    return (by[name] - src) / (oracle - src)


def results_section(ctx: dict[str, Any], rows: list[dict[str, Any]], names: list[str]) -> str:
    s = ctx["settings"]
    lines = [
        f"### Cross-sensor adaptation, source → target_b — budget `{ctx['budget']}`, "
        f"preset `{ctx['preset']}`",
        "",
        f"- command: `{ctx['command']}`",
        f"- date: {ctx['date']}; device: {ctx['device']}; total time: "
        f"{ctx['total_seconds'] / 60:.1f} min",
        f"- model: Semantic FPN, {ctx['arch'].get('encoder')} encoder (random init, no ImageNet "
        f"weights), decoder {ctx['arch'].get('pyramid_channels')}/"
        f"{ctx['arch'].get('segmentation_channels')} channels, CSN",
        f"- source training: {ctx['source']['images']} images of source/ "
        f"({ctx['source']['gsd']} m), {ctx['source']['iterations']} iterations, batch "
        f"{ctx['source']['batch']}, {ctx['source']['crop']} px crops "
        f"({ctx['source']['seconds'] / 60:.1f} min)",
        f"- adaptation: {s['iterations']} iterations, pseudo-labels refreshed every "
        f"{s['refresh_every']}, batch {s['batch_size']}+{s['batch_size']}, {s['crop']} px crops, "
        f"top {100 * s['portion']:.0f} % per class, loss {s['source_weight']}·CE(source) + "
        f"{s['pseudo_weight']}·CE(pseudo), lr {s['lr']:.4g}; target_b at "
        f"{ctx['scene_gsd']} m",
        "",
        "| method | mIoU | " + " | ".join(names) + " | OA | kappa | gap closed | gap closed "
        "(vs. scene-normalised) | time |",
        "|---|---:|" + "---:|" * len(names) + "---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ious = [c["iou"] for c in r["classes"]]
        gaps = []
        for baseline in ("source-only", NORMALISED):
            gap = gap_closed(rows, r["method"], baseline)
            skip = gap is None or r["method"] in (baseline, ORACLE)
            gaps.append("" if skip else f"{100 * gap:.0f} %")
        cells = [r["method"], _pct(r["miou"])] + [_pct(v) for v in ious] + [
            _pct(r["overall_accuracy"]), f"{r['kappa']:.3f}" if r["kappa"] is not None else "n/a",
            *gaps, f"{r['seconds'] / 60:.1f} min"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Notes:"]
    for r in rows:
        if r.get("note"):
            lines.append(f"- {r['method']}: {r['note']}")
    lines.append("- gap closed = (mIoU − baseline) / (oracle − baseline), baseline = "
                 "source-only (the source model as is, source band statistics) or the source "
                 "model with the scene's band statistics; IoU, mIoU and OA in %.")
    return "\n".join(lines)


def _pct(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def write_section(path: Path, key: str, text: str) -> None:
    """Replace (or append) the block between ``<!-- KEY:start -->`` and ``<!-- KEY:end -->``."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    block = f"{start}\n{text}\n{end}"
    old = path.read_text() if path.is_file() else "# Benchmark results\n"
    if start in old and end in old:
        new = old[:old.index(start)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(new)
    os.replace(tmp, path)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    p.add_argument("--preset", choices=("fast", "standard", "paper"),
                   help="adaptation preset (default: fast for tiny/small, paper for full)")
    p.add_argument("--device", default="auto")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="shared data folder")
    p.add_argument("--work", help="output folder (default bench/out/adaptation-BUDGET-PRESET)")
    p.add_argument("--methods", nargs="+", choices=METHODS, help="only these methods")
    p.add_argument("--encoder", help="override the budget's encoder")
    p.add_argument("--source-iterations", type=int)
    p.add_argument("--oracle-iterations", type=int)
    p.add_argument("--no-oracle", action="store_true")
    p.add_argument("--retrain", action="store_true", help="retrain source and oracle models")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-amp", action="store_true")
    p.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    p.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
