"""`dvd doctor`: what dvd runs on, and whether video goes in and comes out; its output belongs in bug reports.

It prints the versions of dvd and of the stack under it, the device `dvd predict` would choose, how the installed
versions differ from the lock of the tested set (requirements/lock-cpu-py311.txt of the checkout dvd runs from, or
--lock), then round-trips a short synthetic mp4 through the video reader and through every output writer, in a
private temporary folder removed afterwards. Exit 0 when every part works; a version that differs from the lock is
a warning only (a GPU machine may need another torch). Exit 1, with one line naming the part, when one fails.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import dvd
from dvd.errors import DVDError

if TYPE_CHECKING:  # the heavy stack is imported in `run`, so that `dvd --help` stays instant
    import numpy as np

PACKAGE_DIR = Path(dvd.__file__).resolve().parent
LOCK_FILE = Path("requirements", "lock-cpu-py311.txt")  # relative to the root of a checkout
# Distributions whose versions are printed, in this order; alternatives are other names of one package.
LIBRARIES: tuple[tuple[str, ...], ...] = (
    ("torch",),
    ("diffusers",),
    ("transformers",),
    ("peft",),
    ("accelerate",),
    ("av",),
    ("gradio",),
    ("gradio_client",),
    ("ray",),
    ("scenedetect-headless", "scenedetect"),
    ("numpy",),
)
CLIP_FRAMES = 5
CLIP_SIZE = (48, 64)  # (H, W): small, with even sides as yuv420p needs
CLIP_FPS = 24
MISSING_SHOWN = 10  # locked packages that are not installed, named before "... and N more"
COLUMN = 14


class Mismatch(Exception):
    """What a part gave back differs from what went in."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check the installation: versions, device, lock, and video in and out; attach its output to bug reports",
        description="Print the versions of dvd, Python, torch (CUDA, MPS), diffusers, transformers, peft, "
        "accelerate, av (and its FFmpeg libraries), gradio, gradio_client, ray, scenedetect and numpy, the device dvd "
        "would use, and the installed versions that differ from the lock of the tested set; then write a "
        f"{CLIP_FRAMES}-frame synthetic mp4, read it back, and write and read back every output format, in a "
        "temporary folder removed afterwards. Exit 0 when all of it works (versions that differ from the lock are "
        "a warning), 1 with one line naming the failing part otherwise.",
    )
    parser.add_argument(
        "--lock",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"lock file to compare the installed versions with (default: {LOCK_FILE.as_posix()} of the checkout "
        "dvd runs from; none when dvd is installed from a wheel)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from dvd.cli import fail

    if args.lock is not None and not args.lock.is_file():
        raise DVDError(f"--lock {args.lock} not found: give the path of a lock file such as {LOCK_FILE.as_posix()}")
    failures: list[tuple[str, str]] = []
    print_versions(failures)
    run_part("the device check", print_device, failures)
    print_lock(args.lock or checkout_lock_file())
    round_trip(failures)
    if not failures:
        print("dvd doctor: all parts work")
        return 0
    (part, reason), *others = failures
    also = f"; also failed: {', '.join(name for name, _ in others)}" if others else ""
    return fail("dvd doctor", f"{part} failed ({reason}){also}; attach the output above to a bug report", 1)


def show(name: str, text: str) -> None:
    print(f"{name:<{COLUMN}}{text}")


def run_part(part: str, check: Callable[[], object], failures: list[tuple[str, str]]) -> bool:
    """Run one part; a failure is shown and added to `failures` as (part, why in a few words). True if it worked."""
    try:
        check()
    except Mismatch as error:
        reason = str(error)
    except Exception as error:  # noqa: BLE001 - any failure of a part is what doctor reports
        reason = f"{type(error).__name__}: {' '.join(str(error).split())}"
    else:
        return True
    show("", f"{part}: FAILED ({reason})")
    failures.append((part, reason))
    return False


def installed_version(*names: str) -> str | None:
    """The installed version of the first of `names` (other distribution names of one package) that is installed."""
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def print_versions(failures: list[tuple[str, str]]) -> None:
    """dvd, Python, then LIBRARIES; torch with its CUDA and MPS support, av with its FFmpeg libraries."""
    show("dvd", f"{dvd.__version__} ({PACKAGE_DIR})")
    show("Python", f"{platform.python_version()} ({platform.python_implementation()}, {platform.platform()})")
    details = {"torch": torch_support, "av": ffmpeg_libraries}
    for names in LIBRARIES:
        version = installed_version(*names)
        show(names[-1], version or "not installed")
        if version is not None and names[0] in details:
            run_part(f"importing {names[0]}", lambda name=names[0]: show("", details[name]()), failures)


def torch_support() -> str:
    import torch

    cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mps = "yes" if torch.backends.mps.is_available() else "no"
    return f"{cuda}, CUDA GPUs available: {gpus}; MPS available: {mps}"


def ffmpeg_libraries() -> str:
    import av

    return "FFmpeg " + ", ".join(f"{name} {'.'.join(map(str, v))}" for name, v in av.library_versions.items())


def print_device() -> None:
    import torch

    from dvd.pipeline.dvd_pipeline import resolve_device, resolve_dtype

    device = resolve_device(None)
    name = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    show("device", f"{device}{name} ({str(resolve_dtype(None, device)).removeprefix('torch.')})")


def checkout_lock_file(package_dir: Path | None = None) -> Path | None:
    """Where the lock of the checkout dvd runs from lies (an editable install: <root>/src/dvd); None when dvd is not
    run from a checkout (installed from a wheel)."""
    package_dir = package_dir or PACKAGE_DIR
    root = package_dir.parent.parent
    in_checkout = package_dir.parent.name == "src" and (root / "pyproject.toml").is_file()
    return root / LOCK_FILE if in_checkout else None


def normalised_name(name: str) -> str:
    """A distribution name as PEP 503 compares them: PyYAML, pyyaml and py_yaml are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """The exact pins (`name==version`) of a lock file, by normalised name; comments and pip options (lines that
    start with `-`) are skipped, as are extras, environment markers and line continuations."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DVDError(f"cannot read the lock file {path} ({error}): give a text file of name==version lines") from None
    pins: dict[str, str] = {}
    for line in text.splitlines():
        requirement = line.split("#", 1)[0].split(";", 1)[0].rstrip(" \\").strip()
        if not requirement or requirement.startswith("-") or "==" not in requirement:
            continue
        name, version = requirement.split("==", 1)
        pins[normalised_name(name.split("[", 1)[0].strip())] = version.strip()
    return pins


def same_release(installed: str, locked: str) -> bool:
    """Versions equal but for a local label: torch 2.13.0+cpu and 2.13.0+cu128 are the locked 2.13.0."""
    return installed.split("+", 1)[0] == locked.split("+", 1)[0]


def lock_differences(pins: dict[str, str]) -> tuple[list[str], list[str]]:
    """`name: installed X, lock Y` for each locked package installed at another version, and the locked packages
    that are not installed (extras the user did not ask for, usually)."""
    differing, missing = [], []
    for name, locked in sorted(pins.items()):
        installed = installed_version(name)
        if installed is None:
            missing.append(name)
        elif not same_release(installed, locked):
            differing.append(f"{name}: installed {installed}, lock {locked}")
    return differing, missing


def print_lock(lock: Path | None) -> None:
    if lock is None:
        show("lock", "none: dvd is installed, not run from a checkout; comparison skipped (--lock FILE compares)")
        return
    if not lock.is_file():
        show("lock", f"{lock} not found; comparison skipped")
        return
    pins = read_lock(lock)
    differing, missing = lock_differences(pins)
    if not differing:
        show("lock", f"{lock}: every installed package of the {len(pins)} locked has the locked version")
    else:
        show("lock", f"{lock}: {len(differing)} installed versions differ (a warning: the suite passed on the lock's)")
        for line in differing:
            show("", f"  {line}")
    if missing:
        more = f", ... and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
        show("", f"  locked but not installed: {', '.join(missing[:MISSING_SHOWN])}{more}")


def round_trip(failures: list[tuple[str, str]]) -> None:
    """Write the test clip and read it back, then write every output format and read each back, in a private folder
    removed afterwards; each part that fails is added to `failures`."""
    import shutil
    import tempfile

    import numpy as np

    from dvd.io.writers import write_rgb_video
    from dvd.options import WRITER_FORMATS

    rgb = synthetic_clip()
    disparity = np.linspace(1.0, 2.0, rgb[..., 0].size, dtype=np.float32).reshape(rgb.shape[:3])
    folder = Path(tempfile.mkdtemp(prefix="dvd-doctor-"))
    clip = folder / "clip.mp4"
    show("round trip", f"{CLIP_FRAMES} frames of {CLIP_SIZE[1]}x{CLIP_SIZE[0]} in {folder} (removed afterwards)")
    try:
        if not run_part("the test clip encoder", lambda: write_rgb_video(clip, rgb, CLIP_FPS), failures):
            show("", "the video reader: not tried (no test clip)")
        elif run_part("the video reader", lambda: check_read_back(clip, CLIP_SIZE), failures):
            show("", "the video reader: ok")
        for name in WRITER_FORMATS:
            if run_part(f"the {name} writer", writer_check(name, folder, disparity, rgb), failures):
                show("", f"the {name} writer: ok")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def synthetic_clip() -> np.ndarray:
    """uint8 [CLIP_FRAMES, H, W, 3]: smooth colour ramps that move from frame to frame."""
    import numpy as np

    height, width = CLIP_SIZE
    y, x = np.mgrid[0:height, 0:width]
    frames = [np.stack([x * 4 + 8 * t, y * 5, (x + y + 16 * t) * 2], axis=-1) for t in range(CLIP_FRAMES)]
    return (np.stack(frames) % 256).astype(np.uint8)


def writer_check(name: str, folder: Path, disparity: np.ndarray, rgb: np.ndarray) -> Callable[[], None]:
    """Write `disparity` (and `rgb`, for side by side) as format `name` in a sub-folder, then read it back."""

    def check() -> None:
        import numpy as np

        from dvd.io import writers

        target = folder / name
        target.mkdir()
        value_range = writers.DisparityRange.fit(disparity)
        with writers.open_writers(target, [name], fps=CLIP_FPS, value_range=value_range) as group:
            group.write(disparity, rgb)
        written = group.meta()[name]
        if name == "npy":
            back = np.load(target / written["file"])
            if back.shape != disparity.shape or not np.array_equal(back, disparity):
                raise Mismatch(f"read back {back.shape} float32 that differs from the {disparity.shape} written")
            return
        height, width = CLIP_SIZE
        if name == "sbs":  # RGB | colour map
            width *= 2
        check_read_back(target / (written.get("file") or written["folder"]), (height, width))

    return check


def check_read_back(path: Path, size: tuple[int, int]) -> None:
    """`path` (a video or an image folder) opens with dvd's reader and yields CLIP_FRAMES frames of `size`."""
    from dvd.io import readers

    source = readers.open_source(path, image_fps=CLIP_FPS)
    shapes = [pixels.shape for pixels in source.pixels()]
    expected = (*size, 3)
    if len(shapes) != CLIP_FRAMES or any(shape != expected for shape in shapes) or source.num_frames != CLIP_FRAMES:
        raise Mismatch(
            f"{path.name} read back as {len(shapes)} frames ({source.num_frames} announced) of "
            f"{sorted(set(shapes))}, written {CLIP_FRAMES} of {expected}"
        )
