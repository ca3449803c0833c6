"""One training step of the DiT with and without the folded cross-attention, in one run, on random weights.

`python benchmarks/train_folding.py --preset tiny` times forward + backward of the DVD regression
(`dvd.training.regression.DepthRegression`, LoRA as `dvd train` sets it up: `make_trainable`) on random RGB
latents against a random target, with diffusers' cross-attention over 512 zero tokens and with the folded one
(`dvd.model.folding`, what `dvd train` runs by default), alternating the two so that machine noise hits both
alike. It reports the median step times, their ratio, and the largest relative difference of the loss and of the
LoRA gradients, and appends them to benchmarks/RESULTS.md. The frozen VAE's encodes are left out: they are the
same work either way.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time

import torch
from speed_full_size import RESULTS

from dvd.model.folding import fold_cross_attention, unfold_cross_attention
from dvd.pipeline.dvd_pipeline import resolve_device, resolve_dtype
from dvd.training.config import FinetuneSection
from dvd.training.regression import DepthRegression
from dvd.training.trainable import make_trainable
from dvd.weights.presets import random_model


def step(regression: DepthRegression, latents: torch.Tensor, target: torch.Tensor) -> tuple[float, float, list]:
    """Seconds of one forward + backward, the loss, and the gradients of the trained parameters."""
    params = [p for p in regression.parameters() if p.requires_grad]
    for param in params:
        param.grad = None
    started = time.perf_counter()
    loss = (regression(latents).float() - target).square().mean()
    loss.backward()
    if latents.device.type == "cuda":
        torch.cuda.synchronize(latents.device)
    return time.perf_counter() - started, float(loss.detach()), [p.grad.float().clone() for p in params]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "1.3b"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--frames", type=int, default=9, help="clip length in video frames (1+4n)")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=5, help="timed pairs after one warm-up pair")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared CPU)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model = random_model(args.preset, device, dtype).to_precision(dtype)
    make_trainable(model, FinetuneSection(lora_rank=args.lora_rank), learned_tau=False, gradient_checkpointing=False)
    with torch.no_grad():  # lora_B starts at zero; a non-zero one makes every LoRA gradient non-trivial
        for name, param in model.transformer.named_parameters():
            if ".lora_B." in name and param.requires_grad:
                param.normal_(std=0.01)
    regression = DepthRegression(model).train()
    shape = (args.batch, 16, (args.frames - 1) // 4 + 1, args.height // 8, args.width // 8)
    latents = torch.randn(shape, device=device, dtype=dtype)
    target = torch.randn(shape, device=device)

    times: dict[str, list[float]] = {"plain": [], "folded": []}
    results: dict[str, tuple[float, list]] = {}
    for repeat in range(args.repeats + 1):  # the first pair warms kernels and caches up and is not counted
        for name, switch in (("plain", unfold_cross_attention), ("folded", fold_cross_attention)):
            switch(model.transformer)
            seconds, loss, grads = step(regression, latents, target)
            results[name] = (loss, grads)
            if repeat:
                times[name].append(seconds)
    plain, folded = statistics.median(times["plain"]), statistics.median(times["folded"])
    loss_difference = abs(results["folded"][0] - results["plain"][0]) / abs(results["plain"][0])
    largest = max(float(g.abs().max()) for g in results["plain"][1])
    grad_difference = max(float((f - p).abs().max()) for f, p in zip(results["folded"][1], results["plain"][1]))
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU"
    header = (
        "| device | preset | dtype | LoRA rank | clip | plain step s | folded step s | folded / plain | "
        "loss rel. diff. | LoRA grad diff. / max |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    row = (
        f"| {machine}, {torch.get_num_threads()} threads | {args.preset} | {str(dtype).removeprefix('torch.')} | "
        f"{args.lora_rank} | {args.batch}x{args.frames}x{args.height}x{args.width} | {plain:.3f} | {folded:.3f} | "
        f"{folded / plain:.3f} | {loss_difference:.1e} | {grad_difference / largest:.1e} |"
    )
    print(header)
    print(row)
    if not args.no_record:
        title = (
            f"\n### a training step with folded cross-attention, {datetime.date.today()} (`python "
            f"benchmarks/train_folding.py --preset {args.preset} --device {device.type} --dtype {args.dtype} "
            f"--lora-rank {args.lora_rank} --batch {args.batch} --frames {args.frames} --height {args.height} "
            f"--width {args.width} --repeats {args.repeats} --threads {args.threads}`; random weights, forward + backward of the DiT with "
            "LoRA; medians of alternating runs)\n\n"
        )
        with RESULTS.open("a") as results_file:
            results_file.write(title + header + "\n" + row + "\n")


if __name__ == "__main__":
    main()
