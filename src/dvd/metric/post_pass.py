"""The metric and 3D pass of `predict_to_folder`: after disparity.npy is complete, before meta.json is written.

Why a post-pass: the frame count and the shots are known only once the video has streamed through, and the
keyframes are spread over each shot; the disparity is read back frame by frame from disparity.npy (a memory map)
and the keyframes are decoded again from the source (one more decode, no model), so memory stays bounded by a
batch of keyframes and the fit pixels (at most `FIT_PIXELS` per keyframe), whatever the video's length. It writes
into the staging folder, so its outputs appear together with the rest or not at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from dvd import __version__
from dvd.data.raster import resize_pixels, unit_float
from dvd.errors import DVDError
from dvd.io.ply import write_ply
from dvd.io.writers import NpyFrames
from dvd.metric.align import ShotFit, fit_grid, fit_pixels, fit_shot, keyframe_indices, shot_ranges
from dvd.metric.intrinsics import Intrinsics, estimated_intrinsics
from dvd.metric.models import BATCH, TransformersMetricModel, check_metric_model, focal_corrected
from dvd.metric.settings import MetricModel, MetricPrediction, MetricSettings, frame_selected

if TYPE_CHECKING:
    from dvd.io.readers import Source

DEPTH_FILE = "depth_m.npy"
PLY_FOLDER = "points_ply"
RANGE_PERCENTILES = (1, 99)  # the disparity range --depth-range maps, without a metric model
METRIC_OUTPUTS = (DEPTH_FILE, PLY_FOLDER)  # what the pass writes beside the disparity
# What the pass adds to meta.json: its top-level keys, and its entries of "outputs".
METRIC_META_KEYS = ("metric", "intrinsics", "depth_units", "depth_range_mapping", "metric_seconds")
METRIC_OUTPUT_KEYS = ("depth_m", "ply")


class FrameSelection(Protocol):
    """Which of a source's frames the run wrote: all the pass needs of a run's output settings
    (`dvd.jobs.outputs.OutputSettings` is one), so that the metric layer does not import the jobs layer above it."""

    @property
    def max_frames(self) -> int | None: ...

    @property
    def stride(self) -> int: ...


ToDepth = Callable[[int, np.ndarray], np.ndarray]  # (frame index, disparity) -> depth


def check_metric(settings: MetricSettings, inputs: Iterable[tuple[Source, FrameSelection]]) -> None:
    """Check the metric flags against the inputs (each with the frames its run reads), loading nothing, so that a
    bad request fails before any model loads."""
    settings.check()
    if not settings.active:
        return
    for source, output in inputs:
        if source.num_frames_exact:
            settings.check_frame_count(source.frame_count(output.max_frames, output.stride), str(source.path))
    if not isinstance(settings.model, str):
        return
    _, estimates_fov = check_metric_model(settings.model)
    if settings.ply and settings.fov is None and settings.focal is None and not estimates_fov:
        raise DVDError(
            f"--save ply needs the camera's focal length, and --metric {settings.model} does not estimate it: give "
            "--fov DEG or --focal PX (or use Depth Pro, which estimates it)"
        )


def load_metric(settings: MetricSettings) -> MetricSettings | None:
    """The checked settings with their metric model loaded, once per process that runs the pass, before the DVD
    model loads; None when no metric or 3D output is asked for."""
    if not settings.active:
        return None
    if not isinstance(settings.model, str):
        return settings
    return replace(settings, model=TransformersMetricModel(settings.model, settings.device))


def without_metric(meta: dict) -> dict:
    """`meta` as it was before the pass added to it (to run the pass again on a finished output)."""
    outputs = {name: entry for name, entry in meta.get("outputs", {}).items() if name not in METRIC_OUTPUT_KEYS}
    return {**{key: value for key, value in meta.items() if key not in METRIC_META_KEYS}, "outputs": outputs}


def metric_post_pass(
    settings: MetricSettings | None, staging: Path, source: Source, output: FrameSelection, meta: dict
) -> dict:
    """depth_m.npy and the point clouds of a complete staging folder; returns `meta` with the fit, intrinsics and
    outputs added (unchanged when `settings` is None or asks for nothing)."""
    if settings is None or not settings.active:
        return meta
    settings.check()  # again for Python callers, who skip check_metric
    started = time.perf_counter()
    # Frames are read one at a time (as the colour pass reads them): a memory map would add the whole file to the RSS.
    with NpyFrames(staging / "disparity.npy") as disparity:
        return _metric_outputs(settings, staging, source, output, meta, disparity, started)


def _metric_outputs(
    settings: MetricSettings,
    staging: Path,
    source: Source,
    output: FrameSelection,
    meta: dict,
    disparity: NpyFrames,
    started: float,
) -> dict:
    frames, height, width = disparity.shape
    meta = {**meta, "outputs": dict(meta["outputs"])}
    intrinsics = _given_intrinsics(settings, source.size, (height, width))
    fits: list[ShotFit] | None = None
    if settings.model is not None:
        model = settings.model
        if isinstance(model, str):  # the Python API may name a model; `dvd predict` loads it once in load_metric
            model = TransformersMetricModel(model, settings.device)
        fits, estimate = _fit_shots(model, disparity, source, output, settings, meta, intrinsics)
        intrinsics = intrinsics or estimate
        meta["metric"] = {
            "model": str(getattr(model, "name", type(model).__name__)),
            "fit": "1 / depth_m = scale * disparity + shift, one (scale, shift) per shot: least squares in inverse "
            "depth over the keyframes (each weighing the same), iteratively trimmed",
            "keyframes_per_shot": settings.keyframes,
            "depth_range": list(settings.depth_range) if settings.depth_range else None,
            "shots": [fit.as_meta() for fit in fits],
        }
        meta["outputs"]["depth_m"] = {
            "file": DEPTH_FILE,
            "dtype": "float32",
            "shape": [frames, height, width],
            "units": "metres, planar z-depth; 0 where the aligned inverse depth is <= 0 (sky, beyond the fit)",
        }
    if intrinsics is not None:
        meta["intrinsics"] = intrinsics.as_meta()
    if settings.ply and intrinsics is None:
        raise DVDError(
            f"--save ply of {source.path} needs the camera's focal length and the metric model gave none: give "
            "--fov DEG or --focal PX"
        )
    to_depth = _depth_mapping(settings, fits, disparity, meta)
    written = _write_depth_and_points(settings, staging, source, output, disparity, fits, to_depth, intrinsics)
    if settings.ply:
        meta["outputs"]["ply"] = {
            "folder": PLY_FOLDER,
            "frames": written,
            "step": settings.ply_step,
            "units": meta["depth_units"],
            "format": "binary little-endian PLY: x y z float32, red green blue uchar; OpenCV camera axes",
        }
    meta["metric_seconds"] = round(time.perf_counter() - started, 3)
    return meta


def _given_intrinsics(
    settings: MetricSettings, source_size: tuple[int, int], size: tuple[int, int]
) -> Intrinsics | None:
    height, width = size
    if settings.fov is not None:
        return Intrinsics.from_fov(settings.fov, height, width, f"--fov {settings.fov}")
    if settings.focal is not None:  # given in source pixels; the outputs may be at the model size
        return Intrinsics(settings.focal * width / source_size[1], height, width, f"--focal {settings.focal}")
    return None


def _output_frames(source: Source, output: FrameSelection, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """The source's frames again, at the outputs' size (float32 [H, W, 3] in [0, 1]), resized as the engine
    resizes them for the model, so that at the model size both models see the same pixels."""
    for frame in source.frames(output.max_frames, output.stride):
        yield unit_float(resize_pixels(frame, size))


def _fit_shots(
    model: MetricModel, disparity: NpyFrames, source: Source, output: FrameSelection, settings: MetricSettings, meta: dict,
    given: Intrinsics | None,
) -> tuple[list[ShotFit], Intrinsics | None]:  # fmt: skip
    """One pass over the source: the metric model on each shot's keyframes, in batches; each shot is fitted as soon
    as its last keyframe is in and its pixels are dropped, so memory holds one shot's fit pixels at most."""
    frames, height, width = disparity.shape
    shots = shot_ranges(meta, frames)
    keyframes = [keyframe_indices(start, end, settings.keyframes) for start, end in shots]
    wanted = {index for indices in keyframes for index in indices}
    grid = (slice(None, None, fit_grid(height, width)),) * 2
    pixels: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    fovs: list[np.ndarray] = []
    fits: list[ShotFit] = []
    batch: list[tuple[int, np.ndarray]] = []

    def run_batch() -> None:
        prediction = _as_prediction(model.predict(np.stack([rgb for _, rgb in batch])), len(batch), (height, width))
        depth = focal_corrected(prediction, given.hfov_deg) if given is not None else prediction.depth
        if prediction.hfov_deg is not None:
            fovs.append(prediction.hfov_deg)
        for (index, _), metres in zip(batch, depth):
            pixels[index] = fit_pixels(disparity[index][grid], metres[grid], settings.depth_range)
        fit_ready(batch[-1][0])
        batch.clear()

    def fit_ready(processed: int) -> None:
        while len(fits) < len(shots) and keyframes[len(fits)][-1] <= processed:
            (start, end), indices = shots[len(fits)], keyframes[len(fits)]
            shot_pixels = [pixels.pop(index) for index in indices if index in pixels]
            fits.append(fit_shot(start, end, indices, shot_pixels, str(source.path)))

    for index, rgb in enumerate(_output_frames(source, output, (height, width))):
        if index >= frames:
            break
        if index in wanted:
            batch.append((index, rgb))
            if len(batch) == BATCH:
                run_batch()
    if batch:
        run_batch()
    fit_ready(frames)  # shots whose keyframes could not all be decoded again
    estimate = estimated_intrinsics(np.concatenate(fovs), height, width) if fovs and given is None else None
    return fits, estimate


