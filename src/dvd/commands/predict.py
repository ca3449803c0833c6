"""`dvd predict`: depth for videos, image folders and images, streamed in bounded memory, written incrementally."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from dvd.errors import DVDError
from dvd.options import (
    COLORMAPS,
    DEFAULT_ANCHOR_FRAMES,
    DEFAULT_BATCH_WINDOWS,
    DEFAULT_COLORMAP,
    DEFAULT_FORMATS,
    DEFAULT_IMAGE_FPS,
    DEFAULT_MIN_HEIGHT,
    DEFAULT_MIN_WIDTH,
    DEFAULT_OVERLAP,
    DEFAULT_STITCH,
    DEFAULT_WINDOW,
    MAX_FRAME_RATE,
    MIN_FRAME_RATE,
    STITCH_PRESETS,
    WRITER_FORMATS,
)

if TYPE_CHECKING:  # the heavy stack (torch, diffusers, av) is imported in `predict`, so that --help is instant
    from dvd.inference.outputs import OutputSettings
    from dvd.inference.pipeline import DVDPipeline
    from dvd.inference.video import VideoSettings
    from dvd.io.readers import Source

DESCRIPTION = """\
Estimate depth for each INPUT and write it under OUT/<name>/, where <name> is the input's file name without
extension (or the folder name for an image folder).

INPUT may be a video file (anything PyAV/FFmpeg decodes), a folder of images (png/jpg/tif/exr, 8 or 16 bit, in
natural order: f2 before f10), a single image, a folder of videos, or a .txt file listing such paths (one per line).
Every input is checked before the model is loaded.

Outputs per input, in OUT/<name>/:
  disparity.npy   float32 [T, H, W] at the source resolution (always written; written frame by frame)
  meta.json       fps, frame count, sizes, window settings, weights, and the value mapping of the 8/16-bit outputs
  depth_png16/    (--save png16) one 16-bit PNG per frame; disparity = lo + u / 65535 * (hi - lo), lo/hi in meta.json
  depth_exr/      (--save exr) one float32 EXR per frame, raw disparity
  depth_vis.mp4   (--save mp4) colour-mapped depth video at the source fps
  depth_sbs.mp4   (--save sbs) RGB | colour-mapped depth, side by side

