"""Weights that cannot be had fail at once, in one line, before `dvd predict` makes its output folder: a Hub that
cannot be reached (no retries), HF_HUB_OFFLINE with nothing cached, a VAE that would have to come from the Hub."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dvd.cli import main

# huggingface_hub retries a request that meets a network error 5 times, waiting 1, 2, 4, 8 and 8 s in between.
RETRIES_TAKE_S = 23
# Times `dvd predict` alone, once the heavy imports are done, in a child process that gets the environment as given.
TIMED_PREDICT = """
import sys, time
from dvd import cli
import dvd.commands.predict, dvd.jobs.batch, dvd.jobs.outputs, dvd.pipeline.dvd_pipeline, dvd.weights.load
started = time.perf_counter()
code = cli.main(sys.argv[1:])
print(f"seconds {time.perf_counter() - started:.3f}")
sys.exit(code)
"""


# What the Hub answers about single files, as a child process with HF_ENDPOINT pointing here sees it.
ASK_THE_HUB = """
from dvd.errors import DVDError
from dvd.weights.load import hub_has_file
print(hub_has_file("someone/dvd", "model.safetensors"), hub_has_file("someone/dvd", "dvd_1.1.safetensors"))
try:
    hub_has_file("someone/nothing", "model.safetensors")
except DVDError as error:
    print(error)
"""


class FakeHub(http.server.BaseHTTPRequestHandler):
    """The Hub's answers to the HEAD request for a file: found, no such file, no such repository."""

    def do_HEAD(self) -> None:
        if "/someone/nothing/" in self.path:
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
        elif self.path.endswith("/model.safetensors"):
            self.send_response(200)
            self.send_header("X-Repo-Commit", "0" * 40)
            self.send_header("ETag", '"0"')
            self.send_header("Content-Length", "0")
        else:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def closed_port() -> int:
    """A local port nothing listens on (bound and released: connections to it are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_image(path: Path) -> Path:
    Image.fromarray(np.full((32, 48, 3), 128, np.uint8)).save(path)
    return path


@pytest.mark.parametrize(
    ("offline", "message"), [(False, "could not be reached"), (True, "not in the Hugging Face cache")]
)
def test_hub_that_cannot_answer_fails_at_once_and_leaves_no_output(tmp_path: Path, offline: bool, message: str):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}"}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HF_HUB_CACHE", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    out = tmp_path / "out"
    argv = ["predict", str(write_image(tmp_path / "frame.png")), "-o", str(out), "--weights", "someone/dvd"]
    done = subprocess.run(
        [sys.executable, "-c", TIMED_PREDICT, *argv], capture_output=True, text=True, timeout=300, env=env, check=False
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and message in lines[0] and "someone/dvd" in lines[0], done.stderr
    assert float(done.stdout.split("seconds ")[1]) < RETRIES_TAKE_S / 4, "the Hub request was retried"
    assert not out.exists(), "a failed weights lookup left the output folder behind"


def test_vae_from_the_hub_is_found_before_the_output_folder(
    tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    from huggingface_hub import constants

    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(tiny_weights / "model.safetensors", weights)  # official files without Wan2.1_VAE.pth beside them
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    code = main(["predict", str(write_image(tmp_path / "frame.png")), "-o", str(out), "--weights", str(weights)])
    err = capsys.readouterr().err
    assert code == 2 and "Wan-AI/Wan2.1-T2V-1.3B" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_hub_answers_are_told_apart(tmp_path: Path):
    server = http.server.HTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}"}
        env.pop("HF_HUB_OFFLINE", None)
        done = subprocess.run(
            [sys.executable, "-c", ASK_THE_HUB], capture_output=True, text=True, timeout=300, env=env, check=False
        )
    finally:
        server.shutdown()
    found, missing_repo = done.stdout.splitlines()
    assert found == "True False", done.stderr
    assert missing_repo.startswith("Hub repository someone/nothing was not found"), done.stdout
