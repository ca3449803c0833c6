"""The one video engine: frames in at any size -> model size -> windows, stitched -> disparity out at output size.

`dvd predict`, `dvd eval`, `dvd demo` and `DVDPipeline.__call__` all run videos through `VideoEngine`; they
differ only in where frames come from and where disparity goes. Frames are resized one at a time and the stitched
disparity leaves as soon as it is final, so memory does not depend on the video length.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace

import numpy as np

from dvd.data.raster import resize_frames, resize_pixels
from dvd.engine.resize import DEFAULT_SPATIAL_STRIDE, model_size
from dvd.engine.shots import (
    Cut,
    SeamJudge,
    ShotDetector,
    ShotLog,
    ShotState,
    split_shots,
    validate_cut_settings,
)
from dvd.engine.stages import RESIZE, RESIZE_BACK, STITCH, NoTimer
from dvd.engine.stream import (
    StreamState,
    WindowCallback,
    WindowPredictor,
    WindowReport,
    stream_disparity,
    validate_stream_settings,
)
from dvd.engine.windows import Window
from dvd.errors import DVDError
from dvd.options import (
    DEFAULT_BATCH_WINDOWS,
    DEFAULT_CUT_THRESHOLD,
    DEFAULT_MIN_HEIGHT,
    DEFAULT_MIN_WIDTH,
    DEFAULT_OVERLAP,
    DEFAULT_STITCH,
    DEFAULT_WINDOW,
)

WHOLE_NUMBER_SETTINGS = ("height", "width", "window", "overlap", "batch_windows")


@dataclass(frozen=True)
class VideoSettings:
    """How a video is sized, cut into windows and joined: the `dvd predict` flags of the same names and defaults
    (the official open-world sizes and windows, stitched by `global`)."""

    height: int = DEFAULT_MIN_HEIGHT  # minimum model height: frames are scaled to cover height x width
    width: int = DEFAULT_MIN_WIDTH
    window: int = DEFAULT_WINDOW
    overlap: int = DEFAULT_OVERLAP
    stitch: str = DEFAULT_STITCH
    batch_windows: int = DEFAULT_BATCH_WINDOWS
    cuts: str | None = None  # "auto" | "off"; None: auto for video files, off otherwise (see `for_input`)
    cut_threshold: float = DEFAULT_CUT_THRESHOLD
    cut_frames: tuple[int, ...] = ()  # output frame indices that start a new shot, whatever `cuts` is
    # The model's, not a flag: model sizes are multiples of it (`DVDPipeline.fit_settings` sets it from the model).
    spatial_stride: int = DEFAULT_SPATIAL_STRIDE

    def validate(self) -> None:
        """Raise DVDError for settings that cannot work, before any frame is decoded or any model is loaded."""
        for name in WHOLE_NUMBER_SETTINGS:
            value = getattr(self, name)
            # bool is an int to Python, and 5.5 frames or "32" pixels would fail (or round) somewhere deep inside.
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise DVDError(f"`{name}` must be a whole number (an int), got {value!r}")
        if self.height < 1 or self.width < 1:
            raise DVDError(f"--height/--width must be positive, got {self.height}x{self.width}")
        validate_stream_settings(self.window, self.overlap, self.stitch, self.batch_windows)
        validate_cut_settings(self.cuts, self.cut_threshold, self.cut_frames)

    def for_input(self, kind: str) -> VideoSettings:
        """These settings with `cuts` decided for an input of `kind` ("video", "images", "image", "array"):
        detection is on by default for video files only, since image sequences (benchmarks, renders) are one shot
        and a detector can mistake their fast motion for cuts."""
        if self.cuts is not None:
            return self
        return replace(self, cuts="auto" if kind == "video" else "off")

    def model_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(H, W) the model runs at for source frames of `size`."""
        return model_size(*size, self.height, self.width, self.spatial_stride)

    def as_meta(self) -> dict:
        """The settings as recorded in meta.json."""
        meta = asdict(self)
        meta["min_height"], meta["min_width"] = meta.pop("height"), meta.pop("width")
        del meta["spatial_stride"]  # the model's, which meta.json records as its backbone
        return meta


