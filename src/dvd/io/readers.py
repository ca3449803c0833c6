"""Lazy readers for the inputs of `dvd predict`: a video file, a folder of images, one image, or many of those.

A `Source` decodes one frame at a time (PyAV for every format, so 16-bit PNG/TIFF and float EXR keep their
precision) and yields float32 RGB frames [H, W, 3] in [0, 1] at display orientation (`frames`), or the decoded
pixels in their own precision (`pixels`: uint8 for 8-bit sources, uint16 for deeper ones, float32 in [0, 1] for
float images), which is what the engine takes: a quarter of the memory and no float copy of every full-size frame. Opening a source checks it
up front (exists, decodes, one image size) so that bad inputs fail before any model work, with a one-line DVDError.

Damage found while decoding (a truncated or corrupt video, an image cut short) is never concealed silently: by
default it raises DVDError naming the file; a source opened with `allow_damaged=True` keeps the frames that decode
and lists each problem in `Source.damage`. A frame-exact container (mp4, mov) that yields fewer frames than it
promises is damaged; a count estimated from the duration (mkv, webm) may fall short by `ESTIMATE_TOLERANCE` (or
`ESTIMATE_SLACK_FRAMES`, whichever is more) before it counts as damage, since durations are rounded and include
the last frame's display time.
"""

from __future__ import annotations

import math
import struct
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from dvd.data.naming import natural_key
from dvd.data.raster import unit_float
from dvd.errors import DVDError
from dvd.io.input_lists import LIST_EXTENSIONS, ListedInput, is_list_file, read_list
from dvd.options import DEFAULT_IMAGE_FPS, MAX_FRAME_RATE, MIN_FRAME_RATE

VIDEO_EXTENSIONS = (
    ".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".wmv", ".flv",
    ".3gp", ".ogv", ".gif",
)  # fmt: skip
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr")
TIFF_EXTENSIONS = (".tif", ".tiff")
ESTIMATE_TOLERANCE = 0.05  # the shortfall allowed on a frame count estimated from the duration...
ESTIMATE_SLACK_FRAMES = 2  # ...or this many frames, whichever is more


def frame_rate(value: float | str | Fraction) -> Fraction:
    """An exact frame rate from 24, 29.97, "30000/1001" or a Fraction (decimals are taken as written), between
    MIN_FRAME_RATE and MAX_FRAME_RATE: outside that range the mp4 writers produce files with no playable frame."""
    try:
        rate = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        rate = Fraction(0)
    if not MIN_FRAME_RATE <= rate <= MAX_FRAME_RATE:
        raise DVDError(
            f"invalid frame rate {value!r}: give a rate between {MIN_FRAME_RATE} and {MAX_FRAME_RATE} frames per "
            "second, such as 24, 29.97 or 30000/1001"
        )
    return rate


def source_name(path: Path) -> str:
    """The output stem of an input: the folder name for a folder, the file name without extension otherwise."""
    return path.name if path.is_dir() else path.stem


class Source(ABC):
    """One input, decoded lazily.

    Attributes: `path`; `name` (the stem for OUT/<name>/); `kind` ("video" | "images" | "image"); `rate` (exact
    frames per second; `fps` is the float); `size` (H, W) at display orientation; `num_frames` and
    `num_frames_exact` (False when the count is estimated from the duration, as for .mkv/.webm); `allow_damaged`
    and `damage` (the problems met so far while decoding, when damage is allowed).
    """

    kind: str

    rate: Fraction
    time_base: Fraction  # the unit of the source's time stamps: the finest step `timed_frames` times take
    size: tuple[int, int]
    num_frames: int
    num_frames_exact: bool

    def __init__(self, path: Path, allow_damaged: bool) -> None:
        """Subclasses set rate, size, num_frames and num_frames_exact while they open the input, which may already
        meet damage (the first frame)."""
        self.path = path
        self.name = source_name(path)
        self.allow_damaged = allow_damaged
        self._damage: dict[str, None] = {}  # ordered and without repeats: a second pass meets the same problems

    @property
    def damage(self) -> list[str]:
        return list(self._damage)

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
        return (frame for _, frame in self.timed_frames(max_frames, stride))

    def timed_frames(self, max_frames: int | None = None, stride: int = 1) -> Iterator[tuple[Fraction, np.ndarray]]:
        """`frames` with each frame's presentation time in seconds from the first frame: the source's own time
        stamps for a video (variable frame rates included), index / rate for images."""
        return ((time, unit_float(pixels)) for time, pixels in self.timed_pixels(max_frames, stride))

    def pixels(self, max_frames: int | None = None, stride: int = 1) -> Iterator[np.ndarray]:
        """The frames of `frames` as decoded: uint8 or uint16 [H, W, 3], or float32 in [0, 1] for float images."""
        return (pixels for _, pixels in self.timed_pixels(max_frames, stride))

    def timed_pixels(self, max_frames: int | None = None, stride: int = 1) -> Iterator[tuple[Fraction, np.ndarray]]:
        """`pixels` with each frame's time, as `timed_frames`."""
        stop = None if max_frames is None else _check_max_frames(max_frames) * _check_stride(stride)
        return self._frames(stop, _check_stride(stride))

    def files(self) -> list[Path]:
        """The files the frames are decoded from (a resumed run checks that they have not changed)."""
        return [self.path]

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

    def damaged(self, problem: str) -> None:
        """Record `problem` (once) when damage is allowed; otherwise fail, naming the file and the way out."""
        if not self.allow_damaged:
            raise DVDError(f"{problem}; pass --allow-damaged (allow_damaged=True) to keep the frames that decode")
        self._damage[problem] = None

    @abstractmethod
    def _frames(self, stop: int | None, stride: int) -> Iterator[tuple[Fraction, np.ndarray]]:
        """Decoded pixels (see `pixels`), with their times, with indices in range(0, stop, stride)."""


