"""KITTI: video protocol on the depth-annotated drives, and the single-image Eigen test split.

Both crop RGB and GT to the KITTI benchmark size (the bottom 352 rows, the centred 1216 columns; "KB crop") and
evaluate only inside the Eigen crop (rows 0.3324324-0.91351351, cols 0.0359477-0.96405229 of the cropped
frame). GT is the 16-bit PNG of the annotated depth divided by 256; 0 means no GT.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dvd.data.benchmarks.base import DatasetReader, Frame, ImageListReader
from dvd.data.raster import kb_crop, read_png_depth, read_rgb
from dvd.errors import DVDError

EIGEN_CROP = (0.3324324, 0.91351351, 0.0359477, 0.96405229)
DEPTH_UNITS_PER_METRE = 256.0


def eigen_mask(height: int, width: int) -> np.ndarray:
    """The Eigen evaluation crop as a boolean [H, W] mask."""
    mask = np.zeros((height, width), dtype=bool)
    top, bottom, left, right = EIGEN_CROP
    mask[int(top * height) : int(bottom * height), int(left * width) : int(right * width)] = True
    return mask


def _kitti_frame(rgb_path: Path, depth_path: Path) -> Frame:
    depth = kb_crop(read_png_depth(depth_path, DEPTH_UNITS_PER_METRE)[None])[0]
    return Frame(depth=depth, rgb=kb_crop(read_rgb(rgb_path)[None])[0], mask=eigen_mask(*depth.shape))


class KittiVideo(DatasetReader):
    """KITTI video protocol of the DVD paper: range (0.1, 80) m, KB crop, Eigen mask.

    Layout (KITTI raw + data_depth_annotated, as downloaded)::

        ROOT/rgb/<date>/<drive>/image_02/data/<frame>.png       e.g. rgb/2011_09_26/2011_09_26_drive_0002_sync/...
        ROOT/depth/{train,val}/<drive>/proj_depth/groundtruth/image_02/<frame>.png

    Frames are those with both RGB and GT (the annotation skips the first and last 5 of each drive), sorted.
    Default split ``kitti_val``: the 13 validation drives (the official DVD script used the train drives).
    """

    name = "kitti"
    min_depth, max_depth = 0.1, 80.0
    default_split = "kitti_val"

    def _folders(self, drive: str) -> tuple[Path, Path]:
        rgb = self.root / "rgb" / drive[:10] / drive / "image_02" / "data"
        depths = [
            self.root / "depth" / part / drive / "proj_depth" / "groundtruth" / "image_02" for part in ("val", "train")
        ]
        depth = next((folder for folder in depths if folder.is_dir()), None)
        if depth is None or not rgb.is_dir():
            raise DVDError(
                f"KITTI drive {drive}: expected {rgb} and {depths[0]} (or under depth/train): "
                "see the KITTI layout in docs/evaluation.md"
            )
        return rgb, depth

    def frame_ids(self, sequence: str) -> list[str]:
        rgb, depth = self._folders(sequence)
        common = {p.stem for p in rgb.glob("*.png")} & {p.stem for p in depth.glob("*.png")}
        if not common:
            raise DVDError(f"KITTI drive {sequence}: no frame has both {rgb}/*.png and {depth}/*.png")
        return sorted(common)

    def read_frame(self, sequence: str, frame_id: str) -> Frame:
        rgb, depth = self._folders(sequence)
        return _kitti_frame(rgb / f"{frame_id}.png", depth / f"{frame_id}.png")


class KittiEigen(ImageListReader):
    """KITTI Eigen test split, single images (Marigold layout): range (1e-5, 80) m, KB crop, Eigen mask.

    Layout (``kitti_eigen_split_test``)::

        ROOT/<date>/<drive>/image_02/data/<frame>.png
        ROOT/<drive>/proj_depth/groundtruth/image_02/<frame>.png

    Default split ``kitti_eigen_test``: the 652 test images that have GT.
    """

    name = "kitti_eigen"
    min_depth, max_depth = 1e-5, 80.0
    default_split = "kitti_eigen_test"

    def read_frame(self, sequence: str, frame_id: str) -> Frame:
        rgb, depth = self.paths(sequence)[:2]
        return _kitti_frame(rgb, depth)
