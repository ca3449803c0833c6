"""Training logs: stdout lines, a CSV file and TensorBoard (only when the `tensorboard` package is installed)."""

from __future__ import annotations

import csv
import importlib.util
import io
from pathlib import Path

from dvd.errors import DVDError
from dvd.io.atomic import atomic_write_text

CSV_NAME = "metrics.csv"


def check_backends(backends: list[str]) -> None:
    """Fail before training when a requested backend cannot work."""
    if "tensorboard" in backends and importlib.util.find_spec("tensorboard") is None:
        raise DVDError(
            "train.loggers asks for tensorboard, which is not installed: pip install tensorboard (or drop it)"
        )


def truncate_csv(path: Path, after_step: int) -> None:
    """Drop rows logged after `after_step` (steps a killed run did not checkpoint), rewriting the file atomically."""
    if not path.is_file():
        return
    rows = list(csv.reader(io.StringIO(path.read_text())))
    if not rows:
        return
    kept = [rows[0]] + [row for row in rows[1:] if row and int(row[0]) <= after_step]
    buffer = io.StringIO()
    csv.writer(buffer).writerows(kept)
    atomic_write_text(path, buffer.getvalue())


class MetricsLog:
    """One `log(step, values)` call fans out to every configured backend. Only the main process should own one."""

    def __init__(self, directory: Path, backends: list[str], resume_step: int | None = None) -> None:
        check_backends(backends)
        self.backends = backends
        self.csv_path = Path(directory) / CSV_NAME
        if "csv" in backends and resume_step is not None:
            truncate_csv(self.csv_path, resume_step)
        self.writer = None
        if "tensorboard" in backends:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(directory) / "tensorboard"), purge_step=resume_step)

    def log(self, step: int, values: dict[str, float], prefix: str = "train") -> None:
        named = {f"{prefix}/{k}": v for k, v in values.items()}
        if "stdout" in self.backends:
            text = "  ".join(f"{k} {v:.5g}" for k, v in named.items())
            print(f"step {step}  {text}", flush=True)
        if "csv" in self.backends:
            self._append_csv(step, named)
        if self.writer is not None:
            for key, value in named.items():
                self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def _append_csv(self, step: int, named: dict[str, float]) -> None:
        # Long format (step, name, value): rows stay valid whatever metrics later steps add. Appended whole lines,
        # flushed at once, so a killed run leaves only complete rows (the resumed run trims those past its checkpoint).
        new = not self.csv_path.is_file()
        with self.csv_path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["step", "name", "value"])
            writer.writerows([step, key, f"{value:.8g}"] for key, value in named.items())

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
