#!/usr/bin/env python3
"""Cross-sensor adaptation benchmark over several scenes (not a unit test).

A source model trained on ``source/`` minus the held-out images (:mod:`scenes`) is applied to, and
adapted to, every evaluation scene of :func:`scenes.build_scenes` (target_b plus eight stress
scenes built from the shared data) with each method, exactly as the dock runs it (preset
``fast``; source term from the sample carried in the model file; health check with fallback).
Per scene and method: mIoU, OA, per-class IoU, the health check's verdict, and whether the map
the user gets beats the aligned source model. On target_b an oracle trained on its own labels
gives the gap. Labels are used for scoring only; no setting is tuned on them.

    python bench/adaptation.py --source-model bench/out/source-v3/source.lovecs
    python bench/adaptation.py --budget tiny          # smoke run: a few minutes

Results: ``bench/out/adaptation-<budget>-<preset>/scores.json`` and a section of
``bench/RESULTS.md`` with the command, device and date.
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

import torch
from osgeo import gdal
from scenes import DEFAULT_DATA, Scene, build_scenes, held_out_pairs

from lovecs_core.adaptation.adapt import adapt
from lovecs_core.adaptation.config import make_config
from lovecs_core.compute.device import resolve_device
from lovecs_core.evaluation.metrics import evaluate_rasters
from lovecs_core.mapping.predict import predict_raster
from lovecs_core.model.card import load_classes, read_card
from lovecs_core.model.csn import copy_source_to_target
from lovecs_core.model.networks import model_from_file
from lovecs_core.progress import ProgressEvent, Reporter
from lovecs_core.rasters.labelled import RasterSource, band_statistics, pair_rasters
from lovecs_core.training.source import TrainConfig, fpn_architecture, train_source

ROOT = Path(__file__).resolve().parents[1]

gdal.UseExceptions()
SOURCE_STATS = "source model, source statistics (no alignment)"
SCENE_STATS = "source model, scene statistics"
ALIGNED = "aligned source model"
NO_TONE = "aligned source model, no tone step"
ORACLE = "oracle (target labels)"
ADAPT_METHODS = ("adabn", "cbst", "lovecs")
DEFAULT_METHOD = "lovecs"  # what the dock's "Adapt to this image" runs

BUDGETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        encoder="resnet18",
        decoder=(64, 32),
        source_iterations=6,
        oracle_iterations=6,
        batch_size=4,
        crop=128,
        preset="fast",
        scene_window=256,
        adapt_overrides=dict(iterations=4, refresh_every=2, crop=128, batch_size=2, bn_windows=4),
    ),
    "small": dict(
        encoder="mobilenet_v2",
        decoder=(128, 64),
        source_iterations=5000,
        oracle_iterations=350,
        batch_size=8,
        crop=256,
        preset="fast",
    ),
}


class Progress:
    """Prints one line per stage change and every ``every`` seconds."""

    def __init__(self, label: str, every: float = 60.0) -> None:
        self.label, self.every = label, every
        self.stage, self.last = "", 0.0

    def __call__(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        if event.stage != self.stage or now - self.last > self.every:
            self.stage, self.last = event.stage, now
            print(
                f"  [{self.label}] {event.stage} {100 * event.fraction:5.1f}% {event.message}",
                flush=True,
            )


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


def score(map_path: Path, labels: Path, classes: list) -> dict[str, Any]:
    acc = evaluate_rasters(map_path, labels, [c.code for c in classes], [c.name for c in classes])
    return acc.to_dict()


def scene_normalised_source(model: Path, scene: Path, bands: Optional[list[int]]) -> tuple:
    """The source model with the scene's own band statistics (the first release's input
    standardisation), for comparison."""
    card, net = model_from_file(str(model))
    stats = band_statistics([RasterSource(scene, bands)])
    card.normalization["target"] = {"mean": stats.mean, "std": stats.std}
    card.default_domain = "target"
    card.adaptation = {"method": "source-only (scene-normalised)", "target_gsd": card.gsd}
    copy_source_to_target(net)
    return card, net


def source_model(
    args: argparse.Namespace,
    budget: dict,
    data: Path,
    work: Path,
    classes: list,
    device: torch.device,
) -> Path:
    if args.source_model:
        return Path(args.source_model)
    pairs = pair_rasters([data / "source" / "images"], [data / "source" / "labels"])
    train, held = held_out_pairs(pairs)
    if budget.get("scene_window"):
        train = train[:3]
    out = work / "source.lovecs"
    if out.is_file() and not args.retrain:
        return out
    cfg = TrainConfig(
        iterations=args.source_iterations or budget["source_iterations"],
        batch_size=budget["batch_size"],
        crop=budget["crop"],
        device=str(device),
        seed=args.seed,
    )
    train_source(
        train,
        classes,
        out,
        arch=fpn_architecture(budget["encoder"], budget["decoder"]),
        config=cfg,
        held_out=[h[0] for h in held],
        name="bench source",
        reporter=Reporter(Progress("source")),
    )
    return out


def run_scene(
    scene: Scene,
    model: Path,
    args: argparse.Namespace,
    budget: dict,
    work: Path,
    classes: list,
    device: torch.device,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    folder = work / scene.name
    folder.mkdir(parents=True, exist_ok=True)
    amp = not args.no_amp

    def add(name: str, map_path: Path, seconds: float, **extra: Any) -> dict[str, Any]:
        result = score(map_path, scene.labels, classes)
        row = {
            "scene": scene.name,
            "method": name,
            "seconds": round(seconds, 1),
            **extra,
            **{k: result[k] for k in ("miou", "overall_accuracy", "kappa", "classes")},
        }
        rows.append(row)
        print(
            f"{scene.name} / {name}: mIoU {100 * result['miou']:.1f} %, OA "
            f"{100 * result['overall_accuracy']:.1f} % ({seconds:.0f} s)",
            flush=True,
        )
        return row

    baselines: list[tuple[str, str, Any, dict[str, Any]]] = [
        (SOURCE_STATS, "source-stats.tif", lambda: str(model), {"align": False}),
        (
            SCENE_STATS,
            "scene-stats.tif",
            lambda: scene_normalised_source(model, scene.image, scene.bands),
            {},
        ),
        (NO_TONE, "aligned-no-tone.tif", lambda: str(model), {"tone": "off"}),
    ]
    for name, file, model_arg, options in baselines:
        t0 = time.monotonic()
        predict_raster(
            model_arg(),
            scene.image,
            folder / file,
            bands=scene.bands,
            device=str(device),
            amp=amp,
            **options,
        )
        add(name, folder / file, time.monotonic() - t0)
    t0 = time.monotonic()
    pr = predict_raster(
        str(model),
        scene.image,
        folder / "aligned.tif",
        bands=scene.bands,
        device=str(device),
        amp=amp,
    )
    add(
        ALIGNED,
        folder / "aligned.tif",
        time.monotonic() - t0,
        note=f"alignment: {pr.alignment['summary'] if pr.alignment else 'none'}",
    )

    for method in args.methods:
        cfg = make_config(
            args.preset or budget["preset"],
            device=str(device),
            amp=amp,
            seed=args.seed,
            **budget.get("adapt_overrides", {}),
        )
        out = folder / f"{method}.lovecs"
        for stale in (out, folder / f"{method}.rejected.lovecs"):
            stale.unlink(missing_ok=True)
        t0 = time.monotonic()
        result = adapt(
            str(model),
            scene.image,
            out,
            method=method,
            config=cfg,
            bands=scene.bands,
            reporter=Reporter(Progress(f"{scene.name} {method}")),
        )
        adapt_s = time.monotonic() - t0
        health = result.health.to_dict() if result.health else {}
        map_path = folder / f"{method}.tif"
        pr = predict_raster(
            str(out), scene.image, map_path, bands=scene.bands, device=str(device), amp=amp
        )
        add(
            method,
            map_path,
            adapt_s + pr.seconds,
            verdict=health.get("verdict"),
            health=health,
            fell_back=result.fell_back,
            source_term=result.card.adaptation.get("source_term"),
            note=f"adapt {adapt_s:.0f} s + map {pr.seconds:.0f} s",
        )
        if result.rejected:  # how the rejected adapted model would have scored
            rmap = folder / f"{method}.rejected.tif"
            rp = predict_raster(
                str(result.rejected),
                scene.image,
                rmap,
                bands=scene.bands,
                device=str(device),
                amp=amp,
            )
            add(
                f"{method} (adapted model the check rejected)",
                rmap,
                rp.seconds,
                verdict=health.get("verdict"),
            )
    return rows


def oracle(
    scene: Scene,
    args: argparse.Namespace,
    budget: dict,
    work: Path,
    classes: list,
    device: torch.device,
) -> dict[str, Any]:
    """A model of the same architecture trained on the scene's own labels (no randomisation),
    scored on the same scene: an optimistic upper bound."""
    out = work / scene.name / "oracle.lovecs"
    iterations = args.oracle_iterations or budget["oracle_iterations"]
    t0 = time.monotonic()
    if not out.is_file() or args.retrain:
        cfg = TrainConfig(
            iterations=iterations,
            batch_size=budget["batch_size"],
            crop=budget["crop"],
            device=str(device),
            seed=args.seed,
            randomisation=None,
            sample_crops=0,
        )
        train_source(
            [(scene.image, scene.labels)],
            classes,
            out,
            arch=fpn_architecture(budget["encoder"], budget["decoder"]),
            config=cfg,
            bands=scene.bands,
            name="bench oracle",
            reporter=Reporter(Progress("oracle")),
        )
    map_path = work / scene.name / "oracle.tif"
    predict_raster(
        str(out), scene.image, map_path, bands=scene.bands, device=str(device), amp=not args.no_amp
    )
    result = score(map_path, scene.labels, classes)
    return {
        "scene": scene.name,
        "method": ORACLE,
        "seconds": round(time.monotonic() - t0, 1),
        "note": f"trained {iterations} iterations on the scene's labels, scored on the same scene",
        **{k: result[k] for k in ("miou", "overall_accuracy", "kappa", "classes")},
    }


def run(args: argparse.Namespace) -> int:
    budget = dict(BUDGETS[args.budget])
    data = Path(args.data)
    if not (data / "source" / "images").is_dir() or not (data / "target_b" / "scene.tif").is_file():
        print(
            f"shared data not found at {data} (set LOVECS_SHARED_DATA or --data)", file=sys.stderr
        )
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    preset = args.preset or budget["preset"]
    work = Path(args.work or ROOT / "bench" / "out" / f"adaptation-{args.budget}-{preset}")
    work.mkdir(parents=True, exist_ok=True)
    classes = load_classes(data / "classes.json")
    t_start = time.monotonic()
    scenes = [
        s
        for s in build_scenes(data, ROOT / "bench" / "data" / "scenes")
        if not args.scenes or s.name in args.scenes
    ]
    if budget.get("scene_window"):
        for s in scenes:
            s.image = crop_raster(s.image, work / f"{s.name}.vrt", budget["scene_window"])
            s.labels = crop_raster(s.labels, work / f"{s.name}_labels.vrt", budget["scene_window"])
    model = source_model(args, budget, data, work, classes, device)
    rows: list[dict[str, Any]] = []
    for scene in scenes:
        rows += run_scene(scene, model, args, budget, work, classes, device)
        if scene.name == "target_b" and not args.no_oracle:
            rows.append(oracle(scene, args, budget, work, classes, device))
        (work / "scores.json").write_text(json.dumps({"rows": rows}, indent=2))
    card = read_card(model)
    context = {
        "command": "python bench/adaptation.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device_description(device),
        "total_seconds": round(time.monotonic() - t_start),
        "budget": args.budget,
        "preset": preset,
        "model": str(model),
        "arch": card.architecture,
        "training": card.provenance.get("training", {}),
        "scenes": {s.name: s.description for s in scenes},
    }
    (work / "scores.json").write_text(json.dumps({"context": context, "rows": rows}, indent=2))
    text = results_section(context, rows, [c.name for c in classes])
    print("\n" + text)
    if not args.no_write:
        write_section(Path(args.results), f"adaptation-scenes:{args.budget}-{preset}", text)
        print(f"updated {args.results}")
    return 0


def _pct(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def results_section(ctx: dict[str, Any], rows: list[dict[str, Any]], names: list[str]) -> str:
    t = ctx["training"]
    rand = t.get("randomisation")
    lines = [
        f"### Adaptation over {len(ctx['scenes'])} scenes — budget `{ctx['budget']}`, preset "
        f"`{ctx['preset']}`",
        "",
        f"- command: `{ctx['command']}`",
        f"- date: {ctx['date']}; device: {ctx['device']}; total time: "
        f"{ctx['total_seconds'] / 60:.1f} min",
        f"- source model: `{ctx['model']}`: FPN {ctx['arch'].get('encoder')}, "
        f"{t.get('iterations')} iterations, batch {t.get('batch_size')}, {t.get('crop')} px "
        f"crops, sensor randomisation {'on (p=' + str(rand.get('probability')) + ')' if rand else 'off'}"
        ", held-out images excluded",
        "- adaptation: as the dock runs it (source term from the model file's sample, health "
        "check with fallback to the aligned source model)",
        "- scenes: " + "; ".join(f"`{k}`: {v}" for k, v in ctx["scenes"].items()),
        "",
        "Summary (mIoU / OA in %; *delivered* = the map the user gets by default):",
        "",
        "| scene | source stats | scene stats | aligned, no tone | **aligned source** | adabn | "
        "cbst | **lovecs (default)** | verdict (lovecs) | default vs aligned (mIoU / OA) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    by = {(r["scene"], r["method"]): r for r in rows}
    for scene in ctx["scenes"]:

        def cell(method: str) -> str:
            r = by.get((scene, method))
            if r is None:
                return "–"
            flag = " ↩" if r.get("fell_back") else ""
            return f"{_pct(r['miou'])} / {_pct(r['overall_accuracy'])}{flag}"

        a, d = by.get((scene, ALIGNED)), by.get((scene, DEFAULT_METHOD))
        delta = (
            "–"
            if not (a and d)
            else (
                f"{100 * (d['miou'] - a['miou']):+.1f} / "
                f"{100 * (d['overall_accuracy'] - a['overall_accuracy']):+.1f}"
            )
        )
        lines.append(
            f"| {scene} | {cell(SOURCE_STATS)} | {cell(SCENE_STATS)} | {cell(NO_TONE)} | "
            f"{cell(ALIGNED)} | "
            f"{cell('adabn')} | {cell('cbst')} | {cell(DEFAULT_METHOD)} | "
            f"{(d or {}).get('verdict') or '–'} | {delta} |"
        )
    lines += [
        "",
        "↩: the health check did not judge the adaptation improved (uncertain or likely "
        "harmful), so the user got the aligned source model.",
        "",
        "Every run, per class (IoU in %):",
        "",
        "| scene | method | mIoU | " + " | ".join(names) + " | OA | verdict | beats aligned "
        "source | time |",
        "|---|---|---:|" + "---:|" * len(names) + "---:|---|---|---:|",
    ]
    for r in rows:
        a = by.get((r["scene"], ALIGNED))
        beats = (
            ""
            if r["method"] in (ALIGNED, ORACLE) or a is None
            else ("yes" if r["miou"] > a["miou"] else "no")
        )
        ious = [_pct(c["iou"]) for c in r["classes"]]
        lines.append(
            f"| {r['scene']} | {r['method']}{' ↩' if r.get('fell_back') else ''} | "
            f"{_pct(r['miou'])} | "
            + " | ".join(ious)
            + f" | {_pct(r['overall_accuracy'])} | {r.get('verdict') or ''} | {beats} | "
            f"{r['seconds'] / 60:.1f} min |"
        )
    notes = [f"- {r['scene']} / {r['method']}: {r['note']}" for r in rows if r.get("note")]
    health = [
        f"- {r['scene']} / {r['method']}: agreement on confident pixels "
        f"{100 * r['health']['agreement_confident']:.0f} %, class shift "
        f"{100 * r['health']['class_shift']:.0f} %, largest gain "
        f"{r['health']['largest_gain_class']} {100 * r['health']['largest_gain']:+.0f} pts, "
        f"confidence {100 * r['health']['confidence_before']:.0f} → "
        f"{100 * r['health']['confidence_after']:.0f} %"
        for r in rows
        if r.get("health")
    ]
    return "\n".join(
        lines + ["", "Health-check figures:", ""] + health + ["", "Notes:", ""] + notes
    )


def write_section(path: Path, key: str, text: str) -> None:
    """Replace (or append) the block between ``<!-- KEY:start -->`` and ``<!-- KEY:end -->``."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    block = f"{start}\n{text}\n{end}"
    old = path.read_text() if path.is_file() else "# Benchmark results\n"
    if start in old and end in old:
        new = old[: old.index(start)] + block + old[old.index(end) + len(end) :]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(new)
    os.replace(tmp, path)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    p.add_argument(
        "--preset",
        choices=("fast", "standard", "paper"),
        help="adaptation preset (default: the budget's, fast)",
    )
    p.add_argument("--source-model", help="use this source model instead of training one")
    p.add_argument("--scenes", nargs="+", help="only these scenes")
    p.add_argument("--methods", nargs="+", choices=ADAPT_METHODS, default=list(ADAPT_METHODS))
    p.add_argument("--device", default="auto")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="shared data folder")
    p.add_argument("--work", help="output folder (default bench/out/adaptation-BUDGET-PRESET)")
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
