"""Blocks mapped one by one (what each Ray worker does) equal the whole-raster run bit for bit:
the blender against BandAccumulator on random tiles, then whole maps with a real model, no Ray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from osgeo import gdal

from lovecs_core.mapping.blend import BandAccumulator, tile_order
from lovecs_core.mapping.blockmap import (
    BlockBlender,
    block_sides,
    block_tiles,
    block_windows,
    map_block,
)
from lovecs_core.mapping.pipeline import TileEngine
from lovecs_core.mapping.predict import predict_raster
from lovecs_core.mapping.tiling import make_grid
from lovecs_core.model.networks import model_from_file
from lovecs_core.progress import Reporter
from lovecs_core.rasters.reading import RasterReader, Window
from tests.core.helpers import tiny_model_file, write_geotiff


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the same thread count for every forward pass (see ray_map)
    yield
    torch.set_num_threads(previous)


def _whole(grid, classes, tiles):
    """BandAccumulator's result over the whole raster: probs, covered, valid."""
    h, w = grid.height, grid.width
    probs = np.full((classes, h, w), np.nan, np.float32)
    covered, valid = np.zeros((h, w), bool), np.zeros((h, w), bool)
    acc = BandAccumulator(grid, classes)
    for t in tile_order(grid):
        for p in acc.add(t, *tiles[(t.ix, t.iy)]):
            ph, pw = p.covered.shape
            win = np.s_[p.row_off : p.row_off + ph, p.col_off : p.col_off + pw]
            probs[(slice(None), *win)], covered[win], valid[win] = p.probs, p.covered, p.valid
    return probs, covered, valid


# (width, height, tile, overlap, block side): taller and wider than long (the accumulator walks
# columns first on a wide raster), last tile shifted inwards (pixels under three tile rows, the
# carry passed twice), no overlap, a tile larger than the raster, blocks larger than the raster
GRIDS = [
    (700, 500, 128, 32, 256),
    (500, 700, 128, 32, 256),
    (600, 600, 100, 40, 256),
    (300, 1000, 96, 48, 512),
    (1000, 300, 96, 48, 256),
    (777, 513, 64, 0, 256),
    (200, 150, 256, 64, 256),
    (530, 530, 200, 90, 768),
]


@pytest.mark.parametrize("width,height,tile,overlap,side", GRIDS)
def test_blocks_blend_bit_for_bit_like_the_whole_raster(width, height, tile, overlap, side):
    rng = np.random.default_rng(width + height)
    grid = make_grid(width, height, tile, overlap)
    tiles = {}
    for t in grid.tiles():
        p = rng.random((3, grid.tile_h, grid.tile_w)).astype(np.float32)
        p /= p.sum(axis=0)
        valid = rng.random((grid.tile_h, grid.tile_w)) > 0.05
        tiles[(t.ix, t.iy)] = (None, None) if rng.random() < 0.1 else (p, valid)
    probs, covered, valid = _whole(grid, 3, tiles)
    seen = np.zeros((height, width), np.int32)
    for b in block_windows(width, height, side):
        blender = BlockBlender(grid, b, 3)
        pieces = [p for t in block_tiles(grid, b) for p in blender.add(t, *tiles[(t.ix, t.iy)])]
        pieces += blender.finish()
        for piece in pieces:  # bands of the block, one per tile row
            ph, pw = piece.covered.shape
            win = np.s_[piece.row_off : piece.row_off + ph, piece.col_off : piece.col_off + pw]
            assert b.yoff <= piece.row_off and piece.row_off + ph <= b.yoff + b.ysize
            assert b.xoff <= piece.col_off and piece.col_off + pw <= b.xoff + b.xsize
            seen[win] += 1
            # bitwise: the float32 patterns, not a tolerance
            expected = probs[(slice(None), *win)]
            assert np.array_equal(piece.probs.view(np.uint32), expected.view(np.uint32))
            assert np.array_equal(piece.covered, covered[win])
            assert np.array_equal(piece.valid, valid[win])
    assert (seen == 1).all()


