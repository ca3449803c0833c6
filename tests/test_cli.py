"""The `dvd` entry point: every failure is one line on stderr and a non-zero exit code."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
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


def test_internal_errors_are_one_line_with_exit_code_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    parser = cli.build_parser()
    args = parser.parse_args(["convert", "--weights", "x", "-o", "y"])
    args.run = fails_with(ValueError("a bug\nover two lines"))
    monkeypatch.setattr(cli, "build_parser", lambda: type("P", (), {"parse_args": lambda self, argv: args})())
    monkeypatch.delenv(cli.DEBUG_VARIABLE, raising=False)
    assert cli.main([]) == 1
    message = capsys.readouterr().err
    assert "internal error (ValueError: a bug over two lines)" in message and message.count("\n") == 1
    monkeypatch.setenv(cli.DEBUG_VARIABLE, "1")
    assert cli.main([]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_sigterm_unwinds_like_ctrl_c(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    parser = cli.build_parser()
    args = parser.parse_args(["convert", "--weights", "x", "-o", "y"])
    args.run = lambda args: os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(cli, "build_parser", lambda: type("P", (), {"parse_args": lambda self, argv: args})())
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main([]) == 143
    assert "terminated" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before


def test_argument_errors_are_one_line(capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["predict", "clip.mp4"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "dvd predict: error: the following arguments are required: -o/--output (see dvd predict --help)\n"
    )


def test_option_names_have_one_home():
    """dvd.options lists what the parsers offer without importing the modules that implement them."""
    from dvd.data.benchmarks import READERS
    from dvd.data.benchmarks.folder import BenchmarkFolder
    from dvd.options import DATASET_NAMES

    assert DATASET_NAMES == (*READERS, BenchmarkFolder.name)


def test_help_does_not_import_torch():
    probe = (
        "import runpy, sys\nsys.argv = ['dvd', '--help']\n"
        "try:\n    runpy.run_module('dvd.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stderr.strip() == "False" and "predict" in done.stdout
