"""Continuous pose refinement (Zehni et al. 2020 sec. III-C, Algorithm 3).

A few gradient steps per particle on a rotation increment ``w`` (``R <- R exp([w])``,
applied in the reference frame as in :func:`~spfluo.algorithms.geometry.local_rotation_grid`)
and on the translation, updated one after the other with separate step sizes and a
backtracking line search (``eta = 0.25``), all particles in parallel; alternated with a
few warm-started ADMM iterations (``K_ADMM``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spfluo.algorithms._validation import (
    as_channels,
    check_float,
    check_int,
    check_max_shift,
    check_symmetry,
)
from spfluo.algorithms.geometry.poses import check_poses
from spfluo.algorithms.backend import to_numpy
from spfluo.algorithms.geometry import (
    Poses,
    matrix_from_rotvec,
)
from spfluo.algorithms.refine.search import (
    PoseUpdate,
    _changes,
    _check_spectra,
    scorer_project,
)
from spfluo.algorithms.scoring.energies import SURFACE_BUDGET, Scorer
from spfluo.algorithms.scoring.model import VolumeModel
from spfluo.algorithms.scoring.spectra import ParticleSpectra


@dataclass(frozen=True, eq=False)
class PoseEnergies:
    """Energies of particles at given poses, and their gradients (:func:`pose_energies`).

    Attributes
    ----------
    energies : ndarray, float64, shape (N,)
        Relative energy (see :class:`PoseUpdate`), in ``[0, 1]``.
    rotation_gradient : ndarray, float64, shape (N, 3)
        Derivative with respect to a rotation increment ``w`` (a rotation vector in the xyz
        frame, radians): the rotation is ``R @ matrix_from_rotvec(w, frame="zyx")`` (the
        increment applied in the reference frame); zeros unless ``gradient=True``.
    translation_gradient : ndarray, float64, shape (N, 3)
        Derivative with respect to the translation ``(z, y, x)``, per voxel; zeros unless
        ``gradient=True``.
    """

    energies: np.ndarray
    rotation_gradient: np.ndarray
    translation_gradient: np.ndarray


def _terms(model: VolumeModel, scorer: Scorer, indices, rotations, translations, *,
           rotation_gradient: bool, translation_gradient: bool):
    """Energies (P,) and gradients (P, 3), (P, 3) of particles ``indices`` at the poses."""
    bk = model.bk
    xp = bk.xp
    spectra = scorer.spectra
    y = spectra.values[xp.asarray(indices)][:, scorer.channels]  # (P, Cs, M)
    if rotation_gradient:
        m, dm = model.with_derivatives(rotations)
    else:
        m, dm = model.at(rotations), None
    t = np.asarray(translations, dtype=np.float64)
    x = (y * xp.conj(m)).sum(axis=1)  # (P, M)
    energy = xp.asarray(scorer.energy[indices])
    p = len(indices)
    gw = np.zeros((p, 3))
    gt = np.zeros((p, 3))
    if translation_gradient:
        c, gc, _ = scorer.correlation(x, t, derivatives=True)
        n, gn, _ = scorer.model_energy_terms(m, t)
    else:
        c = scorer.correlation(x, t)
        n = scorer.model_energy(m, t)
    e = scorer.energies(c, n, energy)
    if not (rotation_gradient or translation_gradient):
        return to_numpy(e), gw, gt
    cp = xp.maximum(c, 0.0)
    denom = xp.maximum(n * energy, 1e-300)
    de_dc = (-2.0 * cp / denom)[:, None]
    de_dn = (cp * cp / (denom * xp.maximum(n, 1e-300)))[:, None]
    if translation_gradient:
        gt = to_numpy(de_dc * gc + de_dn * gn)
    if rotation_gradient:
        phase = xp.exp((2j * np.pi / scorer.d) * (xp.asarray(t) @ scorer.q.T)) * scorer.w64
        dc = xp.stack([((y * xp.conj(dm[j])).sum(axis=1) * phase).real.sum(axis=1)
                       for j in range(3)], axis=1)
        dn = scorer.model_energy_derivatives(m, dm, t)
        gw = to_numpy(de_dc * dc + de_dn * dn)
    return to_numpy(e), gw, gt


def _batched_terms(model, scorer, indices, rotations, translations, **kw):
    m_freq = scorer.n_freq
    cube = int(np.prod(scorer.cube)) if scorer.boxed else m_freq
    per = len(scorer.channels) * max(m_freq, cube) * (8 if kw.get("rotation_gradient") else 2)
    batch = max(1, SURFACE_BUDGET // max(per, 1))
    indices = np.asarray(indices)
    e = np.empty(len(indices))
    gw = np.zeros((len(indices), 3))
    gt = np.zeros((len(indices), 3))
    for s in range(0, len(indices), batch):
        sl = slice(s, s + batch)
        e[sl], gw[sl], gt[sl] = _terms(model, scorer, indices[sl], rotations[sl],
                                       translations[sl], **kw)
    return e, gw, gt


def pose_energies(volume, spectra: ParticleSpectra, poses: Poses, *, channels=None,
                  gradient: bool = False) -> PoseEnergies:
    """Relative energies of the particles at their poses, and optionally their gradients.

    Parameters
    ----------
    volume : ndarray, shape (C, D, D, D) or (D, D, D)
    spectra : ParticleSpectra
    poses : Poses
    channels : None, int or sequence of int
        Channels compared (default all).
    gradient : bool, default False
        Also the derivatives with respect to a rotation increment (xyz rotation vector,
        radians, applied in the reference frame) and to the translation (voxels).

    Returns
    -------
    PoseEnergies
    """
    spectra = _check_spectra(spectra)
    n = spectra.n_particles
    poses = check_poses(poses, n)
    chans = as_channels(channels, spectra.n_channels)
    model = VolumeModel(spectra.backend, volume, spectra, chans, gradient=bool(gradient))
    scorer = Scorer(spectra, chans, math.inf)
    e, gw, gt = _batched_terms(model, scorer, np.arange(n), poses.rotations,
                               poses.translations, rotation_gradient=bool(gradient),
                               translation_gradient=bool(gradient))
    return PoseEnergies(e, gw, gt)


def _continuous(model, scorer, indices, rotations, translations, angle_steps, shift_steps, *,
                steps: int, eta: float, max_backtracks: int, max_angle: float,
                max_shift_step: float):
    """Semi-coordinate-wise gradient descent with backtracking (Zehni et al. 2020, Algorithm 3).

    ``angle_steps`` (radians) and ``shift_steps`` (voxels) are the last accepted moves;
    returns (R, t, energies, angle_steps, shift_steps).
    """
    r = np.array(rotations, dtype=np.float64)
    t = scorer_project(scorer, translations)
    a_steps = np.minimum(np.array(angle_steps, dtype=np.float64), max_angle)
    s_steps = np.minimum(np.array(shift_steps, dtype=np.float64), max_shift_step)
    idx = np.asarray(indices)
    e, _, _ = _batched_terms(model, scorer, idx, r, t, rotation_gradient=False,
                             translation_gradient=False)
    for _ in range(steps):
        for is_rot in (True, False):
            _, gw, gt = _batched_terms(model, scorer, idx, r, t, rotation_gradient=is_rot,
                                       translation_gradient=not is_rot)
            g = gw if is_rot else gt
            norm = np.linalg.norm(g, axis=1)
            last = a_steps if is_rot else s_steps
            limit = max_angle if is_rot else max_shift_step
            # first trial: twice the last accepted move, at most the limit
            trial = np.minimum(2.0 * last, limit)
            active = np.flatnonzero(norm > 0)
            move = np.zeros_like(g)
            move[active] = -g[active] * (trial[active] / norm[active])[:, None]
            accepted = np.zeros(len(idx), dtype=bool)
            for _bt in range(max_backtracks):
                if active.size == 0:
                    break
                if is_rot:
                    r_try = np.matmul(r[active], matrix_from_rotvec(move[active], frame="zyx"))
                    t_try = t[active]
                else:
                    r_try = r[active]
                    t_try = scorer_project(scorer, t[active] + move[active])
                e_try, _, _ = _batched_terms(model, scorer, idx[active], r_try, t_try,
                                             rotation_gradient=False, translation_gradient=False)
                ok = e_try < e[active]
                good = active[ok]
                if is_rot:
                    r[good] = r_try[ok]
                else:
                    t[good] = t_try[ok]
                e[good] = e_try[ok]
                accepted[good] = True
                last[good] = np.linalg.norm(move[good], axis=1)
                active = active[~ok]
                move[active] *= eta
            # never accepted: the next trial starts from the last (shrunk) move
            failed = np.flatnonzero(~accepted & (norm > 0))
            last[failed] = np.maximum(np.linalg.norm(move[failed], axis=1), 1e-9)
    return r, t, e, a_steps, s_steps


def _initial_steps(values, n: int, default: float, name: str) -> np.ndarray:
    if values is None:
        return np.full(n, default)
    a = np.asarray(values, dtype=np.float64)
    if a.shape != (n,) or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"{name} must hold {n} positive numbers (one per particle), got "
                         f"shape {a.shape}")
    return a


def refine_poses_continuous(volume, spectra: ParticleSpectra, poses: Poses, *, steps: int = 3,
                            max_angle_deg: float = 2.0, max_shift_step: float = 1.0,
                            eta: float = 0.25, max_backtracks: int = 6, symmetry: int = 1,
                            channels=None, max_shift: float | None = None,
                            angle_steps_deg=None, shift_steps=None) -> PoseUpdate:
    """Continuous pose refinement: gradient steps with backtracking (Zehni et al. 2020, Algorithm 3).

    For every particle (all in parallel), ``steps`` times: a gradient step on the rotation
    increment, then one on the translation, each with its own step size chosen by
    backtracking (multiplied by ``eta`` until the energy decreases, at most
    ``max_backtracks`` times; a particle whose energy does not decrease keeps its pose).

    Parameters
    ----------
    volume : ndarray, shape (C, D, D, D) or (D, D, D)
    spectra : ParticleSpectra
    poses : Poses
    steps : int, default 3
        Gradient steps per particle (``K_GD`` of Zehni et al. 2020).
    max_angle_deg : float, default 2
        Largest rotation of one step, degrees.
    max_shift_step : float, default 1
        Largest translation change of one step, voxels.
    eta : float, default 0.25
        Backtracking factor in (0, 1) (Zehni et al. 2020).
    max_backtracks : int, default 6
    symmetry : int, default 1
        Order of Cn (pose changes are reported modulo Cn).
    channels : None, int or sequence of int
    max_shift : float, optional
        Largest translation norm, voxels (default ``D / 4``).
    angle_steps_deg, shift_steps : array_like, shape (N,), optional
        The last accepted moves of a previous call (``PoseUpdate.angle_steps_deg`` and
        ``shift_steps``); default ``max_angle_deg / 2`` and ``max_shift_step / 2``.

    Returns
    -------
    PoseUpdate
        ``angle_steps_deg`` and ``shift_steps`` hold the last accepted moves (the next
        call's first trials are twice those).

    Notes
    -----
    Step sizes are unit-free (design decision): the first trial moves the pose by twice
    the last accepted move along the negative gradient, capped by ``max_angle_deg`` and
    ``max_shift_step`` (Zehni et al. 2020's fixed steps depend on the intensity unit).  The
    gradient is analytic (module notes).
    """
    spectra = _check_spectra(spectra)
    n = spectra.n_particles
    poses = check_poses(poses, n)
    steps = check_int(steps, "steps", minimum=1)
    max_angle = math.radians(check_float(max_angle_deg, "max_angle_deg", low=0.0, high=90.0,
                                          low_inclusive=False, unit=" degrees"))
    max_step = check_float(max_shift_step, "max_shift_step", low=0.0, low_inclusive=False,
                            unit=" voxels")
    eta = check_float(eta, "eta", low=0.0, high=1.0, low_inclusive=False)
    if eta >= 1.0:
        raise ValueError(f"eta must be in (0, 1), got {eta!r}")
    max_backtracks = check_int(max_backtracks, "max_backtracks", minimum=1)
    symmetry = check_symmetry(symmetry)
    chans = as_channels(channels, spectra.n_channels)
    max_shift = check_max_shift(max_shift, spectra.box)
    a0 = _initial_steps(angle_steps_deg, n, math.degrees(max_angle) / 2, "angle_steps_deg")
    s0 = _initial_steps(shift_steps, n, max_step / 2, "shift_steps")
    model = VolumeModel(spectra.backend, volume, spectra, chans, gradient=True)
    scorer = Scorer(spectra, chans, max_shift)
    r, t, e, a_st, s_st = _continuous(
        model, scorer, np.arange(n), poses.rotations, poses.translations, np.radians(a0), s0,
        steps=steps, eta=eta, max_backtracks=max_backtracks, max_angle=max_angle,
        max_shift_step=max_step)
    ang, sh = _changes(poses.rotations, r, poses.translations, t, symmetry)
    return PoseUpdate(Poses(r, t), e, ang, sh, np.degrees(a_st), s_st)
