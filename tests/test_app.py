"""`dvd app` for real: the command started on a free localhost port with tiny weights, then driven by a script
through gradio_client and by a person's clicks in headless Chromium (Debian's, through Playwright).

Set DVD_APP_SCREENSHOT=path.png to keep the screenshot of the finished page somewhere else than the test's folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
from media import shared_video, write_test_video
from PIL import Image

from dvd.cli import main

pytest.importorskip("gradio", reason='dvd app needs its extra: pip install -e ".[app]"')
gradio_client = pytest.importorskip("gradio_client", reason='the API test needs gradio_client: pip install -e ".[dev]"')

MAX_SECONDS = 3  # the server's --max-seconds: the over-long video is 4 s
START_SECONDS = 240  # importing torch and Gradio and loading the model; minutes only on a loaded machine
SMALL = {"height": 32, "width": 48, "window": 9, "overlap": 2}
CHROMIUM = Path("/usr/bin/chromium")
# Chromium as root in a sandbox-less container with no network beyond this machine (see the machine notes).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 60_000  # the longest any single step of a page may take


@dataclass
class Server:
    url: str
    temp: Path  # --temp-dir: holds the app's workspace while it runs, and nothing once it has stopped
    log: Path

    @property
    def jobs(self) -> Path:
        (workspace,) = self.temp.glob("dvd-app-*")
        return workspace / "jobs"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_serving(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dvd app exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"dvd app did not serve {url} within {START_SECONDS} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("app")
    temp, log = base / "temp", base / "server.log"
    temp.mkdir()
    url = f"http://127.0.0.1:{_free_port()}/"
    command = [sys.executable, "-m", "dvd.cli", "app", "--weights", str(tiny_weights), "--device", "cpu"]
    command += ["--port", url.rsplit(":", 1)[1].strip("/"), "--temp-dir", str(temp), "--max-seconds", str(MAX_SECONDS)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_until_serving(url, process, log)
        yield Server(url, temp, log)
    finally:
        process.terminate()  # SIGTERM: the app stops serving and deletes its temporary folder
        try:
            code = process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            pytest.fail(f"dvd app did not stop within 60 s of SIGTERM:\n{log.read_text()[-3000:]}")
    assert code == 0, log.read_text()[-3000:]
    assert list(temp.iterdir()) == [], "dvd app left temporary files behind at exit"


def _finished_jobs_only(server: Server) -> None:
    """Every job folder left holds a finished output: failed and cancelled jobs removed theirs, and no staging
    folder of an unfinished output is anywhere."""
    for folder in server.jobs.iterdir():
        assert list(folder.glob("output/*/meta.json")), f"{folder.name} is left from a job that did not finish"
    assert not [path for path in server.jobs.rglob("*") if ".partial" in path.name]


# --- through gradio_client, as a script would --------------------------------------------------------------------


@pytest.mark.smoke
def test_gradio_client_gives_the_npy_of_dvd_predict(server, clip, tiny_weights, tmp_path, one_torch_thread):
    client = gradio_client.Client(server.url, download_files=str(tmp_path / "downloads"), verbose=False)
    npy, files, depth_video, sbs_video, status = client.predict(
        gradio_client.handle_file(str(clip)),
        **SMALL,
        save=["npy", "mp4", "sbs"],
        colormap="turbo",
        max_frames=20,
        api_name="/predict",
    )
    flags = ["--height", "32", "--width", "48", "--window", "9", "--overlap", "2", "--save", "npy,mp4,sbs"]
    flags += ["--colormap", "turbo", "--max-frames", "20", "--quiet", "--device", "cpu"]
    assert main(["predict", str(clip), "-o", str(tmp_path / "cli"), "--weights", str(tiny_weights), *flags]) == 0
    expected = np.load(tmp_path / "cli" / "clip" / "disparity.npy")
    assert expected.shape == (20, 90, 160)
    np.testing.assert_array_equal(np.load(npy), expected)
    assert sorted(Path(file).name for file in files) == ["depth_sbs.mp4", "depth_vis.mp4", "disparity.npy", "meta.json"]
    assert Path(depth_video).name == "depth_vis.mp4" and Path(sbs_video).name == "depth_sbs.mp4"
    assert status.startswith("Done: 20 frames in ")  # plain text for scripts; the page draws it as a block
    assert "<" not in status


def test_gradio_client_takes_a_zip_of_frames_and_names_bad_uploads(server, tmp_path):
    archive = tmp_path / "frames.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for index in range(3):
            image = tmp_path / f"f{index}.png"
            Image.fromarray(np.full((36, 64, 3), 60 * index, np.uint8)).save(image)
            bundle.write(image, f"frames/f{index}.png")
    client = gradio_client.Client(server.url, download_files=str(tmp_path / "downloads"), verbose=False)
    npy, *_ = client.predict(gradio_client.handle_file(str(archive)), **SMALL, api_name="/predict")
    assert np.load(npy).shape == (3, 36, 64)

    notes = tmp_path / "notes.txt"
    notes.write_text("not a video")
    with pytest.raises(Exception, match="notes.txt is not a video, an image or a zip of frames"):
        client.predict(gradio_client.handle_file(str(notes)), api_name="/predict")
    _finished_jobs_only(server)


def test_the_page_shows_the_weights_and_defaults_to_the_models_settings(tmp_path):
    """With the proof model the page says what it is, and the form and the API default to its own sizes and
    windows; the status that API clients get is the plain text, the page's status block is not in the API."""
    from dvd.app.jobs import AppLimits, JobRunner, Workspace
    from dvd.app.page import build_page
    from dvd.pipeline.dvd_pipeline import DVDPipeline
    from dvd.weights.about import PROOF_NOTICE

    runner = JobRunner(DVDPipeline.from_pretrained("proof", device="cpu"), Workspace(tmp_path, 60), AppLimits())
    page = build_page(runner, [])
    (model,) = [c["props"]["value"] for c in page.config["components"] if c["props"].get("elem_id") == "dvd-model"]
    assert "`dvd/assets/proof_model.safetensors` (proof: " in model and PROOF_NOTICE in model
    assert "Default settings: 64x64, window 5, overlap 2 (the model's own)" in model
    endpoint = page.get_api_info()["named_endpoints"]["/predict"]
    defaults = {p["parameter_name"]: p["parameter_default"] for p in endpoint["parameters"]}
    assert {name: defaults[name] for name in SMALL} == {"height": 64, "width": 64, "window": 5, "overlap": 2}
    returns = endpoint["returns"]  # npy, all files, depth video, side by side, status: no HTML block among them
    assert len(returns) == 5 and returns[0]["label"] == "disparity.npy (raw float32 [T, H, W])"
    assert (returns[-1]["label"], returns[-1]["python_type"]["type"]) == ("Status", "str")


