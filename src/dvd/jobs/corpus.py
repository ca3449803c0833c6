"""`dvd predict --ray`: a corpus of inputs over the actors of a Ray cluster (or of a Ray started on this machine),
scheduled as actors come free, longest input first, resumable, every input accounted for.

The driver (this process) makes the checks of every run (`check_run`: flags, inputs, existing outputs) before
anything is written. The inputs to do become a Ray Data Dataset, one row (one block) per input, ordered by frame
count as the container header gives it, longest first, so that the run ends on short clips rather than on one film
that started last. An actor pool maps them, at most one call in flight per actor: `InputWorker`, one DVDPipeline
each, predicts one input per call through `predict_entry`, the very function a single process calls, so the
folders, meta.json and manifest lines are the same. The driver writes each manifest line as its result arrives,
draws one progress line, and ends with OUT/manifest.parquet and the summary.

Outputs equal a single process's byte for byte (meta.json's `seconds`, the time it took, aside) when the model
runs on the same device with the same number of torch threads: each actor sets `torch.set_num_threads` to the CPUs
it reserves (`ActorPlan.threads`).

Faults. Ray Data restarts an actor that dies and retries its call (its actor pools default to max_restarts=-1 and
max_task_retries=-1). Every actor predicts with `resume` on where the outputs allow it, so a retried input takes
over the staging folder the dead attempt left (its pid is gone: `dvd.io.atomic`) and goes on from its last resume
point (`dvd.jobs.resume`): nothing is predicted again but the windows after that point. That partial output is
always this run's: a run without --resume refuses partial outputs it did not make (`check_partial`, before
anything starts), and --overwrite without --resume discards them before the first call. An input whose worker
dies MAX_ATTEMPTS times (out of memory on a huge video, a crash in a decoder) fails its row instead of being retried
for ever. A bad input fails its row; without --keep-going the run then stops at it, as a single process does.

Several nodes: the inputs, OUT and the weights must be at the same paths on every node (a shared file system such as
NFS or Lustre); relative paths are taken from the driver's working folder, which every actor changes to.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from dvd.errors import DVDError
from dvd.jobs.batch import BatchEntry, PredictSettings

if TYPE_CHECKING:
    from dvd.jobs.cluster import ActorPlan, RaySession, RaySettings

MAX_ATTEMPTS = 3  # calls of one input whose worker died before the input fails instead of being tried again
IN_FLIGHT_NOTE = (
    "the inputs not finished were stopped (those being predicted keep their partial outputs): run the same command "
    "with --skip-existing --resume to go on with them"
)


def predict_on_ray(settings: PredictSettings, cluster: RaySettings) -> int:
    """`dvd predict` on Ray: the same checks, outputs and manifest as `dvd.jobs.batch.predict`, plus
    OUT/manifest.parquet; prints a progress line and the summary. Returns 0, or SOME_FAILED when --keep-going
    recorded failed inputs."""
    from dvd.io.atomic import check_output_path, discard_staging, prepare_output_folder
    from dvd.jobs.batch import Shots, check_run, report_failures, summary_line
    from dvd.jobs.cluster import check_reachable, import_ray, plan_actors, ray_session
    from dvd.jobs.manifest import Manifest, check_index, write_index
    from dvd.jobs.progress import CorpusProgress
    from dvd.weights.load import locate_weights

    cluster.validate()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise DVDError("--ray shares the inputs over Ray's actors: start it as one process, not under a launcher")
    import_ray()  # a missing extra is the first thing to hear about
    entries = check_run(settings)
    tasks = longest_first(entries)
    needs_model = any(not entry.metric_only for entry in tasks)
    check_output_path(settings.output)
    if needs_model:  # on this node: missing weights fail before OUT is made; each actor finds them again on its own
        locate_weights(settings.weights)
    if cluster.address not in (None, "auto"):
        check_reachable(cluster.address)
    output = prepare_output_folder(settings.output)
    manifest = Manifest(output)
    check_index(output)
    if settings.overwrite and not settings.resume:  # what a single process discards as it reaches each input
        for entry in tasks:
            discard_staging(entry.target)
    lines, failures = [], []
    for entry in entries:
        if entry.source is None:
            lines.append(manifest.record(entry.path, entry.target, entry.status, error=entry.skipped or entry.error))
            if entry.error:
                failures.append(f"{entry.path} ({entry.error})")
    started = time.perf_counter()
    total, written_to, shots, skipped = 0, [], Shots(), sum(1 for entry in entries if entry.skipped)
    with ray_session(cluster, output) as session:
        plan = plan_actors(session.ray, cluster, settings.device)
        progress = CorpusProgress(len(tasks), sum(map(planned_frames, tasks)), session.console, settings.quiet)
        done = 0
        try:
            for result in ray_results(session, tasks, settings, plan, needs_model):
                done += 1
                line = manifest.record(
                    result["input"], Path(result["output"]), result["status"], result["seconds"],
                    frames=result["frames"], error=result["error"],
                )  # fmt: skip
                lines.append(line)
                for note in result["notes"] or ():
                    progress.say(note)
                progress.finished(result["planned"], result["frames"])
                if result["status"] == "failed":
                    if not settings.keep_going:
                        raise raised_again(result)
                    failures.append(f"{result['input']} ({result['error']})")
                    continue
                written_to.append(Path(result["output"]))
                total += result["frames"]
                shots.count(Path(result["output"]))
        except BaseException as error:
            if done < len(tasks):  # the run started its actors: those working on an input stop with it
                error.add_note(IN_FLIGHT_NOTE)
            raise
        finally:
            progress.close()
        logs = ", ".join(filter(None, [str(session.log), session.worker_logs()]))
    index = write_index(output, lines)
    print(summary_line(total, written_to, skipped, len(failures), time.perf_counter() - started, shots, output))
    print(f"dvd predict: on Ray, {plan.describe()}; index {index}; Ray's logs: {logs}")
    return report_failures(failures, manifest.path)


def longest_first(entries: list[BatchEntry]) -> list[BatchEntry]:
    """The entries to do (checked, not skipped), the most frames first, ties in the order given."""
    return sorted((entry for entry in entries if entry.source is not None), key=lambda entry: -planned_frames(entry))


def planned_frames(entry: BatchEntry) -> int:
    """The frames an input will give, as its header says (before any decoding)."""
    return entry.source.frame_count(entry.settings.outputs.max_frames, entry.settings.outputs.stride)


def ray_results(
    session: RaySession, tasks: list[BatchEntry], settings: PredictSettings, plan: ActorPlan, needs_model: bool
) -> Iterator[dict]:
    """The result of each task (`InputWorker.__call__`), in the order they finish; a Ray error that ends the run
    (an actor that cannot start, the cluster lost) as one DVDError line."""
    from dvd.jobs.cluster import ray_failure

    try:
        yield from _results(session, tasks, settings, plan, needs_model)
    except session.ray.exceptions.RayError as error:
        raise ray_failure(error) from None


def _results(
    session: RaySession, tasks: list[BatchEntry], settings: PredictSettings, plan: ActorPlan, needs_model: bool
) -> Iterator[dict]:
    if not tasks:
        return
    ray = session.ray
    # One call may take hours (a film): a long wait for the next result is not a stalled run.
    ray.data.DataContext.get_current().execution_no_progress_timeout_s = -1
    attempts = new_attempts(ray)
    rows = [
        {
            "input": str(entry.path),
            "output": str(entry.target),
            "row": json.dumps(entry.row),
            "redo": entry.redo,
            "metric_only": entry.metric_only,
            "planned": planned_frames(entry),
        }
        for entry in tasks
    ]
    worker = {"settings": settings, "folder": os.getcwd(), "plan": plan, "attempts": attempts, "model": needs_model}
    mapped = ray.data.from_items(rows, override_num_blocks=len(rows)).map(
        InputWorker,
        fn_constructor_kwargs=worker,
        # A fixed pool, one call per actor at a time: the next input goes to the first actor that comes free.
        compute=ray.data.ActorPoolStrategy(size=min(plan.actors, len(rows)), max_tasks_in_flight_per_actor=1),
        num_cpus=plan.cpus,
        num_gpus=plan.gpus or None,
    )
    yield from mapped.iter_rows()


def raised_again(result: dict) -> BaseException:
    """The error an actor met on an input, rebuilt from its description (`described_error`) as the kind the CLI
    tells apart: a DVDError or an OSError (exit 2, their own line) or, for any other, an exception of the same class
    name (an internal error, exit 1). Plain data, never unpickled: nothing the driver reads can run code."""
    described = result["exception"]
    if described is None:
        return DVDError(result["error"])
    if described["kind"] == "DVDError":
        error: BaseException = DVDError(described["message"])
    elif described["kind"] == "OSError":
        error = OSError(described["errno"], described["strerror"], described["filename"])
    else:
        error = type(described["kind"], (Exception,), {})(described["message"])
    for note in described["notes"]:
        error.add_note(note)
    return error


class Attempts:
    """Counts the calls for each input across the run (a Ray actor of the driver's), so that an input whose worker
    keeps dying fails instead of being retried for ever."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def start(self, key: str) -> int:
        self.calls[key] = self.calls.get(key, 0) + 1
        return self.calls[key]


def new_attempts(ray: ModuleType) -> object:
    """An `Attempts` actor (it takes no CPU: it only counts)."""
    return ray.remote(num_cpus=0)(Attempts).remote()


class InputWorker:
    """A Ray actor holding one DVDPipeline (and the metric model, if asked for); each call predicts one input."""

    def __init__(self, settings: PredictSettings, folder: str, plan: ActorPlan, attempts: object, model: bool) -> None:
        import torch

        from dvd.engine.allocator import keep_heap_flat
        from dvd.jobs.batch import load_pipeline, model_notes
        from dvd.metric.post_pass import load_metric
        from dvd.weights.load import locate_weights

        try:
            os.chdir(folder)  # the driver's: the inputs and OUT as the user gave them, meta.json's paths too
        except OSError as error:
            raise DVDError(
                f"this node has no folder {folder} ({error.strerror}): the inputs and OUT must be at the same paths "
                "on every node (a shared file system)"
            ) from None
        torch.set_num_threads(plan.threads)
        keep_heap_flat()
        self.settings, self.attempts = settings, attempts
        self.pipe = None
        self.notes: list[str] = []  # said once, with this actor's first result (the driver prints each line once)
        if model:
            self.pipe = load_pipeline(locate_weights(settings.weights), plan.device, settings)
            self.notes = model_notes(self.pipe, settings.quiet)
        self.metric = load_metric(settings.metric)

    def __call__(self, row: dict) -> dict:
        import ray

        from dvd.jobs.batch import error_line, open_entry, predict_entry, with_row_settings
        from dvd.jobs.outputs import resumable_outputs

        began = time.perf_counter()
        notes, self.notes = self.notes, []
        entry = BatchEntry(
            Path(row["input"]), Path(row["output"]), self.settings, redo=row["redo"], metric_only=row["metric_only"]
        )
        result = {
            "input": row["input"], "output": row["output"], "planned": row["planned"], "status": "ok",
            "frames": None, "seconds": 0.0, "error": None, "exception": None, "notes": notes,
        }  # fmt: skip
        try:
            calls = ray.get(self.attempts.start.remote(row["output"]))
            if calls > MAX_ATTEMPTS:
                raise DVDError(
                    f"the Ray worker predicting {row['input']} died {calls - 1} times (out of memory? see Ray's logs); "
                    "its partial output is kept: run again with --resume, with more memory per actor"
                )
            entry.settings = with_row_settings(self.settings, json.loads(row["row"]))
            entry.source = open_entry(entry)
            resume = self.settings.resume or resumable_outputs(entry.settings.outputs)
            result["frames"] = predict_entry(self.pipe, entry, self.metric, notes.append, True, resume)
        except Exception as error:  # noqa: BLE001 - the row says why; the driver decides whether the run goes on
            result.update(status="failed", error=error_line(error), exception=described_error(error))
        result["seconds"] = time.perf_counter() - began
        return result


def described_error(error: BaseException) -> dict:
    """`error` as plain data for the driver to raise again (`raised_again`)."""
    kind = (
        "DVDError" if isinstance(error, DVDError) else "OSError" if isinstance(error, OSError) else type(error).__name__
    )
    described = {"kind": kind, "message": str(error), "notes": [str(note) for note in getattr(error, "__notes__", [])]}
    if isinstance(error, OSError):
        described |= {"errno": error.errno, "strerror": error.strerror, "filename": error.filename}
    return described
