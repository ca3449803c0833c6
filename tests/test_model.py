"""The DVD data flow on a tiny random model: pixel mapping, padding, timestep, context, decode, determinism."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dvd import DVDPipeline
from dvd.model.backbone import FrameRule
from dvd.model.timestep import Float64SinusoidalEmbedding
from dvd.weights.tiny import build_tiny_model


@pytest.fixture(scope="module")
def pipe() -> DVDPipeline:
    return DVDPipeline.from_model(build_tiny_model(seed=0))


def frames(count: int, height: int = 32, width: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, height, width, 3), dtype=np.uint8)


def test_sinusoid_in_float64_cos_first():
    t = torch.tensor([500.0], dtype=torch.float64)
    got = Float64SinusoidalEmbedding(256)(t).numpy()[0]
    freqs = 10000.0 ** (-np.arange(128, dtype=np.float64) / 128)
    expected = np.concatenate([np.cos(500.0 * freqs), np.sin(500.0 * freqs)])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)  # float32 would be off by ~1e-5


def test_pixels_mapped_to_minus_one_one(pipe: DVDPipeline, monkeypatch: pytest.MonkeyPatch):
    seen = {}
    original = pipe.model.vae.encode

    def spy(x):
        seen["x"] = x.clone()
        return original(x)

    monkeypatch.setattr(pipe.model.vae, "encode", spy)
    pixels = torch.rand(1, 3, 5, 32, 32)
    pipe.model.encode(pixels)
    torch.testing.assert_close(seen["x"], pixels * 2 - 1, rtol=0, atol=0)


def test_regress_uses_fixed_timestep_and_zero_context(pipe: DVDPipeline, monkeypatch: pytest.MonkeyPatch):
    seen = {}
    original = pipe.model.transformer.forward

    def spy(hidden_states, timestep, encoder_hidden_states, **kwargs):
        seen.update(timestep=timestep.clone(), context=encoder_hidden_states.clone())
        return original(hidden_states, timestep=timestep, encoder_hidden_states=encoder_hidden_states, **kwargs)

    monkeypatch.setattr(pipe.model.transformer, "forward", spy)
    monkeypatch.setattr(pipe.model, "tau", 0.25)
    latents = torch.randn(2, 16, 2, 4, 4)
    out = pipe.model.regress(latents)
    assert out.shape == latents.shape
    assert seen["timestep"].tolist() == [250.0, 250.0]
    # The pipeline folds the cross-attention by default: one context token stands for the 512 identical ones.
    assert seen["context"].shape == (2, 1, pipe.model.transformer.config.text_dim)
    assert not seen["context"].any()
    pipe.unfold_constants()
    try:
        pipe.model.regress(latents)
    finally:
        pipe.fold_constants()
    assert seen["context"].shape == (2, 512, pipe.model.transformer.config.text_dim)
    assert not seen["context"].any()


def test_decode_maps_to_unit_range_and_forward_takes_channel_mean(pipe: DVDPipeline, monkeypatch: pytest.MonkeyPatch):
    video = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, 0.2]).view(1, 3, 2, 1, 1)

    class Decoded:
        sample = video

    monkeypatch.setattr(pipe.model.vae, "decode", lambda z: Decoded)
    decoded = pipe.model.decode(torch.zeros(1, 16, 1, 1, 1))
    torch.testing.assert_close(decoded, (video + 1) / 2)
    monkeypatch.setattr(pipe.model, "decode", lambda z: video)
    disparity = pipe.model(torch.zeros(1, 3, 1, 16, 16))
    torch.testing.assert_close(disparity, video.mean(dim=1))


def test_latent_normalisation_uses_vae_statistics(pipe: DVDPipeline):
    mean = torch.tensor(pipe.model.vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(pipe.model.vae.config.latents_std).view(1, -1, 1, 1, 1)
    pixels = torch.rand(1, 3, 1, 16, 16)
    mu = pipe.model.vae.encode(pixels * 2 - 1).latent_dist.mode()
    torch.testing.assert_close(pipe.model.encode(pixels), (mu - mean) / std)


@pytest.mark.parametrize("count,padded", [(1, 1), (2, 5), (4, 5), (5, 5), (6, 9), (9, 9)])
def test_padding_to_4n_plus_1_repeats_last_frame(count: int, padded: int):
    x = torch.arange(count, dtype=torch.float32).view(1, 1, count, 1, 1)
    out = FrameRule(4).pad(x)
    assert out.shape[2] == padded
    assert out[0, 0, :, 0, 0].tolist() == list(range(count)) + [count - 1] * (padded - count)


def test_window_is_padded_then_cropped(pipe: DVDPipeline):
    window = frames(6)
    padded = np.concatenate([window, np.repeat(window[-1:], 3, axis=0)])
    out = pipe.predict_window(window)
    assert out.shape == (6, 32, 32) and out.dtype == np.float32
    np.testing.assert_array_equal(out, pipe.predict_window(padded)[:6])


def test_uint8_and_float_inputs_agree(pipe: DVDPipeline):
    window = frames(5)
    np.testing.assert_allclose(pipe.predict_window(window), pipe.predict_window(window / 255.0), rtol=0, atol=1e-6)


def test_bit_identical_on_two_runs(pipe: DVDPipeline):
    window = frames(9, 48, 64, seed=3)
    np.testing.assert_array_equal(pipe.predict_window(window), pipe.predict_window(window))


def test_batched_windows_match_single(pipe: DVDPipeline):
    a, b = frames(5, seed=1), frames(5, seed=2)
    batched = pipe.predict_windows([a, b])
    # Equal up to float32 rounding: CPU matrix kernels block differently for another batch size.
    np.testing.assert_allclose(batched[0], pipe.predict_window(a), rtol=0, atol=1e-5)
    np.testing.assert_allclose(batched[1], pipe.predict_window(b), rtol=0, atol=1e-5)


def test_bad_window_shapes(pipe: DVDPipeline):
    with pytest.raises(ValueError, match="multiples of 16"):
        pipe.predict_window(frames(5, 30, 32))
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        pipe.predict_window(np.zeros((5, 32, 32), dtype=np.uint8))


def test_save_and_load_pretrained_round_trip(pipe: DVDPipeline, tmp_path):
    pipe.save_pretrained(tmp_path)
    again = DVDPipeline.from_pretrained(tmp_path, device="cpu", dtype="float32")
    window = frames(5)
    np.testing.assert_array_equal(again.predict_window(window), pipe.predict_window(window))


@pytest.mark.parametrize("dtype,torch_dtype", [("bfloat16", torch.bfloat16), ("float16", torch.float16)])
def test_half_precision_runs_and_keeps_rope_in_float32(tmp_path, dtype, torch_dtype):
    reference_pipe = DVDPipeline.from_model(build_tiny_model(seed=0))
    reference_pipe.save_pretrained(tmp_path)
    reference = reference_pipe.predict_window(frames(5))
    half = DVDPipeline.from_pretrained(tmp_path, device="cpu", dtype=dtype)
    assert half.model.transformer.rope.freqs_cos.dtype == torch.float32
    assert half.model.transformer.blocks[0].attn1.to_q.weight.dtype == torch_dtype
    out = half.predict_window(frames(5))
    assert out.dtype == np.float32
    assert np.abs(out - reference).max() < 0.05 * np.abs(reference).max()


def test_bit_identical_across_processes(tiny_weights, tmp_path):
    """The determinism contract: same input, weights, device and dtype give the same bits in a fresh process."""
    script = (
        "import sys, numpy as np\n"
        "from dvd import DVDPipeline\n"
        "pipe = DVDPipeline.from_pretrained(sys.argv[1], device='cpu', dtype='float32')\n"
        "x = np.random.default_rng(0).integers(0, 256, (5, 32, 48, 3), dtype=np.uint8)\n"
        "np.save(sys.argv[2], pipe.predict_window(x))\n"
    )
    outputs = [tmp_path / "a.npy", tmp_path / "b.npy"]
    for out in outputs:
        subprocess.run([sys.executable, "-c", script, str(tiny_weights), str(out)], check=True)
    np.testing.assert_array_equal(np.load(outputs[0]), np.load(outputs[1]))


def test_pipeline_call_and_stream_on_a_real_video(pipe: DVDPipeline):
    video = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos" / "davis_rollercoaster.mp4"
    if not video.is_file():
        pytest.skip(f"{video} is absent (a clone without ../shared): the real-video check needs it")
    settings = {"height": 32, "width": 48, "window": 9, "overlap": 3, "max_frames": 14}
    result = pipe(video, **settings)
    assert result.prediction.shape == (14, 540, 960) and result.fps == pytest.approx(24.0)
    streamed = list(pipe.stream(video, **settings))
    np.testing.assert_array_equal(np.stack(streamed), result.prediction)
