"""The jobs behind `dvd app`: one upload through the same engine as `dvd predict`, with progress, Cancel, limits
and a working folder that is removed when the job fails, is cancelled or grows old.

Nothing here imports Gradio: the page (`dvd.app.page`) only turns form values into a `JobRequest` and shows a
`DepthJob`'s state.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dvd.app.workspace import AppLimits, Workspace
from dvd.data.naming import natural_key
from dvd.engine.stream import validate_stream_settings
from dvd.engine.video import VideoSettings
from dvd.engine.windows import window_schedule
from dvd.errors import DVDError
from dvd.io.colormaps import colorize
from dvd.io.readers import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, Source, check_pixel_count, open_source
from dvd.jobs.batch import PredictSettings, check_model_sides, check_source, parse_formats
from dvd.jobs.outputs import OutputSettings, predict_to_folder
from dvd.options import (
    DEFAULT_COLORMAP,
    DEFAULT_FORMATS,
    DEFAULT_IMAGE_FPS,
    DEFAULT_MIN_HEIGHT,
    DEFAULT_MIN_WIDTH,
    DEFAULT_OVERLAP,
    DEFAULT_STITCH,
    DEFAULT_WINDOW,
)

if TYPE_CHECKING:
    from dvd.pipeline.dvd_pipeline import DVDPipeline

ZIP_EXTENSION = ".zip"
FOLDER_DOWNLOADS = ("png16", "exr")  # formats written as a folder of frames, offered as one zip each
MB = 1024 * 1024


class JobCancelled(Exception):
    """Raised inside a running job when Cancel was pressed; the engine stops and removes its unfinished output."""


@dataclass(frozen=True)
class JobRequest:
    """The page's settings, named and defaulted as the `dvd predict` flags (`save` is --save as a list; `fps` applies
    to images and zips of frames only, as --fps does, and is ignored for videos, which keep their own timing)."""

    height: int = DEFAULT_MIN_HEIGHT
    width: int = DEFAULT_MIN_WIDTH
    window: int = DEFAULT_WINDOW
    overlap: int = DEFAULT_OVERLAP
    stitch: str = DEFAULT_STITCH
    save: tuple[str, ...] = DEFAULT_FORMATS
    colormap: str = DEFAULT_COLORMAP
    max_frames: int | None = None
    stride: int = 1
    fps: str = str(DEFAULT_IMAGE_FPS)

    def settings(self, source_path: Path, output: Path, video_input: bool) -> PredictSettings:
        """The `dvd predict` settings of this request for one input, checked as `dvd predict` checks its flags."""
        video = VideoSettings(
            height=_whole(self.height, "height"),
            width=_whole(self.width, "width"),
            window=_whole(self.window, "window"),
            overlap=_whole(self.overlap, "overlap"),
            stitch=self.stitch,
        )
        video.validate()
        check_model_sides(video.height, video.width)
        outputs = OutputSettings(
            formats=tuple(parse_formats(",".join(self.save))),
            colormap=self.colormap,
            max_frames=None if self.max_frames is None else _whole(self.max_frames, "max frames"),
            stride=_whole(self.stride, "stride"),
        )
        return PredictSettings(
            inputs=(str(source_path),),
            output=output,
            video=video,
            outputs=outputs,
            fps=None if video_input else self.fps,
        )


def _whole(value: float, name: str) -> int:
    """A form number as an int: 12.0 is 12, 12.5 is refused (Gradio hands numbers over as floats)."""
    if value is None or float(value) != int(value):
        raise DVDError(f"{name} must be a whole number, got {value}")
    return int(value)


@dataclass
class JobResult:
    """A finished job's files: the output folder of `predict_to_folder` and the downloads made from it."""

    folder: Path
    frames: int
    seconds: float
    downloads: list[Path]

    @property
    def npy(self) -> Path:
        return self.folder / "disparity.npy"

    def video(self, name: str) -> Path | None:
        path = self.folder / name
        return path if path.is_file() else None


