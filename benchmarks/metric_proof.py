"""Metric alignment on the procedural world, where the exact metric depth is known: aligned DVD vs a flickering
metric model.

The "metric model" is a stand-in for Depth Pro or Depth Anything metric: for each frame it returns the TRUE depth
corrupted as single-image metric models are: a per-frame random scale (uniform ±20 %), a per-frame shift (uniform
±0.2 m) and per-pixel noise (5 % multiplicative). DVD is the tiny proof model shipped in the package (`proof`),
run through `predict_to_folder` on a PNG folder of the rendered clip, with `--metric` alignment on K keyframes
(`dvd.metric`), exactly as `dvd predict --metric` runs it. Both are compared with the truth on every frame:

- AbsRel: mean |d - d*| / d* per frame, averaged over frames (`dvd.evaluation.metrics.depth_metrics`);
- flicker: TAE, the temporal alignment error `dvd eval` reports (`dvd.evaluation.temporal`): each frame's depth
  re-projected into the next with the true cameras and compared there, x100; and the relative temporal difference
  of the official DVD evaluation (RMSE of the predicted vs true relative frame-to-frame change).

No metric is re-fitted to the truth: the rows are what a user gets. "DVD aligned to the truth" (one least-squares
scale and shift per clip against the exact depth, as `dvd eval` aligns) is the floor that the proof model's own
quality sets: the proof model is a 2-layer DiT trained for minutes, far less accurate than DVD. "Ideal relative
model" replaces DVD with the exact disparity under an unknown affine, through the same engine and alignment: it
shows what the alignment does with an accurate relative model.

    python benchmarks/metric_proof.py [--scenes 4 --frames 48 --keyframes 16] [--no-record]

Prints a table and appends it, dated, to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from dvd.data.procedural import render_clip, split_seed
from dvd.data.raster import unit_float
from dvd.engine.video import VideoSettings
from dvd.evaluation.alignment import align_to_depth
from dvd.evaluation.metrics import depth_metrics
from dvd.evaluation.temporal import relative_temporal_diff, temporal_alignment_error
from dvd.io.readers import open_source
from dvd.jobs.outputs import OutputSettings, predict_to_folder
from dvd.metric import MetricSettings
from dvd.pipeline.dvd_pipeline import DVDPipeline

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SIZE = 64  # the proof model was trained at 64x64 on 5-frame clips (benchmarks/train_proof.py)
WINDOW, OVERLAP = 5, 2
SCALE_ERROR, SHIFT_ERROR_M, NOISE = 0.2, 0.2, 0.05


def eight_bit(frame: np.ndarray) -> bytes:
    """A frame's 8-bit pixels, the key the stand-ins recognise it by (PNG keeps them exactly)."""
    return np.rint(unit_float(np.asarray(frame)) * 255).astype(np.uint8).tobytes()


class NoisyMetricModel:
    """Returns the true depth of each frame it is shown, corrupted per frame (seeded by the frame, so a frame
    always gets the same error). Frames are recognised by their 8-bit pixels, which a PNG folder keeps exactly."""

    name = f"stand-in: true depth x U(1 ± {SCALE_ERROR}) + U(± {SHIFT_ERROR_M} m), {NOISE:.0%} noise, per frame"

    def __init__(self, rgb: np.ndarray, depth: np.ndarray, seed: int) -> None:
        self.truth = {frame.tobytes(): index for index, frame in enumerate(rgb)}
        self.depth, self.seed = depth, seed

    def predict(self, frames: np.ndarray) -> np.ndarray:
        indices = [self.truth[eight_bit(frame)] for frame in frames]
        return np.stack([self.corrupted(index) for index in indices])

    def corrupted(self, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, index])
        scale = 1 + rng.uniform(-SCALE_ERROR, SCALE_ERROR)
        shift = rng.uniform(-SHIFT_ERROR_M, SHIFT_ERROR_M)
        noise = 1 + NOISE * rng.standard_normal(self.depth[index].shape)
        return np.maximum(self.depth[index] * scale * noise + shift, 0.05).astype(np.float32)


