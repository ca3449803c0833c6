"""The paper's Fig. 11 in miniature: DVD's single-pass regression against the same backbone trained as a generative
(flow-matching) model and sampled in T Euler steps, on the procedural world with the tiny proof setup.

1. One start model for both: the trained tiny VAE of the shipped proof model (so decoded latents mean something)
   with a fresh tiny Wan DiT (2 layers, width 256; `dvd.weights.tiny.tiny_transformer`), saved as a DVD folder.
2. Two `dvd train` runs from it (`dvd.training.trainer.train`, train_proof.py's recipe: full fine-tune, AdamW
   lr 5e-4, one batch of 4 images or 1 clip per step on the synthetic 'train' split), with equal steps:
   deterministic (`train.objective: regression`, DVD's L2 + LMR loss) and generative (`train.objective:
   generative`, the standard objective: MSE on the velocity, logit-normal noise levels).
3. Both scored by `dvd eval`'s code path (`dvd.evaluation.runner` with the model's pipeline, sliding windows and the
   benchmark stitch) on held-out clips of the synthetic 'test' split (no scene shared with training) at the synthetic
   benchmark's 96x128: AbsRel and δ1 after one least-squares scale/shift per clip in disparity. The generative
   model is sampled at T = 1, 4, 10 with several noise seeds (`dvd predict --steps T --seed S`), reporting the
   mean, the standard deviation and the range over seeds.
4. The table is printed and appended, with this command, to benchmarks/RESULTS.md.

    python benchmarks/generative_vs_deterministic.py      # 580 s on the 2-core development CPU with these defaults
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from train_proof import RESULTS, cpu_name, dit_config

from dvd.data.benchmarks.synthetic import Synthetic
from dvd.evaluation.runner import FrameSelection, ModelPredictions, evaluate
from dvd.model.dvd_model import DVDModel
from dvd.pipeline.dvd_pipeline import DVDPipeline
from dvd.training.config import parse_config
from dvd.training.trainer import train
from dvd.weights import load_weights
from dvd.weights.tiny import tiny_transformer

SCRIPT = "benchmarks/generative_vs_deterministic.py"


def start_model(folder: Path, seed: int) -> Path:
    """The proof model's trained VAE with a fresh tiny DiT: what both objectives train from."""
    vae = load_weights("proof").model.vae
    DVDPipeline.from_model(DVDModel(tiny_transformer(seed), vae)).save_pretrained(folder)
    return folder


def train_run(start: Path, output: Path, objective: str, loss: str, args: argparse.Namespace) -> tuple[Path, float]:
    """One `dvd train` of the proof recipe with `objective` and `loss`; its merged export and its seconds."""
    config = dit_config(start, output, loss, args.train_steps, args.size, args.frames, args.seed)
    config["train"]["objective"] = objective
    started = time.perf_counter()
    result = train(parse_config(config))
    return result.exports[0], time.perf_counter() - started


def held_out_split(folder: Path, clips: int) -> Path:
    """A split file of the first `clips` clips of the synthetic 'test' split (the benchmark's own lists 4)."""
    path = folder / "synthetic_heldout.txt"
    path.write_text("".join(f"test_{index:04d}\n" for index in range(clips)))
    return path


def score(pipe: DVDPipeline, split: Path, args: argparse.Namespace) -> dict[str, float]:
    """Mean AbsRel and δ1 over the held-out clips, and seconds per clip, as `dvd eval` computes them."""
    predictor = ModelPredictions(pipe, args.window, args.overlap, "benchmark")
    started = time.perf_counter()
    run = evaluate(
        Synthetic(None, str(split)), predictor, FrameSelection(frames=args.eval_frames), "run", {}, log=lambda _: None
    )
    seconds = (time.perf_counter() - started) / len(run["sequences"])
    return {"abs_rel": run["mean"]["abs_rel"], "delta1": run["mean"]["delta1"], "seconds": seconds}


