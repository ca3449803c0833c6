"""`dvd app`: a local web page (Gradio) in front of the `dvd predict` engine, with an API for gradio_client."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dvd.commands.flags import add_device_arguments
from dvd.errors import DVDError
from dvd.options import (
    DEFAULT_APP_HOST,
    DEFAULT_APP_KEEP_MINUTES,
    DEFAULT_APP_MAX_SECONDS,
    DEFAULT_APP_MAX_UPLOAD_MB,
    DEFAULT_APP_PORT,
)

if TYPE_CHECKING:  # Gradio, torch and the engine are imported in `serve`, so that `dvd --help` stays instant
    from dvd.app.jobs import JobRunner
    from dvd.app.workspace import AppLimits, Workspace

DESCRIPTION = """\
Serve a web page where a video, an image or a zip of frames is turned into depth by the same engine as
`dvd predict`, with the same settings and defaults: progress per window, Cancel, a preview player, a frame slider
and downloads of every output (disparity.npy, png16/exr zips, mp4, side by side). The model is loaded once; one job
runs at a time and the others wait in a queue that shows their position. Uploads and results live in a temporary
folder of the app's own, deleted after --keep-minutes and at exit.

The same job can be run from a script with gradio_client (endpoint "/predict"; see docs/app.md). Needs the
optional extra: pip install -e ".[app]".
"""

EXAMPLES = """\
examples:
  dvd app --weights weights/dvd                       # http://127.0.0.1:7860, this machine only
  dvd app --weights proof                             # the tiny model shipped for `dvd demo` (synthetic scenes)
  dvd app --weights weights/dvd --examples clips/ --max-seconds 60 --port 8080
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "app",
        help="local web page (Gradio) for depth of uploaded videos, with an API",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--weights",
        default=None,
        help="as for dvd predict: a folder, a checkpoint, a Hub id or 'proof' (default: the official release)",
    )
    add_device_arguments(model)
    server = parser.add_argument_group("server")
    server.add_argument(
        "--host",
        default=DEFAULT_APP_HOST,
        help=f"address to listen on (default {DEFAULT_APP_HOST}: this machine only; 0.0.0.0 opens it to the network)",
    )
    server.add_argument("--port", type=int, default=DEFAULT_APP_PORT, help=f"port (default {DEFAULT_APP_PORT})")
    server.add_argument(
        "--share", action="store_true", help="also publish the page through a public gradio.live link (off unless set)"
    )
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--max-upload-mb",
        type=float,
        default=DEFAULT_APP_MAX_UPLOAD_MB,
        metavar="MB",
        help=f"largest upload, also the unpacked size of a zip (default {DEFAULT_APP_MAX_UPLOAD_MB})",
    )
    limits.add_argument(
        "--max-seconds",
        type=float,
        default=DEFAULT_APP_MAX_SECONDS,
        metavar="S",
        help="longest video per job, in seconds of the frames processed (after the frame limit and stride; "
        f"default {DEFAULT_APP_MAX_SECONDS})",
    )
    limits.add_argument(
        "--keep-minutes",
        type=float,
        default=DEFAULT_APP_KEEP_MINUTES,
        metavar="MIN",
        help=f"delete uploads and results this long after they were made (default {DEFAULT_APP_KEEP_MINUTES}); "
        "everything is deleted at exit",
    )
    limits.add_argument(
        "--temp-dir",
        type=Path,
        default=None,
        help="where the app makes its temporary folder (default: the system's temporary folder)",
    )
    parser.add_argument(
        "--examples",
        nargs="+",
        default=[],
        metavar="PATH",
        help="videos or images (or folders of them) offered as examples, after a synthetic scene rendered at start",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Every flag is checked before the heavy imports (torch, Gradio: tens of seconds) and the model, not after.
    from dvd.app.examples import example_files
    from dvd.app.workspace import AppLimits, Workspace

    check_port(args.host, args.port)
    limits = AppLimits(args.max_upload_mb, args.max_seconds, args.keep_minutes)
    examples = example_files(args.examples)
    workspace = Workspace(args.temp_dir, limits.keep_minutes)
    try:
        serve(args, limits, workspace, workspace.share_examples(examples))
    finally:
        workspace.close()
    return 0


def check_port(host: str, port: int) -> None:
    """DVDError unless `port` on `host` can be listened on now."""
    if not 0 < port < 65536:
        raise DVDError(f"--port must be 1 to 65535, got {port}")
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise DVDError(
                f"cannot serve on {host}:{port} ({error.strerror or error}): choose another --port, or a --host "
                "address of this machine"
            ) from None


def serve(args: argparse.Namespace, limits: AppLimits, workspace: Workspace, examples: list[Path]) -> None:
    """Load the model and serve the page until Ctrl-C or SIGTERM; `examples` are the workspace's shared copies."""
    # Gradio reads its cache folder when it is imported: keep its copies of uploads and results in the workspace.
    os.environ["GRADIO_TEMP_DIR"] = str(workspace.root / "gradio")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401 - only to say how to install it
    except ImportError:
        raise DVDError('dvd app needs Gradio: pip install -e ".[app]" (or pip install gradio)') from None

    from dvd.app.examples import write_synthetic_example
    from dvd.app.jobs import JobRunner
    from dvd.app.page import build_page, launch_page
    from dvd.pipeline.dvd_pipeline import DVDPipeline
    from dvd.weights.about import PROOF_NOTICE

    pipe = DVDPipeline.from_pretrained(args.weights, device=args.device, dtype=args.dtype)
    if pipe.weights_kind == "proof":  # the page says it too
        print(f"dvd app: note: {PROOF_NOTICE}", file=sys.stderr)
    runner = JobRunner(pipe, workspace, limits)
    examples = [write_synthetic_example(workspace.examples), *examples]
    page = build_page(runner, examples)
    sweeper = threading.Thread(target=_sweep_every, args=(runner,), name="dvd-app-sweep", daemon=True)
    sweeper.start()
    try:  # the page serves the app's own folder only: the examples' copies and the jobs' results
        launch_page(page, args.host, args.port, args.share, limits.max_upload_mb, [workspace.root])
    except OSError as error:  # Gradio's word for a port that is taken or an address that is not this machine's
        raise DVDError(f"cannot serve on {args.host}:{args.port} ({error}): choose another --port or --host") from None


def _sweep_every(runner: JobRunner) -> None:
    """Delete job folders past their keep time, checking every quarter of it (at least once a minute)."""
    interval = min(60.0, runner.workspace.keep_seconds / 4)
    while True:
        time.sleep(interval)
        runner.sweep()
