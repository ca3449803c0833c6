"""Single-image benchmarks in the Marigold layout: NYUv2 (Eigen test), DIODE (val) and ETH3D.

Each line of the split file names files relative to ROOT; every image is scored on its own (per-image
alignment). The model sees the image at the resolution given here (the official DVD image evaluation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dvd.data.benchmarks.base import Frame, ImageListReader
from dvd.data.raster import read_npy, read_npy_depth, read_png_depth, read_rgb, require_file, resize_nearest
from dvd.errors import DVDError

NYU_EIGEN_CROP = (45, 471, 41, 601)
ETH3D_RAW_SIZE = (4032, 6048)
ETH3D_EVAL_SIZE = (480, 720)


def read_raw_float_depth(path: Path, height: int, width: int) -> np.ndarray:
    """Headerless little-endian float32 depth of a known size (ETH3D); inf becomes 0 (invalid)."""
    depth = np.fromfile(require_file(path), dtype="<f4")
    if depth.size != height * width:
        raise DVDError(f"{path} holds {depth.size} floats, expected {height}x{width}: not an ETH3D depth file")
    depth = depth.reshape(height, width).copy()
    depth[np.isinf(depth)] = 0.0
    return depth


class NYUv2(ImageListReader):
    """NYUv2 labelled test set (654 images, 480x640): depth PNG in millimetres, range (1e-3, 10) m, evaluated
    inside the Eigen crop [45:471, 41:601].

    Layout: ``ROOT/test/<scene>/rgb_<n>.png`` and ``ROOT/test/<scene>/depth_<n>.png``.
    """

    name = "nyuv2"
    min_depth, max_depth = 1e-3, 10.0
    default_split = "nyuv2_test"

    def read_frame(self, sequence: str, frame_id: str) -> Frame:
        rgb, depth = self.paths(sequence)[:2]
        gt = read_png_depth(depth, 1000.0)
        mask = np.zeros(gt.shape, dtype=bool)
        top, bottom, left, right = NYU_EIGEN_CROP
        mask[top:bottom, left:right] = True
        return Frame(depth=gt, rgb=read_rgb(rgb), mask=mask)


class Diode(ImageListReader):
    """DIODE validation set, indoor and outdoor (771 images, 768x1024): depth ``.npy`` in metres and a
    validity ``.npy`` mask. As the official evaluation, the mask alone decides which pixels count; the range
    (0.6, 350) m only clips the prediction.

    Layout: ``ROOT/{indoors,outdoor}/scene_<s>/scan_<k>/<name>.png``, ``<name>_depth.npy``, ``<name>_depth_mask.npy``.
    """

    name = "diode"
    min_depth, max_depth = 0.6, 350.0
    range_in_mask = False
    default_split = "diode_val"

    def read_frame(self, sequence: str, frame_id: str) -> Frame:
        rgb, depth, mask = self.paths(sequence)[:3]
        valid = read_npy(mask).astype(bool)
        gt = read_npy_depth(depth).reshape(valid.shape)  # stored as [H, W, 1]
        return Frame(depth=gt, rgb=read_rgb(rgb), mask=valid)


class ETH3D(ImageListReader):
    """ETH3D high-res multi-view DSLR images (454): depth is headerless float32 at 4032x6048 (inf = no GT),
    range (1e-5, inf). As the official DVD evaluation, RGB and depth are resized by nearest-exact to 480x720.

    Layout: ``ROOT/rgb/<scene>/images/dslr_images/<name>.JPG`` and
    ``ROOT/depth/<scene>_dslr_depth/<scene>/ground_truth_depth/dslr_images/<name>.JPG`` (the depth file keeps
    the JPG name).
    """

    name = "eth3d"
    min_depth, max_depth = 1e-5, float("inf")
    default_split = "eth3d"

    def read_frame(self, sequence: str, frame_id: str) -> Frame:
        rgb, depth = self.paths(sequence)[:2]
        gt = read_raw_float_depth(depth, *ETH3D_RAW_SIZE)
        return Frame(
            depth=resize_nearest(gt, ETH3D_EVAL_SIZE, exact=True),
            rgb=resize_nearest(read_rgb(rgb), ETH3D_EVAL_SIZE, exact=True, channels_last=True),
        )
