"""``lovecs adapt``: adapt a model to an unlabelled target scene (LoveCS and baselines)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path
from typing import Any, Iterator

from ..contract import (
    ADAPT_PRESETS,
    ADAPT_RESULT_KEYS,
    DEFAULT_ADAPT_PRESET,
    DEFAULT_METHOD,
    METHODS,
    RESULT,
    checkpoint_path,
    format_bands,
    parse_bands,
    safe_result_note,
)
from ..progress import Reporter, emit_json
from .train import floats, pair_of_floats
from .vector_options import add_vector_options

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "adapt",
        help="adapt a model to a scene from another sensor (no labels)",
        description="Cross-sensor adaptation of a model to one unlabelled scene: "
        "LoveCS (cross-sensor normalisation + multi-scale "
        "class-balanced self-training) or a baseline.",
    )
    p.add_argument("--model", required=True, help="source model file (.lovecs)")
    p.add_argument("--target", required=True, help="the target scene (raster)")
    p.add_argument("--out", required=True, help="adapted model file (.lovecs)")
    p.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD)
    p.add_argument(
        "--preset",
        choices=ADAPT_PRESETS,
        default=DEFAULT_ADAPT_PRESET,
        help="fast (default, as in the dock and Processing): minutes on a CPU; standard: longer; "
        "paper: the paper's schedule (GPU)",
    )
    p.add_argument("--bands", help="scene bands matching the model's, e.g. 3,2,1")
    p.add_argument(
        "--extent",
        help="adapt to and map only xmin,ymin,xmax,ymax[,CRS] of the scene (default CRS: the "
        "scene's); the clipped scene is kept beside --out as OUT_extent.vrt",
    )
    p.add_argument("--map", help="also map the scene with the adapted model (GeoTIFF)")
    p.add_argument("--confidence", help="with --map: also write the confidence (GeoTIFF)")
    p.add_argument(
        "--source-images",
        nargs="+",
        metavar="PATH",
        help="labelled source images (default: those recorded in the model card)",
    )
    p.add_argument("--source-labels", nargs="+", metavar="PATH", help="their label rasters")
    p.add_argument("--source-bands", help="bands of the source images (default: as in training)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--tone",
        default="auto",
        help="the alignment's tone step (auto, off or a gamma), as in `lovecs predict`",
    )
    g = p.add_argument_group("settings (override the preset)")
    g.add_argument("--iterations", type=int, help="self-training iterations in all")
    g.add_argument(
        "--refresh-every", type=int, metavar="K", help="new pseudo-labels every K iterations"
    )
    g.add_argument("--batch-size", type=int, help="windows per domain per iteration")
    g.add_argument("--crop", type=int, help="training window side in pixels")
    g.add_argument("--lr", type=float, help="initial learning rate (poly schedule)")
    g.add_argument("--portion", type=float, help="class-balanced portion kept per class (0.1)")
    g.add_argument(
        "--source-weight",
        type=float,
        help="weight of the source CE (1.0; 0: no source data needed)",
    )
    g.add_argument("--pseudo-weight", type=float, help="weight of the pseudo-label CE (0.5)")
    g.add_argument(
        "--scales",
        type=floats,
        help="pseudo-labelling scales, e.g. 2,2.5,3,3.5 (default: from the GSD ratio)",
    )
    g.add_argument("--n-scales", type=int, help="number of scales derived from the GSD ratio")
    g.add_argument(
        "--scale-range",
        type=pair_of_floats,
        metavar="MIN,MAX",
        help="training-window scale augmentation",
    )
    g.add_argument("--pl-tile", type=int, help="pseudo-labelling tile side (scene pixels)")
    g.add_argument("--bn-windows", type=int, help="adabn: target windows for the statistics")
    g.add_argument(
        "--anchor-portion",
        type=float,
        help="share of the source model's most confident pixels kept labelled (0.2)",
    )
    g.add_argument(
        "--min-share",
        type=float,
        help="classes predicted on less of the scene get no pseudo-labels (0.005)",
    )
    g.add_argument(
        "--absent-share",
        type=float,
        help="classes on less of the source model's map are left out of the adapted model "
        "(0.001; 0: keep every class)",
    )
    g.add_argument(
        "--native-scale",
        action="store_const",
        const=True,
        help="learn and map the scene at its own GSD, as in the paper (default: at the model's "
        "GSD, where the source model maps it)",
    )
    g.add_argument(
        "--scene-statistics",
        action="store_const",
        const=True,
        help="CSN's target slot learns the scene's batch statistics, as in the paper (default: "
        "it keeps the source statistics; a scene's statistics mix its class mix in)",
    )
    add_vector_options(
        p,
        "the user's corrections (a vector file of points, lines or polygons, any CRS): both "
        "models' heads are refitted to them and they judge which is delivered",
    )
    p.add_argument(
        "--keep-adapted",
        action="store_true",
        help="write the adapted model to --out whatever the health check says (default: "
        "unless the verdict is 'improved', the aligned source model is written instead)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted adaptation from OUT.ckpt (saved after each "
        "self-training round; same model, scene and settings)",
    )
    p.set_defaults(handler=run)


def points_options(args: argparse.Namespace) -> dict[str, Any]:
    """With ``--points``: the corrections and how to read them; else ``--resume``."""
    if not args.points:
        return {"resume": args.resume}
    options = {"points": args.points, "class_field": args.class_field, "layer": args.layer}
    return {**options, "device": args.device}


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    from ..adaptation.adapt import adapt
    from ..adaptation.config import AdaptError, make_config
    from ..adaptation.with_points import adapt_with_points as adapt_points
    from ..parallel import distributed
    from ..rasters.labelled import pair_rasters

    distributed.start(args.device)  # under torchrun (None otherwise)
    try:
        early_checks(args)
    except Exception as exc:
        error: Exception | None = exc
    else:
        error = None
    distributed.agree(error)  # under torchrun: a rank's error stops every rank
    if bool(args.source_images) != bool(args.source_labels):
        raise AdaptError("give both --source-images and --source-labels")
    if args.confidence and not args.map:
        raise AdaptError("--confidence needs --map")
    config = make_config(
        args.preset,
        **setting_overrides(args),
        seed=args.seed,
        device=args.device,
        amp=not args.no_amp,
        tone=args.tone,
    )
    pairs = pair_rasters(args.source_images, args.source_labels) if args.source_images else None
    if args.points and args.resume:
        raise AdaptError("--resume is not available with --points: rerun without --resume")
    with _tell_about_checkpoint(args.out):
        result = (adapt_points if args.points else adapt)(
            args.model,
            args.target,
            args.out,
            method=args.method,
            config=config,
            bands=parse_bands(args.bands),
            source_pairs=pairs,
            source_bands=parse_bands(args.source_bands),
            map_path=args.map,
            confidence_path=args.confidence,
            keep_adapted=args.keep_adapted,
            reporter=reporter,
            **points_options(args),
        )
    if not distributed.is_main():  # rank 0 prints the result
        return 0
    health = result.health.to_dict() if result.health else None
    if args.progress == "json":
        payload = dict(
            output=str(result.output),
            method=result.method,
            map=str(result.map) if result.map else None,
            confidence=str(result.confidence) if result.confidence else None,
            seconds=result.seconds,
            device=result.device,
            rounds=result.rounds,
            adaptation=result.card.adaptation,
            health=health,
            rejected=str(result.rejected) if result.rejected else None,
        )
        assert tuple(payload) == ADAPT_RESULT_KEYS  # what the plugin reads (contract.py)
        emit_json(sys.stdout, RESULT, **payload)
    else:
        print(f"wrote {result.output} ({result.method}, {result.seconds:.0f} s on {result.device})")
        print(f"  sensor alignment: {result.card.adaptation['alignment']['summary']}")
        for r in result.rounds:
            print(
                f"  round {r['round']}: pseudo-labelled {100 * r['labelled_fraction']:.1f} % "
                f"of the scene, class thresholds {r['thresholds']}"
            )
        if result.health:
            print(f"  {result.health.summary()}")
        if result.rejected and result.health:
            note = safe_result_note(result.health.verdict, str(result.rejected))
            print(f"  {note} (use it, or rerun with --keep-adapted, to keep it)")
        if result.map:
            print(
                f"map: {result.map}"
                + (f", confidence: {result.confidence}" if result.confidence else "")
            )
    return 0


@contextlib.contextmanager
def _tell_about_checkpoint(out: str) -> Iterator[None]:
    """When the run stops early but a self-training round was saved, say how to go on."""
    try:
        yield
    except BaseException:
        ckpt = checkpoint_path(Path(out))
        if ckpt.is_file():
            log.warning(
                "the adaptation stopped; its last completed round is kept in %s: rerun the "
                "same command with --resume to continue from there, or delete that file",
                ckpt,
            )
        raise


#: The "settings (override the preset)" group: AdaptConfig fields of the same names.
SETTINGS = (
    "iterations", "refresh_every", "batch_size", "crop", "lr", "portion", "source_weight",
    "pseudo_weight", "scales", "n_scales", "scale_range", "pl_tile", "bn_windows",
    "anchor_portion", "min_share", "absent_share", "native_scale", "scene_statistics",
)  # fmt: skip


def setting_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the user gave (None: the preset's)."""
    return {name: getattr(args, name) for name in SETTINGS}


