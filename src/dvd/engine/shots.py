"""Shots: the hard cuts of a video, found while its frames stream in, and the seams whose alignment failed.

The paper's global affine assumption holds within a shot, not across a cut: a window fitted across one gives the
new shot a meaningless scale. So the engine (`VideoEngine.stitched`) splits the stream into shots and runs one
fresh `stream_disparity` per shot: windows, fits and cross-fades never span a cut, and each shot is scheduled and
stitched exactly as a whole video of its length would be (the openworld last window is shifted back within the
shot). Indices are those of the engine's output frames (after --stride and --max-frames).

A frame starts a new shot when (`ShotDetector.observe`):
- its index is one of the user's cut frames (`cut_frames`), or
- with cuts="auto", PySceneDetect's `ContentDetector` (mean HSV change between consecutive frames, fed one
  downscaled frame at a time) scores it at or above `threshold`, at least `MIN_SHOT_FRAMES` after the shot began.

Failed seams (the paper's Appendix F case: large motion or a missed cut, where no scale and shift make two windows
agree). `SeamJudge` compares each seam's overlap residual, relative to the reference's own variation, with the
running median of the video's earlier seams; one far above it (and above an absolute floor) fails. Recovery: the
stitcher treats the seam as a cut at the end of the stitched frames. The frames already stitched keep their values;
the new window's frames after them start a new shot at the window's own scale, with no fit and no cross-fade, and
later windows align to it as usual. Nothing is re-predicted, so the schedule, the memory and the model calls stay
those of the run without the failure.

State, for a run that resumes between windows (`dvd.jobs.resume`): the detector's `ShotState` (the index of
the next frame, the current shot's start, and the previous frame downscaled to at most DETECT_SIDE pixels), the
judge's recent residuals (`SeamJudge.recent`), and the shots so far (`ShotLog.entries`). A detector rebuilt from its
state scores the next frame exactly as the uninterrupted one would.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from dvd.errors import DVDError
from dvd.options import CUT_MODES, DEFAULT_CUT_THRESHOLD, MIN_SHOT_FRAMES

DETECT_SIDE = 160  # frames are downscaled to at most this many pixels per side before detection: speed, less noise

# A seam fails when its relative residual exceeds SEAM_FACTOR times the median of the last SEAM_HISTORY seams, and
# SEAM_FLOOR: below the floor the fit explains most of the overlap's variation, however good the other seams were.
# Until SEAM_MIN_HISTORY seams give a median, the bar is SEAM_EARLY_BAR: a relative residual of 1 is what fitting
# a constant would leave, i.e. the fit explains nothing.
SEAM_FACTOR = 4.0
SEAM_FLOOR = 0.5
SEAM_HISTORY = 128
SEAM_MIN_HISTORY = 3
SEAM_EARLY_BAR = 1.0


@dataclass(frozen=True)
class Cut:
    """Frame `index` starts a new shot; `cause` is "start" (frame 0), "detected", "given" or "seam"; `score` is
    the detector's score for "detected", the seam's relative residual for "seam", else None."""

    index: int
    cause: str
    score: float | None = None


@dataclass(frozen=True)
class ShotState:
    """What a `ShotDetector` needs to go on as if it had seen every earlier frame."""

    next_index: int
    shot_start: int
    previous: np.ndarray | None  # the last frame as the detector saw it: uint8 BGR, downscaled (auto mode only)


def validate_cut_settings(cuts: str | None, threshold: float, cut_frames: Sequence[int]) -> None:
    """DVDError for cut settings that cannot work."""
    if cuts is not None and cuts not in CUT_MODES:
        raise DVDError(f"unknown --cuts mode {cuts!r}: use one of {', '.join(CUT_MODES)}")
    if not threshold > 0:
        raise DVDError(f"--cut-threshold must be positive, got {threshold} (default {DEFAULT_CUT_THRESHOLD})")
    bad = [frame for frame in cut_frames if int(frame) != frame or frame < 1]
    if bad:
        raise DVDError(
            f"--cut-frames must be output frame indices of 1 or more, got {bad[0]}: e.g. --cut-frames 120,480"
        )


def parse_cut_frames(text: str) -> tuple[int, ...]:
    """'120,480' -> (120, 480): sorted, without repeats; DVDError naming the bad entry otherwise."""
    frames: list[int] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            frames.append(int(item))
        except ValueError:
            raise DVDError(f"--cut-frames takes comma-separated frame indices (e.g. 120,480), got {item!r}") from None
    validate_cut_settings(None, DEFAULT_CUT_THRESHOLD, frames)
    return tuple(sorted(set(frames)))


class ShotDetector:
    """Decides, frame by frame and in order, which frames start a new shot."""

    def __init__(
        self,
        cuts: str | None = "auto",
        threshold: float = DEFAULT_CUT_THRESHOLD,
        cut_frames: Sequence[int] = (),
        min_shot: int = MIN_SHOT_FRAMES,
        state: ShotState | None = None,
    ) -> None:
        validate_cut_settings(cuts, threshold, cut_frames)
        self.auto = cuts == "auto"
        self.threshold = threshold
        self.cut_frames = frozenset(int(frame) for frame in cut_frames)
        self.min_shot = min_shot
        self.next_index = 0 if state is None else state.next_index
        self.shot_start = 0 if state is None else state.shot_start
        self._previous: np.ndarray | None = None
        self.last_score: float | None = None  # the detector's score of the latest frame (auto mode), for diagnostics
        self._content = self._score = None
        if self.auto:
            self._content, self._score = _content_detector(threshold)
            if state is not None and state.previous is not None:
                self._feed(state.previous, self.next_index - 1)  # the first frame a detector sees scores 0

    def state(self) -> ShotState:
        return ShotState(self.next_index, self.shot_start, self._previous)

    def observe(self, frame: np.ndarray) -> Cut | None:
        """The next frame ([H, W, 3], float in [0, 1] or uint8): the `Cut` it starts, or None if it continues."""
        index = self.next_index
        self.next_index += 1
        cut: Cut | None = None
        if self.auto:
            score = self.last_score = self._feed(_detector_image(frame), index)
            if index > 0 and score >= self.threshold and index - self.shot_start >= self.min_shot:
                cut = Cut(index, "detected", score)
        if index == 0:
            cut = Cut(0, "start")
        elif index in self.cut_frames:
            cut = Cut(index, "given", cut.score if cut else None)
        if cut is not None:
            self.shot_start = index
        return cut

    def _feed(self, image: np.ndarray, index: int) -> float:
        from scenedetect import FrameTimecode

        self._previous = image
        self._content.process_frame(FrameTimecode(index, fps=1.0), image)
        return self._score.latest


def _content_detector(threshold: float) -> tuple[object, object]:
    """PySceneDetect's ContentDetector with its minimum-length filter off (our shots apply their own, without the
    delay the filter's merge mode adds), and a stats sink that keeps only the latest frame score."""
    from scenedetect import ContentDetector, StatsManager

    class LatestScore(StatsManager):
        # StatsManager keeps every frame's metrics (memory growing with the video); the engine needs the last one.
        def __init__(self) -> None:
            super().__init__(base_timecode=0)
            self.latest = 0.0

        def set_metrics(self, timecode: object, metric_kv_dict: dict) -> None:
            self.latest = float(metric_kv_dict[ContentDetector.FRAME_SCORE_KEY])

    detector = ContentDetector(threshold=threshold, min_scene_len=0)
    sink = LatestScore()
    detector.stats_manager = sink
    return detector, sink