# --- in Chromium, as a person would ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.is_file():
        pytest.skip(
            f"BROWSER TEST NOT RUN: chromium not installed ({CHROMIUM} is absent; .ci/run could not apt-get it, or "
            "this machine never had it): apt-get install chromium (Debian's) to run it"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason='the browser test needs playwright: pip install -e ".[dev]"'
    )
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(server.url)
    page.wait_for_selector("#dvd-run")
    yield page
    context.close()


def _rollercoaster_cut(folder: Path, frames: int = 12) -> Path:
    """The first frames of ../shared's davis_rollercoaster.mp4 (960x540, 24 fps), or a clip of that size and rate."""
    cut = folder / "rollercoaster_cut.mp4"
    try:
        source = shared_video("davis_rollercoaster.mp4")
    except pytest.skip.Exception:
        return write_test_video(cut, frames=frames, size=(540, 960), fps=24)
    with av.open(str(source)) as reader, av.open(str(cut), "w") as writer:
        stream = writer.add_stream("libx264", rate=reader.streams.video[0].average_rate, options={"crf": "18"})
        stream.height, stream.width, stream.pix_fmt = 540, 960, "yuv420p"
        for index, frame in enumerate(reader.decode(video=0)):
            if index == frames:
                break
            rgb = frame.to_ndarray(width=960, height=540, format="rgb24")
            writer.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        writer.mux(stream.encode())
    return cut


