"""Regularisation weights: the check, the default per method, the automatic choice.

:func:`~spfluo.algorithms.reconstruct.reconstruct` with ``weight="auto"`` sweeps the
weight (the sums do not depend on it): by default it takes the weight whose half maps
best predict the other half's data (held-out misfit, computed from the sums; minimum
interpolated between the weights tried), halved for the full set (twice the particles of
a half); maximising the half-map FSC resolution is available but degenerate for
regularised solvers (see :func:`~spfluo.algorithms.reconstruct.reconstruct`).
"""

from __future__ import annotations

import numpy as np

from spfluo.algorithms.backend import AXES3, resolve_backend, to_numpy
from spfluo.algorithms.fourier import _fit_to
from spfluo.algorithms.reconstruct.accumulation import rfft_weights
from spfluo.algorithms.reconstruct.sums import ReconstructionSums, nonnegative

__all__ = [
    "DEFAULT_WEIGHT",
    "AUTO_WEIGHTS",
    "CRITERIA",
    "check_weight",
    "misfit",
    "select_weight",
]


#: Default weights, per mean particle (data normalised to max(b) = 1 for TV/Hessian).
DEFAULT_WEIGHT = {"tikhonov": 3e-2, "tv": 3e-3, "hessian": 1e-3, "deconv-average": 3e-3}
#: Weights tried by weight="auto": log grids, 2 per decade, around the optima measured on
#: the Eloy et al. 2023 setting (benchmarks/reconstruct.py).
AUTO_WEIGHTS = {
    "tikhonov": np.logspace(-4, 0, 9),
    "tv": np.logspace(-4, -1, 7),
    "hessian": np.logspace(-4.5, -1.5, 7),
}
#: How weight="auto" scores a weight (:func:`select_weight`).
CRITERIA = ("cross-validation", "fsc")


def check_weight(weight, n_channels: int, name: str = "weight") -> np.ndarray:
    """A weight ``>= 0``, one for all channels or one per channel, as (C,) float64."""
    w = np.atleast_1d(np.asarray(weight, dtype=np.float64)) if not isinstance(weight, str) else None
    if w is None or w.ndim != 1 or w.size not in (1, n_channels) or not np.all(np.isfinite(w)) \
            or np.any(w < 0):
        raise ValueError(
            f"{name} must be a number >= 0 or one per channel ({n_channels}), got {weight!r}"
        )
    return np.broadcast_to(w, (n_channels,)).astype(np.float64)


def misfit(volume, sums: ReconstructionSums):
    """Data misfit ``1/2 <x, K x> - <x, b>`` of ``volume`` (C, D, D, D) on ``sums``, per
    channel: ``1/(2N) sum_i ||y_i - H_i x||^2`` up to a constant (Parseval, half grid)."""
    bk = resolve_backend(None, sums.backprojection)
    xp = bk.xp
    shape = sums.grid_shape
    x = _fit_to(xp, xp.asarray(volume, dtype=xp.float32), shape)
    xhat = bk.rfftn(x, axes=AXES3)
    bhat = bk.rfftn(sums.backprojection, axes=AXES3)
    w = rfft_weights(xp, shape)
    quad = (nonnegative(xp, sums.kernel) * (xhat.real**2 + xhat.imag**2) * w).sum(
        axis=AXES3, dtype=xp.float64)
    lin = ((xhat.real * bhat.real + xhat.imag * bhat.imag) * w).sum(axis=AXES3,
                                                                    dtype=xp.float64)
    return to_numpy(0.5 * quad - lin) / float(np.prod(shape))


#: The weight that is best for a half set, times this, for the full set: the weights are
#: per mean particle, and the best one scales as the noise variance of the mean, 1/N.
_HALF_TO_FULL = 0.5


def _misfit_minimum(weights, scores) -> float:
    """The minimum of a held-out misfit sampled at ``weights`` (sorted, > 0 around the
    minimum): the vertex of the parabola in ``log w`` through the smallest sample and its
    two neighbours (clipped to them); the smallest sample itself at an end of the grid."""
    i = int(np.argmin(scores))
    if i == 0 or i == len(weights) - 1 or np.any(weights[i - 1:i + 2] <= 0):
        return float(weights[i])
    u = np.log(weights[i - 1:i + 2])
    a, b, c = scores[i - 1:i + 2]
    num = (u[1] - u[0]) ** 2 * (b - c) - (u[1] - u[2]) ** 2 * (b - a)
    den = (u[1] - u[0]) * (b - c) - (u[1] - u[2]) * (b - a)
    if den == 0:
        return float(weights[i])
    vertex = float(np.clip(u[1] - 0.5 * num / den, min(u[0], u[2]), max(u[0], u[2])))
    return float(np.exp(vertex))


def select_weight(weights, scores, criterion: str):
    """Per channel: the weight for the full set from the held-out misfit of the halves
    (its interpolated minimum, scaled from a half set to the full set), or the weight of
    the largest half-map resolution (ties to the larger weight)."""
    if criterion == "cross-validation":
        return _HALF_TO_FULL * np.array(
            [_misfit_minimum(weights, scores[:, c]) for c in range(scores.shape[1])])
    # weights are sorted from large to small: argmax returns the first (largest) of ties
    return weights[np.argmax(np.round(scores, 6), axis=0)]
