"""Bad media, bad options and bad weights that already end in one clear line: they must stay that way."""

from __future__ import annotations

import av
import numpy as np
from harness import Fault, Workspace, parametrize, run_fault
from PIL import Image


def predict(ws: Workspace, *inputs, extra: tuple = ()) -> list:
    return ["predict", *inputs, "-o", ws.out, "--weights", ws.weights, "--height", 32, "--width", 48, "--quiet", *extra]


def text_as_mp4(ws: Workspace):
    path = ws.root / "notes.mp4"
    path.write_text("this is not a video\n")
    return path


def zero_frame_avi(ws: Workspace):
    path = ws.root / "empty.avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        container.start_encoding()
    return path


def images(ws: Workspace, sizes: list[tuple[int, int]], name: str = "frames"):
    folder = ws.root / name
    folder.mkdir()
    for index, size in enumerate(sizes):
        Image.fromarray(np.zeros((*size, 3), np.uint8)).save(folder / f"f{index}.png")
    return folder


def empty_folder(ws: Workspace):
    folder = ws.root / "empty"
    folder.mkdir()
    return folder


def file_named(ws: Workspace, name: str, content: bytes = b"x"):
    path = ws.root / name
    path.write_bytes(content)
    return path


MEDIA = [
    Fault("missing input", lambda ws: predict(ws, ws.root / "nope.mp4"), message="not found"),
    Fault("text named .mp4", lambda ws: predict(ws, text_as_mp4(ws)), message="cannot decode"),
    Fault("zero-frame video", lambda ws: predict(ws, zero_frame_avi(ws)), message="frames"),
    Fault("folder without images", lambda ws: predict(ws, empty_folder(ws)), message="no images"),
    Fault("mixed image sizes", lambda ws: predict(ws, images(ws, [(32, 32), (16, 32)])), message="sizes differ"),
    Fault("unsupported extension", lambda ws: predict(ws, file_named(ws, "clip.xyz")), message="xyz"),
    Fault(
        "corrupt png", lambda ws: predict(ws, file_named(ws, "broken.png", b"\x89PNG garbage")), message="broken.png"
    ),
    Fault("empty list file", lambda ws: predict(ws, file_named(ws, "list.txt", b"# nothing\n")), message="list.txt"),
]

OPTIONS = [
    Fault(
        "overlap not below window",
        lambda ws: predict(ws, ws.clip, extra=("--window", 9, "--overlap", 9)),
        message="smaller than the window",
    ),
    Fault("negative overlap", lambda ws: predict(ws, ws.clip, extra=("--overlap", -1)), message="overlap"),
    Fault("zero window", lambda ws: predict(ws, ws.clip, extra=("--window", 0)), message="window"),
    Fault(
        "unknown save format", lambda ws: predict(ws, ws.clip, extra=("--save", "npy,gif")), message="unknown --save"
    ),
    Fault(
        "removed stitch preset",
        lambda ws: predict(ws, ws.clip, extra=("--stitch", "anchored")),
        message="use --stitch global",
    ),
    Fault("zero stride", lambda ws: predict(ws, ws.clip, extra=("--stride", 0)), message="stride"),
    Fault("zero max frames", lambda ws: predict(ws, ws.clip, extra=("--max-frames", 0)), message="max-frames"),
    Fault("zero batch windows", lambda ws: predict(ws, ws.clip, extra=("--batch-windows", 0)), message="batch-windows"),
    Fault("negative height", lambda ws: predict(ws, ws.clip, extra=("--height", -5)), message="height"),
    Fault("bad fps", lambda ws: predict(ws, images(ws, [(32, 32)]), extra=("--fps", "abc")), message="frame rate"),
    Fault(
        "output is a file",
        lambda ws: ["predict", ws.clip, "-o", ws.user / "notes.txt" / "out"],
        message="cannot write to output folder",
    ),
]

WEIGHTS = [
    Fault(
        "weights path missing",
        lambda ws: ["predict", ws.clip, "-o", ws.out, "--weights", ws.root / "w" / "x"],
        message="not found",
    ),
    Fault(
        "weights folder without a checkpoint",
        lambda ws: ["predict", ws.clip, "-o", ws.out, "--weights", ws.user],
        message="no weights found",
    ),
    Fault(
        "text file as checkpoint",
        lambda ws: ["predict", ws.clip, "-o", ws.out, "--weights", file_named(ws, "model.safetensors", b"junk")],
        message="model.safetensors",
    ),
]


@parametrize(MEDIA + OPTIONS + WEIGHTS)
def test_fault(fault: Fault, workspace: Workspace, capsys):
    run_fault(fault, workspace, capsys)
