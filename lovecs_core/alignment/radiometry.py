"""Sensor alignment: bring a scene's radiometry to the model's before anything else.

Scene-content-robust by construction (no torch, GDAL only to read a decimated copy):

1. **Bit depth / value range.** A scene's nominal maximum comes from its data type, the GeoTIFF
   ``NBITS`` tag, or the smallest common bit depth (8, 10, 11, 12, 14, 16) that holds its 99.99th
   percentile; floats in 0..1 are reflectance-like. Integer values that all sit on a grid of
   at most 256 levels (steps of 16, 257, ...) are an 8-bit product stored in a wider type and
   count as 8-bit. Values are scaled so the nominal maximum becomes the model's
   (``card.band_range``). This does not depend on what the scene shows. A
   scene of another bit depth is certainly another sensor, and its products are rarely
   stretched like the source's: one linear stretch, the same for all bands (so colours, and
   with them the class mix, are kept), brings its overall 2nd-98th percentile spread to the
   source's.
2. **Minimal per-band correction.** The model card keeps, per band, the range that each
   training image's 2nd and 98th percentiles spanned (:class:`Reference`). A scene whose
   percentiles fall inside that range (give or take ``TOLERANCE``) is *not* changed: the same
   sensor can see a dark forest or a bright desert, and standardising either to an "average" scene is what destroyed maps of scenes
   with an unusual class mix. Only the part outside anything the source sensor produced is
   corrected, by the smallest per-band affine map that brings the percentiles back in range.

3. **Tone (mid-tones), only for a scene of another bit depth** (:mod:`.tone` chooses it with the
   model): such products are often linear in radiance, while 8-bit images like the source's are
   display-encoded, so a scene's mid-tones (vegetation, water) can sit far darker than the
   source's even after steps 1-2. A common power ``x' = m * (x / m) ** gamma`` (``m``: the
   model's nominal maximum, the same for every band) after the affine part brightens them.

Without a tone the result is an affine map per band ``x' = gain * x + offset``, which is folded
into the normalisation statistics (:meth:`Alignment.normalization`). With one, the whole map is
applied to the pixels as they are read (:meth:`Alignment.pixel_transform`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

LOW, HIGH = 2.0, 98.0  #: percentiles describing a band's spread
BIT_DEPTHS = (8, 10, 11, 12, 14, 16)
SAMPLE_PIXELS = 4_000_000  #: a scene is read decimated to about this many pixels
#: Percentiles this close to the source range (fraction of the value range) count as inside it.
TOLERANCE = 0.02


@dataclass
class Reference:
    """The source sensor's radiometry, as recorded in the model card (``radiometry``)."""

    value_max: float  # nominal maximum of the source data (255 for 8 bits)
    low: list[float]  # pooled 2nd percentile per band
    high: list[float]  # pooled 98th percentile per band
    low_range: list[tuple[float, float]]  # per band: min..max of the images' 2nd percentiles
    high_range: list[tuple[float, float]]  # per band: min..max of the images' 98th percentiles
    images: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (list(map(list, v)) if k.endswith("_range") else v) for k, v in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Reference":
        return cls(
            value_max=float(data["value_max"]),
            low=[float(v) for v in data["low"]],
            high=[float(v) for v in data["high"]],
            low_range=[(float(a), float(b)) for a, b in data["low_range"]],
            high_range=[(float(a), float(b)) for a, b in data["high_range"]],
            images=int(data.get("images", 0)),
        )


@dataclass
class SceneRadiometry:
    """What alignment needs to know about a scene (from a decimated read)."""

    value_max: float
    bit_depth: Optional[int]
    low: list[float]
    high: list[float]
    pixels: int
    dtype: str
    step: int = 1  # > 1: an 8-bit product stored in a wider type, on a grid of this step


