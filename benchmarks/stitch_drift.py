"""Drift of window stitching on a long synthetic video where the truth is known: chain presets vs `global`.

Each window's "prediction" is the true disparity under a planted per-window affine (scale ~ exp(N(0, 0.1)), shift
~ N(0, 0.05)), with per-frame jitter of that affine (scale 2 %, shift 0.01) and pixel noise (0.02) on top.
Everything runs through the real streaming engine (`dvd.engine.stream.stream_disparity`). The stitched video
is then aligned to the truth with ONE least-squares affine for the whole sequence (as evaluation does), and we
report AbsRel over the whole video and for the worst frame (a chain that drifts cannot be fixed by one affine), and
the scale drift: the RMS over frames of |log s_t|, where s_t is the least-squares slope of the aligned frame t
against the true frame t (0 = every frame has the scale of the whole video).

    python benchmarks/stitch_drift.py [--frames 3000 --window 81 --overlap 21 --seeds 10]

Prints a table and appends it to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
from pathlib import Path

import numpy as np

from dvd.engine.scale_shift import fit_scale_shift
from dvd.engine.stream import stream_disparity

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SIZE = 16


def true_disparity(num_frames: int) -> np.ndarray:
    """A smooth moving pattern in [0.3, 0.9], [T, SIZE, SIZE]."""
    t = np.arange(num_frames)[:, None, None]
    y = np.arange(SIZE)[None, :, None] / SIZE
    x = np.arange(SIZE)[None, None, :] / SIZE
    return (0.6 + 0.3 * np.sin(2 * np.pi * (x + t / 97.0)) * np.cos(2 * np.pi * (y - t / 131.0))).astype(np.float32)


def planted_predictor(truth: np.ndarray, seed: int):
    """A fake model: frames carry their index in every pixel; each window gets its own planted affine and noise."""

    def predict_windows(windows: list[np.ndarray]) -> list[np.ndarray]:
        outputs = []
        for frames in windows:
            index = frames[:, 0, 0, 0].astype(np.int64)
            # Seeded by the window's last frame so the same window always gets the same error (batching-safe).
            rng = np.random.default_rng([seed, int(index[-1])])
            scale = np.exp(rng.normal(0.0, 0.1)) * (1.0 + rng.normal(0.0, 0.02, (len(index), 1, 1)))
            shift = rng.normal(0.0, 0.05) + rng.normal(0.0, 0.01, (len(index), 1, 1))
            noise = rng.normal(0.0, 0.02, (len(index), SIZE, SIZE))
            outputs.append((truth[index] * scale + shift + noise).astype(np.float32))
        return outputs

    return predict_windows


def errors(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """(AbsRel over the video, AbsRel of the worst frame, scale drift) after one affine of pred onto truth."""
    scale, shift = fit_scale_shift(pred, truth)
    aligned = pred * scale + shift
    rel = np.abs(aligned - truth) / truth
    frame_scales = np.array([fit_scale_shift(t, a)[0] for t, a in zip(truth, aligned)])
    return float(rel.mean()), float(rel.mean(axis=(1, 2)).max()), float(np.sqrt(np.mean(np.log(frame_scales) ** 2)))


def run(num_frames: int, window: int, overlap: int, seed: int, stitch: str) -> tuple[float, float, float]:
    truth = true_disparity(num_frames)
    frames = np.broadcast_to(np.arange(num_frames, dtype=np.float32)[:, None, None, None], (num_frames, SIZE, SIZE, 3))
    stitched = np.stack(
        list(
            stream_disparity(
                iter(frames), planted_predictor(truth, seed), window=window, overlap=overlap, stitch=stitch
            )
        )
    )
    return errors(stitched, truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--window", type=int, default=81)
    parser.add_argument("--overlap", type=int, default=21)
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()

    rows = []
    for stitch in ("openworld", "benchmark", "global"):
        per_seed = np.array([run(args.frames, args.window, args.overlap, seed, stitch) for seed in range(args.seeds)])
        rows.append((stitch, per_seed.mean(axis=0), per_seed.std(axis=0)))

    header = (
        f"### stitch drift, {datetime.date.today().isoformat()} ({os.cpu_count()}-core {platform.machine()} CPU, "
        f"{platform.system()}, numpy only; `python benchmarks/stitch_drift.py --frames {args.frames} "
        f"--window {args.window} --overlap {args.overlap} --seeds {args.seeds}`)\n\n"
        "Synthetic 16x16 video with planted per-window affine errors (see the script's docstring); errors after one "
        "global affine, mean ± std over seeds (lower is better).\n\n"
        "| stitch | AbsRel (video) | AbsRel (worst frame) | scale drift RMS abs(log s_t) |\n|---|---|---|---|\n"
    )
    table = "".join(
        f"| {name} | " + " | ".join(f"{m:.4f} ± {s:.4f}" for m, s in zip(mean, std)) + " |\n"
        for name, mean, std in rows
    )
    print(header + table)
    with RESULTS.open("a", encoding="utf-8") as results:
        results.write("\n" + header + table)


if __name__ == "__main__":
    main()
