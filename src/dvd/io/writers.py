"""Writers for the outputs of `dvd predict`, fed frame by frame so that memory does not grow with video length.

Each writer writes into a directory the caller owns (the caller writes into a temporary directory and renames it
when everything is closed) and takes disparity as [H, W] or [T, H, W] float arrays, in order, with `write`, and
optionally each frame's presentation time in seconds: the videos keep those times (variable frame rates included).
The 8- and 16-bit outputs map disparity to [0, 1] through one `DisparityRange`, fixed before the first frame and
recorded in `meta()`, because a streamed video has no global min and max until it ends.

| format  | written                          | values                                                         |
|---------|----------------------------------|----------------------------------------------------------------|
| npy     | disparity.npy, float32 [T, H, W] | raw disparity                                                  |
| png16   | depth_png16/000000.png, ...      | u = round(65535 * normalised); disparity = lo + u/65535*(hi-lo) |
| exr     | depth_exr/000000.exr, ...        | raw disparity, float32, one channel (Y)                        |
| mp4     | depth_vis.mp4 (H.264, yuv420p)   | colour map of the normalised disparity                         |
| sbs     | depth_sbs.mp4                    | RGB frame | colour map, side by side                           |
"""

from __future__ import annotations

import itertools
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, VideoReformatter
from PIL import Image

from dvd.errors import DVDError
from dvd.io.colormaps import DEFAULT_COLORMAP, colorize, colorize_yuv420, colormap_table
from dvd.io.readers import frame_rate
from dvd.options import DEFAULT_FORMATS, WRITER_FORMATS

if TYPE_CHECKING:
    from typing import Self


_PERCENTILE_SAMPLE = 1 << 22  # percentiles of more values than this use an evenly strided sample
DEGENERATE_SPREAD = 1e-4  # a percentile spread below this fraction of the values' magnitude is noise, not content


