"""The backbone seam and the Wan families on it: Wan2.1 and Wan2.2 TI2V at their tiny sizes, in their own diffusers
layouts, through the code paths the Hub models take; and every family (Wan2.1, Wan2.2, CogVideoX, LTX-Video) end to
end through the CLI: `dvd train --base`, the saved model, `dvd predict`, `dvd bench --weights`, and the errors of
`dvd train --base`. The other families' unit tests are in test_backbones_others.py."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from accelerate import init_empty_weights
from accelerate.utils.dataclasses import get_module_class_from_name
from diffusers import AutoencoderKLWan, DiffusionPipeline, WanTransformer3DModel
from safetensors.torch import load_file

from dvd.cli import main
from dvd.errors import DVDError
from dvd.model.backbone import FrameRule
from dvd.model.backbones import BACKBONES
from dvd.model.backbones.wan import Wan21Backbone, Wan22Backbone
from dvd.model.dvd_model import DVDModel
from dvd.pipeline.dvd_pipeline import DVDPipeline
from dvd.training.config import FinetuneSection
from dvd.training.losses import dvd_loss
from dvd.training.regression import DepthRegression
from dvd.training.trainable import make_trainable
from dvd.weights import load_weights
from dvd.weights.defaults import ModelDefaults
from dvd.weights.single_file import load_single_file, save_single_file
from dvd.weights.tiny import build_tiny_model, tiny_modules, write_tiny_base

pytestmark = pytest.mark.usefixtures("one_thread_fresh_accelerate")

WAN = ("wan2.1", "wan2.2")


def wan_model(family: str) -> DVDModel:
    """A fresh tiny model (a pipeline made from one switches its DiT to the folded fast path)."""
    return DVDModel(*tiny_modules(family, seed=1)).eval()


# --- the frame rule ---------------------------------------------------------------------------------------------


def test_frame_rule_fits_pads_and_names_the_nearest_counts():
    wan, ltx = FrameRule(4), FrameRule(8)
    assert [n for n in range(1, 20) if wan.fits(n)] == [1, 5, 9, 13, 17]
    assert [n for n in range(1, 20) if ltx.fits(n)] == [1, 9, 17]
    assert (wan.nearest(8), wan.nearest(3), ltx.nearest(12), wan.nearest(0)) == ((5, 9), (1, 5), (9, 17), (1,))
    clip = torch.arange(6.0).view(1, 1, 6, 1, 1)
    assert wan.pad(clip)[0, 0, :, 0, 0].tolist() == [0, 1, 2, 3, 4, 5, 5, 5, 5]
    assert ltx.pad(clip).shape[2] == 9 and str(wan) == "4n+1" and str(ltx) == "8n+1"


# --- the two Wan families ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "channels", "compression", "stride"),
    [("wan2.1", 16, 8, 16), ("wan2.2", 48, 16, 32)],  # the 2.2 VAE folds 2x2 pixels into channels, then 8x
)
def test_wan_encode_denoise_decode_shapes(family, channels, compression, stride):
    model = wan_model(family)
    assert (model.family, str(model.frame_rule), model.spatial_stride) == (family, "4n+1", stride)
    pixels = torch.rand(1, 3, 9, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        latents = model.encode(pixels)
        depth = model.regress(latents)
        video = model.decode(depth)
        disparity = model(pixels)
    assert latents.shape == depth.shape == (1, channels, 3, 64 // compression, 96 // compression)
    assert video.shape == (1, 3, 9, 64, 96) and 0 <= float(video.min()) and float(video.max()) <= 1
    assert disparity.shape == (1, 9, 64, 96) and torch.equal(disparity, video.mean(dim=1))


def test_the_families_are_told_apart_by_the_vae_and_a_foreign_vae_is_refused():
    assert list(BACKBONES)[:2] == ["wan2.1", "wan2.2"]
    dit21, vae21 = tiny_modules("wan2.1")
    dit22, vae22 = tiny_modules("wan2.2")
    assert (DVDModel(dit21, vae21).family, DVDModel(dit22, vae22).family) == ("wan2.1", "wan2.2")
    for dit, vae in ((dit21, vae22), (dit22, vae21)):
        with pytest.raises(DVDError, match=r"the VAE has (48|16) latent channels but the DiT expects (16|48).*VAE"):
            DVDModel(dit, vae)


@pytest.mark.parametrize(
    ("family", "size", "width", "layers", "ffn", "parameters"),
    [("wan2.1", "14b", 5120, 40, 13824, 14.29e9), ("wan2.2", "5b", 3072, 30, 14336, 5.00e9)],
)
def test_the_released_sizes(family, size, width, layers, ffn, parameters):
    dit, vae = BACKBONES[family].sizes[size]
    with init_empty_weights():
        transformer = WanTransformer3DModel(**dit)
        autoencoder = AutoencoderKLWan(**vae)
    config = transformer.config
    assert (config.num_attention_heads * config.attention_head_dim, config.num_layers, config.ffn_dim) == (
        width,
        layers,
        ffn,
    )
    assert (config.text_dim, config.freq_dim, config.attention_head_dim) == (4096, 256, 128)
    assert sum(p.numel() for p in transformer.parameters()) == pytest.approx(parameters, rel=1e-3)
    assert autoencoder.config.z_dim == config.in_channels == config.out_channels


def test_the_wan22_vae_is_diffusers_conversion_config():
    # scripts/convert_wan_to_diffusers.py in huggingface/diffusers, `vae22_diffusers_config`.
    _, vae = Wan22Backbone.sizes["5b"]
    assert (vae["z_dim"], vae["base_dim"], vae["decoder_base_dim"], vae["is_residual"]) == (48, 160, 256, True)
    assert (vae["in_channels"], vae["patch_size"], vae["scale_factor_spatial"]) == (12, 2, 16)
    assert len(vae["latents_mean"]) == len(vae["latents_std"]) == 48
    assert vae["latents_mean"][:3] == [-0.2289, -0.0052, -0.1323] and vae["latents_mean"][-1] == -0.0667
    assert vae["latents_std"][:3] == [0.4765, 1.0364, 0.4514] and vae["latents_std"][-1] == 0.7744
    _, tiny = Wan22Backbone.sizes["tiny"]
    assert tiny["latents_mean"] == vae["latents_mean"] and tiny["is_residual"]


def test_wan22_latents_are_normalised_by_its_48_statistics():
    model = wan_model("wan2.2")
    pixels = torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(3))
    mean = torch.tensor(Wan22Backbone.sizes["5b"][1]["latents_mean"]).view(1, -1, 1, 1, 1)
    std = torch.tensor(Wan22Backbone.sizes["5b"][1]["latents_std"]).view(1, -1, 1, 1, 1)
    with torch.no_grad():
        mu = model.vae.encode(pixels * 2 - 1).latent_dist.mode()
        torch.testing.assert_close(model.encode(pixels), (mu - mean) / std)


def test_the_dvd_loss_on_wan22_latents():
    model = wan_model("wan2.2")
    rgb = torch.rand(1, 3, 9, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        target = model.encode(rgb.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1, -1))
        latents = model.encode(rgb)
    pred = model.regress(latents).detach().requires_grad_(True)
    assert pred.shape == target.shape == (1, 48, 3, 2, 2)
    terms = dvd_loss(pred, target)
    r = (pred - target).detach().double().numpy()
    expected = (
        np.mean(r**2)
        + 0.5 * (np.mean(np.abs(np.diff(r, axis=3))) + np.mean(np.abs(np.diff(r, axis=4))))
        + 0.5 * np.mean(np.abs(np.diff(r, axis=2)))
    )
    assert float(terms.total.detach()) == pytest.approx(expected, rel=1e-5)
    terms.total.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


# --- saving and loading: the family is recorded ----------------------------------------------------------------

VIDEO = np.random.default_rng(0).integers(0, 256, size=(7, 40, 72, 3), dtype=np.uint8)
SETTINGS = {"height": 32, "width": 64, "window": 5, "overlap": 2}


def test_wan22_saved_pipeline_records_the_family_and_loads_both_ways(tmp_path):
    pipe = DVDPipeline.from_model(wan_model("wan2.2"))
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["backbone"] == "wan2.2"
    assert index["transformer"] == ["diffusers", "WanTransformer3DModel"] and index["vae"][1] == "AutoencoderKLWan"
    ours = DVDPipeline.from_pretrained(tmp_path, device="cpu", dtype="float32")
    generic = DiffusionPipeline.from_pretrained(tmp_path, dtype=torch.float32)
    assert ours.model.family == generic.model.family == "wan2.2"
    expected = pipe(VIDEO, **SETTINGS)
    assert expected.model_size == (64, 64)  # 40x72 covering 32x64 is 36x64: multiples of 32 (Wan2.1's 16: 48x64)
    np.testing.assert_array_equal(ours(VIDEO, **SETTINGS).prediction, expected.prediction)
    np.testing.assert_array_equal(generic(VIDEO, **SETTINGS).prediction, expected.prediction)


def test_wan22_single_file_records_the_family(tmp_path):
    path = save_single_file(wan_model("wan2.2"), tmp_path / "m.safetensors", dtype=torch.float32)
    loaded = load_single_file(path).eval()
    pixels = torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(5))
    assert loaded.family == "wan2.2"
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels), wan_model("wan2.2")(pixels), rtol=0, atol=0)


def test_a_folder_saved_before_the_family_was_recorded_loads_as_wan21(tmp_path):
    DVDPipeline.from_model(build_tiny_model(2)).save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index.pop("backbone") == "wan2.1"
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    loaded = DVDPipeline.from_pretrained(tmp_path, device="cpu", dtype="float32")
    assert loaded.model.family == "wan2.1"
    np.testing.assert_array_equal(
        loaded(VIDEO, **SETTINGS).prediction, DVDPipeline.from_model(build_tiny_model(2))(VIDEO, **SETTINGS).prediction
    )


def test_saved_folders_whose_records_disagree_are_refused(tmp_path):
    DVDPipeline.from_model(build_tiny_model(2)).save_pretrained(tmp_path)
    index_path = tmp_path / "model_index.json"
    index = json.loads(index_path.read_text())
    index_path.write_text(json.dumps({**index, "backbone": "hunyuanvideo"}))
    with pytest.raises(DVDError, match=r"records backbone 'hunyuanvideo', which this dvd does not know \(wan2\.1"):
        load_weights(tmp_path)
    index_path.write_text(json.dumps({**index, "backbone": "wan2.2"}))
    with pytest.raises(DVDError, match=r"records backbone wan2\.2, but its DiT and VAE are a wan2\.1 model"):
        load_weights(tmp_path)
    index_path.write_text(json.dumps({**index, "transformer": ["diffusers", "HunyuanVideoTransformer3DModel"]}))
    with pytest.raises(DVDError, match=r"its transformer is a HunyuanVideoTransformer3DModel, not a WanTransformer"):
        load_weights(tmp_path)


# --- bases in diffusers' layout ---------------------------------------------------------------------------------


@pytest.mark.parametrize("family", WAN)
def test_a_tiny_base_loads_as_its_family(family, tmp_path):
    write_tiny_base(tmp_path, family, seed=3)
    loaded = load_weights(tmp_path)
    transformer, _ = tiny_modules(family, seed=3)
    assert (loaded.kind, loaded.model.family, loaded.weights_id) == ("base", family, f"{tmp_path} ({family} base)")
    for key, tensor in transformer.state_dict().items():
        torch.testing.assert_close(loaded.model.transformer.state_dict()[key], tensor, rtol=0, atol=0)


def test_a_hub_base_in_diffusers_layout_is_found_by_its_family(tmp_path, monkeypatch):
    """Offline, through huggingface_hub's own cache layout: the repository holds no DVD checkpoint, so its configs
    tell the family, then the family's components are taken."""
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--someone--wan22-base"
    snapshot = repo / "snapshots" / ("0" * 40)
    write_tiny_base(snapshot, "wan2.2", seed=4)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    loaded = load_weights("someone/wan22-base")
    assert (loaded.kind, loaded.model.family) == ("base", "wan2.2")


