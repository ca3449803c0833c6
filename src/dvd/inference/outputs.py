"""One input through the engine into an output folder: disparity.npy, meta.json and the chosen extra formats.

`dvd predict` calls `predict_to_folder` for each input; so can any other front end (a web app, a script). The
folder is written under a temporary name and renamed only when complete, so a failure leaves nothing behind
under the final name.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dvd import __version__
from dvd.data.raster import resize_frames
from dvd.errors import DVDError
from dvd.inference.pipeline import DVDPipeline
from dvd.inference.video import VideoEngine, VideoSettings, resize_back
from dvd.io.atomic import atomic_directory
from dvd.io.colormaps import DEFAULT_COLORMAP
from dvd.io.readers import Source
from dvd.io.writers import DEFAULT_FORMATS, DisparityRange, open_writers

RANGED_FORMATS = {"png16", "mp4", "sbs"}  # 8/16-bit outputs that need a DisparityRange


@dataclass(frozen=True)
class OutputSettings:
    """Which frames are read and what is written: the `dvd predict` flags of the same names."""

    formats: tuple[str, ...] = DEFAULT_FORMATS  # npy first, always
    colormap: str = DEFAULT_COLORMAP
    keep_model_size: bool = False
    max_frames: int | None = None
    stride: int = 1


def predict_to_folder(
    pipe: DVDPipeline,
    source: Source,
    target: Path,
    video: VideoSettings,
    output: OutputSettings,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write every output of `source` into `target` (atomically); returns the number of frames written.

    `progress` is called with the number of frames written so far, after each frame.
    """
    with atomic_directory(target) as staging:
        started = time.perf_counter()
        count, writers_meta = _write_outputs(pipe, source, staging, video, output, progress)
        meta = _describe(pipe, source, video, output, count, writers_meta, time.perf_counter() - started)
        (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return count


def _write_outputs(
    pipe: DVDPipeline,
    source: Source,
    directory: Path,
    video: VideoSettings,
    output: OutputSettings,
    progress: Callable[[int], None] | None,
) -> tuple[int, dict]:
    engine = VideoEngine(pipe.predict_windows, video)
    disparity = engine.model_frames(source.frames(output.max_frames, output.stride), source.size)
    out_size = video.model_size(source.size) if output.keep_model_size else source.size
    # The 8/16-bit range is fixed from the first window before anything is written; those frames wait at model
    # size, which bounds the extra memory to one window whatever the source resolution.
    first = list(itertools.islice(disparity, video.window))
    if not first:
        raise DVDError(f"no frames could be decoded from {source.path}: check the file")
    value_range = DisparityRange.fit(np.stack(first)) if RANGED_FORMATS & set(output.formats) else None
    writers = open_writers(
        directory,
        list(output.formats),
        fps=source.output_rate(output.stride),
        value_range=value_range,
        colormap=output.colormap,
    )
    # Side by side needs each RGB frame beside its depth: a second decoder in lockstep costs no buffer.
    rgb = source.frames(output.max_frames, output.stride) if writers.needs_rgb else None
    count = 0
    try:
        for frame in itertools.chain(first, disparity):
            writers.write(resize_back(frame, out_size), _next_rgb(rgb, out_size))
            count += 1
            if progress is not None:
                progress(count)
    finally:
        writers.close()
    return count, writers.meta()


def _next_rgb(rgb: Iterator[np.ndarray] | None, size: tuple[int, int]) -> np.ndarray | None:
    if rgb is None:
        return None
    frame = next(rgb)
    return frame if frame.shape[:2] == tuple(size) else resize_frames(frame[None], size)[0]


def _describe(
    pipe: DVDPipeline,
    source: Source,
    video: VideoSettings,
    output: OutputSettings,
    count: int,
    outputs: dict,
    seconds: float,
) -> dict:
    """meta.json: what was computed, from what, and how to read every output."""
    rate = source.output_rate(output.stride)
    model_hw = video.model_size(source.size)
    return {
        "kind": "disparity",
        "values": "affine-invariant disparity: larger = nearer; scale and shift unknown",
        "num_frames": count,
        "fps": float(rate),
        "fps_fraction": f"{rate.numerator}/{rate.denominator}",
        "source_size": list(source.size),
        "model_size": list(model_hw),
        "output_size": list(model_hw if output.keep_model_size else source.size),
        "max_frames": output.max_frames,
        "stride": output.stride,
        **video.as_meta(),
        "weights": pipe.weights_id,
        "device": str(pipe.model.device),
        "dtype": str(pipe.model.dtype).removeprefix("torch."),
        "input": source.describe(),
        "outputs": outputs,
        "seconds": round(seconds, 3),
        "dvd_version": __version__,
    }
