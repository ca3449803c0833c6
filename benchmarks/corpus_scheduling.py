"""Scheduling a skewed corpus over 2 workers: static round robin (2 processes of one launch: every 2nd input,
`dvd.jobs.batch.share_work`; launched with torchrun, which is what `accelerate launch` runs for several processes,
its `--cpu` launcher starting only one) against Ray Data with 2 actors (`dvd predict --ray`: the next input, longest first, to
whichever actor comes free), and the lower bound; then the fault run, one actor SIGKILLed halfway through the
longest input.

The corpus: 24 synthetic clips whose lengths are drawn from a log-normal distribution (seeded; heavy-tailed, a
longest clip tens of times the shortest), listed in the order drawn. Every run: the proof model at --height 32
--width 48 (model size 32x64), outputs npy + mp4, one torch thread per worker, on this machine's CPUs.

Makespans are measured two ways from the files themselves: `wall`, the whole command (process start, the checks of
every input, model loading, Ray's start and its actors' included; `start-up and end` is what it adds to
`scheduled`), and `scheduled`, from the first input's start to the last input's end (each
input's end is its meta.json's mtime, its start that less its manifest `seconds`), which leaves out the start-up
both kinds of worker pay once. The lower bound is max(longest input, total / 2) of the per-input seconds of a
single-process run (`work`), and, to see the scheduling apart from the slower per-input times two workers sharing
two busy cores get, max(longest, total / 2) of each run's own per-input seconds (`own bound`).

The fault run kills the actor predicting the longest clip once that clip's resume state says half its frames are
written, and reports the frames predicted twice: those on disk at the kill from the input frame where the retry's
model work starts again (the windows in flight at the kill, at most one model call's, come on top), and that the
files equal the clean run's.

    python benchmarks/corpus_scheduling.py [--clips 24] [--seed 0] [--no-record]

Prints the table and appends it, dated, to benchmarks/RESULTS.md. Needs `pip install -e ".[ray]"`; takes about
5 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from memory_long_video import write_video

from dvd.engine.video import VideoEngine
from dvd.errors import DVDError
from dvd.jobs.manifest import read_manifest
from dvd.jobs.resume import STATE_FILE, load_checkpoint

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
MODEL = ["--weights", "proof", "--height", "32", "--width", "48", "--quiet"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one torch thread per worker, as each actor
SIZE = (90, 160)  # source frames (height, width)
WINDOW = 5  # the proof model's window
HEADER = (
    "| 2 workers | wall (s) | start-up and end (s) | scheduled (s) | scheduled / lower bound | own bound (s) "
    "| scheduled / own bound |"
)
MEDIAN_FRAMES, SIGMA, MIN_FRAMES, MAX_FRAMES = 32, 1.5, 5, 600


def write_corpus(folder: Path, clips: int, seed: int) -> dict[str, int]:
    """`clips` videos of log-normal lengths in `folder`, and corpus.txt listing them in the order drawn; their
    frame counts by name."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    lengths = np.clip(np.round(rng.lognormal(np.log(MEDIAN_FRAMES), SIGMA, clips)), MIN_FRAMES, MAX_FRAMES)
    frames = {f"clip{index:02d}.mp4": int(count) for index, count in enumerate(lengths)}
    for name, count in frames.items():
        write_video(folder / name, count, SIZE)
    (folder / "corpus.txt").write_text("".join(f"{name}\n" for name in frames))
    return frames


def run(command: list[str], out: Path) -> tuple[float, float]:
    """Run a dvd command to completion; when it started (epoch seconds) and its wall seconds."""
    launched, started = time.time(), time.perf_counter()
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    print(f"  {out.name}: {seconds:.1f} s wall", flush=True)
    return launched, seconds


def per_input(out: Path) -> dict[str, tuple[float, float]]:
    """Each input's (start, end) from its folder's meta.json mtime and its last manifest line's seconds."""
    spans = {}
    for line in read_manifest(out):
        end = (Path(line["output"]) / "meta.json").stat().st_mtime
        spans[Path(line["input"]).name] = (end - line["seconds"], end)
    return spans


def scheduled(spans: dict[str, tuple[float, float]]) -> float:
    return max(end for _, end in spans.values()) - min(start for start, _ in spans.values())


def bound(seconds: list[float], workers: int = 2) -> float:
    return max(max(seconds), sum(seconds) / workers)


def frames_on_disk(npy: Path) -> int:
    """Whole frames in a disparity.npy being written (its header says 0 until the end)."""
    with open(npy, "rb") as handle:
        np.lib.format.read_magic(handle)
        np.lib.format.read_array_header_1_0(handle)
        offset = handle.tell()
    return (npy.stat().st_size - offset) // (4 * SIZE[0] * SIZE[1])


def kill_halfway(out: Path, name: str, frames: int, report: dict, finished: threading.Event) -> None:
    """SIGKILL the actor writing `name` once its resume state holds half of its `frames`; note what was on disk and
    where the retry's model work starts again."""
    while not finished.is_set():
        for folder in out.glob(f".{name}.partial-*"):
            try:
                state = load_checkpoint(folder) if (folder / STATE_FILE).is_file() else None
            except DVDError:  # caught between its writes: the next look sees it whole
                state = None
            if state is not None and state.written >= frames // 2:
                os.kill(int(folder.name.split("-")[1]), signal.SIGKILL)  # .NAME.partial-PID-START-TOKEN
                resumed = load_checkpoint(folder)  # the last state before the kill: where the retry goes on
                report.update(
                    on_disk=frames_on_disk(folder / "disparity.npy"),
                    written=resumed.written,
                    model_start=VideoEngine.resume_points(resumed.engine)[0],
                )
                return
        time.sleep(0.005)


