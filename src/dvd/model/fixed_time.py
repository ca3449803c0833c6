"""The DiT's time conditions at DVD's one timestep, computed once instead of on every call.

The DiT's condition embedder turns the timestep into `temb` (the input of the output layer's modulation) and
`timestep_proj` (the input of every block's modulation: the shift, scale and gate of its self-attention and FFN,
added to the block's own table): a sinusoid, two linear layers and a projection to 6 x width. DVD always runs at
t = 1000·tau, so at inference both are constants of the weights. `precompute_time_conditions` makes the embedder
return them from a cache; only its text embedding (one token when the cross-attention is folded) still runs.

Each cache entry is computed by the embedder's own code on the shapes of the call it serves (batch size, dtype,
device), so it is bit-identical to what that call would compute. The cache is valid while the weights do not
change: inference only (full fine-tuning and the learned-τ ablation train the time embedder).
"""

from __future__ import annotations

import torch
from diffusers import WanTransformer3DModel
from diffusers.models.transformers.transformer_wan import WanTimeTextImageEmbedding

TimeConditions = tuple[torch.Tensor, torch.Tensor]  # temb [B, dim], timestep_proj [B, 6 * dim]


class FixedTimeConditionEmbedding(WanTimeTextImageEmbedding):
    """diffusers' condition embedder, with the time outputs for `fixed_timestep` cached. Installed by switching the
    class of the existing module (`precompute_time_conditions`), so its parameters, state_dict keys and `.to()`
    stay diffusers' own. The values of the timestep tensor a call passes are not read: the one caller,
    `dvd.model.backbones.wan.run_wan_dit`, passes `fixed_timestep` (and re-installs the cache for another timestep)."""

    fixed_timestep: float
    time_conditions: dict[tuple, TimeConditions]

    def forward(
        self,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor | None = None,
        timestep_seq_len: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if timestep_seq_len is not None:  # per-token timesteps (Wan2.2 TI2V): not DVD's DiT
            return super().forward(timestep, encoder_hidden_states, encoder_hidden_states_image, timestep_seq_len)
        temb, timestep_proj = self.conditions(timestep.shape[0], encoder_hidden_states, timestep.dtype)
        text = self.text_embedder(encoder_hidden_states)
        image = None if encoder_hidden_states_image is None else self.image_embedder(encoder_hidden_states_image)
        return temb, timestep_proj, text, image

    def conditions(self, batch: int, context: torch.Tensor, time_dtype: torch.dtype) -> TimeConditions:
        key = (batch, context.dtype, context.device, time_dtype)
        if key not in self.time_conditions:
            times = torch.full((batch,), self.fixed_timestep, dtype=time_dtype, device=context.device)
            with torch.no_grad():
                temb, timestep_proj, _, _ = super().forward(times, context[:, :1])
            self.time_conditions[key] = (temb, timestep_proj)
        return self.time_conditions[key]


def precompute_time_conditions(transformer: WanTransformer3DModel, timestep: float, batch: int = 1) -> None:
    """Cache the time conditions at `timestep`, computed now for `batch` windows on the weights' device and dtype
    (other batch sizes, devices or dtypes are computed at their first call)."""
    embedder = transformer.condition_embedder
    embedder.__class__ = FixedTimeConditionEmbedding
    embedder.fixed_timestep = float(timestep)
    embedder.time_conditions = {}
    weight = transformer.patch_embedding.weight
    context = torch.zeros(batch, 1, transformer.config.text_dim, dtype=weight.dtype, device=weight.device)
    embedder.conditions(batch, context, weight.dtype)


def release_time_conditions(transformer: WanTransformer3DModel) -> None:
    """Back to diffusers' embedder, which computes the time conditions on every call (the reference)."""
    embedder = transformer.condition_embedder
    if isinstance(embedder, FixedTimeConditionEmbedding):
        embedder.__class__ = WanTimeTextImageEmbedding
        del embedder.fixed_timestep, embedder.time_conditions


def fixed_timestep(transformer: WanTransformer3DModel) -> float | None:
    """The timestep whose time conditions the DiT has cached; None when it computes them on every call."""
    embedder = transformer.condition_embedder
    return embedder.fixed_timestep if isinstance(embedder, FixedTimeConditionEmbedding) else None
