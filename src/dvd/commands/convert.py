"""`dvd convert`: load any supported weights once and save them in dvd's own format (LoRA merged)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert official DVD / Wan2.1 weights to dvd's format, so later loads take one step",
        description="Load weights in any supported layout (official DVD checkpoint + Wan2.1 VAE, Wan2.1 base, "
        "a Hub id) and write a diffusers pipeline folder (model_index.json, transformer/, vae/), LoRA merged. "
        "Pass the output folder to --weights of predict/eval/train afterwards.",
    )
    parser.add_argument(
        "--weights",
        required=True,
        help="source: a folder or checkpoint file, or a Hub repository id (e.g. FayeHongfeiZhang/DVD)",
    )
    parser.add_argument("-o", "--output", required=True, type=Path, help="folder to create")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="storage precision of the written weights (default: float32, exact)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output folder written by dvd convert (a DVDPipeline folder holding nothing "
        "else); anything else is never replaced",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: torch and diffusers take seconds to load, and --help should not wait.
    from dvd.io.atomic import atomic_directory, check_output, prepare_output_folder
    from dvd.pipeline.dvd_pipeline import DVDPipeline, pipeline_folder_problem, resolve_dtype
    from dvd.weights import load_weights
    from dvd.weights.about import read_defaults
    from dvd.weights.saving import write_errors

    output: Path = args.output
    check_output(output, args.overwrite, pipeline_folder_problem)
    prepare_output_folder(output.parent)
    started = time.perf_counter()
    loaded = load_weights(args.weights)
    loaded.model.to_precision(resolve_dtype(args.dtype, loaded.model.device))
    with write_errors(output), atomic_directory(output, args.overwrite, pipeline_folder_problem) as staging:
        # The model's inference defaults (the proof model's sizes and windows) go along into model_index.json.
        DVDPipeline.from_model(loaded.model, read_defaults(args.weights)).save_pretrained(staging)
    print(f"converted {loaded.weights_id} -> {output} ({args.dtype}, {time.perf_counter() - started:.1f} s)")
    return 0
