"""Lazy readers for the inputs of `dvd predict`: a video file, a folder of images, one image, or many of those.

A `Source` decodes one frame at a time (PyAV for every format, so 16-bit PNG/TIFF and float EXR keep their
precision) and yields float32 RGB frames [H, W, 3] in [0, 1] at display orientation. Opening a source checks it
up front (exists, decodes, one image size) so that bad inputs fail before any model work, with a one-line DVDError.
"""

from __future__ import annotations

import itertools
import math
import struct
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from dvd.data.naming import natural_key
from dvd.errors import DVDError

VIDEO_EXTENSIONS = (
    ".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".wmv", ".flv",
    ".3gp", ".ogv", ".gif",
)  # fmt: skip
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr")
LIST_EXTENSION = ".txt"
DEFAULT_IMAGE_FPS = 24


def frame_rate(value: float | str | Fraction) -> Fraction:
    """An exact, positive frame rate from 24, 29.97, "30000/1001" or a Fraction (decimals are taken as written)."""
    try:
        rate = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        rate = Fraction(0)
    if rate <= 0:
        raise DVDError(f"invalid frame rate {value!r}: give a positive number such as 24, 29.97 or 30000/1001")
    return rate


def source_name(path: Path) -> str:
    """The output stem of an input: the folder name for a folder, the file name without extension otherwise."""
    return path.name if path.is_dir() else path.stem


class Source(ABC):
    """One input, decoded lazily.

    Attributes: `path`; `name` (the stem for OUT/<name>/); `kind` ("video" | "images" | "image"); `rate` (exact
    frames per second; `fps` is the float); `size` (H, W) at display orientation; `num_frames` and
    `num_frames_exact` (False when the count is estimated from the duration, as for .mkv/.webm).
    """

    kind: str

    def __init__(self, path: Path, rate: Fraction, size: tuple[int, int], num_frames: int, exact: bool) -> None:
        self.path = path
        self.name = source_name(path)
        self.rate = rate
        self.size = size
        self.num_frames = num_frames
        self.num_frames_exact = exact

    @property
    def fps(self) -> float:
        return float(self.rate)

    def output_rate(self, stride: int = 1) -> Fraction:
        """The frame rate of the frames `frames(stride=stride)` yields: rate / stride."""
        return self.rate / _check_stride(stride)

    def frame_count(self, max_frames: int | None = None, stride: int = 1) -> int:
        """How many frames `frames(max_frames, stride)` yields (an estimate when `num_frames_exact` is False)."""
        count = math.ceil(self.num_frames / _check_stride(stride))
        return count if max_frames is None else min(count, _check_max_frames(max_frames))

    def frames(self, max_frames: int | None = None, stride: int = 1) -> Iterator[np.ndarray]:
        """Frames 0, stride, 2*stride, ... (at most `max_frames` of them) as float32 [H, W, 3] in [0, 1]."""
        stop = None if max_frames is None else _check_max_frames(max_frames) * _check_stride(stride)
        return self._frames(stop, _check_stride(stride))

    def describe(self) -> dict:
        """What meta.json should record about the input."""
        return {
            "path": str(self.path),
            "kind": self.kind,
            "fps": self.fps,
            "size": list(self.size),
            "num_frames": self.num_frames,
            "num_frames_exact": self.num_frames_exact,
        }

    @abstractmethod
    def _frames(self, stop: int | None, stride: int) -> Iterator[np.ndarray]:
        """Decoded frames with indices in range(0, stop, stride)."""


