"""Loading every format exactly: DVD checkpoint + LoRA, Wan2.1 VAE, Wan2.1 base, our formats, the Hub."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan
from safetensors.torch import load_file, save_file

from dvd import DVDPipeline
from dvd.cli import main
from dvd.errors import DVDError
from dvd.weights import load_weights
from dvd.weights.formats import (
    dit_config_from_shapes,
    merge_lora,
    original_dit_state,
    original_vae_state,
    strip_dit_prefix,
)
from dvd.weights.load import looks_like_hub_id
from dvd.weights.single_file import load_single_file, proof_model_path, save_single_file
from dvd.weights.tiny import TINY_DIT, build_tiny_model, tiny_transformer, write_tiny_official_weights

RNG = np.random.default_rng(0)
FRAMES = RNG.integers(0, 256, size=(5, 32, 48, 3), dtype=np.uint8)


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def predict(weights: str | Path, **kwargs) -> np.ndarray:
    return DVDPipeline.from_pretrained(weights, device="cpu", dtype="float32", **kwargs).predict_window(FRAMES)


@pytest.fixture(scope="module")
def official_prediction(tiny_weights: Path) -> np.ndarray:
    return predict(tiny_weights)


@pytest.mark.smoke
def test_official_checkpoint_equals_converted(tiny_weights: Path, official_prediction: np.ndarray, tmp_path: Path):
    assert main(["convert", "--weights", str(tiny_weights), "-o", str(tmp_path / "converted")]) == 0
    assert (tmp_path / "converted" / "model_index.json").is_file()
    converted = predict(tmp_path / "converted")
    assert official_prediction.shape == (5, 32, 48) and official_prediction.dtype == np.float32
    assert rel_error(converted, official_prediction) <= 1e-6
    np.testing.assert_array_equal(converted, official_prediction)  # same fp32 weights, same kernels: same bits


def test_merged_lora_matches_unmerged_peft_layers(tiny_weights: Path):
    pixels = torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(1))
    merged = load_weights(tiny_weights).model.eval()
    unmerged = load_weights(tiny_weights, merge=False).model.eval()
    assert any("lora_A" in name for name, _ in unmerged.transformer.named_parameters())
    with torch.inference_mode():
        latents = merged.encode(pixels)
        a, b = merged.regress(latents), unmerged.regress(latents)
    assert float((a - b).norm() / b.norm()) <= 1e-5


def test_lora_changes_the_model(tiny_weights: Path, official_prediction: np.ndarray, tmp_path: Path):
    """Dropping the LoRA tensors must change the output, or the merge tests above prove nothing."""
    state = load_file(tiny_weights / "model.safetensors")
    base_only = {k.replace(".base_layer.", "."): v for k, v in state.items() if ".lora_" not in k}
    save_file(base_only, tmp_path / "model.safetensors")
    (tmp_path / "Wan2.1_VAE.pth").symlink_to(tiny_weights / "Wan2.1_VAE.pth")
    assert rel_error(predict(tmp_path), official_prediction) > 1e-3


def test_merge_formula_with_alpha():
    down, up, weight = torch.randn(2, 3), torch.randn(4, 2), torch.randn(4, 3)
    state = {
        "l.base_layer.weight": weight,
        "l.base_layer.bias": torch.zeros(4),
        "l.lora_A.default.weight": down,
        "l.lora_B.default.weight": up,
    }
    merged = merge_lora(state, alpha=8.0)
    assert set(merged) == {"l.weight", "l.bias"}
    torch.testing.assert_close(merged["l.weight"], weight + 4.0 * up @ down)
    torch.testing.assert_close(merge_lora(state)["l.weight"], weight + up @ down)  # alpha = rank


def test_module_prefix_from_ddp_is_accepted(official_prediction: np.ndarray, tmp_path: Path):
    write_tiny_official_weights(tmp_path, seed=0, prefix="module.pipe.dit.")
    np.testing.assert_array_equal(predict(tmp_path), official_prediction)


def test_dvd_1_1_name_and_bf16_tensors(tmp_path: Path):
    write_tiny_official_weights(tmp_path, seed=0, filename="dvd_1.1.safetensors", dtype=torch.bfloat16)
    loaded = load_weights(tmp_path)
    assert loaded.kind == "official-dvd" and "dvd_1.1.safetensors" in loaded.weights_id


def test_architecture_read_from_shapes():
    state = original_dit_state(tiny_transformer(0))
    config = dit_config_from_shapes(state)
    for key in ("num_attention_heads", "attention_head_dim", "ffn_dim", "num_layers", "text_dim", "in_channels"):
        assert config[key] == TINY_DIT[key], key


def test_denoise_step_read_from_model_config(tiny_weights: Path, tmp_path: Path):
    for name in ("model.safetensors", "Wan2.1_VAE.pth"):
        (tmp_path / name).symlink_to(tiny_weights / name)
    (tmp_path / "model_config.yaml").write_text("lora_rank: 4\ndenoise_step: 0.3\n")
    assert load_weights(tmp_path).model.timestep == pytest.approx(300.0)
    assert load_weights(tiny_weights).model.timestep == pytest.approx(500.0)


@pytest.mark.parametrize("damage", ["missing", "misshaped"])
def test_damaged_checkpoint_names_the_tensor(tiny_weights: Path, tmp_path: Path, damage: str):
    state = load_file(tiny_weights / "model.safetensors")
    key = "pipe.dit.blocks.1.cross_attn.norm_k.weight"
    if damage == "missing":
        del state[key]
    else:
        state[key] = torch.zeros(7)
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "Wan2.1_VAE.pth").symlink_to(tiny_weights / "Wan2.1_VAE.pth")
    with pytest.raises(DVDError, match=r"blocks\.1\.cross_attn\.norm_k\.weight"):
        load_weights(tmp_path)


def test_file_that_is_not_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture):
    (tmp_path / "model.safetensors").write_text("this is not a checkpoint\n")
    assert main(["convert", "--weights", str(tmp_path), "-o", str(tmp_path / "out")]) == 2
    message = capsys.readouterr().err.strip()
    assert "not a readable safetensors checkpoint" in message and "\n" not in message
    assert not (tmp_path / "out").exists()


class NeedsCode:
    """Unpickling an instance of this class runs code, which weights_only loading must refuse."""


def test_pickle_that_needs_code_execution_is_refused(tiny_weights: Path, tmp_path: Path):
    (tmp_path / "model.safetensors").symlink_to(tiny_weights / "model.safetensors")
    with open(tmp_path / "Wan2.1_VAE.pth", "wb") as handle:
        pickle.dump({"encoder.conv1.weight": NeedsCode()}, handle)
    with pytest.raises(DVDError, match="arbitrary code execution"):
        load_weights(tmp_path)


def test_vae_with_other_latent_channels_is_refused(tiny_weights: Path, tmp_path: Path):
    (tmp_path / "model.safetensors").symlink_to(tiny_weights / "model.safetensors")
    torch.save(original_vae_state(AutoencoderKLWan(base_dim=8, z_dim=8)), tmp_path / "Wan2.1_VAE.pth")
    with pytest.raises(DVDError, match="latent channels"):
        load_weights(tmp_path)


def test_wan_base_original_layout_sharded(tiny_weights: Path, tmp_path: Path):
    transformer = tiny_transformer(3)
    state = original_dit_state(transformer)
    keys = sorted(state)
    half = len(keys) // 2
    save_file({k: state[k] for k in keys[:half]}, tmp_path / "diffusion_pytorch_model-00001-of-00002.safetensors")
    save_file({k: state[k] for k in keys[half:]}, tmp_path / "diffusion_pytorch_model-00002-of-00002.safetensors")
    (tmp_path / "Wan2.1_VAE.pth").symlink_to(tiny_weights / "Wan2.1_VAE.pth")
    loaded = load_weights(tmp_path)
    assert loaded.kind == "base"
    for key, tensor in transformer.state_dict().items():
        torch.testing.assert_close(loaded.model.transformer.state_dict()[key], tensor, rtol=0, atol=0)


def test_hub_offline_error_lists_the_files(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DVDError, match=r"dvd_1\.1\.safetensors.*Wan2\.1_VAE\.pth"):
        load_weights("someone/dvd-weights")
    with pytest.raises(DVDError, match="HF_HUB_OFFLINE"):
        load_weights(None)


def test_folder_without_weights(tmp_path: Path):
    with pytest.raises(DVDError, match="no weights found"):
        load_weights(tmp_path)


def test_strip_prefix_refuses_foreign_checkpoint(tmp_path: Path):
    with pytest.raises(DVDError, match="pipe.dit."):
        strip_dit_prefix({"model.layer.weight": torch.zeros(1)}, tmp_path / "x.safetensors")


def test_wan_base_diffusers_layout(tmp_path: Path):
    transformer, vae = tiny_transformer(4), AutoencoderKLWan(base_dim=8)
    transformer.save_pretrained(tmp_path / "transformer")
    vae.save_pretrained(tmp_path / "vae")
    loaded = load_weights(tmp_path)
    assert loaded.kind == "base"
    for key, tensor in transformer.state_dict().items():
        torch.testing.assert_close(loaded.model.transformer.state_dict()[key], tensor, rtol=0, atol=0)


def fake_hub_cache(cache: Path, repo_id: str, files: dict[str, Path]) -> None:
    """Lay out files as huggingface_hub's cache does, so the Hub code path runs offline for real."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    for name, source in files.items():
        (snapshot / name).symlink_to(source)


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_hub_ids_resolve_through_the_cache(
    tiny_weights: Path, official_prediction: np.ndarray, offline_cache: Path, tmp_path: Path
):
    names = ("model.safetensors", "model_config.yaml", "Wan2.1_VAE.pth")
    fake_hub_cache(offline_cache, "someone/dvd", {n: tiny_weights / n for n in names})
    np.testing.assert_array_equal(predict("someone/dvd"), official_prediction)

    shard = tmp_path / "base.safetensors"
    save_file(original_dit_state(tiny_transformer(5)), shard)
    files = {"diffusion_pytorch_model.safetensors": shard, "Wan2.1_VAE.pth": tiny_weights / "Wan2.1_VAE.pth"}
    fake_hub_cache(offline_cache, "someone/wan-base", files)
    assert load_weights("someone/wan-base").kind == "base"


