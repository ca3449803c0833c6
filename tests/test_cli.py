"""The `dvd` entry point: every failure is one line on stderr and a non-zero exit code."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from dvd import cli
from dvd.errors import DVDError


def fails_with(exception: BaseException):
    def run(args):
        raise exception

    return run


@pytest.mark.parametrize(
    "exception,code,text",
    [
        (DVDError("weights not found: x"), 2, "weights not found: x"),
        (OSError(errno.ENOSPC, "No space left on device", "/out/clip/disparity.npy"), 2, "No space left on device"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
)
def test_failures_are_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, exception, code, text):
    parser = cli.build_parser()
    args = parser.parse_args(["convert", "--weights", "x", "-o", "y"])
    args.run = fails_with(exception)
    monkeypatch.setattr(cli, "build_parser", lambda: type("P", (), {"parse_args": lambda self, argv: args})())
    assert cli.main([]) == code
    message = capsys.readouterr().err
    assert text in message and message.count("\n") == 1


def test_convert_refuses_an_unwritable_output_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture):
    (tmp_path / "file").write_text("not a folder")
    assert cli.main(["convert", "--weights", str(tmp_path / "missing"), "-o", str(tmp_path / "file" / "out")]) == 2
    assert "cannot write to output folder" in capsys.readouterr().err
