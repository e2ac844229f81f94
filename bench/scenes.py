"""Evaluation scenes for the adaptation benchmark, built from ../shared/data (not committed).

Source images listed in :data:`HELD_OUT` are kept out of source training (default model and
benchmark) and make the same-sensor stress scenes. Every scene is a GeoTIFF with its labels on the
same grid, written to ``bench/data/scenes/`` (git-ignored) and rebuilt when missing:

* ``target_b``: the shared simulated spaceborne scene as it is (10-bit, 1.5 m).
* ``vegetation``: held-out, mostly-vegetation images of the source sensor side by side: same
  sensor, very different class mix (the first release's failure mode).
* ``water``: held-out, mostly-water images of the source sensor.
* ``sensor_c``: held-out mixed images seen by a made-up 12-bit sensor with BGR band order,
  per-band gains, a dark offset and a gamma of its own (pass bands 3,2,1).
* ``rural_b``: the vegetation scene seen by a coarser spaceborne-like sensor (blur, x2 area
  downsampling to 1 m, haze, 11-bit): cross-sensor *and* a different class mix.
* ``water_b``, ``mixed_b``: the water scene and sensor_c's mixed images seen by rural_b's sensor.
* ``water_c``: the water scene seen by sensor_c's sensor.
* ``vegetation16``: the vegetation scene exported as 16-bit (values x257, as an 8-bit image
  converted by a GIS): same sensor and pixels, another data type; a bit-depth rule that looks at
  the scene's content would stretch this dark scene.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

#: The shared data folder (``LOVECS_SHARED_DATA``, default ``../shared/data``).
DEFAULT_DATA = Path(
    os.environ.get("LOVECS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
#: Source images (by file stem) kept out of every source training run.
HELD_OUT = (
    "tile6_002",
    "tile6_003",
    "tile6_006",  # mostly vegetation
    "tile5_006",
    "tile3_004",  # mostly water
    "tile2_007",
    "tile4_006",
)  # mixed (made into the 12-bit sensor_c)
VEGETATION = ("tile6_002", "tile6_003", "tile6_006")
WATER = ("tile5_006", "tile3_004")
MIXED = ("tile2_007", "tile4_006")


@dataclass
class Scene:
    name: str
    image: Path
    labels: Path
    bands: Optional[list[int]]
    description: str


def held_out_pairs(pairs: list[tuple[Path, Path]]) -> tuple[list, list]:
    """``(training pairs, held-out pairs)``."""
    train = [p for p in pairs if p[0].stem not in HELD_OUT]
    held = [p for p in pairs if p[0].stem in HELD_OUT]
    return train, held


# -- building the scenes ---------------------------------------------------------------------------
GAP = 8  # nodata pixels between the images of a mosaic


def _read(path: Path) -> tuple[np.ndarray, tuple]:
    from osgeo import gdal

    ds = gdal.Open(str(path))
    return ds.ReadAsArray(), ds.GetGeoTransform()


def mosaic(pairs: list[tuple[Path, Path]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
    """Images side by side (``GAP`` px apart): ``(image[C, H, W], labels[H, W], valid[H, W],
    geotransform of the first image)``."""
    items = [(_read(i)[0], _read(l)[0]) for i, l in pairs]
    height = max(im.shape[1] for im, _ in items)
    width = sum(im.shape[2] for im, _ in items) + GAP * (len(items) - 1)
    image = np.zeros((items[0][0].shape[0], height, width), dtype=items[0][0].dtype)
    labels = np.zeros((height, width), dtype=np.uint8)
    valid = np.zeros((height, width), dtype=bool)
    x = 0
    for im, lab in items:
        h, w = im.shape[1:]
        image[:, :h, x : x + w] = im
        labels[:h, x : x + w] = lab
        valid[:h, x : x + w] = True
        x += w + GAP
    return image, labels, valid, _read(pairs[0][0])[1]


def write(
    path: Path,
    data: np.ndarray,
    gt: tuple,
    valid: Optional[np.ndarray] = None,
    projection_from: Optional[Path] = None,
) -> Path:
    """A GeoTIFF (UTM 40N like the source) with an optional per-dataset mask."""
    from osgeo import gdal, osr

    types = {np.dtype(np.uint8): gdal.GDT_Byte, np.dtype(np.uint16): gdal.GDT_UInt16}
    data = data if data.ndim == 3 else data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part.tif")
    ds = gdal.GetDriverByName("GTiff").Create(
        str(tmp),
        data.shape[2],
        data.shape[1],
        data.shape[0],
        types[data.dtype],
        ["COMPRESS=DEFLATE", "TILED=YES"],
    )
    ds.SetGeoTransform(gt)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32640)
    ds.SetProjection(srs.ExportToWkt())
    for b in range(data.shape[0]):
        ds.GetRasterBand(b + 1).WriteArray(data[b])
    if valid is not None:  # inside the file: a .msk sidecar would not follow the rename below
        gdal.SetConfigOption("GDAL_TIFF_INTERNAL_MASK", "YES")
        try:
            ds.CreateMaskBand(gdal.GMF_PER_DATASET)
        finally:
            gdal.SetConfigOption("GDAL_TIFF_INTERNAL_MASK", None)
        ds.GetRasterBand(1).GetMaskBand().WriteArray(valid.astype(np.uint8) * 255)
    ds = None
    tmp.rename(path)
    return path


def sensor_c(image: np.ndarray) -> np.ndarray:
    """A made-up 12-bit sensor: per-band gains, a dark offset, its own gamma; BGR order."""
    x = image.astype(np.float64) / 255.0
    x = np.clip(x * np.array([1.15, 0.95, 0.8])[:, None, None] + 0.03, 0, 1) ** 0.8
    rng = np.random.default_rng(3)
    x = np.clip(x + rng.normal(0, 0.004, x.shape), 0, 1)
    return np.round(x * 4095).astype(np.uint16)[::-1].copy()


def rural_b(
    image: np.ndarray, labels: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A coarser spaceborne-like sensor: linearise, MTF blur, x2 area downsampling, haze, a tone
    curve of its own, 11-bit quantisation with noise. Labels: majority of each 2x2 block."""
    import torch
    import torch.nn.functional as F

    from lovecs_core.training.augment import gaussian_blur

    x = (image.astype(np.float32) / 255.0) ** 2.2
    x = gaussian_blur(x, 1.0)
    h, w = (x.shape[1] // 2) * 2, (x.shape[2] // 2) * 2
    x = F.avg_pool2d(torch.from_numpy(np.ascontiguousarray(x[:, :h, :w]))[None], 2)[0].numpy()
    x = x * 0.85 + 0.15 * np.array([0.75, 0.8, 0.9], dtype=np.float32)[:, None, None]
    x = x ** (1 / 1.8)
    rng = np.random.default_rng(5)
    x = np.clip(x + rng.normal(0, 0.003, x.shape), 0, 1)
    out = np.round(x * 2047).astype(np.uint16)
    blocks = (
        labels[:h, :w]
        .reshape(h // 2, 2, w // 2, 2)
        .transpose(0, 2, 1, 3)
        .reshape(h // 2, w // 2, 4)
    )
    counts = np.stack([(blocks == c).sum(-1) for c in range(6)], -1)
    lab = counts.argmax(-1).astype(np.uint8)
    ok = valid[:h, :w].reshape(h // 2, 2, w // 2, 2).all(axis=(1, 3))
    return out, np.where(ok, lab, 0).astype(np.uint8), ok


def build_scenes(data: Path, out: Path) -> list[Scene]:
    """The benchmark's evaluation scenes (built once into ``out``)."""
    src = data / "source"
    pair = {s: (src / "images" / f"{s}.tif", src / "labels" / f"{s}.tif") for s in HELD_OUT}
    scenes = [
        Scene(
            "target_b",
            data / "target_b" / "scene.tif",
            data / "target_b" / "labels.tif",
            None,
            "the shared simulated spaceborne scene (10-bit, 1.5 m; 73 % bare land)",
        )
    ]
    scenes += [made_scene(*spec, pair, out) for spec in built_scenes()]
    return scenes


def built_scenes() -> list[tuple[str, tuple[str, ...], Callable, Optional[list[int]], str]]:
    """``(name, held-out images, sensor, bands, description)`` of the scenes built here."""
    coarse = "%s through a coarser spaceborne-like sensor (blur, 1 m, haze, tone curve, 11-bit)"
    return [
        ("vegetation", VEGETATION, same_sensor, None, "held-out source-sensor images, mostly "
         "vegetation (0.5 m)"),
        ("water", WATER, same_sensor, None, "held-out source-sensor images, mostly water (0.5 m)"),
        ("sensor_c", MIXED, sensor_c_sensor, [3, 2, 1], "held-out mixed source images through a "
         "made-up 12-bit sensor (gains 1.15/0.95/0.8, dark offset, gamma 0.8, BGR order; 0.5 m)"),
        ("rural_b", VEGETATION, coarse_sensor, None, coarse % "the vegetation scene"),
        ("vegetation16", VEGETATION, export_16bit, None, "the vegetation scene exported as 16-bit "
         "(values x257; same sensor and pixels)"),
        # added after the sixth run, to check the health check's per-class figures on scenes
        # they were not chosen on
        ("water_b", WATER, coarse_sensor, None, coarse % "the water scene"),
        ("mixed_b", MIXED, coarse_sensor, None, coarse % "sensor_c's mixed images"),
        # added after water_b had set the growth bound to the soft share: one it was not set on
        ("water_c", WATER, sensor_c_sensor, [3, 2, 1], "the water scene through sensor_c's "
         "sensor"),
    ]  # fmt: skip


#: A scene's image, labels, valid mask and geotransform.
Mosaic = tuple[np.ndarray, np.ndarray, np.ndarray, tuple]


def same_sensor(m: Mosaic) -> Mosaic:
    return m


def sensor_c_sensor(m: Mosaic) -> Mosaic:
    return sensor_c(m[0]), m[1], m[2], m[3]


def export_16bit(m: Mosaic) -> Mosaic:
    return m[0].astype(np.uint16) * 257, m[1], m[2], m[3]


def coarse_sensor(m: Mosaic) -> Mosaic:
    image, labels, valid = rural_b(m[0], m[1], m[2])
    gt = m[3]
    return image, labels, valid, (gt[0], gt[1] * 2, gt[2], gt[3], gt[4], gt[5] * 2)


def made_scene(
    name: str,
    stems: tuple[str, ...],
    sensor: Callable[[Mosaic], Mosaic],
    bands: Optional[list[int]],
    description: str,
    pair: dict[str, tuple[Path, Path]],
    out: Path,
) -> Scene:
    """Held-out images side by side, seen by ``sensor`` (built once into ``out``)."""
    img, lab = out / f"{name}.tif", out / f"{name}_labels.tif"
    if not (img.is_file() and lab.is_file()):
        image, labels, valid, gt = sensor(mosaic([pair[s] for s in stems]))
        write(lab, labels, gt)
        write(img, image, gt, valid)
    return Scene(name, img, lab, bands, description)


def bench_setup(parser: Any, argv: Optional[list[str]], work: str) -> tuple[Any, Path, Path, list]:
    """The options every scene benchmark shares (``--data``, ``--threads``, ``--work``,
    ``--results``, ``--no-write``), parsed: ``(args, data folder, work folder, classes)``."""
    import torch

    from lovecs_core.model.card import load_classes

    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--threads", type=int)
    parser.add_argument("--work", default=str(root / "bench" / "out" / work))
    parser.add_argument("--results", default=str(root / "bench" / "RESULTS.md"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data, folder = Path(args.data), Path(args.work)
    folder.mkdir(parents=True, exist_ok=True)
    return args, data, folder, load_classes(data / "classes.json")
