"""Exhaustive pose search (Fortun et al. 2018 sec. IV-B, eq. 8).

The particle ``y`` is compared with ``h * T_t(R f)`` for every candidate rotation ``R``
of a grid: the model is rotated (never the particle) and blurred by the unrotated PSF;
the translation of each candidate is the best of its correlation, then the best
rotation wins.  Coarse to fine: the whole of SO(3)/Cn at 20 degrees, then +-10 degrees
at 5 around the current rotation, then +-5 at 1 (Fortun et al. 2018 sec. V-A-4; ``schedule``
changes it).  The global library of rotated, blurred models is built once per
iteration and shared by all the particles; local candidates (``R_i @
local_rotation_grid``) are built per batch of particles.

How it is made fast
-------------------
- **Only where the OTF lives.**  The pose enters the energy only at the frequencies where
  the OTF is not negligible (``|h^|^2 >= support_threshold max |h^|^2``): for the Fortun et al. 2018
  PSF about 280 frequencies of the half spectrum of the padded 68^3 grid.  Every particle
  is reduced once to its spectrum there (:func:`particle_spectra`); the pose updates never
  touch the particle volumes again.
- **The model is rotated in Fourier space, at those frequencies only.**
  ``F{R f}(k) = F{f}(R^T k)``: the centred spectrum of the volume, oversampled 3 times with
  the gridding correction (0.9 % relative error against an exact non-uniform DFT of a
  rotated 45^3 barrel; 6.5 % at oversampling 2 without correction), is interpolated
  trilinearly at the rotated support frequencies
  (:class:`~spfluo.algorithms.scoring.model.VolumeModel`), for all candidates at once.  Only
  the band of the oversampled spectrum that the rotated support reaches is computed, by
  three separable DFT matrix products (:func:`~spfluo.algorithms.scoring.model.band_spectra`, equal to the cropped
  :func:`~spfluo.algorithms.transform.centred_spectrum`).
- **Global stage: coarse band, correlation surfaces.**  The 20-degree grid is scored on the
  support restricted to half its extent (the particles and the model downsampled by 2):
  the cross-power spectrum of each candidate is scattered into a small FFT grid (the size
  that holds it without aliasing) and one batched inverse real FFT gives every
  candidate's correlation surface, a parabolic fit its peak.
- **Local stages: at the current translation.**  The candidates of a particle are within
  +-10 degrees of its rotation, so they are scored at its current translation (one phase
  factor for all), the in-box model energy to first order in the rotation increment.
- **Exact translations for the best.**  The best ``top_k`` candidates get their
  translations by Newton iterations on the exact correlation (a trigonometric polynomial
  on the support), then their exact energies; the winner's translation is refined once
  more on the exact energy (in-box model energy included).
- **The gradient of the continuous refinement is analytic.**  With ``u = R^T k``,
  ``d/dw_j F{f}(exp([w])^T u) = grad F{f}(u) . (G_j^T u)`` (``G_j`` the generators of the
  rotation increment) and ``grad F{f} = -2 i pi F{x f}``: three more oversampled spectra
  (the first moments ``x_a f``) interpolated at the same points.  The translation
  derivative is a phase factor.  Checked against finite differences of the exact energy
  (non-uniform DFT) in the tests: 1 % (the analytic derivative of the continuous
  spectrum; finite differences of the trilinear interpolant differ from it by up to 7 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spfluo.algorithms._validation import as_channels, check_int, check_max_shift, check_symmetry
from spfluo.algorithms.geometry.poses import check_poses
from spfluo.algorithms.backend import to_numpy
from spfluo.algorithms.geometry import (
    Poses,
    geodesic_distance_sym,
    local_rotation_grid,
    rotvec_from_matrix,
    uniform_rotation_grid,
)
from spfluo.algorithms.refine.schedule import (
    SearchStage,
)
from spfluo.algorithms.scoring import spectra as scoring_spectra
from spfluo.algorithms.scoring.energies import SURFACE_BUDGET, Scorer
from spfluo.algorithms.scoring.model import VolumeModel
from spfluo.algorithms.scoring.spectra import DEFAULT_SUPPORT_THRESHOLD, ParticleSpectra

#: Band of the global (coarse) search, fraction of the support's extent per axis.
_COARSE_BAND = 0.5


@dataclass(frozen=True, eq=False)
class PoseUpdate:
    """Result of a pose update (:func:`search_poses`, :func:`refine_poses_continuous`).

    Attributes
    ----------
    poses : Poses
        The updated poses (zyx frame, translations in voxels).
    energies : ndarray, float64, shape (N,)
        Relative energy of each particle at its new pose: ``min_{a >= 0, b} ||y - a B(h *
        T_t(R f)) - b||^2 / ||y - mean y||^2`` (``B`` the particle box; module notes), in
        ``[0, 1]``.
    changes_deg : ndarray, float64, shape (N,)
        Geodesic angle between the old and the new rotation, modulo Cn, degrees.
    shift_changes : ndarray, float64, shape (N,)
        Norm of the translation change, voxels.
    angle_steps_deg : ndarray, float64, shape (N,)
        Angular resolution of the update: the grid step of an exhaustive search, or the
        last accepted rotation move of a continuous update (degrees).
    shift_steps : ndarray, float64, shape (N,)
        Translation resolution: the spacing of the correlation surfaces of a search
        (refined below it by Newton iterations), or the last accepted translation move of
        a continuous update (voxels).
    """

    poses: Poses
    energies: np.ndarray
    changes_deg: np.ndarray
    shift_changes: np.ndarray
    angle_steps_deg: np.ndarray
    shift_steps: np.ndarray


def particle_spectra(particles, psf, *, support_threshold: float = DEFAULT_SUPPORT_THRESHOLD,
                     pad: float = 2.0, batch_size: int = 16, backend=None) -> ParticleSpectra:
    """The particles on the OTF support as the refinement scores them: an intensity scale
    and offset fitted per particle and channel (box mean removed, no zero frequency), and
    a linear blur (``pad``; see :func:`spfluo.algorithms.scoring.spectra.particle_spectra`
    for the parameters)."""
    return scoring_spectra.particle_spectra(particles, psf, support_threshold=support_threshold,
                                            pad=pad, offset=True, batch_size=batch_size,
                                            backend=backend)


def _check_spectra(spectra) -> ParticleSpectra:
    if not isinstance(spectra, ParticleSpectra):
        raise ValueError(
            f"spectra must be a ParticleSpectra (from particle_spectra), got "
            f"{type(spectra).__name__}"
        )
    return spectra


def _changes(old_r, new_r, old_t, new_t, symmetry: int):
    ang = np.degrees(geodesic_distance_sym(new_r, old_r, symmetry=symmetry))
    return ang, np.linalg.norm(np.asarray(new_t) - np.asarray(old_t), axis=1)


def _coarse_subset(q: np.ndarray) -> np.ndarray:
    """Support frequencies of the coarse band: ``|q_a| <= ceil(_COARSE_BAND e_a)``."""
    extent = np.abs(q).max(axis=0)
    limit = np.maximum(np.ceil(_COARSE_BAND * extent), 1)
    return np.flatnonzero(np.all(np.abs(q) <= limit, axis=1))


def _search(model: VolumeModel, scorer: Scorer, coarse: Scorer, indices: np.ndarray,
            rotations: np.ndarray, translations: np.ndarray, stage: SearchStage,
            symmetry: int, top_k: int, keep_polarity: bool = False):
    """Exhaustive search of particles ``indices`` (rotations/translations: theirs).

    Global stage: every grid rotation is scored on the coarse band with its best
    translation from the correlation surface (the library of rotated models is shared by
    all particles); the particle's current pose stays when it fits better than the best
    grid rotation (a good initial pose is not replaced by a 20-degree grid point).  Local stage: the candidates ``R_i exp([w_k])`` are scored at full band
    at the particle's current translation, the in-box model energy to first order in
    ``w_k`` (its exact value and gradient at ``R_i``; it varies slowly with the rotation).
    Either way the best ``top_k`` candidates get their exact energy and their translation
    by Newton iterations at full band, and the best of them wins.  ``keep_polarity``
    (Cn particles): the global stage only tries rotations whose symmetry axis ``R e_z``
    points into the hemisphere of the current one, so that a particle is not turned
    upside down where the two polarities fit nearly alike (the polarity is the one the ab
    initio settled).
    Returns (R (P, 3, 3), t (P, 3), relative energies (P,)).
    """
    bk = model.bk
    xp = bk.xp
    cs = len(scorer.channels)
    m_full = scorer.n_freq
    step = math.radians(stage.step_deg)
    if stage.is_global:
        grid = uniform_rotation_grid(step, symmetry=symmetry)
        k = grid.shape[0]
        m_low = coarse.n_freq
        chunk = max(1, SURFACE_BUDGET // (cs * max(m_low, int(np.prod(coarse.cube))
                                                    if coarse.boxed else m_low)))
        parts, norms = [], []
        for s in range(0, k, chunk):
            m = model.at(grid[s:s + chunk], coarse)
            parts.append(m)
            norms.append(coarse.model_energy(m))  # at t = 0
        library = xp.concatenate(parts, axis=0)
        lib_n = xp.concatenate(norms, axis=0)
        batch = max(1, SURFACE_BUDGET // (k * max(coarse.half_size, m_low)))
    else:
        grid = local_rotation_grid(step, math.radians(stage.range_deg))
        increments = rotvec_from_matrix(grid, frame="zyx")  # (K, 3) xyz rotation vectors
        k = grid.shape[0]
        batch = max(1, SURFACE_BUDGET // (k * cs * m_full))
    top = min(top_k, k)
    n_sel = len(indices)
    out_r = np.empty((n_sel, 3, 3))
    out_t = np.empty((n_sel, 3))
    out_e = np.empty(n_sel)
    for start in range(0, n_sel, batch):
        sel = np.asarray(indices[start:start + batch])
        p = len(sel)
        y = scorer.particles(sel)  # (P, Cs, M)
        t_old = translations[start:start + p]
        energy = xp.asarray(scorer.energy[sel])[:, None]
        rows = xp.arange(p)[:, None]
        if stage.is_global:
            cands = np.broadcast_to(grid, (p, k, 3, 3))
            x = coarse.cross(coarse.particles(sel), library)  # (P, K, Ml)
            c0, t0 = coarse.surface_peaks(x.reshape(p * k, -1))
            e0 = coarse.energies(c0.reshape(p, k), lib_n[None], energy)
            if keep_polarity:
                same = rotations[start:start + p][:, :, 0] @ grid[:, :, 0].T > 0.0  # (P, K)
                e0 = xp.where(xp.asarray(same), e0, xp.inf)
            best = xp.argsort(e0, axis=1)[:, :top]
            ts = t0.reshape(p, k, 3)[rows, best].reshape(p * top, 3)
            best_h = to_numpy(best)
            ms = model.at(grid[best_h.reshape(-1)])  # full band, (P top, Cs, M)
        else:
            centres = rotations[start:start + p]
            cands = np.matmul(centres[:, None], grid[None])  # (P, K, 3, 3)
            m = model.at(cands.reshape(-1, 3, 3))  # (P K, Cs, M)
            x = scorer.cross(y, m.reshape(p, k, cs, m_full))  # (P, K, M)
            # the candidates of a particle share its translation: one phase per particle
            wphase = xp.exp((2j * np.pi / scorer.d) * (xp.asarray(t_old) @ scorer.q.T)) \
                * scorer.w64
            c0 = (x * wphase.astype(xp.complex64)[:, None, :]).real.sum(axis=-1,
                                                                       dtype=xp.float64)
            x = x.reshape(p * k, m_full)
            if scorer.boxed:
                mc, dmc = model.with_derivatives(centres)
                n_c = scorer.model_energy(mc, t_old)  # (P,)
                g_c = scorer.model_energy_derivatives(mc, dmc, t_old)  # (P, 3)
                n0 = n_c[:, None] + g_c @ xp.asarray(increments.T)  # (P, K)
            else:
                n0 = scorer.model_energy(m).reshape(p, k)
            e0 = scorer.energies(c0.reshape(p, k), n0.reshape(p, k), energy)
            best = xp.argsort(e0, axis=1)[:, :top]
            best_h = to_numpy(best)
            flat = (np.arange(p)[:, None] * k + best_h).reshape(-1)
            ms = m[xp.asarray(flat)]
            ts = np.repeat(t_old, top, axis=0)
        ys = xp.repeat(y, top, axis=0)  # (P top, Cs, M)
        xs = (ys * xp.conj(ms)).sum(axis=1)
        c, n, t = scorer.newton(xs, ms, ts)
        e = scorer.energies(c.reshape(p, top), n.reshape(p, top), energy)
        win = to_numpy(xp.argmin(e, axis=1))
        pick = xp.asarray(np.arange(p) * top + win)
        t_win = t[pick]
        if scorer.boxed:
            # the winner's translation for the exact energy (in-box model energy included)
            c, n, t_win = scorer.newton_joint(xs[pick], ms[pick], t_win)
            e_win = scorer.energies(c, n, energy[:, 0])
        else:
            e_win = e[xp.arange(p), xp.asarray(win)]
        r_win = cands[np.arange(p), best_h[np.arange(p), win]]
        t_win = to_numpy(t_win)
        e_win = to_numpy(e_win)
        if stage.is_global:
            # the grid does not hold the current rotation: keep it when it fits better
            cur = rotations[start:start + p]
            mc = model.at(cur)
            xc = (y * xp.conj(mc)).sum(axis=1)
            cc, nc, tc = (scorer.newton_joint if scorer.boxed else scorer.newton)(xc, mc, t_old)
            ec = to_numpy(scorer.energies(cc, nc, energy[:, 0]))
            keep = ec < e_win
            r_win[keep], t_win[keep], e_win[keep] = cur[keep], to_numpy(tc)[keep], ec[keep]
        out_r[start:start + p] = r_win
        out_t[start:start + p] = t_win
        out_e[start:start + p] = e_win
    return out_r, out_t, out_e


def search_poses(volume, spectra: ParticleSpectra, poses: Poses, *, step_deg: float,
                 range_deg: float | None = None, symmetry: int = 1, channels=None,
                 max_shift: float | None = None, top_k: int = 8,
                 keep_polarity: bool = False) -> PoseUpdate:
    """Exhaustive pose search of every particle against a volume (Fortun et al. 2018 eq. 8).

    Parameters
    ----------
    volume : ndarray, shape (C, D, D, D) or (D, D, D)
        The current model (any intensity scale: each particle gets its best scale).
    spectra : ParticleSpectra
        The particles on the OTF support (:func:`particle_spectra`).
    poses : Poses
        Current poses: the centres of the local searches and the starting translations;
        a global search keeps a particle's current pose when it fits better than every
        grid rotation.
    step_deg : float
        Angular step of the rotation grid, degrees.
    range_deg : float, optional
        Largest rotation tried around the current one, degrees; None searches the whole
        of SO(3)/Cn.
    symmetry : int, default 1
        Order n of the Cn symmetry about z of the volume (global grid over SO(3)/Cn; pose
        changes modulo Cn).
    channels : None, int or sequence of int
        Channels compared (default all; they share the poses and one intensity scale).
    max_shift : float, optional
        Largest translation norm, voxels (default ``D / 4``).
    top_k : int, default 8
        Candidates (best by the coarse correlation surface) whose translations are refined
        by Newton iterations before the final choice.
    keep_polarity : bool, default False
        Cn: the global search keeps every particle's symmetry axis in the hemisphere of
        its current one (no particle turned upside down).

    Returns
    -------
    PoseUpdate
    """
    spectra = _check_spectra(spectra)
    n = spectra.n_particles
    poses = check_poses(poses, n)
    stage = SearchStage(step_deg, range_deg)
    symmetry = check_symmetry(symmetry)
    chans = as_channels(channels, spectra.n_channels)
    max_shift = check_max_shift(max_shift, spectra.box)
    top_k = check_int(top_k, "top_k", minimum=1)
    boxed = spectra.grid != spectra.box
    model = VolumeModel(spectra.backend, volume, spectra, chans,
                   gradient=boxed and not stage.is_global)
    scorer = Scorer(spectra, chans, max_shift)
    coarse = Scorer(spectra, chans, max_shift, subset=_coarse_subset(spectra.frequencies))
    t_start = scorer_project(scorer, poses.translations)
    r, t, e = _search(model, scorer, coarse, np.arange(n), poses.rotations, t_start, stage,
                      symmetry, top_k, keep_polarity=bool(keep_polarity) and symmetry > 1)
    ang, sh = _changes(poses.rotations, r, poses.translations, t, symmetry)
    return PoseUpdate(Poses(r, t), e, ang, sh, np.full(n, stage.step_deg),
                      np.full(n, float(scorer.cell.max())))


def scorer_project(scorer: Scorer, t) -> np.ndarray:
    """Translations (host, (N, 3)) scaled back to the ball ``|t| <= max_shift``."""
    t = np.asarray(t, dtype=np.float64)
    norm = np.linalg.norm(t, axis=1)
    return t * np.minimum(1.0, scorer.max_shift / np.maximum(norm, 1e-12))[:, None]
