"""`dvd predict`: depth for videos, image folders and images, streamed in bounded memory, written incrementally."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from tqdm import tqdm

from dvd import __version__
from dvd.data.raster import resize_frames
from dvd.errors import DVDError
from dvd.inference.pipeline import DVDPipeline
from dvd.inference.resize import model_size
from dvd.inference.stitch import DEFAULT_ANCHOR_FRAMES, STITCH_PRESETS
from dvd.inference.video import StreamOptions, model_disparity, resize_back
from dvd.io.atomic import atomic_directory, prepare_output_folder
from dvd.io.colormaps import COLORMAPS, DEFAULT_COLORMAP
from dvd.io.readers import DEFAULT_IMAGE_FPS, Source, open_sources
from dvd.io.writers import DEFAULT_FORMATS, WRITER_FORMATS, DisparityRange, open_writers

RANGED_FORMATS = {"png16", "mp4", "sbs"}  # 8/16-bit outputs that need a DisparityRange

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
disparity to [0, 1] with one range for the whole video, fixed from the first window: its 1st-99th percentiles
widened by 10% on each side; values beyond are clipped. Long videos are processed in overlapping windows that are
aligned by least squares and cross-faded; memory does not grow with the video length.
"""

EXAMPLES = """\
examples:
  dvd predict clip.mp4 -o out/                               # out/clip/: disparity.npy, meta.json, depth_vis.mp4
  dvd predict frames/ -o out/ --fps 23.976 --save png16,exr  # image sequence in, 16-bit PNG + EXR per frame out
  dvd predict videos.txt -o out/ --stitch anchored           # many videos; long ones without scale drift
  dvd predict clip.mp4 -o out/ --weights weights/dvd --device cuda --batch-windows 4
  accelerate launch --num_processes 4 -m dvd.cli predict videos/ -o out/   # 4 GPUs, one video each at a time
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
        help="a folder with the official DVD files or a `dvd convert` output, a checkpoint file, or a "
        "Hub repository id (default: the official release from the Hugging Face Hub)",
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
        default=480,
        help="minimum model height: frames are scaled, keeping their aspect ratio, until they cover "
        "HEIGHT x WIDTH, then each side is rounded up to a multiple of 16 (default 480; 1080p -> 480x864)",
    )
    size.add_argument("--width", type=int, default=640, help="minimum model width (default 640), see --height")
    size.add_argument(
        "--keep-model-size",
        action="store_true",
        help="write outputs at the model resolution instead of resizing them back to the source size",
    )

    windows = parser.add_argument_group("windows and stitching")
    windows.add_argument(
        "--window",
        type=int,
        default=81,
        help="frames per model window (default 81, as the official open-world script; the model was "
        "trained on 45; much longer windows can ghost)",
    )
    windows.add_argument(
        "--overlap", type=int, default=21, help="frames shared by consecutive windows, used to align them (default 21)"
    )
    windows.add_argument(
        "--stitch",
        default="openworld",
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
        default=1,
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
        default=str(DEFAULT_IMAGE_FPS),
        help=f"frame rate recorded for image folders and images (default {DEFAULT_IMAGE_FPS}); videos keep their own",
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
    outputs.add_argument("--overwrite", action="store_true", help="replace existing OUT/<name>/ folders")
    outputs.add_argument("--quiet", action="store_true", help="no progress bars (the summary line is still printed)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    options = StreamOptions(
        min_height=args.height,
        min_width=args.width,
        window=args.window,
        overlap=args.overlap,
        stitch=args.stitch,
        batch_windows=args.batch_windows,
        anchor_frames=args.anchor_frames,
    )
    options.validate()
    formats = parse_formats(args.save)
    sources = open_sources(args.inputs, image_fps=args.fps)
    for source in sources:
        source.frame_count(args.max_frames, args.stride)  # checks --max-frames and --stride
    output = prepare_output_folder(args.output)
    targets = [output / source.name for source in sources]
    existing = [str(target) for target in targets if target.exists()]
    if existing and not args.overwrite:
        raise DVDError(f"{', '.join(existing)} already exist(s): pass --overwrite to replace, or choose another -o")

    jobs, device = share_of_inputs(list(zip(sources, targets)), args.device)
    started = time.perf_counter()
    pipe = DVDPipeline.from_pretrained(args.weights, device=device, dtype=args.dtype)
    warn_if_slow(pipe, args.quiet)
    total = 0
    for source, target in jobs:
        total += predict_source(pipe, source, target, options, formats, args)
    elapsed = time.perf_counter() - started
    paths = ", ".join(str(target) for _, target in jobs)
    print(
        f"dvd predict: {total} frames from {len(jobs)} input(s) in {elapsed:.1f} s "
        f"({total / max(elapsed, 1e-9):.2f} frames/s) -> {paths}"
    )
    return 0


def share_of_inputs(jobs: list, device: str | None) -> tuple[list, str | None]:
    """Under `accelerate launch` or torchrun, this process's inputs (round robin) and its own device.

    Each process loads the model once and works through whole inputs, so N GPUs run N videos at a time; a single
    process gets everything and the device asked for.
    """
    state = PartialState(cpu=str(device or "").startswith("cpu") or not torch.cuda.is_available())
    if state.num_processes == 1:
        return jobs, device
    return jobs[state.process_index :: state.num_processes], device or str(state.device)


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


def predict_source(
    pipe: DVDPipeline,
    source: Source,
    target: Path,
    options: StreamOptions,
    formats: list[str],
    args: argparse.Namespace,
) -> int:
    """Write all outputs of one source into a temporary folder next to `target`, then rename it; returns frames."""
    with atomic_directory(target) as staging:
        started = time.perf_counter()
        with tqdm(
            total=source.frame_count(args.max_frames, args.stride),
            desc=source.name,
            unit="frame",
            disable=args.quiet,
            dynamic_ncols=True,
        ) as bar:
            count, outputs = write_outputs(pipe, source, staging, options, formats, args, bar)
        meta = describe(pipe, source, options, args, count, outputs, time.perf_counter() - started)
        (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return count


def write_outputs(
    pipe: DVDPipeline,
    source: Source,
    directory: Path,
    options: StreamOptions,
    formats: list[str],
    args: argparse.Namespace,
    bar: tqdm,
) -> tuple[int, dict]:
    """Stream the source through the model into the writers; returns (frames written, writers' meta)."""
    disparity = model_disparity(source.frames(args.max_frames, args.stride), pipe.predict_windows, source.size, options)
    out_size = model_size(*source.size, options.min_height, options.min_width) if args.keep_model_size else source.size
    # The 8/16-bit range is fixed from the first window before anything is written; those frames wait at model
    # size, which bounds the extra memory to one window whatever the source resolution.
    first = list(itertools.islice(disparity, options.window))
    if not first:
        raise DVDError(f"no frames could be decoded from {source.path}: check the file")
    value_range = DisparityRange.fit(np.stack(first)) if RANGED_FORMATS & set(formats) else None
    writers = open_writers(
        directory, formats, fps=source.output_rate(args.stride), value_range=value_range, colormap=args.colormap
    )
    # Side by side needs each RGB frame beside its depth: a second decoder in lockstep costs no buffer.
    rgb = source.frames(args.max_frames, args.stride) if writers.needs_rgb else None
    count = 0
    try:
        for frame in itertools.chain(first, disparity):
            writers.write(frame if args.keep_model_size else resize_back(frame, out_size), _next_rgb(rgb, out_size))
            count += 1
            bar.update(1)
    finally:
        writers.close()
    return count, writers.meta()


def _next_rgb(rgb: Iterator[np.ndarray] | None, size: tuple[int, int]) -> np.ndarray | None:
    if rgb is None:
        return None
    frame = next(rgb)
    return frame if frame.shape[:2] == tuple(size) else resize_frames(frame[None], size)[0]


def describe(
    pipe: DVDPipeline,
    source: Source,
    options: StreamOptions,
    args: argparse.Namespace,
    count: int,
    outputs: dict,
    seconds: float,
) -> dict:
    """meta.json: what was computed, from what, and how to read every output."""
    rate = source.output_rate(args.stride)
    model_hw = model_size(*source.size, options.min_height, options.min_width)
    return {
        "kind": "disparity",
        "values": "affine-invariant disparity: larger = nearer; scale and shift unknown",
        "num_frames": count,
        "fps": float(rate),
        "fps_fraction": f"{rate.numerator}/{rate.denominator}",
        "source_size": list(source.size),
        "model_size": list(model_hw),
        "output_size": list(model_hw if args.keep_model_size else source.size),
        "max_frames": args.max_frames,
        "stride": args.stride,
        **options.as_meta(),
        "weights": pipe.weights_id,
        "device": str(pipe.model.device),
        "dtype": str(pipe.model.dtype).removeprefix("torch."),
        "input": source.describe(),
        "outputs": outputs,
        "seconds": round(seconds, 3),
        "dvd_version": __version__,
    }
