"""Peak host memory of the whole `dvd predict` path vs video length: does RAM stay flat on long videos?

Writes a synthetic 960x540 video (moving pattern, H.264) of each length and tiny random weights in the official
format, then runs `dvd predict` (default outputs npy + mp4, default window 81 / overlap 21, model size 32x64) on
each in its own subprocess and reads that process's peak RSS from the kernel (wait4). The issue's target:
peak(2000 frames) <= 1.2 x peak(200 frames).

    python benchmarks/memory_long_video.py [--lengths 200 2000]

Prints a table and appends it to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from dvd.weights.tiny import write_tiny_official_weights

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEIGHT, WIDTH, FPS = 540, 960, 24
PREDICT_ARGS = ["--height", "32", "--width", "48", "--quiet"]
# Runs `dvd predict` through the real entry point (registering the command if the CLI does not list it yet).
DRIVER = (
    "import sys, dvd.cli as c; "
    "c.COMMAND_MODULES = sorted(set(c.COMMAND_MODULES) | {'predict'}); "
    "sys.exit(c.main(sys.argv[1:]))"
)


def write_video(
    path: Path, num_frames: int, size: tuple[int, int] = (HEIGHT, WIDTH), fps: int = FPS, drift: float = 1 / 50
) -> Path:
    """An H.264 video of a colour pattern drifting by `drift` radians a frame (960x540 by default), frame by frame."""
    height, width = size
    y, x = np.meshgrid(
        np.linspace(0, 1, height, dtype=np.float32), np.linspace(0, 1, width, dtype=np.float32), indexing="ij"
    )
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "23"})
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        for index in range(num_frames):
            phase = index * drift
            rgb = np.stack(
                [np.sin(6 * x + phase) * np.cos(4 * y), np.sin(3 * y - phase), np.cos(5 * (x + y) + phase)], axis=-1
            )
            frame = av.VideoFrame.from_ndarray(((rgb * 0.5 + 0.5) * 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def peak_rss_of_predict(video: Path, weights: Path, out: Path) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of one `dvd predict` run in a fresh process."""
    env = dict(os.environ, OMP_NUM_THREADS="1")  # two spinning torch threads on a shared 2-core box crawl
    argv = [sys.executable, "-c", DRIVER, "predict", str(video), "-o", str(out), "--weights", str(weights)]
    started = time.perf_counter()
    process = subprocess.Popen(argv + PREDICT_ARGS, env=env)
    _, status, usage = os.wait4(process.pid, 0)  # reaps the child ourselves: Popen.wait would drop its rusage
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"dvd predict failed on {video} with exit code {process.returncode}")
    return usage.ru_maxrss / 1024, time.perf_counter() - started  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[200, 2000])
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="dvd-memory-") as scratch:
        root = Path(scratch)
        weights = write_tiny_official_weights(root / "weights")
        for length in args.lengths:
            video = root / f"synthetic_{length}.mp4"
            write_video(video, length)
            peak, seconds = peak_rss_of_predict(video, weights, root / "out")
            source_gib = length * HEIGHT * WIDTH * 3 * 4 / 2**30
            rows.append((length, peak, seconds, source_gib))
            print(f"{length} frames: peak RSS {peak:.0f} MiB in {seconds:.0f} s", flush=True)
            video.unlink()

    base = rows[0][1]
    header = (
        f"### memory vs video length, {datetime.date.today().isoformat()} ({os.cpu_count()}-core "
        f"{platform.machine()} CPU, {platform.system()}, tiny random model, CPU float32; "
        f"`python benchmarks/memory_long_video.py --lengths {' '.join(map(str, args.lengths))}`)\n\n"
        f"`dvd predict` on a synthetic {WIDTH}x{HEIGHT} H.264 video, {' '.join(PREDICT_ARGS)} (model size 32x64, "
        "window 81, overlap 21, outputs npy + mp4), each run in a fresh process; peak RSS from wait4. "
        "Target: peak at 2000 frames <= 1.2 x peak at 200.\n\n"
        f"| frames | peak RSS (MiB) | ratio to {rows[0][0]} frames | wall time (s) | the video as float32 (GiB) |\n"
        "|---|---|---|---|---|\n"
    )
    table = "".join(f"| {n} | {p:.0f} | {p / base:.3f} | {s:.0f} | {g:.2f} |\n" for n, p, s, g in rows)
    print(header + table)
    with RESULTS.open("a", encoding="utf-8") as results:
        results.write("\n" + header + table)


if __name__ == "__main__":
    main()