class IdealDVD:
    """Stands in for a perfect relative model: the exact disparity under an unknown affine (1.7 / depth + 0.3), for
    the frames it recognises; it shows what the alignment itself does, free of the proof model's own errors."""

    weights_id = "ideal: the true disparity under an unknown affine"

    def __init__(self, rgb: np.ndarray, depth: np.ndarray, pipe: DVDPipeline) -> None:
        self.truth = {frame.tobytes(): index for index, frame in enumerate(rgb)}
        self.depth, self.model = depth, pipe.model
        self.fit_settings = pipe.fit_settings  # windows and sizes as for the proof model it stands beside
        self.set_sampling, self.sampling_meta = pipe.set_sampling, pipe.sampling_meta  # a regression model's

    def predict_windows(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        indices = [[self.truth[eight_bit(frame)] for frame in window] for window in windows]
        return [(1.7 / self.depth[index] + 0.3).astype(np.float32) for index in indices]


def scores(depth: np.ndarray, truth: np.ndarray, intrinsics: np.ndarray, poses: np.ndarray) -> dict[str, float]:
    valid = (truth > 0) & (depth > 0)
    return {
        "abs_rel": depth_metrics(depth, truth, valid)["abs_rel"],
        "tae": temporal_alignment_error(np.where(valid, depth, 0), intrinsics, poses),
        "rel_temporal_diff": relative_temporal_diff(depth, truth, valid),
    }


def measure(pipe: DVDPipeline, scene: int, frames: int, keyframes: int, work: Path) -> dict[str, dict[str, float]]:
    """The three rows of one held-out scene."""
    clip = render_clip(split_seed("test", scene), frames, SIZE, SIZE)
    folder = work / f"scene{scene}"
    folder.mkdir()
    for index, frame in enumerate(clip.rgb):
        Image.fromarray(frame).save(folder / f"{index:04d}.png")
    model = NoisyMetricModel(clip.rgb, clip.depth, seed=scene)
    ideal, target = work / f"ideal{scene}", work / f"out{scene}"
    for dvd, folder_out in ((IdealDVD(clip.rgb, clip.depth, pipe), ideal), (pipe, target)):
        predict_to_folder(
            dvd,
            open_source(folder),
            folder_out,
            VideoSettings(SIZE, SIZE, WINDOW, OVERLAP),
            OutputSettings(formats=("npy",)),
            host_threads=False,
            metric=MetricSettings(model, keyframes=keyframes),
        )
    aligned = np.load(target / "depth_m.npy")
    noisy = np.stack([model.corrupted(index) for index in range(frames)])
    disparity = np.load(target / "disparity.npy")
    valid = clip.depth > 0
    oracle, _, _ = align_to_depth(disparity, clip.depth, valid, float(clip.depth.min()), float(clip.depth.max()))
    return {
        "metric model, every frame (noisy)": scores(noisy, clip.depth, clip.intrinsics, clip.poses),
        f"DVD (proof) aligned on {keyframes} keyframes": scores(aligned, clip.depth, clip.intrinsics, clip.poses),
        "DVD (proof) aligned to the truth (floor)": scores(oracle, clip.depth, clip.intrinsics, clip.poses),
        f"ideal relative model aligned on {keyframes} keyframes": scores(
            np.load(ideal / "depth_m.npy"), clip.depth, clip.intrinsics, clip.poses
        ),
    }


def mean_rows(results: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {row: {k: float(np.mean([r[row][k] for r in results])) for k in results[0][row]} for row in results[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=4, help="held-out scenes 0..N-1 (default 4)")
    parser.add_argument("--frames", type=int, default=48, help="frames per scene (default 48)")
    parser.add_argument("--keyframes", type=int, default=16, help="metric keyframes per clip (default 16)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    pipe = DVDPipeline.from_pretrained("proof", device="cpu")
    with tempfile.TemporaryDirectory() as work:
        rows = mean_rows([measure(pipe, s, args.frames, args.keyframes, Path(work)) for s in range(args.scenes)])
    command = "python benchmarks/metric_proof.py " + " ".join(sys.argv[1:])
    lines = [
        f"### metric alignment proof, {datetime.date.today()} (`{command.strip()}`)",
        "",
        (
            f"Procedural world, held-out scenes 0-{args.scenes - 1}, {args.frames} frames each at {SIZE}x{SIZE}; DVD = "
            f"the shipped proof model (window {WINDOW}, overlap {OVERLAP}); metric model = the true depth x U(1 ± "
            f"{SCALE_ERROR}) + U(± {SHIFT_ERROR_M} m) per frame, {NOISE:.0%} pixel noise; mean over scenes. Machine: "
            f"{platform.machine()}, CPU. TAE x100 and relative temporal difference measure frame-to-frame flicker "
            "(`dvd eval`'s temporal metrics)."
        ),
        "",
        "| depth | AbsRel | TAE | rel. temporal diff |",
        "|---|---|---|---|",
        *(
            f"| {name} | {r['abs_rel']:.4f} | {r['tae']:.3f} | {r['rel_temporal_diff']:.4f} |"
            for name, r in rows.items()
        ),
        "",
    ]
    print("\n".join(lines))
    if not args.no_record:
        with RESULTS.open("a", encoding="utf-8") as results:
            results.write("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
