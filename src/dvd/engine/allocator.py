"""The C heap of a long run: glibc's malloc settings that keep `dvd predict`'s memory flat for hours.

What grew: not the live data (the engine holds a bounded number of frames, `benchmarks/memory_long_video.py`
samples it) but the heap around it. glibc serves blocks above its mmap threshold with their own mappings, which go
back to the system when freed; but the threshold is dynamic: each freed mapped block raises it to that block's
size (up to 32 MiB), so from then on the model's activations, the windows and the frames of every size below it
come from the heaps (one per thread that allocates: the reading and writing threads have their own), where a
freed block returns to the system only if nothing above it is still in use. Blocks freed in a different order
than they were taken leave holes that the next, slightly different, set of temporaries does not fit, and the peak
creeps up with the length of the run.

`keep_heap_flat` (called once by `dvd predict`) fixes the threshold at `MMAP_THRESHOLD`: every block from 4 MiB up
is its own mapping, returned when freed, whatever came before; the frames and rows below that size stay in the
heaps, which are cheap to reuse. `release_free_memory` (called by the stream after each model call) hands the free
pages inside the heaps back to the system (malloc_trim), so that a hole costs no RSS for long; at most once every
`RELEASE_SECONDS`, since every page it hands back is a fresh page to fault in (zeroed by the kernel, ~3 us each on
this project's 2-core VM) when the next frames are allocated: trimming after most frames, as the stream once did,
cost ~650 more page faults a frame on a 720p video (`benchmarks/host_throughput.py`).

Both are no-ops where the C library is not glibc (macOS, musl): there is nothing to set.

Window-sized arrays (a window of frames going to the model, its disparity coming back: ~100 MB each at 864x480)
are above the threshold, so each one is a fresh mapping whose pages the kernel zeroes, and on virtual machines that
report free memory to their host (virtio-balloon free page reporting, as on this project's 2-core VMs) each of
those pages also costs the host a fault: filling one such array took 0.01-0.97 s there. `ArrayPool` hands the same
arrays out again once nothing refers to them, so every window after the first few lands in warm pages.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import time
from functools import cache

import numpy as np

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20  # bytes; a 1280x720 uint8 frame (2.6 MiB) and float disparity (3.5 MiB) stay below
TRIM_THRESHOLD = 32 << 20  # free bytes at the top of the main heap kept for reuse, as glibc's dynamic rule ends at
RELEASE_SECONDS = 2.0  # the least time between two malloc_trim calls: about a window of frames at 30 frames/s

_released_at: float | None = None  # time.monotonic() of the last malloc_trim


@cache
def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (it has mallopt and malloc_trim), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


def keep_heap_flat() -> bool:
    """Fix glibc's mmap and trim thresholds for the rest of the process (see the module docstring); True if set."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def release_free_memory() -> None:
    """Return the free pages inside every malloc heap to the system (glibc's malloc_trim), unless that was done
    less than RELEASE_SECONDS ago; a no-op where the C library is not glibc."""
    global _released_at
    libc = _glibc()
    now = time.monotonic()
    if libc is None or (_released_at is not None and now - _released_at < RELEASE_SECONDS):
        return
    libc.malloc_trim(0)
    _released_at = now


class ArrayPool:
    """Arrays of the shapes a run keeps asking for, handed out again once nothing else refers to them.

    `empty(shape, dtype)` is `np.empty` that reuses a pooled array of that shape and type when the pool holds the
    only reference to it: any view, tensor (`torch.from_numpy`) or buffer of an array refers to the array itself,
    so an array whose frames someone still reads is never handed out twice. When none is free, a new array joins
    the pool, and the free arrays of other shapes leave it (the inputs changed size: a new video, or a shorter last
    window). So the pool holds as many arrays as were ever in use at once since the shape last changed: the
    windows a stitcher holds, plus one call's. Thread-safe.
    """

    def __init__(self) -> None:
        self._arrays: list[np.ndarray] = []
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """An array of `shape` and `dtype` with undefined contents, as `np.empty`."""
        shape, dtype = tuple(shape), np.dtype(dtype)
        with self._lock:
            free = [index for index in range(len(self._arrays)) if self._unreferenced(index)]
            for index in free:
                if self._arrays[index].shape == shape and self._arrays[index].dtype == dtype:
                    return self._arrays[index]
            self._arrays = [array for index, array in enumerate(self._arrays) if index not in free]
            array = np.empty(shape, dtype)
            self._arrays.append(array)
            return array

    def __len__(self) -> int:
        return len(self._arrays)

    def __getstate__(self) -> dict:
        return {}  # a copy (deepcopy, pickle) starts empty: the arrays are scratch memory, not state

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def _unreferenced(self, index: int) -> bool:
        # Two references: the pool's list and getrefcount's own argument.
        return sys.getrefcount(self._arrays[index]) <= 2
