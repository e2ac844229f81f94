"""``lovecs predict``: classify a raster with a model into a styled GeoTIFF class map."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Callable, Optional

from ..contract import DOMAINS, RESULT, parse_bands
from ..progress import Reporter, emit_json

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify a raster with a land-cover model",
        description="Classify a raster by tiled inference into a GeoTIFF of "
        "class codes (nodata 0) with a .qml style beside it.",
    )
    p.add_argument("--model", required=True, help="model file (.lovecs)")
    p.add_argument("--raster", required=True, help="input raster (any GDAL format)")
    p.add_argument("--out", required=True, help="output class map (GeoTIFF)")
    p.add_argument(
        "--bands",
        help="raster bands fed to the model, in order, e.g. 3,2,1 "
        "(default: all bands except alpha)",
    )
    p.add_argument("--tile", type=int, help="tile side in pixels (default: the model card's)")
    p.add_argument("--overlap", type=int, help="tile overlap in pixels (default: the card's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument(
        "--batch-size",
        type=int,
        help="tiles per forward pass (default: 1 on a CPU, where it is faster, 4 on a GPU)",
    )
    p.add_argument(
        "--domain",
        choices=DOMAINS,
        help="normalisation statistics and CSN domain (default: the card's)",
    )
    p.add_argument(
        "--confidence",
        help="also write the per-pixel confidence (max class "
        "probability, percent, nodata 0) to this GeoTIFF",
    )
    p.add_argument(
        "--confidence-float",
        action="store_true",
        help="write confidence as float32 0..1 instead of uint8 percent",
    )
    p.add_argument(
        "--probabilities",
        help="also write per-class probabilities (float32, one "
        "band per class, nodata -1) to this GeoTIFF",
    )
    p.add_argument(
        "--extent",
        help="classify only xmin,ymin,xmax,ymax[,CRS] (default CRS: the raster's; e.g. "
        "...,EPSG:4326)",
    )
    p.add_argument(
        "--no-resample",
        action="store_true",
        help="do not resample to the model's ground sample distance: map at the "
        "raster's own pixels (needed for a raster without georeference)",
    )
    p.add_argument(
        "--no-amp",
        action="store_true",
        help="float32 everywhere: no mixed precision on CUDA and no bfloat16 on a CPU that "
        "computes it natively (there the default is about 2x faster, with 0.2-0.6 %% of pixels "
        "changing class; with --no-amp maps equal the float32 result exactly)",
    )
    p.add_argument(
        "--no-align",
        action="store_true",
        help="feed the raster's values as they are (no sensor alignment of bit depth "
        "and out-of-range bands to the model's source sensor)",
    )
    p.add_argument(
        "--tone",
        default="auto",
        help="the alignment's tone step for a scene of another bit depth than the model's: "
        "auto (the model picks a gamma 0.5-1 that brightens mid-tones, on a sample of the "
        "scene), off, or a gamma (default: auto; 8-bit scenes of an 8-bit model get none)",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="map on a Ray cluster: no value (or 'local') starts one on this machine, 'auto' "
        "joins the one `ray start` runs here, or give its head's address (host:port). The map "
        "equals one process's; the raster must be readable at the same path on every node",
    )
    p.add_argument(
        "--ray-workers",
        type=int,
        help="Ray workers, each holding the model (default: one per GPU, else one per "
        "--ray-cpus-per-worker CPUs of the cluster)",
    )
    p.add_argument(
        "--ray-cpus-per-worker",
        type=int,
        default=1,
        help="CPUs (torch threads) per Ray worker (default 1)",
    )
    p.set_defaults(handler=run)


def early_checks(args: argparse.Namespace) -> Optional[list[int]]:
    """Checks before torch is even imported: the model card, the outputs (not the input, not a
    folder, writable, disk not full), the georeference, the bands (the first ones when the
    raster has more than the model and their names do not help, which the log says) and the
    input's data type and range (a warning). Returns the bands to use."""
    from ..checks.outputs import check_predict_outputs
    from ..checks.rasters import check_georeference, check_raster_data, input_value_warnings
    from ..model.card import read_card
    from ..rasters.bands import choose_bands
    from ..rasters.reading import RasterError, open_dataset

    card = read_card(args.model)
    check_predict_outputs(args.raster, args.out, args.confidence, args.probabilities)
    bands = parse_bands(args.bands)
    try:
        ds = open_dataset(args.raster)
    except RasterError:
        return bands  # predict_raster says why, in its own words
    bands, note = choose_bands(card.band_names, ds, bands)
    if note:
        log.warning(note)
    check_raster_data(ds, bands)
    domain = args.domain or card.default_domain
    check_georeference(
        card.domain_gsd(domain), ds, resample=not args.no_resample, hint="--no-resample"
    )
    for warning in input_value_warnings(
        card, ds, bands, domain, aligned=domain == "source" and not args.no_align
    ):
        log.warning(warning)
    return bands


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    bands = early_checks(args)
    extra: dict[str, Any] = {}
    predict: Callable[..., Any]
    if args.ray is not None:
        from ..mapping.ray.cluster import check_ray_options, import_ray

        check_ray_options(args.ray_workers, args.ray_cpus_per_worker)
        import_ray()  # says how to install Ray before anything heavy starts
        from ..mapping.ray.map import RayOptions, predict_raster_ray

        predict = predict_raster_ray
        extra["ray_options"] = RayOptions(args.ray, args.ray_workers, args.ray_cpus_per_worker)
    else:
        from ..mapping.predict import predict_raster  # torch is imported only when predicting

        predict = predict_raster
    from ..rasters.extent import raster_extent  # GDAL is imported only when running

    result = predict(
        args.model,
        args.raster,
        args.out,
        bands=bands,
        tile=args.tile,
        overlap=args.overlap,
        device=args.device,
        batch_size=args.batch_size,
        domain=args.domain,
        confidence=args.confidence,
        extent=raster_extent(args.extent, args.raster),
        resample=not args.no_resample,
        amp=not args.no_amp,
        cpu_bf16=not args.no_amp,  # reduced precision wherever the hardware computes it
        reporter=reporter,
        confidence_dtype="float32" if args.confidence_float else "uint8",
        probabilities=args.probabilities,
        align=not args.no_align,
        tone=args.tone,
        **extra,
    )
    if args.progress == "json":
        emit_json(sys.stdout, RESULT, **result.to_dict())
    else:
        close_bar = getattr(reporter.callback, "close", None)
        if callable(close_bar):  # end the terminal progress bar before the summary
            close_bar()
        print(
            f"wrote {result.output} ({result.tiles_total} tiles, {result.tiles_skipped} "
            f"skipped, {result.seconds:.1f} s on {result.device}, {result.precision}"
            f"{', resampled to the model GSD' if result.resampled else ''})",
            file=sys.stderr,
        )
        if result.confidence:
            print(f"wrote {result.confidence}", file=sys.stderr)
    return 0
