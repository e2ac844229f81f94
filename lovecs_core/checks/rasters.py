"""Checks of an input raster made before any long work starts (GDAL, no torch; the QGIS plugin
calls them in its own process too):

- :func:`check_georeference`: a raster without geotransform or CRS is refused when the model
  expects a pixel size, unless the user asked to map at the raster's own pixels.
- :func:`input_value_warnings`: the input's data type or value range differ from the model's,
  or it holds one value only (a blank or all-zero scene).
- :func:`check_band_numbers`, :func:`check_raster_data`: bands that do not exist, complex
  values, rasters too large to map in one run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from ..contract import missing_bands_problem
from .outputs import CheckError
from .quiet import open_quietly, quiet_gdal

__all__ = [
    "MAX_PIXELS",
    "check_band_numbers",
    "check_georeference",
    "check_raster_data",
    "georeference_problem",
    "input_value_warnings",
]


def georeference_problem(ds: Any) -> str:
    """Empty when the raster has a geotransform and a CRS, else what is missing."""
    gt = ds.GetGeoTransform(can_return_null=True)
    missing = []
    if gt is None:
        missing.append("no geotransform")
    if not ds.GetProjection():
        missing.append("no coordinate reference system")
    return " and ".join(missing)


def check_georeference(
    model_gsd: Optional[float], raster: Any, resample: bool = True, hint: str = "--no-resample"
) -> None:
    """A raster without geotransform or CRS has an unknown pixel size: refuse it when the model
    expects a pixel size (``model_gsd``) and resampling is on, instead of mapping at a scale
    nobody chose. ``hint`` names the switch that maps at the raster's own pixels in the
    caller's interface. ``raster``: a path or an open GDAL dataset."""
    if not model_gsd or not resample:
        return
    ds = open_quietly(raster)
    if ds is None:
        return  # not readable: the reader reports it with its own message
    problem = georeference_problem(ds)
    if problem:
        name = Path(ds.GetDescription() or str(raster)).name
        raise CheckError(
            f"{name} has {problem}, so its pixel size is unknown, and the model expects "
            f"{model_gsd:g} m pixels: georeference the raster (GDAL: gdal_edit.py -a_srs ... "
            f"-a_ullr ...; QGIS: the Georeferencer), or map it at its own pixels with {hint}"
        )


_DTYPE_NAMES = {"byte": "uint8"}
SAMPLE_SIDE = 256


def _sample(ds: Any, bands: Sequence[int]) -> list[Any]:
    """Valid values of each band on a decimated grid (at most SAMPLE_SIDE² pixels)."""
    import numpy as np

    w, h = ds.RasterXSize, ds.RasterYSize
    bw, bh = min(w, SAMPLE_SIDE), min(h, SAMPLE_SIDE)
    out = []
    valid = np.ones((bh, bw), bool)
    arrays = []
    for b in bands:
        band = ds.GetRasterBand(b)
        a = band.ReadAsArray(0, 0, w, h, buf_xsize=bw, buf_ysize=bh).astype(np.float64)
        if not band.GetMaskFlags() & 1:  # GMF_ALL_VALID
            valid &= band.GetMaskBand().ReadAsArray(0, 0, w, h, buf_xsize=bw, buf_ysize=bh) > 0
        arrays.append(a)
    for a in arrays:
        valid &= np.isfinite(a)
    for a in arrays:
        out.append(a[valid])
    return out


