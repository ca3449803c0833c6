"""The CogVideoX and LTX-Video backbones on tiny random models in their diffusers layouts (no downloads): frame
rules and strides, the latent round trip, determinism, the empty-prompt condition from a tiny T5, the errors, the
DVD loss's gradient through LoRA, and the DiT call checked against each family's own pipeline code."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from diffusers import (
    CogVideoXDDIMScheduler,
    CogVideoXPipeline,
    FlowMatchEulerDiscreteScheduler,
    LTXPipeline,
)
from peft import LoraConfig, inject_adapter_in_model
from transformers import T5EncoderModel, T5Tokenizer

from dvd.errors import DVDError
from dvd.model.backbone import Backbone, FrameRule
from dvd.model.backbones.cogvideox import CogVideoXBackbone
from dvd.model.backbones.ltx import LTXVideoBackbone
from dvd.training.losses import dvd_loss
from dvd.weights.tiny import TINY_T5, write_tiny_base

FAMILIES = [CogVideoXBackbone, LTXVideoBackbone]
# What each family's pipeline pads the prompt to (their __call__ defaults; CogVideoX: its DiT's max_text_seq_length).
PROMPT_TOKENS = {"cogvideox": CogVideoXBackbone.sizes["tiny"][0]["max_text_seq_length"], "ltx-video": 128}


def default_modules(
    family: type[Backbone], seed: int = 0, **vae_changes: object
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The tiny size with diffusers' own initialisation, unlike `dvd.weights.tiny.tiny_modules`: the LTX decoder's
    noise injection is then off (its scales start at 0), so its output can be compared with the pipeline's."""
    dit, vae = family.sizes["tiny"]
    torch.manual_seed(seed)
    return family.transformer_class(**dit).eval(), family.vae_class(**{**vae, **vae_changes}).eval()


def tiny_backbone(family: type[Backbone], seed: int = 0) -> Backbone:
    transformer, vae = default_modules(family, seed)
    tokens = PROMPT_TOKENS[family.family] if family is CogVideoXBackbone else 1
    return family(transformer, vae, torch.randn(tokens, TINY_T5["d_model"], generator=torch.Generator().manual_seed(9)))


def t5_embedding(folder: Path, ids: list[int]) -> torch.Tensor:
    """The tiny base's T5 run on `ids` as the pipelines run it (no attention mask): [len(ids), 16]."""
    encoder = T5EncoderModel.from_pretrained(folder / "text_encoder").eval()
    with torch.no_grad():
        return encoder(torch.tensor([ids]))[0][0]


