"""One input through the engine into an output folder: disparity.npy, meta.json and the chosen extra formats.

`dvd predict` calls `predict_to_folder` for each input; so can any other front end (a web app, a script). The
folder is written under a temporary name and renamed only when complete, so a failure leaves nothing behind
under the final name.
"""

from __future__ import annotations

import itertools
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path

import numpy as np

from dvd import __version__
from dvd.data.raster import resize_frames
from dvd.engine.stages import READ, RESIZE_BACK, WRITE, NoTimer
from dvd.engine.stitch import get_stitch_preset
from dvd.engine.video import VideoEngine, VideoSettings, resize_back
from dvd.errors import DVDError
from dvd.io.atomic import atomic_directory
from dvd.io.colormaps import DEFAULT_COLORMAP, colormap_table
from dvd.io.readers import Source
from dvd.io.writers import DEFAULT_FORMATS, DisparityRange, NpyFrames, NpyWriter, WriterGroup, open_writers
from dvd.jobs.colour_range import RangeSample
from dvd.jobs.finished import metric_pass_keeping_disparity, prediction_folder_problem, write_meta
from dvd.jobs.host import POLL_SECONDS, Drain, Prefetch, serial_blas
from dvd.jobs.resume import STATE_FILE, Checkpoints, prepare_checkpoints, run_fingerprint
from dvd.metric.settings import MetricSettings
from dvd.options import DEFAULT_COLOUR_RANGE, GLOBAL_LAG_WINDOWS
from dvd.pipeline.dvd_pipeline import DVDPipeline

RANGED_FORMATS = {"png16", "mp4", "sbs"}  # 8/16-bit outputs that need a DisparityRange
COLOUR_RANGE_RULES = {
    "video": "1st-99th percentiles of the whole video's disparity (a fixed subsample of its frames and pixels), "
    "widened by 10% each side; png16/mp4/sbs written in a second pass over disparity.npy",
    "first-window": "1st-99th percentiles of the first window's stitched disparity, widened by 10% each side; "
    "later values beyond it are clipped",
}


@dataclass(frozen=True)
class OutputSettings:
    """Which frames are read and what is written: the `dvd predict` flags of the same names."""

    formats: tuple[str, ...] = DEFAULT_FORMATS  # npy first, always
    colormap: str = DEFAULT_COLORMAP
    keep_model_size: bool = False
    max_frames: int | None = None
    stride: int = 1
    colour_range: str = DEFAULT_COLOUR_RANGE  # "video": a second pass over disparity.npy; "first-window" streams


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
    metric: MetricSettings | None = None,
    resume: bool = False,
    resumable: bool = False,
) -> int:
    """Write every output of `source` into `target` (atomically); returns the number of frames written.

    `progress` is called with the number of frames written so far, after each frame (from the writing thread). An
    existing `target` is an error (DVDError), unless `overwrite` is set and it is an earlier output of this
    function. `host_threads` decodes and writes in threads beside the model calls (`dvd.jobs.host`); False
    runs every stage in the calling thread, with the same outputs, for debugging and comparison. `timer` (a
    `dvd.bench.profiling.StageTimer`, for `dvd bench`) records the read, resize, stitch, resize-back and write
    stages. `metric` (`dvd.metric.settings.MetricSettings`) adds depth_m.npy, the intrinsics and PLY point clouds
    once the disparity is complete (`dvd.metric.post_pass`); if that pass fails, the disparity output is kept all
    the same (meta.json says `metric_failed` and why) and the pass's error is raised once it is in place:
    `dvd.jobs.finished.add_metric` retries only the metric pass.

    `resumable` (what `dvd predict` does) saves a resume point after each model call (`dvd.jobs.resume`), and
    an interrupted run (Ctrl-C, SIGTERM, a crash, kill -9, power loss) then leaves its partial output under a
    hidden staging name beside `target`; `resume` goes on from its last completed model call, with files
    bit-identical to an uninterrupted run's (DVDError if the settings, input or weights differ). Without `resume`
    such a partial output is refused unless `overwrite` discards it. Without `resumable` (the default) an
    interruption removes the unfinished output, and no time goes into resume points.
    """
    video = pipe.fit_settings(video.for_input(source.kind))
    if resume and not resumable_outputs(output):
        raise DVDError(
            "--resume cannot go on with 8/16-bit outputs written as frames arrive (--colour-range first-window with "
            "png16/mp4/sbs): use --colour-range video, or run without --resume"
        )
    resumable = (resumable or resume) and resumable_outputs(output)
    fingerprint = run_fingerprint(pipe, source, video, output) if resumable else None
    checkpoints = prepare_checkpoints(target, fingerprint, resume, overwrite)
    with (
        serial_blas(),  # the host stages' BLAS calls are small: idle BLAS threads would only spin (dvd.jobs.host)
        atomic_directory(
            target,
            overwrite,
            prediction_folder_problem,
            resumable=STATE_FILE if checkpoints.enabled else None,
            staging=checkpoints.folder,
        ) as staging,
    ):
        started = time.perf_counter()
        engine = VideoEngine(pipe.predict_windows, video, timer=timer or NoTimer())
        count, writers_meta, timing = _write_outputs(
            engine, source, staging, output, progress, host_threads, checkpoints
        )
        meta = _describe(pipe, source, video, output, count, writers_meta, time.perf_counter() - started)
        meta["timing"] = timing
        meta["shots"] = engine.shots.as_meta(count)
        meta["failed_seams"] = engine.failed_seams
        if RANGED_FORMATS & set(output.formats):
            meta["colour_range"] = {"rule": output.colour_range, "description": COLOUR_RANGE_RULES[output.colour_range]}
        # depth_m.npy, PLY (dvd.metric); a failure keeps the disparity, and is raised once the folder is in place.
        meta, metric_failure = metric_pass_keeping_disparity(metric, staging, source, output, meta)
        write_meta(staging, meta)
    if metric_failure is not None:
        raise metric_failure.raised(target)
    return count


