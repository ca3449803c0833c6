"""Speed and memory of one DVD window at full size (Wan2.1-T2V-1.3B DiT + Wan VAE, random weights: no download).

Prepared for a lent GPU: `python benchmarks/speed_full_size.py --device cuda --dtype bfloat16` times VAE encode, the
single DiT pass and VAE decode for an 81-frame 480x864 window (the official open-world setting), reports frames/s,
peak GPU memory and peak host RSS, and appends the figures to benchmarks/RESULTS.md. Random weights compute exactly
what trained ones do, so the timings hold for the real model. `--size tiny` runs the same code on the tiny test model
(seconds on a CPU), to check the script itself.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import resource
import time
from pathlib import Path

import torch

from dvd.model import DVDModel
from dvd.pipeline.dvd_pipeline import resolve_device, resolve_dtype
from dvd.weights.presets import random_model

RESULTS = Path(__file__).with_name("RESULTS.md")


def build(size: str, device: torch.device, dtype: torch.dtype) -> DVDModel:
    # Initialised in place, on the device and in the dtype: a 1.3B model costs ~20 s to initialise on a CPU.
    model = random_model("1.3b" if size == "full" else "tiny", device, dtype)
    return model.to_precision(dtype).eval()


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def time_window(model: DVDModel, pixels: torch.Tensor, device: torch.device) -> dict[str, float]:
    timings = {}
    synchronise(device)
    started = time.perf_counter()
    latents = model.encode(pixels)
    synchronise(device)
    timings["encode"] = time.perf_counter() - started
    started = time.perf_counter()
    depth_latents = model.regress(latents)
    synchronise(device)
    timings["dit"] = time.perf_counter() - started
    started = time.perf_counter()
    model.decode(depth_latents).mean(dim=1)
    synchronise(device)
    timings["decode"] = time.perf_counter() - started
    timings["total"] = timings["encode"] + timings["dit"] + timings["decode"]
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["full", "tiny"], default="full")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--frames", type=int, default=81, help="window length (4n+1)")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=864)
    parser.add_argument("--batch", type=int, default=1, help="windows per call (--batch-windows)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model = build(args.size, device, dtype)
    pixels = torch.rand(args.batch, 3, args.frames, args.height, args.width, device=device)
    time_window(model, pixels, device)  # warm-up: kernels, allocator, caches
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    runs = [time_window(model, pixels, device) for _ in range(args.repeats)]
    best = {key: min(run[key] for run in runs) for key in runs[0]}
    frames = args.batch * args.frames
    gpu_peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    host_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU"
    row = (
        f"| {args.size} | {machine} | {str(dtype).removeprefix('torch.')} | {args.batch}x{args.frames}x{args.height}x"
        f"{args.width} | {best['encode']:.3f} | {best['dit']:.3f} | {best['decode']:.3f} | {best['total']:.3f} | "
        f"{frames / best['total']:.2f} | {gpu_peak:.2f} | {host_peak:.2f} |"
    )
    header = (
        "| model | device | dtype | windows x frames x H x W | encode s | DiT s | decode s | total s | frames/s | "
        "peak GPU GiB | peak host GiB |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    print(header)
    print(row)
    if not args.no_record:
        title = (
            f"\n### one window at full size, {datetime.date.today()} (`python benchmarks/speed_full_size.py "
            f"--size {args.size} --device {device.type} --batch {args.batch} --frames {args.frames} "
            f"--height {args.height} --width {args.width}`; best of {args.repeats} after a warm-up, random weights)\n\n"
        )
        with RESULTS.open("a") as results:
            results.write(title + header + "\n" + row + "\n")


if __name__ == "__main__":
    main()
