"""Polarity consensus of Cn particles: which end is up, decided for all particles together.

The two ends of the C9 barrel look alike under the blur (they differ by the tilt of the
blades, a detail at the edge of the OTF support): the first SGD epochs, at the coarse
band, cannot tell them apart, so about half of the particles settle upside down and the
volume becomes a mixture of the object and its turned copy, against which no particle can
be sorted out (measured: 6 to 9 of 20 particles at 180 degrees at the end of the stage
without symmetry, on 5 seeds).  When Cn is imposed, the turn ``F`` (a half turn about an
axis of the xy plane, through a centre on z) under which the iterate looks most like
itself is found by correlation (:func:`polarity_axis`); every particle gets two
hypotheses, its pose and the pose for the turned volume (:func:`flip_pose`), both refined
by a search about the symmetry axis, and the choice of one hypothesis per particle
minimises the energy of the closed-form (Tikhonov) volume that explains them all
(:func:`polarity_consensus`: agreeing particles add coherently), by greedy single changes
from the current choice and from random ones.  A collective decision: against an iterate,
one particle's two polarities differ by a few tens of log-likelihood units for side views
(measured, against a volume from the 19 other particles at their true poses: 37 to 245),
within the noise of a single comparison.
"""

from __future__ import annotations

import math

import numpy as np

from spfluo.algorithms.backend import to_numpy
from spfluo.algorithms.geometry import (
    rotation_about_z,
)
from spfluo.algorithms.scoring.energies import Scorer
from spfluo.algorithms.scoring.model import FourierVolume


def flip_rotation(theta: float) -> np.ndarray:
    """Rotation by pi about the axis ``(cos theta, sin theta, 0)`` (xyz) of the xy plane.

    zyx frame: ``2 a a^T - I`` with ``a = (0, sin theta, cos theta)``; it turns
    the z axis (the symmetry axis) upside down.
    """
    a = np.array([0.0, math.sin(theta), math.cos(theta)])
    return 2.0 * np.outer(a, a) - np.eye(3)


def flip_pose(rotation, translation, flip, centre):
    """Pose of the same particle when the volume is turned by ``flip`` about ``centre``.

    The particle ``T_t R f`` equals ``T_t' R' (F_c f)`` with ``F_c`` the turn
    ``F`` about ``c`` and ``R' = R F``, ``t' = t + R (I - F) c`` (``F`` is an
    involution).  Works on one pose or batches (rotations (..., 3, 3)).
    """
    r = np.asarray(rotation, dtype=np.float64)
    shift = (np.eye(3) - flip) @ np.asarray(centre, dtype=np.float64)
    return np.matmul(r, flip), np.asarray(translation, dtype=np.float64) + r @ shift


def polarity_axis(vol: FourierVolume, symmetry: int, *, z_range: float = 1.0,
                   z_step: float = 0.25) -> tuple[float, np.ndarray, float]:
    """The upside-down turn under which the iterate looks most like itself.

    Scores ``corr(f, F_c f)`` (Pearson, channels summed, on the ``L^3`` grid of
    the iterate) for turns ``F`` by pi about axes of the xy plane at azimuths
    ``theta`` in one period ``[0, pi / n)`` (``F_theta C_k = F_{theta - pi k / n}``)
    and centres ``c = (c_z, 0, 0)`` within ``z_range`` particle voxels of the
    centre of mass along the axis.  Returns ``(theta, c, score)``, ``c`` in
    particle voxels from the box centre ``(z, y, x)``.
    """
    from spfluo.algorithms.transform import rotate

    bk = vol.bk
    xp = bk.xp
    ref = vol.real.sum(axis=0)
    period = math.pi / symmetry
    n_theta = max(8, int(math.ceil(period / math.radians(1.0))))
    thetas = period * np.arange(n_theta) / n_theta
    flips = np.stack([flip_rotation(t) for t in thetas])
    ratio = vol.band / vol.box  # particle voxels -> voxels of the L^3 grid
    com_z = float(vol.centre_of_mass()[0])
    a = ref - ref.mean()
    norm_a = float(to_numpy(xp.sqrt((a * a).sum())))
    best = (-math.inf, 0.0, com_z)
    for cz in com_z + np.arange(-z_range, z_range + 1e-9, z_step):
        centre = np.array([cz * ratio, 0.0, 0.0])
        shifts = np.einsum("kij,j->ki", np.eye(3)[None] - flips, centre)
        turned = rotate(ref, flips, translations=shifts, order=1, backend=bk)
        turned = turned.reshape(n_theta, -1)
        b = turned - turned.mean(axis=1, keepdims=True)
        score = to_numpy((b * a.reshape(1, -1)).sum(axis=1) / (
            xp.sqrt((b * b).sum(axis=1)) * norm_a + 1e-30))
        k = int(np.argmax(score))
        if score[k] > best[0]:
            best = (float(score[k]), float(thetas[k]), float(cz))
    return best[1], np.array([best[2], 0.0, 0.0]), best[0]


def backprojection(vol: FourierVolume, sc: Scorer, l: int, rotations, translation, mask):
    """Whitened back-projection of particle ``l`` and its curvature on the volume grid.

    ``b = sum_k S_k^T conj(h^ rho_t) y^ / s`` and ``K = sum_k S_k^T |h^|^2 / s``
    (``S_k`` the trilinear gather at ``2 R_k^T p``, and its conjugate at ``-p``,
    as in :func:`~spfluo.algorithms.abinitio.sgd.sgd_update`) for the poses
    ``rotations`` (K, 3, 3) sharing the translation; values at the flat grid indices
    ``mask``: (C, M) complex64 and (C, M) float32.
    """
    xp = vol.bk.xp
    rotations = np.asarray(rotations, dtype=np.float64)
    nk = rotations.shape[0]
    ramp = sc.ramp(translation)
    weight = (sc.w * np.float32(0.5))[None] * sc.spectra.inv_noise[l][:, None]  # (C, M)
    val = xp.conj(sc.otf * ramp) * sc.data(l) * weight
    curv = sc.otf_power * weight
    b = vol.backproject(rotations, sc, xp.broadcast_to(val, (nk,) + val.shape))
    k = vol.backproject(rotations, sc, xp.broadcast_to(curv, (nk,) + curv.shape))
    c = int(val.shape[0])
    return (b.reshape(c, -1)[:, mask].astype(xp.complex64),
            k.reshape(c, -1)[:, mask].astype(xp.float32))


def curvature_sum(vol: FourierVolume, sc: Scorer, rotations, group):
    """One epoch's worth of the preconditioner ``B`` for the given poses (C, padded grid).

    The curvatures ``|h^|^2 w / (2 s)`` of every particle, scattered at ``2 (R_l C_k)^T p``
    and ``-p`` for every element ``C_k`` of the group, as
    :func:`~spfluo.algorithms.abinitio.sgd.sgd_update` accumulates them during an epoch.
    """
    xp = vol.bk.xp
    spectra = sc.spectra
    out = None
    half_w = sc.w * np.float32(0.5)
    for l in range(spectra.n_particles):
        rots = np.matmul(np.asarray(rotations[l], dtype=np.float64)[None], group)
        curv = sc.otf_power * (half_w[None] * spectra.inv_noise[l][:, None])
        part = vol.backproject(rots, sc, xp.broadcast_to(curv, (rots.shape[0],) + curv.shape))
        out = part if out is None else out + part
    return out.astype(xp.float32)


