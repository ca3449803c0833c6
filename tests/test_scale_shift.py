"""The one scale/shift fit against numpy: plain, weighted, masked, streamed, degenerate; its moments."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy_fits import lstsq_fit

from dvd.engine.scale_shift import ScaleShiftFit, fit_scale_shift


def test_fit_matches_numpy_lstsq():
    rng = np.random.default_rng(1)
    pred = rng.random((7, 5, 6)).astype(np.float32)
    ref = (1.7 * pred - 0.2 + 0.05 * rng.standard_normal(pred.shape)).astype(np.float32)
    assert fit_scale_shift(pred, ref) == pytest.approx(tuple(lstsq_fit([(pred, ref, 1.0)])), rel=1e-10, abs=1e-12)


def test_masked_fit_matches_numpy_lstsq():
    rng = np.random.default_rng(4)
    pred = rng.random((3, 10, 11))
    ref = 3 * pred + 0.5 + 0.1 * rng.standard_normal(pred.shape)
    valid = rng.random(pred.shape) > 0.3
    expected = lstsq_fit([(pred[valid], ref[valid], 1.0)])
    assert fit_scale_shift(pred, ref, valid) == pytest.approx(tuple(expected), rel=1e-10)


def test_weighted_fit_matches_numpy_lstsq():
    rng = np.random.default_rng(2)
    a = rng.random((3, 4, 4)).astype(np.float32)
    b = rng.random((2, 4, 4)).astype(np.float32)
    rows = [(a, 2 * a + 0.1, 1.0), (b, 0.5 * b - 0.3, 3.5)]  # inconsistent on purpose: the weights matter
    fit = ScaleShiftFit()
    for pred, ref, weight in rows:
        fit.add_frames(pred, ref, weight)
    assert fit.least_squares() == pytest.approx(tuple(lstsq_fit(rows)), rel=1e-10)


def test_moments_match_numpy_weighted_averages():
    rng = np.random.default_rng(8)
    a, b = rng.random((3, 4, 4)), rng.random((2, 4, 4))
    rows = [(a, 2 * a + 0.1 + 0.05 * rng.standard_normal(a.shape), 1.0), (b, 1.5 * b - 0.3, 2.5)]
    fit = ScaleShiftFit()
    for pred, ref, weight in rows:
        fit.add_frames(pred, ref, weight)
    pred = np.concatenate([p.ravel() for p, _, _ in rows])
    ref = np.concatenate([r.ravel() for _, r, _ in rows])
    weights = np.concatenate([np.full(p.size, w) for p, _, w in rows])
    mean_p, mean_r = np.average(pred, weights=weights), np.average(ref, weights=weights)
    expected = (
        mean_p,
        mean_r,
        np.average((pred - mean_p) ** 2, weights=weights),
        np.average((ref - mean_r) ** 2, weights=weights),
        np.average((pred - mean_p) * (ref - mean_r), weights=weights),
    )
    assert fit.moments() == pytest.approx(expected, rel=1e-10)


def test_fit_is_float64_accurate_where_float32_sums_are_not():
    # A small signal on a large offset: the normal equations cancel catastrophically in float32.
    rng = np.random.default_rng(3)
    pred = (10 + 0.05 * rng.random((4, 240, 432))).astype(np.float32)
    ref = (2 * pred.astype(np.float64) + 1 + 0.01 * rng.standard_normal(pred.shape)).astype(np.float32)
    expected = lstsq_fit([(pred, ref, 1.0)])
    assert fit_scale_shift(pred, ref) == pytest.approx(tuple(expected), rel=1e-8)
    # The official scripts' float32 sums, for contrast: visibly off.
    a00, a01, a11 = np.sum(pred * pred), np.sum(pred), np.float32(pred.size)
    b0, b1 = np.sum(pred * ref), np.sum(ref)
    scale32 = (a11 * b0 - a01 * b1) / (a00 * a11 - a01 * a01)
    assert abs(scale32 - expected[0]) > 1e-4


def test_no_signal_gives_the_best_constant():
    ref = np.random.default_rng(0).random((2, 3, 3))
    assert fit_scale_shift(np.full((2, 3, 3), 0.4, np.float32), ref) == (0.0, pytest.approx(ref.mean()))
    assert fit_scale_shift(np.zeros((1, 2, 2), np.float32), np.ones((1, 2, 2))) == (0.0, 1.0)


def test_no_pixels_raises():
    with pytest.raises(ValueError, match="no pixels"):
        fit_scale_shift(np.ones((1, 2, 2)), np.ones((1, 2, 2)), np.zeros((1, 2, 2), bool))
    with pytest.raises(ValueError, match="no pixels"):
        ScaleShiftFit().least_squares()
    with pytest.raises(ValueError, match="no pixels"):
        ScaleShiftFit().moments()


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.lists(st.tuples(st.integers(1, 30), st.floats(0.1, 10.0)), min_size=1, max_size=6),
)
def test_streaming_in_any_blocks_equals_one_solve(seed: int, blocks: list[tuple[int, float]]):
    """However the pixels are cut into weighted blocks, the streamed moments give numpy's weighted solution."""
    rng = np.random.default_rng(seed)
    rows = []
    for size, weight in blocks:
        pred = rng.normal(5.0, 2.0, size)
        rows.append((pred, 0.7 * pred - 3 + rng.normal(0, 0.5, size), weight))
    fit = ScaleShiftFit()
    for pred, ref, weight in rows:
        fit.add(pred, ref, weight)
    pred_all = np.concatenate([p for p, _, _ in rows])
    if np.ptp(pred_all) < 1e-9:
        return  # a single-pixel or constant prediction: covered by the degenerate-case test
    assert fit.least_squares() == pytest.approx(tuple(lstsq_fit(rows)), rel=1e-7, abs=1e-9)
