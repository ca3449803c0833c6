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
    """The videos and images among `paths`; a folder gives its videos and images (sorted by name)."""
    found: list[Path] = []
    for item in paths:
        path = Path(item).expanduser()
        if not path.exists():
            raise DVDError(f"--examples: {path} not found: check the path")
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        found += [
            file for file in files if file.is_file() and file.suffix.lower() in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS
        ]
    return found
