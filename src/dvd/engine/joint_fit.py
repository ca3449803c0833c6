"""`--stitch global`: the scales and shifts of all windows from one weighted least-squares problem.

A chain of pairwise fits (the official presets) fits each window to the stitched frames before it and never looks
back, so its errors add up seam after seam; on noisy windows least squares also shrinks every scale a little
(regression dilution), and in a chain that shrinkage compounds. Here every window ``i`` gets unknowns
``(a_i, b_i)`` and the problem is

    minimise  sum over seams (i, j)  w_ij * mean over the overlap of (a_j * y + b_j - a_i * x - b_i)^2
            + sum over windows i > 0  v_i * mean over the window of (a_i * p_i + b_i - p_i)^2

with ``x``, ``y`` the two windows' raw predictions of the overlap frames and ``p_i`` window ``i``'s raw prediction;
the first window is held at ``(1, 0)``, as every preset holds it. The seam terms pull neighbours together; the prior
terms keep each window near its own prediction, which is what a window's scale is (the model normalises every clip
it sees to one disparity range), so a long video cannot drift away by compounding small seam errors.

The weights make it a maximum-likelihood estimate rather than a tuning knob per video:

- ``w_ij = 1 / sigma_ij^2``, where ``sigma_ij^2`` is the seam's own residual variance after the best pairwise fit
  (how well the two windows can agree at all). Seams where the windows agree closely dominate; seams where the
  model's two views of the same frames disagree anyway count for little.
- ``v_i = 1 / (spread^2 * var(p_i))``: a window's scale is trusted to within ``spread`` (``GLOBAL_PRIOR_SPREAD``,
  0.3 = 30 %) of its own prediction's contrast.

So windows that agree well are chained almost exactly (as the official fit would), and noisy seams do not drag the
video's scale along. Every term is a quadratic in 2 unknowns per window; its moments come from
`dvd.engine.scale_shift.ScaleShiftFit`, so the problem is held as a few numbers per window, not pixels.

Frames must leave with a bounded delay, so the problem is solved incrementally: the windows not yet written are
the unknowns, the last written window enters as a constant, and when more than ``lag`` windows are waiting the
oldest is fixed at its current solution and handed to the stitcher. With ``lag`` at least the number of windows the
result is the exact joint solution; a finite lag only ignores evidence from more than ``lag`` windows later.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dvd.engine.scale_shift import ScaleShiftFit

# A residual or contrast below this fraction of the signal's power is rounding noise, not a perfect fit: it would
# give one term a weight that swamps every other.
_RELATIVE_FLOOR = 1e-12


@dataclass(frozen=True)
class Quadratic:
    """``theta' H theta - 2 theta' g`` over the unknowns it touches (2 per window), the terms' common form."""

    hessian: np.ndarray
    gradient: np.ndarray


def seam_term(earlier: np.ndarray, later: np.ndarray) -> Quadratic:
    """The weighted seam term over ``(a_i, b_i, a_j, b_j)`` for two windows' raw predictions of their overlap."""
    mean_x, mean_y, var_x, var_y, cov = ScaleShiftFit().add_frames(earlier, later).moments()
    # z = (-x, -1, y, 1): the residual is theta . z, so the term is theta' E[z z'] theta.
    means = np.array([-mean_x, -1.0, mean_y, 1.0])
    covariance = np.zeros((4, 4))
    covariance[0, 0], covariance[2, 2] = var_x, var_y
    covariance[0, 2] = covariance[2, 0] = -cov
    residual = var_x - cov * cov / var_y if var_y > 0 else var_x  # of x after its least-squares fit on y
    power = var_x + mean_x * mean_x
    weight = 1.0 / max(residual, _RELATIVE_FLOOR * power, np.finfo(np.float64).tiny)
    return Quadratic(weight * (covariance + np.outer(means, means)), np.zeros(4))


