"""The generative baseline: conditional flow matching of the depth latent given the RGB latent, as pure functions.

DVD regresses the depth latent in one DiT pass; the paper's baseline (its Fig. 11) trains the same backbone as a
generative model instead, with the objective the backbone was pretrained with (rectified flow: Wan, LTX-Video and
SD3 share it; CogVideoX was pretrained as a v-prediction DDPM, so on it the baseline changes the noise process too)
and samples it in T steps. The conventions are those of Wan and of diffusers'
`FlowMatchEulerDiscreteScheduler`, with sigma in [0, 1] the noise level:

    x_sigma  = (1 - sigma)·x0 + sigma·eps,      x0 the clean depth latent, eps ~ N(0, I)
    v        = d x_sigma / d sigma = eps - x0     (the regression target: "velocity")
    timestep = 1000·sigma                         (what the DiT's timestep embedding sees, as in pretraining)
    DiT input = [x_sigma, rgb latent] concatenated on channels (2C in, C out: `dvd.model.input_widening`)

Training draws sigma per sample from the logit-normal distribution sigma = sigmoid(n), n ~ N(0, 1): the sampler
that ranked best among the rectified-flow variants of Esser et al. 2024 (SD3, §3.1, "rf/lognorm(0.00, 1.00)"), and
diffusers' `compute_density_for_timestep_sampling("logit_normal")` for its flow-matching fine-tuning scripts. It
spends the training on middle noise levels, where the velocity is hardest to predict, and is how SD3-style
rectified-flow DiTs are pretrained, so their timestep embedding is fine-tuned where it was trained. The
loss on v is the training config's (`dvd.training.losses` applies to whatever the objective predicts); the paper's
baseline, the standard objective, is the plain MSE on v (`loss.kind: l2`).

Sampling integrates dx/dsigma = v from sigma = 1 (pure noise) to sigma = 0 with Euler steps on the uniform grid
sigma_i = 1 - i/T, x <- x + (sigma_{i+1} - sigma_i)·v(x, sigma_i): no timestep shift, so T = 1 is exactly one DiT
call and lands on eps - v(eps, 1000), the model's one-shot estimate of x0.

Everything here is written over a `Velocity` callable, so it does not depend on the backbone; noise and sigmas are
drawn on the generator's device (the CPU unless given another) and then moved, so a seed means the same numbers on
any device.

A DVD model records which objective trained it (`Objective`): "regression" (DVD: one DiT pass from the RGB latent,
the DiT's input as pretrained) or "generative" (this baseline: the DiT's input widened to [x_sigma, rgb latent]).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from dvd.errors import DVDError

Velocity = Callable[[Tensor, Tensor], Tensor]
"""(DiT input [B, 2C, ...] = [x_sigma, rgb latent] on channels, timesteps [B] = 1000·sigma) -> velocity [B, C, ...]."""

Objective = Literal["regression", "generative"]
REGRESSION: Objective = "regression"
GENERATIVE: Objective = "generative"
OBJECTIVES: tuple[Objective, ...] = (REGRESSION, GENERATIVE)

TIMESTEP_SCALE = 1000.0
# Euler steps when the caller does not say: the multi-step setting of the paper's comparison (its Fig. 11, T = 10).
DEFAULT_STEPS = 10
# The logit-normal sigma sampler of SD3 (§3.1): sigma = sigmoid(LOGIT_MEAN + LOGIT_STD · n), n ~ N(0, 1).
LOGIT_MEAN, LOGIT_STD = 0.0, 1.0


@dataclass(frozen=True)
class FlowMatchingExample:
    """One training example of the objective: what the DiT is given and what it should answer."""

    dit_input: Tensor  # [B, 2C, ...]: [x_sigma, rgb latent]
    timesteps: Tensor  # [B]: 1000·sigma
    target: Tensor  # [B, C, ...]: eps - x0


def _generator_device(generator: torch.Generator | None) -> torch.device:
    return torch.device("cpu") if generator is None else generator.device


def draw_noise(like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal float32 noise of `like`'s shape on `like`'s device, drawn with `generator` (None: torch's
    global generator) on the generator's device."""
    noise = torch.randn(like.shape, generator=generator, device=_generator_device(generator), dtype=torch.float32)
    return noise.to(like.device)