class VideoSource(Source):
    """A video file in any container and codec that PyAV decodes. Rotation metadata (phone videos) is applied."""

    kind = "video"

    def __init__(self, path: Path, allow_damaged: bool = False) -> None:
        super().__init__(path, allow_damaged)
        with _open_video(path) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate:
                raise DVDError(f"cannot tell the frame rate of {path}: re-mux it to .mp4 with ffmpeg")
            first = next(self._decoded(container, stream), None)
            if first is None:
                raise DVDError(f"no video frames in {path}: its video stream is empty; check the file")
            self.num_frames_exact = bool(stream.frames)
            self.num_frames = stream.frames or _frames_from_duration(container, stream, rate)
            if self.num_frames_exact:
                self._check_tail(container, stream)
            # PyAV objects are read only while their container is open (PyAV 18.1.1 enforces it).
            self.rate = Fraction(rate)
            self.time_base = stream.time_base or 1 / self.rate
            self._coded_size = (first.height, first.width)
            self.size = _to_pixels(first, self._coded_size).shape[:2]

    def _frames(self, stop: int | None, stride: int) -> Iterator[tuple[Fraction, np.ndarray]]:
        with _open_video(self.path) as container:
            stream = container.streams.video[0]
            # Slice threads only: frame threads report decoding errors late, and lose them (with the last frames)
            # at the end of a truncated file. The model, not decoding, bounds the speed of `dvd predict`.
            stream.thread_type = "SLICE"
            start: Fraction | None = None
            decoded = 0
            for frame in self._decoded(container, stream):
                time = _frame_time(frame, decoded, self.rate)
                start = time if start is None else start
                if decoded % stride == 0:
                    yield time - start, _to_pixels(frame, self._coded_size)
                decoded += 1
                if decoded == stop:
                    return
        self._check_count(decoded, stop)

    def _decoded(self, container: av.container.InputContainer, stream: av.VideoStream) -> Iterator[av.VideoFrame]:
        """The stream's frames, packet by packet, so that every problem the demuxer or decoder reports is heard."""
        for packet in container.demux(stream):
            at = _packet_time(packet)
            if packet.is_corrupt:
                self.damaged(f"{self.path} is truncated or damaged: its packet at {at} is incomplete")
            try:
                frames = packet.decode()
            except av.FFmpegError as error:
                self.damaged(f"decoding {self.path} failed at {at} ({error.strerror}): the file is corrupt")
                continue
            for frame in frames:
                if frame.is_corrupt:
                    self.damaged(f"{self.path} is damaged: its frame at {at} decodes with errors")
                yield frame

    def _check_count(self, decoded: int, stop: int | None) -> None:
        """Damage when the stream ended before the frames the container promised (up to `stop`)."""
        expected = self.num_frames if stop is None else min(stop, self.num_frames)
        slack = 0 if self.num_frames_exact else max(ESTIMATE_SLACK_FRAMES, math.floor(ESTIMATE_TOLERANCE * expected))
        if decoded < expected - slack:
            promise = "holds" if self.num_frames_exact else "should hold, from its duration, about"
            self.damaged(
                f"{self.path} is truncated or damaged: it {promise} {self.num_frames} frames but only {decoded} decode"
            )

    def _check_tail(self, container: av.container.InputContainer, stream: av.VideoStream) -> None:
        """Read the packets of the last key frame onwards, which the index of an mp4/mov points to: a file cut
        short is found before any model work instead of at its end."""
        if stream.duration is None:
            return
        container.seek((stream.start_time or 0) + stream.duration, stream=stream, backward=True)
        tail = [packet for packet in container.demux(stream) if packet.size]
        if not tail or any(packet.is_corrupt for packet in tail):
            self.damaged(
                f"{self.path} is truncated: its index promises {self.num_frames} frames but the data ends early"
            )


