"""Outputs that appear complete or not at all, that never replace what dvd did not write, and that leave nothing
behind.

A folder is written into a hidden staging sibling, `.NAME.partial-PID-START-RANDOM`, and renamed to NAME once
complete. PID and START (the process's start time on Linux, "0" elsewhere) let a later run tell the staging folder
of a dead run, which it removes, from that of a live one, which it leaves alone, even when the pid was reused.
The rename itself decides who gets NAME: a directory cannot be renamed onto a file or a non-empty directory, and a
staging folder is never empty when it is renamed, so of two runs racing for NAME exactly one wins; the other fails
with one line and removes its own staging folder. An existing NAME is replaced only when the caller allows it
(`--overwrite`) and a recogniser of the caller's kind of output accepts it as dvd's own.

Only a folder that dvd made is ever removed: each staging folder holds `STAGING_MARKER`, a small JSON file with the
pid, start time and random part of its name, written when the folder is made and taken out just before the folder
is renamed into place. A folder that is only named like one (a user's, or a copy) lacks it, or holds one that does
not match its name, and is left alone with a warning naming it.

Resumable outputs. A writer that records its progress in a file of its own inside the staging folder (`resumable`,
e.g. `dvd predict`'s resume state) gets its staging folder kept when it is interrupted (Ctrl-C, SIGTERM) or fails
for a reason outside its input (a full disk, out of memory): the error then says where it is and how to go on.
A run killed outright leaves it too. Such a folder still has its hidden staging name, so nothing ever appears under
NAME unfinished; stale-staging cleanup leaves it alone, and `resumable_staging` + `adopt_staging` let a later run
(`--resume`) take it over, or `discard_staging` remove it (`--overwrite`). Failures that are the input's or the
request's (a `DVDError`) remove it as before: going on would meet them again.

Files go through a temporary sibling too (`atomic_file`), `.STEM.tmp-RANDOM.SUFFIX`, which this process creates
itself (O_CREAT|O_EXCL|O_NOFOLLOW): a link or file planted at a name it might use is never written through, and a
random name cannot be guessed in advance.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from dvd.errors import DVDError

Recogniser = Callable[[Path], str | None]
"""Given an existing path: None if it is an output of the kind the caller writes (so --overwrite may replace it),
else why not, in a few words ("it holds notes.txt, which dvd did not write")."""

STAGING_KINDS = ("partial", "old")  # a folder being written; an output moved aside while it is being replaced
STAGING_MARKER = ".dvd-staging"  # in every staging folder dvd made: only those are ever removed
# Renaming a directory onto an existing name fails with one of these (a non-empty directory, a file, a symlink).
_TAKEN = {errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR}


def check_output_path(folder: Path) -> None:
    """Refuse, creating nothing, an output path that cannot become a writable folder, so that it fails before the
    weights are looked up or downloaded; `prepare_output_folder` proves it by writing once they are found."""
    folder = Path(folder)
    existing = folder
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        reason = "it is a file" if existing == folder else f"{existing} is not a folder"
        raise DVDError(f"cannot write to output folder {folder} ({reason}): choose another output path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DVDError(f"cannot write to output folder {folder} ({existing} is read-only): choose another output path")


def prepare_output_folder(folder: Path) -> Path:
    """Create `folder` if needed and prove it writable, so a bad output path fails before any model work."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = _new_folder(folder, ".write-test-")
        probe.rmdir()
    except OSError as error:
        raise DVDError(
            f"cannot write to output folder {folder} ({error.strerror}): choose another output path"
        ) from None
    return folder


def check_output(final: Path, overwrite: bool, recognise: Recogniser, flag: str = "--overwrite") -> None:
    """Refuse, before any work, to write `final` where something exists, unless `overwrite` is set and `recognise`
    accepts it as dvd's own output."""
    final = Path(final)
    if not os.path.lexists(final):
        return
    if not overwrite:
        raise DVDError(f"{final} already exists: pass {flag} to replace it, or choose another output path")
    _refuse_foreign(final, recognise, flag)


