"""The whole known-pose reconstruction (:func:`reconstruct`), with gold-standard half maps.

Gold standard: :func:`reconstruct` splits the particles into two random halves
(:func:`half_split`), computes the sums of both in the same pass (the full sums are their
weighted mean), reconstructs each half from its own particles only and reports their
masked, phase-randomised FSC and the resolution at 0.143 with its verdict
(:func:`spfluo.algorithms.resolution.half_map_resolution`).  ``weight="auto"`` chooses the
weight on the two halves (:func:`~spfluo.algorithms.reconstruct.autoweight.choose_weight`).
The solutions are confined to a sphere (``mask_radius``,
:mod:`~spfluo.algorithms.reconstruct.mask`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from spfluo.algorithms._validation import as_particles, check_int
from spfluo.algorithms.geometry.poses import check_poses
from spfluo.algorithms.backend import to_numpy
from spfluo.algorithms.metrics import fsc, fsc_resolution
from spfluo.algorithms.reconstruct.accumulation import particle_batches, run_accumulation
from spfluo.algorithms.reconstruct.admm import reconstruct_admm, reconstruct_tikhonov
from spfluo.algorithms.reconstruct.baselines import (
    best_particle,
    deconv_average,
    deconvolve_transform,
)
from spfluo.algorithms.reconstruct.regularizers import REGULARIZERS
from spfluo.algorithms.reconstruct.sums import (
    ReconstructionSums,
    combine_sums,
    half_split,
)
from spfluo.algorithms.reconstruct.gold import (
    GoldStandardFSC,
    noise_substitution_fsc,
    particle_source,
)
from spfluo.algorithms.reconstruct.mask import check_mask_radius
from spfluo.algorithms.reconstruct.autoweight import WeightChoice, choose_weight
from spfluo.algorithms.reconstruct.weight import DEFAULT_WEIGHT, check_weight
from spfluo.algorithms.resolution import half_map_resolution, optical_cutoff

__all__ = ["Reconstruction", "METHODS", "JOINT_METHODS", "BASELINES", "reconstruct", "half_fsc",
           "map_gold_standard"]

#: Methods that solve the joint problem on the sums (every method but the baselines).
JOINT_METHODS = ("tikhonov",) + REGULARIZERS
#: Baselines of Fortun et al. 2017 (:mod:`spfluo.algorithms.reconstruct.baselines`).
BASELINES = ("average", "deconv-average", "single-view")
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
        Reconstructions of the two random halves, each from its half only (None without
        half maps).
    fsc : tuple of FSCCurve, one per channel, or None
        Half-map FSC curves under the mask, corrected by noise substitution (None for a
        channel whose half maps are empty).
    fsc_details : tuple of GoldStandardFSC, one per channel, or None
        The unmasked, masked and substituted curves behind ``fsc``
        (:class:`~spfluo.algorithms.reconstruct.gold.GoldStandardFSC`; for the baselines
        the masked FSC is corrected by phase-randomised maps only).
    resolution : tuple of Resolution, one per channel, or None
        Half-map resolution at 0.143 with its verdict (measured, not reached below
        Nyquist, beyond the optical cutoff; :class:`spfluo.algorithms.resolution.Resolution`).
    resolution_per_voxel : ndarray, float64, shape (C,)
        The measured resolutions in cycles per voxel; NaN where none was measured or
        without half maps.
    cutoff_per_voxel : float or None
        Optical cutoff of the PSF (:func:`spfluo.algorithms.resolution.optical_cutoff`),
        cycles per voxel; None for ``"average"``.
    weight : ndarray, float64, shape (C,)
        Regularisation weight used per channel (NaN for ``"average"``).
    weight_choice : WeightChoice or None
        The automatic choice (curve, minimum, interior or not) with ``weight="auto"``.
    mask_radius : float or None
        Radius of the support (voxels), None without.
    method : str
    symmetry : int
    n_particles : int
    halves : ndarray, int8, shape (N,), or None
        Half (0 or 1) of each particle.
    sweep_weights : ndarray, float64, shape (W,)
        Weights tried by ``weight="auto"`` (empty otherwise).
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
    fsc_details: tuple | None
    resolution: tuple | None
    resolution_per_voxel: np.ndarray
    cutoff_per_voxel: float | None
    weight: np.ndarray
    weight_choice: WeightChoice | None
    mask_radius: float | None
    method: str
    symmetry: int
    n_particles: int
    halves: np.ndarray | None
    sweep_weights: np.ndarray
    sweep_misfit: np.ndarray
    coverage: np.ndarray | None


def _solve(method, sums, weight, iterations, radius, init=None):
    """One solve on sums; returns (volume on device, ADMM state or None).  ``init``: an
    ADMM state or a starting volume (C, D, D, D); ignored by Tikhonov."""
    if method == "tikhonov":
        return reconstruct_tikhonov(sums, weight=weight, mask_radius=radius), None
    res = reconstruct_admm(sums, regularizer=method, weight=weight, iterations=iterations,
                           init=init, support_radius=radius)
    return res.volume, res.state


def half_fsc(v1, v2):
    """Per channel: unmasked FSC curve (None for an empty map) and the frequency where it
    first falls below 0.143 (Nyquist when it never does; see
    :func:`spfluo.algorithms.resolution.half_map_resolution` for the reported one)."""
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


def map_gold_standard(half1, half2, *, mask_radius, voxel_size_um=None, cutoff_per_voxel=None,
                      seed=0) -> tuple:
    """Per channel of two half maps (C, D, D, D) with no particles to substitute: the
    masked FSC corrected by phase-randomised maps (the mask's share only; Chen et al.
    2013), as :class:`~spfluo.algorithms.reconstruct.gold.GoldStandardFSC` (its
    ``substituted`` curve is that of the randomised maps) or None for an empty channel."""
    out = []
    for c in range(half1.shape[0]):
        if not (np.any(half1[c]) and np.any(half2[c])):
            out.append(None)
            continue
        m, res = half_map_resolution(half1[c], half2[c], mask_radius=mask_radius,
                                     voxel_size_um=voxel_size_um,
                                     cutoff_per_voxel=cutoff_per_voxel, seed=seed)
        out.append(GoldStandardFSC(corrected=m.corrected, masked=m.masked,
                                   substituted=m.randomized, unmasked=m.unmasked,
                                   randomize_from_per_voxel=m.randomize_from_per_voxel,
                                   resolution=res))
    return tuple(out)


def _single_views(particles, poses, psf, labels, weight, iterations, symmetry, order,
                  backend):
    """The single view of each half (with half maps) and of all the particles: maps
    ``[half 0, half 1, all]`` (or ``[all]``), the index of the best particle, the weight.
    Streamed particles are gathered in memory (the choice compares all of them)."""
    if callable(particles):
        particles = particles()
    if not (hasattr(particles, "ndim") and hasattr(particles, "shape")):
        _, batches = particle_batches(particles, len(poses), 16, np)
        parts = sorted(((sl.start, to_numpy(b)) for sl, b in batches), key=lambda x: x[0])
        particles = np.concatenate([b for _, b in parts])
    arr = as_particles(particles)[0]
    groups = [np.flatnonzero(labels == g) for g in np.unique(labels)] if np.any(labels) \
        else []
    maps = []
    for idx in groups + [np.arange(len(poses))]:
        best = int(idx[best_particle(arr[idx], psf, backend=backend)])
        maps.append(np.asarray(to_numpy(deconv_average(
            arr[best:best + 1], poses[best:best + 1], psf, weight=weight,
            iterations=max(1, iterations // 2), symmetry=symmetry, batch_size=1, order=order,
            backend=backend)), dtype=np.float32))
    return maps, best, check_weight(weight, arr.shape[1])


def reconstruct(particles, poses, psf, *, method: str = "hessian", weight="auto",
                iterations: int = 100, symmetry: int = 1, half_maps: bool = True, seed=0,
                weights: Sequence[float] | None = None, mask_radius="default",
                voxel_size_um: float | None = None,
                batch_size: int = 16, order: int = 1, pad: float = 1.125, backend=None,
                progress: Callable[[str], None] | None = None) -> Reconstruction:
    """Reconstruct a volume from particles with known poses, with gold-standard half maps.

    Parameters
    ----------
    particles : ndarray (N, C, D, D, D) or (N, D, D, D), iterable, or callable
        As in :func:`precompute_sums`; the gold-standard FSC reads the particles a second
        time (noise substitution), so with ``half_maps`` give an array or a function that
        returns the ``(slice, batch)`` iterable afresh (:func:`~spfluo.algorithms.
        reconstruct.gold.particle_source`); a one-shot iterable needs ``half_maps=False``.
    poses : Poses
        One per particle (zyx frame, translations in voxels).
    psf : ndarray, shape (d, d, d) or (C, d, d, d)
        Ignored by ``"average"`` (but for the optical cutoff of the FSC).
    method : {"hessian", "tv", "tikhonov", "average", "deconv-average", "single-view"}
    weight : float, sequence of float (one per channel), None or "auto"
        Regularisation weight (see the solvers; None: the method's default).  ``"auto"``
        (needs ``half_maps``; not for the baselines):
        :func:`~spfluo.algorithms.reconstruct.autoweight.choose_weight` on the two halves
        (held-out misfit on the measured band, grid extended until its minimum is
        interior, halved for the full set); the sums do not depend on the weight, so the
        choice costs only solver iterations.  Ignored by ``"average"``;
        ``"deconv-average"`` needs a number or None.
    iterations : int, default 100
        ADMM iterations (TV, Hessian; ``"deconv-average"`` runs ``iterations // 2`` per
        particle).  During the ``"auto"`` sweep each weight runs ``iterations // 2``,
        warm-started from the previous, larger weight.
    symmetry : int, default 1
        Cn symmetry order (1: none).
    half_maps : bool, default True
        Split the particles into two random halves (:func:`half_split` with ``seed``),
        reconstruct each from its own half and compute their masked FSC corrected by
        noise substitution (:func:`~spfluo.algorithms.reconstruct.gold.noise_substitution_fsc`).
        Needs ``N >= 2``.
    seed : int or numpy.random.Generator
        Seed of the half split (and of the random phases of the FSC).
    weights : sequence of float, optional
        The first grid tried by ``"auto"`` (default
        :data:`~spfluo.algorithms.reconstruct.autoweight.AUTO_WEIGHTS`).
    mask_radius : float, "default" or None
        Radius of the spherical support, voxels from the box centre: the TV and Hessian
        solutions are constrained to it, the Tikhonov one multiplied by the soft mask,
        and the FSC is taken under the soft mask of this radius.  ``"default"``: 0.9 x
        the half box (:func:`~spfluo.algorithms.reconstruct.mask.default_mask_radius`).
        None: no support (the FSC mask is then the default one).  The baselines are not
        masked.
    voxel_size_um : float, optional
        Isotropic voxel size (µm), for the resolution lengths and their texts.
    batch_size, order, pad, backend
        As in :func:`precompute_sums`.
    progress : callable, optional
        ``progress(message)`` receives one line per stage (for logs).

    Returns
    -------
    Reconstruction

    Notes
    -----
    The half maps of a regularised reconstruction share the prior and the aliasing of the
    sums, which correlate them beyond the frequencies the data measure; noise
    substitution removes that share and the mask's, and the verdict refuses any crossing
    beyond the optical cutoff of the PSF (:func:`spfluo.algorithms.resolution.read_resolution`).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    poses = check_poses(poses, None)
    n = len(poses)
    iterations = check_int(iterations, "iterations", minimum=1)
    symmetry = check_int(symmetry, "symmetry", minimum=1)
    auto = isinstance(weight, str)
    if auto and weight != "auto":
        raise ValueError(f"weight must be a number, one per channel, None or 'auto', got "
                         f"{weight!r}")
    if method == "average":
        weight, auto = None, False  # nothing to weigh
    if auto and method in ("deconv-average", "single-view"):
        raise ValueError(
            f"weight='auto' is for the tikhonov, tv and hessian methods, not {method!r}: "
            "give a number (or None for the default)"
        )
    if auto and not half_maps:
        raise ValueError("weight='auto' chooses the weight on half maps: set half_maps=True")
    if half_maps and n < 2:
        raise ValueError(f"half maps need at least 2 particles, got {n}: set half_maps=False")
    if weight is None and method != "average":
        weight = DEFAULT_WEIGHT[method]
    if weights is not None and not auto:
        raise ValueError("weights is the grid of weight='auto': give weight='auto' with it")
    log = progress or (lambda message: None)
    source = None
    if half_maps and method not in BASELINES:
        source = particle_source(particles)
        particles = source()
    labels = half_split(n, seed=seed) if half_maps else np.zeros(n, dtype=np.int8)
    common = dict(groups=labels.astype(np.int64), n_groups=2 if half_maps else 1,
                  symmetry=symmetry, batch_size=batch_size, order=order, backend=backend)
    sweep_w, sweep_mis = np.zeros(0), np.zeros((0, 0))
    coverage, choice, radius = None, None, None

    if method in BASELINES:
        if method == "average":
            groups, _, _ = run_accumulation(
                particles, poses, np.ones((1, 1, 1), np.float32), with_kernel=False,
                filtered=False, pad=1.0, **common)
            w_used = np.full(groups[0][0].shape[0], np.nan)
        elif method == "deconv-average":
            groups, _, _ = run_accumulation(
                particles, poses, psf, with_kernel=False, filtered=False, pad=1.0,
                transform=deconvolve_transform(weight, max(1, iterations // 2)), **common)
            w_used = check_weight(weight, groups[0][0].shape[0])
        if method == "single-view":
            maps, best, w_used = _single_views(particles, poses, psf, labels, weight,
                                               iterations, symmetry, order, backend)
            log(f"single view: particle {best} (the best signal-to-noise ratio) deconvolved"
                + (" (and the best of each half)" if half_maps else ""))
            volume = maps[-1]
            maps = maps[:-1]
        else:
            log(f"{method}: {n} particles aligned and averaged")
            maps = [to_numpy(g[0]).astype(np.float32) for g in groups]
            counts = [g[2] for g in groups]
            volume = sum(m * (c / n) for m, c in zip(maps, counts)).astype(np.float32)
    else:
        groups, shape, _ = run_accumulation(particles, poses, psf, with_kernel=True,
                                            filtered=True, pad=pad, **common)
        sums = [ReconstructionSums(b, k, c, shape, symmetry) for b, k, c in groups]
        full = combine_sums(*sums) if half_maps else sums[0]
        radius = check_mask_radius(mask_radius, full.shape[0])
        coverage = full.coverage()
        c = full.n_channels
        log(f"sums of {n} particles computed (grid {full.grid_shape[0]}^3, {c} channel(s), "
            f"C{symmetry}" + (f", support radius {radius:.1f} voxels)" if radius else ")"))
        if auto:
            choice = choose_weight(sums, method, iterations=max(1, iterations // 2),
                                   weights=weights, support_radius=radius, progress=log)
            sweep_w, sweep_mis = choice.weights, choice.misfit
            w_used = choice.weight
        else:
            w_used = check_weight(weight, c)
        maps = None
        if half_maps:
            maps = [to_numpy(_solve(method, s, w_used, iterations, radius)[0]) for s in sums]
        volume = to_numpy(_solve(method, full, w_used, iterations, radius)[0]).astype(
            np.float32)
        log(f"{method} reconstruction done (weight "
            + ", ".join(f"{x:.3g}" for x in w_used) + ")")

    half, curves, details, resolutions = None, None, None, None
    freqs = np.full(volume.shape[0], np.nan)
    cutoff = None if method == "average" else optical_cutoff(psf)
    if half_maps:
        half = np.stack([m.astype(np.float32) for m in maps])
        fsc_radius = radius if radius is not None else check_mask_radius(
            "default", volume.shape[-1])
        if source is None:  # baselines: linear, the mask's share only
            details = map_gold_standard(half[0], half[1], mask_radius=fsc_radius,
                                        voxel_size_um=voxel_size_um,
                                        cutoff_per_voxel=cutoff, seed=seed)
        else:
            log("gold-standard FSC: noise substitution (the particles read again)")
            details = noise_substitution_fsc(
                source, poses, psf, half, halves=labels, symmetry=symmetry,
                solve=lambda s, h, k_r: to_numpy(_solve(method, s, w_used, iterations,
                                                        radius)[0]),
                mask_radius=fsc_radius, cutoff_per_voxel=cutoff, voxel_size_um=voxel_size_um,
                seed=seed, batch_size=batch_size, order=order, pad=pad, backend=backend,
                half_sums=sums)
        curves = tuple(None if d is None else d.corrected for d in details)
        resolutions = tuple(None if d is None else d.resolution for d in details)
        for c, r in enumerate(resolutions):
            if r is not None and r.measured:
                freqs[c] = r.frequency_per_voxel
        log("half-map FSC resolution at 0.143 (masked, corrected): "
            + "; ".join(r.text() if r is not None else "empty map" for r in resolutions))
    return Reconstruction(
        volume=volume,
        half_maps=half,
        fsc=curves,
        fsc_details=details,
        resolution=resolutions,
        resolution_per_voxel=freqs,
        cutoff_per_voxel=cutoff,
        weight=np.asarray(w_used, dtype=np.float64),
        weight_choice=choice,
        mask_radius=radius,
        method=method,
        symmetry=symmetry,
        n_particles=n,
        halves=labels if half_maps else None,
        sweep_weights=sweep_w,
        sweep_misfit=sweep_mis,
        coverage=coverage,
    )