def resumable_outputs(output: OutputSettings) -> bool:
    """Whether a run can checkpoint: every output it streams can go on after an interruption (npy and exr can;
    the videos' encoders cannot, and under the first-window rule they stream)."""
    return output.colour_range != "first-window" or not RANGED_FORMATS & set(output.formats)


def _write_outputs(
    engine: VideoEngine,
    source: Source,
    directory: Path,
    output: OutputSettings,
    progress: Callable[[int], None] | None,
    threaded: bool,
    checkpoints: Checkpoints,
) -> tuple[int, dict, dict]:
    video, timer = engine.settings, engine.timer
    # A resumed run decodes every frame again (for its time), resizes and predicts only from the engine's resume
    # point on, and writes after the frames already on disk.
    start, written = VideoEngine.resume_points(checkpoints.engine) if checkpoints.resumed else (0, 0)
    # With the whole-video rule only the raw outputs stream; the 8/16-bit ones follow from disparity.npy.
    ranged = [name for name in output.formats if name in RANGED_FORMATS]
    streamed = [name for name in output.formats if output.colour_range == "first-window" or name not in ranged]
    second_pass = [name for name in ranged if name not in streamed]
    timeline = Timeline(source.output_rate(output.stride), written)
    timed = timeline.track(timer.iterate(READ, source.timed_pixels(output.max_frames, output.stride)))
    out_size = video.model_size(source.size) if output.keep_model_size else source.size
    # One model call's worth of frames may wait on either side of the model: enough for reading and writing to go
    # on while it runs, and a bound that does not depend on the length of the video. The writing side also takes
    # the windows a global stitcher releases at once when it finishes, frames in memory either way: the model's
    # thread then goes on to the second pass at once instead of waiting for the queue to drain.
    bound = video.window * video.batch_windows
    lag = GLOBAL_LAG_WINDOWS if get_stitch_preset(video.stitch).joint else 0
    resume_points: deque[_ResumePoint] = deque()
    with Prefetch(engine.to_model_size(itertools.islice(timed, start, None), source.size), bound, threaded) as resized:
        if ranged:  # its table comes from matplotlib (~0.3 s to import): loaded while the first window is read
            colormap_table(output.colormap)
        on_state = (lambda state: resume_points.append(_ResumePoint(state))) if checkpoints.enabled else None
        disparity = engine.stitched(resized, checkpoints.engine, on_state)
        # Under the first-window rule the 8/16-bit range is fixed from the first `window` stitched frames before
        # anything is written (the second window has been stitched by then, since the first one's overlap frames
        # wait for it). They wait at model size, which bounds the extra memory to one window whatever the source
        # resolution. Otherwise writing starts with the first frame, while the model still runs.
        needs_range = bool(RANGED_FORMATS & set(streamed))
        first = list(itertools.islice(disparity, video.window if needs_range else 1))
        if not first and not written:
            raise DVDError(f"no frames could be decoded from {source.path}: check the file")
        value_range = DisparityRange.fit(np.stack(first)) if needs_range else None
        writers = open_writers(
            directory,
            streamed,
            fps=source.output_rate(output.stride),
            value_range=value_range,
            colormap=output.colormap,
            time_base=source.time_base,
            resume_at=written,
        )
        # The whole-video range, sampled from the stitched frames on their way to the writing thread (and, on
        # resume, from the frames already on disk): known once the last frame is stitched. A sampled frame is
        # resized back here and again by the writer: handing the writer the resized frame instead would queue
        # frames at the source size (up to 6x the memory for 4K), and only every 2^k-th frame is sampled (about
        # 260 + 130 log2(T / 256) resizes for T frames).
        sample = _resumed_sample(directory, out_size, written) if second_pass else None
        # Side by side needs each RGB frame beside its depth: a second decoder in lockstep costs no buffer.
        rgb = source.frames(output.max_frames, output.stride) if writers.needs_rgb else None
        sink = _FrameSink(writers, timeline, out_size, rgb, progress, timer, directory, checkpoints, written)
        listed_ranged: dict = {}
        try:
            with Drain(sink.write, bound + lag * video.window, threaded) as drain:
                for index, frame in enumerate(itertools.chain(first, disparity), start=written):
                    while resume_points:  # each one before the frames stitched after it
                        drain.put(resume_points.popleft())
                    if sample is not None and sample.wants(index):
                        sample.add(index, resize_back(frame, out_size))
                    drain.put(frame)
                if sample is not None:
                    # The second pass follows the writing thread through disparity.npy, frame by frame, instead of
                    # waiting for it to finish: the encoder's work overlaps the writing of the last frames.
                    times = timeline.seconds()
                    value_range = sample.range(len(times))
                    listed_ranged = _write_ranged(
                        directory, second_pass, source, output, times, value_range, timer, partial(sink.wait, drain)
                    )
        finally:
            writers.close()  # after the writing thread has stopped: no frame is written into a closed file
    listed = {**writers.meta(), **listed_ranged}
    outputs = {name: listed[name] for name in output.formats}
    return sink.count, outputs, timeline.save(directory)


