"""`dvd demo`: the whole pipeline end to end, offline, on the tiny proof model shipped inside the package."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from dvd.errors import DVDError

if TYPE_CHECKING:  # the heavy stack is imported where it is used, so that `dvd --help` is instant
    import numpy as np

# The proof model was trained at this size on 5-frame clips (benchmarks/train_proof.py).
TRAINED_SIZE = 64
DEMO_FPS = 12  # frame rate of the comparison video
SCALE_UP = 4  # the panels are 64x64; nearest-neighbour x4 keeps pixels visible in a player
LIMITS = (
    "The demo model is a 2-layer DiT trained for minutes on the procedural synthetic world only: it knows nothing "
    "else. For real footage use the official DVD weights (`dvd predict --weights ...`)."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="offline end-to-end demo on the built-in tiny proof model (synthetic scenes only)",
        description="Render a held-out scene of dvd's procedural synthetic world (exact depth known), predict its "
        "disparity with the tiny proof model shipped in the package through the normal streaming pipeline "
        "(windows + stitching), print AbsRel and delta1 against the exact ground truth, and write an "
        "RGB | prediction | truth mp4. Nothing is downloaded. " + LIMITS,
    )
    parser.add_argument("-o", "--output", type=Path, default=Path("dvd-demo.mp4"), help="video to write (.mp4)")
    parser.add_argument(
        "--scene", type=int, default=0, help="index of the held-out scene (split 'test'; default %(default)s)"
    )
    parser.add_argument("--frames", type=int, default=48, help="number of frames to render (default %(default)s)")
    parser.add_argument(
        "--window", type=int, default=5, help="window length in frames (default %(default)s: the model saw 5)"
    )
    parser.add_argument(
        "--overlap", type=int, default=2, help="frames shared by consecutive windows (default %(default)s)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.output.suffix.lower() != ".mp4":
        raise DVDError(f"--output must end in .mp4, got {args.output}")
    if args.frames < 1 or args.scene < 0:
        raise DVDError("--frames must be >= 1 and --scene >= 0")
    import numpy as np

    from dvd.data.procedural import render_clip, split_seed
    from dvd.engine.video import VideoSettings
    from dvd.pipeline.dvd_pipeline import DVDPipeline
    from dvd.training.validation import score_disparity

    video = VideoSettings(TRAINED_SIZE, TRAINED_SIZE, args.window, args.overlap)
    video.validate()  # before any model work
    pipe = DVDPipeline.from_pretrained("proof", device="cpu")
    pipe.fit_settings(video)  # a window outside the backbone's frame rule: the one-line error of `dvd predict`
    clip = render_clip(split_seed("test", args.scene), args.frames, TRAINED_SIZE, TRAINED_SIZE)
    disparity = pipe(
        clip.rgb, height=TRAINED_SIZE, width=TRAINED_SIZE, window=args.window, overlap=args.overlap
    ).prediction
    valid = np.isfinite(clip.depth) & (clip.depth > 0)
    model = score_disparity(disparity, clip.depth, valid)
    constant = score_disparity(np.zeros_like(disparity), clip.depth, valid)
    print(
        f"held-out synthetic scene {args.scene} ({args.frames} frames, {TRAINED_SIZE}x{TRAINED_SIZE}), "
        f"window {args.window}, overlap {args.overlap}"
    )
    print(f"  proof model:        AbsRel {model['abs_rel']:.4f}  delta1 {model['delta1']:.4f}")
    print(f"  constant disparity: AbsRel {constant['abs_rel']:.4f}  delta1 {constant['delta1']:.4f}")
    write_comparison(args.output, clip.rgb, disparity, clip.depth, valid)
    print(f"wrote {args.output} (RGB | prediction | truth)")
    print(LIMITS)
    return 0


def comparison_frames(rgb: np.ndarray, disparity: np.ndarray, depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """uint8 [T, H, 3W, 3]: RGB | prediction | truth, both depth panels on the truth's disparity colour scale."""
    import numpy as np

    from dvd.evaluation.alignment import fit_disparity
    from dvd.io.colormaps import colorize

    truth = np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0)
    scale, shift = fit_disparity(disparity, depth, valid)  # the prediction in the truth's units
    lo, hi = np.percentile(truth[valid], [1, 99])
    panels = [colorize((d - lo) / (hi - lo)) for d in (scale * disparity + shift, truth)]
    return np.concatenate([rgb, *panels], axis=2)


def write_comparison(path: Path, rgb: np.ndarray, disparity: np.ndarray, depth: np.ndarray, valid: np.ndarray) -> None:
    from dvd.io.atomic import atomic_file
    from dvd.io.writers import write_rgb_video

    frames = comparison_frames(rgb, disparity, depth, valid).repeat(SCALE_UP, axis=1).repeat(SCALE_UP, axis=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        write_rgb_video(tmp, frames, DEMO_FPS)
