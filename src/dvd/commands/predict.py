"""`dvd predict`: depth for videos, image folders and images, streamed in bounded memory, written incrementally."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from dvd.commands.flags import add_device_arguments
from dvd.errors import DVDError
from dvd.jobs.batch import MAX_MODEL_SIDE, SOME_FAILED, PredictSettings, parse_formats, predict
from dvd.metric.settings import register_arguments as register_metric_arguments
from dvd.metric.settings import settings_from_args as metric_settings_from_args
from dvd.options import (
    COLORMAPS,
    COLOUR_RANGES,
    CUT_MODES,
    DEFAULT_BATCH_WINDOWS,
    DEFAULT_COLORMAP,
    DEFAULT_COLOUR_RANGE,
    DEFAULT_CUT_THRESHOLD,
    DEFAULT_FORMATS,
    DEFAULT_IMAGE_FPS,
    DEFAULT_MIN_HEIGHT,
    DEFAULT_MIN_WIDTH,
    DEFAULT_OVERLAP,
    DEFAULT_STITCH,
    DEFAULT_WINDOW,
    GLOBAL_LAG_WINDOWS,
    MAX_FRAME_RATE,
    MIN_FRAME_RATE,
    POST_PASS_FORMATS,
    STITCH_PRESETS,
    WRITER_FORMATS,
)

DESCRIPTION = """\
Estimate depth for each INPUT and write it under OUT/<name>/, where <name> is the input's file name without
extension (or the folder name for an image folder).

INPUT may be a video file (anything PyAV/FFmpeg decodes), a folder of images (png/jpg/tif/exr, 8 or 16 bit, in
natural order: f2 before f10), a single image, a folder of videos, or a list of such paths: a .txt file (one per
line), or a .csv/.jsonl/.parquet table with a `path` column and, optionally, fps, max_frames, stride and
cut_frames columns for that row (paths relative to the list).
Every input is checked before the model is loaded (with --keep-going a bad one is recorded and skipped).

Outputs per input, in OUT/<name>/:
  disparity.npy   float32 [T, H, W] at the source resolution (always written; written frame by frame)
  meta.json       fps, frame count, sizes, window settings, weights, and the value mapping of the 8/16-bit outputs
  depth_png16/    (--save png16) one 16-bit PNG per frame; disparity = lo + u / 65535 * (hi - lo), lo/hi in meta.json
  depth_exr/      (--save exr) one float32 EXR per frame, raw disparity
  depth_vis.mp4   (--save mp4) colour-mapped depth video at the source fps
  depth_sbs.mp4   (--save sbs) RGB | colour-mapped depth, side by side

Values are affine-invariant DISPARITY: larger = nearer, unknown scale and shift. The 8/16-bit outputs map
disparity to [0, 1] with one range for the whole video: the 1st-99th percentiles of a fixed subsample of the whole
video's disparity, widened by 10% on each side, written in a second pass over disparity.npy (--colour-range
first-window takes them from the first --window stitched frames instead and streams, clipping later values beyond).
meta.json records the rule. Long videos are processed in overlapping windows that are aligned by least squares and
cross-faded; memory does not grow with the video length. Videos are split at hard cuts (--cuts) and each shot is
stitched on its own; meta.json lists the shots and any seam whose alignment failed.

