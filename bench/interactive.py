"""The interactive loop, measured: a simulated user corrects the map, the head is refitted.

The standard simulated user (Robinson et al., AAAI 2020): rounds of clicks placed at random
labelled pixels that the *current* map gets wrong (the labels place the clicks, nothing else);
after each round the head is refitted (``Refiner.fit``) and the scene re-mapped from its cached
features. mIoU and OA are computed on every labelled pixel except the clicked ones, at N = 10,
25, 50, 100 and 200 clicks. Latency: one ``refine`` request of the session (read the
corrections, cross-validate, fit, write the map) on a 1024 x 1024 view with 50 corrections.

    python bench/interactive.py [--scenes target_b,rural_b] [--seeds 0,1,2] [--out FILE.json]
    python bench/interactive.py --table FILE.json      # the Markdown table of a run
    python bench/interactive.py --scenes target_b --adapt   # + lovecs adapt --points, every N
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from osgeo import gdal
from scenes import DEFAULT_DATA, build_scenes

from lovecs_core.adaptation.adapt import adapt
from lovecs_core.adaptation.with_points import candidate, final_verdict, points_verdict
from lovecs_core.contract import IMPROVED
from lovecs_core.model.card import read_card, read_source_sample
from lovecs_core.model.networks import model_from_file
from lovecs_core.rasters.corrections import (
    Corrections,
    pixel_centres,
    read_corrections,
    write_points,
)
from lovecs_core.refinement.features import open_region, region_features
from lovecs_core.refinement.refiner import Refiner
from lovecs_core.refinement.run import prepare
from lovecs_core.refinement.session import RefineSession

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "resources" / "models" / "default.lovecs"
CHECKPOINTS = (10, 25, 50, 100, 200)
ROUND = 5  # clicks per round


def scores(
    pred: np.ndarray, labels: np.ndarray, codes: list[int], clicked: np.ndarray
) -> tuple[float, float]:
    """(mIoU over classes present in map or truth, OA) on labelled, unclicked pixels."""
    mask = (labels > 0) & ~clicked
    ious = []
    for code in codes:
        a, b = (pred == code) & mask, (labels == code) & mask
        union = (a | b).sum()
        if union:
            ious.append((a & b).sum() / union)
    return 100 * float(np.mean(ious)), 100 * float(((pred == labels) & mask).sum() / mask.sum())


def simulate(
    refiner: Refiner, labels: np.ndarray, seed: int = 0, keep: Optional[dict] = None
) -> list[dict]:
    """The simulated user's rounds; ``keep`` receives the clicks ``(rows, cols)`` at every
    checkpoint."""
    codes = refiner.card.class_codes()
    rng = np.random.default_rng(seed)
    current = refiner.map_codes(refiner.source_head)
    clicked = np.zeros(labels.shape, bool)
    rows: list[int] = []
    cols: list[int] = []
    miou, oa = scores(current, labels, codes, clicked)
    table = [{"clicks": 0, "miou": miou, "oa": oa, "fit_s": 0.0}]
    while len(rows) < CHECKPOINTS[-1]:
        wrong = np.flatnonzero(((current != labels) & (labels > 0) & ~clicked).ravel())
        picked = rng.choice(wrong, size=min(ROUND, wrong.size), replace=False)
        r, c = np.divmod(picked, labels.shape[1])
        rows += r.tolist()
        cols += c.tolist()
        clicked[r, c] = True
        corr = Corrections(
            np.array(rows),
            np.array(cols),
            labels[rows, cols].astype(np.uint8),
            np.arange(len(rows)),
            len(rows),
        )
        start = time.perf_counter()
        weights = refiner.fit(corr)
        fit_s = time.perf_counter() - start
        current = refiner.map_codes(weights)
        if len(rows) in CHECKPOINTS:
            if keep is not None:
                keep[len(rows)] = (np.array(rows), np.array(cols))
            miou, oa = scores(current, labels, codes, clicked)
            table.append({"clicks": len(rows), "miou": miou, "oa": oa, "fit_s": fit_s})
            print(
                f"  {len(rows):4d} clicks: mIoU {miou:.1f} OA {oa:.1f} (fit {fit_s:.2f} s)",
                flush=True,
            )
    return table


def adapt_arm(scene, labels: np.ndarray, kept: dict, work: Path) -> dict:
    """``lovecs adapt --points`` with the simulated user's clicks at every checkpoint, scored like
    the fast refine (every labelled pixel but the clicked ones). As ``adapt_with_points`` does:
    the label-free adaptation (once: it never sees the clicks), both heads refitted to the
    clicks, the clicks' verdict; the delivered model's map is made from the cached features."""
    start = time.perf_counter()
    result = adapt(
        str(MODEL), str(scene.image), work / f"{scene.name}_adapted.lovecs", bands=scene.bands,
        keep_adapted=True,
    )  # fmt: skip
    adapt_s = time.perf_counter() - start
    grid = gdal.Open(str(scene.image))
    codes = read_card(MODEL).class_codes()

    def points(n: int) -> Path:
        rows, cols = kept[n]
        return write_points(
            work / f"{scene.name}_clicks_{n}.gpkg",
            pixel_centres(grid, rows, cols),
            labels[rows, cols].tolist(),
            grid.GetProjection(),
        )

    files = {n: points(n) for n in sorted(kept)}
    gamma = result.card.adaptation.get("alignment", {}).get("gamma", "auto")
    options = dict(bands=scene.bands, device="cpu", sample=read_source_sample(MODEL), tone=gamma)
    models = {"source model": str(MODEL), "adapted model": str(result.output)}
    prepared = {label: prepare(path, str(scene.image), files[min(kept)], **options)
                for label, path in models.items()}  # fmt: skip
    label_free = result.health.verdict if result.health else None
    adapted_alone = prepared["adapted model"].refiner  # its map without any corrections
    nothing = np.zeros(labels.shape, bool)
    alone = scores(adapted_alone.map_codes(adapted_alone.source_head), labels, codes, nothing)
    arms = {}
    for n in sorted(kept):
        tic = time.perf_counter()
        source, adapted = (
            candidate(label, prep, read_corrections(files[n], prep.region.grid, codes))
            for label, prep in prepared.items()
        )
        verdict, _ = points_verdict(source, adapted)
        chosen = adapted if final_verdict(verdict, result.health) == IMPROVED else source
        pred = chosen.refiner.map_codes(chosen.outcome.weights)
        clicked = np.zeros(labels.shape, bool)
        clicked[kept[n]] = True
        miou, oa = scores(pred, labels, codes, clicked)
        arms[str(n)] = {
            "clicks": n, "miou": miou, "oa": oa, "verdict": verdict,
            "label_free_verdict": label_free, "delivered": chosen.label,
            "seconds": time.perf_counter() - tic,
        }  # fmt: skip
        print(f"  adapt + points, {n} clicks:", arms[str(n)], flush=True)
    return {"adapt_s": adapt_s, "label_free": {"miou": alone[0], "oa": alone[1]}, "by_clicks": arms}


def latency(scene_path: Path, labels: np.ndarray, work: Path) -> dict:
    """One session refine on a 1024 px view (or the scene, if smaller) with 50 corrections."""
    ds = gdal.Open(str(scene_path))
    gt = ds.GetGeoTransform()
    side = min(1024, ds.RasterXSize, ds.RasterYSize)
    x0, y0 = (ds.RasterXSize - side) // 2, (ds.RasterYSize - side) // 2
    extent = [
        gt[0] + x0 * gt[1],
        gt[3] + (y0 + side) * gt[5],
        gt[0] + (x0 + side) * gt[1],
        gt[3] + y0 * gt[5],
    ]
    session = RefineSession()
    session.handle({"request": "open", "model": str(MODEL), "device": "cpu"})
    view = session.handle(
        {
            "request": "view",
            "raster": str(scene_path),
            "extent": extent,
            "map": str(work / "view.tif"),
        }
    )
    rng = np.random.default_rng(1)
    sub = labels[y0 : y0 + side, x0 : x0 + side]
    r, c = np.divmod(rng.choice(np.flatnonzero(sub.ravel() > 0), 50, replace=False), side)
    points = write_points(
        work / "clicks.gpkg",
        pixel_centres(ds, r + y0, c + x0),
        sub[r, c].tolist(),
        ds.GetProjection(),
    )
    reply = session.handle(
        {"request": "refine", "points": str(points), "map": str(work / "view.tif")}
    )
    return {
        "view_pixels": view["pixels"],
        "view_s": view["seconds"],
        "refine_s": reply["seconds"],
        "corrections": 50,
    }


def markdown_table(results: dict) -> str:
    """mIoU / OA per scene and clicks, the mean over the simulated users, and the gain over the
    source model's map (0 clicks)."""
    arms = [(n, s["adapt_points"]) for n, s in results["scenes"].items() if "adapt_points" in s]
    if arms:
        return refine_table(results) + "\n\n" + adapt_table(results, arms)
    return refine_table(results)


