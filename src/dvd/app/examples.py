"""The example clips offered by `dvd app`: a scene of dvd's procedural world rendered on the spot (so the page has an
example offline, with any weights), and the videos and images given with `--examples`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dvd.data.procedural import render_clip, split_seed
from dvd.errors import DVDError
from dvd.io.readers import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from dvd.io.writers import write_rgb_video

SYNTHETIC_NAME = "synthetic_scene.mp4"
SYNTHETIC_FRAMES = 48  # two seconds at 24 fps: a couple of windows at the small settings a CPU can afford
SYNTHETIC_SIZE = (144, 256)  # 16:9
SYNTHETIC_FPS = 24


def write_synthetic_example(folder: Path, scene: int = 0) -> Path:
    """Render a held-out scene of the procedural world to `folder`/synthetic_scene.mp4 (H.264); about a second."""
    clip = render_clip(split_seed("test", scene), SYNTHETIC_FRAMES, *SYNTHETIC_SIZE)
    return write_rgb_video(Path(folder) / SYNTHETIC_NAME, clip.rgb, SYNTHETIC_FPS)


def example_files(paths: Sequence[str | Path]) -> list[Path]:
    """The videos and images among `paths`; a folder gives its videos and images (sorted by name). A path that is
    missing, a file that is neither, or a folder without any is a DVDError (before any model loads)."""
    media = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS
    found: list[Path] = []
    for item in paths:
        path = Path(item).expanduser()
        if not path.exists():
            raise DVDError(f"--examples: {path} not found: check the path")
        if path.is_dir():
            files = [file for file in sorted(path.iterdir()) if file.is_file() and file.suffix.lower() in media]
            if not files:
                raise DVDError(f"--examples: {path} holds no videos or images ({'/'.join(media)}): check the folder")
            found += files
        elif path.suffix.lower() in media:
            found.append(path)
        else:
            raise DVDError(f"--examples: {path} is not a video or an image ({'/'.join(media)}): give such files")
    return found
