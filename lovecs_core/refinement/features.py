"""A network split into its body (pixels -> features) and its head (a 1x1 convolution), and the
features of a raster region computed once, so that a refitted head re-maps the region in a
fraction of a second.

The region is read as :func:`~lovecs_core.mapping.predict.predict_raster` reads it: the same
domain, sensor alignment (bit depth, tone) and normalisation, at the model's GSD. The map is
made on the region's own pixel grid, as ``lovecs predict`` makes it.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from osgeo import gdal
from torch import nn

from ..alignment.normalize import normalize
from ..alignment.radiometry import adapted_transform, scene_alignment
from ..alignment.tone import choose_tone
from ..contract import FEATURES
from ..mapping.predict import tile_settings
from ..model.card import ModelCard
from ..model.csn import csn_domain, has_csn
from ..model.networks import SemanticFPN, TinyConvNet, classifier_of, input_divisor
from ..model.wide_head import WideHead
from ..progress import Reporter
from ..rasters.reading import (
    GSD_TOLERANCE,
    RasterError,
    RasterReader,
    Window,
    open_dataset,
    pixel_size_metres,
    subset,
    warp_to_gsd,
    window_from_extent,
)
from .head import HeadWeights


class RefineError(ValueError):
    """Refinement cannot run (an architecture without a head, a region too large ...)."""


@dataclass
class SplitNetwork:
    """``body(x)``: normalised input ``[N, B, H, W]`` -> features ``[N, C, H/stride, W/stride]``
    (with a :class:`WideHead`, every feature its head is linear in: the deep features, their
    window mean and their random features);
    ``head``: the classifier, linear in those features."""

    net: nn.Module
    body: Callable[[torch.Tensor], torch.Tensor]
    head: nn.Module
    stride: int


def _deep_features(net: nn.Module) -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
    """``(input -> the features the classifier reads, their stride)``."""
    if isinstance(net, SemanticFPN):
        smp_net = net.net
        return (lambda x: smp_net.decoder(smp_net.encoder(x))), 4
    if isinstance(net, TinyConvNet):
        return net.body[:-1], 1
    raise RefineError(f"refinement needs a Semantic FPN or tiny network, not {type(net).__name__}")


def split_network(net: nn.Module) -> SplitNetwork:
    """The body and head of a Semantic FPN (smp: decoder output, segmentation head's classifier,
    x4 upsampling) or of the tiny test network; a :class:`WideHead`'s context and random
    features are part of the body."""
    deep, stride = _deep_features(net)
    head = classifier_of(net)
    if isinstance(head, WideHead):
        return SplitNetwork(net, lambda x: head.widen(deep(x)), head, stride)
    return SplitNetwork(net, deep, head, stride)


@dataclass
class Region:
    """A raster region prepared for the model: ``grid`` is the region on the raster's own pixels
    (maps are written on it); ``model_ds`` the same region at the model's GSD."""

    grid: gdal.Dataset
    model_ds: gdal.Dataset
    bands: list[int]
    domain: str
    mean: list[float]
    std: list[float]
    transform: Optional[Callable[[np.ndarray], np.ndarray]]
    tone: Optional[float]
    alignment: Optional[dict[str, object]]

    @property
    def size(self) -> tuple[int, int]:
        return self.grid.RasterYSize, self.grid.RasterXSize

    @property
    def model_size(self) -> tuple[int, int]:
        return self.model_ds.RasterYSize, self.model_ds.RasterXSize


