"""Coloured point clouds as binary little-endian PLY: x y z float32, red green blue uchar per vertex.

The layout every viewer reads (MeshLab, CloudCompare, Open3D, Blender, plyfile). Files are written under a
temporary name and renamed into place (`dvd.io.atomic`), so a reader never sees half a cloud.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dvd.io.atomic import atomic_file

VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])


def write_ply(path: Path, points: np.ndarray, colours: np.ndarray, comments: Sequence[str] = ()) -> None:
    """Write `points` [N, 3] (float, converted to float32) with `colours` [N, 3] uint8 to `path`; each comment is
    one `comment` header line (no line breaks)."""
    points = np.asarray(points)
    colours = np.asarray(colours)
    if points.ndim != 2 or points.shape[1] != 3 or colours.shape != points.shape or colours.dtype != np.uint8:
        raise ValueError(f"expected points [N, 3] and uint8 colours [N, 3], got {points.shape} and {colours.shape}")
    if any("\n" in comment or "\r" in comment for comment in comments):
        raise ValueError("PLY comments must be single lines")
    vertices = np.empty(len(points), VERTEX)
    for axis, name in enumerate("xyz"):
        vertices[name] = points[:, axis]
    for channel, name in enumerate(("red", "green", "blue")):
        vertices[name] = colours[:, channel]
    header = ["ply", "format binary_little_endian 1.0", *(f"comment {comment}" for comment in comments)]
    header += [f"element vertex {len(points)}"]
    header += [f"property float {name}" for name in "xyz"] + [
        f"property uchar {name}" for name in ("red", "green", "blue")
    ]
    header += ["end_header"]
    with atomic_file(Path(path)) as tmp, open(tmp, "wb") as file:
        file.write(("\n".join(header) + "\n").encode("ascii", errors="replace"))  # PLY headers are ASCII
        file.write(vertices.tobytes())
