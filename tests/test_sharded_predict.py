"""Processes sharing the windows of one video: the `ShardedWindows` predictor and `dvd predict` under torchrun."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dvd import cli
from dvd.engine.video import VideoEngine, VideoSettings
from dvd.jobs.sharded import ShardedWindows
from dvd.pipeline.dvd_pipeline import DVDPipeline
from dvd.weights.tiny import build_tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 13 frames in windows of 5 overlapping by 1: windows [0, 5), [4, 9), [8, 13); with two processes the last call
# leaves rank 1 without a window.
WINDOWS = ["--window", "5", "--overlap", "1"]
SIZE = ["--height", "32", "--width", "48"]
SETTINGS = VideoSettings(height=32, width=48, window=5, overlap=1)


class FakeGroup:
    """All ranks of a process group as threads of this process: `exchange(rank)` is that rank's all_gather."""

    def __init__(self, world: int) -> None:
        self.slots: list[np.ndarray | None] = [None] * world
        self.barrier = threading.Barrier(world, timeout=60)  # a test bug fails instead of hanging

    def exchange(self, rank: int):
        def gather(array: np.ndarray) -> list[np.ndarray]:
            self.slots[rank] = array.copy()
            self.barrier.wait()
            every = list(self.slots)
            self.barrier.wait()  # no rank overwrites its slot before every rank has read them all
            return every

        return gather


def run_ranks(world: int, work) -> list:
    """`work(rank, exchange)` on `world` threads at once; their results in rank order (a rank's error re-raised)."""
    group = FakeGroup(world)

    def rank_work(rank: int):
        try:
            return work(rank, group.exchange(rank))
        except BaseException:
            group.barrier.abort()  # the other ranks fail too instead of waiting for this one
            raise

    with ThreadPoolExecutor(world) as pool:
        futures = [pool.submit(rank_work, rank) for rank in range(world)]
        return [future.result() for future in futures]


