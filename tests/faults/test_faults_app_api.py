"""The second hostile pass (issue "Security and trust, second pass"), items 3, 5, 6 and 8: the app serves only what
the user shared, --skip-existing trusts only complete outputs, a failed metric pass keeps the disparity, and the
Python API and file names of any bytes.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from harness import Fault, Workspace, parametrize, run_fault
from PIL import Image
from test_metric import InverseDepthPipe, tiny_depth_pro  # noqa: F401 - a fixture, used by name below

from dvd import cli
from dvd.errors import DVDError
from dvd.io.readers import check_pixel_count
from dvd.metric.models import TransformersMetricModel
from dvd.pipeline.dvd_pipeline import DVDPipeline

SMALL = ("--height", 32, "--width", 48, "--quiet")
STRICT_STDOUT = {"PYTHONIOENCODING": "utf-8:strict", "OMP_NUM_THREADS": "1"}  # a UTF-8 locale's streams
ODD_NAME = b"clip\xff\xfe"  # not UTF-8, a legal file name on Linux


def predict(ws: Workspace, *inputs, extra: tuple = ()) -> list:
    inputs = inputs or (ws.clip,)
    return ["predict", *inputs, "-o", ws.out, "--weights", ws.weights, *SMALL, "--max-frames", 5, *extra]


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that declares width x height (its pixel data cut short): what Pillow's size check reads."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (1 + 3 * width))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


# --- 8: file names of any bytes --------------------------------------------------------------------------------------


def odd_path(folder: Path, suffix: bytes = b"") -> Path:
    return Path(os.fsdecode(os.fsencode(folder) + b"/" + ODD_NAME + suffix))


def odd_video(ws: Workspace) -> Path:
    path = odd_path(ws.root, b".mp4")
    path.write_bytes(ws.clip.read_bytes())
    return path


def odd_image_folder(ws: Workspace) -> Path:
    folder = odd_path(ws.root)
    folder.mkdir()
    for index in range(3):
        Image.fromarray(np.full((36, 64, 3), 60 * index, np.uint8)).save(odd_path(folder, b"%d.png" % index))
    return folder


def odd_list(ws: Workspace) -> Path:
    odd_video(ws)
    listing = ws.root / "inputs.txt"
    listing.write_bytes(ODD_NAME + b".mp4\n")
    return listing


def names_round_trip(*inputs: Callable[[Workspace], Path]) -> Callable[[Workspace], None]:
    """meta.json and the manifest are ASCII JSON whose names decode back to the very bytes of the inputs'."""

    def check(ws: Workspace) -> None:
        assert os.listdir(os.fsencode(ws.out)).count(ODD_NAME) == 1
        folder = odd_path(ws.out)
        raw = (folder / "meta.json").read_bytes()
        assert raw.isascii()
        assert os.fsencode(json.loads(raw)["input"]["path"]).endswith(ODD_NAME + (b".mp4" if inputs else b""))
        lines = [json.loads(line) for line in (ws.out / "manifest.jsonl").read_bytes().splitlines()]
        assert [os.fsencode(line["output"]) for line in lines] == [os.fsencode(folder)]
        assert np.load(folder / "disparity.npy").shape[0] == json.loads(raw)["num_frames"] > 0

    return check


NAME_CASES = [
    Fault(
        "a video named in bytes that are not UTF-8, stdout strict",
        lambda ws: predict(ws, odd_video(ws)),
        code=0,
        message="clip\\xff\\xfe",  # the summary names the output with the bytes escaped
        check=names_round_trip(odd_video),
        subprocess=True,
        env=STRICT_STDOUT,
    ),
    Fault(
        "an image folder named in bytes that are not UTF-8",
        lambda ws: predict(ws, odd_image_folder(ws)),
        code=0,
        message="clip\\xff\\xfe",
        check=names_round_trip(),
    ),
    Fault(
        "a .txt list naming a file in bytes that are not UTF-8",
        lambda ws: predict(ws, odd_list(ws)),
        code=0,
        message="clip\\xff\\xfe",
        check=names_round_trip(odd_video),
    ),
]


