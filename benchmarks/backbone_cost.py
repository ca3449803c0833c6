"""What a backbone costs before you train DVD on it: FLOPs per frame and CPU seconds per frame at 480x640.

For every released size of every backbone family (the `dvd bench --preset` names `family:size`, tiny ones aside),
built with random weights as `dvd predict` runs it (Wan: the folded cross-attention and fixed time conditions;
a family whose DiT reads a T5 embedding gets zeros of its shape, `Backbone.placeholder_condition`):

- FLOPs per frame of VAE encode, the one DiT pass and VAE decode, counted by torch's FlopCounterMode on meta copies
  of the full-size configs (`dvd.bench.profiling.count_model_flops`: matrix products, convolutions and attention),
  for one window of the family's default length and for the short timing clip below;
- CPU seconds per frame of the full-size modules, float32, on the timing clip: the shortest clip with more than one
  latent frame (1 + the frame rule's stride). The full-size VAE encodes and decodes it once each, timed (a call
  takes from seconds to minutes, where a warm-up call would only double the run); a VAE that two sizes share
  (Wan2.1 1.3B and 14B) is timed once. The DiT's blocks are identical, so it is timed with 2 and with 4 blocks (after an untimed
  call of each) and extrapolated linearly to its real depth: the 14B and 5B DiTs do not fit this machine's memory
  in float32, and one method for all keeps the rows comparable.

Random weights compute exactly what trained ones do, so the costs hold for the real models. Prints a table and
appends it to benchmarks/RESULTS.md. `--flops-only` skips the timing (half a minute in all; with the timing, the
run took 29 minutes on this project's 2-core CPU).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from dvd.bench.profiling import count_model_flops
from dvd.model import DVDModel
from dvd.model.backbones import BACKBONES
from dvd.weights.presets import PRESETS, random_model

RESULTS = Path(__file__).with_name("RESULTS.md")
HEIGHT, WIDTH = 480, 640
STAGES = ("vae_encode", "dit", "vae_decode")
TIMED_LAYERS = (2, 4)


def build(name: str, device: str, num_layers: int | None = None) -> DVDModel:
    """Preset `name` with random weights on `device` (meta: shapes only), switched to dvd predict's fast path."""
    model = random_model(name, device, num_layers=num_layers).eval()
    model.backbone.fold_constants(cross_attention=True, time_conditions=True, timestep=model.timestep)
    return model


def per_frame_flops(name: str, frames: int) -> dict[str, float]:
    flops = count_model_flops(build(name, "meta"), (1, 3, frames, HEIGHT, WIDTH))
    return {stage: flops[stage] / frames for stage in STAGES}


def seconds(call: Callable[..., torch.Tensor], *args: torch.Tensor) -> tuple[float, torch.Tensor]:
    started = time.perf_counter()
    out = call(*args)
    return time.perf_counter() - started, out


def clip_pixels(frames: int, device: str = "cpu") -> torch.Tensor:
    if device == "meta":
        return torch.empty(1, 3, frames, HEIGHT, WIDTH, device="meta")
    return torch.rand(1, 3, frames, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))


@torch.inference_mode()
def vae_seconds(name: str, frames: int) -> dict[str, float]:
    """Seconds of one encode and one decode of a clip of `frames` by the preset's full-size VAE."""
    model = build(name, "cpu", num_layers=1)  # the DiT does not run here: one block keeps the build small
    encode, latents = seconds(model.encode, clip_pixels(frames))
    decode, _ = seconds(model.decode, latents)
    return {"vae_encode": encode, "vae_decode": decode}


@torch.inference_mode()
def dit_seconds(name: str, frames: int) -> float:
    """Seconds of the preset's DiT on a clip's latents, extrapolated from its time with 2 and with 4 blocks."""
    shape = build(name, "meta").encode(clip_pixels(frames, "meta")).shape
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    timed = {}
    for layers in TIMED_LAYERS:
        model = build(name, "cpu", layers)
        model.regress(latents)  # untimed: first-call allocations
        timed[layers], _ = seconds(model.regress, latents)
        del model
    low, high = TIMED_LAYERS
    per_block = (timed[high] - timed[low]) / (high - low)
    return timed[low] + (PRESETS[name].dit["num_layers"] - low) * per_block


def machine(threads: int) -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = [
        line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
    ]
    cpu = names[0] if names else platform.processor() or platform.machine()
    return f"{cpu}, {len(names) or '?'} cores, {threads} torch threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flops-only", action="store_true", help="count FLOPs; do not time on the CPU")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    header = (
        "| backbone | size | window | GFLOP/frame at the window: encode / DiT / decode | timing clip | "
        "GFLOP/frame on the clip: encode / DiT / decode | CPU s/frame on the clip: encode / DiT (extrapolated) / "
        "decode |\n|---|---|---|---|---|---|---|"
    )
    rows = []
    vae_timings: dict[str, dict[str, float]] = {}  # by VAE config: Wan2.1 1.3B and 14B share one
    for name, preset in PRESETS.items():
        family = preset.backbone
        if ":" not in name or preset.size == "tiny":  # the unqualified names repeat Wan2.1's sizes
            continue
        clip = 1 + build(name, "meta").frame_rule.stride
        window = per_frame_flops(name, family.default_window)
        short = per_frame_flops(name, clip)
        timed = None
        if not args.flops_only:
            vae = f"{family.family}:{json.dumps(preset.vae, sort_keys=True)}"
            if vae not in vae_timings:
                vae_timings[vae] = vae_seconds(name, clip)
            timed = {
                stage: value / clip for stage, value in {**vae_timings[vae], "dit": dit_seconds(name, clip)}.items()
            }
        cells = [
            family.family,
            preset.size,
            str(family.default_window),
            " / ".join(f"{window[s] / 1e9:,.0f}" for s in STAGES),
            f"{clip}x{HEIGHT}x{WIDTH}",
            " / ".join(f"{short[s] / 1e9:,.0f}" for s in STAGES),
            "-" if timed is None else " / ".join(f"{timed[s]:.1f}" for s in STAGES),
        ]
        rows.append("| " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    print(header)
    print("\n".join(rows))
    if not args.no_record:
        command = f"python benchmarks/backbone_cost.py{' --flops-only' if args.flops_only else ''}"
        title = (
            f"\n## {datetime.date.today()} — backbone cost at {HEIGHT}x{WIDTH} (`{command}`; {machine(args.threads)}; "
            f"random weights, float32; families: {', '.join(BACKBONES)})\n\n"
        )
        with RESULTS.open("a") as results:
            results.write(title + header + "\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
