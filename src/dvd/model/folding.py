"""Constant folding of the DiT's cross-attention, exact for DVD's all-zero text context.

DVD feeds the DiT a text context of zeros, so after the text embedding every context token is the same vector c.
In every block's cross-attention all keys are then equal and all values are equal: the softmax is uniform whatever
the queries are, and the branch returns ``to_out(to_v(c))`` for every image token. Folding replaces the branch by
that vector, computed from a single context token on each call (negligible work, and still differentiable through
the text embedding, ``to_v`` and ``to_out``), and the DiT is given one context token instead of 512. Skipped: the
query and key projections, the attention itself, and 511 tokens of text embedding and key/value projections in
every block — about 30 % of the DiT's work at small token counts.

What the branch no longer reads — the query side (the block's ``norm2``, ``to_q``, ``norm_q``) and the key side
(``to_k``, ``norm_k``) — cannot affect the output even unfolded: equal keys make the softmax uniform whatever the
queries and the keys are, and its gradient with respect to both is zero. Training therefore freezes them
(`inert_cross_attention_parameters`), folded or not, which also keeps DDP from waiting for gradients that never come.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from diffusers import WanTransformer3DModel
from diffusers.models.transformers.transformer_wan import WanAttention, WanAttnProcessor
from torch import nn


class ConstantContextAttention:
    """A diffusers attention processor for cross-attention over a context whose tokens are all equal."""

    def __call__(
        self,
        attn: WanAttention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        value = attn.to_v(encoder_hidden_states[:, :1]).type_as(hidden_states)  # [B, 1, dim]: every token's value
        constant = attn.to_out[1](attn.to_out[0](value))
        return constant.expand(-1, hidden_states.shape[1], -1)


def fold_cross_attention(transformer: WanTransformer3DModel) -> None:
    """Replace every block's cross-attention by its constant (see the module docstring)."""
    for block in transformer.blocks:
        if block.attn2.add_k_proj is not None:  # image-conditioned (I2V) DiTs attend to image tokens too
            raise ValueError("cross-attention folding needs a text-only DiT (Wan2.1 T2V), not an image-conditioned one")
        block.attn2.set_processor(ConstantContextAttention())


def unfold_cross_attention(transformer: WanTransformer3DModel) -> None:
    """Back to diffusers' own cross-attention (the reference computation)."""
    for block in transformer.blocks:
        block.attn2.set_processor(WanAttnProcessor())


def is_folded(transformer: WanTransformer3DModel) -> bool:
    return all(isinstance(block.attn2.processor, ConstantContextAttention) for block in transformer.blocks)


def inert_cross_attention_parameters(transformer: WanTransformer3DModel) -> Iterator[tuple[str, nn.Parameter]]:
    """(name, parameter) of the query and key side of every block's cross-attention, LoRA layers included: with a
    context of equal tokens they cannot change the output (see the module docstring). Names as in
    `transformer.named_parameters()`."""
    for index, block in enumerate(transformer.blocks):
        attn = block.attn2
        sides = {"norm2": block.norm2, "attn2.to_q": attn.to_q, "attn2.norm_q": attn.norm_q}
        sides |= {"attn2.to_k": attn.to_k, "attn2.norm_k": attn.norm_k}
        for prefix, module in sides.items():
            for name, param in module.named_parameters():
                yield f"blocks.{index}.{prefix}.{name}", param
