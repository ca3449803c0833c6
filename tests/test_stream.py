"""The streaming engine against a direct, whole-video computation written out here, plus its memory behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from numpy_fits import joint_stitch_fits

from dvd.data.raster import unit_float
from dvd.engine.stream import WindowReport, stream_disparity
from dvd.engine.video import VideoEngine, VideoSettings
from dvd.engine.windows import window_schedule
from dvd.errors import DVDError
from dvd.options import GLOBAL_LAG_WINDOWS, GLOBAL_PRIOR_SPREAD
from dvd.pipeline.inputs import check_inputs

LENGTHS = [1, 2, 5, 44, 45, 46, 81, 82, 150]
H, W = 3, 4


def make_frames(total: int, seed: int = 0) -> np.ndarray:
    """[T, H, W, 3] float32; channel 0 carries the frame index so the fake model can tell frames apart."""
    rng = np.random.default_rng(seed)
    frames = rng.random((total, H, W, 3)).astype(np.float32)
    frames[..., 0] = np.arange(total)[:, None, None]
    return frames


def fake_model(window: np.ndarray) -> np.ndarray:
    """Deterministic, content- and position-dependent disparity for one window [L, H, W, 3] -> [L, H, W]."""
    position = np.arange(len(window), dtype=np.float32)[:, None, None]
    drift = 1.0 + 0.003 * window[0, 0, 0, 0] + 0.01 * np.sin(position)
    return (0.2 + window[..., 1] * drift + 0.1 * window[..., 2] - 0.05 * position / len(window)).astype(np.float32)


def batched(calls: list[list[tuple[int, ...]]]):
    def predict_windows(windows: list[np.ndarray]) -> list[np.ndarray]:
        calls.append([w.shape for w in windows])
        return [fake_model(w) for w in windows]

    return predict_windows


def lstsq(pred: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    design = np.stack([pred.ravel(), np.ones(pred.size)], 1).astype(np.float64)
    scale, shift = np.linalg.lstsq(design, ref.ravel().astype(np.float64), rcond=None)[0]
    return float(scale), float(shift)


def direct_stitch(frames: np.ndarray, window: int, overlap: int, stitch: str) -> np.ndarray:
    """The whole-video algorithm (the official overlap alignment; global: numpy's dense solve of its fits), written
    independently of dvd.engine."""
    schedule = window_schedule(len(frames), window, overlap, "benchmark" if stitch == "benchmark" else "openworld")
    outs = [fake_model(frames[start:end]) for start, end in schedule]
    if stitch == "global" and len(schedule) > 1:
        fits = joint_stitch_fits(schedule, outs, GLOBAL_PRIOR_SPREAD, GLOBAL_LAG_WINDOWS)
    result = None
    for index, ((start, _), out) in enumerate(zip(schedule, outs)):
        if result is None:
            result = out
            continue
        ro = len(result) - start
        if stitch == "global":
            scale, shift = fits[index]
        else:
            scale, shift = lstsq(out[:ro], result[start:])
        if stitch == "openworld":
            scale = min(max(scale, 0.7), 1.5)
        aligned = np.maximum(out * np.float32(scale) + np.float32(shift), 0)
        alpha = np.linspace(0, 1, ro, dtype=np.float32)[:, None, None]
        blended = (1 - alpha) * result[start:] + alpha * aligned[:ro]
        result = np.concatenate([result[:start], blended, aligned[ro:]])
    return result


@pytest.mark.parametrize("stitch", ["openworld", "benchmark", "global"])
@pytest.mark.parametrize("total", LENGTHS)
def test_stream_equals_the_direct_computation(stitch, total):
    frames = make_frames(total, seed=total)
    out = np.stack(list(stream_disparity(iter(frames), batched([]), window=45, overlap=9, stitch=stitch)))
    assert out.shape == (total, H, W)
    np.testing.assert_allclose(out, direct_stitch(frames, 45, 9, stitch), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stitch", ["openworld", "benchmark", "global"])
def test_batched_windows_give_identical_results(stitch):
    frames = make_frames(150, seed=7)
    single = np.stack(list(stream_disparity(iter(frames), batched([]), window=25, overlap=5, stitch=stitch)))
    for batch in (2, 3, 5):
        calls: list[list[tuple[int, ...]]] = []
        out = np.stack(
            list(
                stream_disparity(iter(frames), batched(calls), window=25, overlap=5, stitch=stitch, batch_windows=batch)
            )
        )
        np.testing.assert_array_equal(out, single)
        assert max(len(call) for call in calls) == batch
        assert all(len(set(call)) == 1 for call in calls)  # one shape per batch


def test_default_window_on_odd_lengths():
    for total in (82, 150):
        frames = make_frames(total, seed=3)
        out = np.stack(list(stream_disparity(iter(frames), batched([]))))
        np.testing.assert_allclose(out, direct_stitch(frames, 81, 21, "global"), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("stitch", "batch"), [("openworld", 1), ("benchmark", 1), ("global", 1), ("global", 3), ("openworld", 3)]
)
def test_frames_come_out_early_and_memory_stays_bounded(stitch, batch):
    """Output frame i appears before the source is read much past i, and the source is never read all at once."""
    total, window, overlap = 600, 25, 5
    frames = make_frames(total)
    consumed = 0

    def source():
        nonlocal consumed
        for frame in frames:
            consumed += 1
            yield frame

    lags = []
    calls: list[list[tuple[int, ...]]] = []
    for index, _ in enumerate(
        stream_disparity(source(), batched(calls), window=window, overlap=overlap, stitch=stitch, batch_windows=batch)
    ):
        lags.append(consumed - index)
    assert len(lags) == total
    # A window, a stride per extra batched window, and one more stride before a frame is known to be final;
    # global also holds the windows within its lag.
    lag = GLOBAL_LAG_WINDOWS if stitch == "global" else 0
    bound = window + (batch + 1 + lag) * (window - overlap)
    assert max(lags) <= bound


def test_empty_source_yields_nothing():
    assert list(stream_disparity(iter([]), batched([]))) == []


def test_mixed_frame_sizes_are_a_user_error():
    frames = [np.zeros((4, 4, 3), np.float32), np.zeros((4, 8, 3), np.float32)]
    with pytest.raises(DVDError, match="share one size"):
        list(stream_disparity(iter(frames), batched([]), window=5, overlap=1))


def test_bad_settings_are_user_errors():
    with pytest.raises(DVDError, match="batch-windows"):
        list(stream_disparity(iter([]), batched([]), batch_windows=0))
    with pytest.raises(DVDError, match="smaller than the window"):
        list(stream_disparity(iter([]), batched([]), window=9, overlap=9))
    with pytest.raises(DVDError, match="anchored was removed"):
        list(stream_disparity(iter([]), batched([]), window=9, overlap=4, stitch="anchored"))


def brightness(windows: list[np.ndarray]) -> list[np.ndarray]:
    """A stand-in model: each frame's disparity is its channel mean in [0, 1] (windows come in the video's own
    type, as `DVDPipeline.predict_windows` takes them), so one window is exactly predictable."""
    return [unit_float(w).mean(axis=-1) for w in windows]


def run_engine(video, settings: VideoSettings, keep_model_size: bool = False, **reading) -> np.ndarray:
    """What `DVDPipeline.__call__` does with its input, on the stand-in model."""
    frames = check_inputs(video, **reading)
    out_size = settings.model_size(frames.size) if keep_model_size else frames.size
    return np.stack(list(VideoEngine(brightness, settings).run(frames.frames, frames.size, out_size)))


def bilinear(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[T, H, W, C] float -> size, bilinear without antialias (the reference resize), straight from torch."""
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False).permute(0, 2, 3, 1).numpy()


