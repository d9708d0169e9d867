"""The tile plan (core/tiling.py) alone: coverage, batch order, final rows and weights. No rasters."""
from __future__ import annotations

import numpy as np
import pytest

from sar2eo_cloud_plugin.core.tiling import TilePlan, pad_to

SHAPES = [(1, 1, 16, 0, 1), (50, 70, 64, 16, 2), (300, 190, 64, 16, 3), (129, 128, 128, 0, 4),
          (200, 333, 48, 24, 1), (65, 400, 32, 8, 5), (97, 97, 32, 16, 2)]


@pytest.mark.parametrize("h,w,tile,overlap,batch", SHAPES)
def test_tiles_cover_the_raster_with_the_overlap(h, w, tile, overlap, batch):
    plan = TilePlan(h, w, tile, overlap, batch)
    seen = np.zeros((h, w), dtype=int)
    for b in plan.batches:
        for x0 in b.x0s:
            seen[b.y0:b.y0 + plan.tile_height, x0:x0 + plan.tile_width] += 1
    assert (seen >= 1).all()
    for starts, length, extent in ((plan.ys, h, plan.tile_height), (plan.xs, w, plan.tile_width)):
        assert starts[0] == 0 and starts[-1] + extent == length
        assert all(b - a <= extent - overlap for a, b in zip(starts, starts[1:]))   # at least the overlap
    assert plan.n_tiles == len(plan.ys) * len(plan.xs) == sum(len(b.x0s) for b in plan.batches)


@pytest.mark.parametrize("h,w,tile,overlap,batch", SHAPES)
def test_batches_run_row_by_row_and_each_row_ends_once(h, w, tile, overlap, batch):
    plan = TilePlan(h, w, tile, overlap, batch)
    order = [(b.row, b.first + k) for b in plan.batches for k in range(len(b.x0s))]
    assert order == [(r, c) for r in range(len(plan.ys)) for c in range(len(plan.xs))]
    assert all(1 <= len(b.x0s) <= batch and b.y0 == plan.ys[b.row] for b in plan.batches)
    assert all(x0 == plan.xs[b.first + k] for b in plan.batches for k, x0 in enumerate(b.x0s))
    ends = [i for i in range(len(plan.batches)) if plan.ends_row(i)]
    assert [plan.batches[i].row for i in ends] == list(range(len(plan.ys)))
    assert ends[-1] == len(plan.batches) - 1


@pytest.mark.parametrize("h,w,tile,overlap,batch", SHAPES)
def test_final_rows_write_every_row_once_and_carry_the_overlap(h, w, tile, overlap, batch):
    plan = TilePlan(h, w, tile, overlap, batch)
    finals = [plan.final_rows(r) for r in range(len(plan.ys))]
    assert sum(finals) == h and min(finals) >= 1
    for r in range(len(plan.ys) - 1):
        carry = plan.tile_height - finals[r]
        # what the blender carries is exactly the part of this tile row that the next one overlaps
        assert carry == plan.ys[r] + plan.tile_height - plan.ys[r + 1] >= overlap
    assert finals[-1] == plan.tile_height     # the last tile row ends at the raster's bottom


@pytest.mark.parametrize("h,w,tile,overlap,batch", SHAPES)
def test_weights_positive_ramped_inside_and_one_on_the_border(h, w, tile, overlap, batch):
    plan = TilePlan(h, w, tile, overlap, batch)
    for r, y0 in enumerate(plan.ys):
        for c, x0 in enumerate(plan.xs):
            wt = plan.weight(r, c)
            assert wt.shape == (plan.tile_height, plan.tile_width) and wt.dtype == np.float32
            assert (wt > 0).all() and (wt <= 1).all()
            if y0 == 0:
                assert (wt[0] == wt.max(axis=0)).all()        # the raster's top edge is not ramped
            elif overlap:
                assert (wt[0] < wt.max(axis=0)).all()         # an edge inside the raster is
            if x0 + plan.tile_width == w:
                assert (wt[:, -1] == wt.max(axis=1)).all()


def test_weights_of_two_neighbours_add_up_to_one_across_an_exact_overlap():
    plan = TilePlan(16, 112, 64, 16, 2)          # xs = [0, 48]: the tiles overlap by exactly 16
    assert plan.xs == [0, 48]
    left, right = plan.weight(0, 0)[0], plan.weight(0, 1)[0]
    np.testing.assert_allclose(left[48:] + right[:16], 1.0, atol=1e-6)


def test_pad_to_reflects_and_keeps_the_tile():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    padded = pad_to(x, 5, 6)
    assert padded.shape == (2, 5, 6)
    np.testing.assert_array_equal(padded[:, :3, :4], x)
    np.testing.assert_array_equal(padded[:, 3, :4], x[:, 1])      # reflection, not zeros
    assert pad_to(x, 3, 4) is x
    np.testing.assert_array_equal(pad_to(x[:, :1], 2, 4)[:, 1], x[:, 0])   # one row: edge mode