def early_checks(args: argparse.Namespace) -> None:
    """Everything that can be checked before the first iteration: the model card, the settings,
    the outputs (distinct from the inputs, writable, disk not full; under torchrun, on rank 0,
    which writes them) and the scene's bands. When
    the scene has more bands than the model and their names do not say which to use, the first
    ones are chosen (and the log says so)."""
    from ..checks.outputs import check_adapt_outputs
    from ..checks.rasters import check_raster_data
    from ..checks.settings import check_adapt_settings
    from ..model.card import read_card
    from ..parallel.distributed import is_main
    from ..rasters.bands import choose_bands
    from ..rasters.extent import clipped_scene
    from ..rasters.reading import open_dataset

    check_adapt_settings(**setting_overrides(args))
    card = read_card(args.model)
    if is_main():  # under torchrun, rank 0 alone writes
        check_adapt_outputs(
            args.model,
            args.target,
            args.out,
            args.map,
            args.confidence,
            checkpoint=args.method in ("cbst", "lovecs"),  # the methods that self-train
        )
    args.target = clipped_scene(args.target, args.extent, args.out)
    scene = open_dataset(args.target)
    if not parse_bands(args.bands):
        bands, note = choose_bands(card.band_names, scene)
        if note:
            log.warning(note)
            args.bands = format_bands(bands)
    check_raster_data(scene, parse_bands(args.bands))
