"""Loss terms against values worked out by hand on tiny tensors."""

import math

import pytest
import torch

from dvd.training.losses import (
    LOSS_KINDS,
    dvd_loss,
    edge_aware_smoothness,
    l2_loss,
    make_loss,
    multiscale_gradient_matching,
)


def _latent(values) -> torch.Tensor:
    """[F][H][W] nested lists -> [1,1,F,H,W]."""
    return torch.tensor(values, dtype=torch.float32)[None, None]


def test_video_terms_by_hand():
    # pred[f,h,w] = 4f + 2h + w, target 0: squares of 0..7 sum to 140; Δh = 2, Δw = 1, Δt = 4 everywhere.
    pred = _latent([[[0, 1], [2, 3]], [[4, 5], [6, 7]]])
    terms = dvd_loss(pred, torch.zeros_like(pred))
    assert terms.components["mse"].item() == pytest.approx(140 / 8)
    assert terms.components["spatial"].item() == pytest.approx(2 + 1)
    assert terms.components["temporal"].item() == pytest.approx(4)
    assert terms.total.item() == pytest.approx(17.5 + 0.5 * 3 + 0.5 * 4)
    weighted = dvd_loss(pred, torch.zeros_like(pred), lambda_sp=2.0, lambda_temp=0.25)
    assert weighted.total.item() == pytest.approx(17.5 + 2.0 * 3 + 0.25 * 4)


def test_differences_compare_pred_and_target_gradients():
    # target[f,h,w] = 3w, so the residual is 4f + 2h - 2w: |Δh| = 2, |Δw| = 2, |Δt| = 4.
    pred = _latent([[[0, 1], [2, 3]], [[4, 5], [6, 7]]])
    target = _latent([[[0, 3], [0, 3]], [[0, 3], [0, 3]]])
    terms = dvd_loss(pred, target)
    residual_squares = [0, 4, 4, 0, 16, 4, 36, 16]  # (4f+2h-2w)^2 over the 8 cells
    assert terms.components["mse"].item() == pytest.approx(sum(residual_squares) / 8)
    assert terms.components["spatial"].item() == pytest.approx(4)
    assert terms.components["temporal"].item() == pytest.approx(4)


def test_each_difference_is_averaged_over_its_own_tensor():
    # 3x2 image: Δh = [[1,0],[0,3]] (4 entries, mean 1), Δw = [0,-1,2] (3 entries, mean 1).
    pred = _latent([[[0, 0], [1, 0], [1, 3]]])
    terms = dvd_loss(pred, torch.zeros_like(pred), lambda_sp=1.0, lambda_temp=0.0)
    assert terms.components["spatial"].item() == pytest.approx(1.0 + 1.0)
    assert terms.total.item() == pytest.approx(11 / 6 + 2.0)


def test_single_frame_has_no_temporal_term():
    pred = _latent([[[1, 3], [0, 2]]])
    terms = dvd_loss(pred, torch.zeros_like(pred))
    assert terms.components["temporal"].item() == 0.0
    # MSE (1+9+0+4)/4, |Δh| = 1, |Δw| = 2.
    assert terms.total.item() == pytest.approx(3.5 + 0.5 * (1 + 2))


def test_batch_and_channels_enter_every_mean():
    pred = torch.zeros(2, 3, 1, 2, 2)
    pred[1, 2] = 1.0  # one of six [H,W] maps is a constant 1: no gradients, MSE = 4/24
    terms = dvd_loss(pred, torch.zeros_like(pred))
    assert terms.total.item() == pytest.approx(4 / 24)


def test_l2_only():
    pred = _latent([[[1, 3], [0, 2]]])
    assert l2_loss(pred, torch.zeros_like(pred)).total.item() == pytest.approx(3.5)


def test_edge_aware_smoothness_by_hand():
    pred = _latent([[[0, 1, 3]]])  # Δw pred = [1, 2]
    guide = torch.tensor([[0, 0, 4], [0, 2, 2]], dtype=torch.float32)[None, :, None, None, :]
    # |Δw guide| per channel: [0,4] and [2,0] -> channel mean [1, 2] -> weights e^-1, e^-2; H = 1 adds nothing.
    expected = (1 * math.exp(-1) + 2 * math.exp(-2)) / 2
    assert edge_aware_smoothness(pred, guide).item() == pytest.approx(expected)


def test_multiscale_gradient_by_hand():
    residual = torch.tensor([0.0, 1, 4, 9])[:, None].expand(4, 4)[None, None, None]  # R[h,w] = h^2
    # scale 0: Δh = 1,3,5 -> mean 3, Δw = 0; scale 1 (rows 0,2): Δh = 4; scale 2 is 1x1 and is skipped.
    assert multiscale_gradient_matching(residual, torch.zeros_like(residual), scales=4).item() == pytest.approx(3.5)
    assert multiscale_gradient_matching(residual, torch.zeros_like(residual), scales=1).item() == pytest.approx(3.0)


def test_make_loss_kinds_combine_their_terms():
    pred = _latent([[[0, 1], [2, 3]], [[4, 5], [6, 7]]])
    target = torch.zeros_like(pred)
    rgb = torch.zeros(1, 2, 2, 2, 2)  # flat guide: every edge-aware weight is 1
    assert make_loss("lmr")(pred, target, rgb).total.item() == pytest.approx(21.0)
    assert make_loss("l2")(pred, target, rgb).total.item() == pytest.approx(17.5)
    # smoothness with unit weights: mean|Δh pred| + mean|Δw pred| = 2 + 1
    assert make_loss("edge_aware", lambda_reg=0.1)(pred, target, rgb).total.item() == pytest.approx(17.5 + 0.3)
    # 2x2 maps: only scale 0 is usable, so the gradient term is again 2 + 1
    assert make_loss("multiscale_gradient", lambda_reg=2.0)(pred, target, rgb).total.item() == pytest.approx(23.5)
    assert set(LOSS_KINDS) == {"lmr", "l2", "edge_aware", "multiscale_gradient"}
    with pytest.raises(ValueError, match="unknown loss kind"):
        make_loss("huber")


def test_gradient_flows_to_prediction():
    pred = torch.randn(1, 2, 3, 4, 4, requires_grad=True)
    dvd_loss(pred, torch.zeros_like(pred)).total.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="one shape"):
        dvd_loss(torch.zeros(1, 1, 1, 2, 2), torch.zeros(1, 1, 1, 2, 3))