class ImageSequenceSource(Source):
    """Image files of one size, in the given order: a folder ("images") or a single file ("image")."""

    def __init__(self, path: Path, files: Sequence[Path], rate: Fraction, allow_damaged: bool = False) -> None:
        super().__init__(path, allow_damaged)
        self.kind = "images" if path.is_dir() else "image"
        self._files = list(files)
        _check_same_size(path, self._files)
        self.rate = rate
        self.time_base = 1 / rate
        self.size = self._image(self._files[0]).shape[:2]
        self.num_frames = len(self._files)
        self.num_frames_exact = True

    def files(self) -> list[Path]:
        return list(self._files)

    def _frames(self, stop: int | None, stride: int) -> Iterator[tuple[Fraction, np.ndarray]]:
        for index in range(0, len(self._files) if stop is None else min(stop, len(self._files)), stride):
            file = self._files[index]
            image = self._image(file)
            if image.shape[:2] != self.size:
                raise DVDError(
                    f"{file} decodes to {image.shape[1]}x{image.shape[0]} but the sequence is "
                    f"{self.size[1]}x{self.size[0]} (EXIF orientation differs?): make all images one size"
                )
            yield index / self.rate, image

    def _image(self, file: Path) -> np.ndarray:
        """A strict decode; where damage is allowed and that fails, the decoder's concealed picture, recorded."""
        try:
            return _read_image(file, conceal=False)
        except DVDError as error:
            self.damaged(str(error))
        return _read_image(file, conceal=True)


def open_source(
    path: str | Path, image_fps: float | str | Fraction = DEFAULT_IMAGE_FPS, allow_damaged: bool = False
) -> Source:
    """Open one input: a video file, a folder of images (natural order) or one image. `image_fps` is the frame rate
    given to images (videos keep their own); `allow_damaged` keeps what decodes of a damaged input (see above)."""
    path = _existing(Path(path).expanduser())
    if path.is_dir():
        images = _images_in(path)
        if not images:
            raise DVDError(f"no images found in {path}: expected {'/'.join(IMAGE_EXTENSIONS)} files")
        return ImageSequenceSource(path, images, frame_rate(image_fps), allow_damaged)
    suffix = path.suffix.lower()
    if suffix in LIST_EXTENSIONS:
        raise DVDError(f"{path} is a list of inputs: open it with open_sources, which expands lists")
    if suffix in IMAGE_EXTENSIONS:
        return ImageSequenceSource(path, [path], frame_rate(image_fps), allow_damaged)
    if suffix in VIDEO_EXTENSIONS:
        return VideoSource(path, allow_damaged)
    raise DVDError(
        f"unsupported input {path}: expected a video ({'/'.join(VIDEO_EXTENSIONS)}), an image "
        f"({'/'.join(IMAGE_EXTENSIONS)}), a folder of images or videos, or a list of paths ({'/'.join(LIST_EXTENSIONS)})"
    )


def list_inputs(inputs: Iterable[str | Path], missing: dict[Path, str] | None = None) -> list[ListedInput]:
    """Expand the inputs into one entry per source, without decoding anything: a list file becomes the paths it
    lists, with the settings of their rows (`dvd.io.input_lists`), a folder holding only videos becomes those videos
    (natural order). Fails if two inputs would write to the same OUT/<name>/. With `missing` (dvd predict
    --keep-going), a listed path that does not exist goes there with its error instead of failing."""
    listed: list[ListedInput] = []
    for item in inputs:
        path = _existing(Path(item).expanduser())
        for entry in read_list(path, missing) if is_list_file(path) else [ListedInput(path)]:
            if entry.path.is_dir():
                listed.extend(replace(entry, path=found) for found in _expand_folder(entry.path))
            else:
                listed.append(entry)
    if not listed and not missing:
        raise DVDError("no inputs given: pass a video, an image, a folder or a list of paths")
    seen: dict[str, Path] = {}
    for path in (entry.path for entry in listed):
        other = seen.setdefault(source_name(path), path)
        if other is path:
            continue
        if other.resolve() == path.resolve():
            raise DVDError(f"{path} is given twice: give each input once")
        raise DVDError(f"{other} and {path} would both write to '{source_name(path)}/': rename one of them")
    return listed