def open_region(
    card: ModelCard,
    net: nn.Module,
    raster: str,
    bands: Optional[Sequence[int]] = None,
    extent: Optional[Sequence[float]] = None,
    tone: str | float = "auto",
) -> Region:
    """The region ``extent`` (raster CRS; None: the whole raster) of ``raster``, read as
    ``lovecs predict`` reads it."""
    ds = open_dataset(raster)
    grid = subset(ds, window_from_extent(ds, extent)) if extent is not None else ds
    chosen = list(bands) if bands else RasterReader(grid).bands
    if len(chosen) != card.band_count:
        raise RasterError(
            f"{raster}: {len(chosen)} band(s) chosen, the model takes {card.band_count} "
            f"({', '.join(card.band_names)})"
        )
    domain = card.default_domain
    mean, std = card.stats(domain)
    transform, gamma, described = adapted_transform(card, domain), None, None
    if domain == "source":
        alignment = choose_tone(card, net, grid, chosen, scene_alignment(card, grid, chosen), tone)
        mean, std = (list(v) for v in alignment.normalization(mean, std).values())
        transform, gamma, described = (
            alignment.pixel_transform(),
            alignment.gamma,
            alignment.to_dict(),
        )
    model_gsd, raster_gsd = card.domain_gsd(domain), pixel_size_metres(grid)
    model_ds = grid
    if model_gsd and raster_gsd and abs(raster_gsd / model_gsd - 1.0) > GSD_TOLERANCE:
        model_ds = warp_to_gsd(grid, model_gsd)
    return Region(grid, model_ds, chosen, domain, mean, std, transform, gamma, described)


