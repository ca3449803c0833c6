"""MPI Sintel, final pass: range (0.1, 70) m; as the official DVD evaluation, RGB is resized bilinearly and depth
by (legacy, floor-index) nearest neighbour from 436x1024 to 480x640, and the whole scene is one sequence.

Layout (the training set of MPI-Sintel-complete plus MPI-Sintel-depth-training)::

    ROOT/final/<scene>/frame_0001.png
    ROOT/depth/<scene>/frame_0001.dpt

ROOT is the ``training`` folder. Default split ``sintel``: the 23 training scenes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dvd.data.benchmarks.base import DatasetReader, Frame
from dvd.data.raster import read_rgb, require_file, resize_frames, resize_nearest, unit_float
from dvd.errors import DVDError

EVAL_SIZE = (480, 640)
SINTEL_TAG = 202021.25


def read_sintel_depth(path: Path) -> np.ndarray:
    """MPI Sintel ``.dpt``: float32 tag 202021.25, int32 width, int32 height, then row-major float32 depth."""
    with open(require_file(path), "rb") as handle:
        tag = np.fromfile(handle, dtype="<f4", count=1)
        size = np.fromfile(handle, dtype="<i4", count=2)
        if tag.size != 1 or tag[0] != SINTEL_TAG or size.size != 2:
            raise DVDError(f"{path} is not a Sintel .dpt depth file (wrong tag or truncated header)")
        width, height = int(size[0]), int(size[1])
        depth = np.fromfile(handle, dtype="<f4", count=width * height)
    if depth.size != width * height:
        raise DVDError(f"{path} is truncated: expected {width}x{height} depth values, found {depth.size}")
    return depth.reshape(height, width)


class Sintel(DatasetReader):
    name = "sintel"
    min_depth, max_depth = 0.1, 70.0
    default_split = "sintel"

    def _folders(self, sequence: str) -> tuple[Path, Path]:
        final, depth = self.root / "final" / sequence, self.root / "depth" / sequence
        if not final.is_dir() or not depth.is_dir():
            hint = " (ROOT is the training folder)" if (self.root / "training").is_dir() else ""
            raise DVDError(
                f"Sintel scene {sequence}: expected {final} and {depth}{hint}: "
                "see the Sintel layout in docs/evaluation.md"
            )
        return final, depth

    def frame_ids(self, sequence: str) -> list[str]:
        final, depth = self._folders(sequence)
        common = sorted({p.stem for p in final.glob("*.png")} & {p.stem for p in depth.glob("*.dpt")})
        if not common:
            raise DVDError(f"Sintel scene {sequence}: no frame has both {final}/<f>.png and {depth}/<f>.dpt")
        return common

    def read_frame(self, sequence: str, frame_id: str) -> Frame:
        final, depth = self._folders(sequence)
        rgb = resize_frames(unit_float(read_rgb(final / f"{frame_id}.png")[None]), EVAL_SIZE)[0]
        gt = resize_nearest(read_sintel_depth(depth / f"{frame_id}.dpt"), EVAL_SIZE, exact=False)
        return Frame(depth=gt, rgb=rgb)
