"""``--points FILE --class-field NAME --layer NAME``: a vector file of labelled features (points,
lines or polygons, any CRS), as ``train``, ``adapt``, ``refine`` and ``evaluate`` take it."""

from __future__ import annotations

import argparse
from typing import Any, Optional


def add_vector_options(
    parser: argparse.ArgumentParser,
    points_help: str,
    *,
    required: bool = False,
    group: Optional[Any] = None,
) -> None:
    """Add ``--points`` (to ``group`` when given, e.g. a mutually exclusive one), ``--class-field``
    and ``--layer`` to ``parser``."""
    (group or parser).add_argument("--points", required=required, metavar="FILE", help=points_help)
    parser.add_argument(
        "--class-field",
        metavar="NAME",
        help="--points' integer field of class codes (default: 'class', or its only integer field)",
    )
    parser.add_argument(
        "--layer",
        metavar="NAME",
        help="the layer in --points' file (default: the corrections layer, or the only one)",
    )
