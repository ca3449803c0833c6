"""One input through the engine into an output folder: disparity.npy, meta.json and the chosen extra formats.

`dvd predict` calls `predict_to_folder` for each input; so can any other front end (a web app, a script). The
folder is written under a temporary name and renamed only when complete, so a failure leaves nothing behind
under the final name.
"""

from __future__ import annotations

import itertools
import json
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from dvd import __version__
from dvd.data.raster import resize_frames
from dvd.errors import DVDError
from dvd.inference.host import Drain, Prefetch
from dvd.inference.pipeline import DVDPipeline
from dvd.inference.profiling import READ, RESIZE_BACK, WRITE, NoTimer
from dvd.inference.video import VideoEngine, VideoSettings, resize_back
from dvd.io.atomic import atomic_directory, foreign_entries
from dvd.io.colormaps import DEFAULT_COLORMAP
from dvd.io.readers import Source
from dvd.io.writers import DEFAULT_FORMATS, DisparityRange, WriterGroup, open_writers

RANGED_FORMATS = {"png16", "mp4", "sbs"}  # 8/16-bit outputs that need a DisparityRange


@dataclass(frozen=True)
class OutputSettings:
    """Which frames are read and what is written: the `dvd predict` flags of the same names."""

    formats: tuple[str, ...] = DEFAULT_FORMATS  # npy first, always
    colormap: str = DEFAULT_COLORMAP
    keep_model_size: bool = False
    max_frames: int | None = None
    stride: int = 1