def foreign_entries(folder: Path, expected: Iterable[str]) -> str | None:
    """Why `folder` is not made only of the `expected` entries a dvd output holds (None if it is): a recogniser's
    last check, so that --overwrite never takes a user's file along with dvd's."""
    if folder.is_symlink() or not folder.is_dir():
        return "it is not a folder"
    others = sorted(set(os.listdir(folder)) - set(expected))
    if others:
        return f"it holds {', '.join(others[:3])}{', ...' if len(others) > 3 else ''}, which dvd did not write"
    return None


def _refuse_foreign(final: Path, recognise: Recogniser, flag: str) -> None:
    problem = recognise(final)
    if problem is not None:
        raise DVDError(
            f"{final} is not an output of this dvd command ({problem}); {flag} replaces only dvd's own outputs: "
            "move it away or choose another output path"
        )


@contextmanager
def atomic_directory(
    final: Path,
    overwrite: bool = False,
    recognise: Recogniser | None = None,
    *,
    resumable: str | None = None,
    staging: Path | None = None,
) -> Iterator[Path]:
    """Yield an empty staging directory next to `final`; on success it becomes `final`, on any error (or Ctrl-C,
    or SIGTERM) it is removed and `final` is left as it was.

    Without `overwrite`, an existing `final` (also one that appears meanwhile, e.g. from a concurrent run) makes
    it fail with DVDError. With it, `final` is replaced if `recognise` accepts it as dvd's own output.
    Staging folders of dead runs for `final` are removed first, except resumable ones.

    `resumable` names the caller's progress file: a staging folder that holds it is kept on an interruption or a
    failure that is not a DVDError (see the module docstring), and the error gets a note saying where it is.
    `staging` continues a folder taken over with `adopt_staging` instead of starting an empty one.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(final, keep=resumable)
    staging = _new_staging(final, "partial") if staging is None else staging
    try:
        yield staging
        if resumable is not None:
            (staging / resumable).unlink(missing_ok=True)
        _commit(staging, final, recognise if overwrite else None)
    except BaseException as error:
        if resumable is not None and not isinstance(error, DVDError) and (staging / resumable).exists():
            kept = _hand_over(staging, final)
            error.add_note(
                f"the unfinished output is kept in {kept}: run the same command again with --resume to go on "
                "from where it stopped, or delete that folder"
            )
            raise
        shutil.rmtree(staging, ignore_errors=True)
        _point_at(error, staging, final)
        raise


def _commit(staging: Path, final: Path, recognise: Recogniser | None) -> None:
    """Rename `staging` to `final`; replace an existing `final` only if `recognise` is given and accepts it."""
    if _rename_if_free(staging, final):
        return
    if recognise is None:
        raise DVDError(
            f"{final} appeared while this run was writing it (another dvd run?) and was left as it is: "
            "pass --overwrite to replace it, or choose another output path"
        )
    _refuse_foreign(final, recognise, "--overwrite")
    replace_directory(staging, final)


def _rename_if_free(staging: Path, final: Path) -> bool:
    """Rename `staging` to `final` unless something has that name (then False). The rename is the check: it fails
    onto a file or a non-empty directory, so two runs cannot both win. The `lexists` test only keeps an empty
    directory or a symlink of the user's from being replaced."""
    if os.path.lexists(final):
        return False
    (staging / STAGING_MARKER).unlink(missing_ok=True)  # the finished folder holds only the caller's files
    try:
        os.rename(staging, final)
    except OSError as error:
        if error.errno in _TAKEN:
            return False
        raise
    return True


def replace_directory(staging: Path, final: Path) -> None:
    """Move a finished `staging` directory to `final`, dropping an old `final` only once the new one is in place."""
    if _rename_if_free(staging, final):
        return
    # A directory cannot be replaced in one rename: move the old one aside, and back if the swap fails.
    old = _new_staging(final, "old")
    moved = old / final.name
    os.rename(final, moved)
    (staging / STAGING_MARKER).unlink(missing_ok=True)  # as in `_rename_if_free`: the caller's files only
    try:
        os.rename(staging, final)
    except BaseException:
        with suppress(OSError):  # a concurrent run may have taken the name meanwhile: its output stays
            os.rename(moved, final)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def remove_stale_staging(final: Path, keep: str | None = None) -> list[Path]:
    """Remove the staging folders of `final` whose process is gone (killed, crashed, power lost); those of live
    runs are left alone, and so is anything not named like dvd's staging folders or without dvd's marker, and (with
    `keep`) the folders that hold a file of that name: an interrupted run's progress, which `--resume` continues.
    Returns what was removed."""
    removed = []
    for folder in _dead_staging(final):
        if keep is None or not (folder / keep).exists():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def resumable_staging(final: Path, marker: str) -> list[Path]:
    """The staging folders of dead runs for `final` that hold `marker` (their progress file), the most recently
    updated first."""
    found = [folder for folder in _dead_staging(final) if (folder / marker).is_file()]
    return sorted(found, key=lambda folder: (folder / marker).stat().st_mtime_ns, reverse=True)


