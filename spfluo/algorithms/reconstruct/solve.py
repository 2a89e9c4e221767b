"""The whole known-pose reconstruction (:func:`reconstruct`), with gold-standard half maps.

Gold standard: :func:`reconstruct` splits the particles into two random halves
(:func:`half_split`), computes the sums of both in the same pass (the full sums are their
weighted mean), reconstructs both halves and reports their FSC resolution at 0.143.
``weight="auto"`` chooses the weight on the two halves
(:mod:`~spfluo.algorithms.reconstruct.weight`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from spfluo.algorithms._validation import check_int
from spfluo.algorithms.geometry.poses import check_poses
from spfluo.algorithms.backend import to_numpy
from spfluo.algorithms.metrics import fsc, fsc_resolution
from spfluo.algorithms.reconstruct.accumulation import run_accumulation
from spfluo.algorithms.reconstruct.admm import reconstruct_admm, reconstruct_tikhonov
from spfluo.algorithms.reconstruct.baselines import deconvolve_transform
from spfluo.algorithms.reconstruct.regularizers import REGULARIZERS
from spfluo.algorithms.reconstruct.sums import (
    ReconstructionSums,
    combine_sums,
    half_split,
)
from spfluo.algorithms.reconstruct.weight import (
    AUTO_WEIGHTS,
    CRITERIA,
    DEFAULT_WEIGHT,
    check_weight,
    misfit,
    select_weight,
)

__all__ = ["Reconstruction", "METHODS", "JOINT_METHODS", "BASELINES", "reconstruct", "half_fsc"]

#: Methods that solve the joint problem on the sums (every method but the baselines).
JOINT_METHODS = ("tikhonov",) + REGULARIZERS
#: Baselines of Fortun et al. 2017 (:mod:`spfluo.algorithms.reconstruct.baselines`).
BASELINES = ("average", "deconv-average")
#: Methods accepted by :func:`reconstruct`.
METHODS = JOINT_METHODS + BASELINES


@dataclass(frozen=True, eq=False)
class Reconstruction:
    """Output of :func:`reconstruct`.

    Attributes
    ----------
    volume : ndarray, float32, shape (C, D, D, D)
        Reconstruction from all the particles (NumPy).
    half_maps : ndarray, float32, shape (2, C, D, D, D), or None
        Reconstructions of the two random halves (None without half maps).
    fsc : tuple of FSCCurve, one per channel, or None
        Half-map FSC curves.
    resolution_per_voxel : ndarray, float64, shape (C,)
        Half-map FSC resolution at 0.143 in cycles per voxel (NaN without half maps).
    weight : ndarray, float64, shape (C,)
        Regularisation weight used per channel (NaN for ``"average"``).
    method : str
    symmetry : int
    n_particles : int
    halves : ndarray, int8, shape (N,), or None
        Half (0 or 1) of each particle.
    sweep_weights : ndarray, float64, shape (W,)
        Weights tried by ``weight="auto"`` (empty otherwise).
    sweep_resolution : ndarray, float64, shape (W, C)
        Half-map resolution (cycles per voxel) for each weight tried.
    sweep_misfit : ndarray, float64, shape (W, C)
        Held-out misfit of the half maps for each weight tried (squared particle units,
        up to a constant; lower is better).
    coverage : ndarray, float32, shape (C, P, P, P), or None
        Centred Fourier coverage ``K`` (:meth:`ReconstructionSums.coverage`); None for the
        baselines.
    """

    volume: np.ndarray
    half_maps: np.ndarray | None
    fsc: tuple | None
    resolution_per_voxel: np.ndarray
    weight: np.ndarray
    method: str
    symmetry: int
    n_particles: int
    halves: np.ndarray | None
    sweep_weights: np.ndarray
    sweep_resolution: np.ndarray
    sweep_misfit: np.ndarray
    coverage: np.ndarray | None


def _solve(method, sums, weight, iterations, init=None):
    """One solve on sums; returns (volume on device, ADMM state or None)."""
    if method == "tikhonov":
        return reconstruct_tikhonov(sums, weight=weight), None
    res = reconstruct_admm(sums, regularizer=method, weight=weight, iterations=iterations,
                           init=init)
    return res.volume, res.state


def half_fsc(v1, v2):
    """Per channel: FSC curve (None for an empty map) and resolution at 0.143."""
    curves, res = [], []
    for c in range(v1.shape[0]):
        if not (np.any(v1[c]) and np.any(v2[c])):
            curves.append(None)
            res.append(0.0)
            continue
        curve = fsc(v1[c], v2[c])
        curves.append(curve)
        res.append(fsc_resolution(curve, threshold=0.143))
    return curves, np.array(res)


def reconstruct(particles, poses, psf, *, method: str = "hessian", weight="auto",
                iterations: int = 100, symmetry: int = 1, half_maps: bool = True, seed=0,
                criterion: str = "cross-validation", weights: Sequence[float] | None = None,
                batch_size: int = 16, order: int = 1, pad: float = 1.125, backend=None,
                progress: Callable[[str], None] | None = None) -> Reconstruction:
    """Reconstruct a volume from particles with known poses, with gold-standard half maps.

    Parameters
    ----------
    particles : ndarray (N, C, D, D, D) or (N, D, D, D), or iterable of (slice, batch)
        As in :func:`precompute_sums`; an iterable is read once.
    poses : Poses
        One per particle (zyx frame, translations in voxels).
    psf : ndarray, shape (d, d, d) or (C, d, d, d)
        Ignored by ``"average"``.
    method : {"hessian", "tv", "tikhonov", "average", "deconv-average"}
    weight : float, sequence of float (one per channel), None or "auto"
        Regularisation weight (see the solvers; None: the method's default).  ``"auto"``
        (needs ``half_maps``; not for the baselines) tries ``weights`` on both halves and
        derives, per channel, the weight from their scores (``criterion``); the sums do
        not depend on the weight, so the sweep costs only solver iterations.  Ignored by
        ``"average"``; ``"deconv-average"`` needs a number or None.
    iterations : int, default 100
        ADMM iterations (TV, Hessian; ``"deconv-average"`` runs ``iterations // 2`` per
        particle).  During the ``"auto"`` sweep each weight runs ``iterations // 2``,
        warm-started from the previous, larger weight.
    symmetry : int, default 1
        Cn symmetry order (1: none).
    half_maps : bool, default True
        Split the particles into two random halves (:func:`half_split` with ``seed``),
        reconstruct both and compute their FSC.  Needs ``N >= 2``.
    seed : int or numpy.random.Generator
        Seed of the half split.
    criterion : {"cross-validation", "fsc"}
        How ``"auto"`` scores a weight.  ``"cross-validation"`` (default): the misfit of
        each half map on the data of the other half, ``1/2 <x_A, K_B x_A> - <x_A, b_B>``
        (a held-out prediction error, free from the sums; with symmetry the copies of a
        particle stay in its half), minimised: the minimum is interpolated (parabola in
        ``log w`` through the best weight tried and its neighbours), then halved, since
        it is the best weight for a half set and weights per mean particle scale as
        ``1/N`` (so the chosen weight is in general not one of ``weights``).  Measured
        against the ground truth (asymmetric phantom, 20 particles of 32^3; C9 barrel, 6
        and 20 particles of 32^3 and 20 of 40^3, with and without C9 folding; 18 cases):
        SSIM within 0.005 of the best weight of a grid 4 per decade (Hessian and TV; 0.016
        in one case), PSNR within 0.01 dB (Tikhonov; 0.32 dB in one case); the grid point
        of least misfit, used as such, was 1.5 to 6 times too large: up to 0.061 SSIM
        (Hessian), 0.043 (TV) and 0.23 dB (Tikhonov) lost.  ``"fsc"``: the half-map FSC
        resolution at 0.143, maximised (ties to the larger weight); it grows with the
        weight for Tikhonov and saturates at Nyquist for TV and the Hessian (the
        regulariser makes both halves agree), so it picks the largest weight tried.
    weights : sequence of float, optional
        The grid tried by ``"auto"`` (default: 2 per decade; Tikhonov 1e-4 to 1, TV 1e-4 to 0.1,
        Hessian 3e-5 to 3e-2).
    batch_size, order, pad, backend
        As in :func:`precompute_sums`.
    progress : callable, optional
        ``progress(message)`` receives one line per stage (for logs).

    Returns
    -------
    Reconstruction

    Notes
    -----
    The half-map FSC of a regularised reconstruction (TV, Hessian, and to a lesser
    degree Tikhonov) is optimistic: the prior shapes both halves alike beyond the
    frequencies the data measure.  It is the gold-standard figure the brief asks for,
    comparable between runs of one method, not an unbiased resolution.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    poses = check_poses(poses, None)
    n = len(poses)
    iterations = check_int(iterations, "iterations", minimum=1)
    symmetry = check_int(symmetry, "symmetry", minimum=1)
    if criterion not in CRITERIA:
        raise ValueError(
            f"criterion must be 'cross-validation' or 'fsc', got {criterion!r}"
        )
    auto = isinstance(weight, str)
    if auto and weight != "auto":
        raise ValueError(f"weight must be a number, one per channel, None or 'auto', got "
                         f"{weight!r}")
    if method == "average":
        weight, auto = None, False  # nothing to weigh
    if auto and method == "deconv-average":
        raise ValueError(
            "weight='auto' is for the tikhonov, tv and hessian methods, not 'deconv-average': "
            "give a number (or None for the default)"
        )
    if auto and not half_maps:
        raise ValueError("weight='auto' chooses the weight on half maps: set half_maps=True")
    if half_maps and n < 2:
        raise ValueError(f"half maps need at least 2 particles, got {n}: set half_maps=False")
    if weight is None and method != "average":
        weight = DEFAULT_WEIGHT[method]
    grid = None
    if auto:
        grid = np.asarray(AUTO_WEIGHTS[method] if weights is None else weights, dtype=float)
        if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(
                grid < 0):
            raise ValueError(f"weights must be a non-empty list of numbers >= 0, got {weights!r}")
        grid = np.sort(grid)[::-1]  # strong to weak: each warm start is close to the next
    log = progress or (lambda message: None)
    labels = half_split(n, seed=seed) if half_maps else np.zeros(n, dtype=np.int8)
    common = dict(groups=labels.astype(np.int64), n_groups=2 if half_maps else 1,
                  symmetry=symmetry, batch_size=batch_size, order=order, backend=backend)
    sweep_w, sweep_res, sweep_mis = np.zeros(0), np.zeros((0, 0)), np.zeros((0, 0))
    coverage = None

    if method in BASELINES:
        if method == "average":
            groups, _, _ = run_accumulation(
                particles, poses, np.ones((1, 1, 1), np.float32), with_kernel=False,
                filtered=False, pad=1.0, **common)
            w_used = np.full(groups[0][0].shape[0], np.nan)
        else:
            groups, _, _ = run_accumulation(
                particles, poses, psf, with_kernel=False, filtered=False, pad=1.0,
                transform=deconvolve_transform(weight, max(1, iterations // 2)), **common)
            w_used = check_weight(weight, groups[0][0].shape[0])
        log(f"{method}: {n} particles aligned and averaged")
        maps = [to_numpy(g[0]).astype(np.float32) for g in groups]
        counts = [g[2] for g in groups]
        volume = sum(m * (c / n) for m, c in zip(maps, counts)).astype(np.float32)
    else:
        groups, shape, _ = run_accumulation(particles, poses, psf, with_kernel=True,
                                            filtered=True, pad=pad, **common)
        sums = [ReconstructionSums(b, k, c, shape, symmetry) for b, k, c in groups]
        full = combine_sums(*sums) if half_maps else sums[0]
        coverage = full.coverage()
        c = full.n_channels
        log(f"sums of {n} particles computed (grid {full.grid_shape[0]}^3, {c} channel(s), "
            f"C{symmetry})")
        if auto:
            sweep_res = np.zeros((grid.size, c))
            sweep_mis = np.zeros((grid.size, c))
            states = [None, None]
            for k, wk in enumerate(grid):
                vols = []
                for h in range(2):
                    vol, states[h] = _solve(method, sums[h], wk, max(1, iterations // 2),
                                            init=states[h])
                    vols.append(vol)
                sweep_mis[k] = misfit(vols[0], sums[1]) + misfit(vols[1], sums[0])
                _, sweep_res[k] = half_fsc(to_numpy(vols[0]), to_numpy(vols[1]))
                log(f"weight {wk:.3g}: held-out misfit "
                    + ", ".join(f"{m:.6g}" for m in sweep_mis[k]) + "; half-map resolution "
                    + ", ".join(f"{r:.3f}" for r in sweep_res[k]) + " cycles/voxel")
            sweep_w = grid
            w_used = select_weight(grid,
                                   sweep_mis if criterion == "cross-validation" else sweep_res,
                                   criterion)
            log(f"chosen weight ({criterion}): " + ", ".join(f"{x:.3g}" for x in w_used))
        else:
            w_used = check_weight(weight, c)
        maps = None
        if half_maps:
            maps = [to_numpy(_solve(method, s, w_used, iterations)[0]) for s in sums]
        volume = to_numpy(_solve(method, full, w_used, iterations)[0]).astype(np.float32)
        log(f"{method} reconstruction done (weight "
            + ", ".join(f"{x:.3g}" for x in w_used) + ")")

    half, curves = None, None
    res = np.full(volume.shape[0], np.nan)
    if half_maps:
        half = np.stack([m.astype(np.float32) for m in maps])
        curves, res = half_fsc(half[0], half[1])
        curves = tuple(curves)
        log("half-map FSC resolution " + ", ".join(f"{r:.3f}" for r in res) + " cycles/voxel")
    return Reconstruction(
        volume=volume,
        half_maps=half,
        fsc=curves,
        resolution_per_voxel=res,
        weight=np.asarray(w_used, dtype=np.float64),
        method=method,
        symmetry=symmetry,
        n_particles=n,
        halves=labels if half_maps else None,
        sweep_weights=sweep_w,
        sweep_resolution=sweep_res,
        sweep_misfit=sweep_mis,
        coverage=coverage,
    )
