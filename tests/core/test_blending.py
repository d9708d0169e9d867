"""The row blender (core/blending.py) alone, and with the tile plan in memory (no rasters, no threads)."""
from __future__ import annotations

import numpy as np
import pytest

from sar2eo_cloud_plugin.core.blending import RowBlender
from sar2eo_cloud_plugin.core.tiling import TilePlan, pad_to


def test_flush_is_the_weighted_mean_of_overlapping_tiles():
    b = RowBlender(channels=1, height=2, width=5)
    b.add(np.full((1, 2, 3), 10.0, np.float32), 0, np.full((2, 3), 1.0, np.float32))
    b.add(np.full((1, 2, 3), 40.0, np.float32), 2, np.full((2, 3), 2.0, np.float32))
    blended, _ = b.flush(2)
    np.testing.assert_allclose(blended[0, 0], [10, 10, (10 + 80) / 3, 40, 40])


def test_rows_below_the_flush_are_carried_into_the_next_tile_row():
    """Rows 2-3 of the first tile row are overlapped by the next tile row: flush(2) must hand out rows
    0-1 only and keep the sums of rows 2-3, which then blend with the next row's tile."""
    b = RowBlender(channels=1, height=4, width=3)
    b.add(np.full((1, 4, 3), 1.0, np.float32), 0, np.full((4, 3), 1.0, np.float32))
    b.add_valid(0, np.array([[1, 1, 1], [1, 1, 1], [0, 1, 0], [0, 0, 0]], bool))
    top, valid_top = b.flush(2)
    np.testing.assert_array_equal(top, 1.0)
    assert valid_top.all()
    b.add(np.full((1, 4, 3), 4.0, np.float32), 0, np.full((4, 3), 3.0, np.float32))
    b.add_valid(0, np.array([[0, 0, 0], [1, 0, 0], [1, 1, 1], [1, 1, 1]], bool))
    rest, valid_rest = b.flush(4)
    np.testing.assert_allclose(rest[0, :2], (1 + 12) / 4)      # carried rows: both tiles, weights 1 and 3
    np.testing.assert_allclose(rest[0, 2:], 4.0)               # below the carry: the new tile alone
    np.testing.assert_array_equal(valid_rest, [[0, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 1]])


def test_flush_clears_what_it_does_not_carry():
    b = RowBlender(channels=2, height=3, width=4)
    b.add(np.ones((2, 3, 4), np.float32), 0, np.ones((3, 4), np.float32))
    b.add_valid(0, np.ones((3, 4), bool))
    b.flush(3)
    assert not b.acc.any() and not b.wsum.any() and not b.valid.any()


def test_prediction_beyond_the_raster_is_cut_off():
    b = RowBlender(channels=1, height=2, width=2)
    pred = np.arange(16, dtype=np.float32).reshape(1, 4, 4)      # a padded tile: 4 x 4 for a 2 x 2 raster
    b.add(pred, 0, np.ones((2, 2), np.float32))
    np.testing.assert_array_equal(b.flush(2)[0], pred[:, :2, :2])


def _blend_in_memory(image: np.ndarray, plan: TilePlan, predict) -> np.ndarray:
    """The engine's blending loop without rasterio or threads: tiles from ``image`` through ``predict``."""
    c, h, w = image.shape
    blender = RowBlender(c, plan.tile_height, w)
    rows = []
    for i, batch in enumerate(plan.batches):
        for k, x0 in enumerate(batch.x0s):
            tile = pad_to(image[:, batch.y0:batch.y0 + plan.tile_height, x0:x0 + plan.tile_width],
                          plan.tile, plan.tile)
            blender.add(predict(tile), x0, plan.weight(batch.row, batch.first + k))
        if plan.ends_row(i):
            rows.append(blender.flush(plan.final_rows(batch.row))[0])
    return np.concatenate(rows, axis=1)


@pytest.mark.parametrize("h,w,tile,overlap,batch", [(300, 190, 64, 16, 3), (129, 70, 64, 0, 2), (97, 97, 32, 16, 1),
                                                    (200, 333, 48, 24, 4), (40, 50, 64, 16, 2)])
def test_plan_and_blender_give_an_identity_network_its_input_back(h, w, tile, overlap, batch):
    image = np.random.default_rng(h * w).normal(size=(2, h, w)).astype(np.float32)
    out = _blend_in_memory(image, TilePlan(h, w, tile, overlap, batch), lambda t: t)
    assert out.shape == image.shape
    np.testing.assert_allclose(out, image, atol=1e-5)


def test_blending_of_disagreeing_tiles_has_no_jump():
    """Each tile predicts its own constant: the blend must move between them smoothly (no seam), and only
    by the ramp's step."""
    h, w = 64, 64 + 48 * 3
    plan = TilePlan(h, w, 64, 16, 2)
    assert plan.xs == [0, 48, 96, 144]          # every overlap exactly 16 px
    image = np.zeros((1, h, w), np.float32)
    values = iter([0.0, 1.0, 0.0, 1.0])
    out = _blend_in_memory(image, plan, lambda t: np.full_like(t, next(values)))
    steps = np.abs(np.diff(out[0, 0]))
    assert steps.max() <= 1.0 / 16 * 1.001      # a jump of 1 spread over the 16-pixel overlap
    np.testing.assert_allclose(out[0, 0, [0, 80, 128, 200]], [0, 1, 0, 1])
