"""Pose searches against a volume: exhaustive (with exact marginals), local, and the
global check of the SGD.

- :func:`pose_search`: every rotation of an SO(3) grid for every particle, translations by
  the correlation surfaces of :mod:`spfluo.algorithms.scoring`, at a reduced band, then
  local refinement at the full band (the extension step of the annealing method, Fortun
  et al. 2018 sec. III-C);
- :func:`refine_poses_local`: successive local lattices around each pose
  (:func:`~spfluo.algorithms.geometry.local_rotation_grid`);
- :func:`global_check`: the SGD's search for particles whose sampling settled in a wrong
  mode (module notes of :mod:`.sgd`).

All run the particle loops on the device of the spectra; results come back once.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from spfluo.algorithms._validation import (
    check_float,
    check_max_shift,
)
from spfluo.algorithms.abinitio.results import (
    PoseSearchResult,
)
from spfluo.algorithms.abinitio.sampling import (
    likelihoods,
)
from spfluo.algorithms.backend import resolve_backend, to_numpy
from spfluo.algorithms.geometry import (
    Poses,
    SO3Grid,
    local_rotation_grid,
    so3_grid,
)
from spfluo.algorithms.scoring.energies import Scorer
from spfluo.algorithms.scoring.model import FourierVolume, as_reference
from spfluo.algorithms.scoring.spectra import ParticleSpectra, particle_spectra

#: Local refinement stages after the SGD: (lattice step, max angle) in degrees.
LOCAL_STAGES_DEG = ((2.5, 5.0), (1.0, 2.0))


def refine_local(model, sc: Scorer, poses: Poses, *, stages_deg=LOCAL_STAGES_DEG):
    """Each pose refined by successive local rotation searches against ``model`` (on the
    device); returns (Poses, relative energies (N,))."""
    xp = sc.bk.xp
    n = sc.spectra.n_particles
    rotations = xp.asarray(poses.rotations, dtype=xp.float64).copy()
    translations = xp.asarray(poses.translations, dtype=xp.float64).copy()
    energies = xp.empty(n, dtype=xp.float64)
    locals_ = [xp.asarray(local_rotation_grid(np.deg2rad(s), np.deg2rad(m)))
               for s, m in stages_deg]
    for l in range(n):
        R = rotations[l]
        for local in locals_:
            cand = xp.matmul(R[None], local)
            ev = sc.evaluate(model, l, cand, sync=False)
            k = xp.argmin(ev.nll)
            R = cand[k]
        rotations[l] = R
        translations[l] = ev.shifts[k]
        energies[l] = ev.relative[k]
    return Poses(to_numpy(rotations), to_numpy(translations)), to_numpy(energies)


def refine_poses_local(volume, data: ParticleSpectra, poses: Poses, *,
                       stages_deg=LOCAL_STAGES_DEG,
                       max_shift: float | None = None) -> tuple[Poses, np.ndarray]:
    """Refine poses by local rotation searches against a volume, at the full band.

    Parameters
    ----------
    volume : ndarray, shape (D, D, D) or (C, D, D, D)
        Reference volume (same box and channels as the particles).
    data : ParticleSpectra
        The particles on the OTF support
        (:func:`spfluo.algorithms.scoring.spectra.particle_spectra`).
    poses : Poses
        Starting poses, one per particle.
    stages_deg : sequence of (float, float), optional
        ``(step, max_angle)`` in degrees of each successive local lattice
        (:func:`~spfluo.algorithms.geometry.local_rotation_grid`); default 2.5
        within 5, then 1 within 2.
    max_shift : float, optional
        Largest translation norm in voxels (default ``D / 4``).

    Returns
    -------
    poses : Poses
        Refined poses (translations by correlation, sub-voxel).
    energies : ndarray, float64, shape (N,)
        Relative energies at the refined poses.
    """
    bk = data.backend
    xp = bk.xp
    box = data.box
    max_shift = check_max_shift(max_shift, box)
    vol = as_reference(xp, volume, data)
    if not isinstance(poses, Poses) or len(poses) != data.n_particles:
        raise ValueError(f"poses must be a Poses with one pose per particle "
                         f"({data.n_particles}), got {poses!r}")
    fv = FourierVolume.initial(bk, vol, data.band)
    sc = Scorer.for_band(data, data.band, max_shift, surface="peak")
    return refine_local(fv, sc, poses, stages_deg=stages_deg)


def _angles_to(rotations, reference, group) -> np.ndarray:
    """Geodesic angles (radians) from each of ``rotations`` (K, 3, 3) to ``reference``,
    modulo the symmetry ``group`` (n, 3, 3): ``min_k angle(R, reference C_k)``."""
    refs = np.matmul(reference[None], group)  # (n, 3, 3)
    cos = (np.einsum("kij,gij->kg", rotations, refs).max(axis=1) - 1.0) / 2.0
    return np.arccos(np.clip(cos, -1.0, 1.0))


def global_check(fv_low: FourierVolume, sc_low: Scorer, fv_full: FourierVolume,
                 sc_full: Scorer, poses: Poses, mats, centre_of_mass, *, group,
                 n_candidates: int = 4,
                  min_angle: float = np.deg2rad(20.0), keep_polarity: bool = False):
    """Exhaustive search of every particle; adopt distant optima of lower energy.

    Every rotation ``R`` of ``mats`` is scored at a low band, at the translation
    that keeps the particle's centre of mass in place, ``t = t_l + (R_l - R) c``
    (``c`` the volume's centre of mass): one gather and one dot product per
    rotation.  The ``n_candidates`` best that lie more than ``min_angle`` from
    the current pose and from each other (modulo the symmetry ``group``) are
    refined by local searches with translation search, at the low band then at
    the full band, and the best replaces the current pose when its energy at the
    full band is lower and it still lies more than ``min_angle / 2`` from the
    current pose (a particle whose sampling settled in a wrong mode).
    With ``keep_polarity`` (Cn, once the polarity is settled) the candidates
    that turn the symmetry axis upside down (within 30 degrees) are not
    considered: the polarity is decided against a reference that keeps the
    n-fold detail (:func:`~spfluo.algorithms.abinitio.inplane.align_in_plane`)
    or collectively (:func:`~spfluo.algorithms.abinitio.polarity.polarity_consensus`);
    against an iterate, one particle's two polarities differ by a few tens of
    log-likelihood units for side views, within the noise of the comparison.
    Returns the poses and the indices of the particles moved.
    """
    xp = sc_full.bk.xp
    n = sc_full.spectra.n_particles
    max_shift = sc_low.max_shift
    rotations = np.asarray(poses.rotations, dtype=np.float64).copy()
    translations = np.asarray(poses.translations, dtype=np.float64).copy()
    stages = [(xp.asarray(local_rotation_grid(np.deg2rad(a), np.deg2rad(b))), full)
              for a, b, full in ((5.0, 10.0, False), (2.5, 5.0, False), (2.5, 5.0, True))]
    com = np.asarray(centre_of_mass, dtype=np.float64)
    mats_dev = xp.asarray(mats)
    # every rotation of every particle at the low band (device), one transfer
    scores = xp.empty((n, mats.shape[0]), dtype=xp.float64)
    for l in range(n):
        shifts = translations[l] + (rotations[l] @ com)[None] - mats @ com
        norm = np.linalg.norm(shifts, axis=1, keepdims=True)
        shifts *= np.minimum(1.0, max_shift / np.maximum(norm, 1e-12))
        scores[l] = sc_low.energies_at(fv_low, l, mats_dev, shifts)
    scores = to_numpy(scores)
    chosen: dict = {}
    for l in range(n):
        far = _angles_to(mats, rotations[l], group) > min_angle
        if keep_polarity:  # (R_l^T M)[z, z] > -cos 30: the axis not turned over
            far &= mats[:, :, 0] @ rotations[l][:, 0] > -math.cos(math.radians(30.0))
        picked: list = []
        for k in np.argsort(np.where(far, scores[l], np.inf), kind="stable"):
            if len(picked) == n_candidates or not far[k]:
                break
            if picked and np.any(_angles_to(mats[picked], mats[k], group) <= min_angle):
                continue
            picked.append(int(k))
        if picked:
            chosen[l] = picked
    # local searches of the current poses and of the candidates (device), one transfer
    current = xp.full(n, xp.inf)
    best_value = xp.full(n, xp.inf)
    best_r = xp.asarray(rotations)
    best_t = xp.asarray(translations)
    for l, picked in chosen.items():
        # the current pose gets the same last (full band) local search as the candidates
        cand = xp.matmul(xp.asarray(rotations[l])[None], stages[-1][0])
        ev = sc_full.evaluate(fv_full, l, cand, sync=False)
        j = xp.argmin(ev.nll)
        current[l] = best_value[l] = ev.nll[j]
        best_r[l], best_t[l] = cand[j], ev.shifts[j]
        for k in picked:
            R = mats_dev[k]
            for local, full in stages:
                fv, sc = (fv_full, sc_full) if full else (fv_low, sc_low)
                cand = xp.matmul(R[None], local)
                ev = sc.evaluate(fv, l, cand, sync=False)
                j = xp.argmin(ev.nll)
                R, t, value = cand[j], ev.shifts[j], ev.nll[j]
            better = value < best_value[l]
            best_value[l] = xp.where(better, value, best_value[l])
            best_r[l] = xp.where(better, R, best_r[l])
            best_t[l] = xp.where(better, t, best_t[l])
    current, best_value = to_numpy(current), to_numpy(best_value)
    best_r, best_t = to_numpy(best_r), to_numpy(best_t)
    moved: list = []
    for l in chosen:
        # a candidate refined back next to the current pose is not a distant optimum (the
        # SGD grid would pull the particle back to its grid point: a move for nothing)
        if best_value[l] < current[l] and float(
                _angles_to(best_r[l][None], rotations[l], group)[0]) > min_angle / 2:
            rotations[l], translations[l] = best_r[l], best_t[l]
            moved.append(l)
    return Poses(rotations, translations), np.asarray(moved, dtype=np.int64)


def coarse_band(band: int, downsampling: float) -> int:
    b = int(round(band / downsampling))
    b += b % 2
    return max(8, min(b, band))


def pose_search(volume, particles, psf, *, grid: SO3Grid | None = None,
                downsampling: float = 2.0, max_shift: float | None = None,
                temperature: float = 1.0, refine: bool = True,
                support_threshold: float = 1e-3, backend: Any = None) -> PoseSearchResult:
    """Exhaustive pose search of every particle against a volume, with exact marginals.

    Every rotation of ``grid`` is evaluated for every particle (translations by
    correlation on the cropped grid), at the band reduced by ``downsampling``;
    the best is then refined locally at the full band (``refine``).

    Parameters
    ----------
    volume : ndarray, shape (D, D, D) or (C, D, D, D)
        Reference volume, same box as the particles.
    particles : ndarray, shape (N, D, D, D) or (N, C, D, D, D)
    psf : ndarray, shape (d, d, d) or (C, d, d, d)
    grid : SO3Grid, optional
        Rotations to try (default ``so3_grid(500, 36)``, about 10 degrees).
    downsampling : float, optional
        Band reduction of the exhaustive stage (>= 1).
    max_shift : float, optional
        Largest translation norm, voxels (default ``D / 4``).
    temperature : float, optional
        Likelihood temperature of the marginals.
    refine : bool, optional
        Local refinement of each best pose at the full band.
    support_threshold : float, optional
        See :func:`spfluo.algorithms.scoring.spectra.particle_spectra`.
    backend : Backend or {"cpu", "gpu"}, optional

    Returns
    -------
    PoseSearchResult
    """
    bk = resolve_backend(backend, particles)
    xp = bk.xp
    data = particle_spectra(particles, psf, support_threshold=support_threshold, backend=bk)
    box = data.box
    if grid is None:
        grid = so3_grid(500, 36)
    if not isinstance(grid, SO3Grid):
        raise ValueError(f"grid must be an SO3Grid (geometry.so3_grid), got {type(grid).__name__}")
    downsampling = check_float(downsampling, "downsampling", low=1.0)
    temperature = check_float(temperature, "temperature", low=0.0, low_inclusive=False)
    max_shift = check_max_shift(max_shift, box)
    vol = as_reference(xp, volume, data)
    band = coarse_band(data.band, downsampling)
    fv = FourierVolume.initial(bk, vol, data.band)
    fv_coarse = fv.resized(band) if band != data.band else fv
    sc = Scorer.for_band(data, band, max_shift, surface="peak")
    mats = xp.asarray(grid.matrices().reshape(-1, 3, 3))
    n = data.n_particles
    rotations = xp.empty((n, 3, 3))
    translations = xp.empty((n, 3))
    energies = xp.empty(n)
    marg_psi = xp.empty((n, grid.n_psi))
    marg_d = xp.empty((n, grid.n_directions))
    for l in range(n):
        ev = sc.evaluate(fv_coarse, l, mats, sync=False)
        k = xp.argmin(ev.nll)
        rotations[l] = mats[k]
        translations[l] = ev.shifts[k]
        energies[l] = ev.relative[k]
        p = likelihoods(xp, ev.nll, 1.0 / temperature).reshape(grid.n_directions, grid.n_psi)
        marg_d[l] = p.sum(axis=1) / p.sum()
        marg_psi[l] = p.sum(axis=0) / p.sum()
    rotations, translations, energies = (to_numpy(a) for a in (rotations, translations,
                                                                 energies))
    marg_psi, marg_d = to_numpy(marg_psi), to_numpy(marg_d)
    poses = Poses(rotations, translations)
    if refine:
        sc_full = Scorer.for_band(data, data.band, max_shift, surface="peak")
        poses, energies = refine_local(fv, sc_full, poses,
                                       stages_deg=((5.0, 10.0),) + LOCAL_STAGES_DEG)
    return PoseSearchResult(poses=poses, energies=energies, psi_marginals=marg_psi,
                            direction_marginals=marg_d)
