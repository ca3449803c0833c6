"""The DiT with and without the folded cross-attention (`dvd.model.folding`), in one run, on random weights.

`python benchmarks/dit_folding.py` builds the Wan2.1-T2V-1.3B DiT with random weights (no download), runs one pass
on a 9x128x160 window's latents in bf16 with diffusers' own cross-attention over 512 zero tokens and with the folded
one, alternating the two so that machine noise hits both alike, and reports the median times, their ratio and the
largest relative difference of the outputs. Results are appended to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time

import torch
from diffusers import WanTransformer3DModel
from speed_full_size import RESULTS

from dvd.inference.pipeline import resolve_device, resolve_dtype
from dvd.model.dvd_model import DEFAULT_TAU, cast_transformer, regress_depth_latent
from dvd.model.folding import fold_cross_attention, unfold_cross_attention
from dvd.model.timestep import install_float64_timestep_embedding
from dvd.weights.presets import WAN_1_3B_DIT


def timed_pass(transformer: WanTransformer3DModel, latents: torch.Tensor) -> tuple[float, torch.Tensor]:
    if latents.device.type == "cuda":
        torch.cuda.synchronize(latents.device)
    started = time.perf_counter()
    out = regress_depth_latent(transformer, latents, 1000 * DEFAULT_TAU)
    if latents.device.type == "cuda":
        torch.cuda.synchronize(latents.device)
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--frames", type=int, default=9, help="window length in video frames (1+4n)")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=3, help="timed pairs after one warm-up pair")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    torch.manual_seed(0)
    with torch.device(device):  # initialise in place: a 1.3B model costs ~20 s to initialise on a CPU
        transformer = WanTransformer3DModel(**WAN_1_3B_DIT)
    transformer = cast_transformer(transformer, dtype).eval()
    install_float64_timestep_embedding(transformer)
    latent_frames = (args.frames - 1) // 4 + 1
    latents = torch.randn(1, 16, latent_frames, args.height // 8, args.width // 8, device=device, dtype=dtype)

    times: dict[str, list[float]] = {"plain": [], "folded": []}
    outputs: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for repeat in range(args.repeats + 1):  # the first pair warms kernels and caches up and is not counted
            for name, switch in (("plain", unfold_cross_attention), ("folded", fold_cross_attention)):
                switch(transformer)
                seconds, outputs[name] = timed_pass(transformer, latents)
                if repeat:
                    times[name].append(seconds)
    plain, folded = statistics.median(times["plain"]), statistics.median(times["folded"])
    difference = float((outputs["folded"] - outputs["plain"]).abs().max() / outputs["plain"].abs().max())
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU"
    header = (
        "| device | dtype | window | plain DiT s | folded DiT s | folded / plain | max rel. difference |\n"
        "|---|---|---|---|---|---|---|"
    )
    row = (
        f"| {machine}, {torch.get_num_threads()} threads | {str(dtype).removeprefix('torch.')} | "
        f"{args.frames}x{args.height}x{args.width} | {plain:.3f} | {folded:.3f} | {folded / plain:.3f} | "
        f"{difference:.1e} |"
    )
    print(header)
    print(row)
    if not args.no_record:
        title = (
            f"\n### DiT with folded cross-attention, {datetime.date.today()} (`python benchmarks/dit_folding.py "
            f"--device {device.type} --dtype {args.dtype} --frames {args.frames} --height {args.height} --width "
            f"{args.width} --repeats {args.repeats}`; Wan2.1-T2V-1.3B shapes, random weights; medians of alternating "
            "runs)\n\n"
        )
        with RESULTS.open("a") as results:
            results.write(title + header + "\n" + row + "\n")


if __name__ == "__main__":
    main()
