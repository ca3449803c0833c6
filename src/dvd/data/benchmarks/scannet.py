"""ScanNet video protocols: depth accuracy (DVD paper) and TAE (Video Depth Anything).

Layout (the ScanNet SensReader export, one folder per scene)::

    ROOT/<scene>/color/<n>.jpg                      colour, 968x1296 (resized to the depth size, LANCZOS)
    ROOT/<scene>/depth/<n>.png                      uint16 millimetres (or <n>.npz with arr_0 in millimetres)
    ROOT/<scene>/intrinsic/intrinsic_depth.txt      4x4, of the depth camera        (TAE only)
    ROOT/<scene>/pose/<n>.txt                       4x4 camera-to-world             (TAE only)

Frames are those with both colour and depth, in numeric order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dvd.data.benchmarks.base import DatasetReader, Frame
from dvd.data.naming import natural_key
from dvd.data.raster import read_png_depth, read_rgb, require_file
from dvd.errors import DVDError

DEPTH_UNITS_PER_METRE = 1000.0


class ScanNet(DatasetReader):
    """ScanNet depth accuracy as the DVD paper: range (0.1, 10) m, no crop, default split ``scannetv1_test``
    (the 312 scenes of the official configs/scannetv1_test.txt). Use ``--split scannet_v2_test`` for the
    DepthCrafter / VDA scenes (scene0707_00 ... scene0806_00)."""

    name = "scannet"
    min_depth, max_depth = 0.1, 10.0
    default_split = "scannetv1_test"

    def _scene(self, sequence: str) -> Path:
        folder = self.root / sequence
        if not (folder / "color").is_dir() or not (folder / "depth").is_dir():
            raise DVDError(
                f"ScanNet scene {sequence}: expected {folder}/color/*.jpg and {folder}/depth/*.png: "
                "see the ScanNet layout in docs/evaluation.md"
            )
        return folder

    def frame_ids(self, sequence: str) -> list[str]:
        folder = self._scene(sequence)
        colour = {p.stem for p in (folder / "color").glob("*.jpg")}
        depth = {p.stem for p in (folder / "depth").iterdir() if p.suffix in (".png", ".npz")}
        common = sorted(colour & depth, key=natural_key)
        if not common:
            raise DVDError(f"ScanNet scene {sequence}: no frame has both color/<n>.jpg and depth/<n>.png")
        return common

    def _depth(self, folder: Path, frame_id: str) -> np.ndarray:
        png = folder / "depth" / f"{frame_id}.png"
        if png.is_file():
            return read_png_depth(png, DEPTH_UNITS_PER_METRE)
        with np.load(folder / "depth" / f"{frame_id}.npz") as archive:
            return archive["arr_0"].astype(np.float32) / np.float32(DEPTH_UNITS_PER_METRE)

    def read_frame(self, sequence: str, frame_id: str) -> Frame:
        folder = self._scene(sequence)
        depth = self._depth(folder, frame_id)
        colour = Image.fromarray(read_rgb(folder / "color" / f"{frame_id}.jpg"))
        rgb = np.asarray(colour.resize((depth.shape[1], depth.shape[0]), Image.Resampling.LANCZOS))
        return Frame(depth=depth, rgb=rgb)


class ScanNetTAE(ScanNet):
    """ScanNet TAE as Video Depth Anything: frames 10..179, range (1e-3, 10) m, default split ``scannet_tae``
    (20 pinned scenes). Predictions and GT are cropped by [8:-8, 11:-11] before scoring ("hard crop"); as in VDA a
    prediction of another size (VDA saves them at the 968x1296 colour size) is cropped by those pixel counts in its
    own grid and then resized to the cropped GT, and the intrinsics are *not* shifted for the crop (both reproduced
    deliberately for comparable numbers)."""

    name = "scannet_tae"
    min_depth, max_depth = 1e-3, 10.0
    default_split = "scannet_tae"
    eval_crop = (8, 8, 11, 11)
    crop_in_prediction_grid = True
    start, frames = 10, 170

    def read_frame(self, sequence: str, frame_id: str) -> Frame:
        frame = super().read_frame(sequence, frame_id)
        folder = self.root / sequence
        hint = "TAE needs the intrinsic/ and pose/ folders of the ScanNet export"
        intrinsics = np.loadtxt(require_file(folder / "intrinsic" / "intrinsic_depth.txt", hint))[:3, :3]
        pose = np.loadtxt(require_file(folder / "pose" / f"{frame_id}.txt", hint)).reshape(4, 4)
        frame.intrinsics, frame.pose = intrinsics, pose
        return frame
