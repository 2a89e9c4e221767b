"""Particles on the OTF support: what every pose score reads of the data.

The pose of a particle enters its energy ``||y^ - h^ rho_t R f^||^2`` only at the
frequencies where the OTF is not negligible (``|h^|^2 >= support_threshold max |h^|^2``);
with the elongated PSFs of fluorescence that is a small ellipsoid, a few % of the Fourier
grid.  Every particle is reduced once to its spectrum there (half spectrum, ``q_x >= 0``,
inside the rotation-invariant ball ``|q| < P/2``), and every candidate pose is scored at
those frequencies only (Eloy et al. 2023 sec. 3; Fortun et al. 2018 sec. IV-B).

Two data models share this reduction (:func:`particle_spectra` options):

- ``offset=False`` (the SGD of Eloy et al. 2023): the particle is ``h * T_t(R f)`` plus
  white noise, circular blur on the box (``pad=1``); the zero frequency is kept;
- ``offset=True`` (the refinement of Fortun et al. 2018 and Zehni et al. 2020): an intensity
  scale and offset per particle and channel are fitted, so the box mean is removed and the
  zero frequency left out; ``pad > 1`` makes the blur linear (the particle is the box of a
  blurred field, :mod:`spfluo.algorithms.scoring.energies`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spfluo.algorithms._validation import as_particles, as_psf, check_float, check_int
from spfluo.algorithms.backend import AXES3, Backend, resolve_backend, to_numpy
from spfluo.algorithms.fourier import _fit_to, otf_from_psf

__all__ = ["ParticleSpectra", "particle_spectra"]

#: Relative |h^|^2 threshold of the OTF support.
DEFAULT_SUPPORT_THRESHOLD = 1e-3
# particle voxels Fourier transformed at once (bounds the temporary memory)
_FFT_VOXELS = 1 << 25


@dataclass(frozen=True, eq=False)
class ParticleSpectra:
    """Particles reduced to their spectra on the support of the OTF (computed once).

    Attributes
    ----------
    values : ndarray, complex64, shape (N, C, M)
        ``y^_i(q)`` of every particle and channel at the ``M`` support frequencies, box
        centre as origin (``rfftn(ifftshift(y))`` on the padded grid); the box mean is
        removed first when ``offset``.
    frequencies : ndarray, int64, shape (M, 3)
        Integer frequency indices ``q`` ``(z, y, x)`` (host): frequency ``q / P`` cycles per
        voxel.  Half spectrum (``q_x >= 0``) in the ball ``|q| < P/2``; the zero frequency
        is excluded when ``offset``.
    points : ndarray, float32, shape (M, 3)
        ``frequencies`` in units of ``1 / D`` cycles per voxel (``q D / P``), on the device.
    weights : ndarray, float32, shape (M,)
        Hermitian weights of the half spectrum: 2 for ``q_x > 0``, 1 on the ``q_x = 0``
        plane (sums over the support then equal sums over the full spectrum).
    otf : ndarray, complex64, shape (C, M)
        OTF of each channel at the support (unit-sum PSF).
    energy : ndarray, float64, shape (N, C)
        ``P^3 sum_x (y_i(x) - m_i)^2`` (host, ``m_i`` the box mean when ``offset``, else 0):
        the particle's energy in the units of the spectra (Parseval).
    inv_noise : ndarray, float32, shape (N, C)
        ``1 / s``, ``s`` the noise power per Fourier coefficient, estimated from the
        spectrum far outside the OTF support (floored at 1e-6 of the signal power).
    box : int
        Particle box side ``D``.
    grid : int
        Side ``P >= D`` of the zero-padded grid of the spectra (``P = D`` without padding).
    band : int
        ``L``: even, ``> 2 max |q| D / P``: a volume of ``L^3`` voxels (``D / L`` particle
        voxels each) holds every frequency of the support.
    support_threshold : float
    offset : bool
    backend : Backend
    """

    values: Any
    frequencies: np.ndarray
    points: Any
    weights: Any
    otf: Any
    energy: np.ndarray
    inv_noise: Any
    box: int
    grid: int
    band: int
    support_threshold: float
    offset: bool
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


def particle_spectra(particles, psf, *, support_threshold: float = DEFAULT_SUPPORT_THRESHOLD,
                     pad: float = 1.0, offset: bool = False, batch_size: int | None = None,
                     backend=None) -> ParticleSpectra:
    """Reduce particles to their spectra on the OTF support (once, before any pose score).

    Parameters
    ----------
    particles : ndarray, shape (N, C, D, D, D) or (N, D, D, D)
        Particles (cubic boxes, isotropic voxels, ``D >= 8``).
    psf : ndarray, shape (d, d, d) or (C, d, d, d)
        Centred PSF(s), ``d <= D``; normalised to unit sum here.
    support_threshold : float, default 1e-3
        Frequencies where ``|h^|^2 >= support_threshold * max |h^|^2`` (in any channel)
        are kept, in ``(0, 1]``.
    pad : float, default 1
        The particles are zero-padded to a grid of side ``P = round(pad D)`` (``pad`` in
        ``[1, 3]``) before the Fourier transform: with ``pad >= 1.5`` the blur of anything
        inside the box does not wrap around (a linear convolution, as in the microscope);
        1 is the circular model.
    offset : bool, default False
        Fit an intensity offset per particle and channel: the box mean is removed and the
        zero frequency left out of the support.
    batch_size : int, optional
        Particles Fourier transformed together (default: as many as fit in 2^25 voxels).
    backend : Backend or {"cpu", "gpu"}, optional

    Returns
    -------
    ParticleSpectra
    """
    bk = resolve_backend(backend, particles)
    xp = bk.xp
    arr, _ = as_particles(particles)
    n, c, d = int(arr.shape[0]), int(arr.shape[1]), int(arr.shape[2])
    threshold = check_float(support_threshold, "support_threshold", low=0.0, high=1.0,
                            low_inclusive=False)
    pad = check_float(pad, "pad", low=1.0, high=3.0)
    p = max(d, int(round(pad * d)))
    if batch_size is None:
        batch_size = max(1, _FFT_VOXELS // (c * p**3))
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    h = as_psf(psf, c, d, xp)
    otf = xp.stack([otf_from_psf(h[k], (p, p, p), backend=bk) for k in range(c)])
    power = to_numpy(xp.abs(otf) ** 2).astype(np.float64)
    ratio = (power / power.reshape(c, -1).max(axis=1)[:, None, None, None]).max(axis=0)
    fz = np.rint(np.fft.fftfreq(p) * p)
    fx = np.rint(np.fft.rfftfreq(p) * p)
    qz, qy, qx = np.meshgrid(fz, fz, fx, indexing="ij")
    # the rotation-invariant band: the ball |q| < P/2 (no Nyquist plane, no corner)
    outer = np.sqrt(qz**2 + qy**2 + qx**2) >= p / 2
    keep = (ratio >= threshold) & ~outer
    if offset:
        keep[0, 0, 0] = False
    if keep.sum() < 4:
        raise ValueError(
            f"the OTF support holds only {int(keep.sum())} frequencies at "
            f"support_threshold={threshold:g}: lower support_threshold or check the PSF"
        )
    idx = np.nonzero(keep)
    q = np.stack([qz[idx], qy[idx], qx[idx]], axis=1).astype(np.int64)
    flat = xp.asarray(np.ravel_multi_index(idx, ratio.shape))
    # noise: the spectrum far outside the support (else the corners beyond the ball)
    outside = ratio < 1e-6 * threshold
    outside[0, 0, 0] = False
    if int(outside.sum()) < 16:
        outside = outer
    out_flat = xp.asarray(np.ravel_multi_index(np.nonzero(outside), ratio.shape))
    values = xp.empty((n, c, q.shape[0]), dtype=xp.complex64)
    energy = np.empty((n, c))
    noise = np.empty((n, c))
    for start in range(0, n, batch_size):
        sl = slice(start, min(n, start + batch_size))
        batch = xp.asarray(arr[sl], dtype=xp.float32)
        if not bool(xp.isfinite(batch).all()):
            raise ValueError("particles contain NaN or infinite values: clean them "
                             "(e.g. numpy.nan_to_num) first")
        if offset:
            batch = batch - batch.mean(axis=AXES3, keepdims=True)
        energy[sl] = to_numpy((batch.astype(xp.float64) ** 2).sum(axis=AXES3)) * float(p) ** 3
        if p != d:
            batch = _fit_to(xp, batch, (p, p, p))
        spec = bk.rfftn(xp.fft.ifftshift(batch, axes=AXES3), axes=AXES3)
        spec = spec.reshape(spec.shape[0], c, -1)
        values[sl] = spec[:, :, flat].astype(xp.complex64, copy=False)
        tail = spec[:, :, out_flat]
        noise[sl] = to_numpy((tail.real**2 + tail.imag**2).mean(axis=-1))
    # a noiseless particle would give an infinite weight: floor at 1e-6 of the signal power
    signal = to_numpy((values.real**2 + values.imag**2).mean(axis=-1)).astype(np.float64)
    noise = np.maximum(noise, 1e-6 * signal + 1e-30)
    scale = d / p
    radius = float(np.sqrt((q.astype(np.float64) ** 2).sum(axis=1)).max()) * scale
    band = max(8, int(2 * math.floor(radius) + 2))
    return ParticleSpectra(
        values=values,
        frequencies=q,
        points=xp.asarray((q * scale).astype(np.float32)),
        weights=xp.asarray(np.where(q[:, 2] > 0, 2.0, 1.0).astype(np.float32)),
        otf=otf.reshape(c, -1)[:, flat].astype(xp.complex64),
        energy=energy,
        inv_noise=xp.asarray((1.0 / noise).astype(np.float32)),
        box=d,
        grid=p,
        band=band,
        support_threshold=threshold,
        offset=bool(offset),
        backend=bk,
    )
