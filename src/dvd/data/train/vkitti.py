"""Virtual KITTI 2, as images (KITTI-benchmark crop) and as clips (resized), like the reference recipe.

Layout (extract the `rgb` and `depth` archives into the same ROOT)::

    ROOT/Scene02/clone/frames/rgb/Camera_0/rgb_00000.jpg
    ROOT/Scene02/clone/frames/depth/Camera_0/depth_00000.png     (16-bit, centimetres; 65535 = sky)

Each (scene, condition, camera) folder is a sequence. The recipe uses scenes 02, 06, 18 and 20 (Scene01 is left
out), every condition found (clone, fog, morning, ...) and cameras 0 and 1. Depth = png / 100 metres; valid pixels
are 1e-5 < d < 80, and the target's quantiles use only those, so the sky (655.35 m) ends at 0.
- images (`VKittiImageDataset`): frames smaller than 352x1216 are scaled up, then cropped to the bottom 352 rows and
  the centred 1216 columns;
- clips (`VKittiVideoDataset`): 45 consecutive frames resized (not cropped) to 352x1216, bilinear without
  antialias for RGB and nearest for depth, with one quantile scope for the whole clip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dvd.data.raster import existing_dir, kb_crop, read_png16, read_rgb, unit_float
from dvd.data.train.base import ClipDataset, DepthDataset, Frames, keep_paired, resize_sample

RECIPE_SCENES = ("Scene02", "Scene06", "Scene18", "Scene20")
VKITTI_SIZE = (352, 1216)
DEPTH_UNITS_PER_METRE = 100.0
VALID_RANGE = (1e-5, 80.0)
LAYOUT = (
    "ROOT/<SceneNN>/<condition>/frames/rgb/Camera_<0|1>/rgb_NNNNN.jpg with depth in "
    "ROOT/<SceneNN>/<condition>/frames/depth/Camera_<0|1>/depth_NNNNN.png"
)


def vkitti_depth_path(rgb_path: Path) -> Path:
    camera_dir = rgb_path.parent
    frames_dir = camera_dir.parent.parent
    name = rgb_path.name.replace("rgb_", "depth_", 1).rsplit(".", 1)[0] + ".png"
    return frames_dir / "depth" / camera_dir.name / name


def vkitti_sequences(root: Path, scenes: tuple[str, ...]) -> list[list[Path]]:
    """Sorted RGB frames of every (scene, condition, camera) folder; frames without depth are left out (logged)."""
    sequences = []
    for scene in scenes:
        for camera_dir in sorted((root / scene).glob("*/frames/rgb/Camera_*")):
            frames = keep_paired("vkitti", sorted(camera_dir.glob("rgb_*.jpg")), vkitti_depth_path)
            if frames:
                sequences.append(frames)
    return sequences


def load_vkitti(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    rgb = unit_float(np.stack([read_rgb(p) for p in paths]))
    depth = np.stack([read_png16(vkitti_depth_path(p)) for p in paths]) / DEPTH_UNITS_PER_METRE
    return rgb, depth.astype(np.float32)


def cover(rgb: np.ndarray, depth: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Frames smaller than `size` scaled up (keeping their aspect) just enough to cover it, so the KITTI-benchmark
    crop always fits; larger frames are returned as they are."""
    height, width = rgb.shape[1:3]
    scale = max(size[0] / height, size[1] / width)
    if scale <= 1:
        return rgb, depth
    return resize_sample(rgb, depth, (int(np.ceil(height * scale)), int(np.ceil(width * scale))), antialias=False)


def vkitti_valid(depth: np.ndarray) -> np.ndarray:
    return (depth > VALID_RANGE[0]) & (depth < VALID_RANGE[1])


class VKittiImageDataset(DepthDataset):
    """Single frames (F=1), KITTI-benchmark cropped to `size` (352x1216 in the recipe)."""

    name = "vkitti_image"

    def __init__(
        self,
        root: str | Path,
        size: tuple[int, int] = VKITTI_SIZE,
        flip: bool = True,
        scenes: tuple[str, ...] = RECIPE_SCENES,
    ) -> None:
        super().__init__("image", flip)
        self.root = existing_dir(root, "Virtual KITTI 2")
        self.size = tuple(size)
        self.items = [frame for sequence in vkitti_sequences(self.root, tuple(scenes)) for frame in sequence]
        self.require_items(f"{LAYOUT} under {self.root} for scenes {', '.join(scenes)}")

    def load(self, item: Path) -> Frames:
        rgb, depth = (kb_crop(frames, self.size) for frames in cover(*load_vkitti([item]), self.size))
        return Frames(rgb=rgb, depth=depth, valid=vkitti_valid(depth))

    def describe(self, item: Path) -> str:
        return str(item)


class VKittiVideoDataset(ClipDataset):
    """Clips of `num_frames` consecutive frames (45 in the recipe), every start `stride` apart, resized to `size`."""

    name = "vkitti_video"

    def __init__(
        self,
        root: str | Path,
        num_frames: int = 45,
        size: tuple[int, int] = VKITTI_SIZE,
        flip: bool = True,
        scenes: tuple[str, ...] = RECIPE_SCENES,
        stride: int = 1,
    ) -> None:
        super().__init__("clip", flip, num_frames)
        self.root = existing_dir(root, "Virtual KITTI 2")
        self.size = tuple(size)
        self.set_sequences(vkitti_sequences(self.root, tuple(scenes)), stride)
        self.require_items(
            f"{LAYOUT} under {self.root} for scenes {', '.join(scenes)}, with at least {num_frames} frames per camera"
        )

    def load(self, item: tuple[int, int]) -> Frames:
        rgb, depth = load_vkitti(self.window(item))
        rgb, depth = resize_sample(rgb, depth, self.size, antialias=False)
        return Frames(rgb=rgb, depth=depth, valid=vkitti_valid(depth))
