"""The tone step of sensor alignment, chosen with the model, for scenes of another bit depth.

Why: an 8-bit image like the source's is display-encoded (a gamma of about 1/2.2), while 10- to
16-bit products of other sensors are often linear in radiance or carry a tone curve of their
own. After the affine alignment (:mod:`.radiometry`) their mid-tones can still sit far darker
than the source's: on ``target_b`` aligned vegetation averaged RGB 38/38/40 against the source's
69/74/74, and the model called it water. No scene statistic can tell a darker tone curve from a
darker landscape, so the choice is left to the model, on a fixed sample of the scene:

* candidates: ``gamma`` in :data:`GAMMAS`, from 1 (no tone) down to 0.5 (about the 1/2.2 that
  turns linear values into display-encoded ones: the strongest correction a linear product
  needs; stronger brightening also turned bare land into the most confident class everywhere);
* criterion: the mean top-class probability of the source model, in float32, over the valid
  pixels of up to :data:`SAMPLE_TILES` tiles spread over the scene at the model's GSD;
* the smallest correction wins: the gamma closest to 1 that gets :data:`SHARE_OF_GAIN` of the
  best candidate's confidence gain over no tone (the curve is noisy on a sample: on two test
  scenes the most confident gamma was a worse map than a milder one);
* a tone is kept only when it beats no tone by :data:`MIN_GAIN`; otherwise the scene stays as
  the affine alignment left it.

8-bit scenes never get a tone (same encoding as the source, and the first release's failure was
a same-sensor scene with another class mix). ``bench/RESULTS.md`` has the measurements.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Sequence

import numpy as np
import torch
from osgeo import gdal
from torch import nn

from ..compute.runtime import round_up
from ..model.card import ModelCard
from ..model.csn import csn_domain, has_csn
from ..model.networks import input_divisor
from ..rasters.reading import GSD_TOLERANCE, RasterReader, Window, pixel_size_metres, warp_to_gsd
from .normalize import normalize
from .radiometry import Alignment

log = logging.getLogger(__name__)

GAMMAS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)  #: candidate tones, no tone first
MIN_GAIN = 0.005  #: mean-confidence gain a tone needs over no tone
SHARE_OF_GAIN = 0.75  #: the mildest tone with this share of the best gain is chosen
SAMPLE_TILES = 8  #: tiles (of up to :data:`SAMPLE_SIDE` px) the choice looks at
SAMPLE_SIDE = 384
MIN_VALID = 0.5  #: a sample tile needs at least this share of valid pixels
TONE_MODES = ("auto", "off")


def parse_tone(value: str | float | None) -> str | float:
    """``auto``, ``off`` or a gamma in (0, 4]: the CLI's and the plugin's ``tone`` setting."""
    if value is None:
        return "auto"
    if isinstance(value, str) and value.strip().lower() in TONE_MODES:
        return value.strip().lower()
    try:
        gamma = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"tone must be auto, off or a gamma such as 0.6, not {value!r}") from None
    if not 0 < gamma <= 4:
        raise ValueError(f"a tone's gamma must be in (0, 4], not {gamma}")
    return gamma


def sample_windows(reader: RasterReader, count: int, side: int) -> list[Window]:
    """Up to ``count`` windows of ``side`` px on a regular grid over the raster, those with the
    most valid pixels first (at least :data:`MIN_VALID` of them)."""
    side = min(side, reader.width, reader.height)
    n = max(1, math.ceil(math.sqrt(2 * count)))  # a grid with about twice the windows needed
    xs = np.linspace(0, reader.width - side, n).round().astype(int)
    ys = np.linspace(0, reader.height - side, n).round().astype(int)
    scored = []
    for y in sorted(set(ys.tolist())):
        for x in sorted(set(xs.tolist())):
            w = Window(x, y, side, side)
            share = float(reader.read_valid(w).mean())
            if share >= MIN_VALID:
                scored.append((-share, y, x, w))
    return [w for *_, w in sorted(scored)[:count]]


@torch.no_grad()
def sample_confidence(
    card: ModelCard,
    net: nn.Module,
    tiles: Sequence[tuple[np.ndarray, np.ndarray]],
    alignment: Alignment,
) -> float:
    """The model's mean top-class probability over the valid pixels of ``tiles`` (raw data,
    validity) seen through ``alignment`` (tone included), in float32, source domain, on the
    device the model is on."""
    device = next(net.parameters()).device
    mean, std = card.stats("source")
    div = input_divisor(card.architecture)
    total, count = 0.0, 0
    was_training = net.training
    net.eval()
    try:
        with csn_domain(net, "source") if has_csn(net) else contextlib.nullcontext():
            for data, valid in tiles:
                x = normalize(alignment.apply(data), mean, std)
                x[:, ~valid] = 0.0
                h, w = x.shape[1:]
                x = np.pad(x, ((0, 0), (0, round_up(h, div) - h), (0, round_up(w, div) - w)))
                logits = net(torch.from_numpy(x)[None].to(device))
                top = torch.softmax(logits.float(), dim=1).amax(dim=1)[0, :h, :w].cpu().numpy()
                total += float(top[valid].sum())
                count += int(valid.sum())
    finally:
        net.train(was_training)
    return total / max(count, 1)


def choose_tone(
    card: ModelCard,
    net: nn.Module,
    ds: gdal.Dataset,
    bands: Sequence[int],
    alignment: Alignment,
    mode: str | float = "auto",
) -> Alignment:
    """``alignment`` with the tone that ``mode`` asks for: ``off``: none; a number: that gamma;
    ``auto``: the model's choice (module docstring) for a scene of another bit depth, else none."""
    mode = parse_tone(mode)
    if mode == "off":
        return alignment
    if not isinstance(mode, str):
        return alignment.with_gamma(mode) if abs(mode - 1) > 1e-6 else alignment
    if not alignment.other_depth:  # only another bit depth (not an 8-bit image in a wider type)
        return alignment
    tiles = read_sample_tiles(card, ds, bands)
    if not tiles:
        return alignment
    scores = {g: sample_confidence(card, net, tiles, alignment.with_gamma(g)) for g in GAMMAS}
    log.info(
        "tone: mean confidence %s",
        ", ".join(f"gamma {g:g}: {100 * s:.2f} %" for g, s in scores.items()),
    )
    best = mildest_tone(scores)
    if best == 1.0:
        return alignment
    gain = 100 * (scores[best] - scores[1.0])
    return alignment.with_gamma(
        best, f", model's confidence +{gain:.1f} points on {len(tiles)} tiles"
    )


def mildest_tone(scores: dict[float, float]) -> float:
    """The gamma to use given each candidate's mean confidence (``scores[1.0]``: no tone): the
    one closest to 1 within :data:`SHARE_OF_GAIN` of the best gain, or 1 when the best gain is
    under :data:`MIN_GAIN`."""
    top = max(scores.values()) - scores[1.0]
    if top < MIN_GAIN:
        return 1.0
    enough = [g for g, s in scores.items() if s - scores[1.0] >= SHARE_OF_GAIN * top]
    return min(enough, key=lambda g: abs(math.log(g)))


def read_sample_tiles(
    card: ModelCard, ds: gdal.Dataset, bands: Sequence[int]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Raw ``(data, valid)`` of the sample tiles, at the model's GSD when the scene's differs."""
    model_gsd, scene_gsd = card.gsd, pixel_size_metres(ds)
    view = ds
    if model_gsd and scene_gsd and abs(scene_gsd / model_gsd - 1.0) > GSD_TOLERANCE:
        view = warp_to_gsd(ds, model_gsd)
    reader = RasterReader(view, list(bands))
    try:
        return [reader.read(w) for w in sample_windows(reader, SAMPLE_TILES, SAMPLE_SIDE)]
    finally:
        reader.close()
