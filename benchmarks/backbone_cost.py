"""What a backbone costs before you train DVD on it: FLOPs per frame and CPU seconds per frame at 480x640.

For every released size of every backbone family (`dvd.model.backbones.BACKBONES`, each family's `sizes` other than
"tiny"):

- FLOPs per frame of VAE encode, the one DiT pass and VAE decode, counted by torch's FlopCounterMode on meta copies
  of the full-size configs (`dvd.bench.profiling.count_model_flops`: matrix products, convolutions and attention),
  for one window of the family's default length and for the short timing clip below;
- CPU seconds per frame of the full-size modules with random weights, float32, on the timing clip: the shortest
  clip with more than one latent frame (1 + stride frames). The VAE runs whole. The DiT's blocks are identical, so
  it is timed with 2 and with 4 blocks and extrapolated linearly to its real depth: the 14B and 5B DiTs do not fit
  this machine's memory in float32, and one method for all keeps the rows comparable.

Random weights compute exactly what trained ones do, so the costs hold for the real models. Prints a table and
appends it to benchmarks/RESULTS.md. `--flops-only` skips the timing (seconds in all).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time

import torch

from dvd.bench.profiling import count_model_flops
from dvd.model import DVDModel
from dvd.model.backbone import Backbone
from dvd.model.backbones import BACKBONES
from speed_full_size import RESULTS

HEIGHT, WIDTH = 480, 640
STAGES = ("vae_encode", "dit", "vae_decode")


def build(family: type[Backbone], size: str, device: str, num_layers: int | None = None) -> DVDModel:
    """The family's modules of `size`, random weights drawn from a fixed seed, on `device` (meta: shapes only)."""
    dit, vae = family.sizes[size]
    if num_layers is not None:
        dit = dict(dit, num_layers=num_layers)
    torch.manual_seed(0)
    with torch.device(device):
        transformer, autoencoder = family.transformer_class(**dit), family.vae_class(**vae)
        condition = family.placeholder_condition(transformer)
    return DVDModel(transformer, autoencoder, condition=condition).eval()


def per_frame_flops(family: type[Backbone], size: str, frames: int) -> dict[str, float]:
    flops = count_model_flops(build(family, size, "meta"), (1, 3, frames, HEIGHT, WIDTH))
    return {stage: flops[stage] / frames for stage in STAGES}


@torch.inference_mode()
def stage_seconds(model: DVDModel, frames: int) -> dict[str, float]:
    """Seconds of each stage for one clip (after an untimed warm-up call of the same shape)."""
    pixels = torch.rand(1, 3, frames, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))
    model(pixels)
    seconds: dict[str, float] = {}

    class Timed:
        def __init__(self, name: str) -> None:
            self.name = name

        def __enter__(self) -> None:
            self.started = time.perf_counter()

        def __exit__(self, *exc: object) -> None:
            seconds[self.name] = time.perf_counter() - self.started

    model(pixels, stage=Timed)
    return seconds


def cpu_seconds_per_frame(family: type[Backbone], size: str, frames: int) -> dict[str, float]:
    depth = family.sizes[size][0]["num_layers"]
    shallow, deeper = (stage_seconds(build(family, size, "cpu", layers), frames) for layers in (2, 4))
    per_block = (deeper["dit"] - shallow["dit"]) / 2
    seconds = {
        "vae_encode": (shallow["vae_encode"] + deeper["vae_encode"]) / 2,
        "dit": shallow["dit"] + (depth - 2) * per_block,
        "vae_decode": (shallow["vae_decode"] + deeper["vae_decode"]) / 2,
    }
    return {stage: value / frames for stage, value in seconds.items()}


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
    for family in BACKBONES.values():
        for size in family.sizes:
            if size == "tiny":
                continue
            clip = 1 + build(family, size, "meta").frame_rule.stride
            window = per_frame_flops(family, size, family.default_window)
            short = per_frame_flops(family, size, clip)
            timed = None if args.flops_only else cpu_seconds_per_frame(family, size, clip)
            cells = [
                family.family,
                size,
                str(family.default_window),
                " / ".join(f"{window[s] / 1e9:,.0f}" for s in STAGES),
                f"{clip}x{HEIGHT}x{WIDTH}",
                " / ".join(f"{short[s] / 1e9:,.0f}" for s in STAGES),
                "-" if timed is None else " / ".join(f"{timed[s]:.2f}" for s in STAGES),
            ]
            rows.append("| " + " | ".join(cells) + " |")
            print(rows[-1], flush=True)
    print(header)
    print("\n".join(rows))
    if not args.no_record:
        machine = f"{platform.machine()} CPU, {args.threads} torch threads"
        title = (
            f"\n## {datetime.date.today()} — backbone cost at {HEIGHT}x{WIDTH} (`python benchmarks/backbone_cost.py"
            f"{' --flops-only' if args.flops_only else ''}`; {machine}; random weights, float32)\n\n"
        )
        with RESULTS.open("a") as results:
            results.write(title + header + "\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
