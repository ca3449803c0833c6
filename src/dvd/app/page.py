"""The `dvd app` page (Gradio): upload, the `dvd predict` settings, progress and Cancel, a preview player, a frame
slider and the downloads. The work itself is `dvd.app.jobs`; this module only lays out the page and wires it.

The job endpoint is public as `/predict` (gradio_client): its first input is the file, every other input has the
default of the `dvd predict` flag of the same name (the loaded model's own sizes and windows, if it carries them),
its first output is the raw `disparity.npy` and its last the job's status as plain text. The page shows the status
as a block with a progress bar, which is no part of the API.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from dvd.app.jobs import DepthJob, JobRequest, JobRunner, frame_view
from dvd.options import COLORMAPS, DEFAULT_IMAGE_FPS, STITCH_PRESETS, WRITER_FORMATS
from dvd.weights.about import KINDS, PROOF_NOTICE

if TYPE_CHECKING:
    from dvd.pipeline.dvd_pipeline import DVDPipeline

POLL_SECONDS = 0.25  # how often the page's progress line is refreshed while a job runs

INTRO = """\
# DVD video depth
Drop in a video, an image or a zip of frames (or pick an example), choose the settings, and press **Run**. Depth comes
back as **affine-invariant disparity**: larger values are nearer; scale and shift are unknown. The settings are those
of `dvd predict` (their flags in brackets), with the same defaults; one job runs at a time, others wait in a queue.
"""

CSS = """
.dvd-status {padding: 0.5em 0.75em; border-radius: 6px; border: 1px solid var(--border-color-primary);}
.dvd-status progress {width: 100%; height: 0.9em;}
.dvd-status p {margin: 0.25em 0 0 0;}
.dvd-failed, .dvd-cancelled {border-color: #c0392b; color: #c0392b;}
.dvd-done {border-color: #27ae60;}
"""


def status_text(job: DepthJob | None) -> str:
    """Where the job is, in one plain line: what the API returns, and the text of the page's status block."""
    if job is None:
        return "Upload a file and press Run."
    cancelling = job.cancel_requested.is_set() and job.active
    if job.state == "queued":
        return "Cancelling…" if cancelling else "Waiting for the model (one job at a time)…"
    if job.state == "running":
        text = (
            f"Window {job.windows_done} of {job.windows_total} done · "
            f"{job.frames_written} of {job.frames_total} frames written"
        )
        return ("Cancelling… " if cancelling else "") + text
    if job.state == "done":
        return f"Done: {job.message}."
    return f"{job.state.capitalize()}: {job.message}"


def status_html(job: DepthJob | None) -> str:
    """The page's status block: `status_text` under a progress bar while the job runs (frames written of the total)
    and after. `data-state` and `data-job` tell scripts and tests which job is where."""
    state = "idle" if job is None else job.state
    bar = ""
    if job is not None and state in ("running", "done") and job.frames_total:
        bar = f'<progress value="{job.frames_written}" max="{job.frames_total}"></progress>'
    return (
        f'<div class="dvd-status dvd-{state}" data-state="{state}" data-job="{"" if job is None else job.id}">'
        f"{bar}<p>{html.escape(status_text(job))}</p></div>"
    )


def model_markdown(pipe: DVDPipeline, defaults: JobRequest) -> str:
    """The page's line about the loaded weights: what they are, their kind, the settings they run at by default."""
    kind = pipe.weights_kind
    what = f"{kind}: {KINDS[kind]}" if kind in KINDS else "a model built in memory"
    line = (
        f"**Model:** `{pipe.weights_id}` ({what}). Default settings: {defaults.height}x{defaults.width}, "
        f"window {defaults.window}, overlap {defaults.overlap}"
    )
    line += " (the model's own)." if pipe.model_defaults.as_config() else "."
    if kind == "proof":
        line += f"\n\n**Note:** {PROOF_NOTICE}."
    return line


def build_page(runner: JobRunner, examples: list[Path], title: str = "dvd app") -> gr.Blocks:
    """The page, wired to `runner`; launch it with `launch_page`."""
    age = int(runner.workspace.keep_seconds)
    # The settings a job gets unless the page or the API call says otherwise: `dvd predict`'s with this model.
    defaults = JobRequest(**runner.pipe.model_defaults.resolve({}))
    # Gradio's own copies of uploads and results are deleted after the same time as the app's job folders.
    with gr.Blocks(title=title, delete_cache=(max(60, age // 4), age), analytics_enabled=False) as page:
        gr.Markdown(INTRO)
        gr.Markdown(model_markdown(runner.pipe, defaults), elem_id="dvd-model")
        job_id = gr.State(None)
        npy_path = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                # No `file_types`: Gradio would refuse other files with a message of its own; the job names the
                # problem in the status line, for the page and for gradio_client alike.
                upload = gr.File(label="Video, image or zip of frames", elem_id="dvd-upload")
                if examples:
                    gr.Examples([[str(path)] for path in examples], inputs=[upload], label="Examples")
                with gr.Accordion("Settings", open=True):
                    with gr.Row():
                        height = _whole_number("Min. height (--height)", defaults.height, "dvd-height")
                        width = _whole_number("Min. width (--width)", defaults.width, "dvd-width")
                    with gr.Row():
                        window = _whole_number("Window, frames (--window)", defaults.window, "dvd-window")
                        overlap = _whole_number("Overlap, frames (--overlap)", defaults.overlap, "dvd-overlap")
                    with gr.Row():
                        stitch = gr.Dropdown(list(STITCH_PRESETS), value=defaults.stitch, label="Stitch (--stitch)")
                    save = gr.CheckboxGroup(
                        list(WRITER_FORMATS),
                        value=list(defaults.save),
                        label="Outputs (--save; npy is always written, png16/exr as zips)",
                        elem_id="dvd-save",
                    )
                    colormap = gr.Dropdown(list(COLORMAPS), value=defaults.colormap, label="Colour map (--colormap)")
                    with gr.Row():
                        max_frames = gr.Number(None, label="Frame limit (--max-frames; empty or 0: all)", precision=0)
                        stride = _whole_number("Stride (--stride)", defaults.stride)
                    fps = gr.Textbox(
                        defaults.fps, label=f"Frame rate of images and zips (--fps; default {DEFAULT_IMAGE_FPS})"
                    )
                with gr.Row():
                    run_button = gr.Button("Run", variant="primary", elem_id="dvd-run")
                    cancel_button = gr.Button("Cancel", variant="stop", elem_id="dvd-cancel")
            with gr.Column(scale=1):
                status = gr.HTML(status_html(None), label="Status", elem_id="dvd-status")
                # What the job endpoint returns is the plain text; the page's block follows a copy of its HTML kept in
                # a State, which the API leaves out (`show_status`).
                status_line = gr.Textbox(status_text(None), label="Status", visible=False, elem_id="dvd-status-text")
                status_view = gr.State(status_html(None))
                with gr.Tabs():
                    with gr.Tab("Colour depth"):
                        depth_video = gr.Video(
                            label="Depth (colour-mapped)", interactive=False, height=320, elem_id="dvd-depth"
                        )
                    with gr.Tab("Side by side"):
                        sbs_video = gr.Video(
                            label="RGB | depth (--save sbs)", interactive=False, height=320, elem_id="dvd-sbs"
                        )
                frame = gr.Slider(1, 2, value=1, step=1, label="Frame", visible=False, elem_id="dvd-frame")
                frame_image = gr.Image(label="Depth of one frame", interactive=False, visible=False, height=240)
                frame_info = gr.Markdown(elem_id="dvd-frame-info")
                npy_file = gr.File(label="disparity.npy (raw float32 [T, H, W])", interactive=False, elem_id="dvd-npy")
                downloads = gr.File(label="All outputs", file_count="multiple", interactive=False, elem_id="dvd-files")

        settings = [height, width, window, overlap, stitch, save, colormap, max_frames, stride, fps]
        results = [npy_file, downloads, depth_video, sbs_video, status_line, npy_path, status_view]

        cleared = [npy_file, downloads, depth_video, sbs_video, npy_path, frame, frame_image, frame_info]

        def queue_job() -> tuple:
            """Register the job (so Cancel can find it while it waits) and clear the previous job's results."""
            job = runner.new_job()
            hidden = [gr.Slider(visible=False), gr.Image(None, visible=False), ""]
            return job.id, status_html(job), None, None, None, None, None, *hidden

        def predict(
            video: str | None,
            height: int = defaults.height,
            width: int = defaults.width,
            window: int = defaults.window,
            overlap: int = defaults.overlap,
            stitch: str = defaults.stitch,
            save: list[str] | None = None,
            colormap: str = defaults.colormap,
            max_frames: int | None = None,
            stride: int = defaults.stride,
            fps: str = defaults.fps,
            queued: str | None = None,
        ) -> Iterator[dict]:
            """Depth for one video, image or zip of frames, with the `dvd predict` settings of the same names.
            Returns disparity.npy, every output file, the colour depth video, the side-by-side video (or None) and
            the status as plain text."""
            job = runner.job(queued)
            if job is None or job.started:  # a gradio_client call has none queued; a second click reuses the first's
                job = runner.new_job()
            request = JobRequest(
                height=height,
                width=width,
                window=window,
                overlap=overlap,
                stitch=stitch,
                save=tuple(defaults.save if save is None else save),
                colormap=colormap,
                max_frames=max_frames or None,  # the page sends an empty field as 0
                stride=stride,
                fps=fps or defaults.fps,
            )
            runner.start(job, None if video is None else Path(video), request)
            try:
                while not job.finished.wait(POLL_SECONDS):
                    yield {status_view: status_html(job), status_line: status_text(job)}
                if job.state == "failed":
                    yield {status_view: status_html(job), status_line: status_text(job)}
                    # For gradio_client callers; in the page the status line already says it, so the toast is brief.
                    raise gr.Error(job.message, duration=5, print_exception=False)
                if job.state != "done":
                    yield {status_view: status_html(job), status_line: status_text(job)}
                    return
                result = job.result
                yield {
                    npy_file: str(result.npy),
                    downloads: [str(path) for path in result.downloads],
                    depth_video: _optional(result.video("depth_vis.mp4")),
                    sbs_video: _optional(result.video("depth_sbs.mp4")),
                    status_line: status_text(job),
                    npy_path: str(result.npy),
                    status_view: status_html(job),
                }
            finally:
                if job.active:  # the page was closed or the request dropped: stop the job rather than orphan it
                    job.cancel_requested.set()
                runner.forget(job)

        def cancel(queued: str | None) -> str:
            job = runner.cancel(queued)
            return status_html(job) if job is not None and job.active else gr.skip()

        def first_frame(npy: str | None, colormap: str) -> tuple:
            if not npy:  # cancelled
                return gr.Slider(visible=False), gr.Image(None, visible=False), ""
            view = frame_view(Path(npy), 0, colormap)
            slider = gr.Slider(1, max(view.count, 2), value=1, step=1, visible=view.count > 1)
            return slider, gr.Image(view.image, visible=True), view.describe()

        def show_frame(npy: str | None, number: int, colormap: str) -> tuple:
            if not npy or not Path(npy).is_file():  # deleted after the keep time
                return gr.Image(None, visible=False), "This job's files have been deleted: run it again."
            view = frame_view(Path(npy), int(number) - 1, colormap)
            return gr.Image(view.image, visible=True), view.describe()

        started = run_button.click(
            queue_job, None, [job_id, status, *cleared], queue=False, api_visibility="private", show_progress="hidden"
        )
        finished = started.then(
            predict,
            [upload, *settings, job_id],
            results,
            api_name="predict",
            concurrency_limit=1,
            concurrency_id="model",
            show_progress="full",
            show_progress_on=[status],
        )

        def show_status(view: str) -> str:
            return view

        status_view.change(show_status, [status_view], [status], queue=False, api_visibility="private")
        # Off the queue: Cancel and the frame slider answer at once, also while a job holds the model.
        cancel_button.click(cancel, [job_id], [status], queue=False, api_visibility="private")
        finished.success(
            first_frame, [npy_path, colormap], [frame, frame_image, frame_info], queue=False, api_visibility="private"
        )
        frame.release(
            show_frame, [npy_path, frame, colormap], [frame_image, frame_info], queue=False, api_visibility="private"
        )
    return page


def _whole_number(label: str, value: int, elem_id: str | None = None) -> gr.Number:
    return gr.Number(value, label=label, precision=0, elem_id=elem_id)


def _optional(path: Path | None) -> str | None:
    return None if path is None else str(path)


def launch_page(
    page: gr.Blocks,
    host: str,
    port: int,
    share: bool,
    max_upload_mb: float,
    allowed: list[Path],
) -> None:
    """Serve `page` (API included) until Ctrl-C or SIGTERM."""
    page.queue()
    page.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=int(max_upload_mb * 1024 * 1024),
        allowed_paths=[str(path) for path in allowed],
        footer_links=["api", "gradio"],
        ssr_mode=False,
        quiet=False,
        css=CSS,
    )
