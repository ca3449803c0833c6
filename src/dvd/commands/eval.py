"""`dvd eval`: score depth predictions on the paper's benchmarks, a generic GT folder or the synthetic split, and
render the tables of several runs side by side."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from dvd.commands.flags import add_device_arguments
from dvd.errors import DVDError
from dvd.options import DATASET_NAMES, STITCH_PRESETS, TAE_INTRINSICS

if TYPE_CHECKING:
    from dvd.io.atomic import Recogniser
    from dvd.model.backbone import FrameRule


PAPER_WINDOW = 45  # the paper's evaluation windows (45 frames overlapping by 9), for Wan's 4n+1 frame rule


def paper_window(rule: FrameRule) -> int:
    """The paper's window where the model's frame rule takes it, else the next length that fits (49 for 8n+1)."""
    return PAPER_WINDOW if rule.fits(PAPER_WINDOW) else max(rule.nearest(PAPER_WINDOW))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate depth on benchmarks (KITTI, ScanNet, Bonn, Sintel, NYUv2, DIODE, ETH3D, synthetic)",
        description="Score affine-invariant disparity against GT depth with the paper's protocol: one least-squares "
        "scale and shift per sequence in disparity space, then AbsRel, δ1-3, RMSE, ..., boundary F1 (Depth Pro) "
        "and, where available, the RGB-edge boundary F1, boundary recall and TAE. Predictions come from the model "
        "(--weights) or from files saved by any tool (--predictions).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", choices=DATASET_NAMES, help="a benchmark; its folder is --root")
    source.add_argument(
        "--gt-folder",
        type=Path,
        metavar="ROOT",
        help="generic layout ROOT/<sequence>/depth/*.npy (+ optional rgb/, mask/, matte/)",
    )
    source.add_argument(
        "--report",
        type=Path,
        nargs="+",
        metavar="RUN",
        help="render the tables of earlier runs (output folders or JSON files) side by side",
    )
    parser.add_argument("--root", type=Path, help="the benchmark's folder (docs/evaluation.md gives each layout)")
    parser.add_argument(
        "--split",
        help="a pinned sequence list by name (e.g. kitti_val, bonn_depthcrafter) or a "
        "text file with one sequence per line; default: the benchmark's own",
    )
    parser.add_argument(
        "--min-depth",
        type=float,
        help="metres; GT outside (min, max) is not scored and predictions "
        "are clipped to it (default: the benchmark's; required with --gt-folder)",
    )
    parser.add_argument("--max-depth", type=float, help="metres (see --min-depth)")
    parser.add_argument("--start", type=int, help="first frame evaluated (default 0; scannet_tae: 10)")
    parser.add_argument("--stride", type=int, default=1, help="evaluate every STRIDE-th frame (default %(default)s)")
    parser.add_argument(
        "--frames",
        type=int,
        help="evaluate the first N selected frames (e.g. 110 or 500); "
        "shorter sequences are skipped and reported (default: all; scannet_tae: 170)",
    )
    predictions = parser.add_mutually_exclusive_group()
    predictions.add_argument(
        "--predictions",
        type=Path,
        metavar="PRED",
        help="saved predictions: PRED/<sequence>.npy|.npz or PRED/<sequence>/disparity.npy",
    )
    predictions.add_argument("--weights", help="run DVD: a local weights folder or a Hub id")
    parser.add_argument(
        "--window",
        type=int,
        default=None,
        help=f"frames per window (default {PAPER_WINDOW}, the paper's eval; for a backbone whose frame rule 45 does "
        "not fit, e.g. 8n+1, the next count that fits: 49)",
    )
    parser.add_argument(
        "--overlap", type=int, default=9, help="frames shared by consecutive windows (default %(default)s)"
    )
    parser.add_argument(
        "--stitch",
        default="benchmark",
        choices=sorted(STITCH_PRESETS),
        help="window stitching preset (default %(default)s: the official evaluation's)",
    )
    parser.add_argument("--batch-windows", type=int, default=1, help="windows per model call (default %(default)s)")
    add_device_arguments(parser)
    parser.add_argument("--label", help="name of this run in tables (default: the weights or predictions name)")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="folder for summary.json, per_sequence.jsonl, "
        "summary.md and summary.csv (with --report: report.md and report.csv)",
    )
    parser.add_argument("--json", type=Path, help="also write the run (per sequence and averaged) to this file")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing -o folder or --json file written by dvd eval; anything else is never replaced",
    )
    parser.add_argument("--strict", action="store_true", help="fail instead of skipping unscorable sequences")
    parser.add_argument(
        "--tae-intrinsics",
        choices=TAE_INTRINSICS,
        default=TAE_INTRINSICS[0],
        help="TAE with per-frame intrinsics: back-project with the source frame's K and project with the target's "
        "(default), or 'vda': frame i's K both ways for the pair (i, i+1), as Video Depth Anything's script",
    )
    parser.set_defaults(run=run)


def _report(args: argparse.Namespace) -> int:
    from dvd.evaluation.report import load_run, paper_table, report_folder_problem, write_report

    if args.output is not None:
        _check_output(args.output, args.overwrite, report_folder_problem)
    runs = [load_run(path) for path in args.report]
    print(paper_table(runs), end="")
    if args.output is not None:
        for path in write_report(runs, args.output, args.overwrite):
            print(f"wrote {path}")
    return 0


def _check_output(path: Path, overwrite: bool, recognise: Recogniser) -> None:
    """Refuse a bad or taken output path before any data is read or any model is loaded."""
    from dvd.io.atomic import check_output, prepare_output_folder

    check_output(path, overwrite, recognise)
    prepare_output_folder(path.parent)


def run(args: argparse.Namespace) -> int:
    if args.report is not None:
        return _report(args)
    if args.predictions is None and args.weights is None:
        raise DVDError("give --predictions PRED to score saved predictions, or --weights W to run the model")
    # Imported here, not at the top: torch takes seconds to load, and --help should not wait.
    from dvd.data.benchmarks import open_dataset
    from dvd.evaluation.report import run_document_problem, run_markdown, write_run
    from dvd.evaluation.runner import FrameSelection, ModelPredictions, SavedPredictions, evaluate

    for path in (args.output, args.json):
        if path is not None:
            _check_output(path, args.overwrite, run_document_problem)
    if args.gt_folder is not None:
        reader = open_dataset("folder", args.gt_folder, args.split, args.min_depth, args.max_depth)
    else:
        reader = open_dataset(args.dataset, args.root, args.split, args.min_depth, args.max_depth)
    start = reader.start if args.start is None else args.start
    frames = reader.frames if args.frames is None else args.frames
    if start < 0 or args.stride < 1 or (frames is not None and frames < 1):
        raise DVDError("--start must be >= 0, --stride >= 1 and --frames >= 1")
    if args.predictions is not None:
        predictor = SavedPredictions(args.predictions, any_size=reader.crop_in_prediction_grid)
        label = args.label or args.predictions.resolve().name
    else:
        from dvd.engine.video import VideoSettings
        from dvd.pipeline.dvd_pipeline import DVDPipeline  # loads torch models; only needed when running DVD

        # The window flags are checked before the model loads (16x16 stands in for each sequence's own size).
        window = PAPER_WINDOW if args.window is None else args.window
        VideoSettings(16, 16, window, args.overlap, args.stitch, batch_windows=args.batch_windows).validate()
        pipeline = DVDPipeline.from_pretrained(args.weights, device=args.device, dtype=args.dtype)
        if args.window is None:
            window = paper_window(pipeline.model.frame_rule)
        predictor = ModelPredictions(pipeline, window, args.overlap, args.stitch, args.batch_windows)
        label = args.label or Path(str(args.weights)).name
    selection = FrameSelection(start, args.stride, frames)
    document = evaluate(
        reader, predictor, selection, label, predictor.settings, strict=args.strict, tae_intrinsics=args.tae_intrinsics
    )
    print()
    print(run_markdown(document), end="")
    for path in write_run(document, args.output, args.json, args.overwrite):
        print(f"wrote {path}")
    return 0
