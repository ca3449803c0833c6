"""Resumable runs: `dvd predict --resume` goes on from the last window an interrupted run completed.

While `predict_to_folder` runs, its staging folder (`dvd.io.atomic`) holds the outputs written so far and, after
every model call whose frames are on disk, `STATE_FILE`: the engine's state (`VideoEngine.stitched`: the stitched
tail and any windows still waiting, the window schedule, the shot detector), how many frames the writers hold, and a fingerprint of
everything that decides the numbers (settings, input, weights, device, dtype, dvd version). The writers are synced
to disk before the state file is replaced (write, fsync, rename, fsync the folder), so after a crash, kill -9 or
power loss the state never claims frames that are not on disk; frames written past it are cut off on resume.

A resumed run decodes the input again from the start, skips the frames before the engine's resume point without
resizing or predicting them, and feeds the rest to an engine rebuilt from the state: the windows, their grouping
into model calls and every fit are those of the uninterrupted run, so the files come out bit-identical. A partial
output whose fingerprint differs from the new run's is refused in one line naming the difference.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dvd import __version__
from dvd.errors import DVDError
from dvd.io.atomic import STAGING_MARKER, adopt_staging, discard_staging, resumable_staging

if TYPE_CHECKING:
    from dvd.engine.video import VideoSettings
    from dvd.io.readers import Source
    from dvd.io.writers import Writer
    from dvd.jobs.outputs import OutputSettings
    from dvd.pipeline.dvd_pipeline import DVDPipeline

STATE_FILE = "resume-state.npz"
STATE_VERSION = 2  # 2: the input's fingerprint hashes every byte
STREAMED_FILES = ("disparity.npy", "depth_exr")  # what a partial output keeps; later passes are written again


@dataclass(frozen=True)
class Checkpoint:
    """What a resumed run needs: the engine's state tree, the frames on disk, and the fingerprint it was made under."""

    fingerprint: dict
    written: int  # output frames the writers hold
    engine: dict  # `VideoEngine.stitched`'s state tree (plain values and numpy arrays)


def input_digest(files: list[Path]) -> str:
    """A fingerprint of an input's files: their names, sizes and every byte. Anything less (sizes, mtimes, sampled
    blocks) lets an edit of the same size with its mtime restored through, and frames of the old input would be
    reused. SHA-256, which most CPUs compute in hardware (SHA-NI, ARMv8), reads a GB or more a second: seconds for a
    film whose prediction takes hours."""
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as handle:
            content = hashlib.file_digest(handle, "sha256").digest()  # streamed in blocks, never whole in memory
        digest.update(os.fsencode(file.name) + f"\0{file.stat().st_size}\0".encode() + content)
    return digest.hexdigest()