def _resumed_sample(directory: Path, size: tuple[int, int], written: int) -> RangeSample:
    """A `RangeSample` of frames at output `size` that has seen the `written` frames of disparity.npy."""
    sample = RangeSample(size)
    if written:
        with NpyFrames(directory / NpyWriter.filename, frames=written) as disparity:
            for index in range(written):
                if sample.wants(index):
                    sample.add(index, disparity[index])
    return sample


def _write_ranged(
    directory: Path,
    formats: list[str],
    source: Source,
    output: OutputSettings,
    times: np.ndarray,
    value_range: DisparityRange,
    timer: NoTimer,
    wait_written: Callable[[int], None],
) -> dict:
    """The second pass of the whole-video rule: png16/mp4/sbs from disparity.npy, frame by frame, each read once
    `wait_written(count)` has returned for it; sbs decodes the source's RGB again, in lockstep. `times` are the
    frames' seconds (all of them: the count)."""
    # Plain reads, not a memory map: a map's pages stay in the RSS, which would grow by the whole file.
    wait_written(1)  # the file and its header exist
    disparity = NpyFrames(directory / NpyWriter.filename, frames=len(times))
    writers = open_writers(
        directory,
        formats,
        fps=source.output_rate(output.stride),
        value_range=value_range,
        colormap=output.colormap,
        time_base=source.time_base,
    )
    size = disparity.shape[1:]
    rgb = source.frames(output.max_frames, output.stride) if writers.needs_rgb else None
    try:
        for index, seconds in enumerate(times):
            wait_written(index + 1)
            with timer.stage(WRITE):
                writers.write(disparity[index], _next_rgb(rgb, size), [Fraction(seconds)])
    finally:
        writers.close()
        disparity.close()
    return writers.meta()