def frames(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return list(rng.random((count, 30, 40, 3), dtype=np.float32))


class Recorder:
    """A window predictor that remembers the windows of each call (by first frame value) and answers their mean."""

    def __init__(self) -> None:
        self.calls: list[list[float]] = []

    def __call__(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        self.calls.append([float(w[0, 0, 0, 0]) for w in windows])
        return [w.mean(axis=-1) for w in windows]


@pytest.mark.parametrize("world, batch_windows, count", [(2, 1, 13), (2, 2, 25), (3, 2, 33), (4, 1, 9)])
def test_ranks_predict_the_batches_of_one_process(world, batch_windows, count):
    """Every window is predicted once, by one rank, in the batch a single process would have put it in, and every
    rank stitches the same disparity as a single process."""
    video = frames(count)
    single = Recorder()
    settings = replace(SETTINGS, batch_windows=batch_windows)
    expected = np.stack(list(VideoEngine(single, settings).model_frames(video, (30, 40))))
    recorders = [Recorder() for _ in range(world)]

    def work(rank, exchange):
        sharded = ShardedWindows(recorders[rank], rank, world, batch_windows, exchange=exchange)
        engine = VideoEngine(sharded, replace(settings, batch_windows=sharded.windows_per_call))
        return np.stack(list(engine.model_frames(video, (30, 40))))

    for disparity in run_ranks(world, work):
        np.testing.assert_array_equal(disparity, expected)
    assert sorted(call for r in recorders for call in r.calls) == sorted(single.calls)


def test_ranks_match_one_process_bit_for_bit_with_the_model():
    """The tiny model in batches of two windows: sharing them changes no bit. One model per rank, as processes have:
    the VAE keeps its causal cache on the module, so threads cannot share one."""
    pipes = [DVDPipeline.from_model(build_tiny_model(seed=0)) for _ in range(3)]
    video = frames(17)
    settings = replace(SETTINGS, batch_windows=2)
    expected = np.stack(list(VideoEngine(pipes[2].predict_windows, settings).model_frames(video, (30, 40))))

    def work(rank, exchange):
        sharded = ShardedWindows(pipes[rank].predict_windows, rank, 2, 2, exchange=exchange)
        engine = VideoEngine(sharded, replace(settings, batch_windows=sharded.windows_per_call))
        return np.stack(list(engine.model_frames(video, (30, 40))))

    for disparity in run_ranks(2, work):
        np.testing.assert_array_equal(disparity, expected)


def test_wrong_rank_is_refused():
    with pytest.raises(ValueError, match="rank 2 is not among 2"):
        ShardedWindows(Recorder(), 2, 2, exchange=lambda array: [array])


def write_images(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(folder / f"f{index + 1}.png")
    return folder


RECORDING_RANK = """
import os, sys
from dvd import cli
from dvd.pipeline.dvd_pipeline import DVDPipeline

predict_windows = DVDPipeline.predict_windows

def recorded(self, windows):
    with open(os.path.join(sys.argv[1], "rank-" + os.environ["RANK"]), "a") as log:
        log.write(f"{len(windows)}\\n")
    return predict_windows(self, windows)

DVDPipeline.predict_windows = recorded
sys.exit(cli.main(sys.argv[2:]))
"""


def test_two_processes_share_the_windows_of_one_input(tiny_weights, tmp_path):
    """One input, two processes under torchrun: both predict (rank 0 the first and third window, rank 1 the second),
    rank 0 alone writes, the file equals one process's."""
    seq = write_images(tmp_path / "in" / "seq", 13)
    common = [str(seq), "--weights", str(tiny_weights), *SIZE, *WINDOWS, "--quiet"]
    script, calls = tmp_path / "recording_rank.py", tmp_path / "calls"
    script.write_text(RECORDING_RANK)
    calls.mkdir()
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script), str(calls)]
    done = subprocess.run(
        [*launch, "predict", *common, "-o", str(tmp_path / "multi")], check=False, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    windows = {log.name: [int(n) for n in log.read_text().split()] for log in calls.iterdir()}
    assert windows == {"rank-0": [1, 1], "rank-1": [1]}  # one model call per round; rank 1 has no third window
    summaries = [line for line in done.stdout.splitlines() if line.startswith("dvd predict:")]
    assert len(summaries) == 1 and "13 frames from 1 input(s)" in summaries[0]  # from rank 0 only
    assert sorted(p.name for p in (tmp_path / "multi").iterdir()) == ["manifest.jsonl", "seq"]
    assert len((tmp_path / "multi" / "manifest.jsonl").read_text().splitlines()) == 1  # rank 0's line only
    assert cli.main(["predict", *common, "-o", str(tmp_path / "single")]) == 0
    np.testing.assert_array_equal(
        np.load(tmp_path / "multi" / "seq" / "disparity.npy"), np.load(tmp_path / "single" / "seq" / "disparity.npy")
    )


DYING_RANK = """
import os, sys, time
import torch.distributed as dist

dist.init_process_group("gloo")  # rank 1 of 2, from the environment, as torchrun sets it
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
os._exit(1)  # as a process ends on an error (out of memory on its GPU): no goodbye to the group
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_failing_rank_stops_the_others(tiny_weights, tmp_path, capsys, monkeypatch, one_thread_fresh_accelerate):
    """Rank 1 dies while rank 0 is about to exchange its first window's prediction: rank 0 does not hang in the
    exchange, it fails in one line that points at the other process and leaves no output. Without torchrun, which
    would stop rank 0 itself, rank 0 has to notice on its own (gloo: the closed connection). Rank 0 is this process
    (in a thread, so that a hang fails the test instead of the run), rank 1 a child that only joins the group."""
    seq = write_images(tmp_path / "in" / "seq", 13)
    ranks = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    die = tmp_path / "die"
    dying = subprocess.Popen(
        [sys.executable, "-c", DYING_RANK, str(die)], env={**os.environ, **ranks, "RANK": "1", "LOCAL_RANK": "1"}
    )
    for name, value in {**ranks, "RANK": "0", "LOCAL_RANK": "0", "OMP_NUM_THREADS": "1"}.items():
        monkeypatch.setenv(name, value)
    exchange_round = ShardedWindows._round

    def round_once_rank_1_is_gone(self, windows):
        die.touch()
        assert dying.wait(timeout=60) == 1
        return exchange_round(self, windows)

    monkeypatch.setattr(ShardedWindows, "_round", round_once_rank_1_is_gone)
    args = ["predict", seq, "-o", tmp_path / "out", "--weights", tiny_weights, *SIZE, *WINDOWS, "--quiet"]
    codes: list[int] = []
    rank0 = threading.Thread(target=lambda: codes.append(cli.main([str(a) for a in args])), daemon=True)
    try:
        rank0.start()
        rank0.join(timeout=120)
    finally:
        dying.kill()
    assert not rank0.is_alive(), "rank 0 hangs"
    lines = capsys.readouterr().err.strip().splitlines()
    assert codes == [2] and len(lines) == 1, lines
    assert "exchanging window predictions with the other processes failed" in lines[0], lines
    assert [p.name for p in (tmp_path / "out").iterdir()] in ([], ["manifest.jsonl"])


def test_the_command_leaves_the_process_group_it_ran_in(tmp_path):
    """`dvd` tears the group down itself, even when the command fails: left to interpreter shutdown, gloo's threads
    can abort a process that succeeded (seen once in CI as SIGABRT of the rank that does not write)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert cli.main(["predict", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "out")]) == 2
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
