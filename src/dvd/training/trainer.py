"""The DVD training loop on accelerate (one process, or many through `accelerate launch`: DDP, FSDP2, DeepSpeed).

Per micro-step: RGB pixels and the normalised-disparity target (3 equal channels) go through the frozen VAE under
no_grad; the DiT regresses the depth latent from the clean RGB latent at t = 1000·τ with a zero text context
(x-prediction); the loss (`dvd.training.losses`) compares the two latents. Gradients are accumulated over
`grad_accum` micro-steps, clipped, and AdamW steps the trainable parameters (`dvd.training.trainable`). What the
parallel strategies do differently (sharded weights and optimizer state) is kept in `dvd.training.distributed`.

Everything that can be wrong with the input — config, data layout, logger backends, precision, a resume checkpoint
of another architecture — is checked before the first step.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.utils.data import DataLoader

from dvd.errors import DVDError
from dvd.model.dvd_model import DVDModel, regress_depth_latent
from dvd.model.tiny import build_tiny_model
from dvd.training.batches import SlotBatches, SlotSampler, build_dataset
from dvd.training.checkpoint import (
    WEIGHTS_FILE,
    check_compatible,
    list_checkpoints,
    load_checkpoint,
    read_state,
    save_checkpoint,
    set_rng_states,
    write_checkpoint_files,
)
from dvd.training.config import ModelSection, TrainConfig, dump_config
from dvd.training.distributed import (
    check_strategy,
    deepspeed_master_weights,
    gather_trained,
    is_deepspeed,
    load_deepspeed_state,
    optimizer_state,
    restore_optimizer,
    save_deepspeed_state,
)
from dvd.training.export import export_model
from dvd.training.losses import make_loss
from dvd.training.metrics_log import MetricsLog, check_backends
from dvd.training.single_file import load_single_file, proof_model_path
from dvd.training.trainable import architecture_signature, make_trainable
from dvd.training.validation import evaluate
from dvd.weights import load_weights


class DepthRegression(nn.Module):
    """What the optimiser differentiates, and what DDP, FSDP or DeepSpeed wrap: one DiT pass from the RGB latent to
    the depth latent. The frozen VAE stays outside, so no strategy shards or gathers it: each process encodes alone
    (ZeRO-3 would otherwise gather VAE weights per call, and clips and images call it a different number of times)."""

    # FSDP's default wrap policy reads this: each DiT block becomes one sharding unit.
    _no_split_modules = ["WanTransformerBlock"]

    def __init__(self, model: DVDModel) -> None:
        super().__init__()
        self.transformer = model.transformer  # the same module object: the DVDModel sees what training changes
        self.timestep = model.timestep

    def forward(self, rgb_latents: Tensor) -> Tensor:
        # The DiT returns a view (of its unpatchify reshape); FSDP2 warns that an in-place op on a view would skip its
        # backward hook. A copy of the small latent costs nothing and leaves no such trap.
        return regress_depth_latent(self.transformer, rgb_latents, self.timestep).clone()


@dataclass
class TrainResult:
    step: int
    output_dir: Path
    exports: list[Path] = field(default_factory=list)
    validation: dict[str, float] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)  # total loss of every optimiser step run by this call


def load_base_model(section: ModelSection) -> DVDModel:
    """The model training starts from (float32, CPU): "tiny" (random tiny test model), "proof" (the tiny model
    shipped for `dvd demo`), or any `--weights` source."""
    if section.weights == "tiny":
        model = build_tiny_model(section.tiny_seed)
    elif section.weights == "proof":
        model = load_single_file(proof_model_path())
    else:
        model = load_weights(section.weights).model
    model.tau = section.tau
    return model


def find_resume_checkpoint(output_dir: Path, resume: str | None) -> Path | None:
    """`resume`: None (fresh run; refuses an output_dir that already has checkpoints), "latest", or a folder."""
    existing = list_checkpoints(output_dir)
    if resume is None:
        if existing:
            raise DVDError(
                f"{output_dir} already holds checkpoints (latest {existing[-1].name}); "
                "pass --resume to continue that run or set train.output_dir to a new folder"
            )
        return None
    if resume == "latest":
        if not existing:
            raise DVDError(f"--resume: no checkpoint in {output_dir / 'checkpoints'}; run without --resume to start")
        return existing[-1]
    path = Path(resume)
    read_state(path)  # fails with a clear message when it is not a checkpoint
    return path


def model_from_checkpoint(config: TrainConfig, checkpoint: Path) -> DVDModel:
    """The base model with the trained tensors of `checkpoint` in place (float32, CPU): what a run exports."""
    model = load_base_model(config.model)
    make_trainable(model, config.finetune, config.model.learned_tau, gradient_checkpointing=False)
    copy_trained(model, load_file(Path(checkpoint) / WEIGHTS_FILE))
    return model


def copy_trained(model: DVDModel, trained: dict[str, Tensor]) -> None:
    with torch.no_grad():
        named = dict(model.named_parameters())
        for name, tensor in trained.items():
            named[name].copy_(tensor)


def _check_environment(config: TrainConfig, accelerator: Accelerator) -> None:
    check_strategy(accelerator, config.optim.grad_accum, config.optim.grad_clip)
    if config.train.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise DVDError("train.mixed_precision fp16 needs a GPU; use bf16 or no on CPU")


def frozen_autocast(accelerator: Accelerator, mixed_precision: str) -> contextlib.AbstractContextManager:
    """Autocast for what runs outside the wrapped DiT (VAE encodes, validation), in `train.mixed_precision` under
    every strategy: accelerate's own autocast is off under DeepSpeed, which casts only the module it wraps."""
    if mixed_precision == "no":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if mixed_precision == "bf16" else torch.float16
    return torch.autocast(accelerator.device.type, dtype=dtype)


