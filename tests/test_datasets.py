import logging
import math
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from dvd.data.procedural import render_clip, split_seed
from dvd.data.train import (
    HypersimDataset,
    SourceSampler,
    SyntheticDataset,
    TartanAirDataset,
    TrainingFolder,
    VKittiImageDataset,
    VKittiVideoDataset,
)
from dvd.errors import DVDError

# The official recipe's mix (configs/dvd-paper.yaml).
RECIPE_SOURCE_WEIGHTS = {"hypersim": 9.0, "vkitti_image": 1.0, "tartanair": 40.0, "vkitti_video": 10.0}


def _direct_target(depth, valid):
    """Truncated disparity over the given pixels, written out with np.quantile (one scope)."""
    disp = 1.0 / depth[valid].astype(np.float64)
    lo, hi = np.quantile(disp, [0.02, 0.98])
    out = np.zeros(depth.shape)
    out[valid] = np.clip((disp - lo) / (hi - lo + 1e-5), 0, 1)
    return out


def _save_rgb(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


def _save_png16(path, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint16)).save(path)


def _rgb(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _check_sample(sample, frames, h, w):
    assert sample["rgb"].shape == (frames, 3, h, w) and sample["rgb"].dtype == torch.float32
    assert sample["depth_target"].shape == (frames, 3, h, w)
    assert sample["depth"].shape == (frames, h, w) and sample["valid"].shape == (frames, h, w)
    assert sample["valid"].dtype == torch.bool
    assert 0 <= sample["rgb"].min() and sample["rgb"].max() <= 1
    target = sample["depth_target"]
    assert torch.equal(target[:, 0], target[:, 1]) and torch.equal(target[:, 0], target[:, 2])


# ---------------------------------------------------------------- Hypersim


def _hypersim_frame(root, scene, cam, index, distance, rng, with_depth=True):
    h5py = pytest.importorskip("h5py")
    images = root / scene / "images"
    _save_rgb(images / f"scene_cam_{cam}_final_preview" / f"frame.{index:04d}.tonemap.jpg", _rgb(rng, *distance.shape))
    if with_depth:
        path = images / f"scene_cam_{cam}_geometry_hdf5" / f"frame.{index:04d}.depth_meters.hdf5"
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as file:
            file["dataset"] = distance.astype(np.float16)


def test_hypersim_planar_depth_target_and_nan_skip(tmp_path, caplog):
    rng = np.random.default_rng(0)
    distance = rng.uniform(1.0, 9.0, (6, 8)).astype(np.float16).astype(np.float64)
    _hypersim_frame(tmp_path, "ai_001_001", "00", 0, distance, rng)
    broken = distance.copy()
    broken[2, 3] = np.nan
    _hypersim_frame(tmp_path, "ai_001_001", "00", 1, broken, rng)
    _hypersim_frame(tmp_path, "ai_001_002", "01", 0, distance * 2, rng)
    _hypersim_frame(tmp_path, "ai_001_002", "01", 1, distance, rng, with_depth=False)

    with caplog.at_level(logging.WARNING, logger="dvd.data.train"):
        data = HypersimDataset(tmp_path, size=(6, 8), flip=False)
    assert len(data) == 3  # the frame without depth is left out ...
    assert "1 of 4 frames have no depth" in caplog.text  # ... and said so

    # Focal 886.81 px on the 1024-wide grid scales to 8 px wide; pixel centres at -3.5..3.5 and -2.5..2.5.
    focal = 886.81 * 8 / 1024
    x, y = np.meshgrid(np.arange(8) - 3.5, np.arange(6) - 2.5)
    planar = distance * focal / np.sqrt(x**2 + y**2 + focal**2)
    sample = data[0]
    _check_sample(sample, 1, 6, 8)
    np.testing.assert_allclose(sample["depth"][0].numpy(), planar, rtol=1e-5)
    np.testing.assert_allclose(
        sample["depth_target"][0, 0].numpy(), _direct_target(planar, np.ones((6, 8), bool)), atol=2e-5
    )

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dvd.data.train"):
        skipped_to = data[1]  # frame.0001 has a NaN: the next sample (scene ai_001_002) comes instead
    assert data.skipped == 1
    assert "NaN/inf depth" in caplog.text and "1 sample(s) skipped so far" in caplog.text
    np.testing.assert_allclose(skipped_to["depth"][0].numpy(), 2 * planar, rtol=1e-5)


def test_hypersim_resizes_to_the_recipe_size(tmp_path):
    rng = np.random.default_rng(1)
    _hypersim_frame(tmp_path, "ai_003_004", "00", 0, rng.uniform(1, 5, (12, 16)), rng)
    sample = HypersimDataset(tmp_path, size=(6, 8), flip=False)[0]
    _check_sample(sample, 1, 6, 8)


def test_hypersim_wrong_layout_fails_at_construction(tmp_path):
    _save_rgb(tmp_path / "images" / "frame.0000.jpg", _rgb(np.random.default_rng(0), 4, 4))
    with pytest.raises(DVDError, match="hypersim: no samples found: expected .*tonemap.jpg"):
        HypersimDataset(tmp_path)
    with pytest.raises(DVDError, match="not a directory"):
        HypersimDataset(tmp_path / "missing")


# ---------------------------------------------------------------- Virtual KITTI 2


def _vkitti_sequence(root, scene, condition, camera, depth_cm, rng):
    frames = root / scene / condition / "frames"
    for index, values in enumerate(depth_cm):
        _save_rgb(frames / "rgb" / f"Camera_{camera}" / f"rgb_{index:05d}.jpg", _rgb(rng, *values.shape))
        _save_png16(frames / "depth" / f"Camera_{camera}" / f"depth_{index:05d}.png", values)


def _vkitti_depth(rng, frames, h, w):
    depth = rng.integers(200, 7000, (frames, h, w))
    depth[:, :2] = 65535  # sky in the top rows
    return depth


def test_vkitti_image_kb_crop_valid_range_and_target(tmp_path):
    rng = np.random.default_rng(2)
    depth_cm = _vkitti_depth(rng, 2, 10, 16)
    depth_cm[0, 9, 3] = 9000  # 90 m: outside the valid range (1e-5, 80)
    _vkitti_sequence(tmp_path, "Scene02", "clone", 0, depth_cm, rng)
    _vkitti_sequence(tmp_path, "Scene01", "clone", 0, depth_cm, rng)  # not a recipe scene
    data = VKittiImageDataset(tmp_path, size=(6, 10), flip=False)
    assert len(data) == 2
    sample = data[0]
    _check_sample(sample, 1, 6, 10)
    # Bottom 6 of 10 rows, centred 10 of 16 columns: rows 4..9, columns 3..12.
    expected = depth_cm[0, 4:, 3:13] / 100.0
    np.testing.assert_allclose(sample["depth"][0].numpy(), expected, rtol=1e-6)
    valid = (expected > 1e-5) & (expected < 80)
    assert not valid[5, 0]
    np.testing.assert_array_equal(sample["valid"][0].numpy(), valid)
    np.testing.assert_allclose(sample["depth_target"][0, 0].numpy(), _direct_target(expected, valid), atol=2e-5)
    assert sample["depth_target"][0, 0, 5, 0] == 0


def test_vkitti_image_small_frames_scale_up_before_the_crop(tmp_path):
    rng = np.random.default_rng(3)
    depth_cm = rng.integers(200, 7000, (1, 4, 8))
    _vkitti_sequence(tmp_path, "Scene06", "fog", 1, depth_cm, rng)
    sample = VKittiImageDataset(tmp_path, size=(6, 10), flip=False)[0]
    _check_sample(sample, 1, 6, 10)
    # Scale max(6/4, 10/8) = 1.5 gives 6x12 by nearest; the crop keeps all rows and columns 1..10.
    rows, cols = (np.arange(6) / 1.5).astype(int), (np.arange(12) / 1.5).astype(int)
    expected = depth_cm[0][rows][:, cols][:, 1:11] / 100.0
    np.testing.assert_allclose(sample["depth"][0].numpy(), expected, rtol=1e-6)


def test_vkitti_video_clips_resize_and_clip_scope(tmp_path):
    rng = np.random.default_rng(4)
    depth_cm = _vkitti_depth(rng, 6, 10, 16)
    _vkitti_sequence(tmp_path, "Scene18", "morning", 0, depth_cm, rng)
    _vkitti_sequence(tmp_path, "Scene18", "morning", 1, depth_cm[:4], rng)  # too short for a 5-frame clip
    data = VKittiVideoDataset(tmp_path, num_frames=5, size=(5, 8), flip=False)
    assert len(data) == 2  # starts 0 and 1 of the only long-enough camera
    sample = data[1]
    _check_sample(sample, 5, 5, 8)
    # Halving by torch "nearest" takes source index floor(2 * i): every other row and column.
    expected = depth_cm[1:6, ::2, ::2] / 100.0
    np.testing.assert_allclose(sample["depth"].numpy(), expected, rtol=1e-6)
    valid = (expected > 1e-5) & (expected < 80)
    np.testing.assert_allclose(sample["depth_target"][:, 0].numpy(), _direct_target(expected, valid), atol=2e-5)


def test_vkitti_without_recipe_scenes_is_a_layout_error(tmp_path):
    rng = np.random.default_rng(5)
    _vkitti_sequence(tmp_path, "Scene01", "clone", 0, _vkitti_depth(rng, 1, 4, 4), rng)
    with pytest.raises(DVDError, match=r"expected ROOT/<SceneNN>/<condition>/frames/rgb"):
        VKittiImageDataset(tmp_path)
    assert len(VKittiImageDataset(tmp_path, scenes=("Scene01",), size=(4, 4))) == 1


# ---------------------------------------------------------------- TartanAir


def _tartanair_sequence(root, env, side, depth, rng):
    folder = root / env / "Easy" / "P000"
    for index, values in enumerate(depth):
        _save_rgb(folder / f"image_{side}" / f"{index:06d}_{side}.png", _rgb(rng, *values.shape))
        path = folder / f"depth_{side}" / f"{index:06d}_{side}_depth.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, values.astype(np.float32))


def test_tartanair_clamps_and_normalises_over_the_clip(tmp_path, caplog):
    rng = np.random.default_rng(6)
    depth = rng.uniform(0.5, 30.0, (6, 6, 8))
    depth[:, 0] = 1e4  # far sky
    depth[3, 2, 2] = np.inf
    _tartanair_sequence(tmp_path, "abandonedfactory", "left", depth, rng)
    broken = depth[:5].copy()
    broken[4, 1, 1] = np.nan
    _tartanair_sequence(tmp_path, "ocean", "right", broken, rng)
    data = TartanAirDataset(tmp_path, num_frames=5, size=(6, 8), flip=False)
    assert len(data) == 3  # two windows of the 6-frame sequence, one of the 5-frame one
    sample = data[0]
    _check_sample(sample, 5, 6, 8)
    clamped = np.clip(depth[:5], 0, 50)
    np.testing.assert_allclose(sample["depth"].numpy(), clamped, rtol=1e-6)
    np.testing.assert_allclose(sample["depth_target"][:, 0].numpy(), _direct_target(clamped, clamped > 0), atol=2e-5)
    with caplog.at_level(logging.WARNING, logger="dvd.data.train"):
        wrapped = data[2]  # the NaN clip is skipped; the index wraps to the first clip
    assert data.skipped == 1 and "NaN/inf depth" in caplog.text
    assert torch.equal(wrapped["depth"], sample["depth"])


def test_tartanair_wrong_layout(tmp_path):
    (tmp_path / "env" / "Easy" / "P000" / "image_left").mkdir(parents=True)
    with pytest.raises(DVDError, match="tartanair: no samples found: expected .*depth_left"):
        TartanAirDataset(tmp_path, num_frames=5)


# ---------------------------------------------------------------- own folders


def _folder_sequence(root, depth, rng, png_scale=None):
    frames = []
    for index, values in enumerate(depth):
        rgb = _rgb(rng, *values.shape)
        frames.append(rgb)
        _save_rgb(root / "rgb" / f"{index:04d}.png", rgb)
        if png_scale is None:
            (root / "depth").mkdir(parents=True, exist_ok=True)
            np.save(root / "depth" / f"{index:04d}.npy", values.astype(np.float32))
        else:
            _save_png16(root / "depth" / f"{index:04d}.png", np.round(values / png_scale))
    return np.stack(frames)


def test_folder_images_npy_and_png16(tmp_path, caplog):
    rng = np.random.default_rng(7)
    depth_a = rng.uniform(1, 10, (3, 6, 8))
    depth_a[0, 0, 0] = 0.0  # unknown depth
    rgb_a = _folder_sequence(tmp_path / "walk", depth_a, rng)
    depth_b = np.round(rng.uniform(1, 10, (2, 6, 8)) * 1000) / 1000
    _folder_sequence(tmp_path / "zoo", depth_b, rng, png_scale=0.001)
    _save_rgb(tmp_path / "zoo" / "rgb" / "0009.png", _rgb(rng, 6, 8))  # no depth for this one
    with caplog.at_level(logging.WARNING, logger="dvd.data.train"):
        data = TrainingFolder(tmp_path, flip=False)
    assert len(data) == 5 and "1 of 3 frames have no depth" in caplog.text

    first = data[0]
    _check_sample(first, 1, 6, 8)
    np.testing.assert_allclose(first["rgb"][0].permute(1, 2, 0).numpy(), rgb_a[0] / 255.0, atol=1e-6)
    np.testing.assert_allclose(first["depth"][0].numpy(), depth_a[0], rtol=1e-6)
    assert not first["valid"][0, 0, 0] and first["valid"].sum() == 47
    valid = depth_a[0] > 0
    np.testing.assert_allclose(first["depth_target"][0, 0].numpy(), _direct_target(depth_a[0], valid), atol=2e-5)
    np.testing.assert_allclose(data[4]["depth"][0].numpy(), depth_b[1], rtol=1e-6)


def test_folder_clips_single_sequence_root_resize_and_range(tmp_path):
    rng = np.random.default_rng(8)
    depth = rng.uniform(1, 100, (6, 8, 12))
    _folder_sequence(tmp_path, depth, rng)
    data = TrainingFolder(tmp_path, num_frames=5, size=(4, 6), depth_range=(0.0, 50.0), stride=2, flip=False)
    assert len(data) == 1  # starts 0 (2 would need 7 frames)
    sample = data[0]
    _check_sample(sample, 5, 4, 6)
    expected = depth[:5, ::2, ::2]
    np.testing.assert_allclose(sample["depth"].numpy(), expected, rtol=1e-6)
    valid = expected < 50
    np.testing.assert_array_equal(sample["valid"].numpy(), valid)
    np.testing.assert_allclose(sample["depth_target"][:, 0].numpy(), _direct_target(expected, valid), atol=2e-5)


def test_folder_layout_errors(tmp_path):
    (tmp_path / "seq" / "frames").mkdir(parents=True)
    with pytest.raises(DVDError, match=r"folder: no samples found: expected ROOT/<sequence>/rgb"):
        TrainingFolder(tmp_path)
    (tmp_path / "seq" / "rgb").mkdir()
    with pytest.raises(DVDError, match="has rgb/ but no depth/ folder"):
        TrainingFolder(tmp_path)
    with pytest.raises(DVDError, match="num_frames must be a whole number of at least 1, got 0"):
        TrainingFolder(tmp_path, num_frames=0)


def test_png_depth_must_be_16_bit(tmp_path):
    rng = np.random.default_rng(9)
    _save_rgb(tmp_path / "rgb" / "0000.png", _rgb(rng, 4, 4))
    _save_rgb(tmp_path / "depth" / "0000.png", _rgb(rng, 4, 4))
    with pytest.raises(DVDError, match="expected a 16-bit single-channel PNG"):
        TrainingFolder(tmp_path)[0]


# ---------------------------------------------------------------- synthetic, flips, factory


def test_synthetic_dataset_matches_the_renderer():
    data = SyntheticDataset("val", num_samples=2, num_frames=5, size=(12, 16), flip=False)
    sample = data[1]
    _check_sample(sample, 5, 12, 16)
    clip = render_clip(split_seed("val", 1), 5, 12, 16)
    np.testing.assert_array_equal(sample["depth"].numpy(), clip.depth)
    np.testing.assert_allclose(sample["rgb"].permute(0, 2, 3, 1).numpy(), clip.rgb / 255.0, atol=1e-6)
    target = _direct_target(clip.depth, np.ones(clip.depth.shape, bool))
    np.testing.assert_allclose(sample["depth_target"][:, 0].numpy(), target, atol=2e-5)


def test_flip_mirrors_whole_clips_about_half_the_time(tmp_path):
    rng = np.random.default_rng(10)
    depth = rng.uniform(1, 10, (5, 4, 6))
    depth[:, 1, 0] = 0.0  # an invalid pixel on one side, so a mask left unflipped would show
    _folder_sequence(tmp_path, depth, rng)
    plain = TrainingFolder(tmp_path, num_frames=5, flip=False)[0]
    mirrored = {key: value.flip(-1) for key, value in plain.items()}
    flipping = TrainingFolder(tmp_path, num_frames=5, flip=True)
    torch.manual_seed(0)
    outcomes = Counter()
    for _ in range(40):
        sample = flipping[0]
        if all(torch.equal(sample[k], plain[k]) for k in plain):
            outcomes["same"] += 1
        else:
            assert all(torch.equal(sample[k], mirrored[k]) for k in plain)  # every frame, every field
            outcomes["mirrored"] += 1
    assert 8 <= outcomes["mirrored"] <= 32


# ---------------------------------------------------------------- source sampler


def test_sampler_follows_the_recipe_weights():
    sampler = SourceSampler(RECIPE_SOURCE_WEIGHTS, seed=42)
    counts = Counter(sampler.draw(step) for step in range(40000))
    total = sum(RECIPE_SOURCE_WEIGHTS.values())
    for name, weight in RECIPE_SOURCE_WEIGHTS.items():
        # 9:1:40:10 is 15 %, 1.67 %, 66.7 %, 16.7 %; 0.01 is over 4 standard errors at 40000 draws.
        assert counts[name] / 40000 == pytest.approx(weight / total, abs=0.01)
    assert sampler.probabilities == pytest.approx(
        {"hypersim": 0.15, "vkitti_image": 1 / 60, "tartanair": 2 / 3, "vkitti_video": 1 / 6}
    )


def test_sampler_is_a_function_of_seed_and_step():
    run = [SourceSampler(RECIPE_SOURCE_WEIGHTS, seed=7).draw(step) for step in range(300)]
    resumed = SourceSampler(RECIPE_SOURCE_WEIGHTS, seed=7)
    assert [resumed.draw(step) for step in range(120, 300)] == run[120:]
    assert [SourceSampler(RECIPE_SOURCE_WEIGHTS, seed=8).draw(step) for step in range(300)] != run


def test_sampler_rejects_bad_weights_and_never_draws_zero():
    for bad in ({}, {"a": -1.0, "b": 2.0}, {"a": 0.0}, {"a": math.nan}):
        with pytest.raises(DVDError, match="not usable"):
            SourceSampler(bad)
    sampler = SourceSampler({"images": 0.0, "clips": 1.0, "more": 0.0}, seed=1)
    assert {sampler.draw(step) for step in range(500)} == {"clips"}
