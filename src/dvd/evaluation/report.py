"""Result files of an evaluation run and the tables made from them.

A run is one JSON document (``summary.json``, or the file given to ``--json``)::

    {"label": ..., "settings": {...}, "mean": {metric: value, "sequences": n},
     "partitions": {"short": {...}, "long": {...}}, "sequences": [per-sequence records],
     "skipped": [{"sequence": ..., "reason": ...}]}

Tables follow the paper's layout: one row per run, and per data set (and partition) AbsRel x 100 and δ1.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from dvd.errors import DVDError
from dvd.evaluation.metrics import HIGHER_IS_BETTER
from dvd.evaluation.scoring import ALL_METRICS
from dvd.io.atomic import Recogniser, atomic_directory, atomic_write_text, foreign_entries

PAPER_COLUMNS = (("abs_rel", "AbsRel×100↓", 100.0, 2), ("delta1", "δ1↑", 1.0, 3))
PARTITION_ORDER = ("all", "short", "long", "very_short", "image")
RUN_FILES = ("summary.json", "per_sequence.jsonl", "summary.md", "summary.csv")  # a run folder (-o)
REPORT_FILES = ("report.md", "report.csv")  # a report folder (--report ... -o)


def mean_metrics(records: list[dict]) -> dict:
    """Plain mean over sequences of every metric the records hold; a metric missing (or None) for some
    sequences is averaged over the others and its count is given as ``<metric>_sequences``."""
    summary: dict = {"sequences": len(records)}
    for name in ALL_METRICS:
        values = [r[name] for r in records if r.get(name) is not None]
        if values:
            summary[name] = float(np.mean(values))
            if len(values) != len(records):
                summary[f"{name}_sequences"] = len(values)
    return summary


def summarise(label: str, settings: dict, records: list[dict], skipped: list[dict]) -> dict:
    """The run document: means over all sequences and per partition, the records and the skips."""
    partitions = {}
    for name in PARTITION_ORDER[1:]:
        members = [r for r in records if r["partition"] == name]
        if members and len(members) != len(records):
            partitions[name] = mean_metrics(members)
    return {
        "label": label,
        "settings": settings,
        "mean": mean_metrics(records),
        "partitions": partitions,
        "sequences": records,
        "skipped": skipped,
    }


def load_run(path: Path) -> dict:
    """A run document from a run folder (its summary.json) or a JSON file."""
    path = Path(path)
    file = path / "summary.json" if path.is_dir() else path
    if not file.is_file():
        raise DVDError(f"{path} is not an evaluation run: expected a folder with summary.json or a JSON file")
    try:
        run = json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise DVDError(f"{file} is not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(run, dict) or "mean" not in run or "settings" not in run:
        raise DVDError(f"{file} is not a dvd eval result: it lacks 'mean' and 'settings'")
    return run


def _dataset_title(settings: dict) -> str:
    """The data set as a column title: its name, and the frame count when a fixed number was evaluated."""
    frames = settings.get("frames")
    return f"{settings.get('dataset', '?')}@{frames}" if frames else str(settings.get("dataset", "?"))


def _groups(run: dict) -> list[tuple[str, str, dict]]:
    """(data set, partition, means) column groups of a run: "all", then each partition present."""
    dataset = _dataset_title(run["settings"])
    groups = [(dataset, "all", run["mean"])]
    groups += [(dataset, name, run["partitions"][name]) for name in PARTITION_ORDER if name in run["partitions"]]
    return groups


def _cell(means: dict | None, metric: str, factor: float, digits: int) -> str:
    value = None if means is None else means.get(metric)
    return "–" if value is None or not math.isfinite(value) else f"{value * factor:.{digits}f}"


def _scope(dataset: str, partition: str) -> str:
    return dataset if partition == "all" else f"{dataset} {partition}"


def paper_table(runs: list[dict]) -> str:
    """Markdown in the paper's layout: one row per run label (runs sharing a label, e.g. one model on several
    data sets, fill one row), and AbsRel×100 and δ1 for every (data set, partition) of any run."""
    rows: dict[str, dict[tuple[str, str], dict]] = {}
    keys: list[tuple[str, str]] = []
    for run in runs:
        row = rows.setdefault(run["label"], {})
        for dataset, part, means in _groups(run):
            if (dataset, part) in row:
                raise DVDError(
                    f"two runs labelled {run['label']!r} both hold {_scope(dataset, part)} results: "
                    "give them distinct --label values"
                )
            row[(dataset, part)] = means
            if (dataset, part) not in keys:
                keys.append((dataset, part))
    header = ["run"]
    for key in keys:
        counts = sorted({str(row[key]["sequences"]) for row in rows.values() if key in row})
        header += [f"{_scope(*key)} ({'/'.join(counts)}) {title}" for _, title, _, _ in PAPER_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, row in rows.items():
        cells = [label]
        for key in keys:
            cells += [_cell(row.get(key), metric, factor, digits) for metric, _, factor, digits in PAPER_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def metrics_table(run: dict) -> str:
    """Markdown of every metric, one row per partition of one run."""
    present = [name for name in ALL_METRICS if name in run["mean"]]
    arrows = {name: "↑" if name in HIGHER_IS_BETTER or name.endswith(("f1", "recall")) else "↓" for name in present}
    lines = [
        "| scope | " + " | ".join(f"{name}{arrows[name]}" for name in present) + " |",
        "|---|" + "---|" * len(present),
    ]
    for dataset, part, means in _groups(run):
        cells = [f"{_scope(dataset, part)} ({means['sequences']})"] + [_cell(means, name, 1.0, 4) for name in present]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_table(runs: list[dict]) -> str:
    """CSV, one row per run, data set and partition, with every metric (raw values, AbsRel not scaled)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["run", "dataset", "split", "partition", "sequences", *ALL_METRICS])  # dataset as "kitti@110"
    for run in runs:
        for dataset, part, means in _groups(run):
            values = [means.get(name) for name in ALL_METRICS]
            writer.writerow(
                [
                    run["label"],
                    dataset,
                    run["settings"].get("split"),
                    part,
                    means["sequences"],
                    *["" if v is None else repr(float(v)) for v in values],
                ]
            )
    return buffer.getvalue()


def run_markdown(run: dict) -> str:
    """The summary of one run: paper table, all metrics, settings and skipped sequences."""
    skipped = run["skipped"]
    parts = [f"# {run['label']} on {run['settings'].get('dataset')}\n", paper_table([run]), "\n", metrics_table(run)]
    parts.append("\nSettings: " + ", ".join(f"{k}={v}" for k, v in run["settings"].items()) + "\n")
    if skipped:
        parts.append(f"\nSkipped {len(skipped)} sequence(s); the means above do not include them:\n\n")
        parts += [f"- {s['sequence']}: {s['reason']}\n" for s in skipped]
    return "".join(parts)


def _json(document: dict) -> str:
    # JSON has no NaN/inf: a non-finite number is an error upstream, so refuse rather than write invalid JSON.
    return json.dumps(document, indent=2, allow_nan=False) + "\n"


def run_document_problem(path: Path) -> str | None:
    """None if `path` is a run folder or run JSON file written by dvd eval, else why not: --overwrite replaces
    only those."""
    try:
        load_run(path)
    except DVDError:
        return "it is not a dvd eval result"
    return foreign_entries(path, RUN_FILES) if path.is_dir() else None


def report_folder_problem(folder: Path) -> str | None:
    """None if `folder` is a report folder written by `dvd eval --report -o`, else why not."""
    if not (folder / REPORT_FILES[0]).is_file():
        return f"it has no {REPORT_FILES[0]}"
    return foreign_entries(folder, REPORT_FILES)


def write_run(run: dict, out_dir: Path | None, json_path: Path | None, overwrite: bool = False) -> list[Path]:
    """Write the run: the folder ``out_dir`` with summary.json, per_sequence.jsonl, summary.md and summary.csv;
    and/or the run document to ``json_path``. Each appears complete or not at all; an existing one is an error,
    unless ``overwrite`` is set and it is an earlier dvd eval result."""
    written = []
    if out_dir is not None:
        texts = [_json(run), "".join(json.dumps(r, allow_nan=False) + "\n" for r in run["sequences"])]
        texts += [run_markdown(run), csv_table([run])]
        _write_folder(out_dir, dict(zip(RUN_FILES, texts, strict=True)), overwrite, run_document_problem)
        written += [out_dir / name for name in RUN_FILES]
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json_path, _json(run), overwrite, run_document_problem)
        written.append(json_path)
    return written


def write_report(runs: list[dict], out_dir: Path, overwrite: bool = False) -> list[Path]:
    """Side-by-side tables of several runs: the folder ``out_dir`` with report.md and report.csv."""
    texts = [paper_table(runs), csv_table(runs)]
    _write_folder(out_dir, dict(zip(REPORT_FILES, texts, strict=True)), overwrite, report_folder_problem)
    return [out_dir / name for name in REPORT_FILES]


def _write_folder(folder: Path, files: dict[str, str], overwrite: bool, recognise: Recogniser) -> None:
    with atomic_directory(folder, overwrite, recognise) as staging:
        for name, text in files.items():
            (staging / name).write_text(text, encoding="utf-8")
