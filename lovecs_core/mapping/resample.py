"""The resampling round trip: a model runs at its own ground sample distance on a warped view of
the raster; the result is warped back (nearest neighbour) onto the input grid and the input's
mask is applied again. Every stage file has a temporary name of its own (``contract.py``), so a
killed run leaves nothing the plugin does not recognise and sweep up."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from osgeo import gdal

from ..contract import (
    INPUT_GRID,
    MODEL_GRID,
    MODEL_GRID_CONF,
    MODEL_GRID_PROB,
    RESAMPLING,
    temporary_path,
)
from ..model.card import ModelCard
from ..progress import Cancelled, Reporter
from ..rasters.geotiff import BLOCK
from ..rasters.outputs import remove_raster
from ..rasters.reading import RasterReader, Window, warp_to_gsd
from .pipeline import PieceSink, TileEngine
from .writer import CLASS_NODATA, CONFIDENCE_NODATA, PROBABILITY_NODATA, PredictionWriter

#: Columns copied at a time from the warped-back files (16 output blocks).
COPY_COLUMNS = 16 * BLOCK


def predict_resampled(
    engine: TileEngine,
    ds: gdal.Dataset,
    source: RasterReader,
    writer: PredictionWriter,
    out: Path,
    model_gsd: float,
    card: ModelCard,
) -> tuple[int, int]:
    """Predict on a warped VRT at ``model_gsd``, warp the result back onto the input grid and
    stream it, masked by the input's validity, into ``writer``."""
    warped = warp_to_gsd(ds, model_gsd)
    model_reader = RasterReader(warped, source.bands)
    tmp_out = temporary_path(out, MODEL_GRID)
    temps: list[Path] = []
    stage = PredictionWriter(
        tmp_out,
        warped.RasterXSize,
        warped.RasterYSize,
        warped.GetGeoTransform(),
        warped.GetProjection(),
        card.classes,
        confidence=None if writer.conf is None else temporary_path(out, MODEL_GRID_CONF),
        confidence_dtype=writer.confidence_dtype,
        probabilities=None if writer.probs is None else temporary_path(out, MODEL_GRID_PROB),
        styled=False,
    )
    try:
        total, skipped = engine.run(model_reader, PieceSink(stage, card))
        model_reader.close()
        temps += stage.commit(overviews=False)
        nodata: list[float] = [CLASS_NODATA]
        if writer.conf is not None:
            nodata.append(CONFIDENCE_NODATA)
        if writer.probs is not None:
            nodata.append(PROBABILITY_NODATA)
        back = []
        for i, (path, nd) in enumerate(zip(list(temps), nodata)):
            back_path = temporary_path(out, INPUT_GRID)
            temps.append(back_path)
            _warp_onto(path, ds, back_path, nd, engine.reporter, i, len(nodata))
            back.append(back_path)
        _copy_masked(back, source, writer, engine.reporter)
    finally:
        stage.abort()
        for p in temps:
            remove_raster(p)
    return total, skipped


def _warp_onto(
    src: Path,
    like: gdal.Dataset,
    dst: Path,
    nodata: float,
    reporter: Reporter,
    index: int,
    count: int,
) -> None:
    """Warp ``src`` (nearest neighbour) onto the grid of ``like`` into the GeoTIFF ``dst``."""
    src_ds = gdal.Open(str(src))
    band = src_ds.GetRasterBand(1)
    dtype, bands = band.DataType, src_ds.RasterCount
    band = None
    out = gdal.GetDriverByName("GTiff").Create(
        str(dst),
        like.RasterXSize,
        like.RasterYSize,
        bands,
        dtype,
        ["TILED=YES", "COMPRESS=DEFLATE", "SPARSE_OK=TRUE", "BIGTIFF=IF_SAFER"],
    )
    try:
        out.SetGeoTransform(like.GetGeoTransform())
        out.SetProjection(like.GetProjection())
        for b in range(1, bands + 1):
            out.GetRasterBand(b).SetNoDataValue(float(nodata))
        cancelled = threading.Event()

        def callback(fraction: float, *_: object) -> int:
            try:
                reporter(RESAMPLING, (index + fraction) / count, "back to the input grid")
            except Cancelled:
                cancelled.set()
                return 0
            return 1

        try:
            gdal.Warp(
                out,
                src_ds,
                resampleAlg="near",
                srcNodata=nodata,
                dstNodata=nodata,
                warpOptions=["INIT_DEST=NO_DATA"],
                callback=callback,
            )
        except RuntimeError:
            if cancelled.is_set():
                raise Cancelled("cancelled by the user") from None
            raise
    finally:
        out = None
        src_ds = None


def _copy_masked(
    paths: list[Path], source: RasterReader, writer: PredictionWriter, reporter: Reporter
) -> None:
    """Stream the warped-back files into ``writer`` in windows of one block row by
    :data:`COPY_COLUMNS` columns (memory independent of the raster's width), nodata where the
    input is not valid (the model grid's footprint is coarser than the input's mask)."""
    datasets = [gdal.Open(str(p)) for p in paths]
    try:
        height, width = source.height, source.width
        for row in range(0, height, BLOCK):
            rows = min(BLOCK, height - row)
            for col in range(0, width, COPY_COLUMNS):
                cols = min(COPY_COLUMNS, width - col)
                _copy_window(datasets, source, writer, Window(col, row, cols, rows))
            reporter(RESAMPLING, 1.0 if row + rows >= height else (row + rows) / height, "masking")
    finally:
        datasets.clear()


def _copy_window(
    datasets: list[gdal.Dataset], source: RasterReader, writer: PredictionWriter, w: Window
) -> None:
    valid = source.read_valid(w)
    arrays = [ds.ReadAsArray(w.xoff, w.yoff, w.xsize, w.ysize) for ds in datasets]
    classes = np.where(valid, arrays[0], CLASS_NODATA).astype(np.uint8)
    conf = probs = None
    k = 1
    if writer.conf is not None:
        conf = np.where(valid & (classes > 0), arrays[k], CONFIDENCE_NODATA)
        conf = conf.astype(writer.confidence_dtype)
        k += 1
    if writer.probs is not None:
        p = arrays[k].reshape(-1, w.ysize, w.xsize)
        probs = np.where((valid & (classes > 0))[None], p, PROBABILITY_NODATA)
        probs = probs.astype(np.float32)
    writer.write(w.yoff, classes, conf, probs, col_off=w.xoff)
