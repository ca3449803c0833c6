"""Where the time of a run goes: per-stage timers for `dvd bench` and the progress bar, and FLOP counts on meta copies.

`DVDPipeline.predict_windows` reports its stages to `pipe.stage_timer` (a no-op unless a profiler sets one):
"transfer" (window -> tensor, padding, to the device and back, the finite check) around the model's
`MODEL_STAGES` (VAE encode, DiT, VAE decode). Each stage records its own time only: a stage entered inside another
pauses the outer one, so nested stages add up to the wall time instead of counting it twice.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dvd.engine.stages import TRANSFER, NoTimer
from dvd.model.dvd_model import MODEL_STAGES, DVDModel

Item = TypeVar("Item")


class StageTimer(NoTimer):
    """Seconds spent in named stages (each stage's own time, see the module docstring), and windows predicted.

    Asynchronous devices queue work and return at once, so the time would land on whichever stage waits for the
    result: `synchronize` (e.g. torch.cuda.synchronize) is called on entering and leaving each stage named in
    `synchronized`, the ones that run device work. Other stages may run in other threads (a reader thread) and must
    not wait for the device; each thread keeps its own nesting.
    """

    def __init__(
        self, synchronize: Callable[[], None] | None = None, synchronized: Collection[str] = (*MODEL_STAGES, TRANSFER)
    ) -> None:
        self.seconds: dict[str, float] = {}
        self.windows = 0
        self._synchronize = synchronize
        self._synchronized = frozenset(synchronized)
        self._lock = threading.Lock()
        self._local = threading.local()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        sync = self._synchronize if name in self._synchronized else None
        if sync is not None:
            sync()
        stack = self._stack()
        now = time.perf_counter()
        if stack:  # pause the enclosing stage
            self._add(stack[-1][0], now - stack[-1][1])
        stack.append([name, now])
        try:
            yield
        finally:
            if sync is not None:
                sync()
            now = time.perf_counter()
            self._add(name, now - stack.pop()[1])
            if stack:  # resume the enclosing stage
                stack[-1][1] = now

    def iterate(self, name: str, items: Iterable[Item]) -> Iterator[Item]:
        """`items`, the time spent producing each one recorded under `name`."""
        iterator = iter(items)
        while True:
            with self.stage(name):
                try:
                    item = next(iterator)
                except StopIteration:
                    return
            yield item

    def timed(self, name: str, function: Callable[..., Item]) -> Callable[..., Item]:
        """`function`, each call's time recorded under `name`."""

        def call(*args, **kwargs) -> Item:
            with self.stage(name):
                return function(*args, **kwargs)

        return call

    def count_windows(self, count: int) -> None:
        with self._lock:
            self.windows += count

    def _stack(self) -> list[list]:
        """This thread's open stages, innermost last, each as [name, time its current stretch began]."""
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        return self._local.stack

    def _add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds


def meta_twin(module: nn.Module) -> nn.Module:
    """A copy of `module` whose parameters and buffers live on the meta device: the same layers, processors and
    settings (folding, LoRA, tiling), shapes only, no memory and no arithmetic. Take it before `torch.compile`."""
    memo: dict[int, torch.Tensor] = {}
    for tensor in [*module.parameters(), *module.buffers()]:
        twin = tensor.detach().to("meta")
        memo[id(tensor)] = nn.Parameter(twin, requires_grad=False) if isinstance(tensor, nn.Parameter) else twin
    return copy.deepcopy(module, memo)


def count_model_flops(model: DVDModel, pixels_shape: tuple[int, ...]) -> dict[str, int]:
    """FLOPs of each of `MODEL_STAGES` for one call on pixels of `pixels_shape` ([B, 3, T, H, W], T fitting the
    frame rule), counted by torch's FlopCounterMode on a meta twin (matrix products, convolutions and attention;
    elementwise work is not counted): exact for these shapes, in a second or two whatever the model size, and it
    runs nothing."""
    twin = meta_twin(model)
    flops: dict[str, int] = {}

    @contextmanager
    def counted(name: str) -> Iterator[None]:
        with FlopCounterMode(display=False) as counter:
            yield
        flops[name] = counter.get_total_flops()

    with torch.no_grad():
        twin(torch.empty(pixels_shape, device="meta"), stage=counted)
    return flops
