"""The DiT with its blocks compiled (`dvd bench --compile`: diffusers' regional torch.compile) against eager.

`python benchmarks/compile_blocks.py --preset tiny` builds the preset's DiT with random weights and the fast path
(folded cross-attention, time conditions once), copies it, compiles the copy's repeated blocks, and reports the
compile time (the first call of each of two window lengths: a video's last window is usually shorter, and a new
shape compiles again), then the steady-state time of eager and compiled passes, alternated so that machine noise
hits both alike, their ratio and the largest relative difference of the outputs. Appends to RESULTS.md. Needs a C++
compiler on the CPU (inductor).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import statistics
import time

import torch
from diffusers import WanTransformer3DModel
from speed_full_size import RESULTS

from dvd.model.backbones.wan import run_wan_dit
from dvd.model.dvd_model import DEFAULT_TAU, cast_transformer
from dvd.model.fixed_time import precompute_time_conditions
from dvd.model.folding import fold_cross_attention
from dvd.model.timestep import install_float64_timestep_embedding
from dvd.pipeline.dvd_pipeline import resolve_device, resolve_dtype
from dvd.weights.presets import PRESETS, UNQUALIFIED

TIMESTEP = 1000 * DEFAULT_TAU


def timed(transformer: torch.nn.Module, latents: torch.Tensor) -> tuple[float, torch.Tensor]:
    if latents.device.type == "cuda":
        torch.cuda.synchronize(latents.device)
    started = time.perf_counter()
    out = run_wan_dit(transformer, latents, TIMESTEP)
    if latents.device.type == "cuda":
        torch.cuda.synchronize(latents.device)
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=list(UNQUALIFIED))  # Wan2.1: the fast path is Wan's
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--frames", type=int, default=17, help="window length in video frames (1+4n)")
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20, help="timed pairs after the compiling calls")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    torch.manual_seed(0)
    with torch.device(device):
        eager = WanTransformer3DModel(**PRESETS[args.preset].dit)
    eager = cast_transformer(eager, dtype).eval()
    install_float64_timestep_embedding(eager)
    fold_cross_attention(eager)
    precompute_time_conditions(eager, TIMESTEP)
    compiled = copy.deepcopy(eager)
    compiled.compile_repeated_blocks()

    latent_frames = (args.frames - 1) // 4 + 1
    shape = (1, 16, latent_frames, args.height // 8, args.width // 8)
    latents = torch.randn(shape, device=device, dtype=dtype)
    shorter = torch.randn((1, 16, max(latent_frames - 1, 1), *shape[3:]), device=device, dtype=dtype)
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    with torch.inference_mode():
        compile_seconds = [timed(compiled, x)[0] for x in (latents, shorter)]
        timed(eager, latents)  # warm-up
        for _ in range(args.repeats):
            for name, model in (("eager", eager), ("compiled", compiled)):
                seconds, _ = timed(model, latents)
                times[name].append(seconds)
        reference, out = (
            run_wan_dit(eager, latents, TIMESTEP),
            run_wan_dit(compiled, latents, TIMESTEP),
        )
    difference = float((out - reference).abs().max() / reference.abs().max())
    eager_s, compiled_s = statistics.median(times["eager"]), statistics.median(times["compiled"])
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU"
    header = (
        "| device | preset | dtype | window | first call s (compiles) | shorter window's first call s | "
        "eager s | compiled s | compiled / eager | max rel. difference |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    row = (
        f"| {machine}, {torch.get_num_threads()} threads | {args.preset} | {str(dtype).removeprefix('torch.')} | "
        f"{args.frames}x{args.height}x{args.width} | {compile_seconds[0]:.1f} | {compile_seconds[1]:.1f} | "
        f"{eager_s:.4f} | {compiled_s:.4f} | {compiled_s / eager_s:.3f} | {difference:.1e} |"
    )
    print(header)
    print(row)
    if not args.no_record:
        title = (
            f"\n### DiT blocks compiled (regional torch.compile), {datetime.date.today()} (`python "
            f"benchmarks/compile_blocks.py --preset {args.preset} --device {device.type} --dtype {args.dtype} "
            f"--frames {args.frames} --height {args.height} --width {args.width} --repeats {args.repeats} --threads "
            f"{args.threads}`; torch {torch.__version__}; random weights, fast path on; medians of alternating "
            "passes; first calls include inductor's compile, whose on-disk cache may hold earlier runs' kernels)\n\n"
        )
        with RESULTS.open("a") as results:
            results.write(title + header + "\n" + row + "\n")


if __name__ == "__main__":
    main()
