"""High-accuracy refinement: alternated pose search and regularised reconstruction.

Fortun et al. 2018 sec. IV and V-A-4, Zehni et al. 2020 sec. III (Algorithms 1-3).
Starting from particles with approximate poses (ab initio, or any estimate), alternate

(a) the known-pose reconstruction (:mod:`spfluo.algorithms.reconstruct`: sums over the
    particles for the current poses, then a few TV or Hessian ADMM iterations warm-started
    from the previous state, split and dual variables included), and
(b) a pose update of every particle against the current volume,

until the poses stop changing.  Two pose updates:

Exhaustive search (Fortun et al. 2018 sec. IV-B, eq. 8)
    The particle ``y`` is compared with ``h * T_t(R f)`` for every candidate rotation ``R``
    of a grid: the model is rotated (never the particle) and blurred by the unrotated PSF;
    the translation of each candidate is the best of its correlation, then the best
    rotation wins.  Coarse to fine: the whole of SO(3)/Cn at 20 degrees, then +-10 degrees
    at 5 around the current rotation, then +-5 at 1 (Fortun et al. 2018 sec. V-A-4; ``schedule``
    changes it).  The global library of rotated, blurred models is built once per
    iteration and shared by all the particles; local candidates (``R_i @
    local_rotation_grid``) are built per batch of particles.
Continuous refinement (Zehni et al. 2020 sec. III-C, Algorithm 3)
    A few gradient steps per particle on a rotation increment ``w`` (``R <- R exp([w])``,
    applied in the reference frame as in :func:`~spfluo.algorithms.geometry.local_rotation_grid`)
    and on the translation, updated one after the other with separate step sizes and a
    backtracking line search (``eta = 0.25``), all particles in parallel; alternated with a
    few warm-started ADMM iterations (``K_ADMM``).

The energy (design decisions)
-----------------------------
- **The blur is linear and the particle is a box.**  A microscope blurs the whole field and
  extraction crops the particle's box: the particle is ``B(h * T_t(R f))`` with ``B`` the
  box and ``*`` a linear convolution, not the circular convolution of a plain FFT model.
  With PSFs as long as the box (Fortun et al. 2018: sigma_z = 16 voxels in a 45 box) the difference
  matters: on noise-free simulated particles the circular model misfits by 1.5-4 % and
  biases the poses by 3 degrees, the box model fits to the support's truncation.  So the
  particles are zero-padded to a grid of side ``P = pad D`` (``pad = 1.5`` keeps the blur
  of anything inside the box from wrapping into it) and the model's energy is its energy
  inside the box, ``||B m||^2``, computed exactly from its band-limited spectrum with a
  separable Gram matrix (``_gram_axis``; ``pad = 1`` gives the circular model).
- **Best scale and offset per particle.**  The energy of a candidate is
  ``min_{a >= 0, b} ||y - a B m - b||^2`` (Fortun et al. 2018 eq. 8 with an intensity scale and a
  background per particle and channel: labelling density and background vary, and an
  initial volume has an arbitrary scale), i.e. ``||y - mean||^2 - max(c, 0)^2 / n`` with
  ``c`` the correlation of the centred particle with the model and ``n`` the model's
  energy about its mean in the box.  The functions return the relative energy ``1 -
  max(c, 0)^2 / (n ||y - mean||^2)`` in ``[0, 1]``.  By the envelope theorem its gradient
  is that of the least-squares energy at the optimal scale and offset, which is what the
  continuous refinement descends.

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
  (:func:`~spfluo.algorithms.transform.rotate_fourier`), for all candidates at once.  Only
  the band of the oversampled spectrum that the rotated support reaches is computed, by
  three separable DFT matrix products (``_band_spectra``, equal to the cropped
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

Gold standard
    With ``half_maps=True`` the particles are split in two random halves
    (:func:`spfluo.algorithms.reconstruct.half_split`); each half has its own volume, ADMM
    state and pose updates against its own volume, so the half-map FSC reported at every
    iteration is independent of overfitting.  The final volume comes from the sums of all
    the particles with their refined poses (warm-started from the mean of the half maps).

Checkpoints
    ``callback(state)`` receives a :class:`RefineState` after every outer iteration; pass
    it back as ``state=`` (same inputs and options) to continue: the result is the one of
    an uninterrupted run.  No file I/O here (the ``refine`` job writes the state).

Conventions: ``DEVELOPING.md`` (arrays ``(z, y, x)``, poses ``y = T_t(R f)``, rotations in the
zyx frame, translations in voxels, Cn about z).  Particles ``(N, C, D, D, D)`` (or ``(N, D,
D, D)``), PSFs ``(C, d, d, d)`` or ``(d, d, d)``, volumes ``(C, D, D, D)``, float32 in and out.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from spfluo.algorithms._validation import (
    as_channels,
    as_particles,
    check_float,
    check_int,
    check_max_shift,
    check_symmetry,
)
from spfluo.algorithms._validation import check_poses as _check_poses
from spfluo.algorithms.backend import AXES3, Backend, resolve_backend, to_numpy
from spfluo.algorithms.fourier import _fit_to, otf_from_psf
from spfluo.algorithms.geometry import (
    Poses,
    geodesic_distance_sym,
    local_rotation_grid,
    matrix_from_rotvec,
    rotvec_from_matrix,
    swap_xyz_zyx,
    uniform_rotation_grid,
)
from spfluo.algorithms.reconstruct import (
    ADMMState,
    combine_sums,
    half_split,
    precompute_half_sums,
    precompute_sums,
    reconstruct_admm,
    update_sums,
)
from spfluo.algorithms.reconstruct.accumulation import prepare_psf as _prepare_psf
from spfluo.algorithms.reconstruct.regularizers import check_regularizer as _check_regularizer
from spfluo.algorithms.reconstruct.solve import half_fsc as _half_fsc
from spfluo.algorithms.transform import rotate_fourier

__all__ = [
    "SearchStage",
    "DEFAULT_SCHEDULE",
    "ParticleSpectra",
    "PoseUpdate",
    "PoseEnergies",
    "RefineHistory",
    "RefineState",
    "RefineResult",
    "particle_spectra",
    "pose_energies",
    "search_poses",
    "refine_poses_continuous",
    "refine",
]

#: Oversampling of the centred model spectrum interpolated at rotated frequencies.
_OVERSAMPLING = 3
#: Complex values of candidate surfaces held at once (bounds the work memory).
_SURFACE_BUDGET = 1 << 22
#: Samples of the correlation surfaces per degree of freedom of the support (>= 1).
_SURFACE_OVERSAMPLING = 1.0
#: Band of the global (coarse) search, fraction of the support's extent per axis.
_COARSE_BAND = 0.5
#: Newton iterations on the exact correlation of the best candidates.
_NEWTON_ITERATIONS = 3
#: Phase codes of the history.
PHASE_EXHAUSTIVE, PHASE_CONTINUOUS = 0, 1


# =====================================================================================
# schedule
# =====================================================================================


@dataclass(frozen=True)
class SearchStage:
    """One stage of the coarse-to-fine exhaustive rotation search.

    Attributes
    ----------
    step_deg : float
        Angular step of the rotation grid, degrees (> 0).
    range_deg : float or None
        Largest rotation tried around the current one, degrees (the local lattice of
        :func:`~spfluo.algorithms.geometry.local_rotation_grid`); None searches the whole
        of SO(3)/Cn (:func:`~spfluo.algorithms.geometry.uniform_rotation_grid`).
    """

    step_deg: float
    range_deg: float | None = None

    def __post_init__(self):
        s = self.step_deg
        if isinstance(s, bool) or not isinstance(s, (int, float, np.integer, np.floating)) \
                or not math.isfinite(s) or not 0 < s <= 90:
            raise ValueError(f"step_deg must be a number of degrees in (0, 90], got {s!r}")
        r = self.range_deg
        if r is not None:
            if isinstance(r, bool) or not isinstance(r, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(r) or not 0 < r <= 180:
                raise ValueError(
                    f"range_deg must be None (whole rotation space) or a number of degrees in "
                    f"(0, 180], got {r!r}"
                )
        object.__setattr__(self, "step_deg", float(s))
        object.__setattr__(self, "range_deg", None if r is None else float(r))

    @property
    def is_global(self) -> bool:
        return self.range_deg is None


#: Fortun et al. 2018 sec. V-A-4: whole space at 20 degrees, then +-10 at 5, then +-5 at 1.
DEFAULT_SCHEDULE = (SearchStage(20.0, None), SearchStage(5.0, 10.0), SearchStage(1.0, 5.0))


def _as_schedule(schedule) -> tuple[SearchStage, ...]:
    try:
        items = list(schedule)
    except TypeError:
        raise ValueError(
            f"schedule must be a sequence of (step_deg, range_deg) pairs, got {schedule!r}"
        ) from None
    stages = []
    for item in items:
        if isinstance(item, SearchStage):
            stages.append(item)
            continue
        try:
            step, rng = item
        except (TypeError, ValueError):
            raise ValueError(
                f"each schedule stage must be (step_deg, range_deg) with range_deg None for the "
                f"whole rotation space, got {item!r}"
            ) from None
        stages.append(SearchStage(step, rng))
    return tuple(stages)


# =====================================================================================
# validation helpers
# =====================================================================================


# =====================================================================================
# particle spectra on the OTF support
# =====================================================================================


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


# =====================================================================================
# the model at rotated support frequencies
# =====================================================================================


def _generators() -> np.ndarray:
    """``G_j`` (3, 3, 3), zyx frame: ``matrix_from_rotvec(eps e_j) = I + eps G_j + O(eps^2)``
    for the rotation vector ``e_j`` of the xyz frame (x, y, z)."""
    gens = np.zeros((3, 3, 3))
    for j in range(3):
        e = np.zeros(3)
        e[j] = 1.0
        skew = np.array([[0.0, -e[2], e[1]], [e[2], 0.0, -e[0]], [-e[1], e[0], 0.0]])
        gens[j] = swap_xyz_zyx(skew)
    return gens


def _band_spectra(bk: Backend, volumes, half_width: int, size: int):
    """Band ``|p| <= half_width`` of the centred, oversampled spectra of volumes.

    Equals ``centred_spectrum(v, oversampling=size / D, gridding_correction=True)`` cropped
    to the ``2 half_width + 1`` central samples per axis (the spectrum of the volume
    zero-padded to ``size`` and divided by the trilinear apodisation ``sinc^2(x / size)``),
    computed by three separable DFT matrix products instead of the padded FFT: only the
    band that the rotated support frequencies reach is needed.

    ``volumes`` (B, D, D, D) real; returns (B, n, n, n) complex64, ``n = 2 half_width + 1``,
    zero frequency at index ``half_width``.
    """
    xp = bk.xp
    b, d = int(volumes.shape[0]), int(volumes.shape[-1])
    x = np.arange(d, dtype=np.float64) - d // 2
    apod = 1.0 / np.sinc(x / size) ** 2
    corr = xp.asarray(apod, dtype=xp.float32)
    v = volumes.astype(xp.float32) * corr[:, None, None] * corr[None, :, None] * corr[None, None, :]
    p = np.arange(-half_width, half_width + 1, dtype=np.float64)
    e = xp.asarray(np.exp(-2j * np.pi * np.outer(p, x) / size), dtype=xp.complex64)  # (n, D)
    n = e.shape[0]
    out = (v.reshape(b * d * d, d).astype(xp.complex64) @ e.T).reshape(b, d, d, n)  # x
    out = xp.matmul(e, out)  # y: (n, D) @ (D, n) per (b, z) -> (b, D, n, n)
    out = xp.matmul(e, out.reshape(b, d, n * n)).reshape(b, n, n, n)  # z
    return xp.ascontiguousarray(out)


class _Model:
    """The volume's centred spectra (and first moments) on the band the support reaches."""

    def __init__(self, bk: Backend, volume, spectra: ParticleSpectra, channels, *,
                 gradient: bool):
        xp = bk.xp
        self.bk = bk
        self.spectra = spectra
        self.channels = channels
        d = spectra.box
        vol = xp.asarray(volume, dtype=xp.float32)
        if vol.ndim == 3:
            vol = vol[None]
        if tuple(vol.shape) != (spectra.n_channels, d, d, d):
            raise ValueError(
                f"volume must have shape ({spectra.n_channels}, {d}, {d}, {d}) (channels, "
                f"like the particles), got {tuple(xp.asarray(volume).shape)}"
            )
        if not bool(xp.isfinite(vol).all()):
            raise ValueError("volume contains NaN or infinite values")
        # frequency q / P cycles per voxel is index _OVERSAMPLING * D * q / P of the spectrum
        q = spectra.frequencies.astype(np.float64) * (d / spectra.grid)
        self.points = xp.asarray(_OVERSAMPLING * q)
        big = int(round(_OVERSAMPLING * d))
        reach = float(np.sqrt((q**2).sum(axis=1)).max()) * _OVERSAMPLING
        hw = min(int(math.ceil(reach)) + 2, big // 2 - 1)
        vols = [vol[c] for c in channels]
        if gradient:
            axes = [xp.arange(d, dtype=xp.float32) - d // 2 for _ in range(3)]
            coords = [axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]]
            vols += [vol[c] * coords[a] for a in range(3) for c in channels]
        spectra_ = _band_spectra(bk, xp.stack(vols), hw, big)
        cs = len(channels)
        self.spec = [spectra_[k] for k in range(cs)]
        self.moments = None
        if gradient:
            self.moments = [[spectra_[cs * (1 + a) + k] for k in range(cs)] for a in range(3)]
        self.otf = spectra.otf[list(channels)]  # (Cs, M)

    def at(self, rotations, subset=None):
        """Rotated, blurred model spectra ``(B, Cs, M)`` for rotations ``(B, 3, 3)``
        (``M`` the support, or its ``subset``)."""
        xp = self.bk.xp
        points = self.points if subset is None else self.points[xp.asarray(subset)]
        otf = self.otf if subset is None else self.otf[:, xp.asarray(subset)]
        out = xp.stack([rotate_fourier(s, rotations, points=points, backend=self.bk)
                        for s in self.spec], axis=1)
        return out * otf[None]

    def with_derivatives(self, rotations):
        """``m^`` (B, Cs, M) and ``d m^ / d w_j`` (3, B, Cs, M) at ``w = 0``."""
        xp = self.bk.xp
        m = self.at(rotations)
        rot = np.asarray(rotations, dtype=np.float64)
        k = self.spectra.frequencies.astype(np.float64) / self.spectra.grid  # (M, 3)
        u = np.einsum("bji,mj->bmi", rot, k)  # R^T k, (B, M, 3)
        gens = _generators()
        # G_j^T u for each j: (3, B, M, 3)
        gu = np.stack([u @ g for g in gens])  # (u^T G_j)_b = (G_j^T u)_b, (3, B, M, 3)
        grads = []  # grad F{f}(u) = -2 i pi S_a(u), (3 axes a) x (B, Cs, M)
        for a in range(3):
            s_a = xp.stack([rotate_fourier(s, rotations, points=self.points, backend=self.bk)
                            for s in self.moments[a]], axis=1)
            grads.append(s_a * np.complex64(-2j * np.pi))
        dm = []
        for j in range(3):
            coef = [xp.asarray(gu[j, :, :, a], dtype=xp.float32)[:, None, :] for a in range(3)]
            dm.append((grads[0] * coef[0] + grads[1] * coef[1] + grads[2] * coef[2])
                      * self.otf[None])
        return m, xp.stack(dm)


# =====================================================================================
# candidate energies: correlation surfaces, in-box model energy, exact translations
# =====================================================================================


def _surface_shape(q: np.ndarray, grid: int, oversampling: float) -> tuple[int, int, int]:
    """Odd translation grid (gz, gy, gx) for correlations supported on frequencies ``q``.

    The correlation of two signals on the support is a trigonometric polynomial of degree
    ``e_a = max |q_a|`` per axis: ``2 e_a + 1`` samples hold it without aliasing;
    ``oversampling`` times more make the parabolic peak fit more reliable (Newton
    iterations then give the exact maximum).
    """
    extent = np.abs(q).max(axis=0)
    out = []
    for e in extent:
        size = max(int(math.ceil(oversampling * (2 * int(e) + 1))), 3)
        size += 1 - size % 2
        out.append(max(min(size, grid + 1 - grid % 2), 2 * int(e) + 1))
    return tuple(out)


def _gram_axis(extent: int, box: int, grid: int) -> np.ndarray:
    """``A[q', q] = (1/P) sum_{x in box} exp(2 i pi (q - q') x / P)``, ``|q|, |q'| <= extent``.

    With ``m(x) = P^-3 sum_q m^(q) exp(2 i pi q.x / P)`` band-limited to the cube of
    frequencies, ``P^3 sum_{x in box} m(x)^2 = m^H (A_z (x) A_y (x) A_x) m`` (the box is a
    product of intervals, so the Gram matrix is separable).
    """
    s = np.arange(-extent, extent + 1)
    diff = s[None, :] - s[:, None]  # [q', q] -> q - q'
    x = np.arange(box) - box // 2
    return np.exp(2j * np.pi * np.multiply.outer(diff, x) / grid).sum(axis=-1) / grid


def _newton_step(grad: np.ndarray, hess: np.ndarray, limit: float) -> np.ndarray:
    """Newton ascent steps ``-H^-1 g`` (B, 3) in voxels, zero where ``H`` (B, 3, 3) is not
    negative definite, each shortened to a norm of at most ``limit`` voxels."""
    concave = np.linalg.eigvalsh(hess).max(axis=1) < 0
    step = np.zeros_like(grad)
    if concave.any():
        step[concave] = -np.linalg.solve(hess[concave], grad[concave][:, :, None])[:, :, 0]
    norm = np.linalg.norm(step, axis=1)
    step *= np.minimum(1.0, limit / np.maximum(norm, 1e-12))[:, None]
    return step


class _Scorer:
    """Candidate energies for one ParticleSpectra and a set of channels.

    The particle is compared with the model inside the particle box only: with a padded
    grid (``P > D``) the blur is a linear convolution whose result is cropped to the box
    (what the microscope and the extraction do), so the model energy that enters the
    least-squares energy is ``||B m||^2`` (``B`` the box), computed exactly from the
    band-limited spectrum with the separable Gram matrix of :func:`_gram_axis`.  Without
    padding it is the plain spectral energy (circular model).
    """

    def __init__(self, spectra: ParticleSpectra, channels, max_shift: float, subset=None):
        bk = spectra.backend
        xp = bk.xp
        self.bk = bk
        self.spectra = spectra
        self.channels = list(channels)
        self.d = spectra.grid  # phases and translations live on the (padded) grid
        self.max_shift = float(max_shift)
        self.subset = None if subset is None else np.asarray(subset)
        q = spectra.frequencies if subset is None else spectra.frequencies[self.subset]
        self.n_freq = int(q.shape[0])
        self.q = xp.asarray(q.astype(np.float64))  # (M, 3)
        self.w = spectra.weights if subset is None else spectra.weights[xp.asarray(subset)]
        self.w64 = self.w.astype(xp.float64)
        self.g = _surface_shape(q, self.d, _SURFACE_OVERSAMPLING)
        gz, gy, gx = self.g
        ghalf = (gz, gy, gx // 2 + 1)
        self.half_size = gz * gy * (gx // 2 + 1)
        self.surface_index = xp.asarray(np.ravel_multi_index(tuple((q % np.array(ghalf)).T),
                                                             ghalf))
        self.cell = np.array([self.d / s for s in self.g])  # voxels per surface sample
        signed = [np.where(np.arange(s) > s // 2, np.arange(s) - s, np.arange(s)) for s in self.g]
        positions = [signed[a] * self.cell[a] for a in range(3)]
        r2 = (positions[0][:, None, None] ** 2 + positions[1][None, :, None] ** 2
              + positions[2][None, None, :] ** 2)
        self.mask = xp.asarray(r2 <= self.max_shift**2 + 1e-9)
        self.signed = [xp.asarray(v) for v in signed]
        self.energy = spectra.energy[:, self.channels].sum(axis=1)  # (N,) host
        self.boxed = spectra.grid != spectra.box
        if self.boxed:
            e = np.abs(q).max(axis=0).astype(int)
            self.cube = tuple(int(2 * v + 1) for v in e)
            pos = np.ravel_multi_index(tuple((q + e).T), self.cube)
            mirror = np.flatnonzero(q[:, 2] > 0)
            neg = np.ravel_multi_index(tuple((-q[mirror] + e).T), self.cube)
            self.cube_pos = xp.asarray(pos)
            self.cube_neg = xp.asarray(neg)
            self.cube_src = xp.asarray(mirror)
            self.gram = [xp.asarray(_gram_axis(int(v), spectra.box, spectra.grid),
                                    dtype=xp.complex64) for v in e]
            # beta(q) = sum_{x in box} exp(2 i pi q.x / P): the box sum of the model is
            # P^-3 Re sum_k w m^(k) beta(k) (separable), used to fit the intensity offset
            xs = np.arange(spectra.box) - spectra.box // 2
            beta = np.ones(q.shape[0], dtype=np.complex128)
            for a in range(3):
                beta *= np.exp(2j * np.pi * np.multiply.outer(q[:, a], xs) / self.d).sum(axis=1)
            self.beta_w = xp.asarray(beta) * self.w64
            self.offset_scale = 1.0 / (float(self.d) ** 3 * float(spectra.box) ** 3)
            coords = [np.arange(-v, v + 1, dtype=np.float64) for v in e]
            shape = [(-1, 1, 1), (1, -1, 1), (1, 1, -1)]
            # derivative of the phase exp(-2 i pi q.t / P) on the cube coordinates
            self.cube_deriv = [xp.asarray((-2j * np.pi / self.d) * coords[a].reshape(shape[a]),
                                          dtype=xp.complex64) for a in range(3)]

    # -- model terms
    def particles(self, indices):
        """Particle spectra (P, Cs, M) of particles ``indices`` on this scorer's support."""
        xp = self.bk.xp
        y = self.spectra.values[xp.asarray(indices)][:, self.channels]
        return y if self.subset is None else y[..., xp.asarray(self.subset)]

    def cross(self, y, m):
        """``X = sum_c y_c conj(m_c)``: y (P, Cs, M); m (P, K, Cs, M) or shared (K, Cs, M)."""
        xp = self.bk.xp
        if m.ndim == 3:
            return xp.einsum("pcm,kcm->pkm", y, xp.conj(m))
        return xp.einsum("pcm,pkcm->pkm", y, xp.conj(m))

    def _phase(self, t):
        """``exp(-2 i pi q.t / P)`` (B, M) complex64 for translations t (B, 3)."""
        xp = self.bk.xp
        t = xp.asarray(t, dtype=xp.float64)
        return xp.exp((-2j * np.pi / self.d) * (t @ self.q.T)).astype(xp.complex64)

    def _to_cube(self, u):
        """Half-spectrum support values (..., M) -> full cube (..., nz, ny, nx)."""
        xp = self.bk.xp
        lead = u.shape[:-1]
        v = xp.zeros(lead + (int(np.prod(self.cube)),), dtype=xp.complex64)
        v[..., self.cube_pos] = u
        v[..., self.cube_neg] = xp.conj(u[..., self.cube_src])
        return v.reshape(lead + self.cube)

    def _gram(self, v):
        """``(A_z (x) A_y (x) A_x) v`` on cubes (..., nz, ny, nx), one matrix product per axis."""
        xp = self.bk.xp
        az, ay, ax = self.gram
        nz, ny, nx = self.cube
        lead = v.shape[:-3]
        b = int(np.prod(lead)) if lead else 1
        out = (v.reshape(-1, nx) @ ax.T).reshape(b, nz, ny, nx)
        out = xp.swapaxes(out, 2, 3).reshape(-1, ny) @ ay.T  # (b nz nx, ny)
        out = xp.swapaxes(out.reshape(b, nz, nx, ny), 2, 3)  # (b, nz, ny, nx)
        out = az @ out.reshape(b, nz, ny * nx)
        return out.reshape(lead + self.cube)

    def model_energy(self, m, t=None):
        """Energy about its box mean ``P^3 ||B T_t m - mean||^2`` of models m (B, Cs, M),
        summed over channels (the intensity offset of each channel is fitted)."""
        xp = self.bk.xp
        if not self.boxed:
            # circular model: the support excludes the zero frequency, the mean is 0
            return ((m.real**2 + m.imag**2) * self.w).sum(axis=(-2, -1), dtype=xp.float64)
        u = m if t is None else m * self._phase(t)[:, None, :]
        v = self._to_cube(u)
        n = (xp.conj(v) * self._gram(v)).real.sum(axis=(-4, -3, -2, -1), dtype=xp.float64)
        sigma = (u * self.beta_w).real.sum(axis=-1, dtype=xp.float64)  # (B, Cs)
        return n - self.offset_scale * (sigma**2).sum(axis=-1)

    def model_energy_terms(self, m, t):
        """``n(t)``, its gradient (B, 3) and Hessian (B, 3, 3) in the translation."""
        xp = self.bk.xp
        b = m.shape[0]
        if not self.boxed:
            n = self.model_energy(m)
            return n, xp.zeros((b, 3)), xp.zeros((b, 3, 3))
        u = m * self._phase(t)[:, None, :]
        v = self._to_cube(u)
        av = self._gram(v)
        dv = [v * self.cube_deriv[a] for a in range(3)]
        adv = [self._gram(x) for x in dv]

        def inner(a_, b_):
            return (xp.conj(a_) * b_).real.sum(axis=(-4, -3, -2, -1), dtype=xp.float64)

        n = inner(v, av)
        grad = xp.stack([2.0 * inner(dv[a], av) for a in range(3)], axis=1)
        hess = xp.empty((b, 3, 3))
        for a in range(3):
            for c in range(a, 3):
                val = 2.0 * (inner(dv[a] * self.cube_deriv[c], av) + inner(dv[a], adv[c]))
                hess[:, a, c] = val
                hess[:, c, a] = val
        # offset: n -= k sum_c sigma_c^2, sigma_c(t) = Re sum w beta u_c
        k = self.q * (-2.0 * np.pi / self.d)  # d/dt of the phase exponent, per frequency
        ub = u * self.beta_w  # (B, Cs, M)
        sigma = ub.real.sum(axis=-1)
        dsig = xp.stack([(ub * (1j * k[:, a])).real.sum(axis=-1) for a in range(3)], axis=-1)
        d2sig = -xp.einsum("bcm,ma,md->bcad", ub.real.astype(xp.float64), k, k)
        s = self.offset_scale
        n = n - s * (sigma**2).sum(axis=-1)
        grad = grad - 2.0 * s * (sigma[:, :, None] * dsig).sum(axis=1)
        hess = hess - 2.0 * s * (dsig[:, :, :, None] * dsig[:, :, None, :]
                                 + sigma[:, :, None, None] * d2sig).sum(axis=1)
        return n, grad, hess

    def model_energy_derivatives(self, m, dm, t):
        """Derivatives (B, 3) of ``n`` along the model variations dm (3, B, Cs, M) at t."""
        xp = self.bk.xp
        if not self.boxed:
            return xp.stack([2.0 * ((xp.conj(m) * dm[j]).real * self.w).sum(
                axis=(-2, -1), dtype=xp.float64) for j in range(3)], axis=1)
        ph = self._phase(t)[:, None, :]
        u = m * ph
        av = self._gram(self._to_cube(u))
        sigma = (u * self.beta_w).real.sum(axis=-1, dtype=xp.float64)  # (B, Cs)
        out = []
        for j in range(3):
            du = dm[j] * ph
            dv = self._to_cube(du)
            dn = 2.0 * (xp.conj(dv) * av).real.sum(axis=(-4, -3, -2, -1), dtype=xp.float64)
            dsig = (du * self.beta_w).real.sum(axis=-1, dtype=xp.float64)
            out.append(dn - 2.0 * self.offset_scale * (sigma * dsig).sum(axis=-1))
        return xp.stack(out, axis=1)

    # -- the coarse surface
    def surface_peaks(self, x):
        """Peak of each candidate's correlation surface: (c (B,), shifts (B, 3)) float64."""
        bk = self.bk
        xp = bk.xp
        b = x.shape[0]
        gz, gy, gx = self.g
        s = xp.zeros((b, self.half_size), dtype=xp.complex64)
        s[:, self.surface_index] = x
        surf = bk.irfftn(s.reshape(b, gz, gy, gx // 2 + 1), s=self.g, axes=AXES3)
        surf = surf * np.float32(gz * gy * gx)
        surf = xp.where(self.mask[None], surf, -xp.inf)
        flat = surf.reshape(b, -1)
        j = xp.argmax(flat, axis=1)
        rows = xp.arange(b)
        mid = flat[rows, j].astype(xp.float64)
        idx = list(xp.unravel_index(j, self.g))
        shifts = []
        value = mid.copy()
        for a in range(3):
            lo_i, hi_i = list(idx), list(idx)
            lo_i[a] = (idx[a] - 1) % self.g[a]
            hi_i[a] = (idx[a] + 1) % self.g[a]
            lo = surf[(rows, *lo_i)].astype(xp.float64)
            hi = surf[(rows, *hi_i)].astype(xp.float64)
            ok = xp.isfinite(lo) & xp.isfinite(hi)
            lo = xp.where(ok, lo, mid)
            hi = xp.where(ok, hi, mid)
            den = lo - 2.0 * mid + hi
            good = ok & (den < 0)
            safe = xp.where(good, den, -1.0)
            delta = xp.clip(xp.where(good, 0.5 * (lo - hi) / safe, 0.0), -0.5, 0.5)
            value = value - xp.where(good, (lo - hi) ** 2 / (8.0 * safe), 0.0)
            shifts.append((self.signed[a][idx[a]] + delta) * self.cell[a])
        return value, xp.stack(shifts, axis=1)

    # -- exact correlation
    def correlation(self, x, t, *, derivatives: bool = False):
        """Exact ``c(t) = Re sum_k w X e^{2 i pi k.t}`` (B,), and its gradient (B, 3) and
        Hessian (B, 3, 3) in voxels when ``derivatives``."""
        xp = self.bk.xp
        phase = xp.exp((2j * np.pi / self.d) * (xp.asarray(t, dtype=xp.float64) @ self.q.T))
        z = x.astype(xp.complex128) * phase * self.w64
        c = z.real.sum(axis=1)
        if not derivatives:
            return c
        k = self.q * (2.0 * np.pi / self.d)
        grad = -(z.imag @ k)
        hess = -xp.einsum("bm,ma,mc->bac", z.real, k, k)
        return c, grad, hess

    def project(self, t):
        xp = self.bk.xp
        norm = xp.sqrt((t**2).sum(axis=1))
        factor = xp.minimum(1.0, self.max_shift / xp.maximum(norm, 1e-12))
        return t * factor[:, None]

    def newton(self, x, m, t0):
        """Translations maximising the correlation, from ``t0`` (B, 3), and the energy terms.

        Newton steps on the exact ``c(t)`` (accepted when ``c`` increases); the in-box model
        energy ``n`` is then evaluated exactly at the result (its dependence on ``t`` is
        weak: the continuous refinement optimises the exact joint energy).  Returns
        (c (B,), n (B,), t (B, 3)).
        """
        xp = self.bk.xp
        t = self.project(xp.asarray(t0, dtype=xp.float64))
        c = self.correlation(x, t)
        limit = float(self.cell.max())
        for _ in range(_NEWTON_ITERATIONS):
            _, grad, hess = self.correlation(x, t, derivatives=True)
            hess_h = to_numpy(hess)
            grad_h = to_numpy(grad)
            step = _newton_step(grad_h, hess_h, limit)
            t_new = self.project(t + xp.asarray(step))
            c_new = self.correlation(x, t_new)
            better = c_new > c
            t = xp.where(better[:, None], t_new, t)
            c = xp.where(better, c_new, c)
            if float(np.abs(step).max(initial=0.0)) < 1e-4:
                break
        return c, self.model_energy(m, t), t

    def newton_joint(self, x, m, t0):
        """Maximise ``max(c, 0)^2 / n`` over the translation from ``t0`` (B, 3).

        Newton steps on ``c(t) - (a / 2) n(t)`` with ``a = c / n`` (the stationarity of the
        least-squares energy at the optimal scale), accepted when the ratio increases.
        Returns (c (B,), n (B,), t (B, 3)).
        """
        xp = self.bk.xp
        t = self.project(xp.asarray(t0, dtype=xp.float64))
        c = self.correlation(x, t)
        n = self.model_energy(m, t)
        ratio = xp.maximum(c, 0.0) ** 2 / xp.maximum(n, 1e-300)
        limit = float(self.cell.max())
        for _ in range(_NEWTON_ITERATIONS):
            _, gc, hc = self.correlation(x, t, derivatives=True)
            _, gn, hn = self.model_energy_terms(m, t)
            a = (xp.maximum(c, 0.0) / xp.maximum(n, 1e-300))[:, None]
            hess_h = to_numpy(hc - 0.5 * a[:, :, None] * hn)
            grad_h = to_numpy(gc - 0.5 * a * gn)
            step = _newton_step(grad_h, hess_h, limit)
            t_new = self.project(t + xp.asarray(step))
            c_new = self.correlation(x, t_new)
            n_new = self.model_energy(m, t_new)
            r_new = xp.maximum(c_new, 0.0) ** 2 / xp.maximum(n_new, 1e-300)
            better = r_new > ratio
            t = xp.where(better[:, None], t_new, t)
            c = xp.where(better, c_new, c)
            n = xp.where(better, n_new, n)
            ratio = xp.where(better, r_new, ratio)
            if float(np.abs(step).max(initial=0.0)) < 1e-4:
                break
        return c, n, t

    def energies(self, c, n, energy):
        """Relative energy ``1 - max(c, 0)^2 / (n Y)`` (in [0, 1]); ``Y`` the particle's."""
        xp = self.bk.xp
        cp = xp.maximum(c, 0.0)
        return xp.clip(1.0 - cp * cp / xp.maximum(n * energy, 1e-300), 0.0, 1.0)


# =====================================================================================
# exhaustive search
# =====================================================================================


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


def _search(model: _Model, scorer: _Scorer, coarse: _Scorer, indices: np.ndarray,
            rotations: np.ndarray, translations: np.ndarray, stage: SearchStage,
            symmetry: int, top_k: int):
    """Exhaustive search of particles ``indices`` (rotations/translations: theirs).

    Global stage: every grid rotation is scored on the coarse band with its best
    translation from the correlation surface (the library of rotated models is shared by
    all particles); the particle's current pose stays when it fits better than the best
    grid rotation (a good initial pose is not replaced by a 20-degree grid point).  Local stage: the candidates ``R_i exp([w_k])`` are scored at full band
    at the particle's current translation, the in-box model energy to first order in
    ``w_k`` (its exact value and gradient at ``R_i``; it varies slowly with the rotation).
    Either way the best ``top_k`` candidates get their exact energy and their translation
    by Newton iterations at full band, and the best of them wins.
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
        chunk = max(1, _SURFACE_BUDGET // (cs * max(m_low, int(np.prod(coarse.cube))
                                                    if coarse.boxed else m_low)))
        parts, norms = [], []
        for s in range(0, k, chunk):
            m = model.at(grid[s:s + chunk], subset=coarse.subset)
            parts.append(m)
            norms.append(coarse.model_energy(m))  # at t = 0
        library = xp.concatenate(parts, axis=0)
        lib_n = xp.concatenate(norms, axis=0)
        batch = max(1, _SURFACE_BUDGET // (k * max(coarse.half_size, m_low)))
    else:
        grid = local_rotation_grid(step, math.radians(stage.range_deg))
        increments = rotvec_from_matrix(grid, frame="zyx")  # (K, 3) xyz rotation vectors
        k = grid.shape[0]
        batch = max(1, _SURFACE_BUDGET // (k * cs * m_full))
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
                 max_shift: float | None = None, top_k: int = 8) -> PoseUpdate:
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

    Returns
    -------
    PoseUpdate
    """
    spectra = _check_spectra(spectra)
    n = spectra.n_particles
    poses = _check_poses(poses, n)
    stage = SearchStage(step_deg, range_deg)
    symmetry = check_symmetry(symmetry)
    chans = as_channels(channels, spectra.n_channels)
    max_shift = check_max_shift(max_shift, spectra.box)
    top_k = check_int(top_k, "top_k", minimum=1)
    boxed = spectra.grid != spectra.box
    model = _Model(spectra.backend, volume, spectra, chans,
                   gradient=boxed and not stage.is_global)
    scorer = _Scorer(spectra, chans, max_shift)
    coarse = _Scorer(spectra, chans, max_shift, subset=_coarse_subset(spectra.frequencies))
    t_start = scorer_project(scorer, poses.translations)
    r, t, e = _search(model, scorer, coarse, np.arange(n), poses.rotations, t_start, stage,
                      symmetry, top_k)
    ang, sh = _changes(poses.rotations, r, poses.translations, t, symmetry)
    return PoseUpdate(Poses(r, t), e, ang, sh, np.full(n, stage.step_deg),
                      np.full(n, float(scorer.cell.max())))


def scorer_project(scorer: _Scorer, t) -> np.ndarray:
    """Translations (host, (N, 3)) scaled back to the ball ``|t| <= max_shift``."""
    t = np.asarray(t, dtype=np.float64)
    norm = np.linalg.norm(t, axis=1)
    return t * np.minimum(1.0, scorer.max_shift / np.maximum(norm, 1e-12))[:, None]


# =====================================================================================
# continuous refinement (Zehni et al. 2020, Algorithm 3)
# =====================================================================================


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


def _terms(model: _Model, scorer: _Scorer, indices, rotations, translations, *,
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
    batch = max(1, _SURFACE_BUDGET // max(per, 1))
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
    poses = _check_poses(poses, n)
    chans = as_channels(channels, spectra.n_channels)
    model = _Model(spectra.backend, volume, spectra, chans, gradient=bool(gradient))
    scorer = _Scorer(spectra, chans, math.inf)
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
    poses = _check_poses(poses, n)
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
    model = _Model(spectra.backend, volume, spectra, chans, gradient=True)
    scorer = _Scorer(spectra, chans, max_shift)
    r, t, e, a_st, s_st = _continuous(
        model, scorer, np.arange(n), poses.rotations, poses.translations, np.radians(a0), s0,
        steps=steps, eta=eta, max_backtracks=max_backtracks, max_angle=max_angle,
        max_shift_step=max_step)
    ang, sh = _changes(poses.rotations, r, poses.translations, t, symmetry)
    return PoseUpdate(Poses(r, t), e, ang, sh, np.degrees(a_st), s_st)


# =====================================================================================
# the alternated refinement
# =====================================================================================

_HISTORY_FIELDS = ("iteration", "phase", "step_deg", "range_deg", "energy", "pose_energy",
                   "median_change_deg", "mean_change_deg", "median_shift_change",
                   "resolution_per_voxel", "seconds")


@dataclass(frozen=True, eq=False)
class RefineHistory:
    """Per-iteration log of a refinement (one entry per outer iteration).

    Attributes
    ----------
    iteration : ndarray, int64, shape (I,)
        Outer iteration number, from 0.
    phase : ndarray, int64, shape (I,)
        0: exhaustive search, 1: continuous refinement.
    step_deg, range_deg : ndarray, float64, shape (I,)
        The search stage (degrees); ``range_deg`` is ``inf`` for a global search; both NaN
        for continuous iterations.
    energy : ndarray, float64, shape (I,)
        ADMM energy after the volume update, summed over the half sets (``1/2 <x, K x> -
        <x, b> + w phi``, squared particle units, constant terms dropped; NaN when the
        first pose update used a given volume).
    pose_energy : ndarray, float64, shape (I,)
        Mean relative energy of the particles after the pose update (see
        :class:`PoseUpdate`).
    median_change_deg, mean_change_deg : ndarray, float64, shape (I,)
        Median and mean rotation change of the pose update, modulo Cn, degrees.
    median_shift_change : ndarray, float64, shape (I,)
        Median translation change, voxels.
    resolution_per_voxel : ndarray, float64, shape (I, C)
        Half-map FSC resolution at 0.143 after the volume update, cycles per voxel (NaN
        without half maps).
    seconds : ndarray, float64, shape (I,)
        Wall time of the iteration.
    """

    iteration: np.ndarray
    phase: np.ndarray
    step_deg: np.ndarray
    range_deg: np.ndarray
    energy: np.ndarray
    pose_energy: np.ndarray
    median_change_deg: np.ndarray
    mean_change_deg: np.ndarray
    median_shift_change: np.ndarray
    resolution_per_voxel: np.ndarray
    seconds: np.ndarray

    def __len__(self) -> int:
        return int(self.iteration.shape[0])

    @classmethod
    def empty(cls, n_channels: int) -> "RefineHistory":
        kw = {name: np.zeros(0) for name in _HISTORY_FIELDS}
        kw["iteration"] = np.zeros(0, dtype=np.int64)
        kw["phase"] = np.zeros(0, dtype=np.int64)
        kw["resolution_per_voxel"] = np.zeros((0, n_channels))
        return cls(**kw)

    def appended(self, **entry) -> "RefineHistory":
        """A new history with one more entry (every field given)."""
        kw = {}
        for name in _HISTORY_FIELDS:
            old = getattr(self, name)
            value = np.asarray(entry[name], dtype=old.dtype)
            kw[name] = np.concatenate([old, value.reshape((1,) + old.shape[1:])])
        return RefineHistory(**kw)


@dataclass(frozen=True, eq=False)
class RefineState:
    """Everything a refinement needs to continue after an outer iteration (checkpoint).

    Attributes
    ----------
    iteration : int
        Outer iterations completed.
    phase : int
        Phase of the next iteration: 0 exhaustive, 1 continuous, 2 done (only the final
        reconstruction is left).
    stage : int
        Index in the schedule of the next exhaustive iteration.
    continuous_done : int
        Continuous iterations completed.
    rotations : ndarray, float64, shape (N, 3, 3)
    translations : ndarray, float64, shape (N, 3)
        Current poses (zyx frame, voxels).
    halves : ndarray, int8, shape (N,)
        Half set of each particle (all 0 without half maps).
    angle_steps_deg, shift_steps : ndarray, float64, shape (N,)
        Last accepted moves of the continuous refinement (degrees, voxels).
    admm : tuple of ADMMState or None
        The ADMM state of each half set (one without half maps); None before the first
        volume update.
    history : RefineHistory

    Notes
    -----
    :meth:`to_arrays` and :meth:`from_arrays` convert to and from a flat dict of NumPy
    arrays (``numpy.savez``).
    """

    iteration: int
    phase: int
    stage: int
    continuous_done: int
    rotations: np.ndarray
    translations: np.ndarray
    halves: np.ndarray
    angle_steps_deg: np.ndarray
    shift_steps: np.ndarray
    admm: tuple | None
    history: RefineHistory

    @property
    def poses(self) -> Poses:
        return Poses(self.rotations, self.translations)

    def to_arrays(self) -> dict:
        out = {"iteration": np.int64(self.iteration), "phase": np.int64(self.phase),
               "stage": np.int64(self.stage), "continuous_done": np.int64(self.continuous_done),
               "rotations": self.rotations, "translations": self.translations,
               "halves": self.halves, "angle_steps_deg": self.angle_steps_deg,
               "shift_steps": self.shift_steps,
               "n_admm": np.int64(0 if self.admm is None else len(self.admm))}
        for name in _HISTORY_FIELDS:
            out[f"history_{name}"] = getattr(self.history, name)
        for g, st in enumerate(self.admm or ()):
            for f in dataclasses.fields(ADMMState):
                value = getattr(st, f.name)
                out[f"admm{g}_{f.name}"] = np.array(value) if isinstance(value, str) \
                    else np.asarray(to_numpy(value))
        return out

    @classmethod
    def from_arrays(cls, arrays) -> "RefineState":
        try:
            n_admm = int(arrays["n_admm"])
            admm = None
            if n_admm:
                admm = tuple(
                    ADMMState(**{f.name: _from_saved(arrays[f"admm{g}_{f.name}"])
                                 for f in dataclasses.fields(ADMMState)})
                    for g in range(n_admm))
            history = RefineHistory(**{name: np.array(arrays[f"history_{name}"])
                                       for name in _HISTORY_FIELDS})
            return cls(iteration=int(arrays["iteration"]), phase=int(arrays["phase"]),
                       stage=int(arrays["stage"]),
                       continuous_done=int(arrays["continuous_done"]),
                       rotations=np.array(arrays["rotations"], dtype=np.float64),
                       translations=np.array(arrays["translations"], dtype=np.float64),
                       halves=np.array(arrays["halves"], dtype=np.int8),
                       angle_steps_deg=np.array(arrays["angle_steps_deg"], dtype=np.float64),
                       shift_steps=np.array(arrays["shift_steps"], dtype=np.float64),
                       admm=admm, history=history)
        except KeyError as exc:
            raise ValueError(f"arrays are not a refinement state: {exc.args[0]!r} is missing") \
                from None


def _from_saved(value):
    a = np.array(value)
    return str(a) if a.dtype.kind in "US" else a


@dataclass(frozen=True, eq=False)
class RefineResult:
    """Output of :func:`refine`.

    Attributes
    ----------
    volume : ndarray, float32, shape (C, D, D, D)
        Reconstruction from all the particles with their refined poses (host).
    half_maps : ndarray, float32, shape (2, C, D, D, D), or None
        The two independently refined half maps (None without half maps).
    poses : Poses
        Refined poses.
    halves : ndarray, int8, shape (N,) or None
        Half set of each particle.
    fsc : tuple of FSCCurve (one per channel) or None
        Final half-map FSC.
    resolution_per_voxel : ndarray, float64, shape (C,)
        Final half-map FSC resolution at 0.143, cycles per voxel (NaN without half maps).
    energies : ndarray, float64, shape (N,)
        Relative energy of each particle at its refined pose (last pose update).
    changes_deg : ndarray, float64, shape (N,)
        Rotation change of each particle from the input poses, modulo Cn, degrees.
    last_changes_deg : ndarray, float64, shape (N,)
        Rotation change of each particle in the last pose update, degrees.
    history : RefineHistory
    converged : bool
        True when the poses stopped changing (the tolerances were met) before the
        iteration limits.
    state : RefineState
        The final state.
    """

    volume: np.ndarray
    half_maps: np.ndarray | None
    poses: Poses
    halves: np.ndarray | None
    fsc: tuple | None
    resolution_per_voxel: np.ndarray
    energies: np.ndarray
    changes_deg: np.ndarray
    last_changes_deg: np.ndarray
    history: RefineHistory
    converged: bool
    state: RefineState


def refine(particles, poses: Poses, psf, *, volume=None, regularizer: str = "tv",
           weight=3e-3, schedule=DEFAULT_SCHEDULE, exhaustive_iterations: int | None = None,
           tolerance_deg: float | None = None, continuous_iterations: int = 2,
           gd_steps: int = 3, continuous_tolerance_deg: float = 0.05,
           initial_admm_iterations: int = 100, admm_iterations: int = 30,
           continuous_admm_iterations: int = 5, final_admm_iterations: int = 50,
           symmetry: int = 1, channels=None, half_maps: bool = True, halves=None, seed=0,
           max_shift: float | None = None, support_threshold: float = 1e-3, pad: float = 1.5,
           batch_size: int = 16, state: RefineState | None = None,
           callback: Callable[[RefineState], None] | None = None,
           progress: Callable[[dict], None] | None = None, backend=None) -> RefineResult:
    """High-accuracy refinement: alternate regularised reconstruction and pose updates.

    Each outer iteration: (a) the sums of the known-pose problem for the current poses
    (:func:`spfluo.algorithms.reconstruct.precompute_sums` the first time, then
    :func:`~spfluo.algorithms.reconstruct.update_sums` for the particles that moved), then
    ADMM iterations warm-started from the previous state
    (:func:`spfluo.algorithms.reconstruct.reconstruct_admm`, TV or Hessian); (b) a pose
    update of every particle against its half set's volume.  First the
    exhaustive search, one ``schedule`` stage per iteration, the last stage repeated until
    the median rotation change is at most ``tolerance_deg``; then ``continuous_iterations``
    continuous refinements (``gd_steps`` gradient steps each, Zehni et al. 2020).  Finally the
    volume is reconstructed from all the particles with the refined poses.

    Parameters
    ----------
    particles : ndarray, shape (N, C, D, D, D) or (N, D, D, D)
        Particles (cubic boxes, isotropic voxels); channels share the poses.
    poses : Poses
        Initial poses (ab initio, or any estimate), zyx frame, translations in voxels.
    psf : ndarray, shape (d, d, d) or (C, d, d, d)
        Centred PSF(s), ``d <= D``.
    volume : ndarray, shape (C, D, D, D) or (D, D, D), optional
        Reference for the first pose update (e.g. the ab initio volume; any intensity
        scale); by default the first volume is reconstructed from the input poses.  It must
        be in the frame of the poses (and have its Cn axis along z with ``symmetry``).
    regularizer : {"tv", "hessian"}, default "tv"
    weight : float or sequence of float (one per channel), default 3e-3
        Regularisation weight per mean particle, data normalised to ``max(b) = 1``
        (:func:`~spfluo.algorithms.reconstruct.reconstruct_admm`).
    schedule : sequence of SearchStage or (step_deg, range_deg) pairs
        Coarse-to-fine exhaustive stages (default Fortun et al. 2018: ``(20, None), (5, 10), (1,
        5)``); an empty schedule skips the exhaustive search.
    exhaustive_iterations : int, optional
        Most exhaustive iterations (default ``len(schedule) + 2``; at least
        ``len(schedule)``).
    tolerance_deg : float, optional
        The exhaustive search stops when the median rotation change is at most this
        (default half the last stage's step).
    continuous_iterations : int, default 2
        Continuous refinement iterations after the exhaustive search (0: none).
    gd_steps : int, default 3
        Gradient steps per particle and continuous iteration (``K_GD``).
    continuous_tolerance_deg : float, default 0.05
        The continuous phase stops early when the median rotation change is at most this.
    initial_admm_iterations, admm_iterations : int
    continuous_admm_iterations, final_admm_iterations : int
        ADMM iterations of the first volume update (from scratch), of the next ones in the
        exhaustive phase, of the continuous phase (``K_ADMM``, Zehni et al. 2020 uses 2 to 5) and of
        the final reconstructions (all warm-started but the first).
    symmetry : int, default 1
        Order n of the Cn symmetry about z: symmetrised sums, search over SO(3)/Cn, changes
        modulo Cn.
    channels : None, int or sequence of int
        Channels compared by the pose updates (default all); every channel is
        reconstructed.
    half_maps : bool, default True
        Gold standard: two random half sets refined independently, their FSC reported at
        every iteration.
    halves : array_like of int, shape (N,), optional
        The half set (0 or 1) of each particle; default
        :func:`~spfluo.algorithms.reconstruct.half_split` with ``seed``.
    seed : int or numpy.random.Generator
        Seed of the half split.
    max_shift : float, optional
        Largest translation norm, voxels (default ``D / 4``).
    support_threshold : float, default 1e-3
        OTF support of the pose updates (:func:`particle_spectra`).
    pad : float, default 1.5
        Padding of the pose updates' blur (:func:`particle_spectra`; 1.5 makes it linear
        for objects within the box and PSFs up to the box size).
    batch_size : int, default 16
        Particles processed together by the sums.
    state : RefineState, optional
        Continue from this state (same inputs and options): the result is the one of an
        uninterrupted run.
    callback : callable, optional
        ``callback(state)`` after every outer iteration (checkpoints).
    progress : callable, optional
        ``progress(info)`` after every outer iteration, ``info`` a dict with the history
        entry and ``elapsed``.
    backend : Backend or {"cpu", "gpu"}, optional

    Returns
    -------
    RefineResult
    """
    t_start = time.perf_counter()
    arr = as_particles(particles)[0]
    n, c, d = int(arr.shape[0]), int(arr.shape[1]), int(arr.shape[2])
    poses = _check_poses(poses, n)
    regularizer = _check_regularizer(regularizer)
    stages = _as_schedule(schedule)
    n_exh = len(stages) + 2 if exhaustive_iterations is None else check_int(
        exhaustive_iterations, "exhaustive_iterations", minimum=0)
    if n_exh < len(stages):
        raise ValueError(f"exhaustive_iterations must be at least the number of schedule "
                         f"stages ({len(stages)}), got {n_exh}")
    if tolerance_deg is None:
        tol = stages[-1].step_deg / 2.0 if stages else 0.0
    else:
        tol = check_float(tolerance_deg, "tolerance_deg", low=0.0, unit=" degrees")
    n_cont = check_int(continuous_iterations, "continuous_iterations", minimum=0)
    gd_steps = check_int(gd_steps, "gd_steps", minimum=1)
    cont_tol = check_float(continuous_tolerance_deg, "continuous_tolerance_deg", low=0.0,
                            unit=" degrees")
    it0 = check_int(initial_admm_iterations, "initial_admm_iterations", minimum=1)
    it_exh = check_int(admm_iterations, "admm_iterations", minimum=1)
    it_cont = check_int(continuous_admm_iterations, "continuous_admm_iterations", minimum=1)
    it_final = check_int(final_admm_iterations, "final_admm_iterations", minimum=1)
    symmetry = check_symmetry(symmetry)
    chans = as_channels(channels, c)
    if not isinstance(half_maps, (bool, np.bool_)):
        raise ValueError(f"half_maps must be True or False, got {half_maps!r}")
    if half_maps and n < 2:
        raise ValueError(f"half maps need at least 2 particles, got {n}: set half_maps=False")
    max_shift = check_max_shift(max_shift, d)
    h = _prepare_psf(np, psf, c, d)
    bk = resolve_backend(backend, particles)
    init_volume = None
    if volume is not None:
        init_volume = np.asarray(to_numpy(volume), dtype=np.float32)
        if init_volume.ndim == 3:
            init_volume = init_volume[None]
        if init_volume.shape != (c, d, d, d):
            raise ValueError(f"volume must have shape ({c}, {d}, {d}, {d}) like the particles, "
                             f"got {np.asarray(to_numpy(volume)).shape}")
        if not np.all(np.isfinite(init_volume)):
            raise ValueError("volume contains NaN or infinite values")
        if not np.any(init_volume):
            raise ValueError("volume is zero everywhere: give a reference or leave it out")

    if state is None:
        if half_maps:
            labels = half_split(n, seed=seed) if halves is None else np.asarray(halves)
            if labels.shape != (n,) or not np.isin(labels, (0, 1)).all() or \
                    len(np.unique(labels)) != 2:
                raise ValueError(f"halves must hold one 0 or 1 per particle ({n}), both "
                                 f"present, got {np.asarray(halves)!r}")
            labels = labels.astype(np.int8)
        else:
            labels = np.zeros(n, dtype=np.int8)
        state = RefineState(
            iteration=0, phase=PHASE_EXHAUSTIVE if stages else (
                PHASE_CONTINUOUS if n_cont else 2),
            stage=0, continuous_done=0, rotations=poses.rotations.copy(),
            translations=poses.translations.copy(), halves=labels,
            angle_steps_deg=np.full(n, 1.0), shift_steps=np.full(n, 0.5), admm=None,
            history=RefineHistory.empty(c))
    else:
        if not isinstance(state, RefineState):
            raise ValueError(f"state must be a RefineState (from a callback), got "
                             f"{type(state).__name__}")
        if state.rotations.shape != (n, 3, 3) or state.halves.shape != (n,):
            raise ValueError(f"state describes {state.rotations.shape[0]} particles, not {n}: "
                             "resume with the same particles")
        if half_maps != bool(np.any(state.halves)):
            raise ValueError("state was made with a different half_maps setting: resume with "
                             "the same options")
    groups = [np.flatnonzero(state.halves == g) for g in ((0, 1) if half_maps else (0,))]
    spectra = particle_spectra(arr, h, support_threshold=support_threshold, pad=pad,
                               batch_size=batch_size, backend=bk)
    scorer = _Scorer(spectra, chans, max_shift)
    coarse = _Scorer(spectra, chans, max_shift, subset=_coarse_subset(spectra.frequencies))
    input_rotations = poses.rotations

    cache = {}  # the last sums and their poses: the next ones are an update of them

    def sums_for(rotations, translations):
        current = Poses(rotations, translations)
        if cache:  # only the particles that moved are taken out and put back
            previous = cache["poses"]
            sums = [update_sums(s, arr, previous, current, h, indices=idx,
                                batch_size=batch_size, backend=bk)
                    for s, idx in zip(cache["sums"], groups)]
        elif half_maps:
            sums = list(precompute_half_sums(arr, current, h, halves=state.halves,
                                             symmetry=symmetry, batch_size=batch_size,
                                             backend=bk))
        else:
            sums = [precompute_sums(arr, current, h, symmetry=symmetry, batch_size=batch_size,
                                    backend=bk)]
        cache.update(poses=Poses(current.rotations.copy(), current.translations.copy()),
                     sums=sums)
        return sums

    last_changes = np.zeros(n)
    last_energies = np.full(n, np.nan)
    while state.phase != 2:
        t_it = time.perf_counter()
        it = state.iteration
        phase = state.phase
        rot = state.rotations.copy()
        trans = state.translations.copy()
        # (a) volume update
        if it == 0 and init_volume is not None:
            vols = [init_volume for _ in groups]
            admm = state.admm
            energy = math.nan
            resolution = np.full(c, np.nan)
        else:
            sums = sums_for(rot, trans)
            admm_new, vols, energy = [], [], 0.0
            for g, s in enumerate(sums):
                if state.admm is None:
                    init = None if init_volume is None else init_volume
                    iters = it0
                else:
                    init = state.admm[g]
                    iters = it_cont if phase == PHASE_CONTINUOUS else it_exh
                res = reconstruct_admm(s, regularizer=regularizer, weight=weight,
                                       iterations=iters, init=init)
                admm_new.append(_host_state(res.state))
                vols.append(to_numpy(res.volume).astype(np.float32))
                energy += float(res.energies[-1])
            admm = tuple(admm_new)
            resolution = (_half_fsc(vols[0], vols[1])[1] if half_maps
                          else np.full(c, np.nan))
        # (b) pose update, each half set against its own volume
        energies = np.empty(n)
        a_steps = state.angle_steps_deg.copy()
        s_steps = state.shift_steps.copy()
        for g, idx in enumerate(groups):
            need_gradient = phase == PHASE_CONTINUOUS or (
                spectra.grid != spectra.box and not stages[state.stage].is_global)
            model = _Model(bk, vols[g], spectra, chans, gradient=need_gradient)
            t_now = scorer_project(scorer, trans[idx])
            if phase == PHASE_EXHAUSTIVE:
                stage = stages[state.stage]
                r_new, t_new, e_new = _search(model, scorer, coarse, idx, rot[idx], t_now,
                                              stage, symmetry, 8)
            else:
                r_new, t_new, e_new, a_new, s_new = _continuous(
                    model, scorer, idx, rot[idx], t_now, np.radians(a_steps[idx]),
                    s_steps[idx], steps=gd_steps, eta=0.25, max_backtracks=6,
                    max_angle=math.radians(2.0), max_shift_step=1.0)
                a_steps[idx] = np.degrees(a_new)
                s_steps[idx] = s_new
            rot[idx], trans[idx], energies[idx] = r_new, t_new, e_new
        changes, shifts = _changes(state.rotations, rot, state.translations, trans, symmetry)
        last_changes, last_energies = changes, energies
        med = float(np.median(changes))
        # next phase
        stage_idx, cont_done, next_phase = state.stage, state.continuous_done, phase
        if phase == PHASE_EXHAUSTIVE:
            done_exh = int(np.sum(state.history.phase == PHASE_EXHAUSTIVE)) + 1
            if stage_idx < len(stages) - 1:
                stage_idx += 1
            elif med <= tol or done_exh >= n_exh:
                next_phase = PHASE_CONTINUOUS if n_cont else 2
            step_deg = stages[state.stage].step_deg
            range_deg = math.inf if stages[state.stage].is_global else \
                stages[state.stage].range_deg
        else:
            cont_done += 1
            if cont_done >= n_cont or med <= cont_tol:
                next_phase = 2
            step_deg = range_deg = math.nan
        entry = dict(iteration=it, phase=phase, step_deg=step_deg, range_deg=range_deg,
                     energy=energy, pose_energy=float(np.mean(energies)),
                     median_change_deg=med, mean_change_deg=float(np.mean(changes)),
                     median_shift_change=float(np.median(shifts)),
                     resolution_per_voxel=resolution,
                     seconds=time.perf_counter() - t_it)
        state = RefineState(iteration=it + 1, phase=next_phase, stage=stage_idx,
                            continuous_done=cont_done, rotations=rot, translations=trans,
                            halves=state.halves, angle_steps_deg=a_steps, shift_steps=s_steps,
                            admm=admm, history=state.history.appended(**entry))
        if progress is not None:
            progress({**entry, "elapsed": time.perf_counter() - t_start})
        if callback is not None:
            callback(state)

    # final reconstruction with the refined poses
    final_poses = state.poses
    sums = sums_for(state.rotations, state.translations)
    halves_out = None
    half = None
    curves = None
    resolution = np.full(c, np.nan)
    if half_maps:
        maps = []
        for g, s in enumerate(sums):
            init = state.admm[g] if state.admm is not None else init_volume
            res = reconstruct_admm(s, regularizer=regularizer, weight=weight,
                                   iterations=it_final if state.admm is not None else it0,
                                   init=init)
            maps.append(to_numpy(res.volume).astype(np.float32))
        half = np.stack(maps)
        curves, resolution = _half_fsc(half[0], half[1])
        curves = tuple(curves)
        full = combine_sums(sums[0], sums[1])
        res = reconstruct_admm(full, regularizer=regularizer, weight=weight,
                               iterations=it_final, init=half.mean(axis=0))
        halves_out = state.halves.copy()
    else:
        init = state.admm[0] if state.admm is not None else init_volume
        res = reconstruct_admm(sums[0], regularizer=regularizer, weight=weight,
                               iterations=it_final if state.admm is not None else it0,
                               init=init)
    volume_out = to_numpy(res.volume).astype(np.float32)
    hist = state.history
    converged = bool(len(hist) and (
        (hist.phase[-1] == PHASE_CONTINUOUS and (hist.median_change_deg[-1] <= cont_tol))
        or (hist.phase[-1] == PHASE_EXHAUSTIVE and hist.median_change_deg[-1] <= tol)))
    total, _ = _changes(input_rotations, final_poses.rotations, poses.translations,
                        final_poses.translations, symmetry)
    if not np.all(np.isfinite(last_energies)):
        last_energies = _batched_terms(
            _Model(bk, volume_out, spectra, chans, gradient=False), scorer, np.arange(n),
            final_poses.rotations, scorer_project(scorer, final_poses.translations),
            rotation_gradient=False, translation_gradient=False)[0]
        last_changes = np.full(n, np.nan)
    return RefineResult(volume=volume_out, half_maps=half, poses=final_poses,
                        halves=halves_out, fsc=curves, resolution_per_voxel=resolution,
                        energies=last_energies, changes_deg=total,
                        last_changes_deg=last_changes, history=hist, converged=converged,
                        state=state)


def _host_state(st: ADMMState) -> ADMMState:
    """The ADMM state with its arrays on the host (checkpoints, resume)."""
    return ADMMState(**{f.name: (getattr(st, f.name) if isinstance(getattr(st, f.name), str)
                                 else to_numpy(getattr(st, f.name)))
                        for f in dataclasses.fields(ADMMState)})
