"""`dvd eval`'s TAE against Video Depth Anything's benchmark/eval/eval_tae.py on tiny hand-built scenes.

`vda_tae` below is an independent, deliberately plain re-statement of VDA's procedure (a pixel loop, lstsq on a
stacked design matrix, its own bilinear resize), written from reading the script; it shares no code with dvd. Its
flags switch single steps to the behaviour dvd had before issue 16, so each test also shows that the scene tells the
two apart. Every test runs the whole `dvd eval` command on files in the documented layouts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_eval_cli import run_eval

from dvd.evaluation.temporal import temporal_alignment_error

MAX_DEPTH = 10.0
SCANNET_CROP = (8, 8, 11, 11)  # VDA's hard crop [8:-8, 11:-11]


def bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """cv2.resize(INTER_LINEAR) of a float image: half-pixel centres, edge samples clamped, no antialias."""

    def taps(out: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.maximum((np.arange(out) + 0.5) * size / out - 0.5, 0.0)
        low = np.minimum(np.floor(src).astype(int), size - 1)
        return low, np.minimum(low + 1, size - 1), src - low

    r0, r1, fr = taps(height, image.shape[0])
    c0, c1, fc = taps(width, image.shape[1])
    image = image.astype(np.float64)
    top = image[r0][:, c0] * (1 - fc) + image[r0][:, c1] * fc
    bottom = image[r1][:, c0] * (1 - fc) + image[r1][:, c1] * fc
    return top * (1 - fr[:, None]) + bottom * fr[:, None]


def splat_error(depth1, depth2, rotation, translation, k_back, k_project, mask) -> float:
    """VDA's tae_torch for one direction, pixel by pixel: the last write in raster order wins."""
    height, width = depth1.shape
    projected = np.zeros((height, width))
    for row in range(height):
        for col in range(width):
            z = depth1[row, col]
            point = np.array([(col - k_back[0, 2]) * z / k_back[0, 0], (row - k_back[1, 2]) * z / k_back[1, 1], z])
            x, y, z2 = rotation @ point + translation
            u = int(np.rint(x * k_project[0, 0] / z2 + k_project[0, 2]))
            v = int(np.rint(y * k_project[1, 1] / z2 + k_project[1, 2]))
            if 0 <= u < width and 0 <= v < height:
                projected[v, u] = z2
    valid = (projected > 0) & (depth2 > 0) & mask
    if not valid.any():
        return 0.0
    return float(np.mean(np.abs(depth2[valid] - projected[valid]) / depth2[valid]))


def vda_tae(
    preds: list[np.ndarray],
    gts: np.ndarray,
    ks: np.ndarray,
    poses: np.ndarray,
    masks: np.ndarray | None = None,
    crop: tuple[int, int, int, int] | None = None,
    k_rule: str = "vda",
    clip_pred: bool = True,
    mask_in_fit: bool = False,
    mask_in_tae: bool = True,
    crop_first: bool = True,
) -> float:
    """VDA's eval_TAE for one scene. ``preds`` raw disparity frames (any size), ``gts`` [T, H, W] metres.

    The other flags re-create dvd's former behaviour: k_rule "source-target" (dvd's default), clip_pred=False,
    mask_in_fit=True with mask_in_tae=False, crop_first=False (resize to the GT size, then crop).
    """
    if crop is not None:
        top, bottom, left, right = crop
        gts = gts[:, top:-bottom, left:-right]
        masks = None if masks is None else masks[:, top:-bottom, left:-right]
    height, width = gts.shape[1:]
    infs = []
    for pred in preds:
        if crop is not None and crop_first:
            pred = pred[top:-bottom, left:-right]
        if pred.shape != (height, width):
            if crop is not None and not crop_first:
                pred = bilinear(pred, height + top + bottom, width + left + right)[top:-bottom, left:-right]
            else:
                pred = bilinear(pred, height, width)
        infs.append(pred)
    infs = np.stack(infs).astype(np.float64)
    valid = (gts > 1e-3) & (gts < MAX_DEPTH)
    if mask_in_fit:
        valid &= masks
    gt_disp = 1.0 / (gts[valid].astype(np.float64) + 1e-8)
    if clip_pred:
        infs = np.clip(infs, 1e-3, None)
    design = np.stack([infs[valid], np.ones(int(valid.sum()))], axis=1)
    scale, shift = np.linalg.lstsq(design, gt_disp, rcond=None)[0]
    depth = np.clip(1.0 / np.clip(scale * infs + shift, 1e-3, None), 1e-3, MAX_DEPTH)
    everywhere = np.ones((height, width), bool)
    total = 0.0
    for i in range(len(depth) - 1):
        forward = np.linalg.inv(poses[i + 1]) @ poses[i]
        backward = np.linalg.inv(forward)
        k_i, k_next = ks[i], ks[i] if k_rule == "vda" else ks[i + 1]
        mask_i = masks[i] if masks is not None and mask_in_tae else everywhere
        mask_next = masks[i + 1] if masks is not None and mask_in_tae else everywhere
        total += splat_error(depth[i], depth[i + 1], forward[:3, :3], forward[:3, 3], k_i, k_next, mask_next)
        total += splat_error(depth[i + 1], depth[i], backward[:3, :3], backward[:3, 3], k_next, k_i, mask_i)
    return 100 * total / (2 * (len(depth) - 1))


