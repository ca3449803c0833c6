"""The VAE's channels-last layout (`DVDModel.set_vae_channels_last`): the same depth, and back to the default."""

from __future__ import annotations

import pytest
import torch

from dvd.weights.tiny import build_tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def conv_weights(model) -> list[torch.Tensor]:
    return [param for param in model.vae.parameters() if param.ndim == 5]


def test_channels_last_vae_gives_the_same_depth_and_switches_back():
    model = build_tiny_model(seed=2).eval()
    pixels = torch.rand(1, 3, 5, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(pixels)
        model.set_vae_channels_last(True)
        assert all(w.is_contiguous(memory_format=torch.channels_last_3d) for w in conv_weights(model))
        assert not all(w.is_contiguous() for w in conv_weights(model))
        channels_last = model(pixels)
        model.set_vae_channels_last(False)
        assert all(w.is_contiguous() for w in conv_weights(model))
        again = model(pixels)
    torch.testing.assert_close(channels_last, reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(again, reference, rtol=0, atol=0)
