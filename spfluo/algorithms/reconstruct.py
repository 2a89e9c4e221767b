"""Reconstruction with known poses: Tikhonov, TV and Hessian-Schatten ADMM, baselines.

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

Discretisation, and what is approximate
    - Everything is periodic on a cubic grid of side ``P = round(pad D)`` (``pad=1.125``
      by default): particles are zero-padded, the result is cropped back to ``D``.  The
      margin keeps the periodic model from joining data at opposite faces of the box;
      without it, on boxes that the object and its blur fill, the wrap-around is a model
      error common to both half sets that under-regularised solutions fit (measured: the
      held-out criterion then picks the smallest weight).  Larger ``pad`` (e.g. 1.5, 2)
      approaches the linear convolution at ``pad^3`` the cost per iteration.
    - ``h^T * y_i`` and the shift ``T_{-t_i}`` are exact (OTF product and Fourier phase
      ramp, periodic on the padded grid).  The back-rotation ``R_i^T`` resamples the
      filtered particle in real space (spline of order ``order``; 1 = trilinear by
      default, in a thread pool on the CPU).  Trilinear resampling low-passes by about
      ``prod_a sinc^2(k'_a)`` in the particle-frame frequency ``k' = R_i k``; that factor
      is folded into ``K`` so that ``b`` and ``K`` describe the same operator (measured on
      the Eloy et al. 2023 setting: +0.01 SSIM, as much as ``order=3`` at no cost).
    - ``K`` is sampled from ``|H|^2`` computed on a 2x oversampled Fourier grid (the PSF
      autocorrelation fits it without aliasing) and interpolated at the rotated
      frequencies ``R_i k`` (trilinear: within 3 % of the peak for a PSF as narrow as 0.7
      voxel; cubic: 0.2 %).  Frequencies rotated outside the Nyquist cube get 0, and so do
      those outside the ball that holds ``|H|^2 >= 1e-6`` of its peak (``|R k| = |k|``,
      so only that ball is sampled).
    - Cn symmetry (Fortun et al. 2018 sec. IV-A): every particle counts for its ``n`` poses
      ``R_i C_j``.  Since ``(R_i C_j)^T = C_j^T R_i^T``, the sums over the ``n N`` poses are
      the sums over the ``N`` poses, rotated about z by the ``n`` elements of Cn and
      averaged: ``n`` whole-volume rotations in all (``b`` in real space, ``K`` in Fourier
      space), whatever ``N``.  The rotations are exact
      (:func:`~spfluo.algorithms.transform.rotate_about_z`: quarter turn and three Fourier
      shears, zero outside the box); an interpolating rotation would low-pass each copy
      of ``b`` while ``K`` still claims its high frequencies (measured with trilinear
      rotations: folding C9 made the reconstruction worse than none, SSIM 0.727 against
      0.771 on 20 particles of 40^3, Hessian 3e-4; exact: 0.786, as good as symmetrising
      the plain reconstruction afterwards when the poses cover Fourier space, better
      with few particles: 0.738 against 0.705 with 4; the folded kernel matches the
      brute-force kernel of the ``9 N`` poses to the 2.4 % of the trilinear sampling of
      ``|H|^2``, against 6.3 % with trilinear rotations).  Summing the kernel of the ``n``
      copies per particle instead is as accurate (measured) but costs ``n`` kernel
      samplings per particle; rotating ``K`` costs ``n`` rotations once.  The rotated
      ``K`` rings by 2e-5 (20 particles) to 1.4e-4 (4 particles) of its peak where it
      vanishes; the sums keep it (they stay linear in the particles, :func:`update_sums`)
      and the solvers use ``max(K, 0)``.
    - Channels share the poses and have one PSF each; the sums, the weights and the
      solvers work on all channels at once (the problem separates per channel).

Solvers
    - :func:`reconstruct_tikhonov`: ``x^ = B / (K + w |G|^2)`` with ``|G|^2`` the symbol of
      the discrete gradient (Fortun et al. 2018 eq. 6, quadratic regularisation ``||D f||^2``).
    - :func:`reconstruct_admm`: ADMM for
      ``min_{x >= 0} 1/2 <x, K x> - <x, b> + w phi(L x)`` (Fortun et al. 2017 eq. 6-11), with
      ``phi`` the isotropic total variation (``L`` the gradient) or the Hessian
      Schatten-1 (nuclear) norm (``L`` the Hessian; Fortun et al. 2017 eq. 5).  Splitting
      ``u1 = L x``, ``u2 = x``: the x-update is one division in Fourier space, the
      u1-update a per-voxel proximal step (group soft-thresholding for TV; for the
      Hessian, soft-thresholding of the eigenvalues of each voxel's symmetric 3x3 matrix,
      in closed form and vectorised; cache-sized blocks on the CPU), the u2-update a
      projection on ``x >= 0``.  ``rho = w`` by default, balanced every 10 iterations
      (Boyd et al. 2011, sec. 3.4.1); a warm start continues from an :class:`ADMMState`.
      Checked against an independent Chambolle-Pock solver (tests): 0.4 % (TV) and
      0.03 % (Hessian) from its minimiser after 500 and 300 iterations.
    - Intensities: the ADMM works on data divided by ``scale = max(b)`` per channel, so
      that TV and Hessian weights do not depend on the intensity unit (the quadratic
      Tikhonov weight never does).  Weights are per mean particle (the data term is an
      average over particles), so they do not scale with ``N``.
    - Baselines of Fortun et al. 2017: :func:`average` (align and average) and
      :func:`deconv_average` (TV-deconvolve each particle, then align and average).

Gold standard: :func:`reconstruct` splits the particles into two random halves
(:func:`half_split`), computes the sums of both in the same pass (the full sums are their
weighted mean), reconstructs both halves and reports their FSC resolution at 0.143.
``weight="auto"`` sweeps the weight (the sums do not depend on it): by default it takes the
weight whose half maps best predict the other half's data (held-out misfit, computed from
the sums; minimum interpolated between the weights tried), halved for the full set (twice
the particles of a half); maximising the half-map FSC resolution is available but
degenerate for regularised solvers (see :func:`reconstruct`).

Shapes: particles ``(N, C, D, D, D)`` (or ``(N, D, D, D)``), PSFs ``(C, d, d, d)`` or
``(d, d, d)`` with ``d <= D``, volumes ``(C, D, D, D)``; float32 in and out.  Poses are a
:class:`spfluo.algorithms.geometry.Poses` (zyx frame, translations in voxels).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from spfluo.algorithms._validation import check_int
from spfluo.algorithms.backend import AXES3, Backend, resolve_backend, to_numpy
from spfluo.algorithms.fourier import _fit_to, fourier_shift
from spfluo.algorithms.geometry import Poses, geodesic_distance
from spfluo.algorithms.metrics import fsc, fsc_resolution
from spfluo.algorithms.transform import rotate_about_z

__all__ = [
    "ReconstructionSums",
    "ADMMState",
    "ADMMResult",
    "Reconstruction",
    "METHODS",
    "half_split",
    "precompute_sums",
    "precompute_half_sums",
    "combine_sums",
    "update_sums",
    "reconstruct_tikhonov",
    "reconstruct_admm",
    "average",
    "deconv_average",
    "reconstruct",
]

#: Methods accepted by :func:`reconstruct`.
METHODS = ("tikhonov", "tv", "hessian", "average", "deconv-average")
_REGULARIZERS = ("tv", "hessian")
#: Threads resampling particles in parallel on the CPU (at most).
_MAX_THREADS = 8
#: |H|^2 below this fraction of its peak counts as 0 in the kernel (saves the sampling of
#: frequencies outside the OTF support).
_SUPPORT_THRESHOLD = 1e-6
_INTERPOLATION_CORRECTION = True  # fold the trilinear transfer into K (order 1)
_SQRT2 = math.sqrt(2.0)
#: Default weights, per mean particle (data normalised to max(b) = 1 for TV/Hessian).
_DEFAULT_WEIGHT = {"tikhonov": 3e-2, "tv": 3e-3, "hessian": 1e-3, "deconv-average": 3e-3}
#: Weights tried by weight="auto": log grids, 2 per decade, around the optima measured on
#: the Eloy et al. 2023 setting (benchmarks/reconstruct.py).
_AUTO_WEIGHTS = {
    "tikhonov": np.logspace(-4, 0, 9),
    "tv": np.logspace(-4, -1, 7),
    "hessian": np.logspace(-4.5, -1.5, 7),
}


# =====================================================================================
# results
# =====================================================================================


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
        full = _half_to_full_even(xp, _nonnegative(xp, self.kernel), self.grid_shape)
        return to_numpy(xp.fft.fftshift(full, axes=AXES3)).astype(np.float32)


@dataclass(frozen=True, eq=False)
class ADMMState:
    """Everything ADMM needs to continue where it stopped (warm start).

    Attributes
    ----------
    x : ndarray, float32, shape (C, P, P, P)
        Current volume, divided by ``scale``.
    u : ndarray, float32, shape (M, C, P, P, P)
        Split variable of the regulariser, component first (``M`` = 3 for TV: the
        gradient ``z, y, x``; 6 for the Hessian: ``zz, yy, xx, sqrt2 zy, sqrt2 zx,
        sqrt2 yx``).
    v : ndarray, float32, shape (C, P, P, P)
        Split variable of the positivity constraint (``x`` without positivity).
    dual_u, dual_v : ndarray
        Scaled dual variables (Lagrange multipliers divided by ``rho``), shapes of ``u``
        and ``v``.
    rho : ndarray, float64, shape (C,)
        Penalty parameter per channel.
    scale : ndarray, float64, shape (C,)
        Intensity unit of the state: volume = ``scale * x``.
    regularizer : str
        ``"tv"`` or ``"hessian"``.
    weight : ndarray, float64, shape (C,)
        The weight the state was computed with.
    """

    x: Any
    u: Any
    v: Any
    dual_u: Any
    dual_v: Any
    rho: np.ndarray
    scale: np.ndarray
    regularizer: str
    weight: np.ndarray


@dataclass(frozen=True, eq=False)
class ADMMResult:
    """Output of :func:`reconstruct_admm`.

    Attributes
    ----------
    volume : ndarray, float32, shape (C, D, D, D)
        The reconstruction in the units of the particles (``>= 0`` with positivity).
    state : ADMMState
        Pass it as ``init`` to continue (warm start).
    energies : ndarray, float64, shape (n_iterations,)
        ``sum_c scale_c^2 (1/2 <x, K x> - <x, b> + w phi(u))`` after each iteration: the
        data term at ``x`` and the regulariser at its split variable ``u`` (``= L x`` at
        convergence), in squared particle units; constant terms dropped.
    primal_residuals, dual_residuals : ndarray, float64, shape (n_iterations,)
        ``||A x - (u, v)||`` and ``rho ||(u, v) - (u, v)_previous||`` (normalised units,
        summed over channels in quadrature), ``A = (L, I)``.
    weight : ndarray, float64, shape (C,)
    regularizer : str
    """

    volume: Any
    state: ADMMState
    energies: np.ndarray
    primal_residuals: np.ndarray
    dual_residuals: np.ndarray
    weight: np.ndarray
    regularizer: str


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


# =====================================================================================
# validation
# =====================================================================================


def _check_order(order) -> int:
    if isinstance(order, bool) or order not in (1, 3):
        raise ValueError(f"order must be 1 (trilinear) or 3 (cubic spline), got {order!r}")
    return int(order)


def _check_pad(pad) -> float:
    if not isinstance(pad, (int, float, np.integer, np.floating)) or not (1.0 <= pad <= 3.0):
        raise ValueError(f"pad must be a number in [1, 3] (grid side / box side), got {pad!r}")
    return float(pad)


def _check_poses(poses, n: int | None) -> Poses:
    if not isinstance(poses, Poses):
        raise ValueError(
            f"poses must be a spfluo.algorithms.geometry.Poses, got {type(poses).__name__}: "
            "build one with Poses(rotations, translations)"
        )
    if len(poses) == 0:
        raise ValueError("poses is empty: give one pose per particle")
    if n is not None and len(poses) != n:
        raise ValueError(
            f"poses has {len(poses)} poses but there are {n} particles: give one pose per particle"
        )
    return poses


def _prepare_psf(xp, psf, n_channels: int, box: int):
    """Validate the PSF, broadcast it to the channels, normalise each to unit sum."""
    psf = np.asarray(to_numpy(psf))
    if psf.ndim == 3:
        psf = psf[None]
    if psf.ndim != 4:
        raise ValueError(f"psf must have shape (d, d, d) or (C, d, d, d), got {psf.shape}")
    if psf.size == 0:
        raise ValueError(f"psf is empty (shape {psf.shape}): give a non-empty PSF")
    if not np.issubdtype(psf.dtype, np.number) or np.iscomplexobj(psf):
        raise ValueError(f"psf must be real, got dtype {psf.dtype}")
    if not np.all(np.isfinite(psf)):
        raise ValueError("psf contains NaN or infinite values: clean it before reconstructing")
    if any(s > box for s in psf.shape[1:]):
        raise ValueError(
            f"psf of shape {psf.shape[1:]} is larger than the particle box ({box} voxels): "
            "crop the PSF to the box"
        )
    if psf.shape[0] not in (1, n_channels):
        raise ValueError(
            f"psf has {psf.shape[0]} channels but the particles have {n_channels}: give one "
            "PSF per channel, or one for all"
        )
    sums = psf.reshape(psf.shape[0], -1).sum(axis=1, dtype=np.float64)
    if np.any(sums <= 0):
        raise ValueError(f"psf must have a positive sum in every channel, got sums {sums}")
    psf = (psf / sums[:, None, None, None]).astype(np.float32)
    if psf.shape[0] != n_channels:
        psf = np.repeat(psf, n_channels, axis=0)
    return xp.asarray(psf)


def _finite_batch(xp, batch):
    """A batch of particles as float32 on the device, checked for NaN and infinities."""
    batch = xp.asarray(batch, dtype=xp.float32)
    if not bool(xp.isfinite(batch).all()):
        raise ValueError(
            "particles contain NaN or infinite values: clean them before reconstructing"
        )
    return batch


def _batches(particles, n_poses: int, batch_size: int, xp):
    """Normalise the particle input to (first batch shape, iterator of (slice, batch))."""
    if hasattr(particles, "ndim") and hasattr(particles, "shape"):
        arr = particles
        if arr.ndim == 4:
            arr = arr[:, None]
        if arr.ndim != 5:
            raise ValueError(
                f"particles must have shape (N, C, D, D, D) or (N, D, D, D), got "
                f"{tuple(particles.shape)}"
            )
        if arr.shape[0] != n_poses:
            raise ValueError(
                f"particles has {arr.shape[0]} particles but poses has {n_poses}: give one "
                "pose per particle"
            )
        if arr.shape[0] == 0:
            raise ValueError("particles is empty: give at least one particle")

        def gen():
            for start in range(0, arr.shape[0], batch_size):
                sl = slice(start, min(arr.shape[0], start + batch_size))
                yield sl, arr[sl]

        return tuple(arr.shape[1:]), gen()
    try:
        iterator = iter(particles)
    except TypeError:
        raise ValueError(
            "particles must be an array (N, C, D, D, D) or an iterable of (slice, batch) "
            f"pairs (spfluo.io.iter_particle_batches), got {type(particles).__name__}"
        ) from None
    try:
        first = next(iterator)
    except StopIteration:
        raise ValueError("particles is empty: the iterable yielded no batch") from None
    shape = _check_batch(first, n_poses, None)

    def gen2():
        seen = 0
        for item in itertools.chain([first], iterator):
            _check_batch(item, n_poses, shape)
            sl, batch = item
            batch = batch if batch.ndim == 5 else batch[:, None]
            seen += batch.shape[0]
            yield sl, batch
        if seen != n_poses:
            raise ValueError(
                f"the particle batches held {seen} particles but poses has {n_poses}: give one "
                "pose per particle"
            )

    return shape, gen2()


def _check_batch(item, n_poses: int, shape):
    try:
        sl, batch = item
    except (TypeError, ValueError):
        raise ValueError(
            "each item of particles must be a (slice, batch) pair as yielded by "
            "spfluo.io.iter_particle_batches"
        ) from None
    if not isinstance(sl, slice) or not hasattr(batch, "ndim") or batch.ndim not in (4, 5):
        raise ValueError(
            "each item of particles must be (slice, array (n, C, D, D, D)), got "
            f"({type(sl).__name__}, {getattr(batch, 'shape', type(batch).__name__)})"
        )
    b = batch if batch.ndim == 5 else batch[:, None]
    start, stop, step = sl.indices(n_poses)
    if step != 1 or stop - start != b.shape[0] or sl.stop is None or sl.stop > n_poses:
        raise ValueError(
            f"batch slice {sl} does not match its {b.shape[0]} particles within the {n_poses} "
            "poses"
        )
    if shape is not None and tuple(b.shape[1:]) != shape:
        raise ValueError(f"particle batches change shape: {tuple(b.shape[1:])} after {shape}")
    return tuple(b.shape[1:])


def _check_box(shape) -> int:
    c, d, e, f = shape
    if not (d == e == f):
        raise ValueError(
            f"particles must be cubic boxes (C, D, D, D), got (C, Z, Y, X) = {shape}: extract "
            "them with a cubic box"
        )
    if d < 4:
        raise ValueError(f"particle boxes of {d} voxels are too small (need at least 4)")
    return int(d)


def _check_weight(weight, n_channels: int, name: str = "weight") -> np.ndarray:
    w = np.atleast_1d(np.asarray(weight, dtype=np.float64)) if not isinstance(weight, str) else None
    if w is None or w.ndim != 1 or w.size not in (1, n_channels) or not np.all(np.isfinite(w)) \
            or np.any(w < 0):
        raise ValueError(
            f"{name} must be a number >= 0 or one per channel ({n_channels}), got {weight!r}"
        )
    return np.broadcast_to(w, (n_channels,)).astype(np.float64)


# =====================================================================================
# Fourier helpers
# =====================================================================================


def _half_to_full_even(xp, half, shape):
    """Full spectrum (..., P, P, P) of a real even function given on the rfft half grid.

    The missing columns use ``K(kz, ky, kx) = K(-kz, -ky, -kx)`` (FFT order).
    """
    p = shape[-1]
    kx = p // 2 + 1
    if p == kx:
        return half.copy()
    neg = xp.asarray((-np.arange(p)) % p)
    src = xp.asarray(p - np.arange(kx, p))  # column j >= kx mirrors column p - j
    tail = half[..., src]
    tail = xp.take(xp.take(tail, neg, axis=-3), neg, axis=-2)
    return xp.concatenate([half, tail], axis=-1)


def _gradient_symbol(xp, shape, dtype=np.float32):
    """``sum_a 4 sin^2(pi k_a)`` on the rfft half grid: |symbol|^2 of the forward gradient."""
    p = shape[0]
    kz = xp.asarray(np.fft.fftfreq(p), dtype=xp.float64)[:, None, None]
    ky = xp.asarray(np.fft.fftfreq(p), dtype=xp.float64)[None, :, None]
    kx = xp.asarray(np.fft.rfftfreq(p), dtype=xp.float64)[None, None, :]
    s = 4 * xp.sin(np.pi * kz) ** 2 + 4 * xp.sin(np.pi * ky) ** 2 + 4 * xp.sin(np.pi * kx) ** 2
    return s.astype(dtype)


def _rfft_weights(xp, shape):
    """Multiplicity of each rfft column in the full spectrum (Parseval on the half grid)."""
    n = shape[-1]
    w = np.full(n // 2 + 1, 2.0)
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0
    return xp.asarray(w, dtype=xp.float32)


def _centred_grid(xp, p: int):
    """(3, P^3) float32 voxel coordinates relative to the centre P//2."""
    ax = xp.arange(p, dtype=xp.float32) - (p // 2)
    zz, yy, xx = xp.meshgrid(ax, ax, ax, indexing="ij")
    return xp.stack([zz.ravel(), yy.ravel(), xx.ravel()])


def _half_frequency_indices(xp, p: int):
    """(3, P*P*(P//2+1)) float32 integer frequency indices of the rfft half grid."""
    kz = xp.asarray(np.fft.fftfreq(p) * p, dtype=xp.float32)
    kx = xp.asarray(np.fft.rfftfreq(p) * p, dtype=xp.float32)
    zz, yy, xx = xp.meshgrid(kz, kz, kx, indexing="ij")
    return xp.stack([zz.ravel(), yy.ravel(), xx.ravel()])


def _support_radius(xp, power, p: int) -> float:
    """Radius (P-grid frequency index) of the ball holding ``|H|^2 >= 1e-6 max``, + 2."""
    q = power.shape[-1]
    peak = float(power.max())
    inside = power >= _SUPPORT_THRESHOLD * peak
    idx = xp.nonzero(inside.any(axis=0))
    rel = xp.stack([i.astype(xp.float32) - q // 2 for i in idx])
    radius = float(xp.sqrt((rel * rel).sum(axis=0)).max()) / 2.0  # 2P grid -> P grid
    return radius + 2.0


def _oversampled_power(bk: Backend, psf, p: int):
    """|OTF|^2 per channel on a centred grid of side 2P, prefiltered for ``order``.

    The PSF autocorrelation (support < 2P) fits a 2P grid without aliasing, so these are
    exact samples of the continuous |H(k)|^2 at k = index / (2P) cycles per voxel.
    """
    xp = bk.xp
    q = 2 * p
    h = _fit_to(xp, psf, (q, q, q))
    spec = bk.fftn(xp.fft.ifftshift(h, axes=AXES3), axes=AXES3)
    power = (spec.real**2 + spec.imag**2).astype(xp.float32)
    return xp.fft.fftshift(power, axes=AXES3)


# =====================================================================================
# accumulation of the sums
# =====================================================================================


class _Accumulator:
    """Streams particle batches into back-projection and kernel sums (one per group)."""

    def __init__(self, bk: Backend, box: int, n_channels: int, psf, *, pad: float, order: int,
                 n_groups: int, with_kernel: bool, filtered: bool):
        xp = bk.xp
        self.bk = bk
        self.box = box
        self.p = int(round(pad * box))
        self.order = order
        self.n_channels = n_channels
        self.interpolation_correction = _INTERPOLATION_CORRECTION
        p = self.p
        self.grid = _centred_grid(xp, p)
        self.centre = float(p // 2)
        shape = (p, p, p)
        self.otf_conj = None
        if filtered:
            h = _fit_to(xp, psf, shape)
            self.otf_conj = xp.conj(
                bk.rfftn(xp.fft.ifftshift(h, axes=AXES3), axes=AXES3)
            ).astype(xp.complex64)
        self.b = xp.zeros((n_groups, n_channels) + shape, dtype=xp.float64)
        self.counts = np.zeros(n_groups, dtype=np.int64)
        self.kernel = None
        if with_kernel:
            self.power = _oversampled_power(bk, psf, p)
            if order > 1:
                self.power = xp.stack([
                    bk.ndimage.spline_filter(c, order=order, output=xp.float32, mode="mirror")
                    for c in self.power
                ])
            # |H(R k)|^2 is negligible outside the ball |k| <= k_max that holds the OTF
            # support (|R k| = |k|): only the frequencies inside are sampled
            freqs = _half_frequency_indices(xp, p)
            radius = _support_radius(xp, self.power, p)
            self.support = xp.flatnonzero((freqs * freqs).sum(axis=0) <= radius * radius)
            self.freqs = freqs[:, self.support]
            self.kernel = xp.zeros((n_groups, n_channels, p * p * (p // 2 + 1)),
                                   dtype=xp.float64)

    def filter(self, batch, translations):
        """Pad, then ``T_{-t}(h^T * y)`` (exact, periodic) for a batch (n, C, P, P, P)."""
        bk = self.bk
        xp = bk.xp
        p = self.p
        batch = _finite_batch(xp, batch)
        if p != self.box:
            batch = _fit_to(xp, batch, (p, p, p))
        shifted = bool(np.any(translations != 0))
        if self.otf_conj is None and not shifted:
            return batch
        spec = bk.rfftn(batch, axes=AXES3)
        if self.otf_conj is not None:
            spec *= self.otf_conj
        if shifted:
            spec = fourier_shift(spec, xp.asarray(-translations[:, None, :]), shape=(p, p, p),
                                 rfft=True, backend=bk)
        return bk.irfftn(spec, s=(p, p, p), axes=AXES3).astype(xp.float32, copy=False)

    def back_rotate(self, volume, rotation):
        """``(R^T g)(x) = g(R (x - c) + c)`` for each channel of ``volume`` (C, P, P, P),
        ``R = rotation``: undoes a rotation by ``R`` about the centre."""
        bk = self.bk
        xp = bk.xp
        p = self.p
        coords = xp.matmul(xp.asarray(rotation, dtype=xp.float32), self.grid) + self.centre
        coords = coords.reshape((3, p, p, p))
        out = xp.empty(volume.shape, dtype=xp.float32)
        for c in range(volume.shape[0]):
            out[c] = bk.ndimage.map_coordinates(
                volume[c], coords, order=self.order, mode="grid-constant", cval=0.0,
                prefilter=self.order > 1, output=xp.float32,
            )
        return out

    def kernel_term(self, rotation):
        """``|H_c(R k)|^2`` (C, M) at the M frequencies of the support ball."""
        bk = self.bk
        xp = bk.xp
        p = self.p
        q = 2 * p
        rotated = xp.matmul(xp.asarray(rotation, dtype=xp.float32), self.freqs)
        coords = 2.0 * rotated + float(q // 2)
        transfer = None
        if self.order == 1 and self.interpolation_correction:
            # mean transfer of trilinear resampling in the particle frame: prod sinc^2(k'_a)
            s = xp.sinc(rotated / p)
            transfer = (s[0] * s[1] * s[2]) ** 2
        out = xp.empty((self.n_channels, self.freqs.shape[1]), dtype=xp.float32)
        for c in range(self.n_channels):
            out[c] = bk.ndimage.map_coordinates(
                self.power[c], coords, order=self.order, mode="grid-constant", cval=0.0,
                prefilter=False, output=xp.float32,
            )
            if transfer is not None:
                out[c] *= transfer
        return out

    def add_batch(self, batch, rotations, translations, groups, *, transform=None, pool=None):
        """Accumulate a batch (n, C, D, D, D).

        ``transform(batch) -> (n, C, D, D, D)`` replaces the PSF filter (used by the
        deconvolution baseline); the shift and the back-rotation follow.  ``pool`` (a
        thread pool) resamples several particles at once (``map_coordinates`` releases the
        GIL).
        """
        if transform is None:
            g = self.filter(batch, translations)
        else:
            g = transform(batch)
            if self.p != self.box:
                g = _fit_to(self.bk.xp, g, (self.p,) * 3)
            if np.any(translations != 0):
                g = _shift_real(self.bk, g, -translations)

        def terms(i):
            k = None if self.kernel is None else self.kernel_term(rotations[i])
            return self.back_rotate(g[i], rotations[i]), k

        results = map(terms, range(g.shape[0])) if pool is None else pool.map(
            terms, range(g.shape[0]))
        for i, (vol, ker) in enumerate(results):
            grp = int(groups[i])
            self.b[grp] += vol
            if ker is not None:
                self.kernel[grp][:, self.support] += ker
            self.counts[grp] += 1


def _shift_real(bk, volumes, shifts):
    xp = bk.xp
    p = volumes.shape[-1]
    spec = bk.rfftn(volumes, axes=AXES3)
    spec = fourier_shift(spec, xp.asarray(shifts[:, None, :]), shape=(p, p, p), rfft=True,
                         backend=bk)
    return bk.irfftn(spec, s=(p, p, p), axes=AXES3).astype(xp.float32, copy=False)


#: Elements (copies x voxels) rotated together by _average_about_z.
_ROTATION_CHUNK = 1 << 23


def _average_about_z(bk: Backend, volumes, n: int):
    """``(1/n) sum_j C_j v`` for volumes (..., P, P, P): exact rotations about z, batched."""
    xp = bk.xp
    out = xp.zeros(volumes.shape, dtype=xp.float64)
    angles = 2.0 * np.pi * np.arange(n) / n
    step = max(1, _ROTATION_CHUNK // (3 * int(volumes.size)))  # padded planes: 2.3x
    for start in range(0, n, step):
        out += rotate_about_z(volumes, angles[start:start + step], backend=bk).sum(
            axis=0, dtype=xp.float64)
    return (out / n).astype(volumes.dtype, copy=False)


def _symmetrize(bk: Backend, b, kernel, n: int):
    """Average ``b`` (C, P, P, P) and ``kernel`` (C, P, P, P//2+1) over Cn, exactly.

    ``b`` is turned in real space, the kernel as a function of frequency (full spectrum,
    centred): both with :func:`~spfluo.algorithms.transform.rotate_about_z` (Fourier
    shears, no interpolation loss).  Linear in ``(b, kernel)``: no clamping here (the
    rotated kernel rings around 0, see :func:`_nonnegative`).
    """
    if n == 1:
        return b, kernel
    xp = bk.xp
    b_sym = _average_about_z(bk, b, n)
    if kernel is None:
        return b_sym, None
    shape = tuple(b.shape[-3:])
    full = xp.fft.fftshift(_half_to_full_even(xp, kernel, shape), axes=AXES3)
    rotated = _average_about_z(bk, full, n)
    k_sym = xp.fft.ifftshift(rotated, axes=AXES3)[..., : shape[-1] // 2 + 1]
    return b_sym, xp.ascontiguousarray(k_sym)


def _nonnegative(xp, kernel):
    """The kernel the solvers use: ``max(K, 0)``.

    A kernel averaged over Cn by exact (sinc) rotations rings by up to about 1e-4 of its
    peak where it should vanish (outside the OTF support); the sums keep that ringing so that
    they stay linear in the particles (:func:`update_sums`, :func:`combine_sums`), and the
    solvers clamp it.
    """
    return xp.maximum(kernel, 0)


def _run_accumulation(particles, poses, psf, *, groups, n_groups, symmetry, batch_size, order,
                      pad, backend, with_kernel, filtered, transform=None):
    symmetry = check_int(symmetry, "symmetry", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    order = _check_order(order)
    pad = _check_pad(pad)
    poses = _check_poses(poses, None)
    bk = resolve_backend(backend, particles if hasattr(particles, "ndim") else None)
    xp = bk.xp
    shape, batches = _batches(particles, len(poses), batch_size, xp)
    box = _check_box(shape)
    n_channels = shape[0]
    psf_dev = _prepare_psf(xp, psf, n_channels, box)
    acc = _Accumulator(bk, box, n_channels, psf_dev, pad=pad, order=order, n_groups=n_groups,
                       with_kernel=with_kernel, filtered=filtered)
    rotations = poses.rotations
    translations = poses.translations
    tr = None if transform is None else (lambda batch: transform(batch, acc, psf_dev))
    workers = 1 if bk.is_gpu else min(_MAX_THREADS, os.cpu_count() or 1)
    with contextlib.ExitStack() as stack:
        pool = None
        if workers > 1:
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=workers))
        for sl, batch in batches:
            acc.add_batch(batch, rotations[sl], translations[sl], groups[sl], transform=tr,
                          pool=pool)
    results = []
    for g in range(n_groups):
        count = int(acc.counts[g])
        if count == 0:
            raise ValueError(f"group {g} holds no particle: give at least one per half")
        b = (acc.b[g] / count).astype(xp.float32)
        k = None
        if acc.kernel is not None:
            p = acc.p
            k = (acc.kernel[g] / count).astype(xp.float32).reshape(n_channels, p, p, p // 2 + 1)
        b, k = _symmetrize(bk, b, k, symmetry)
        results.append((b, k, count))
    return results, (box,) * 3, symmetry


# =====================================================================================
# public: sums
# =====================================================================================


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
    n = len(_check_poses(poses, None))
    groups = np.zeros(n, dtype=np.int64)
    (res,), shape, symmetry = _run_accumulation(
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
    n = len(_check_poses(poses, None))
    labels = half_split(n, seed=seed) if halves is None else np.asarray(halves)
    if labels.shape != (n,) or not np.isin(labels, (0, 1)).all():
        raise ValueError(
            f"halves must hold one 0 or 1 per particle ({n}), got shape {labels.shape}"
        )
    res, shape, symmetry = _run_accumulation(
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
    sums = _check_sums(sums)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    order = _check_order(order)
    if not hasattr(particles, "ndim") or particles.ndim not in (4, 5):
        raise ValueError(
            "particles must be an array (M, C, D, D, D) or (M, D, D, D), got "
            f"{getattr(particles, 'shape', type(particles).__name__)}"
        )
    arr = particles if particles.ndim == 5 else particles[:, None]
    m = int(arr.shape[0])
    old_poses = _check_poses(old_poses, m)
    new_poses = _check_poses(new_poses, m)
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
    psf_dev = _prepare_psf(xp, psf, sums.n_channels, box)
    p = sums.grid_shape[0]
    acc = _Accumulator(bk, box, sums.n_channels, psf_dev, pad=p / box, order=order,
                       n_groups=1 if rebuild else 2, with_kernel=True, filtered=True)
    if acc.p != p:  # pragma: no cover - round(P / D * D) == P
        raise ValueError(f"cannot rebuild the computation grid {p} of the sums")
    workers = 1 if bk.is_gpu else min(_MAX_THREADS, os.cpu_count() or 1)
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
        b, k = _symmetrize(bk, b, k, sums.symmetry)
        return ReconstructionSums(b, k, sums.n_particles, sums.shape, sums.symmetry)
    delta_b = (acc.b[0] - acc.b[1]) / n
    delta_k = ((acc.kernel[0] - acc.kernel[1]) / n).reshape(c, p, p, p // 2 + 1)
    delta_b, delta_k = _symmetrize(bk, delta_b, delta_k, sums.symmetry)
    b = (sums.backprojection.astype(xp.float64) + delta_b).astype(xp.float32)
    k = (sums.kernel.astype(xp.float64) + delta_k).astype(xp.float32)
    return ReconstructionSums(b, k, sums.n_particles, sums.shape, sums.symmetry)


# =====================================================================================
# public: solvers
# =====================================================================================


def _check_sums(sums) -> ReconstructionSums:
    if not isinstance(sums, ReconstructionSums):
        raise ValueError(
            f"sums must be a ReconstructionSums (from precompute_sums), got {type(sums).__name__}"
        )
    return sums


def _crop(xp, volume, box: int):
    if volume.shape[-1] == box:
        return volume
    return _fit_to(xp, volume, (box, box, box))


def reconstruct_tikhonov(sums: ReconstructionSums, *, weight=3e-2):
    """Closed-form reconstruction with a quadratic gradient penalty (Fortun et al. 2018 eq. 6).

    Solves ``min_x 1/(2N) sum_i ||y_i - H_i x||^2 + w/2 ||G x||^2`` (``G`` the periodic
    forward-difference gradient): ``x^ = B / (K + w |G^|^2)``.

    Parameters
    ----------
    sums : ReconstructionSums
    weight : float or sequence of float, default 3e-2
        ``w >= 0`` (per mean particle; one value or one per channel).  0 is a plain
        inverse filter, defined only where ``K > 0``.

    Returns
    -------
    ndarray, float32, shape (C, D, D, D)
        On the backend of the sums.
    """
    sums = _check_sums(sums)
    bk = resolve_backend(None, sums.backprojection)
    xp = bk.xp
    w = _check_weight(weight, sums.n_channels)
    shape = sums.grid_shape
    bhat = bk.rfftn(sums.backprojection, axes=AXES3)
    wk = xp.asarray(w, dtype=xp.float32)[:, None, None, None]
    den = _nonnegative(xp, sums.kernel) + wk * _gradient_symbol(xp, shape)
    safe = den > 0
    xhat = xp.where(safe, bhat / xp.where(safe, den, 1), 0).astype(xp.complex64)
    x = bk.irfftn(xhat, s=shape, axes=AXES3).astype(xp.float32)
    return _crop(xp, x, sums.shape[0])


# ---------------------------------------------------------------- operators L, L^T
# Split variables are stored component first, (M, *lead, P, P, P), so that each component
# is a contiguous volume.  Differences are periodic and written with slices (no rolls).


def _index(ndim: int, axis: int, sl: slice):
    index = [slice(None)] * ndim
    index[axis] = sl
    return tuple(index)


def _fdiff(xp, x, axis: int, out=None):
    """Periodic forward difference ``x(i + 1) - x(i)`` along ``axis``."""
    out = xp.empty_like(x) if out is None else out
    nd = x.ndim
    xp.subtract(x[_index(nd, axis, slice(1, None))], x[_index(nd, axis, slice(0, -1))],
                out=out[_index(nd, axis, slice(0, -1))])
    xp.subtract(x[_index(nd, axis, slice(0, 1))], x[_index(nd, axis, slice(-1, None))],
                out=out[_index(nd, axis, slice(-1, None))])
    return out


def _bdiff(xp, x, axis: int, out=None):
    """Periodic backward difference ``x(i) - x(i - 1)``; ``(D^+)^T = -D^-``."""
    out = xp.empty_like(x) if out is None else out
    nd = x.ndim
    xp.subtract(x[_index(nd, axis, slice(1, None))], x[_index(nd, axis, slice(0, -1))],
                out=out[_index(nd, axis, slice(1, None))])
    xp.subtract(x[_index(nd, axis, slice(0, 1))], x[_index(nd, axis, slice(-1, None))],
                out=out[_index(nd, axis, slice(0, 1))])
    return out


_PAIRS = ((0, 1), (0, 2), (1, 2))


def _apply_l(xp, x, regularizer: str):
    """``L x`` for volumes (*lead, P, P, P): gradient (3, ...) or Hessian (6, ...).

    Gradient: forward differences ``D_a^+``.  Hessian: ``D_a^- D_a^+`` on the diagonal
    (the centred second difference) and ``sqrt2 D_a^+ D_b^+`` for the three mixed terms,
    so that the Euclidean norm over the 6 components is the Frobenius norm of the matrix.
    """
    axes = (-3, -2, -1)
    m = 3 if regularizer == "tv" else 6
    out = xp.empty((m,) + tuple(x.shape), dtype=x.dtype)
    if regularizer == "tv":
        for k, a in enumerate(axes):
            _fdiff(xp, x, a, out=out[k])
        return out
    fwd = [_fdiff(xp, x, a) for a in axes]
    for k, a in enumerate(axes):
        _bdiff(xp, fwd[k], a, out=out[k])
    for k, (i, j) in enumerate(_PAIRS):
        _fdiff(xp, fwd[j], axes[i], out=out[3 + k])
    out[3:] *= x.dtype.type(_SQRT2)
    return out


def _apply_lt(xp, u, regularizer: str):
    """Adjoint ``L^T u`` for ``u`` (M, *lead, P, P, P)."""
    axes = (-3, -2, -1)
    tmp = xp.empty_like(u[0])
    if regularizer == "tv":
        out = xp.zeros_like(u[0])
        for k, a in enumerate(axes):
            out -= _bdiff(xp, u[k], a, out=tmp)
        return out
    out = xp.zeros_like(u[0])
    tmp2 = xp.empty_like(u[0])
    for k, a in enumerate(axes):  # D^- D^+ is symmetric
        out += _bdiff(xp, _fdiff(xp, u[k], a, out=tmp), a, out=tmp2)
    mixed = xp.zeros_like(u[0])
    for k, (i, j) in enumerate(_PAIRS):  # (D_i^+ D_j^+)^T = D_j^- D_i^-
        mixed += _bdiff(xp, _bdiff(xp, u[3 + k], axes[i], out=tmp), axes[j], out=tmp2)
    mixed *= u.dtype.type(_SQRT2)
    out += mixed
    return out


def _l_symbol(xp, shape, regularizer: str):
    """``|L^|^2`` on the rfft half grid: ``s`` (gradient) or ``s^2`` (Hessian),
    ``s = sum_a 4 sin^2(pi k_a)``."""
    s = _gradient_symbol(xp, shape)
    return s if regularizer == "tv" else s * s


# ---------------------------------------------------------------- proximal steps


def _soft(xp, e, tau):
    return xp.sign(e) * xp.maximum(xp.abs(e) - tau, 0)


def _prox_nuclear_sym3(xp, a, tau):
    """Proximal step of ``tau ||.||_*`` on symmetric 3x3 matrices, vectorised.

    ``a`` is (6, M): ``m00, m11, m22, sqrt2 m01, sqrt2 m02, sqrt2 m12`` (so that the
    Euclidean norm of a column is the Frobenius norm of its matrix); ``tau`` broadcasts to
    (M,).  The eigenvalues ``e`` are soft-thresholded: ``sum_k s(e_k) v_k v_k^T`` with
    ``s(e) = sign(e) max(|e| - tau, 0)``.  Returns the thresholded matrices (6, M) in the
    same layout and their nuclear norms (M,).

    Closed form: eigenvalues by the trigonometric formula on the traceless part; only the
    eigenvector of the eigenvalue farthest from the other two is computed (cross product of
    two rows of ``A - e I``, the largest of the three); on the plane orthogonal to it the
    spectral function is the interpolation ``alpha I + beta (A - m I)`` through the two
    remaining eigenvalues, whose slope ``beta`` is a divided difference of ``s`` (in [0, 1],
    so equal eigenvalues cause no division by zero).  Exact to float32 precision against
    ``numpy.linalg.eigh``, degenerate eigenvalues included; a matrix whose Frobenius norm
    is <= tau maps exactly to 0.
    """
    dtype = a.dtype
    m00, m11, m22 = a[0], a[1], a[2]
    inv_sqrt2 = dtype.type(1 / _SQRT2)
    m01, m02, m12 = a[3] * inv_sqrt2, a[4] * inv_sqrt2, a[5] * inv_sqrt2
    q = (m00 + m11 + m22) / 3
    b00, b11, b22 = m00 - q, m11 - q, m22 - q
    p2 = (b00 * b00 + b11 * b11 + b22 * b22 + 2 * (m01 * m01 + m02 * m02 + m12 * m12)) / 6
    p = xp.sqrt(p2)
    det = (b00 * (b11 * b22 - m12 * m12) - m01 * (m01 * b22 - m12 * m02)
           + m02 * (m01 * m12 - b11 * m02))
    pos = p > 0
    r = xp.where(pos, det / xp.where(pos, 2 * p * p2, 1), 0)
    phi = xp.arccos(xp.clip(r, -1, 1)) / 3
    e1 = 2 * p * xp.cos(phi)  # largest (shifted by q)
    e3 = 2 * p * xp.cos(phi + dtype.type(2 * np.pi / 3))  # smallest
    e2 = -e1 - e3
    top = (e1 - e2) >= (e2 - e3)
    iso = xp.where(top, e1, e3)
    ea = xp.where(top, e2, e1)
    eb = xp.where(top, e3, e2)
    r1 = (b00 - iso, m01, m02)
    r2 = (m01, b11 - iso, m12)
    r3 = (m02, m12, b22 - iso)

    def cross(u, v):
        return (u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0])

    best = cross(r1, r2)
    norm = best[0] ** 2 + best[1] ** 2 + best[2] ** 2
    for other in (cross(r1, r3), cross(r2, r3)):
        n_other = other[0] ** 2 + other[1] ** 2 + other[2] ** 2
        use = n_other > norm
        best = tuple(xp.where(use, o, c) for o, c in zip(other, best))
        norm = xp.where(use, n_other, norm)
    nz = norm > 0
    inv = xp.where(nz, 1 / xp.sqrt(xp.where(nz, norm, 1)), 0)
    v0, v1, v2 = (c * inv for c in best)
    f_iso = _soft(xp, iso + q, tau)
    f_a = _soft(xp, ea + q, tau)
    f_b = _soft(xp, eb + q, tau)
    alpha = (f_a + f_b) / 2
    gap = ea - eb
    mid = (ea + eb) / 2
    has_gap = gap > 0
    beta = xp.where(has_gap, (f_a - f_b) / xp.where(has_gap, gap, 1),
                    (xp.abs(mid + q) > tau).astype(dtype))
    gamma = f_iso - alpha - beta * (iso - mid)
    diag = alpha - beta * mid
    out = xp.empty_like(a)
    out[0] = beta * b00 + diag + gamma * v0 * v0
    out[1] = beta * b11 + diag + gamma * v1 * v1
    out[2] = beta * b22 + diag + gamma * v2 * v2
    s2 = dtype.type(_SQRT2)
    out[3] = s2 * (beta * m01 + gamma * v0 * v1)
    out[4] = s2 * (beta * m02 + gamma * v0 * v2)
    out[5] = s2 * (beta * m12 + gamma * v1 * v2)
    nuclear = xp.abs(f_iso) + xp.abs(f_a) + xp.abs(f_b)
    return out, nuclear


#: Columns per block of the Hessian prox on the CPU: its ~100 temporaries then stay in
#: cache (measured 2.8x faster than whole volumes of 64^3).
_PROX_BLOCK = 16384


def _prox_columns(xp, cols, norms, tau, regularizer):
    """Prox on columns (M, n) with their norms (n,) and thresholds (n,)."""
    if regularizer == "tv":
        pos = norms > tau
        shrink = xp.where(pos, 1 - tau / xp.where(pos, norms, 1), 0)
        return cols * shrink, xp.maximum(norms - tau, 0)
    n = cols.shape[1]
    if xp is not np or n <= _PROX_BLOCK:
        return _prox_nuclear_sym3(xp, cols, tau)
    out = np.empty_like(cols)
    values = np.empty(n, dtype=cols.dtype)
    for start in range(0, n, _PROX_BLOCK):
        sl = slice(start, min(n, start + _PROX_BLOCK))
        out[:, sl], values[sl] = _prox_nuclear_sym3(np, cols[:, sl], tau[sl])
    return out, values


def _prox(xp, a, tau, regularizer: str):
    """Proximal step of ``tau phi`` on ``a`` (M, *lead, P, P, P), ``tau`` of shape lead.

    Returns ``(u, phi(u))`` with ``phi(u)`` per lead entry (float64).  Voxels whose
    vector has a norm <= tau map to 0 for both regularisers (the Frobenius norm bounds
    every eigenvalue): when they are the majority, only the others are processed.
    """
    m = a.shape[0]
    lead = tuple(a.shape[1:-3])
    nl = int(np.prod(lead)) if lead else 1
    p3 = int(np.prod(a.shape[-3:]))
    flat = a.reshape(m, nl * p3)
    norms = xp.sqrt(xp.einsum("ij,ij->j", flat, flat))
    tau_l = xp.asarray(tau, dtype=a.dtype).reshape(nl)
    active = (norms.reshape(nl, p3) > tau_l[:, None]).ravel()
    n_active = int(active.sum())
    out = xp.zeros_like(flat)
    phi = np.zeros(nl)
    if n_active == 0:
        return out.reshape(a.shape), phi.reshape(lead)
    if n_active > flat.shape[1] // 2:
        t = xp.broadcast_to(tau_l[:, None], (nl, p3)).ravel()
        res, values = _prox_columns(xp, flat, norms, t, regularizer)
        out = res
        phi = to_numpy(values.reshape(nl, p3).sum(axis=1, dtype=xp.float64))
    else:
        idx = xp.flatnonzero(active)
        t = xp.full(idx.shape, tau_l[0]) if nl == 1 else tau_l[idx // p3]
        res, values = _prox_columns(xp, xp.take(flat, idx, axis=1), norms[idx], t, regularizer)
        for k in range(m):  # (2D fancy assignment is much slower in NumPy)
            out[k][idx] = res[k]
        if nl == 1:
            phi = np.array([float(values.sum(dtype=xp.float64))])
        else:
            phi = to_numpy(xp.bincount(idx // p3, weights=values.astype(xp.float64),
                                       minlength=nl))
    return out.reshape(a.shape), phi.reshape(lead)


# ---------------------------------------------------------------- ADMM core


def _admm_core(bk: Backend, bhat, kernel, shape, weight, *, regularizer, iterations, rho,
               positivity, state, callback=None, adapt=True):
    """ADMM on normalised data.

    ``bhat`` (*lead, P, P, P//2+1) complex64 is the spectrum of ``b``; ``kernel`` broadcasts
    to it; ``weight`` and ``rho`` broadcast to ``lead``.  ``state`` is None or the tuple
    ``(x, u, v, du, dv)`` (split variables component first).  Returns the final tuple, the
    final ``rho`` and the per-iteration energies and residuals (arrays (n_it, *lead)).
    """
    xp = bk.xp
    lead = tuple(bhat.shape[:-3])
    shape = tuple(shape)
    ncomp = 3 if regularizer == "tv" else 6
    vol_shape = lead + shape
    expand = (Ellipsis, None, None, None)
    weight = np.broadcast_to(np.asarray(weight, dtype=np.float64), lead)
    rho = np.broadcast_to(np.asarray(rho, dtype=np.float64), lead).copy()
    lsym = _l_symbol(xp, shape, regularizer)
    rfw = _rfft_weights(xp, shape)
    nvox = float(np.prod(shape))
    if state is None:
        x = xp.zeros(vol_shape, dtype=xp.float32)
        u = xp.zeros((ncomp,) + vol_shape, dtype=xp.float32)
        v = xp.zeros(vol_shape, dtype=xp.float32)
        du = xp.zeros_like(u)
        dv = xp.zeros_like(v)
    else:
        x, u, v, du, dv = state
    energies, primal, dual = [], [], []
    sum3 = (-3, -2, -1)

    def denominator(rho_):
        r = xp.asarray(rho_, dtype=xp.float32)[expand]
        return kernel + r * (lsym + (1 if positivity else 0))

    den = denominator(rho)
    for it in range(iterations):
        rho_dev = xp.asarray(rho, dtype=xp.float32)[expand]
        rhs = _apply_lt(xp, u - du, regularizer)
        if positivity:
            rhs += v - dv
        xhat = bk.rfftn(rhs, axes=AXES3)
        xhat *= rho_dev
        xhat += bhat
        xhat /= den
        x = bk.irfftn(xhat, s=shape, axes=AXES3).astype(xp.float32, copy=False)
        lx = _apply_l(xp, x, regularizer)
        u_new, phi = _prox(xp, lx + du, xp.asarray(weight / rho, dtype=xp.float32),
                           regularizer)
        lx -= u_new  # primal residual of the regulariser split
        du += lx
        prim = (lx * lx).sum(axis=sum3, dtype=xp.float64).sum(axis=0)
        u -= u_new
        dual_sq = (u * u).sum(axis=sum3, dtype=xp.float64).sum(axis=0)
        u = u_new
        if positivity:
            v_new = xp.maximum(x + dv, 0)
            r_v = x - v_new
            dv += r_v
            prim = prim + (r_v * r_v).sum(axis=sum3, dtype=xp.float64)
            v -= v_new
            dual_sq = dual_sq + (v * v).sum(axis=sum3, dtype=xp.float64)
            v = v_new
        # energy: 1/2 <x, K x> - <x, b> (Parseval on the half spectrum) + w phi(u)
        power = xhat.real * xhat.real
        power += xhat.imag * xhat.imag
        power *= rfw
        quad = (kernel * power).sum(axis=sum3, dtype=xp.float64)
        cross = xhat.real * bhat.real
        cross += xhat.imag * bhat.imag
        cross *= rfw
        lin = cross.sum(axis=sum3, dtype=xp.float64)
        energy = to_numpy(0.5 * quad - lin) / nvox + weight * phi
        prim_n = np.sqrt(to_numpy(prim))
        dual_n = rho * np.sqrt(to_numpy(dual_sq))
        energies.append(energy)
        primal.append(prim_n)
        dual.append(dual_n)
        if callback is not None:
            callback(it, energy)
        # residual balancing (Boyd et al. 2011, sec. 3.4.1), every 10 iterations
        if adapt and (it + 1) % 10 == 0 and it + 1 < iterations:
            factor = np.where(prim_n > 10 * dual_n, 2.0,
                              np.where(dual_n > 10 * prim_n, 0.5, 1.0))
            if np.any(factor != 1):
                rho = rho * factor
                f_dev = xp.asarray(1 / factor, dtype=xp.float32)[expand]
                du *= f_dev
                dv *= f_dev
                den = denominator(rho)
    return (x, u, v, du, dv), rho, np.array(energies), np.array(primal), np.array(dual)


def _data_scale(xp, b):
    """Per-channel intensity unit: max of the back-projection (1-homogeneous in the data)."""
    lead = b.shape[:-3]
    m = to_numpy(xp.abs(b).reshape(lead + (-1,)).max(axis=-1)).astype(np.float64)
    return np.where(m > 0, m, 1.0)


def _check_regularizer(regularizer):
    if regularizer not in _REGULARIZERS:
        raise ValueError(f"regularizer must be 'tv' or 'hessian', got {regularizer!r}")
    return regularizer


def _default_rho(weight):
    """Penalty parameter: the weight (bounded away from 0).

    Measured (relative distance to the minimiser after 100 iterations, TV and Hessian,
    weights 3e-4 to 1e-2, two datasets): ``rho = w`` is the best or within 30 % of the
    best of ``(0.1, 0.3, 1, 2) w`` and of fixed values 1e-3, 1e-2.
    """
    return np.maximum(np.asarray(weight, dtype=np.float64), 1e-5)


def reconstruct_admm(sums: ReconstructionSums, *, regularizer: str = "hessian", weight=1e-3,
                     iterations: int = 100, rho=None, positivity: bool = True,
                     init=None, callback: Callable | None = None) -> ADMMResult:
    """Known-pose reconstruction with TV or Hessian-Schatten regularisation (ADMM).

    Solves ``min_{x >= 0} 1/(2N) sum_i ||y_i - H_i x||^2 + w s phi(L x)`` on data in units
    of ``s = max(b)`` per channel (Fortun et al. 2017 eq. 4-11).

    Parameters
    ----------
    sums : ReconstructionSums
    regularizer : {"hessian", "tv"}
        Hessian Schatten-1 (nuclear) norm (Fortun et al. 2017 eq. 5) or isotropic total variation.
    weight : float or sequence of float, default 1e-3
        ``w >= 0`` per mean particle, for data normalised to ``max(b) = 1``; one value or
        one per channel.  Good values on the Eloy et al. 2023 setting: 3e-3 to 1e-2 (TV), 1e-3 to
        3e-3 (Hessian); ``reconstruct(weight="auto")`` chooses it.
    iterations : int, default 100
        ADMM iterations (each costs one FFT pair whatever the number of particles).
    rho : float or sequence of float, optional
        Initial penalty parameter (default ``max(w, 1e-5)``); adapted every 10
        iterations by residual balancing.
    positivity : bool, default True
        Constrain ``x >= 0``.
    init : ADMMState or ndarray (C, D, D, D), optional
        Warm start: a previous state (continues with its split and dual variables, e.g.
        after the poses changed; with the same weight it also keeps its adapted ``rho``,
        with another weight ``rho`` restarts from the default and the scaled duals are
        rescaled so that the multipliers carry over), or an initial volume in particle
        units.
    callback : callable, optional
        ``callback(iteration, energy)`` after each iteration (``energy`` an array (C,),
        normalised units); for progress reports.

    Returns
    -------
    ADMMResult
    """
    sums = _check_sums(sums)
    regularizer = _check_regularizer(regularizer)
    iterations = check_int(iterations, "iterations", minimum=1)
    bk = resolve_backend(None, sums.backprojection)
    xp = bk.xp
    c = sums.n_channels
    w = _check_weight(weight, c)
    shape = sums.grid_shape
    scale = _data_scale(xp, sums.backprojection)
    b = sums.backprojection / xp.asarray(scale, dtype=xp.float32)[:, None, None, None]
    bhat = bk.rfftn(b.astype(xp.float32), axes=AXES3).astype(xp.complex64)
    r0 = _default_rho(w) if rho is None else _check_weight(rho, c, "rho")
    if np.any(r0 <= 0):
        raise ValueError(f"rho must be > 0, got {rho!r}")
    state = None
    if init is not None:
        state, r_state, w_state = _initial_state(xp, init, sums, scale, regularizer)
        if r_state is not None:
            if rho is None and np.allclose(w_state, w):
                r0 = r_state  # a continuation keeps its adapted penalty
            # the multipliers rho * d carry over: rescale the scaled duals to the new rho
            f = xp.asarray(r_state / r0, dtype=xp.float32)[:, None, None, None]
            x0, u0, v0, du0, dv0 = state
            state = (x0, u0, v0, du0 * f, dv0 * f)
    (x, u, v, du, dv), rho_f, energies, primal, dual = _admm_core(
        bk, bhat, _nonnegative(xp, sums.kernel), shape, w, regularizer=regularizer,
        iterations=iterations, rho=r0, positivity=bool(positivity), state=state, callback=callback,
    )
    final = v if positivity else x
    sc = xp.asarray(scale, dtype=xp.float32)[:, None, None, None]
    volume = _crop(xp, final * sc, sums.shape[0]).astype(xp.float32)
    energy_phys = (energies * scale[None, :] ** 2).sum(axis=1)
    agg = lambda r: np.sqrt((r**2).sum(axis=1))  # noqa: E731
    return ADMMResult(
        volume=volume,
        state=ADMMState(x, u, v, du, dv, rho_f, scale, regularizer, w),
        energies=energy_phys,
        primal_residuals=agg(primal),
        dual_residuals=agg(dual),
        weight=w,
        regularizer=regularizer,
    )


def _initial_state(xp, init, sums, scale, regularizer):
    shape = sums.grid_shape
    c = sums.n_channels
    if isinstance(init, ADMMState):
        if init.regularizer != regularizer:
            raise ValueError(
                f"init is a {init.regularizer!r} state but regularizer is {regularizer!r}: warm "
                "start with the same regulariser"
            )
        if tuple(init.x.shape) != (c,) + shape:
            raise ValueError(
                f"init state has volumes of shape {tuple(init.x.shape)}, expected {(c,) + shape}"
            )
        f = xp.asarray(init.scale / scale, dtype=xp.float32)[:, None, None, None]
        return ((xp.asarray(init.x) * f, xp.asarray(init.u) * f, xp.asarray(init.v) * f,
                 xp.asarray(init.dual_u) * f, xp.asarray(init.dual_v) * f),
                np.asarray(init.rho, dtype=np.float64), np.asarray(init.weight))
    vol = xp.asarray(init, dtype=xp.float32)
    if vol.ndim == 3:
        vol = vol[None]
    if tuple(vol.shape) != (c,) + tuple(sums.shape):
        raise ValueError(
            f"init must be an ADMMState or a volume of shape {(c,) + tuple(sums.shape)}, got "
            f"{tuple(vol.shape)}"
        )
    if not bool(xp.isfinite(vol).all()):
        raise ValueError("init contains NaN or infinite values")
    x = _fit_to(xp, vol, shape) / xp.asarray(scale, dtype=xp.float32)[:, None, None, None]
    u = _apply_l(xp, x, regularizer)
    v = xp.maximum(x, 0)
    return (x, u, v, xp.zeros_like(u), xp.zeros_like(v)), None, None


# =====================================================================================
# public: baselines
# =====================================================================================


def average(particles, poses, *, symmetry: int = 1, batch_size: int = 16, order: int = 1,
            backend=None):
    """Align and average: ``(1/N) sum_i R_i^T T_{-t_i} y_i`` (the "Average" of Fortun et al. 2017).

    Parameters
    ----------
    particles, poses, symmetry, batch_size, order, backend
        As in :func:`precompute_sums` (no PSF: the average is not deconvolved).

    Returns
    -------
    ndarray, float32, shape (C, D, D, D)
    """
    n = len(_check_poses(poses, None))
    (res,), shape, _ = _run_accumulation(
        particles, poses, np.ones((1, 1, 1), np.float32), groups=np.zeros(n, np.int64),
        n_groups=1, symmetry=symmetry, batch_size=batch_size, order=order, pad=1.0,
        backend=backend, with_kernel=False, filtered=False,
    )
    return res[0]


def _deconvolve_transform(weight, iterations):
    """Per-particle TV deconvolution in the particle frame (the PSF is not rotated there).

    Returns ``transform(batch, acc, psf) -> (n, C, D, D, D)`` for :class:`_Accumulator`.
    """

    def transform(batch, acc, psf):
        bk = acc.bk
        xp = bk.xp
        batch = _finite_batch(xp, batch)
        w = _check_weight(weight, acc.n_channels)
        shape = tuple(batch.shape[-3:])
        h = xp.fft.ifftshift(_fit_to(xp, psf, shape), axes=AXES3)
        otf = bk.rfftn(h, axes=AXES3).astype(xp.complex64)  # (C, D, D, D//2+1)
        kernel = (otf.real**2 + otf.imag**2).astype(xp.float32)
        b = bk.irfftn(bk.rfftn(batch, axes=AXES3) * xp.conj(otf), s=shape, axes=AXES3)
        scale = _data_scale(xp, b)  # (n, C)
        b = b / xp.asarray(scale, dtype=xp.float32)[..., None, None, None]
        bhat = bk.rfftn(b.astype(xp.float32), axes=AXES3).astype(xp.complex64)
        ww = np.broadcast_to(w[None, :], scale.shape)
        (x, u, v, du, dv), *_ = _admm_core(
            bk, bhat, kernel, shape, ww, regularizer="tv", iterations=iterations,
            rho=_default_rho(ww), positivity=True, state=None,
        )
        return v * xp.asarray(scale, dtype=xp.float32)[..., None, None, None]

    return transform


def deconv_average(particles, poses, psf, *, weight=3e-3, iterations: int = 50,
                   symmetry: int = 1, batch_size: int = 16, order: int = 1, backend=None):
    """Deconvolve each particle (TV, positivity), then align and average (Fortun et al. 2017 baseline).

    Parameters
    ----------
    particles, poses, psf, symmetry, batch_size, order, backend
        As in :func:`precompute_sums`.
    weight : float or sequence of float, default 3e-3
        TV weight of each deconvolution (data normalised to ``max(h^T * y) = 1`` per
        particle); one value or one per channel.
    iterations : int, default 50
        ADMM iterations per particle (the particles of a batch are solved together).

    Returns
    -------
    ndarray, float32, shape (C, D, D, D)

    Notes
    -----
    The cost grows with ``N`` (one deconvolution per particle), unlike the joint
    reconstruction: this is the baseline whose time Fortun et al. 2017 Fig. 3 compares.
    """
    n = len(_check_poses(poses, None))
    iterations = check_int(iterations, "iterations", minimum=1)
    _check_weight(weight, np.atleast_1d(np.asarray(weight, dtype=float)).size)
    (res,), _, _ = _run_accumulation(
        particles, poses, psf, groups=np.zeros(n, np.int64), n_groups=1, symmetry=symmetry,
        batch_size=batch_size, order=order, pad=1.0, backend=backend, with_kernel=False,
        filtered=False, transform=_deconvolve_transform(weight, iterations),
    )
    return res[0]


# =====================================================================================
# public: the whole reconstruction
# =====================================================================================


def _solve(method, sums, weight, iterations, init=None):
    """One solve on sums; returns (volume on device, ADMM state or None)."""
    if method == "tikhonov":
        return reconstruct_tikhonov(sums, weight=weight), None
    res = reconstruct_admm(sums, regularizer=method, weight=weight, iterations=iterations,
                           init=init)
    return res.volume, res.state


def _half_fsc(v1, v2):
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


def _misfit(volume, sums: ReconstructionSums):
    """Data misfit ``1/2 <x, K x> - <x, b>`` of ``volume`` (C, D, D, D) on ``sums``, per
    channel: ``1/(2N) sum_i ||y_i - H_i x||^2`` up to a constant (Parseval, half grid)."""
    bk = resolve_backend(None, sums.backprojection)
    xp = bk.xp
    shape = sums.grid_shape
    x = _fit_to(xp, xp.asarray(volume, dtype=xp.float32), shape)
    xhat = bk.rfftn(x, axes=AXES3)
    bhat = bk.rfftn(sums.backprojection, axes=AXES3)
    w = _rfft_weights(xp, shape)
    quad = (_nonnegative(xp, sums.kernel) * (xhat.real**2 + xhat.imag**2) * w).sum(
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


def _select(weights, scores, criterion: str):
    """Per channel: the weight for the full set from the held-out misfit of the halves
    (its interpolated minimum, scaled from a half set to the full set), or the weight of
    the largest half-map resolution (ties to the larger weight)."""
    if criterion == "cross-validation":
        return _HALF_TO_FULL * np.array(
            [_misfit_minimum(weights, scores[:, c]) for c in range(scores.shape[1])])
    # weights are sorted from large to small: argmax returns the first (largest) of ties
    return weights[np.argmax(np.round(scores, 6), axis=0)]


_CRITERIA = ("cross-validation", "fsc")


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
    poses = _check_poses(poses, None)
    n = len(poses)
    iterations = check_int(iterations, "iterations", minimum=1)
    symmetry = check_int(symmetry, "symmetry", minimum=1)
    if criterion not in _CRITERIA:
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
        weight = _DEFAULT_WEIGHT[method]
    grid = None
    if auto:
        grid = np.asarray(_AUTO_WEIGHTS[method] if weights is None else weights, dtype=float)
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

    if method in ("average", "deconv-average"):
        if method == "average":
            groups, _, _ = _run_accumulation(
                particles, poses, np.ones((1, 1, 1), np.float32), with_kernel=False,
                filtered=False, pad=1.0, **common)
            w_used = np.full(groups[0][0].shape[0], np.nan)
        else:
            groups, _, _ = _run_accumulation(
                particles, poses, psf, with_kernel=False, filtered=False, pad=1.0,
                transform=_deconvolve_transform(weight, max(1, iterations // 2)), **common)
            w_used = _check_weight(weight, groups[0][0].shape[0])
        log(f"{method}: {n} particles aligned and averaged")
        maps = [to_numpy(g[0]).astype(np.float32) for g in groups]
        counts = [g[2] for g in groups]
        volume = sum(m * (c / n) for m, c in zip(maps, counts)).astype(np.float32)
    else:
        groups, shape, _ = _run_accumulation(particles, poses, psf, with_kernel=True,
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
                sweep_mis[k] = _misfit(vols[0], sums[1]) + _misfit(vols[1], sums[0])
                _, sweep_res[k] = _half_fsc(to_numpy(vols[0]), to_numpy(vols[1]))
                log(f"weight {wk:.3g}: held-out misfit "
                    + ", ".join(f"{m:.6g}" for m in sweep_mis[k]) + "; half-map resolution "
                    + ", ".join(f"{r:.3f}" for r in sweep_res[k]) + " cycles/voxel")
            sweep_w = grid
            w_used = _select(grid, sweep_mis if criterion == "cross-validation" else sweep_res,
                             criterion)
            log(f"chosen weight ({criterion}): " + ", ".join(f"{x:.3g}" for x in w_used))
        else:
            w_used = _check_weight(weight, c)
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
        curves, res = _half_fsc(half[0], half[1])
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