@dataclass
class Alignment:
    """Per-band ``x' = gain * x + offset`` (scene units -> the model's units) and why."""

    gain: list[float]
    offset: list[float]
    range_scale: float = 1.0
    scene_value_max: Optional[float] = None
    bit_depth: Optional[int] = None
    corrected_bands: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stretch: float = 1.0  # the common stretch applied to a scene of another bit depth
    other_depth: bool = False  # the scene's bit depth (precision) differs from the model's
    step: int = 1  # > 1: the scene is an 8-bit product stored on a grid of this step
    gamma: float = 1.0  # the tone applied after the affine part (1: none)
    model_max: float = 255.0  # the model's nominal maximum, which the tone keeps in place
    tone_note: str = ""  # how the tone was chosen

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Alignment":
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def has_tone(self) -> bool:
        return abs(self.gamma - 1.0) > 1e-6

    def with_gamma(self, gamma: float, note: str = "") -> "Alignment":
        """A copy with another tone."""
        return Alignment.from_dict({**asdict(self), "gamma": float(gamma), "tone_note": note})

    def pixel_transform(self) -> Optional["Alignment"]:
        """What readers must apply to raw pixels (``self``, a callable) when the alignment cannot
        be folded into the normalisation (it has a tone); None when it can."""
        return self if self.has_tone else None

    def __call__(self, data: np.ndarray) -> np.ndarray:
        return self.apply(data)

    @classmethod
    def identity(cls, bands: int) -> "Alignment":
        return cls([1.0] * bands, [0.0] * bands)

    @property
    def in_source_range(self) -> bool:
        """The scene looks like the model's own sensor: same bit depth (or an 8-bit product in a
        wider type) and every band already inside the range the source images spanned."""
        return not self.other_depth and not self.corrected_bands

    @property
    def is_identity(self) -> bool:
        return all(abs(g - 1) < 1e-6 for g in self.gain) and all(abs(o) < 1e-6 for o in self.offset)

    def apply(self, data: np.ndarray) -> np.ndarray:
        """Aligned copy of ``data[C, ...]`` (float32), tone included."""
        shape = (-1,) + (1,) * (data.ndim - 1)
        g = np.asarray(self.gain, dtype=np.float32).reshape(shape)
        o = np.asarray(self.offset, dtype=np.float32).reshape(shape)
        out = (data.astype(np.float32) * g + o).astype(np.float32)
        if self.has_tone:
            m = np.float32(self.model_max)
            out = (m * (np.clip(out, 0, m) / m) ** np.float32(self.gamma)).astype(np.float32)
        return out

    def normalization(self, mean: Sequence[float], std: Sequence[float]) -> dict[str, list[float]]:
        """Statistics that standardise raw scene values exactly like ``(align(x) - mean) / std``:
        ``mean' = (mean - offset) / gain``, ``std' = std / gain``. With a tone, the readers
        align the pixels (:meth:`pixel_transform`) and the model's own statistics are kept."""
        if self.has_tone:
            return {"mean": list(mean), "std": list(std)}
        return {
            "mean": [(m - o) / g for m, o, g in zip(mean, self.offset, self.gain)],
            "std": [s / g for s, g in zip(std, self.gain)],
        }

    def describe(self) -> str:
        parts = []
        if self.step > 1:
            parts.append(
                f"an 8-bit product stored as {self.bit_depth}-bit values (steps of {self.step}),"
                f" scaled by {self.range_scale:.4g}"
            )
        elif self.bit_depth and abs(self.range_scale - 1) > 1e-6:
            parts.append(f"{self.bit_depth}-bit values scaled by {self.range_scale:.4g}")
        elif abs(self.range_scale - 1) > 1e-6:
            parts.append(f"values scaled by {self.range_scale:.4g}")
        if abs(self.stretch - 1) > 1e-3:
            parts.append(f"contrast stretched x{self.stretch:.3g} (all bands alike)")
        if self.corrected_bands:
            parts.append(
                "bands "
                + ",".join(str(b + 1) for b in self.corrected_bands)
                + " brought into the source sensor's range"
            )
        if self.has_tone:
            parts.append(f"mid-tones brightened (gamma {self.gamma:.2g}{self.tone_note})")
        return "; ".join(parts) if parts else "scene already in the model's radiometric range"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.describe()}


# -- describing data -------------------------------------------------------------------------------
def percentiles(values: np.ndarray) -> tuple[list[float], list[float]]:
    """Per band 2nd and 98th percentiles of ``values[C, N]``."""
    q = np.percentile(values.astype(np.float64), [LOW, HIGH], axis=1)
    return q[0].tolist(), q[1].tolist()


