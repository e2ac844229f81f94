"""The labelled source data of self-training's source term: the given image/label pairs, the
sample carried in the model file, or the files the model card records."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..contract import band_count_problem
from ..model.card import ModelCard
from ..progress import Reporter
from ..rasters.labelled import (
    RasterSource,
    open_sources,
    sample_array_sources,
    warn_unknown_label_codes,
)
from .config import AdaptConfig, AdaptError


def source_pairs_from_card(card: ModelCard) -> list[tuple[Path, Path]]:
    """The labelled source data recorded in the card's provenance (files must still exist)."""
    pairs, missing = card.recorded_source_data()
    if missing:
        raise AdaptError(
            f"the source data recorded in the model card is missing "
            f"({len(missing)} file(s), e.g. {missing[0]}); pass the source images and "
            f"labels explicitly (--source-images/--source-labels)"
        )
    return pairs


def source_term(
    card: ModelCard,
    cfg: AdaptConfig,
    method: str,
    source_pairs: Optional[Sequence[tuple[Path, Path]]],
    source_bands: Optional[Sequence[int]],
    sample: Optional[tuple[np.ndarray, np.ndarray]],
    report: Reporter,
) -> tuple[list[RasterSource], str]:
    """The labelled source rasters of the source CE term and where they come from: the given
    pairs, else the sample carried in the model file, else the card's recorded files."""
    if cfg.source_weight <= 0:
        return [], "none"
    if source_pairs:
        pairs, kind = list(source_pairs), "source data"
    elif sample is not None:
        report(
            "reading",
            0.0,
            f"source term: the model file's labelled sample ({sample[0].shape[0]} crops)",
        )
        return sample_array_sources(*sample), "model file sample"
    else:
        pairs, kind = source_pairs_from_card(card), "recorded source data"
    if not pairs:
        raise AdaptError(
            f"{method} trains with a source cross-entropy term and needs the labelled source "
            "data, but the model card records none; pass --source-images and "
            "--source-labels, or --source-weight 0 to train on pseudo-labels only"
        )
    report("reading", 0.0, f"source data: {len(pairs)} image/label pair(s)")
    bands = source_bands if source_bands else card.provenance.get("bands")
    sources = open_sources(pairs, bands)
    warn_unknown_label_codes(sources, card.class_codes(), "the source labels")
    problem = band_count_problem(
        card.band_names, sources[0].band_count, "the source images", "--source-bands"
    )
    if problem:
        raise AdaptError(problem)
    return sources, kind
