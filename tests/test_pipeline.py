"""`DVDPipeline` as a diffusers pipeline: save/load through `DiffusionPipeline`, every input form, typed output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from dvd import DVDPipeline
from dvd.pipeline.dvd_pipeline import DVDPipelineOutput
from dvd.weights.tiny import build_tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS = {"height": 32, "width": 32, "window": 5, "overlap": 2}


@pytest.fixture(scope="module")
def pipe() -> DVDPipeline:
    return DVDPipeline.from_model(build_tiny_model(seed=0))


@pytest.fixture(scope="module")
def saved(pipe: DVDPipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("saved")
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def video() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(7, 32, 48, 3), dtype=np.uint8)


def test_save_pretrained_writes_the_diffusers_layout(saved: Path):
    assert {p.name for p in saved.iterdir()} >= {"model_index.json", "transformer", "vae"}


@pytest.mark.smoke
def test_diffusion_pipeline_loads_what_save_pretrained_writes(saved: Path, video: np.ndarray):
    generic = DiffusionPipeline.from_pretrained(saved, dtype=torch.float32)
    ours = DVDPipeline.from_pretrained(saved, device="cpu", dtype="float32")
    assert isinstance(generic, DVDPipeline) and generic.config.tau == ours.model.tau == 0.5
    np.testing.assert_array_equal(generic(video, **SETTINGS).prediction, ours(video, **SETTINGS).prediction)


def test_every_input_form_gives_the_same_prediction(pipe: DVDPipeline, video: np.ndarray):
    expected = pipe(video, **SETTINGS).prediction
    as_float = video.astype(np.float32) / 255
    forms = {
        "float numpy": as_float,
        "channels-first uint8 numpy": video.transpose(0, 3, 1, 2),
        "uint8 torch": torch.from_numpy(video),
        "float torch": torch.from_numpy(as_float),
        "channels-first float torch": torch.from_numpy(as_float).permute(0, 3, 1, 2),
        "PIL list": [Image.fromarray(frame) for frame in video],
        "generator of frames": (frame for frame in video),
    }
    for name, form in forms.items():
        np.testing.assert_array_equal(pipe(form, **SETTINGS).prediction, expected, err_msg=name)


def test_a_uint8_torch_tensor_is_not_taken_for_floats(pipe: DVDPipeline, video: np.ndarray):
    as_255_floats = torch.from_numpy(video.astype(np.float32))
    with pytest.raises(ValueError, match=r"`video`.*\[0, 1\].*divide by 255"):
        pipe(as_255_floats, **SETTINGS)


@pytest.mark.parametrize(
    "bad,words",
    [
        (np.zeros((4, 32, 32), np.uint8), r"`video`.*\[T, H, W, 3\]"),
        (np.zeros((4, 32, 32, 4), np.uint8), r"`video`.*RGB"),
        (np.zeros((4, 32, 32, 3), np.int64), r"`video`.*dtype int64"),
        (np.full((4, 32, 32, 3), np.nan, np.float32), r"`video`.*\[0, 1\]"),
        (np.zeros((0, 32, 32, 3), np.uint8), r"`video` holds no frames"),
        (42, r"`video`.*got int"),
        ([np.zeros((32, 32, 3), np.uint8), np.zeros((16, 32, 3), np.uint8)], r"`video`: frame 1"),
    ],
)
def test_bad_inputs_raise_a_value_error_naming_the_argument(pipe: DVDPipeline, bad, words: str):
    with pytest.raises(ValueError, match=words):
        pipe(bad, **SETTINGS)


def test_bad_settings_raise_value_errors(pipe: DVDPipeline, video: np.ndarray):
    with pytest.raises(ValueError, match="smaller than the window"):
        pipe(video, height=32, width=32, window=5, overlap=5)
    with pytest.raises(ValueError, match="output_type"):
        pipe(video, output_type="pil")
    with pytest.raises(ValueError, match="stride"):
        pipe(video, stride=0)


def test_output_types_and_tuple_return(pipe: DVDPipeline, video: np.ndarray):
    out = pipe(video, **SETTINGS)
    assert isinstance(out, DVDPipelineOutput) and out.prediction.dtype == np.float32
    assert out.prediction.shape == (7, 32, 48) and out.model_size == (32, 48) and out.fps is None
    as_torch = pipe(video, **SETTINGS, output_type="pt").prediction
    assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.float32
    np.testing.assert_array_equal(as_torch.numpy(), out.prediction)
    (as_tuple,) = pipe(video, **SETTINGS, return_dict=False)
    np.testing.assert_array_equal(as_tuple, out.prediction)
    np.testing.assert_array_equal(np.stack(list(pipe.stream(video, **SETTINGS))), out.prediction)


def test_model_cpu_offload_and_to_keep_the_result(saved: Path, video: np.ndarray):
    reference = DVDPipeline.from_pretrained(saved, device="cpu", dtype="float32")(video, **SETTINGS).prediction
    offloaded = DVDPipeline.from_pretrained(saved, device="cpu", dtype="float32")
    offloaded.enable_model_cpu_offload(device="cpu")
    np.testing.assert_array_equal(offloaded(video, **SETTINGS).prediction, reference)
    moved = DVDPipeline.from_pretrained(saved, device="cpu", dtype="float32").to("cpu", torch.float32)
    np.testing.assert_array_equal(moved(video, **SETTINGS).prediction, reference)


def test_vae_tiling_is_used_when_enabled(saved: Path, monkeypatch: pytest.MonkeyPatch):
    pipe = DVDPipeline.from_pretrained(saved, device="cpu", dtype="float32")
    frames = np.random.default_rng(1).integers(0, 256, size=(5, 64, 64, 3), dtype=np.uint8)
    untiled = pipe.predict_window(frames)
    pipe.vae.enable_tiling(
        tile_sample_min_height=32, tile_sample_min_width=32, tile_sample_stride_height=16, tile_sample_stride_width=16
    )
    calls = []
    original = pipe.vae.tiled_encode
    monkeypatch.setattr(pipe.vae, "tiled_encode", lambda *a, **k: calls.append(1) or original(*a, **k))
    tiled = pipe.predict_window(frames)
    assert calls and tiled.shape == untiled.shape and np.isfinite(tiled).all()
