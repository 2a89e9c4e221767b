"""TODO docstring spfluo/algorithms/scoring/spectra.py."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spfluo.algorithms._validation import (
    as_particles,
    check_float,
    check_int,
)
from spfluo.algorithms.backend import AXES3, Backend, resolve_backend, to_numpy
from spfluo.algorithms.fourier import _fit_to, otf_from_psf
from spfluo.algorithms.reconstruct import (
    _prepare_psf,
)


def _as_psf(xp, psf, n_channels: int):
    arr = xp.asarray(psf)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or min(arr.shape[1:]) < 1:
        raise ValueError(f"psf must have shape (d, d, d) or (C, d, d, d), got shape "
                         f"{tuple(arr.shape)}")
    if arr.shape[0] not in (1, n_channels):
        raise ValueError(f"psf has {arr.shape[0]} channels but the particles have {n_channels}: "
                         "give one PSF per channel (or one for all)")
    if xp.iscomplexobj(arr):
        raise ValueError(f"psf must be real, got dtype {arr.dtype}")
    arr = arr.astype(xp.float32, copy=False)
    if not bool(xp.isfinite(arr).all()):
        raise ValueError("psf contains NaN or infinite values")
    sums = arr.reshape(arr.shape[0], -1).sum(axis=1)
    if bool((sums <= 0).any()):
        raise ValueError("psf must have a positive sum in every channel (a PSF is a non-negative "
                         "kernel): check the file")
    arr = arr / sums[:, None, None, None]
    if arr.shape[0] != n_channels:
        arr = xp.broadcast_to(arr, (n_channels,) + tuple(arr.shape[1:]))
    return arr


@dataclass(frozen=True, eq=False)
class SpectralParticles:
    """Particles reduced to their spectrum on the support of the OTF.

    Built by :meth:`build`; shared by the SGD, the pose searches and the
    annealing method.

    Attributes
    ----------
    box : int
        Particle box side ``D`` (voxels).
    points : ndarray, int, shape (M, 3)
        Frequency indices ``p`` (``(z, y, x)``, ``p / D`` cycles per voxel) of
        the half spectrum (``p_x >= 0``) in the ball ``|p| < D/2`` where
        ``|h^|^2 >= threshold max |h^|^2``.
    weights : ndarray, float32, shape (M,)
        1 on the plane ``p_x = 0``, 2 elsewhere (the half spectrum stands for
        the full one).
    otf : ndarray, complex64, shape (C, M)
        OTF (PSF normalised to unit sum) at the points.
    spectra : ndarray, complex64, shape (N, C, M)
        ``rfftn`` of each particle (box centre at the origin) at the points.
    inv_noise : ndarray, float32, shape (N, C)
        ``1 / s``, ``s`` the noise power per Fourier coefficient estimated
        from the spectrum outside the OTF support.
    band : int
        ``L``: even, ``> 2 max |p|``; the volume grid has ``2 L`` samples.
    """

    box: int
    points: Any
    weights: Any
    otf: Any
    spectra: Any
    inv_noise: Any
    band: int
    backend: Backend

    @property
    def n_particles(self) -> int:
        return int(self.spectra.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.spectra.shape[1])

    @classmethod
    def build(cls, particles, psf, *, support_threshold: float = 1e-3,
              backend: Any = None) -> "SpectralParticles":
        """Reduce particles to their spectrum on the OTF support.

        Parameters
        ----------
        particles : ndarray, shape (N, D, D, D) or (N, C, D, D, D)
            Particles (cubic boxes).
        psf : ndarray, shape (d, d, d) or (C, d, d, d)
            PSF centred at ``d//2`` (normalised to unit sum here).
        support_threshold : float, optional
            Relative threshold on ``|h^|^2`` (default 1e-3).
        backend : Backend or {"cpu", "gpu"}, optional

        Returns
        -------
        SpectralParticles
        """
        bk = resolve_backend(backend, particles)
        xp = bk.xp
        y, _ = as_particles(particles, xp)
        support_threshold = check_float(support_threshold, "support_threshold", low=0.0,
                                         high=1.0, low_inclusive=False)
        n, c, d = int(y.shape[0]), int(y.shape[1]), int(y.shape[2])
        h = _as_psf(xp, psf, c)
        otf = xp.stack([otf_from_psf(h[k], (d, d, d), rfft=True, backend=bk) for k in range(c)])
        power = (otf.real**2 + otf.imag**2).astype(xp.float32)
        ratio = (power / power.reshape(c, -1).max(axis=1)[:, None, None, None]).max(axis=0)
        fz = np.fft.fftfreq(d) * d
        fx = np.fft.rfftfreq(d) * d
        pz, py, px = np.meshgrid(fz, fz, fx, indexing="ij")
        # the rotation-invariant band: the ball |p| < D/2 (no Nyquist plane, no corner)
        nyquist = np.sqrt(pz**2 + py**2 + px**2) >= d / 2
        ratio_h = to_numpy(ratio)
        keep = (ratio_h >= support_threshold) & ~nyquist
        if keep.sum() < 4:
            raise ValueError(
                f"the OTF support holds only {int(keep.sum())} frequencies at "
                f"support_threshold={support_threshold:g}: lower it or check the PSF"
            )
        idx = np.nonzero(keep)
        points = np.stack([pz[idx], py[idx], px[idx]], axis=1).astype(np.int64)
        outside = ratio_h < 1e-6 * support_threshold
        outside[0, 0, 0] = False
        weights = np.where(points[:, 2] == 0, 1.0, 2.0).astype(np.float32)
        flat = np.ravel_multi_index(idx, ratio_h.shape)
        flat_x = xp.asarray(flat)
        spectra = xp.empty((n, c, flat.size), dtype=xp.complex64)
        noise = np.empty((n, c), dtype=np.float64)
        out_x = xp.asarray(np.ravel_multi_index(np.nonzero(outside), ratio_h.shape))
        batch = max(1, int((1 << 25) // (c * d**3)))
        for start in range(0, n, batch):
            sl = slice(start, min(n, start + batch))
            spec = bk.rfftn(xp.fft.ifftshift(y[sl], axes=AXES3), axes=AXES3)
            spec = spec.reshape(spec.shape[0], c, -1)
            spectra[sl] = spec[:, :, flat_x]
            if int(out_x.size) >= 16:
                tail = spec[:, :, out_x]
                noise[sl] = to_numpy((tail.real**2 + tail.imag**2).mean(axis=-1))
            else:  # no frequency outside the support: the corners of the cube instead
                shell = xp.asarray(np.ravel_multi_index(np.nonzero(nyquist), ratio_h.shape))
                tail = spec[:, :, shell]
                noise[sl] = to_numpy((tail.real**2 + tail.imag**2).mean(axis=-1))
        # a noiseless particle would give an infinite weight: floor at 1e-6 of the signal power
        signal = to_numpy((spectra.real**2 + spectra.imag**2).mean(axis=-1)).astype(np.float64)
        noise = np.maximum(noise, 1e-6 * signal + 1e-30)
        pmax = float(np.sqrt((points.astype(np.float64) ** 2).sum(axis=1)).max())
        band = max(8, int(2 * math.floor(pmax) + 2))
        return cls(
            box=d,
            points=xp.asarray(points),
            weights=xp.asarray(weights),
            otf=otf.reshape(c, -1)[:, flat_x].astype(xp.complex64),
            spectra=spectra,
            inv_noise=xp.asarray((1.0 / noise).astype(np.float32)),
            band=band,
            backend=bk,
        )

@dataclass(frozen=True, eq=False)
class ParticleSpectra:
    """Particles reduced to their spectra on the support of the OTF (computed once).

    Attributes
    ----------
    values : ndarray, complex64, shape (N, C, M)
        ``y^_i(k)`` of every particle and channel at the ``M`` support frequencies, for the
        box centre as origin (``rfftn(ifftshift(y))``), after removing the mean of the
        particle over its box (an intensity offset per particle and channel is fitted).
    frequencies : ndarray, int64, shape (M, 3)
        Integer frequency indices ``q`` ``(z, y, x)`` (host): frequency ``k = q / D`` cycles
        per voxel.  Half spectrum (``q_x >= 0``), the zero frequency and the Nyquist planes
        excluded.
    weights : ndarray, float32, shape (M,)
        Hermitian weights of the half spectrum: 2 for ``q_x > 0``, 1 on the ``q_x = 0``
        plane (sums over the support then equal sums over the full spectrum).
    otf : ndarray, complex64, shape (C, M)
        OTF of each channel at the support frequencies (unit-sum PSF).
    energy : ndarray, float64, shape (N, C)
        ``P^3 sum_x (y_i(x) - mean y_i)^2`` per particle and channel (host): the particle's
        energy about its mean, in the units of the spectra (Parseval), the normaliser of
        the relative energies.
    box : int
        Particle box side ``D``.
    grid : int
        Side ``P >= D`` of the zero-padded grid the spectra are computed on (frequency
        ``k = q / P``); ``P = D`` without padding.
    support_threshold : float
    backend : Backend
    """

    values: Any
    frequencies: np.ndarray
    weights: Any
    otf: Any
    energy: np.ndarray
    box: int
    grid: int
    support_threshold: float
    backend: Backend = field(repr=False)

    @property
    def n_particles(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.values.shape[1])

    @property
    def n_frequencies(self) -> int:
        return int(self.values.shape[2])


def _support(power: np.ndarray, box: int, threshold: float) -> np.ndarray:
    """Integer frequencies (M, 3) of the half spectrum where ``power >= threshold``."""
    idx = np.argwhere(power >= threshold)
    q = idx.astype(np.int64)
    q[:, :2] = np.where(idx[:, :2] > box // 2, idx[:, :2] - box, idx[:, :2])
    half = box / 2.0
    keep = np.all(np.abs(q) < half, axis=1) & np.any(q != 0, axis=1)
    return q[keep]


def particle_spectra(particles, psf, *, support_threshold: float = 1e-3, pad: float = 2.0,
                     batch_size: int = 16, backend=None) -> ParticleSpectra:
    """Reduce particles to their spectra on the OTF support (once, before the refinement).

    Parameters
    ----------
    particles : ndarray, shape (N, C, D, D, D) or (N, D, D, D)
        Particles (cubic boxes, isotropic voxels, ``D >= 8``).
    psf : ndarray, shape (d, d, d) or (C, d, d, d)
        Centred PSF(s), ``d <= D``; normalised to unit sum here.
    support_threshold : float, default 1e-3
        Frequencies where ``|h^|^2 >= support_threshold * max |h^|^2`` (in any channel)
        are kept, in ``(0, 1]``.
    pad : float, default 2
        The particles are zero-padded to a grid of side ``P = round(pad D)`` (``pad`` in
        ``[1, 3]``) before the Fourier transform, and the model is blurred on that grid:
        with ``pad >= 2`` the blur is a linear (not circular) convolution, as in the
        microscope, where the blur of the particle does not wrap around the box (1: no
        padding, circular model).
    batch_size : int, default 16
        Particles Fourier transformed together.
    backend : Backend or {"cpu", "gpu"}, optional

    Returns
    -------
    ParticleSpectra
    """
    bk = resolve_backend(backend, particles)
    xp = bk.xp
    arr = as_particles(particles)[0]
    n, c, d = int(arr.shape[0]), int(arr.shape[1]), int(arr.shape[2])
    threshold = check_float(support_threshold, "support_threshold", low=0.0, high=1.0,
                             low_inclusive=False)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    pad = check_float(pad, "pad", low=1.0, high=3.0)
    p = max(d, int(round(pad * d)))
    h = _prepare_psf(np, psf, c, d)
    otf = xp.stack([otf_from_psf(xp.asarray(h[k]), (p, p, p), backend=bk) for k in range(c)])
    power = to_numpy(xp.abs(otf) ** 2).astype(np.float64)
    power = (power / power.reshape(c, -1).max(axis=1)[:, None, None, None]).max(axis=0)
    q = _support(power, p, threshold)
    if q.shape[0] == 0:
        raise ValueError(
            f"the OTF support at support_threshold={threshold:g} holds no frequency but the "
            "zero frequency: lower support_threshold or check the PSF"
        )
    half = (p, p, p // 2 + 1)
    flat = np.ravel_multi_index(tuple((q % np.array(half)).T), half)
    weights = np.where(q[:, 2] > 0, 2.0, 1.0).astype(np.float32)
    flat_dev = xp.asarray(flat)
    values = xp.empty((n, c, q.shape[0]), dtype=xp.complex64)
    energy = np.empty((n, c))
    for start in range(0, n, batch_size):
        sl = slice(start, min(n, start + batch_size))
        batch = xp.asarray(arr[sl], dtype=xp.float32)
        if not bool(xp.isfinite(batch).all()):
            raise ValueError("particles contain NaN or infinite values: clean them first")
        # an intensity offset per particle and channel is fitted: remove the box mean
        batch = batch - batch.mean(axis=AXES3, keepdims=True)
        energy[sl] = to_numpy((batch.astype(xp.float64) ** 2).sum(axis=AXES3)) * float(p) ** 3
        if p != d:
            batch = _fit_to(xp, batch, (p, p, p))
        spec = bk.rfftn(xp.fft.ifftshift(batch, axes=AXES3), axes=AXES3)
        values[sl] = spec.reshape(spec.shape[0], c, -1)[:, :, flat_dev].astype(xp.complex64)
    otf_m = otf.reshape(c, -1)[:, flat_dev].astype(xp.complex64)
    w_dev = xp.asarray(weights)
    return ParticleSpectra(values=values, frequencies=q, weights=w_dev, otf=otf_m,
                           energy=energy, box=d, grid=p,
                           support_threshold=threshold, backend=bk)