def pixels(backbone: Backbone, frames: int = 9, batch: int = 1, seed: int = 3) -> torch.Tensor:
    s = backbone.spatial_stride
    return torch.rand(batch, 3, frames, 2 * s, 3 * s, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def ltx_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_base(tmp_path_factory.mktemp("ltx"), LTXVideoBackbone.family)


@pytest.mark.parametrize(("family", "stride"), [(CogVideoXBackbone, 16), (LTXVideoBackbone, 32)])
def test_frame_rule_and_spatial_stride(family: type[Backbone], stride: int) -> None:
    backbone = tiny_backbone(family)
    assert backbone.frame_rule == FrameRule(8)
    assert backbone.spatial_stride == stride


@pytest.mark.parametrize(
    ("family", "size", "stride", "parameters"),
    [(CogVideoXBackbone, "5b", 16, 5e9), (LTXVideoBackbone, "2b", 32, 2e9)],
)
def test_released_sizes(family: type[Backbone], size: str, stride: int, parameters: float) -> None:
    dit, vae = family.sizes[size]
    with torch.device("meta"):
        backbone = family(family.transformer_class(**dit), family.vae_class(**vae))
    assert (backbone.frame_rule, backbone.spatial_stride) == (FrameRule(8), stride)
    count = sum(p.numel() for p in backbone.transformer.parameters())
    assert 0.85 * parameters < count < 1.2 * parameters


def test_cogvideox_frame_rule_is_what_its_vae_decodes_back() -> None:
    """4n+1 clips encode, but only 8n+1 ones (an odd latent count) decode to as many frames as went in."""
    backbone = tiny_backbone(CogVideoXBackbone)
    for frames in (1, 5, 9, 13, 17):
        with torch.no_grad():
            decoded = backbone.decode(backbone.encode(pixels(backbone, frames)))
        assert (decoded.shape[2] == frames) == backbone.frame_rule.fits(frames), frames


@pytest.mark.parametrize("family", FAMILIES)
def test_encode_denoise_decode_shapes(family: type[Backbone]) -> None:
    backbone = tiny_backbone(family)
    x = pixels(backbone, frames=9, batch=2)
    with torch.no_grad():
        latents = backbone.encode(x)
        depth = backbone.denoise(backbone.transformer, latents, 500.0)
        video = backbone.decode(depth)
    # 9 frames of 2x3 strides: LTX 2 latent frames of 2x3 (32x32x8, patch 1); CogVideoX 3 of 4x6 (8x8x4, patch 2)
    expected = (2, 8, 2, 2, 3) if family is LTXVideoBackbone else (2, 4, 3, 4, 6)
    assert latents.shape == expected
    assert depth.shape == latents.shape
    assert video.shape == x.shape
    assert video.abs().max() <= 1


@pytest.mark.parametrize("family", FAMILIES)
def test_deterministic(family: type[Backbone]) -> None:
    backbone = tiny_backbone(family)
    if family is LTXVideoBackbone:  # the 0.9.1 decoder's noise injection, off (scale 0) at initialisation
        with torch.no_grad():
            for name, param in backbone.vae.named_parameters():
                if "per_channel_scale" in name:
                    param.fill_(0.5)
        with torch.no_grad():
            z = torch.randn(1, 8, 2, 2, 3)
            noisy = [backbone.vae.decode(z, torch.zeros(1)).sample for _ in range(2)]
        assert not torch.equal(*noisy)  # so the check below is not vacuous
    x = pixels(backbone)

    def run() -> torch.Tensor:
        with torch.no_grad():
            return backbone.decode(backbone.denoise(backbone.transformer, backbone.encode(x), 500.0))

    state = torch.get_rng_state()
    first = run()
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, run())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("with_tokenizer", [False, True])
def test_from_base_embeds_the_empty_prompt(family: type[Backbone], with_tokenizer: bool, tmp_path: Path) -> None:
    tokens = PROMPT_TOKENS[family.family]
    if with_tokenizer:
        # Ids unlike T5's usual ones (pad 1, eos 2, not 0 and 1), so only the tokenizer can have produced them.
        vocab = [("<unk>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("▁a", -1.0)]
        tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
        ids = [2] + [1] * (tokens - 1)
    else:
        tokenizer = None
        ids = [1] + [0] * (tokens - 1)  # T5Config's eos_token_id, then pad_token_id
    folder = write_tiny_base(tmp_path, family.family, tokenizer=tokenizer)
    backbone = family.from_base(folder)
    assert type(backbone) is family
    expected = t5_embedding(folder, ids)
    # LTX keeps the tokens its mask keeps: the end-of-sequence token of "" alone.
    torch.testing.assert_close(backbone.condition, expected if family is CogVideoXBackbone else expected[:1])
    with torch.no_grad():
        out = backbone.denoise(backbone.transformer, backbone.encode(pixels(backbone)), 500.0)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_from_base_without_text_encoder(family: type[Backbone], tmp_path: Path) -> None:
    transformer, vae = default_modules(family)
    transformer.save_pretrained(tmp_path / "transformer")
    vae.save_pretrained(tmp_path / "vae")
    with pytest.raises(DVDError, match="no text_encoder/.*download the base model's text_encoder/"):
        family.from_base(tmp_path)


def test_from_base_loads_no_pickle(tmp_path: Path) -> None:
    write_tiny_base(tmp_path, CogVideoXBackbone.family)
    for weights in (tmp_path / "transformer").glob("*.safetensors"):
        weights.unlink()
    default_modules(CogVideoXBackbone)[0].save_pretrained(tmp_path / "transformer", safe_serialization=False)
    with pytest.raises(DVDError, match="transformer could not be loaded from safetensors.*download its .safetensors"):
        CogVideoXBackbone.from_base(tmp_path)


def test_from_base_with_another_familys_vae(tmp_path: Path) -> None:
    default_modules(CogVideoXBackbone)[0].save_pretrained(tmp_path / "transformer")
    default_modules(LTXVideoBackbone)[1].save_pretrained(tmp_path / "vae")
    with pytest.raises(DVDError, match="holds a AutoencoderKLLTXVideo, not the AutoencoderKLCogVideoX"):
        CogVideoXBackbone.from_base(tmp_path)


def test_check_pair_names_the_fix() -> None:
    cog_dit, cog_vae = default_modules(CogVideoXBackbone)
    ltx_dit, ltx_vae = default_modules(LTXVideoBackbone)
    assert CogVideoXBackbone.matches(cog_dit, ltx_vae) and not CogVideoXBackbone.matches(ltx_dit, cog_vae)
    assert LTXVideoBackbone.matches(ltx_dit, cog_vae) and not LTXVideoBackbone.matches(cog_dit, ltx_vae)
    with pytest.raises(DVDError, match="needs an AutoencoderKLCogVideoX.*use the vae/ of the same CogVideoX"):
        CogVideoXBackbone(cog_dit, ltx_vae)
    with pytest.raises(DVDError, match="needs an AutoencoderKLLTXVideo.*use the vae/ of the same LTX-Video"):
        LTXVideoBackbone(ltx_dit, cog_vae)
    with pytest.raises(DVDError, match="VAE has 8 latent channels but the CogVideoX DiT takes 4 in / 4 out"):
        CogVideoXBackbone(cog_dit, default_modules(CogVideoXBackbone, latent_channels=8)[1])
    with pytest.raises(DVDError, match="4 latent channels in 1x1 patches make 4 per token but .* takes 8 in"):
        LTXVideoBackbone(ltx_dit, default_modules(LTXVideoBackbone, latent_channels=4)[1])
    dit, _ = LTXVideoBackbone.sizes["tiny"]
    with pytest.raises(DVDError, match="patches 2 latent frames together.*patch_size_t 1"):
        LTXVideoBackbone(LTXVideoBackbone.transformer_class(**{**dit, "patch_size_t": 2}), ltx_vae)
    with pytest.raises(DVDError, match=r"condition is \(3, 16\) but the DiT takes \(8, 16\).*dvd train --base"):
        CogVideoXBackbone(cog_dit, cog_vae, torch.zeros(3, 16))
    with pytest.raises(DVDError, match="condition is .* contexts of 16.*dvd train --base"):
        LTXVideoBackbone(ltx_dit, ltx_vae, torch.zeros(1, 32))


@pytest.mark.parametrize("family", FAMILIES)
def test_dvd_loss_gradient_reaches_lora(family: type[Backbone]) -> None:
    backbone = tiny_backbone(family)
    transformer = backbone.transformer
    config = LoraConfig(r=2, lora_alpha=2, target_modules=list(family.lora_targets))
    inject_adapter_in_model(config, transformer, adapter_name="default")
    names = [name for name, _ in transformer.named_modules()]
    for target in family.lora_targets:
        assert any(name.endswith(f".{target}.lora_B.default") for name in names), target
    transformer.requires_grad_(False)
    lora = {name: p for name, p in transformer.named_parameters() if "lora_" in name}
    for param in lora.values():
        param.requires_grad_(True)
    with torch.no_grad():
        latents = backbone.encode(pixels(backbone))
    target = torch.randn(latents.shape, generator=torch.Generator().manual_seed(4))
    loss = dvd_loss(backbone.denoise(transformer, latents, 500.0), target)
    assert torch.isfinite(loss.total)
    loss.total.backward()
    for name, param in lora.items():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        if "lora_B" in name:  # lora_A gets none while B is its initial zero
            assert param.grad.abs().sum() > 0, name


COGVIDEOX_VARIANTS = {
    # The 5B's RoPE on a 4x6 latent (a 2x3 grid) fitted into a taller and a wider training grid, so that its crop
    # region is offset from the top, then from the left.
    "1.0-rope-tall": {"sample_height": 12, "sample_width": 8},
    "1.0-rope-wide": {"sample_height": 4, "sample_width": 12},
    "1.0-sincos": {"use_rotary_positional_embeddings": False},  # the 2B's positional embedding
    "1.5": {"patch_size_t": 2, "sample_height": 6, "sample_width": 8},  # an odd latent count, padded in front
}


@pytest.mark.parametrize("variant", COGVIDEOX_VARIANTS)
def test_cogvideox_denoise_is_the_pipelines_call(variant: str) -> None:
    dit, vae = CogVideoXBackbone.sizes["tiny"]
    torch.manual_seed(0)
    transformer = CogVideoXBackbone.transformer_class(**{**dit, **COGVIDEOX_VARIANTS[variant]}).eval()
    backbone = CogVideoXBackbone(transformer, CogVideoXBackbone.vae_class(**vae), torch.randn(8, 16))
    pipe = CogVideoXPipeline(None, None, backbone.vae, transformer, CogVideoXDDIMScheduler())
    latents = torch.randn(2, 4, 3, 4, 6, generator=torch.Generator().manual_seed(5))  # 9 frames of 32x48

    hidden = latents.permute(0, 2, 1, 3, 4)  # the pipeline's [B, F, C, H, W]
    lead = 0
    if transformer.config.patch_size_t is not None:  # the image-to-video pipeline's padding with the first frame
        lead = hidden.shape[1] % transformer.config.patch_size_t
        hidden = torch.cat([hidden[:, :lead], hidden], dim=1)
    rotary = None
    if transformer.config.use_rotary_positional_embeddings:
        rotary = pipe._prepare_rotary_positional_embeddings(32, 48, hidden.shape[1], torch.device("cpu"))
    with torch.no_grad():
        expected = transformer(
            hidden_states=hidden,
            encoder_hidden_states=backbone.condition.expand(2, -1, -1),
            timestep=torch.tensor(500).expand(2),  # a CogVideoXDDIMScheduler timestep, as the pipeline passes it
            image_rotary_emb=rotary,
            return_dict=False,
        )[0][:, lead:]
        got = backbone.denoise(transformer, latents, 500.0)
    assert torch.equal(got, expected.permute(0, 2, 1, 3, 4))


def test_ltx_denoise_is_the_pipelines_call(ltx_base: Path) -> None:
    folder = ltx_base
    backbone = LTXVideoBackbone.from_base(folder)
    transformer = backbone.transformer
    pipe = LTXPipeline(FlowMatchEulerDiscreteScheduler(), backbone.vae, None, None, transformer)
    defaults = inspect.signature(LTXPipeline.__call__).parameters
    tokens = defaults["max_sequence_length"].default
    # The pipeline's context: all 128 tokens of "" (eos, then padding) with their mask.
    context = t5_embedding(folder, [1] + [0] * (tokens - 1)).expand(2, -1, -1)
    mask = (torch.arange(tokens) == 0).expand(2, -1)
    # The scheduler's timestep at sigma 0.5 is what the transformer receives.
    pipe.scheduler.set_timesteps(sigmas=[0.5], device="cpu")
    timestep = pipe.scheduler.timesteps[0]
    assert timestep == 500
    latents = torch.randn(2, 8, 2, 2, 3, generator=torch.Generator().manual_seed(6))
    frame_rate = defaults["frame_rate"].default
    rope_scale = (
        pipe.vae_temporal_compression_ratio / frame_rate,
        pipe.vae_spatial_compression_ratio,
        pipe.vae_spatial_compression_ratio,
    )
    patch, patch_t = pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
    with torch.no_grad():
        out = transformer(
            hidden_states=pipe._pack_latents(latents, patch, patch_t),
            encoder_hidden_states=context,
            timestep=timestep.expand(2),
            encoder_attention_mask=mask,
            num_frames=2,
            height=2,
            width=3,
            rope_interpolation_scale=rope_scale,
            return_dict=False,
        )[0]
        expected = pipe._unpack_latents(out, 2, 2, 3, patch, patch_t)
        got = backbone.denoise(transformer, latents, 500.0)
    # One context token instead of 128 masked ones: the same attention weights, summed in another order.
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_cogvideox_latents_are_the_pipelines() -> None:
    backbone = tiny_backbone(CogVideoXBackbone)
    pipe = CogVideoXPipeline(None, None, backbone.vae, backbone.transformer, CogVideoXDDIMScheduler())
    x = pixels(backbone)
    with torch.no_grad():
        latents = backbone.encode(x)
        # the LoRA training script's latents (with the posterior's mean for its sample): mean times scaling_factor
        assert torch.equal(latents, backbone.vae.encode(x).latent_dist.mode() * 0.7)
        expected = pipe.decode_latents(latents.permute(0, 2, 1, 3, 4)).clamp(-1, 1)
        assert torch.equal(backbone.decode(latents), expected)


def test_ltx_latents_are_the_pipelines() -> None:
    transformer, vae = default_modules(LTXVideoBackbone, scaling_factor=0.8)
    generator = torch.Generator().manual_seed(7)
    vae.latents_mean.copy_(torch.randn(8, generator=generator))
    vae.latents_std.copy_(torch.rand(8, generator=generator) + 0.5)
    backbone = LTXVideoBackbone(transformer, vae, torch.zeros(1, 16))
    x = pixels(backbone)
    with torch.no_grad():
        latents = backbone.encode(x)
        mean = vae.encode(x).latent_dist.mode()
        normalised = LTXPipeline._normalize_latents(mean, vae.latents_mean, vae.latents_std, 0.8)
        assert torch.equal(latents, normalised)
        # decode_timestep 0, the pipeline's default; the noise injection is off (scale 0) at initialisation
        z = LTXPipeline._denormalize_latents(latents, vae.latents_mean, vae.latents_std, 0.8)
        expected = vae.decode(z, torch.tensor([0.0])).sample.clamp(-1, 1)
        assert torch.equal(backbone.decode(latents), expected)