@parametrize(NAME_CASES)
def test_file_names_of_any_bytes(fault: Fault, workspace: Workspace, capsys) -> None:
    run_fault(fault, workspace, capsys)


# --- 3 and the readers: pictures beyond Pillow's pixel limit ---------------------------------------------------------

PIXEL_CASES = [
    Fault(
        "a 30000x30000 PNG (a decompression bomb)",
        lambda ws: predict(ws, png_header(ws.root / "bomb.png", 30000, 30000)),
        message=f"more pixels than {Image.MAX_IMAGE_PIXELS} per frame, Pillow's limit",
    ),
    Fault(
        "a PNG just above Pillow's limit (a warning to Pillow)",
        lambda ws: predict(ws, png_header(ws.root / "big.png", 10000, Image.MAX_IMAGE_PIXELS // 10000 + 1)),
        message="Pillow's limit against decompression bombs",
    ),
    Fault(
        "dvd bench --save ply",
        lambda ws: ["bench", "--input", ws.clip, "--weights", ws.weights, "--save", "npy,ply", "--frames", 5],
        message="--save ply: point clouds are written by dvd predict",
    ),
]


@parametrize(PIXEL_CASES)
def test_inputs_beyond_the_pixel_limit_and_bench_formats(fault: Fault, workspace: Workspace, capsys) -> None:
    run_fault(fault, workspace, capsys)


def test_the_pixel_limit_of_videos_and_exr() -> None:
    """What the app checks of every upload once it is open (videos and EXR are sized without Pillow)."""
    side = int(Image.MAX_IMAGE_PIXELS**0.5) + 1
    with pytest.raises(DVDError, match=rf"huge.mp4 is {side}x{side} = {side * side} pixels, more than"):
        check_pixel_count("huge.mp4", (side, side))
    check_pixel_count("8k.mp4", (4320, 7680))


# --- 5: --skip-existing trusts only complete outputs -----------------------------------------------------------------


def earlier_output(ws: Workspace, *extra) -> Path:
    """A finished out/clip (npy and 16-bit PNGs) of the first 5 frames of the clip."""
    assert cli.main([str(a) for a in predict(ws, extra=("--save", "npy,png16", *extra))]) == 0
    return ws.out / "clip"


def frame_sizes(folder: Path) -> dict:
    """What meta.json must list, measured here: each output file's bytes, each folder's bytes and file count."""
    png = sorted((folder / "depth_png16").iterdir())
    return {
        "disparity.npy": {"bytes": os.stat(folder / "disparity.npy").st_size},
        "depth_png16": {"bytes": sum(os.stat(p).st_size for p in png), "files": len(png)},
    }


def damaged(harm: Callable[[Path], object]) -> Callable[[Workspace], list]:
    def argv(ws: Workspace) -> list:
        harm(earlier_output(ws))
        return predict(ws, extra=("--save", "npy,png16", "--skip-existing"))

    return argv


def redone(ws: Workspace) -> None:
    folder = ws.out / "clip"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["files"] == frame_sizes(folder)
    assert sorted(os.listdir(folder)) == ["depth_png16", "disparity.npy", "meta.json"]  # dvd's own files only
    assert np.load(folder / "disparity.npy").shape == (5, 90, 160)


def untouched_and_listed(ws: Workspace) -> None:
    folder = ws.out / "clip"
    assert json.loads((folder / "meta.json").read_text())["files"] == frame_sizes(folder)


FRAMES = tuple(f"depth_png16/{index:06d}.png" for index in range(5))
OUTPUT_FILES = tuple(f"out/clip/{name}" for name in ("meta.json", "disparity.npy", *FRAMES))  # what a redo rewrites

SKIP_CASES = [
    Fault(
        "--skip-existing skips a complete output",
        damaged(lambda folder: None),
        code=0,
        message="0 written, 1 skipped",
        check=untouched_and_listed,
    ),
    Fault(
        "--skip-existing redoes an output whose disparity.npy was deleted",
        damaged(lambda folder: (folder / "disparity.npy").unlink()),
        code=0,
        message="1 input(s)",
        check=redone,
        replaces=OUTPUT_FILES,
    ),
    Fault(
        "--skip-existing redoes an output with a frame cut short",
        damaged(lambda folder: os.truncate(folder / "depth_png16" / "000003.png", 100)),
        code=0,
        message="1 input(s)",
        check=redone,
        replaces=OUTPUT_FILES,
    ),
    Fault(
        "--skip-existing redoes an output with a frame missing",
        damaged(lambda folder: (folder / "depth_png16" / "000004.png").unlink()),
        code=0,
        message="1 input(s)",
        check=redone,
        replaces=OUTPUT_FILES,
    ),
]


@parametrize(SKIP_CASES)
def test_skip_existing_skips_only_complete_outputs(fault: Fault, workspace: Workspace, capsys) -> None:
    _, _, err = run_fault(fault, workspace, capsys)
    if "redoes" in fault.name:
        assert "is incomplete" in err and "predicting it again (--skip-existing)" in err


# --- 6: a failed metric pass keeps the disparity ---------------------------------------------------------------------


class StandIn(InverseDepthPipe):
    """DVD's stand-in of tests/test_metric.py: its disparity is the metric model's inverse depth (constant with
    `constant`: no metric fit can find a scale in it, a degenerate fit)."""

    weights_kind = None  # not the proof model: no notice about it


@pytest.fixture
def pipe_calls(monkeypatch) -> Callable[[object], list]:
    """Make `dvd predict` load `pipe` instead of weights; returns the list of loads made."""

    def use(pipe: object) -> list:
        loads: list = []
        monkeypatch.setattr(DVDPipeline, "from_pretrained", classmethod(lambda cls, *a, **k: loads.append(a) or pipe))
        return loads

    return use


def metric_run(ws: Workspace, metric: Path, *extra) -> list:
    return [str(a) for a in predict(ws, extra=("--metric", metric, "--metric-keyframes", 2, *extra))]


def last_error(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' "Loading weights" bar


def test_a_degenerate_metric_fit_keeps_the_disparity(workspace, tiny_depth_pro, pipe_calls, capsys) -> None:
    pipe_calls(StandIn(None, constant=True))
    assert cli.main(metric_run(workspace, tiny_depth_pro)) == 2
    error = last_error(capsys)
    assert error.startswith("dvd predict: error: metric alignment") and "degenerate" in error
    assert f"kept in {workspace.out / 'clip'}" in error and "--resume" in error
    folder = workspace.out / "clip"
    meta = json.loads((folder / "meta.json").read_text())
    assert "degenerate" in meta["metric_failed"]["error"] and "--resume" in meta["metric_failed"]["retry"]
    assert np.load(folder / "disparity.npy").shape == (5, 90, 160) and meta["num_frames"] == 5
    assert sorted(os.listdir(folder)) == ["depth_vis.mp4", "disparity.npy", "meta.json"]  # no depth_m.npy begun
    assert "depth_m" not in meta["outputs"] and "metric" not in meta
    assert [json.loads(line)["status"] for line in (workspace.out / "manifest.jsonl").read_text().splitlines()] == [
        "failed"
    ]


def test_only_the_metric_pass_is_retried_with_resume(workspace, tiny_depth_pro, pipe_calls, monkeypatch, capsys):
    metric = TransformersMetricModel(str(tiny_depth_pro), "cpu")
    metric.predict = metric.predict  # the stand-in's own copy keeps working while the class's fails below
    pipe_calls(StandIn(metric))
    real_predict = TransformersMetricModel.predict
    monkeypatch.setattr(TransformersMetricModel, "predict", lambda self, frames: 1 / 0)  # a metric model that fails
    assert cli.main(metric_run(workspace, tiny_depth_pro)) == 1  # not a DVDError: an internal error, still one line
    error = last_error(capsys)
    assert "ZeroDivisionError" in error and "kept in" in error
    folder = workspace.out / "clip"
    disparity = (folder / "disparity.npy").read_bytes()
    assert "ZeroDivisionError" in json.loads((folder / "meta.json").read_text())["metric_failed"]["error"]

    # Without --resume the finished folder is refused, naming the way on; with --metric and --resume only the
    # metric pass runs: the DVD model is not even loaded, and the disparity is the very same file.
    monkeypatch.setattr(TransformersMetricModel, "predict", real_predict)
    loads = pipe_calls(None)
    assert cli.main(metric_run(workspace, tiny_depth_pro)) == 2
    error = last_error(capsys)
    assert "its metric pass failed" in error and "pass --resume to run only the metric pass" in error
    inode = os.stat(folder / "disparity.npy").st_ino
    assert cli.main(metric_run(workspace, tiny_depth_pro, "--resume", "--max-frames", 4)) == 2  # not its frames
    assert "was predicted with --max-frames 5 (now 4)" in last_error(capsys)
    assert cli.main(metric_run(workspace, tiny_depth_pro, "--resume")) == 0
    assert loads == []
    assert "running only the metric pass on it (--resume)" in capsys.readouterr().err
    meta = json.loads((folder / "meta.json").read_text())
    assert "metric_failed" not in meta and meta["metric"]["shots"][0]["scale"] > 0
    assert (folder / "disparity.npy").read_bytes() == disparity and os.stat(folder / "disparity.npy").st_ino == inode
    depth = np.load(folder / "depth_m.npy")
    assert depth.shape == (5, 90, 160) and np.isfinite(depth).all()
    assert meta["files"]["depth_m.npy"] == {"bytes": os.stat(folder / "depth_m.npy").st_size}
    assert sorted(os.listdir(workspace.out)) == ["clip", "manifest.jsonl"]  # no staging folder left beside it


# --- 8: the Python API -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_pipe(tiny_weights: Path) -> DVDPipeline:
    return DVDPipeline.from_pretrained(str(tiny_weights), device="cpu")


VIDEO = np.zeros((5, 36, 64, 3), np.uint8)
SIZES = {"height": 32, "width": 48, "window": 5, "overlap": 1}


@pytest.mark.parametrize(
    ("name", "value"),
    [("window", 5.5), ("overlap", 1.0), ("height", "32"), ("width", True), ("batch_windows", 2.0)],
)
def test_api_sizes_and_windows_must_be_ints(tiny_pipe, name, value) -> None:
    with pytest.raises(ValueError, match=f"`{name}` must be a whole number"):
        tiny_pipe(VIDEO, **{**SIZES, name: value})


def test_api_takes_numpy_integers(tiny_pipe) -> None:
    assert tiny_pipe(VIDEO, **{**SIZES, "window": np.int64(5)}).prediction.shape == (5, 36, 64)


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda pipe: pipe(torch.empty(5, 36, 64, 3, device="meta"), **SIZES), "`video` is a meta tensor"),
        (lambda pipe: pipe([torch.empty(36, 64, 3, device="meta")] * 5, **SIZES), "`video` is a meta tensor"),
        (lambda pipe: pipe.predict_window(torch.empty(5, 32, 48, 3, device="meta")), "`frames` is a meta tensor"),
        (lambda pipe: pipe(torch.zeros(5, 36, 64, 3, dtype=torch.complex64), **SIZES), "`video`: .* complex64"),
        (lambda pipe: pipe.predict_window(torch.zeros(5, 32, 48, 3, dtype=torch.complex64)), "`frames`: .*complex"),
    ],
    ids=["meta video", "meta frames", "meta window", "complex video", "complex window"],
)
def test_api_refuses_tensors_without_pixels_by_name(tiny_pipe, call, words) -> None:
    with pytest.raises(ValueError, match=words):
        call(tiny_pipe)


