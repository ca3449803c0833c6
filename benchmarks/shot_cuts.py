"""Shot-aware stitching where the truth is known: a synthetic video of several procedural rooms joined by hard cuts.

Each shot is a held-out scene of the procedural world (`dvd.data.procedural`, exact depth); every other shot is the
same kind of room built `--scale` times larger (a uniformly scaled world renders the same pictures, so its exact
depth is the rendered depth times the factor): neighbouring shots have very different depth ranges. The video runs
through the real engine (`VideoEngine`, the shipped proof model, `--weights proof`) twice: `--cuts auto` (shots found
by the detector, one fresh stream per shot) and `--cuts off` (windows fitted across the cuts, as before). Each
planted shot is then aligned to its truth with ONE global scale and shift (the evaluation alignment,
`dvd.evaluation.alignment`), and we report AbsRel per shot and for the first window after each cut, where a fit
across the cut does its damage, plus the cut frames the detector found.

Then the real case: the first `--real-frames` frames of ../shared/data/videos/davis_rollercoaster.mp4 followed by
those of tokyo_walk.mp4, both resized to 270x480, through the detector (skipped when ../shared is absent): where it
cuts, and the detector's score at the cut against the highest score within the shots.

    python benchmarks/shot_cuts.py [--shots 4 --frames 24 --window 5 --overlap 2 --scale 8 --real-frames 30]

Prints the tables and appends them to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from dvd.data.procedural import render_clip, split_seed
from dvd.data.raster import resize_frames
from dvd.engine.shots import ShotDetector
from dvd.engine.video import VideoEngine, VideoSettings
from dvd.evaluation.alignment import align_to_depth
from dvd.evaluation.metrics import depth_metrics
from dvd.io.readers import open_source
from dvd.pipeline.dvd_pipeline import DVDPipeline

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SIZE = 64  # the proof model's training size
VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
REAL_SIZE = (270, 480)


def planted_video(shots: int, frames: int, scale: float) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """RGB float [T, SIZE, SIZE, 3], exact depth [T, SIZE, SIZE] and the planted cut frames."""
    rgb, depth = [], []
    for shot in range(shots):
        clip = render_clip(split_seed("test", shot), frames, SIZE, SIZE)
        rgb.append(clip.rgb.astype(np.float32) / 255)
        depth.append(clip.depth * (scale if shot % 2 else 1.0))
    return np.concatenate(rgb), np.concatenate(depth), [frames * shot for shot in range(1, shots)]


def predict(pipe: DVDPipeline, rgb: np.ndarray, settings: VideoSettings) -> tuple[np.ndarray, VideoEngine, float]:
    engine = VideoEngine(pipe.predict_windows, settings)
    started = time.perf_counter()
    disparity = np.stack(list(engine.run(iter(rgb), (SIZE, SIZE))))
    return disparity, engine, time.perf_counter() - started


def abs_rel(disparity: np.ndarray, depth: np.ndarray) -> float:
    """AbsRel of `disparity` after one global scale and shift fitted against `depth` (the evaluation protocol)."""
    valid = depth > 0
    aligned, _, _ = align_to_depth(disparity, depth, valid, float(depth[valid].min()), float(depth[valid].max()))
    return depth_metrics(aligned, depth, valid)["abs_rel"]


def real_cut(frames: int) -> str:
    """The detector on davis_rollercoaster + tokyo_walk (each `frames` frames, resized to REAL_SIZE)."""
    names = ("davis_rollercoaster.mp4", "tokyo_walk.mp4")
    if not all((VIDEOS / name).is_file() for name in names):
        return f"\nReal clips: skipped, {VIDEOS} is absent.\n"
    video = [
        resize_frames(frame[None], REAL_SIZE)[0]
        for name in names
        for frame in open_source(VIDEOS / name).frames(frames)
    ]
    detector = ShotDetector("auto")
    started = time.perf_counter()
    cuts = [cut for frame in video if (cut := detector.observe(frame)) is not None and cut.cause != "start"]
    per_frame = (time.perf_counter() - started) / len(video) * 1000
    # The highest score inside the shots: how far below the threshold ordinary motion stays.
    scorer, scores = ShotDetector("auto", threshold=1e9), []
    for index, frame in enumerate(video):
        scorer.observe(frame)
        if index not in (0, frames):
            scores.append(scorer.last_score)
    found = [(cut.index, round(cut.score, 1)) for cut in cuts]
    return (
        f"\nReal clips (davis_rollercoaster + tokyo_walk, {frames} frames each, resized to {REAL_SIZE[1]}x"
        f"{REAL_SIZE[0]}, threshold {detector.threshold:g}): cuts found "
        f"(frame, score) {found}, planted at {frames}; highest score within the shots {max(scores):.1f}; "
        f"detection {per_frame:.2f} ms a frame.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--frames", type=int, default=24, help="frames per shot")
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--overlap", type=int, default=2)
    parser.add_argument("--scale", type=float, default=8.0, help="depth factor of every other shot")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--real-frames", type=int, default=30, help="frames of each real clip")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rgb, depth, cuts = planted_video(args.shots, args.frames, args.scale)
    bounds = [0, *cuts, len(rgb)]
    pipe = DVDPipeline.from_pretrained("proof", device="cpu")
    rows, found = {}, {}
    for mode in ("auto", "off"):
        settings = VideoSettings(SIZE, SIZE, args.window, args.overlap, cuts=mode)
        disparity, engine, seconds = predict(pipe, rgb, settings)
        per_shot = [abs_rel(disparity[s:e], depth[s:e]) for s, e in itertools.pairwise(bounds)]
        # The first window after each cut, aligned with the rest of its shot: where a fit across the cut lands.
        after_cut = [abs_rel(disparity[s:e], depth[s:e]) for s, e in zip(cuts, [cut + args.window for cut in cuts])]
        rows[mode] = (per_shot, after_cut, seconds)
        found[mode] = (engine.shots.as_meta(len(rgb)), engine.failed_seams)

    depth_ranges = ", ".join(
        f"{np.percentile(depth[s:e], 5):.1f}-{np.percentile(depth[s:e], 95):.1f} m"
        for s, e in itertools.pairwise(bounds)
    )
    header = (
        f"### shot cuts, {datetime.date.today().isoformat()} (`python benchmarks/shot_cuts.py --shots {args.shots} "
        f"--frames {args.frames} --window {args.window} --overlap {args.overlap} --scale {args.scale:g}`)\n\n"
        f"Machine: {os.cpu_count()}-core {platform.machine()} CPU, {platform.system()}, torch "
        f"{torch.__version__} ({args.threads} thread(s)). {args.shots} held-out procedural scenes of {args.frames} "
        f"frames at {SIZE}x{SIZE}, joined by hard cuts at frames {cuts}; every other shot's world is {args.scale:g}x "
        f"larger (5th-95th percentile depth per shot: {depth_ranges}). Model: the shipped proof model (`--weights "
        f"proof`), window {args.window}, overlap {args.overlap}, openworld stitching. AbsRel after one global "
        "scale/shift per planted shot (evaluation alignment); lower is better.\n\n"
    )
    shot_columns = "".join(f" shot {k} |" for k in range(args.shots))
    table = (
        f"| --cuts |{shot_columns} mean | first window after each cut (mean) | seconds |\n"
        f"|---|{'---|' * args.shots}---|---|---|\n"
    )
    for mode, (per_shot, after_cut, seconds) in rows.items():
        cells = "".join(f" {value:.4f} |" for value in per_shot)
        table += (
            f"| {mode} |{cells} {np.mean(per_shot):.4f} | {np.mean(after_cut) if after_cut else float('nan'):.4f} |"
            f" {seconds:.1f} |\n"
        )
    detected = [shot["start"] for shot in found["auto"][0] if shot["cause"] == "detected"]
    seams = {mode: len(seams) for mode, (_, seams) in found.items()}
    notes = (
        f"\nCuts found by `--cuts auto`: {detected} (planted: {cuts}); shots in meta.json: "
        f"{[(shot['start'], shot['end'], shot['cause']) for shot in found['auto'][0]]}. Failed seams flagged: "
        f"auto {seams['auto']}, off {seams['off']}.\n"
    )
    notes += real_cut(args.real_frames)
    print(header + table + notes)
    with RESULTS.open("a", encoding="utf-8") as results:
        results.write("\n" + header + table + notes)


if __name__ == "__main__":
    main()