def _upload(page, path: Path) -> None:
    clear = page.locator("#dvd-upload button[aria-label='Clear']")
    if clear.count():  # a file is there already: remove it, as a person would, to get the drop zone back
        clear.click()
    page.set_input_files("#dvd-upload input[type=file]", str(path))
    page.wait_for_selector(f"#dvd-upload [aria-label='{path.name}']")


def _set(page, field: str, value: int | str) -> None:
    page.fill(f"#dvd-{field} input", str(value))


def _run(page, until: str) -> str:
    """Press Run and wait for this job (not the one before it) to reach `until`; returns the status line."""
    before = page.get_attribute("#dvd-status [data-job]", "data-job")
    page.click("#dvd-run")
    page.wait_for_selector(f'#dvd-status [data-state="{until}"]:not([data-job="{before}"])')
    return page.inner_text("#dvd-status .dvd-status")


@pytest.mark.smoke
@pytest.mark.browser
def test_page_runs_a_clip_and_hands_back_every_output(page, server, tmp_path):
    cut = _rollercoaster_cut(tmp_path)
    _upload(page, cut)
    _set(page, "height", 32)  # two settings changed from dvd predict's defaults: the resolution and the windows
    _set(page, "width", 48)
    _set(page, "window", 9)
    _set(page, "overlap", 2)
    page.click("#dvd-save label:has-text('sbs')")
    assert "Done: 12 frames" in _run(page, "done")

    page.wait_for_selector("#dvd-depth video[src*='depth_vis.mp4']")
    page.wait_for_selector("#dvd-frame-info :text('frame 1 of 12')")
    links = page.locator("#dvd-files a[download]")
    links.nth(3).wait_for()
    assert sorted(links.evaluate_all("links => links.map(a => a.getAttribute('download'))")) == [
        "depth_sbs.mp4",
        "depth_vis.mp4",
        "disparity.npy",
        "meta.json",
    ]
    with page.expect_download() as download:
        page.click("#dvd-npy a[download]")
    download.value.save_as(tmp_path / "disparity.npy")
    assert np.load(tmp_path / "disparity.npy").shape == (12, 540, 960)  # every frame, at the source size

    screenshot = tmp_path / "app.png"
    page.screenshot(path=str(screenshot), full_page=True)
    if os.environ.get("DVD_APP_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["DVD_APP_SCREENSHOT"])
    print(f"screenshot of the finished page: {screenshot}")


@pytest.mark.browser
def test_page_says_what_is_wrong_with_bad_uploads(page, server, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video")
    _upload(page, notes)
    assert "notes.txt is not a video, an image or a zip of frames" in _run(page, "failed")

    long_clip = write_test_video(tmp_path / "long.mp4", frames=96, fps=24)  # 4 s
    _upload(page, long_clip)
    message = f"long.mp4 is 4.0 s long (with these frame settings) and this app takes at most {MAX_SECONDS} s"
    assert message in _run(page, "failed")
    _finished_jobs_only(server)


@pytest.mark.browser
def test_cancel_stops_the_job_and_keeps_nothing(page, server, tmp_path):
    # 240 frames at 120 fps (2 s, within the limit) in windows of 5 overlapping by 1: 60 windows.
    many_windows = write_test_video(tmp_path / "many_windows.mp4", frames=240, fps=120)
    _upload(page, many_windows)
    _set(page, "height", 64)
    _set(page, "width", 112)
    _set(page, "window", 5)
    _set(page, "overlap", 1)
    page.click("#dvd-run")
    page.wait_for_selector("#dvd-status :text-matches('Window [1-9][0-9]* of 60 done')")  # a window or more
    page.click("#dvd-cancel")
    page.wait_for_selector('#dvd-status [data-state="cancelled"]')
    text = page.inner_text("#dvd-status .dvd-status")
    assert "of 60 windows" in text and "nothing was kept" in text
    _finished_jobs_only(server)
