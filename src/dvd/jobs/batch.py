"""A batch of inputs -> one output folder each under OUT, with OUT/manifest.jsonl: what `dvd predict` runs.

Everything is checked before the model loads (`check_inputs`: inputs, flags against each input, existing outputs
judged by their meta.json); the model loads once; several processes (torchrun, `accelerate launch`) share the inputs
or, with fewer inputs than processes, the windows of each video (`share_work`); a failed input is recorded and, with
`keep_going`, the batch goes on.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from dvd.errors import DVDError
from dvd.metric.settings import MetricSettings
from dvd.options import DEFAULT_IMAGE_FPS, POST_PASS_FORMATS, WRITER_FORMATS

if TYPE_CHECKING:  # the heavy stack (torch, diffusers, av) is imported in `predict`, so that `dvd --help` is instant
    from dvd.engine.video import VideoSettings
    from dvd.io.input_lists import ListedInput
    from dvd.io.readers import Source
    from dvd.jobs.outputs import OutputSettings
    from dvd.pipeline.dvd_pipeline import DVDPipeline
    from dvd.weights.load import WeightFiles


@dataclass(frozen=True)
class PredictSettings:
    """Everything `dvd predict` was asked to do, typed; `predict` needs nothing else."""

    inputs: tuple[str, ...]
    output: Path
    video: VideoSettings
    outputs: OutputSettings
    weights: str | None = None
    device: str | None = None
    dtype: str | None = None
    fps: str | None = None  # None: DEFAULT_IMAGE_FPS for images; anything else is refused for videos
    allow_damaged: bool = False
    overwrite: bool = False
    quiet: bool = False
    resume: bool = False
    skip_existing: bool = False
    keep_going: bool = False
    metric: MetricSettings = field(default_factory=MetricSettings)  # --metric, intrinsics, --save ply (dvd.metric)
    steps: int | None = None  # --steps, --seed: how a generative model samples (None: the pipeline's default)
    seed: int | None = None


def predict(settings: PredictSettings) -> int:
    """Check everything, load the model once, write each input's folder and its OUT/manifest.jsonl line; prints a
    summary line. Returns 0, or SOME_FAILED when --keep-going recorded failed inputs."""
    from dvd.io.atomic import check_output_path, prepare_output_folder
    from dvd.jobs.manifest import MANIFEST_FILE, Manifest
    from dvd.metric.post_pass import load_metric
    from dvd.weights.load import locate_weights

    entries = check_run(settings)
    jobs = [entry for entry in entries if entry.source is not None]
    needs_model = any(not entry.metric_only for entry in jobs)  # else all skipped, refused or metric only
    # Found (Hub files downloaded) before OUT is made, so missing weights or an unreachable Hub leave no folder;
    # a path that cannot be OUT fails before either.
    check_output_path(settings.output)
    weights = locate_weights(settings.weights) if needs_model else None
    made_output = not os.path.lexists(settings.output)
    output = prepare_output_folder(settings.output)
    share = share_work(jobs, settings.device)
    manifest = Manifest(output, share.process)  # refuses a manifest it could not append to, before any model work
    if settings.resume and share.world > 1:
        raise DVDError(
            "--resume cannot go on with processes sharing the windows of one video (fewer inputs than processes): "
            "resume with one process"
        )
    metric = load_metric(settings.metric)
    failures: list[str] = []
    for index, entry in enumerate(entries):  # inputs refused or skipped before any model work: each process its own
        if entry.source is None and index % share.processes == share.process:
            manifest.record(entry.path, entry.target, entry.status, error=entry.skipped or entry.error)
            if entry.error:
                failures.append(f"{entry.path} ({entry.error})")
    started = time.perf_counter()
    quiet = settings.quiet or not share.writes  # one bar and one warning per run, from the process that writes
    batch_windows = None
    if needs_model:
        try:
            pipe = load_pipeline(weights, share.device, settings)
        except BaseException:
            if made_output and share.world == 1:  # the folder this run made, still empty: a refused model leaves none
                with suppress(OSError):
                    output.rmdir()
            raise
        for line in model_notes(pipe, quiet) if share.writes else []:
            say(line)
        batch_windows = share_windows(pipe, settings.video, share) if share.world > 1 else None
    total = 0
    shots = Shots()
    written_to: list[Path] = []
    for entry in share.jobs:
        began = time.perf_counter()
        try:
            if not share.writes:
                follow_windows(pipe, entry, batch_windows)
                continue
            written = predict_entry(
                pipe if needs_model else None, entry, metric, say, quiet, settings.resume, batch_windows
            )
        except Exception as error:  # recorded; raised again unless --keep-going (Ctrl-C ends the batch)
            if not share.writes:
                if settings.keep_going:
                    continue
                raise
            message = error_line(error)
            try:
                manifest.record(entry.path, entry.target, "failed", time.perf_counter() - began, error=message)
            except OSError as unrecorded:  # a full disk: the input's own error (and its notes) is what to report
                error.add_note(f"it could not be recorded in {MANIFEST_FILE} ({unrecorded.strerror or unrecorded})")
                raise error from None
            if not settings.keep_going:
                raise
            failures.append(f"{entry.path} ({message})")
            continue
        manifest.record(entry.path, entry.target, "ok", time.perf_counter() - began, frames=written)
        written_to.append(entry.target)
        total += written
        shots.count(entry.target)
    if share.writes:
        mine = [entry for index, entry in enumerate(entries) if index % share.processes == share.process]
        skipped = sum(1 for entry in mine if entry.skipped)
        print(summary_line(total, written_to, skipped, len(failures), time.perf_counter() - started, shots, output))
    return report_failures(failures, output / MANIFEST_FILE)


# The exit code of a --keep-going run in which some inputs failed (2 is a run that stopped at its first error).
SOME_FAILED = 3


def check_run(settings: PredictSettings) -> list[BatchEntry]:
    """What a run checks before anything is written or loaded: the settings, then every input (`check_inputs`)."""
    from dvd.engine.allocator import keep_heap_flat
    from dvd.metric.post_pass import check_metric

    settings.video.validate()
    check_model_sides(settings.video.height, settings.video.width)
    keep_heap_flat()  # glibc's malloc settings for a run of hours (dvd.engine.allocator)
    if settings.skip_existing and settings.overwrite:
        raise DVDError("--skip-existing keeps complete outputs and --overwrite replaces them: choose one")
    entries = check_inputs(settings)
    check_metric(settings.metric, [(entry.source, entry.settings.outputs) for entry in entries if entry.source])
    return entries


def load_pipeline(weights: WeightFiles | str | None, device: str | None, settings: PredictSettings) -> DVDPipeline:
    """The model as every way of running `dvd predict` loads it (one process, a launch's processes, each Ray actor):
    sampling as --steps/--seed say, and the window checked against its backbone before any input."""
    from dvd.pipeline.dvd_pipeline import DVDPipeline

    pipe = DVDPipeline.from_pretrained(weights, device=device, dtype=settings.dtype)
    pipe.set_sampling(settings.steps, settings.seed)
    pipe.fit_settings(settings.video)  # a window that does not fit the backbone fails before any input
    return pipe


def predict_entry(
    pipe: DVDPipeline | None,
    entry: BatchEntry,
    metric: MetricSettings | None,
    say: Callable[[str], None],
    quiet: bool,
    resume: bool,
    batch_windows: int | None = None,
) -> int:
    """One checked input of a batch into its folder, as every way of running `dvd predict` does it (one process,
    processes of a launch, Ray actors): the metric pass alone on a complete output, else the prediction; returns
    the frames written. `say` takes the run's lines about this input (warnings, notes); `batch_windows` is the
    engine's windows per call where processes share the windows of each video (`share_windows`)."""
    from dvd.jobs.finished import add_metric
    from dvd.jobs.outputs import predict_to_folder
    from dvd.jobs.progress import PredictProgress

    settings, source = entry.settings, entry.source
    frames = source.frame_count(settings.outputs.max_frames, settings.outputs.stride)
    if entry.metric_only:
        say(f"dvd predict: note: {entry.metric_only}")
        return add_metric(source, entry.target, settings.outputs, metric)
    if entry.redo:
        say(f"dvd predict: warning: {entry.redo}")
    video = settings.video if batch_windows is None else replace(settings.video, batch_windows=batch_windows)
    with PredictProgress(source.name, frames, pipe, disable=quiet) as progress:
        written = predict_to_folder(
            pipe,
            source,
            entry.target,
            video,
            settings.outputs,
            progress=progress.written,
            timer=progress,
            overwrite=settings.overwrite or bool(entry.redo),
            metric=metric,
            resume=resume,
            resumable=True,
        )
    warning = damage_warning(source, written, frames, entry.target)
    if warning:
        say(warning)
    return written


def say(line: str) -> None:
    """A line about one input, from a process that runs it itself: on stderr at once."""
    print(line, file=sys.stderr)


def summary_line(
    frames: int, written_to: list[Path], skipped: int, failed: int, seconds: float, shots: Shots, output: Path
) -> str:
    """The line a run ends with: frames, inputs, speed, shots and where the outputs are."""
    counts = f"{len(written_to)} written, {skipped} skipped, {failed} failed: " if skipped or failed else ""
    return (
        f"dvd predict: {frames} frames from {len(written_to)} input(s) in {seconds:.1f} s "
        f"({frames / max(seconds, 1e-9):.2f} frames/s){shots.summary()} -> {counts}"
        f"{', '.join(str(target) for target in written_to) or output}"
    )


def report_failures(failures: list[str], manifest: Path) -> int:
    """The line listing a --keep-going run's failed inputs, on stderr; the exit code of the run."""
    if not failures:
        return 0
    print(
        f"dvd predict: error: {len(failures)} input(s) failed: {'; '.join(failures)}; each is recorded in {manifest}",
        file=sys.stderr,
    )
    return SOME_FAILED


@dataclass
class BatchEntry:
    """One input of a run as the checks before any model work left it: to do (`source`), skipped, or failed."""

    path: Path
    target: Path
    settings: PredictSettings  # the run's, with the settings of the input's list row (`with_row_settings`)
    row: dict = field(default_factory=dict)  # those row settings (ROW_SETTINGS), as listed
    source: Source | None = None
    skipped: str | None = None  # why, for the manifest
    error: str | None = None
    redo: str | None = None  # why an existing output of dvd's is predicted again (--skip-existing, incomplete)
    metric_only: str | None = None  # why only the metric pass runs on an existing output (--resume)

    @property
    def status(self) -> str:
        """The manifest status of an entry that the checks settled (skipped or failed)."""
        return "skipped" if self.skipped else "failed"


def check_inputs(settings: PredictSettings) -> list[BatchEntry]:
    """Every input checked before the model loads. A bad one raises DVDError, or with --keep-going becomes a
    failed entry; with --skip-existing a complete output makes a skipped entry, without decoding the input."""
    from dvd.io.atomic import check_output
    from dvd.io.readers import list_inputs, source_name
    from dvd.jobs.finished import check_same_frames, read_meta
    from dvd.jobs.outputs import prediction_folder_problem
    from dvd.jobs.resume import check_partial

    missing: dict[Path, str] | None = {} if settings.keep_going else None
    listed = list_inputs(settings.inputs, missing)
    note_unknown_columns(listed)
    entries = []
    for item in listed:
        row = {name: value for name, value in item.settings.items() if name in ROW_SETTINGS}
        entry = BatchEntry(item.path, Path(settings.output) / source_name(item.path), settings, row)
        entries.append(entry)
        try:
            entry.settings = with_row_settings(settings, row, item.where)
            plan_existing(entry)
            if entry.skipped:
                continue
            source = open_entry(entry)
            check_source(source, entry.settings)
            # Refused before any model work; checked again as each folder is renamed into place.
            if entry.metric_only:  # the metric pass decodes the input again: its frames must be the folder's
                check_same_frames(read_meta(entry.target) or {}, source, entry.settings.outputs, entry.target)
            replaces = settings.overwrite or bool(entry.redo or entry.metric_only)
            check_output(entry.target, replaces, prediction_folder_problem)
            check_partial(entry.target, settings.resume, settings.overwrite)
        except DVDError as error:
            if not settings.keep_going:
                raise
            entry.error = str(error)
            continue
        entry.source = source
    entries += [
        BatchEntry(path, Path(settings.output) / source_name(path), settings, error=error)
        for path, error in (missing or {}).items()
    ]
    return entries


def open_entry(entry: BatchEntry) -> Source:
    """The entry's input, opened with its settings and checked against its frame selection (--max-frames,
    --stride)."""
    from dvd.io.readers import open_source

    settings = entry.settings
    source = open_source(
        entry.path, DEFAULT_IMAGE_FPS if settings.fps is None else settings.fps, settings.allow_damaged
    )
    source.frame_count(settings.outputs.max_frames, settings.outputs.stride)  # checks --max-frames, --stride
    return source


# The settings a list table (CSV, JSON Lines, Parquet) may give each row, beside its path: those that belong to one
# input rather than to the run.
ROW_SETTINGS = ("fps", "max_frames", "stride", "cut_frames")


def with_row_settings(settings: PredictSettings, row: dict, where: str | None = None) -> PredictSettings:
    """`settings` with the values of an input's list row in place of the flags of the same names (see
    ROW_SETTINGS; other columns are ignored, `note_unknown_columns` says so); DVDError naming the row for a bad
    value."""
    from dvd.engine.shots import parse_cut_frames
    from dvd.io.readers import frame_rate

    row = {name: value for name, value in row.items() if name in ROW_SETTINGS}
    if not row:
        return settings
    try:
        outputs = replace(
            settings.outputs,
            max_frames=_whole(row.get("max_frames", settings.outputs.max_frames), "max_frames"),
            stride=_whole(row.get("stride", settings.outputs.stride), "stride"),
        )
        video = settings.video
        if "cut_frames" in row:
            cuts = row["cut_frames"]
            text = ",".join(map(str, cuts)) if isinstance(cuts, (list, tuple)) else str(cuts)
            video = replace(video, cut_frames=parse_cut_frames(text))
        fps = str(row["fps"]) if "fps" in row else settings.fps
        if fps is not None:
            frame_rate(fps)
    except DVDError as error:
        raise DVDError(f"{where}: {error}" if where else str(error)) from None
    return replace(settings, outputs=outputs, video=video, fps=fps)


def _whole(value: object, name: str) -> int | None:
    """A list cell as a positive whole number (CSV cells are text); None stays None."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise DVDError(f"{name} must be a whole number of at least 1, got {value!r}")
    return int(text)


def note_unknown_columns(listed: list[ListedInput]) -> None:
    """One note per list file whose rows have columns that are not ROW_SETTINGS: they are ignored, which a typo
    in a setting's name should not be silently."""
    unknown: dict[str, set[str]] = {}
    for item in listed:
        names = set(item.settings) - set(ROW_SETTINGS)
        if names and item.list_file is not None:
            unknown.setdefault(str(item.list_file), set()).update(names)
    for list_file, names in unknown.items():
        print(
            f"dvd predict: note: columns {', '.join(sorted(names))} of {list_file} are ignored: a list row may set "
            f"path and {', '.join(ROW_SETTINGS)}",
            file=sys.stderr,
        )


def plan_existing(entry: BatchEntry) -> None:
    """What becomes of an input whose OUT/<name>/ is already an output of dvd predict, judged by that folder's own
    meta.json (the files it lists, with their sizes): with --skip-existing a complete one is skipped and an
    incomplete one (a file deleted or cut short) predicted again; with --resume a complete one that lacks the
    --metric/--save ply outputs asked for (or whose metric pass failed) gets only the metric pass. Anything else
    is left to `check_output`, which refuses an existing folder without --overwrite."""
    from dvd.jobs.finished import incomplete_problem, metric_missing, prediction_folder_problem, read_meta

    target, settings = entry.target, entry.settings
    if target.is_symlink() or not target.is_dir() or prediction_folder_problem(target) is not None:
        return
    incomplete = incomplete_problem(target)
    if incomplete is not None:
        if settings.skip_existing:
            entry.redo = f"{target} is incomplete ({incomplete}): predicting it again (--skip-existing)"
        return
    missing = metric_missing(read_meta(target) or {}, settings.metric)
    if missing is not None and settings.resume and not settings.overwrite:
        entry.metric_only = f"{target} is complete but {missing}: running only the metric pass on it (--resume)"
    elif settings.skip_existing:
        later = f"; {missing}: add --resume to run the metric pass on it" if missing else ""
        entry.skipped = f"{target} is complete (--skip-existing){later}"
    elif missing is not None and not settings.overwrite:
        raise DVDError(
            f"{target} already exists and {missing}: pass --resume to run only the metric pass on it, or "
            "--overwrite to predict it again"
        )


def error_line(error: BaseException) -> str:
    """An error as one line for the manifest and the summary, with its notes (e.g. where a partial output is)."""
    if isinstance(error, DVDError):
        text = str(error)
    elif isinstance(error, OSError):
        text = f"{error.strerror or error}{f' ({error.filename})' if error.filename else ''}"
    else:
        text = f"internal error ({type(error).__name__}: {error})"
    return " ".join([text, *getattr(error, "__notes__", [])]).replace("\n", " ")


@dataclass(frozen=True)
class WorkShare:
    """This process's part of a run: its inputs and device, and whether it shares their windows with the others."""

    jobs: list[BatchEntry]
    device: str | None
    rank: int = 0
    world: int = 1  # above 1: all `world` processes run every job, each predicting its share of the windows
    process: int = 0  # this process's index under `accelerate launch`, whichever way the work is shared
    processes: int = 1

    @property
    def writes(self) -> bool:
        """Whether this process writes its jobs' folders: with shared windows only rank 0 does."""
        return self.world == 1 or self.rank == 0


def share_work(jobs: list[BatchEntry], device: str | None) -> WorkShare:
    """Under `accelerate launch` or torchrun, this process's share of the run, on its own device.

    With at least as many inputs as processes, each process takes every N-th input (whole inputs need no
    communication); with fewer, no process would idle, so they all take every input and share its windows. A
    single process gets everything and the device asked for.
    """
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=str(device or "").startswith("cpu") or not torch.cuda.is_available())
    if state.num_processes == 1:
        return WorkShare(jobs, device)
    device = device or str(state.device)
    process, processes = state.process_index, state.num_processes
    if len(jobs) >= processes:
        return WorkShare(jobs[process::processes], device, process=process, processes=processes)
    return WorkShare(jobs, device, process, processes, process, processes)


def share_windows(pipe: DVDPipeline, video: VideoSettings, share: WorkShare) -> int:
    """Make `pipe` predict only this process's share of each engine call; returns the windows per engine call that
    keep every process busy: --batch-windows windows per process per call."""
    from dvd.jobs.sharded import ShardedWindows

    sharded = ShardedWindows(pipe.predict_windows, share.rank, share.world, video.batch_windows)
    # `predict_to_folder` runs its engine on `pipe.predict_windows`; every input of this run shares its windows.
    pipe.predict_windows = sharded
    return sharded.windows_per_call


def follow_windows(pipe: DVDPipeline, entry: BatchEntry, batch_windows: int) -> None:
    """A process that does not write: the same frames through the same engine, so that it predicts its share of
    every window call in step with the others; the stitched frames are dropped, since rank 0 writes them."""
    from dvd.engine.video import VideoEngine

    source, outputs = entry.source, entry.settings.outputs
    video = pipe.fit_settings(replace(entry.settings.video, batch_windows=batch_windows).for_input(source.kind))
    disparity = VideoEngine(pipe.predict_windows, video).model_frames(
        source.pixels(outputs.max_frames, outputs.stride), source.size
    )
    for _ in disparity:
        pass


class Shots:
    """The shots and failed seams of a run's inputs, from their meta.json, for the summary line."""

    def __init__(self) -> None:
        self.shots = self.failed = self.recovered = 0

    def count(self, target: Path) -> None:
        meta = json.loads((target / "meta.json").read_text(encoding="utf-8"))
        self.shots += len(meta["shots"])
        self.failed += len(meta["failed_seams"])
        self.recovered += sum(seam["recovered"] for seam in meta["failed_seams"])

    def summary(self) -> str:
        """', N shots' and, when some failed, ', M failed seams (K recovered as cuts; see meta.json)'."""
        text = f", {self.shots} shot(s)"
        if self.failed:
            text += f", {self.failed} failed seam(s) ({self.recovered} treated as cuts; see meta.json failed_seams)"
        return text


# The largest model size, per side: a 4096x4096 window already needs far more memory than any GPU has today, and
# larger requests are typos (--height 100000) that would otherwise die out of memory with a traceback.
MAX_MODEL_SIDE = 4096


def check_model_sides(height: int, width: int) -> None:
    if max(height, width) > MAX_MODEL_SIDE:
        raise DVDError(
            f"--height/--width {height}x{width} is too large: the model size may not exceed {MAX_MODEL_SIDE} pixels "
            "on either side; the default 480x640 is what DVD was trained for"
        )


def check_source(source: Source, settings: PredictSettings) -> None:
    """What the flags ask of one input that it cannot give, before the model loads."""
    from dvd.io.readers import frame_rate

    if settings.fps is not None and source.kind == "video":
        raise DVDError(
            f"--fps sets the frame rate of image inputs, but {source.path} is a video, which keeps its own time "
            "stamps: drop --fps (run videos and image folders separately), or re-time the video with ffmpeg"
        )
    height, width = settings.video.model_size(source.size)
    if max(height, width) > MAX_MODEL_SIDE:
        raise DVDError(
            f"{source.path} would run at {height}x{width} (its aspect ratio with --height/--width "
            f"{settings.video.height}x{settings.video.width}), beyond {MAX_MODEL_SIDE} pixels per side: lower "
            "--height/--width"
        )
    if {"mp4", "sbs"} & set(settings.outputs.formats):
        try:
            frame_rate(source.output_rate(settings.outputs.stride))
        except DVDError as error:
            raise DVDError(
                f"the mp4/sbs outputs of {source.path} at --stride {settings.outputs.stride}: {error}"
            ) from None


