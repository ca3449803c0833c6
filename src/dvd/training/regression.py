"""The part of the DVD model that training differentiates and DDP, FSDP or DeepSpeed wrap: the DiT alone, called
as the objective calls it (regression: `DepthRegression`; the generative baseline: `DepthVelocity`)."""

from __future__ import annotations

from torch import Tensor, nn

from dvd.model.dvd_model import DVDModel


class DepthRegression(nn.Module):
    """One DiT pass from the RGB latent to the depth latent at the model's fixed timestep.

    The frozen VAE stays outside, so no strategy shards or gathers it: each process encodes alone (ZeRO-3 would
    otherwise gather VAE weights per call, and clips and images call it a different number of times)."""

    def __init__(self, model: DVDModel) -> None:
        super().__init__()
        self.transformer = model.transformer  # the same module object: the DVDModel sees what training changes
        self.backbone = model.backbone  # not a module: its `denoise` is handed the (wrapped) DiT
        self.timestep = model.timestep
        # FSDP's default wrap policy reads this: each DiT block becomes one sharding unit. From the backbone, not
        # the DiT class's own list, which some families lack (LTX-Video).
        self._no_split_modules: list[str] = [model.backbone.block_class.__name__]

    def forward(self, rgb_latents: Tensor) -> Tensor:
        # The DiT returns a view (of its unpatchify reshape); FSDP2 warns that an in-place op on a view would skip its
        # backward hook. A copy of the small latent costs nothing and leaves no such trap.
        return self.backbone.denoise(self.transformer, rgb_latents, self.timestep).clone()


class DepthVelocity(DepthRegression):
    """The generative objective's DiT call (`dvd.model.flow_matching`): the velocity for [x_sigma, rgb latent] at
    per-sample timesteps; wrapped the same way as `DepthRegression` (whose fixed timestep it does not use)."""

    def forward(self, dit_input: Tensor, timesteps: Tensor) -> Tensor:
        return self.backbone.denoise(self.transformer, dit_input, timesteps).clone()
