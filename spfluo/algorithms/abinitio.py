"""Ab initio reconstruction without a template: SGD with importance sampling (Eloy et al. 2023).

The multilevel problem of Eloy et al. 2023 (sec. 3, Algorithm 1):

- **volume** (top level): stochastic gradient descent on the Fourier transform
  ``f^`` of the volume, one particle per iteration, epochs that cycle through the
  shuffled particles (eq. 12, gradient eq. 33);
- **rotations** (middle level): for particle ``l`` draw ``N_d`` directions and
  ``N_psi`` in-plane angles from per-particle sampling distributions on the
  ``M_d x M_psi`` grid of :func:`~spfluo.algorithms.geometry.so3_grid`,
  evaluate the energy of all ``N_d N_psi`` pairs in one batch, keep the best;
- **translations** (bottom level): for every candidate, the correlation
  between ``h^ R(f^)`` and ``y^_l`` over all shifts with one inverse FFT, then a
  sub-voxel refinement.

The sampling distributions are importance-weighted marginal likelihoods
(eq. 16-17), smoothed on the whole grid with the kernels of eq. 20-21 and
mixed with the uniform distribution (eq. 22-23); the uniform share ``alpha``
starts at 1 and is divided by ``alpha_r`` after each epoch.

How it is made fast (measured in ``benchmarks/abinitio.py``)
------------------------------------------------------------
- **Only where the OTF lives.**  The pose-dependent part of the energy
  ``||y^ - h^ rho_t R f^||^2`` is weighted by ``|h^|^2``; with the elongated
  PSFs of fluorescence it is negligible outside a small ellipsoid of
  frequencies.  Every particle is reduced once to its spectrum on that support
  (``|h^|^2 >= support_threshold * max |h^|^2``, a few % of the Fourier grid,
  half spectrum), and every candidate is evaluated at those frequencies only.
- **The volume lives on a small grid.**  The parameter is the volume
  downsampled to ``L^3`` voxels, ``L`` (even) just above twice the largest
  support frequency index (``L = 28`` for a 50^3 box with the Eloy et al. 2023 PSF:
  the data carry nothing beyond); its spectrum, zero-padded to ``(2L)^3``
  (sampled every ``1 / (2 D)`` cycles per voxel, oversampling 2 for accurate
  trilinear interpolation), is what the candidates sample, at the rotated
  support frequencies, batched over all candidates of a particle.  The
  gradient (eq. 33) is accumulated with the exact adjoint of the same
  interpolation (a scatter-add), at ``q`` and ``-q`` (Hermitian symmetry).
- **Translations on a cropped grid.**  The cross-power spectrum
  ``y^ conj(h^ R f^)`` lives on the same frequencies: it is placed in a small
  ``(Kz, Ky, Kx)`` FFT grid whose step ``D / K`` is about the width of the
  correlation peak along each axis (frequencies beyond ``K/2`` wrap around,
  which leaves the samples at the grid shifts exact), and one batched inverse
  real FFT gives every candidate's correlation surface; a parabolic fit per
  axis refines the peak (its height gives the energy), and the 4 best
  candidates get Newton iterations on the exact correlation.
- **Coarse to fine.**  The first epochs (up to ``coarse_epochs``, or until
  their energy reaches a plateau) use the support restricted to
  ``|p| < L / (2 downsampling)`` (particles and volume downsampled by
  ``downsampling``), then the volume is resampled to the full band.

Design decisions (beyond the paper)
-----------------------------------
- **Step and constraints.**  Eloy et al. 2023 does not give ``mu``.  The gradient with
  respect to the ``L^3`` volume is ``P g`` (``g`` the scattered gradient,
  ``P`` the crop to the box in real space); the step is
  ``lr * P F^-1[F[P g] / ((L / 2L)^3 B + lambda)]``, then the projection on
  non-negative values: a diagonal (Jacobi) preconditioner in Fourier space,
  ``(L / 2L)^3 = 1/8`` being the diagonal of ``P``, ``B`` the running sum
  (multiplied by ``memory`` at each epoch) of the curvatures ``|h^|^2 / s`` of
  the particles already seen at each frequency, ``lambda`` = ``regularization``
  times the median curvature of one particle.  Measured: with known poses the
  energy decreases monotonically to the noise level in 2 epochs for both
  phantoms; without the factor 1/8 (the circulant approximation of
  ``P B P``) the C9 barrel with symmetry diverges.  The volume is thus
  non-negative and supported in its box at every step (the paper uses no
  constraint).  The initial volume is uniform random values in [0, 1]
  (Eloy et al. 2023 sec. 4.3.1) times twice the particles' mean intensity, so that the
  first comparisons are on the data's scale.
- **Symmetry.**  With Cn, each particle's gradient is that of its ``n`` poses
  ``R C_k``, each with its own residual (so the step is the exact gradient of
  the symmetrised energy even where the iterate is not exactly symmetric).
- **Likelihood scale.**  ``p = exp(-E / (2 s T))`` with ``s`` the noise power per
  Fourier coefficient, estimated on each particle from its spectrum outside the
  OTF support: the energies become negative log-likelihoods (the raw
  ``exp(-E)`` of Algorithm 1 depends on the intensity scale).  ``temperature``
  ``T`` (1 by default) broadens the likelihoods.
- **Grid.**  The grid is the product grid of :class:`~spfluo.algorithms.geometry.SO3Grid`
  (element ``(j, i)`` turns the reference by ``psi_i`` about its z axis, then
  carries z onto ``d_j``), uniform on SO(3); the paper does not give
  ``M_d, M_psi``.  Defaults ``M_d = 1500`` (mean spacing 5.2 degrees) and
  ``M_psi = 72`` (5 degrees), finer than the kernel width ``1/sqrt(beta)``
  = 8 degrees at ``beta = 50``.  With Cn symmetry the in-plane angles cover
  one asymmetric unit ``[0, 2 pi / n)`` with ``ceil(M_psi / n)`` values and the
  in-plane kernel is ``exp((beta / n^2) cos(n dpsi))`` (same width, period
  ``2 pi / n``).
- **Global searches** (on by default): a particle whose sampling distribution
  settled in a wrong mode cannot leave it once the uniform share has decayed
  (measured: 1 to 3 of 20 particles of the asymmetric phantom turned by about
  180 degrees, up to 8 of 20 for the C9 barrel, whose top and bottom look alike
  under the blur).  So when the energy reaches its plateau, every particle is
  searched exhaustively against the iterate (a 13-degree grid of 7200
  rotations scored at a low band, at the translation that keeps the particle's
  centre of mass; the 4 best distant candidates refined by local searches at
  the low band, then at the full band, as is the current pose), and moves when
  a distant pose has a lower energy; the distributions of the particles that
  moved are re-centred on their new pose and the epochs continue until the next
  plateau (the volume becomes consistent, which makes the remaining wrong modes
  visible), at most 3 searches.  A candidate that its local searches bring back
  within 10 degrees of the current pose does not count (the SGD grid would pull
  the particle back to its grid point).
- **Symmetric objects: the axis first** (``align_axis``, on by default).
  Imposing Cn from the first epoch fails on the C9 barrel (measured: 2 of 5
  seeds of the Eloy et al. 2023 setting converged to a wrong volume, median pose error
  54-77 degrees), while the same runs without symmetry find the barrel.  So a
  symmetric run starts without symmetry (in-plane grid over the whole circle,
  same spacing); at its first plateau at the full band the Cn axis of the
  iterate is found and turned onto z
  (:func:`spfluo.algorithms.symmetry.align_symmetry_axis`), the poses follow
  (:func:`~spfluo.algorithms.symmetry.realign_poses`), the iterate is
  symmetrised, the preconditioner rebuilt for the Cn updates, the sampling
  distributions re-centred on the poses on the Cn grid, and the epochs continue
  with Cn.
- **Polarity consensus** (``polarity``, Cn).  The two ends of the barrel look
  alike under the blur (they differ by the tilt of the blades, a detail at the
  edge of the OTF support): the first epochs, at the coarse band, cannot tell
  them apart, so about half of the particles settle upside down and the volume
  becomes a mixture of the object and its turned copy, against which no
  particle can be sorted out (measured: 6 to 9 of 20 particles at 180 degrees
  at the end of the stage without symmetry, on 5 seeds).  When Cn is imposed,
  the turn ``F`` (a half turn about an axis of the xy plane, through a centre
  on z) under which the iterate looks most like itself is found by correlation
  (:func:`_polarity_axis`); every particle gets two hypotheses, its pose and
  the pose for the turned volume (:func:`_flip_pose`), both refined by a
  search about the symmetry axis, and the choice of one hypothesis per particle
  minimises the energy of the closed-form (Tikhonov) volume that explains them
  all (:func:`_polarity_consensus`: agreeing particles add coherently), by
  greedy single changes from the current choice and from random ones.  A
  collective decision: against an iterate, one particle's two polarities differ
  by a few tens of log-likelihood units for side views (measured, against a
  volume from the 19 other particles at their true poses: 37 to 245), within
  the noise of a single comparison.  The later global searches keep each
  particle's polarity.
- **Damping grows with the poses.**  The preconditioner sums the curvatures of
  ``N n`` poses (particles times symmetry copies); with the damping of one
  particle, the steps at frequencies weakly covered next to strongly covered
  ones grow with it and the iterate diverges (measured: the C9 barrel in the
  Fortun et al. 2018 setting, 50 particles, sigma 4/16 voxels, diverged with C9 imposed;
  20 particles did not).  The damping is multiplied by ``max(1, N n / 150)``.
- **Final steps** (optional, on by default): each pose is refined by two local
  searches around it (``local_rotation_grid``, 2.5 degrees within 5, then 1
  within 2) against the final iterate at the full band; the result volume is
  then the known-pose reconstruction of :mod:`spfluo.algorithms.reconstruct`
  (sharper than the SGD iterate), or the SGD iterate itself.

Checkpoints: ``checkpoint(state)`` is called after every epoch with an
:class:`SGDState` (plain NumPy arrays, the random generator state included);
``sgd_reconstruction(..., resume=state)`` continues from it and gives exactly
the result of an uninterrupted run with the same inputs.  No file I/O here:
the job writes the state (:meth:`SGDState.to_arrays` / :meth:`SGDState.from_arrays`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import scipy.fft

from spfluo.algorithms._validation import (
    as_particles,
    check_float,
    check_int,
    check_max_shift,
)
from spfluo.algorithms.backend import AXES3, Backend, resolve_backend, to_numpy
from spfluo.algorithms.fourier import _fit_to, otf_from_psf, resize_fourier
from spfluo.algorithms.geometry import (
    Poses,
    SO3Grid,
    cyclic_group,
    local_rotation_grid,
    rotation_about_z,
    so3_grid,
)
from spfluo.algorithms.transform import _padded_shape

__all__ = [
    "AbInitioResult",
    "SGDState",
    "PoseSearchResult",
    "SpectralParticles",
    "sgd_reconstruction",
    "pose_search",
    "refine_poses_local",
    "default_grid_size",
    "smoothed_marginals",
]

#: Known-pose methods for the final volume (spfluo.algorithms.reconstruct).
FINAL_METHODS = ("hessian", "tv", "tikhonov")
#: Default grid sizes M_d (Fibonacci directions) and M_psi (in-plane angles, no symmetry).
DEFAULT_M_D = 1500
DEFAULT_M_PSI = 72
# candidate points processed at once (bounds the temporary memory of a batch)
_CHUNK_POINTS = 1 << 21
# local refinement stages after the SGD: (lattice step, max angle) in degrees
_LOCAL_STAGES_DEG = ((2.5, 5.0), (1.0, 2.0))
# global check after the epochs: band of the volume grid, and (M_d, M_psi) of its grid
_GLOBAL_BAND = 12
_GLOBAL_GRID = (300, 24)
# most global searches in a run (each one that moves particles is followed by more epochs)
_MAX_CHECKS = 3
# poses (particles x symmetry copies) above which the SGD damping grows in proportion
_DAMPING_POSES = 150


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------


def _as_reference(xp, volume, data: "SpectralParticles"):
    """A volume to compare with the particles of ``data``: (C, D, D, D) float32."""
    box = data.box
    vol = xp.asarray(volume, dtype=xp.float32)
    if vol.ndim == 3:
        vol = vol[None]
    if tuple(vol.shape) != (data.n_channels, box, box, box):
        raise ValueError(f"volume must have shape ({box}, {box}, {box}) (or with "
                         f"{data.n_channels} channels first) like the particles, got "
                         f"{tuple(xp.asarray(volume).shape)}")
    return vol


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


def default_grid_size(symmetry: int = 1) -> tuple[int, int]:
    """Default ``(M_d, M_psi)`` of the SO(3) grid for the cyclic symmetry Cn.

    Parameters
    ----------
    symmetry : int
        Order n of the cyclic symmetry about z (1 = none).

    Returns
    -------
    tuple of int
        ``(1500, ceil(72 / n))`` (at least 4 in-plane angles): about 5 degrees
        between neighbouring directions and between in-plane angles.
    """
    n = check_int(symmetry, "symmetry", minimum=1)
    return DEFAULT_M_D, max(4, int(math.ceil(DEFAULT_M_PSI / n)))


# ---------------------------------------------------------------------------
# the particles on the OTF support
# ---------------------------------------------------------------------------


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
class _Scale:
    """The support restricted to a band ``|p| < L/2``, and its correlation grid.

    The correlation ``C(t) = Re sum_p w_p c_p exp(2 i pi p.t / D)`` of a cross
    spectrum ``c`` is sampled at the shifts ``t = m D / K`` by one inverse real
    FFT of a ``(Kz, Ky, Kx)`` grid: point ``p`` goes to ``p mod K`` (exact at
    those shifts even when ``K`` is smaller than the support: the phases are
    ``K``-periodic), with coefficient ``w_p / alpha`` (``alpha`` = 2 inside the
    half spectrum of the grid, 1 on its planes ``k_x = 0`` and Nyquist), or
    conjugated at ``-p mod K`` when ``p_x mod K_x`` falls in the other half.
    ``K_a`` is chosen so that the step ``D / K_a`` is about the width of the
    correlation peak along axis ``a`` (from the spread of ``|h^|^2``).
    """

    band: int
    select: Any  # indices into SpectralParticles.points
    points: Any  # (Ms, 3) float32
    weights: Any  # (Ms,)
    otf: Any  # (C, Ms)
    otf_power: Any  # (C, Ms) float32
    grid: tuple  # correlation grid (Kz, Ky, Kx)
    grid_coef: Any  # (Ms,) float32 coefficient of the real part
    grid_coef_imag: Any  # (Ms,) float32 coefficient of the imaginary part (sign: conj)
    grid_layers: tuple  # ((point indices, grid flat indices), ...) without repeats each
    shift_mask: Any  # (Kz, Ky, Kx) bool, shifts within max_shift
    shift_axes: tuple  # three 1D arrays of shifts (voxels) per grid index
    data_energy: Any  # (N,) whitened sum_c sum_p w |Y|^2 / s


def _layers(xp, index: np.ndarray) -> tuple:
    """Split positions into layers whose target indices do not repeat (for ``+=``)."""
    order = np.argsort(index, kind="stable")
    sorted_idx = index[order]
    first = np.r_[0, np.nonzero(np.diff(sorted_idx))[0] + 1]
    rank = np.arange(index.size) - np.repeat(first, np.diff(np.r_[first, index.size]))
    layers = []
    for r in range(int(rank.max()) + 1):
        pos = np.sort(order[rank == r])
        layers.append((xp.asarray(pos), xp.asarray(index[pos].astype(np.int64))))
    return tuple(layers)


def _make_scale(data: SpectralParticles, band: int, max_shift: float,
                shift_step: float = 1.0) -> _Scale:
    xp = data.backend.xp
    d = data.box
    pts = to_numpy(data.points)
    r = np.sqrt((pts.astype(np.float64) ** 2).sum(axis=1))
    sel = np.nonzero(r < band / 2.0)[0]
    if sel.size < 4:
        raise ValueError(f"band {band} keeps only {sel.size} support frequencies: use less "
                         "downsampling")
    p = pts[sel]
    sel_x = xp.asarray(sel)
    w = data.weights[sel_x]
    otf = data.otf[:, sel_x]
    power = to_numpy((otf.real**2 + otf.imag**2).sum(axis=0)).astype(np.float64)
    wn = to_numpy(w).astype(np.float64)
    grid = []
    for axis in range(3):
        # spread of |h^|^2 along the axis -> width of the correlation peak, voxels
        spread = math.sqrt(float((wn * power * p[:, axis] ** 2).sum() / (wn * power).sum()))
        width = d / (2.0 * math.pi * max(spread, 1e-3))
        k = int(math.ceil(d / (shift_step * width)))
        k = scipy.fft.next_fast_len(max(k, 4), real=True)
        k = min(k + (k % 2), d + (d % 2))
        grid.append(int(k))
    kz, ky, kx = grid
    half = (kz, ky, kx // 2 + 1)
    kmod = np.stack([p[:, 0] % kz, p[:, 1] % ky, p[:, 2] % kx], axis=1)
    other = kmod[:, 2] > kx // 2
    kk = kmod.copy()
    kk[other] = np.stack([(-p[other, 0]) % kz, (-p[other, 1]) % ky, (-p[other, 2]) % kx],
                         axis=1)
    alpha = np.where((kk[:, 2] == 0) | (2 * kk[:, 2] == kx), 1.0, 2.0)
    coef = wn / alpha
    gidx = np.ravel_multi_index((kk[:, 0], kk[:, 1], kk[:, 2]), half)
    axes = []
    for k in grid:
        m = np.arange(k)
        signed = np.where(m >= (k + 1) // 2, m - k, m)
        axes.append(signed * (d / k))
    t2 = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
    mask = t2 <= max_shift**2 + 1e-9
    y = data.spectra[:, :, sel_x]
    energy = ((y.real**2 + y.imag**2) * w).sum(axis=-1)  # (N, C)
    energy = (energy * data.inv_noise).sum(axis=-1)
    return _Scale(
        band=int(band),
        select=sel_x,
        points=xp.asarray(p.astype(np.float32)),
        weights=w,
        otf=otf,
        otf_power=(otf.real**2 + otf.imag**2).astype(xp.float32),
        grid=(kz, ky, kx),
        grid_layers=_layers(xp, gidx),
        grid_coef=xp.asarray(coef.astype(np.float32)),
        grid_coef_imag=xp.asarray(np.where(other, -coef, coef).astype(np.float32)),
        shift_mask=xp.asarray(mask),
        shift_axes=tuple(xp.asarray(a) for a in axes),
        data_energy=energy.astype(xp.float64),
    )


# ---------------------------------------------------------------------------
# the volume as an oversampled Fourier grid
# ---------------------------------------------------------------------------


class _FourierVolume:
    """The volume on ``L^3`` voxels (of ``D / L`` particle voxels) and its oversampled spectrum.

    ``real`` (C, L, L, L) float32 is the parameter: the volume downsampled to
    ``L^3`` (intensities as in the particles), non-negative.  ``spectrum``
    (C, G+3, G+3, G+3) complex64, ``G = 2 L``, is ``(D/L)^3`` times the centred
    FFT of ``real`` zero-padded to ``G^3``, stored inside a zero border as the
    trilinear gathers of :mod:`transform` expect: its sample ``q`` is the
    spectrum of the particle-sized volume at ``q / (2 D)`` cycles per voxel.
    ``curvature`` (same layout, float32) is the running preconditioner ``B``.
    """

    def __init__(self, bk: Backend, box: int, real, curvature=None):
        xp = bk.xp
        self.bk = bk
        self.box = int(box)
        self.real = real
        self.band = int(real.shape[-1])
        self.size = 2 * self.band
        c = int(real.shape[0])
        padded = _padded_shape(self.shape3)
        if curvature is None:
            curvature = xp.zeros((c,) + padded, dtype=xp.float32)
        self.curvature = curvature
        self.spectrum = xp.zeros((c,) + padded, dtype=xp.complex64)
        self.refresh()

    @property
    def shape3(self) -> tuple[int, int, int]:
        return (self.size,) * 3

    def _inner(self, a):
        g = self.size
        return a[..., 1:g + 1, 1:g + 1, 1:g + 1]

    def refresh(self) -> None:
        """Recompute ``spectrum`` from ``real``."""
        bk = self.bk
        xp = bk.xp
        g = self.size
        padded = _fit_to(xp, self.real, (g, g, g))
        spec = bk.fftn(xp.fft.ifftshift(padded, axes=AXES3), axes=AXES3)
        spec = xp.fft.fftshift(spec, axes=AXES3)
        scale = np.float32((self.box / self.band) ** 3)
        self._inner(self.spectrum)[...] = (spec * scale).astype(xp.complex64)

    @classmethod
    def initial(cls, bk: Backend, volume, band: int) -> "_FourierVolume":
        """From volumes (C, D, D, D) in particle voxels, resampled to ``band^3``."""
        xp = bk.xp
        box = int(volume.shape[-1])
        real = resize_fourier(xp.asarray(volume, dtype=xp.float32), (band,) * 3, backend=bk)
        return cls(bk, box, xp.maximum(real, 0.0).astype(xp.float32))

    def resized(self, band: int) -> "_FourierVolume":
        """The same volume resampled to another band (Fourier padding/cropping)."""
        xp = self.bk.xp
        real = resize_fourier(self.real, (band,) * 3, backend=self.bk)
        g = 2 * int(band)
        curv = xp.zeros((self.real.shape[0],) + _padded_shape((g, g, g)), dtype=xp.float32)
        curv[:, 1:g + 1, 1:g + 1, 1:g + 1] = _fit_to(xp, self._inner(self.curvature), (g, g, g))
        return _FourierVolume(self.bk, self.box, xp.maximum(real, 0.0).astype(xp.float32), curv)

    def _to_real(self, spec):
        """crop(IFFT(spec)) on the L^3 box, real part, float32 (spec: (C, G, G, G))."""
        bk = self.bk
        xp = bk.xp
        v = bk.ifftn(xp.fft.ifftshift(spec, axes=AXES3), axes=AXES3)
        v = xp.fft.fftshift(v.real, axes=AXES3)
        return _fit_to(xp, v, (self.band,) * 3).astype(xp.float32)

    def _to_spectrum(self, v):
        bk = self.bk
        xp = bk.xp
        g = self.size
        spec = bk.fftn(xp.fft.ifftshift(_fit_to(xp, v, (g, g, g)), axes=AXES3), axes=AXES3)
        return xp.fft.fftshift(spec, axes=AXES3)

    def apply_gradient(self, grad_padded, curvature_padded, damping, lr: float) -> None:
        """Preconditioned projected step on ``real`` from a gradient on the padded grid.

        The gradient w.r.t. the box-supported volume is ``P g`` (``P``: crop to
        the box in real space); the Jacobi preconditioner of ``P A^T A P`` is
        about ``(L/G)^3 B``; ``real -= lr * P D^-1 P g``, then non-negativity.
        """
        xp = self.bk.xp
        frac = np.float32((self.band / self.size) ** 3)
        g_real = self._to_real(self._inner(grad_padded))
        g_proj = self._to_spectrum(g_real)
        denom = self._inner(curvature_padded) * frac + xp.asarray(
            np.asarray(damping, dtype=np.float32))[:, None, None, None]
        delta = self._to_real(g_proj / denom)
        scale = np.float32((self.band / self.box) ** 3 * lr)
        self.real = xp.maximum(self.real - delta * scale, 0.0).astype(xp.float32)
        self.refresh()

    def centre_of_mass(self) -> np.ndarray:
        """Intensity-weighted centre, in particle voxels from the box centre, ``(z, y, x)``."""
        v = to_numpy(self.real).astype(np.float64).sum(axis=0)
        total = v.sum()
        if total <= 0:
            return np.zeros(3)
        idx = np.indices(v.shape).reshape(3, -1).astype(np.float64) - self.band // 2
        return (idx @ v.ravel()) / total * (self.box / self.band)

    def to_volume(self, box: int, *, apodization: bool = True):
        """The volume ``(C, D, D, D)`` float32 at the particle sampling.

        Band-limited upsampling of ``real``; ``apodization`` multiplies by the
        attenuation ``prod sinc^2(x / 2D)`` that trilinear interpolation of the
        spectrum applies in the model, so that the result is the volume whose
        particles the iterate predicts.
        """
        xp = self.bk.xp
        v = resize_fourier(self.real, (box,) * 3, backend=self.bk)
        if apodization:
            x = (xp.arange(box, dtype=xp.float64) - box // 2) / (2 * box)
            s = (xp.sinc(x) ** 2).astype(xp.float32)
            v = v * s[:, None, None] * s[None, :, None] * s[None, None, :]
        return v.astype(xp.float32)


def _rotated_coordinates(xp, rotations, points, centre: float):
    """Grid coordinates ``2 R^T p + centre`` of the points for every rotation: (B, 3, Ms)."""
    rt = xp.asarray(rotations, dtype=xp.float32).transpose(0, 2, 1) * np.float32(2.0)
    coords = xp.matmul(rt, points.T[None])
    coords += np.float32(centre)
    return coords


def _setup(xp, coords, size: int):
    """Trilinear set-up on the padded grid (1 zero voxel before, 2 after each axis).

    ``coords`` (B, 3, M) float32 grid coordinates (clipped in place to
    ``[0, size]``: points outside read the zero border).  Returns the flat
    index of the lower corner (B, M) int64 and the fractions (fz, fy, fx).
    """
    xp.clip(coords, 0.0, float(size), out=coords)
    _, sy, sx = _padded_shape((size,) * 3)
    cz, cy, cx = coords[:, 0], coords[:, 1], coords[:, 2]
    lz, ly, lx = xp.floor(cz), xp.floor(cy), xp.floor(cx)
    # flat index in float32 arithmetic (exact: the padded grid has < 2^24 voxels)
    flat = lz * np.float32(sy * sx) + ly * np.float32(sx) + lx
    flat += np.float32(sy * sx + sx + 1)
    base = flat.astype(xp.int64)
    return base, (cz - lz, cy - ly, cx - lx)


def _corners(size: int):
    _, sy, sx = _padded_shape((size,) * 3)
    sz = sy * sx
    return [(dz, dy, dx, dz * sz + dy * sx + dx) for dz in (0, 1) for dy in (0, 1)
            for dx in (0, 1)]


def _gather(xp, flat, base, frac, size: int):
    """Trilinear samples of the padded flat grid ``flat`` (V,) at (base, frac)."""
    fz, fy, fx = frac
    _, sy, sx = _padded_shape((size,) * 3)
    sz = sy * sx

    def lerp_x(o):
        a = xp.take(flat, base + o)
        b = xp.take(flat, base + (o + 1))
        b -= a
        b *= fx
        a += b
        return a

    c0 = lerp_x(0)
    t = lerp_x(sx)
    t -= c0
    t *= fy
    c0 += t
    c1 = lerp_x(sz)
    t = lerp_x(sz + sx)
    t -= c1
    t *= fy
    c1 += t
    c1 -= c0
    c1 *= fz
    c0 += c1
    return c0


def _scatter(bk: Backend, size: int, base, frac, grid_size: int, values):
    """Adjoint of :func:`_gather`: add ``values`` (shape of ``base``) into a vector (size,).

    Complex values are scattered as two real bincounts; returns complex64 or
    float32 like ``values``.
    """
    xp = bk.xp
    fz, fy, fx = frac
    wz = (1 - fz, fz)
    wy = (1 - fy, fy)
    wx = (1 - fx, fx)
    corners = _corners(grid_size)
    idx = xp.concatenate([(base + off).ravel() for _, _, _, off in corners])
    wts = xp.concatenate([(wz[dz] * wy[dy] * wx[dx]).ravel() for dz, dy, dx, _ in corners])
    vals = xp.concatenate([values.ravel()] * len(corners))

    def add(weights):
        return bk.scatter_add(idx, weights.astype(xp.float32, copy=False), size).astype(
            xp.float32, copy=False)

    if xp.iscomplexobj(vals):
        return (add(vals.real * wts) + 1j * add(vals.imag * wts)).astype(xp.complex64)
    return add(vals * wts)


# ---------------------------------------------------------------------------
# energies of candidate poses
# ---------------------------------------------------------------------------


def _parabola(lo, mid, hi):
    """Vertex offset in [-0.5, 0.5] and value of the parabola through (-1,lo),(0,mid),(1,hi)."""
    a = 0.5 * (lo + hi) - mid
    b = 0.5 * (hi - lo)
    ok = a < 0
    delta = np.where(ok, -b / np.where(ok, 2 * a, -1.0), 0.0)
    delta = np.clip(delta, -0.5, 0.5)
    return delta, mid + b * delta + a * delta * delta


@dataclass(frozen=True)
class _Evaluation:
    nll: np.ndarray  # (B,) float64, whitened half energy
    shifts: np.ndarray  # (B, 3) float64 voxels
    relative: np.ndarray  # (B,) relative residual energy


def _models(vol: "_FourierVolume", sc: _Scale, rotations):
    """``h^ R f^`` at the support points: (C, B, Ms) complex64."""
    xp = vol.bk.xp
    coords = _rotated_coordinates(xp, rotations, sc.points, vol.size // 2)
    base, frac = _setup(xp, coords, vol.size)
    c = int(vol.spectrum.shape[0])
    return xp.stack([_gather(xp, vol.spectrum[k].reshape(-1), base, frac, vol.size) * sc.otf[k]
                     for k in range(c)])


def _evaluate(vol: "_FourierVolume", sc: _Scale, data: SpectralParticles, l: int, rotations,
              *, box: int, max_shift: float, exact: int = 4) -> _Evaluation:
    """Energies of particle ``l`` for every rotation, each at its best translation.

    ``nll = (Y2 + |h b|^2 - 2 max_t C(t)) / 2``, whitened by the noise power:
    ``C`` is sampled on the correlation grid of ``sc`` (one batched inverse
    FFT) and refined by a parabola per axis; the ``exact`` best candidates
    then get Newton iterations on the exact ``C(t)`` (:func:`_refine_translation`).
    """
    bk = vol.bk
    xp = bk.xp
    rotations = np.asarray(rotations, dtype=np.float64)
    nb = rotations.shape[0]
    ms = int(sc.points.shape[0])
    kz, ky, kx = sc.grid
    half = (kz, ky, kx // 2 + 1)
    ng = half[0] * half[1] * half[2]
    inv_s = data.inv_noise[l]
    y = data.spectra[l][:, sc.select]  # (C, Ms)
    yw = y * inv_s[:, None]
    nll = np.empty(nb)
    shifts = np.empty((nb, 3))
    step = max(1, _CHUNK_POINTS // ms)
    for start in range(0, nb, step):
        sl = slice(start, min(nb, start + step))
        b = sl.stop - sl.start
        model = _models(vol, sc, rotations[sl])  # (C, b, Ms)
        power = model.real**2 + model.imag**2
        hb2 = ((power * sc.weights).sum(axis=-1) * inv_s[:, None]).sum(axis=0)  # (b,)
        cross = (yw[:, None, :] * xp.conj(model)).sum(axis=0)  # (b, Ms)
        values = (cross.real * sc.grid_coef) + 1j * (cross.imag * sc.grid_coef_imag)
        grid = xp.zeros((b, ng), dtype=xp.complex64)
        for r, (pos, gi) in enumerate(sc.grid_layers):
            if r == 0:
                grid[:, gi] = values[:, pos]
            else:
                grid[:, gi] += values[:, pos]
        grid = grid.reshape((b,) + half)
        surface = bk.irfftn(grid, s=sc.grid, axes=AXES3)
        surface *= np.float32(kz * ky * kx)
        masked = xp.where(sc.shift_mask[None], surface, -xp.inf)
        peak = xp.argmax(masked.reshape(b, -1), axis=1)
        iz, iy, ix = xp.unravel_index(peak, sc.grid)
        rows = xp.arange(b)
        mid = to_numpy(surface[rows, iz, iy, ix]).astype(np.float64)
        idx = [iz, iy, ix]
        best_value = mid.copy()
        out = []
        for axis, k in enumerate(sc.grid):
            lo_i = list(idx)
            hi_i = list(idx)
            lo_i[axis] = (idx[axis] - 1) % k
            hi_i[axis] = (idx[axis] + 1) % k
            lo = to_numpy(surface[(rows, *lo_i)]).astype(np.float64)
            hi = to_numpy(surface[(rows, *hi_i)]).astype(np.float64)
            delta, value = _parabola(lo, mid, hi)
            best_value += value - mid  # separable estimate of the peak height
            out.append(to_numpy(sc.shift_axes[axis][idx[axis]]) + delta * (box / k))
        shifts[sl] = np.stack(out, axis=1)
        nll[sl] = 0.5 * (to_numpy(sc.data_energy[l] + hb2) - 2.0 * best_value)
    for k in np.argsort(nll, kind="stable")[:exact]:
        t, value = _refine_translation(vol, sc, data, l, rotations[k], shifts[k], box=box,
                                       max_shift=max_shift)
        if value <= nll[k]:
            shifts[k], nll[k] = t, value
    data_energy = float(to_numpy(sc.data_energy[l]))
    relative = 2.0 * nll / max(data_energy, 1e-30)
    return _Evaluation(nll=nll, shifts=shifts, relative=relative)


def _refine_translation(vol, sc, data, l, rotation, t0, *, box: int, max_shift: float,
                        iterations: int = 5):
    """Newton iterations on the exact correlation ``C(t)`` for one rotation.

    Returns (t (3,), nll) with ``nll`` the exact whitened half energy at ``t``.
    """
    xp = vol.bk.xp
    model = _models(vol, sc, np.asarray(rotation)[None])[:, 0]  # (C, Ms)
    inv_s = data.inv_noise[l]
    y = data.spectra[l][:, sc.select]
    cross = (y * xp.conj(model) * inv_s[:, None]).sum(axis=0)  # (Ms,)
    wc = to_numpy(cross * sc.weights).astype(np.complex128)
    hb2 = float(to_numpy((((model.real**2 + model.imag**2) * sc.weights).sum(axis=1)
                          * inv_s).sum()))
    p = to_numpy(sc.points).astype(np.float64)
    scale = 2.0 * np.pi / box
    t = np.asarray(t0, dtype=np.float64).copy()
    norm0 = np.linalg.norm(t)
    if norm0 > max_shift:
        t *= max_shift / norm0

    def corr(tt):
        return float(np.real(wc * np.exp(1j * scale * (p @ tt))).sum())

    best_c = corr(t)
    for _ in range(iterations):
        z = wc * np.exp(1j * scale * (p @ t))
        grad = -scale * (z.imag @ p)
        hess = -(scale**2) * ((p * z.real[:, None]).T @ p)
        eig = np.linalg.eigvalsh(hess)
        if eig.max() >= 0:
            break
        step = -np.linalg.solve(hess, grad)
        norm = np.linalg.norm(step)
        if norm > 2.0:
            step *= 2.0 / norm
        cand = t + step
        cn = np.linalg.norm(cand)
        if cn > max_shift:
            cand *= max_shift / cn
        c_new = corr(cand)
        if c_new < best_c:
            break
        t, best_c = cand, c_new
        if norm < 1e-3:
            break
    nll = 0.5 * (float(to_numpy(sc.data_energy[l])) + hb2 - 2.0 * best_c)
    return t, nll


def _sgd_update(vol: "_FourierVolume", sc: _Scale, data: SpectralParticles, l: int, rotation,
                translation, *, box: int, group, lr: float, damping) -> None:
    """One preconditioned gradient step (Eloy et al. 2023 eq. 12, 33) for particle ``l``.

    The gradient ``conj(g) (g R_k f^ - y^)`` (``g = h^ rho_t``) of every pose
    ``R_k = R C_k`` of the symmetry group (the particle counts once per element,
    each with its own residual, so that the step is the exact gradient of the
    symmetrised energy even when the iterate is not exactly symmetric) is
    scattered with the adjoint of the trilinear gather at ``q = 2 R_k^T p`` and,
    conjugated, at ``-q`` (Hermitian symmetry); the curvature ``|h^|^2`` is
    accumulated the same way into ``B``; the step is
    :meth:`_FourierVolume.apply_gradient`.
    """
    bk = vol.bk
    xp = bk.xp
    c = data.n_channels
    rotation = np.asarray(rotation, dtype=np.float64)
    rots = np.matmul(rotation[None], group)  # (n, 3, 3): the poses R C_k
    n_sym = rots.shape[0]
    models = _models(vol, sc, rots)  # h R_k f^, (C, n, Ms)
    p = sc.points
    phase = (p @ xp.asarray(np.asarray(translation, dtype=np.float32))) * np.float32(
        -2.0 * np.pi / box)
    ramp = (xp.cos(phase) + 1j * xp.sin(phase)).astype(xp.complex64)  # rho_t
    y = data.spectra[l][:, sc.select]
    inv_s = data.inv_noise[l]
    half_w = sc.weights * np.float32(0.5)
    pts2 = xp.concatenate([p, -p], axis=0)  # (2Ms, 3)
    coords = _rotated_coordinates(xp, rots, pts2, vol.size // 2)
    base, frac = _setup(xp, coords, vol.size)
    padded = _padded_shape(vol.shape3)
    size = int(np.prod(padded))
    grads = xp.empty((c,) + padded, dtype=xp.complex64)
    for k in range(c):
        g_k = sc.otf[k] * ramp
        resid = models[k] * ramp - y[k]  # g b - y, (n, Ms)
        grad = (xp.conj(g_k) * resid) * (half_w * inv_s[k])
        curv = xp.broadcast_to(sc.otf_power[k] * (half_w * inv_s[k]), grad.shape)
        vals = xp.concatenate([grad, xp.conj(grad)], axis=1)
        cvals = xp.concatenate([curv, curv], axis=1)
        grads[k] = _scatter(bk, size, base, frac, vol.size, vals).reshape(padded)
        vol.curvature[k] += _scatter(bk, size, base, frac, vol.size, cvals).reshape(padded)
    del n_sym
    vol.apply_gradient(grads, vol.curvature, damping, lr)


# ---------------------------------------------------------------------------
# sampling distributions (Eloy et al. 2023 eq. 16-23)
# ---------------------------------------------------------------------------


def _psi_kernel(psi: np.ndarray, columns: np.ndarray, beta: float, symmetry: int) -> np.ndarray:
    """``K^psi[:, columns]``, shape (M_psi, len(columns)), max 1 (eq. 20, period 2 pi / n)."""
    n = symmetry
    diff = psi[:, None] - psi[columns][None, :]
    return np.exp((beta / (n * n)) * (np.cos(n * diff) - 1.0))


def _direction_kernel(directions: np.ndarray, columns: np.ndarray, beta: float) -> np.ndarray:
    """``K^d[:, columns]``, shape (M_d, len(columns)), max 1 (eq. 21)."""
    return np.exp(beta * (directions @ directions[columns].T - 1.0))


def smoothed_marginals(likelihoods, direction_index, psi_index, q_direction, q_psi, *,
                       grid: SO3Grid, beta_d: float = 50.0,
                       beta_psi: float = 50.0) -> tuple[np.ndarray, np.ndarray]:
    """Kernel-smoothed, importance-weighted marginal likelihoods (Eloy et al. 2023 eq. 16-21).

    Parameters
    ----------
    likelihoods : ndarray, shape (N_d, N_psi)
        ``p_ij`` of the sampled candidates (any positive scale).
    direction_index : ndarray of int, shape (N_d,)
        Sampled direction indices ``I^d`` (into ``grid.directions``).
    psi_index : ndarray of int, shape (N_psi,)
        Sampled in-plane indices ``I^psi``.
    q_direction : ndarray, shape (M_d,)
        Sampling distribution ``Q^d`` the directions were drawn from.
    q_psi : ndarray, shape (M_psi,)
        Sampling distribution ``Q^psi``.
    grid : SO3Grid
        The grid (directions, angles and symmetry order).
    beta_d, beta_psi : float, optional
        Kernel concentrations (eq. 20-21; 50 in Eloy et al. 2023).

    Returns
    -------
    pi_direction : ndarray, shape (M_d,), float64
        ``Z_d^-1 sum_k K^d_jk pi~_k``, sums to 1.
    pi_psi : ndarray, shape (M_psi,), float64
        ``Z_psi^-1 sum_k K^psi_ik pi~_k``, sums to 1.
    """
    p = np.asarray(likelihoods, dtype=np.float64)
    jd = np.asarray(direction_index)
    ip = np.asarray(psi_index)
    if p.ndim != 2 or p.shape != (jd.size, ip.size):
        raise ValueError(f"likelihoods must have shape (N_d, N_psi) = ({jd.size}, {ip.size}), "
                         f"got {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError("likelihoods must be finite, >= 0 and not all zero")
    qd = np.asarray(q_direction, dtype=np.float64)
    qp = np.asarray(q_psi, dtype=np.float64)
    if qd.shape != (grid.n_directions,) or qp.shape != (grid.n_psi,):
        raise ValueError(f"q_direction and q_psi must have shapes ({grid.n_directions},) and "
                         f"({grid.n_psi},), got {qd.shape} and {qp.shape}")
    if np.any(qd[jd] <= 0) or np.any(qp[ip] <= 0):
        raise ValueError("q_direction and q_psi must be > 0 at the sampled indices")
    pi_psi_s = (p / qd[jd][:, None]).sum(axis=0)  # eq. 16
    pi_d_s = (p / qp[ip][None, :]).sum(axis=1)  # eq. 17
    pi_psi = _psi_kernel(grid.psi, ip, beta_psi, grid.symmetry) @ pi_psi_s  # eq. 18
    pi_d = _direction_kernel(grid.directions, jd, beta_d) @ pi_d_s  # eq. 19
    return pi_d / pi_d.sum(), pi_psi / pi_psi.sum()


def _draw(rng: np.random.Generator, q: np.ndarray, n: int) -> np.ndarray:
    """``n`` distinct indices drawn from ``q`` (all indices when ``n >= len(q)``)."""
    m = q.size
    if n >= m:
        return np.arange(m)
    nz = int(np.count_nonzero(q > 0))
    if nz < n:  # cannot happen with a uniform share > 0; keep a safe fallback
        q = q + 1e-12
        q = q / q.sum()
    return np.sort(rng.choice(m, size=n, replace=False, p=q))


# ---------------------------------------------------------------------------
# state, result
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SGDState:
    """Everything needed to continue an SGD run after an epoch (plain NumPy).

    Attributes
    ----------
    epoch : int
        Completed epochs.
    band : int
        Band ``L`` of the volume at the end of that epoch.
    volume : ndarray, float32, shape (C, L, L, L)
        The iterate, downsampled to ``L^3``.
    curvature : ndarray, float32, shape (C, 2L+3, 2L+3, 2L+3)
        The preconditioner ``B`` (padded Fourier grid).
    alpha : float
        Uniform share of the sampling distributions for the next epoch.
    q_direction, q_psi : ndarray, float64, shapes (N, M_d), (N, M_psi)
        Sampling distributions.
    pi_direction, pi_psi : ndarray, float64, shapes (N, M_d), (N, M_psi)
        Last smoothed marginal likelihoods.
    rotations : ndarray, float64, shape (N, 3, 3)
    translations : ndarray, float64, shape (N, 3)
        Current poses (voxels).
    relative : ndarray, float64, shape (N,)
        Relative energy of each particle in the last epoch.
    checks : ndarray, int64, shape (K,)
        Epochs after which a global search ran.
    energies : ndarray, float64, shape (epoch,)
        Mean relative energy of each completed epoch.
    bands : ndarray, int64, shape (epoch,)
        Band used by each epoch.
    seconds : ndarray, float64, shape (epoch,)
        Wall time of each epoch.
    rng_state : str
        JSON of ``numpy.random.Generator.bit_generator.state``.
    phase : int
        0 while a symmetric run is in its first stage without symmetry, 1 after
        (and for runs without symmetry).
    switch_epoch : int
        Epoch after which the symmetry axis was aligned and the symmetry imposed
        (-1: not yet, or no such stage).
    """

    epoch: int
    band: int
    volume: np.ndarray
    curvature: np.ndarray
    alpha: float
    q_direction: np.ndarray
    q_psi: np.ndarray
    pi_direction: np.ndarray
    pi_psi: np.ndarray
    rotations: np.ndarray
    translations: np.ndarray
    relative: np.ndarray
    checks: np.ndarray
    energies: np.ndarray
    bands: np.ndarray
    seconds: np.ndarray
    rng_state: str
    phase: int = 1
    switch_epoch: int = -1

    _ARRAYS = ("volume", "curvature", "q_direction", "q_psi", "pi_direction", "pi_psi",
               "rotations", "translations", "relative", "checks", "energies", "bands",
               "seconds")

    def to_arrays(self) -> dict:
        """A dict of NumPy arrays (for ``numpy.savez``); inverse :meth:`from_arrays`."""
        out = {name: np.asarray(getattr(self, name)) for name in self._ARRAYS}
        out["epoch"] = np.asarray(self.epoch, dtype=np.int64)
        out["band"] = np.asarray(self.band, dtype=np.int64)
        out["alpha"] = np.asarray(self.alpha, dtype=np.float64)
        out["rng_state"] = np.asarray(self.rng_state)
        out["phase"] = np.asarray(self.phase, dtype=np.int64)
        out["switch_epoch"] = np.asarray(self.switch_epoch, dtype=np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays) -> "SGDState":
        """Rebuild a state from :meth:`to_arrays` output (e.g. a loaded ``.npz``)."""
        missing = [k for k in (*cls._ARRAYS, "epoch", "band", "alpha", "rng_state")
                   if k not in arrays]
        if missing:
            raise ValueError(f"the checkpoint lacks {', '.join(missing)}: it is not an SGD "
                             "ab initio checkpoint")
        kwargs = {name: np.array(arrays[name]) for name in cls._ARRAYS}
        # checkpoints written before the two-stage symmetric runs lack phase and switch_epoch
        return cls(epoch=int(arrays["epoch"]), band=int(arrays["band"]),
                   alpha=float(arrays["alpha"]), rng_state=str(arrays["rng_state"]),
                   phase=int(arrays["phase"]) if "phase" in arrays else 1,
                   switch_epoch=int(arrays["switch_epoch"]) if "switch_epoch" in arrays else -1,
                   **kwargs)


@dataclass(frozen=True, eq=False)
class AbInitioResult:
    """Result of an ab initio reconstruction.

    Attributes
    ----------
    volume : ndarray, float32, shape (D, D, D) or (C, D, D, D)
        The reconstruction (channel axis as in the particles).
    poses : Poses
        Estimated pose of each particle (zyx frame, voxels); the volume's frame
        is arbitrary (register it to compare with a ground truth).
    energies : ndarray, float64, shape (E,)
        Mean relative energy ``||y^ - h^ rho_t R f^||^2 / ||y^||^2`` on the OTF
        support, per epoch (per temperature stage for annealing).
    epoch_bands : ndarray, int64, shape (E,)
        Volume band ``L`` (voxels across the box) used at each epoch.
    epoch_seconds : ndarray, float64, shape (E,)
        Wall time of each epoch, seconds.
    psi_marginals : ndarray, float64, shape (N, M_psi)
        Marginal likelihood of each in-plane angle of the grid, per particle.
    direction_marginals : ndarray, float64, shape (N, M_d)
        Marginal likelihood of each grid direction, per particle.
    grid : SO3Grid
        The grid the marginals refer to.
    particle_energies : ndarray, float64, shape (N,)
        Relative energy of each particle at its estimated pose.
    converged : bool
        True when the relative-energy plateau stopped the run (False: the
        maximum number of epochs).
    iterate : ndarray, float32, same shape as ``volume``
        The last SGD iterate (annealing: its closed-form volume), before the
        final known-pose reconstruction.
    """

    volume: np.ndarray
    poses: Poses
    energies: np.ndarray
    epoch_bands: np.ndarray
    epoch_seconds: np.ndarray
    psi_marginals: np.ndarray
    direction_marginals: np.ndarray
    grid: SO3Grid
    particle_energies: np.ndarray
    converged: bool
    iterate: np.ndarray

    @property
    def n_epochs(self) -> int:
        return int(self.energies.size)


@dataclass(frozen=True, eq=False)
class PoseSearchResult:
    """Result of :func:`pose_search`.

    Attributes
    ----------
    poses : Poses
        Best pose of each particle.
    energies : ndarray, float64, shape (N,)
        Relative energy at the best pose.
    psi_marginals : ndarray, float64, shape (N, M_psi)
        Exact marginal likelihoods over the in-plane angles (eq. 14), each row
        summing to 1.
    direction_marginals : ndarray, float64, shape (N, M_d)
        Exact marginal likelihoods over the directions (eq. 15).
    """

    poses: Poses
    energies: np.ndarray
    psi_marginals: np.ndarray
    direction_marginals: np.ndarray


# ---------------------------------------------------------------------------
# the SGD driver
# ---------------------------------------------------------------------------


def _symmetrize(bk: Backend, volume, symmetry: int):
    """Average of the volume rotated by the elements of Cn (exact rotations about z),
    (C, D, D, D)."""
    if symmetry == 1:
        return volume
    from spfluo.algorithms.transform import rotate_about_z

    out = sum(rotate_about_z(volume, 2.0 * np.pi * k / symmetry, backend=bk)
              for k in range(symmetry)) / symmetry
    return out.astype(volume.dtype, copy=False)


def _likelihoods(nll: np.ndarray, inv_temperature: float) -> np.ndarray:
    return np.exp(-(nll - nll.min()) * inv_temperature)


def _final_volume(particles, poses: Poses, psf, *, symmetry: int, method: str, backend):
    """Known-pose reconstruction (spfluo.algorithms.reconstruct) for the final step."""
    from spfluo.algorithms import reconstruct as _reconstruct

    return _reconstruct.reconstruct(particles, poses, psf, method=method, symmetry=symmetry,
                                    backend=backend).volume


def refine_poses_local(volume, data: SpectralParticles, poses: Poses, *,
                       stages_deg=_LOCAL_STAGES_DEG,
                       max_shift: float | None = None) -> tuple[Poses, np.ndarray]:
    """Refine poses by local rotation searches against a volume, at the full band.

    Parameters
    ----------
    volume : ndarray, shape (D, D, D) or (C, D, D, D)
        Reference volume (same box and channels as the particles).
    data : SpectralParticles
        The particles on the OTF support (:meth:`SpectralParticles.build`).
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
    vol = _as_reference(xp, volume, data)
    if not isinstance(poses, Poses) or len(poses) != data.n_particles:
        raise ValueError(f"poses must be a Poses with one pose per particle "
                         f"({data.n_particles}), got {poses!r}")
    fv = _FourierVolume.initial(bk, vol, data.band)
    sc = _make_scale(data, data.band, max_shift)
    return _refine_local(fv, sc, data, poses, stages_deg=stages_deg, max_shift=max_shift)


