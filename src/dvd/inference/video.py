"""Whole videos through the model: resize to model size, stream windows, stitch, resize back.

The Python-API counterpart of `dvd predict`: `iter_video_disparity` yields stitched frames one by one in bounded
memory, `predict_video` collects them into a `VideoDisparity`. Both take a path, a `dvd.io.Source`, an array
[T, H, W, 3] or any iterable of [H, W, 3] frames (uint8, uint16, or float in [0, 1]).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from dvd.data.raster import resize_frames
from dvd.errors import DVDError
from dvd.inference.resize import model_size
from dvd.inference.stitch import DEFAULT_ANCHOR_FRAMES, get_stitch_preset
from dvd.inference.stream import WindowPredictor, stream_disparity, validate_stream_settings
from dvd.io.readers import Source, open_source


@dataclass(frozen=True)
class StreamOptions:
    """How a video is cut into windows and joined; the defaults are the official open-world settings."""

    min_height: int = 480
    min_width: int = 640
    window: int = 81
    overlap: int = 21
    stitch: str = "openworld"
    batch_windows: int = 1
    anchor_frames: int = DEFAULT_ANCHOR_FRAMES

    def validate(self) -> None:
        """Raise DVDError for settings that cannot work, before any frame is decoded or any model is loaded."""
        if self.min_height < 1 or self.min_width < 1:
            raise DVDError(f"--height/--width must be positive, got {self.min_height}x{self.min_width}")
        validate_stream_settings(self.window, self.overlap, self.stitch, self.batch_windows, self.anchor_frames)

    def as_meta(self) -> dict:
        meta = asdict(self)
        if not get_stitch_preset(self.stitch).anchored:
            del meta["anchor_frames"]
        return meta


@dataclass
class VideoDisparity:
    """A whole video's disparity: float32 [T, H, W], affine-invariant, larger = nearer."""

    disparity: np.ndarray
    fps: float | None
    source_size: tuple[int, int]
    model_size: tuple[int, int]
    options: StreamOptions = field(default_factory=StreamOptions)

    @property
    def num_frames(self) -> int:
        return len(self.disparity)


def unit_float(frame: np.ndarray) -> np.ndarray:
    """An RGB frame as float32 in [0, 1]: uint8 / 255, uint16 / 65535, floats as they are."""
    if frame.dtype == np.uint8:
        return frame.astype(np.float32) / np.float32(255)
    if frame.dtype == np.uint16:
        return frame.astype(np.float32) / np.float32(65535)
    return np.asarray(frame, dtype=np.float32)


def model_disparity(
    frames: Iterable[np.ndarray], predict_windows: WindowPredictor, size: tuple[int, int], options: StreamOptions
) -> Iterator[np.ndarray]:
    """Stitched disparity at model size ([h, w] per frame) for source frames of `size` (H, W)."""
    options.validate()
    target = model_size(*size, options.min_height, options.min_width)
    resized = (resize_frames(unit_float(frame)[None], target)[0] for frame in frames)
    return stream_disparity(
        resized,
        predict_windows,
        window=options.window,
        overlap=options.overlap,
        stitch=options.stitch,
        batch_windows=options.batch_windows,
        anchor_frames=options.anchor_frames,
    )


def resize_back(disparity: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One model-size disparity frame [h, w] bilinearly resized to `size` (H, W), float32."""
    return resize_frames(disparity[None], size)[0]


class WindowModel(Protocol):
    """A DVDPipeline, or anything else that predicts disparity for a batch of equal-shaped windows."""

    def predict_windows(self, windows: list[np.ndarray]) -> list[np.ndarray]: ...


VideoInput = str | Path | Source | np.ndarray | Iterable[np.ndarray]


def iter_video_disparity(
    pipe: WindowModel,
    source: VideoInput,
    options: StreamOptions = StreamOptions(),
    *,
    keep_model_size: bool = False,
    max_frames: int | None = None,
    stride: int = 1,
) -> Iterator[np.ndarray]:
    """Yield each frame's stitched disparity ([H, W] float32, source size unless `keep_model_size`) as soon as it
    is final; memory stays bounded however long the video is."""
    frames, size, _ = _frames_of(source, max_frames, stride)
    return _output_frames(model_disparity(frames, pipe.predict_windows, size, options), size, keep_model_size)


def predict_video(
    pipe: WindowModel,
    source: VideoInput,
    options: StreamOptions = StreamOptions(),
    *,
    keep_model_size: bool = False,
    max_frames: int | None = None,
    stride: int = 1,
) -> VideoDisparity:
    """The whole video's disparity in memory (use `iter_video_disparity` or `dvd predict` for long videos)."""
    frames, size, fps = _frames_of(source, max_frames, stride)
    target = model_size(*size, options.min_height, options.min_width)
    disparity = model_disparity(frames, pipe.predict_windows, size, options)
    out = list(_output_frames(disparity, size, keep_model_size))
    empty = np.empty((0, *(target if keep_model_size else size)), np.float32)
    return VideoDisparity(np.stack(out) if out else empty, fps, size, target, options)


def _output_frames(
    disparity: Iterator[np.ndarray], size: tuple[int, int], keep_model_size: bool
) -> Iterator[np.ndarray]:
    for frame in disparity:
        yield frame if keep_model_size else resize_back(frame, size)


def _frames_of(
    source: VideoInput, max_frames: int | None, stride: int
) -> tuple[Iterable[np.ndarray], tuple[int, int], float | None]:
    """(frames, (H, W), fps or None) of any accepted source, frames taken lazily."""
    if isinstance(source, (str, Path)):
        source = open_source(source)
    if isinstance(source, Source):
        return source.frames(max_frames, stride), source.size, float(source.output_rate(stride))
    if stride < 1 or (max_frames is not None and max_frames < 1):
        raise DVDError(f"stride ({stride}) and max_frames ({max_frames}) must be 1 or more")
    frames = iter(source)
    first = next(frames, None)
    if first is None:
        raise DVDError("no frames given: pass a video path, a Source, or a non-empty array of [H, W, 3] frames")
    shape = np.shape(first)
    if len(shape) != 3 or shape[-1] != 3:
        raise DVDError(f"frames must be [H, W, 3] RGB, got a frame of shape {shape}")
    stop = None if max_frames is None else max_frames * stride
    return itertools.islice(itertools.chain([first], frames), 0, stop, stride), shape[:2], None
