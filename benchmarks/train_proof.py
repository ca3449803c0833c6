"""The proof that `dvd train` learns: a tiny DiT + tiny VAE, trained on CPU on the built-in synthetic world.

1. Train the tiny Wan VAE (base width 8) to auto-encode synthetic RGB clips and depth-target clips, so that
   decoding a latent means something (a random VAE decodes noise whatever the DiT predicts).
2. DVD-train the tiny DiT with `dvd.training.trainer.train` (the same code as `dvd train`) on synthetic images and
   clips, once with the DVD loss (L2 + LMR) and once with L2 only (the LMR ablation), same steps and data.
3. Score on held-out synthetic scenes (split "test": no scene shared with training) after least-squares
   scale/shift alignment in disparity: AbsRel and δ1 of both trained models, of the untrained start model (trained
   VAE, random DiT), of a constant disparity (the best constant after alignment), and of the VAE's own ceiling
   (the true target passed through encode + decode: what a perfect DiT would reach through this VAE).
4. Append the table to benchmarks/RESULTS.md; with --ship, write the L2 + LMR model to src/dvd/assets/, with its
   training size and clip length as its inference defaults (`dvd.weights.defaults`).

    python benchmarks/train_proof.py                 # ~15 min on a 2-core CPU
    python benchmarks/train_proof.py --ship          # also refresh the model shipped for `dvd demo`
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLWan

from dvd.data.train import SyntheticDataset
from dvd.model.dvd_model import DVDModel
from dvd.pipeline.dvd_pipeline import DVDPipeline
from dvd.training.config import parse_config
from dvd.training.export import merged_model
from dvd.training.trainer import train
from dvd.training.validation import evaluate, score_disparity
from dvd.weights import load_weights
from dvd.weights.defaults import ModelDefaults
from dvd.weights.single_file import save_single_file
from dvd.weights.tiny import TINY_VAE_BASE_DIM, tiny_transformer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
ASSET = ROOT / "src" / "dvd" / "assets" / "proof_model.safetensors"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def synthetic_pool(split: str, count: int, frames: int, size: int) -> list[dict[str, torch.Tensor]]:
    dataset = SyntheticDataset(split=split, num_samples=count, num_frames=frames, size=(size, size), flip=False)
    return [dataset[i] for i in range(count)]


def train_vae(steps: int, size: int, frames: int, seed: int, lr: float = 2e-3) -> tuple[AutoencoderKLWan, list[float]]:
    """Auto-encoder training of a fresh tiny Wan VAE on RGB and depth-target clips (L1 + MSE on [-1,1] pixels)."""
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(base_dim=TINY_VAE_BASE_DIM)
    pool = synthetic_pool("train", 48, frames, size)
    clips = [s["rgb"] for s in pool] + [s["depth_target"] for s in pool]  # [F,3,H,W] in [0,1]
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        batch = torch.stack([clips[i] for i in rng.choice(len(clips), 4, replace=False)]).permute(0, 2, 1, 3, 4)
        x = batch * 2 - 1
        recon = vae.decode(vae.encode(x).latent_dist.mode()).sample
        loss = (recon - x).abs().mean() + (recon - x).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return vae.eval().requires_grad_(False), losses


def dit_config(start: Path, output: Path, loss: str, steps: int, size: int, frames: int, seed: int) -> dict:
    """The `dvd train` config of the proof (also what `--quick` shortens)."""
    source = {"kind": "synthetic", "split": "train", "samples": 256, "height": size, "width": size}
    return {
        "model": {"weights": str(start), "tau": 0.5},
        "finetune": {"mode": "full"},
        "loss": {"kind": loss},
        "data": {
            "clip_frames": frames,
            "image_batch": 4,
            "video_batch": 1,
            "sources": [{**source, "clips": False, "weight": 1}, {**source, "clips": True, "weight": 1}],
        },
        "optim": {"lr": 5e-4, "grad_accum": 1, "weight_decay": 0.0},
        "train": {
            "output_dir": str(output),
            "max_steps": steps,
            "seed": seed,
            "mixed_precision": "no",
            "gradient_checkpointing": False,
            "checkpoint_every": max(steps // 2, 1),
            "validate_every": steps,
            "validate_at_start": False,
            "log_every": max(steps // 10, 1),
            "loggers": ["csv"],
            "export": "merged",
        },
    }


def vae_ceiling(model: DVDModel, samples: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Scores of decode(encode(true target)): the best any DiT can do through this VAE."""
    scores = []
    with torch.no_grad():
        for sample in samples:
            target = sample["depth_target"].permute(1, 0, 2, 3)[None]
            decoded = model.decode(model.encode(target)).mean(dim=1)[0].numpy()
            scores.append(score_disparity(decoded, sample["depth"].numpy(), sample["valid"].numpy()))
    return {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}


