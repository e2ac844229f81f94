"""Build the bundled default model, resources/models/default.lovecs.

It is the source model of the multi-scene adaptation benchmark: a Semantic FPN with a
MobileNet-V2 encoder trained by this project's own training code (sensor randomisation on) on
../shared/data/source minus the held-out images of bench/scenes.py, carrying a small labelled
source sample for adaptation anywhere. Its card gets the benchmark's honest scores. Steps that
already have results are not rerun (``--rerun`` redoes the benchmark):

    python bench/train_source.py --iterations 5000 --out bench/out/source-v3/source.lovecs
    python bench/adaptation.py --source-model bench/out/source-v3/source.lovecs
    python scripts/default_model.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from lovecs_core.model.card import load_model_file, save_model

ROOT = Path(__file__).resolve().parents[1]

SOURCE = ROOT / "bench" / "out" / "source-v3" / "source.lovecs"
BENCH = ROOT / "bench" / "out" / "adaptation-small-fast"
TRAIN_COMMAND = ["bench/train_source.py", "--iterations", "5000", "--out", str(SOURCE)]
BENCH_COMMAND = ["bench/adaptation.py", "--source-model", str(SOURCE), "--work", str(BENCH)]
OUT = ROOT / "resources" / "models" / "default.lovecs"
DATA_NOTE = (
    "../shared/data/source: RGB images of Dubai (Humans in the Loop with MBRSC, "
    "public domain CC0), nominal 0.5 m, labels mapped to 5 classes; the images of "
    "bench/scenes.py HELD_OUT were kept out of training"
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--rerun", action="store_true", help="rerun the benchmark even if it has results"
    )
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    if not SOURCE.is_file():
        subprocess.run([sys.executable, *TRAIN_COMMAND], cwd=ROOT, check=True)
    scores_file = BENCH / "scores.json"
    if (
        args.rerun
        or not scores_file.is_file()
        or "context" not in json.loads(scores_file.read_text())
    ):
        subprocess.run([sys.executable, *BENCH_COMMAND], cwd=ROOT, check=True)
    bench = json.loads(scores_file.read_text())
    card, state = load_model_file(SOURCE)
    card.name = "LoveCS default: RGB land cover, 0.5 m, 5 classes (sensor-randomised)"
    card.provenance["data"] = DATA_NOTE
    card.provenance["reproduce"] = "make default-model  (python scripts/default_model.py)"
    ctx = bench["context"]
    rows = bench["rows"]
    card.scores = {
        "benchmark": {
            "command": ctx["command"],
            "date": ctx["date"],
            "device": ctx["device"],
            "preset": ctx["preset"],
            "scenes": ctx["scenes"],
        },
        "miou": {f"{r['scene']}: {r['method']}": round(r["miou"], 4) for r in rows},
        "overall_accuracy": {
            f"{r['scene']}: {r['method']}": round(r["overall_accuracy"], 4) for r in rows
        },
        "iou_per_class": {
            f"{r['scene']}: {r['method']}": {
                c["name"]: (None if c["iou"] is None else round(c["iou"], 4)) for c in r["classes"]
            }
            for r in rows
        },
        "verdicts": {
            f"{r['scene']}: {r['method']}": r["verdict"] for r in rows if r.get("verdict")
        },
    }
    out = save_model(args.out, card, state)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    for key, miou in card.scores["miou"].items():
        print(f"  mIoU {key:60s} {100 * miou:5.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
