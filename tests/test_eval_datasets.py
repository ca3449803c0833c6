"""Each benchmark reader on a small fixture written here in its documented layout, and the pinned splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dvd.data.benchmarks import READERS, SkipSequence, open_dataset
from dvd.data.benchmarks.splits import read_split
from dvd.errors import DVDError


def write_png16(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint16)).save(path)


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb.astype(np.uint8)).save(path)


def split_file(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "split.txt"
    path.write_text("# test split\n" + "\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("kitti_val", 13),
        ("kitti_eigen_test", 652),
        ("nyuv2_test", 654),
        ("diode_val", 771),
        ("eth3d", 454),
        ("scannetv1_test", 312),
        ("scannet_v2_test", 100),
        ("scannet_tae", 20),
        ("bonn", 26),
        ("bonn_depthcrafter", 5),
        ("sintel", 23),
        ("synthetic_test", 4),
    ],
)
def test_pinned_splits_are_sorted_and_complete(name: str, count: int) -> None:
    entries = read_split(name)
    assert len(entries) == count
    assert entries == sorted(entries)
    assert len({tuple(e) for e in entries}) == count


def test_every_reader_has_a_pinned_default_split() -> None:
    for reader in READERS.values():
        assert read_split(reader.default_split)


DRIVE = "2011_09_26_drive_0001_sync"


def write_kitti_frame(rgb_path: Path, depth_path: Path, metres: float) -> None:
    rgb = np.zeros((375, 1242, 3), np.uint8)
    rgb[375 - 352, (1242 - 1216) // 2] = (255, 0, 0)  # top-left pixel of the benchmark crop
    write_rgb(rgb_path, rgb)
    write_png16(depth_path, np.full((375, 1242), 256 * metres))


def test_kitti_video_reader(tmp_path: Path) -> None:
    rgb_dir = tmp_path / "rgb" / "2011_09_26" / DRIVE / "image_02" / "data"
    gt_dir = tmp_path / "depth" / "val" / DRIVE / "proj_depth" / "groundtruth" / "image_02"
    for k, metres in [(5, 10.0), (6, 12.5)]:
        write_kitti_frame(rgb_dir / f"{k:010d}.png", gt_dir / f"{k:010d}.png", metres)
    write_rgb(rgb_dir / f"{4:010d}.png", np.zeros((375, 1242, 3)))  # RGB without GT: not evaluated
    reader = open_dataset("kitti", tmp_path, split_file(tmp_path, DRIVE))
    assert (reader.min_depth, reader.max_depth) == (0.1, 80.0)
    assert reader.frame_ids(DRIVE) == ["0000000005", "0000000006"]
    seq = reader.load(DRIVE, 0, 1, None)
    assert seq.depth.shape == (2, 352, 1216)
    np.testing.assert_allclose(seq.depth[:, 0, 0], [10.0, 12.5])
    assert tuple(seq.rgb[0, 0, 0]) == (255, 0, 0)
    mask = seq.mask[0]
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (117, 321, 43, 1172)  # Eigen crop of 352x1216
    with pytest.raises(SkipSequence):
        reader.load(DRIVE, 0, 1, 3)


def test_kitti_eigen_image_reader(tmp_path: Path) -> None:
    rgb = f"2011_09_26/{DRIVE}/image_02/data/0000000069.png"
    depth = f"{DRIVE}/proj_depth/groundtruth/image_02/0000000069.png"
    write_kitti_frame(tmp_path / rgb, tmp_path / depth, 20.0)
    reader = open_dataset("kitti_eigen", tmp_path, split_file(tmp_path, f"{rgb} {depth}"))
    name = reader.sequence_names()[0]
    assert name == f"2011_09_26/{DRIVE}/image_02/data/0000000069"
    seq = reader.load(name, 0, 1, None)
    assert seq.depth.shape == (1, 352, 1216) and seq.depth[0, 200, 600] == 20.0
    assert reader.kind == "image" and reader.min_depth == 1e-5


def write_scannet(root: Path, scene: str, frames: int) -> None:
    for k in range(frames):
        write_rgb(root / scene / "color" / f"{k}.jpg", np.full((60, 80, 3), 20 * k))
        write_png16(root / scene / "depth" / f"{k}.png", np.full((30, 40), 1000 + 100 * k))
        pose = np.eye(4)
        pose[0, 3] = 0.1 * k
        (root / scene / "pose").mkdir(parents=True, exist_ok=True)
        np.savetxt(root / scene / "pose" / f"{k}.txt", pose)
    (root / scene / "intrinsic").mkdir(parents=True, exist_ok=True)
    np.savetxt(root / scene / "intrinsic" / "intrinsic_depth.txt", np.diag([30.0, 30.0, 1.0, 1.0]))


def test_scannet_readers(tmp_path: Path) -> None:
    write_scannet(tmp_path, "scene0707_00", 12)
    reader = open_dataset("scannet", tmp_path, split_file(tmp_path, "scene0707_00"))
    ids = reader.frame_ids("scene0707_00")
    assert ids == [str(k) for k in range(12)]  # numeric order: 10 after 9
    seq = reader.load("scene0707_00", 0, 1, None)
    assert seq.rgb.shape == (12, 30, 40, 3)  # colour resized to the depth size
    np.testing.assert_allclose(seq.depth[:, 0, 0], 1.0 + 0.1 * np.arange(12), rtol=1e-6)
    tae = open_dataset("scannet_tae", tmp_path, split_file(tmp_path, "scene0707_00"))
    assert (tae.start, tae.frames, tae.eval_crop) == (10, 170, (8, 8, 11, 11))
    seq = tae.load("scene0707_00", 10, 1, None)
    assert seq.frame_ids == ["10", "11"] and seq.positions == [10, 11] and seq.source_frames == 12
    np.testing.assert_allclose(seq.poses[:, 0, 3], [1.0, 1.1])
    np.testing.assert_allclose(seq.intrinsics[0], np.diag([30.0, 30.0, 1.0]))


def test_bonn_pairs_colour_and_depth_within_20_ms(tmp_path: Path) -> None:
    seq_dir = tmp_path / "rgbd_bonn_balloon"
    for stamp in ["1.000000", "1.033000", "1.066000"]:
        write_rgb(seq_dir / "rgb" / f"{stamp}.png", np.zeros((4, 6, 3)))
    for stamp, value in [("1.010000", 5000), ("1.045000", 10000), ("1.200000", 15000)]:
        write_png16(seq_dir / "depth" / f"{stamp}.png", np.full((4, 6), value))
    reader = open_dataset("bonn", tmp_path, split_file(tmp_path, "rgbd_bonn_balloon"))
    # 1.000 -> 1.010 (10 ms), 1.033 -> 1.045 (12 ms), 1.066 -> 1.045 (21 ms: dropped)
    assert reader.frame_ids("rgbd_bonn_balloon") == ["1.000000", "1.033000"]
    seq = reader.load("rgbd_bonn_balloon", 0, 1, None)
    np.testing.assert_allclose(seq.depth[:, 0, 0], [1.0, 2.0])


def write_dpt(path: Path, depth: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        np.array([202021.25], "<f4").tofile(handle)
        np.array([depth.shape[1], depth.shape[0]], "<i4").tofile(handle)
        depth.astype("<f4").tofile(handle)


def test_sintel_reader_resizes_as_the_official_evaluation(tmp_path: Path) -> None:
    depth = np.tile(np.arange(24, dtype=np.float32) + 1, (12, 1))  # value = column + 1
    write_dpt(tmp_path / "depth" / "alley_1" / "frame_0001.dpt", depth)
    write_rgb(tmp_path / "final" / "alley_1" / "frame_0001.png", np.full((12, 24, 3), 255))
    reader = open_dataset("sintel", tmp_path, split_file(tmp_path, "alley_1"))
    seq = reader.load("alley_1", 0, 1, None)
    assert seq.depth.shape == (1, 480, 640) and seq.rgb.shape == (1, 480, 640, 3)
    # Legacy nearest: output column j reads input column floor(j * 24 / 640); column 53 reads 1 (nearest-exact
    # would read floor(53.5 * 24 / 640) = 2).
    assert seq.depth[0, 0, 53] == 2.0 and seq.depth[0, 0, 54] == 3.0 and seq.depth[0, 0, 639] == 24.0
    np.testing.assert_allclose(seq.rgb, 1.0, rtol=1e-6)
    with pytest.raises(DVDError, match="training"):
        (tmp_path / "training").mkdir()
        open_dataset("sintel", tmp_path, split_file(tmp_path, "cave_2")).frame_ids("cave_2")


def test_sintel_rejects_a_file_that_is_not_dpt(tmp_path: Path) -> None:
    (tmp_path / "depth" / "alley_1").mkdir(parents=True)
    (tmp_path / "depth" / "alley_1" / "frame_0001.dpt").write_bytes(b"\0" * 64)
    write_rgb(tmp_path / "final" / "alley_1" / "frame_0001.png", np.zeros((8, 16, 3)))
    reader = open_dataset("sintel", tmp_path, split_file(tmp_path, "alley_1"))
    with pytest.raises(DVDError, match="not a Sintel"):
        reader.load("alley_1", 0, 1, None)


def test_nyuv2_reader(tmp_path: Path) -> None:
    write_rgb(tmp_path / "test/kitchen_0004/rgb_0001.png", np.zeros((480, 640, 3)))
    write_png16(tmp_path / "test/kitchen_0004/depth_0001.png", np.full((480, 640), 2500))
    reader = open_dataset(
        "nyuv2", tmp_path, split_file(tmp_path, "test/kitchen_0004/rgb_0001.png test/kitchen_0004/depth_0001.png")
    )
    seq = reader.load("test/kitchen_0004/rgb_0001", 0, 1, None)
    assert seq.depth[0, 0, 0] == 2.5
    assert seq.mask[0].sum() == (471 - 45) * (601 - 41) and seq.mask[0, 45, 41] and not seq.mask[0, 44, 41]


def test_diode_reader_takes_validity_from_the_mask_file(tmp_path: Path) -> None:
    base = "indoors/scene_00019/scan_00183/00019_00183_indoors_000_010"
    write_rgb(tmp_path / f"{base}.png", np.zeros((6, 8, 3)))
    np.save(tmp_path / f"{base}_depth.npy", np.full((6, 8, 1), 0.3, np.float32))  # below 0.6 m, still scored
    mask = np.zeros((6, 8), np.float32)
    mask[:3] = 1
    np.save(tmp_path / f"{base}_depth_mask.npy", mask)
    reader = open_dataset("diode", tmp_path, split_file(tmp_path, f"{base}.png {base}_depth.npy {base}_depth_mask.npy"))
    assert reader.range_in_mask is False
    seq = reader.load(base, 0, 1, None)
    assert seq.depth.shape == (1, 6, 8) and seq.mask[0].sum() == 24


def test_eth3d_reader(tmp_path: Path) -> None:
    depth = np.full((4032, 6048), 7.0, "<f4")
    depth[:95] = np.inf
    rgb_rel = "rgb/office/images/dslr_images/DSC_0219.JPG"
    depth_rel = "depth/office_dslr_depth/office/ground_truth_depth/dslr_images/DSC_0219.JPG"
    (tmp_path / depth_rel).parent.mkdir(parents=True)
    depth.tofile(tmp_path / depth_rel)
    write_rgb(tmp_path / rgb_rel.replace(".JPG", ".png"), np.zeros((8, 12, 3)))
    (tmp_path / rgb_rel.replace(".JPG", ".png")).rename(tmp_path / rgb_rel)
    reader = open_dataset("eth3d", tmp_path, split_file(tmp_path, f"{rgb_rel} {depth_rel}"))
    seq = reader.load(reader.sequence_names()[0], 0, 1, None)
    assert seq.depth.shape == (1, 480, 720) and seq.rgb.shape == (1, 480, 720, 3)
    assert seq.depth[0, 0, 0] == 0.0 and seq.depth[0, -1, -1] == 7.0  # inf -> 0 (no GT)
    # nearest-exact: row 10 reads floor(10.5 * 4032 / 480) = 88 (inf), row 11 reads 96 (legacy nearest: 92).
    assert seq.depth[0, 10, 0] == 0.0 and seq.depth[0, 11, 0] == 7.0


def test_image_reader_names_the_missing_file(tmp_path: Path) -> None:
    reader = open_dataset("nyuv2", tmp_path, split_file(tmp_path, "test/a/rgb_1.png test/a/depth_1.png"))
    with pytest.raises(DVDError, match="rgb_1.png"):
        reader.frame_ids("test/a/rgb_1")


def test_synthetic_reader_renders_exact_depth_with_cameras() -> None:
    reader = open_dataset("synthetic", None)
    seq = reader.load("test_0001", 2, 3, 3)
    assert seq.frame_ids == ["0002", "0005", "0008"] and seq.depth.shape == (3, 96, 128)
    assert np.isfinite(seq.depth).all() and seq.depth.min() > 0 and seq.depth.max() < reader.max_depth
    assert seq.intrinsics.shape == (3, 3, 3) and seq.poses.shape == (3, 4, 4)
    # Pixel-index convention: the principal point of a 128-wide image is at column 63.5.
    assert seq.intrinsics[0, 0, 2] == pytest.approx(63.5) and seq.intrinsics[0, 1, 2] == pytest.approx(47.5)


def test_unknown_dataset_and_bad_roots(tmp_path: Path) -> None:
    with pytest.raises(DVDError, match="unknown data set"):
        open_dataset("kitty", tmp_path)
    with pytest.raises(DVDError, match="needs --root"):
        open_dataset("kitti", None)
    with pytest.raises(DVDError, match="does not exist"):
        open_dataset("bonn", tmp_path / "nowhere")
    with pytest.raises(DVDError, match="no split file"):
        open_dataset("bonn", tmp_path, "no_such_split")
    with pytest.raises(DVDError, match="range"):
        open_dataset("bonn", tmp_path, min_depth=5.0, max_depth=1.0)