--height, --width, --window and --overlap default to the settings the model carries, if any (--weights proof:
64x64, window 5, overlap 2, the size and clips it was trained on), else to the official release's (480x640, window
81, overlap 21).
"""

EXAMPLES = """\
examples:
  dvd predict clip.mp4 -o out/                               # out/clip/: disparity.npy, meta.json, depth_vis.mp4
  dvd predict frames/ -o out/ --fps 23.976 --save png16,exr  # image sequence in, 16-bit PNG + EXR per frame out
  dvd predict videos.txt -o out/ --stitch global             # many videos, windows aligned jointly
  dvd predict clip.mp4 -o out/ --weights weights/dvd --device cuda --batch-windows 4
  accelerate launch --num_processes 4 -m dvd.cli predict videos/ -o out/   # 4 GPUs, one video each at a time
  accelerate launch --num_processes 4 -m dvd.cli predict long.mp4 -o out/  # 4 GPUs share the windows of one video
  dvd predict corpus.parquet -o /shared/out/ --skip-existing --ray          # a local Ray: one actor per GPU (or CPU)
  dvd predict corpus.parquet -o /shared/out/ --ray 10.0.0.1:6379            # the cluster of `ray start --head`
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
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="video, image folder, image, folder of videos, or a list (.txt, or .csv/.jsonl/.parquet with a path column)",
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
    add_device_arguments(model)
    model.add_argument(
        "--steps",
        type=int,
        default=None,
        metavar="T",
        help="a generative DVD model (train.objective generative): Euler steps from noise to depth per window "
        "(default 10); refused for DVD's regression models",
    )
    model.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="S",
        help="a generative DVD model: the seed of its noise (default 0); the same seed gives the same output",
    )

    size = parser.add_argument_group("resolution")
    size.add_argument(
        "--height",
        type=int,
        default=None,
        help="minimum model height: frames are scaled, keeping their aspect ratio, until they cover "
        f"HEIGHT x WIDTH, then each side is rounded up to a multiple of 16 (default: the model's own, else "
        f"{DEFAULT_MIN_HEIGHT}; 1080p -> 480x864). "
        f"The model size may not exceed {MAX_MODEL_SIDE} pixels on either side",
    )
    size.add_argument(
        "--width",
        type=int,
        default=None,
        help=f"minimum model width (default: the model's own, else {DEFAULT_MIN_WIDTH}; at most {MAX_MODEL_SIDE}), "
        "see --height",
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
        default=None,
        help=f"frames per model window (default: the model's own, else {DEFAULT_WINDOW}, as the official open-world "
        "script; the official model was trained on 45; much longer windows can ghost)",
    )
    windows.add_argument(
        "--overlap",
        type=int,
        default=None,
        help=f"frames shared by consecutive windows, used to align them (default: the model's own, else "
        f"{DEFAULT_OVERLAP})",
    )
    windows.add_argument(
        "--stitch",
        default=DEFAULT_STITCH,
        metavar="{" + ",".join(STITCH_PRESETS) + "}",
        help="global (default): every window's scale and shift from one weighted least-squares problem over all "
        f"seams, each frame written {GLOBAL_LAG_WINDOWS} windows after it is predicted. openworld: the official "
        "script, each window fitted to the frames before it, scale clipped to [0.7, 1.5]. benchmark: the official "
        "evaluation, fixed overlap, short last window, no clip. Measured: docs/predict.md",
    )
    windows.add_argument(
        "--batch-windows",
        type=int,
        default=DEFAULT_BATCH_WINDOWS,
        metavar="N",
        help="windows per model call (default 1); more can be faster on a large GPU and uses more "
        "memory; the result is the same up to float rounding (~1e-6)",
    )

    shots = parser.add_argument_group("shots (hard cuts)")
    shots.add_argument(
        "--cuts",
        default=None,
        choices=list(CUT_MODES),
        help="auto: find hard cuts as frames arrive (PySceneDetect's ContentDetector) and stitch each shot on its "
        "own, so no window is fitted across a cut; a seam whose fit fails (overlap residual far above the video's "
        "median) is treated as a cut too. off: one shot (failed seams are still reported). Default: auto for "
        "video files, off for image folders and images",
    )
    shots.add_argument(
        "--cut-threshold",
        type=float,
        default=DEFAULT_CUT_THRESHOLD,
        metavar="T",
        help=f"auto cuts: mean HSV change (0-255) between consecutive frames that makes a cut (default "
        f"{DEFAULT_CUT_THRESHOLD:g}; lower finds more cuts)",
    )
    shots.add_argument(
        "--cut-frames",
        default="",
        metavar="I,J,...",
        help="output frame indices (after --stride) that start a new shot, e.g. 120,480; with --cuts auto or off",
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
        help=f"comma-separated outputs among {','.join((*WRITER_FORMATS, *POST_PASS_FORMATS))} (default "
        f"{','.join(DEFAULT_FORMATS)}); npy is always written; ply: see metric depth and 3D",
    )
    outputs.add_argument(
        "--colormap",
        default=DEFAULT_COLORMAP,
        choices=list(COLORMAPS),
        help=f"colour map of mp4/sbs (default {DEFAULT_COLORMAP}: red near, blue far)",
    )
    outputs.add_argument(
        "--colour-range",
        default=DEFAULT_COLOUR_RANGE,
        choices=list(COLOUR_RANGES),
        help="where png16/mp4/sbs take their disparity range from: video (default): the whole video, written in a "
        "second pass over disparity.npy; first-window: the first --window frames, written as they stream",
    )
    outputs.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing OUT/<name>/ folders written by dvd predict (recognised by their meta.json); "
        "anything else is never replaced",
    )
    outputs.add_argument("--quiet", action="store_true", help="no progress bars (the summary line is still printed)")

    batches = parser.add_argument_group("long runs and batches")
    batches.add_argument(
        "--resume",
        action="store_true",
        help="go on with the partial outputs that interrupted runs (Ctrl-C, SIGTERM, a crash, kill -9, power loss) "
        "left beside OUT/<name>/, from their last completed window; the files come out identical to an "
        "uninterrupted run's. Needs the same settings, input and weights (refused otherwise); inputs without a "
        "partial output start fresh. Without --resume a partial output is refused, and --overwrite discards it",
    )
    batches.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip inputs whose OUT/<name>/ is already complete, so that re-running a big list does only what is "
        "missing (with --resume: and finishes what was interrupted)",
    )
    batches.add_argument(
        "--keep-going",
        action="store_true",
        help="a bad input (unreadable, damaged, too large, gone from a .txt list, failing in the model) is recorded "
        "with its error in OUT/manifest.jsonl and the batch goes on; "
        f"at the end one line lists the failures and the exit code is {SOME_FAILED}",
    )
    corpus = parser.add_argument_group("corpus scale (Ray)")
    corpus.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run the inputs on the actors of a Ray cluster, each input to the first actor that comes free, longest "
        "first; an actor that dies has its input resumed on another; also writes OUT/manifest.parquet. Without "
        "ADDRESS a local Ray starts; HOST:PORT joins the cluster of `ray start --head` (auto: the one on this "
        'machine). Put it after the inputs. Needs pip install "dvd[ray]"',
    )
    corpus.add_argument(
        "--ray-actors",
        type=int,
        default=None,
        metavar="N",
        help="actors, each holding one model (default: one per GPU of the cluster, else one per CPU)",
    )
    corpus.add_argument(
        "--ray-gpus-per-actor",
        type=float,
        default=None,
        metavar="G",
        help="GPUs each actor reserves (default 1 on a cluster with GPUs, 0 without: CPU actors)",
    )
    register_metric_arguments(parser)
    parser.set_defaults(run=run)


