import numpy as np
import pytest

from lovecs_core.mapping.tiling import (
    axis_offsets,
    axis_weights,
    make_grid,
    margin_for,
    ramp,
)
from tests.core.mapping.strip_oracle import StripAccumulator

CASES = [
    (1, 64, 16),
    (64, 64, 16),
    (65, 64, 16),
    (100, 64, 16),
    (300, 64, 16),
    (129, 64, 32),
    (1000, 96, 5),
    (37, 16, 8),
    (250, 40, 0),
    (513, 512, 64),
]


@pytest.mark.parametrize("length, tile, overlap", CASES)
def test_axis_offsets_cover_every_pixel_inside_the_raster(length, tile, overlap):
    offsets = axis_offsets(length, tile, overlap)
    size = min(tile, length)
    counts = np.zeros(length, int)
    for o in offsets:
        assert 0 <= o and o + size <= length
        counts[o : o + size] += 1
    assert (counts >= 1).all()
    assert offsets[0] == 0 and offsets[-1] + size == length
    steps = np.diff(offsets)
    assert (steps > 0).all() and (steps <= tile - overlap).all()
    assert (steps[:-1] == tile - overlap).all()  # only the last tile is shifted


@pytest.mark.parametrize(
    "width, height, tile, overlap",
    [(300, 170, 64, 16), (64, 20, 64, 16), (129, 513, 128, 32), (77, 1000, 96, 5), (5, 5, 32, 8)],
)
def test_grid_weights_cover_every_pixel_exactly(width, height, tile, overlap):
    grid = make_grid(width, height, tile, overlap)
    coverage = np.zeros((height, width), int)
    total = np.zeros((height, width))
    for t in grid.tiles():
        w = t.window
        assert (w.xsize, w.ysize) == (grid.tile_w, grid.tile_h)
        coverage[w.yoff : w.yoff + w.ysize, w.xoff : w.xoff + w.xsize] += 1
        total[w.yoff : w.yoff + w.ysize, w.xoff : w.xoff + w.xsize] += grid.weights(t.ix, t.iy)
    assert len(list(grid.tiles())) == len(grid)
    assert coverage.min() >= 1
    assert total.min() > 0.2  # never zero, never nearly zero
    # Away from the shifted last tiles, two neighbours' ramps sum to exactly one.
    inner_x = slice(0, grid.xs[-2] if len(grid.xs) > 1 else width)
    inner_y = slice(0, grid.ys[-2] if len(grid.ys) > 1 else height)
    np.testing.assert_allclose(total[inner_y, inner_x], 1.0, atol=1e-6)


def test_ramp_is_smooth_with_zero_margin_and_sums_to_one():
    for o in (1, 2, 3, 5, 8, 16, 64):
        r = ramp(o)
        m = margin_for(o)
        assert len(r) == o and (r[:m] == 0).all() and (r[m:] > 0).all() and (r <= 1).all()
        np.testing.assert_allclose(r + r[::-1], 1.0, atol=1e-6)
        assert (np.diff(r) >= 0).all()
    assert margin_for(16) == 4 and margin_for(5) == 2 and margin_for(2) == 0
    assert np.abs(np.diff(ramp(64))).max() < 0.06  # smooth: no step


def test_edge_tiles_keep_full_weight_at_the_raster_border():
    offsets = axis_offsets(300, 64, 16)
    first = axis_weights(offsets, 64, 0)
    last = axis_weights(offsets, 64, len(offsets) - 1)
    middle = axis_weights(offsets, 64, 1)
    assert first[0] == 1 and (first[:40] == 1).all() and first[-1] == 0
    assert last[-1] == 1 and last[0] == 0
    assert middle[0] == 0 and middle[-1] == 0 and middle[32] == 1
    single = axis_weights([0], 50, 0)
    assert (single == 1).all()


def _feed(grid, field, skip=()):
    """Feed tiles cut from a global ``field[C, H, W]`` and collect the strips."""
    acc = StripAccumulator(grid, field.shape[0])
    strips = []
    for t in grid.tiles():
        w = t.window
        crop = (slice(w.yoff, w.yoff + w.ysize), slice(w.xoff, w.xoff + w.xsize))
        skipped = (t.ix, t.iy) in skip
        probs = None if skipped else field[:, crop[0], crop[1]].copy()
        valid = None if skipped else np.ones((w.ysize, w.xsize), bool)
        for s in acc.add(t, probs, valid):
            strips.append((s.row_off, s.probs.copy(), s.covered.copy(), s.valid.copy()))
    return acc, strips


def test_accumulator_streams_strips_and_reconstructs_the_field():
    rng = np.random.default_rng(0)
    field = rng.random((3, 170, 230)).astype(np.float32)
    grid = make_grid(230, 170, 64, 16)
    acc, strips = _feed(grid, field)
    rows = [r for r, *_ in strips]
    heights = [p.shape[1] for _, p, _, _ in strips]
    assert rows[0] == 0 and all(r + h == n for r, h, n in zip(rows, heights, rows[1:]))
    assert rows[-1] + heights[-1] == 170  # every row exactly once
    assert len(strips) == len(grid.ys)
    out = np.concatenate([p for _, p, _, _ in strips], axis=1)
    np.testing.assert_allclose(out, field, rtol=1e-5, atol=1e-6)
    assert all(c.all() and v.all() for _, _, c, v in strips)


def test_accumulator_memory_does_not_grow_with_height():
    small = StripAccumulator(make_grid(500, 200, 64, 16), 4)
    tall = StripAccumulator(make_grid(500, 200_000, 64, 16), 4)
    size = lambda a: a._acc.nbytes + a._wsum.nbytes + a._valid.nbytes  # noqa: E731
    assert size(small) == size(tall) == (4 * 4 + 4 + 1) * 64 * 500


def test_accumulator_skipped_tiles_are_not_covered():
    field = np.ones((2, 100, 100), np.float32)
    grid = make_grid(100, 100, 40, 10)
    _, strips = _feed(grid, field, skip={(0, 0)})
    covered = np.concatenate([c for *_, c, _ in strips])
    valid = np.concatenate([v for *_, v in strips])
    assert not covered[:25, :25].any() and covered[40:, :].all() and covered[:, 40:].all()
    assert not valid[:25, :25].any()


def test_accumulator_rejects_out_of_order_tiles():
    grid = make_grid(100, 100, 40, 10)
    acc = StripAccumulator(grid, 1)
    tiles = list(grid.tiles())
    with pytest.raises(ValueError, match="row-major"):
        acc.add(tiles[1], None, None)