def adapt_table(results: dict, arms: list) -> str:
    """The adapt + points arm (seed 0's clicks) next to the fast refine with the same clicks."""
    lines = [
        "| scene | clicks | fast refine mIoU / OA | adapt + points mIoU / OA | verdict (label-free) "
        "| delivered | s |",
        "|---|---:|---:|---:|---|---|---:|",
    ]
    for name, arm in arms:
        by_clicks = arm["by_clicks"].values() if "by_clicks" in arm else [arm]  # older runs: one N
        for one in by_clicks:
            row = next(
                r for r in results["scenes"][name]["tables"]["0"] if r["clicks"] == one["clicks"]
            )
            lines.append(
                f"| {name} | {one['clicks']} | {row['miou']:.1f} / {row['oa']:.1f} | "
                f"{one['miou']:.1f} / {one['oa']:.1f} | {one['verdict']} "
                f"({one['label_free_verdict']}) | {one['delivered']} | {one['seconds']:.0f} |"
            )
    return "\n".join(lines)


def refine_table(results: dict) -> str:
    """mIoU / OA per scene and clicks over the simulated users."""
    lines = [
        "| scene | clicks | mIoU % | OA % | vs source (mIoU / OA) | fit s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, scene in results["scenes"].items():
        tables = list(scene["tables"].values())
        for i, row in enumerate(tables[0]):
            miou = float(np.mean([t[i]["miou"] for t in tables]))
            oa = float(np.mean([t[i]["oa"] for t in tables]))
            fit = float(np.mean([t[i]["fit_s"] for t in tables]))
            base_miou = float(np.mean([t[0]["miou"] for t in tables]))
            base_oa = float(np.mean([t[0]["oa"] for t in tables]))
            gain = f"{miou - base_miou:+.1f} / {oa - base_oa:+.1f}" if i else ""
            lines.append(
                f"| {name} | {row['clicks']} | {miou:.1f} | {oa:.1f} | {gain} | {fit:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", help="comma-separated scene names (default: all)")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "interactive.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", default="0", help="simulated users (click draws), e.g. 0,1,2")
    parser.add_argument("--table", metavar="JSON", help="only print the Markdown table of a run")
    parser.add_argument(
        "--adapt",
        action="store_true",
        help="also run lovecs adapt --points with the first user's clicks at every checkpoint",
    )
    args = parser.parse_args()
    if args.table:
        print(markdown_table(json.loads(Path(args.table).read_text())))
        return
    torch.set_num_threads(args.threads)
    work = Path(args.out).parent / "interactive"
    work.mkdir(parents=True, exist_ok=True)
    wanted = set(args.scenes.split(",")) if args.scenes else None
    card, net = model_from_file(str(MODEL))
    refiner = Refiner(card, net, torch.device("cpu"), read_source_sample(MODEL))
    results: dict = {
        "command": "python bench/interactive.py"
        + (f" --scenes {args.scenes}" if args.scenes else "")
        + f" --seeds {args.seeds}"
        + (" --adapt" if args.adapt else ""),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} CPU, {args.threads} thread(s)",
        "model": str(MODEL.relative_to(ROOT)),
        "scenes": {},
    }
    for scene in build_scenes(Path(args.data), ROOT / "bench" / "data" / "scenes"):
        if wanted and scene.name not in wanted:
            continue
        print(scene.name, flush=True)
        region = open_region(card, net, str(scene.image), scene.bands)
        start = time.perf_counter()
        refiner.use_region(region, region_features(card, refiner.split, region, refiner.device))
        labels = gdal.Open(str(scene.labels)).ReadAsArray()
        features_s = time.perf_counter() - start
        tables, kept = {}, {}
        for i, seed in enumerate(int(s) for s in args.seeds.split(",")):
            print(f" seed {seed}", flush=True)
            tables[str(seed)] = simulate(refiner, labels, seed, kept if i == 0 else None)
        results["scenes"][scene.name] = {"features_s": features_s, "tables": tables}
        if args.adapt:
            arm = adapt_arm(scene, labels, kept, work)
            results["scenes"][scene.name]["adapt_points"] = arm
        Path(args.out).write_text(json.dumps(results, indent=1))
    target = next(
        s
        for s in build_scenes(Path(args.data), ROOT / "bench" / "data" / "scenes")
        if s.name == "target_b"
    )
    results["latency"] = latency(target.image, gdal.Open(str(target.labels)).ReadAsArray(), work)
    print("latency", results["latency"])
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