def predict_to_folder(
    pipe: DVDPipeline,
    source: Source,
    target: Path,
    video: VideoSettings,
    output: OutputSettings,
    progress: Callable[[int], None] | None = None,
    overwrite: bool = False,
    host_threads: bool = True,
    timer: NoTimer | None = None,
) -> int:
    """Write every output of `source` into `target` (atomically); returns the number of frames written.

    `progress` is called with the number of frames written so far, after each frame (from the writing thread). An
    existing `target` is an error (DVDError), unless `overwrite` is set and it is an earlier output of this
    function. `host_threads` decodes and writes in threads beside the model calls (`dvd.inference.host`); False
    runs every stage in the calling thread, with the same outputs, for debugging and comparison. `timer` (a
    `dvd.inference.profiling.StageTimer`, for `dvd bench`) records the read, resize, stitch, resize-back and write
    stages.
    """
    with atomic_directory(target, overwrite, prediction_folder_problem) as staging:
        started = time.perf_counter()
        count, writers_meta, timing = _write_outputs(
            pipe, source, staging, video, output, progress, host_threads, timer or NoTimer()
        )
        meta = _describe(pipe, source, video, output, count, writers_meta, time.perf_counter() - started)
        meta["timing"] = timing
        (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return count


def prediction_folder_problem(folder: Path) -> str | None:
    """None if `folder` was written by `predict_to_folder` (meta.json of kind "disparity" with a dvd_version, and
    only the outputs it lists), else why not: --overwrite replaces only such folders."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "it has no readable meta.json"
    if not isinstance(meta, dict) or meta.get("kind") != "disparity" or "dvd_version" not in meta:
        return "its meta.json is not one of dvd predict's"
    listed = meta.get("outputs") if isinstance(meta.get("outputs"), dict) else {}
    written = [entry.get("file") or entry.get("folder") for entry in listed.values() if isinstance(entry, dict)]
    return foreign_entries(folder, ["meta.json", *written])


def _write_outputs(
    pipe: DVDPipeline,
    source: Source,
    directory: Path,
    video: VideoSettings,
    output: OutputSettings,
    progress: Callable[[int], None] | None,
    threaded: bool,
    timer: NoTimer,
) -> tuple[int, dict, dict]:
    engine = VideoEngine(pipe.predict_windows, video, timer=timer)
    timeline = Timeline(source.output_rate(output.stride))
    timed = timeline.track(timer.iterate(READ, source.timed_frames(output.max_frames, output.stride)))
    out_size = video.model_size(source.size) if output.keep_model_size else source.size
    # One model call's worth of frames may wait on either side of the model: enough for reading and writing to go
    # on while it runs, and a bound that does not depend on the length of the video.
    bound = video.window * video.batch_windows
    with Prefetch(engine.to_model_size(timed, source.size), bound, threaded) as resized:
        disparity = engine.stitched(resized)
        # The 8/16-bit range is fixed from the first `window` stitched frames before anything is written (the
        # second window has been stitched by then, since the first one's overlap frames wait for it). They wait at
        # model size, which bounds the extra memory to one window whatever the source resolution.
        first = list(itertools.islice(disparity, video.window))
        if not first:
            raise DVDError(f"no frames could be decoded from {source.path}: check the file")
        value_range = DisparityRange.fit(np.stack(first)) if RANGED_FORMATS & set(output.formats) else None
        writers = open_writers(
            directory,
            list(output.formats),
            fps=source.output_rate(output.stride),
            value_range=value_range,
            colormap=output.colormap,
            time_base=source.time_base,
        )
        # Side by side needs each RGB frame beside its depth: a second decoder in lockstep costs no buffer.
        rgb = source.frames(output.max_frames, output.stride) if writers.needs_rgb else None
        sink = _FrameSink(writers, timeline, out_size, rgb, progress, timer)
        try:
            with Drain(sink.write, bound, threaded) as written:
                for frame in itertools.chain(first, disparity):
                    written.put(frame)
        finally:
            writers.close()  # after the writing thread has stopped: no frame is written into a closed file
    return sink.count, writers.meta(), timeline.save(directory)


class _FrameSink:
    """The last stage of `_write_outputs`: each stitched frame at its output size, written with its time."""

    def __init__(
        self,
        writers: WriterGroup,
        timeline: Timeline,
        size: tuple[int, int],
        rgb: Iterator[np.ndarray] | None,
        progress: Callable[[int], None] | None,
        timer: NoTimer,
    ) -> None:
        self.writers, self.timeline, self.size, self.rgb, self.progress = writers, timeline, size, rgb, progress
        self.timer = timer
        self.count = 0

    def write(self, frame: np.ndarray) -> None:
        with self.timer.stage(WRITE):
            with self.timer.stage(RESIZE_BACK):
                frame = resize_back(frame, self.size)
            self.writers.write(frame, _next_rgb(self.rgb, self.size), [self.timeline.pop()])
        self.count += 1
        if self.progress is not None:
            self.progress(self.count)


class Timeline:
    """The presentation times of the frames on their way through the engine: each frame's time waits here until
    its disparity is written (the videos keep the source's timeline), and all of them make meta.json's "timing".

    `track` may run in the reading thread and `pop` in the writing one: a deque's append and popleft are atomic,
    and a frame's time is appended before the frame is yielded, so it is always there when the frame is written.
    """

    VARIABLE = 0.25  # an interval this far (relative) from 1 / fps makes the source variable-frame-rate
    FILE = "frame_times.txt"

    def __init__(self, rate: Fraction) -> None:
        self.rate = rate
        self._pending: deque[Fraction] = deque()
        self._seconds = array("d")  # 8 bytes a frame, for the summary and the times file

    def track(self, timed: Iterator[tuple[Fraction, np.ndarray]]) -> Iterator[np.ndarray]:
        for at, frame in timed:
            self._pending.append(at)
            self._seconds.append(float(at))
            yield frame

    def pop(self) -> Fraction:
        """The time of the next frame to be written."""
        return self._pending.popleft()

    def save(self, directory: Path) -> dict:
        """The timing summary for meta.json; a variable frame rate also writes every frame's time to FILE."""
        seconds = np.frombuffer(self._seconds, dtype=np.float64)
        nominal = 1 / float(self.rate)
        variable = bool(np.any(np.abs(np.diff(seconds) - nominal) > self.VARIABLE * nominal))
        span = float(seconds[-1] - seconds[0]) if len(seconds) > 1 else 0.0
        timing = {
            "variable_frame_rate": variable,
            "average_fps": (len(seconds) - 1) / span if span > 0 else float(self.rate),
            "last_frame_time": float(seconds[-1]) if len(seconds) else 0.0,
        }
        if variable:
            lines = (f"{index} {value:.6f}\n" for index, value in enumerate(seconds))
            (directory / self.FILE).write_text("# frame seconds\n" + "".join(lines), encoding="utf-8")
            timing["frame_times"] = self.FILE
        return timing


def _next_rgb(rgb: Iterator[np.ndarray] | None, size: tuple[int, int]) -> np.ndarray | None:
    if rgb is None:
        return None
    frame = next(rgb)
    return frame if frame.shape[:2] == tuple(size) else resize_frames(frame[None], size)[0]


def _describe(
    pipe: DVDPipeline,
    source: Source,
    video: VideoSettings,
    output: OutputSettings,
    count: int,
    outputs: dict,
    seconds: float,
) -> dict:
    """meta.json: what was computed, from what, and how to read every output."""
    rate = source.output_rate(output.stride)
    model_hw = video.model_size(source.size)
    damage = {"damage": source.damage} if source.damage else {}
    return {
        "kind": "disparity",
        "values": "affine-invariant disparity: larger = nearer; scale and shift unknown",
        "num_frames": count,
        "num_frames_expected": source.frame_count(output.max_frames, output.stride),
        "damaged": bool(source.damage),
        **damage,
        "fps": float(rate),
        "fps_fraction": f"{rate.numerator}/{rate.denominator}",
        "source_size": list(source.size),
        "model_size": list(model_hw),
        "output_size": list(model_hw if output.keep_model_size else source.size),
        "max_frames": output.max_frames,
        "stride": output.stride,
        **video.as_meta(),
        "weights": pipe.weights_id,
        "device": str(pipe.model.device),
        "dtype": str(pipe.model.dtype).removeprefix("torch."),
        "input": source.describe(),
        "outputs": outputs,
        "seconds": round(seconds, 3),
        "dvd_version": __version__,
    }