def constant_baseline(samples: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    scores = [
        score_disparity(np.zeros(s["depth"].shape, np.float32), s["depth"].numpy(), s["valid"].numpy()) for s in samples
    ]
    return {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}


def proof_defaults(size: int, frames: int) -> ModelDefaults:
    """The settings the shipped model runs at unless told otherwise: its training size and clip length, windows
    overlapping by about half (`dvd demo`'s 5 and 2)."""
    return ModelDefaults(height=size, width=size, window=frames, overlap=frames // 2)


def run_proof(
    work: Path, vae_steps: int, dit_steps: int, size: int, frames: int, eval_clips: int, seed: int = 0
) -> dict:
    """Every stage; returns the scores, the loss curves and the trained models."""
    started = time.perf_counter()
    vae, vae_losses = train_vae(vae_steps, size, frames, seed)
    vae_seconds = time.perf_counter() - started
    start = work / "start"
    DVDPipeline.from_model(DVDModel(tiny_transformer(seed), vae)).save_pretrained(start)
    held_out = synthetic_pool("test", eval_clips, frames, size)
    untrained = load_weights(start).model
    rows = {
        "constant disparity": constant_baseline(held_out),
        "untrained (trained VAE, random DiT)": evaluate(untrained, held_out),
    }
    runs = {}
    for loss in ("lmr", "l2"):
        t0 = time.perf_counter()
        result = train(parse_config(dit_config(start, work / loss, loss, dit_steps, size, frames, seed)))
        trained = load_weights(result.exports[0]).model
        label = "trained, L2 + LMR (DVD loss)" if loss == "lmr" else "trained, L2 only (LMR ablation)"
        rows[label] = evaluate(trained, held_out)
        runs[loss] = {"model": trained, "losses": result.losses, "seconds": time.perf_counter() - t0}
    rows["VAE ceiling (true target through encode+decode)"] = vae_ceiling(untrained, held_out)
    return {"rows": rows, "runs": runs, "vae_losses": vae_losses, "vae_seconds": vae_seconds}


def markdown(proof: dict, args: argparse.Namespace) -> str:
    runs = proof["runs"]
    lines = [
        (
            f"### train proof, {datetime.date.today().isoformat()} (`python benchmarks/train_proof.py "
            f"--vae-steps {args.vae_steps} --dit-steps {args.dit_steps} --size {args.size} --frames {args.frames} "
            f"--eval-clips {args.eval_clips} --seed {args.seed} --threads {args.threads}`)"
        ),
        "",
        (
            f"Machine: {cpu_name()}, {torch.get_num_threads()} torch thread(s) on a {os.cpu_count()}-core CPU "
            f"shared with other jobs, torch {torch.__version__}."
        ),
        (
            f"Settings: synthetic {args.size}x{args.size}, clips of {args.frames} frames + single images; tiny VAE "
            f"(base width 8) auto-encoder trained {args.vae_steps} steps ({proof['vae_seconds']:.0f} s, loss "
            f"{np.mean(proof['vae_losses'][:10]):.3f} -> {np.mean(proof['vae_losses'][-10:]):.3f}); tiny DiT "
            f"(2 layers, width 256) full fine-tune, AdamW lr 5e-4, {args.dit_steps} steps of one batch (4 images or "
            f"1 clip), seed {args.seed}; LMR run {runs['lmr']['seconds']:.0f} s, L2 run {runs['l2']['seconds']:.0f} s."
        ),
        (
            f"Held-out: {args.eval_clips} clips of the synthetic 'test' split (no scene shared with training), "
            "per-clip least-squares scale/shift in disparity, AbsRel and δ1 averaged over clips."
        ),
        "",
        "| model | AbsRel ↓ | δ1 ↑ |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {m['abs_rel']:.4f} | {m['delta1']:.4f} |" for name, m in proof["rows"].items()]
    for loss in ("lmr", "l2"):
        curve = runs[loss]["losses"]
        lines.append(
            f"\nTraining loss ({loss}): first 10 steps {np.mean(curve[:10]):.4f}, "
            f"last 10 steps {np.mean(curve[-10:]):.4f}."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae-steps", type=int, default=300)
    parser.add_argument("--dit-steps", type=int, default=400)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--eval-clips", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    # One thread by default: on a small, shared CPU, OpenMP threads that spin-wait for a busy core made a VAE step
    # 8x slower with 2 threads than with 1 (measured on the 2-core development machine).
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ship", action="store_true", help=f"write the L2 + LMR model to {ASSET.relative_to(ROOT)}")
    parser.add_argument("--no-results", action="store_true", help="print the table without appending it")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="dvd-train-proof-") as work:
        proof = run_proof(
            Path(work), args.vae_steps, args.dit_steps, args.size, args.frames, args.eval_clips, args.seed
        )
        table = markdown(proof, args)
        print(table)
        if not args.no_results:
            with RESULTS.open("a") as handle:
                handle.write("\n" + table)
        if args.ship:
            ASSET.parent.mkdir(parents=True, exist_ok=True)
            model = merged_model(proof["runs"]["lmr"]["model"], None)
            save_single_file(model, ASSET, defaults=proof_defaults(args.size, args.frames))
            print(f"wrote {ASSET} ({ASSET.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
