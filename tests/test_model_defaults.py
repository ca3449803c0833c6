"""A model's own inference defaults (dvd.weights.defaults): saved with it, read back, and used by `dvd predict`,
`dvd convert` and `pipe(video)` for the sizes and windows the user leaves out; the proof model's notice; the
progress line that moves before the first frame is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline

from dvd.cli import build_parser, main
from dvd.commands.predict import settings_from_args
from dvd.engine.stages import READ
from dvd.errors import DVDError
from dvd.jobs.progress import PredictProgress
from dvd.pipeline.dvd_pipeline import DVDPipeline
from dvd.weights.about import PROOF_NOTICE, read_defaults, weights_kind
from dvd.weights.defaults import ModelDefaults
from dvd.weights.single_file import save_single_file, single_file_header
from dvd.weights.tiny import build_tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROOF_SETTINGS = {"height": 64, "width": 64, "window": 5, "overlap": 2}  # its training size and clip length
OFFICIAL_SETTINGS = {"height": 480, "width": 640, "window": 81, "overlap": 21}  # the official open-world script's


def video_settings(*argv: str) -> dict[str, int]:
    """The sizing and window settings `dvd predict clip.mp4 -o out ARGV` runs with."""
    video = settings_from_args(build_parser().parse_args(["predict", "clip.mp4", "-o", "out", *argv])).video
    return {name: getattr(video, name) for name in PROOF_SETTINGS}


def test_each_setting_is_the_given_one_else_the_models_else_dvds():
    model = ModelDefaults(height=64, window=5)
    assert model.resolve({}) == {"height": 64, "width": 640, "window": 5, "overlap": 21}
    assert model.resolve({"height": 32, "width": None, "overlap": 1}) == {
        "height": 32,
        "width": 640,
        "window": 5,
        "overlap": 1,
    }
    assert ModelDefaults().resolve({}) == OFFICIAL_SETTINGS


@pytest.mark.parametrize(
    ("saved", "message"),
    [
        ({"height": 0}, "the model default height in here is 0, not a positive whole number"),
        ({"height": 64.5}, "the model default height in here is 64.5"),
        ({"size": 64}, "the model defaults in here are .*not a mapping of height, width, window, overlap"),
        ("[64, 64]", "not a mapping of height"),
        ("{not json", "not a mapping of height"),
    ],
)
def test_bad_saved_defaults_are_named(saved, message):
    with pytest.raises(DVDError, match=message):
        ModelDefaults.from_config(saved, "here")


def test_the_shipped_proof_model_carries_its_training_settings():
    assert read_defaults("proof") == ModelDefaults(**PROOF_SETTINGS)
    assert weights_kind("proof", "single-file") == "proof"


def test_predict_flags_default_to_the_models_own_settings(tmp_path: Path, tiny_weights: Path):
    assert video_settings("--weights", "proof") == PROOF_SETTINGS
    # A flag given wins over the model's default; the others stay the model's.
    assert video_settings("--weights", "proof", "--height", "32", "--window", "9") == {
        "height": 32,
        "width": 64,
        "window": 9,
        "overlap": 2,
    }
    # Weights that carry no defaults (the official format, the official release from the Hub) run at dvd's.
    assert video_settings("--weights", str(tiny_weights)) == OFFICIAL_SETTINGS
    assert video_settings() == OFFICIAL_SETTINGS
    assert video_settings("--window", "45") == {**OFFICIAL_SETTINGS, "window": 45}


def test_single_files_and_pipeline_folders_keep_their_defaults(tmp_path: Path):
    model = build_tiny_model(0)
    single = save_single_file(model, tmp_path / "m.safetensors", dtype=torch.float32, defaults=ModelDefaults(32, 48))
    assert json.loads(single_file_header(single)["defaults"]) == {"height": 32, "width": 48}
    assert read_defaults(single) == ModelDefaults(32, 48)
    assert video_settings("--weights", str(single)) == {"height": 32, "width": 48, "window": 81, "overlap": 21}

    folder = tmp_path / "pipeline"
    DVDPipeline.from_model(model, ModelDefaults(32, 48, 5, 1)).save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["defaults"] == {"height": 32, "width": 48, "window": 5, "overlap": 1}
    assert read_defaults(folder) == ModelDefaults(32, 48, 5, 1)
    # Loaded by dvd and by plain diffusers alike.
    assert DVDPipeline.from_pretrained(folder, device="cpu").model_defaults == ModelDefaults(32, 48, 5, 1)
    assert DiffusionPipeline.from_pretrained(folder).model_defaults == ModelDefaults(32, 48, 5, 1)
    assert weights_kind(folder, "dvd") == "trained"

    # A folder written without defaults has none.
    plain = tmp_path / "plain"
    DVDPipeline.from_model(model).save_pretrained(plain)
    assert read_defaults(plain) == ModelDefaults()


def test_convert_keeps_the_proof_models_defaults(tmp_path: Path):
    assert main(["convert", "--weights", "proof", "-o", str(tmp_path / "converted")]) == 0
    assert read_defaults(tmp_path / "converted") == ModelDefaults(**PROOF_SETTINGS)


def test_the_python_api_uses_the_models_defaults_unless_given():
    pipe = DVDPipeline.from_pretrained("proof", device="cpu")
    assert (pipe.weights_kind, pipe.model_defaults) == ("proof", ModelDefaults(**PROOF_SETTINGS))
    windows: list[int] = []
    predict_windows = pipe.predict_windows

    def recorded(batch: list[np.ndarray]) -> list[np.ndarray]:
        windows.extend(len(window) for window in batch)
        return predict_windows(batch)

    pipe.predict_windows = recorded
    frames = np.random.default_rng(0).integers(0, 256, (8, 90, 160, 3), dtype=np.uint8)
    out = pipe(frames)
    # 64x64 covered at 16:9 is 64x114, rounded up to 64x128; 8 frames in windows of 5 overlapping by 2.
    assert out.model_size == (64, 128) and windows == [5, 5]
    windows.clear()
    assert pipe(frames, height=32, width=48, window=9).model_size == (32, 64) and windows == [8]


def test_predict_with_the_proof_model_says_what_it_is_and_uses_its_settings(clip: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(clip), "-o", str(out), "--weights", "proof", "--max-frames", "7", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"dvd predict: note: {PROOF_NOTICE}" in err.splitlines()  # one line, also with --quiet
    meta = json.loads((out / "clip" / "meta.json").read_text())
    assert (meta["model_size"], meta["window"], meta["overlap"]) == ([64, 128], 5, 2)  # 160x90 covering 64x64

    flags = ["--height", "32", "--width", "48", "--window", "9", "--overlap", "3", "--overwrite"]
    assert main(["predict", str(clip), "-o", str(out), "--weights", "proof", "--max-frames", "7", *flags]) == 0
    meta = json.loads((out / "clip" / "meta.json").read_text())
    assert (meta["model_size"], meta["window"], meta["overlap"]) == ([32, 64], 9, 3)


def test_other_weights_get_no_notice(clip: Path, tmp_path: Path, tiny_weights: Path, capsys):
    argv = ["predict", str(clip), "-o", str(tmp_path), "--weights", str(tiny_weights), "--max-frames", "3"]
    assert main([*argv, "--height", "32", "--width", "48", "--window", "5", "--overlap", "1"]) == 0
    assert "proof model" not in capsys.readouterr().err


def test_the_progress_line_moves_before_the_first_frame_is_written(clip: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(clip), "-o", str(out), "--weights", "proof", "--max-frames", "12"]) == 0
    lines = [line.strip() for line in capsys.readouterr().err.split("\r") if "/12 [" in line]
    waiting = [line for line in lines if " 0/12 [" in line]
    # Before any frame is written the line shows the frames decoded and the stage of the first window, and no time
    # left (there is no rate yet); once frames are written it shows the time left and the rate.
    assert any("decoded" in line and "window 1: VAE encode" in line for line in waiting), lines
    assert any("window 1: DiT" in line for line in waiting), lines
    assert all("<" not in line and "frame/s" not in line for line in waiting), waiting
    written = [line for line in lines if " 0/12 [" not in line]
    assert written and all("<" in line for line in written), written
    assert "12/12" in lines[-1]


def test_progress_postfix_follows_reads_windows_and_stages():
    pipe = DVDPipeline.from_model(build_tiny_model(0))
    with PredictProgress("clip", 10, pipe, disable=True) as progress:
        assert pipe.stage_timer is progress
        assert progress.postfix() == "decoded 0, decoding"
        assert list(progress.iterate(READ, ["a", "b", "c"])) == ["a", "b", "c"]
        progress.count_windows(1)
        with progress.stage("dit"):
            assert progress.postfix() == "decoded 3, window 1: DiT"
        progress.count_windows(2)
        with progress.stage("vae_decode"):
            assert progress.postfix() == "decoded 3, window 3: VAE decode"
    assert pipe.stage_timer is not progress
