"""``lovecs evaluate``: accuracy of a class map against reference labels (a raster on the same
grid) or reference points (a vector layer of points or polygons, any CRS)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

from ..contract import RESULT
from ..progress import Reporter, emit_json
from .vector_options import add_vector_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="compare a class map with reference labels or reference points",
        description="With --labels: confusion matrix over labelled pixels (0 = no label), "
        "per-class IoU/F1/precision/recall, mIoU, overall accuracy, kappa and area-adjusted "
        "accuracy (Olofsson et al. 2014). With --points: the error matrix of the reference "
        "sample, overall, producer's and user's accuracy with Wilson intervals, and the "
        "area-adjusted accuracy and class areas with confidence intervals (Olofsson et al. "
        "2014; for a simple random sample or one stratified by map class).",
    )
    p.add_argument("--pred", required=True, help="class map (GeoTIFF of class codes)")
    reference = p.add_mutually_exclusive_group(required=True)
    reference.add_argument("--labels", help="reference labels on the same grid")
    add_vector_options(
        p,
        "reference points (or polygons: each pixel counts) in a vector file, any CRS",
        group=reference,
    )
    p.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="with --points: confidence level of the intervals (default 0.95)",
    )
    classes = p.add_mutually_exclusive_group()
    classes.add_argument(
        "--classes",
        help="classes JSON (codes and names; default: codes found in the map and the "
        "reference, names from the map)",
    )
    classes.add_argument("--model", help="take the classes from this model file (.lovecs)")
    p.add_argument("--json", metavar="OUT", help="also write the scores as JSON")
    p.set_defaults(handler=run)


def _classes(args: argparse.Namespace) -> tuple[Optional[list[int]], Optional[list[str]]]:
    from ..model.card import load_classes, read_card

    if args.classes:
        classes = load_classes(args.classes)
    elif args.model:
        classes = read_card(args.model).classes
    else:
        return None, None
    return [c.code for c in classes], [c.name for c in classes]


def _check_inputs(args: argparse.Namespace) -> None:
    """Refuse options that do not belong to the mode, and a JSON output that is no new name or
    regular file, or names an input (``checks.outputs.check_outputs``)."""
    from ..checks.outputs import CheckError, check_outputs

    if args.labels and (args.class_field or args.layer):
        raise CheckError("--class-field and --layer go with --points, not --labels")
    check_outputs(
        [("scores JSON (--json)", args.json)],
        [
            ("map (--pred)", args.pred),
            ("labels (--labels)", args.labels),
            ("reference points (--points)", args.points),
            ("classes (--classes)", args.classes),
            ("model (--model)", args.model),
        ],
    )


def _write_json(path: str, scores: dict[str, Any]) -> None:
    """Write the scores under a temporary name, then rename: never half a file."""
    from ..contract import part_path

    final = Path(path)
    tmp = part_path(final)
    try:
        tmp.write_text(json.dumps(scores, indent=2))
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    _check_inputs(args)
    codes, names = _classes(args)
    if args.points:
        from ..evaluation.reference_points import evaluate_points

        acc: Any = evaluate_points(
            args.pred,
            args.points,
            codes,
            names,
            args.class_field,
            args.layer,
            reporter=reporter,
            confidence=args.confidence,
        )
    else:
        from ..evaluation.metrics import evaluate_rasters

        acc = evaluate_rasters(args.pred, args.labels, codes, names, reporter=reporter)
    scores = acc.to_dict()
    if args.json:
        _write_json(args.json, scores)
    if args.progress == "json":
        emit_json(sys.stdout, RESULT, json=args.json, **_result_numbers(scores), scores=scores)
    else:
        print(acc.table())
    return 0


def _result_numbers(scores: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of the result event."""
    if "sample" not in scores:
        return {k: scores[k] for k in ("miou", "overall_accuracy", "kappa")}
    area = scores.get("area_adjusted") or {}
    return {
        "overall_accuracy": scores["overall_accuracy"],
        "area_adjusted_overall_accuracy": area.get("overall_accuracy"),
        "sample_size": scores["sample"]["size"],
        "unit": scores["sample"]["unit"],
    }