def discard_staging(final: Path) -> list[Path]:
    """Remove every staging folder of a dead run for `final`, resumable ones included (`--overwrite`)."""
    return remove_stale_staging(final)


def adopt_staging(folder: Path, final: Path) -> Path:
    """Take over `folder`, a dead run's staging folder for `final`, under a staging name of this process (so that
    no other run takes it or removes it as stale); the rename is atomic, so of two runs only one gets it."""
    while True:
        target = _new_staging_name(final, "partial")
        try:
            os.rename(folder, target)
            _write_marker(target, final)
            return target
        except FileNotFoundError:
            raise DVDError(
                f"{folder} was taken over by another run while this one was starting: let that run finish"
            ) from None
        except OSError as error:
            if error.errno not in _TAKEN:
                raise


def _hand_over(staging: Path, final: Path) -> Path:
    """Rename a kept staging folder to the owner "no process" (pid 0), so that `--resume` can take it over even
    from this same process (a Python caller that caught the interruption)."""
    while True:
        kept = final.parent / f".{final.name}.partial-0-0-{secrets.token_hex(4)}"
        try:
            os.rename(staging, kept)
        except OSError as error:
            if error.errno not in _TAKEN:
                return staging  # kept under its own name: it is found once this process has ended
            continue
        with suppress(OSError):  # a full disk: unmarked, the folder is left alone (and named) rather than lost
            _write_marker(kept, final)
        return kept


def _dead_staging(final: Path) -> list[Path]:
    """The staging folders of `final` that dvd made (named so, and holding a marker that matches the name) and whose
    process is gone; a folder only named like one is named in a warning (once per process) and left out."""
    folders = []
    with suppress(OSError), os.scandir(Path(final).parent) as entries:
        for entry in entries:
            owner = _staging_owner(entry.name, Path(final).name)
            if owner is None or not entry.is_dir(follow_symlinks=False):
                continue
            if _read_marker(Path(entry.path)) != owner:
                _warn_look_alike(Path(entry.path))
            elif not _running(owner["pid"], owner["start"]):
                folders.append(Path(entry.path))
    return folders


def _staging_owner(entry: str, name: str) -> dict | None:
    """The pid, start time and random token in a staging folder name of output `name` (as its marker holds them);
    None for any other name."""
    for kind in STAGING_KINDS:
        prefix = f".{name}.{kind}-"
        if entry.startswith(prefix):
            parts = entry[len(prefix) :].split("-")
            if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit() and parts[2]:
                return {"pid": int(parts[0]), "start": parts[1], "token": parts[2]}
    return None


def _write_marker(folder: Path, final: Path) -> None:
    """(Re)write the marker of `folder`, a staging folder of `final`, from its name: created afresh, never through
    a link planted at that name."""
    owner = _staging_owner(folder.name, final.name)
    if owner is None:
        raise ValueError(f"{folder} is not named like a staging folder of {final}")
    marker = folder / STAGING_MARKER
    marker.unlink(missing_ok=True)
    descriptor = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(owner, handle)


