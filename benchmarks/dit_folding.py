"""The DiT with and without the exact fast path, in one run, on random weights.

`python benchmarks/dit_folding.py` builds the Wan2.1-T2V-1.3B DiT with random weights (no download), runs one pass
on a 9x128x160 window's latents in bf16 three ways — diffusers' own cross-attention over 512 zero tokens (plain),
the folded cross-attention (`dvd.model.folding`), and folded with the time conditions computed once
(`dvd.model.fixed_time`, what `DVDPipeline` runs) — alternating them so that machine noise hits all alike, and
reports the median times, their ratios to plain and the largest relative difference of the outputs from plain.
Results are appended to benchmarks/RESULTS.md.
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

from dvd.model.backbones.wan import WAN21_1_3B_DIT, run_wan_dit
from dvd.model.dvd_model import DEFAULT_TAU, cast_transformer
from dvd.model.fixed_time import precompute_time_conditions, release_time_conditions
from dvd.model.folding import fold_cross_attention, unfold_cross_attention
from dvd.model.timestep import install_float64_timestep_embedding
from dvd.pipeline.dvd_pipeline import resolve_device, resolve_dtype


def timed_pass(transformer: WanTransformer3DModel, latents: torch.Tensor) -> tuple[float, torch.Tensor]:
    if latents.device.type == "cuda":
        torch.cuda.synchronize(latents.device)
    started = time.perf_counter()
    out = run_wan_dit(transformer, latents, 1000 * DEFAULT_TAU)
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
        transformer = WanTransformer3DModel(**WAN21_1_3B_DIT)
    transformer = cast_transformer(transformer, dtype).eval()
    install_float64_timestep_embedding(transformer)
    latent_frames = (args.frames - 1) // 4 + 1
    latents = torch.randn(1, 16, latent_frames, args.height // 8, args.width // 8, device=device, dtype=dtype)

    def plain() -> None:
        unfold_cross_attention(transformer)
        release_time_conditions(transformer)

    def folded() -> None:
        fold_cross_attention(transformer)
        release_time_conditions(transformer)

    def folded_fixed_time() -> None:
        fold_cross_attention(transformer)
        precompute_time_conditions(transformer, 1000 * DEFAULT_TAU)

    variants = {"plain": plain, "folded": folded, "folded + time": folded_fixed_time}
    times: dict[str, list[float]] = {name: [] for name in variants}
    outputs: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for repeat in range(args.repeats + 1):  # the first round warms kernels and caches up and is not counted
            for name, switch in variants.items():
                switch()
                seconds, outputs[name] = timed_pass(transformer, latents)
                if repeat:
                    times[name].append(seconds)
    median = {name: statistics.median(values) for name, values in times.items()}

    def difference(name: str) -> float:
        return float((outputs[name] - outputs["plain"]).abs().max() / outputs["plain"].abs().max())

    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU"
    header = (
        "| device | dtype | window | plain DiT s | folded DiT s | folded + time DiT s | folded / plain | "
        "folded + time / plain | folded + time / folded | max rel. difference from plain |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    fixed = median["folded + time"]
    row = (
        f"| {machine}, {torch.get_num_threads()} threads | {str(dtype).removeprefix('torch.')} | "
        f"{args.frames}x{args.height}x{args.width} | {median['plain']:.3f} | {median['folded']:.3f} | {fixed:.3f} | "
        f"{median['folded'] / median['plain']:.3f} | {fixed / median['plain']:.3f} | {fixed / median['folded']:.3f} "
        f"| {difference('folded'):.1e} (folded), {difference('folded + time'):.1e} (folded + time) |"
    )
    print(header)
    print(row)
    if not args.no_record:
        title = (
            f"\n### DiT with the exact fast path (folded cross-attention, time conditions once), {datetime.date.today()} (`python benchmarks/dit_folding.py "
            f"--device {device.type} --dtype {args.dtype} --frames {args.frames} --height {args.height} --width "
            f"{args.width} --repeats {args.repeats}`; Wan2.1-T2V-1.3B shapes, random weights; medians of alternating "
            "runs)\n\n"
        )
        with RESULTS.open("a") as results:
            results.write(title + header + "\n" + row + "\n")


if __name__ == "__main__":
    main()