def settings_from_args(args: argparse.Namespace) -> PredictSettings:
    from dvd.engine.shots import parse_cut_frames
    from dvd.engine.video import VideoSettings
    from dvd.jobs.outputs import OutputSettings
    from dvd.weights.about import read_defaults

    # The flags are named after the settings' fields, so the video settings carry over one to one (all but the
    # model's spatial stride, set once it loads); the sizing and window flags not given are the model's defaults,
    # read from its config before it loads (dvd.weights.defaults).
    values = {
        field.name: getattr(args, field.name) for field in fields(VideoSettings) if field.name != "spatial_stride"
    }
    values.update(read_defaults(args.weights).resolve(values))
    video = VideoSettings(**{**values, "cut_frames": parse_cut_frames(args.cut_frames)})
    outputs = OutputSettings(
        formats=tuple(name for name in parse_formats(args.save) if name in WRITER_FORMATS),
        colormap=args.colormap,
        keep_model_size=args.keep_model_size,
        max_frames=args.max_frames,
        stride=args.stride,
        colour_range=args.colour_range,
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
        resume=args.resume,
        skip_existing=args.skip_existing,
        keep_going=args.keep_going,
        metric=metric_settings_from_args(args, parse_formats(args.save)),
        steps=args.steps,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    if args.ray is None:
        if args.ray_actors is not None or args.ray_gpus_per_actor is not None:
            raise DVDError("--ray-actors and --ray-gpus-per-actor size the actors of --ray: add --ray")
        return predict(settings_from_args(args))
    from dvd.jobs.cluster import RaySettings
    from dvd.jobs.corpus import predict_on_ray

    cluster = RaySettings(address=args.ray or None, actors=args.ray_actors, gpus_per_actor=args.ray_gpus_per_actor)
    return predict_on_ray(settings_from_args(args), cluster)
