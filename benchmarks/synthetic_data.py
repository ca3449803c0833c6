"""Speed of the procedural synthetic data: rendering clips and producing training samples from them.

For each (frames, height, width) it times `dvd.data.procedural.render_clip` and one `SyntheticDataset` sample
(render + truncated-disparity target + tensors), best of `--repeats` runs, single process.

    python benchmarks/synthetic_data.py [--repeats 3]

Prints a table and appends it to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from functools import partial
from pathlib import Path

from dvd.data.procedural import render_clip
from dvd.data.train import SyntheticDataset

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SHAPES = [(1, 64, 96), (9, 64, 96), (45, 64, 96), (9, 240, 320), (45, 240, 320), (45, 480, 640)]


def best_time(function, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        timings.append(time.perf_counter() - start)
    return min(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for frames, height, width in SHAPES:
        render = best_time(partial(render_clip, 0, frames, height, width), args.repeats)
        data = SyntheticDataset(num_samples=1, num_frames=frames, size=(height, width), flip=False)
        sample = best_time(partial(data.__getitem__, 0), args.repeats)
        per_frame = render / frames * 1000
        rows.append(f"| {frames} x {height} x {width} | {render * 1000:.0f} | {per_frame:.1f} | {sample * 1000:.0f} |")
    # The load average says whether other processes shared the cores while this ran.
    load = os.getloadavg()[0]
    machine = f"{os.cpu_count()}-core {platform.machine()} CPU, {platform.system()}, load average {load:.1f}"
    table = "\n".join(
        [
            (
                f"### synthetic data speed, {datetime.date.today()} ({machine}; "
                f"`python benchmarks/synthetic_data.py --repeats {args.repeats}`)"
            ),
            "",
            "Best of the repeats, one process. `sample` = render + 2-98 % truncated-disparity target + tensors.",
            "",
            "| frames x H x W | render_clip (ms) | per frame (ms) | SyntheticDataset sample (ms) |",
            "|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    with RESULTS.open("a", encoding="utf-8") as results:
        results.write("\n" + table + "\n")


if __name__ == "__main__":
    main()