Values are affine-invariant DISPARITY: larger = nearer, unknown scale and shift. The 8/16-bit outputs map
disparity to [0, 1] with one range for the whole video, fixed from the first --window stitched frames: their
1st-99th percentiles widened by 10% on each side; values beyond are clipped. Long videos are processed in
overlapping windows that are aligned by least squares and cross-faded; memory does not grow with the video length.
"""

EXAMPLES = """\
examples:
  dvd predict clip.mp4 -o out/                               # out/clip/: disparity.npy, meta.json, depth_vis.mp4
  dvd predict frames/ -o out/ --fps 23.976 --save png16,exr  # image sequence in, 16-bit PNG + EXR per frame out
  dvd predict videos.txt -o out/ --stitch anchored           # many videos; long ones without scale drift
  dvd predict clip.mp4 -o out/ --weights weights/dvd --device cuda --batch-windows 4
  accelerate launch --num_processes 4 -m dvd.cli predict videos/ -o out/   # 4 GPUs, one video each at a time
  accelerate launch --num_processes 4 -m dvd.cli predict long.mp4 -o out/  # 4 GPUs share the windows of one video
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="depth (disparity) for videos, image folders and images",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="video, image folder, image, folder of videos or .txt list"
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="OUT",
        help="output folder; created if missing; results go to OUT/<name>/",
    )

    model = parser.add_argument_group("model")
    model.add_argument(
        "--weights",
        default=None,
        metavar="SOURCE",
        help="a folder with the official DVD files, a `dvd convert` or save_pretrained folder, a checkpoint or "
        "single-file model, `proof` (the tiny model of `dvd demo`), or a Hub repository id (default: the "
        "official release from the Hugging Face Hub)",
    )
    model.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda if available, then mps, then cpu)"
    )
    model.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="compute precision (default: bfloat16 on CUDA, as the official code; float32 elsewhere)",
    )

    size = parser.add_argument_group("resolution")
    size.add_argument(
        "--height",
        type=int,
        default=DEFAULT_MIN_HEIGHT,
        help="minimum model height: frames are scaled, keeping their aspect ratio, until they cover "
        f"HEIGHT x WIDTH, then each side is rounded up to a multiple of 16 (default {DEFAULT_MIN_HEIGHT}; 1080p -> 480x864). "
        f"The model size may not exceed {MAX_MODEL_SIDE} pixels on either side",
    )
    size.add_argument(
        "--width",
        type=int,
        default=DEFAULT_MIN_WIDTH,
        help=f"minimum model width (default {DEFAULT_MIN_WIDTH}; at most {MAX_MODEL_SIDE}), see --height",
    )
    size.add_argument(
        "--keep-model-size",
        action="store_true",
        help="write outputs at the model resolution instead of resizing them back to the source size",
    )

    windows = parser.add_argument_group("windows and stitching")
    windows.add_argument(
        "--window",
        type=int,
        default=DEFAULT_WINDOW,
        help=f"frames per model window (default {DEFAULT_WINDOW}, as the official open-world script; the model was "
        "trained on 45; much longer windows can ghost)",
    )
    windows.add_argument(
        "--overlap",
        type=int,
        default=DEFAULT_OVERLAP,
        help=f"frames shared by consecutive windows, used to align them (default {DEFAULT_OVERLAP})",
    )
    windows.add_argument(
        "--stitch",
        default=DEFAULT_STITCH,
        choices=list(STITCH_PRESETS),
        help="openworld (default): official script, last window shifted back to full length, scale "
        "clipped to [0.7, 1.5]. benchmark: official evaluation, fixed overlap, short last window, no "
        "clip. anchored: every window also re-predicts --anchor-frames frames of the first window and "
        "is aligned to them and to the overlap, so scale does not drift over long videos",
    )
    windows.add_argument(
        "--anchor-frames",
        type=int,
        default=DEFAULT_ANCHOR_FRAMES,
        metavar="K",
        help=f"anchored only: anchor frames per window, 1, 5, 9, ... (default {DEFAULT_ANCHOR_FRAMES}); "
        "they count towards --window",
    )
    windows.add_argument(
        "--batch-windows",
        type=int,
        default=DEFAULT_BATCH_WINDOWS,
        metavar="N",
        help="windows per model call (default 1); more can be faster on a large GPU and uses more "
        "memory; the result is the same up to float rounding (~1e-6)",
    )

    frames = parser.add_argument_group("frames")
    frames.add_argument(
        "--max-frames", type=int, default=None, metavar="N", help="process at most N frames per input (after --stride)"
    )
    frames.add_argument(
        "--stride",
        type=int,
        default=1,
        metavar="K",
        help="take every K-th frame (default 1); the output fps is the source fps / K",
    )
    frames.add_argument(
        "--fps",
        default=None,
        help=f"frame rate of image folders and images (default {DEFAULT_IMAGE_FPS}; {MIN_FRAME_RATE} to "
        f"{MAX_FRAME_RATE}); refused for videos, which keep their own time stamps (variable frame rates too)",
    )
    frames.add_argument(
        "--allow-damaged",
        action="store_true",
        help="keep going on a truncated or corrupt input: write the frames that decode, print one warning and "
        "record the damage in meta.json (damaged, num_frames_expected, damage); without it such inputs fail",
    )

    outputs = parser.add_argument_group("outputs")
    outputs.add_argument(
        "--save",
        default=",".join(DEFAULT_FORMATS),
        metavar="FORMATS",
        help=f"comma-separated outputs among {','.join(WRITER_FORMATS)} (default "
        f"{','.join(DEFAULT_FORMATS)}); npy is always written",
    )
    outputs.add_argument(
        "--colormap",
        default=DEFAULT_COLORMAP,
        choices=list(COLORMAPS),
        help=f"colour map of mp4/sbs (default {DEFAULT_COLORMAP}: red near, blue far)",
    )
    outputs.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing OUT/<name>/ folders written by dvd predict (recognised by their meta.json); "
        "anything else is never replaced",
    )
    outputs.add_argument("--quiet", action="store_true", help="no progress bars (the summary line is still printed)")
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class PredictSettings:
    """Everything `dvd predict` was asked to do, typed; `run` needs nothing else."""

    inputs: tuple[str, ...]
    output: Path
    video: VideoSettings
    outputs: OutputSettings
    weights: str | None = None
    device: str | None = None
    dtype: str | None = None
    fps: str | None = None  # None: DEFAULT_IMAGE_FPS for images; anything else is refused for videos
    allow_damaged: bool = False
    overwrite: bool = False
    quiet: bool = False