def _make_scheduler(optimizer: torch.optim.Optimizer, schedule: str) -> torch.optim.lr_scheduler.LRScheduler:
    if schedule == "reference":
        # torch defaults (factor 1/3 for 5 ticks), exactly as the official trainer gets them.
        return torch.optim.lr_scheduler.ConstantLR(optimizer)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def train(config: TrainConfig, resume: str | None = None) -> TrainResult:
    """Run (or continue) the training described by `config`; returns where it ended and what it exported."""
    train_cfg, data = config.train, config.data
    output_dir = Path(train_cfg.output_dir)
    accelerator = Accelerator(
        mixed_precision=train_cfg.mixed_precision, gradient_accumulation_steps=config.optim.grad_accum
    )
    _check_environment(config, accelerator)
    check_backends(train_cfg.loggers)
    checkpoint = find_resume_checkpoint(output_dir, resume)

    datasets = [build_dataset(source, data, flip=data.flip) for source in data.sources]
    validation_sets = [build_dataset(source, data, flip=False) for source in data.validation]

    set_seed(train_cfg.seed)
    model = load_base_model(config.model)
    make_trainable(model, config.finetune, config.model.learned_tau, train_cfg.gradient_checkpointing)
    model.vae.eval()
    signature = architecture_signature(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=config.optim.lr,
        betas=tuple(config.optim.betas),
        eps=config.optim.eps,
        weight_decay=config.optim.weight_decay,
    )
    scheduler = _make_scheduler(optimizer, config.optim.schedule)

    start_step, restored = 0, None
    if checkpoint is not None:
        state = read_state(checkpoint)
        check_compatible(checkpoint, state, signature)
        restored = load_checkpoint(checkpoint, accelerator.process_index, optimizer=not is_deepspeed(accelerator))
        copy_trained(model, restored["weights"])
        scheduler.load_state_dict(restored["scheduler"])
        start_step = int(state["step"])

    model.to(accelerator.device)
    module, optimizer, scheduler = accelerator.prepare(DepthRegression(model), optimizer, scheduler)
    if restored is not None:
        if is_deepspeed(accelerator):
            load_deepspeed_state(accelerator, module, checkpoint, int(state["world_size"]))
        else:
            restore_optimizer(accelerator, module, optimizer, restored["optimizer"])
    loss_fn = make_loss(
        config.loss.kind, config.loss.lambda_sp, config.loss.lambda_temp, config.loss.lambda_reg, config.loss.scales
    )
    log = None
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        dump_config(config, output_dir / "config.yaml")
        log = MetricsLog(output_dir, train_cfg.loggers, resume_step=start_step if checkpoint else None)

    batches = SlotBatches(
        datasets, data.sources, data, train_cfg.seed, accelerator.num_processes, config.optim.grad_accum
    )
    loader = DataLoader(
        batches,
        sampler=SlotSampler(batches, accelerator.process_index, start_step, train_cfg.max_steps),
        batch_size=None,
        num_workers=data.workers,
    )
    validation_samples = None

    def validate(step: int) -> dict[str, float]:
        nonlocal validation_samples
        if not validation_sets:
            return {}
        if validation_samples is None:
            validation_samples = [ds[i] for ds in validation_sets for i in range(min(data.validation_samples, len(ds)))]
        # Every process predicts the same samples: the wrapped DiT gathers sharded weights in its forward.
        with frozen_autocast(accelerator, train_cfg.mixed_precision):
            metrics = evaluate(model, validation_samples, regress=module)
        if log is not None:
            log.log(step, metrics, prefix="val")
        return metrics

    def write_checkpoint(step: int, folder: Path) -> None:
        if is_deepspeed(accelerator):
            save_deepspeed_state(module, folder)
            accelerator.wait_for_everyone()
            weights = deepspeed_master_weights(folder) if accelerator.is_main_process else {}
            optimizer_full = None
        else:
            weights = gather_trained(accelerator, module)
            optimizer_full = optimizer_state(module, optimizer)
        if accelerator.is_main_process:
            state = {
                "step": step,
                "signature": signature,
                "config": config.to_dict(),
                "world_size": accelerator.num_processes,
            }
            write_checkpoint_files(folder, weights, optimizer_full, scheduler.state_dict(), state)

    def checkpoint_now(step: int) -> None:
        save_checkpoint(
            output_dir,
            step,
            accelerator.process_index,
            accelerator.is_main_process,
            accelerator.wait_for_everyone,
            lambda folder: write_checkpoint(step, folder),
            train_cfg.keep_checkpoints,
        )

    if restored is not None:
        set_rng_states(restored["rng"])
    result = TrainResult(step=start_step, output_dir=output_dir)
    if checkpoint is None and train_cfg.validate_at_start:
        result.validation = validate(0)

    module.train()
    micro_batches = iter(loader)
    window: dict[str, float] = {}
    window_steps, window_start = 0, time.perf_counter()
    for step in range(start_step + 1, train_cfg.max_steps + 1):
        totals: dict[str, float] = {}
        for _ in range(config.optim.grad_accum):
            batch = next(micro_batches)
            with torch.no_grad(), frozen_autocast(accelerator, train_cfg.mixed_precision):
                rgb_latents = model.encode(batch["rgb"].to(accelerator.device))
                target = model.encode(batch["depth_target"].to(accelerator.device))
            # accelerate syncs gradients (and DeepSpeed steps) on the last micro-step and divides the loss.
            with accelerator.accumulate(module):
                terms = loss_fn(module(rgb_latents), target, rgb_latents)
                accelerator.backward(terms.total)
            for name, value in terms.as_floats().items():
                totals[name] = totals.get(name, 0.0) + value / config.optim.grad_accum
        grad_norm = accelerator.clip_grad_norm_(module.parameters(), config.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(totals["loss"]):
            raise DVDError(
                f"the loss became {totals['loss']} at step {step}; lower optim.lr or use mixed_precision bf16/no"
            )
        result.losses.append(totals["loss"])
        totals["grad_norm"] = float(grad_norm)
        for name, value in totals.items():
            window[name] = window.get(name, 0.0) + value
        window_steps += 1
        result.step = step

        if step % train_cfg.log_every == 0 or step == train_cfg.max_steps:
            means = torch.tensor([window[k] / window_steps for k in sorted(window)], device=accelerator.device)
            means = accelerator.reduce(means, reduction="mean")
            values = dict(zip(sorted(window), means.tolist()))
            values["lr"] = scheduler.get_last_lr()[0]
            values["s_per_step"] = (time.perf_counter() - window_start) / window_steps
            if log is not None:
                log.log(step, values)
            window, window_steps, window_start = {}, 0, time.perf_counter()
        if step % train_cfg.validate_every == 0 or step == train_cfg.max_steps:
            result.validation = validate(step)
        if step % train_cfg.checkpoint_every == 0 or step == train_cfg.max_steps:
            checkpoint_now(step)

    if accelerator.is_main_process:
        formats = ["merged", "official"] if train_cfg.export == "both" else [train_cfg.export]
        trained = model_from_checkpoint(config, list_checkpoints(output_dir)[-1])
        result.exports = export_model(trained, output_dir / "export", formats, config.finetune.lora_alpha)
        log.close()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result
