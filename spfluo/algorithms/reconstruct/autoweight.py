"""The automatic regularisation weight (:func:`choose_weight`), from two half sets.

:func:`choose_weight` is the automatic weight of every solver that offers ``"auto"``
(:func:`~spfluo.algorithms.reconstruct.reconstruct`, and the loops that hold half sums:
the final ab initio volume, the refinement).  It works on the sums of two independent
halves of the particles and costs solver iterations only:

1. each half is reconstructed for a log grid of weights (3 per decade), from strong to
   weak, each solve warm-started from the previous one;
2. each half map is scored by its misfit on the data of the other half, on the band
   where the other half's kernel is above :data:`~spfluo.algorithms.reconstruct.weight.
   KERNEL_FLOOR` of its peak (:func:`~spfluo.algorithms.reconstruct.weight.heldout_misfit`);
3. the grid is extended by a decade at the end where the minimum lies, until the minimum
   is interior, and at the strong end until the tolerance below is crossed, within
   :data:`WEIGHT_RANGE`; reaching a limit is said (``interior`` False, a warning in the
   log), not hidden.  Weak weights stop being tried once the misfit has risen twice past
   its minimum;
4. the weight for a half set is the largest whose misfit exceeds the minimum by at most
   :data:`TOLERANCE_SE` standard errors (:func:`misfit_standard_error`, interpolated
   in ``log w``), and the weight for the full set is :data:`HALF_TO_FULL` times it.

Measured against the ground truth (``benchmarks/resolution.py``, Hessian, 32^3; blobs and a
C9 rod barrel, N = 20 and 200, noise 0.05 and 0.2, Gaussian PSF sigma 1.5/5 voxels; a
widefield vectorial PSF with Poisson noise; a PSF finer than the voxels): SSIM within
0.017 of the best of 7 fixed weights in 10 of the 11 cases (0.007 but for one), 0.025
below it with the widefield PSF and C9 (where 100 ADMM iterations from a cold start do
not converge); the SSIM grows with N and with the SNR in every pair of cases.  The former
rule (the misfit minimum over the whole spectrum, halved) lost up to 0.5 with C9: the
misfit kept falling below the grid.  A Wiener reference built from the half maps' SSNR
(RELION's tau^2) as the target of the held-out error was tried too: it depended on the
band chosen and lost up to 0.1 SSIM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from spfluo.algorithms.backend import AXES3, resolve_backend, to_numpy
from spfluo.algorithms.fourier import _fit_to
from spfluo.algorithms.reconstruct.accumulation import rfft_weights
from spfluo.algorithms.reconstruct.admm import reconstruct_admm, reconstruct_tikhonov
from spfluo.algorithms.reconstruct.sums import check_sums, nonnegative
from spfluo.algorithms.reconstruct.weight import KERNEL_FLOOR, heldout_misfit

__all__ = [
    "AUTO_WEIGHTS",
    "WEIGHT_RANGE",
    "HALF_TO_FULL",
    "TOLERANCE_SE",
    "WeightChoice",
    "misfit_standard_error",
    "choose_weight",
]

#: First grid tried by :func:`choose_weight`, 3 per decade, strong to weak (extended at
#: the end where the minimum or the tolerance lies).
AUTO_WEIGHTS = {
    "tikhonov": np.logspace(0, -3, 10),
    "tv": np.logspace(-1, -4, 10),
    "hessian": np.logspace(-2, -5, 10),
}
#: Weights tried at most (the grid is never extended past them).
WEIGHT_RANGE = (1e-8, 1e2)
#: The weight chosen for a half set, times this, for the full set: the weights are per
#: mean particle and the best one scales about as the noise variance of the mean, 1/N.
#: Measured with the 3-SE rule on the 8 Gaussian cases: 0.5 lost at most 0.007 SSIM
#: (study grid), 1 up to 0.03.
HALF_TO_FULL = 0.5
#: The weight for a half set is the largest whose held-out misfit exceeds the minimum by
#: at most this many standard errors (the k-standard-error rule of cross-validation,
#: Hastie et al. 2009 sec. 7.10, with k = 3): the misfit weighs the frequencies by the
#: OTF power and barely sees the noise that a weak weight lets through at the poorly
#: transferred ones (a steep loss of SSIM), while a strong weight costs misfit where it
#: is measured.  Measured: k = 0 (the minimum itself) lost 0.08 SSIM on widefield data
#: with Poisson noise where k = 3 lost 0.004; on the Gaussian cases k = 3 lost at most
#: 0.017 (20 particles, noise 0.05, where the minimum itself was better).
TOLERANCE_SE = 3.0
#: Grid points per decade of the automatic sweep.
_PER_DECADE = 3
#: Decades added at most on each side of the first grid.
_MAX_EXTENSIONS = 4


@dataclass(frozen=True, eq=False)
class WeightChoice:
    """Output of :func:`choose_weight`.

    Attributes
    ----------
    weight : ndarray, float64, shape (C,)
        The weight for the full set (both halves), per channel.
    half_weight : ndarray, float64, shape (C,)
        The weight chosen for a half set (before :data:`HALF_TO_FULL`).
    minimum : ndarray, float64, shape (C,)
        The weight of least held-out misfit (interpolated).
    weights : ndarray, float64, shape (W,)
        Weights tried, strong to weak.
    misfit : ndarray, float64, shape (W, C)
        Held-out misfit of the half maps (sum of both directions) for each weight.
    standard_error : ndarray, float64, shape (W, C)
        Standard error of ``misfit - misfit at the minimum`` (the noise of the held-out
        data, :func:`misfit_standard_error`).
    interior : ndarray, bool, shape (C,)
        True where the minimum has a tried weight on each side with a larger misfit and
        the tolerance is crossed on the strong side; False where an end of the widest
        grid allowed was reached (the weight is then that end, not an optimum).
    half_maps : ndarray, float32, shape (2, C, D, D, D)
        The half maps of the tried weight nearest to ``weight`` (warm starts).
    method : str
    """

    weight: np.ndarray
    half_weight: np.ndarray
    minimum: np.ndarray
    weights: np.ndarray
    misfit: np.ndarray
    standard_error: np.ndarray
    interior: np.ndarray
    half_maps: np.ndarray
    method: str

    def describe(self) -> list[str]:
        """Log lines: the curve, the minimum, the weight chosen and whether the optimum is
        interior."""
        lines = [f"automatic weight ({self.method}): held-out misfit of the half maps "
                 "(difference to the minimum / its standard error)"]
        best = self.misfit.min(axis=0)
        for k, w in enumerate(self.weights):
            lines.append(f"  weight {w:.3g}: " + ", ".join(
                f"{m:.6g} ({(m - b) / se if se > 0 else 0:.1f} SE)"
                for m, b, se in zip(self.misfit[k], best, self.standard_error[k])))
        for c in range(self.weight.size):
            where = ("interior minimum" if self.interior[c] else
                     "WARNING: no interior optimum within the weights allowed "
                     f"({WEIGHT_RANGE[0]:g} to {WEIGHT_RANGE[1]:g}): the weight is an end of "
                     "the grid, not an optimum")
            lines.append(f"  channel {c}: minimum {self.minimum[c]:.3g} ({where}); largest "
                         f"weight within {TOLERANCE_SE:g} SE {self.half_weight[c]:.3g}; weight "
                         f"for the full set {self.weight[c]:.3g}")
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
    least = scores[i, np.arange(scores.shape[1])]
    return bool(np.all((i <= last - 2) & (scores[-1] > scores[-2]) & (scores[-2] > least)))


def _tolerance_crossing(weights, excess) -> tuple[float, bool]:
    """The largest weight whose ``excess`` (misfit above the minimum minus the tolerance)
    is <= 0, going up from the minimum; interpolated in ``log w`` with the next stronger
    weight.  False when the excess stays <= 0 up to the strongest weight."""
    i = int(np.argmin(excess))
    j = i
    while j > 0 and excess[j - 1] <= 0:
        j -= 1
    if j == 0:
        return float(weights[0]), False
    e0, e1 = excess[j], excess[j - 1]  # <= 0 at j, > 0 at j - 1
    t = e0 / (e0 - e1) if e1 != e0 else 0.0
    u = np.log(weights[j]) + t * (np.log(weights[j - 1]) - np.log(weights[j]))
    return float(np.exp(u)), True


def misfit_standard_error(volumes, reference, half_sums, *, floor: float = KERNEL_FLOOR):
    """Standard error of the held-out misfit difference between half maps and reference
    half maps, from the noise of the held-out back-projections.

    Parameters
    ----------
    volumes, reference : ndarray, shape (2, C, D, D, D)
        Half maps at a weight, and at the weight of least misfit.
    half_sums : tuple of 2 ReconstructionSums
    floor : float
        The band of :func:`heldout_misfit`.

    Returns
    -------
    ndarray, float64, shape (C,)
        ``sqrt(sum_folds sum_k w_k^2 |x^ - x^_ref|^2 E|n^_k|^2 / 2) / P^3`` where ``w_k``
        is the band (with the rfft multiplicity) and ``E|n^|^2`` the noise power of the
        held-out back-projection ``b^_B = K_B f^ + n^_B`` at ``k``, estimated by
        ``|b^_B - r b^_A|^2 / (1 + r N_B / N_A)`` with ``r = K_B / K_A``: the signal,
        whatever the coverage of each half, and the aliasing both halves share cancel.
    """
    bk = resolve_backend(None, half_sums[0].backprojection)
    xp = bk.xp
    shape = half_sums[0].grid_shape
    bh = [bk.rfftn(s.backprojection, axes=AXES3) for s in half_sums]
    kernels = [nonnegative(xp, s.kernel) for s in half_sums]
    counts = [float(s.n_particles) for s in half_sums]
    w = rfft_weights(xp, shape)
    var = 0
    for a, b in ((0, 1), (1, 0)):
        kernel = kernels[b]
        peak = kernel.reshape(kernel.shape[0], -1).max(axis=1)
        inside = kernel > floor * peak[:, None, None, None]
        band = w * inside
        ratio = xp.where(inside, kernel / xp.maximum(kernels[a], 1e-30), 0)
        ratio = xp.minimum(ratio, 1e3)  # where the other half saw nothing: no estimate
        resid = bh[b] - ratio * bh[a]
        noise = (resid.real ** 2 + resid.imag ** 2) / (1 + ratio * counts[b] / counts[a])
        diff = xp.asarray(volumes[a], dtype=xp.float32) - xp.asarray(reference[a],
                                                                     dtype=xp.float32)
        dhat = bk.rfftn(_fit_to(xp, diff, shape), axes=AXES3)
        var = var + (band ** 2 * (dhat.real ** 2 + dhat.imag ** 2) * noise / 2).sum(
            axis=AXES3, dtype=xp.float64)
    return np.sqrt(to_numpy(var)) / float(np.prod(shape))


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
        where the minimum or the tolerance lies, within :data:`WEIGHT_RANGE`.
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
    maps: dict[float, np.ndarray] = {}

    def table():
        tried = np.array(sorted(scores, reverse=True))
        return tried, np.array([scores[t] for t in tried])

    def run(ws, states, stop_rising=True):
        """Score the weights ``ws`` in order (warm starts chained); stop early going weak."""
        for w in ws:
            vols = []
            for h in range(2):
                vol, states[h] = solve(h, float(w), states[h])
                vols.append(vol)
            scores[float(w)] = (heldout_misfit(vols[0], sums[1], floor=floor)
                                + heldout_misfit(vols[1], sums[0], floor=floor))
            maps[float(w)] = np.stack([to_numpy(v).astype(np.float32) for v in vols])
            log(f"weight {w:.3g}: held-out misfit "
                + ", ".join(f"{m:.6g}" for m in scores[float(w)]))
            tried, values = table()
            if stop_rising and w == tried[-1] and _rising_after_minimum(values):
                break
        return states

    def standard_errors(tried, values):
        best = np.argmin(values, axis=0)
        se = np.zeros_like(values)
        for ch in range(c):
            ref = maps[float(tried[best[ch]])]
            for k, t in enumerate(tried):
                se[k, ch] = misfit_standard_error(maps[float(t)], ref, sums, floor=floor)[ch]
        return se

    weak_states = run(grid, [None, None])
    for _ in range(2 * _MAX_EXTENSIONS):
        tried, values = table()
        best = np.argmin(values, axis=0)
        if np.any(best == len(tried) - 1):  # still falling at the weak end
            more = _decade(tried[-1], -1)
            if more.size:
                weak_states = run(more, weak_states)
                continue
        se = standard_errors(tried, values)
        excess = values - values[best, np.arange(c)] - TOLERANCE_SE * se
        if np.any(excess[0] <= 0):  # minimum or tolerance at the strong end: stronger
            more = _decade(tried[0], +1)
            if more.size:
                run(more[::-1], [None, None], stop_rising=False)
                continue
        break
    tried, values = table()
    se = standard_errors(tried, values)
    best = np.argmin(values, axis=0)
    excess = values - values[best, np.arange(c)] - TOLERANCE_SE * se
    minimum, half_w = np.zeros(c), np.zeros(c)
    interior = np.zeros(c, dtype=bool)
    for ch in range(c):
        minimum[ch], inside = _parabola_minimum(tried, values[:, ch])
        half_w[ch], crossed = _tolerance_crossing(tried, excess[:, ch])
        interior[ch] = inside and crossed
    full_w = HALF_TO_FULL * half_w
    nearest = int(np.argmin(np.abs(np.log(tried)[:, None] - np.log(full_w)[None]).max(axis=1)))
    choice = WeightChoice(weight=full_w, half_weight=half_w, minimum=minimum, weights=tried,
                          misfit=values, standard_error=se, interior=interior,
                          half_maps=maps[float(tried[nearest])], method=method)
    for line in choice.describe():
        log(line)
    return choice
