"""Property tests of the window scheduler, the stitcher and the streaming engine over random settings.

Frames are tiny (2x3 pixels) and the model is a numpy stand-in, so each example takes milliseconds. The stand-in
predicts an exact affine transform of a known "true" disparity; every window gets its own scale and shift. The
true disparity encodes the frame index in a ratio of pixel differences, which no affine map and no cross-fade of
two affine maps changes, so a test can read back which input frame every output frame came from.
"""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dvd.engine.stitch import Stitcher, stitch_windows
from dvd.engine.stream import stream_disparity
from dvd.engine.windows import SCHEDULE_PRESETS, Window, WindowScheduler, window_schedule
from dvd.options import GLOBAL_LAG_WINDOWS

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
H, W = 2, 3
INDEX_STEP = 0.01  # true disparity of frame t: 1 + INDEX_STEP * t + a per-pixel pattern...
PATTERN = np.array([[0.0, 0.3, 0.1], [0.2, 0.05, 0.25]], dtype=np.float64)
CODE_STEP = 0.002  # ...whose pixel (1, 2) also moves with t: (d[1,2] - d[0,0]) / (d[0,1] - d[0,0]) encodes t


@st.composite
def schedules(draw, max_frames: int = 160) -> tuple[int, int, int, str]:
    """(frames, window, overlap, schedule preset)."""
    window = draw(st.integers(1, 40))
    overlap = draw(st.integers(0, window - 1))
    return draw(st.integers(0, max_frames)), window, overlap, draw(st.sampled_from(SCHEDULE_PRESETS))


def true_disparity(index: np.ndarray | int) -> np.ndarray:
    index = np.asarray(index, dtype=np.float64)[..., None, None]
    code = np.zeros((H, W))
    code[1, 2] = CODE_STEP
    return 1.0 + INDEX_STEP * index + PATTERN + code * index


def frames_of(count: int) -> np.ndarray:
    """Input frames [T, H, W, 3]: channel 0 holds the frame index, so the stand-in model knows its truth."""
    frames = np.zeros((count, H, W, 3), np.float32)
    frames[..., 0] = np.arange(count)[:, None, None]
    return frames


def window_affine(last_index: int) -> tuple[float, float]:
    """Each window's own (scale, shift), a function of its last frame so that it never depends on batching, with the scale ratio of any two windows inside the openworld clip."""
    return 0.9 + 0.2 * ((last_index * 7919) % 13) / 12, 0.05 * ((last_index * 104729) % 5)


def stand_in_model(window_frames: np.ndarray) -> np.ndarray:
    """[L, H, W, 3] -> [L, H, W]: the true disparity of each frame under the window's affine map."""
    indices = window_frames[:, 0, 0, 0].astype(np.int64)
    scale, shift = window_affine(int(indices[-1]))
    return (scale * true_disparity(indices) + shift).astype(np.float32)


def frame_indices(disparity: np.ndarray) -> np.ndarray:
    """Which true frame each stitched frame [N, H, W] is an affine image of (read from the affine-invariant ratio)."""
    d = disparity.astype(np.float64)
    ratio = (d[:, 1, 2] - d[:, 0, 0]) / (d[:, 0, 1] - d[:, 0, 0])
    index = (ratio * PATTERN[0, 1] - PATTERN[1, 2]) / CODE_STEP
    nearest = np.rint(index)
    return np.where(np.abs(index - nearest) < 0.05, nearest, -1).astype(np.int64)  # -1: no frame's ratio


# --- the window scheduler -------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(schedules())
def test_schedule_covers_every_frame_with_ordered_windows_of_the_preset_shape(case) -> None:
    frames, window, overlap, preset = case
    windows = window_schedule(frames, window, overlap, preset)
    if frames == 0:
        assert windows == []
        return
    assert windows[0] == Window(0, min(window, frames)) and windows[-1].end == frames
    covered = np.zeros(frames, int)
    for w in windows:
        assert 1 <= w.length <= window
        covered[w.start : w.end] = 1
    assert covered.all()
    for before, after in itertools.pairwise(windows):
        assert before.start < after.start and before.end < after.end
        real_overlap = before.end - after.start
        assert real_overlap >= overlap  # never less than asked, so every seam has frames to fit on
        if preset == "benchmark":
            assert real_overlap == overlap
    if preset == "openworld" and frames >= window:
        assert all(w.length == window for w in windows)
    if preset == "benchmark":
        assert all(w.length == window for w in windows[:-1])


@PROPERTY_SETTINGS
@given(schedules(), st.lists(st.integers(1, 30), max_size=40))
def test_incremental_schedule_equals_the_known_length_one_and_bounds_what_is_kept(case, chunks) -> None:
    frames, window, overlap, preset = case
    scheduler = WindowScheduler(window, overlap, preset)
    seen, decided, promises = 0, [], []
    for chunk in chunks:
        seen = min(frames, seen + chunk)
        decided += [(w, promises[-1] if promises else 0) for w in scheduler.advance(seen)]
        earliest = scheduler.earliest_future_start(seen)
        assert seen - earliest <= window  # frames held for future windows: at most one window's worth
        promises.append(earliest)
        assert promises == sorted(promises)  # a frame once released is never needed again
    decided += [(w, promises[-1] if promises else 0) for w in scheduler.advance(frames, finished=True)]
    assert scheduler.done
    assert [w for w, _ in decided] == window_schedule(frames, window, overlap, preset)
    assert all(w.start >= promised for w, promised in decided)