def test_engine_resizes_to_model_size_and_back():
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (4, 30, 50, 3), dtype=np.uint8)
    settings = VideoSettings(height=32, width=48, window=9, overlap=2)
    # 30x50 scaled by max(32/30, 48/50) = 16/15 -> 32 x ceil(53.3) = 54 -> rounded up to 32x64.
    assert settings.model_size((30, 50)) == (32, 64)
    at_model = bilinear(frames.astype(np.float32) / 255, (32, 64)).mean(axis=-1, keepdims=True)
    expected = bilinear(at_model, (30, 50))[..., 0]
    # 8-bit frames stay 8-bit at model size (torch's uint8 bilinear kernel, `resize_pixels`), so the model's input,
    # and this stand-in's mean of it, is within about one of the 256 levels of the float resize.
    one_level = 1.05 / 255
    np.testing.assert_allclose(run_engine(frames, settings), expected, rtol=0, atol=one_level)
    kept = run_engine(frames, settings, keep_model_size=True)
    np.testing.assert_allclose(kept, at_model[..., 0], rtol=0, atol=one_level)
    exact = run_engine(list(frames.astype(np.float32) / 255), settings, keep_model_size=True)
    np.testing.assert_allclose(exact, at_model[..., 0], rtol=1e-5, atol=1e-6)  # float frames: the float resize