def intrinsics(focal: float, height: int, width: int) -> np.ndarray:
    return np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])


def camera_path(frames: int) -> np.ndarray:
    """Camera-to-world poses: sliding right and forwards while turning slowly about the vertical axis."""
    poses = np.tile(np.eye(4), (frames, 1, 1))
    for t in range(frames):
        angle = 0.02 * t
        poses[t, :3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
        poses[t, :3, 3] = [0.08 * t, 0.01 * t, 0.05 * t]
    return poses


def plane_depth(k: np.ndarray, pose: np.ndarray, height: int, width: int) -> np.ndarray:
    """Exact z-depth of the tilted wall 0.15 x + 0.1 y + z = 4 (world) seen by the camera."""
    normal, offset = np.array([0.15, 0.1, 1.0]), 4.0
    rows, cols = np.mgrid[0:height, 0:width]
    rays = np.stack([(cols - k[0, 2]) / k[0, 0], (rows - k[1, 2]) / k[1, 1], np.ones((height, width))], -1)
    along = (offset - normal @ pose[:3, 3]) / (rays @ pose[:3, :3].T @ normal)
    return along  # rays have unit z, so the distance along them is the z-depth


def noisy_disparity(depth: np.ndarray, seed: int, noise: float = 0.015) -> np.ndarray:
    """An affine-invariant prediction with per-pixel errors, so TAE is well above 0."""
    noise = np.random.default_rng(seed).normal(0, noise, depth.shape)
    return (0.7 / depth + 0.05 + noise).astype(np.float32)


def write_folder_scene(root: Path, depth, ks, poses, masks=None, name: str = "scene") -> None:
    scene = root / "gt" / name
    (scene / "depth").mkdir(parents=True)
    for t, frame in enumerate(depth):
        np.save(scene / "depth" / f"{t:03d}.npy", frame.astype(np.float32))
        if masks is not None:
            (scene / "mask").mkdir(exist_ok=True)
            Image.fromarray((masks[t] * 255).astype(np.uint8)).save(scene / "mask" / f"{t:03d}.png")
    np.save(scene / "intrinsics.npy", ks)
    np.save(scene / "poses.npy", poses)


def scored_tae(root: Path, pred: np.ndarray, *args: object) -> float:
    (root / "pred").mkdir(exist_ok=True)
    np.save(root / "pred" / "scene.npy", pred)
    out = root / "run.json"
    gt = ("--gt-folder", root / "gt", "--min-depth", 1e-3, "--max-depth", MAX_DEPTH)
    assert run_eval(*gt, "--predictions", root / "pred", "--json", out, "--overwrite", *args) == 0
    (record,) = json.loads(out.read_text())["sequences"]
    return record["tae"]


def folder_scene(frames: int = 4, size: tuple[int, int] = (18, 24), focals=None):
    height, width = size
    focals = focals or [22.0] * frames
    ks = np.stack([intrinsics(f, height, width) for f in focals])
    poses = camera_path(frames)
    depth = np.stack([plane_depth(k, pose, height, width) for k, pose in zip(ks, poses)])
    return depth, ks, poses


def test_mask_is_applied_in_the_target_frame_of_each_comparison_by_hand() -> None:
    # Static camera, frame 1 is 5.5 m on its right half: only pixels there differ. Frame 1's mask drops that half,
    # so the forward comparison (into frame 1) is 0; the backward one (into frame 0, all scored) is 0.5 / 5 on half
    # of the pixels. TAE = 100 * (0 + 0.05) / 2. (Source-frame masks would give 100 * (0.5 / 5.5 / 2) / 2.)
    depth = np.full((2, 6, 8), 5.0)
    depth[1, :, 4:] = 5.5
    mask = np.ones(depth.shape, bool)
    mask[1, :, 4:] = False
    k = intrinsics(10.0, 6, 8)
    poses = np.stack([np.eye(4), np.eye(4)])
    assert temporal_alignment_error(depth, k, poses, mask) == pytest.approx(2.5, rel=1e-12)
    assert temporal_alignment_error(depth, k, poses) == pytest.approx(100 * (0.5 / 5.5 / 2 + 0.05) / 2, rel=1e-12)


def test_mask_limits_the_tae_comparison_not_the_fit_as_vda(tmp_path: Path) -> None:
    depth, ks, poses = folder_scene()
    masks = np.random.default_rng(3).random(depth.shape) > 0.3  # ~30 % of the pixels masked, differently per frame
    pred = noisy_disparity(depth, seed=4)
    write_folder_scene(tmp_path, depth, ks, poses, masks)
    expected = vda_tae(list(pred), depth, ks, poses, masks)
    # The scene tells apart the mask in the fit (3 %), no mask in the comparison (0.14 %) and both (dvd's former rule).
    for variant in ({"mask_in_fit": True}, {"mask_in_tae": False}, {"mask_in_fit": True, "mask_in_tae": False}):
        assert abs(vda_tae(list(pred), depth, ks, poses, masks, **variant) / expected - 1) > 1e-3
    assert scored_tae(tmp_path, pred) == pytest.approx(expected, rel=1e-4)


def test_prediction_values_below_1e3_are_clipped_before_the_fit_as_vda(tmp_path: Path) -> None:
    depth, ks, poses = folder_scene()
    pred = noisy_disparity(depth, seed=5)
    far = depth > np.quantile(depth, 0.6)
    pred[far] = 0.0  # DVD saturates to exactly 0 far away
    pred[far & (np.arange(depth.shape[2]) % 3 == 0)] = -0.2  # and another tool may go below 0
    write_folder_scene(tmp_path, depth, ks, poses)
    expected = vda_tae(list(pred), depth, ks, poses)
    raw_fit = vda_tae(list(pred), depth, ks, poses, clip_pred=False)
    assert abs(raw_fit / expected - 1) > 0.01
    assert scored_tae(tmp_path, pred) == pytest.approx(expected, rel=1e-4)


def test_per_frame_intrinsics_source_target_by_default_and_vda_on_request(tmp_path: Path) -> None:
    depth, ks, poses = folder_scene(focals=[22.0, 24.0, 26.5, 29.0])  # the camera zooms in
    pred = noisy_disparity(depth, seed=6)
    write_folder_scene(tmp_path, depth, ks, poses)
    ours = vda_tae(list(pred), depth, ks, poses, k_rule="source-target")
    theirs = vda_tae(list(pred), depth, ks, poses, k_rule="vda")
    assert abs(ours / theirs - 1) > 0.01
    assert scored_tae(tmp_path, pred) == pytest.approx(ours, rel=1e-4)
    assert scored_tae(tmp_path, pred, "--tae-intrinsics", "vda") == pytest.approx(theirs, rel=1e-4)


def test_a_sequence_with_a_non_finite_pose_gets_no_tae_and_leaves_the_mean(tmp_path: Path) -> None:
    # VDA would score the pairs touching the bad pose as 0 error and keep them in its mean; we leave it out.
    depth, ks, poses = folder_scene()
    bad_poses = poses.copy()
    bad_poses[2, 0, 3] = np.inf
    pred = noisy_disparity(depth, seed=8)
    (tmp_path / "pred").mkdir()
    for name, scene_poses in [("good", poses), ("bad", bad_poses)]:
        write_folder_scene(tmp_path, depth, ks, scene_poses, name=name)
        np.save(tmp_path / "pred" / f"{name}.npy", pred)
    out = tmp_path / "run.json"
    gt = ("--gt-folder", tmp_path / "gt", "--min-depth", 1e-3, "--max-depth", MAX_DEPTH)
    assert run_eval(*gt, "--predictions", tmp_path / "pred", "--json", out) == 0
    result = json.loads(out.read_text())
    records = {r["sequence"]: r for r in result["sequences"]}
    assert "tae" not in records["bad"]
    assert "TAE not computed: some camera poses are not finite" in records["bad"]["notes"]
    assert records["good"]["tae"] == pytest.approx(vda_tae(list(pred), depth, ks, poses), rel=1e-4)
    assert result["mean"]["tae"] == records["good"]["tae"] and result["mean"]["tae_sequences"] == 1


def write_scannet_scene(root: Path, scene: str, depth: np.ndarray, k: np.ndarray, poses: np.ndarray) -> None:
    folder = root / scene
    for sub in ("color", "depth", "pose", "intrinsic"):
        (folder / sub).mkdir(parents=True)
    for t, frame in enumerate(depth):
        Image.fromarray(np.zeros(frame.shape + (3,), np.uint8)).save(folder / "color" / f"{t}.jpg")
        Image.fromarray(np.round(frame * 1000).astype(np.uint16)).save(folder / "depth" / f"{t}.png")
        np.savetxt(folder / "pose" / f"{t}.txt", poses[t])
    k4 = np.eye(4)
    k4[:3, :3] = k
    np.savetxt(folder / "intrinsic" / "intrinsic_depth.txt", k4)


@pytest.mark.parametrize("pred_size", [(60, 80), (61, 81)], ids=["twice_the_gt", "colour_size_like_968x1296"])
def test_scannet_tae_crops_a_larger_prediction_in_its_own_grid_then_resizes_as_vda(
    tmp_path: Path, pred_size: tuple[int, int]
) -> None:
    frames, (height, width) = 4, (30, 40)
    k = intrinsics(30.0, height, width)
    poses = camera_path(frames)
    depth = np.stack([plane_depth(k, pose, height, width) for pose in poses])
    depth = np.round(depth * 1000) / 1000  # what the uint16 millimetre PNGs hold
    write_scannet_scene(tmp_path / "scannet", "scene0707_00", depth, k, poses)
    # The prediction is rendered at its own resolution (intrinsics scaled with it), with pixel noise.
    big_k = k * [[pred_size[1] / width], [pred_size[0] / height], [1]]
    big_depth = np.stack([plane_depth(big_k, pose, *pred_size) for pose in poses])
    pred = noisy_disparity(big_depth, seed=7, noise=0.002)  # small: the geometry of the crop dominates TAE
    (tmp_path / "pred").mkdir()
    np.save(tmp_path / "pred" / "scene0707_00.npy", pred)
    split = tmp_path / "split.txt"
    split.write_text("scene0707_00\n")
    out = tmp_path / "run.json"
    args = ("--dataset", "scannet_tae", "--root", tmp_path / "scannet", "--split", split, "--start", 0)
    assert run_eval(*args, "--frames", frames, "--predictions", tmp_path / "pred", "--json", out) == 0
    (record,) = json.loads(out.read_text())["sequences"]
    ks = np.stack([k] * frames)
    expected = vda_tae(list(pred), depth, ks, poses, crop=SCANNET_CROP)
    resized_first = vda_tae(list(pred), depth, ks, poses, crop=SCANNET_CROP, crop_first=False)
    assert abs(resized_first / expected - 1) > 0.01
    assert record["tae"] == pytest.approx(expected, rel=1e-4)
    assert any("cropped in its own grid" in note for note in record["notes"])


def test_scannet_tae_refuses_a_prediction_of_another_aspect_ratio(tmp_path: Path) -> None:
    k = intrinsics(30.0, 30, 40)
    poses = camera_path(2)
    depth = np.stack([plane_depth(k, pose, 30, 40) for pose in poses])
    write_scannet_scene(tmp_path / "scannet", "scene0707_00", depth, k, poses)
    (tmp_path / "pred").mkdir()
    np.save(tmp_path / "pred" / "scene0707_00.npy", np.ones((2, 40, 40), np.float32))
    split = tmp_path / "split.txt"
    split.write_text("scene0707_00\n")
    args = ("--dataset", "scannet_tae", "--root", tmp_path / "scannet", "--split", split, "--start", 0, "--strict")
    with pytest.raises(Exception, match="within 2% of its aspect ratio"):
        run_eval(*args, "--frames", 2, "--predictions", tmp_path / "pred")