def draw_sigmas(batch: int, generator: torch.Generator | None = None) -> Tensor:
    """`batch` noise levels from the logit-normal distribution, float32 [batch] on the generator's device."""
    normal = torch.randn(batch, generator=generator, device=_generator_device(generator), dtype=torch.float32)
    return torch.sigmoid(LOGIT_MEAN + LOGIT_STD * normal)


def _per_sample(sigma: Tensor, like: Tensor) -> Tensor:
    """sigma [B] shaped to broadcast over `like` [B, ...], on its device."""
    return sigma.to(device=like.device, dtype=torch.float32).view(-1, *([1] * (like.ndim - 1)))


def interpolate(x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
    """x_sigma = (1 - sigma)·x0 + sigma·noise (float32), sigma [B] one per sample."""
    s = _per_sample(sigma, x0)
    return (1 - s) * x0.float() + s * noise.float()


def velocity_target(x0: Tensor, noise: Tensor) -> Tensor:
    """v = noise - x0 (float32): the derivative of x_sigma in sigma."""
    return noise.float() - x0.float()


def dit_input(x: Tensor, rgb_latent: Tensor) -> Tensor:
    """The widened DiT's input: the noisy depth latent, then the RGB latent, on the channel axis (float32)."""
    return torch.cat([x.float(), rgb_latent.float()], dim=1)


def timesteps(sigma: Tensor) -> Tensor:
    """The DiT's timestep for noise level sigma: 1000·sigma."""
    return TIMESTEP_SCALE * sigma


def training_example(
    depth_latent: Tensor, rgb_latent: Tensor, generator: torch.Generator | None = None
) -> FlowMatchingExample:
    """Draw sigma (one per sample) and eps for clean depth latents [B, C, ...] and build the example."""
    if depth_latent.shape != rgb_latent.shape:
        raise ValueError(
            f"depth and RGB latents must share their shape, got {tuple(depth_latent.shape)} "
            f"and {tuple(rgb_latent.shape)}"
        )
    sigma = draw_sigmas(depth_latent.shape[0], generator).to(depth_latent.device)
    noise = draw_noise(depth_latent, generator)
    return FlowMatchingExample(
        dit_input=dit_input(interpolate(depth_latent, noise, sigma), rgb_latent),
        timesteps=timesteps(sigma),
        target=velocity_target(depth_latent, noise),
    )


def sigma_schedule(steps: int) -> list[float]:
    """The T + 1 noise levels of T Euler steps: 1, 1 - 1/T, ..., 0."""
    if steps < 1:
        raise ValueError(f"the number of sampling steps must be at least 1, got {steps}")
    return [1.0 - i / steps for i in range(steps)] + [0.0]


def euler_sample(velocity: Velocity, rgb_latent: Tensor, steps: int, noise: Tensor) -> Tensor:
    """A depth latent for `rgb_latent` [B, C, ...]: T Euler steps from `noise` (x at sigma = 1, the RGB latent's
    shape: the depth latent lives in the same VAE's space) down to sigma = 0, float32. `velocity` is called exactly
    `steps` times, in order of decreasing sigma."""
    if noise.shape != rgb_latent.shape:
        raise ValueError(f"noise {tuple(noise.shape)} must have the RGB latent's shape {tuple(rgb_latent.shape)}")
    sigmas = sigma_schedule(steps)
    x = noise.float()
    batch = rgb_latent.shape[0]
    for sigma, following in itertools.pairwise(sigmas):
        level = torch.full((batch,), sigma, dtype=torch.float32, device=rgb_latent.device)
        x = x + (following - sigma) * velocity(dit_input(x, rgb_latent), timesteps(level)).float()
    return x


def check_objective(value: object, where: str) -> Objective:
    """`value` as an objective; DVDError naming `where` (the file or setting it came from) otherwise."""
    if value not in OBJECTIVES:
        raise DVDError(
            f"{where} is {value!r}, not an objective dvd knows ({', '.join(OBJECTIVES)}): update dvd, or re-save "
            "the model with this version"
        )
    return value  # type: ignore[return-value]
