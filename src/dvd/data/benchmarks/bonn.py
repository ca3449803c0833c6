"""Bonn RGB-D Dynamic: range (1e-3, 10) m, native 480x640, no crop; depth PNG / 5000.

Layout (the official download, one folder per sequence)::

    ROOT/rgbd_bonn_<name>/rgb/<timestamp>.png
    ROOT/rgbd_bonn_<name>/depth/<timestamp>.png

Colour and depth are captured at different instants: each colour frame (in time order) is paired with the depth
frame nearest in time, and kept only when they are less than 0.02 s apart (the TUM/Bonn association rule).
Default split ``bonn`` (all 26 sequences); ``--split bonn_depthcrafter`` gives the 5 of DepthCrafter / VDA.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dvd.data.benchmarks.base import DatasetReader, Frame
from dvd.data.raster import read_png_depth, read_rgb
from dvd.errors import DVDError

MAX_TIME_DIFFERENCE = 0.02
DEPTH_UNITS_PER_METRE = 5000.0


def _timestamps(folder: Path) -> dict[float, str]:
    stamps = {}
    for path in folder.glob("*.png"):
        try:
            stamps[float(path.stem)] = path.name
        except ValueError:
            raise DVDError(
                f"{path}: Bonn file names must be timestamps in seconds, like 1548266469.08165.png"
            ) from None
    return stamps


def associate(rgb_times: list[float], depth_times: list[float], max_difference: float) -> list[tuple[float, float]]:
    """Pair each colour time with the nearest depth time; keep pairs closer than ``max_difference`` seconds."""
    depth_sorted = np.sort(np.asarray(depth_times, dtype=np.float64))
    pairs = []
    for t in sorted(rgb_times):
        index = int(np.searchsorted(depth_sorted, t))
        candidates = depth_sorted[max(index - 1, 0) : index + 1]
        nearest = float(candidates[np.argmin(np.abs(candidates - t))])
        if abs(nearest - t) < max_difference:
            pairs.append((t, nearest))
    return pairs


class Bonn(DatasetReader):
    name = "bonn"
    min_depth, max_depth = 1e-3, 10.0
    default_split = "bonn"

    def __init__(self, root: Path | None, split: str | None = None) -> None:
        super().__init__(root, split)
        self._pairings: dict[str, dict[str, tuple[Path, Path]]] = {}

    def _pairs(self, sequence: str) -> dict[str, tuple[Path, Path]]:
        if sequence not in self._pairings:
            self._pairings[sequence] = self._associate(sequence)
        return self._pairings[sequence]

    def _associate(self, sequence: str) -> dict[str, tuple[Path, Path]]:
        rgb_dir, depth_dir = self.root / sequence / "rgb", self.root / sequence / "depth"
        if not rgb_dir.is_dir() or not depth_dir.is_dir():
            raise DVDError(
                f"Bonn sequence {sequence}: expected {rgb_dir} and {depth_dir}: "
                "see the Bonn layout in docs/evaluation.md"
            )
        rgb, depth = _timestamps(rgb_dir), _timestamps(depth_dir)
        if not rgb or not depth:
            raise DVDError(f"Bonn sequence {sequence}: no <timestamp>.png under {rgb_dir} or {depth_dir}")
        pairs = associate(list(rgb), list(depth), MAX_TIME_DIFFERENCE)
        return {Path(rgb[t]).stem: (rgb_dir / rgb[t], depth_dir / depth[d]) for t, d in pairs}

    def frame_ids(self, sequence: str) -> list[str]:
        ids = list(self._pairs(sequence))
        if not ids:
            raise DVDError(
                f"Bonn sequence {sequence}: no colour frame has a depth frame within {MAX_TIME_DIFFERENCE} s"
            )
        return ids

    def read_frame(self, sequence: str, frame_id: str) -> Frame:
        rgb, depth = self._pairs(sequence)[frame_id]
        return Frame(depth=read_png_depth(depth, DEPTH_UNITS_PER_METRE), rgb=read_rgb(rgb))