# --- the stitcher ----------------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(schedules(max_frames=120), st.sampled_from(["openworld", "benchmark", "global"]))
def test_stitching_exact_affine_windows_gives_the_first_window_everywhere(case, preset) -> None:
    frames, window, overlap, _ = case
    schedule_preset = "benchmark" if preset == "benchmark" else "openworld"
    windows = window_schedule(frames, window, max(overlap, 1) if window > 1 else 0, schedule_preset)
    if not windows or (len(windows) > 1 and window == 1):
        return  # a 1-frame window cannot overlap its neighbour: nothing ties the windows together
    inputs = frames_of(frames)
    preds = [stand_in_model(inputs[w.start : w.end]) for w in windows]
    stitched = stitch_windows(windows, preds, preset)
    assert stitched.shape == (frames, H, W) and stitched.dtype == np.float32
    scale, shift = window_affine(windows[0].end - 1)
    expected = scale * true_disparity(np.arange(frames)) + shift
    np.testing.assert_allclose(stitched, expected, rtol=2e-5, atol=2e-5)


@PROPERTY_SETTINGS
@given(schedules(max_frames=120), st.lists(st.integers(0, 200), min_size=1, max_size=30))
def test_stitcher_hands_out_each_frame_once_in_order_however_often_it_is_asked(case, asks) -> None:
    frames, window, overlap, preset = case
    windows = window_schedule(frames, window, overlap, preset)
    inputs = frames_of(frames)
    preds = [stand_in_model(inputs[w.start : w.end]) for w in windows]
    stitcher = Stitcher(preset)  # the schedule presets are stitch presets of the same name
    handed: list[np.ndarray] = []
    for k, (w, pred) in enumerate(zip(windows, preds)):
        stitcher.add(w, pred)
        # frames before the next window's start are final; ask for an arbitrary number of frames up to there
        limit = windows[k + 1].start if k + 1 < len(windows) else frames
        handed.extend(stitcher.pop(min(asks[k % len(asks)], limit)))
    handed.extend(stitcher.pop(frames))
    if not handed:
        assert frames == 0 and len(stitch_windows(windows, preds, preset)) == 0
        return
    out = np.stack(handed)
    np.testing.assert_array_equal(out, stitch_windows(windows, preds, preset))
    assert len(out) == frames


# --- the streaming engine --------------------------------------------------------------------------------------


@st.composite
def stream_settings(draw) -> dict:
    stitch = draw(st.sampled_from(["openworld", "benchmark", "global"]))
    window = draw(st.integers(2, 24))
    overlap = draw(st.integers(0, window - 1))
    return {"window": window, "overlap": overlap, "stitch": stitch}


class RecordingModel:
    """The stand-in model, counting what each call receives."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[int, ...]]] = []

    def __call__(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        self.calls.append([w.shape for w in windows])
        return [stand_in_model(w) for w in windows]


def run_stream(frames: int, batch: int, config: dict) -> tuple[np.ndarray, list[int], RecordingModel]:
    """The stitched frames, the input frames held back as each output frame came out, and the model's calls."""
    model = RecordingModel()
    pulled = 0

    def source():
        nonlocal pulled
        for frame in frames_of(frames):
            pulled += 1
            yield frame

    outputs, held = [], []
    for disparity in stream_disparity(source(), model, batch_windows=batch, **config):
        outputs.append(disparity)
        held.append(pulled - len(outputs))
    return (np.stack(outputs) if outputs else np.empty((0, H, W), np.float32)), held, model


def offline(frames: int, config: dict) -> np.ndarray:
    """The whole video at once: the known-length schedule, every window predicted, then `stitch_windows`."""
    schedule = "benchmark" if config["stitch"] == "benchmark" else "openworld"
    windows = window_schedule(frames, config["window"], config["overlap"], schedule)
    if not windows:
        return np.empty((0, H, W), np.float32)
    inputs = frames_of(frames)
    return stitch_windows(windows, [stand_in_model(inputs[w.start : w.end]) for w in windows], config["stitch"])


@PROPERTY_SETTINGS
@given(st.integers(0, 150), st.integers(1, 4), stream_settings())
def test_stream_emits_every_frame_once_in_order_the_same_for_every_batch_size(frames, batch, config) -> None:
    single, _, _ = run_stream(frames, 1, config)
    batched, held, model = run_stream(frames, batch, config)
    assert single.shape == (frames, H, W)
    np.testing.assert_array_equal(frame_indices(single), np.arange(frames))  # each frame once, in order
    np.testing.assert_array_equal(batched, single)  # bit-identical whatever the batch size
    np.testing.assert_array_equal(single, offline(frames, config))  # streaming changes nothing
    stride = config["window"] - config["overlap"]
    # Bounded buffer: what is held back does not grow with the video, only with the window, the batch and (global)
    # the lag.
    lag = GLOBAL_LAG_WINDOWS if config["stitch"] == "global" else 0
    assert max(held, default=0) <= config["window"] + (batch - 1 + lag) * stride  # attained: the bound is tight
    for call in model.calls:
        assert 1 <= len(call) <= batch and len(set(call)) == 1  # one shape per call, at most `batch` windows
        assert call[0][0] <= config["window"] and call[0][1:] == (H, W, 3)
