"""The generative baseline's pure parts: the flow-matching formulas, the Euler sampler, the widened patch embedding."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from accelerate.state import AcceleratorState
from diffusers import CogVideoXTransformer3DModel, LTXVideoTransformer3DModel, WanTransformer3DModel
from PIL import Image
from test_train import tiny_mapping
from torch import nn

from dvd import cli
from dvd.errors import DVDError
from dvd.model.backbones import BACKBONES
from dvd.model.dvd_model import DVDModel, generative_model
from dvd.model.flow_matching import (
    DEFAULT_STEPS,
    draw_noise,
    draw_sigmas,
    euler_sample,
    interpolate,
    sigma_schedule,
    timesteps,
    training_example,
    velocity_target,
)
from dvd.model.input_widening import widen_input_layer, widen_transformer_input
from dvd.pipeline.dvd_pipeline import DVDPipeline
from dvd.training.config import FinetuneSection, parse_config
from dvd.training.trainable import for_objective, make_trainable
from dvd.weights import load_weights
from dvd.weights.single_file import load_single_file, save_single_file
from dvd.weights.tiny import build_tiny_model, write_tiny_base

C = 4  # latent channels of the tiny DiTs below


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the formulas -------------------------------------------------------------------------------------------------


def test_interpolation_and_target_match_the_hand_written_formulas():
    x0 = torch.tensor([2.0, 2.0, 2.0, -4.0]).view(4, 1, 1, 1, 1)
    eps = torch.tensor([-1.0, -1.0, -1.0, 6.0]).view(4, 1, 1, 1, 1)
    sigma = torch.tensor([0.0, 0.25, 1.0, 0.5])
    # (1 - s)·x0 + s·eps by hand: 2; 0.75·2 + 0.25·(-1) = 1.25; -1; 0.5·(-4) + 0.5·6 = 1
    assert interpolate(x0, eps, sigma).flatten().tolist() == [2.0, 1.25, -1.0, 1.0]
    assert velocity_target(x0, eps).flatten().tolist() == [-3.0, -3.0, -3.0, 10.0]
    assert timesteps(torch.tensor([0.25, 1.0, 0.0])).tolist() == [250.0, 1000.0, 0.0]


def test_training_example_is_consistent_with_its_depth_latent_and_rgb():
    depth = torch.randn(3, C, 2, 4, 6, generator=seeded(1))
    rgb = torch.randn(3, C, 2, 4, 6, generator=seeded(2))
    example = training_example(depth, rgb, seeded(3))
    assert example.dit_input.shape == (3, 2 * C, 2, 4, 6) and example.target.shape == depth.shape
    assert torch.equal(example.dit_input[:, C:], rgb)  # the condition rides along unchanged, after the noisy latent
    sigma = (example.timesteps / 1000).view(3, 1, 1, 1, 1)
    x_sigma, v = example.dit_input[:, :C], example.target
    # With x_s = (1-s)·x0 + s·eps and v = eps - x0: x0 = x_s - s·v and eps = x_s + (1-s)·v.
    torch.testing.assert_close(x_sigma - sigma * v, depth, atol=1e-5, rtol=0)
    eps = x_sigma + (1 - sigma) * v
    assert abs(float(eps.mean())) < 0.15 and abs(float(eps.std()) - 1) < 0.15
    assert ((example.timesteps > 0) & (example.timesteps < 1000)).all()


def test_sigmas_follow_the_logit_normal_distribution():
    sigma = draw_sigmas(20000, seeded(0)).double()
    logit = torch.log(sigma / (1 - sigma))  # N(0, 1) when sigma = sigmoid(N(0, 1))
    assert abs(float(logit.mean())) < 0.03 and abs(float(logit.std()) - 1) < 0.03
    # P(sigma < 0.5) = 1/2 and P(sigma > sigmoid(1)) = P(n > 1) = 0.1587 for n ~ N(0, 1)
    assert abs(float((sigma < 0.5).double().mean()) - 0.5) < 0.02
    assert abs(float((sigma > 1 / (1 + math.exp(-1))).double().mean()) - 0.1587) < 0.02


def test_training_examples_reproduce_bit_for_bit_from_a_seed():
    depth, rgb = torch.randn(2, C, 1, 4, 4), torch.randn(2, C, 1, 4, 4)
    first, again = training_example(depth, rgb, seeded(7)), training_example(depth, rgb, seeded(7))
    other = training_example(depth, rgb, seeded(8))
    assert torch.equal(first.dit_input, again.dit_input) and torch.equal(first.timesteps, again.timesteps)
    assert not torch.equal(first.dit_input, other.dit_input)


def test_training_example_refuses_latents_of_different_shapes():
    with pytest.raises(ValueError, match="share their shape"):
        training_example(torch.zeros(1, C, 1, 4, 4), torch.zeros(1, C, 1, 4, 2))


# --- the Euler sampler --------------------------------------------------------------------------------------------


class Recorder:
    """A velocity field that records what it was called with."""

    def __init__(self, field):
        self.field = field
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, x_and_rgb: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls.append((x_and_rgb.clone(), t.clone()))
        return self.field(x_and_rgb[:, :C], t / 1000)


def test_one_step_with_the_straight_line_velocity_lands_on_x0():
    x0 = torch.randn(2, C, 3, 4, 4, generator=seeded(0))
    rgb = torch.randn(2, C, 3, 4, 4, generator=seeded(1))
    eps = torch.randn(2, C, 3, 4, 4, generator=seeded(5))
    velocity = Recorder(lambda x, sigma: eps - x0)  # the constant velocity of the straight path eps -> x0
    out = euler_sample(velocity, rgb, steps=1, noise=eps)
    assert len(velocity.calls) == 1  # T = 1 is one DiT call
    ((given, t),) = velocity.calls
    assert torch.equal(given[:, :C], eps) and torch.equal(given[:, C:], rgb) and t.tolist() == [1000.0, 1000.0]
    torch.testing.assert_close(out, x0, atol=1e-6, rtol=0)


@pytest.mark.parametrize("steps", [1, 4, 10])
def test_euler_is_exact_on_the_conditional_field_of_one_point(steps):
    """v(x, s) = (x - x0)/s is the flow of a point mass at x0: every Euler step stays on the line to x0."""
    x0 = torch.randn(1, C, 2, 4, 4, generator=seeded(0))
    velocity = Recorder(lambda x, sigma: (x - x0) / sigma.view(-1, 1, 1, 1, 1))
    out = euler_sample(velocity, torch.zeros_like(x0), steps, draw_noise(x0, seeded(1)))
    assert len(velocity.calls) == steps
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)


def test_euler_steps_follow_the_uniform_grid():
    """dx/ds = x from s = 1 to 0 in 4 Euler steps of -1/4: x0 = eps·(1 - 1/4)^4, at t = 1000, 750, 500, 250."""
    velocity = Recorder(lambda x, sigma: x)
    eps = torch.randn(1, C, 1, 2, 2, generator=seeded(3))
    out = euler_sample(velocity, torch.zeros(1, C, 1, 2, 2), 4, eps)
    assert [float(t) for _, t in velocity.calls] == [1000.0, 750.0, 500.0, 250.0]
    torch.testing.assert_close(out, eps * 0.31640625, atol=1e-6, rtol=0)
    assert sigma_schedule(4) == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_sampling_reproduces_bit_for_bit_from_a_seed_and_differs_across_seeds():
    rgb = torch.randn(1, C, 2, 4, 4, generator=seeded(0))
    field = Recorder(lambda x, sigma: 0.5 * x - 1)

    def sample(seed: int) -> torch.Tensor:
        return euler_sample(field, rgb, 3, draw_noise(rgb, seeded(seed)))

    first = sample(11)
    assert torch.equal(first, sample(11))
    assert not torch.equal(first, sample(12))


def test_sampling_needs_at_least_one_step_and_noise_of_the_latent_shape():
    with pytest.raises(ValueError, match="at least 1"):
        euler_sample(lambda x, t: x, torch.zeros(1, C, 1, 2, 2), 0, torch.zeros(1, C, 1, 2, 2))
    with pytest.raises(ValueError, match="must have the RGB latent's shape"):
        euler_sample(lambda x, t: x, torch.zeros(1, C, 1, 2, 2), 1, torch.zeros(1, C, 1, 2, 4))


# --- the widened patch embedding ---------------------------------------------------------------------------------


def randomised(module: nn.Module, seed: int) -> nn.Module:
    """Every weight drawn (diffusers zero-initialises some output layers, which would hide a broken input path)."""
    generator = seeded(seed)
    with torch.no_grad():
        for param in module.parameters():
            fan_in = param[0].numel() if param.ndim > 1 else 1
            param.copy_(torch.randn(param.shape, generator=generator) / fan_in**0.5)
    return module.eval()


def wan() -> WanTransformer3DModel:
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=C, out_channels=C,
        text_dim=16, freq_dim=16, ffn_dim=32, num_layers=1,
    )  # fmt: skip


def cogvideox(patch_size_t: int | None) -> CogVideoXTransformer3DModel:
    return CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=C, out_channels=C, time_embed_dim=8,
        text_embed_dim=16, num_layers=1, sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
        patch_size_t=patch_size_t, max_text_seq_length=3, use_rotary_positional_embeddings=True,
    )  # fmt: skip


def ltx() -> LTXVideoTransformer3DModel:
    return LTXVideoTransformer3DModel(
        in_channels=C, out_channels=C, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
        num_layers=1, caption_channels=16,
    )  # fmt: skip


def run_wan(model, latents):  # [B, C', F, H, W]
    t = torch.tensor([500.0])
    return model(latents, timestep=t, encoder_hidden_states=torch.ones(1, 3, 16), return_dict=False)[0]


def run_cogvideox(model, latents):  # CogVideoX takes [B, F, C', H, W]
    t = torch.tensor([500])
    out = model(latents.transpose(1, 2), encoder_hidden_states=torch.ones(1, 3, 16), timestep=t, return_dict=False)
    return out[0]


def run_ltx(model, latents):  # LTX takes packed tokens [B, F·H·W, C'] (patch size 1)
    f, h, w = latents.shape[2:]
    tokens = latents.flatten(2).transpose(1, 2)
    return model(
        tokens, encoder_hidden_states=torch.ones(1, 3, 16), timestep=torch.tensor([500.0]),
        encoder_attention_mask=torch.ones(1, 3), num_frames=f, height=h, width=w, return_dict=False,
    )[0]  # fmt: skip


# name, builder, input layer, runner, latent frames (CogVideoX 1.5 packs 2 latent frames per patch)
DITS = [
    ("wan", wan, "patch_embedding", run_wan, 3),
    ("cogvideox-1.0", lambda: cogvideox(None), "patch_embed.proj", run_cogvideox, 3),
    ("cogvideox-1.5", lambda: cogvideox(2), "patch_embed.proj", run_cogvideox, 2),
    ("ltx-video", ltx, "proj_in", run_ltx, 3),
]


@pytest.mark.parametrize(("name", "build", "layer", "run", "frames"), DITS, ids=[d[0] for d in DITS])
def test_widened_dit_ignores_the_rgb_half_at_init_and_round_trips(tmp_path, name, build, layer, run, frames):
    model = randomised(build(), seed=0)
    x = torch.randn(1, C, frames, 4, 4, generator=seeded(1))
    rgb = torch.randn(1, C, frames, 4, 4, generator=seeded(2))
    with torch.no_grad():
        before = run(model, x)
        widen_transformer_input(model, layer, C)
        assert model.config.in_channels == 2 * C and model.config.out_channels == C
        # Output unchanged for any RGB latent: the pretrained path sees only the noisy latent at step 0.
        torch.testing.assert_close(run(model, torch.cat([x, rgb], 1)), before, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(run(model, torch.cat([x, 3 * rgb], 1)), before, atol=1e-5, rtol=1e-5)
        # Once the new weights move, the RGB half reaches the output.
        weight = model.get_submodule(layer).weight
        weight[:, weight.shape[1] // 2 :] = torch.randn(weight[:, weight.shape[1] // 2 :].shape, generator=seeded(3))
        conditioned = run(model, torch.cat([x, rgb], 1))
        assert (conditioned - before).abs().max() > 1e-3
        model.save_pretrained(tmp_path)
        loaded = type(model).from_pretrained(tmp_path).eval()
        assert loaded.config.in_channels == 2 * C
        torch.testing.assert_close(run(loaded, torch.cat([x, rgb], 1)), conditioned, atol=1e-6, rtol=1e-6)


def test_widened_linear_keeps_the_channel_major_columns():
    """A Linear over patches packed channel-major (feature = c·P + p): the old features keep their columns."""
    layer = nn.Linear(C * 8, 5)
    old = layer.weight.detach().clone()
    widen_input_layer(layer, C)
    assert layer.in_features == 2 * C * 8 and layer.weight.shape == (5, 2 * C * 8)
    assert torch.equal(layer.weight[:, : C * 8], old) and not layer.weight[:, C * 8 :].any()


def test_widening_keeps_trainability_dtype_and_refuses_a_wrong_channel_count():
    conv = nn.Conv3d(C, 6, kernel_size=(1, 2, 2), stride=(1, 2, 2)).to(torch.bfloat16).requires_grad_(False)
    widen_input_layer(conv, C)
    assert conv.weight.shape == (6, 2 * C, 1, 2, 2) and conv.weight.dtype == torch.bfloat16
    assert not conv.weight.requires_grad
    with pytest.raises(ValueError, match="does not take 4 latent channels"):
        widen_input_layer(conv, C)  # already widened
    with pytest.raises(TypeError, match="cannot widen"):
        widen_input_layer(nn.Embedding(3, 4), C)


# --- the generative DVD model: training, saving, loading, sampling ----------------------------------------------


def tiny_generative_config(output_dir: Path, **train: object) -> dict:
    """test_train's tiny recipe, trained as the generative baseline on the velocity's MSE, two steps by default."""
    mapping = tiny_mapping(output_dir, **{"objective": "generative", "max_steps": 2, **train})
    mapping["loss"] = {"kind": "l2"}
    return mapping


def frames_folder(folder: Path, count: int = 7) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"f{index}.png")
    return folder


def predict(weights: Path, video: Path, out: Path, *flags: str) -> int:
    argv = ["predict", str(video), "-o", str(out), "--weights", str(weights), "--device", "cpu", "--quiet"]
    return cli.main([*argv, "--height", "32", "--width", "32", "--window", "5", "--overlap", "2", *flags])


@pytest.fixture(scope="module")
def generative_export(tmp_path_factory) -> Path:
    """`dvd train` of a tiny generative model (2 steps), its merged export."""
    AcceleratorState._reset_state(reset_partial_state=True)
    root = tmp_path_factory.mktemp("generative")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_generative_config(root / "run")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main(["train", "--config", str(config)]) == 0
    finally:
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(reset_partial_state=True)
    return root / "run" / "export" / "merged"


def test_dvd_train_records_the_objective_and_the_widened_dit(generative_export):
    index = json.loads((generative_export / "model_index.json").read_text())
    assert index["objective"] == "generative"
    dit = json.loads((generative_export / "transformer" / "config.json").read_text())
    assert (dit["in_channels"], dit["out_channels"]) == (32, 16)
    model = load_weights(generative_export).model
    assert model.generative
    # Training moved the RGB half of the input projection off its zero start (it trains in full beside the LoRA).
    assert model.transformer.patch_embedding.weight[:, 16:].abs().max() > 0


def test_dvd_predict_samples_reproducibly_for_a_seed(generative_export, tmp_path, one_torch_thread):
    video = frames_folder(tmp_path / "frames")
    runs = {name: tmp_path / name for name in ("first", "again", "other")}
    assert predict(generative_export, video, runs["first"], "--steps", "2", "--seed", "0") == 0
    assert predict(generative_export, video, runs["again"], "--steps", "2", "--seed", "0") == 0
    assert predict(generative_export, video, runs["other"], "--steps", "2", "--seed", "1") == 0
    first, again, other = (np.load(folder / "frames" / "disparity.npy") for folder in runs.values())
    assert first.shape == (7, 40, 48) and np.isfinite(first).all()
    assert np.array_equal(first, again)
    assert np.abs(first - other).max() > 1e-4
    meta = json.loads((runs["first"] / "frames" / "meta.json").read_text())
    assert (meta["objective"], meta["steps"], meta["seed"]) == ("generative", 2, 0)


def test_steps_on_a_regression_model_is_one_line_naming_the_fix(tiny_weights, tmp_path, capsys, one_torch_thread):
    video = frames_folder(tmp_path / "frames")
    assert predict(tiny_weights, video, tmp_path / "out", "--steps", "4") == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "regression model" in error and "drop --steps and --seed" in error
    assert not (tmp_path / "out").exists()


def test_steps_below_one_is_refused(generative_export, tmp_path, capsys, one_torch_thread):
    assert predict(generative_export, frames_folder(tmp_path / "frames"), tmp_path / "out", "--steps", "0") == 2
    assert "steps (--steps, num_inference_steps) are 0: give a whole number of Euler steps" in capsys.readouterr().err


def test_python_api_samples_per_window_independently_of_batching(generative_export, one_torch_thread):
    pipe = DVDPipeline.from_pretrained(generative_export, device="cpu")
    video = np.random.default_rng(1).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    settings = {"height": 32, "width": 32, "window": 5, "overlap": 2}

    def run(**extra: object) -> np.ndarray:
        return pipe(video, **settings, num_inference_steps=3, **extra).prediction

    seeded = run(generator=torch.Generator().manual_seed(5))
    assert np.array_equal(seeded, run(generator=torch.Generator().manual_seed(5)))
    assert np.abs(seeded - run(generator=torch.Generator().manual_seed(6))).max() > 1e-4
    # A window's noise follows from the seed and its own pixels, not from what it is batched with.
    batched = run(generator=torch.Generator().manual_seed(5), batch_windows=2)
    np.testing.assert_allclose(batched, seeded, atol=1e-5)
    assert pipe.sampling_meta() == {"objective": "generative", "steps": DEFAULT_STEPS, "seed": 0}


def test_python_api_refuses_sampling_arguments_for_a_regression_model(one_torch_thread):
    pipe = DVDPipeline.from_model(build_tiny_model(0))
    video = np.zeros((5, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="regression model .*leave them out"):
        pipe(video, height=32, width=32, window=5, overlap=2, num_inference_steps=4)
    with pytest.raises(DVDError, match="drop --steps and --seed"):
        pipe.set_sampling(seed=3)
    assert pipe.sampling_meta() == {}


def test_a_generative_model_round_trips_through_a_single_file(tmp_path, one_torch_thread):
    model = generative_model(build_tiny_model(0))
    loaded = load_single_file(save_single_file(model, tmp_path / "model.safetensors", dtype=torch.float32))
    assert loaded.generative and loaded.transformer.config.in_channels == 32


def test_a_widened_dit_does_not_pass_for_a_regression_model():
    model = generative_model(build_tiny_model(0))
    with pytest.raises(DVDError, match="the DiT expects 32 in / 16 out; use the VAE"):
        DVDModel(model.transformer, model.vae)


@pytest.mark.parametrize(
    ("train", "model", "message"),
    [
        ({"export": "official"}, {}, "official DVD layout holds regression models only"),
        ({}, {"learned_tau": True}, "set model.learned_tau to false"),
    ],
)
def test_invalid_generative_combinations_are_refused(tmp_path, train, model, message):
    mapping = tiny_generative_config(tmp_path, **train)
    mapping["model"].update(model)
    with pytest.raises(DVDError, match=message):
        parse_config(mapping)


def test_regression_cannot_go_on_from_a_generative_model():
    with pytest.raises(DVDError, match="set train.objective to generative"):
        for_objective(generative_model(build_tiny_model(0)), "regression")


def test_lora_training_of_a_generative_model_opens_the_whole_input_projection():
    model = generative_model(build_tiny_model(0))
    make_trainable(model, FinetuneSection(lora_rank=4), learned_tau=False, gradient_checkpointing=False)
    trained = {name for name, param in model.transformer.named_parameters() if param.requires_grad}
    assert {"patch_embedding.weight", "patch_embedding.bias"} <= trained
    assert all(".lora_" in name or name.startswith("patch_embedding.") for name in trained)


@pytest.mark.parametrize("family", sorted(BACKBONES))
def test_every_backbone_trains_saves_loads_and_samples_generatively(family, tmp_path, one_thread_fresh_accelerate):
    """`dvd train --base` of each family's tiny base with the generative objective (per-sample timesteps through the
    family's DiT call, its input layer widened), then its export sampled through the Python API."""
    base = write_tiny_base(tmp_path / "base", family)
    mapping = tiny_generative_config(tmp_path / "run", max_steps=1, checkpoint_every=1)
    mapping["data"] = {"clip_frames": 9, "sources": [{"kind": "synthetic", "samples": 2, "height": 32, "width": 32}]}
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(mapping))
    assert cli.main(["train", "--config", str(config), "--base", str(base)]) == 0
    export = tmp_path / "run" / "export" / "merged"
    pipe = DVDPipeline.from_pretrained(export, device="cpu")
    channels = BACKBONES[family].sizes["tiny"][0]["in_channels"]
    assert pipe.model.generative and pipe.transformer.config.in_channels == 2 * channels
    video = np.random.default_rng(2).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)

    def run(seed: int) -> np.ndarray:
        generator = torch.Generator().manual_seed(seed)
        return pipe(
            video, height=32, width=32, window=9, overlap=0, num_inference_steps=2, generator=generator
        ).prediction

    first = run(0)
    assert first.shape == (9, 32, 32) and np.isfinite(first).all()
    assert np.array_equal(first, run(0))