def spread(values: list[float]) -> str:
    """mean ± std (min..max) of one metric over seeds; the bare value for one run."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    array = np.array(values)
    return f"{array.mean():.4f} ± {array.std():.4f} ({array.min():.4f}..{array.max():.4f})"


def markdown(rows: list[tuple[str, str, list[dict[str, float]]]], timings: dict[str, float], args) -> str:
    command = (
        f"python {SCRIPT} --train-steps {args.train_steps} --size {args.size} --frames {args.frames} "
        f"--eval-clips {args.eval_clips} --eval-frames {args.eval_frames} --window {args.window} "
        f"--overlap {args.overlap} --sample-steps {' '.join(map(str, args.sample_steps))} --seeds {args.seeds} "
        f"--seed {args.seed} --threads {args.threads}"
    )
    lines = [
        f"### generative vs deterministic, {datetime.date.today().isoformat()} (`{command}`)",
        "",
        (
            f"Machine: {cpu_name()}, {torch.get_num_threads()} torch thread(s) on a {os.cpu_count()}-core CPU "
            f"shared with other jobs, torch {torch.__version__}; {timings['total']:.0f} s in all."
        ),
        (
            f"Start model (both runs): the proof model's trained tiny VAE + a fresh tiny Wan DiT (2 layers, width "
            f"256, seed {args.seed}). Training: synthetic 'train' split at {args.size}x{args.size}, clips of "
            f"{args.frames} frames + single images, full fine-tune, AdamW lr 5e-4, {args.train_steps} steps of one "
            f"batch (4 images or 1 clip) each: deterministic = `train.objective: regression`, DVD's L2 + LMR loss "
            f"({timings['regression']:.0f} s); generative = `train.objective: generative`, MSE on the velocity, "
            f"logit-normal sigma, the DiT's input widened to [x_sigma, RGB latent] ({timings['generative']:.0f} s)."
        ),
        (
            f"Held-out: {args.eval_clips} clips of the synthetic 'test' split, first {args.eval_frames} frames at "
            f"96x128, windows of {args.window} overlapping by {args.overlap}, benchmark stitch, through `dvd eval`'s "
            "code path (one least-squares scale/shift per clip in disparity, AbsRel and δ1 averaged over clips). "
            f"Generative: T Euler steps from noise; mean ± std (min..max) over noise seeds 0..{args.seeds - 1}."
        ),
        "",
        "| model | T (DiT calls per window) | AbsRel ↓ | δ1 ↑ | s per clip |",
        "|---|---|---|---|---|",
    ]
    for name, steps, scores in rows:
        abs_rel = spread([s["abs_rel"] for s in scores])
        delta1 = spread([s["delta1"] for s in scores])
        seconds = np.mean([s["seconds"] for s in scores])
        lines.append(f"| {name} | {steps} | {abs_rel} | {delta1} | {seconds:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-steps", type=int, default=800, help="optimiser steps of each run (equal)")
    parser.add_argument("--size", type=int, default=64, help="training frame side")
    parser.add_argument("--frames", type=int, default=5, help="training clip length (4n+1)")
    parser.add_argument("--eval-clips", type=int, default=8, help="held-out clips of the 'test' split")
    parser.add_argument("--eval-frames", type=int, default=9, help="frames of each held-out clip")
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--overlap", type=int, default=2)
    parser.add_argument("--sample-steps", type=int, nargs="+", default=[1, 4, 10], help="the generative T values")
    parser.add_argument("--seeds", type=int, default=5, help="noise seeds per T (0, 1, ...)")
    parser.add_argument("--seed", type=int, default=0, help="start DiT and training seed")
    # One thread, as train_proof.py: spin-waiting OpenMP threads slow a small shared CPU down.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-results", action="store_true", help="print the table without appending it")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="dvd-generative-") as temporary:
        work = Path(temporary)
        start = start_model(work / "start", args.seed)
        split = held_out_split(work, args.eval_clips)
        exports = {}
        for objective, loss in (("regression", "lmr"), ("generative", "l2")):
            exports[objective], timings[objective] = train_run(start, work / objective, objective, loss, args)
        deterministic = DVDPipeline.from_pretrained(exports["regression"], device="cpu", dtype="float32")
        rows = [("deterministic (DVD: one pass, L2 + LMR)", "1", [score(deterministic, split, args)])]
        generative = DVDPipeline.from_pretrained(exports["generative"], device="cpu", dtype="float32")
        for steps in args.sample_steps:
            scores = []
            for seed in range(args.seeds):
                generative.set_sampling(steps, seed)
                scores.append(score(generative, split, args))
            rows.append(("generative (flow matching, MSE on v)", str(steps), scores))
        timings["total"] = time.perf_counter() - began
        table = markdown(rows, timings, args)
    print(table)
    if not args.no_results:
        with RESULTS.open("a") as handle:
            handle.write("\n" + table)


if __name__ == "__main__":
    main()
