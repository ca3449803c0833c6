"""The one video engine: frames in at any size -> model size -> windows, stitched -> disparity out at output size.

`dvd predict`, `dvd eval`, `dvd demo` and `DVDPipeline.__call__` all run videos through `VideoEngine`; they
differ only in where frames come from and where disparity goes. Frames are resized one at a time and the stitched
disparity leaves as soon as it is final, so memory does not depend on the video length.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

import numpy as np

from dvd.data.raster import resize_frames
from dvd.errors import DVDError
from dvd.inference.profiling import RESIZE, RESIZE_BACK, STITCH, NoTimer
from dvd.inference.resize import model_size
from dvd.inference.stitch import get_stitch_preset
from dvd.inference.stream import WindowCallback, WindowPredictor, stream_disparity, validate_stream_settings
from dvd.options import (
    DEFAULT_ANCHOR_FRAMES,
    DEFAULT_BATCH_WINDOWS,
    DEFAULT_MIN_HEIGHT,
    DEFAULT_MIN_WIDTH,
    DEFAULT_OVERLAP,
    DEFAULT_STITCH,
    DEFAULT_WINDOW,
)


@dataclass(frozen=True)
class VideoSettings:
    """How a video is sized, cut into windows and joined: the `dvd predict` flags of the same names and defaults
    (the official open-world settings)."""

    height: int = DEFAULT_MIN_HEIGHT  # minimum model height: frames are scaled to cover height x width
    width: int = DEFAULT_MIN_WIDTH
    window: int = DEFAULT_WINDOW
    overlap: int = DEFAULT_OVERLAP
    stitch: str = DEFAULT_STITCH
    anchor_frames: int = DEFAULT_ANCHOR_FRAMES  # anchored preset only
    batch_windows: int = DEFAULT_BATCH_WINDOWS

    def validate(self) -> None:
        """Raise DVDError for settings that cannot work, before any frame is decoded or any model is loaded."""
        if self.height < 1 or self.width < 1:
            raise DVDError(f"--height/--width must be positive, got {self.height}x{self.width}")
        validate_stream_settings(self.window, self.overlap, self.stitch, self.batch_windows, self.anchor_frames)

    def model_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(H, W) the model runs at for source frames of `size`."""
        return model_size(*size, self.height, self.width)

    def as_meta(self) -> dict:
        """The settings as recorded in meta.json (anchor_frames only where it applies)."""
        meta = asdict(self)
        meta["min_height"], meta["min_width"] = meta.pop("height"), meta.pop("width")
        if not get_stitch_preset(self.stitch).anchored:
            del meta["anchor_frames"]
        return meta


class VideoEngine:
    """Runs frames through a window predictor with `settings`; `on_window` hears about every stitched window;
    `timer` (a `dvd.inference.profiling.StageTimer`, for `dvd bench`) records the resize and stitch stages."""

    def __init__(
        self,
        predict_windows: WindowPredictor,
        settings: VideoSettings,
        on_window: WindowCallback | None = None,
        timer: NoTimer | None = None,
    ) -> None:
        settings.validate()
        self.predict_windows = predict_windows
        self.settings = settings
        self.on_window = on_window
        self.timer = timer or NoTimer()

    def model_frames(self, frames: Iterable[np.ndarray], size: tuple[int, int]) -> Iterator[np.ndarray]:
        """Stitched disparity [h, w] at model size, one frame at a time, for float [H, W, 3] frames of `size`."""
        return self.stitched(self.to_model_size(frames, size))

    def to_model_size(self, frames: Iterable[np.ndarray], size: tuple[int, int]) -> Iterator[np.ndarray]:
        """Float [H, W, 3] frames of `size` resized to the model size, one at a time (the first half of
        `model_frames`, which `dvd predict` runs in its reading thread)."""
        target = self.settings.model_size(size)
        for frame in frames:
            with self.timer.stage(RESIZE):
                resized = resize_frames(frame[None], target)[0]
            yield resized

    def stitched(self, resized: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Stitched disparity [h, w] for frames already at model size (the second half of `model_frames`)."""
        s = self.settings
        stream = stream_disparity(
            resized,
            self.predict_windows,
            window=s.window,
            overlap=s.overlap,
            stitch=s.stitch,
            batch_windows=s.batch_windows,
            anchor_frames=s.anchor_frames,
            on_window=self.on_window,
        )
        return self.timer.iterate(STITCH, stream)

    def run(
        self, frames: Iterable[np.ndarray], size: tuple[int, int], output_size: tuple[int, int] | None = None
    ) -> Iterator[np.ndarray]:
        """Stitched disparity [H, W] float32 at `output_size` (the source size unless given), frame by frame."""
        out = size if output_size is None else output_size
        for frame in self.model_frames(frames, size):
            with self.timer.stage(RESIZE_BACK):
                resized = resize_back(frame, out)
            yield resized


def resize_back(disparity: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One model-size disparity frame [h, w] bilinearly resized to `size` (H, W), float32."""
    return resize_frames(disparity[None], size)[0]