def resolve_inputs(inputs: Iterable[str | Path], missing: dict[Path, str] | None = None) -> list[Path]:
    """The paths of `list_inputs`."""
    return [entry.path for entry in list_inputs(inputs, missing)]


def open_sources(
    inputs: Iterable[str | Path], image_fps: float | str | Fraction = DEFAULT_IMAGE_FPS, allow_damaged: bool = False
) -> list[Source]:
    """`resolve_inputs` then `open_source` on each: every input is checked before the first one is processed."""
    return [open_source(path, image_fps, allow_damaged) for path in resolve_inputs(inputs)]


def _existing(path: Path) -> Path:
    if not path.exists():
        raise DVDError(f"input not found: {path}: check the path")
    return path


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


def _packet_time(packet: av.Packet) -> str:
    """Where a packet is, for messages: its time, or its byte offset when it has no time stamp."""
    if packet.pts is not None and packet.time_base is not None:
        return f"{float(packet.pts * packet.time_base):.3f} s"
    return f"byte {packet.pos}" if packet.pos is not None and packet.pos >= 0 else "an unknown position"


def _frame_time(frame: av.VideoFrame, index: int, rate: Fraction) -> Fraction:
    """The frame's presentation time in seconds: its time stamp, or index / rate when it has none."""
    if frame.pts is None or frame.time_base is None:
        return index / rate
    return frame.pts * frame.time_base


def _frames_from_duration(container: av.container.InputContainer, stream: av.VideoStream, rate: Fraction) -> int:
    """duration x rate, for containers that store no frame count; 1 when they store no duration either."""
    if stream.duration is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / av.time_base
    else:
        return 1
    return max(1, round(seconds * rate))