def polarity_consensus(vol: FourierVolume, sc: Scorer, rotations, translations, group, flip,
                       centre, *, rng: np.random.Generator, regularization: float = 0.1,
                       n_restarts: int = 4):
    """Turn the particles upside down as needed so that all agree on one polarity.

    Each particle has two pose hypotheses: its pose and the pose for the
    volume turned by ``flip`` about ``centre`` (:func:`flip_pose`), both
    refined against the iterate by a search over the angle about the symmetry
    axis (``R R_z(phi)``, ``|phi| <= 6`` degrees by 0.5: ``F_theta R_z(phi) =
    F_{theta - phi/2}`` absorbs the error of the turn axis; translations by
    correlation).  Refining both keeps the comparison fair; the accuracy
    matters (measured: with the unrefined turned poses the consensus of one
    C9 run in five was wrong).  For a choice ``s`` of one hypothesis per
    particle, the quadratic (Tikhonov) energy of the volume that explains them
    best on the oversampled grid is ``E(s) = -1/2 sum_q |b(q)|^2 / (K(q) +
    lambda)`` (``b`` and ``K`` the sums of the chosen back-projections and
    curvatures, :func:`_backprojection`; the constant ``||y||^2`` dropped): it
    is lowest when the particles agree (Cauchy-Schwarz at each frequency).
    ``E`` is minimised over ``s`` by single flips (greedy, exact incremental
    updates) from the current choice and from ``n_restarts`` random ones; of
    the two equivalent solutions ``s`` and ``-s`` (the volume and its turned
    copy) the one that turns fewer particles is kept.

    Returns
    -------
    rotations, translations : ndarray, shapes (N, 3, 3), (N, 3)
        The chosen (refined) pose of every particle.
    flipped : ndarray of int
        Particles turned upside down.
    gain : float
        ``E(current) - E(best)`` (whitened half energy, >= 0).
    """
    xp = vol.bk.xp
    n = sc.spectra.n_particles
    c = sc.spectra.n_channels
    in_plane = rotation_about_z(np.deg2rad(np.arange(-6.0, 6.0 + 1e-9, 0.5)))
    hyp_r = np.empty((2, n, 3, 3))
    hyp_t = np.empty((2, n, 3))
    turned_r, turned_t = flip_pose(rotations, translations, flip, centre)
    for h, (rs, ts) in enumerate(((rotations, translations), (turned_r, turned_t))):
        for l in range(n):
            cand = np.matmul(np.asarray(rs[l], dtype=np.float64)[None], in_plane)
            ev = sc.evaluate(vol, l, cand)
            k = int(np.argmin(ev.nll))
            hyp_r[h, l], hyp_t[h, l] = cand[k], ev.shifts[k]
    # grid points reached by any particle: the ball of the band
    g = vol.size
    axis = np.arange(g + 3) - 1 - g // 2
    r2 = axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2
    mask = xp.asarray(np.flatnonzero(r2.ravel() <= (vol.band + 2) ** 2))
    m = int(mask.size)
    b_h = xp.empty((2, n, c, m), dtype=xp.complex64)
    k_h = xp.empty((2, n, c, m), dtype=xp.float32)
    for h in range(2):
        for l in range(n):
            b_h[h, l], k_h[h, l] = backprojection(vol, sc, l,
                                                   np.matmul(hyp_r[h, l][None], group),
                                                   hyp_t[h, l], mask)
    k_all = k_h[0].sum(axis=0)
    lam = xp.asarray(np.asarray([regularization * float(to_numpy(
        xp.mean(k_all[ch][k_all[ch] > 0]))) / n for ch in range(c)], dtype=np.float32))
    lam = lam[:, None]

    def energy(b, k) -> float:
        return -0.5 * float(to_numpy(((b.real**2 + b.imag**2) / (k + lam)).sum(
            dtype=xp.float64)))

    def descend(s):
        s = s.copy()
        b = b_h[s, np.arange(n)].sum(axis=0)
        k = k_h[s, np.arange(n)].sum(axis=0)
        e = energy(b, k)
        improved = True
        while improved:
            improved = False
            for l in range(n):
                b2 = b + (b_h[1 - s[l], l] - b_h[s[l], l])
                k2 = k + (k_h[1 - s[l], l] - k_h[s[l], l])
                e2 = energy(b2, k2)
                if e2 < e - 1e-9 * abs(e):
                    s[l] = 1 - s[l]
                    b, k, e = b2, k2, e2
                    improved = True
        return s, e

    e0 = energy(b_h[0].sum(axis=0), k_h[0].sum(axis=0))
    best_s, best_e = descend(np.zeros(n, dtype=np.int64))
    for _ in range(n_restarts):
        s, e = descend(rng.integers(0, 2, size=n))
        if e < best_e - 1e-9 * abs(best_e):
            best_s, best_e = s, e
    if 2 * int(best_s.sum()) > n:  # the same solution with the volume turned over
        best_s = 1 - best_s
    idx = np.arange(n)
    return (hyp_r[best_s, idx], hyp_t[best_s, idx], np.flatnonzero(best_s).astype(np.int64),
            max(0.0, e0 - best_e))
