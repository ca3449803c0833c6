"""Training losses on latents [B, C, F, H, W]: the DVD loss (L2 + latent manifold rectification, LMR) and the
regularisers of the paper's Table 8 ablation.

All terms are plain means; the objects returned carry the total (what is back-propagated) and every component
(what is logged).

Definitions used:

- ``dvd_loss`` (the default, "lmr"): ``MSE(pred, target)`` over all elements
  ``+ λ_sp · (mean|Δh pred − Δh target| + mean|Δw pred − Δw target|) + λ_temp · mean|Δt pred − Δt target|``,
  Δ a first forward difference along one axis, each mean over its own difference tensor. The temporal term is 0
  when F = 1 (images). With λ_sp = λ_temp = 0.5 this is the official ``mse + 0.5·(Lt + Lh + Lw)``.
- ``"l2"``: the MSE alone.
- ``"edge_aware"``: MSE + λ_smooth · edge-aware smoothness in the style of Godard et al. (2017), moved to latent
  space: ``mean(|Δh pred| · exp(−mean_c|Δh guide|)) + mean(|Δw pred| · exp(−mean_c|Δw guide|))`` where the guide
  is the RGB latent the DiT was given. It regularises the prediction's own gradients (it does not look at the
  target's) and is damped where the input has edges. Spatial only, as in the original.
- ``"multiscale_gradient"``: MSE + λ_grad · the multi-scale gradient-matching term of MiDaS (Ranftl et al., 2020):
  with the residual ``R = pred − target`` and ``R_k = R[..., ::2^k, ::2^k]`` (subsampling by striding, as MiDaS
  does), ``(1/K) Σ_k (mean|Δh R_k| + mean|Δw R_k|)``, k = 0..K−1, skipping scales smaller than 2×2. Spatial only.
  At k = 0 it equals the spatial part of LMR; the extra scales match coarser gradients.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

LossKind = Literal["lmr", "l2", "edge_aware", "multiscale_gradient"]
LOSS_KINDS: tuple[str, ...] = typing.get_args(LossKind)

_FRAME_AXIS, _HEIGHT_AXIS, _WIDTH_AXIS = 2, 3, 4


@dataclass(frozen=True)
class LossTerms:
    """The scalar to back-propagate (`total`) and its named, unweighted components."""

    total: Tensor
    components: dict[str, Tensor] = field(default_factory=dict)

    def as_floats(self) -> dict[str, float]:
        """The total and every component as Python floats, for logging."""
        return {"loss": float(self.total.detach()), **{k: float(v.detach()) for k, v in self.components.items()}}


def _check_latents(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 5:
        raise ValueError(
            f"expected two latents [B,C,F,H,W] of one shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )


def _difference(x: Tensor, axis: int) -> Tensor:
    return x.narrow(axis, 1, x.shape[axis] - 1) - x.narrow(axis, 0, x.shape[axis] - 1)


def _mean_abs_difference(residual: Tensor, axis: int) -> Tensor:
    """mean|Δ residual| along `axis`; 0 when that axis has a single entry (no difference exists)."""
    if residual.shape[axis] < 2:
        return residual.new_zeros(())
    return _difference(residual, axis).abs().mean()


def dvd_loss(pred: Tensor, target: Tensor, lambda_sp: float = 0.5, lambda_temp: float = 0.5) -> LossTerms:
    """L2 + LMR on latents [B,C,F,H,W]; components `mse`, `spatial` (Lh + Lw) and `temporal` (Lt)."""
    _check_latents(pred, target)
    pred, target = pred.float(), target.float()
    # Δ(pred) − Δ(target) = Δ(pred − target): one residual serves all three axes.
    residual = pred - target
    mse = residual.pow(2).mean()
    spatial = _mean_abs_difference(residual, _HEIGHT_AXIS) + _mean_abs_difference(residual, _WIDTH_AXIS)
    temporal = _mean_abs_difference(residual, _FRAME_AXIS)
    total = mse + lambda_sp * spatial + lambda_temp * temporal
    return LossTerms(total, {"mse": mse, "spatial": spatial, "temporal": temporal})


def l2_loss(pred: Tensor, target: Tensor) -> LossTerms:
    """The plain MSE over all elements (the "w/o LMR" ablation)."""
    _check_latents(pred, target)
    mse = (pred.float() - target.float()).pow(2).mean()
    return LossTerms(mse, {"mse": mse})


def edge_aware_smoothness(pred: Tensor, guide: Tensor) -> Tensor:
    """Σ over h, w of mean(|Δ pred| · exp(−mean_c|Δ guide|)); `guide` is the RGB latent, same B, F, H, W."""
    if pred.shape[0] != guide.shape[0] or pred.shape[2:] != guide.shape[2:]:
        raise ValueError(f"guide {tuple(guide.shape)} does not match prediction {tuple(pred.shape)} in B, F, H, W")
    pred, guide = pred.float(), guide.float()
    total = pred.new_zeros(())
    for axis in (_HEIGHT_AXIS, _WIDTH_AXIS):
        if pred.shape[axis] < 2:
            continue
        weight = torch.exp(-_difference(guide, axis).abs().mean(dim=1, keepdim=True))
        total = total + (_difference(pred, axis).abs() * weight).mean()
    return total


def multiscale_gradient_matching(pred: Tensor, target: Tensor, scales: int = 4) -> Tensor:
    """(1/K) Σ_k (mean|Δh R_k| + mean|Δw R_k|), R_k = (pred − target) strided by 2^k; K = usable scales ≤ `scales`."""
    _check_latents(pred, target)
    residual = pred.float() - target.float()
    terms = []
    for k in range(scales):
        sub = residual[..., :: 2**k, :: 2**k]
        if min(sub.shape[_HEIGHT_AXIS], sub.shape[_WIDTH_AXIS]) < 2:
            break
        terms.append(_mean_abs_difference(sub, _HEIGHT_AXIS) + _mean_abs_difference(sub, _WIDTH_AXIS))
    if not terms:
        return residual.new_zeros(())
    return torch.stack(terms).mean()


LossFn = Callable[[Tensor, Tensor, Tensor], LossTerms]


def make_loss(
    kind: str,
    lambda_sp: float = 0.5,
    lambda_temp: float = 0.5,
    lambda_reg: float = 0.5,
    scales: int = 4,
) -> LossFn:
    """The training loss `fn(pred, target, rgb_latents) -> LossTerms` for one of `LOSS_KINDS`.

    `lambda_sp`/`lambda_temp` weight LMR; `lambda_reg` weights the edge-aware or multi-scale regulariser.
    """
    if kind == "lmr":
        return lambda pred, target, rgb: dvd_loss(pred, target, lambda_sp, lambda_temp)
    if kind == "l2":
        return lambda pred, target, rgb: l2_loss(pred, target)
    if kind == "edge_aware":

        def edge_aware(pred: Tensor, target: Tensor, rgb: Tensor) -> LossTerms:
            mse = l2_loss(pred, target).total
            smooth = edge_aware_smoothness(pred, rgb)
            return LossTerms(mse + lambda_reg * smooth, {"mse": mse, "smoothness": smooth})

        return edge_aware
    if kind == "multiscale_gradient":

        def multiscale(pred: Tensor, target: Tensor, rgb: Tensor) -> LossTerms:
            mse = l2_loss(pred, target).total
            gradient = multiscale_gradient_matching(pred, target, scales)
            return LossTerms(mse + lambda_reg * gradient, {"mse": mse, "gradient": gradient})

        return multiscale
    raise ValueError(f"unknown loss kind {kind!r}; expected one of {', '.join(LOSS_KINDS)}")
