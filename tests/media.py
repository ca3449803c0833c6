"""Media for tests: videos made on the spot with PyAV, and the real videos of ../shared when present."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest


def write_test_video(path: Path, frames: int = 30, size: tuple[int, int] = (90, 160), fps: int = 24) -> Path:
    """A small H.264 clip of a drifting colour pattern, made with PyAV (the suite ships no media files)."""
    height, width = size
    y, x = np.mgrid[0:height, 0:width] / np.float32(max(size))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "18"})
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        for index in range(frames):
            phase = 0.2 * index
            rgb = np.stack([np.sin(6 * x + phase), np.cos(4 * y - phase), np.sin(5 * (x + y) + phase)], axis=-1)
            picture = av.VideoFrame.from_ndarray(((rgb + 1) * 127.5).astype(np.uint8), format="rgb24")
            container.mux(stream.encode(picture))
        container.mux(stream.encode())
    return path


def shared_video(name: str) -> Path:
    """A real video from ../shared/data/videos; the test skips, saying why, in a clone without that folder."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (a clone without ../shared): this test needs the real video")
    return path
