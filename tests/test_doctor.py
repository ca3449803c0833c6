"""`dvd doctor`: versions, device, lock comparison, and a video round trip that fails (exit 1, one line) when a
reader or writer is broken."""

from __future__ import annotations

import platform
import re
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from dvd import cli
from dvd.commands import doctor
from dvd.io import readers, writers

ALL_FORMATS = ("npy", "png16", "exr", "mp4", "sbs")


def run_doctor(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = cli.main(["doctor", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.smoke
def test_doctor_prints_versions_compares_the_lock_and_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture):
    torch_release = torch.__version__.split("+")[0]
    lock = tmp_path / "lock.txt"
    lock.write_text(
        "# made by a script\n"
        "--extra-index-url https://download.pytorch.org/whl/cpu\n"
        f"torch=={torch_release}\n"  # the installed +cpu build matches its release
        "numpy==0.0.1\n"
        "Av==0.0.2    # via dvd\n"
        "no-such-package-for-dvd-doctor==1.0\n"
    )
    code, out, err = run_doctor(capsys, "--lock", str(lock))
    assert code == 0 and err == ""  # differing versions are a warning
    lines = out.splitlines()
    assert f"Python        {platform.python_version()}" in out
    assert any(line.startswith("torch") and torch.__version__.split("+")[0] in line for line in lines)
    assert any(line.startswith("av") and av.__version__ in line for line in lines)
    assert f"libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))}" in out
    assert any(line.startswith("numpy") and np.__version__ in line for line in lines)
    expected_device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert re.search(rf"^device +{expected_device}\b", out, re.MULTILINE)
    assert f"numpy: installed {np.__version__}, lock 0.0.1" in out
    assert f"av: installed {av.__version__}, lock 0.0.2" in out
    assert "torch: installed" not in out
    assert "locked but not installed: no-such-package-for-dvd-doctor" in out
    for name in ALL_FORMATS:
        assert f"the {name} writer: ok" in out
    assert "the video reader: ok" in out
    folder = re.search(r"in (\S+) \(removed afterwards\)", out).group(1)
    assert not Path(folder).exists()


def failing(*args, **kwargs):
    raise RuntimeError("broken on purpose")


def four_frames_only(original):
    def frames(self, stop, stride):
        for index, item in enumerate(original(self, stop, stride)):
            if index < 4:
                yield item

    return frames


@pytest.mark.parametrize(
    "target,replacement,part",
    [
        ((readers.VideoSource, "_frames"), lambda original: failing, "the video reader"),
        ((writers.Png16Writer, "_save"), lambda original: failing, "the png16 writer"),
        ((writers.ExrWriter, "_save"), lambda original: failing, "the exr writer"),
        ((writers.VideoWriter, "_encode"), lambda original: failing, "the mp4 writer"),
        ((writers.NpyWriter, "write"), lambda original: failing, "the npy writer"),
    ],
)
def test_a_broken_part_fails_in_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, target, replacement, part
):
    owner, name = target
    monkeypatch.setattr(owner, name, replacement(getattr(owner, name)))
    code, out, err = run_doctor(capsys)
    assert code == 1
    assert err.startswith(f"dvd doctor: error: {part} failed (") and err.count("\n") == 1
    assert f"{part}: FAILED" in out
    folder = re.search(r"in (\S+) \(removed afterwards\)", out).group(1)
    assert not Path(folder).exists()


def test_a_short_read_says_what_came_back(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    monkeypatch.setattr(readers.VideoSource, "_frames", four_frames_only(readers.VideoSource._frames))
    code, _, err = run_doctor(capsys)
    assert code == 1 and err.startswith("dvd doctor: error: the video reader failed (clip.mp4 read back as 4 frames")


def test_without_a_test_clip_the_reader_is_not_tried(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    monkeypatch.setattr(writers, "write_rgb_video", failing)
    code, out, err = run_doctor(capsys)
    assert code == 1 and err.startswith("dvd doctor: error: the test clip encoder failed (RuntimeError: broken")
    assert "the video reader: not tried" in out


def test_lock_file_lines(tmp_path: Path):
    lock = tmp_path / "lock.txt"
    lock.write_text(
        "# comment\n"
        "-c constraints.txt\n"
        "--index-url https://example.invalid/simple\n"
        "PyYAML==6.0.2\n"
        "    # via dvd\n"
        "uvicorn[standard]==0.30.0 ; python_version >= '3.11'\n"
        "torch==2.13.0 \\\n"
        "    --hash=sha256:00\n"
        "-e file:///src/dvd\n"
        "requests>=2\n"
    )
    assert doctor.read_lock(lock) == {"pyyaml": "6.0.2", "uvicorn": "0.30.0", "torch": "2.13.0"}
    assert doctor.same_release("2.13.0+cpu", "2.13.0") and doctor.same_release("2.13.0+cu128", "2.13.0+cpu")
    assert not doctor.same_release("2.13.1", "2.13.0")


def test_the_lock_is_found_in_a_checkout_and_skipped_otherwise(tmp_path: Path, capsys: pytest.CaptureFixture):
    checkout = tmp_path / "clone"
    (checkout / "src" / "dvd").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("[project]\nname = 'dvd'\n")
    assert doctor.checkout_lock_file(checkout / "src" / "dvd") == checkout / "requirements" / "lock-cpu-py311.txt"
    wheel = tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "dvd"
    wheel.mkdir(parents=True)
    assert doctor.checkout_lock_file(wheel) is None
    doctor.print_lock(None)
    assert "not run from a checkout; comparison skipped" in capsys.readouterr().out
    doctor.print_lock(checkout / "requirements" / "lock-cpu-py311.txt")
    assert "lock-cpu-py311.txt not found; comparison skipped" in capsys.readouterr().out


def test_a_missing_lock_argument_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture):
    code, _, err = run_doctor(capsys, "--lock", str(tmp_path / "missing.txt"))
    assert code == 2 and "--lock" in err and "not found" in err and err.count("\n") == 1


def test_the_bug_message_asks_for_the_doctor_output(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    args = cli.build_parser().parse_args(["doctor"])
    args.run = failing
    monkeypatch.setattr(cli, "build_parser", lambda: type("P", (), {"parse_args": lambda self, argv: args})())
    assert cli.main([]) == 1
    message = capsys.readouterr().err
    assert "this is a bug" in message and "`dvd doctor`" in message and message.count("\n") == 1
