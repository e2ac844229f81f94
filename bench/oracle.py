"""The full-budget oracle: a model of the default model's architecture trained on target_b's own
labels with the default model's whole training budget (5000 iterations, batch 8, 256 px crops,
MobileNet-V2 FPN 128/64, no sensor randomisation), scored on the same scene. An optimistic upper
bound for "share of the gap closed" (the adaptation benchmark's 350-iteration oracle scored below
the adapted model).

    python bench/oracle.py [--iterations 5000] [--out bench/out/oracle-full/result.json]
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch
from adaptation import BUDGETS, oracle
from scenes import DEFAULT_DATA, build_scenes

from lovecs_core.compute.device import resolve_device
from lovecs_core.model.card import read_card

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "resources" / "models" / "default.lovecs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--scene", default="target_b")
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--out", default=str(ROOT / "bench" / "out" / "oracle-full" / "result.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.out).parent
    scene = next(
        s for s in build_scenes(Path(args.data), ROOT / "bench" / "data" / "scenes")
        if s.name == args.scene
    )  # fmt: skip
    (work / scene.name).mkdir(parents=True, exist_ok=True)
    budget = dict(BUDGETS["small"], oracle_iterations=args.iterations)
    options = argparse.Namespace(oracle_iterations=args.iterations, retrain=False, seed=0,
                                 no_amp=False)  # fmt: skip
    classes = read_card(MODEL).classes
    result = oracle(scene, options, budget, work, classes, resolve_device("cpu"))
    result.update(
        command=f"python bench/oracle.py --scene {args.scene} --iterations {args.iterations}",
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        machine=f"{platform.machine()} CPU, {args.threads} thread(s)",
    )
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"{scene.name}: oracle mIoU {100 * result['miou']:.1f} %, "
          f"OA {100 * result['overall_accuracy']:.1f} % ({result['seconds']:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
