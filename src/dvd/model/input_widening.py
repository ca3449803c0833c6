"""The widened patch embedding of the generative baseline: a DiT's input projection from C to 2C channels.

The generative DiT sees [x_sigma, rgb latent] on channels (`dvd.model.flow_matching`). Its input projection gets C new
input channels whose weights start at zero, so at step 0 the widened DiT computes exactly what the pretrained one
computes on the noisy latent alone, whatever the RGB half holds, and the condition enters only as training opens that
path: the initialisation InstructPix2Pix (Brooks et al. 2023, §3.4) and diffusers' image-to-video models
(CogVideoX-I2V: `in_channels` 32 over a 16-channel VAE) use for the same concatenation.

The input projections of diffusers' video DiTs are of three kinds:

- a convolution over the latent's channels (Wan's `patch_embedding` Conv3d, CogVideoX 1.0's `patch_embed.proj`
  Conv2d): the new channels are new input channels of the kernel;
- a Linear over packed patches (CogVideoX 1.5's `patch_embed.proj` with `patch_size_t`; LTX-Video's `proj_in` over
  `LTXPipeline._pack_latents` tokens): both pack channel-major, feature = c·P + position with P = p_t·p·p, so the
  2C-channel packing puts channel c < C at the same feature index as before and the new channels at C·P and
  beyond: the new columns are appended, not interleaved.

The module's config (`in_channels`) doubles with the layer, so `save_pretrained`/`from_pretrained` build the
widened shape; the output channels stay C (a config that left `out_channels` to default to `in_channels` gets it
spelled out).
"""

from __future__ import annotations

import torch
from torch import nn

InputLayer = nn.Conv2d | nn.Conv3d | nn.Linear


def widen_input_layer(layer: InputLayer, channels: int) -> None:
    """Widen `layer` in place from `channels` latent channels to 2·`channels`, the new weights zero.

    ValueError when the layer does not take `channels` latent channels (already widened, or another VAE's)."""
    weight = layer.weight
    if isinstance(layer, nn.Conv2d | nn.Conv3d):
        if layer.in_channels != channels or layer.groups != 1:
            raise ValueError(
                f"{layer} does not take {channels} latent channels; it cannot be widened to {2 * channels}"
            )
        widened = torch.cat([weight.data, torch.zeros_like(weight.data)], dim=1)
        layer.in_channels = 2 * channels
    elif isinstance(layer, nn.Linear):
        if layer.in_features % channels:
            raise ValueError(f"{layer} does not pack {channels} latent channels; it cannot be widened")
        # Channel-major packing: the old features are exactly the first C·P of the widened ones.
        widened = torch.cat([weight.data, torch.zeros_like(weight.data)], dim=1)
        layer.in_features = 2 * layer.in_features
    else:
        raise TypeError(f"cannot widen a {type(layer).__name__}: expected Conv2d, Conv3d or Linear")
    layer.weight = nn.Parameter(widened, requires_grad=weight.requires_grad)


def widen_transformer_input(transformer: nn.Module, layer_name: str, channels: int) -> None:
    """Widen the DiT's input projection `layer_name` (e.g. "patch_embedding", "patch_embed.proj", "proj_in") from
    `channels` to 2·`channels` latent channels in place, and its diffusers config with it."""
    config = transformer.config
    widen_input_layer(transformer.get_submodule(layer_name), channels)
    # `out_channels or in_channels` is how Wan and LTX default their output width: pin it before doubling the input.
    out_channels = config.get("out_channels") or config["in_channels"]
    transformer.register_to_config(in_channels=2 * config["in_channels"], out_channels=out_channels)