def ray_startup(out: Path, launched: float, first_input: float) -> str:
    """Where the clean Ray run's time before its first input went, from the time stamps of OUT/ray.log."""
    stamps = {}
    for line in (out / "ray.log").read_text().splitlines():
        for key, marker in (("ray", "Started a local Ray instance"), ("dataset", "Starting execution of Dataset")):
            if marker in line and key not in stamps:
                stamps[key] = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    if len(stamps) < 2:
        return "Ray's start-up: its log holds no time stamps to split it by."
    return (
        f"Ray's start-up, {first_input - launched:.1f} s from the command to its first input: "
        f"{stamps['ray'] - launched:.1f} s to a started local Ray (the process, the checks of every input, "
        f"`ray.init`), {stamps['dataset'] - stamps['ray']:.1f} s to the Dataset's start, "
        f"{first_input - stamps['dataset']:.1f} s for the 2 actors to start (each a fresh process importing torch "
        "and diffusers and loading the model) and take their first input."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dvd-corpus-"))
    frames = write_corpus(root / "in", args.clips, args.seed)
    corpus, lengths = root / "in" / "corpus.txt", list(frames.values())
    predict = [sys.executable, "-m", "dvd.cli", "predict", str(corpus), *MODEL]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "dvd.cli", "predict"]
    launch += [str(corpus), *MODEL]
    print(f"corpus: {len(frames)} clips, {sum(frames.values())} frames, {min(lengths)}-{max(lengths)} each", flush=True)

    walls, spans, launched = {}, {}, {}
    for name, command in [
        ("single", predict),
        ("round robin", launch),
        ("ray", [*predict, "--ray", "--ray-actors", "2"]),
    ]:
        out = root / name.replace(" ", "_")
        launched[name], walls[name] = run([*command, "-o", str(out)], out)
        spans[name] = per_input(out)
    work = [end - start for start, end in spans["single"].values()]
    lower = bound(work)

    longest = max(frames, key=frames.get)
    report: dict = {}
    finished = threading.Event()
    out = root / "ray_fault"
    killer = threading.Thread(target=kill_halfway, args=(out, Path(longest).stem, frames[longest], report, finished))
    killer.start()
    try:
        _, walls["ray, one actor killed"] = run([*predict, "--ray", "--ray-actors", "2", "-o", str(out)], out)
    finally:
        finished.set()
        killer.join()
    spans["ray, one actor killed"] = per_input(out)
    same = all(
        (root / "ray" / Path(clip).stem / "disparity.npy").read_bytes()
        == (out / Path(clip).stem / "disparity.npy").read_bytes()
        for clip in frames
    )

    rows = []
    for name in ("round robin", "ray", "ray, one actor killed"):
        own = bound([end - start for start, end in spans[name].values()])
        rows.append(
            f"| {name} | {walls[name]:.1f} | {walls[name] - scheduled(spans[name]):.1f} | "
            f"{scheduled(spans[name]):.1f} | {scheduled(spans[name]) / lower:.2f} | {own:.1f} | "
            f"{scheduled(spans[name]) / own:.2f} |"
        )
    fault = (
        f"The fault run: the actor predicting {longest} ({frames[longest]} frames) was SIGKILLed with "
        f"{report.get('on_disk')} of its frames on disk; the retry took over its partial output at its last resume "
        f"point ({report.get('written')} frames written, the engine's state saved after the model call before) and "
        f"predicted again from input frame {report.get('model_start')}: what was predicted twice is the model call "
        f"in progress at the kill (one window, {WINDOW} frames). Scheduled makespan "
        f"{scheduled(spans['ray, one actor killed']) - scheduled(spans['ray']):+.1f} s against the clean Ray run "
        f"(the restarted actor loads its model again); every disparity.npy byte-identical to the clean run's: {same}."
        if report
        else "The fault run: the actor was never killed (the longest clip finished before the watcher saw its state)."
    )
    startup = ray_startup(root / "ray", launched["ray"], min(start for start, _ in spans["ray"].values()))
    heading = (
        f"### corpus scheduling, {datetime.date.today()} ({platform.machine()}, {os.cpu_count()} CPUs, load "
        f"average {os.getloadavg()[0]:.1f}; `python benchmarks/corpus_scheduling.py --clips {args.clips} "
        f"--seed {args.seed}`)"
    )
    setting = (
        f"{len(frames)} clips, {sum(frames.values())} frames, {min(lengths)} to {max(lengths)} per clip "
        f"(log-normal, median {MEDIAN_FRAMES}, sigma {SIGMA}); proof model at 32x64, npy + mp4, one torch "
        f"thread per worker; single process: {walls['single']:.1f} s wall, {sum(work):.1f} s of per-input work, "
        f"longest input {max(work):.1f} s; lower bound max(longest, work / 2) = {lower:.1f} s."
    )
    table = "\n".join(
        [
            heading,
            "",
            setting,
            "",
            HEADER,
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            startup,
            "",
            fault,
        ]
    )
    print(table)
    if not args.no_record:
        with RESULTS.open("a", encoding="utf-8") as handle:
            handle.write("\n" + table + "\n")


if __name__ == "__main__":
    main()