def _as_prediction(result: np.ndarray | MetricPrediction, count: int, size: tuple[int, int]) -> MetricPrediction:
    prediction = result if isinstance(result, MetricPrediction) else MetricPrediction(np.asarray(result))
    depth = np.asarray(prediction.depth, dtype=np.float32)
    if depth.shape != (count, *size):
        raise DVDError(
            f"the metric model returned depth of shape {tuple(depth.shape)} for {count} frames of {size[0]}x{size[1]}: "
            f"its predict(frames) must return metres [N, H, W] at the frames' size ({(count, *size)})"
        )
    fov = None if prediction.hfov_deg is None else np.asarray(prediction.hfov_deg, dtype=np.float64).reshape(count)
    return MetricPrediction(depth, fov)


def _depth_mapping(
    settings: MetricSettings, fits: list[ShotFit] | None, disparity: NpyFrames, meta: dict
) -> ToDepth | None:
    """frame index, disparity -> depth (metres, or the --depth-range mapping); records its units in `meta`."""
    if fits is not None:
        meta["depth_units"] = f"metres (aligned to the metric model {meta['metric']['model']})"
        by_frame = np.zeros(len(disparity), np.int64)
        for number, fit in enumerate(fits):
            by_frame[fit.start : fit.end] = number
        return lambda index, frame: fits[by_frame[index]].depth(frame)
    if settings.depth_range is None:
        return None
    near, far = settings.depth_range
    frames, height, width = disparity.shape
    step = fit_grid(height, width)
    sample = np.concatenate(
        [np.asarray(disparity[i][::step, ::step]).ravel() for i in keyframe_indices(0, frames, settings.keyframes)]
    )
    lo, hi = (float(v) for v in np.percentile(sample[np.isfinite(sample)], RANGE_PERCENTILES))
    if not hi > lo:
        raise DVDError(
            f"--depth-range cannot map this disparity to depth: it is constant ({lo:.4g}) over the video; drop "
            "--save ply for this input"
        )
    meta["depth_units"] = (
        f"NOT metric: depth from --depth-range {near:g} {far:g}, disparity percentiles {RANGE_PERCENTILES} "
        f"({lo:.6g}, {hi:.6g}) mapped linearly in inverse depth to 1/{far:g} .. 1/{near:g}"
    )
    meta["depth_range_mapping"] = {"near": near, "far": far, "disparity_lo": lo, "disparity_hi": hi}

    def mapped(_: int, frame: np.ndarray) -> np.ndarray:
        unit = np.clip((frame.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)
        return (1.0 / (1.0 / far + unit * (1.0 / near - 1.0 / far))).astype(np.float32)

    return mapped


def _write_depth_and_points(
    settings: MetricSettings,
    staging: Path,
    source: Source,
    output: FrameSelection,
    disparity: NpyFrames,
    fits: list[ShotFit] | None,
    to_depth: ToDepth | None,
    intrinsics: Intrinsics | None,
) -> int:
    """depth_m.npy (with a metric fit) and the selected frames' point clouds, in one pass; returns the clouds
    written."""
    frames, height, width = disparity.shape
    metres = (
        np.lib.format.open_memmap(staging / DEPTH_FILE, mode="w+", dtype="<f4", shape=(frames, height, width))
        if fits is not None
        else None
    )
    rgb = _output_frames(source, output, (height, width)) if settings.ply else None
    folder = staging / PLY_FOLDER
    written = 0
    try:
        for index in range(frames):
            depth = to_depth(index, np.asarray(disparity[index])) if to_depth is not None else None
            if metres is not None:
                metres[index] = depth
            if rgb is None:
                continue
            colour = next(rgb, None)
            if colour is None or not frame_selected(index, settings.ply_frames):
                continue
            if settings.depth_range is not None:
                near, far = settings.depth_range
                depth = np.where((depth >= near) & (depth <= far), depth, 0.0)
            points, (rows, cols) = intrinsics.unproject(depth, settings.ply_step)
            colours = np.rint(np.clip(colour[rows, cols], 0, 1) * 255).astype(np.uint8)
            folder.mkdir(exist_ok=True)
            write_ply(folder / f"{index:06d}.ply", points, colours, _ply_comments(index, intrinsics, settings))
            written += 1
    finally:
        if metres is not None:
            metres.flush()
            del metres
    return written


def _ply_comments(index: int, intrinsics: Intrinsics, settings: MetricSettings) -> list[str]:
    if settings.model is not None:
        units = "units: metres (DVD disparity aligned to a metric model)"
    else:
        near, far = settings.depth_range
        units = f"units: NOT metric; depth from --depth-range {near:g} {far:g} (disparity mapped to that range)"
    return [
        f"dvd {__version__} frame {index}",
        units,
        (
            f"camera: pinhole fx=fy={intrinsics.focal:.6g} cx={intrinsics.width / 2:g} cy={intrinsics.height / 2:g} "
            f"({intrinsics.width}x{intrinsics.height}); OpenCV axes x right, y down, z forward"
        ),
    ]
