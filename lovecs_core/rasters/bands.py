"""Band mapping by name: find a model's bands (``red``, ``green``, ``nir`` ...) in a raster by
GDAL colour interpretation or band description."""

from __future__ import annotations

import os
from typing import Optional, Sequence

from osgeo import gdal

from .reading import data_band_numbers

#: Alternative spellings of common band names (all lower case).
ALIASES: dict[str, tuple[str, ...]] = {
    "red": ("red", "r"),
    "green": ("green", "g"),
    "blue": ("blue", "b"),
    "nir": ("nir", "near infrared", "near-infrared", "nearinfrared", "infrared"),
}


def _canonical(name: str) -> str:
    text = name.strip().lower()
    for key, spellings in ALIASES.items():
        if text in spellings:
            return key
    return text


def raster_band_names(ds: gdal.Dataset) -> list[tuple[str, str]]:
    """``(description, colour interpretation)`` of every band, lower case."""
    names = []
    for i in range(1, ds.RasterCount + 1):
        band = ds.GetRasterBand(i)
        interp = gdal.GetColorInterpretationName(band.GetColorInterpretation()) or ""
        names.append(((band.GetDescription() or "").lower(), interp.lower()))
    return names


def match_bands(
    wanted: Sequence[str], raster: str | os.PathLike[str] | gdal.Dataset
) -> Optional[list[int]]:
    """1-based band numbers of the raster carrying each wanted band name, in the wanted order;
    None unless every name is found exactly once."""
    ds = raster if isinstance(raster, gdal.Dataset) else gdal.Open(str(raster))
    found: list[int] = []
    names = raster_band_names(ds)
    for name in wanted:
        key = _canonical(name)
        hits = [
            i + 1
            for i, (desc, interp) in enumerate(names)
            if key in (_canonical(desc), _canonical(interp))
        ]
        if len(hits) != 1:
            return None
        found.append(hits[0])
    return found if len(set(found)) == len(found) else None


def choose_bands(
    wanted: Sequence[str],
    raster: str | os.PathLike[str] | gdal.Dataset,
    bands: Optional[Sequence[int]] = None,
) -> tuple[Optional[list[int]], str]:
    """The raster bands to feed a model whose card names ``wanted``, and a note saying how they
    were chosen (empty when nothing needs saying).

    Bands given by the user are kept. Otherwise: the bands whose names or colour
    interpretations match the model's; else all non-alpha bands when their count matches (None:
    the engine's default); else, when the raster has more bands than the model and their names
    do not help, the first ones, and the note says so. None with an empty note leaves the
    count mismatch to the caller's error."""
    if bands:
        return list(bands), ""
    ds = raster if isinstance(raster, gdal.Dataset) else gdal.Open(str(raster))
    data = data_band_numbers(ds)
    n = len(wanted)
    found = match_bands(wanted, ds)
    if found:
        if found == data[:n] and len(data) == n:
            return None, ""
        return found, (
            f"bands {','.join(map(str, found))} chosen by their names for the "
            f"model's {', '.join(wanted)}"
        )
    if len(data) > n:
        chosen = data[:n]
        return chosen, (
            f"the raster has {len(data)} bands whose names do not identify the "
            f"model's {n} ({', '.join(wanted)}): using the first {n}, bands "
            f"{','.join(map(str, chosen))}; choose others with the band list "
            f"(e.g. --bands / BANDS)"
        )
    return None, ""
