"""Streaming the particles into the sums: PSF filter, shift, back-rotation, kernel, Cn.

:func:`run_accumulation` reads the particles once, in batches, and returns for each group
of particles (one, or the two gold-standard halves) the back-projection ``b`` and the
kernel ``K`` that :class:`~spfluo.algorithms.reconstruct.sums.ReconstructionSums` holds
(the baselines use it without the kernel).

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
"""

from __future__ import annotations

import contextlib
import itertools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from spfluo.algorithms._validation import as_psf, check_int
from spfluo.algorithms.geometry.poses import check_poses
from spfluo.algorithms.backend import AXES3, Backend, resolve_backend
from spfluo.algorithms.fourier import _fit_to, fourier_shift
from spfluo.algorithms.transform import rotate_about_z

__all__ = [
    "MAX_THREADS",
    "Accumulator",
    "run_accumulation",
    "symmetrize",
    "finite_batch",
    "check_order",
    "half_to_full_even",
    "rfft_weights",
]


#: Threads resampling particles in parallel on the CPU (at most).
MAX_THREADS = 8
#: |H|^2 below this fraction of its peak counts as 0 in the kernel (saves the sampling of
#: frequencies outside the OTF support).
_SUPPORT_THRESHOLD = 1e-6
_INTERPOLATION_CORRECTION = True  # fold the trilinear transfer into K (order 1)


# ---------------------------------------------------------------- validation


def check_order(order) -> int:
    """Spline order of the back-rotation and kernel sampling: 1 or 3."""
    if isinstance(order, bool) or order not in (1, 3):
        raise ValueError(f"order must be 1 (trilinear) or 3 (cubic spline), got {order!r}")
    return int(order)


def _check_pad(pad) -> float:
    if not isinstance(pad, (int, float, np.integer, np.floating)) or not (1.0 <= pad <= 3.0):
        raise ValueError(f"pad must be a number in [1, 3] (grid side / box side), got {pad!r}")
    return float(pad)


def finite_batch(xp, batch):
    """A batch of particles as float32 on the device, checked for NaN and infinities."""
    batch = xp.asarray(batch, dtype=xp.float32)
    if not bool(xp.isfinite(batch).all()):
        raise ValueError(
            "particles contain NaN or infinite values: clean them before reconstructing"
        )
    return batch


def particle_batches(particles, n_poses: int, batch_size: int, xp):
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


# ---------------------------------------------------------------- Fourier helpers


def half_to_full_even(xp, half, shape):
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


def rfft_weights(xp, shape):
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


# ---------------------------------------------------------------- accumulation


class Accumulator:
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
        batch = finite_batch(xp, batch)
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


def symmetrize(bk: Backend, b, kernel, n: int):
    """Average ``b`` (C, P, P, P) and ``kernel`` (C, P, P, P//2+1) over Cn, exactly.

    ``b`` is turned in real space, the kernel as a function of frequency (full spectrum,
    centred): both with :func:`~spfluo.algorithms.transform.rotate_about_z` (Fourier
    shears, no interpolation loss).  Linear in ``(b, kernel)``: no clamping here (the
    rotated kernel rings around 0, see :func:`nonnegative`).
    """
    if n == 1:
        return b, kernel
    xp = bk.xp
    b_sym = _average_about_z(bk, b, n)
    if kernel is None:
        return b_sym, None
    shape = tuple(b.shape[-3:])
    full = xp.fft.fftshift(half_to_full_even(xp, kernel, shape), axes=AXES3)
    rotated = _average_about_z(bk, full, n)
    k_sym = xp.fft.ifftshift(rotated, axes=AXES3)[..., : shape[-1] // 2 + 1]
    return b_sym, xp.ascontiguousarray(k_sym)


def run_accumulation(particles, poses, psf, *, groups, n_groups, symmetry, batch_size, order,
                     pad, backend, with_kernel, filtered, transform=None):
    """Stream the particles into the sums of ``n_groups`` groups (``groups`` (N,) int).

    ``with_kernel``: also sample the kernel ``K``; ``filtered``: apply ``h^T`` (the
    baselines do not); ``transform(batch, acc, psf)`` replaces the filter (deconvolution
    baseline).  Returns ``([(b, K or None, count)] per group, (D, D, D), symmetry)``, the
    sums as means over the group (Cn folded in), on the device of the backend.
    """
    symmetry = check_int(symmetry, "symmetry", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    order = check_order(order)
    pad = _check_pad(pad)
    poses = check_poses(poses, None)
    bk = resolve_backend(backend, particles if hasattr(particles, "ndim") else None)
    xp = bk.xp
    shape, batches = particle_batches(particles, len(poses), batch_size, xp)
    box = _check_box(shape)
    n_channels = shape[0]
    psf_dev = as_psf(psf, n_channels, box, xp)
    acc = Accumulator(bk, box, n_channels, psf_dev, pad=pad, order=order, n_groups=n_groups,
                      with_kernel=with_kernel, filtered=filtered)
    rotations = poses.rotations
    translations = poses.translations
    tr = None if transform is None else (lambda batch: transform(batch, acc, psf_dev))
    workers = 1 if bk.is_gpu else min(MAX_THREADS, os.cpu_count() or 1)
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
        b, k = symmetrize(bk, b, k, symmetry)
        results.append((b, k, count))
    return results, (box,) * 3, symmetry
