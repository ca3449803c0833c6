"""The choices and defaults of dvd's options: the one home of each, imported by the code that implements them.

This module imports nothing heavy (no torch, numpy or av), so the command line can build its parsers from it and
`dvd --help` and argument errors answer at once; `tests/test_cli.py` checks that it stays so.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class StitchPreset:
    """How windows are scheduled and joined (dvd.inference.stitch implements them)."""

    schedule: str  # window schedule preset, see dvd.inference.windows
    scale_clip: tuple[float, float] | None
    anchored: bool
    symmetric_fit: bool  # symmetric (geometric-mean) fit instead of least squares, see dvd.inference.scale_shift


STITCH_PRESETS: dict[str, StitchPreset] = {
    "openworld": StitchPreset("openworld", (0.7, 1.5), anchored=False, symmetric_fit=False),
    "benchmark": StitchPreset("benchmark", None, anchored=False, symmetric_fit=False),
    "anchored": StitchPreset("openworld", None, anchored=True, symmetric_fit=True),
}

# dvd.inference.video.VideoSettings: the official open-world settings.
DEFAULT_MIN_HEIGHT = 480  # frames are scaled to cover height x width, sides rounded up to /16
DEFAULT_MIN_WIDTH = 640
DEFAULT_WINDOW = 81
DEFAULT_OVERLAP = 21
DEFAULT_STITCH = "openworld"
DEFAULT_ANCHOR_FRAMES = 5  # anchored preset only
DEFAULT_BATCH_WINDOWS = 1

# dvd.io: what `dvd predict` reads and writes.
DEFAULT_IMAGE_FPS = 24  # frame rate recorded for image folders and images
MIN_FRAME_RATE = Fraction(1, 1000)  # a frame every 1000 s; H.264/mp4 time bases cannot go much further either way
MAX_FRAME_RATE = Fraction(1000)
WRITER_FORMATS: tuple[str, ...] = ("npy", "png16", "exr", "mp4", "sbs")
DEFAULT_FORMATS: tuple[str, ...] = ("npy", "mp4")
COLORMAPS: tuple[str, ...] = ("Spectral_r", "inferno", "turbo", "gray")
DEFAULT_COLORMAP = "Spectral_r"

# dvd bench: random-weight model sizes (dvd.weights.presets.PRESETS). Its defaults run the tiny model in seconds
# on a CPU (a synthetic clip of two short windows); the full-size settings are flags (benchmarks/gpu.sh).
MODEL_PRESETS: tuple[str, ...] = ("tiny", "1.3b")
DEFAULT_BENCH_PRESET = "tiny"
DEFAULT_BENCH_HEIGHT = 96
DEFAULT_BENCH_WIDTH = 128
DEFAULT_BENCH_WINDOW = 17
DEFAULT_BENCH_OVERLAP = 4
DEFAULT_BENCH_FRAMES = 2 * DEFAULT_BENCH_WINDOW - DEFAULT_BENCH_OVERLAP

# dvd.data.benchmarks: the benchmark readers by name (their `name` attributes), then the generic folder layout.
DATASET_NAMES: tuple[str, ...] = (
    "kitti",
    "kitti_eigen",
    "scannet",
    "scannet_tae",
    "bonn",
    "sintel",
    "nyuv2",
    "diode",
    "eth3d",
    "synthetic",
    "folder",
)
