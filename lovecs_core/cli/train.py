"""``lovecs train``: train a source model on labelled rasters."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

from ..contract import ARCHITECTURES, DEFAULT_TRAIN_PRESET, RESULT, TRAIN_PRESET_NAMES, parse_bands
from ..progress import Reporter, emit_json
from .vector_options import add_vector_options

log = logging.getLogger(__name__)


def floats(text: str, n: Optional[int] = None) -> list[float]:
    """``"0.5,1.75"`` -> ``[0.5, 1.75]``."""
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc
    if n is not None and len(values) != n:
        raise argparse.ArgumentTypeError(f"expected {n} comma-separated numbers, got {text!r}")
    return values


def pair_of_floats(text: str) -> tuple[float, float]:
    a, b = floats(text, 2)
    return a, b


def pair_of_ints(text: str) -> tuple[int, int]:
    a, b = floats(text, 2)
    return int(a), int(b)


def randomisation(
    parts: str, probability: Optional[float], clean_share: Optional[float] = None
) -> Optional[dict[str, Any]]:
    """``--randomise`` -> the TrainConfig field (None: off)."""
    from ..training.augment import PARTS, SensorRandomisation

    text = parts.strip().lower()
    if text == "none":
        return None
    chosen = list(PARTS) if text == "all" else [p.strip() for p in text.split(",") if p.strip()]
    settings = SensorRandomisation(parts=chosen)
    if probability is not None:
        settings.probability = probability
    if clean_share is not None:
        settings.clean_share = clean_share
    settings.__post_init__()  # range checks of the values set above
    return settings.to_dict()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a land-cover model on labelled rasters (source domain)",
        description="Train a Semantic FPN (with cross-sensor normalisation "
        "layers) on image/label raster pairs. Defaults follow the "
        "LoveCS paper; '--preset fast' suits a CPU.",
    )
    p.add_argument(
        "--images",
        nargs="+",
        required=True,
        metavar="PATH",
        help="image rasters or folders of them",
    )
    labels = p.add_mutually_exclusive_group(required=True)
    labels.add_argument(
        "--labels",
        nargs="+",
        metavar="PATH",
        help="label rasters (class codes, 0 = no label) or folders; matched to the "
        "images by file name",
    )
    add_vector_options(
        p,
        "or labels as a vector file (ROI polygons, lines or points, any CRS) with an integer "
        "class field, burnt onto every image it covers",
        group=labels,
    )
    p.add_argument("--classes", required=True, help="classes JSON (code, name, color)")
    p.add_argument("--out", required=True, help="output model file (.lovecs)")
    p.add_argument(
        "--preset",
        choices=TRAIN_PRESET_NAMES,
        default=DEFAULT_TRAIN_PRESET,
        help="starting values for the encoder, iterations, batch and crop (default: paper)",
    )
    p.add_argument(
        "--arch",
        choices=ARCHITECTURES,
        default=ARCHITECTURES[0],
        help="fpn: Semantic FPN; tiny: a few conv layers (tests, demos)",
    )
    p.add_argument("--encoder", help="FPN encoder, e.g. resnet50, resnet18, mobilenet_v2")
    p.add_argument(
        "--decoder-channels",
        type=pair_of_ints,
        metavar="PYRAMID,SEGMENTATION",
        help="FPN channels (paper: 256,128)",
    )
    p.add_argument("--iterations", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--crop", type=int, help="training window side in pixels")
    p.add_argument("--lr", type=float, help="initial learning rate (poly schedule; 0.01)")
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--grad-clip", type=float, help="gradient norm clip (35; 0: none)")
    p.add_argument(
        "--scale-range",
        type=pair_of_floats,
        metavar="MIN,MAX",
        help="random scale augmentation (0.5,1.75)",
    )
    p.add_argument("--no-augment", action="store_true", help="no flips or rotations")
    p.add_argument(
        "--randomise",
        default="all",
        metavar="PARTS",
        help="sensor randomisation parts, comma-separated, from mixing,gain,haze,blur,"
        "tone,noise,quantise; 'all' (default) or 'none'",
    )
    p.add_argument(
        "--randomise-probability",
        type=float,
        metavar="P",
        help="probability of each randomisation part per window (default: the card's "
        "SensorRandomisation default, 0.4)",
    )
    p.add_argument(
        "--randomise-clean-share",
        type=float,
        metavar="S",
        help="share of windows left as the source sensor saw them (default 0.5)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="DataLoader worker processes preparing windows (0: in the main process)",
    )
    p.add_argument(
        "--sample-crops",
        type=int,
        default=32,
        metavar="N",
        help="labelled source crops (192 px) carried in the model file, so adaptation "
        "keeps a source term anywhere (0: none; 32 crops of RGB uint8: 4.7 MB)",
    )
    p.add_argument(
        "--sample-side",
        type=int,
        default=192,
        metavar="PX",
        help="side of the carried source crops in pixels (192)",
    )
    p.add_argument("--bands", help="image bands to use, e.g. 3,2,1 (default: all but alpha)")
    p.add_argument(
        "--gsd",
        type=float,
        help="ground sample distance of the images in metres (default: from their georeference)",
    )
    p.add_argument("--name", default="LoveCS land-cover model", help="model name in the card")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        metavar="N",
        help="write a resumable checkpoint (OUT.ckpt) every N iterations",
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT.ckpt if it exists")
    p.set_defaults(handler=run)


def training_pairs(
    args: argparse.Namespace, codes: list[int], folder: str
) -> list[tuple[Path, Path]]:
    """Image/label pairs: label rasters matched by name, or ``--points`` burnt onto the images
    (label rasters in ``folder``; features left out are logged)."""
    from ..rasters.labelled import expand_paths, pair_rasters
    from ..rasters.vector_labels import vector_label_pairs

    if args.labels:
        return pair_rasters(args.images, args.labels)
    pairs, problems = vector_label_pairs(
        args.points, expand_paths(args.images), codes, folder, args.class_field, args.layer
    )
    for problem in problems:
        log.warning("%s: %s", args.points, problem)
    return pairs


def vector_provenance(args: argparse.Namespace) -> Optional[dict[str, Any]]:
    """What the card records of ``--points``: the file, its hash, the layer and class field."""
    from ..rasters.corrections import file_sha256

    if not args.points:
        return None
    path = Path(args.points)
    return {
        "file": str(path.resolve()),
        "sha256": file_sha256(path) if path.is_file() else "",
        "layer": args.layer,
        "class_field": args.class_field,
    }


def check_outputs(args: argparse.Namespace) -> None:
    """The model file (and with ``--checkpoint-every`` its checkpoint) is none of the inputs
    and can be written (``checks.outputs``: the rule every command applies)."""
    from ..checks.outputs import check_train_outputs
    from ..rasters.labelled import expand_paths

    inputs: list[tuple[str, Any]] = [("classes", args.classes), ("reference", args.points)]
    for what, paths in (("image", args.images), ("label raster", args.labels or [])):
        inputs += [(what, path) for path in expand_paths(paths)]
    check_train_outputs(args.out, inputs, checkpoint=bool(args.checkpoint_every))


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    check_outputs(args)
    from ..model.card import load_classes
    from ..model.networks import architecture
    from ..presets import TRAIN_PRESETS
    from ..training.source import TrainConfig, fpn_architecture, train_source

    preset = TRAIN_PRESETS[args.preset]
    if args.arch == "tiny":
        arch = architecture("tiny", csn=True, width=16, depth=3)
    else:
        arch = fpn_architecture(
            args.encoder or preset["encoder"], args.decoder_channels or preset["decoder_channels"]
        )
    values = {
        "iterations": preset["iterations"],
        "batch_size": preset["batch_size"],
        "crop": preset["crop"],
    }
    for key in (
        "iterations",
        "batch_size",
        "crop",
        "lr",
        "momentum",
        "weight_decay",
        "grad_clip",
        "scale_range",
    ):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    config = TrainConfig(
        **values,
        augment=not args.no_augment,
        seed=args.seed,
        device=args.device,
        amp=not args.no_amp,
        checkpoint_every=args.checkpoint_every,
        randomisation=randomisation(
            args.randomise, args.randomise_probability, args.randomise_clean_share
        ),
        workers=args.workers,
        sample_crops=args.sample_crops,
        sample_side=args.sample_side,
    )
    classes = load_classes(args.classes)
    with tempfile.TemporaryDirectory(prefix="lovecs-labels-") as folder:
        pairs = training_pairs(args, [c.code for c in classes], folder)
        result = train_source(
            pairs,
            classes,
            args.out,
            arch=arch,
            bands=parse_bands(args.bands),
            gsd=args.gsd,
            config=config,
            name=args.name,
            resume=args.resume,
            reporter=reporter,
            vector_labels=vector_provenance(args),
        )
    if args.progress == "json":
        emit_json(
            sys.stdout,
            RESULT,
            output=str(result.output),
            seconds=result.seconds,
            device=result.device,
            final_loss=result.card.provenance.get("final_loss"),
            card=result.card.to_dict(),
        )
    else:
        print(
            f"wrote {result.output} ({len(pairs)} image(s), {config.iterations} iterations, "
            f"final loss {result.card.provenance.get('final_loss'):.4f}, "
            f"{result.seconds:.0f} s on {result.device})"
        )
    return 0