def _refine_local(fv, sc, data, poses: Poses, *, stages_deg, max_shift):
    box = data.box
    rotations = poses.rotations.copy()
    translations = poses.translations.copy()
    energies = np.empty(data.n_particles)
    locals_ = [local_rotation_grid(np.deg2rad(s), np.deg2rad(m)) for s, m in stages_deg]
    for l in range(data.n_particles):
        R = rotations[l]
        for local in locals_:
            cand = np.matmul(R[None], local)
            ev = _evaluate(fv, sc, data, l, cand, box=box, max_shift=max_shift)
            k = int(np.argmin(ev.nll))
            R = cand[k]
        rotations[l] = R
        translations[l] = ev.shifts[k]
        energies[l] = ev.relative[k]
    return Poses(rotations, translations), energies


def _energies_at_shifts(fv: "_FourierVolume", sc: _Scale, data: SpectralParticles, l: int,
                        rotations, translations) -> np.ndarray:
    """Whitened half energies of particle ``l`` for rotations at given translations (B,)."""
    xp = fv.bk.xp
    rotations = np.asarray(rotations, dtype=np.float64)
    translations = np.asarray(translations, dtype=np.float64)
    nb = rotations.shape[0]
    ms = int(sc.points.shape[0])
    inv_s = data.inv_noise[l]
    yw = data.spectra[l][:, sc.select] * inv_s[:, None]  # (C, Ms)
    out = np.empty(nb)
    step = max(1, _CHUNK_POINTS // ms)
    for start in range(0, nb, step):
        sl = slice(start, min(nb, start + step))
        model = _models(fv, sc, rotations[sl])  # (C, b, Ms)
        power = model.real**2 + model.imag**2
        hb2 = ((power * sc.weights).sum(axis=-1) * inv_s[:, None]).sum(axis=0)
        cross = (yw[:, None, :] * xp.conj(model)).sum(axis=0)  # (b, Ms)
        t = xp.asarray(translations[sl].astype(np.float32))
        phase = (t @ sc.points.T) * np.float32(2.0 * np.pi / data.box)  # (b, Ms)
        corr = ((cross.real * xp.cos(phase) - cross.imag * xp.sin(phase)) * sc.weights).sum(-1)
        out[sl] = 0.5 * to_numpy(sc.data_energy[l] + hb2 - 2.0 * corr.astype(xp.float64))
    return out


def _angles_to(rotations, reference, group) -> np.ndarray:
    """Geodesic angles (radians) from each of ``rotations`` (K, 3, 3) to ``reference``,
    modulo the symmetry ``group`` (n, 3, 3): ``min_k angle(R, reference C_k)``."""
    refs = np.matmul(reference[None], group)  # (n, 3, 3)
    cos = (np.einsum("kij,gij->kg", rotations, refs).max(axis=1) - 1.0) / 2.0
    return np.arccos(np.clip(cos, -1.0, 1.0))


def _global_check(fv_low: "_FourierVolume", sc_low: _Scale, fv_full: "_FourierVolume",
                  sc_full: _Scale, data: SpectralParticles, poses: Poses, mats, centre_of_mass,
                  *, max_shift: float, group, n_candidates: int = 4,
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
    With ``keep_polarity`` (Cn, after the polarity consensus) the candidates
    that turn the symmetry axis upside down (within 30 degrees) are not
    considered: the polarity is a collective decision (:func:`_polarity_consensus`);
    against an iterate, one particle's two polarities differ by a few tens of
    log-likelihood units for side views, within the noise of the comparison.
    Returns the poses and the indices of the particles moved.
    """
    box = data.box
    rotations = poses.rotations.copy()
    translations = poses.translations.copy()
    stages = [(local_rotation_grid(np.deg2rad(a), np.deg2rad(b)), full)
              for a, b, full in ((5.0, 10.0, False), (2.5, 5.0, False), (2.5, 5.0, True))]
    com = np.asarray(centre_of_mass, dtype=np.float64)
    moved: list = []
    for l in range(data.n_particles):
        shifts = translations[l] + (rotations[l] @ com)[None] - mats @ com
        norm = np.linalg.norm(shifts, axis=1, keepdims=True)
        shifts *= np.minimum(1.0, max_shift / np.maximum(norm, 1e-12))
        scores = _energies_at_shifts(fv_low, sc_low, data, l, mats, shifts)
        far = _angles_to(mats, rotations[l], group) > min_angle
        if keep_polarity:  # (R_l^T M)[z, z] > -cos 30: the axis not turned over
            far &= mats[:, :, 0] @ rotations[l][:, 0] > -math.cos(math.radians(30.0))
        chosen: list = []
        for k in np.argsort(np.where(far, scores, np.inf), kind="stable"):
            if len(chosen) == n_candidates or not far[k]:
                break
            if chosen and np.any(_angles_to(mats[chosen], mats[k], group) <= min_angle):
                continue
            chosen.append(int(k))
        if not chosen:
            continue
        # the current pose gets the same last (full band) local search as the candidates
        cand = np.matmul(rotations[l][None], stages[-1][0])
        current = _evaluate(fv_full, sc_full, data, l, cand, box=box, max_shift=max_shift)
        j = int(np.argmin(current.nll))
        best = (current.nll[j], cand[j], current.shifts[j])
        current_value = best[0]
        for k in chosen:
            R = mats[k]
            for local, full in stages:
                fv, sc = (fv_full, sc_full) if full else (fv_low, sc_low)
                cand = np.matmul(R[None], local)
                e = _evaluate(fv, sc, data, l, cand, box=box, max_shift=max_shift)
                j = int(np.argmin(e.nll))
                R, t, value = cand[j], e.shifts[j], e.nll[j]
            if value < best[0]:
                best = (value, R, t)
        # a candidate refined back next to the current pose is not a distant optimum (the
        # SGD grid would pull the particle back to its grid point: a move for nothing)
        if best[0] < current_value and float(
                _angles_to(best[1][None], rotations[l], group)[0]) > min_angle / 2:
            rotations[l], translations[l] = best[1], best[2]
            moved.append(l)
    return Poses(rotations, translations), np.asarray(moved, dtype=np.int64)


# ---------------------------------------------------------------------------
# polarity consensus (Cn): the two ends of the object
# ---------------------------------------------------------------------------


def _flip_rotation(theta: float) -> np.ndarray:
    """Rotation by pi about the axis ``(cos theta, sin theta, 0)`` (xyz) of the xy plane.

    zyx frame: ``2 a a^T - I`` with ``a = (0, sin theta, cos theta)``; it turns
    the z axis (the symmetry axis) upside down.
    """
    a = np.array([0.0, math.sin(theta), math.cos(theta)])
    return 2.0 * np.outer(a, a) - np.eye(3)


def _flip_pose(rotation, translation, flip, centre):
    """Pose of the same particle when the volume is turned by ``flip`` about ``centre``.

    The particle ``T_t R f`` equals ``T_t' R' (F_c f)`` with ``F_c`` the turn
    ``F`` about ``c`` and ``R' = R F``, ``t' = t + R (I - F) c`` (``F`` is an
    involution).  Works on one pose or batches (rotations (..., 3, 3)).
    """
    r = np.asarray(rotation, dtype=np.float64)
    shift = (np.eye(3) - flip) @ np.asarray(centre, dtype=np.float64)
    return np.matmul(r, flip), np.asarray(translation, dtype=np.float64) + r @ shift


def _polarity_axis(vol: "_FourierVolume", symmetry: int, *, z_range: float = 1.0,
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
    flips = np.stack([_flip_rotation(t) for t in thetas])
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


def _backprojection(vol: "_FourierVolume", sc: _Scale, data: SpectralParticles, l: int,
                    rotations, translation, mask):
    """Whitened back-projection of particle ``l`` and its curvature on the volume grid.

    ``b = sum_k S_k^T conj(h^ rho_t) y^ / s`` and ``K = sum_k S_k^T |h^|^2 / s``
    (``S_k`` the trilinear gather at ``2 R_k^T p``, and its conjugate at ``-p``,
    as in :func:`_sgd_update`) for the poses ``rotations`` (K, 3, 3) sharing
    the translation; values at the flat grid indices ``mask``: (C, M) complex64
    and (C, M) float32.
    """
    bk = vol.bk
    xp = bk.xp
    c = data.n_channels
    p = sc.points
    phase = (p @ xp.asarray(np.asarray(translation, dtype=np.float32))) * np.float32(
        -2.0 * np.pi / data.box)
    ramp = (xp.cos(phase) + 1j * xp.sin(phase)).astype(xp.complex64)
    y = data.spectra[l][:, sc.select]
    inv_s = data.inv_noise[l]
    half_w = sc.weights * np.float32(0.5)
    pts2 = xp.concatenate([p, -p], axis=0)
    coords = _rotated_coordinates(xp, np.asarray(rotations), pts2, vol.size // 2)
    base, frac = _setup(xp, coords, vol.size)
    size = int(np.prod(_padded_shape(vol.shape3)))
    nk = int(base.shape[0])
    b_out = xp.empty((c, mask.size), dtype=xp.complex64)
    k_out = xp.empty((c, mask.size), dtype=xp.float32)
    for k in range(c):
        val = xp.conj(sc.otf[k] * ramp) * y[k] * (half_w * inv_s[k])
        vals = xp.broadcast_to(xp.concatenate([val, xp.conj(val)]), (nk, 2 * val.size))
        curv = sc.otf_power[k] * (half_w * inv_s[k])
        cvals = xp.broadcast_to(xp.concatenate([curv, curv]), (nk, 2 * curv.size))
        b_out[k] = _scatter(bk, size, base, frac, vol.size, xp.ascontiguousarray(vals))[mask]
        k_out[k] = _scatter(bk, size, base, frac, vol.size, xp.ascontiguousarray(cvals))[mask]
    return b_out, k_out


def _curvature_sum(vol: "_FourierVolume", sc: _Scale, data: SpectralParticles, rotations,
                   group):
    """One epoch's worth of the preconditioner ``B`` for the given poses (C, padded grid).

    The curvatures ``|h^|^2 w / (2 s)`` of every particle, scattered at ``2 (R_l C_k)^T p``
    and ``-p`` for every element ``C_k`` of the group, as :func:`_sgd_update` accumulates
    them during an epoch.
    """
    bk = vol.bk
    xp = bk.xp
    padded = _padded_shape(vol.shape3)
    size = int(np.prod(padded))
    out = xp.zeros((data.n_channels, size), dtype=xp.float32)
    pts2 = xp.concatenate([sc.points, -sc.points], axis=0)
    half_w = sc.weights * np.float32(0.5)
    for l in range(data.n_particles):
        rots = np.matmul(np.asarray(rotations[l], dtype=np.float64)[None], group)
        coords = _rotated_coordinates(xp, rots, pts2, vol.size // 2)
        base, frac = _setup(xp, coords, vol.size)
        for k in range(data.n_channels):
            curv = sc.otf_power[k] * (half_w * data.inv_noise[l, k])
            cvals = xp.broadcast_to(xp.concatenate([curv, curv]), (rots.shape[0], 2 * curv.size))
            out[k] += _scatter(bk, size, base, frac, vol.size, xp.ascontiguousarray(cvals))
    return out.reshape((data.n_channels,) + padded)


def _polarity_consensus(vol: "_FourierVolume", sc: _Scale, data: SpectralParticles, rotations,
                        translations, group, flip, centre, *, rng: np.random.Generator,
                        max_shift: float, regularization: float = 0.1, n_restarts: int = 4):
    """Turn the particles upside down as needed so that all agree on one polarity.

    Each particle has two pose hypotheses: its pose and the pose for the
    volume turned by ``flip`` about ``centre`` (:func:`_flip_pose`), both
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
    bk = vol.bk
    xp = bk.xp
    n = data.n_particles
    c = data.n_channels
    box = data.box
    in_plane = rotation_about_z(np.deg2rad(np.arange(-6.0, 6.0 + 1e-9, 0.5)))
    hyp_r = np.empty((2, n, 3, 3))
    hyp_t = np.empty((2, n, 3))
    turned_r, turned_t = _flip_pose(rotations, translations, flip, centre)
    for h, (rs, ts) in enumerate(((rotations, translations), (turned_r, turned_t))):
        for l in range(n):
            cand = np.matmul(np.asarray(rs[l], dtype=np.float64)[None], in_plane)
            ev = _evaluate(vol, sc, data, l, cand, box=box, max_shift=max_shift)
            k = int(np.argmin(ev.nll))
            hyp_r[h, l], hyp_t[h, l] = cand[k], ev.shifts[k]
    # grid points reached by any particle: the ball of the band
    g = vol.size
    axis = np.arange(g + 3) - 1 - g // 2
    r2 = axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2
    mask = xp.asarray(np.flatnonzero(r2.ravel() <= (sc.band + 2) ** 2))
    m = int(mask.size)
    b_h = xp.empty((2, n, c, m), dtype=xp.complex64)
    k_h = xp.empty((2, n, c, m), dtype=xp.float32)
    for h in range(2):
        for l in range(n):
            b_h[h, l], k_h[h, l] = _backprojection(vol, sc, data, l,
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
        See :meth:`SpectralParticles.build`.
    backend : Backend or {"cpu", "gpu"}, optional

    Returns
    -------
    PoseSearchResult
    """
    bk = resolve_backend(backend, particles)
    xp = bk.xp
    data = SpectralParticles.build(particles, psf, support_threshold=support_threshold,
                                   backend=bk)
    box = data.box
    if grid is None:
        grid = so3_grid(500, 36)
    if not isinstance(grid, SO3Grid):
        raise ValueError(f"grid must be an SO3Grid (geometry.so3_grid), got {type(grid).__name__}")
    downsampling = check_float(downsampling, "downsampling", low=1.0)
    temperature = check_float(temperature, "temperature", low=0.0, low_inclusive=False)
    max_shift = check_max_shift(max_shift, box)
    vol = _as_reference(xp, volume, data)
    coarse_band = _coarse_band(data.band, downsampling)
    fv = _FourierVolume.initial(bk, vol, data.band)
    fv_coarse = fv.resized(coarse_band) if coarse_band != data.band else fv
    sc = _make_scale(data, coarse_band, max_shift)
    mats = grid.matrices().reshape(-1, 3, 3)
    n = data.n_particles
    rotations = np.empty((n, 3, 3))
    translations = np.empty((n, 3))
    energies = np.empty(n)
    marg_psi = np.empty((n, grid.n_psi))
    marg_d = np.empty((n, grid.n_directions))
    for l in range(n):
        ev = _evaluate(fv_coarse, sc, data, l, mats, box=box, max_shift=max_shift)
        k = int(np.argmin(ev.nll))
        rotations[l] = mats[k]
        translations[l] = ev.shifts[k]
        energies[l] = ev.relative[k]
        p = _likelihoods(ev.nll, 1.0 / temperature).reshape(grid.n_directions, grid.n_psi)
        marg_d[l] = p.sum(axis=1) / p.sum()
        marg_psi[l] = p.sum(axis=0) / p.sum()
    poses = Poses(rotations, translations)
    if refine:
        sc_full = _make_scale(data, data.band, max_shift)
        poses, energies = _refine_local(fv, sc_full, data, poses, stages_deg=(
            (5.0, 10.0),) + _LOCAL_STAGES_DEG, max_shift=max_shift)
    return PoseSearchResult(poses=poses, energies=energies, psi_marginals=marg_psi,
                            direction_marginals=marg_d)


def _coarse_band(band: int, downsampling: float) -> int:
    b = int(round(band / downsampling))
    b += b % 2
    return max(8, min(b, band))


def _plateau(energies: list, tol: float, patience: int) -> bool:
    if len(energies) < patience + 1:
        return False
    recent = np.asarray(energies[-(patience + 1):])
    return bool((recent.max() - recent.min()) <= tol * abs(recent.mean()))


def sgd_reconstruction(
    particles,
    psf,
    *,
    max_epochs: int = 40,
    min_epochs: int = 8,
    coarse_epochs: int = 15,
    downsampling: float = 2.0,
    n_directions: int = 64,
    n_psi: int = 8,
    grid_directions: int | None = None,
    grid_psi: int | None = None,
    alpha_r: float = 1.2,
    beta_d: float = 50.0,
    beta_psi: float = 50.0,
    temperature: float = 1.0,
    learning_rate: float = 1.0,
    memory: float = 0.5,
    regularization: float = 0.1,
    tol: float = 2e-2,
    patience: int = 3,
    max_shift: float | None = None,
    symmetry: int = 1,
    support_threshold: float = 1e-3,
    global_search: bool = True,
    align_axis: bool = True,
    polarity: bool = True,
    refine: bool = True,
    final_reconstruction: str | None = "hessian",
    seed=0,
    checkpoint: Callable[[SGDState], None] | None = None,
    resume: SGDState | None = None,
    progress: Callable[[dict], None] | None = None,
    backend: Any = None,
) -> AbInitioResult:
    """Ab initio reconstruction by SGD with importance sampling of the orientations.

    Eloy et al. 2023, Algorithm 1 (see the module docstring for the design).

    Parameters
    ----------
    particles : ndarray, shape (N, D, D, D) or (N, C, D, D, D)
        Particles, cubic boxes, isotropic voxels; several channels share the
        poses.
    psf : ndarray, shape (d, d, d) or (C, d, d, d)
        PSF centred at ``d//2`` (``d <= D`` is padded), one per channel or one
        for all; normalised to unit sum here.
    max_epochs : int, optional
        Maximum number of epochs (>= 1).
    min_epochs : int, optional
        No plateau stop before this many epochs.
    coarse_epochs : int, optional
        Most epochs run on the band reduced by ``downsampling`` (0: none); the
        coarse stage ends earlier on a plateau of the energy.
    downsampling : float, optional
        Band reduction of the coarse epochs (>= 1).
    n_directions, n_psi : int, optional
        ``N_d`` and ``N_psi``, directions and in-plane angles drawn per particle
        and epoch (64 and 8 in Eloy et al. 2023); ``N_d N_psi`` candidates per particle.
    grid_directions, grid_psi : int, optional
        Grid sizes ``M_d``, ``M_psi`` (default :func:`default_grid_size`).
    alpha_r : float, optional
        Decay of the uniform share per epoch (> 1; 1.2 in Eloy et al. 2023).
    beta_d, beta_psi : float, optional
        Kernel concentrations (50 in Eloy et al. 2023).
    temperature : float, optional
        Likelihood temperature (> 0).
    learning_rate : float, optional
        SGD step relative to the preconditioner (in ``(0, 1]``).
    memory : float, optional
        Factor in ``[0, 1]`` applied to the preconditioner at each epoch.
    regularization : float, optional
        Damping ``lambda`` relative to the curvature of one particle (>= 0).
    tol : float, optional
        Plateau: the mean relative energy varies by less than ``tol``
        (relative) over ``patience`` epochs; a plateau ends the coarse stage,
        and at the full band (after ``min_epochs``) the run.
    patience : int, optional
    max_shift : float, optional
        Largest translation norm, voxels (default ``D / 4``).
    symmetry : int, optional
        Order n of a cyclic symmetry Cn about z (1 = none): grid restricted to
        one asymmetric unit, symmetric gradient updates, symmetric result
        (after a first stage without symmetry when ``align_axis``).
    support_threshold : float, optional
        Relative ``|h^|^2`` threshold of the OTF support (1e-3).
    global_search : bool, optional
        When the energy reaches its plateau (or at ``max_epochs``), search every
        particle exhaustively against the iterate and move the particles whose
        sampling settled in a wrong mode; if some moved, run more epochs (at
        most 3 searches in all).  See the module docstring.
    align_axis : bool, optional
        With ``symmetry > 1``: run the epochs without symmetry until the energy
        reaches its plateau at the full band, then find the Cn axis of the
        iterate (:func:`spfluo.algorithms.symmetry.align_symmetry_axis`), turn it
        onto z (the poses follow), symmetrise the iterate and continue with Cn
        (module docstring).  False imposes Cn from the first epoch.
    polarity : bool, optional
        With ``symmetry > 1``: the polarity consensus (which end of the object is
        up, decided for all particles together) when the symmetry is imposed
        (``align_axis``) or at the first global search (otherwise); the later
        global searches then keep each particle's polarity (module docstring).
    refine : bool, optional
        Local pose refinement at the end (see the module docstring).
    final_reconstruction : {"hessian", "tv", "tikhonov", None}, optional
        Method of :func:`spfluo.algorithms.reconstruct.reconstruct` (weight
        chosen on half maps) for the final volume from the estimated poses;
        None keeps the SGD iterate.
    seed : int or numpy.random.Generator, optional
        Seeds the initial volume, the shuffles and the draws.
    checkpoint : callable, optional
        ``checkpoint(state)`` after every epoch (:class:`SGDState`).
    resume : SGDState, optional
        Continue from this state (same particles, PSF and options).
    progress : callable, optional
        ``progress(info)`` after every epoch, ``info`` a dict with ``epoch``,
        ``max_epochs``, ``energy``, ``band``, ``alpha``, ``seconds``,
        ``elapsed``; and after each final step, a dict with ``stage`` (a
        message) and ``elapsed``.
    backend : Backend or {"cpu", "gpu"}, optional

    Returns
    -------
    AbInitioResult
    """
    bk = resolve_backend(backend, particles)
    xp = bk.xp
    y, squeeze = as_particles(particles, xp)
    n, c, box = int(y.shape[0]), int(y.shape[1]), int(y.shape[2])
    max_epochs = check_int(max_epochs, "max_epochs", minimum=1)
    min_epochs = check_int(min_epochs, "min_epochs", minimum=0)
    coarse_epochs = check_int(coarse_epochs, "coarse_epochs", minimum=0)
    downsampling = check_float(downsampling, "downsampling", low=1.0)
    n_directions = check_int(n_directions, "n_directions", minimum=1)
    n_psi = check_int(n_psi, "n_psi", minimum=1)
    symmetry = check_int(symmetry, "symmetry", minimum=1)
    md_default, mpsi_default = default_grid_size(symmetry)
    grid_directions = md_default if grid_directions is None else check_int(
        grid_directions, "grid_directions", minimum=1)
    grid_psi = mpsi_default if grid_psi is None else check_int(grid_psi, "grid_psi", minimum=1)
    alpha_r = check_float(alpha_r, "alpha_r", low=1.0, low_inclusive=False)
    beta_d = check_float(beta_d, "beta_d", low=0.0)
    beta_psi = check_float(beta_psi, "beta_psi", low=0.0)
    temperature = check_float(temperature, "temperature", low=0.0, low_inclusive=False)
    learning_rate = check_float(learning_rate, "learning_rate", low=0.0, high=1.0,
                                 low_inclusive=False)
    memory = check_float(memory, "memory", low=0.0, high=1.0)
    regularization = check_float(regularization, "regularization", low=0.0)
    tol = check_float(tol, "tol", low=0.0)
    patience = check_int(patience, "patience", minimum=1)
    max_shift = check_max_shift(max_shift, box)
    if final_reconstruction not in (None,) + FINAL_METHODS:
        raise ValueError(f"final_reconstruction must be one of {FINAL_METHODS} or None, got "
                         f"{final_reconstruction!r}")
    if resume is not None and not isinstance(resume, SGDState):
        raise ValueError(f"resume must be an SGDState (from a checkpoint), got "
                         f"{type(resume).__name__}")

    t_start = time.perf_counter()
    data = SpectralParticles.build(y, psf, support_threshold=support_threshold, backend=bk)
    # symmetric runs start without symmetry (phase 0) when align_axis: the same angular
    # spacing in-plane over the whole circle
    grids = {1: so3_grid(grid_directions, grid_psi, symmetry=symmetry)}
    two_stage = symmetry > 1 and align_axis
    if two_stage:
        grids[0] = so3_grid(grid_directions, grid_psi * symmetry, symmetry=1)
    full_band = data.band
    coarse_band = _coarse_band(full_band, downsampling)
    if coarse_epochs == 0:
        coarse_band = full_band
    scales = {full_band: _make_scale(data, full_band, max_shift)}
    if coarse_band != full_band:
        scales[coarse_band] = _make_scale(data, coarse_band, max_shift)
    # damping: `regularization` times the median curvature of one particle at the OTF peak,
    # times max(1, N n / _DAMPING_POSES) (n the symmetry order of the updates): the
    # preconditioner sums N n curvatures, and the step at frequencies weakly covered next to
    # strongly covered ones grows with it (measured: the C9 barrel, 50 particles, sigma 4/16
    # voxels, diverged with the damping of one particle; 20 particles did not)
    one = [float(np.median(to_numpy(data.inv_noise[:, k])))
           * float(to_numpy((data.otf[k].real**2 + data.otf[k].imag**2).max()))
           for k in range(c)]

    def damping_for(order: int) -> list:
        factor = max(1.0, n * order / _DAMPING_POSES)
        return [regularization * factor * v for v in one]

    grid = mats = group = None
    md = mpsi = 0

    def set_phase(p: int) -> None:
        nonlocal grid, mats, group, md, mpsi
        grid = grids[p]
        mats = grid.matrices()  # (M_d, M_psi, 3, 3)
        group = cyclic_group(grid.symmetry)
        md, mpsi = grid.n_directions, grid.n_psi

    phase = 0 if two_stage else 1
    if resume is not None:
        phase = int(resume.phase)
        if phase == 0 and not two_stage:
            raise ValueError("resume comes from a symmetric run in its first stage without "
                             "symmetry, but these options do not have that stage: resume with "
                             "the same symmetry and align_axis")
    set_phase(phase)
    if resume is None:
        rng = np.random.default_rng(seed)
        # uniform random values in [0, 1] (Eloy et al. 2023 sec. 4.3.1), scaled to the particles'
        # mean intensity so that the first comparisons are on the data's scale
        level = to_numpy(xp.abs(y).mean(axis=(0, 2, 3, 4))).astype(np.float64)
        init = rng.uniform(0.0, 1.0, size=(c, box, box, box)) * (2.0 * level)[:, None, None, None]
        init = init.astype(np.float32)
        init = _symmetrize(bk, xp.asarray(init), grid.symmetry)
        band0 = coarse_band
        vol = _FourierVolume.initial(bk, init, band0)
        alpha = 1.0
        qd = np.full((n, md), 1.0 / md)
        qpsi = np.full((n, mpsi), 1.0 / mpsi)
        pid = qd.copy()
        pipsi = qpsi.copy()
        rotations = np.broadcast_to(np.eye(3), (n, 3, 3)).copy()
        translations = np.zeros((n, 3))
        last_relative = np.full(n, np.nan)
        energies: list = []
        bands: list = []
        seconds: list = []
        checks: list = []
        epoch = 0
        switch_epoch = -1
    else:
        _check_resume(resume, n=n, c=c, md=md, mpsi=mpsi, bands=(coarse_band, full_band))
        rng = np.random.default_rng()
        rng.bit_generator.state = json.loads(resume.rng_state)
        vol = _FourierVolume(bk, box, xp.asarray(resume.volume).copy(),
                             xp.asarray(resume.curvature).copy())
        alpha = float(resume.alpha)
        qd, qpsi = resume.q_direction.copy(), resume.q_psi.copy()
        pid, pipsi = resume.pi_direction.copy(), resume.pi_psi.copy()
        rotations, translations = resume.rotations.copy(), resume.translations.copy()
        last_relative = resume.relative.copy()
        energies = resume.energies.tolist()
        bands = [int(b) for b in resume.bands]
        seconds = resume.seconds.tolist()
        checks = [int(k) for k in resume.checks]
        epoch = int(resume.epoch)
        switch_epoch = int(resume.switch_epoch)

    inv_t = 1.0 / temperature
    check = None
    if global_search:
        check_band = min(full_band, _GLOBAL_BAND)
        m_d, m_psi = _GLOBAL_GRID
        check = dict(
            band=check_band,
            scale=scales.get(check_band) or _make_scale(data, check_band, max_shift),
            mats=so3_grid(m_d, max(4, int(math.ceil(m_psi / symmetry))),
                          symmetry=symmetry).matrices().reshape(-1, 3, 3))

    def save_state():
        if checkpoint is not None:
            checkpoint(SGDState(
                epoch=epoch, band=vol.band, volume=to_numpy(vol.real).copy(),
                curvature=to_numpy(vol.curvature).copy(), alpha=alpha, q_direction=qd.copy(),
                q_psi=qpsi.copy(), pi_direction=pid.copy(), pi_psi=pipsi.copy(),
                rotations=rotations.copy(), translations=translations.copy(),
                relative=last_relative.copy(), energies=np.asarray(energies),
                bands=np.asarray(bands, dtype=np.int64), seconds=np.asarray(seconds),
                checks=np.asarray(checks, dtype=np.int64),
                rng_state=json.dumps(rng.bit_generator.state), phase=phase,
                switch_epoch=switch_epoch))

    def recentre(moved):
        """Sampling distributions of the moved particles re-centred on their new pose."""
        jd, ip = grid.nearest(rotations[moved])
        for l, j, i in zip(moved, np.atleast_1d(jd), np.atleast_1d(ip)):
            pi_d = _direction_kernel(grid.directions, np.array([j]), beta_d)[:, 0]
            pi_psi = _psi_kernel(grid.psi, np.array([i]), beta_psi, grid.symmetry)[:, 0]
            pid[l], pipsi[l] = pi_d / pi_d.sum(), pi_psi / pi_psi.sum()
            qd[l] = alpha / md + (1.0 - alpha) * pid[l]
            qpsi[l] = alpha / mpsi + (1.0 - alpha) * pipsi[l]

    def run_polarity() -> int:
        """Polarity consensus (Cn) on the current iterate; returns the number turned."""
        theta, centre, _ = _polarity_axis(vol, symmetry)
        new_r, new_t, flipped, gain = _polarity_consensus(
            vol, scales[full_band], data, rotations, translations, group,
            _flip_rotation(theta), centre, rng=rng, max_shift=max_shift)
        rotations[:], translations[:] = new_r, new_t
        if flipped.size:
            recentre(flipped)
        _stage(progress, t_start, f"polarity consensus after epoch {epoch}: {flipped.size} "
               f"particle(s) turned upside down (energy -{gain:.3g})")
        return int(flipped.size)

    def switch_to_symmetry() -> None:
        """End of the stage without symmetry: the Cn axis of the iterate turned onto z
        (poses follow), the iterate symmetrised, the Cn grid, then the polarity consensus."""
        nonlocal vol, phase, switch_epoch, qd, qpsi, pid, pipsi
        from spfluo.algorithms.symmetry import (
            align_symmetry_axis,
            realign_poses,
            symmetrize,
        )

        if vol.band != full_band:
            vol = vol.resized(full_band)
        aligned = align_symmetry_axis(vol.to_volume(box, apodization=False), symmetry,
                                      backend=bk)
        new = realign_poses(Poses(rotations, translations), aligned.rotation, aligned.shift)
        rotations[:], translations[:] = new.rotations, new.translations
        phase = 1
        set_phase(phase)
        volume = xp.asarray(symmetrize(aligned.volume, symmetry, backend=bk))
        vol = _FourierVolume.initial(bk, volume.reshape(c, box, box, box), full_band)
        # the preconditioner of the Cn updates (steady state of the running sum)
        steady = 1.0 / (1.0 - memory) if memory < 1.0 else float(max(epoch, 1))
        vol.curvature = _curvature_sum(vol, scales[full_band], data, rotations, group) * \
            np.float32(min(steady, max(epoch, 1)))
        qd, qpsi = np.empty((n, md)), np.empty((n, mpsi))
        pid, pipsi = np.empty((n, md)), np.empty((n, mpsi))
        recentre(np.arange(n))
        switch_epoch = epoch
        _stage(progress, t_start, f"symmetry C{symmetry} imposed after epoch {epoch}: axis "
               f"aligned with z (score {aligned.axis.score:.3f})")
        if polarity:
            run_polarity()
        save_state()

    def run_check():
        """Polarity consensus (Cn, first check, one-stage runs), else global search, at
        the current epoch; moved particles get their distributions re-centred on the new
        pose.  Returns the number moved."""
        nonlocal vol
        if vol.band != full_band:
            vol = vol.resized(full_band)
        if polarity and symmetry > 1 and not checks and switch_epoch < 0:
            turned = run_polarity()
            if turned:
                checks.append(epoch)
                save_state()
                return turned
        new, moved = _global_check(vol.resized(check["band"]), check["scale"], vol,
                                   scales[full_band], data, Poses(rotations, translations),
                                   check["mats"], vol.centre_of_mass(), max_shift=max_shift,
                                   group=group, keep_polarity=polarity and symmetry > 1)
        if moved.size:
            rotations[moved] = new.rotations[moved]
            translations[moved] = new.translations[moved]
            recentre(moved)
        checks.append(epoch)
        save_state()
        _stage(progress, t_start, f"global search after epoch {epoch}: {moved.size} "
               "particle(s) moved to a better distant pose")
        return int(moved.size)

    def finished() -> bool:
        since = max(checks[-1] if checks else 0, switch_epoch)
        recent = [(e, b) for k, (e, b) in enumerate(zip(energies, bands)) if k >= since]
        return len(energies) >= max(min_epochs, 1) and _plateau(
            [e for e, b in recent if b == full_band], tol, patience)

    while True:
        if epoch >= max_epochs or finished():
            if phase == 0:
                switch_to_symmetry()
                if epoch >= max_epochs:
                    break
                continue
            if (check is None or (checks and checks[-1] == epoch)
                    or len(checks) >= _MAX_CHECKS):
                break
            if run_check() == 0 or epoch >= max_epochs:
                break
            continue
        t_epoch = time.perf_counter()
        band = _next_band(energies, bands, coarse_band, full_band, coarse_epochs, tol, patience)
        if vol.band != band:
            vol = vol.resized(band)
        sc = scales[band]
        for k in range(c):
            vol.curvature[k] *= np.float32(memory)
        order = rng.permutation(n)
        rel = np.empty(n)
        for l in order:
            jd = _draw(rng, qd[l], n_directions)
            ip = _draw(rng, qpsi[l], n_psi)
            cand = mats[jd][:, ip].reshape(-1, 3, 3)
            ev = _evaluate(vol, sc, data, int(l), cand, box=box, max_shift=max_shift)
            k = int(np.argmin(ev.nll))
            t_best = ev.shifts[k]
            rotations[l] = cand[k]
            translations[l] = t_best
            rel[l] = ev.relative[k]
            p = _likelihoods(ev.nll, inv_t).reshape(jd.size, ip.size)
            pi_d, pi_psi = smoothed_marginals(p, jd, ip, qd[l], qpsi[l], grid=grid,
                                              beta_d=beta_d, beta_psi=beta_psi)
            pid[l], pipsi[l] = pi_d, pi_psi
            qd[l] = alpha / md + (1.0 - alpha) * pi_d
            qpsi[l] = alpha / mpsi + (1.0 - alpha) * pi_psi
            _sgd_update(vol, sc, data, int(l), cand[k], t_best, box=box, group=group,
                        lr=learning_rate, damping=damping_for(grid.symmetry))
        alpha /= alpha_r
        epoch += 1
        energies.append(float(rel.mean()))
        last_relative = rel
        bands.append(band)
        seconds.append(time.perf_counter() - t_epoch)
        save_state()
        if progress is not None:
            progress({"epoch": epoch, "max_epochs": max_epochs, "energy": energies[-1],
                      "band": band, "alpha": alpha, "seconds": seconds[-1],
                      "elapsed": time.perf_counter() - t_start})
    converged = finished() or bool((checks or switch_epoch >= 0) and epoch < max_epochs)

    if vol.band != full_band:
        vol = vol.resized(full_band)
    iterate = vol.to_volume(box)
    poses = Poses(rotations, translations)
    particle_energies = last_relative
    if refine:
        poses, particle_energies = _refine_local(vol, scales[full_band], data, poses,
                                                 stages_deg=_LOCAL_STAGES_DEG,
                                                 max_shift=max_shift)
        _stage(progress, t_start, "poses refined locally at the full band")
    if final_reconstruction is not None:
        _stage(progress, t_start, f"final volume: known-pose reconstruction "
               f"({final_reconstruction})")
        volume = xp.asarray(_final_volume(y, poses, psf, symmetry=symmetry,
                                          method=final_reconstruction, backend=bk))
        volume = volume.reshape(iterate.shape)
    else:
        volume = xp.maximum(iterate, 0.0)
    volume = to_numpy(volume).astype(np.float32)
    iterate = to_numpy(iterate).astype(np.float32)
    if squeeze:
        volume, iterate = volume[0], iterate[0]
    return AbInitioResult(
        volume=volume, poses=poses, energies=np.asarray(energies, dtype=np.float64),
        epoch_bands=np.asarray(bands, dtype=np.int64),
        epoch_seconds=np.asarray(seconds, dtype=np.float64), psi_marginals=pipsi,
        direction_marginals=pid, grid=grid, particle_energies=np.asarray(particle_energies),
        converged=bool(converged), iterate=iterate)


def _next_band(energies, bands, coarse_band, full_band, coarse_epochs, tol, patience) -> int:
    """Band of the next epoch: coarse until ``coarse_epochs`` or a coarse plateau."""
    if coarse_band == full_band or any(b == full_band for b in bands):
        return full_band
    if len(bands) >= coarse_epochs or _plateau(energies, tol, patience):
        return full_band
    return coarse_band


def _stage(progress, t_start: float, message: str) -> None:
    if progress is not None:
        progress({"stage": message, "elapsed": time.perf_counter() - t_start})


def _check_resume(state: SGDState, *, n, c, md, mpsi, bands) -> None:
    problems = []
    if state.q_direction.shape != (n, md) or state.q_psi.shape != (n, mpsi):
        problems.append(f"distributions of shapes {state.q_direction.shape}, "
                        f"{state.q_psi.shape} instead of ({n}, {md}), ({n}, {mpsi})")
    if state.band not in bands:
        problems.append(f"band {state.band} instead of one of {bands}")
    b, g = state.band, 2 * state.band + 3
    if state.volume.shape != (c, b, b, b) or state.curvature.shape != (c, g, g, g):
        problems.append(f"volume of shape {state.volume.shape}")
    if problems:
        raise ValueError("resume does not match these particles and options ("
                         + "; ".join(problems) + "): start a new run")