def test_api_save_pretrained_refuses_a_file(tiny_pipe, tmp_path) -> None:
    mine = tmp_path / "mine"
    mine.write_text("the user's")
    with pytest.raises(ValueError, match="`save_directory` .*mine exists and is not a folder"):
        tiny_pipe.save_pretrained(mine)
    assert mine.read_text() == "the user's"


# --- 3: dvd app ------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def early_app_error(ws: Workspace, *flags) -> tuple[int, str, dict]:
    """`dvd app` with missing weights: the flag must be refused before the weights are looked at, and before torch
    or Gradio is imported (tens of seconds); returns the exit code, the stderr line and what was imported."""
    script = (
        "import json, sys; from dvd.cli import main; code = main(sys.argv[1:]); "
        "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules, 'gradio': 'gradio' in sys.modules}))"
    )
    argv = ["app", "--weights", ws.root / "no-weights", "--port", _free_port(), "--temp-dir", ws.root / "t", *flags]
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, argv)], capture_output=True, text=True, timeout=120, check=False
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report.pop("code"), done.stderr.strip(), report


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (lambda ws: ["--examples", ws.user / "notes.txt"], "is not a video or an image"),
        (lambda ws: ["--examples", ws.user], "holds no videos or images"),
        (lambda ws: ["--examples", ws.root / "missing.mp4"], "missing.mp4 not found"),
        (lambda ws: ["--max-upload-mb", "0"], "--max-upload-mb must be positive"),
    ],
    ids=["a text file as example", "a folder without media", "a missing example", "a zero upload limit"],
)
def test_app_checks_its_flags_before_any_heavy_import(workspace, flags, words) -> None:
    code, error, imported = early_app_error(workspace, *flags(workspace))
    assert code == 2 and len(error.splitlines()) == 1 and words in error, error
    assert imported == {"torch": False, "gradio": False}
    assert not (workspace.root / "t").exists() or list((workspace.root / "t").iterdir()) == []


