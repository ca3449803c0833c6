"""Stitching: the least-squares fit against numpy, the clip, clamp and cross-fade by hand, and the drift gain."""

from __future__ import annotations

import numpy as np
import pytest
from numpy_fits import lstsq_fit, symmetric_fit

from dvd.errors import DVDError
from dvd.inference.stitch import (
    Stitcher,
    anchor_indices,
    cross_fade,
    get_stitch_preset,
    stitch_windows,
    validate_anchor_frames,
)
from dvd.inference.stream import stream_disparity
from dvd.inference.windows import Window


def test_cross_fade_ramps_from_reference_to_new():
    ref = np.array([[10.0], [10.0], [10.0]], dtype=np.float32)
    new = np.array([[20.0], [20.0], [20.0]], dtype=np.float32)
    np.testing.assert_array_equal(cross_fade(ref, new), [[10.0], [15.0], [20.0]])
    np.testing.assert_array_equal(cross_fade(ref[:1], new[:1]), [[10.0]])  # one frame: pure reference


def frames(values: list[float]) -> np.ndarray:
    """[T, 1, 2] frames, each constant."""
    return np.repeat(np.asarray(values, dtype=np.float32)[:, None, None], 2, axis=2)


def test_benchmark_fit_without_clip():
    # Window 1 predicts truth / 2 on frames 2..5; the overlap (frames 2, 3) gives s = 2, b = 0 exactly.
    out = stitch_windows([Window(0, 4), Window(2, 6)], [frames([1, 2, 3, 4]), frames([1.5, 2, 2.5, 3])], "benchmark")
    np.testing.assert_allclose(out, frames([1, 2, 3, 4, 5, 6]), rtol=1e-6)


def test_openworld_clips_the_scale_and_keeps_the_shift():
    # Same data: s = 2 is clipped to 1.5, b stays 0: aligned = [2.25, 3, 3.75, 4.5]; blend frame 2 = ref 3,
    # frame 3 = aligned 3 (alpha = [0, 1]).
    out = stitch_windows([Window(0, 4), Window(2, 6)], [frames([1, 2, 3, 4]), frames([1.5, 2, 2.5, 3])], "openworld")
    np.testing.assert_allclose(out, frames([1, 2, 3, 3, 3.75, 4.5]), rtol=1e-6)


def test_stitcher_reports_the_fit_and_overlap_error():
    stitcher = Stitcher("openworld")
    stitcher.add(Window(0, 4), frames([1, 2, 3, 4]))
    stitcher.add(Window(2, 6), frames([1.5, 2, 2.5, 3]))
    # Clipped fit (1.5, 0): aligned overlap [2.25, 3] against stitched [3, 4] -> mean |error| (0.75 + 1) / 2.
    assert stitcher.last_fit == pytest.approx((1.5, 0.0), abs=1e-12)
    assert stitcher.last_overlap_mae == pytest.approx(0.875)


def test_constant_overlap_gets_the_best_constant():
    # A constant overlap prediction carries no scale: the fit is (0, mean of the stitched overlap [3, 4, 5]) = (0, 4),
    # so the whole window becomes 4; overlap 3: alpha [0, .5, 1] between [3, 4, 5] and [4, 4, 4].
    out = stitch_windows([Window(0, 5), Window(2, 7)], [frames([1, 2, 3, 4, 5]), frames([2, 2, 2, 7, -1])], "benchmark")
    np.testing.assert_allclose(out, frames([1, 2, 3, 4, 4, 4, 4]), rtol=1e-6)


def test_negative_aligned_values_are_clamped_to_zero():
    # Exact fit (1, 0) on the overlap [3, 4, 5]; the frames after it are [7, -1] -> [7, 0].
    out = stitch_windows([Window(0, 5), Window(2, 7)], [frames([1, 2, 3, 4, 5]), frames([3, 4, 5, 7, -1])], "benchmark")
    np.testing.assert_allclose(out, frames([1, 2, 3, 4, 5, 7, 0]), rtol=1e-6)


def test_stitcher_hands_out_frames_once_and_forgets_them():
    stitcher = Stitcher("benchmark")
    stitcher.add(Window(0, 4), frames([1, 2, 3, 4]))
    np.testing.assert_array_equal(stitcher.pop(2), frames([1, 2]))
    assert stitcher.pop(2).shape == (0, 1, 2)
    stitcher.add(Window(2, 6), frames([1.5, 2, 2.5, 3]))
    np.testing.assert_allclose(stitcher.pop(10), frames([3, 4, 5, 6]), rtol=1e-6)
    with pytest.raises(ValueError, match="does not continue"):
        stitcher.add(Window(1, 8), frames([1] * 7))


