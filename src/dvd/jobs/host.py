"""Host stages in threads: the model (in the calling thread) need not wait for decoding or for writing.

`dvd predict` runs three stages: decoding and resizing to model size, the model calls and stitching, resizing back
and writing. `Prefetch` runs the first in a thread that stays a bounded number of items ahead; `Drain` runs the
last in a thread fed through a bounded queue. Both are context managers that stop and join their thread on the
way out, also on an error or Ctrl-C in the calling thread, so that nothing writes into a folder being removed;
an exception in a thread is raised again, as itself, in the calling thread. With `threaded=False` both run their
work in the calling thread instead, in the same order: the same functions, the same outputs, for debugging and
benchmarks.

Signals reach the main thread only (Python's rule); every wait here is a short timed wait, so the calling thread
notices a failed worker and the worker notices a stop within `POLL_SECONDS`.

`serial_blas` keeps numpy's BLAS to one thread while the host stages run: the only BLAS calls there are small
(the stitcher's dot products), and OpenBLAS's idle workers spin (sched_yield) after each call, taking a core of
the two that decoding, stitching and writing share.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from threadpoolctl import threadpool_limits

from dvd.errors import DVDError

T = TypeVar("T")

POLL_SECONDS = 0.1  # how often a blocked side looks whether the other one has failed or stopped
JOIN_SECONDS = 30.0  # a stopped worker finishes the item in hand (one frame's encode) and closes its files


class _End:
    """Queue marker: the producer is done."""


class _Failed:
    """Queue marker: the producer raised `error`."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Stopped(Exception):
    """Raised inside a worker when the calling thread has given up on it."""


class _BoundedQueue:
    """A bounded queue whose blocking calls give up when `stop` is set or `alive()` turns false."""

    def __init__(self, bound: int, stop: threading.Event) -> None:
        self._queue: queue.Queue = queue.Queue(max(1, bound))
        self._stop = stop

    def put(self, item: object, alive: Callable[[], bool] = lambda: True) -> bool:
        """Put `item`; False (and nothing put) when stopped or the consumer is gone."""
        while not self._stop.is_set() and alive():
            try:
                self._queue.put(item, timeout=POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def get(self, alive: Callable[[], bool]) -> object:
        """The next item; _Stopped when stopped, or when the producer is gone and left nothing."""
        while not self._stop.is_set():
            try:
                return self._queue.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if not alive():
                    break
        raise _Stopped

    def discard(self) -> None:
        """Drop what is queued, so that a producer blocked on a full queue sees the stop at once."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return


class Prefetch(Generic[T]):
    """`items` computed in a daemon thread up to `bound` ahead of the consumer; iterate inside the `with`."""

    def __init__(self, items: Iterable[T], bound: int, threaded: bool = True) -> None:
        self._items = iter(items)
        self._threaded = threaded
        self._stop = threading.Event()
        self._queue = _BoundedQueue(bound, self._stop)
        self._thread = threading.Thread(target=self._produce, name="dvd-read", daemon=True)

    def __enter__(self) -> Iterator[T]:
        if not self._threaded:
            return self._items
        self._thread.start()
        return self._consume()

    def __exit__(self, *exc_info: object) -> None:
        if self._threaded:
            _stop(self._thread, self._stop, self._queue)

    def _produce(self) -> None:
        try:
            for item in self._items:
                if not self._queue.put(item):
                    break
            else:
                self._queue.put(_End())
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which raises it as itself
            self._queue.put(_Failed(error))
        finally:
            # Closes the source here, in the thread that runs it (a generator cannot be closed from another).
            close = getattr(self._items, "close", None)
            if close is not None:
                close()

    def _consume(self) -> Iterator[T]:
        while True:
            try:
                item = self._queue.get(self._thread.is_alive)
            except _Stopped:
                return  # the `with` is being left; the producer has stopped
            if isinstance(item, _End):
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item


class Drain(Generic[T]):
    """`handle(item)` for every item `put` inside the `with`, in order, in a daemon thread fed through a bounded
    queue. A clean exit waits until every item is handled; an exception `handle` raises comes back from the next
    `put` or from leaving the `with`."""

    def __init__(self, handle: Callable[[T], None], bound: int, threaded: bool = True) -> None:
        self._handle = handle
        self._threaded = threaded
        self._stop = threading.Event()
        self._queue = _BoundedQueue(bound, self._stop)
        self._thread = threading.Thread(target=self._run, name="dvd-write", daemon=True)
        self._error: BaseException | None = None

    def __enter__(self) -> Drain[T]:
        if self._threaded:
            self._thread.start()
        return self

    def put(self, item: T) -> None:
        """Hand over the next item (blocks while the queue is full); raises the worker's error if it failed."""
        if not self._threaded:
            self._handle(item)
        elif not self._queue.put(item, self._thread.is_alive):
            self._raise_error()

    def check(self) -> None:
        """Raise the worker's error if it has failed, or DVDError if it stopped without one (the `with` is being
        left): for a thread that waits on the worker's progress."""
        self._raise_error()
        if self._threaded and self._thread.ident is not None and not self._thread.is_alive():
            raise DVDError("the writing thread stopped before it had written every frame")

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if not self._threaded:
            return
        if exc_type is not None:
            _stop(self._thread, self._stop, self._queue)
            return
        try:
            if self._queue.put(_End(), self._thread.is_alive):
                self._thread.join()  # interruptible: Ctrl-C here stops the worker below
        except BaseException:
            _stop(self._thread, self._stop, self._queue)
            raise
        self._raise_error()

    def _run(self) -> None:
        try:
            while not isinstance(item := self._queue.get(lambda: True), _End):
                self._handle(item)
        except _Stopped:
            pass
        except BaseException as error:  # noqa: BLE001 - raised again in the calling thread
            self._error = error

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error


def _stop(thread: threading.Thread, stop: threading.Event, pending: _BoundedQueue) -> None:
    """Tell a worker to stop, unblock it, and wait for it to finish the item in hand."""
    stop.set()
    pending.discard()
    if thread.ident is not None:
        thread.join(JOIN_SECONDS)


@contextmanager
def serial_blas() -> Iterator[None]:
    """numpy's BLAS on one thread inside the `with` (threadpoolctl), as before after it.

    The host stages' BLAS calls (the stitcher's float64 dot products over a frame) take well under a millisecond
    on one core; with a thread per core, OpenBLAS's workers spin for a while after each call, and on a 2-core
    CPU the host path took ~40% more CPU time, user and kernel alike (`benchmarks/host_throughput.py`). One
    thread also makes the sums, hence the disparity's last bits, the same on every machine. torch's own thread
    pool is not touched."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield
