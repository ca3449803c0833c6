"""A finished `dvd predict` output folder, judged by its own meta.json: which files it lists and their sizes (what
`--skip-existing` trusts), and the metric pass added to it later (`--metric ... --resume`) without predicting its
disparity again.

meta.json's "files" maps each file or folder its outputs name to its size when the folder was finished:
{"bytes": N} for a file, {"bytes": N, "files": K} for a folder of frames. A file deleted, truncated or rewritten
since then makes the folder incomplete.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dvd.errors import DVDError
from dvd.io.atomic import atomic_directory, foreign_entries
from dvd.io.links import link_or_copy
from dvd.metric.post_pass import METRIC_OUTPUTS, metric_post_pass, without_metric

if TYPE_CHECKING:
    from dvd.io.readers import Source
    from dvd.jobs.outputs import OutputSettings
    from dvd.metric.settings import MetricSettings

META_FILE = "meta.json"
FILES_KEY = "files"
METRIC_FAILED_KEY = "metric_failed"


def read_meta(folder: Path) -> dict | None:
    """The folder's meta.json as a dict, or None when it has no readable one."""
    try:
        meta = json.loads((Path(folder) / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def write_meta(folder: Path, meta: dict) -> None:
    """meta.json with the sizes of every file it lists. ASCII JSON: a file name that is not UTF-8 (legal on Linux,
    a lone surrogate once decoded) is written as its escape and read back as the same name."""
    meta[FILES_KEY] = file_sizes(folder, listed_names(meta))
    (Path(folder) / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=True) + "\n", encoding="utf-8")


def listed_names(meta: dict) -> list[str]:
    """The files and folders a meta.json names (its outputs and the frame times file), relative to its folder."""
    outputs = meta.get("outputs") if isinstance(meta.get("outputs"), dict) else {}
    names = [entry.get("file") or entry.get("folder") for entry in outputs.values() if isinstance(entry, dict)]
    timing = meta.get("timing") if isinstance(meta.get("timing"), dict) else {}
    names.append(timing.get("frame_times"))
    return [name for name in names if isinstance(name, str) and name]


def file_sizes(folder: Path, names: list[str]) -> dict[str, dict[str, int]]:
    """The size of each of `names` in `folder` (missing ones left out)."""
    sizes = {}
    for name in names:
        size = _size(Path(folder) / name)
        if size is not None:
            sizes[name] = size
    return sizes


def _size(path: Path) -> dict[str, int] | None:
    if path.is_symlink():
        return None
    if path.is_file():
        return {"bytes": path.stat().st_size}
    if path.is_dir():
        files = [file for file in path.rglob("*") if file.is_file() and not file.is_symlink()]
        return {"bytes": sum(file.stat().st_size for file in files), "files": len(files)}
    return None


def incomplete_problem(folder: Path) -> str | None:
    """None when every file the folder's meta.json lists is there with the size it lists, else what is missing or
    changed. A meta.json of a dvd older than the sizes is judged by the files' presence only."""
    meta = read_meta(folder) or {}
    expected = meta.get(FILES_KEY)
    if not isinstance(expected, dict):
        expected = {name: None for name in listed_names(meta)}
        if not expected:
            return f"its {META_FILE} lists no outputs"
    for name, size in expected.items():
        actual = _size(Path(folder) / name)
        if actual is None:
            return f"{name} is missing"
        if size is not None and actual != size:
            return f"{name} has {_describe(actual)} where {META_FILE} lists {_describe(size)}"
    return None


def _describe(size: dict) -> str:
    files = f" in {size['files']} files" if "files" in size else ""
    return f"{size.get('bytes')} bytes{files}"


def prediction_folder_problem(folder: Path) -> str | None:
    """None if `folder` was written by `predict_to_folder` (meta.json of kind "disparity" with a dvd_version, and
    only the files it lists), else why not: --overwrite replaces only such folders."""
    meta = read_meta(folder)
    if meta is None:
        return f"it has no readable {META_FILE}"
    if meta.get("kind") != "disparity" or "dvd_version" not in meta:
        return f"its {META_FILE} is not one of dvd predict's"
    return foreign_entries(folder, [META_FILE, *listed_names(meta)])


def metric_missing(meta: dict, metric: MetricSettings) -> str | None:
    """Why a finished folder lacks the metric or 3D outputs `metric` asks for (None if it has them)."""
    if not metric.active:
        return None
    failed = meta.get(METRIC_FAILED_KEY)
    if isinstance(failed, dict):
        return f"its metric pass failed ({failed.get('error')})"
    outputs = meta.get("outputs") if isinstance(meta.get("outputs"), dict) else {}
    wanted = {"depth_m": metric.model is not None, "ply": metric.ply}
    absent = [name for name, asked in wanted.items() if asked and name not in outputs]
    return f"it has no {' or '.join(absent)} output" if absent else None


@dataclass(frozen=True)
class MetricFailure:
    """A metric pass that failed after the disparity was complete: the output is kept, and `error` is raised once
    it is in place (see `dvd.jobs.outputs.predict_to_folder`)."""

    error: Exception

    def line(self) -> str:
        error = self.error
        text = str(error) if isinstance(error, DVDError | OSError) else f"{type(error).__name__}: {error}"
        return " ".join(text.split())

    def meta(self) -> dict:
        return {
            "error": self.line(),
            "retry": "run the same dvd predict command again with --resume: only the metric pass runs (the "
            "disparity is kept); or run it without --metric/--save ply",
        }

    def raised(self, target: Path) -> Exception:
        """The error to raise for the user: it says what was kept and how to add the metric pass later."""
        kept = (
            f"the disparity output is complete and kept in {target} ({META_FILE} says {METRIC_FAILED_KEY}): run "
            "the same command again with --resume to retry only the metric pass, or drop --metric/--save ply"
        )
        if isinstance(self.error, DVDError):
            return DVDError(f"{self.line()}; {kept}")
        self.error.add_note(kept)
        return self.error


def metric_pass_keeping_disparity(
    metric: MetricSettings | None, staging: Path, source: Source, output: OutputSettings, meta: dict
) -> tuple[dict, MetricFailure | None]:
    """`metric_post_pass`, except that its failure does not cost the disparity: the metric outputs it began are
    removed, meta.json records the failure, and the error comes back to be raised once the folder is in place."""
    try:
        return metric_post_pass(metric, staging, source, output, meta), None
    except Exception as error:  # noqa: BLE001 - any failure of the pass (a degenerate fit, a model's error, the disk)
        for name in METRIC_OUTPUTS:
            path = staging / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        failure = MetricFailure(error)
        return {**meta, METRIC_FAILED_KEY: failure.meta()}, failure


def add_metric(source: Source, target: Path, output: OutputSettings, metric: MetricSettings) -> int:
    """Run only the metric pass on the finished output `target` of `source` (its disparity is not predicted again):
    the folder is rebuilt beside it from links to its files plus the new outputs, and replaces it when complete,
    so a failure leaves it as it was. Returns its frame count. DVDError when the frames `output` selects are not
    those of the folder."""
    meta = read_meta(target)
    if meta is None:
        raise DVDError(f"{target} has no readable {META_FILE}: predict it again with --overwrite")
    check_same_frames(meta, source, output, target)
    base = without_metric({key: value for key, value in meta.items() if key not in (FILES_KEY, METRIC_FAILED_KEY)})
    with atomic_directory(target, True, prediction_folder_problem) as staging:
        for name in listed_names(base):
            _link_or_copy(target / name, staging / name)
        write_meta(staging, metric_post_pass(metric, staging, source, output, base))
    return int(meta.get("num_frames", 0))


def check_same_frames(meta: dict, source: Source, output: OutputSettings, target: Path) -> None:
    """The metric pass decodes `source` again with `output`'s frame flags: they must select the folder's frames."""
    recorded = {"--max-frames": meta.get("max_frames"), "--stride": meta.get("stride")}
    asked = {"--max-frames": output.max_frames, "--stride": output.stride}
    if meta.get("model_size") != meta.get("source_size"):  # else both sizes are the same
        recorded["--keep-model-size"] = meta.get("output_size") == meta.get("model_size")
        asked["--keep-model-size"] = output.keep_model_size
    changed = [f"{flag} {recorded[flag]} (now {asked[flag]})" for flag in asked if recorded[flag] != asked[flag]]
    if list(meta.get("source_size", [])) != list(source.size):
        changed.append(f"an input of {meta.get('source_size')} (now {list(source.size)})")
    if changed:
        raise DVDError(
            f"{target} was predicted with {', '.join(changed)}: give the flags it was made with to add the metric "
            "pass to it, or --overwrite to predict it again"
        )


def _link_or_copy(source: Path, destination: Path) -> None:
    """`source` (a file, or a folder of files) at `destination`, as hard links where the file system allows them
    (the metric pass only reads these files); links inside a dvd output are never followed."""
    if source.is_dir() and not source.is_symlink():
        destination.mkdir()
        for item in source.iterdir():
            _link_or_copy(item, destination / item.name)
    else:
        link_or_copy(source, destination, follow_symlinks=False)