@dataclass
class DepthJob:
    """One upload's way through the engine; its fields are read by the page while the job's thread writes them."""

    id: str
    folder: Path  # the job's working folder: the extracted input and the outputs; removed unless the job succeeds
    state: str = "queued"  # queued -> running -> done | failed | cancelled
    message: str = ""
    frames_total: int = 0
    frames_written: int = 0
    windows_total: int = 0
    windows_done: int = 0
    result: JobResult | None = None
    created: float = field(default_factory=time.time)
    started: bool = False
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def active(self) -> bool:
        return not self.finished.is_set()

    def check_cancel(self) -> None:
        if self.cancel_requested.is_set():
            raise JobCancelled


class JobRunner:
    """Runs jobs on one loaded pipeline, one at a time (a second one waits for the model); Cancel stops a job before
    its next window (or its next written frame) and removes everything it wrote."""

    def __init__(self, pipe: DVDPipeline, workspace: Workspace, limits: AppLimits) -> None:
        self.pipe = pipe
        self.workspace = workspace
        self.limits = limits
        self._model = threading.Lock()
        self._jobs: dict[str, DepthJob] = {}
        self._jobs_lock = threading.Lock()

    def new_job(self) -> DepthJob:
        """A queued job; Cancel finds it by `id` while it waits and while it runs."""
        job_id, folder = self.workspace.new_job_folder()
        job = DepthJob(job_id, folder)
        with self._jobs_lock:
            self._jobs[job_id] = job
        return job

    def job(self, job_id: str | None) -> DepthJob | None:
        with self._jobs_lock:
            return self._jobs.get(job_id or "")

    def cancel(self, job_id: str | None) -> DepthJob | None:
        job = self.job(job_id)
        if job is not None:
            job.cancel_requested.set()
        return job

    def start(self, job: DepthJob, upload: Path | None, request: JobRequest) -> threading.Thread:
        job.started = True
        thread = threading.Thread(target=self._run, args=(job, upload, request), name=f"dvd-job-{job.id}", daemon=True)
        thread.start()
        return thread

    def forget(self, job: DepthJob) -> None:
        with self._jobs_lock:
            self._jobs.pop(job.id, None)

    def sweep(self) -> list[Path]:
        """Delete old job folders (`Workspace.sweep`), and forget old jobs that were queued but never started (their
        page was closed before their turn)."""
        limit = time.time() - self.workspace.keep_seconds
        with self._jobs_lock:
            for job in [job for job in self._jobs.values() if not job.started and job.created < limit]:
                del self._jobs[job.id]
            busy = [job.folder for job in self._jobs.values() if job.active]
        return self.workspace.sweep(busy=busy)

    def _run(self, job: DepthJob, upload: Path | None, request: JobRequest) -> None:
        try:
            job.folder.mkdir()
            job.check_cancel()
            source, settings = self._open(job, upload, request)
            with self._model:  # one job at a time on the model, also when an abandoned one is still stopping
                job.check_cancel()
                job.state = "running"
                job.result = self._predict(job, source, settings)
            job.state, job.message = "done", f"{job.result.frames} frames in {job.result.seconds:.1f} s"
        except JobCancelled:
            job.state, job.message = "cancelled", _cancelled_message(job)
        except DVDError as error:
            job.state, job.message = "failed", " ".join(str(error).split())
        except OSError as error:  # a full disk, a permission: as `dvd predict` says it
            where = f" ({error.filename})" if error.filename else ""
            job.state, job.message = "failed", f"{error.strerror or error}{where}; check the app's disk space"
        except Exception as error:  # noqa: BLE001 - a bug: one line in the page, the traceback in the server's log
            traceback.print_exc()
            job.state, job.message = "failed", f"internal error ({type(error).__name__}: {error}); please report it"
        finally:
            if job.state != "done":
                shutil.rmtree(job.folder, ignore_errors=True)
            job.finished.set()

    def _open(self, job: DepthJob, upload: Path | None, request: JobRequest) -> tuple[Source, PredictSettings]:
        """The upload opened and checked against the settings and the limits, before the model is touched."""
        path = prepare_input(upload, job.folder / "input", self.limits)
        video_input = path.suffix.lower() in VIDEO_EXTENSIONS
        settings = request.settings(path, job.folder / "output", video_input)
        source = open_source(path, image_fps=settings.fps or DEFAULT_IMAGE_FPS)  # refuses images beyond the limit
        check_pixel_count(upload.name, source.size)  # videos and EXR are sized without Pillow
        frames = source.frame_count(settings.outputs.max_frames, settings.outputs.stride)
        check_source(source, settings)
        seconds = frames / float(source.output_rate(settings.outputs.stride))
        if seconds > self.limits.max_seconds:
            raise DVDError(
                f"{upload.name} is {seconds:.1f} s long (with these frame settings) and this app takes at most "
                f"{self.limits.max_seconds:g} s per job (dvd app --max-seconds): set a frame limit or trim the video"
            )
        video = settings.video
        preset = validate_stream_settings(video.window, video.overlap, video.stitch, video.batch_windows)
        job.frames_total = frames
        job.windows_total = len(window_schedule(frames, video.window, video.overlap, preset.schedule))
        return source, settings

    def _predict(self, job: DepthJob, source: Source, settings: PredictSettings) -> JobResult:
        started = time.perf_counter()
        target = settings.output / source.name
        frames = predict_to_folder(
            _GatedPipeline(self.pipe, job),
            source,
            target,
            settings.video,
            settings.outputs,
            progress=lambda written: _frame_written(job, written),
        )
        downloads = [target / "disparity.npy", target / "meta.json"]
        downloads += [target / name for name in ("depth_vis.mp4", "depth_sbs.mp4") if (target / name).is_file()]
        for name in FOLDER_DOWNLOADS:
            folder = target / f"depth_{name}"
            if folder.is_dir():
                job.check_cancel()
                downloads.append(zip_folder(folder, job.folder / f"{source.name}_depth_{name}.zip"))
        return JobResult(target, frames, time.perf_counter() - started, downloads)


