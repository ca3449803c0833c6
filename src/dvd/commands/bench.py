"""`dvd bench`: how fast the real pipeline runs, stage by stage, on random weights of a preset size or given ones."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from dvd.commands.flags import add_device_arguments
from dvd.errors import DVDError
from dvd.options import (
    DEFAULT_BATCH_WINDOWS,
    DEFAULT_BENCH_HEIGHT,
    DEFAULT_BENCH_OVERLAP,
    DEFAULT_BENCH_PRESET,
    DEFAULT_BENCH_WIDTH,
    DEFAULT_BENCH_WINDOW,
    DEFAULT_FORMATS,
    DEFAULT_MIN_HEIGHT,
    DEFAULT_MIN_WIDTH,
    DEFAULT_OVERLAP,
    DEFAULT_STITCH,
    DEFAULT_WINDOW,
    MODEL_PRESETS,
    STITCH_PRESETS,
    WRITER_FORMATS,
)

if TYPE_CHECKING:  # torch and the pipeline are imported in `run`, so that --help is instant
    from dvd.bench.benchmark import BenchSettings

DESCRIPTION = """\
Run the real pipeline (`dvd predict`'s engine and writers) once on a synthetic clip or --input, after one
untimed warm-up call (with --compile: one whole untimed run, which compiles every window shape), and report where the time goes: read+decode, resize, transfer (window to tensor, to the
device and back), VAE encode, DiT, VAE decode, stitch, resize back, write — seconds per window and share of the
run — with the FLOPs of one window of the model stages (counted by torch's FlopCounterMode on a meta copy of the
model, outside the timed run) and the FLOP/s achieved; end-to-end frames/s; peak host RSS (the process's, model
construction included) and peak device memory (torch.cuda.max_memory_allocated of the timed run; null off CUDA).

The model is built with random weights of --preset size (no download; random weights compute what trained ones
do) or read from --weights. The synthetic clip (a slow pan over a smooth colour pattern: one shot, which cut
detection never splits, at any size) is encoded to H.264 in a temporary folder first, so read+decode is real
decoding. The windows reported are those the run predicted, in the shots its cut detection found (an --input with
cuts has more windows than one schedule over all its frames). Outputs (--save) go to a temporary folder unless
--output is given.
"""

EXAMPLES = """\
examples:
  dvd bench                                              # tiny random model, a CPU-sized clip, table
  dvd bench --preset 1.3b --device cuda --height 480 --width 640 --window 81 --overlap 21 --frames 162
  dvd bench --preset 1.3b --device cuda --compile --attention-backend _native_cudnn --batch-windows 2
  dvd bench --input clip.mp4 --weights weights/dvd --no-fold   # the reference cross-attention
  dvd bench --host-only --input clip.mp4 --save npy,mp4   # everything but the model, at dvd predict's sizes
"""


# The sizing flags: name -> (metavar, help, default, default with --host-only). The defaults are sized for a CPU
# check of the model; without a model (--host-only) there is nothing to keep small, so the host path is timed at
# DVD's own settings, dvd predict's.
SIZE_FLAGS = {
    "height": ("H", "minimum model height", DEFAULT_BENCH_HEIGHT, DEFAULT_MIN_HEIGHT),
    "width": ("W", "minimum model width", DEFAULT_BENCH_WIDTH, DEFAULT_MIN_WIDTH),
    "window": ("N", "frames per window", DEFAULT_BENCH_WINDOW, DEFAULT_WINDOW),
    "overlap": ("N", "frames shared by windows", DEFAULT_BENCH_OVERLAP, DEFAULT_OVERLAP),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="time the pipeline stage by stage (random weights of a preset size, or given weights)",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--preset",
        default=None,
        choices=list(MODEL_PRESETS),
        metavar="PRESET",
        help="random weights of this size: FAMILY:SIZE for every backbone's sizes (wan2.1:1.3b, wan2.1:14b, "
        "wan2.2:5b, cogvideox:5b, ltx-video:2b, and each family's :tiny test model); tiny and 1.3b are Wan2.1's "
        f"(default {DEFAULT_BENCH_PRESET} unless --weights is given)",
    )
    model.add_argument("--weights", default=None, metavar="SOURCE", help="real weights, as `dvd predict --weights`")
    add_device_arguments(model)
    model.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch CPU threads (default: torch's choice); on a small shared CPU, 1 can be several times faster",
    )

    switches = parser.add_argument_group("optimisations")
    switches.add_argument(
        "--no-fold",
        dest="fold",
        action="store_false",
        help="diffusers' cross-attention over 512 zero text tokens instead of the folded constant (on by default; "
        "the same result up to rounding)",
    )
    switches.add_argument(
        "--no-precompute-time",
        dest="precompute_time",
        action="store_false",
        help="compute the DiT's time embedding and modulation inputs on every call instead of once at load (on by "
        "default; bit-identical)",
    )
    switches.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the repeated DiT blocks (diffusers' compile_repeated_blocks); compiled in the warm-up",
    )
    switches.add_argument(
        "--attention-backend",
        default=None,
        metavar="NAME",
        help="diffusers' attention backend for the DiT, e.g. native, flash, _native_cudnn, sage (default: native)",
    )
    switches.add_argument(
        "--tiled-vae",
        action="store_true",
        help="VAE encode/decode in spatial tiles: less memory at large sizes (small GPUs), somewhat more work",
    )
    switches.add_argument(
        "--channels-last",
        action="store_true",
        help="the VAE's convolutions in channels-last layout (the same result up to rounding; try on GPUs)",
    )
    switches.add_argument(
        "--cudnn-benchmark",
        action="store_true",
        help="let cuDNN time its convolution algorithms for each new shape and keep the fastest (CUDA only)",
    )
    switches.add_argument(
        "--host-only",
        action="store_true",
        help="replace the model by a zero-cost stand-in of its output (each window's green channel, handed over as "
        "a device's output is), to time everything else at dvd predict's sizes; no model runs",
    )

    clip = parser.add_argument_group("input")
    clip.add_argument("--input", type=Path, default=None, metavar="VIDEO", help="a video (default: a synthetic clip)")
    clip.add_argument(
        "--frames",
        type=int,
        default=None,
        metavar="N",
        help="frames of the synthetic clip (default: two windows), or at most N of --input",
    )
    clip.add_argument(
        "--source-height",
        type=int,
        default=None,
        metavar="H",
        help="synthetic clip height (default: the model size); e.g. 720 with --source-width 1280 for 720p",
    )
    clip.add_argument("--source-width", type=int, default=None, metavar="W", help="synthetic clip width")

    run = parser.add_argument_group("pipeline (as dvd predict)")
    for name, (metavar, what, bench, predict) in SIZE_FLAGS.items():
        run.add_argument(
            f"--{name}",
            type=int,
            default=None,
            metavar=metavar,
            help=f"{what} (default {bench}; {predict} with --host-only)",
        )
    run.add_argument("--stitch", default=DEFAULT_STITCH, choices=list(STITCH_PRESETS), help="stitching preset")
    run.add_argument("--batch-windows", type=int, default=DEFAULT_BATCH_WINDOWS, metavar="N", help="windows per call")
    run.add_argument(
        "--save",
        default=",".join(DEFAULT_FORMATS),
        metavar="FORMATS",
        help=f"outputs written, among {','.join(WRITER_FORMATS)} (default {','.join(DEFAULT_FORMATS)})",
    )
    run.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        metavar="OUT",
        help="keep the outputs in OUT/<name>/ (default: a temporary folder); an earlier dvd output there is replaced",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.set_defaults(run=run_command)


def bench_formats(text: str) -> tuple[str, ...]:
    """The --save list, npy first; the formats of `dvd predict`'s post-pass (ply) are refused: bench has no metric
    or camera flags and times the engine and its writers only."""
    from dvd.jobs.batch import parse_formats

    formats = parse_formats(text)
    post_pass = [name for name in formats if name not in WRITER_FORMATS]
    if post_pass:
        raise DVDError(
            f"--save {','.join(post_pass)}: point clouds are written by dvd predict's metric pass (--metric, "
            f"--fov/--focal), which bench does not time: choose among {','.join(WRITER_FORMATS)}"
        )
    return tuple(formats)


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    from dvd.bench.benchmark import BenchSettings
    from dvd.engine.video import VideoSettings

    sized = {
        name: getattr(args, name) if getattr(args, name) is not None else (predict if args.host_only else bench)
        for name, (_, _, bench, predict) in SIZE_FLAGS.items()
    }
    video = VideoSettings(**sized, stitch=args.stitch, batch_windows=args.batch_windows)
    sides = (args.source_height, args.source_width)
    source_size = (
        None if sides == (None, None) else (args.source_height or video.height, args.source_width or video.width)
    )
    return BenchSettings(
        video=video,
        preset=args.preset,
        weights=args.weights,
        input=args.input,
        frames=args.frames,
        source_size=source_size,
        formats=bench_formats(args.save),
        output=args.output,
        device=args.device,
        dtype=args.dtype,
        threads=args.threads,
        fold=args.fold,
        precompute_time=args.precompute_time,
        compile=args.compile,
        attention_backend=args.attention_backend,
        tiled_vae=args.tiled_vae,
        channels_last=args.channels_last,
        cudnn_benchmark=args.cudnn_benchmark,
        host_only=args.host_only,
    )


def run_command(args: argparse.Namespace) -> int:
    from dvd.bench.benchmark import run_bench

    result = run_bench(settings_from_args(args))
    print(json.dumps(result) if args.json else format_table(result))
    return 0


STAGE_LABELS = {
    "read": "read+decode",
    "resize": "resize",
    "transfer": "transfer",
    "vae_encode": "VAE encode",
    "dit": "DiT",
    "vae_decode": "VAE decode",
    "stitch": "stitch",
    "resize_back": "resize back",
    "write": "write",
}


def format_table(result: dict) -> str:
    """The report as a text table (--json gives every field)."""
    flops = result["flops"] or {}
    rates = result["flops_per_second"] or {}

    def on(name: str) -> str:
        return "on" if result[name] else "off"

    switches = (
        f"fold {on('fold')}, precomputed time {on('precompute_time')}, compile {on('compile')}, attention "
        f"{result['attention_backend'] or 'default'}, tiled VAE {on('tiled_vae')}, channels-last VAE "
        f"{on('channels_last')}, cuDNN benchmark {on('cudnn_benchmark')}"
    )
    header = (
        f"dvd bench: {result['model']} on {result['device']} ({result['dtype']}, {result['threads']} threads); "
        f"{result['frames']} frames of the {result['input']} ({_size(result['source_size'])}) at "
        f"{_size(result['model_size'])}; window {result['window']}, overlap {result['overlap']}, "
        f"{result['batch_windows']} per call, {result['windows']} windows in {result['shots']} shot(s); {switches}"
    )
    lines = [
        header,
        f"{'stage':<12} {'s/window':>10} {'share':>7} {'GFLOP/window':>13} {'TFLOP/s':>9}",
    ]
    for name, seconds in result["stages"].items():
        flop = f"{flops[name] / 1e9:13.1f}" if name in flops else f"{'':13}"
        rate = f"{rates[name] / 1e12:9.3f}" if rates.get(name) else f"{'':9}"
        lines.append(f"{STAGE_LABELS.get(name, name):<12} {seconds:10.4f} {result['shares'][name]:7.1%} {flop} {rate}")
    device_peak = result["peak_device_bytes"]
    device_text = "n/a off CUDA" if device_peak is None else f"{device_peak / 2**30:.2f} GiB"
    lines.append(
        f"end to end: {result['fps']:.2f} frames/s ({result['seconds']:.2f} s; setup {result['setup_seconds']:.1f} s, "
        f"warm-up {result['warm_up_seconds']:.1f} s untimed); peak host RSS {result['peak_rss_bytes'] / 2**30:.2f} "
        f"GiB; peak device memory {device_text}"
    )
    return "\n".join(lines)


def _size(hw: list[int]) -> str:
    return f"{hw[0]}x{hw[1]}"
