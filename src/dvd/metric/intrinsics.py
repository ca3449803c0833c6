"""The pinhole camera of an output: square pixels, principal point at the image centre, OpenCV axes.

Pixel (row i, column j) has its centre at image coordinates (j + 0.5, i + 0.5), so cx = W/2 and cy = H/2 (the
convention of `dvd.data.procedural`); a point at planar depth z sits at x = (j + 0.5 - cx) z / f,
y = (i + 0.5 - cy) z / f, x right, y down, z forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dvd.errors import DVDError


@dataclass(frozen=True)
class Intrinsics:
    """Focal length `focal` (pixels) of a `height` x `width` image; `origin` says where it came from."""

    focal: float
    height: int
    width: int
    origin: str

    @classmethod
    def from_fov(cls, hfov_deg: float, height: int, width: int, origin: str) -> Intrinsics:
        return cls((width / 2) / math.tan(math.radians(hfov_deg) / 2), height, width, origin)

    @property
    def hfov_deg(self) -> float:
        return math.degrees(2 * math.atan(self.width / 2 / self.focal))

    def matrix(self) -> np.ndarray:
        return np.array([[self.focal, 0, self.width / 2], [0, self.focal, self.height / 2], [0, 0, 1]], np.float64)

    def as_meta(self) -> dict:
        return {
            "fx": self.focal,
            "fy": self.focal,
            "cx": self.width / 2,
            "cy": self.height / 2,
            "width": self.width,
            "height": self.height,
            "hfov_deg": self.hfov_deg,
            "source": self.origin,
            "convention": "pixel (row i, col j) centre at (j + 0.5, i + 0.5); OpenCV axes: x right, y down, z forward",
        }

    def unproject(self, depth: np.ndarray, step: int = 1) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Points [N, 3] float32 of the pixels on every `step`-th row and column with a finite depth > 0, and the
        (rows, cols) they came from."""
        rows, cols = np.mgrid[0 : depth.shape[0] : step, 0 : depth.shape[1] : step]
        z = depth[rows, cols]
        keep = np.isfinite(z) & (z > 0)
        rows, cols, z = rows[keep], cols[keep], z[keep].astype(np.float64)
        x = (cols + 0.5 - self.width / 2) * z / self.focal
        y = (rows + 0.5 - self.height / 2) * z / self.focal
        return np.stack([x, y, z], axis=-1).astype(np.float32), (rows, cols)


def estimated_intrinsics(hfov_deg: np.ndarray, height: int, width: int) -> Intrinsics:
    """The model's estimate over the keyframes: their median horizontal field of view."""
    finite = hfov_deg[np.isfinite(hfov_deg)]
    median = float(np.median(finite)) if finite.size else math.nan
    if not 0 < median < 180:
        raise DVDError(
            f"the metric model's field-of-view estimate ({median:.3g} degrees, median over the keyframes) is not a "
            "usable angle: give the camera's --fov DEG or --focal PX"
        )
    return Intrinsics.from_fov(median, height, width, "metric model estimate (median over keyframes)")
