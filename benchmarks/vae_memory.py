"""Memory and time of the Wan VAE on one window: plain, tiled (`vae.enable_tiling()`), channels-last.

`python benchmarks/vae_memory.py --preset tiny --frames 5 --height 480 --width 640` runs VAE encode (posterior mean)
then decode of one random window once per mode, each in a fresh process so that peaks do not mix, and reports the
peak resident memory the VAE added (peak RSS of the process minus its RSS before the VAE ran; on the CPU this is
the figure that matters, torch's CPU allocator keeps no statistics), the seconds, and the largest difference of
the decoded video from the plain mode's. On CUDA it reports torch.cuda.max_memory_allocated instead. Random weights
(no download) of the preset's VAE size: activation memory depends on shapes, not values. Appends to RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
MODES = ("plain", "tiled", "channels-last")


def current_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def measure(args: argparse.Namespace) -> None:
    """The child: one mode, one window; prints a JSON line and saves the decoded video to --save."""
    import numpy as np
    import torch
    from diffusers import AutoencoderKLWan

    from dvd.model.dvd_model import DVDModel
    from dvd.pipeline.dvd_pipeline import resolve_device, resolve_dtype
    from dvd.weights.presets import PRESETS, random_model

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    torch.manual_seed(0)
    with torch.device(device):
        vae = AutoencoderKLWan(**PRESETS[args.preset].vae).to(dtype).eval()
    if args.mode == "tiled":
        vae.enable_tiling()
    if args.mode == "channels-last":
        # The switch lives on DVDModel; a tiny DiT stands in for the one it needs beside the VAE.
        DVDModel(random_model("tiny").transformer, vae).set_vae_channels_last(True)
    pixels = torch.rand(1, 3, args.frames, args.height, args.width, generator=torch.Generator().manual_seed(1))
    pixels = (pixels * 2 - 1).to(device, dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = current_rss_bytes()
    started = time.perf_counter()
    with torch.inference_mode():
        latents = vae.encode(pixels).latent_dist.mode()
        encoded = time.perf_counter()
        video = vae.decode(latents).sample
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    done = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    np.save(args.save, video.float().cpu().numpy())
    report = {
        "added_rss_bytes": peak - before,
        "peak_device_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        "encode_s": encoded - started,
        "decode_s": done - encoded,
        "machine": torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU",
        "dtype": str(dtype).removeprefix("torch."),
    }
    print(json.dumps(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "1.3b"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--frames", type=int, default=5, help="window length (1+4n)")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # the child's
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode is not None:
        measure(args)
        return

    import numpy as np

    reports, videos = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for mode in args.modes:
            save = str(Path(scratch) / f"{mode}.npy")
            child = [sys.executable, __file__, *sys.argv[1:], "--mode", mode, "--save", save]
            done = subprocess.run(child, capture_output=True, text=True, check=True)
            reports[mode] = json.loads(done.stdout.strip().splitlines()[-1])
            videos[mode] = np.load(save)
    reference = videos[args.modes[0]]
    header = (
        f"| mode | VAE peak added RSS MiB | peak GPU MiB | encode s | decode s | max abs. diff. vs {args.modes[0]} |\n"
        "|---|---|---|---|---|---|"
    )
    rows = []
    for mode, report in reports.items():
        gpu = report["peak_device_bytes"]
        rows.append(
            f"| {mode} | {report['added_rss_bytes'] / 2**20:.0f} | {'n/a' if gpu is None else f'{gpu / 2**20:.0f}'} | "
            f"{report['encode_s']:.2f} | {report['decode_s']:.2f} | {np.abs(videos[mode] - reference).max():.1e} |"
        )
    print(header)
    print("\n".join(rows))
    if not args.no_record:
        first = next(iter(reports.values()))
        title = (
            f"\n### VAE memory by mode, {datetime.date.today()} (`python benchmarks/vae_memory.py --preset "
            f"{args.preset} --device {args.device} --dtype {args.dtype} --frames {args.frames} --height "
            f"{args.height} --width {args.width} --threads {args.threads}`; {first['machine']}, one "
            f"{args.frames}x{args.height}x{args.width} window, encode + decode, each mode in a fresh process; "
            "diffusers' default tiles: 256x256 pixels, stride 192)\n\n"
        )
        with RESULTS.open("a") as results:
            results.write(title + header + "\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
