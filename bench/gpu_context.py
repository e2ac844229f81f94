"""What every part of ``bench/gpu_check.py`` shares (``bench/gpu_parts.py`` and
``bench/gpu_parts_adapt.py``): the part's context and recorder, and the synthetic raster.

A part records its results as it goes (:class:`Recorder`, one JSON file), so a part stopped at
its cap still reports what it measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_MODEL = ROOT / "resources" / "models" / "default.lovecs"


class Skip(Exception):
    """The part cannot run here; the message says why."""


class Recorder:
    """A part's status and results, rewritten to one JSON file at each change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"status": "running", "results": {}}
        self.flush()

    def put(self, key: str, value: Any) -> None:
        self.data["results"][key] = value
        self.flush()

    def set(self, **items: Any) -> None:
        self.data.update(items)
        self.flush()

    def flush(self) -> None:
        tmp = self.path.with_name(self.path.name + ".part")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        os.replace(tmp, self.path)


class Ctx:
    """What a part gets: the arguments, its recorder and its work folder."""

    def __init__(self, args: argparse.Namespace, rec: Recorder) -> None:
        self.args, self.rec = args, rec
        self.device: str = args.device
        self.cuda = args.device.startswith("cuda")
        self.work = Path(args.out) / "work" / args.part
        self.work.mkdir(parents=True, exist_ok=True)
        self.deadline = time.monotonic() + (args.cap_s or 1e9)

    def put(self, key: str, value: Any) -> None:
        self.rec.put(key, value)

    def left(self) -> float:
        return self.deadline - time.monotonic()


# -- shared helpers -------------------------------------------------------------------------------
def synthetic_raster(path: Path, size: int, gsd: float, seed: int = 0) -> Path:
    """A 3-band uint8 GeoTIFF ``size`` px square (smooth patches plus noise), UTM 40N, pixel
    ``gsd`` m; made once and reused by the parts."""
    if path.is_file():
        return path
    import numpy as np
    from osgeo import gdal, osr

    gdal.UseExceptions()
    rng = np.random.default_rng(seed)
    tmp = path.with_name(path.name + ".part.tif")
    ds = gdal.GetDriverByName("GTiff").Create(
        str(tmp), size, size, 3, gdal.GDT_Byte, ["TILED=YES", "BIGTIFF=IF_SAFER"]
    )
    ds.SetGeoTransform((500000.0, gsd, 0.0, 2800000.0, 0.0, -gsd))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32640)
    ds.SetProjection(srs.ExportToWkt())
    cell = 64
    patches = rng.integers(30, 220, (3, math.ceil(size / cell) + 1, math.ceil(size / cell) + 1))
    for y in range(0, size, 1024):
        h = min(1024, size - y)
        rows = np.repeat(patches[:, y // cell : (y + h) // cell + 1], cell, axis=1)
        block = np.repeat(rows, cell, axis=2)[:, (y % cell) : (y % cell) + h, :size]
        noisy = block + rng.integers(-20, 21, block.shape)
        for b in range(3):
            ds.GetRasterBand(b + 1).WriteArray(np.clip(noisy[b], 0, 255).astype(np.uint8), 0, y)
    ds = None
    os.replace(tmp, path)
    return path
