import numpy as np
import pytest

from lovecs_core.mapping.blend import BandAccumulator, columns_first, tile_order
from lovecs_core.mapping.tiling import make_grid
from tests.core.mapping.strip_oracle import StripAccumulator

SHAPES = [
    (230, 170, 64, 16),  # wider than tall: columns first
    (170, 230, 64, 16),
    (64, 20, 64, 16),
    (129, 513, 128, 32),  # the shifted last tile row: pixels under three tile rows
    (1000, 77, 96, 5),
    (5, 5, 32, 8),
    (250, 250, 40, 0),
]


def _tiles(grid, rng, classes=3, noise=0.05):
    """Per-tile probabilities that disagree a little in the overlaps, as real tiles do."""
    field = rng.random((classes, grid.height, grid.width)).astype(np.float32)
    out = {}
    for t in grid.tiles():
        w = t.window
        crop = field[:, w.yoff : w.yoff + w.ysize, w.xoff : w.xoff + w.xsize]
        jitter = rng.normal(0, noise, crop.shape).astype(np.float32)
        out[(t.ix, t.iy)] = np.clip(crop + jitter, 0, 1)
    return out


def _strips(grid, tiles, skip):
    acc = StripAccumulator(grid, 3)
    probs = np.zeros((3, grid.height, grid.width), np.float32)
    covered = np.zeros((grid.height, grid.width), bool)
    for t in grid.tiles():
        p = None if (t.ix, t.iy) in skip else tiles[(t.ix, t.iy)]
        v = None if p is None else np.ones(p.shape[1:], bool)
        for s in acc.add(t, p, v):
            probs[:, s.row_off : s.row_off + s.rows] = s.probs
            covered[s.row_off : s.row_off + s.rows] = s.covered
    return probs, covered


def _pieces(grid, tiles, skip):
    acc = BandAccumulator(grid, 3)
    probs = np.zeros((3, grid.height, grid.width), np.float32)
    covered = np.zeros((grid.height, grid.width), bool)
    count = np.zeros((grid.height, grid.width), int)
    for t in tile_order(grid):
        p = None if (t.ix, t.iy) in skip else tiles[(t.ix, t.iy)]
        v = None if p is None else np.ones(p.shape[1:], bool)
        for pc in acc.add(t, p, v):
            h, w = pc.covered.shape
            rows, cols = slice(pc.row_off, pc.row_off + h), slice(pc.col_off, pc.col_off + w)
            probs[:, rows, cols] = pc.probs
            covered[rows, cols] = pc.covered
            count[rows, cols] += 1
    return probs, covered, count


@pytest.mark.parametrize("width, height, tile, overlap", SHAPES)
def test_pieces_match_full_precision_strips(width, height, tile, overlap):
    grid = make_grid(width, height, tile, overlap)
    tiles = _tiles(grid, np.random.default_rng(width + height))
    skip = {(0, 0)} if len(grid) > 4 else set()
    want, want_covered = _strips(grid, tiles, skip)
    got, covered, count = _pieces(grid, tiles, skip)
    assert (count == 1).all()  # every pixel handed out exactly once
    assert (covered == want_covered).all()
    # uint16 carry: 0.5 / 65535 per pass, two passes where three tile rows overlap
    np.testing.assert_allclose(got, want, rtol=0, atol=2 * 0.5 / 65535 + 1e-6)


def test_tile_order_walks_the_longer_side():
    wide, tall = make_grid(300, 100, 64, 16), make_grid(100, 300, 64, 16)
    assert columns_first(wide) and not columns_first(tall)
    assert [(t.ix, t.iy) for t in tile_order(tall)] == [(t.ix, t.iy) for t in tall.tiles()]
    order = [(t.ix, t.iy) for t in tile_order(wide)]
    assert order[: len(wide.ys)] == [(0, iy) for iy in range(len(wide.ys))]
    assert sorted(order) == sorted((t.ix, t.iy) for t in wide.tiles())


def test_memory_depends_on_the_shorter_side_only():
    def sizes(w, h):
        """(carry bytes, all other bytes) of an accumulator for a 512 px / 64 px grid."""
        acc = BandAccumulator(make_grid(w, h, 512, 64), 5)
        carry = acc._cq.nbytes + acc._cw.nbytes + acc._cv.nbytes
        return carry, acc.nbytes - carry

    window = (6 * 4 + 1 + 5 * 4 + 9 * 4) * 512 * 512  # sums and weights, mask, scratch, weights
    for side in (8192, 20_000):
        for length in (side, 50_000, 400_000):
            carry, rest = sizes(side, length)
            assert sizes(length, side) == (carry, rest)  # the carry spans the shorter side
            assert carry <= 15 * 511 * side and rest <= window  # 15 B/pixel, < a tile's rows
    # 32768 = 512 + 72 x 448: no shifted last tile row, the carry is the 64 px overlap
    assert sizes(32768, 32768)[0] == 15 * 64 * 32768 < 24 * 512 * 32768 / 12


def test_rejects_tiles_out_of_order():
    grid = make_grid(300, 100, 64, 16)
    acc = BandAccumulator(grid, 1)
    tiles = list(grid.tiles())  # row-major, but this grid goes column by column
    acc.add(tiles[0], None, None)
    with pytest.raises(ValueError, match="column-major"):
        acc.add(tiles[1], None, None)
