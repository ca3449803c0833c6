"""`dvd bench`: the real pipeline and engine on one input, timed per stage, with each optimisation switchable.

The run is `predict_to_folder`, as `dvd predict` runs it, on random weights of a preset size (or given weights)
and a synthetic clip (or a given input). Nothing is re-implemented here; the stages are timed where they happen:

  read         decoding the input (the source's frame iterator, `predict_to_folder`)
  resize       frames to the model size (`VideoEngine.to_model_size`)
  transfer     window -> tensor, padding to the frame rule, to the device and back (`DVDPipeline.predict_windows`)
  vae_encode, dit, vae_decode                     the model's own stages (`DVDModel.forward`)
  stitch       the streaming stitcher's own time (`stream_disparity`, less the stages it calls)
  resize_back  disparity back to the output size (`predict_to_folder`'s writing stage)
  write        the writers: colour maps, encoding, files

FLOPs are counted once, on a meta copy of the model for one window (`dvd.bench.profiling.count_model_flops`),
not in the timed run, which follows one untimed warm-up call. With `--compile` the warm-up is one whole untimed
run instead: it compiles every shape the timed run meets (the last window is usually shorter, and a new shape
recompiles), so the timed run is the steady state.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from dvd.bench.profiling import StageTimer, count_model_flops
from dvd.engine.allocator import ArrayPool, keep_heap_flat
from dvd.engine.stages import READ, RESIZE, RESIZE_BACK, STITCH, TRANSFER, WRITE, NoTimer
from dvd.engine.video import VideoSettings
from dvd.errors import DVDError
from dvd.io.readers import Source, open_source
from dvd.io.writers import write_rgb_video
from dvd.jobs.outputs import OutputSettings, predict_to_folder
from dvd.model.backbone import FrameRule
from dvd.model.dvd_model import MODEL_STAGES
from dvd.options import DEFAULT_BENCH_PRESET, DEFAULT_FORMATS, DEFAULT_IMAGE_FPS
from dvd.pipeline.dvd_pipeline import DVDPipeline, resolve_device, resolve_dtype
from dvd.weights.presets import random_model

STAGES = (READ, RESIZE, TRANSFER, *MODEL_STAGES, STITCH, RESIZE_BACK, WRITE)
SYNTHETIC_NAME = "synthetic"


@dataclass(frozen=True)
class BenchSettings:
    """What `dvd bench` runs: the flags of the same names."""

    video: VideoSettings
    preset: str | None = None  # None: DEFAULT_BENCH_PRESET, unless `weights` are given
    weights: str | None = None
    input: Path | None = None  # None: a synthetic clip
    frames: int | None = None  # None: two windows of the synthetic clip, or all of the input
    source_size: tuple[int, int] | None = None  # of the synthetic clip; None: the model size (height x width)
    formats: tuple[str, ...] = DEFAULT_FORMATS
    output: Path | None = None  # None: a temporary folder, removed afterwards
    device: str | None = None
    dtype: str | None = None
    threads: int | None = None  # torch's CPU threads; None: torch's default
    fold: bool = True
    precompute_time: bool = True
    compile: bool = False
    attention_backend: str | None = None
    tiled_vae: bool = False
    channels_last: bool = False
    cudnn_benchmark: bool = False
    host_only: bool = False

    def validate(self) -> None:
        """DVDError for settings that cannot work, before anything is built."""
        if self.weights is not None and self.preset is not None:
            raise DVDError("--weights and --preset both choose the model: give one of them")
        if self.threads is not None and self.threads < 1:
            raise DVDError(f"--threads must be at least 1, got {self.threads}")
        if self.frames is not None and self.frames < 1:
            raise DVDError(f"--frames must be at least 1, got {self.frames}")
        if self.source_size is not None and (min(self.source_size) < 2 or any(side % 2 for side in self.source_size)):
            raise DVDError(f"the synthetic clip's sides must be even and positive (H.264), got {self.source_size}")
        self.video.validate()

    @property
    def model_name(self) -> str:
        if self.host_only:
            return "host-only stand-in (no model runs)"
        if self.weights is not None:
            return self.weights
        return f"preset {self.preset or DEFAULT_BENCH_PRESET}, random weights"


def run_bench(settings: BenchSettings) -> dict:
    """Build, warm up, run once timed; the report `dvd bench --json` prints (see `report`)."""
    settings.validate()
    keep_heap_flat()  # `dvd predict`'s malloc settings (dvd.engine.allocator): its host path, as it runs there
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    if settings.compile and not settings.host_only:
        check_compiler(device)  # before anything is built
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    pipe = build_pipeline(settings, device, dtype)
    settings = replace(settings, video=pipe.fit_settings(settings.video))
    with tempfile.TemporaryDirectory(prefix="dvd-bench-") as scratch:
        source = open_bench_source(settings, Path(scratch))
        frames = source.frame_count(settings.frames)
        model_hw = settings.video.model_size(source.size)
        window = np.zeros((min(settings.video.window, frames), *model_hw, 3), np.float32)
        flops = (
            None
            if settings.host_only
            else count_model_flops(pipe.model, window_pixels_shape(window, pipe.model.frame_rule))
        )
        accelerate(pipe, settings)  # after counting: the count runs a meta copy of the plain modules
        setup = time.perf_counter() - started
        if settings.compile:
            untimed = StageTimer()
            warm_up = warm_up_seconds(
                settings, partial(timed_run, pipe, source, Path(scratch) / "warm-up", settings, untimed, device)
            )
        else:
            warm_up = warm_up_seconds(settings, partial(pipe.predict_windows, [window] * settings.video.batch_windows))
        target = (settings.output or Path(scratch) / "out") / source.name
        timer = StageTimer(synchronize=device_synchronizer(device))
        run = timed_run(pipe, source, target, settings, timer, device)
    return report(settings, pipe, source, model_hw, timer, run, flops, setup, warm_up)


def build_pipeline(settings: BenchSettings, device: torch.device, dtype: torch.dtype) -> DVDPipeline:
    """The pipeline with the model switches applied that do not need a first call (the fast path's constants,
    the VAE's tiling and memory layout)."""
    if settings.weights is not None:
        pipe = DVDPipeline.from_pretrained(settings.weights, device=device, dtype=dtype)
    else:
        # The host-only stand-in replaces the model; the tiny modules only give the pipeline its components.
        name = DEFAULT_BENCH_PRESET if settings.host_only else settings.preset or DEFAULT_BENCH_PRESET
        pipe = DVDPipeline.from_model(random_model(name, device, dtype))
        pipe.model.to_precision(dtype)
        pipe.weights_id = settings.model_name
    pipe.fold_constants(cross_attention=settings.fold, time_conditions=settings.precompute_time)
    if settings.tiled_vae:
        pipe.vae.enable_tiling()
    if settings.channels_last:
        pipe.model.set_vae_channels_last(True)
    if settings.host_only:
        pipe.predict_windows = HostOnlyWindows(pipe)  # what `predict_to_folder` calls: the model never runs
    return pipe


class HostOnlyWindows:
    """`--host-only`: stands in for `DVDPipeline.predict_windows` with what a model hands the host, at none of a
    model's cost: a float32 disparity [T, H, W] per window in recycled host arrays, as the pipeline copies a
    device's output. Its values are the window's own green channel scaled to [0, 1], so that the stitcher, the
    colour map and the encoder see the video's detail and motion. Its time is the `transfer` stage."""

    def __init__(self, pipe: DVDPipeline) -> None:
        self._pipe = pipe  # whose `stage_timer` a timed run sets
        self._host_arrays = ArrayPool()

    def __call__(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        timer = self._pipe.stage_timer
        timer.count_windows(len(windows))
        with timer.stage(TRANSFER):
            host = self._host_arrays.empty((len(windows), *windows[0].shape[:-1]), np.float32)
            for disparity, window in zip(host, windows):
                np.multiply(window[..., 1], np.float32(1 / 255), out=disparity)
            return list(host)


def accelerate(pipe: DVDPipeline, settings: BenchSettings) -> None:
    """--attention-backend, --cudnn-benchmark and --compile; failures that show only at the first call are caught
    in the warm-up."""
    if settings.host_only:
        return
    if settings.attention_backend is not None:
        set_attention_backend(pipe, settings.attention_backend)
    # A process-wide switch (cuDNN tries the convolution algorithms of each new shape and keeps the fastest); no
    # effect off CUDA.
    torch.backends.cudnn.benchmark = settings.cudnn_benchmark
    if settings.compile:
        compile_blocks = getattr(pipe.transformer, "compile_repeated_blocks", None)
        if compile_blocks is None:
            raise DVDError(
                "--compile needs diffusers' compile_repeated_blocks, which this diffusers lacks: upgrade diffusers"
            )
        compile_blocks()  # torch.compile of each WanTransformerBlock: lazy, compiled at the first call


def check_compiler(device: torch.device) -> None:
    """DVDError when torch.compile cannot build kernels for `device`: inductor compiles C++ on the CPU and Triton's
    launchers (C) on CUDA, so a compiler must be installed."""
    if device.type == "cuda":
        found = os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang")  # Triton's own search
        if not found:
            raise DVDError(
                "--compile on CUDA needs a C compiler for Triton, and none was found (gcc, clang or $CC): install "
                "one (e.g. apt-get install gcc) or run without --compile"
            )
        return
    if device.type != "cpu":
        return
    from torch._inductor import config
    from torch._inductor.cpp_builder import get_cpp_compiler
    from torch._inductor.exc import InvalidCxxCompiler

    try:
        get_cpp_compiler()
    except InvalidCxxCompiler:
        tried = ", ".join(str(name) for name in config.cpp.cxx if name)
        raise DVDError(
            f"--compile on the CPU needs a C++ compiler for torch's inductor, and none was found (tried {tried}; "
            "$CXX sets it): install one (e.g. apt-get install g++) or run without --compile"
        ) from None


def set_attention_backend(pipe: DVDPipeline, name: str) -> None:
    from diffusers.models.attention_dispatch import AttentionBackendName

    known = [backend.value for backend in AttentionBackendName]
    if name not in known:
        raise DVDError(f"unknown --attention-backend {name!r}: diffusers knows {', '.join(known)}")
    try:
        pipe.transformer.set_attention_backend(name)
    except (ImportError, RuntimeError, ValueError) as error:  # diffusers' "not installed" / "needs version" errors
        raise DVDError(f"--attention-backend {name} cannot run here: {error}") from None


def warm_up_seconds(settings: BenchSettings, warm_up: Callable[[], object]) -> float:
    """`warm_up()` untimed (kernels, allocator, compilation); its seconds."""
    started = time.perf_counter()
    try:
        warm_up()
    except DVDError:
        raise
    except Exception as error:
        switches = [
            f for f, on in [("--compile", settings.compile), ("--attention-backend", settings.attention_backend)] if on
        ]
        if not switches:
            raise
        raise DVDError(
            f"the first model call with {' and '.join(switches)} failed ({type(error).__name__}: "
            f"{first_line(error)}); run without {' / '.join(switches)}"
        ) from error
    return time.perf_counter() - started


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no message"


def window_pixels_shape(window: np.ndarray, rule: FrameRule) -> tuple[int, ...]:
    """[1, 3, T, H, W] of one window as the model gets it (T padded to fit the frame `rule`)."""
    length, height, width = window.shape[:3]
    return tuple(rule.pad(torch.empty(1, 3, length, height, width, device="meta")).shape)


def device_synchronizer(device: torch.device) -> Callable[[], None] | None:
    """What waits for the device's queued work, for timing; None where calls return only when done (the CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    if device.type == "mps":
        return torch.mps.synchronize
    return None


def open_bench_source(settings: BenchSettings, scratch: Path) -> Source:
    """--input, or the synthetic clip written to `scratch` as H.264: either way the real reader decodes it."""
    if settings.input is not None:
        return open_source(settings.input)
    size = settings.source_size or settings.video.model_size((settings.video.height, settings.video.width))
    frames = settings.frames or 2 * settings.video.window - settings.video.overlap  # two windows
    return open_source(write_synthetic_clip(scratch / f"{SYNTHETIC_NAME}.mp4", frames, size))


# How far the synthetic clip's pattern moves per frame, as a fraction of the frame's longer side: a slow pan, so that
# consecutive frames differ alike at every size, and far less than a cut (`dvd.engine.shots`) ever scores.
SYNTHETIC_DRIFT = 0.004


def synthetic_frames(frames: int, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """uint8 RGB frames [H, W, 3] of a smooth colour pattern (a few periods across, one per channel) panning slowly
    to the right. The pattern is laid out in units of the frame's longer side, so every size shows the same picture
    and motion: one shot, which the cut detector never splits."""
    height, width = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32) / max(size)
    for index in range(frames):
        u = x - SYNTHETIC_DRIFT * index
        red = np.sin(2 * np.pi * (3 * u + y))
        green = np.cos(2 * np.pi * (2 * u - 3 * y))
        blue = np.sin(8 * np.pi * (u + y) + 1)
        yield ((np.stack([red, green, blue], axis=-1) + 1) * 127.5).astype(np.uint8)


def write_synthetic_clip(path: Path, frames: int, size: tuple[int, int], fps: int = DEFAULT_IMAGE_FPS) -> Path:
    """`synthetic_frames` as an H.264 mp4 at `path` (cheap to make at any size; not timed)."""
    return write_rgb_video(path, synthetic_frames(frames, size), fps, preset="ultrafast")


@dataclass(frozen=True)
class TimedRun:
    frames: int
    seconds: float
    peak_device_bytes: int | None
    shots: int  # that the run scheduled into windows, each on its own: split at the cuts found or given


def timed_run(
    pipe: DVDPipeline, source: Source, target: Path, settings: BenchSettings, timer: StageTimer, device: torch.device
) -> TimedRun:
    """`predict_to_folder` once, as `dvd predict` runs it (reading and writing in threads beside the model calls),
    every stage timed where it happens: stages in different threads overlap, so their times add up to more than
    the run's."""
    outputs = OutputSettings(formats=settings.formats, max_frames=settings.frames)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    pipe.stage_timer = timer
    started = time.perf_counter()
    try:
        frames = predict_to_folder(pipe, source, target, settings.video, outputs, overwrite=True, timer=timer)
    finally:
        pipe.stage_timer = NoTimer()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    # A failed seam joined as a cut ("seam") starts a shot in meta.json too, but changes no window.
    shots = json.loads((target / "meta.json").read_text(encoding="utf-8"))["shots"]
    return TimedRun(frames, seconds, peak, sum(shot["cause"] != "seam" for shot in shots))


def peak_rss_bytes() -> int:
    """The process's peak resident set since it started (model construction included)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def report(
    settings: BenchSettings,
    pipe: DVDPipeline,
    source: Source,
    model_hw: tuple[int, int],
    timer: StageTimer,
    run: TimedRun,
    flops: dict[str, int] | None,
    setup: float,
    warm_up: float,
) -> dict:
    """The figures: `fps` end to end; `windows`, the model windows the run predicted, and `shots`, the shots it
    scheduled them in (split at cuts found or given); `stages` (seconds per window) and `shares` (of
    all stage time) for each of STAGES; `flops` per window and achieved `flops_per_second` of the model stages (null
    with --host-only); `peak_rss_bytes`; `peak_device_bytes` (CUDA only; null on the CPU and MPS)."""
    windows = max(timer.windows, 1)
    total = sum(timer.seconds.values()) or 1.0
    seconds = {name: timer.seconds.get(name, 0.0) for name in STAGES}
    achieved = None
    if flops is not None:
        achieved = {name: flops[name] * timer.windows / seconds[name] if seconds[name] else None for name in flops}
    return {
        "fps": run.frames / run.seconds,
        "frames": run.frames,
        "windows": timer.windows,
        "shots": run.shots,
        "seconds": run.seconds,
        "stages": {name: value / windows for name, value in seconds.items()},
        "shares": {name: value / total for name, value in seconds.items()},
        "flops": flops,
        "flops_per_second": achieved,
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_device_bytes": run.peak_device_bytes,
        "setup_seconds": setup,
        "warm_up_seconds": warm_up,
        "model": settings.model_name,
        "device": str(pipe.model.device),
        "dtype": str(pipe.model.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "input": str(settings.input) if settings.input else f"{SYNTHETIC_NAME} clip",
        "source_size": list(source.size),
        "model_size": list(model_hw),
        **asdict(settings.video),
        "fold": settings.fold,
        "precompute_time": settings.precompute_time,
        "compile": settings.compile,
        "attention_backend": settings.attention_backend,
        "tiled_vae": settings.tiled_vae,
        "channels_last": settings.channels_last,
        "cudnn_benchmark": settings.cudnn_benchmark,
        "host_only": settings.host_only,
        "formats": list(settings.formats),
        "output": str(settings.output) if settings.output else None,
    }
