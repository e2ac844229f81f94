"""Build the bundled default model, resources/models/default.lovecs.

It is the source model of the CPU adaptation benchmark (bench/adaptation.py --budget small
--encoder mobilenet_v2 --source-iterations 2000): a Semantic FPN with a MobileNet-V2 encoder trained by `lovecs`'s own
training code on ../shared/data/source. Its card gets the benchmark's honest scores on target_b
before and after adaptation. Runs the benchmark first when its results are missing.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lovecs_core.card import load_model_file, save_model  # noqa: E402

BENCH = ROOT / "bench" / "out" / "adaptation-small-2000"
BENCH_COMMAND = ["bench/adaptation.py", "--budget", "small", "--encoder", "mobilenet_v2",
                 "--source-iterations", "2000", "--work", str(BENCH)]
OUT = ROOT / "resources" / "models" / "default.lovecs"
DATA_NOTE = ("../shared/data/source: 54 RGB images of Dubai (Humans in the Loop with MBRSC, "
             "public domain CC0), nominal 0.5 m, labels mapped to 5 classes")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rerun", action="store_true", help="run the benchmark even if it has results")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    scores_file = BENCH / "scores.json"
    if args.rerun or not scores_file.is_file() or "rows" not in json.loads(scores_file.read_text()):
        subprocess.run([sys.executable, *BENCH_COMMAND], cwd=ROOT, check=True)
    bench = json.loads(scores_file.read_text())
    card, state = load_model_file(BENCH / "source.lovecs")
    card.name = "LoveCS default: RGB land cover, 0.5 m, 5 classes"
    card.provenance["data"] = DATA_NOTE
    card.provenance["reproduce"] = "make default-model  (python scripts/default_model.py)"
    ctx = bench["context"]
    card.scores = {
        "scene": "../shared/data/target_b/scene.tif (simulated spaceborne, 1.5 m), its labels",
        "benchmark": {"command": ctx["command"], "date": ctx["date"], "device": ctx["device"],
                      "preset": ctx["preset"]},
        "miou": {r["method"]: round(r["miou"], 4) for r in bench["rows"]},
        "iou_per_class": {r["method"]: {c["name"]: (None if c["iou"] is None else round(c["iou"], 4))
                                        for c in r["classes"]} for r in bench["rows"]},
    }
    out = save_model(args.out, card, state)
    size = out.stat().st_size / 1e6
    print(f"wrote {out} ({size:.1f} MB)")
    for method, miou in card.scores["miou"].items():
        print(f"  target_b mIoU {method:40s} {100 * miou:5.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
