"""Media in and media out: damaged inputs, variable frame rates, frame-rate and size limits, degenerate ranges.

Every damaged input fails in one line naming the file, or, with --allow-damaged, is kept with one warning and a
meta.json that says what was written and what was lost.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from harness import Fault, Workspace, parametrize, run_fault
from PIL import Image

from dvd.pipeline.dvd_pipeline import DVDPipeline

VFR_MS = [0, 40, 80, 200, 240, 400, 440, 480, 1000, 1500, 1540, 1580]  # frame times of the VFR clip, ms


def predict(ws: Workspace, *inputs, extra: tuple = ()) -> list:
    return ["predict", *inputs, "-o", ws.out, "--weights", ws.weights, "--height", 32, "--width", 48, "--quiet", *extra]


def noise_mp4(path: Path, frames: int = 24, times_ms: list[int] | None = None) -> Path:
    """H.264 of random frames (large packets, so a cut lands inside the data), moov index at the front."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        if times_ms is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for index in range(frames if times_ms is None else len(times_ms)):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), format="rgb24")
            if times_ms is not None:
                frame.pts = times_ms[index]
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def cut(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def truncated_mp4(ws: Workspace) -> Path:
    return cut(noise_mp4(ws.root / "cut.mp4"))


def truncated_mkv(ws: Workspace) -> Path:
    path = ws.root / "cut.mkv"
    whole = noise_mp4(ws.root / "whole.mp4")
    with av.open(str(whole)) as source, av.open(str(path), "w") as target:  # Matroska stores no frame count
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)
    return cut(path)


def corrupt_middle_mp4(ws: Workspace) -> Path:
    """Whole and indexed, but with garbage over the middle of its data: the decoder fails there."""
    path = noise_mp4(ws.root / "garbled.mp4")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 3000] = np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def folder_with_half_jpeg(ws: Workspace) -> Path:
    folder = ws.root / "shots"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(folder / f"f{index}.jpg", quality=90)
    cut(folder / "f1.jpg")
    return folder


def images(ws: Workspace, count: int = 3) -> Path:
    folder = ws.root / "frames"
    folder.mkdir()
    for index in range(count):
        Image.fromarray(np.full((48, 64, 3), 40 * index, np.uint8)).save(folder / f"f{index}.png")
    return folder


def meta(ws: Workspace, name: str) -> dict:
    return json.loads((ws.out / name / "meta.json").read_text())


def kept_damaged(name: str, expected: int, damaged_file: str, lost: bool):
    """meta.json and disparity.npy of an input kept with --allow-damaged agree on what was written, and say what was
    lost: a cut video loses its last frames (fewer written than expected); a damaged image is kept concealed, so
    every frame is written."""

    def check(ws: Workspace) -> None:
        info = meta(ws, name)
        written = np.load(ws.out / name / "disparity.npy", mmap_mode="r").shape[0]
        assert info["damaged"] is True and any(damaged_file in problem for problem in info["damage"]), info
        assert info["num_frames"] == written and info["num_frames_expected"] == expected, info
        assert 0 < written < expected if lost else written == expected, f"{written} of {expected} frames written"

    return check


def frame_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        return [float(frame.time) for frame in container.decode(video=0)]


def keeps_vfr_times(stride: int):
    def check(ws: Workspace) -> None:
        expected = [ms / 1000 for ms in VFR_MS[::stride]]
        for file in ("depth_vis.mp4", "depth_sbs.mp4"):
            np.testing.assert_allclose(frame_times(ws.out / "vfr" / file), expected, atol=1e-3)
        timing = meta(ws, "vfr")["timing"]
        assert timing["variable_frame_rate"] is True and timing["frame_times"] == "frame_times.txt"
        lines = (ws.out / "vfr" / "frame_times.txt").read_text().splitlines()[1:]
        np.testing.assert_allclose([float(line.split()[1]) for line in lines], expected, atol=1e-6)

    return check