def test_blocks_cover_the_raster_in_whole_tiff_blocks():
    blocks = block_windows(1000, 600, 512)
    assert [(b.xoff, b.yoff, b.xsize, b.ysize) for b in blocks] == [
        (0, 0, 512, 512),
        (512, 0, 488, 512),
        (0, 512, 512, 88),
        (512, 512, 488, 88),
    ]
    assert len(block_windows(1000, 600, 256, 768)) == 4
    with pytest.raises(ValueError, match="multiples of 256"):
        block_windows(1000, 600, 300)
    # two blocks per worker, cut so that the fewest tiles run, sides between a tile and 4096
    assert block_sides(make_grid(4096, 4096, 512, 64), 2) == (2048, 2048)  # 100 runs, 81 tiles
    assert block_sides(make_grid(1831, 2077, 512, 64), 1) == (2048, 1280)  # 24 runs, 20 tiles
    assert block_sides(make_grid(8000, 600, 512, 64), 4) == (1024, 768)
    assert block_sides(make_grid(100_000, 100_000, 512, 64), 2) == (4096, 4096)
    assert block_sides(make_grid(300, 300, 64, 16), 8) == (256, 256)


def test_a_tile_out_of_order_is_refused():
    grid = make_grid(600, 400, 128, 32)
    b = Window(256, 0, 256, 256)
    tiles = block_tiles(grid, b)
    blender = BlockBlender(grid, b, 2)
    with pytest.raises(ValueError, match="out of order"):
        blender.add(tiles[1], None, None)
    with pytest.raises(ValueError, match="misses tiles"):
        BlockBlender(grid, b, 2).finish()


def test_a_model_mapped_block_by_block_equals_predict_raster(tmp_path: Path):
    """What each worker computes, without Ray: every block through map_block and
    piece_arrays gives the one-process class map and confidence exactly, nodata included."""
    rng = np.random.default_rng(5)
    data = rng.integers(1, 256, (3, 300, 530)).astype(np.uint8)
    data[:, 200:, :150] = 0  # a nodata corner: tiles skipped, pixels masked
    raster = write_geotiff(tmp_path / "r.tif", data, nodata=0)
    model = tiny_model_file(tmp_path / "m.lovecs", seed=4)
    r = predict_raster(model, raster, tmp_path / "o.tif", confidence=tmp_path / "c.tif")
    expected = gdal.Open(str(r.output)).ReadAsArray()
    expected_conf = gdal.Open(str(tmp_path / "c.tif")).ReadAsArray()
    assert (expected == 0).any() and len(np.unique(expected)) > 2

    card, net = model_from_file(str(model))
    mean, std = card.stats("source")
    engine = TileEngine(
        card, net, torch.device("cpu"), "source", mean, std, 64, 16, 1, False, Reporter()
    )
    reader = RasterReader(str(raster))
    grid = make_grid(reader.width, reader.height, 64, 16)
    classes = np.full_like(expected, 255)
    conf = np.full_like(expected_conf, 255)
    runs, skipped = 0, set()
    with engine.prepared():
        for b in block_windows(reader.width, reader.height, 256):
            m = map_block(engine, reader, grid, b, "uint8")
            classes[b.yoff : b.yoff + b.ysize, b.xoff : b.xoff + b.xsize] = m.classes
            conf[b.yoff : b.yoff + b.ysize, b.xoff : b.xoff + b.xsize] = m.confidence
            runs += m.computed
            skipped.update((t.ix, t.iy) for t in m.skipped)
    assert np.array_equal(classes, expected)
    assert np.array_equal(conf, expected_conf)
    assert len(skipped) == r.tiles_skipped > 0
    assert runs > len(grid) - len(skipped)  # tiles across block edges run for both blocks