class VideoEngine:
    """Runs frames through a window predictor with `settings`; `on_window` hears about every stitched window;
    `timer` (a `dvd.bench.profiling.StageTimer`, for `dvd bench`) records the resize and stitch stages."""

    def __init__(
        self,
        predict_windows: WindowPredictor,
        settings: VideoSettings,
        on_window: WindowCallback | None = None,
        timer: NoTimer | None = None,
    ) -> None:
        settings.validate()
        self.predict_windows = predict_windows
        self.settings = settings
        self.on_window = on_window
        self.timer = timer or NoTimer()

    def model_frames(self, frames: Iterable[np.ndarray], size: tuple[int, int]) -> Iterator[np.ndarray]:
        """Stitched disparity [h, w] at model size, one frame at a time, for [H, W, 3] frames of `size` (uint8,
        uint16, or float32 in [0, 1]; see `dvd.pipeline.inputs`)."""
        return self.stitched(self.to_model_size(frames, size))

    def to_model_size(self, frames: Iterable[np.ndarray], size: tuple[int, int]) -> Iterator[np.ndarray]:
        """[H, W, 3] frames of `size` resized to the model size, one at a time, each kept in its type (8-bit video
        stays 8-bit: `dvd.data.raster.resize_pixels`); the first half of `model_frames`, which `dvd predict` runs
        in its reading thread."""
        target = self.settings.model_size(size)
        for frame in frames:
            with self.timer.stage(RESIZE):
                resized = resize_pixels(frame, target)
            yield resized

    def stitched(
        self,
        resized: Iterable[np.ndarray],
        resume: dict | None = None,
        on_state: Callable[[dict], None] | None = None,
    ) -> Iterator[np.ndarray]:
        """Stitched disparity [h, w] for frames already at model size (the second half of `model_frames`).

        Shot by shot (`dvd.engine.shots`): each shot is a fresh stream, so no window is fitted across a cut.
        While it runs and after, `shots` holds the shots found so far and `failed_seams` the seams whose fit
        failed (with cuts "auto" those start a new shot too; with "off" they are only reported). Window reports
        carry frame indices of the whole video.

        Resumable runs (`dvd.jobs.resume`): `on_state` is called with the engine's state (plain values and
        numpy arrays) after each model call whose frames have all been yielded, except a shot's last one; `resume`
        continues from such a state, fed the frames from `resume_points(resume)[0]` on, and yields what the
        uninterrupted engine yielded after its first `resume_points(resume)[1]` frames, bit for bit."""
        s = self.settings
        self.shots = ShotLog([Cut(*entry) for entry in resume["shots"]] if resume else ())
        self.failed_seams: list[dict] = list(resume["failed_seams"]) if resume else []
        detector_state = ShotState(**resume["detector"]) if resume else None
        detector = ShotDetector(s.cuts or "off", s.cut_threshold, s.cut_frames, state=detector_state)
        judge = SeamJudge(recover=s.cuts == "auto", recent=resume["judge"] if resume else ())
        return self.timer.iterate(STITCH, self._by_shot(resized, detector, judge, resume, on_state))

    @staticmethod
    def resume_points(state: dict) -> tuple[int, int]:
        """(the first input frame a run resumed from `state` is fed, the output frames it had already yielded)."""
        stream = state["stream"]
        return state["shot_start"] + stream["buffer_start"], state["shot_start"] + stream["emitted"]

    def _by_shot(
        self,
        resized: Iterable[np.ndarray],
        detector: ShotDetector,
        judge: SeamJudge,
        resume: dict | None,
        on_state: Callable[[dict], None] | None,
    ) -> Iterator[np.ndarray]:
        s = self.settings
        windows = 0 if resume is None else resume["windows"]
        frames = iter(resized)
        shots = split_shots(frames, detector)
        later: list[tuple[Cut, Iterator[np.ndarray]]] = []

        def continued(stream: StreamState) -> Iterator[np.ndarray]:
            """The resumed shot's frames: those its stream held (the detector saw them before), then the rest of
            the shot, unless the next frame starts a new one."""
            yield from itertools.islice(frames, stream.frames_seen - stream.buffer_start)
            for cut, shot_frames in shots:
                if cut.cause == "resumed":
                    yield from shot_frames
                else:
                    later.append((cut, shot_frames))
                return

        def run_shot(
            offset: int, shot_frames: Iterable[np.ndarray], stream: StreamState | None
        ) -> Iterator[np.ndarray]:
            def report(local: WindowReport) -> None:
                nonlocal windows
                seam_cut = None if local.seam_cut is None else local.seam_cut + offset
                window = Window(local.window.start + offset, local.window.end + offset)
                shifted = replace(local, index=windows, window=window, seam_cut=seam_cut)
                windows += 1
                self._note_seam(shifted, judge)
                if self.on_window is not None:
                    self.on_window(shifted)

            def state(local: StreamState) -> None:
                # A shot's last call is not a resume point: by then the detector has seen the next shot's first
                # frame, which only this run holds.
                if on_state is None or local.scheduler["done"]:
                    return
                detected = detector.state()
                on_state(
                    {
                        "shot_start": offset,
                        "stream": local.as_tree(),
                        "detector": {
                            "next_index": detected.next_index,
                            "shot_start": detected.shot_start,
                            "previous": detected.previous,
                        },
                        "judge": list(judge.recent),
                        "shots": [[cut.index, cut.cause, cut.score] for cut in self.shots.entries],
                        "failed_seams": [dict(seam) for seam in self.failed_seams],
                        "windows": windows,
                    }
                )

            yield from stream_disparity(
                shot_frames,
                self.predict_windows,
                window=s.window,
                overlap=s.overlap,
                stitch=s.stitch,
                batch_windows=s.batch_windows,
                on_window=report,
                seam_judge=judge.judge,
                resume=stream,
                on_state=state,
            )

        if resume is not None:
            stream = StreamState.from_tree(resume["stream"])
            yield from run_shot(resume["shot_start"], continued(stream), stream)
        for cut, shot_frames in itertools.chain(later, shots):
            self.shots.add(cut)
            yield from run_shot(cut.index, shot_frames, None)

    def _note_seam(self, report: WindowReport, judge: SeamJudge) -> None:
        if report.overlap_relative is None or not judge.last_failed:
            return
        self.failed_seams.append(
            {
                "frame": report.window.start,
                "window": list(report.window),
                "residual": report.overlap_relative,
                "median": judge.last_median,
                "recovered": report.seam_cut is not None,
            }
        )
        if report.seam_cut is not None:
            self.shots.add(Cut(report.seam_cut, "seam", report.overlap_relative))

    def run(
        self, frames: Iterable[np.ndarray], size: tuple[int, int], output_size: tuple[int, int] | None = None
    ) -> Iterator[np.ndarray]:
        """Stitched disparity [H, W] float32 at `output_size` (the source size unless given), frame by frame."""
        out = size if output_size is None else output_size
        for frame in self.model_frames(frames, size):
            with self.timer.stage(RESIZE_BACK):
                resized = resize_back(frame, out)
            yield resized


def resize_back(disparity: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One model-size disparity frame [h, w] bilinearly resized to `size` (H, W), float32."""
    return resize_frames(disparity[None], size)[0]
