"""Validation during training: predict held-out samples, align to metric depth, report AbsRel and δ1.

The alignment and the metrics are the evaluation protocol's own (`dvd.evaluation`): one least-squares scale and
shift per sample in disparity space, then depth metrics averaged over frames, then over samples. Predictions are
clipped to the sample's own valid ground-truth depth range (the data sets used here have no published range).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from dvd.evaluation.alignment import align_to_depth
from dvd.evaluation.metrics import depth_metrics
from dvd.model.dvd_model import DVDModel

VALIDATION_METRICS = ("abs_rel", "delta1")
Regress = Callable[[torch.Tensor], torch.Tensor]


def score_disparity(disparity: np.ndarray, depth: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """AbsRel and δ1 of affine-invariant disparity [F,H,W] against metric depth [F,H,W] over `valid`."""
    gt = depth[valid]
    aligned, _, _ = align_to_depth(disparity, depth, valid, float(gt.min()), float(gt.max()))
    metrics = depth_metrics(aligned, depth, valid)
    return {name: metrics[name] for name in VALIDATION_METRICS}


@torch.no_grad()
def predict_disparity(model: DVDModel, rgb: torch.Tensor, regress: Regress | None = None) -> np.ndarray:
    """[B,3,F,H,W] pixels in [0,1] -> disparity [B,F,H,W] float32 numpy: encode, DiT pass, decode, channel mean.

    `regress` is RGB latent -> depth latent (default: the model's own DiT pass). The trainer passes its call of the
    DDP/FSDP/DeepSpeed-wrapped DiT, whose forward gathers sharded weights (FSDP2, ZeRO-3) the way training does
    (for a generative model: Euler sampling with it)."""
    latents = model.encode(rgb.to(model.device))
    return model.decode((regress or model.regress)(latents)).mean(dim=1).float().cpu().numpy()


def evaluate(
    model: DVDModel, samples: list[dict[str, torch.Tensor]], regress: Regress | None = None
) -> dict[str, float]:
    """Mean AbsRel and δ1 over `samples` (reader sample dicts: rgb [F,3,H,W], depth [F,H,W], valid [F,H,W]).

    With a wrapped DiT as `regress` (see `predict_disparity`), every process must evaluate the same samples."""
    was_training = model.training
    model.eval()
    scores = []
    for sample in samples:
        disparity = predict_disparity(model, sample["rgb"].permute(1, 0, 2, 3)[None], regress)[0]
        scores.append(score_disparity(disparity, sample["depth"].numpy(), sample["valid"].numpy()))
    model.train(was_training)
    return {name: float(np.mean([s[name] for s in scores])) for name in VALIDATION_METRICS}