# --- dvd train --base, save, dvd predict, dvd bench: every family ----------------------------------------------


def train_config(path: Path, output: Path, size: int, **data) -> Path:
    source = {"kind": "synthetic", "samples": 4, "height": size, "width": size}
    config = {
        "finetune": {"lora_rank": 4},
        "data": {"clip_frames": 9, "sources": [{**source, "clips": True}], **data},  # 9 = 4n+1 and 8n+1
        "optim": {"lr": 1e-3, "grad_accum": 1},
        "train": {
            "output_dir": str(output),
            "max_steps": 1,
            "mixed_precision": "no",
            "gradient_checkpointing": True,
            "checkpoint_every": 1,
            "validate_at_start": False,
            "loggers": ["csv"],
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("family", "condition", "model_size"),
    [
        # 160x90 covering 48x48 is 48x85.3: sides rounded up to the backbone's stride (16, or 32 for Wan2.2 and LTX).
        ("wan2.1", None, [48, 96]),
        ("wan2.2", None, [64, 96]),
        ("cogvideox", (8, 16), [48, 96]),  # T5 of "" padded to the tiny DiT's max_text_seq_length 8
        ("ltx-video", (1, 16), [64, 96]),  # the end-of-sequence token of "" alone
    ],
)
def test_train_from_a_tiny_base_then_predict_and_bench(family, condition, model_size, clip, tmp_path, capsys):
    """The recipe (LoRA, LMR loss, synthetic clips, gradient checkpointing) for one step from a base in the family's
    Hub layout; the saved model records its family and runs in `dvd predict` and `dvd bench`."""
    base = write_tiny_base(tmp_path / "base", family)
    config = train_config(tmp_path / "train.yaml", tmp_path / "run", 32)
    assert main(["train", "--config", str(config), "--base", str(base)]) == 0
    exported = tmp_path / "run" / "export" / "merged"
    index = json.loads((exported / "model_index.json").read_text())
    backbone = BACKBONES[family]
    assert (index["backbone"], index["transformer"][1], index["vae"][1]) == (
        family,
        backbone.transformer_class.__name__,
        backbone.vae_class.__name__,
    )
    saved = exported / "condition.safetensors"
    if condition is None:
        assert not saved.exists()
    else:
        # The base's T5 embedding of "", computed once by `dvd train --base` and saved: predicting loads no T5.
        tensor = load_file(saved)["condition"]
        assert tuple(tensor.shape) == condition
        torch.testing.assert_close(tensor, backbone.from_base(base).condition, rtol=0, atol=0)
    shutil.rmtree(base)  # the trained model stands alone

    out = tmp_path / "out"
    argv = ["predict", str(clip), "-o", str(out), "--weights", str(exported), "--max-frames", "12", "--quiet"]
    assert main([*argv, "--height", "48", "--width", "48", "--window", "9", "--overlap", "2"]) == 0  # 2 windows
    meta = json.loads((out / "clip" / "meta.json").read_text())
    assert (meta["backbone"], meta["model_size"], meta["num_frames"]) == (family, model_size, 12)
    disparity = np.load(out / "clip" / "disparity.npy")
    assert disparity.shape == (12, 90, 160) and np.isfinite(disparity).all()

    capsys.readouterr()
    sizes = ["--source-height", "32", "--source-width", "64", "--height", "32", "--width", "64"]
    argv = ["bench", "--weights", str(exported), "--frames", "9", *sizes, "--window", "9", "--threads", "1", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["model"], report["frames"], report["windows"]) == (str(exported), 9, 1)
    assert all(report["flops"][stage] > 0 for stage in ("vae_encode", "dit", "vae_decode"))


def _rewrite_index(base: Path, **entries: object) -> None:
    index = json.loads((base / "model_index.json").read_text())
    (base / "model_index.json").write_text(json.dumps({**index, **entries}))


def _vae_of(family: str):
    """Put `family`'s tiny VAE config (no weights: the refusal must come before any is read) in place of the base's."""

    def edit(base: Path) -> None:
        shutil.rmtree(base / "vae")
        tiny_modules(family)[1].save_config(base / "vae")
        _rewrite_index(base, vae=["diffusers", BACKBONES[family].vae_class.__name__])

    return edit


def _hunyuan_dit(base: Path) -> None:
    _rewrite_index(
        base, _class_name="HunyuanVideoPipeline", transformer=["diffusers", "HunyuanVideoTransformer3DModel"]
    )


def _no_text_encoder(base: Path) -> None:
    shutil.rmtree(base / "text_encoder")


@pytest.mark.parametrize(
    ("family", "edit", "settings", "message"),
    [
        (
            "wan2.1",
            None,
            ["data.clip_frames=6"],
            r"clip_frames is 6, but the wan2\.1 backbone's VAE encodes clips of 4n\+1 frames: set data\.clip_frames to 5",
        ),
        (
            "ltx-video",
            None,
            ["data.clip_frames=5"],
            r"clip_frames is 5, but the ltx-video backbone's VAE encodes clips of 8n\+1 frames: set data\.clip_frames to",
        ),
        (
            "wan2.2",
            None,
            ["train.export=official"],
            r"the official DVD layout holds Wan2\.1 models only, and this is a wan2\.2 model: set train\.export to",
        ),
        (
            "cogvideox",
            None,
            ["model.learned_tau=true"],
            r"model\.learned_tau replaces a Wan DiT's timestep embedding, which the cogvideox backbone does not have",
        ),
        (
            "ltx-video",
            _hunyuan_dit,
            [],
            r"holds a HunyuanVideoTransformer3DModel, not a backbone dvd supports \(wan2\.1, .*ltx-video\): start",
        ),
        (
            "cogvideox",
            _vae_of("ltx-video"),
            [],
            r"the VAE is a AutoencoderKLLTXVideo, which does not belong to its CogVideoXTransformer3DModel .* put the",
        ),
        ("wan2.1", _vae_of("wan2.2"), [], r"the VAE has 48 latent channels but the .*DiT expects 16 in"),
        ("ltx-video", _no_text_encoder, [], r"has no text_encoder/: a ltx-video DiT runs on the T5 embedding"),
    ],
)
def test_training_refuses_what_the_base_cannot_do_before_any_step(family, edit, settings, message, tmp_path, capsys):
    base = write_tiny_base(tmp_path / "base", family)
    if edit is not None:
        edit(base)
    config = train_config(tmp_path / "train.yaml", tmp_path / "run", 32)
    sets = [arg for setting in settings for arg in ("--set", setting)]
    capsys.readouterr()
    assert main(["train", "--config", str(config), "--base", str(base), *sets]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert not (tmp_path / "run").exists()


def test_training_needs_frames_in_the_backbones_stride(tmp_path, capsys):
    base = write_tiny_base(tmp_path / "base", "wan2.2")
    config = train_config(tmp_path / "train.yaml", tmp_path / "run", 48)
    assert main(["train", "--config", str(config), "--base", str(base)]) == 2
    assert "gives 48x48 frames; the wan2.2 backbone needs multiples of 32" in capsys.readouterr().err


@pytest.mark.parametrize("family", list(BACKBONES))
def test_fsdp_shards_each_dit_block_of_every_family(family):
    """accelerate's FSDP2 wrap policy (the launch config names no class) takes the blocks `_no_split_modules` names:
    the backbone's block class, one unit per layer, for families whose DiT class names none (LTX-Video) too."""
    model = DVDModel(*tiny_modules(family))
    regression = DepthRegression(model)
    (name,) = regression._no_split_modules
    block = get_module_class_from_name(regression, name)
    assert block is BACKBONES[family].block_class
    units = [module for module in regression.modules() if isinstance(module, block)]
    assert len(units) == model.transformer.config.num_layers == 2


def test_lora_goes_where_the_backbone_places_it():
    model = build_tiny_model(0)
    make_trainable(model, FinetuneSection(lora_rank=4), learned_tau=False, gradient_checkpointing=False)
    wrapped = {name.split(".lora_A")[0].split(".")[-1] for name, _ in model.named_parameters() if ".lora_A." in name}
    targets = {target.split(".")[-1] for target in Wan21Backbone.lora_targets}
    assert wrapped == targets == {"to_q", "to_k", "to_v", "0", "proj", "2"}


# --- dvd predict: windows follow the backbone -------------------------------------------------------------------


def test_a_window_outside_the_frame_rule_is_refused(clip, tmp_path, capsys):
    pipe = DVDPipeline.from_model(wan_model("wan2.2"))
    with pytest.raises(ValueError, match=r"window 8 does not fit the wan2\.2 backbone's frame rule 4n\+1.*5 or 9"):
        pipe(VIDEO, height=32, width=64, window=8, overlap=2)
    assert pipe(VIDEO[:3], height=32, width=64, window=5, overlap=2).prediction.shape == (3, 40, 72)  # padded
    argv = ["predict", str(clip), "-o", str(tmp_path / "out"), "--weights", "proof", "--window", "6"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "window 6 does not fit the wan2.1 backbone's frame rule 4n+1" in err and "--window 5 or 9" in err
    assert not (tmp_path / "out").exists()  # the folder the run made is gone with it
    (tmp_path / "mine").mkdir()  # a folder that was there before the run stays, even empty
    assert main(["predict", str(clip), "-o", str(tmp_path / "mine"), "--weights", "proof", "--window", "6"]) == 2
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())


def test_default_windows_come_from_the_user_then_the_model_then_the_backbone():
    defaults = ModelDefaults(window=9).for_backbone(17, 4)
    assert defaults.resolve({}) == {"height": 480, "width": 640, "window": 9, "overlap": 4}
    assert defaults.resolve({"window": 5, "overlap": None})["window"] == 5
    assert defaults.as_config() == {"window": 9}  # the backbone's are not the model's: never saved
    pipe = DVDPipeline.from_model(build_tiny_model(0))
    assert pipe.model_defaults.backbone == (Wan21Backbone.default_window, Wan21Backbone.default_overlap) == (81, 21)
