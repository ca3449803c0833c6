"""The host stages in threads (`dvd.jobs.host`): the same outputs as in one thread, errors and interrupts that
come back to the caller as themselves, and no thread left running."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
from model_stub import StandInPipe
from threadpoolctl import threadpool_info

from dvd.engine.video import VideoSettings
from dvd.errors import DVDError
from dvd.io.readers import VideoSource, open_source
from dvd.io.writers import NpyWriter, VideoWriter
from dvd.jobs.host import Drain, Prefetch
from dvd.jobs.outputs import OutputSettings, predict_to_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = VideoSettings(height=32, width=48, window=9, overlap=4)  # 160x90 -> 32x64, several windows per clip
ALL_FORMATS = ("npy", "png16", "exr", "mp4", "sbs")


class FakePipe(StandInPipe):
    """Disparity = frame brightness plus a ramp over the window, so that stitching has something to align."""

    weights_id = "fake"

    def __init__(self, fail_on_call: int | None = None, error: BaseException | None = None) -> None:
        self.calls = 0
        self.fail_on_call, self.error = fail_on_call, error

    def predict_windows(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise self.error
        return [w.mean(axis=-1) + 0.01 * np.arange(len(w), dtype=np.float32)[:, None, None] for w in windows]


def host_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name in ("dvd-read", "dvd-write")]


def wait_for_no_host_threads() -> None:
    """The stages join their threads before returning; allow a moment for the interpreter to reap them."""
    deadline = time.monotonic() + 5
    while host_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not host_threads()


@pytest.fixture(scope="module")
def variable_rate_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 frames of 160x90 whose intervals alternate 1/24 and 3/24 s: the mp4 timeline must follow them."""
    path = tmp_path_factory.mktemp("vfr") / "vfr.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24, options={"preset": "ultrafast"})
        stream.height, stream.width, stream.pix_fmt = 90, 160, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 24)
        pts = 0
        for index in range(40):
            picture = np.full((90, 160, 3), (index * 6) % 256, dtype=np.uint8)
            picture[:, (index * 3) % 160 :] //= 2
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 24)
            pts += 1 if index % 2 else 3
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def folder_contents(folder: Path) -> dict[str, object]:
    """Every file's bytes, except the mp4s (their frames and time stamps instead) and meta.json's wall time."""
    contents: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.suffix == ".mp4":
            with av.open(str(path)) as container:
                contents[name] = [(frame.pts, frame.to_ndarray().tobytes()) for frame in container.decode(video=0)]
        elif path.name == "meta.json":
            contents[name] = path.read_text().split('"seconds"')[0]
        elif path.is_file():
            contents[name] = path.read_bytes()
    return contents


