"""The bad-input suite's inputs, all made here (small rasters, tiny or crafted model files), and
the checks every case shares: the input's bytes and folder unchanged, no output unless
complete, no temporary file left."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pytest
from osgeo import gdal, osr

from tests.core.helpers import tiny_model_file, write_geotiff

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


# -- rasters -------------------------------------------------------------------------------------


def rgb(size: int = 40, seed: int = 0, dtype: str = "uint8", high: float = 255) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, high, (3, size, size))).astype(dtype)


def _plain(
    path: Path,
    data: np.ndarray,
    gt: Optional[tuple] = None,
    epsg: Optional[int] = None,
    gdal_type: Optional[int] = None,
    options: Sequence[str] = (),
) -> Path:
    """A GeoTIFF with optional geotransform and CRS."""
    bands, h, w = data.shape
    dtype = gdal_type or gdal.GetDataTypeByName(
        {"uint8": "Byte"}.get(data.dtype.name, data.dtype.name.capitalize())
    )
    ds = gdal.GetDriverByName("GTiff").Create(str(path), w, h, bands, dtype, list(options))
    if gt is not None:
        ds.SetGeoTransform(gt)
    if epsg is not None:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        ds.SetProjection(srs.ExportToWkt())
    for i in range(bands):
        ds.GetRasterBand(i + 1).WriteArray(data[i])
    ds = None
    return path


def make_raster(folder: Path, kind: str, name: Optional[str] = None) -> Path:
    """One input raster of a named kind in ``folder``."""
    path = folder / (name or f"{kind}.tif")
    for maker in (_damaged_raster, _odd_georeference, _odd_content):
        made = maker(folder, path, kind)
        if made is not None:
            return made
    raise ValueError(kind)


_UTM_GT = (500000.0, 1.0, 0.0, 2800000.0, 0.0, -1.0)


def _damaged_raster(folder: Path, path: Path, kind: str) -> Optional[Path]:
    """A file GDAL cannot read, or one that declares far more than it holds."""
    if kind == "corrupt":
        path.write_bytes(b"II*\x00" + os.urandom(3000))
        return path
    if kind == "truncated":
        full = write_geotiff(folder / f".full-{path.name}", rgb(96))
        data = full.read_bytes()
        full.unlink()
        path.write_bytes(data[: len(data) // 3])
        return path
    if kind == "huge_vrt":  # declares 10⁶ x 10⁶ pixels, holds nothing
        path = path.with_suffix(".vrt")
        ds = gdal.GetDriverByName("VRT").Create(str(path), 1_000_000, 1_000_000, 3, gdal.GDT_Byte)
        ds.SetGeoTransform(_UTM_GT)
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(32640)
        ds.SetProjection(srs.ExportToWkt())
        ds = None
        return path
    return None


def _odd_georeference(folder: Path, path: Path, kind: str) -> Optional[Path]:
    """A raster without a georeference, or in degrees or feet."""
    if kind == "no_geotransform":
        return _plain(path, rgb(), gt=None, epsg=32640)
    if kind == "no_crs":
        return _plain(path, rgb(), gt=_UTM_GT, epsg=None)
    if kind == "geographic":  # about 1 m pixels at 25° N
        d = 1.0 / 111_320.0
        return _plain(path, rgb(), gt=(55.0, d / 0.906, 0.0, 25.0, 0.0, -d), epsg=4326)
    if kind == "us_feet":  # NAD83 / New York Long Island (ftUS): 3.28 ft = 1 m pixels
        return _plain(path, rgb(), gt=(1000000.0, 3.2808, 0.0, 200000.0, 0.0, -3.2808), epsg=2263)
    return None


def _odd_content(folder: Path, path: Path, kind: str) -> Optional[Path]:
    """A good raster, or one with other bands, value types, values or sizes."""
    if kind == "four_bands_untagged":  # (a 4-band Byte GeoTIFF is RGBA unless told otherwise)
        four = np.concatenate([rgb(), rgb(seed=1)[:1]])
        return _plain(path, four, gt=_UTM_GT, epsg=32640, options=["PHOTOMETRIC=MINISBLACK"])
    if kind == "complex":
        data = rgb(dtype="float32")
        return _plain(path, data, gt=_UTM_GT, epsg=32640, gdal_type=gdal.GDT_CFloat32)
    if kind == "nan_inf":
        a = rgb(dtype="float32")
        a[:, :8, :8] = np.nan
        a[1, 30:, 30:] = np.inf
        return write_geotiff(path, a)
    arrays: dict[str, Callable[[], np.ndarray]] = {
        "good": rgb,
        "two_bands": lambda: rgb()[:2],
        "uint16_12bit": lambda: rgb(dtype="uint16", high=4095),
        "float_0_1": lambda: rgb(dtype="float32", high=1.0),
        "float64": lambda: rgb(dtype="float64"),
        "one_pixel": lambda: rgb(1),
        "three_pixels": lambda: rgb(3),
    }
    if kind == "all_nodata":
        return write_geotiff(path, np.zeros((3, 40, 40), np.uint8), nodata=0)
    return write_geotiff(path, arrays[kind]()) if kind in arrays else None


# -- model files ---------------------------------------------------------------------------------


def crafted_model(path: Path, edit: Callable[[dict], None], seed: int = 0) -> Path:
    """A tiny model whose card JSON was edited by ``edit`` (written without validation)."""
    from safetensors.torch import load_file, save_file

    from lovecs_core.model.card import CARD_KEY, _read_safetensors_metadata

    good = tiny_model_file(path.with_name(f".good-{path.name}"), seed=seed)
    card = json.loads(_read_safetensors_metadata(good)[CARD_KEY])
    edit(card)
    save_file(load_file(str(good)), str(path), metadata={CARD_KEY: json.dumps(card)})
    good.unlink()
    return path


def make_model(folder: Path, kind: str) -> Path:
    path = folder / f"{kind}.lovecs"
    if kind == "good":
        return tiny_model_file(path)
    if kind == "corrupt":
        path.write_bytes(os.urandom(5000))
        return path
    if kind == "truncated":
        data = tiny_model_file(folder / ".full.lovecs").read_bytes()
        (folder / ".full.lovecs").unlink()
        path.write_bytes(data[: len(data) // 2])
        return path
    if kind == "future_version":
        return crafted_model(path, lambda c: c.update(format_version=99))
    if kind == "pickle":  # a pickle that would run a command when unpickled
        marker = folder / "PWNED"
        path.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
        return path
    if kind == "text_stats":
        return crafted_model(
            path, lambda c: c["normalization"]["source"].update(mean=["a lot", 1.0, 2.0])
        )
    if kind == "wide_network":
        return crafted_model(path, lambda c: c["architecture"].update(width=40_000))
    if kind == "tile_zero":
        return crafted_model(path, lambda c: c["tile"].update(size=0))
    if kind == "wrong_shapes":  # within limits, but not what the weights hold
        return crafted_model(path, lambda c: c["architecture"].update(width=16))
    if kind == "deep_card":  # a card nested 100,000 levels deep (beyond Python's recursion)
        return _deep_model(path, card=True)
    if kind == "deep_header":  # the same inside the safetensors header itself
        return _deep_model(path, card=False)
    raise ValueError(kind)


def _deep_model(path: Path, card: bool, depth: int = 100_000) -> Path:
    """A model file whose card (or safetensors header) holds lists nested ``depth`` deep."""
    from lovecs_core.model.card import CARD_KEY

    deep = "[" * depth + "]" * depth
    if card:
        from safetensors.torch import load_file, save_file

        good = tiny_model_file(path.with_name(f".good-{path.name}"))
        save_file(load_file(str(good)), str(path), metadata={CARD_KEY: '{"name": ' + deep + "}"})
        good.unlink()
        return path
    header = ('{"__metadata__": {"x": "y"}, "deep": ' + deep + "}").encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    return path


# -- adaptation -----------------------------------------------------------------------------------


@pytest.fixture
def adapt_inputs(tmp_path: Path) -> dict[str, Path]:
    """A tiny (untrained) model, one labelled 48 px source image and a 64 px, 2 m uint16 target
    scene in ``in/``; ``out``: an empty folder for the outputs."""
    from tests.core.synthetic import write_source, write_target

    inputs, outputs = tmp_path / "in", tmp_path / "out"
    outputs.mkdir(parents=True)
    images, labels = write_source(inputs / "src", n=1, size=48)
    scene, _ = write_target(inputs / "tgt", size=64, gsd=2.0)
    return {
        "in": inputs,
        "model": make_model(inputs, "good"),
        "scene": scene,
        "images": images / "s0.tif",
        "labels": labels / "s0.tif",
        "out": outputs,
    }


# -- what every case checks ----------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative name -> sha256)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def temporary_files(folder: Path) -> list[str]:
    """Hidden partial outputs or probes the engine writes before renaming (the contract's
    names: lovecs_core/contract.py)."""
    from lovecs_core.contract import is_temporary_name

    return [p.name for p in folder.rglob("*") if is_temporary_name(p.name)]


@pytest.fixture
def cli(capsys, caplog):
    """Run ``lovecs ARGS`` in this process (``lovecs_core.cli.main``); returns ``(rc, text)``,
    the text being stderr, stdout and the log together."""
    from lovecs_core.cli.main import main

    def run(*args: str) -> tuple[int, str]:
        caplog.clear()
        capsys.readouterr()
        rc = main(["--progress", "none", *map(str, args)])
        out = capsys.readouterr()
        return rc, out.err + out.out + caplog.text

    return run


def run_engine(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m lovecs_core ARGS`` in a child process, as a user runs it."""
    return subprocess.run(
        [PY, "-m", "lovecs_core", *map(str, args)],
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