def nominal_maximum(
    values: np.ndarray, dtype: str, nbits: Optional[int] = None
) -> tuple[float, Optional[int]]:
    """``(nominal maximum, bit depth or None)`` of data of type ``dtype`` (GDAL's name)."""
    dtype = dtype.lower()
    if dtype == "byte":
        return 255.0, 8
    if nbits:
        return float(2**nbits - 1), int(nbits)
    top = float(np.percentile(values, 99.99)) if values.size else 0.0
    if dtype.startswith("float"):
        if top <= 1.0 + 1e-6:
            return 1.0, None
        if top <= 255.0:
            return 255.0, 8
    for bits in BIT_DEPTHS:
        if top <= 2**bits - 1:
            return float(2**bits - 1), bits
    return max(top, 1.0), None


def reference_from_images(per_image: Sequence[np.ndarray], value_max: float) -> Reference:
    """A :class:`Reference` from per-image samples of valid pixels (``[C, N]`` each)."""
    lows, highs = zip(*(percentiles(v) for v in per_image if v.shape[1]))
    pooled = np.concatenate([v for v in per_image if v.shape[1]], axis=1)
    low, high = percentiles(pooled)
    lo, hi = np.asarray(lows), np.asarray(highs)
    return Reference(
        value_max=float(value_max),
        low=low,
        high=high,
        low_range=[(float(a), float(b)) for a, b in zip(lo.min(0), lo.max(0))],
        high_range=[(float(a), float(b)) for a, b in zip(hi.min(0), hi.max(0))],
        images=len(lows),
    )


