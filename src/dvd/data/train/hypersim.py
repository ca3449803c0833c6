"""Hypersim images (tone-mapped jpg + distance hdf5), as the reference recipe reads them.

Layout (Apple's download, unchanged; ROOT may be the whole set or a split folder holding scene folders)::

    ROOT/ai_001_001/images/scene_cam_00_final_preview/frame.0000.tonemap.jpg
    ROOT/ai_001_001/images/scene_cam_00_geometry_hdf5/frame.0000.depth_meters.hdf5   (dataset "dataset")

Every `*.tonemap.jpg` under ROOT (searched recursively) is a sample; frames without a depth file are left out with
a warning. Hypersim stores the distance along the ray, so it is turned into planar depth with the focal length
886.81 px of its 1024-wide grid: depth = distance / ||(x, y, f)|| * f at pixel centres. RGB is resized to 480x640
with antialiased bilinear, depth with nearest. The target's quantiles use all pixels of the image; samples with any
NaN/inf are skipped.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from dvd.data.raster import existing_dir, read_rgb, unit_float
from dvd.data.train.base import DepthDataset, Frames, keep_paired, resize_sample

HYPERSIM_FOCAL = 886.81
HYPERSIM_WIDTH = 1024
LAYOUT = (
    "ROOT/<scene>/images/scene_cam_XX_final_preview/frame.NNNN.tonemap.jpg with depth in "
    "ROOT/<scene>/images/scene_cam_XX_geometry_hdf5/frame.NNNN.depth_meters.hdf5"
)


def hypersim_depth_path(rgb_path: Path) -> Path:
    """The distance file that belongs to a tone-mapped frame."""
    folder = rgb_path.parent.name.replace("_final_preview", "_geometry_hdf5")
    return rgb_path.parent.parent / folder / rgb_path.name.replace(".tonemap.jpg", ".depth_meters.hdf5")


def planar_from_distance(distance: np.ndarray) -> np.ndarray:
    """Planar depth [H,W] from Hypersim's ray distance; the focal scales with the width for resized renders."""
    height, width = distance.shape
    focal = HYPERSIM_FOCAL * width / HYPERSIM_WIDTH
    x = np.linspace(-width / 2 + 0.5, width / 2 - 0.5, width)
    y = np.linspace(-height / 2 + 0.5, height / 2 - 0.5, height)
    norm = np.sqrt(x[None, :] ** 2 + y[:, None] ** 2 + focal**2)
    return (distance / norm * focal).astype(np.float32)


def read_hypersim_distance(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as file:
        return np.asarray(file["dataset"], dtype=np.float32)


class HypersimDataset(DepthDataset):
    """Hypersim frames as single images (F=1) at `size` (480x640 in the recipe)."""

    name = "hypersim"

    def __init__(self, root: str | Path, size: tuple[int, int] = (480, 640), flip: bool = True) -> None:
        super().__init__("image", flip)
        self.root = existing_dir(root, "Hypersim")
        self.size = tuple(size)
        frames = sorted(p for p in self.root.rglob("*.tonemap.jpg") if p.parent.name.endswith("_final_preview"))
        self.items = keep_paired(self.name, frames, hypersim_depth_path)
        self.require_items(f"{LAYOUT} under {self.root}")

    def load(self, item: Path) -> Frames:
        rgb = unit_float(read_rgb(item))[None]
        depth = planar_from_distance(read_hypersim_distance(hypersim_depth_path(item)))[None]
        rgb, depth = resize_sample(rgb, depth, self.size, antialias=True)
        return Frames(rgb=rgb, depth=depth, valid=np.ones(depth.shape, bool))

    def describe(self, item: Path) -> str:
        return str(item)