def _detector_image(frame: np.ndarray) -> np.ndarray:
    """A frame as ContentDetector takes it: uint8 BGR, downscaled by area averaging to at most DETECT_SIDE per side.

    OpenCV's area resize (it comes with PySceneDetect) rather than `dvd.data.raster`: this small picture is only
    compared with its neighbour, and costs a tenth of a millisecond instead of ten."""
    import cv2

    image = np.asarray(frame)
    height, width = image.shape[:2]
    factor = DETECT_SIDE / max(height, width)
    if factor < 1:
        size = (max(1, round(width * factor)), max(1, round(height * factor)))  # OpenCV wants (width, height)
        image = cv2.resize(
            image if image.dtype == np.uint8 else image.astype(np.float32), size, interpolation=cv2.INTER_AREA
        )
    if image.dtype != np.uint8:
        image = np.rint(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    return np.ascontiguousarray(image[..., ::-1])


def split_shots(frames: Iterable[np.ndarray], detector: ShotDetector) -> Iterator[tuple[Cut, Iterator[np.ndarray]]]:
    """The stream as consecutive shots: (the cut that starts it, its frames). Each shot's frames must be consumed
    before the next shot is taken; the frame that starts the next shot is the only one held in between."""
    source = iter(frames)
    upcoming: list[tuple[Cut, np.ndarray]] = []

    def shot(first: np.ndarray) -> Iterator[np.ndarray]:
        yield first
        for frame in source:
            cut = detector.observe(frame)
            if cut is not None:
                upcoming.append((cut, frame))
                return
            yield frame

    for frame in source:
        cut = detector.observe(frame)
        if cut is None:  # a resumed detector continues the shot it was in
            cut = Cut(detector.next_index - 1, "resumed")
        upcoming.append((cut, frame))
        break
    while upcoming:
        cut, first = upcoming.pop()
        yield cut, shot(first)


class SeamJudge:
    """Fails a seam whose relative overlap residual is far above the running median of the video's seams.

    `judge` is the stitcher's `seam_judge`: it returns True (join the seam as a cut) for a failed seam only when
    `recover` is set; `last_failed` and `last_median` describe the latest verdict either way, for the reports."""

    def __init__(
        self,
        recover: bool = True,
        factor: float = SEAM_FACTOR,
        floor: float = SEAM_FLOOR,
        history: int = SEAM_HISTORY,
        recent: Sequence[float] = (),
    ) -> None:
        self.recover = recover
        self.factor = factor
        self.floor = floor
        self.recent: deque[float] = deque(recent, maxlen=history)
        self.last_failed = False
        self.last_median: float | None = None

    def judge(self, residual: float) -> bool:
        """Judge one seam against the earlier ones, then add it to them. Failures count too: a model or a video
        whose every seam is poor has a high median, and then no seam is far above it."""
        self.last_median = float(np.median(self.recent)) if len(self.recent) >= SEAM_MIN_HISTORY else None
        bar = SEAM_EARLY_BAR if self.last_median is None else self.factor * self.last_median
        self.last_failed = residual > max(bar, self.floor)
        self.recent.append(residual)
        return self.last_failed and self.recover


class ShotLog:
    """The shots of a video so far, as the cuts that start them; `as_meta` closes them at the frame count."""

    def __init__(self, entries: Sequence[Cut] = ()) -> None:
        self.entries: list[Cut] = list(entries)

    def add(self, cut: Cut) -> None:
        # A failed seam of one shot can be reported after the next shot's cut was seen: keep them in frame order.
        bisect.insort(self.entries, cut, key=lambda entry: entry.index)

    @property
    def failed_seams(self) -> list[Cut]:
        return [cut for cut in self.entries if cut.cause == "seam"]

    def as_meta(self, frames: int) -> list[dict]:
        """meta.json's "shots": start, end (exclusive), score and cause of each, covering frames [0, frames)."""
        cuts = [cut for cut in self.entries if cut.index < frames]
        ends = [cut.index for cut in cuts[1:]] + [frames]
        return [
            {"start": cut.index, "end": end, "score": cut.score, "cause": cut.cause}
            for cut, end in zip(cuts, ends)
            if end > cut.index
        ]