def read_sample(
    ds: Any, bands: Sequence[int], max_pixels: int = SAMPLE_PIXELS
) -> tuple[np.ndarray, str, Optional[int]]:
    """A decimated read of ``bands`` of a GDAL dataset: ``(valid values [C, N], GDAL dtype name,
    NBITS or None)``. Nodata, masks and non-finite values are left out."""
    from osgeo import gdal

    step = max(1, int(math.ceil(math.sqrt(ds.RasterXSize * ds.RasterYSize / max_pixels))))
    w, h = max(1, ds.RasterXSize // step), max(1, ds.RasterYSize // step)
    arrays, valid = [], np.ones((h, w), dtype=bool)
    for b in bands:
        band = ds.GetRasterBand(int(b))
        a = band.ReadAsArray(
            buf_xsize=w, buf_ysize=h, resample_alg=gdal.GRIORA_NearestNeighbour
        ).astype(np.float64)
        mask = band.GetMaskBand().ReadAsArray(
            buf_xsize=w, buf_ysize=h, resample_alg=gdal.GRIORA_NearestNeighbour
        )
        valid &= (mask > 0) & np.isfinite(a)
        arrays.append(a)
    first = ds.GetRasterBand(int(bands[0]))
    nbits = first.GetMetadataItem("NBITS", "IMAGE_STRUCTURE")
    dtype = gdal.GetDataTypeName(first.DataType)
    return np.stack(arrays)[:, valid], dtype, int(nbits) if nbits else None


def describe_scene(ds: Any, bands: Sequence[int]) -> SceneRadiometry:
    values, dtype, nbits = read_sample(ds, bands)
    if values.shape[1] == 0:
        raise ValueError("the scene has no valid pixels")
    vmax, bits = nominal_maximum(values, dtype, nbits)
    step = eight_bit_step(values, dtype, bits)
    low, high = percentiles(values)
    return SceneRadiometry(
        255.0 * step if step > 1 else vmax, bits, low, high, int(values.shape[1]), dtype, step
    )


def eight_bit_step(values: np.ndarray, dtype: str, bits: Optional[int]) -> int:
    """The factor by which an 8-bit product was stored in a wider integer type, or 1: the values
    sit on a regular grid of at most 256 levels whose step is what widening to ``bits`` gives
    (``2 ** (bits - 8)``, or 257 for 16 bits: 255 -> 65535). A coarse grid with any other step
    (a 10-bit sensor stored in 12 bits) is not an 8-bit product."""
    if not bits or bits <= 8 or dtype.lower().startswith(("float", "cfloat")):
        return 1
    levels = np.unique(values.astype(np.int64))
    levels = levels[levels != 0]  # 0: a common fill value even where no nodata is declared
    if levels.size < 2:
        return 1
    step = int(np.gcd.reduce(np.diff(levels)))
    if step not in (2 ** (bits - 8), 257 if bits == 16 else 0):
        return 1
    return step if (levels[-1] - levels[0] % step) // step <= 255 else 1


# -- aligning --------------------------------------------------------------------------------------
def align(
    reference: Reference, scene: SceneRadiometry, correct_bands: bool = True, stretch: bool = True
) -> Alignment:
    """The alignment of ``scene`` to ``reference``: range scaling; for a scene of another bit
    depth, a common linear stretch of all bands to the source's spread; then the minimal per-band
    affine correction that brings each band's 2nd/98th percentiles into the range the source
    images spanned (no change for a band already inside it)."""
    n = len(reference.low)
    if len(scene.low) != n:
        raise ValueError(f"the scene has {len(scene.low)} band(s), the reference {n}")
    scale = reference.value_max / scene.value_max if scene.value_max > 0 else 1.0
    # another bit depth / value range: certainly another sensor, whose products are rarely
    # stretched like the source's; one common linear stretch (the same for every band, so the
    # scene's colours, and with them its class mix, are kept) brings its overall spread to the
    # source's before the per-band check
    k_all, o_all = 1.0, 0.0
    other_depth = abs(scene.value_max - reference.value_max) > 1e-6 and not (
        scene.step > 1 and abs(reference.value_max - 255.0) < 1e-6
    )
    if stretch and other_depth:
        lo_all = float(np.mean(scene.low)) * scale
        hi_all = float(np.mean(scene.high)) * scale
        if hi_all - lo_all > 1e-6 * reference.value_max:
            k_all = (float(np.mean(reference.high)) - float(np.mean(reference.low))) / (
                hi_all - lo_all
            )
            o_all = float(np.mean(reference.low)) - k_all * lo_all
    gains, offsets, corrected, notes = [], [], [], []
    for b in range(n):
        lo, hi = scene.low[b] * scale * k_all + o_all, scene.high[b] * scale * k_all + o_all
        g, o = scale * k_all, o_all
        if correct_bands and hi - lo > 1e-6 * reference.value_max:
            tol = TOLERANCE * reference.value_max
            lo2 = float(
                np.clip(lo, reference.low_range[b][0] - tol, reference.low_range[b][1] + tol)
            )
            hi2 = float(
                np.clip(hi, reference.high_range[b][0] - tol, reference.high_range[b][1] + tol)
            )
            if hi2 - lo2 > 0 and (abs(lo2 - lo) > 1e-9 or abs(hi2 - hi) > 1e-9):
                k = (hi2 - lo2) / (hi - lo)
                g, o = g * k, lo2 - k * lo + k * o
                corrected.append(b)
                notes.append(f"band {b + 1}: {lo:.1f}..{hi:.1f} -> {lo2:.1f}..{hi2:.1f}")
        gains.append(float(g))
        offsets.append(float(o))
    return Alignment(
        gains,
        offsets,
        float(scale),
        scene.value_max,
        scene.bit_depth,
        corrected,
        notes,
        stretch=round(k_all, 6),
        other_depth=other_depth,
        step=scene.step,
        model_max=reference.value_max,
    )


def scene_alignment(card: Any, ds: Any, bands: Sequence[int]) -> Alignment:
    """The alignment of a GDAL dataset's ``bands`` to a model card. Cards without a recorded
    reference get range scaling only (from the card's ``band_range``)."""
    scene = describe_scene(ds, bands)
    ref_data = getattr(card, "radiometry", None) or {}
    if ref_data.get("reference"):
        return align(Reference.from_dict(ref_data["reference"]), scene)
    if str(getattr(card, "band_dtype", "")) != "uint8":  # no reference: nothing safe to do
        return Alignment.identity(len(scene.low))
    unbounded = [(-math.inf, math.inf)] * len(scene.low)
    return align(
        Reference(255.0, scene.low, scene.high, unbounded, unbounded),
        scene,
        correct_bands=False,
        stretch=False,
    )


def adapted_transform(card: Any, domain: str) -> Optional[Alignment]:
    """The pixel transform a model adapted to a scene needs in its target domain: the scene's
    alignment when it had a tone (the rest is in the card's target normalisation)."""
    data = (
        (getattr(card, "radiometry", None) or {}).get("alignment") if domain == "target" else None
    )
    return Alignment.from_dict(data).pixel_transform() if data else None
