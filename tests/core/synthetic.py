"""Small synthetic land-cover scenes for training/adaptation tests: blobs of classes, each class
with its own colour and texture; a "sensor" transform for cross-sensor targets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from .helpers import write_geotiff

#: Class colours (3 bands) of the synthetic source sensor, codes 1..3.
COLOURS = np.array([[200.0, 60.0, 60.0], [90.0, 90.0, 90.0], [40.0, 80.0, 190.0]])
CLASSES_JSON = {
    "classes": [
        {"code": 1, "name": "building", "color": "#E6194B"},
        {"code": 2, "name": "road", "color": "#FFE119"},
        {"code": 3, "name": "water", "color": "#0082C8"},
    ]
}


def label_map(size: int, seed: int, cells: int = 12) -> np.ndarray:
    """Voronoi cells with random class codes 1..3 (uint8)."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(0, size, (cells, 2))
    codes = rng.integers(1, 4, cells)
    codes[:3] = [1, 2, 3]
    yy, xx = np.mgrid[0:size, 0:size]
    d = (yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2
    return codes[d.argmin(axis=-1)].astype(np.uint8)


def source_image(labels: np.ndarray, seed: int, noise: float = 12.0) -> np.ndarray:
    """uint8 image (3, H, W): the class colour plus noise."""
    rng = np.random.default_rng(seed)
    img = COLOURS[labels - 1].transpose(2, 0, 1) + rng.normal(0, noise, (3, *labels.shape))
    return np.clip(img, 0, 255).astype(np.uint8)


def target_image(labels: np.ndarray, seed: int, noise: float = 8.0) -> np.ndarray:
    """uint16 image (3, H, W) of another "sensor": mixed bands, gains, offset, 10-bit range."""
    rng = np.random.default_rng(seed)
    base = COLOURS[labels - 1].transpose(2, 0, 1)
    mix = np.array([[0.8, 0.2, 0.0], [0.1, 0.8, 0.1], [0.0, 0.3, 0.7]])
    img = np.einsum("ij,jhw->ihw", mix, base) * 2.5 + 150 + rng.normal(0, noise, base.shape)
    return np.clip(img, 1, 1023).astype(np.uint16)


def write_source(
    folder: Path, n: int = 2, size: int = 96, seed: int = 0, gsd: float = 1.0
) -> tuple[Path, Path]:
    """``folder/images/*.tif`` and ``folder/labels/*.tif`` (same names); returns both folders."""
    images, labels = folder / "images", folder / "labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        lab = label_map(size, seed + i)
        write_geotiff(images / f"s{i}.tif", source_image(lab, seed + 100 + i), gsd=gsd)
        write_geotiff(labels / f"s{i}.tif", lab, gsd=gsd)
    return images, labels


def write_target(
    folder: Path, size: int = 96, seed: int = 50, gsd: float = 2.0, nodata_corner: int = 0
) -> tuple[Path, Path]:
    """A target scene (uint16, nodata 0) and its labels on the same grid."""
    folder.mkdir(parents=True, exist_ok=True)
    lab = label_map(size, seed, cells=10)
    img = target_image(lab, seed + 1)
    if nodata_corner:
        img[:, :nodata_corner, :nodata_corner] = 0
        lab = lab.copy()
        lab[:nodata_corner, :nodata_corner] = 0
    scene = write_geotiff(folder / "scene.tif", img, gsd=gsd, nodata=0)
    labels = write_geotiff(folder / "labels.tif", lab, gsd=gsd)
    return scene, labels


def write_classes(path: Path, data: Optional[dict] = None) -> Path:
    path.write_text(json.dumps(data or CLASSES_JSON))
    return path


def tiny_train_args(images: Path, labels: Path, classes: Path, out: Path, *extra: str) -> list[str]:
    """``lovecs train`` arguments for a tiny model trained in seconds (no sensor randomisation,
    so the tests see the sensor difference itself)."""
    return [
        "train",
        "--images",
        str(images),
        "--labels",
        str(labels),
        "--classes",
        str(classes),
        "--out",
        str(out),
        "--arch",
        "tiny",
        "--iterations",
        "60",
        "--batch-size",
        "4",
        "--crop",
        "48",
        "--lr",
        "0.05",
        "--device",
        "cpu",
        "--randomise",
        "none",
        *extra,
    ]


#: ``lovecs adapt`` settings that make self-training diverge: a learning rate 1000x too high.
RUN_AWAY_ADAPT = [
    "--method",
    "lovecs",
    "--preset",
    "fast",
    "--iterations",
    "10",
    "--refresh-every",
    "5",
    "--crop",
    "48",
    "--pl-tile",
    "64",
    "--lr",
    "10",
    "--device",
    "cpu",
]
#: A tiny model file that carries a (small) source sample.
SMALL_SAMPLE = ("--sample-crops", "4", "--sample-side", "48")