def test_engine_accepts_uint8_uint16_and_float_alike():
    rng = np.random.default_rng(6)
    frames = rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    settings = VideoSettings(height=16, width=16, window=3, overlap=1)
    as_uint8 = run_engine(frames, settings)
    as_float = run_engine(list(frames / np.float32(255)), settings)
    as_uint16 = run_engine(frames.astype(np.uint16) * 257, settings)
    np.testing.assert_allclose(as_uint8, as_float, rtol=1e-6)
    np.testing.assert_allclose(as_uint16, as_float, rtol=1e-6)


def test_engine_stride_and_max_frames():
    frames = np.zeros((10, 16, 16, 3), np.float32)
    frames[..., 0] = np.arange(10)[:, None, None] / 10
    settings = VideoSettings(height=16, width=16, window=3, overlap=1, stitch="benchmark")
    out = run_engine(frames, settings, stride=3, max_frames=3)
    # Frames 0, 3, 6; the stand-in model's disparity is the channel mean, and every window fit is exact.
    np.testing.assert_allclose(out[:, 0, 0], [0.0, 0.1, 0.2], atol=1e-6)
    with pytest.raises(ValueError, match="no frames"):
        run_engine(iter([]), settings)


def test_window_reports_carry_the_fit_and_the_seam_residual():
    frames = make_frames(12, seed=3)
    reports: list[WindowReport] = []
    list(stream_disparity(frames, batched([]), window=8, overlap=4, stitch="benchmark", on_window=reports.append))
    first, second = fake_model(frames[0:8]), fake_model(frames[4:12])
    scale, shift = lstsq(second[:4], first[4:8])
    expected = np.abs(np.maximum(scale * second[:4] + shift, 0) - first[4:8]).mean()
    assert [(r.index, tuple(r.window)) for r in reports] == [(0, (0, 8)), (1, (4, 12))]
    assert reports[0].overlap_mae is None and (reports[0].scale, reports[0].shift) == (1.0, 0.0)
    assert (reports[1].scale, reports[1].shift) == pytest.approx((scale, shift), rel=1e-6)
    assert reports[1].overlap_mae == pytest.approx(expected, rel=1e-5)


def test_a_window_callback_can_stop_the_stream_between_windows():
    class Cancelled(Exception):
        pass

    def cancel_after_first(report: WindowReport) -> None:
        if report.index == 1:
            raise Cancelled

    calls: list = []
    with pytest.raises(Cancelled):
        list(stream_disparity(make_frames(40), batched(calls), window=8, overlap=2, on_window=cancel_after_first))
    assert len(calls) == 2