def save_checkpoint(folder: Path, checkpoint: Checkpoint) -> None:
    """Write `checkpoint` to folder/STATE_FILE atomically and durably: a crash at any moment leaves the previous
    state or this one."""
    arrays: dict[str, np.ndarray] = {}
    tree = {
        "version": STATE_VERSION,
        "fingerprint": checkpoint.fingerprint,
        "written": checkpoint.written,
        "engine": _flatten(checkpoint.engine, arrays),
    }
    path = folder / STATE_FILE
    temporary = folder / f".{STATE_FILE}.tmp"
    # O_NOFOLLOW: a link planted in a staging folder left on disk is not written through
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    with os.fdopen(descriptor, "wb") as handle:
        np.savez(handle, tree=np.frombuffer(json.dumps(tree).encode(), dtype=np.uint8), **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _sync_folder(folder)


def load_checkpoint(folder: Path) -> Checkpoint:
    """The checkpoint in folder/STATE_FILE; DVDError if it is unreadable or from another version of the format."""
    path = folder / STATE_FILE
    try:
        with np.load(path, allow_pickle=False) as stored:
            tree = json.loads(bytes(stored["tree"]).decode())
            if tree.get("version") != STATE_VERSION:
                raise ValueError(f"state format {tree.get('version')}, this dvd reads {STATE_VERSION}")
            engine = _unflatten(tree["engine"], stored)
    except (OSError, ValueError, KeyError) as error:
        raise DVDError(
            f"cannot resume from {folder} ({error}): pass --overwrite to discard it and start over"
        ) from None
    return Checkpoint(tree["fingerprint"], int(tree["written"]), engine)


def refuse_mismatch(folder: Path, stored: dict, current: dict) -> None:
    """DVDError naming the first difference between the fingerprint a partial output was made under and this run's."""
    for key in sorted(set(stored) | set(current)):
        if stored.get(key) != current.get(key):
            if key == "input":
                raise DVDError(
                    f"the input changed since the interrupted run in {folder} began (its size or content differs): "
                    "run with --overwrite instead of --resume to discard that partial output and start over"
                )
            raise DVDError(
                f"the interrupted run in {folder} used {key}={_show(stored.get(key))}, this run "
                f"{key}={_show(current.get(key))}: resume with the same settings, or run with --overwrite instead of "
                "--resume to discard it and start over"
            )


def check_partial(final: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a plain run where an interrupted one left a partial output of `final`, since starting over would
    throw that work away unasked; --overwrite discards it (`prepare_checkpoints`), --resume goes on with it."""
    partials = resumable_staging(final, STATE_FILE)
    if not partials or resume or overwrite:
        return
    raise DVDError(
        f"an interrupted run left a partial output of {final} in {partials[0]}: pass --resume to go on with it, or "
        "--overwrite to discard it and start over"
    )


def take_partial(final: Path, fingerprint: dict) -> tuple[Path, Checkpoint] | None:
    """The partial output of `final` that an interrupted run left (the most recent one), taken over by this
    process with its checkpoint; None if there is none. DVDError if it was made under another `fingerprint`.
    Older partials of `final` are removed, and so is whatever the interrupted run wrote after its streamed files
    (a later pass that it had begun is run again)."""
    partials = resumable_staging(final, STATE_FILE)
    if not partials:
        return None
    checkpoint = load_checkpoint(partials[0])
    refuse_mismatch(partials[0], checkpoint.fingerprint, json.loads(json.dumps(fingerprint)))
    folder = adopt_staging(partials[0], final)
    discard_staging(final)  # the older ones: superseded by the one taken over
    # A state taken before the first frame was final (openworld's first window waits for the next) keeps no file.
    kept = (*STREAMED_FILES, STATE_FILE, STAGING_MARKER) if checkpoint.written else (STATE_FILE, STAGING_MARKER)
    for entry in folder.iterdir():
        if entry.name in kept:
            _refuse_links(entry, folder)
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return folder, checkpoint


def _refuse_links(entry: Path, folder: Path) -> None:
    """DVDError if `entry`, a file the resumed run writes on, or anything in it, is a link: the run would write
    through it into a file that is not dvd's."""
    found = [entry] if entry.is_symlink() else [path for path in entry.rglob("*") if path.is_symlink()]
    if found:
        raise DVDError(
            f"cannot resume from {folder}: {found[0].name} is a link, which dvd did not write and does not write "
            "through: pass --overwrite to discard that partial output and start over"
        )


def run_fingerprint(pipe: DVDPipeline, source: Source, video: VideoSettings, output: OutputSettings) -> dict:
    """Everything that decides the numbers of a run, as JSON values: a resumed run must match it."""
    return {
        "dvd_version": __version__,
        "input": input_digest(source.files()),
        "weights": pipe.weights_id,
        "device": pipe.model.device.type,
        "dtype": str(pipe.model.dtype).removeprefix("torch."),
        **pipe.sampling_meta(),
        "fps": str(source.output_rate(output.stride)),
        **json.loads(json.dumps({**video.as_meta(), **asdict(output)})),
    }


def prepare_checkpoints(final: Path, fingerprint: dict | None, resume: bool, overwrite: bool) -> Checkpoints:
    """The resume points of a run that writes `final` (`fingerprint` None: a run that saves none). With `resume`
    the partial output an interrupted run left is taken over, if there is one; without, one is refused, unless
    `overwrite` discards it."""
    check_partial(final, resume, overwrite)
    if not resume:
        if overwrite:
            discard_staging(final)
        return Checkpoints(fingerprint)
    if fingerprint is None:
        raise ValueError("a resumed run needs the fingerprint of its settings")
    taken = take_partial(final, fingerprint)
    return Checkpoints(fingerprint) if taken is None else Checkpoints(fingerprint, taken[1], taken[0])


class Checkpoints:
    """A run's resume points: the one it starts from (`resumed`, None for a fresh run, with the partial output's
    `folder` it goes on in) and the saving of new ones."""

    def __init__(self, fingerprint: dict | None, resumed: Checkpoint | None = None, folder: Path | None = None) -> None:
        self.fingerprint = fingerprint
        self.resumed = resumed
        self.folder = folder

    @property
    def enabled(self) -> bool:
        return self.fingerprint is not None

    @property
    def engine(self) -> dict | None:
        return None if self.resumed is None else self.resumed.engine

    def save(self, folder: Path, writers: Writer, engine: dict, written: int) -> None:
        """Make the writers' frames durable, then record `engine` as the state after `written` output frames."""
        writers.sync()
        save_checkpoint(folder, Checkpoint(self.fingerprint, written, engine))


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename inside it survives a power loss (where the platform allows it)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems and platforms cannot sync a folder; the rename is still atomic
    finally:
        os.close(descriptor)


def _flatten(tree: object, arrays: dict[str, np.ndarray]) -> object:
    """The tree as JSON values, each numpy array replaced by {"array": key} and stored in `arrays`."""
    if isinstance(tree, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = tree
        return {"array": key}
    if isinstance(tree, dict):
        return {"dict": {str(key): _flatten(value, arrays) for key, value in tree.items()}}
    if isinstance(tree, (list, tuple)):
        return [_flatten(value, arrays) for value in tree]
    if isinstance(tree, np.generic):
        return tree.item()
    return tree


def _unflatten(tree: object, arrays: np.lib.npyio.NpzFile) -> object:
    if isinstance(tree, dict):
        if "array" in tree:
            return arrays[tree["array"]]
        return {key: _unflatten(value, arrays) for key, value in tree["dict"].items()}
    if isinstance(tree, list):
        return [_unflatten(value, arrays) for value in tree]
    return tree


def _show(value: object) -> str:
    return "none" if value is None else json.dumps(value) if not isinstance(value, str) else value
