"""Long-video alignment measured on real model outputs: every stitch preset on long procedural videos.

`benchmarks/stitch_drift.py` plants per-window errors on the truth; no model is involved. Here the windows are
what a model predicts: long held-out scenes of the procedural world (exact depth; the camera orbits the room, so
late frames look at other walls than the first window did) run through the real video engine with a model, once
per preset. For each run, after ONE least-squares fit in disparity space for the whole video (as evaluation does):

- AbsRel and δ1 of the aligned depth against the exact depth;
- scale drift: the standard deviation over frames of log s_t, where s_t is the slope of the least-squares fit of
  the aligned frame t to the true disparity of frame t (0 = every frame has the scale of the whole video);
- seam error: the mean over seams of the mean |aligned new window - stitched| over the overlap (the engine's
  `WindowReport.overlap_mae`, in the units of the stitched video, divided by its mean so runs compare);
- seconds for the run (model included).

    python benchmarks/stitch_end_to_end.py                         # the shipped proof model, 64x64, 3 scenes
    python benchmarks/stitch_end_to_end.py --weights DIR --device cuda --size 480 --window 81 --overlap 21

Prints a table and appends it, with the command, to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dvd.data.procedural import SyntheticClip, render_clip, split_seed
from dvd.engine.scale_shift import fit_scale_shift
from dvd.engine.stream import WindowReport
from dvd.engine.video import VideoEngine, VideoSettings
from dvd.options import STITCH_PRESETS
from dvd.pipeline.dvd_pipeline import DVDPipeline
from dvd.training.validation import score_disparity

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def scale_drift(disparity: np.ndarray, depth: np.ndarray, valid: np.ndarray) -> float:
    """Std over frames of the log slope of each frame's fit to the true disparity, after one global fit."""
    truth = np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0)
    scale, shift = fit_scale_shift(disparity, truth, valid)
    aligned = disparity * scale + shift
    slopes = np.array([fit_scale_shift(a, t, v)[0] for a, t, v in zip(aligned, truth, valid)])
    return float(np.std(np.log(np.clip(slopes, 1e-6, None))))


def run_preset(
    pipe: DVDPipeline, rgb: np.ndarray, settings: VideoSettings
) -> tuple[np.ndarray, list[WindowReport], float]:
    """(stitched disparity [T,H,W], the window reports, seconds) through the one video engine."""
    reports: list[WindowReport] = []
    engine = VideoEngine(pipe.predict_windows, settings, reports.append)
    started = time.perf_counter()
    frames = (frame.astype(np.float32) / 255.0 for frame in rgb)
    disparity = np.stack(list(engine.model_frames(frames, rgb.shape[1:3])))
    return disparity, reports, time.perf_counter() - started


def measure(pipe: DVDPipeline, clip: SyntheticClip, settings: VideoSettings) -> dict[str, float]:
    disparity, reports, seconds = run_preset(pipe, clip.rgb, settings)
    valid = np.isfinite(clip.depth) & (clip.depth > 0)
    scores = score_disparity(disparity, clip.depth, valid)
    seams = [r.overlap_mae for r in reports if r.overlap_mae is not None]
    return {
        "abs_rel": scores["abs_rel"],
        "delta1": scores["delta1"],
        "drift": scale_drift(disparity, clip.depth, valid),
        "seam": float(np.mean(seams)) / max(float(disparity.mean()), 1e-9) if seams else 0.0,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="proof", help="model to run (default: the shipped proof model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--frames", type=int, default=600, help="frames per scene (default %(default)s)")
    parser.add_argument("--scenes", type=int, default=3, help="held-out scenes (default %(default)s)")
    parser.add_argument("--size", type=int, default=64, help="square render and model size (default %(default)s)")
    parser.add_argument("--window", type=int, default=9)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--presets", default=",".join(STITCH_PRESETS), help="comma-separated (default: all)")
    parser.add_argument("--no-record", action="store_true", help="print the table without appending it to RESULTS.md")
    args = parser.parse_args()

    torch.manual_seed(0)
    pipe = DVDPipeline.from_pretrained(args.weights, device=args.device, dtype=args.dtype)
    presets = [name.strip() for name in args.presets.split(",") if name.strip()]
    results: dict[str, list[dict[str, float]]] = {name: [] for name in presets}
    for scene in range(args.scenes):
        clip = render_clip(split_seed("test", scene), args.frames, args.size, args.size)
        for name in presets:
            settings = VideoSettings(args.size, args.size, args.window, args.overlap, name)
            row = measure(pipe, clip, settings)
            results[name].append(row)
            print(f"scene {scene} {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()), file=sys.stderr)

    command = "python benchmarks/stitch_end_to_end.py " + shlex.join(sys.argv[1:])
    header = (
        f"### stitching end to end on model outputs, {datetime.date.today().isoformat()} "
        f"({os.cpu_count()}-core {platform.machine()} CPU, {platform.system()}, torch {torch.__version__}; "
        f"`{command.strip()}`)\n\n"
        f"Weights `{args.weights}`, {args.scenes} held-out procedural scenes of {args.frames} frames at "
        f"{args.size}x{args.size}, window {args.window}, overlap {args.overlap}; one global disparity fit per video; "
        "mean ± std over scenes (lower is better except δ1).\n\n"
        "| stitch | AbsRel | δ1 | scale drift (std log s_t) | seam error (rel.) | seconds |\n"
        "|---|---|---|---|---|---|\n"
    )
    table = ""
    for name, rows in results.items():
        cells = []
        for key in ("abs_rel", "delta1", "drift", "seam", "seconds"):
            values = np.array([row[key] for row in rows])
            cells.append(f"{values.mean():.4f} ± {values.std():.4f}" if key != "seconds" else f"{values.mean():.1f}")
        table += f"| {name} | " + " | ".join(cells) + " |\n"
    print(header + table)
    if args.no_record:
        return
    with RESULTS.open("a", encoding="utf-8") as results_file:
        results_file.write("\n" + header + table)


if __name__ == "__main__":
    main()
