"""Frames per second of the host side of `dvd predict` alone: decode, resize, stitch, resize back, colourise, encode.

Runs the real `predict_to_folder` on a 1280x720 video (`../shared/data/videos/tokyo_walk.mp4`, or a generated clip
when that is absent) at the default model size (864x480) with outputs npy + mp4, but with a zero-cost stand-in for
the model (`dvd bench --host-only`'s: each window's green channel as float32 disparity, in recycled host arrays
as the pipeline hands over a device's output), so that only the host work is timed. Unlike `dvd bench`, it runs
each setting several times, interleaved, and reports CPU and kernel time per frame.
The issue's target: at least 30 frames/s on a 2-core CPU, so that the host does not starve a GPU.

    python benchmarks/host_throughput.py [--modes threaded single] [--repeats 3] [--video PATH] [--profile]

Prints frames/s per mode and appends a dated table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import os
import platform
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from memory_long_video import write_video

from dvd.bench.benchmark import BenchSettings, build_pipeline
from dvd.engine.allocator import keep_heap_flat
from dvd.engine.video import VideoSettings
from dvd.io.readers import open_source
from dvd.jobs.outputs import OutputSettings, predict_to_folder
from dvd.options import DEFAULT_STITCH

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SHARED_VIDEO = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / "tokyo_walk.mp4"
FORMATS = ("npy", "mp4")
MODES = {"threaded": True, "single": False}  # mode -> host_threads of predict_to_folder


def run_once(video: Path, out: Path, threaded: bool, profile: bool, stitch: str) -> tuple[int, float, float, float]:
    """(frames written, wall seconds, CPU seconds of the whole process, of which in the kernel) of one
    `predict_to_folder` run with the stand-in model."""
    source = open_source(video)
    output = OutputSettings(formats=FORMATS)
    profiler = cProfile.Profile() if profile else None
    started, times = time.perf_counter(), os.times()
    if profiler:
        profiler.enable()
    settings = VideoSettings(stitch=stitch)
    pipe = build_pipeline(BenchSettings(settings, host_only=True), torch.device("cpu"), torch.float32)
    count = predict_to_folder(pipe, source, out, settings, output, host_threads=threaded)
    seconds, end = time.perf_counter() - started, os.times()
    cpu, kernel = end.user + end.system - times.user - times.system, end.system - times.system
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return count, seconds, cpu, kernel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stitch", default=DEFAULT_STITCH, help="stitch preset (default %(default)s)")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--video", type=Path, default=SHARED_VIDEO)
    parser.add_argument("--profile", action="store_true", help="cProfile each run (main thread only) and print it")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per mode, interleaved; the table has the best and the median"
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: the resizes are small, and on a busy 2-core CPU spinning OpenMP "
        "threads cost several times their work)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    keep_heap_flat()  # as `dvd predict` does: its allocator settings are part of the host path

    rows = []
    with tempfile.TemporaryDirectory(prefix="dvd-host-") as scratch:
        video = (
            args.video
            if args.video.is_file()
            else write_video(Path(scratch) / "clip_1280x720.mp4", 195, (720, 1280), fps=15, drift=1 / 20)
        )
        for repeat in range(args.repeats):
            for mode in args.modes:
                run = run_once(video, Path(scratch) / f"{mode}{repeat}", MODES[mode], args.profile, args.stitch)
                count, seconds, cpu, kernel = run
                rows.append((mode, *run))
                print(
                    f"{mode}: {count} frames in {seconds:.2f} s = {count / seconds:.1f} frames/s, "
                    f"{1000 * cpu / count:.0f} CPU ms/frame ({1000 * kernel / count:.0f} in the kernel; load "
                    f"{os.getloadavg()[0]:.1f})",
                    flush=True,
                )

    source = open_source(video)
    model_h, model_w = VideoSettings().model_size(source.size)
    header = (
        f"### host-only throughput, {datetime.date.today().isoformat()} (`python benchmarks/host_throughput.py "
        f"--modes {' '.join(args.modes)} --repeats {args.repeats} --torch-threads {args.torch_threads} "
        f"--stitch {args.stitch}`)\n\n"
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), {platform.system()}; "
        f"load average {os.getloadavg()[0]:.1f} at the end (other jobs share the cores); torch {torch.__version__} "
        f"({torch.get_num_threads()} intra-op thread(s)), PyAV {av.__version__}, numpy {np.__version__}.\n"
        f"Settings: `predict_to_folder` on {video.name} ({source.size[1]}x{source.size[0]}, "
        f"{source.num_frames} frames) at model size {model_w}x{model_h}, window 81 / overlap 21, stitch "
        f"{args.stitch}, outputs {' + '.join(FORMATS)}; the model is a "
        "zero-cost stand-in of `dvd bench --host-only` (each window's green channel as float32, like a transfer from "
        "the device); `dvd predict`'s allocator settings "
        "(`dvd.engine.allocator`). Target: >= 30 frames/s.\n\n"
        "CPU ms/frame is the CPU time of all threads (x264's too) per frame: two free cores give 66 ms a frame at 30 "
        "frames/s; kernel ms/frame is the part of it spent in the kernel (page faults, file writes). Runs of the "
        "modes are interleaved; the machine is shared, so the best run is the figure for two free cores and the "
        "median the typical one.\n\n"
        "| host path | runs | frames | frames/s best | frames/s median | CPU ms/frame best | CPU ms/frame median "
        "| kernel ms/frame median |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    table = ""
    for mode in args.modes:
        runs = [run for name, *run in rows if name == mode]
        fps = [count / seconds for count, seconds, _, _ in runs]
        cpu_ms = [1000 * cpu / count for count, _, cpu, _ in runs]
        kernel_ms = [1000 * kernel / count for count, _, _, kernel in runs]
        table += (
            f"| {mode} | {len(runs)} | {runs[0][0]} | {max(fps):.1f} | {statistics.median(fps):.1f} | "
            f"{min(cpu_ms):.0f} | {statistics.median(cpu_ms):.0f} | {statistics.median(kernel_ms):.0f} |\n"
        )
    print(header + table)
    with RESULTS.open("a", encoding="utf-8") as results:
        results.write("\n" + header + table)


if __name__ == "__main__":
    main()