def _frame_written(job: DepthJob, written: int) -> None:
    """`predict_to_folder`'s progress callback (in its writing thread): raising here stops the run too."""
    job.frames_written = written
    job.check_cancel()


def _cancelled_message(job: DepthJob) -> str:
    if job.windows_done == 0 and job.frames_written == 0:
        return "stopped before any window ran; nothing was kept"
    return (
        f"stopped after {job.windows_done} of {job.windows_total} windows "
        f"({job.frames_written} frames written); nothing was kept"
    )


class _GatedPipeline:
    """The loaded pipeline as `predict_to_folder` sees it for one job: every attribute is the pipeline's, except that
    each model call first looks whether Cancel was pressed (so the job stops between windows, before spending
    another model call) and afterwards counts its windows for the progress display."""

    def __init__(self, pipe: DVDPipeline, job: DepthJob) -> None:
        self._pipe = pipe
        self._job = job

    def __getattr__(self, name: str) -> object:
        return getattr(self._pipe, name)

    def predict_windows(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        self._job.check_cancel()
        outputs = self._pipe.predict_windows(windows)
        self._job.windows_done += len(windows)
        return outputs


def prepare_input(upload: Path | None, folder: Path, limits: AppLimits) -> Path:
    """The path to open for an uploaded file: a video or an image as it is, a zip of frames extracted into
    `folder` (images only, flattened, names kept); DVDError for anything else, or beyond the upload limit."""
    if upload is None:
        raise DVDError("no file given: upload a video, an image or a zip of frames, or pick an example")
    upload = Path(upload)
    if not upload.is_file():
        raise DVDError(f"the upload {upload.name} is gone (deleted after the app's keep time?): upload it again")
    limit = limits.max_upload_mb * MB
    if upload.stat().st_size > limit:
        raise DVDError(
            f"{upload.name} is {upload.stat().st_size / MB:.0f} MB; this app takes at most {limits.max_upload_mb:g} MB "
            "(dvd app --max-upload-mb): upload a shorter or smaller file"
        )
    suffix = upload.suffix.lower()
    if suffix in VIDEO_EXTENSIONS or suffix in IMAGE_EXTENSIONS:
        return upload
    if suffix == ZIP_EXTENSION:
        return extract_frames(upload, folder / upload.stem, limit)
    raise DVDError(
        f"{upload.name} is not a video, an image or a zip of frames: upload a video "
        f"({'/'.join(VIDEO_EXTENSIONS)}), an image ({'/'.join(IMAGE_EXTENSIONS)}) or a .zip of images"
    )


def extract_frames(archive: Path, folder: Path, max_bytes: float) -> Path:
    """The images of a zip in `folder`, by their file names (sub-folders flattened; the natural order of the
    names is the frame order); refuses archives without images, with two images of one name, or that unpack to
    more than `max_bytes`."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = [
                info
                for info in bundle.infolist()
                if not info.is_dir()
                and Path(info.filename).suffix.lower() in IMAGE_EXTENSIONS
                and not Path(info.filename).name.startswith(".")  # macOS "._name" resource forks
            ]
            if not members:
                raise DVDError(f"{archive.name} holds no images ({'/'.join(IMAGE_EXTENSIONS)}): zip the frames")
            if sum(info.file_size for info in members) > max_bytes:
                raise DVDError(
                    f"{archive.name} unpacks to more than {max_bytes / MB:g} MB (dvd app --max-upload-mb): "
                    "send fewer or smaller frames"
                )
            names = [Path(info.filename).name for info in members]
            if len(set(names)) < len(names):
                raise DVDError(f"{archive.name} holds two images of the same name in different folders: zip one folder")
            folder.mkdir(parents=True)
            for info, name in zip(members, names):
                # Only the base name is used, so no member can write outside `folder` ("../x.png", "/etc/x.png").
                with bundle.open(info) as packed, open(folder / name, "wb") as unpacked:
                    shutil.copyfileobj(packed, unpacked)
    except zipfile.BadZipFile:
        raise DVDError(f"{archive.name} is not a readable zip file: check the file") from None
    return folder


def zip_folder(folder: Path, archive: Path) -> Path:
    """`folder`'s files (frames in natural order) in one zip, stored without recompression (PNG and EXR are already
    compressed); written under a temporary name and renamed when complete."""
    partial = archive.with_name(f".{archive.name}.partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as bundle:
        for file in sorted(folder.iterdir(), key=lambda path: natural_key(path.name)):
            bundle.write(file, f"{folder.name}/{file.name}")
    os.replace(partial, archive)
    return archive


@dataclass(frozen=True)
class FrameView:
    """One frame of a finished job, for the frame slider: its colour-mapped depth and its value range."""

    image: np.ndarray  # uint8 [H, W, 3]
    index: int
    count: int
    low: float
    high: float

    def describe(self) -> str:
        return (
            f"frame {self.index + 1} of {self.count}: disparity {self.low:.4g} to {self.high:.4g} "
            "(affine-invariant, larger = nearer)"
        )


def frame_view(npy: Path, index: int, colormap: str = DEFAULT_COLORMAP) -> FrameView:
    """Frame `index` of a `disparity.npy`, read through a memory map (one frame in memory), coloured with the
    range of the job's videos (meta.json) when it has one, else with the frame's own."""
    frames = np.load(npy, mmap_mode="r")
    index = min(max(int(index), 0), len(frames) - 1)
    frame = np.asarray(frames[index], dtype=np.float32)
    finite = frame[np.isfinite(frame)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    lo, hi = _video_range(npy.parent / "meta.json") or (low, high)
    span = hi - lo if hi > lo else 1.0
    return FrameView(colorize(np.nan_to_num((frame - lo) / span), colormap), index, len(frames), low, high)


def _video_range(meta_path: Path) -> tuple[float, float] | None:
    """The (lo, hi) that the job's 8/16-bit outputs were mapped with, if it wrote any."""
    try:
        outputs = json.loads(meta_path.read_text(encoding="utf-8")).get("outputs", {})
    except (OSError, ValueError):
        return None
    for entry in outputs.values():
        if isinstance(entry, dict) and "lo" in entry and "hi" in entry:
            return float(entry["lo"]), float(entry["hi"])
    return None
