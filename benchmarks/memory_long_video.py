"""Peak host memory of the whole `dvd predict` path vs video length: does RAM stay flat on long videos?

The setting of the long-jobs issue: a synthetic 320x240 H.264 video (a moving colour pattern) of each length,
tiny random weights in the official format, and `dvd predict` with --height 64 --width 64 (model size 64x96),
window 21, overlap 4, the default outputs (npy + mp4), each length in its own subprocess. The peak RSS comes from
the kernel (wait4); the RSS is also sampled every `--sample` seconds from /proc, to show spikes and growth over the
run. Target: peak(10,000 frames) <= 1.1 x peak(150 frames).

    python benchmarks/memory_long_video.py [--lengths 150 1500 10000] [--env MALLOC_ARENA_MAX=1]

`--env` runs `dvd predict` with extra environment variables (to compare allocator settings by hand; `dvd predict`
itself needs none). Prints a table and appends it to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import av
import numpy as np

from dvd.weights.tiny import write_tiny_official_weights

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEIGHT, WIDTH, FPS = 240, 320, 24
PREDICT_ARGS = ["--height", "64", "--width", "64", "--window", "21", "--overlap", "4", "--quiet"]
MODEL_SIZE = "64x96"
# Runs `dvd predict` through the real entry point (registering the command if the CLI does not list it yet).
DRIVER = (
    "import sys, dvd.cli as c; "
    "c.COMMAND_MODULES = sorted(set(c.COMMAND_MODULES) | {'predict'}); "
    "sys.exit(c.main(sys.argv[1:]))"
)


def write_video(
    path: Path, num_frames: int, size: tuple[int, int] = (HEIGHT, WIDTH), fps: int = FPS, drift: float = 1 / 50
) -> Path:
    """An H.264 video of a colour pattern drifting by `drift` radians a frame (320x240 by default), frame by frame."""
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


def _rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def peak_rss_of_predict(
    video: Path, weights: Path, out: Path, env: dict[str, str], sample: float, stitch: str
) -> tuple[float, float, list[float]]:
    """(peak RSS in MiB, wall seconds, RSS samples in MiB) of one `dvd predict` run in a fresh process."""
    # Two spinning torch threads on a shared 2-core box crawl.
    child_env = dict(os.environ, OMP_NUM_THREADS="1", **env)
    argv = [sys.executable, "-c", DRIVER, "predict", str(video), "-o", str(out), "--weights", str(weights)]
    started = time.perf_counter()
    process = subprocess.Popen([*argv, *PREDICT_ARGS, "--stitch", stitch], env=child_env)
    samples: list[float] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(sample):
            rss = _rss_mib(process.pid)
            if rss is not None:
                samples.append(rss)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, status, usage = os.wait4(process.pid, 0)  # reaps the child ourselves: Popen.wait would drop its rusage
    done.set()
    watcher.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"dvd predict failed on {video} with exit code {process.returncode}")
    return usage.ru_maxrss / 1024, time.perf_counter() - started, samples  # Linux reports KiB


def describe_samples(samples: list[float]) -> tuple[float, float, float]:
    """(median RSS, median of the first tenth, median of the last tenth) in MiB: spikes against the level, and
    growth from the start of the run to its end."""
    if not samples:
        return (float("nan"),) * 3
    tenth = max(1, len(samples) // 10)
    return float(np.median(samples)), float(np.median(samples[:tenth])), float(np.median(samples[-tenth:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[150, 1500, 10000])
    parser.add_argument("--env", nargs="*", default=[], metavar="NAME=VALUE", help="extra environment variables")
    parser.add_argument("--sample", type=float, default=0.5, help="seconds between RSS samples (default 0.5)")
    parser.add_argument("--stitch", default="openworld", help="stitch preset (default %(default)s)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)

    rows = []
    with tempfile.TemporaryDirectory(prefix="dvd-memory-") as scratch:
        root = Path(scratch)
        weights = write_tiny_official_weights(root / "weights")
        for length in args.lengths:
            video = root / f"synthetic_{length}.mp4"
            write_video(video, length)
            peak, seconds, samples = peak_rss_of_predict(
                video, weights, root / f"out_{length}", env, args.sample, args.stitch
            )
            median, first, last = describe_samples(samples)
            rows.append((length, peak, seconds, median, first, last))
            print(
                f"{length} frames: peak RSS {peak:.0f} MiB in {seconds:.0f} s; sampled median {median:.0f}, "
                f"first tenth {first:.0f}, last tenth {last:.0f} MiB",
                flush=True,
            )
            video.unlink()

    base = rows[0][1]
    settings = " ".join(args.env) or "none"
    header = (
        f"### memory vs video length, {datetime.date.today().isoformat()} ({os.cpu_count()}-core "
        f"{platform.machine()} CPU, shared, {platform.system()}, tiny random model, CPU float32; "
        f"`python benchmarks/memory_long_video.py --lengths {' '.join(map(str, args.lengths))}"
        f"{' --env ' + settings if args.env else ''} --stitch {args.stitch}`)\n\n"
        f"`dvd predict` on a synthetic {WIDTH}x{HEIGHT} H.264 video, {' '.join(PREDICT_ARGS)} --stitch {args.stitch} "
        f"(model size "
        f"{MODEL_SIZE}, outputs npy + mp4), each run in a fresh process; peak RSS from wait4, RSS sampled every "
        f"{args.sample:g} s from /proc; extra environment: {settings}. "
        f"Target: peak at 10,000 frames <= 1.1 x peak at 150.\n\n"
        f"| frames | peak RSS (MiB) | ratio to {rows[0][0]} frames | sampled median (MiB) | first tenth | last tenth "
        "| wall time (s) |\n|---|---|---|---|---|---|---|\n"
    )
    table = "".join(
        f"| {n} | {p:.0f} | {p / base:.3f} | {m:.0f} | {f:.0f} | {la:.0f} | {s:.0f} |\n" for n, p, s, m, f, la in rows
    )
    print(header + table)
    if not args.no_record:
        with RESULTS.open("a", encoding="utf-8") as results:
            results.write("\n" + header + table)


if __name__ == "__main__":
    main()
