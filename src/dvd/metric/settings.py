"""The metric and 3D flags of `dvd predict` and their typed settings; no heavy imports (`dvd --help` stays instant).

A metric model is anything with ``predict(frames) -> metres``: `frames` float32 [N, H, W, 3] in [0, 1], the result
float32 [N, H, W] metres at the frames' size, or a `MetricPrediction` that also carries the horizontal field of
view each depth map was computed for (Depth Pro estimates it). `--metric NAME_OR_PATH` loads Depth Pro or Depth
Anything V2 metric through `transformers` (`dvd.metric.models`); the Python API also takes such an object.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from dvd.errors import DVDError
from dvd.options import DEFAULT_METRIC_KEYFRAMES, DEFAULT_PLY_STEP, POST_PASS_FORMATS

if TYPE_CHECKING:
    import numpy as np

FrameSlice = tuple[int, int | None, int]  # start, stop (exclusive; None: to the end), step


@dataclass(frozen=True)
class MetricPrediction:
    """Metric depth of N frames: `depth` float32 [N, H, W] metres; `hfov_deg` [N] the horizontal field of view
    each map assumes (None when the model does not say). A model whose depth scales with its focal-length estimate
    (Depth Pro) reports it, so that a focal length the user knows can correct the depth."""

    depth: np.ndarray
    hfov_deg: np.ndarray | None = None


@runtime_checkable
class MetricModel(Protocol):
    def predict(self, frames: np.ndarray) -> np.ndarray | MetricPrediction: ...


@dataclass(frozen=True)
class MetricSettings:
    """What `--metric`, `--metric-keyframes`, `--fov`, `--focal`, `--depth-range`, `--save ply`, `--ply-step` and
    `--ply-frames` ask for. `model` is a Hub id, a local folder or a `MetricModel` object (None: no alignment).

    `fov` is the horizontal field of view in degrees, `focal` the focal length in pixels of the source frames;
    `depth_range` (metres) bounds the metric depths the fit trusts and the points written, or, without a metric
    model, maps the disparity to depth (nearest disparity -> near, farthest -> far). `ply_frames` None is every
    frame. `device` runs the metric model (None: the DVD model's default device).
    """

    model: str | MetricModel | None = None
    keyframes: int = DEFAULT_METRIC_KEYFRAMES
    fov: float | None = None
    focal: float | None = None
    depth_range: tuple[float, float] | None = None
    ply: bool = False
    ply_step: int = DEFAULT_PLY_STEP
    ply_frames: tuple[FrameSlice, ...] | None = None
    device: str | None = None

    @property
    def active(self) -> bool:
        """Whether anything is computed after disparity.npy: a metric fit or point clouds."""
        return self.model is not None or self.ply

    def check(self) -> None:
        """The flag combinations that cannot work, before any model loads (one line each, naming the fix)."""
        if self.keyframes < 1:
            raise DVDError(f"--metric-keyframes must be >= 1, got {self.keyframes}")
        if self.fov is not None and self.focal is not None:
            raise DVDError("--fov and --focal both set the focal length: give one of them")
        if self.fov is not None and not 0 < self.fov < 180:
            raise DVDError(f"--fov is the horizontal field of view in degrees, between 0 and 180; got {self.fov}")
        if self.focal is not None and not (math.isfinite(self.focal) and self.focal > 0):
            raise DVDError(f"--focal is the focal length in pixels of the input frames, > 0; got {self.focal}")
        if self.depth_range is not None:
            near, far = self.depth_range
            if not (math.isfinite(near) and math.isfinite(far) and 0 < near < far):
                raise DVDError(f"--depth-range NEAR FAR needs 0 < NEAR < FAR (metres); got {near} {far}")
        if self.ply_step < 1:
            raise DVDError(f"--ply-step must be >= 1, got {self.ply_step}")
        if self.ply and self.model is None and self.depth_range is None:
            raise DVDError(
                "--save ply needs depth, but disparity has no unit: add --metric MODEL (metres), or --depth-range "
                "NEAR FAR to map the disparity to that depth range"
            )
        if self.ply and self.model is None and self.fov is None and self.focal is None:
            raise DVDError(
                "--save ply needs the camera's focal length: give --fov DEG or --focal PX, or use --metric with "
                "a model that estimates it (Depth Pro)"
            )
        if not self.ply and self.ply_frames is not None:
            raise DVDError("--ply-frames picks the frames of --save ply: add ply to --save, or drop --ply-frames")

    def check_frame_count(self, frames: int, name: str) -> None:
        """--ply-frames indices beyond an input's frame count are typos: refuse them before the model runs."""
        for start, stop, step in self.ply_frames or ():
            if start >= frames:
                raise DVDError(
                    f"--ply-frames starts at frame {start}, but {name} has {frames} frames (0 to {frames - 1}) "
                    "after --stride/--max-frames: pick frames in that range"
                )


def register_arguments(parser: argparse.ArgumentParser) -> None:
    """The "metric depth and 3D" flags of `dvd predict` (`--save ply` itself is one of --save's formats)."""
    group = parser.add_argument_group(
        "metric depth and 3D",
        # Line breaks by hand: `dvd predict` formats its help raw.
        "--metric adds depth_m.npy (float32 metres [T,H,W]; 0 where there is no depth, such as the sky)\n"
        "and the fit and the intrinsics to meta.json; --save ply adds points_ply/<frame>.ply (binary\n"
        "little-endian: x y z float32 + red green blue uchar; OpenCV axes: x right, y down, z forward)",
    )
    group.add_argument(
        "--metric",
        default=None,
        metavar="MODEL",
        help="align the disparity to metres with a metric image model run on keyframes: a Hub id or local folder "
        "of Depth Pro (apple/DepthPro-hf) or Depth Anything V2 metric; one robust scale and shift in disparity "
        "space per shot. The weights are your download, under their own licences (docs/metric.md)",
    )
    group.add_argument(
        "--metric-keyframes",
        type=int,
        default=DEFAULT_METRIC_KEYFRAMES,
        metavar="K",
        help=f"frames per shot the metric model sees, spread evenly (default {DEFAULT_METRIC_KEYFRAMES})",
    )
    group.add_argument(
        "--fov", type=float, default=None, metavar="DEG", help="horizontal field of view of the camera, degrees"
    )
    group.add_argument(
        "--focal",
        type=float,
        default=None,
        metavar="PX",
        help="focal length in pixels of the input frames (default: Depth Pro's estimate, median over keyframes)",
    )
    group.add_argument(
        "--depth-range",
        type=float,
        nargs=2,
        default=None,
        metavar=("NEAR", "FAR"),
        help="metres. With --metric: the metric depths the fit trusts and the points kept. Without: maps the "
        "disparity (its 1st-99th percentiles) to depth NEAR..FAR for --save ply (not metric)",
    )
    group.add_argument(
        "--ply-step",
        type=int,
        default=DEFAULT_PLY_STEP,
        metavar="N",
        help=f"--save ply: every N-th pixel per row and column (default {DEFAULT_PLY_STEP})",
    )
    group.add_argument(
        "--ply-frames",
        default=None,
        metavar="LIST",
        help="--save ply: the frames written, as indices and Python-style slices: 0,10,20:40,::25 (default: all)",
    )


def settings_from_args(args: argparse.Namespace, formats: list[str]) -> MetricSettings:
    """The settings of the flags above; `formats` is the parsed --save list."""
    return MetricSettings(
        model=args.metric,
        keyframes=args.metric_keyframes,
        fov=args.fov,
        focal=args.focal,
        depth_range=tuple(args.depth_range) if args.depth_range else None,
        ply=any(name in POST_PASS_FORMATS for name in formats),
        ply_step=args.ply_step,
        ply_frames=parse_frames(args.ply_frames) if args.ply_frames is not None else None,
        device=args.device,
    )


def parse_frames(text: str) -> tuple[FrameSlice, ...]:
    """The --ply-frames list as slices: "0,10,20:40,::25" (an index N is the slice N:N+1)."""
    slices = []
    for item in (part.strip() for part in text.split(",")):
        try:
            numbers = [int(value) if value.strip() else None for value in item.split(":")]
        except ValueError:
            numbers = []
        zero_step = len(numbers) == 3 and numbers[2] == 0
        if not 1 <= len(numbers) <= 3 or any(n is not None and n < 0 for n in numbers) or zero_step:
            raise DVDError(
                f"--ply-frames: {item!r} is not a frame index or slice: use indices >= 0 and start:stop:step "
                "slices, comma-separated, such as 0,10,20:40,::25"
            )
        if len(numbers) == 1:
            if numbers[0] is None:
                raise DVDError("--ply-frames has an empty item: remove the extra comma")
            slices.append((numbers[0], numbers[0] + 1, 1))
        else:
            start, stop, step = (numbers + [None])[:3]
            slices.append((start or 0, stop, step or 1))
    return tuple(slices)


def frame_selected(index: int, slices: tuple[FrameSlice, ...] | None) -> bool:
    """Whether frame `index` is in the --ply-frames selection (None: every frame)."""
    if slices is None:
        return True
    return any(
        index >= start and (stop is None or index < stop) and (index - start) % step == 0
        for start, stop, step in slices
    )
