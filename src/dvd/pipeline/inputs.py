"""Every form a video may take in the Python API, turned into one thing: lazy RGB frames [H, W, 3] of one type,
uint8 or uint16 as given or decoded, float32 in [0, 1] otherwise (the engine resizes each in its own type and the
model converts whole windows).

Accepted: a path (video, image folder, image; see `dvd.io.readers`), a `Source`, a numpy array or torch tensor of
[T, H, W, 3] or [T, 3, H, W] frames (uint8, uint16, or float in [0, 1]), a list of PIL images (what
`diffusers.utils.load_video` returns), or any iterable of single frames in those forms. Anything else, and
anything whose values cannot be meant as RGB, is a ValueError naming the argument — never a silent guess.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dvd.data.raster import INTEGER_COLOUR_SCALES, unit_float
from dvd.io.readers import Source, open_source

VideoInput = str | Path | Source | np.ndarray | torch.Tensor | Iterable[np.ndarray | torch.Tensor | Image.Image]


@dataclass
class Frames:
    """A video ready for the engine: ``frames`` yields [H, W, 3] frames of one type (uint8, uint16, or float32 in
    [0, 1]), lazily."""

    frames: Iterable[np.ndarray]
    size: tuple[int, int]
    rate: Fraction | None  # frames per second, when the input knows it
    kind: str = "array"  # a Source's kind ("video", "images", "image") for files: cut detection depends on it


def frame_as_unit_float(frame: np.ndarray | torch.Tensor | Image.Image, name: str = "video") -> np.ndarray:
    """One RGB frame ([H, W, 3] or [3, H, W]; uint8, uint16 or float in [0, 1]; or a PIL image) as float32 [H, W, 3]."""
    return unit_float(frame_as_pixels(frame, name))


def frame_as_pixels(frame: np.ndarray | torch.Tensor | Image.Image, name: str = "video") -> np.ndarray:
    """One RGB frame as `frame_as_unit_float` takes it, as [H, W, 3]: uint8 and uint16 kept, float as float32."""
    if isinstance(frame, Image.Image):
        frame = np.asarray(frame.convert("RGB"))
    array = _as_array(frame, name)
    if array.ndim != 3 or 3 not in (array.shape[-1], array.shape[0]):
        raise ValueError(f"`{name}`: each frame must be [H, W, 3] or [3, H, W] RGB, got shape {array.shape}")
    channels_last = array if array.shape[-1] == 3 else np.moveaxis(array, 0, -1)
    return channels_last if channels_last.dtype in INTEGER_COLOUR_SCALES else _unit_values(channels_last, name)


def window_as_unit_float(frames: np.ndarray | torch.Tensor, name: str = "frames") -> np.ndarray:
    """A window of frames ([T, H, W, 3] or [T, 3, H, W]; uint8, uint16 or float in [0, 1]) as float32 [T, H, W, 3],
    converted and checked as a whole (no copy for float32 frames that are already channels-last)."""
    return unit_float(window_as_model_pixels(frames, name))


def window_as_model_pixels(frames: np.ndarray | torch.Tensor, name: str = "frames") -> np.ndarray:
    """A window as `window_as_unit_float` takes it, channels-last, as the model's input travels: uint8 as it is (a
    quarter of the bytes; `unit_tensor` converts it where the model runs), anything else as float32 in [0, 1]."""
    array = _as_array(frames, name)
    if array.ndim != 4 or len(array) < 1 or 3 not in (array.shape[-1], array.shape[1]):
        raise ValueError(f"`{name}` must be a non-empty [T, H, W, 3] or [T, 3, H, W] RGB array, got {array.shape}")
    channels_last = array if array.shape[-1] == 3 else np.moveaxis(array, 1, -1)
    return channels_last if channels_last.dtype == np.uint8 else _unit_values(channels_last, name)


def _as_array(frames: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """Frames as a numpy array; ValueError naming `name` for tensors that hold no pixels to read."""
    if not isinstance(frames, torch.Tensor):
        return np.asarray(frames)
    if frames.is_meta:
        raise ValueError(f"`{name}` is a meta tensor (a shape without data): pass a tensor that holds the frames")
    # bfloat16 has no numpy type: its values are exact in float32.
    frames = frames.detach().cpu()
    return (frames.float() if frames.dtype == torch.bfloat16 else frames).numpy()


def unit_tensor(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 colour as float32 in [0, 1] on its own device (the values `unit_float` gives); float returned as is."""
    if pixels.dtype != torch.uint8:
        return pixels
    return pixels.to(torch.float32).div_(INTEGER_COLOUR_SCALES[np.dtype(np.uint8)])


def _unit_values(array: np.ndarray, name: str) -> np.ndarray:
    """Channels-last RGB of any dtype the API accepts as float32 in [0, 1]; ValueError for values it cannot mean."""
    if array.dtype in INTEGER_COLOUR_SCALES:
        return unit_float(array)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"`{name}`: frames must be uint8, uint16 or float in [0, 1], got dtype {array.dtype}")
    array = np.asarray(array, dtype=np.float32)
    low, high = float(array.min(initial=0.0)), float(array.max(initial=0.0))
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 1:
        hint = " (divide by 255, or pass uint8)" if high > 1 else ""
        raise ValueError(f"`{name}`: float frames must lie in [0, 1], got values in [{low:g}, {high:g}]{hint}")
    return array


def check_inputs(video: VideoInput, max_frames: int | None = None, stride: int = 1, name: str = "video") -> Frames:
    """Normalise any accepted video form (module docstring) into `Frames`; ValueError naming `name` otherwise."""
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"`stride` must be an integer of 1 or more, got {stride!r}")
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"`max_frames` must be None or an integer of 1 or more, got {max_frames!r}")
    if isinstance(video, (str, Path)):
        video = open_source(video)
    if isinstance(video, Source):
        frames = video.pixels(max_frames, stride)
        return Frames(frames, video.size, video.output_rate(stride), video.kind)
    if isinstance(video, (np.ndarray, torch.Tensor)) and video.ndim != 4:
        raise ValueError(
            f"`{name}`: an array must hold frames [T, H, W, 3] or [T, 3, H, W], got shape {tuple(video.shape)}"
        )
    if isinstance(video, Image.Image) or not isinstance(video, Iterable):
        raise ValueError(  # noqa: TRY004 (diffusers' check_inputs raise ValueError)
            f"`{name}`: expected a path, an array or tensor of frames, or a list of PIL images, got {type(video).__name__}"
        )
    stop = None if max_frames is None else max_frames * stride
    taken = itertools.islice(iter(video), 0, stop, stride)
    first = next(taken, None)
    if first is None:
        raise ValueError(f"`{name}` holds no frames")
    first = frame_as_pixels(first, name)
    return Frames(_pixel_frames(first, taken, name), first.shape[:2], None)


def _pixel_frames(first: np.ndarray, rest: Iterator, name: str) -> Iterator[np.ndarray]:
    yield first
    for index, frame in enumerate(rest, start=1):
        frame = frame_as_pixels(frame, name)
        if frame.shape != first.shape:
            raise ValueError(f"`{name}`: frame {index} is {frame.shape[:2]} but frame 0 is {first.shape[:2]} (H, W)")
        if frame.dtype != first.dtype:
            # Windows are converted as a whole: one video, one type (and so one precision throughout).
            raise ValueError(f"`{name}`: frame {index} is {frame.dtype} but frame 0 is {first.dtype}: give one type")
        yield frame
