"""The choices and defaults of dvd's options: the one home of each, imported by the code that implements them.

This module imports nothing heavy (no torch, numpy or av), so the command line can build its parsers from it and
`dvd --help` and argument errors answer at once; `tests/test_cli.py` checks that it stays so.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class StitchPreset:
    """How windows are scheduled and joined (dvd.engine.stitch implements them)."""

    schedule: str  # window schedule preset, see dvd.engine.windows
    scale_clip: tuple[float, float] | None  # chained presets: the range a window's fitted scale is clipped to
    joint: bool = False  # one least-squares problem over all seams (dvd.engine.joint_fit) instead of a chain


STITCH_PRESETS: dict[str, StitchPreset] = {
    "openworld": StitchPreset("openworld", (0.7, 1.5)),
    "benchmark": StitchPreset("benchmark", None),
    "global": StitchPreset("openworld", None, joint=True),
}
REMOVED_STITCH_PRESETS: dict[str, str] = {
    "anchored": "--stitch anchored was removed: on model outputs it did worse than openworld "
    "(benchmarks/RESULTS.md, stitching end to end); use --stitch global",
}
# --stitch global (dvd.engine.joint_fit): a window's scale is trusted to within this fraction of its own
# prediction's contrast, and a window is written once this many later windows have been fitted (its delay).
GLOBAL_PRIOR_SPREAD = 0.3
GLOBAL_LAG_WINDOWS = 2

# dvd.engine.video.VideoSettings: the official open-world sizes and windows; the stitching is ours (docs/predict.md,
# windows and stitching: `global` beat `openworld` on every test we could run; `openworld` is the official script's).
DEFAULT_MIN_HEIGHT = 480  # frames are scaled to cover height x width, sides rounded up to /16
DEFAULT_MIN_WIDTH = 640
DEFAULT_WINDOW = 81
DEFAULT_OVERLAP = 21
DEFAULT_STITCH = "global"
DEFAULT_BATCH_WINDOWS = 1

# dvd.engine.shots: hard cuts. "auto" runs PySceneDetect's ContentDetector on the frames as they arrive; None
# (the engine's default) means auto for video files and off for images, image folders and arrays.
CUT_MODES: tuple[str, ...] = ("auto", "off")
DEFAULT_CUT_THRESHOLD = 27.0  # ContentDetector's own default: mean HSV change (0-255) between consecutive frames
MIN_SHOT_FRAMES = 8  # a detected cut closer than this to the previous one is a flash or fast motion, not a cut

# dvd.jobs.outputs: where the 8/16-bit outputs (png16, mp4, sbs) take their disparity range from.
COLOUR_RANGES: tuple[str, ...] = ("video", "first-window")
DEFAULT_COLOUR_RANGE = "video"  # a second pass over the finished disparity.npy; first-window streams

# dvd.io: what `dvd predict` reads and writes.
DEFAULT_IMAGE_FPS = 24  # frame rate recorded for image folders and images
MIN_FRAME_RATE = Fraction(1, 1000)  # a frame every 1000 s; H.264/mp4 time bases cannot go much further either way
MAX_FRAME_RATE = Fraction(1000)
WRITER_FORMATS: tuple[str, ...] = ("npy", "png16", "exr", "mp4", "sbs")
# Written after the video is complete, from disparity.npy (dvd.metric): they need the whole-video fit or intrinsics.
POST_PASS_FORMATS: tuple[str, ...] = ("ply",)
DEFAULT_METRIC_KEYFRAMES = 16  # metric-model frames per shot (or per video) for the disparity -> metres fit
DEFAULT_PLY_STEP = 4  # every 4th pixel per row and column: 1080p -> ~130k points (~2 MB) per frame
DEFAULT_FORMATS: tuple[str, ...] = ("npy", "mp4")
COLORMAPS: tuple[str, ...] = ("Spectral_r", "inferno", "turbo", "gray")
DEFAULT_COLORMAP = "Spectral_r"

# dvd bench: random-weight model sizes (dvd.weights.presets.PRESETS). Its defaults run the tiny model in seconds
# on a CPU (a synthetic clip of two short windows); the full-size settings are flags (benchmarks/gpu.sh).
# `family:size` for every size of every backbone (Backbone.sizes); "tiny" and "1.3b" are Wan2.1's.
MODEL_PRESETS: tuple[str, ...] = (
    "tiny",
    "1.3b",
    "wan2.1:tiny",
    "wan2.1:1.3b",
    "wan2.1:14b",
    "wan2.2:tiny",
    "wan2.2:5b",
    "cogvideox:tiny",
    "cogvideox:5b",
    "ltx-video:tiny",
    "ltx-video:2b",
)
DEFAULT_BENCH_PRESET = "tiny"
DEFAULT_BENCH_HEIGHT = 96
DEFAULT_BENCH_WIDTH = 128
DEFAULT_BENCH_WINDOW = 17
DEFAULT_BENCH_OVERLAP = 4

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
# dvd.evaluation.temporal: which intrinsics TAE uses for the pair (i, i+1); the first is the default.
TAE_INTRINSICS: tuple[str, ...] = ("source-target", "vda")

# dvd app: the web page in front of `dvd predict`, and the limits that protect the machine that serves it.
DEFAULT_APP_HOST = "127.0.0.1"  # this machine only; --host 0.0.0.0 (or --share) opens it to others
DEFAULT_APP_PORT = 7860  # Gradio's usual port
DEFAULT_APP_MAX_UPLOAD_MB = 1024
DEFAULT_APP_MAX_SECONDS = 600  # of video per job, after --max-frames/--stride: 10 minutes at the source rate
DEFAULT_APP_KEEP_MINUTES = 60  # uploads and results are deleted this long after they were made, and at exit