def settings_from_args(args: argparse.Namespace) -> PredictSettings:
    from dvd.inference.outputs import OutputSettings
    from dvd.inference.video import VideoSettings

    # The flags are named after the settings' fields, so the video settings carry over one to one.
    video = VideoSettings(**{field.name: getattr(args, field.name) for field in fields(VideoSettings)})
    outputs = OutputSettings(
        formats=tuple(parse_formats(args.save)),
        colormap=args.colormap,
        keep_model_size=args.keep_model_size,
        max_frames=args.max_frames,
        stride=args.stride,
    )
    return PredictSettings(
        inputs=tuple(args.inputs),
        output=args.output,
        video=video,
        outputs=outputs,
        weights=args.weights,
        device=args.device,
        dtype=args.dtype,
        fps=args.fps,
        allow_damaged=args.allow_damaged,
        overwrite=args.overwrite,
        quiet=args.quiet,
    )


def run(args: argparse.Namespace) -> int:
    return predict(settings_from_args(args))


def predict(settings: PredictSettings) -> int:
    """Check everything, load the model once, write each input's folder; prints a summary line."""
    from tqdm import tqdm

    from dvd.inference.outputs import predict_to_folder, prediction_folder_problem
    from dvd.inference.pipeline import DVDPipeline
    from dvd.io.atomic import check_output, prepare_output_folder
    from dvd.io.readers import open_sources

    settings.video.validate()
    check_model_sides(settings.video.height, settings.video.width)
    image_fps = DEFAULT_IMAGE_FPS if settings.fps is None else settings.fps
    sources = open_sources(settings.inputs, image_fps=image_fps, allow_damaged=settings.allow_damaged)
    for source in sources:
        source.frame_count(settings.outputs.max_frames, settings.outputs.stride)  # checks --max-frames and --stride
        check_source(source, settings)
    output = prepare_output_folder(settings.output)
    targets = [output / source.name for source in sources]
    for target in targets:  # refused before any model work; checked again as each folder is renamed into place
        check_output(target, settings.overwrite, prediction_folder_problem)

    share = share_work(list(zip(sources, targets)), settings.device)
    started = time.perf_counter()
    pipe = DVDPipeline.from_pretrained(settings.weights, device=share.device, dtype=settings.dtype)
    quiet = settings.quiet or not share.writes  # one bar and one warning per run, from the process that writes
    warn_if_slow(pipe, quiet)
    video = share_windows(pipe, settings.video, share) if share.world > 1 else settings.video
    total = 0
    for source, target in share.jobs:
        if not share.writes:
            follow_windows(pipe, source, video, settings.outputs)
            continue
        frames = source.frame_count(settings.outputs.max_frames, settings.outputs.stride)
        with tqdm(total=frames, desc=source.name, unit="frame", disable=quiet, dynamic_ncols=True) as bar:
            written = predict_to_folder(
                pipe,
                source,
                target,
                video,
                settings.outputs,
                progress=lambda _: bar.update(1),
                overwrite=settings.overwrite,
            )
        total += written
        warn_if_damaged(source, written, frames, target)
    if share.writes:
        elapsed = time.perf_counter() - started
        paths = ", ".join(str(target) for _, target in share.jobs)
        print(
            f"dvd predict: {total} frames from {len(share.jobs)} input(s) in {elapsed:.1f} s "
            f"({total / max(elapsed, 1e-9):.2f} frames/s) -> {paths}"
        )
    return 0


@dataclass(frozen=True)
class WorkShare:
    """This process's part of a run: its inputs and device, and whether it shares their windows with the others."""

    jobs: list[tuple[Source, Path]]
    device: str | None
    rank: int = 0
    world: int = 1  # above 1: all `world` processes run every job, each predicting its share of the windows

    @property
    def writes(self) -> bool:
        """Whether this process writes its jobs' folders: with shared windows only rank 0 does."""
        return self.world == 1 or self.rank == 0


def share_work(jobs: list[tuple[Source, Path]], device: str | None) -> WorkShare:
    """Under `accelerate launch` or torchrun, this process's share of the run, on its own device.

    With at least as many inputs as processes, each process takes every N-th input (whole inputs need no
    communication); with fewer, no process would idle, so they all take every input and share its windows. A
    single process gets everything and the device asked for.
    """
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=str(device or "").startswith("cpu") or not torch.cuda.is_available())
    if state.num_processes == 1:
        return WorkShare(jobs, device)
    device = device or str(state.device)
    if len(jobs) >= state.num_processes:
        return WorkShare(jobs[state.process_index :: state.num_processes], device)
    return WorkShare(jobs, device, state.process_index, state.num_processes)


