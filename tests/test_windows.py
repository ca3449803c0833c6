"""Window schedules against lists computed by hand from the official scripts' rules."""

from __future__ import annotations

import pytest

from dvd.engine.windows import WindowScheduler, window_schedule
from dvd.errors import DVDError

# (T=300, ws=45, ov=9): stride 36, starts 0, 36, ..., 252 end before 300; the next start 288 would end at 333.
REGULAR_300 = [(0, 45), (36, 81), (72, 117), (108, 153), (144, 189), (180, 225), (216, 261), (252, 297)]


def test_openworld_300_45_9_shifts_the_last_window_back():
    assert window_schedule(300, 45, 9, "openworld") == REGULAR_300 + [(255, 300)]


def test_benchmark_300_45_9_keeps_a_short_last_window():
    assert window_schedule(300, 45, 9, "benchmark") == REGULAR_300 + [(288, 300)]


def test_150_81_21():
    assert window_schedule(150, 81, 21, "openworld") == [(0, 81), (60, 141), (69, 150)]
    assert window_schedule(150, 81, 21, "benchmark") == [(0, 81), (60, 141), (120, 150)]


def test_82_81_21():
    assert window_schedule(82, 81, 21, "openworld") == [(0, 81), (1, 82)]
    assert window_schedule(82, 81, 21, "benchmark") == [(0, 81), (60, 82)]


@pytest.mark.parametrize("preset", ["openworld", "benchmark"])
def test_short_videos_are_one_window(preset):
    assert window_schedule(1, 81, 21, preset) == [(0, 1)]
    assert window_schedule(80, 81, 21, preset) == [(0, 80)]
    assert window_schedule(81, 81, 21, preset) == [(0, 81)]
    assert window_schedule(0, 81, 21, preset) == []


@pytest.mark.parametrize("preset", ["openworld", "benchmark"])
def test_a_window_ending_exactly_at_the_end_is_the_last(preset):
    # 45 + 36 = 81: the second regular window ends at the last frame, no extra window follows.
    assert window_schedule(81, 45, 9, preset) == [(0, 45), (36, 81)]


def test_zero_overlap_tiles_the_video():
    assert window_schedule(10, 4, 0, "benchmark") == [(0, 4), (4, 8), (8, 10)]
    assert window_schedule(10, 4, 0, "openworld") == [(0, 4), (4, 8), (6, 10)]


@pytest.mark.parametrize(
    ("window", "overlap", "words"),
    [
        (45, 45, "smaller than the window"),
        (45, 50, "smaller than the window"),
        (0, 0, "at least 1"),
        (45, -1, "0 or more"),
    ],
)
def test_bad_window_and_overlap_raise_user_errors(window, overlap, words):
    with pytest.raises(DVDError, match=words):
        window_schedule(100, window, overlap)


def test_unknown_preset_raises():
    with pytest.raises(DVDError, match="openworld, benchmark"):
        window_schedule(100, 45, 9, "rolling")


@pytest.mark.parametrize("preset", ["openworld", "benchmark"])
def test_incremental_scheduler_matches_the_known_length_schedule(preset):
    for total in (1, 44, 45, 46, 80, 81, 82, 150, 300):
        scheduler = WindowScheduler(45, 9, preset)
        decided = []
        for seen in range(1, total + 1):
            decided += scheduler.advance(seen)
            # A window decided early must never need a frame that has not arrived yet.
            assert all(w.end <= seen for w in decided)
        decided += scheduler.advance(total, finished=True)
        assert scheduler.done
        assert decided == window_schedule(total, 45, 9, preset)


@pytest.mark.parametrize("preset", ["openworld", "benchmark"])
def test_earliest_future_start_bounds_every_later_window(preset):
    for total in (46, 100, 133, 300):
        schedule = window_schedule(total, 45, 9, preset)
        scheduler = WindowScheduler(45, 9, preset)
        returned: list = []
        for seen in range(1, total + 1):
            returned += scheduler.advance(seen)
            bound = scheduler.earliest_future_start(seen)
            later = schedule[len(returned) :]
            assert all(w.start >= bound for w in later)
            # The bound trails the input by at most a window and a stride, which keeps the stream's memory bounded.
            assert bound >= seen - 45 - 36
