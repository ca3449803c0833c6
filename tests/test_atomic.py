"""dvd.io.atomic's own promises: temporary files under names nobody planted, and staging folders that carry the
marker that lets a later run tell dvd's from a look-alike (tests/faults/test_faults_trust.py runs them end to end)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dvd.io import atomic


def marker_of(folder: Path) -> dict:
    return json.loads((folder / atomic.STAGING_MARKER).read_text())


def owner_in_name(folder: Path) -> dict:
    pid, start, token = folder.name.rsplit(".", 1)[1].split("-", 1)[1].split("-")
    return {"pid": int(pid), "start": start, "token": token}


def test_a_staging_folder_carries_its_marker_until_it_becomes_the_output(tmp_path: Path) -> None:
    final = tmp_path / "result"
    with atomic.atomic_directory(final) as staging:
        assert marker_of(staging) == owner_in_name(staging)
        assert owner_in_name(staging)["pid"] == os.getpid()
        (staging / "data.txt").write_text("x")
    assert sorted(os.listdir(final)) == ["data.txt"]
    assert os.listdir(tmp_path) == ["result"]
    with atomic.atomic_directory(final, overwrite=True, recognise=lambda folder: None) as staging:  # a replacement
        (staging / "other.txt").write_text("y")
    assert sorted(os.listdir(final)) == ["other.txt"]
    assert os.listdir(tmp_path) == ["result"]


def test_a_kept_or_adopted_staging_folder_gets_the_marker_of_its_new_name(tmp_path: Path) -> None:
    final = tmp_path / "clip"
    with pytest.raises(KeyboardInterrupt), atomic.atomic_directory(final, resumable="state") as staging:
        (staging / "state").write_text("progress")
        raise KeyboardInterrupt
    [kept] = atomic.resumable_staging(final, "state")
    assert owner_in_name(kept)["pid"] == 0 and marker_of(kept) == owner_in_name(kept)
    adopted = atomic.adopt_staging(kept, final)
    assert owner_in_name(adopted)["pid"] == os.getpid() and marker_of(adopted) == owner_in_name(adopted)
    assert atomic.remove_stale_staging(final) == [] and adopted.exists()  # a live run's


def test_a_temporary_file_never_takes_a_name_that_exists(tmp_path: Path, monkeypatch) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's\n")
    planted = tmp_path / ".summary.tmp-0123456789abcdef.json"
    planted.symlink_to(victim)
    tokens = iter(["0123456789abcdef", "fedcba9876543210"])
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: next(tokens))
    atomic.atomic_write_text(tmp_path / "summary.json", "{}")
    assert victim.read_text() == "the user's\n" and planted.is_symlink()
    assert (tmp_path / "summary.json").read_text() == "{}"
    assert sorted(os.listdir(tmp_path)) == sorted(["victim.txt", planted.name, "summary.json"])