def test_proof_and_single_files_load_as_load_single_file_does(tmp_path: Path):
    written = save_single_file(build_tiny_model(7), tmp_path / "model.safetensors", dtype=torch.float32)
    pixels = torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(2))
    for source, path in (("proof", proof_model_path()), (written, written), (str(written), written)):
        loaded = load_weights(source)
        assert loaded.kind == "single-file"
        with torch.inference_mode():
            expected = load_single_file(path).eval()(pixels)
            assert torch.equal(loaded.model.eval()(pixels), expected)
    np.testing.assert_array_equal(predict("proof"), predict(proof_model_path()))


def test_predict_command_runs_the_proof_model(clip: Path, tmp_path: Path):
    out = tmp_path / "out"
    argv = ["predict", clip, "-o", out, "--weights", "proof", "--max-frames", 5, "--height", 32, "--width", 48]
    assert main([str(a) for a in argv]) == 0
    assert any(out.iterdir())


def test_non_finite_or_out_of_range_single_files_are_refused(tmp_path: Path):
    model = build_tiny_model(3)
    model.tau = 2.0
    save_single_file(model, tmp_path / "tau.safetensors", dtype=torch.float32)
    with pytest.raises(DVDError, match=r"'tau' header .* is '2\.0': tau must be a number in \(0, 1\]"):
        load_weights(tmp_path / "tau.safetensors")
    model.tau = 0.5
    with torch.no_grad():
        model.vae.encoder.conv_in.weight[0, 0, 0, 0, 0] = float("inf")
    save_single_file(model, tmp_path / "inf.safetensors", dtype=torch.float32)
    with pytest.raises(DVDError, match=r"tensor 'vae\.encoder\.conv_in\.weight' in .*inf\.safetensors holds 1 NaN/inf"):
        load_weights(tmp_path / "inf.safetensors")


@pytest.mark.parametrize(
    ("source", "hub"),
    [
        ("owner/name", True),
        ("Owner-1/dvd_1.1", True),
        ("owner/name.safetensors", False),
        ("a/b/c", False),
        ("./a", False),
        ("../a/b", False),
        ("~/a", False),
        ("/a/b", False),
        ("a", False),
        ("a/", False),
    ],
)
def test_what_may_be_a_hub_id(source: str, hub: bool):
    assert looks_like_hub_id(source) is hub
