"""Regularisation weights: the check, the default per method, the automatic choice.

:func:`choose_weight` is the automatic weight of every solver that offers ``"auto"``
(:func:`~spfluo.algorithms.reconstruct.reconstruct`, and the loops that hold half sums:
the final ab initio volume, the refinement).  It works on the sums of two independent
halves of the particles and costs solver iterations only:

1. each half is reconstructed for a log grid of weights, from strong to weak (each solve
   warm-starts from the previous one);
2. each half map is scored by its misfit on the data of the other half (a held-out
   prediction error computed from the sums, :func:`heldout_misfit`), restricted to the
   Fourier band where the other half's kernel ``K`` exceeds :data:`KERNEL_FLOOR` of its
   peak.  Outside that band the back-projection holds no measurement but the aliasing
   of the trilinear back-rotation and, with Cn folding, the ringing of the exact
   rotations (where ``K`` rings below 0): both are shared by the halves, so a misfit that
   counts them keeps falling as the weight goes to 0 (measured: with C9 the minimum
   was below every grid);
3. the grid is extended by a decade at the end where the minimum lies, until the minimum
   is interior (the misfit rises on both sides of it) or the limits
   :data:`WEIGHT_RANGE` are reached, which is then said (``interior`` False) rather than
   hidden; weak weights stop being tried once the misfit has risen twice in a row past
   its minimum;
4. the minimum is interpolated (parabola in ``log w`` through the best weight and its
   neighbours) and multiplied by :data:`HALF_TO_FULL` (the best weight of a half set,
   for twice the particles).

Measured against the ground truth (``benchmarks/resolution.py`` and the study in its
docstring: Hessian, blobs and a C9 rod barrel, 32^3, Gaussian PSF sigma 1.5/5 voxels,
N = 20 and 200, noise 0.05 and 0.2): SSIM within 0.005 of the best weight of a grid of
23 weights in every case, where the misfit over the whole spectrum lost up to 0.30
(C9) and a Wiener reference built from the half maps' SSNR lost up to 0.09 and was
unstable with the band chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from spfluo.algorithms.backend import AXES3, resolve_backend, to_numpy
from spfluo.algorithms.fourier import _fit_to
from spfluo.algorithms.reconstruct.accumulation import rfft_weights
from spfluo.algorithms.reconstruct.sums import ReconstructionSums, check_sums, nonnegative

__all__ = [
    "DEFAULT_WEIGHT",
    "AUTO_WEIGHTS",
    "KERNEL_FLOOR",
    "HALF_TO_FULL",
    "WEIGHT_RANGE",
    "WeightChoice",
    "check_weight",
    "heldout_misfit",
    "misfit",
    "choose_weight",
]


#: Default weights, per mean particle (data normalised to max(b) = 1 for TV/Hessian).
DEFAULT_WEIGHT = {"tikhonov": 3e-2, "tv": 3e-3, "hessian": 1e-3, "deconv-average": 3e-3}
#: First grid tried by :func:`choose_weight`, 3 per decade, strong to weak (extended at
#: the end where the minimum lies).
AUTO_WEIGHTS = {
    "tikhonov": np.logspace(0, -3, 10),
    "tv": np.logspace(-1, -4, 10),
    "hessian": np.logspace(-2, -5, 10),
}
#: Weights tried at most (the grid is never extended past them).
WEIGHT_RANGE = (1e-8, 1e2)
#: The held-out misfit counts the frequencies where the other half's kernel exceeds this
#: fraction of its peak (|OTF|^2 averaged over the poses; 1e-3 is an OTF of 3 %).
#: Measured (see the module docstring): 1e-3 is within 0.005 SSIM of the best weight in
#: the 8 cases; 0 (every frequency) lost up to 0.30 with C9, 1e-4 up to 0.16 and 1e-2
#: 0.11.
KERNEL_FLOOR = 1e-3
#: The weight that is best for a half set, times this, for the full set: the weights are
#: per mean particle and the best one scales about as the noise variance of the mean,
#: 1/N.  Measured: 0.5 within 0.005 SSIM of the best weight where 1 lost up to 0.015.
HALF_TO_FULL = 0.5
#: Grid points per decade of the automatic sweep.
_PER_DECADE = 3
#: Decades added at most on each side of the first grid.
_MAX_EXTENSIONS = 4


def check_weight(weight, n_channels: int, name: str = "weight") -> np.ndarray:
    """A weight ``>= 0``, one for all channels or one per channel, as (C,) float64."""
    w = np.atleast_1d(np.asarray(weight, dtype=np.float64)) if not isinstance(weight, str) else None
    if w is None or w.ndim != 1 or w.size not in (1, n_channels) or not np.all(np.isfinite(w)) \
            or np.any(w < 0):
        raise ValueError(
            f"{name} must be a number >= 0 or one per channel ({n_channels}), got {weight!r}"
        )
    return np.broadcast_to(w, (n_channels,)).astype(np.float64)


def _misfit_terms(volume, sums: ReconstructionSums, floor: float | None):
    bk = resolve_backend(None, sums.backprojection)
    xp = bk.xp
    shape = sums.grid_shape
    x = _fit_to(xp, xp.asarray(volume, dtype=xp.float32), shape)
    xhat = bk.rfftn(x, axes=AXES3)
    bhat = bk.rfftn(sums.backprojection, axes=AXES3)
    kernel = nonnegative(xp, sums.kernel)
    w = rfft_weights(xp, shape)
    if floor is not None:
        peak = kernel.reshape(kernel.shape[0], -1).max(axis=1)
        w = w * (kernel > floor * peak[:, None, None, None])
    quad = (kernel * (xhat.real**2 + xhat.imag**2) * w).sum(axis=AXES3, dtype=xp.float64)
    lin = ((xhat.real * bhat.real + xhat.imag * bhat.imag) * w).sum(axis=AXES3,
                                                                    dtype=xp.float64)
    return to_numpy(0.5 * quad - lin) / float(np.prod(shape))


def misfit(volume, sums: ReconstructionSums):
    """Data misfit ``1/2 <x, K x> - <x, b>`` of ``volume`` (C, D, D, D) on ``sums``, per
    channel: ``1/(2N) sum_i ||y_i - H_i x||^2`` up to a constant (Parseval, half grid)."""
    return _misfit_terms(volume, check_sums(sums), None)


def heldout_misfit(volume, sums: ReconstructionSums, *, floor: float = KERNEL_FLOOR):
    """:func:`misfit` of ``volume`` on held-out ``sums``, on the measured band only.

    Parameters
    ----------
    volume : ndarray, shape (C, D, D, D)
        A reconstruction from other particles than those of ``sums``.
    sums : ReconstructionSums
        The held-out particles.
    floor : float, default :data:`KERNEL_FLOOR`
        Frequencies where ``K`` is at most ``floor`` times its peak are left out.

    Returns
    -------
    ndarray, float64, shape (C,)
        ``sum_k [K |x^|^2 / 2 - Re(x^ conj b^)]`` over the band, divided by the number of
        voxels (squared particle units, up to a constant; lower is better).
    """
    return _misfit_terms(volume, check_sums(sums), float(floor))


@dataclass(frozen=True, eq=False)
class WeightChoice:
    """Output of :func:`choose_weight`.

    Attributes
    ----------
    weight : ndarray, float64, shape (C,)
        The weight for the full set (both halves), per channel.
    half_weight : ndarray, float64, shape (C,)
        The interpolated minimum of the held-out misfit (the best weight of a half set).
    weights : ndarray, float64, shape (W,)
        Weights tried, strong to weak.
    misfit : ndarray, float64, shape (W, C)
        Held-out misfit of the half maps (sum of both directions) for each weight.
    interior : ndarray, bool, shape (C,)
        True where the minimum has a tried weight on each side with a larger misfit;
        False where it is an end of the widest grid allowed (the weight is then that end,
        not an optimum).
    method : str
    """

    weight: np.ndarray
    half_weight: np.ndarray
    weights: np.ndarray
    misfit: np.ndarray
    interior: np.ndarray
    method: str

    def describe(self) -> list[str]:
        """Log lines: the curve, the minimum, the weight chosen and whether the optimum is
        interior."""
        lines = [f"automatic weight ({self.method}): held-out misfit of the half maps"]
        for k, w in enumerate(self.weights):
            lines.append(f"  weight {w:.3g}: " + ", ".join(f"{m:.6g}" for m in self.misfit[k]))
        for c in range(self.weight.size):
            where = ("interior minimum" if self.interior[c] else
                     "WARNING: no interior minimum within the weights allowed "
                     f"({WEIGHT_RANGE[0]:g} to {WEIGHT_RANGE[1]:g}): the weight is an end of "
                     "the grid, not an optimum")
            lines.append(f"  channel {c}: half-set minimum {self.half_weight[c]:.3g} "
                         f"({where}); weight for the full set {self.weight[c]:.3g}")
        return lines


def _parabola_minimum(weights, scores) -> tuple[float, bool]:
    """The minimum of ``scores`` sampled at ``weights`` (sorted strong to weak): the vertex
    of the parabola in ``log w`` through the least score and its two neighbours (clipped
    to them), and whether it is interior; the least sample itself at an end."""
    i = int(np.argmin(scores))
    if i == 0 or i == len(weights) - 1:
        return float(weights[i]), False
    u = np.log(weights[i - 1:i + 2])
    a, b, c = scores[i - 1:i + 2]
    num = (u[1] - u[0]) ** 2 * (b - c) - (u[1] - u[2]) ** 2 * (b - a)
    den = (u[1] - u[0]) * (b - c) - (u[1] - u[2]) * (b - a)
    if den == 0:
        return float(weights[i]), True
    vertex = float(np.clip(u[1] - 0.5 * num / den, min(u[0], u[2]), max(u[0], u[2])))
    return float(np.exp(vertex)), True


def _rising_after_minimum(scores: np.ndarray) -> bool:
    """True when, for every channel, the last two scores rose past the least one."""
    if scores.shape[0] < 3:
        return False
    i = np.argmin(scores, axis=0)
    last = scores.shape[0] - 1
    return bool(np.all((i <= last - 2) & (scores[-1] > scores[-2]) & (scores[-2] > scores[i,
                np.arange(scores.shape[1])])))


def _decade(first: float, direction: int) -> np.ndarray:
    """The next decade of grid points after ``first`` (exclusive), stronger (+1) or weaker (-1)."""
    steps = np.arange(1, _PER_DECADE + 1)
    out = first * 10.0 ** (direction * steps / _PER_DECADE)
    return out[(out >= WEIGHT_RANGE[0] * 0.999) & (out <= WEIGHT_RANGE[1] * 1.001)]


def choose_weight(half_sums, method: str = "hessian", *, iterations: int = 50,
                  weights=None, support_radius: float | None = None,
                  floor: float = KERNEL_FLOOR,
                  progress: Callable[[str], None] | None = None) -> WeightChoice:
    """The regularisation weight of a reconstruction, from the sums of two half sets.

    Parameters
    ----------
    half_sums : tuple of 2 ReconstructionSums
        Sums of two disjoint halves of the particles (:func:`precompute_half_sums`, or the
        half sums a refinement keeps), same box, channels and symmetry.
    method : {"hessian", "tv", "tikhonov"}
        The solver whose weight is chosen.
    iterations : int, default 50
        ADMM iterations per weight and half (each solve warm-starts from the previous,
        stronger weight); ignored by Tikhonov (closed form).
    weights : sequence of float, optional
        The first grid (default :data:`AUTO_WEIGHTS`); extended by decades at the end
        where the minimum lies, within :data:`WEIGHT_RANGE`.
    support_radius : float, optional
        Support constraint of the ADMM solves (voxels), or the soft mask of Tikhonov: as
        the final reconstruction will use.
    floor : float, default :data:`KERNEL_FLOOR`
        Band of the held-out misfit (:func:`heldout_misfit`).
    progress : callable, optional
        ``progress(message)``: one line per weight tried, then :meth:`WeightChoice.describe`.

    Returns
    -------
    WeightChoice
    """
    from spfluo.algorithms.reconstruct.admm import reconstruct_admm, reconstruct_tikhonov

    if not isinstance(half_sums, (tuple, list)) or len(half_sums) != 2:
        raise ValueError("half_sums must be a pair of ReconstructionSums (the two halves)")
    sums = [check_sums(s) for s in half_sums]
    if sums[0].backprojection.shape != sums[1].backprojection.shape:
        raise ValueError("the two half sums must have the same box, channels and padding")
    if method not in AUTO_WEIGHTS:
        raise ValueError(f"method must be one of {', '.join(AUTO_WEIGHTS)} for an automatic "
                         f"weight, got {method!r}")
    log = progress or (lambda message: None)
    grid = np.asarray(AUTO_WEIGHTS[method] if weights is None else weights, dtype=np.float64)
    if grid.ndim != 1 or grid.size < 3 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
        raise ValueError(f"weights must be at least 3 numbers > 0, got {weights!r}")
    grid = np.sort(grid)[::-1]
    c = sums[0].n_channels

    def solve(h, w, state):
        if method == "tikhonov":
            return reconstruct_tikhonov(sums[h], weight=w, mask_radius=support_radius), None
        res = reconstruct_admm(sums[h], regularizer=method, weight=w, iterations=iterations,
                               init=state, support_radius=support_radius)
        return res.volume, res.state

    scores: dict[float, np.ndarray] = {}

    def run(ws, states):
        """Score the weights ``ws`` in order (warm starts chained); stop early going weak."""
        for w in ws:
            vols = []
            for h in range(2):
                vol, states[h] = solve(h, float(w), states[h])
                vols.append(vol)
            scores[float(w)] = (heldout_misfit(vols[0], sums[1], floor=floor)
                                + heldout_misfit(vols[1], sums[0], floor=floor))
            log(f"weight {w:.3g}: held-out misfit "
                + ", ".join(f"{m:.6g}" for m in scores[float(w)]))
            tried = np.array(sorted(scores, reverse=True))
            if w == tried[-1] and _rising_after_minimum(
                    np.array([scores[t] for t in tried])):
                return states
        return states

    weak_states = run(grid, [None, None])
    for _ in range(_MAX_EXTENSIONS):
        tried = np.array(sorted(scores, reverse=True))
        table = np.array([scores[t] for t in tried])
        best = np.argmin(table, axis=0)
        if np.any(best == len(tried) - 1):  # still falling at the weak end
            more = _decade(tried[-1], -1)
            if more.size:
                weak_states = run(more, weak_states)
                continue
        if np.any(best == 0):  # rising from the strong end: try stronger weights
            more = _decade(tried[0], +1)
            if more.size:
                run(more[::-1], [None, None])
                continue
        break
    tried = np.array(sorted(scores, reverse=True))
    table = np.array([scores[t] for t in tried])
    half_w, interior = np.zeros(c), np.zeros(c, dtype=bool)
    for ch in range(c):
        half_w[ch], interior[ch] = _parabola_minimum(tried, table[:, ch])
    choice = WeightChoice(weight=HALF_TO_FULL * half_w, half_weight=half_w, weights=tried,
                          misfit=table, interior=interior, method=method)
    for line in choice.describe():
        log(line)
    return choice