def _serving(url: str) -> bool:
    try:
        return _get(url)[0] == 200
    except urllib.error.URLError:  # not listening yet
        return False


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


def test_the_app_serves_only_what_the_user_shared(workspace, tiny_weights, tmp_path) -> None:
    gradio_client = pytest.importorskip("gradio_client", reason='needs gradio_client: pip install -e ".[dev]"')
    pytest.importorskip("gradio", reason='dvd app needs its extra: pip install -e ".[app]"')
    data = workspace.user / "data"
    data.mkdir()
    clip = data / "clip.mp4"
    clip.write_bytes(workspace.clip.read_bytes())
    secret = data / "secret_notes.txt"
    secret.write_text("not for the web\n")
    temp = tmp_path / "temp"
    temp.mkdir()
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [sys.executable, "-m", "dvd.cli", "app", "--weights", str(tiny_weights), "--device", "cpu"]
    command += ["--port", str(port), "--temp-dir", str(temp), "--examples", str(clip)]
    log = tmp_path / "server.log"
    with open(log, "w") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **STRICT_STDOUT})
    try:
        deadline = time.monotonic() + 240  # importing torch and Gradio and loading the model; minutes when loaded
        while not _serving(url):
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        files = f"{url}gradio_api/file="
        assert _get(files + str(secret))[0] != 200  # a neighbour of the example
        assert _get(files + str(clip))[0] != 200  # the example itself, where the user keeps it
        assert _get(files + str(workspace.user / "notes.txt"))[0] != 200
        (workspace_root,) = temp.glob("dvd-app-*")
        shared = workspace_root / "examples" / "1" / "clip.mp4"
        assert os.stat(shared).st_ino == os.stat(clip).st_ino  # a hard link: same file system
        assert _get(files + str(shared)) == (200, clip.read_bytes())
        assert _get(files + str(shared.with_name("secret_notes.txt")))[0] != 200
        assert str(data) not in _get(f"{url}config")[1].decode()  # the page offers the copy, not the user's path

        client = gradio_client.Client(url, download_files=str(tmp_path / "downloads"), verbose=False)
        bomb = png_header(tmp_path / "bomb.png", 30000, 30000)
        with pytest.raises(Exception, match=r"more pixels than \d+ per frame, Pillow's limit") as refused:
            client.predict(gradio_client.handle_file(str(bomb)), api_name="/predict")
        assert "internal error" not in str(refused.value)
    finally:
        server.terminate()
        code = server.wait(60)
    assert code == 0, log.read_text()[-3000:]
    assert list(temp.iterdir()) == []  # the workspace, examples' links included, is gone
    assert clip.read_bytes() == workspace.clip.read_bytes() and secret.read_text() == "not for the web\n"