def _read_marker(folder: Path) -> dict | None:
    """The marker dvd wrote in `folder`, or None when there is none that dvd could have written (a link, a folder,
    anything that is not a small JSON file)."""
    try:
        descriptor = os.open(folder / STAGING_MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        try:
            marker = json.loads(handle.read(4096))
        except ValueError:
            return None
    return marker if isinstance(marker, dict) else None


_warned: set[Path] = set()


def _warn_look_alike(folder: Path) -> None:
    if folder not in _warned:
        _warned.add(folder)
        print(
            f"dvd: warning: {folder} is named like a dvd staging folder but dvd did not make it (no matching "
            f"{STAGING_MARKER} inside): left as it is; delete it yourself if it is not needed",
            file=sys.stderr,
        )


def _new_staging(final: Path, kind: str) -> Path:
    pid = os.getpid()
    folder = _new_folder(final.parent, f".{final.name}.{kind}-{pid}-{_start_time(pid) or '0'}-")
    _write_marker(folder, final)
    return folder


def _new_staging_name(final: Path, kind: str) -> Path:
    pid = os.getpid()
    return final.parent / f".{final.name}.{kind}-{pid}-{_start_time(pid) or '0'}-{secrets.token_hex(4)}"


def _new_folder(parent: Path, prefix: str) -> Path:
    """A new empty folder `prefix` + random hex. os.mkdir honours the umask (tempfile.mkdtemp would make it 0700,
    and the final folder would keep that)."""
    while True:
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def _start_time(pid: int) -> str | None:
    """When process `pid` started, in clock ticks since boot (Linux /proc); None if it is gone or a zombie, or
    where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]  # fields[0] is the state, [19] field 22 (starttime)


def _running(pid: int, start: str) -> bool:
    """Whether the process that made a staging folder is still running (not merely a later one with its pid)."""
    if pid == 0:  # handed over by an interrupted run (`_hand_over`): nobody's
        return False
    if Path("/proc/self/stat").exists():
        return _start_time(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _point_at(error: BaseException, private: Path, public: Path) -> None:
    """Name `public` (the path the user asked for) instead of `private` (the staging or temporary name it was
    being written under) in an error about to reach the user."""

    def public_name(text: str) -> str:
        return text.replace(str(private), str(public))

    if isinstance(error, OSError):
        for attribute in ("filename", "filename2"):
            value = getattr(error, attribute)
            if isinstance(value, (str, os.PathLike)):
                setattr(error, attribute, public_name(os.fspath(value)))
    elif isinstance(error, DVDError):
        error.args = tuple(public_name(arg) if isinstance(arg, str) else arg for arg in error.args)


@contextmanager
def atomic_file(path: Path, overwrite: bool = True, recognise: Recogniser | None = None) -> Iterator[Path]:
    """Yield a temporary name beside `path` (same suffix, for writers that go by it); on success it becomes `path`,
    on any error it is removed.

    An existing `path` is replaced if `overwrite` is set and `recognise` (if given) accepts it as dvd's own output;
    without `overwrite` an existing `path`, also one that appears meanwhile, makes it fail with DVDError.
    """
    path = Path(path)
    try:
        tmp = _new_file(path.parent, f".{path.stem}.tmp-", path.suffix)
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(path)) from None  # the user's name, not the temporary one
    try:
        yield tmp
        if not overwrite:
            _link_if_free(tmp, path)
        else:
            if recognise is not None and os.path.lexists(path):
                _refuse_foreign(path, recognise, "--overwrite")
            tmp.replace(path)
    except BaseException as error:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        _point_at(error, tmp, path)
        raise


def _new_file(parent: Path, prefix: str, suffix: str) -> Path:
    """A new empty file `prefix` + random hex + `suffix` in `parent`, created by this call: O_EXCL fails on any
    existing name, a link included, so nothing planted there is written through. Mode 0666 less the umask, as for
    any file the user creates (mkstemp would make it 0600)."""
    while True:
        path = parent / f"{prefix}{secrets.token_hex(8)}{suffix}"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666))
            return path
        except FileExistsError:
            continue


def _link_if_free(tmp: Path, path: Path) -> None:
    """Give `tmp` the name `path` only if nothing has it: link(2) fails on an existing name, atomically."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise DVDError(
            f"{path} appeared while this run was writing it (another dvd run?) and was left as it is: "
            "pass --overwrite to replace it, or choose another output path"
        ) from None
    tmp.unlink()


def atomic_write_text(path: Path, text: str, overwrite: bool = True, recognise: Recogniser | None = None) -> None:
    """Write a small text file under a temporary name, then rename it into place (see `atomic_file`)."""
    with atomic_file(path, overwrite, recognise) as tmp:
        descriptor = os.open(tmp, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
