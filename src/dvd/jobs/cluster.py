"""The Ray side of `dvd predict --ray`: importing Ray, joining a cluster or starting a local one, Ray's own output sent
to a log file, and how many actors of what size the run gets.

Ray prints a good deal on the driver's stdout and stderr: its Python loggers, Ray Data's executor lines, the deaths
of workers, and the C++ core worker's own lines, which no Python logging setting reaches. While a run holds Ray
(`ray_session`), file descriptors 1 and 2 themselves point at OUT/ray.log (appended to, one header line per run),
and the run's own lines go to a copy of the original stderr (`RaySession.console`); the workers' logs stay in Ray's
session folder, which the summary names too.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TextIO

from dvd.errors import DVDError

RAY_LOG = "ray.log"  # in OUT: Ray's own output on the driver
INSTALL_HINT = 'pip install "dvd[ray]"'
CONNECT_SECONDS = 10.0  # a head node that does not answer a TCP connection in this long is unreachable
DEFAULT_RAY_PORT = 6379  # `ray start --head`'s GCS port


@dataclass(frozen=True)
class RaySettings:
    """`--ray [ADDRESS]`, `--ray-actors`, `--ray-gpus-per-actor`: where the run's actors live and how many."""

    address: str | None = None  # None: start a local Ray; "auto": the one `ray start` runs on this machine
    actors: int | None = None  # None: as many as the cluster's GPUs (or CPUs) hold
    gpus_per_actor: float | None = None  # None: 1 on a cluster with GPUs (unless --device cpu), else 0

    def validate(self) -> None:
        if self.actors is not None and self.actors < 1:
            raise DVDError(f"--ray-actors must be at least 1, got {self.actors}")
        if self.gpus_per_actor is not None and self.gpus_per_actor < 0:
            raise DVDError(f"--ray-gpus-per-actor must be 0 or more, got {self.gpus_per_actor:g}")


@dataclass(frozen=True)
class ActorPlan:
    """The run's actors: how many, the CPUs and GPUs each reserves, the device its model runs on and the torch
    threads it uses (its CPUs: a single process with as many threads writes byte-identical outputs)."""

    actors: int
    cpus: float
    gpus: float
    device: str

    @property
    def threads(self) -> int:
        return max(1, int(self.cpus))

    def describe(self) -> str:
        gpus = f", {self.gpus:g} GPU" if self.gpus else ""
        return f"{self.actors} actor(s) of {self.cpus:g} CPU{gpus} ({self.device}, {self.threads} torch thread(s))"


def import_ray() -> ModuleType:
    """Ray and Ray Data, or one line naming the extra to install."""
    try:
        import ray
        import ray.data  # Ray Data: ray's [data] extra, which is what the run needs
    except ImportError:
        raise DVDError(f"--ray needs Ray Data, which is not installed: {INSTALL_HINT}") from None
    return ray


class RaySession:
    """A run's hold on Ray: the module, the stream its own lines go to, and where Ray's logs are."""

    def __init__(self, ray: ModuleType, console: TextIO, log: Path) -> None:
        self.ray, self.console, self.log = ray, console, log

    def worker_logs(self) -> str:
        """Ray's session folder of logs on this node (the workers' stdout and stderr), or '' if Ray hides it."""
        with suppress(Exception):  # a private API: the summary then names only OUT/ray.log
            return str(Path(self.ray._private.worker._global_node.get_session_dir_path()) / "logs")
        return ""


@contextmanager
def ray_session(settings: RaySettings, output: Path) -> Iterator[RaySession]:
    """Ray joined at `settings.address` or started on this machine (and stopped again at the end), with Ray's output
    in OUT/ray.log. A Ray this process already initialised (a Python caller's) is used as it is and left running."""
    ray = import_ray()
    log = output / RAY_LOG
    with _output_to(log) as console:
        started = not ray.is_initialized()
        if started:
            _init(ray, settings.address)
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False  # the run draws its own line
            yield RaySession(ray, console, log)
        finally:
            if started:
                ray.shutdown()


def _init(ray: ModuleType, address: str | None) -> None:
    try:
        if address is None:
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as error:
        where = "a local Ray" if address is None else f"the Ray cluster at {address}"
        fix = "start one with `ray start --head`, or drop the address" if address else "see the log"
        raise DVDError(f"cannot use {where} ({' '.join(str(error).split())}): {fix}") from None


