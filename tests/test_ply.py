"""dvd.io.ply: binary little-endian point clouds that plyfile reads back exactly; written atomically."""

from __future__ import annotations

import numpy as np
import pytest
from plyfile import PlyData

from dvd.io.ply import write_ply


def test_round_trip_through_plyfile(tmp_path):
    rng = np.random.default_rng(0)
    points = rng.normal(size=(500, 3)).astype(np.float32)
    colours = rng.integers(0, 256, (500, 3), dtype=np.uint8)
    path = tmp_path / "cloud.ply"
    write_ply(path, points, colours, ["units: metres", "frame 7"])
    ply = PlyData.read(str(path))
    assert ply.header.splitlines()[1] == "format binary_little_endian 1.0"
    assert ply.comments == ["units: metres", "frame 7"]
    vertices = ply["vertex"].data
    assert [name for name, _ in vertices.dtype.descr] == ["x", "y", "z", "red", "green", "blue"]
    np.testing.assert_array_equal(np.stack([vertices[a] for a in "xyz"], -1), points)
    np.testing.assert_array_equal(np.stack([vertices[c] for c in ("red", "green", "blue")], -1), colours)
    assert [p.name for p in tmp_path.iterdir()] == ["cloud.ply"]  # no temporary file left


def test_empty_cloud_and_bad_input(tmp_path):
    write_ply(tmp_path / "empty.ply", np.zeros((0, 3)), np.zeros((0, 3), np.uint8))
    assert len(PlyData.read(str(tmp_path / "empty.ply"))["vertex"].data) == 0
    with pytest.raises(ValueError, match="uint8 colours"):
        write_ply(tmp_path / "bad.ply", np.zeros((4, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="single lines"):
        write_ply(tmp_path / "bad.ply", np.zeros((1, 3)), np.zeros((1, 3), np.uint8), ["two\nlines"])
    assert not (tmp_path / "bad.ply").exists()