@dataclass(frozen=True)
class DisparityRange:
    """The linear map from disparity to [0, 1] shared by every 8/16-bit writer: v = clip((d - lo) / (hi - lo), 0, 1).

    `fit` is the rule: the 1st and 99th percentiles of the first stitched window's finite values, widened by 10% of
    their distance on each side so that later, nearer or farther, content still fits; anything beyond is clipped.
    A degenerate window (percentiles closer than DEGENERATE_SPREAD of the values' magnitude, e.g. a black intro)
    gets mid +- max(|mid|, 1) / 2 instead: wide enough for the content that follows, whatever the disparity scale.
    """

    lo: float
    hi: float

    def __post_init__(self) -> None:
        # Plain floats, so that meta.json can hold them whatever numpy scalar type was passed in.
        object.__setattr__(self, "lo", float(self.lo))
        object.__setattr__(self, "hi", float(self.hi))
        if not (np.isfinite(self.lo) and np.isfinite(self.hi) and self.hi > self.lo):
            raise ValueError(f"a disparity range needs finite lo < hi, got lo={self.lo}, hi={self.hi}")

    @classmethod
    def fit(
        cls, disparity: np.ndarray, low_percentile: float = 1.0, high_percentile: float = 99.0, headroom: float = 0.1
    ) -> DisparityRange:
        """The range for `disparity` (any shape, e.g. the first window [T, H, W]); DVDError if none is finite."""
        values = np.asarray(disparity, dtype=np.float32).ravel()
        values = values[:: max(1, values.size // _PERCENTILE_SAMPLE)]
        values = values[np.isfinite(values)]
        if not values.size:
            raise DVDError(
                "the disparity is all NaN or infinite, so the png16/mp4/sbs outputs have no range to "
                "map it to: the model's output is unusable; check the weights and --dtype (try float32)"
            )
        low, high = (float(p) for p in np.percentile(values, [low_percentile, high_percentile]))
        mid = (low + high) / 2
        if high - low <= DEGENERATE_SPREAD * max(abs(mid), 1.0):
            half = max(abs(mid), 1.0) / 2
            return cls(mid - half, mid + half)
        margin = headroom * (high - low)
        return cls(low - margin, high + margin)

    def normalise(self, disparity: np.ndarray) -> np.ndarray:
        """float32 values in [0, 1]: 0 at lo (far), 1 at hi (near)."""
        # One new array, updated in place: the same values as ((d - lo) / (hi - lo)).clip(0, 1), with less traffic.
        scaled = np.subtract(
            disparity, np.float32(self.lo), out=np.empty(np.shape(disparity), np.float32), dtype=np.float32
        )
        np.divide(scaled, np.float32(self.hi - self.lo), out=scaled)
        return np.clip(scaled, 0.0, 1.0, out=scaled)

    def to_uint16(self, disparity: np.ndarray) -> np.ndarray:
        """The PNG16 code u = round(65535 * normalise(d)); disparity = lo + u / 65535 * (hi - lo)."""
        return np.rint(self.normalise(disparity) * np.float32(65535)).astype(np.uint16)

    def as_dict(self) -> dict:
        return {"lo": self.lo, "hi": self.hi, "normalised": "clip((disparity - lo) / (hi - lo), 0, 1)"}


class Writer(ABC):
    """Write disparity frames in order; close once. `needs_rgb` writers also take the RGB frames (same T, H, W)."""

    format: str
    needs_rgb: bool = False

    @abstractmethod
    def write(
        self, disparity: np.ndarray, rgb: np.ndarray | None = None, times: Sequence[Fraction] | None = None
    ) -> None:
        """Append disparity [H, W] or [T, H, W]; rgb [T, H, W, 3] (uint8, or float in [0, 1]) if needs_rgb; `times`
        (T increasing seconds from the first frame) where the output has a timeline, else frame index / fps."""

    @abstractmethod
    def close(self) -> None:
        """Finish the files. Safe to call twice."""

    @abstractmethod
    def meta(self) -> dict:
        """What was written, for meta.json."""

    def sync(self) -> None:
        """Make every frame written so far durable on disk (a resumable run's checkpoint); files finished only by
        `close` have nothing to make durable before it."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class NpyWriter(Writer):
    """disparity.npy, float32 [T, H, W], appended frame by frame. The header reserves room for any T and is
    rewritten with the real T on close, so T need not be known in advance.

    `resume_at` > 0 goes on with the unfinished file an interrupted run left in `directory`, after its first
    `resume_at` frames (dvd predict --resume); whatever it wrote past them is cut off."""

    format = "npy"
    filename = "disparity.npy"
    _MAGIC = b"\x93NUMPY\x01\x00"
    _COUNT_DIGITS = 21  # room in the header for any frame count numpy can address

    def __init__(self, directory: str | Path, resume_at: int = 0) -> None:
        self.path = Path(directory) / self.filename
        self._frame_shape: tuple[int, int] = (0, 0)
        self._count = 0
        if resume_at:
            self._file = open(self.path, "r+b")  # noqa: SIM115 - stays open across write() calls until close()
            np.lib.format.read_magic(self._file)
            self._frame_shape = np.lib.format.read_array_header_1_0(self._file)[0][1:]
            self._count = resume_at
            self._file.truncate(self._file.tell() + resume_at * self._frame_shape[0] * self._frame_shape[1] * 4)
            self._file.seek(0, os.SEEK_END)
        else:
            self._file = open(self.path, "wb")  # noqa: SIM115 - stays open across write() calls until close()

    def write(
        self, disparity: np.ndarray, rgb: np.ndarray | None = None, times: Sequence[Fraction] | None = None
    ) -> None:
        frames = np.ascontiguousarray(_as_frames(disparity), dtype="<f4")
        if self._file.tell() == 0:
            self._frame_shape = frames.shape[1:]
            self._file.write(self._header(0))
        elif frames.shape[1:] != self._frame_shape:
            raise ValueError(f"frame size changed from {self._frame_shape} to {frames.shape[1:]}")
        self._file.write(frames.data)
        self._file.flush()  # a reader of the growing file (the second pass, right behind) sees each frame at once
        self._count += len(frames)

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            self._file.seek(0)
            self._file.write(self._header(self._count))
        finally:
            self._file.close()

    def meta(self) -> dict:
        return {"file": self.filename, "dtype": "float32", "shape": [self._count, *self._frame_shape]}

    def sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def _header(self, count: int) -> bytes:
        """A version 1.0 .npy header of fixed length: the count is padded to _COUNT_DIGITS with spaces."""
        height, width = self._frame_shape
        text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({count}, {height}, {width}), }}"
        text += " " * (self._COUNT_DIGITS - len(str(count)))
        # numpy wants the data 64-byte aligned: magic (8) + length (2) + text + "\n".
        text += " " * (-(len(self._MAGIC) + 2 + len(text) + 1) % 64) + "\n"
        return self._MAGIC + len(text).to_bytes(2, "little") + text.encode("latin1")


class NpyFrames:
    """The frames of a [T, H, W] .npy file (such as `NpyWriter`'s), read one at a time with plain reads.

    For a pass over a finished disparity.npy: the pages of a memory map (np.load(mmap_mode="r")) count in the
    process's RSS once touched, so a pass over a long video through a map grows the RSS by the whole file (3 GiB
    for 10,000 frames of 320x240); frames read here are the caller's arrays, freed with them.

    `frames` reads a file that `NpyWriter` is still writing, whose header holds the real count only once it is
    closed: the count to read (each frame must be on disk before it is read).
    """

    def __init__(self, path: str | Path, frames: int | None = None) -> None:
        self.path = Path(path)
        self._file = open(self.path, "rb")  # noqa: SIM115 - stays open across reads until close()
        try:
            version = np.lib.format.read_magic(self._file)
            header_1_0 = version == (1, 0)
            read_header = np.lib.format.read_array_header_1_0 if header_1_0 else np.lib.format.read_array_header_2_0
            shape, fortran_order, self.dtype = read_header(self._file)
        except ValueError as error:
            self._file.close()
            raise DVDError(f"{self.path} is not a readable .npy file ({error}): check the file") from None
        if len(shape) != 3 or fortran_order:
            self._file.close()
            raise DVDError(f"{self.path} holds an array of shape {shape}: expected C-ordered frames [T, H, W]")
        self.shape: tuple[int, int, int] = (shape[0] if frames is None else frames, shape[1], shape[2])
        self._offset = self._file.tell()
        self._frame_bytes = shape[1] * shape[2] * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> np.ndarray:
        """Frame `index` (negative counts from the end) as a new [H, W] array."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"frame {index} of {len(self)}")
        data = os.pread(self._file.fileno(), self._frame_bytes, self._offset + (index % len(self)) * self._frame_bytes)
        if len(data) != self._frame_bytes:
            raise DVDError(f"{self.path} ends inside frame {index}: the file is truncated")
        return np.frombuffer(data, self.dtype).reshape(self.shape[1:])

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[index] for index in range(len(self)))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _ImageSequenceWriter(Writer):
    """One numbered image per frame in a sub-folder: 000000.<ext>, 000001.<ext>, ..."""

    folder: ClassVar[str]
    extension: ClassVar[str]

    def __init__(self, directory: str | Path, resume_at: int = 0) -> None:
        """`resume_at` > 0 goes on after the first `resume_at` images an interrupted run left (dvd predict
        --resume); the ones it wrote past them are removed."""
        self.directory = Path(directory) / self.folder
        self.directory.mkdir(exist_ok=resume_at > 0)
        self._count = self._synced = resume_at
        for path in self.directory.glob(f"*{self.extension}"):
            if not path.stem.isdigit() or int(path.stem) >= resume_at:
                path.unlink()

    def write(
        self, disparity: np.ndarray, rgb: np.ndarray | None = None, times: Sequence[Fraction] | None = None
    ) -> None:
        for frame in _as_frames(disparity):
            self._save(frame, self._path(self._count))
            self._count += 1

    def sync(self) -> None:
        for index in range(self._synced, self._count):
            descriptor = os.open(self._path(index), os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        self._synced = self._count

    def _path(self, index: int) -> Path:
        return self.directory / f"{index:06d}{self.extension}"

    def close(self) -> None:
        """Every image is complete once `write` returns."""

    def meta(self) -> dict:
        return {"folder": self.folder, "frames": self._count, "pattern": f"%06d{self.extension}"}

    @abstractmethod
    def _save(self, frame: np.ndarray, path: Path) -> None:
        """Write one [H, W] disparity frame to path."""


class Png16Writer(_ImageSequenceWriter):
    """16-bit grayscale PNGs of the disparity mapped through a DisparityRange."""

    format = "png16"
    folder = "depth_png16"
    extension = ".png"

    def __init__(self, directory: str | Path, value_range: DisparityRange) -> None:
        super().__init__(directory)
        self.value_range = value_range

    def _save(self, frame: np.ndarray, path: Path) -> None:
        # zlib level 1: on smooth 16-bit depth frames the higher levels take longer and shrink the files little.
        Image.fromarray(self.value_range.to_uint16(frame)).save(path, compress_level=1)

    def meta(self) -> dict:
        decode = "disparity = lo + u / 65535 * (hi - lo)"
        return {**super().meta(), **self.value_range.as_dict(), "decode": decode}


class ExrWriter(_ImageSequenceWriter):
    """Raw float32 disparity as single-channel (Y) OpenEXR images, ZIP-compressed (lossless)."""

    format = "exr"
    folder = "depth_exr"
    extension = ".exr"

    def _save(self, frame: np.ndarray, path: Path) -> None:
        with av.open(str(path), "w", format="image2") as container:
            stream = container.add_stream("exr", rate=1, options={"compression": "zip16"})
            stream.height, stream.width = frame.shape
            stream.pix_fmt = "grayf32le"
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame, dtype=np.float32), format="grayf32le")
            for packet in (*stream.encode(image), *stream.encode()):
                container.mux(packet)

    def meta(self) -> dict:
        return {**super().meta(), "values": "raw disparity, float32, channel Y"}