@pytest.mark.parametrize("stride", [1, 2])
def test_threads_write_exactly_what_one_thread_writes(tmp_path: Path, clip: Path, stride: int) -> None:
    output = OutputSettings(formats=ALL_FORMATS, stride=stride)
    for threaded in (True, False):
        count = predict_to_folder(
            FakePipe(), open_source(clip), tmp_path / str(threaded), SMALL, output, host_threads=threaded
        )
        assert count == -(-30 // stride)
    threaded, single = folder_contents(tmp_path / "True"), folder_contents(tmp_path / "False")
    assert threaded.keys() == single.keys() and "depth_sbs.mp4" in threaded
    for name in threaded:
        assert threaded[name] == single[name], name
    wait_for_no_host_threads()


def test_threads_keep_a_variable_frame_rate_timeline(tmp_path: Path, variable_rate_clip: Path) -> None:
    output = OutputSettings(formats=("npy", "mp4"))
    for threaded in (True, False):
        predict_to_folder(
            FakePipe(), open_source(variable_rate_clip), tmp_path / str(threaded), SMALL, output, host_threads=threaded
        )
    threaded, single = folder_contents(tmp_path / "True"), folder_contents(tmp_path / "False")
    assert threaded == single and "frame_times.txt" in threaded
    steps = np.diff([pts for pts, _ in threaded["depth_vis.mp4"]])
    assert len(set(steps.tolist())) == 2  # both intervals survived, in order


def test_progress_counts_every_frame_in_order(tmp_path: Path, clip: Path) -> None:
    seen: list[int] = []
    predict_to_folder(FakePipe(), open_source(clip), tmp_path / "out", SMALL, OutputSettings(), seen.append)
    assert seen == list(range(1, 31))


def test_a_writer_error_comes_back_as_itself(tmp_path: Path, clip: Path, monkeypatch) -> None:
    written = 0
    write = NpyWriter.write

    def disk_full(self, disparity, rgb=None, times=None) -> None:
        nonlocal written
        written += 1
        if written == 12:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        write(self, disparity, rgb, times)

    monkeypatch.setattr(NpyWriter, "write", disk_full)
    with pytest.raises(OSError) as failure:
        predict_to_folder(FakePipe(), open_source(clip), tmp_path / "out", SMALL, OutputSettings())
    assert failure.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []  # the staging folder is gone
    wait_for_no_host_threads()


def npy_waiting_for_the_video(monkeypatch, last: int, fail: bool = False) -> list[bool]:
    """NpyWriter.write holds frame `last` back until the second pass has written a video frame (10 s at most), then
    writes it, or fails with ENOSPC when `fail`; returns [whether the video frame came first]."""
    began = threading.Event()
    came_first: list[bool] = []
    write_npy, write_video = NpyWriter.write, VideoWriter.write

    def npy(self, disparity, rgb=None, times=None) -> None:
        if self._count == last:
            came_first.append(began.wait(10))
            if fail:
                raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        write_npy(self, disparity, rgb, times)

    def video(self, disparity, rgb=None, times=None) -> None:
        write_video(self, disparity, rgb, times)
        began.set()

    monkeypatch.setattr(NpyWriter, "write", npy)
    monkeypatch.setattr(VideoWriter, "write", video)
    return came_first


def test_the_second_pass_follows_the_writing_thread(tmp_path: Path, clip: Path, monkeypatch) -> None:
    """png16/mp4/sbs start as soon as the last frame is stitched, reading each frame of disparity.npy once it is
    written, with the bytes of a run that writes them after disparity.npy is complete (one thread)."""
    output = OutputSettings(formats=ALL_FORMATS)
    predict_to_folder(FakePipe(), open_source(clip), tmp_path / "single", SMALL, output, host_threads=False)
    came_first = npy_waiting_for_the_video(monkeypatch, last=29)
    predict_to_folder(FakePipe(), open_source(clip), tmp_path / "threaded", SMALL, output)
    assert came_first == [True]  # a video frame was written while the npy's last frame was not
    assert folder_contents(tmp_path / "threaded") == folder_contents(tmp_path / "single")
    wait_for_no_host_threads()


def test_a_writer_error_under_the_second_pass_comes_back_as_itself(tmp_path: Path, clip: Path, monkeypatch) -> None:
    came_first = npy_waiting_for_the_video(monkeypatch, last=29, fail=True)
    with pytest.raises(OSError) as failure:
        predict_to_folder(FakePipe(), open_source(clip), tmp_path / "out", SMALL, OutputSettings(formats=ALL_FORMATS))
    assert failure.value.errno == errno.ENOSPC
    assert came_first == [True]  # the second pass was waiting for the frame that failed
    assert list(tmp_path.iterdir()) == []
    wait_for_no_host_threads()


def test_a_decoding_error_comes_back_as_itself(tmp_path: Path, clip: Path, monkeypatch) -> None:
    decode = VideoSource._frames

    def damaged(self, stop, stride) -> Iterator:
        for index, item in enumerate(decode(self, stop, stride)):
            if index == 20:
                raise DVDError(f"{self.path} is damaged: its frame at 0.833 s decodes with errors")
            yield item

    monkeypatch.setattr(VideoSource, "_frames", damaged)
    with pytest.raises(DVDError, match="is damaged"):
        predict_to_folder(FakePipe(), open_source(clip), tmp_path / "out", SMALL, OutputSettings())
    assert list(tmp_path.iterdir()) == []
    wait_for_no_host_threads()


@pytest.mark.parametrize("call", [1, 3], ids=["before writing", "while writing"])
def test_an_interrupt_stops_the_threads_and_removes_the_folder(tmp_path: Path, clip: Path, call: int) -> None:
    pipe = FakePipe(fail_on_call=call, error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        predict_to_folder(pipe, open_source(clip), tmp_path / "out", SMALL, OutputSettings(formats=ALL_FORMATS))
    assert list(tmp_path.iterdir()) == []
    wait_for_no_host_threads()


def test_prefetch_stays_within_its_bound_and_stops_when_left() -> None:
    produced: list[int] = []
    limit = 5 + 3 + 1  # taken + queued + the one waiting to be queued
    at_the_bound, beyond, closed = threading.Event(), threading.Event(), threading.Event()

    def numbers() -> Iterator[int]:
        try:
            for number in range(1000):
                produced.append(number)
                if len(produced) == limit:
                    at_the_bound.set()
                elif len(produced) > limit:
                    beyond.set()
                yield number
        finally:
            closed.set()

    with Prefetch(numbers(), bound=3) as items:
        assert [next(items) for _ in range(5)] == [0, 1, 2, 3, 4]
        assert at_the_bound.wait(30)  # the reader has run ahead as far as the bound lets it
        # Unbounded, it would run on at once through 1000 items; bounded, nothing comes while nothing is taken.
        assert not beyond.wait(0.5), f"{len(produced)} items produced, 5 taken, bound 3"
    assert closed.wait(5)
    wait_for_no_host_threads()


def test_drain_handles_in_order_and_reports_a_failure_on_put() -> None:
    handled: list[int] = []

    def handle(number: int) -> None:
        if number == 5:
            raise ValueError("five")
        handled.append(number)

    with pytest.raises(ValueError, match="five"), Drain(handle, bound=2) as drain:
        for number in range(1000):
            drain.put(number)
    assert handled == [0, 1, 2, 3, 4]
    wait_for_no_host_threads()


def test_the_caller_s_error_wins_and_the_drain_stops() -> None:
    handled: list[int] = []
    with pytest.raises(KeyboardInterrupt), Drain(handled.append, bound=100) as drain:
        drain.put(1)
        raise KeyboardInterrupt
    wait_for_no_host_threads()
    assert handled in ([], [1])


HEAP_HOLES = """
import numpy as np
from dvd.engine.allocator import keep_heap_flat, release_free_memory

def rss_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024

assert keep_heap_flat()
blocks = [np.ones(1 << 17) for _ in range(400)]  # 1 MiB each, below the fixed threshold: heap blocks
del blocks[:-1]  # freed, but the last one, still in use, pins the heap's top above them
before = rss_mib()
release_free_memory()
big = np.ones(64 << 17)  # 64 MiB: above the threshold, its own mapping, given back when freed
del big
print(before - rss_mib())
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the RSS from Linux's /proc")
def test_freed_heap_memory_goes_back_to_the_system():
    """`dvd predict`'s allocator settings: freed blocks below the top of a heap come back (malloc_trim)."""
    import subprocess
    import sys

    from dvd.engine.allocator import _glibc

    if _glibc() is None:
        pytest.skip("the C library is not glibc: the allocator settings are no-ops")
    done = subprocess.run([sys.executable, "-c", HEAP_HOLES], capture_output=True, text=True, check=True)
    assert float(done.stdout) > 300  # of the ~399 MiB freed


def test_free_memory_is_released_at_most_once_in_release_seconds(monkeypatch):
    """The stream may ask after every frame; each trim makes the next frames' pages fresh ones to fault in."""
    from dvd.engine import allocator

    trims: list[int] = []
    clock = [100.0]
    monkeypatch.setattr(allocator, "_glibc", lambda: SimpleNamespace(malloc_trim=trims.append))
    monkeypatch.setattr(allocator.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(allocator, "_released_at", None)
    allocator.release_free_memory()
    allocator.release_free_memory()  # at once: skipped
    clock[0] += allocator.RELEASE_SECONDS / 2
    allocator.release_free_memory()  # still too soon
    clock[0] += allocator.RELEASE_SECONDS
    allocator.release_free_memory()
    assert trims == [0, 0]


def test_the_pool_hands_an_array_out_again_only_when_nothing_refers_to_it():
    import torch

    from dvd.engine.allocator import ArrayPool

    pool = ArrayPool()
    array = pool.empty((4, 5), np.float32)
    address = array.ctypes.data
    del array
    assert pool.empty((4, 5), np.float32).ctypes.data == address  # nothing referred to it: the same memory
    for refer in (lambda array: array[1:], torch.from_numpy, memoryview):
        array = pool.empty((4, 5), np.float32)
        keeper = refer(array)
        del array
        other = pool.empty((4, 5), np.float32)
        assert not np.shares_memory(other, np.asarray(keeper))
        del other, keeper
    assert len(pool) == 2


def test_a_copied_pool_starts_empty():
    import copy
    import pickle

    from dvd.engine.allocator import ArrayPool

    pool = ArrayPool()
    pool.empty((3, 4), np.float32)
    for twin in (copy.deepcopy(pool), pickle.loads(pickle.dumps(pool))):
        assert len(twin) == 0 and twin.empty((2, 2), np.uint8).shape == (2, 2)


def test_the_pool_drops_free_arrays_of_other_shapes():
    from dvd.engine.allocator import ArrayPool

    pool = ArrayPool()
    window, output = pool.empty((3, 4), np.uint8), pool.empty((3, 4), np.float32)
    assert len(pool) == 2
    del window
    shorter = pool.empty((2, 4), np.uint8)  # a new shape: the free uint8 array leaves, the float32 one in use stays
    assert len(pool) == 2 and shorter.shape == (2, 4)
    del output, shorter
    assert pool.empty((2, 4), np.uint8).shape == (2, 4) and len(pool) == 2


def blas_threads() -> list[int]:
    """numpy's BLAS thread counts (other libraries may bring their own BLAS, e.g. OpenCV's, loaded later)."""
    return [
        pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas" and "numpy" in pool["filepath"]
    ]


def test_blas_runs_on_one_thread_inside_serial_blas_and_as_before_after():
    from dvd.jobs.host import serial_blas

    before = blas_threads()
    if not before:
        pytest.skip("threadpoolctl finds no BLAS library of numpy's here")
    with serial_blas():
        assert blas_threads() == [1] * len(before)
    assert blas_threads() == before


def test_predict_runs_its_host_stages_with_serial_blas(tmp_path: Path, clip: Path) -> None:
    if not blas_threads():
        pytest.skip("threadpoolctl finds no BLAS library of numpy's here")
    seen: list[int] = []

    class Pipe(FakePipe):
        def predict_windows(self, windows: list[np.ndarray]) -> list[np.ndarray]:
            seen.extend(blas_threads())
            return super().predict_windows(windows)

    predict_to_folder(Pipe(), open_source(clip), tmp_path / "out", SMALL, OutputSettings(formats=("npy",)))
    assert seen and set(seen) == {1}
