"""`DVDPipeline`: the public entry point — load weights once, predict windows of frames as disparity."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from dvd.errors import DVDError
from dvd.inference.video import (
    StreamOptions,
    VideoDisparity,
    VideoInput,
    iter_video_disparity,
    predict_video,
    unit_float,
)
from dvd.model.dvd_model import DVDModel
from dvd.weights import load_weights

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """cuda, then mps, then cpu when not given; a clear error when the asked-for device is absent."""
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DVDError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DVDError("--device mps asked for, but this torch build has no MPS support; use --device cpu")
    return device


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """bfloat16 on CUDA (as the official code runs), float32 elsewhere, unless asked otherwise."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise DVDError(f"unknown dtype '{dtype}'; choose float32, bfloat16 or float16")
    return DTYPES[dtype]


def pad_to_4n_plus_1(frames: torch.Tensor) -> torch.Tensor:
    """Repeat the last frame until T = 4n+1, the frame counts the causal Wan VAE accepts. frames: [B,3,T,H,W]."""
    extra = (1 - frames.shape[2]) % 4
    if extra == 0:
        return frames
    return torch.cat([frames, frames[:, :, -1:].expand(-1, -1, extra, -1, -1)], dim=2)


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """[T,H,W,3] uint8/uint16/float in [0,1] -> float32 [3,T,H,W] in [0,1]."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise DVDError(f"frames must be [T,H,W,3] RGB, got shape {tuple(frames.shape)}")
    if frames.shape[0] < 1:
        raise DVDError("a window needs at least one frame")
    height, width = frames.shape[1:3]
    if height % 16 or width % 16:
        raise DVDError(f"frame size {height}x{width} is not a multiple of 16; resize first (dvd.inference.resize)")
    return torch.from_numpy(np.ascontiguousarray(unit_float(frames))).permute(3, 0, 1, 2)


class DVDPipeline:
    """Video depth with DVD. Outputs are affine-invariant disparity (larger = nearer), float32.

    >>> pipe = DVDPipeline.from_pretrained("path/to/weights")        # or None for the official Hub release
    >>> disparity = pipe.predict_window(frames)                      # [T,H,W,3] -> [T,H,W]
    """

    def __init__(self, model: DVDModel, weights_id: str = "in-memory model") -> None:
        self.model = model.eval()
        self.weights_id = weights_id

    @classmethod
    def from_pretrained(
        cls,
        weights: str | Path | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        tau: float | None = None,
    ) -> "DVDPipeline":
        """Load weights (see `dvd.weights.load`) onto `device` in `dtype`; `tau` overrides the checkpoint's."""
        target = resolve_device(device)
        precision = resolve_dtype(dtype, target)
        loaded = load_weights(weights)
        if tau is not None:
            loaded.model.tau = float(tau)
        loaded.model.to_precision(precision).to(target)
        return cls(loaded.model, loaded.weights_id)

    def save_pretrained(self, directory: str | Path) -> None:
        self.model.save_pretrained(directory)

    @torch.inference_mode()
    def predict_windows(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        """Several windows of equal shape in one batch; each [T,H,W,3] -> disparity [T,H,W] float32."""
        if not windows:
            return []
        pixels = [frames_to_tensor(w) for w in windows]
        if len({p.shape for p in pixels}) != 1:
            raise DVDError("windows in one batch must share their shape; predict them separately")
        length = pixels[0].shape[1]
        batch = pad_to_4n_plus_1(torch.stack(pixels))
        disparity = self.model(batch)[:, :length].float().cpu().numpy()
        return list(disparity)

    def predict_window(self, frames: np.ndarray) -> np.ndarray:
        """One window [T,H,W,3] (uint8, or float in [0,1]; any T >= 1; H, W multiples of 16) -> disparity [T,H,W]."""
        return self.predict_windows([frames])[0]

    def __call__(self, source: VideoInput, options: StreamOptions | None = None, **kwargs) -> VideoDisparity:
        """A whole video (path, image folder, image, array [T,H,W,3] or iterable of frames) -> `VideoDisparity`.

        Windows, stitching and resizing follow `options` (defaults: the official open-world settings); keyword
        arguments `keep_model_size`, `max_frames`, `stride` as in `dvd predict`. Holds the result in memory: use
        `stream` for long videos.
        """
        return predict_video(self, source, options or StreamOptions(), **kwargs)

    def stream(self, source: VideoInput, options: StreamOptions | None = None, **kwargs) -> Iterator[np.ndarray]:
        """Like `__call__`, but yields each stitched frame [H,W] as soon as it is final, in bounded memory."""
        return iter_video_disparity(self, source, options or StreamOptions(), **kwargs)