class VideoWriter(Writer):
    """H.264 mp4 (yuv420p, BT.709, crf 18) of the colour-mapped disparity, or with `side_by_side` of
    RGB | colour map. Odd sizes are padded by one edge row/column, since yuv420p needs even sides.

    x264's `superfast` preset: the default (`medium`) costs ~100 ms of CPU per 720p frame, five times as much, for
    files about as large at the same crf; the encoder must keep up with the model (`benchmarks/host_throughput.py`).

    Frames are stamped in `time_base` (default 1 / fps): with the source's time base and the times passed to
    `write`, a variable-frame-rate source keeps its timeline exactly; `fps` is then the nominal (average) rate.
    """

    PRESET = "superfast"
    STRIP_PIXELS = 1 << 17  # pixels colour-mapped at a time (`_colour_yuv420`): 0.5 MiB of float32, in L2 cache

    def __init__(
        self,
        directory: str | Path,
        fps: float | str | Fraction,
        value_range: DisparityRange,
        colormap: str = DEFAULT_COLORMAP,
        side_by_side: bool = False,
        crf: int = 18,
        time_base: Fraction | None = None,
    ) -> None:
        colormap_table(colormap)  # an unknown name fails now, not at the first frame
        self.format = "sbs" if side_by_side else "mp4"
        self.needs_rgb = side_by_side
        self.path = Path(directory) / ("depth_sbs.mp4" if side_by_side else "depth_vis.mp4")
        self.rate = frame_rate(fps)
        self.time_base = time_base or 1 / self.rate
        self.value_range = value_range
        self.colormap = colormap
        self.crf = crf
        self._container: av.container.OutputContainer | None = None
        self._stream: av.VideoStream | None = None
        self._count = 0
        self._last_pts = -1
        self._reformatter = VideoReformatter()

    def write(
        self, disparity: np.ndarray, rgb: np.ndarray | None = None, times: Sequence[Fraction] | None = None
    ) -> None:
        frames = _as_frames(disparity)
        if self.needs_rgb:
            rgb = None if rgb is None else (rgb[None] if rgb.ndim == 3 else rgb)
            if rgb is None or rgb.shape != (*frames.shape, 3):
                raise ValueError(f"side-by-side output needs RGB frames of shape {(*frames.shape, 3)}")
        if times is not None and len(times) != len(frames):
            raise ValueError(f"got {len(times)} frame times for {len(frames)} frames")
        for index, frame in enumerate(frames):
            if self.needs_rgb:
                colour = colorize(self.value_range.normalise(frame), self.colormap)
                picture = np.concatenate([_to_uint8(rgb[index]), colour], axis=1)
                image = self._rgb_to_yuv(_pad_to_even(picture))
            else:
                image = self._colour_yuv420(frame)
            self._encode(image, (self._count / self.rate) if times is None else Fraction(times[index]))

    def close(self) -> None:
        if self._container is None:
            return
        container, self._container = self._container, None
        try:
            for packet in self._stream.encode():
                container.mux(packet)
        finally:
            container.close()

    def meta(self) -> dict:
        return {
            "file": self.path.name,
            "frames": self._count,
            "fps": float(self.rate),
            "colormap": self.colormap,
            **self.value_range.as_dict(),
        }

    def _colour_yuv420(self, disparity: np.ndarray) -> av.VideoFrame:
        """One disparity frame [H, W] colour-mapped straight to a yuv420p picture (no RGB picture, no per-pixel
        conversion: `colorize_yuv420`), a strip of rows at a time. Whole-frame temporaries (the normalised values,
        the table indices, numpy's intp copy of them for each lookup) would be several MiB each: fresh pages to
        fault in for every frame, and a trip through memory for each step. Strips of `STRIP_PIXELS` stay in the
        CPU's cache; every value depends on its own pixel or 2x2 block only, so the planes are the same bytes."""
        disparity = _pad_to_even(disparity)
        height, width = disparity.shape
        luma = height * width
        planes = np.empty(luma * 3 // 2, np.uint8)  # yuv420p: the Y plane, then Cb, then Cr, row after row
        y_plane, cb_plane, cr_plane = np.split(planes, [luma, luma * 5 // 4])
        rows = max(2, self.STRIP_PIXELS // width // 2 * 2)  # even: a strip holds whole 2x2 blocks
        for top in range(0, height, rows):
            normalised = self.value_range.normalise(disparity[top : top + rows])
            size = normalised.size
            y, cb, cr = np.split(colorize_yuv420(normalised, self.colormap).ravel(), [size, size * 5 // 4])
            y_plane[top * width : top * width + size] = y
            cb_plane[top * width // 4 : (top * width + size) // 4] = cb
            cr_plane[top * width // 4 : (top * width + size) // 4] = cr
        return av.VideoFrame.from_ndarray(planes.reshape(height * 3 // 2, width), format="yuv420p")

    def _rgb_to_yuv(self, picture: np.ndarray) -> av.VideoFrame:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
        # Convert with the matrix the stream is tagged with, so players show the colours of the table. One reformatter
        # for the whole video: `VideoFrame.reformat` builds a new conversion context per frame, half the cost.
        return self._reformatter.reformat(
            frame, format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG
        )

    def _encode(self, frame: av.VideoFrame, time: Fraction) -> None:
        """Encode one yuv420p frame (BT.709, limited range) at `time`."""
        if self._container is None:
            self._open(frame.height, frame.width)
        # Time stamps must rise strictly; two source frames closer than one tick (a broken source) are pushed apart.
        frame.pts = self._last_pts = max(round(time / self.time_base), self._last_pts + 1)
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self._count += 1

    def _open(self, height: int, width: int) -> None:
        self._container = av.open(str(self.path), "w")
        options = {"crf": str(self.crf), "preset": self.PRESET}
        self._stream = self._container.add_stream("libx264", rate=self.rate, options=options)
        self._stream.height, self._stream.width, self._stream.pix_fmt = height, width, "yuv420p"
        # x264's frame threads (its own count, 1.5 a core) rather than PyAV's default of slice threads: `encode`
        # hands the frame over and returns, so the next frame is colour-mapped while x264 encodes this one; with
        # slices each call waits for its frame. The bits depend on the thread count either way.
        self._stream.codec_context.thread_type = "FRAME"
        self._stream.time_base = self._stream.codec_context.time_base = self.time_base
        context = self._stream.codec_context
        context.colorspace = context.color_primaries = context.color_trc = 1  # BT.709
        context.color_range = int(ColorRange.MPEG)


class WriterGroup(Writer):
    """Several writers fed together; `meta()` maps each format to its writer's meta."""

    format = "group"

    def __init__(self, writers: Sequence[Writer]) -> None:
        self.writers = list(writers)
        self.needs_rgb = any(writer.needs_rgb for writer in self.writers)

    def write(
        self, disparity: np.ndarray, rgb: np.ndarray | None = None, times: Sequence[Fraction] | None = None
    ) -> None:
        for writer in self.writers:
            writer.write(disparity, rgb, times)

    def close(self) -> None:
        """Close all, even when one fails; the first failure is raised after."""
        failure: BaseException | None = None
        for writer in self.writers:
            try:
                writer.close()
            except BaseException as error:  # noqa: BLE001 - the rest must still be closed, also on Ctrl-C
                failure = failure or error
        if failure is not None:
            raise failure

    def meta(self) -> dict:
        return {writer.format: writer.meta() for writer in self.writers}


def open_writers(
    directory: str | Path,
    formats: Sequence[str] = DEFAULT_FORMATS,
    *,
    fps: float | str | Fraction,
    value_range: DisparityRange | None = None,
    colormap: str = DEFAULT_COLORMAP,
    time_base: Fraction | None = None,
    resume_at: int = 0,
) -> WriterGroup:
    """Writers for `formats` (names from WRITER_FORMATS) in `directory`, which must exist. `value_range` is
    required by png16, mp4 and sbs; `time_base` is the videos' (see VideoWriter). `resume_at` > 0 goes on after
    that many frames of an interrupted run's npy and exr files (the videos' encoders cannot go on)."""
    unknown = sorted(set(formats) - set(WRITER_FORMATS))
    if unknown:
        raise ValueError(f"unknown output formats {unknown}; known: {WRITER_FORMATS}")
    if resume_at and set(formats) - {"npy", "exr"}:
        raise ValueError(f"only npy and exr outputs can be resumed, not {sorted(set(formats) - {'npy', 'exr'})}")
    if value_range is None and set(formats) & {"png16", "mp4", "sbs"}:
        raise ValueError("png16, mp4 and sbs outputs need a DisparityRange (see DisparityRange.fit)")
    factories = {
        "npy": lambda: NpyWriter(directory, resume_at),
        "png16": lambda: Png16Writer(directory, value_range),
        "exr": lambda: ExrWriter(directory, resume_at),
        "mp4": lambda: VideoWriter(directory, fps, value_range, colormap, time_base=time_base),
        "sbs": lambda: VideoWriter(directory, fps, value_range, colormap, side_by_side=True, time_base=time_base),
    }
    writers: list[Writer] = []
    try:
        for name in dict.fromkeys(formats):
            writers.append(factories[name]())
    except BaseException:
        WriterGroup(writers).close()
        raise
    return WriterGroup(writers)


def write_rgb_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float | str | Fraction,
    *,
    crf: int = 18,
    preset: str | None = None,
) -> Path:
    """Encode uint8 RGB frames [H, W, 3], all of one size, as an H.264 mp4 (libx264, yuv420p) at `path`; odd sides
    get one more edge row or column (yuv420p). `preset` is x264's (None: its default, medium). Frames may come from
    a generator, one at a time. The file is written in place: a caller that must not leave a half-written file
    writes to a temporary path (`dvd.io.atomic.atomic_file`). Returns `path`."""
    pictures = iter(frames)
    first = next(pictures, None)
    if first is None:
        raise ValueError(f"no frames to write to {path}")
    shape = np.shape(first)
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"expected RGB frames [H, W, 3], got shape {shape}")
    options = {"crf": str(crf), **({"preset": preset} if preset else {})}
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=frame_rate(fps), options=options)
        stream.height, stream.width = _pad_to_even(first).shape[:2]
        stream.pix_fmt = "yuv420p"
        for picture in itertools.chain([first], pictures):
            # The encoder would silently rescale a frame of another size and reinterpret other dtypes.
            if picture.dtype != np.uint8 or picture.shape != shape:
                raise ValueError(f"expected uint8 frames of shape {shape}, got {picture.dtype} {picture.shape}")
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(_pad_to_even(picture)), format="rgb24")
            container.mux(stream.encode(image))
        container.mux(stream.encode())
    return Path(path)


def _as_frames(disparity: np.ndarray) -> np.ndarray:
    frames = np.asarray(disparity, dtype=np.float32)
    if frames.ndim == 2:
        return frames[None]
    if frames.ndim != 3:
        raise ValueError(f"expected disparity [H,W] or [T,H,W], got shape {frames.shape}")
    return frames


def _pad_to_even(picture: np.ndarray) -> np.ndarray:
    """yuv420p needs even sides: an odd one gets one more edge row or column."""
    height, width = picture.shape[:2]
    if not (height % 2 or width % 2):
        return picture
    return np.pad(picture, ((0, height % 2), (0, width % 2)) + ((0, 0),) * (picture.ndim - 2), mode="edge")


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype == np.uint8:
        return rgb
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)