def share_windows(pipe: DVDPipeline, video: VideoSettings, share: WorkShare) -> VideoSettings:
    """Make `pipe` predict only this process's share of each engine call; the engine settings that keep every
    process busy: --batch-windows windows per process per call."""
    from dvd.inference.sharded import ShardedWindows

    sharded = ShardedWindows(pipe.predict_windows, share.rank, share.world, video.batch_windows)
    # `predict_to_folder` runs its engine on `pipe.predict_windows`; every input of this run shares its windows.
    pipe.predict_windows = sharded
    return replace(video, batch_windows=sharded.windows_per_call)


def follow_windows(pipe: DVDPipeline, source: Source, video: VideoSettings, outputs: OutputSettings) -> None:
    """A process that does not write: the same frames through the same engine, so that it predicts its share of
    every window call in step with the others; the stitched frames are dropped, since rank 0 writes them."""
    from dvd.inference.video import VideoEngine

    disparity = VideoEngine(pipe.predict_windows, video).model_frames(
        source.frames(outputs.max_frames, outputs.stride), source.size
    )
    for _ in disparity:
        pass


# The largest model size, per side: a 4096x4096 window already needs far more memory than any GPU has today, and
# larger requests are typos (--height 100000) that would otherwise die out of memory with a traceback.
MAX_MODEL_SIDE = 4096


def check_model_sides(height: int, width: int) -> None:
    if max(height, width) > MAX_MODEL_SIDE:
        raise DVDError(
            f"--height/--width {height}x{width} is too large: the model size may not exceed {MAX_MODEL_SIDE} pixels "
            "on either side; the default 480x640 is what DVD was trained for"
        )


def check_source(source: Source, settings: PredictSettings) -> None:
    """What the flags ask of one input that it cannot give, before the model loads."""
    from dvd.io.readers import frame_rate

    if settings.fps is not None and source.kind == "video":
        raise DVDError(
            f"--fps sets the frame rate of image inputs, but {source.path} is a video, which keeps its own time "
            "stamps: drop --fps (run videos and image folders separately), or re-time the video with ffmpeg"
        )
    height, width = settings.video.model_size(source.size)
    if max(height, width) > MAX_MODEL_SIDE:
        raise DVDError(
            f"{source.path} would run at {height}x{width} (its aspect ratio with --height/--width "
            f"{settings.video.height}x{settings.video.width}), beyond {MAX_MODEL_SIDE} pixels per side: lower "
            "--height/--width"
        )
    if {"mp4", "sbs"} & set(settings.outputs.formats):
        try:
            frame_rate(source.output_rate(settings.outputs.stride))
        except DVDError as error:
            raise DVDError(
                f"the mp4/sbs outputs of {source.path} at --stride {settings.outputs.stride}: {error}"
            ) from None


def warn_if_damaged(source: Source, written: int, expected: int, target: Path) -> None:
    """One line for an input kept with --allow-damaged; meta.json holds every problem."""
    if source.damage:
        more = f" (and {len(source.damage) - 1} more problem(s))" if len(source.damage) > 1 else ""
        print(
            f"dvd predict: warning: wrote {written} of {expected} frames of a damaged input: {source.damage[0]}{more}; "
            f"see {target / 'meta.json'}",
            file=sys.stderr,
        )


# Above this many DiT parameters a CPU run is a matter of minutes per window (the 1.3B model has 1.42e9).
CPU_PATIENCE_PARAMETERS = 100_000_000


def warn_if_slow(pipe: DVDPipeline, quiet: bool) -> None:
    """Tell a CPU user up front that the full model will be slow, and what to change."""
    parameters = sum(p.numel() for p in pipe.model.transformer.parameters())
    if not quiet and pipe.model.device.type == "cpu" and parameters > CPU_PATIENCE_PARAMETERS:
        print(
            f"dvd predict: running a {parameters / 1e9:.2f}B-parameter DiT on the CPU: expect minutes per window; "
            "use --device cuda/mps, or a smaller --window and --height/--width",
            file=sys.stderr,
        )


def parse_formats(text: str) -> list[str]:
    """The --save list as format names, npy first and always present."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(WRITER_FORMATS))
    if unknown:
        raise DVDError(f"unknown --save format(s) {', '.join(unknown)}: choose among {','.join(WRITER_FORMATS)}")
    return list(dict.fromkeys(["npy", *names]))