def input_value_warnings(
    card: Any,
    raster: Any,
    bands: Optional[Sequence[int]] = None,
    domain: Optional[str] = None,
    aligned: bool = False,
) -> list[str]:
    """Warnings when the raster's data type or values differ from what the model was made for
    (they are not rescaled here, and a model fed the wrong range maps one or two classes).
    ``card``: a ModelCard; ``raster``: a path or GDAL dataset; ``bands``: 1-based (default:
    the non-alpha bands); ``domain``: the normalisation domain used (default: the card's);
    ``aligned``: the sensor alignment (radiometry.py) will rescale the values."""
    import numpy as np
    from osgeo import gdal

    from ..rasters.reading import data_band_numbers

    ds = open_quietly(raster)
    if ds is None:
        return []
    if not bands:
        bands = data_band_numbers(ds)
    bands = [b for b in bands if 1 <= b <= ds.RasterCount]
    if len(bands) != card.band_count:
        return []  # the band-count error comes elsewhere
    name = Path(ds.GetDescription() or str(raster)).name
    warnings: list[str] = []
    dtype = gdal.GetDataTypeName(ds.GetRasterBand(bands[0]).DataType).lower()
    dtype = _DTYPE_NAMES.get(dtype, dtype)
    domain = domain or card.default_domain
    source_stats = domain == "source" or "target" not in card.normalization
    lo, hi = (float(v) for v in card.band_range)
    if source_stats and dtype != card.band_dtype and aligned:
        warnings.append(
            f"{name} holds {dtype} values but the model was made for {card.band_dtype} "
            f"({lo:g}-{hi:g}): the sensor alignment rescales them to the model's range (see the "
            f"'sensor alignment' line); a model adapted to this sensor may map it better"
        )
        return warnings
    if source_stats and dtype != card.band_dtype:
        warnings.append(
            f"{name} holds {dtype} values but the model was made for {card.band_dtype} "
            f"({lo:g}-{hi:g}); the values are used as they are, so the map may show only one "
            f"or two classes. Convert the raster to the model's range, or adapt the model to it"
        )
    try:
        with quiet_gdal():
            samples = _sample(ds, bands)
    except Exception:
        return warnings
    if not samples or samples[0].size == 0:
        return warnings
    constant = constant_values(samples)
    if constant is not None:
        return [*warnings, constant_scene_warning(name, constant)]
    values = np.concatenate(samples)
    p1, p99 = (float(v) for v in np.percentile(values, [1, 99]))
    span = max(hi - lo, 1e-9)
    if (
        source_stats
        and not aligned
        and not warnings
        and (p99 > hi + 0.5 * span or p99 < lo + 0.1 * span or p1 < lo - 0.5 * span)
    ):
        warnings.append(
            f"{name}'s values span about {p1:.4g}-{p99:.4g} but the model was made for values "
            f"in {lo:g}-{hi:g}; they are used as they are, so the map may be poor. Convert the "
            f"raster to the model's range, or adapt the model to it"
        )
    elif not source_stats:
        mean, std = card.stats(domain)
        z = [abs(float(np.mean(s)) - m) / sd for s, m, sd in zip(samples, mean, std) if s.size]
        if z and max(z) > 4.0:
            warnings.append(
                f"{name}'s values differ strongly from the statistics of the model's "
                f"'{domain}' domain (band means {', '.join(f'{float(np.mean(s)):.4g}' for s in samples)}"
                f" vs {', '.join(f'{m:.4g}' for m in mean)}); is this the scene the model was "
                f"adapted to?"
            )
    return warnings


def constant_values(samples: Sequence[Any]) -> Optional[list[float]]:
    """Each band's one value when every band is constant over its valid sample, else None."""
    if not samples or any(s.size == 0 or s.min() != s.max() for s in samples):
        return None
    return [float(s[0]) for s in samples]


def constant_scene_warning(name: str, values: Sequence[float]) -> str:
    """What to say of a raster holding one value per band (a blank or all-zero scene)."""
    listed = ", ".join(f"{v:g}" for v in values)
    return (
        f"{name} holds one value in each band ({listed}) wherever it has data: nothing in it "
        "tells classes apart, so the map will be a single class. Is it the right file, or an "
        "empty (all-zero) export?"
    )


def check_band_numbers(bands: Iterable[int], count: int, name: str = "the raster") -> None:
    """Refuse band numbers a raster of ``count`` bands does not have."""
    problem = missing_bands_problem(bands, count, name)
    if problem:
        raise CheckError(problem)


#: The largest raster mapped in one run (pixels); 10⁶ x 10⁶ would take months on a CPU.
MAX_PIXELS = 20_000_000_000


def check_raster_data(
    raster: Any, bands: Optional[Sequence[int]] = None, max_pixels: int = MAX_PIXELS
) -> None:
    """Data the engine cannot use, refused with the reason: complex values, or a raster so
    large (e.g. a virtual raster declaring 10⁶ x 10⁶ pixels) that the run would not end; the
    message gives the estimate and the way out (a smaller extent)."""
    from osgeo import gdal

    from ..compute.estimate import classify_seconds

    ds = open_quietly(raster)
    if ds is None:
        return
    name = Path(ds.GetDescription() or str(raster)).name
    for b in bands or range(1, ds.RasterCount + 1):
        if 1 <= b <= ds.RasterCount:
            dtype = ds.GetRasterBand(b).DataType
            if gdal.DataTypeIsComplex(dtype):
                raise CheckError(
                    f"{name} band {b} holds complex values ({gdal.GetDataTypeName(dtype)}); "
                    f"the models take real values: convert it first, e.g. the amplitude with "
                    f"gdal_calc.py or the Raster calculator"
                )
    pixels = ds.RasterXSize * ds.RasterYSize
    if pixels > max_pixels:
        days = classify_seconds(pixels) / 86400
        raise CheckError(
            f"{name} has {ds.RasterXSize} x {ds.RasterYSize} = {pixels:.3g} pixels; mapping it "
            f"would take about {days:,.0f} days on a 2-core CPU (the limit is "
            f"{max_pixels:.3g} pixels per run): map a part of it (--extent / a clipped copy)"
        )