def _to_pixels(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    """RGB [H, W, 3] at the frame's display orientation: uint8 for 8-bit formats, uint16 for deeper ones, float32
    in [0, 1] for float ones; frames are scaled to `size` (H, W) first, so that a stream that changes resolution
    midway still yields one size."""
    height, width = size
    name = frame.format.name
    if "f32" in name or "f16" in name:
        image = _linear_to_srgb(frame.to_ndarray(format="gbrpf32le", width=width, height=height))
    elif max(component.bits for component in frame.format.components) > 8:
        image = frame.to_ndarray(format="rgb48le", width=width, height=height)
    else:
        image = frame.to_ndarray(format="rgb24", width=width, height=height)
    quarter_turns = round(frame.rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(image, quarter_turns)) if quarter_turns else image


def _linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """Float images (EXR) hold linear light by convention; the model was trained on sRGB-encoded pictures."""
    x = np.clip(linear, 0.0, 1.0)
    encoded = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return encoded.astype(np.float32)


def _read_image(file: Path, conceal: bool) -> np.ndarray:
    """One picture. Unless `conceal`, any error the decoder detects fails: by default FFmpeg fills the missing rows
    of a truncated JPEG and says nothing. EXR needs its own check (`_check_exr_chunks`): FFmpeg's decoder leaves
    the missing blocks black without an error."""
    suffix = file.suffix.lower()
    if not conceal and suffix == ".exr":
        _check_exr_chunks(file)
    # FFmpeg's strict mode also fails valid TIFFs on tags it merely does not know (ExtraSamples, the alpha of RGBA
    # and LA files); its lenient TIFF decoder still refuses a truncated file (its directory is missing or cut).
    lenient = conceal or suffix in TIFF_EXTENSIONS
    try:
        with av.open(str(file)) as container:
            stream = container.streams.video[0]
            stream.codec_context.options = {} if lenient else {"err_detect": "explode"}
            frame = next(container.decode(stream), None)
            if frame is None:
                raise DVDError(f"cannot decode image {file}: it holds no picture")
            if frame.is_corrupt and not conceal:
                raise DVDError(f"cannot decode image {file}: it decodes with errors (truncated or corrupt)")
            return _to_pixels(frame, (frame.height, frame.width))
    except (av.FFmpegError, IndexError) as error:
        reason = getattr(error, "strerror", None) or "no picture stream"
        raise DVDError(f"cannot decode image {file} ({reason}): it is truncated or not a valid image") from None


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
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # a warning up to twice the limit
            with Image.open(file) as image:
                return image.height, image.width
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise pixel_limit_error(file) from None
    except (UnidentifiedImageError, OSError) as error:
        raise DVDError(f"cannot read image {file} ({error}): check that the file is a valid image") from None


def check_pixel_count(name: str | Path, size: tuple[int, int]) -> None:
    """DVDError for a picture (H, W) beyond the pixel limit dvd keeps for every input (`pixel_limit_error`)."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and size[0] * size[1] > limit:
        raise pixel_limit_error(name, size)


def pixel_limit_error(name: str | Path, size: tuple[int, int] | None = None) -> DVDError:
    """The error for a picture of more pixels than Pillow's limit against decompression bombs
    (PIL.Image.MAX_IMAGE_PIXELS, about 89 million): a small file can unpack to gigabytes."""
    what = f"is {size[1]}x{size[0]} = {size[0] * size[1]} pixels, more than" if size else "has more pixels than"
    return DVDError(
        f"{name} {what} {Image.MAX_IMAGE_PIXELS} per frame, Pillow's limit against decompression bombs "
        "(PIL.Image.MAX_IMAGE_PIXELS): downscale it"
    )


_EXR_MAGIC = b"\x76\x2f\x31\x01"
_EXR_NOT_SCANLINE = 0x200 | 0x800 | 0x1000  # version flags: tiled, deep, multi-part
# Scan lines per chunk for each OpenEXR compression code (none, rle, zips, zip, piz, pxr24, b44, b44a, dwaa, dwab).
_EXR_LINES_PER_CHUNK = (1, 1, 1, 16, 32, 16, 32, 32, 32, 256)


def _exr_header(file: Path) -> tuple[dict[bytes, bytes], int, bytes]:
    """The header attributes (name -> value bytes), where the header ends, and the bytes read (the header and
    what follows it, up to 1 MiB: enough for the chunk offset table of any picture this tool can take)."""
    with open(file, "rb") as handle:
        data = handle.read(1 << 20)
    attributes: dict[bytes, bytes] = {}
    offset = 8
    try:
        while data[:4] == _EXR_MAGIC and data[offset] != 0:
            name_end = data.index(b"\0", offset)
            type_end = data.index(b"\0", name_end + 1)
            (length,) = struct.unpack_from("<i", data, type_end + 1)
            value_at = type_end + 5
            attributes[data[offset:name_end]] = data[value_at : value_at + length]
            offset = value_at + length
    except (IndexError, ValueError, struct.error):
        pass  # a truncated header: reported by the callers like any other unreadable one
    if b"dataWindow" not in attributes or len(attributes[b"dataWindow"]) != 16:
        raise DVDError(f"cannot read image {file}: not an OpenEXR file with a dataWindow; check the file")
    return attributes, offset + 1, data


def _exr_size(file: Path) -> tuple[int, int]:
    """(H, W) from the dataWindow attribute of an OpenEXR header (name\\0 type\\0 int32 size, value)."""
    x_min, y_min, x_max, y_max = struct.unpack("<4i", _exr_header(file)[0][b"dataWindow"])
    return y_max - y_min + 1, x_max - x_min + 1


def _check_exr_chunks(file: Path) -> None:
    """Fail when a scan-line chunk of a single-part EXR lies beyond the end of the file (a truncated file)."""
    attributes, table_at, data = _exr_header(file)
    (flags,) = struct.unpack_from("<i", data, 4)
    compression = attributes.get(b"compression", b"\0")[0]
    if flags & _EXR_NOT_SCANLINE or compression >= len(_EXR_LINES_PER_CHUNK):
        return  # tiled, deep, multi-part or new compressions: left to the decoder
    height = _exr_size(file)[0]
    chunks = -(-height // _EXR_LINES_PER_CHUNK[compression])
    size = file.stat().st_size
    try:
        offsets = struct.unpack_from(f"<{chunks}Q", data, table_at)
    except struct.error:
        offsets = (size,)  # the offset table itself is cut short
    with open(file, "rb") as handle:
        for offset in offsets:
            handle.seek(min(offset, size))
            header = handle.read(8)  # int32 first line, int32 byte count
            if len(header) < 8 or offset + 8 + struct.unpack("<ii", header)[1] > size:
                raise DVDError(f"cannot decode image {file}: it is truncated (its pixel data ends early)")


def _check_stride(stride: int) -> int:
    if stride < 1:
        raise DVDError(f"--stride (stride) must be 1 (every frame) or more, got {stride}")
    return stride


def _check_max_frames(max_frames: int) -> int:
    if max_frames < 1:
        raise DVDError(f"--max-frames (max_frames) must be 1 or more, or left out for no limit; got {max_frames}")
    return max_frames
