"""The DVD training loop on accelerate (one process, or many through `accelerate launch`: DDP, FSDP2, DeepSpeed).

`Trainer` is one run. Setting it up checks everything that can be wrong with the input — config, data layout,
logger backends, precision, a resume checkpoint of another architecture — before the first step. `step` is one
optimiser step of the DVD objective: RGB pixels and the normalised-disparity target (3 equal channels) go through
the frozen VAE under no_grad, the DiT regresses the depth latent from the clean RGB latent at t = 1000·τ with the
empty condition (x-prediction), and the loss (`dvd.training.losses`) compares the two latents; gradients are
accumulated over `grad_accum` micro-steps, clipped, and AdamW steps the trainable parameters
(`dvd.training.trainable`). With `train.objective: generative` the step is the flow-matching baseline's instead
(`dvd.model.flow_matching`): the widened DiT predicts the velocity from [x_sigma, RGB latent] at a noise level drawn
per sample, and the loss compares it with eps - x0. What the parallel strategies do differently (sharded weights and optimizer state) is
kept in `dvd.training.distributed`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, init_empty_weights
from accelerate.utils import set_seed
from torch import Tensor
from torch.utils.data import DataLoader

from dvd.errors import DVDError
from dvd.model.dvd_model import DVDModel
from dvd.model.flow_matching import DEFAULT_STEPS, draw_noise, training_example
from dvd.training.batches import SlotBatches, SlotSampler, build_dataset, check_fits_backbone, frame_size
from dvd.training.checkpoint import (
    check_compatible,
    check_same_base,
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
from dvd.training.export import check_export, export_model
from dvd.training.losses import LossTerms, make_loss
from dvd.training.metrics_log import MetricsLog, check_backends
from dvd.training.regression import DepthRegression, DepthVelocity
from dvd.training.trainable import architecture_signature, base_fingerprint, for_objective, make_trainable
from dvd.training.validation import evaluate
from dvd.weights import load_weights
from dvd.weights.tiny import build_tiny_model

Batch = dict[str, Tensor]
VALIDATION_SEED = 0  # the noise a generative model's validation samples from


@dataclass
class TrainResult:
    step: int
    output_dir: Path
    exports: list[Path] = field(default_factory=list)
    validation: dict[str, float] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)  # total loss of every optimiser step run by this call


def load_base_model(section: ModelSection) -> DVDModel:
    """The model training starts from (float32, CPU): "tiny" (random tiny Wan2.1 test model) or any `--weights`
    source, a base model of any supported family (`dvd train --base`), "proof" (the tiny model shipped for
    `dvd demo`) and single-file models included; the backbone follows from the weights."""
    model = build_tiny_model(section.tiny_seed) if section.weights == "tiny" else load_weights(section.weights).model
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


class _Window:
    """Per-step values summed since the last log line."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.started = time.perf_counter()

    def add(self, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.steps += 1


class Trainer:
    """One training run: the constructor sets it up (and, when resuming, restores the checkpoint); `fit` then runs
    `step`, `validate` and `save` on schedule and ends with `export`."""

    def __init__(self, config: TrainConfig, resume: str | None = None) -> None:
        self.config = config
        train, data, optim = config.train, config.data, config.optim
        self.output_dir = Path(train.output_dir)
        self.accelerator = accelerator = Accelerator(
            mixed_precision=train.mixed_precision, gradient_accumulation_steps=optim.grad_accum
        )
        check_strategy(accelerator, optim.grad_accum, optim.grad_clip)
        if train.mixed_precision == "fp16" and accelerator.device.type == "cpu":
            raise DVDError("train.mixed_precision fp16 needs a GPU; use bf16 or no on CPU")
        check_backends(train.loggers)
        self.resumed_from = find_resume_checkpoint(self.output_dir, resume)
        datasets = [build_dataset(source, data, flip=data.flip) for source in data.sources]
        self.validation_sets = [build_dataset(source, data, flip=False) for source in data.validation]
        sizes = [frame_size(dataset) for dataset in datasets + self.validation_sets]
        self._validation_samples: list[Batch] | None = None

        set_seed(train.seed)
        self.model = for_objective(load_base_model(config.model), train.objective)
        check_fits_backbone(data.sources + data.validation, sizes, data, self.model)
        check_export(self.export_formats, self.model)
        if config.model.fold_cross_attention:  # the exact fast path, where the backbone has one (Wan)
            self.model.backbone.fold_constants(
                cross_attention=True, time_conditions=False, timestep=self.model.timestep
            )
        make_trainable(self.model, config.finetune, config.model.learned_tau, train.gradient_checkpointing)
        self.model.vae.eval()
        self.signature = architecture_signature(self.model)
        self.fingerprint = base_fingerprint(self.model)
        # The main process keeps the frozen tensors as loaded for `export`: the wrapped DiT may shard (FSDP2, ZeRO-3)
        # or cast (DeepSpeed bf16) them. They are references, not copies; the trained tensors come from each save.
        self.frozen = self._frozen_tensors() if accelerator.is_main_process else {}
        self.trained: dict[str, Tensor] = {}
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params, lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps, weight_decay=optim.weight_decay
        )
        scheduler = _make_scheduler(optimizer, optim.schedule)
        self.step_done = 0
        restored = self._load_trained(self.resumed_from, scheduler) if self.resumed_from else None

        self.model.to(accelerator.device)
        dit = DepthVelocity(self.model) if self.model.generative else DepthRegression(self.model)
        self.module, self.optimizer, self.scheduler = accelerator.prepare(dit, optimizer, scheduler)
        self.loss_fn = make_loss(
            config.loss.kind, config.loss.lambda_sp, config.loss.lambda_temp, config.loss.lambda_reg, config.loss.scales
        )
        self.log = None
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            dump_config(config, self.output_dir / "config.yaml")
            self.log = MetricsLog(self.output_dir, train.loggers, resume_step=self.step_done if restored else None)
        batches = SlotBatches(datasets, data.sources, data, train.seed, accelerator.num_processes, optim.grad_accum)
        sampler = SlotSampler(batches, accelerator.process_index, self.step_done, train.max_steps)
        self.loader = DataLoader(batches, sampler=sampler, batch_size=None, num_workers=data.workers)
        if restored is not None:
            self.restore(restored)

    def _frozen_tensors(self) -> dict[str, Tensor]:
        trained = set(self.signature)
        return {name: tensor for name, tensor in self.model.state_dict().items() if name not in trained}

    def _load_trained(self, checkpoint: Path, scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict[str, Any]:
        """Put a checkpoint's trained tensors and scheduler state into the unwrapped model (before `prepare`, which
        may shard them); returns the rest for `restore`."""
        state = read_state(checkpoint)
        check_compatible(checkpoint, state, self.signature)
        check_same_base(checkpoint, state, self.config.model, self.fingerprint)
        restored = load_checkpoint(
            checkpoint, self.accelerator.process_index, optimizer=not is_deepspeed(self.accelerator)
        )
        with torch.no_grad():
            named = dict(self.model.named_parameters())
            for name, tensor in restored["weights"].items():
                named[name].copy_(tensor)
        scheduler.load_state_dict(restored["scheduler"])
        self.step_done = int(state["step"])
        self.trained = restored["weights"] if self.accelerator.is_main_process else {}
        return {**restored, "checkpoint": checkpoint, "world_size": int(state["world_size"])}

    def restore(self, restored: dict[str, Any]) -> None:
        """Continue a checkpoint after `prepare`: the optimizer state (name-keyed in full, or DeepSpeed's partitions)
        and, last, every process's RNG states, so the following steps draw what the saved run drew."""
        if is_deepspeed(self.accelerator):
            load_deepspeed_state(self.accelerator, self.module, restored["checkpoint"], restored["world_size"])
        else:
            restore_optimizer(self.accelerator, self.module, self.optimizer, restored["optimizer"])
        set_rng_states(restored["rng"])

    def loss(self, batch: Batch) -> LossTerms:
        """The objective on one micro-batch, E the frozen VAE encoder: DVD's loss(DiT(E(rgb), t = 1000·τ), E(depth)),
        or the generative baseline's loss(DiT([x_sigma, E(rgb)], 1000·sigma), eps - E(depth)) with sigma and eps
        drawn from torch's generator (seeded by train.seed, saved with each checkpoint)."""
        device = self.accelerator.device
        with torch.no_grad(), frozen_autocast(self.accelerator, self.config.train.mixed_precision):
            rgb_latent = self.model.encode(batch["rgb"].to(device))
            depth_latent = self.model.encode(batch["depth_target"].to(device))
        if not self.model.generative:
            return self.loss_fn(self.module(rgb_latent), depth_latent, rgb_latent)
        example = training_example(depth_latent, rgb_latent)
        return self.loss_fn(self.module(example.dit_input, example.timesteps), example.target, rgb_latent)

    def step(self, batches: Iterator[Batch]) -> dict[str, float]:
        """One optimiser step over `grad_accum` micro-batches; returns the mean loss terms and the gradient norm."""
        grad_accum = self.config.optim.grad_accum
        totals: dict[str, float] = {}
        for _ in range(grad_accum):
            # accelerate syncs gradients (and DeepSpeed steps) on the last micro-step and divides the loss.
            with self.accelerator.accumulate(self.module):
                terms = self.loss(next(batches))
                self.accelerator.backward(terms.total)
            for name, value in terms.as_floats().items():
                totals[name] = totals.get(name, 0.0) + value / grad_accum
        grad_norm = self.accelerator.clip_grad_norm_(self.module.parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_done += 1
        if not math.isfinite(totals["loss"]):
            raise DVDError(
                f"the loss became {totals['loss']} at step {self.step_done}; "
                "lower optim.lr or use mixed_precision bf16/no"
            )
        return {**totals, "grad_norm": float(grad_norm)}

    def validate(self, step: int) -> dict[str, float]:
        """AbsRel and δ1 on the validation sources (every process predicts the same samples, through the wrapped
        DiT, whose forward gathers sharded weights); logged under `val/`."""
        if not self.validation_sets:
            return {}
        if self._validation_samples is None:
            count = self.config.data.validation_samples
            self._validation_samples = [ds[i] for ds in self.validation_sets for i in range(min(count, len(ds)))]
        with frozen_autocast(self.accelerator, self.config.train.mixed_precision):
            metrics = evaluate(self.model, self._validation_samples, regress=self._depth_latent)
        if self.log is not None:
            self.log.log(step, metrics, prefix="val")
        return metrics

    def _depth_latent(self, rgb_latent: Tensor) -> Tensor:
        """The depth latent validation scores, through the wrapped DiT: one pass, or (generative) DEFAULT_STEPS
        Euler steps from noise of a fixed seed, so that validations along a run see the same noise."""
        if not self.model.generative:
            return self.module(rgb_latent)
        noise = draw_noise(rgb_latent, torch.Generator().manual_seed(VALIDATION_SEED))
        return self.model.sample(rgb_latent, DEFAULT_STEPS, noise, velocity=self.module)

    def save(self, step: int) -> Path:
        """Checkpoint `step` (collective: every process calls it)."""
        accelerator = self.accelerator
        return save_checkpoint(
            self.output_dir,
            step,
            accelerator.process_index,
            accelerator.is_main_process,
            accelerator.wait_for_everyone,
            lambda folder: self._write_checkpoint(step, folder),
            self.config.train.keep_checkpoints,
        )

    def _write_checkpoint(self, step: int, folder: Path) -> None:
        accelerator = self.accelerator
        if is_deepspeed(accelerator):
            save_deepspeed_state(self.module, folder)
            accelerator.wait_for_everyone()
            weights = deepspeed_master_weights(folder) if accelerator.is_main_process else {}
            optimizer_full = None
        else:
            weights = gather_trained(self.module)
            optimizer_full = optimizer_state(self.module, self.optimizer)
        if accelerator.is_main_process:
            self.trained = weights
            state = {"step": step, "signature": self.signature, "config": self.config.to_dict()}
            state["base_fingerprint"] = self.fingerprint
            state["world_size"] = accelerator.num_processes
            write_checkpoint_files(folder, weights, optimizer_full, self.scheduler.state_dict(), state)

    def trained_model(self) -> DVDModel:
        """The model as last saved, float32 on the CPU, from the tensors in memory (main process only): the frozen
        ones as loaded and the trained ones of the last save or restore."""
        with init_empty_weights():
            # The backbone's classes: FSDP2 swaps the class of the module it wraps for a subclass of its own.
            backbone = self.model.backbone
            transformer = backbone.transformer_class.from_config(self.model.transformer.config)
            vae = backbone.vae_class.from_config(self.model.vae.config)
            model = DVDModel(
                transformer,
                vae,
                tau=self.model.tau,
                condition=self.model.backbone.condition,
                objective=self.model.objective,
            )
            make_trainable(model, self.config.finetune, self.config.model.learned_tau, gradient_checkpointing=False)
        model.load_state_dict({**self.frozen, **self.trained}, strict=True, assign=True)
        return model.float().cpu()

    def export(self) -> list[Path]:
        """Write the model in `train.export`'s formats under `<output_dir>/export` (main process; others: [])."""
        if not self.accelerator.is_main_process:
            return []
        return export_model(
            self.trained_model(), self.output_dir / "export", self.export_formats, self.config.finetune.lora_alpha
        )

    @property
    def export_formats(self) -> list[str]:
        kind = self.config.train.export
        return ["merged", "official"] if kind == "both" else [kind]

    def _log_window(self, window: _Window) -> None:
        names = sorted(window.sums)
        means = torch.tensor([window.sums[k] / window.steps for k in names], device=self.accelerator.device)
        values = dict(zip(names, self.accelerator.reduce(means, reduction="mean").tolist()))
        values["lr"] = self.scheduler.get_last_lr()[0]
        values["s_per_step"] = (time.perf_counter() - window.started) / window.steps
        if self.log is not None:
            self.log.log(self.step_done, values)

    def fit(self) -> TrainResult:
        """Train to `train.max_steps` (validating, logging and checkpointing on schedule), export, and close."""
        train = self.config.train
        result = TrainResult(step=self.step_done, output_dir=self.output_dir)
        if self.resumed_from is None and train.validate_at_start:
            result.validation = self.validate(0)
        self.module.train()
        batches = iter(self.loader)
        window = _Window()
        while self.step_done < train.max_steps:
            values = self.step(batches)
            step = result.step = self.step_done
            result.losses.append(values["loss"])
            window.add(values)
            last = step == train.max_steps
            if step % train.log_every == 0 or last:
                self._log_window(window)
                window = _Window()
            if step % train.validate_every == 0 or last:
                result.validation = self.validate(step)
            if step % train.checkpoint_every == 0 or last:
                self.save(step)
        result.exports = self.export()
        self.close()
        return result

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()


def train(config: TrainConfig, resume: str | None = None) -> TrainResult:
    """Run (or continue) the training described by `config`; returns where it ended and what it exported."""
    return Trainer(config, resume).fit()