DAMAGED = [
    Fault("truncated mp4", lambda ws: predict(ws, truncated_mp4(ws)), message="cut.mp4 is truncated"),
    Fault(
        "truncated mp4 kept",
        lambda ws: predict(ws, truncated_mp4(ws), extra=("--allow-damaged",)),
        code=0,
        check=kept_damaged("cut", 24, "cut.mp4", lost=True),
    ),
    Fault("truncated mkv", lambda ws: predict(ws, truncated_mkv(ws)), message="cut.mkv is truncated"),
    Fault("garbage inside an mp4", lambda ws: predict(ws, corrupt_middle_mp4(ws)), message="garbled.mp4"),
    Fault("jpeg cut in half", lambda ws: predict(ws, folder_with_half_jpeg(ws)), message="f1.jpg"),
    Fault(
        "jpeg cut in half kept",
        lambda ws: predict(ws, folder_with_half_jpeg(ws), extra=("--allow-damaged",)),
        code=0,
        check=kept_damaged("shots", 3, "f1.jpg", lost=False),
    ),
]

RATES_AND_SIZES = [
    Fault("fps 1e9", lambda ws: predict(ws, images(ws), extra=("--fps", "1e9", "--save", "mp4")), message="1000"),
    Fault("fps 1e-9", lambda ws: predict(ws, images(ws), extra=("--fps", "1e-9")), message="1/1000"),
    Fault("fps with a video", lambda ws: predict(ws, ws.clip, extra=("--fps", "30")), message="--fps"),
    Fault(
        "stride beyond the slowest mp4",
        lambda ws: predict(ws, ws.clip, extra=("--stride", 100_000, "--save", "mp4")),
        message="1/1000",
    ),
    Fault("height 100000", lambda ws: predict(ws, ws.clip, extra=("--height", 100_000)), message="4096"),
    Fault("width 100000", lambda ws: predict(ws, ws.clip, extra=("--width", 100_000)), message="4096"),
    Fault(
        "panorama beyond the size cap",
        lambda ws: predict(ws, images(ws, 1), extra=("--height", 4000, "--width", 16)),
        message="4096",
    ),
    Fault("zero stride names the flag", lambda ws: predict(ws, ws.clip, extra=("--stride", 0)), message="--stride"),
    Fault(
        "zero max frames names the flag", lambda ws: predict(ws, ws.clip, extra=("--max-frames", 0)), message="--max"
    ),
]

VFR = [
    Fault(
        f"vfr timestamps kept, stride {stride}",
        lambda ws, stride=stride: predict(
            ws, noise_mp4(ws.root / "vfr.mp4", times_ms=VFR_MS), extra=("--save", "mp4,sbs", "--stride", stride)
        ),
        code=0,
        check=keeps_vfr_times(stride),
    )
    for stride in (1, 2)
]


@parametrize(DAMAGED + RATES_AND_SIZES + VFR)
def test_fault(fault: Fault, workspace: Workspace, capsys):
    run_fault(fault, workspace, capsys)


def test_damage_kept_warns_in_one_line(workspace: Workspace, capsys):
    fault = Fault("warning", lambda ws: predict(ws, truncated_mp4(ws), extra=("--allow-damaged",)), code=0)
    _, _, err = run_fault(fault, workspace, capsys)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dvd predict: warning: wrote") and "cut.mp4" in lines[0], err


def model_returning(values: float):
    def predict_windows(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        return [np.full(window.shape[:3], values, dtype=np.float32) for window in windows]

    return predict_windows


def range_around(value: float):
    def check(ws: Workspace) -> None:
        png = meta(ws, "clip")["outputs"]["png16"]
        assert png["lo"] < value < png["hi"] and png["hi"] - png["lo"] >= 0.5, png

    return check


@pytest.mark.parametrize(
    ("value", "fault"),
    [
        (np.nan, Fault("all-NaN disparity", lambda ws: predict(ws, ws.clip, extra=("--save", "mp4")), message="NaN")),
        (
            0.25,
            Fault(
                "constant first window",
                lambda ws: predict(ws, ws.clip, extra=("--save", "png16,mp4", "--max-frames", 5)),
                code=0,
                check=range_around(0.25),
            ),
        ),
    ],
    ids=["nan", "constant"],
)
def test_degenerate_disparity(value: float, fault: Fault, workspace: Workspace, capsys, monkeypatch):
    monkeypatch.setattr(DVDPipeline, "predict_windows", model_returning(value))
    run_fault(fault, workspace, capsys)
