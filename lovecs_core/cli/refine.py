"""``lovecs refine``: a model refined on the user's corrections (points, lines or polygons of a
vector file with a class field), saved as a model file, and the raster mapped with it."""

from __future__ import annotations

import argparse
import sys

from ..contract import RESULT, parse_bands
from ..progress import Reporter, emit_json
from .vector_options import add_vector_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "refine",
        help="refine a model on corrections (points, lines, polygons) in seconds",
        description="Refit the model's head (its last layer) to the corrections, anchored on the "
        "source model's confident pixels and the labelled source sample in the model file, so "
        "that classes without corrections are kept. Reports accuracy on corrections not trained "
        "on (cross-validation), for the source and the refined model.",
    )
    p.add_argument("--model", required=True, help="model file (.lovecs)")
    p.add_argument("--raster", required=True, help="the raster the corrections were made on")
    add_vector_options(p, "corrections: a vector file, any CRS", required=True)
    p.add_argument("--out", required=True, help="refined model file (.lovecs)")
    p.add_argument("--map", help="also map the raster with the refined model (GeoTIFF)")
    p.add_argument("--bands", help="1-based raster bands fed to the model, e.g. 3,2,1")
    p.add_argument(
        "--extent", help="refine and map only xmin,ymin,xmax,ymax[,CRS] (default: raster CRS)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(handler=run)


def check_outputs(args: argparse.Namespace) -> None:
    """The outputs differ from every input and from each other, and can be written (the one
    rule of ``checks.outputs.check_outputs``)."""
    from ..checks.outputs import check_outputs as check

    check(
        [("refined model", args.out), ("map", args.map)],
        [("model", args.model), ("raster", args.raster), ("corrections", args.points)],
    )


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    from ..rasters.extent import raster_extent
    from ..refinement.run import describe_accuracy, refine_raster

    check_outputs(args)
    result = refine_raster(
        args.model,
        args.raster,
        args.points,
        args.out,
        args.map,
        class_field=args.class_field,
        layer=args.layer,
        bands=parse_bands(args.bands),
        extent=raster_extent(args.extent, args.raster),
        device=args.device,
        reporter=reporter,
    )
    if args.progress == "json":
        emit_json(sys.stdout, RESULT, **result)
        return 0
    counts = ", ".join(f"class {k}: {v}" for k, v in result["corrections"]["per_class"].items())
    print(f"corrections: {result['corrections']['features']} ({counts})")
    for problem in result["problems"]:
        print(f"note: {problem}")
    print(describe_accuracy(result["accuracy"]))
    print(f"refined model: {result['output']}")
    if result.get("map"):
        print(f"map: {result['map']}")
    return 0