def damage_warning(source: Source, written: int, expected: int, target: Path) -> str | None:
    """The one line about an input kept with --allow-damaged (meta.json holds every problem); None if undamaged."""
    if not source.damage:
        return None
    more = f" (and {len(source.damage) - 1} more problem(s))" if len(source.damage) > 1 else ""
    return (
        f"dvd predict: warning: wrote {written} of {expected} frames of a damaged input: {source.damage[0]}{more}; "
        f"see {target / 'meta.json'}"
    )


# Above this many DiT parameters a CPU run is a matter of minutes per window (the 1.3B model has 1.42e9).
CPU_PATIENCE_PARAMETERS = 100_000_000


def model_notes(pipe: DVDPipeline, quiet: bool) -> list[str]:
    """The lines a run prints once its model has loaded: that the full model on a CPU will be slow (not with
    --quiet), and what the proof model is (also with --quiet, which silences progress only: its depth of real
    footage means nothing, and a first run with it should not pass for DVD's)."""
    from dvd.weights.about import PROOF_NOTICE

    notes = []
    parameters = sum(p.numel() for p in pipe.model.transformer.parameters())
    if not quiet and pipe.model.device.type == "cpu" and parameters > CPU_PATIENCE_PARAMETERS:
        notes.append(
            f"dvd predict: running a {parameters / 1e9:.2f}B-parameter DiT on the CPU: expect minutes per window; "
            "use --device cuda/mps, or a smaller --window and --height/--width"
        )
    if pipe.weights_kind == "proof":
        notes.append(f"dvd predict: note: {PROOF_NOTICE}")
    return notes


def parse_formats(text: str) -> list[str]:
    """The --save list as format names, npy first and always present."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    known = (*WRITER_FORMATS, *POST_PASS_FORMATS)
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise DVDError(f"unknown --save format(s) {', '.join(unknown)}: choose among {','.join(known)}")
    return list(dict.fromkeys(["npy", *names]))