def check_reachable(address: str) -> None:
    """One line, in seconds instead of Ray's minutes of retries, for an address no Ray head node answers at."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise DVDError(
            f"--ray {address} is not an address: give HOST:PORT of the head node (e.g. 10.0.0.1:{DEFAULT_RAY_PORT}), "
            "or auto, or nothing for a local Ray"
        )
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise DVDError(
            f"no Ray cluster answers at {address} ({reason}): start one there with `ray start --head`, or check the "
            "address and the firewall"
        ) from None


@contextmanager
def _output_to(log: Path) -> Iterator[TextIO]:
    """Everything written to stdout and stderr appending to `log` for the duration: file descriptors 1 and 2 (the
    C++ core worker writes there), `sys.stdout` and `sys.stderr` (Ray prints its workers' deaths there), and the
    streams of Ray's logging handlers that write to them (a handler holds the stream `sys.stderr` was when it was
    made, which for a Python caller may not be file descriptor 2). Yields a stream on the original stderr."""
    # O_NONBLOCK: a FIFO planted at the name fails to open (no reader) instead of blocking the run.
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        descriptor = os.open(log, flags, 0o666)
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.close(descriptor)
            raise OSError(errno.EINVAL, "not a regular file")
    except OSError as error:
        raise DVDError(
            f"cannot write Ray's log {log} ({error.strerror}): move what is there away or choose another output folder"
        ) from None
    os.write(descriptor, f"==== dvd predict --ray, {datetime.now(UTC).isoformat(timespec='seconds')}\n".encode())
    callers = (sys.stdout, sys.stderr)
    for caller in callers:
        caller.flush()
    originals = (os.dup(1), os.dup(2))
    console = os.fdopen(os.dup(originals[1]), "w", buffering=1, encoding=callers[1].encoding, errors=callers[1].errors)
    stream = os.fdopen(os.dup(descriptor), "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    os.close(descriptor)
    moved = {h: _set_stream(h, stream) for h in _ray_stream_handlers() if h.stream in (*callers, sys.__stderr__)}
    sys.stdout = sys.stderr = stream
    try:
        yield console
    finally:
        sys.stdout, sys.stderr = callers
        for handler in _ray_stream_handlers():  # with those Ray made meanwhile, on the stream it found in sys.stderr
            if handler.stream is stream:
                _set_stream(handler, moved.get(handler, callers[1]))
        stream.close()
        for descriptor, original in enumerate(originals, start=1):
            os.dup2(original, descriptor)
            os.close(original)
        console.close()


def _set_stream(handler: logging.StreamHandler, stream: TextIO) -> TextIO:
    """`handler.setStream` without flushing the old stream, which its owner may have closed; returns the old one."""
    with handler.lock:
        old, handler.stream = handler.stream, stream
    return old


def _ray_stream_handlers() -> list[logging.StreamHandler]:
    """The handlers of Ray's loggers that write to a stream."""
    loggers = [
        logging.getLogger(name) for name in list(logging.Logger.manager.loggerDict) if name.split(".")[0] == "ray"
    ]
    return [handler for logger in loggers for handler in logger.handlers if isinstance(handler, logging.StreamHandler)]


def ray_failure(error: Exception) -> DVDError:
    """One line for a Ray error that ended a run (an actor that could not start, a cluster lost): the error the actor
    raised, which Ray puts last in its report (the whole report is printed to Ray's log, where stderr goes)."""
    report = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    print(report, file=sys.stderr)
    lines = [line.strip() for line in report.splitlines() if line.strip()]
    last = (lines[-1] if lines else type(error).__name__).removeprefix(f"{DVDError.__module__}.{DVDError.__name__}: ")
    return DVDError(f"Ray stopped the run ({type(error).__name__}): {last}")


def plan_actors(ray: ModuleType, settings: RaySettings, device: str | None) -> ActorPlan:
    """The actors for the cluster Ray sees now. GPU actors (one GPU each by default) run the model on `cuda`;
    CPU actors share the CPUs out evenly, each at most the CPUs of the largest node."""
    resources = ray.cluster_resources()
    cluster_gpus = resources.get("GPU", 0.0)
    cpu_device = str(device or "").startswith("cpu")
    gpus = settings.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if cluster_gpus and not cpu_device else 0.0
    if gpus:
        if cpu_device:
            raise DVDError("--device cpu and --ray-gpus-per-actor above 0 contradict each other: drop one")
        if gpus > cluster_gpus:
            raise DVDError(
                f"--ray-gpus-per-actor {gpus:g} but the Ray cluster has {cluster_gpus:g} GPU(s): lower it, or pass "
                "--ray-gpus-per-actor 0 to run on CPUs"
            )
        actors = settings.actors or max(1, int(cluster_gpus // gpus))
        return ActorPlan(actors, 1.0, gpus, device or "cuda")
    if device and not cpu_device:
        raise DVDError(f"--device {device} needs a GPU per actor: pass --ray-gpus-per-actor 1 (or drop --device)")
    cluster_cpus = resources.get("CPU", 0.0)
    largest = max((node["Resources"].get("CPU", 0.0) for node in ray.nodes() if node.get("Alive")), default=0.0)
    if cluster_cpus < 1:
        raise DVDError("the Ray cluster has no CPUs to run actors on: add a node with `ray start --address=HEAD`")
    actors = settings.actors or int(cluster_cpus)
    cpus = float(max(1, min(int(largest), int(cluster_cpus // actors))))
    return ActorPlan(actors, cpus, 0.0, device or "cpu")