@dataclass(frozen=True)
class _ResumePoint:
    """The engine's state after a model call, on its way to the writing thread with the frames before it."""

    state: dict


class _FrameSink:
    """The last stage of `_write_outputs`: each stitched frame at its output size, written with its time; and
    the engine's resume points, each saved once the frames before it are on disk."""

    def __init__(
        self,
        writers: WriterGroup,
        timeline: Timeline,
        size: tuple[int, int],
        rgb: Iterator[np.ndarray] | None,
        progress: Callable[[int], None] | None,
        timer: NoTimer,
        directory: Path,
        checkpoints: Checkpoints,
        written: int = 0,
    ) -> None:
        self.writers, self.timeline, self.size, self.rgb, self.progress = writers, timeline, size, rgb, progress
        self.timer = timer
        self.directory, self.checkpoints = directory, checkpoints
        self.count = written
        self._counted = threading.Condition()  # notified as `count` grows, for `wait`
        self._waiting: deque[_ResumePoint] = deque()  # resume points ahead of their frames (the first window's)
        if written and progress is not None:
            progress(written)

    def write(self, item: np.ndarray | _ResumePoint) -> None:
        if isinstance(item, _ResumePoint):
            self._waiting.append(item)
        else:
            self._write_frame(item)
        while self._waiting and VideoEngine.resume_points(self._waiting[0].state)[1] <= self.count:
            state = self._waiting.popleft().state
            self.checkpoints.save(self.directory, self.writers, state, VideoEngine.resume_points(state)[1])

    def _write_frame(self, frame: np.ndarray) -> None:
        with self.timer.stage(WRITE):
            with self.timer.stage(RESIZE_BACK):
                frame = resize_back(frame, self.size)
            self.writers.write(frame, _next_rgb(self.rgb, self.size), [self.timeline.pop()])
        with self._counted:
            self.count += 1
            self._counted.notify_all()
        if self.progress is not None:
            self.progress(self.count)

    def wait(self, drain: Drain, count: int) -> None:
        """Return once `count` frames are written (from another thread than `drain`'s, which runs `write`); the
        writing thread's error if it failed first."""
        with self._counted:
            while self.count < count:
                drain.check()
                self._counted.wait(POLL_SECONDS)


class Timeline:
    """The presentation times of the frames on their way through the engine: each frame's time waits here until
    its disparity is written (the videos keep the source's timeline), and all of them make meta.json's "timing".

    `track` may run in the reading thread and `pop` in the writing one: a deque's append and popleft are atomic,
    and a frame's time is appended before the frame is yielded, so it is always there when the frame is written.
    """

    VARIABLE = 0.25  # an interval this far (relative) from 1 / fps makes the source variable-frame-rate
    FILE = "frame_times.txt"

    def __init__(self, rate: Fraction, written: int = 0) -> None:
        self.rate = rate
        self.written = written  # frames already written by the run this one resumes: their times are not popped
        self._pending: deque[Fraction] = deque()
        self._seconds = array("d")  # 8 bytes a frame, for the summary and the times file

    def track(self, timed: Iterator[tuple[Fraction, np.ndarray]]) -> Iterator[np.ndarray]:
        for at, frame in timed:
            if len(self._seconds) >= self.written:
                self._pending.append(at)
            self._seconds.append(float(at))
            yield frame

    def pop(self) -> Fraction:
        """The time of the next frame to be written."""
        return self._pending.popleft()

    def seconds(self) -> np.ndarray:
        """Every tracked frame's time in seconds, in order (float64; exact to far below one tick of any time base)."""
        return np.frombuffer(self._seconds, dtype=np.float64)

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
        "backbone": pipe.model.family,
        **pipe.sampling_meta(),
        "device": str(pipe.model.device),
        "dtype": str(pipe.model.dtype).removeprefix("torch."),
        "input": source.describe(),
        "outputs": outputs,
        "seconds": round(seconds, 3),
        "dvd_version": __version__,
    }
