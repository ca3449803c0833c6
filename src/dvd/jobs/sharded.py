"""Several processes share the windows of one video.

Every process decodes the same frames and runs the same engine (`VideoEngine` -> `stream_disparity`), so each one
calls its window predictor with the same windows in the same order. `ShardedWindows` is that predictor: it runs
the model on this process's share of each call only and gathers the others' predictions with one collective per
round, so every process holds every prediction and stitches the whole video; the caller decides who writes it.

A round is ``world`` consecutive groups of ``batch_windows`` windows; group r of a round is rank r's, predicted in
one model call. The engine calls with at most ``batch_windows * world`` windows, so every rank's groups are the
groups a single process would have predicted with the same ``batch_windows``: the numbers are bit-identical to a
single-process run. Memory per rank: one call's input windows and one round's predictions.

Failures. An error every rank meets alike (a damaged input: all of them decode the same file) is raised by all of
them at the same frame. An error on one rank only (out of memory on one GPU, a full disk on rank 0) ends that rank;
the others are then waiting in, or reach, a collective that cannot complete: gloo fails at once when the peer's
connection closes, NCCL at the latest when the process group's timeout expires (10 minutes by default), and the
survivors raise a DVDError that points at the first error. On one machine, torchrun and `accelerate launch` also
stop the whole group as soon as one process exits with an error.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist

from dvd.engine.stream import WindowPredictor
from dvd.errors import DVDError

Exchange = Callable[[np.ndarray], list[np.ndarray]]
"""An all_gather: this rank's array in, every rank's array of the same shape and dtype out, in rank order."""


class ShardedWindows:
    """A `WindowPredictor` for rank `rank` of `world` processes that all call it with the same windows."""

    def __init__(
        self,
        predict_windows: WindowPredictor,
        rank: int,
        world: int,
        batch_windows: int = 1,
        exchange: Exchange | None = None,
    ) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not among {world} processes")
        if batch_windows < 1:
            raise ValueError(f"batch_windows must be at least 1, got {batch_windows}")
        self.predict_windows = predict_windows
        self.rank = rank
        self.world = world
        self.batch_windows = batch_windows
        self.exchange = exchange if exchange is not None else all_gather()

    @property
    def windows_per_call(self) -> int:
        """The engine batch that keeps every rank busy with one group per call."""
        return self.batch_windows * self.world

    def __call__(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        predictions: list[np.ndarray] = []
        for start in range(0, len(windows), self.windows_per_call):
            predictions += self._round(windows[start : start + self.windows_per_call])
        return predictions

    def _round(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        """Predict this rank's group of `windows`, gather every rank's; ranks without a group send padding."""
        k = self.batch_windows
        groups = [windows[rank * k : (rank + 1) * k] for rank in range(self.world)]
        mine = groups[self.rank]
        # Windows of one call share their shape, so the padded group has the same shape on every rank, as
        # all_gather requires, even on a rank whose group is short or empty.
        sent = np.zeros((k, *windows[0].shape[:3]), dtype=np.float32)
        if mine:
            sent[: len(mine)] = self.predict_windows(mine)
        gathered = self.exchange(sent)
        return [prediction for group, every in zip(groups, gathered) for prediction in every[: len(group)]]


def all_gather() -> Exchange:
    """The exchange over torch.distributed's default group; NCCL moves CUDA tensors only, gloo CPU tensors."""
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")

    def exchange(array: np.ndarray) -> list[np.ndarray]:
        mine = torch.from_numpy(array).to(device)
        every = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
        try:
            dist.all_gather(every, mine)
            return [tensor.cpu().numpy() for tensor in every]  # NCCL's errors surface at the copy
        except RuntimeError as error:  # torch.distributed's errors derive from RuntimeError
            # Almost always the consequence of another process's failure, whose own error is the useful one.
            reason = str(error).splitlines()[0][:200]
            raise DVDError(
                "exchanging window predictions with the other processes failed, usually because one of them "
                f"stopped: its own error says why ({reason})"
            ) from error

    return exchange