@dataclass
class RegionFeatures:
    """The body's features of a region: ``features[C, h, w]`` on the model grid padded to the
    network's divisor (``padded`` pixels), ``valid[H, W]`` on the region's own grid."""

    features: torch.Tensor
    valid: np.ndarray
    model_size: tuple[int, int]
    padded: tuple[int, int]
    stride: int

    def model_coordinates(
        self, rows: np.ndarray, cols: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pixel centres of the region grid ``(rows, cols)`` as model-grid pixel coordinates."""
        height, width = self.valid.shape
        mh, mw = self.model_size
        ys = (np.asarray(rows, float) + 0.5) * mh / height - 0.5
        xs = (np.asarray(cols, float) + 0.5) * mw / width - 0.5
        return ys, xs

    def at(self, rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
        """Features ``[N, C]`` at region pixels, bilinear as the head's upsampling sees them."""
        ys, xs = self.model_coordinates(rows, cols)
        return sample_features(self.features, self.padded, ys, xs)


def sample_features(
    features: torch.Tensor, padded: tuple[int, int], ys: np.ndarray, xs: np.ndarray
) -> torch.Tensor:
    """Features ``[N, C]`` of ``features[C, h, w]`` (the body's output for an input of ``padded``
    pixels) at input pixel coordinates ``ys, xs``: bilinear with corners aligned, as the
    network upsamples its logits."""
    ph, pw = padded
    gy = torch.as_tensor(2.0 * np.clip(ys, 0, ph - 1) / max(ph - 1, 1) - 1.0, dtype=torch.float32)
    gx = torch.as_tensor(2.0 * np.clip(xs, 0, pw - 1) / max(pw - 1, 1) - 1.0, dtype=torch.float32)
    grid = torch.stack([gx, gy], dim=-1).view(1, 1, -1, 2)
    sampled = F.grid_sample(features[None], grid, mode="bilinear", align_corners=True)
    return sampled[0, :, 0].T.contiguous()


def _body_features(split: SplitNetwork, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    with torch.inference_mode():
        return split.body(x.to(device)).float().cpu()


def feature_tiling(card: ModelCard) -> tuple[int, int]:
    """``(core, margin)``: the body runs on tiles of the card's tile size (what ``lovecs
    predict`` feeds the network: its maps depend on it), keeping each tile's core and throwing
    away a margin of the card's overlap on every side; both multiples of the input divisor."""
    tile, overlap = tile_settings(card, None, None)
    divisor = input_divisor(card.architecture)
    margin = math.ceil(overlap / divisor) * divisor
    return max(divisor, tile - 2 * margin), margin


def _tiled_features(
    split: SplitNetwork,
    x: torch.Tensor,
    tiling: tuple[int, int],
    device: torch.device,
    reporter: Reporter,
) -> torch.Tensor:
    """Features of a padded input ``[B, H, W]``, tile by tile with a thrown-away margin."""
    _, height, width = x.shape
    s, (tile, margin) = split.stride, tiling
    out: Optional[torch.Tensor] = None
    starts = [(y, x0) for y in range(0, height, tile) for x0 in range(0, width, tile)]
    for i, (y0, x0) in enumerate(starts):
        reporter.check()
        ya, xa = max(0, y0 - margin), max(0, x0 - margin)
        yb, xb = min(height, y0 + tile + margin), min(width, x0 + tile + margin)
        piece = _body_features(split, x[None, :, ya:yb, xa:xb], device)[0]
        if out is None:
            out = torch.zeros((piece.shape[0], height // s, width // s), dtype=torch.float32)
        core_h, core_w = min(tile, height - y0) // s, min(tile, width - x0) // s
        oy, ox = (y0 - ya) // s, (x0 - xa) // s
        out[:, y0 // s : y0 // s + core_h, x0 // s : x0 // s + core_w] = piece[
            :, oy : oy + core_h, ox : ox + core_w
        ]
        reporter(FEATURES, (i + 1) / len(starts), f"tile {i + 1}/{len(starts)}")
    assert out is not None
    return out


def region_features(
    card: ModelCard,
    split: SplitNetwork,
    region: Region,
    device: torch.device,
    reporter: Optional[Reporter] = None,
    max_pixels: Optional[int] = None,
) -> RegionFeatures:
    """Read the region at the model's GSD and run the body over it."""
    reporter = reporter or Reporter()
    mh, mw = region.model_size
    if max_pixels is not None and mh * mw > max_pixels:
        raise RefineError(
            f"the view has {mh * mw / 1e6:.1f} million pixels at the model's GSD, more than "
            f"{max_pixels / 1e6:.0f} million: zoom in, or refine the whole layer"
        )
    with RasterReader(region.model_ds, region.bands) as reader:
        data, model_valid = reader.read(Window(0, 0, mw, mh))
    valid = model_valid
    if region.model_ds is not region.grid:  # the mask on the region's own pixels
        with RasterReader(region.grid, region.bands) as reader:
            _, valid = reader.read(Window(0, 0, region.grid.RasterXSize, region.grid.RasterYSize))
    if region.transform is not None:
        data = region.transform(data)
    x = normalize(data, region.mean, region.std)
    x[:, ~model_valid] = 0.0  # as the tiled mapping feeds nodata
    divisor = input_divisor(card.architecture)  # the tiling's core and margin are multiples
    ph = math.ceil(mh / divisor) * divisor
    pw = math.ceil(mw / divisor) * divisor
    padded = torch.zeros((x.shape[0], ph, pw), dtype=torch.float32)
    padded[:, :mh, :mw] = torch.from_numpy(x)
    net = split.net.to(device).eval()
    domain = csn_domain(net, region.domain) if has_csn(net) else contextlib.nullcontext()
    with domain:
        feats = _tiled_features(split, padded, feature_tiling(card), device, reporter)
    return RegionFeatures(feats, valid, (mh, mw), (ph, pw), split.stride)


def map_region(weights: HeadWeights, feats: RegionFeatures) -> np.ndarray:
    """Class indices ``[H, W]`` on the region's grid: the head on the features, upsampled as
    the network upsamples (bilinear, corners aligned). When the model's GSD differs, only the
    model pixels that ``lovecs predict``'s nearest-neighbour warp back keeps are computed."""
    channels, h, w = feats.features.shape
    logits = weights.logits(feats.features.reshape(channels, -1).T).T.reshape(1, -1, h, w)
    ph, pw = feats.padded
    mh, mw = feats.model_size
    height, width = feats.valid.shape
    if (height, width) == (mh, mw):
        if feats.stride > 1:
            logits = F.interpolate(logits, size=(ph, pw), mode="bilinear", align_corners=True)
        return logits[0, :, :mh, :mw].argmax(dim=0).numpy()
    rows = np.minimum(((np.arange(height) + 0.5) * mh / height).astype(np.int64), mh - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * mw / width).astype(np.int64), mw - 1)
    gy = torch.as_tensor(2.0 * rows / max(ph - 1, 1) - 1.0, dtype=torch.float32)
    gx = torch.as_tensor(2.0 * cols / max(pw - 1, 1) - 1.0, dtype=torch.float32)
    grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), dim=-1)[None]
    kept = F.grid_sample(logits, grid, mode="bilinear", align_corners=True)
    return kept[0].argmax(dim=0).numpy()
