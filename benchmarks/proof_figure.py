"""The README's picture: the proof model's real output on a held-out procedural scene, beside its exact depth.

    python benchmarks/proof_figure.py        # writes docs/images/proof-model.png and prints AbsRel / delta1

It runs what `dvd demo` runs (the tiny proof model shipped in the package, its 64x64 size, windows of 5 frames
stitched by the normal pipeline, on scene 0 of the held-out "test" split) and draws a few of its frames with
`dvd demo`'s own colouring: RGB | prediction (one least-squares scale and shift onto the truth) | exact disparity.
The proof model knows only this synthetic world; the picture shows the machinery working, not DVD's quality.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dvd.commands.demo import TRAINED_SIZE, comparison_frames
from dvd.data.procedural import render_clip, split_seed
from dvd.pipeline.dvd_pipeline import DVDPipeline
from dvd.training.validation import score_disparity

FRAMES = 48  # `dvd demo`'s default clip
SHOWN = (0, 23, 47)  # first, middle and last frame: the stitched windows keep one scale along the clip
SCALE = 3  # nearest-neighbour, so the 64x64 pixels stay visible
HEADER = 24  # pixels of the title row
TITLES = ("RGB", "proof model", "exact depth")  # both depth panels as disparity: red near, blue far


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/images/proof-model.png"))
    parser.add_argument("--scene", type=int, default=0)
    args = parser.parse_args()

    clip = render_clip(split_seed("test", args.scene), FRAMES, TRAINED_SIZE, TRAINED_SIZE)
    pipe = DVDPipeline.from_pretrained("proof", device="cpu")
    disparity = pipe(clip.rgb, height=TRAINED_SIZE, width=TRAINED_SIZE, window=5, overlap=2).prediction
    valid = np.isfinite(clip.depth) & (clip.depth > 0)
    frames = comparison_frames(clip.rgb, disparity, clip.depth, valid)[list(SHOWN)]
    rows = np.concatenate(list(frames), axis=0).repeat(SCALE, axis=0).repeat(SCALE, axis=1)

    figure = Image.new("RGB", (rows.shape[1], rows.shape[0] + HEADER), "white")
    figure.paste(Image.fromarray(rows), (0, HEADER))
    draw = ImageDraw.Draw(figure)
    font = ImageFont.load_default(size=15)
    panel = rows.shape[1] // len(TITLES)
    for index, title in enumerate(TITLES):
        draw.text((index * panel + panel // 2, HEADER // 2), title, fill="black", font=font, anchor="mm")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.output, optimize=True)

    scores = score_disparity(disparity, clip.depth, valid)
    print(
        f"wrote {args.output}: scene {args.scene}, frames {', '.join(map(str, SHOWN))} of {FRAMES}; "
        f"AbsRel {scores['abs_rel']:.3f}, delta1 {scores['delta1']:.3f} over the clip"
    )


if __name__ == "__main__":
    main()
