"""``lovecs evaluate``: accuracy of a class map against reference labels."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..contract import RESULT
from ..progress import Reporter, emit_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="compare a class map with reference labels",
        description="Confusion matrix over labelled pixels (0 = no label), "
        "per-class IoU/F1/precision/recall, mIoU, overall accuracy, "
        "kappa and area-adjusted accuracy (Olofsson et al. 2014).",
    )
    p.add_argument("--pred", required=True, help="class map (GeoTIFF of class codes)")
    p.add_argument("--labels", required=True, help="reference labels on the same grid")
    p.add_argument(
        "--classes",
        help="classes JSON (codes and names; default: codes found in "
        "the rasters, names from the map)",
    )
    p.add_argument("--json", metavar="OUT", help="also write the scores as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    from ..evaluation.metrics import evaluate_rasters
    from ..model.card import load_classes

    codes = names = None
    if args.classes:
        classes = load_classes(args.classes)
        codes, names = [c.code for c in classes], [c.name for c in classes]
    acc = evaluate_rasters(args.pred, args.labels, codes, names, reporter=reporter)
    scores = acc.to_dict()
    if args.json:
        Path(args.json).write_text(json.dumps(scores, indent=2))
    if args.progress == "json":
        emit_json(
            sys.stdout,
            RESULT,
            json=args.json,
            miou=scores["miou"],
            overall_accuracy=scores["overall_accuracy"],
            kappa=scores["kappa"],
            scores=scores,
        )
    else:
        print(acc.table())
    return 0