def test_anchored_fit_weights_overlap_and_anchors_equally():
    rng = np.random.default_rng(4)
    first = rng.random((6, 3, 3)).astype(np.float32)
    anchors_ref = rng.random((1, 3, 3)).astype(np.float32)
    second = (first[[2, 3, 4, 5, 0, 1]] * 0.8 + 0.1 * rng.random((6, 3, 3))).astype(np.float32)
    anchors_second = (anchors_ref * 0.7 + 0.1 * rng.random((1, 3, 3))).astype(np.float32)
    stitcher = Stitcher("anchored")
    stitcher.add(Window(0, 6), first, anchors=anchors_ref)
    stitcher.add(Window(2, 8), second, anchors=anchors_second)
    # 4 overlap frames vs 1 anchor frame: the anchor rows weigh 4 so both parts carry equal total weight.
    expected = symmetric_fit([(second[:4], first[2:], 1.0), (anchors_second, anchors_ref, 4.0)])
    assert stitcher.last_fit == pytest.approx(tuple(expected), rel=1e-9)


def test_presets_and_anchor_validation():
    assert get_stitch_preset("openworld").scale_clip == (0.7, 1.5)
    assert get_stitch_preset("benchmark").scale_clip is None
    with pytest.raises(DVDError, match="openworld, benchmark, anchored"):
        get_stitch_preset("global")
    with pytest.raises(DVDError, match="1, 5, 9"):
        validate_anchor_frames(4, 81, 21)
    with pytest.raises(DVDError, match="lower --overlap"):
        validate_anchor_frames(25, 45, 21)
    np.testing.assert_array_equal(anchor_indices(76, 5), [0, 19, 38, 56, 75])  # rint(18.75 * k)


def planted_drift_errors(stitch: str, seed: int, total: int = 1200, size: int = 8) -> tuple[float, float]:
    """(AbsRel, scale drift) after one global affine, for windows with planted per-window affine errors.

    Scale drift: RMS over frames of |log s_t|, s_t the least-squares slope of aligned frame t against true frame t.
    """
    t = np.arange(total)[:, None, None]
    xs = np.arange(size)[None, None, :] / size
    truth = 0.6 + 0.3 * np.sin(2 * np.pi * (xs + t / 70.0)) * np.cos(2 * np.pi * (xs.transpose(0, 2, 1) - t / 90.0))

    def predict(windows: list[np.ndarray]) -> list[np.ndarray]:
        outputs = []
        for window in windows:
            index = window[:, 0, 0, 0].astype(int)
            rng = np.random.default_rng([seed, index[-1]])
            scale = np.exp(rng.normal(0, 0.1)) * (1 + rng.normal(0, 0.02, (len(index), 1, 1)))
            shift = rng.normal(0, 0.05) + rng.normal(0, 0.01, (len(index), 1, 1))
            outputs.append(truth[index] * scale + shift + rng.normal(0, 0.02, (len(index), size, size)))
        return outputs

    inputs = np.broadcast_to(np.arange(total, dtype=np.float32)[:, None, None, None], (total, size, size, 3))
    out = np.stack(list(stream_disparity(iter(inputs), predict, window=45, overlap=9, stitch=stitch)))
    scale, shift = lstsq_fit([(out, truth, 1.0)])
    aligned = out * scale + shift
    slopes = np.array([lstsq_fit([(true_frame, frame, 1.0)])[0] for true_frame, frame in zip(truth, aligned)])
    return float(np.mean(np.abs(aligned - truth) / truth)), float(np.sqrt(np.mean(np.log(slopes) ** 2)))


def test_anchored_drifts_clearly_less_than_the_chain():
    # Measured (seeds 0-2): AbsRel openworld 0.14-0.17, benchmark 0.07, anchored 0.035; scale drift 0.5-0.8, 0.3, 0.04.
    for seed in (0, 1):
        anchored_abs_rel, anchored_drift = planted_drift_errors("anchored", seed)
        for chain in ("openworld", "benchmark"):
            chain_abs_rel, chain_drift = planted_drift_errors(chain, seed)
            assert anchored_abs_rel < 0.6 * chain_abs_rel
            assert anchored_drift < 0.25 * chain_drift
