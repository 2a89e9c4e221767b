"""The sums over particles that every known-pose solver needs, computed once.

Model (Fortun et al. 2017 eq. 1-4; Fortun et al. 2018 eq. 1-2).  Particle
``i`` is ``y_i = h * T_{t_i}(R_i f) + noise``.  Brought back to the reference frame,
``z_i = R_i^T T_{-t_i} y_i = (R_i^T h) * f + noise``: a convolution whose transfer
function is the rotated OTF ``H(R_i k)``.  The least-squares data term
``1/(2N) sum_i ||y_i - H_i f||^2`` therefore has the normal operator

    (1/N) sum_i H_i^T H_i  =  convolution with  K(k) = (1/N) sum_i |H(R_i k)|^2

(Donati 2020 Theorem 1: shifts drop out) and the right-hand side

    b = (1/N) sum_i H_i^T y_i = (1/N) sum_i R_i^T T_{-t_i} (h^T * y_i).

Both are computed once (:func:`precompute_sums`), streaming the particles in batches, so
that an iteration of any solver costs the same for 10 or 10,000 particles: it is one real
FFT, one division by a diagonal in Fourier space and one inverse FFT (Fortun et al. 2017 eq. 11),
plus the per-voxel proximal steps.

:mod:`~spfluo.algorithms.reconstruct.accumulation` streams the particles into them; the
sums of disjoint sets combine (:func:`combine_sums`), the two gold-standard halves come
from one pass (:func:`precompute_half_sums`), and :func:`update_sums` moves particles to
new poses at the cost of the particles that moved.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from spfluo.algorithms._validation import as_psf, check_int
from spfluo.algorithms.geometry.poses import check_poses
from spfluo.algorithms.backend import AXES3, resolve_backend, to_numpy
from spfluo.algorithms.geometry import Poses, geodesic_distance
from spfluo.algorithms.reconstruct.accumulation import (
    MAX_THREADS,
    Accumulator,
    check_order,
    half_to_full_even,
    run_accumulation,
    symmetrize,
)

__all__ = [
    "ReconstructionSums",
    "half_split",
    "precompute_sums",
    "precompute_half_sums",
    "combine_sums",
    "update_sums",
    "check_sums",
    "nonnegative",
]


@dataclass(frozen=True, eq=False)
class ReconstructionSums:
    """The sums over particles that every known-pose solver needs (computed once).

    Attributes
    ----------
    backprojection : ndarray, float32, shape (C, P, P, P)
        ``b = (1/N) sum_i R_i^T T_{-t_i}(h_c^T * y_i)`` per channel ``c``, on the
        (possibly padded) grid of side ``P``, in the units of the particles.
    kernel : ndarray, float32, shape (C, P, P, P//2 + 1)
        ``K(k) = (1/N) sum_i |H_c(R_i k)|^2``, the Fourier kernel of the normal operator
        (real, even, >= 0; with symmetry down to about -1e-4 of its peak, the ringing
        of the exact rotations, which the solvers clamp), half spectrum of ``rfftn`` in FFT order,
        frequencies in cycles per voxel of the ``P`` grid.  With a unit-sum PSF,
        ``K(0) = 1``.
    n_particles : int
        ``N``, the number of particles summed (not counting symmetry copies).
    shape : tuple of int
        ``(D, D, D)``, the particle box; solvers crop their result to it.
    symmetry : int
        Order ``n`` of the Cn symmetry folded into the sums (1: none).

    Notes
    -----
    Arrays live on the device of the backend that computed them (NumPy or CuPy).  Both
    sums are means over particles (and symmetry copies), so the sums of two disjoint sets
    combine as a weighted mean (:func:`combine_sums`).
    """

    backprojection: Any
    kernel: Any
    n_particles: int
    shape: tuple
    symmetry: int

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """``(P, P, P)``, the computation grid (``shape`` unless padded)."""
        return tuple(int(s) for s in self.backprojection.shape[-3:])

    @property
    def n_channels(self) -> int:
        return int(self.backprojection.shape[0])

    def coverage(self):
        """The Fourier coverage ``K`` as a centred full spectrum (for display).

        Returns
        -------
        ndarray, float32, shape (C, P, P, P), NumPy
            ``K(k)`` with the zero frequency at ``(P//2, P//2, P//2)`` (``fftshift``
            order); index ``p`` from the centre is ``p / P`` cycles per voxel.  Low values
            mark the directions the poses leave poorly measured.
        """
        xp = resolve_backend(None, self.kernel).xp
        full = half_to_full_even(xp, nonnegative(xp, self.kernel), self.grid_shape)
        return to_numpy(xp.fft.fftshift(full, axes=AXES3)).astype(np.float32)


def nonnegative(xp, kernel):
    """The kernel the solvers use: ``max(K, 0)``.

    A kernel averaged over Cn by exact (sinc) rotations rings by up to about 1e-4 of its
    peak where it should vanish (outside the OTF support); the sums keep that ringing so that
    they stay linear in the particles (:func:`update_sums`, :func:`combine_sums`), and the
    solvers clamp it.
    """
    return xp.maximum(kernel, 0)


def check_sums(sums) -> ReconstructionSums:
    """Refuse anything but a :class:`ReconstructionSums`."""
    if not isinstance(sums, ReconstructionSums):
        raise ValueError(
            f"sums must be a ReconstructionSums (from precompute_sums), got {type(sums).__name__}"
        )
    return sums


def half_split(n_particles: int, *, seed=0) -> np.ndarray:
    """Random gold-standard split of ``n_particles`` into two halves.

    Parameters
    ----------
    n_particles : int
        ``N >= 2``.
    seed : int or numpy.random.Generator
        The same seed gives the same split.

    Returns
    -------
    ndarray, int8, shape (N,)
        0 or 1 per particle; half 0 has ``ceil(N / 2)`` particles.
    """
    n = check_int(n_particles, "n_particles", minimum=2)
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, dtype=np.int8)
    labels[rng.permutation(n)[(n + 1) // 2 :]] = 1
    return labels


def precompute_sums(particles, poses, psf, *, symmetry: int = 1, batch_size: int = 16,
                    order: int = 1, pad: float = 1.125, backend=None) -> ReconstructionSums:
    """Sums over particles of the known-pose problem (back-projection and kernel).

    Parameters
    ----------
    particles : ndarray, shape (N, C, D, D, D) or (N, D, D, D), or iterable
        The particles (cubic boxes), or an iterable of ``(slice, batch)`` pairs as yielded
        by :func:`spfluo.io.iter_particle_batches` (memory then stays bounded by a batch).
    poses : Poses
        One pose per particle: rotation (zyx frame) and translation in voxels,
        ``particle = T_t(R f)``.
    psf : ndarray, shape (d, d, d) or (C, d, d, d)
        Centred PSF(s), ``d <= D``; one for all channels or one per channel; normalised to
        unit sum here.
    symmetry : int, default 1
        Order ``n`` of the Cn symmetry about z (1: none).
    batch_size : int, default 16
        Particles processed together (memory ~ ``batch_size`` boxes).
    order : {1, 3}, default 1
        Spline order of the back-rotation and of the kernel interpolation.
    pad : float, default 1.125
        Computation grid side over box side, in [1, 3] (the grid is ``round(pad D)``; the
        result is cropped back to ``D``).  A zero margin separates the data at opposite
        faces of the box, which the periodic model would otherwise join: measured on the
        Eloy et al. 2023 setting at 32^3 (object and blur filling the box), ``pad=1`` made the
        held-out criterion of ``weight="auto"`` pick the smallest weight, ``1.125`` (2
        voxels a side) the PSNR-optimal one, and SSIM gained 0.01.  Cost: ``pad^3`` per
        iteration (1.42x); ``pad=1`` for speed when the boxes have margins.
    backend : Backend or {"cpu", "gpu"}, optional

    Returns
    -------
    ReconstructionSums
    """
    n = len(check_poses(poses, None))
    groups = np.zeros(n, dtype=np.int64)
    (res,), shape, symmetry = run_accumulation(
        particles, poses, psf, groups=groups, n_groups=1, symmetry=symmetry,
        batch_size=batch_size, order=order, pad=pad, backend=backend, with_kernel=True,
        filtered=True,
    )
    b, k, count = res
    return ReconstructionSums(b, k, count, shape, symmetry)


def precompute_half_sums(particles, poses, psf, *, halves=None, seed=0, symmetry: int = 1,
                         batch_size: int = 16, order: int = 1, pad: float = 1.125,
                         backend=None) -> tuple[ReconstructionSums, ReconstructionSums]:
    """The sums of two halves of the particles, in one pass over them.

    Parameters
    ----------
    halves : array_like of int, shape (N,), optional
        Half (0 or 1) of each particle; default :func:`half_split` with ``seed``.
    seed : int or numpy.random.Generator
        Seed of the random split when ``halves`` is not given.
    particles, poses, psf, symmetry, batch_size, order, pad, backend
        As in :func:`precompute_sums`.

    Returns
    -------
    tuple of 2 ReconstructionSums
        Combine them with :func:`combine_sums` for the full set.
    """
    n = len(check_poses(poses, None))
    labels = half_split(n, seed=seed) if halves is None else np.asarray(halves)
    if labels.shape != (n,) or not np.isin(labels, (0, 1)).all():
        raise ValueError(
            f"halves must hold one 0 or 1 per particle ({n}), got shape {labels.shape}"
        )
    res, shape, symmetry = run_accumulation(
        particles, poses, psf, groups=labels.astype(np.int64), n_groups=2, symmetry=symmetry,
        batch_size=batch_size, order=order, pad=pad, backend=backend, with_kernel=True,
        filtered=True,
    )
    return tuple(ReconstructionSums(b, k, c, shape, symmetry) for b, k, c in res)


def combine_sums(first: ReconstructionSums, second: ReconstructionSums) -> ReconstructionSums:
    """Sums of the union of two disjoint particle sets (mean weighted by their counts)."""
    for name, s in (("first", first), ("second", second)):
        if not isinstance(s, ReconstructionSums):
            raise ValueError(f"{name} must be a ReconstructionSums, got {type(s).__name__}")
    if (first.backprojection.shape != second.backprojection.shape
            or first.shape != second.shape or first.symmetry != second.symmetry):
        raise ValueError(
            "the two sums must come from the same box, channels, padding and symmetry, got "
            f"{first.backprojection.shape}/{first.symmetry} and "
            f"{second.backprojection.shape}/{second.symmetry}"
        )
    n1, n2 = first.n_particles, second.n_particles
    a, b = n1 / (n1 + n2), n2 / (n1 + n2)
    return ReconstructionSums(
        (a * first.backprojection + b * second.backprojection).astype(np.float32),
        (a * first.kernel + b * second.kernel).astype(np.float32),
        n1 + n2, first.shape, first.symmetry,
    )


def _as_indices(indices, n: int) -> np.ndarray:
    if indices is None:
        return np.arange(n)
    idx = np.asarray(indices)
    if idx.dtype == bool and idx.shape == (n,):
        return np.flatnonzero(idx)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer) or (
            idx.size and (idx.min() < 0 or idx.max() >= n)) or np.unique(idx).size != idx.size:
        raise ValueError(
            f"indices must be distinct positions in 0..{n - 1} (or a boolean mask of {n}), "
            f"got {indices!r}"
        )
    return idx.astype(np.int64)


def update_sums(sums: ReconstructionSums, particles, old_poses: Poses, new_poses: Poses, psf,
                *, indices=None, tolerance_deg: float = 0.0, tolerance_shift: float = 0.0,
                batch_size: int = 16, order: int = 1, backend=None) -> ReconstructionSums:
    """The sums after some particles changed pose: old contributions out, new ones in.

    Equal (to float32 rounding) to :func:`precompute_sums` with the new poses, at the
    cost of the particles that moved (twice: the old pose out, the new one in), e.g. in a
    refinement where few poses change between iterations.  When the sums hold exactly
    ``particles[indices]`` (``sums.n_particles`` of them) and more than half of them
    moved, the sums are recomputed from them instead (one pass, cheaper).

    Parameters
    ----------
    sums : ReconstructionSums
        Sums that hold the particles ``particles[indices]`` at ``old_poses[indices]``
        (and possibly other particles, left as they are); :func:`precompute_sums`,
        :func:`precompute_half_sums` or a previous update.
    particles : ndarray, shape (M, C, D, D, D) or (M, D, D, D)
        Particles (the ones of the sums, or a larger set that contains them).
    old_poses, new_poses : Poses
        ``M`` poses each: those the sums were computed with, and the new ones.
    psf : ndarray, shape (d, d, d) or (C, d, d, d)
        The PSF of the sums.
    indices : array_like of int, or boolean mask (M,), optional
        The particles of ``particles`` that the sums hold and that may have moved
        (default all ``M``).
    tolerance_deg, tolerance_shift : float, default 0
        A particle is updated when its rotation changed by more than ``tolerance_deg``
        degrees (geodesic angle, not modulo the symmetry) or its translation by more than
        ``tolerance_shift`` voxels; the others keep their old contribution (0 and 0:
        every change counts, and the result is the recomputation).
    batch_size : int, default 16
    order : {1, 3}, default 1
        The interpolation order the sums were computed with.
    backend : Backend or {"cpu", "gpu"}, optional
        Default: the backend of ``sums``.

    Returns
    -------
    ReconstructionSums
        Same particle count, box, padding and symmetry as ``sums``.

    Notes
    -----
    The sums are linear in the contribution of each particle (the Cn average too: the
    exact rotations are linear, and the kernel is clamped at 0 only by the solvers), so
    ``sums + (1/N) S(sum_i new_i - old_i)`` with ``S`` the Cn average is the
    recomputation; float32 storage bounds the difference to ~1e-7 of the peak per update.
    """
    sums = check_sums(sums)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    order = check_order(order)
    if not hasattr(particles, "ndim") or particles.ndim not in (4, 5):
        raise ValueError(
            "particles must be an array (M, C, D, D, D) or (M, D, D, D), got "
            f"{getattr(particles, 'shape', type(particles).__name__)}"
        )
    arr = particles if particles.ndim == 5 else particles[:, None]
    m = int(arr.shape[0])
    old_poses = check_poses(old_poses, m)
    new_poses = check_poses(new_poses, m)
    if tuple(arr.shape[2:]) != tuple(sums.shape) or arr.shape[1] != sums.n_channels:
        raise ValueError(
            f"particles of shape {tuple(arr.shape[1:])} do not match the sums "
            f"({sums.n_channels} channel(s), box {tuple(sums.shape)}): give the particles "
            "the sums were computed from"
        )
    for name, tol in (("tolerance_deg", tolerance_deg), ("tolerance_shift", tolerance_shift)):
        if isinstance(tol, bool) or not isinstance(tol, (int, float, np.integer, np.floating)) \
                or not np.isfinite(tol) or tol < 0:
            raise ValueError(f"{name} must be a number >= 0, got {tol!r}")
    idx = _as_indices(indices, m)
    angle = np.degrees(geodesic_distance(old_poses.rotations[idx], new_poses.rotations[idx]))
    shift = np.linalg.norm(new_poses.translations[idx] - old_poses.translations[idx], axis=1)
    moved = idx[(angle > tolerance_deg) | (shift > tolerance_shift)]
    if moved.size == 0:
        return sums
    # out and in costs 2 passes per moved particle: when the sums hold exactly these
    # particles and more than half of them moved, one pass over all of them is cheaper
    rebuild = idx.size == sums.n_particles and 2 * moved.size > idx.size
    bk = resolve_backend(backend, sums.backprojection)
    xp = bk.xp
    box = int(sums.shape[0])
    psf_dev = as_psf(psf, sums.n_channels, box, xp)
    p = sums.grid_shape[0]
    acc = Accumulator(bk, box, sums.n_channels, psf_dev, pad=p / box, order=order,
                      n_groups=1 if rebuild else 2, with_kernel=True, filtered=True)
    if acc.p != p:  # pragma: no cover - round(P / D * D) == P
        raise ValueError(f"cannot rebuild the computation grid {p} of the sums")
    workers = 1 if bk.is_gpu else min(MAX_THREADS, os.cpu_count() or 1)
    with contextlib.ExitStack() as stack:
        pool = None
        if workers > 1:
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=workers))
        todo = idx if rebuild else moved
        for start in range(0, todo.size, batch_size):
            sel = todo[start:start + batch_size]
            batch = arr[sel]
            for group, poses in ((0, new_poses),) if rebuild else ((0, new_poses),
                                                                   (1, old_poses)):
                acc.add_batch(batch, poses.rotations[sel], poses.translations[sel],
                              np.full(sel.size, group), pool=pool)
    n = float(sums.n_particles)
    c = sums.n_channels
    if rebuild:
        b = (acc.b[0] / n).astype(xp.float32)
        k = (acc.kernel[0] / n).astype(xp.float32).reshape(c, p, p, p // 2 + 1)
        b, k = symmetrize(bk, b, k, sums.symmetry)
        return ReconstructionSums(b, k, sums.n_particles, sums.shape, sums.symmetry)
    delta_b = (acc.b[0] - acc.b[1]) / n
    delta_k = ((acc.kernel[0] - acc.kernel[1]) / n).reshape(c, p, p, p // 2 + 1)
    delta_b, delta_k = symmetrize(bk, delta_b, delta_k, sums.symmetry)
    b = (sums.backprojection.astype(xp.float64) + delta_b).astype(xp.float32)
    k = (sums.kernel.astype(xp.float64) + delta_k).astype(xp.float32)
    return ReconstructionSums(b, k, sums.n_particles, sums.shape, sums.symmetry)