class VideoSource(Source):
    """A video file in any container and codec that PyAV decodes. Rotation metadata (phone videos) is applied."""

    kind = "video"

    def __init__(self, path: Path) -> None:
        with _open_video(path) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate:
                raise DVDError(f"cannot tell the frame rate of {path}: re-mux it to .mp4 with ffmpeg")
            first = next(_decoded(container, stream, path), None)
            if first is None:
                raise DVDError(f"no video frames in {path}: its video stream is empty; check the file")
            exact = bool(stream.frames)
            num_frames = stream.frames if exact else _frames_from_duration(container, stream, rate)
        self._coded_size = (first.height, first.width)
        super().__init__(path, Fraction(rate), _to_rgb(first, self._coded_size).shape[:2], num_frames, exact)

    def _frames(self, stop: int | None, stride: int) -> Iterator[np.ndarray]:
        with _open_video(self.path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in itertools.islice(_decoded(container, stream, self.path), 0, stop, stride):
                yield _to_rgb(frame, self._coded_size)


class ImageSequenceSource(Source):
    """Image files of one size, in the given order: a folder ("images") or a single file ("image")."""

    def __init__(self, path: Path, files: Sequence[Path], rate: Fraction) -> None:
        self.kind = "images" if path.is_dir() else "image"
        self._files = list(files)
        _check_same_size(path, self._files)
        first = _read_image(self._files[0])
        super().__init__(path, rate, first.shape[:2], len(self._files), True)

    def _frames(self, stop: int | None, stride: int) -> Iterator[np.ndarray]:
        for file in itertools.islice(self._files, 0, stop, stride):
            image = _read_image(file)
            if image.shape[:2] != self.size:
                raise DVDError(
                    f"{file} decodes to {image.shape[1]}x{image.shape[0]} but the sequence is "
                    f"{self.size[1]}x{self.size[0]} (EXIF orientation differs?): make all images one size"
                )
            yield image


def open_source(path: str | Path, image_fps: float | str | Fraction = DEFAULT_IMAGE_FPS) -> Source:
    """Open one input: a video file, a folder of images (natural order) or one image. `image_fps` is the frame rate
    given to images (videos keep their own)."""
    path = _existing(Path(path).expanduser())
    if path.is_dir():
        images = _images_in(path)
        if not images:
            raise DVDError(f"no images found in {path}: expected {'/'.join(IMAGE_EXTENSIONS)} files")
        return ImageSequenceSource(path, images, frame_rate(image_fps))
    suffix = path.suffix.lower()
    if suffix == LIST_EXTENSION:
        raise DVDError(f"{path} is a list of inputs: open it with open_sources, which expands lists")
    if suffix in IMAGE_EXTENSIONS:
        return ImageSequenceSource(path, [path], frame_rate(image_fps))
    if suffix in VIDEO_EXTENSIONS:
        return VideoSource(path)
    raise DVDError(
        f"unsupported input {path}: expected a video ({'/'.join(VIDEO_EXTENSIONS)}), an image "
        f"({'/'.join(IMAGE_EXTENSIONS)}), a folder of images or videos, or a {LIST_EXTENSION} list of paths"
    )


def resolve_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand the inputs into one path per source, without decoding anything: a .txt file becomes the paths it lists
    (one per line, relative to its folder; blank lines and # comments skipped), a folder holding only videos becomes
    those videos (natural order). Fails if two inputs would write to the same OUT/<name>/."""
    paths: list[Path] = []
    for item in inputs:
        path = _existing(Path(item).expanduser())
        entries = _read_list(path) if path.suffix.lower() == LIST_EXTENSION and path.is_file() else [path]
        for entry in entries:
            paths.extend(_expand_folder(entry) if entry.is_dir() else [entry])
    if not paths:
        raise DVDError("no inputs given: pass a video, an image, a folder or a .txt list of paths")
    seen: dict[str, Path] = {}
    for path in paths:
        other = seen.setdefault(source_name(path), path)
        if other is path:
            continue
        if other.resolve() == path.resolve():
            raise DVDError(f"{path} is given twice: give each input once")
        raise DVDError(f"{other} and {path} would both write to '{source_name(path)}/': rename one of them")
    return paths


def open_sources(inputs: Iterable[str | Path], image_fps: float | str | Fraction = DEFAULT_IMAGE_FPS) -> list[Source]:
    """`resolve_inputs` then `open_source` on each: every input is checked before the first one is processed."""
    return [open_source(path, image_fps) for path in resolve_inputs(inputs)]


def _existing(path: Path) -> Path:
    if not path.exists():
        raise DVDError(f"input not found: {path}: check the path")
    return path


def _read_list(list_file: Path) -> list[Path]:
    entries = []
    for number, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        entry = list_file.parent / Path(text).expanduser()
        if not entry.exists():
            raise DVDError(f"{text} (line {number} of {list_file}) not found: fix the path, relative to the list")
        if entry.suffix.lower() == LIST_EXTENSION and entry.is_file():
            raise DVDError(f"{list_file} line {number} names another list ({text}): lists cannot be nested")
        entries.append(entry)
    if not entries:
        raise DVDError(f"{list_file} lists no inputs: write one path per line")
    return entries


def _files_with(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    # Hidden files include macOS "._name" resource forks, which carry an image extension but no image.
    files = [
        file
        for file in folder.iterdir()
        if file.suffix.lower() in extensions and not file.name.startswith(".") and file.is_file()
    ]
    return sorted(files, key=lambda file: natural_key(file.name))


def _images_in(folder: Path) -> list[Path]:
    return _files_with(folder, IMAGE_EXTENSIONS)


def _expand_folder(folder: Path) -> list[Path]:
    """The videos of a folder that holds videos and no images; [folder] itself otherwise (an image folder)."""
    videos = _files_with(folder, VIDEO_EXTENSIONS)
    if videos and _images_in(folder):
        raise DVDError(f"{folder} holds both images and videos: pass the videos, or a folder with only the images")
    return videos or [folder]


def _open_video(path: Path) -> av.container.InputContainer:
    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        raise DVDError(f"cannot decode {path} as a video ({error.strerror}): check that the file is a video") from None
    if not container.streams.video:
        container.close()
        raise DVDError(f"no video frames in {path}: the file has no video stream")
    return container


def _decoded(container: av.container.InputContainer, stream: av.VideoStream, path: Path) -> Iterator[av.VideoFrame]:
    try:
        yield from container.decode(stream)
    except av.FFmpegError as error:
        raise DVDError(f"decoding {path} failed ({error.strerror}): the file may be truncated or corrupt") from None


def _frames_from_duration(container: av.container.InputContainer, stream: av.VideoStream, rate: Fraction) -> int:
    """duration x rate, for containers that store no frame count; 1 when they store no duration either."""
    if stream.duration is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / av.time_base
    else:
        return 1
    return max(1, round(seconds * rate))


def _to_rgb(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    """float32 [H, W, 3] in [0, 1] at the frame's display orientation; frames are scaled to `size` (H, W) first,
    so that a stream that changes resolution midway still yields one size."""
    height, width = size
    name = frame.format.name
    if "f32" in name or "f16" in name:
        image = _linear_to_srgb(frame.to_ndarray(format="gbrpf32le", width=width, height=height))
    elif max(component.bits for component in frame.format.components) > 8:
        image = frame.to_ndarray(format="rgb48le", width=width, height=height).astype(np.float32) / np.float32(65535)
    else:
        image = frame.to_ndarray(format="rgb24", width=width, height=height).astype(np.float32) / np.float32(255)
    quarter_turns = round(frame.rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(image, quarter_turns)) if quarter_turns else image


def _linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """Float images (EXR) hold linear light by convention; the model was trained on sRGB-encoded pictures."""
    x = np.clip(linear, 0.0, 1.0)
    encoded = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return encoded.astype(np.float32)


def _read_image(file: Path) -> np.ndarray:
    try:
        with av.open(str(file)) as container:
            frame = next(container.decode(video=0), None)
    except av.FFmpegError as error:
        raise DVDError(f"cannot decode image {file} ({error.strerror}): check that the file is a valid image") from None
    if frame is None:
        raise DVDError(f"cannot decode image {file}: it holds no picture")
    return _to_rgb(frame, (frame.height, frame.width))


def _check_same_size(path: Path, files: Sequence[Path]) -> None:
    """Compare the stored sizes, read from the headers only, so that a mixed folder fails before any decoding."""
    first = _stored_size(files[0])
    for file in files[1:]:
        size = _stored_size(file)
        if size != first:
            raise DVDError(
                f"image sizes differ in {path}: {file.name} is {size[1]}x{size[0]} but {files[0].name} is "
                f"{first[1]}x{first[0]}; resize them to one size"
            )


def _stored_size(file: Path) -> tuple[int, int]:
    """(H, W) as stored in the file, before any orientation metadata."""
    if file.suffix.lower() == ".exr":
        return _exr_size(file)
    try:
        with Image.open(file) as image:
            return image.height, image.width
    except (UnidentifiedImageError, OSError) as error:
        raise DVDError(f"cannot read image {file} ({error}): check that the file is a valid image") from None


_EXR_MAGIC = b"\x76\x2f\x31\x01"


def _exr_size(file: Path) -> tuple[int, int]:
    """(H, W) from the dataWindow attribute of an OpenEXR header (name\\0 type\\0 int32 size, value)."""
    with open(file, "rb") as handle:
        header = handle.read(1 << 16)
    offset = 8
    try:
        while header[:4] == _EXR_MAGIC and header[offset] != 0:
            name_end = header.index(b"\0", offset)
            type_end = header.index(b"\0", name_end + 1)
            (length,) = struct.unpack_from("<i", header, type_end + 1)
            value_at = type_end + 5
            if header[offset:name_end] == b"dataWindow":
                x_min, y_min, x_max, y_max = struct.unpack_from("<4i", header, value_at)
                return y_max - y_min + 1, x_max - x_min + 1
            offset = value_at + length
    except (IndexError, ValueError, struct.error):
        pass  # a truncated header: reported below like any other unreadable one
    raise DVDError(f"cannot read image {file}: not an OpenEXR file with a dataWindow; check the file")


def _check_stride(stride: int) -> int:
    if stride < 1:
        raise DVDError(f"invalid stride {stride}: use 1 (every frame) or more")
    return stride


def _check_max_frames(max_frames: int) -> int:
    if max_frames < 1:
        raise DVDError(f"invalid max_frames {max_frames}: use 1 or more, or no limit")
    return max_frames
