"""Baselines: align and average, deconvolve then average (Fortun et al. 2017), and the
single view (Fortun et al. 2018).

:func:`average` back-rotates and averages the particles (no PSF);
:func:`deconv_average` first TV-deconvolves each particle in its own frame (ADMM of
:mod:`~spfluo.algorithms.reconstruct.admm`, one per particle, so its cost grows with
``N``); :func:`single_view` deconvolves the one particle with the best signal-to-noise
ratio (what a single acquisition gives, the reference point of Fortun et al. 2018 sec. V).  Both stream the particles through
:func:`~spfluo.algorithms.reconstruct.accumulation.run_accumulation` without the kernel,
on the unpadded grid.
"""

from __future__ import annotations

import numpy as np

from spfluo.algorithms._validation import check_int
from spfluo.algorithms.geometry.poses import check_poses
from spfluo.algorithms.backend import AXES3
from spfluo.algorithms.fourier import _fit_to
from spfluo.algorithms.reconstruct.accumulation import finite_batch, run_accumulation
from spfluo.algorithms.reconstruct.admm import admm_core, data_scale, default_rho
from spfluo.algorithms.reconstruct.weight import DEFAULT_WEIGHT, check_weight

__all__ = ["average", "deconv_average", "deconvolve_transform", "best_particle", "single_view"]


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
    n = len(check_poses(poses, None))
    (res,), shape, _ = run_accumulation(
        particles, poses, np.ones((1, 1, 1), np.float32), groups=np.zeros(n, np.int64),
        n_groups=1, symmetry=symmetry, batch_size=batch_size, order=order, pad=1.0,
        backend=backend, with_kernel=False, filtered=False,
    )
    return res[0]


def deconvolve_transform(weight, iterations):
    """Per-particle TV deconvolution in the particle frame (the PSF is not rotated there).

    Returns ``transform(batch, acc, psf) -> (n, C, D, D, D)`` for :class:`Accumulator`.
    """

    def transform(batch, acc, psf):
        bk = acc.bk
        xp = bk.xp
        batch = finite_batch(xp, batch)
        w = check_weight(weight, acc.n_channels)
        shape = tuple(batch.shape[-3:])
        h = xp.fft.ifftshift(_fit_to(xp, psf, shape), axes=AXES3)
        otf = bk.rfftn(h, axes=AXES3).astype(xp.complex64)  # (C, D, D, D//2+1)
        kernel = (otf.real**2 + otf.imag**2).astype(xp.float32)
        b = bk.irfftn(bk.rfftn(batch, axes=AXES3) * xp.conj(otf), s=shape, axes=AXES3)
        scale = data_scale(xp, b)  # (n, C)
        b = b / xp.asarray(scale, dtype=xp.float32)[..., None, None, None]
        bhat = bk.rfftn(b.astype(xp.float32), axes=AXES3).astype(xp.complex64)
        ww = np.broadcast_to(w[None, :], scale.shape)
        (x, u, v, du, dv), *_ = admm_core(
            bk, bhat, kernel, shape, ww, regularizer="tv", iterations=iterations,
            rho=default_rho(ww), positivity=True, state=None,
        )
        return v * xp.asarray(scale, dtype=xp.float32)[..., None, None, None]

    return transform


def deconv_average(particles, poses, psf, *, weight=DEFAULT_WEIGHT["deconv-average"],
                   iterations: int = 50, symmetry: int = 1, batch_size: int = 16,
                   order: int = 1, backend=None):
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
    n = len(check_poses(poses, None))
    iterations = check_int(iterations, "iterations", minimum=1)
    check_weight(weight, np.atleast_1d(np.asarray(weight, dtype=float)).size)
    (res,), _, _ = run_accumulation(
        particles, poses, psf, groups=np.zeros(n, np.int64), n_groups=1, symmetry=symmetry,
        batch_size=batch_size, order=order, pad=1.0, backend=backend, with_kernel=False,
        filtered=False, transform=deconvolve_transform(weight, iterations),
    )
    return res[0]


def best_particle(particles, psf, *, backend=None) -> int:
    """Index of the particle with the best signal-to-noise ratio on the OTF support: the
    mean power of its spectrum there over its noise power per coefficient (estimated far
    outside the support), summed over the channels."""
    from spfluo.algorithms.backend import to_numpy
    from spfluo.algorithms.scoring.spectra import particle_spectra

    spectra = particle_spectra(particles, psf, backend=backend)
    power = to_numpy((spectra.values.real**2 + spectra.values.imag**2).mean(axis=-1))
    snr = (power * to_numpy(spectra.inv_noise)).sum(axis=1)
    return int(np.argmax(snr))


def single_view(particles, poses, psf, *, weight=DEFAULT_WEIGHT["single-view"],
                iterations: int = 50, symmetry: int = 1, order: int = 1, backend=None):
    """The best single particle deconvolved and turned into the reference frame.

    Parameters
    ----------
    particles, poses, psf, symmetry, order, backend
        As in :func:`deconv_average`; the particle is :func:`best_particle`.
    weight : float or sequence of float, default 3e-3
        TV weight of the deconvolution.
    iterations : int, default 50
        ADMM iterations.

    Returns
    -------
    ndarray, float32, shape (C, D, D, D)
    """
    check_poses(poses, None)
    index = best_particle(particles, psf, backend=backend)
    return deconv_average(particles[index:index + 1], poses[index:index + 1], psf,
                          weight=weight, iterations=iterations, symmetry=symmetry,
                          batch_size=1, order=order, backend=backend)