def prior_term(pred: np.ndarray, spread: float) -> Quadratic:
    """The weighted pull of ``(a_i, b_i)`` towards ``(1, 0)``, measured on the window's own prediction."""
    mean, _, var, _, _ = ScaleShiftFit().add_frames(pred, pred).moments()
    second = var + mean * mean
    weight = 1.0 / (spread * spread * max(var, _RELATIVE_FLOOR * second, np.finfo(np.float64).tiny))
    # mean (a p + b - p)^2 = theta' G theta - 2 theta' (E[p^2], E[p]) + E[p^2]; the constant does not move theta.
    gram = np.array([[second, mean], [mean, 1.0]])
    return Quadratic(weight * gram, weight * np.array([second, mean]))


class JointFit:
    """The windows still waiting to be written, the terms that tie them, and the written window before them.

    `add` a window with its seam to the one before (None: it starts a new segment, fixed at ``(1, 0)``);
    `solve` gives every waiting window's ``(scale, shift)``; `fix_oldest` takes the oldest out of the unknowns.
    """

    def __init__(self, spread: float) -> None:
        self.spread = spread
        self.fixed: tuple[float, float] | None = None  # the last written window's (scale, shift)
        self.priors: list[Quadratic] = []  # one per waiting window
        self.seams: list[Quadratic] = []  # seams[k] ties waiting window k to the one before it (fixed or waiting)

    @property
    def waiting(self) -> int:
        return len(self.priors)

    def start(self) -> None:
        """A new segment: its first window is written as it is, and later ones are tied to it."""
        if self.waiting:
            raise ValueError("windows are still waiting: fix them before a new segment starts")
        self.fixed = (1.0, 0.0)

    def add(self, pred: np.ndarray, seam: Quadratic) -> None:
        """Window ``pred`` (all its frames), tied to the previous window by ``seam`` (`seam_term`)."""
        if self.fixed is None:
            raise ValueError("a segment must start before windows are added to it")
        self.priors.append(prior_term(pred, self.spread))
        self.seams.append(seam)

    def solve(self) -> np.ndarray:
        """[waiting, 2]: the least-squares (scale, shift) of every waiting window, the fixed one held."""
        size = 2 * self.waiting
        hessian, gradient = np.zeros((size, size)), np.zeros(size)
        for k, (prior, seam) in enumerate(zip(self.priors, self.seams)):
            here = slice(2 * k, 2 * k + 2)
            hessian[here, here] += prior.hessian + seam.hessian[2:, 2:]
            gradient[here] += prior.gradient
            if k == 0:
                # The fixed window's part of the seam is a constant: its cross terms move to the right-hand side.
                gradient[here] -= seam.hessian[2:, :2] @ np.asarray(self.fixed)
            else:
                before = slice(2 * k - 2, 2 * k)
                hessian[before, before] += seam.hessian[:2, :2]
                hessian[before, here] += seam.hessian[:2, 2:]
                hessian[here, before] += seam.hessian[2:, :2]
        # lstsq, not solve: a window whose prediction is constant leaves its scale and shift undetermined (the
        # minimum-norm answer is as good as any), and the matrix singular.
        return np.linalg.lstsq(hessian, gradient, rcond=None)[0].reshape(-1, 2)

    def discard_newest(self) -> None:
        """Take back the latest `add` (its seam failed: dvd.engine.stitch joins it as a cut instead)."""
        del self.priors[-1], self.seams[-1]

    def fix_oldest(self, solution: np.ndarray) -> tuple[float, float]:
        """Write the oldest waiting window at its entry of ``solution`` (a `solve` result); returns it."""
        scale, shift = float(solution[0, 0]), float(solution[0, 1])
        self.fixed = (scale, shift)
        del self.priors[0], self.seams[0]
        return scale, shift

    def state(self) -> dict:
        """Plain values and arrays, for a resumable run; `restore` goes on from them."""
        return {
            "fixed": None if self.fixed is None else list(self.fixed),
            "priors": [[term.hessian, term.gradient] for term in self.priors],
            "seams": [[term.hessian, term.gradient] for term in self.seams],
        }

    def restore(self, state: dict) -> None:
        self.fixed = None if state["fixed"] is None else (float(state["fixed"][0]), float(state["fixed"][1]))
        self.priors, self.seams = (
            [Quadratic(np.asarray(h, np.float64), np.asarray(g, np.float64)) for h, g in state[kind]]
            for kind in ("priors", "seams")
        )
