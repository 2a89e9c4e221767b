"""Simulated data with ground truth: particle datasets and fields of view.

Particles (Eloy et al. 2023 sec. 4.1)
    :func:`simulate_particles` draws, for every particle ``l``, a uniform random
    rotation ``R_l`` (:func:`spfluo.algorithms.geometry.random_rotations`) and a small
    random shift ``t_l`` (voxels), and computes

        y_l = a_c * h_c * clip(T_{t_l}(R_l f_c) - S_l, 0) + noise,

    channel by channel (``c``), with

    - ``T_t(R f)(x) = f(R^T (x - c - t) + c)`` the pose convention of the project
      (``docs/conventions.md``), evaluated in real space (sub-voxel shifts, zero outside the
      box, no periodic wrap);
    - ``S_l`` the non-uniform degree of labelling (DOL): a sum of ``n_spots`` (120)
      isotropic Gaussian spots at uniform random places of the particle box, standard
      deviation uniform in ``[2 %, 5 %]`` of the box side, peak intensity uniform in
      ``[0, 1]``.  Eloy et al. 2023 subtracts them "at random locations in the image"; here they
      are subtracted from the posed object *before* the blur (the DOL is a property of
      the fluorophore density, which the microscope then blurs) and the result is
      clipped at 0 (a density cannot be negative).  Every particle and channel has its
      own spots;
    - ``h_c`` the PSF of channel ``c`` (unit sum), a *linear* convolution (the particle
      box is zero-padded by the PSF size before the FFT, so nothing wraps around);
    - ``a_c`` one scale per channel, for the whole dataset, such that the noiseless
      particles of channel ``c`` span ``[0, 1]`` (their minimum is 0, their maximum 1):
      "images are scaled from 0 to 1" (Eloy et al. 2023).  One factor for all particles keeps
      the data an exact linear function of the ground truth (the forward model of
      reconstruction up to one constant), which a per-particle rescaling would break;
    - noise: Gaussian of standard deviation ``noise_std`` (0.2 in Eloy et al. 2023), added to
      the scaled signal; optionally Poisson noise first (``poisson_photons`` expected
      photons at intensity 1: ``Poisson(photons * y) / photons``), the Gaussian term
      then playing the read noise.

Avoiding the inverse crime
    The reconstructions of the project rotate volumes by trilinear interpolation on the
    particle grid (:class:`spfluo.algorithms.transform.RotationOperator`), translate by
    Fourier phase ramps and blur by periodic convolution.  The simulation differs on
    every count: with ``oversampling = s >= 2`` each output voxel is the average of
    ``s^3`` sub-samples (its integral over the voxel, as a detector integrates), taken on
    a grid ``s`` times finer than the particle grid.  The finer representation of the
    ground truth is ``fine_volume`` when given (:func:`simulate_dataset` draws the
    analytic phantom directly on the finer grid), otherwise the cubic B-spline
    interpolant of ``volume`` sampled ``s`` times finer; sub-samples are read from it by
    trilinear interpolation at ``c_f + s R^T (x + o - t)`` (``c_f`` the centre of the fine
    box, ``o`` the sub-sample offset), so the shift is applied in real space, and the
    blur is a linear convolution.  With ``s = 1`` the posed volume is the cubic-spline
    rotation (:func:`spfluo.algorithms.transform.rotate`, ``order=3``).

Fields of view
    :func:`simulate_field` places many posed particles (and debris blobs of another
    shape) in a large, possibly anisotropic, image, for particle picking: see its notes
    for the resampling onto the field's grid.

All arrays are ``(z, y, x)`` (``(c, z, y, x)`` with channels), float32; randomness from
``numpy.random.default_rng(seed)``, with independent streams for the poses, the spots
and the noise (so ``noise_std=0`` and ``noise_std=0.2`` with the same seed give the same
noiseless signal).  This module does no file I/O.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft
import scipy.ndimage

from spfluo.algorithms import phantoms as _phantoms
from spfluo.algorithms._validation import check_int
from spfluo.algorithms.fourier import otf_from_psf
from spfluo.algorithms.geometry import Poses, as_voxel_size, random_rotations
from spfluo.algorithms.psf import gaussian_psf, gibson_lanni_psf
from spfluo.algorithms.transform import rotate

__all__ = [
    "ParticleDataset",
    "FieldOfView",
    "simulate_particles",
    "simulate_dataset",
    "simulate_field",
]

# points interpolated per chunk (bounds the coordinate arrays: 12 bytes a point)
_CHUNK_POINTS = 1 << 22
# particles blurred per FFT batch
_BLUR_BATCH = 8
_PHANTOMS = ("asymmetric", "c9", "npc", "shell", "tube")
# margin (voxels) of zeros around a volume before its cubic spline prefilter
_SPLINE_PAD = 12
# random candidates tested together, and batches tried, per centre placed in a field
_PLACE_BATCH = 256
_PLACE_BATCHES = 40


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True, eq=False)
class ParticleDataset:
    """Simulated particles with their ground truth.

    Attributes
    ----------
    particles : ndarray, shape (N, C, D, D, D), float32
        The simulated particles (always with the channel axis; ``C = 1`` for one
        channel).  Noiseless part in ``[0, 1]``, plus noise.
    poses : spfluo.algorithms.geometry.Poses
        True poses: particle ``l`` is ``h * T_{t_l}(R_l volume)`` (zyx-frame rotations,
        translations in voxels), up to the DOL spots, the intensity scale and the noise.
    volume : ndarray, shape (C, D, D, D), float32
        Ground truth, values in ``[0, 1]``.
    psf : ndarray, shape (C, d, d, d), float32
        PSF of each channel, unit sum, centred on ``(d//2, d//2, d//2)``.
    voxel_size : tuple of 3 float
        ``(z, y, x)`` voxel size in micrometres (isotropic for particles).
    noise_std : float
        Standard deviation of the additive Gaussian noise, in the units of the scaled
        signal (whose noiseless maximum is 1).
    """

    particles: np.ndarray
    poses: Poses
    volume: np.ndarray
    psf: np.ndarray
    voxel_size: tuple
    noise_std: float

    @property
    def n_particles(self) -> int:
        """Number of particles ``N``."""
        return int(self.particles.shape[0])

    @property
    def n_channels(self) -> int:
        """Number of channels ``C``."""
        return int(self.particles.shape[1])


@dataclass(frozen=True, eq=False)
class FieldOfView:
    """A simulated field of view with many particles, and its ground truth.

    Attributes
    ----------
    image : ndarray, shape (C, Z, Y, X), float32
        The field (noiseless part in ``[0, 1]`` per channel, plus noise).
    positions : ndarray, shape (N, 3), float64
        Particle centres in field voxels ``(z, y, x)`` (continuous; the particle's box
        centre ``(D//2, D//2, D//2)`` sits there).
    poses : spfluo.algorithms.geometry.Poses
        Rotations of the particles (zyx frame, same convention as particles: the field
        shows ``R_l f`` around ``positions[l]``); translations are zero (the position
        holds the shift).
    debris_positions : ndarray, shape (M, 3), float64
        Centres of the debris blobs, field voxels ``(z, y, x)``.
    voxel_size : tuple of 3 float
        ``(z, y, x)`` voxel size of the field, micrometres.
    particle_size : float
        Diameter of the particle (its support, see :func:`simulate_field`) in particle
        voxels, i.e. in lateral (x) field voxels.
    touching_pairs : ndarray, shape (P, 2), int
        Indices (rows of ``positions``) of the particle pairs placed touching each
        other; all other centres are at least ``min_distance`` apart.
    """

    image: np.ndarray
    positions: np.ndarray
    poses: Poses
    debris_positions: np.ndarray
    voxel_size: tuple
    particle_size: float
    touching_pairs: np.ndarray


# ----------------------------------------------------------------------------- validation


def _as_channels(array: Any, name: str, *, cubic: bool) -> np.ndarray:
    """(D, D, D) or (C, D, D, D) real finite array -> float32 (C, ...)."""
    arr = np.asarray(array)
    if arr.ndim not in (3, 4):
        raise ValueError(
            f"{name} must have shape (Z, Y, X) or (C, Z, Y, X), got shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}): give a non-empty volume")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a real-valued array, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values: clean it first")
    if arr.ndim == 3:
        arr = arr[None]
    if cubic and len(set(arr.shape[1:])) != 1:
        raise ValueError(
            f"{name} must be a cube (C, D, D, D) on isotropic voxels, got shape {arr.shape}: "
            "resample it to isotropic voxels and pad it to a cube first"
        )
    return arr.astype(np.float32)


def _check_ground_truth(volume: Any, name: str = "volume") -> np.ndarray:
    vol = _as_channels(volume, name, cubic=True)
    lo, hi = float(vol.min()), float(vol.max())
    if lo < -1e-6 or hi > 1.0 + 1e-6:
        raise ValueError(
            f"{name} must hold values in [0, 1] (a ground-truth density), got [{lo:.3g}, "
            f"{hi:.3g}]: rescale it, e.g. (v - v.min()) / (v.max() - v.min())"
        )
    for c in range(vol.shape[0]):
        if not np.any(vol[c] > 0):
            raise ValueError(f"{name} channel {c} is all zeros: nothing to simulate")
    return np.clip(vol, 0.0, 1.0)


def _check_psf(psf: Any, n_channels: int, name: str = "psf") -> np.ndarray:
    """PSF (Zp, Yp, Xp) shared by all channels, or one per channel; unit sum each."""
    h = _as_channels(psf, name, cubic=False)
    if h.shape[0] == 1 and n_channels > 1:
        h = np.repeat(h, n_channels, axis=0)
    if h.shape[0] != n_channels:
        raise ValueError(
            f"{name} must have one PSF per channel: shape (Zp, Yp, Xp) or ({n_channels}, Zp, "
            f"Yp, Xp) for a volume of {n_channels} channel(s), got shape {np.shape(psf)}"
        )
    if h.min() < 0:
        raise ValueError(f"{name} has negative values (min {h.min():.3g}): a PSF is >= 0")
    sums = h.reshape(h.shape[0], -1).sum(axis=1, dtype=np.float64)
    if np.any(sums <= 0):
        raise ValueError(f"{name} has a channel that sums to 0: give a non-zero PSF")
    return (h / sums[:, None, None, None]).astype(np.float32)


def _check_nonneg(name: str, value: Any, *, positive: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(value)
        or value < 0
        or (positive and value == 0)
    ):
        raise ValueError(
            f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}"
        )
    return float(value)


def _check_range(name: str, value: Any, *, low: float, high: float) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair of numbers, got {value!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)) or not low <= a <= b <= high:
        raise ValueError(
            f"{name} must be a (low, high) pair with {low} <= low <= high <= {high}, "
            f"got {value!r}"
        )
    return a, b


# ----------------------------------------------------------------------------- helpers


def _centred_grid(shape: tuple[int, ...]) -> np.ndarray:
    """(3, V) float64 coordinates of every voxel relative to the box centre, C order."""
    axes = [np.arange(n, dtype=np.float64) - n // 2 for n in shape]
    return np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")])


def _subsample_offsets(counts: tuple[int, int, int]) -> np.ndarray:
    """(3, K) offsets ``(k + 1/2) / n - 1/2`` (voxels) of a regular sub-grid of a voxel."""
    axes = [(np.arange(n) + 0.5) / n - 0.5 for n in counts]
    return np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")])


def _spline_coefficients(volume: np.ndarray) -> np.ndarray:
    """Cubic B-spline coefficients of a zero-padded (by ``_SPLINE_PAD``) 3D volume."""
    padded = np.pad(volume.astype(np.float32), _SPLINE_PAD)
    return scipy.ndimage.spline_filter(padded, order=3, output=np.float32, mode="mirror")


def _upsample_cubic(volume: np.ndarray, factor: int) -> np.ndarray:
    """Cubic-spline interpolant of ``volume`` (D, D, D) sampled ``factor`` times finer.

    Fine voxel ``j`` (per axis) sits at coarse position ``c + (j - c_f) / factor`` with
    ``c = D // 2`` and ``c_f = (factor D) // 2``: both grids share the box centre.
    """
    n = volume.shape[0]
    m = factor * n
    pos = n // 2 + (np.arange(m, dtype=np.float64) - m // 2) / factor + _SPLINE_PAD
    coeffs = _spline_coefficients(volume)
    coords = np.stack(np.meshgrid(pos, pos, pos, indexing="ij")).astype(np.float32)
    out = scipy.ndimage.map_coordinates(
        coeffs, coords, order=3, prefilter=False, mode="constant", cval=0.0, output=np.float32
    )
    return out


def _pose_channels(
    fine: np.ndarray, rotations: np.ndarray, translations: np.ndarray, size: int, factor: int
) -> np.ndarray:
    """Posed particles ``(B, C, D, D, D)``: mean over sub-samples of the fine volume.

    Output voxel ``x`` (relative to the centre, particle voxels) of pose ``(R, t)`` is the
    mean over the sub-sample offsets ``o`` of ``fine(c_f + factor R^T (x + o - t))``
    (trilinear, zero outside the fine box).
    """
    n_ch, m = fine.shape[0], fine.shape[1]
    grid = _centred_grid((size,) * 3)  # (3, V)
    offsets = _subsample_offsets((factor,) * 3)  # (3, K)
    points = (grid[:, None, :] + offsets[:, :, None]).reshape(3, -1).astype(np.float32)
    k = offsets.shape[1]
    v = grid.shape[1]
    n = rotations.shape[0]
    out = np.empty((n, n_ch, size, size, size), dtype=np.float32)
    step = max(1, _CHUNK_POINTS // points.shape[1])
    for start in range(0, n, step):
        sl = slice(start, min(n, start + step))
        rt = np.swapaxes(rotations[sl], 1, 2)  # (B, 3, 3)
        # fine-grid index c_f + s R^T (x + o - t) = (s R^T)(x + o) + (c_f - s R^T t)
        offset = (m // 2) - factor * np.einsum("bij,bj->bi", rt, translations[sl])
        coords = np.matmul((factor * rt).astype(np.float32), points)  # (B, 3, K V)
        coords += offset.astype(np.float32)[:, :, None]
        coords = np.moveaxis(coords, 1, 0)  # (3, B, K V)
        for c in range(n_ch):
            samples = scipy.ndimage.map_coordinates(
                fine[c], coords, order=1, mode="constant", cval=0.0, output=np.float32
            )
            out[sl, c] = samples.reshape(-1, k, v).mean(axis=1).reshape((-1,) + (size,) * 3)
    return out


def _gaussian_spots(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    n_spots: int,
    sigma_range: tuple[float, float],
    intensity_range: tuple[float, float],
    n_volumes: int,
) -> np.ndarray:
    """``n_volumes`` sums of ``n_spots`` isotropic Gaussian spots, (n_volumes, Z, Y, X).

    Centres uniform in the box (voxel coordinates), sigma uniform in ``sigma_range``
    times the box side ``max(shape)``, peak intensity uniform in ``intensity_range``.
    Each spot is separable, so the sum is one batched matrix product
    ``(Z, S) @ (S, Y X)`` per volume.
    """
    z, y, x = shape
    side = float(max(shape))
    centres = rng.uniform(0.0, 1.0, size=(n_volumes, n_spots, 3)) * np.array(
        shape, dtype=np.float64
    ) - 0.5
    sigma = rng.uniform(sigma_range[0], sigma_range[1], size=(n_volumes, n_spots)) * side
    amplitude = rng.uniform(intensity_range[0], intensity_range[1], size=(n_volumes, n_spots))

    def profile(axis: int, n: int) -> np.ndarray:
        coord = np.arange(n, dtype=np.float64)
        d = coord[None, None, :] - centres[:, :, axis, None]
        return np.exp(-0.5 * (d / sigma[:, :, None]) ** 2)  # (V, S, n)

    gz = profile(0, z) * amplitude[:, :, None]
    gy = profile(1, y)
    gx = profile(2, x)
    gyx = (gy[:, :, :, None] * gx[:, :, None, :]).reshape(n_volumes, n_spots, y * x)
    spots = np.matmul(np.swapaxes(gz, 1, 2), gyx)  # (V, Z, Y X)
    return spots.reshape(n_volumes, z, y, x).astype(np.float32)


def _blur_linear(stack: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """Linear (non-periodic) convolution of ``stack`` (B, Z, Y, X) with a centred PSF.

    The volumes are zero-padded at the end to a fast FFT size at least ``shape +
    psf.shape``, convolved by FFT with the PSF centred on index 0 (so nothing wraps
    around), and cropped back: ``out(x) = sum_u psf(u + p//2) stack(x - u)``.
    """
    shape = stack.shape[-3:]
    padded = tuple(
        scipy.fft.next_fast_len(int(n + p), real=True) for n, p in zip(shape, psf.shape)
    )
    otf = otf_from_psf(psf, padded, rfft=True)
    spec = scipy.fft.rfftn(stack, s=padded, axes=(-3, -2, -1), workers=-1)
    spec *= otf
    out = scipy.fft.irfftn(spec, s=padded, axes=(-3, -2, -1), workers=-1)
    return out[..., : shape[0], : shape[1], : shape[2]].astype(np.float32)


# ----------------------------------------------------------------------------- particles


def simulate_particles(
    volume: Any,
    psf: Any,
    *,
    n_particles: int | None = None,
    rotations: Any = None,
    translations: Any = None,
    max_shift: float = 2.0,
    noise_std: float = 0.2,
    poisson_photons: float | None = None,
    n_spots: int = 120,
    spot_sigma: tuple[float, float] = (0.02, 0.05),
    spot_intensity: tuple[float, float] = (0.0, 1.0),
    oversampling: int = 2,
    fine_volume: Any = None,
    voxel_size=(1.0, 1.0, 1.0),
    seed=0,
) -> ParticleDataset:
    """Simulate particles of a volume seen at random poses (Eloy et al. 2023 sec. 4.1 protocol).

    Parameters
    ----------
    volume : ndarray, shape (D, D, D) or (C, D, D, D)
        Ground truth on isotropic voxels, values in ``[0, 1]``.  Several channels share
        the poses (Fortun et al. 2018 eq. 1-2).
    psf : ndarray, shape (Zp, Yp, Xp) or (C, Zp, Yp, Xp)
        PSF on the particle grid, centred on ``(Zp//2, Yp//2, Xp//2)``, one per channel
        (a single one is used for every channel); normalised to unit sum here.
    n_particles : int, optional
        Number of particles ``N`` (default 20, or the length of ``rotations`` /
        ``translations`` when given; a different explicit value is an error).
    rotations : array_like, shape (N, 3, 3), optional
        True rotations (zyx frame) instead of uniform random ones.
    translations : array_like, shape (N, 3), optional
        True translations in voxels ``(z, y, x)`` instead of random ones.
    max_shift : float, default 2.0
        Random translations are uniform in ``[-max_shift, max_shift]`` voxels on each axis.
    noise_std : float, default 0.2
        Standard deviation of the additive Gaussian noise (signal scaled to ``[0, 1]``).
    poisson_photons : float, optional
        If given, Poisson noise first: the expected number of photons at intensity 1.
    n_spots : int, default 120
        Number of Gaussian spots subtracted per particle and channel (DOL; 0 = none).
    spot_sigma : (float, float), default (0.02, 0.05)
        Range of the spot standard deviations, fraction of the box side.
    spot_intensity : (float, float), default (0.0, 1.0)
        Range of the spot peak intensities (the volume is in ``[0, 1]``).
    oversampling : int, default 2
        Sub-samples per voxel and axis (``s``): the posed volume is integrated over each
        voxel on a grid ``s`` times finer (see the module notes: inverse crime).
    fine_volume : ndarray, shape (s D, s D, s D) or (C, s D, s D, s D), optional
        The ground truth drawn ``s`` times finer (same box, same centre: fine voxel ``j``
        at ``(j - (s D)//2) / s`` particle voxels from the centre).  Default: the cubic
        spline interpolant of ``volume``.
    voxel_size : float or tuple of 3 float, default (1, 1, 1)
        ``(z, y, x)`` voxel size in micrometres (stored in the result).
    seed : int or numpy.random.Generator, default 0

    Returns
    -------
    ParticleDataset
        Particles ``(N, C, D, D, D)`` float32, true poses, the ground truth ``(C, D, D,
        D)``, the normalised PSF ``(C, Zp, Yp, Xp)``, the voxel size and ``noise_std``.

    Notes
    -----
    The noiseless particles are ``a_c h_c * clip(T_t(R f_c) - S, 0)`` with one scale
    ``a_c`` per channel for the whole set (module notes); so with ``n_spots=0`` and
    ``noise_std=0`` the particles are exactly (up to interpolation) a common multiple of
    ``h * T_t(R f)``.  Cost: ``s^3 D^3`` trilinear samples and one padded FFT
    convolution per particle and channel.
    """
    vol = _check_ground_truth(volume)
    n_ch, size = vol.shape[0], vol.shape[1]
    h = _check_psf(psf, n_ch)
    factor = check_int(oversampling, "oversampling", minimum=1)
    if factor > 4:
        raise ValueError(f"oversampling must be an integer in 1..4, got {oversampling!r}")
    max_shift = _check_nonneg("max_shift", max_shift)
    noise_std = _check_nonneg("noise_std", noise_std)
    if poisson_photons is not None:
        poisson_photons = _check_nonneg("poisson_photons", poisson_photons, positive=True)
    n_spots = check_int(n_spots, "n_spots", minimum=0)
    spot_sigma = _check_range("spot_sigma", spot_sigma, low=1e-6, high=1.0)
    spot_intensity = _check_range("spot_intensity", spot_intensity, low=0.0, high=1.0)
    vs = tuple(float(v) for v in as_voxel_size(voxel_size))

    lengths = {}
    if rotations is not None:
        r = np.asarray(rotations, dtype=np.float64)
        if r.ndim != 3 or r.shape[1:] != (3, 3):
            raise ValueError(f"rotations must have shape (N, 3, 3), got shape {r.shape}")
        lengths["rotations"] = r.shape[0]
    if translations is not None:
        t = np.asarray(translations, dtype=np.float64)
        if t.ndim != 2 or t.shape[1] != 3:
            raise ValueError(
                f"translations must have shape (N, 3) in voxels (z, y, x), got shape {t.shape}"
            )
        lengths["translations"] = t.shape[0]
    if n_particles is not None:
        lengths["n_particles"] = check_int(n_particles, "n_particles", minimum=1)
    if len(set(lengths.values())) > 1:
        raise ValueError(
            f"the number of particles is ambiguous: {lengths}; give consistent lengths"
        )
    n = next(iter(lengths.values())) if lengths else 20
    if n < 1:
        raise ValueError("rotations/translations are empty: give at least one particle")

    rng_rot, rng_shift, rng_spots, rng_noise = np.random.default_rng(seed).spawn(4)
    if rotations is None:
        rotations = random_rotations(n, seed=rng_rot)
    if translations is None:
        translations = rng_shift.uniform(-max_shift, max_shift, size=(n, 3))
    poses = Poses(rotations, translations)  # validates both

    if fine_volume is not None:
        fine = _as_channels(fine_volume, "fine_volume", cubic=True)
        expected = (n_ch,) + (factor * size,) * 3
        if fine.shape != expected:
            raise ValueError(
                f"fine_volume must have shape {expected} (oversampling={factor} times the "
                f"volume's {size}^3, {n_ch} channel(s)), got shape {np.shape(fine_volume)}"
            )
    elif factor > 1:
        fine = np.stack([_upsample_cubic(vol[c], factor) for c in range(n_ch)])
    else:
        fine = None

    signal = np.empty((n, n_ch, size, size, size), dtype=np.float32)
    for start in range(0, n, _BLUR_BATCH):
        sl = slice(start, min(n, start + _BLUR_BATCH))
        if fine is None:
            posed = np.stack(
                [
                    rotate(
                        vol[c], poses.rotations[sl], translations=poses.translations[sl],
                        order=3,
                    )
                    for c in range(n_ch)
                ],
                axis=1,
            )
        else:
            posed = _pose_channels(
                fine, poses.rotations[sl], poses.translations[sl], size, factor
            )
        b = posed.shape[0]
        if n_spots:
            spots = _gaussian_spots(
                rng_spots, (size,) * 3, n_spots, spot_sigma, spot_intensity, b * n_ch
            )
            posed -= spots.reshape(posed.shape)
        np.clip(posed, 0.0, None, out=posed)
        for c in range(n_ch):
            signal[sl, c] = _blur_linear(posed[:, c], h[c])
    np.clip(signal, 0.0, None, out=signal)  # FFT round-off
    for c in range(n_ch):
        peak = float(signal[:, c].max())
        if not peak > 0:
            raise ValueError(
                f"channel {c} has no signal left after the DOL spots: reduce n_spots or "
                "spot_intensity"
            )
        signal[:, c] /= peak

    particles = _add_noise(signal, rng_noise, noise_std, poisson_photons)
    return ParticleDataset(
        particles=np.ascontiguousarray(particles, dtype=np.float32),
        poses=poses,
        volume=vol,
        psf=h,
        voxel_size=vs,
        noise_std=noise_std,
    )


def _phantom_channels(phantom: str, size: int, n_channels: int, supersample: int) -> np.ndarray:
    """The phantom as (C, D, D, D) float32 (a fresh copy of a cached array)."""
    return _cached_phantom(phantom, size, n_channels, supersample).copy()


@functools.lru_cache(maxsize=8)
def _cached_phantom(phantom: str, size: int, n_channels: int, supersample: int) -> np.ndarray:
    # drawing a phantom costs about as much as simulating 10 particles: keep a few
    if phantom == "asymmetric":
        vol = _phantoms.asymmetric_phantom(size, seed=0, supersample=supersample)
    elif phantom == "c9":
        vol = _phantoms.c9_barrel(size, second_channel=n_channels == 2, supersample=supersample)
    elif phantom == "npc":
        vol = _phantoms.npc_c8(size, supersample=supersample)
    elif phantom == "shell":
        vol = _phantoms.sphere_shell(size, radius=0.3, thickness=0.08, supersample=supersample)
    else:
        vol = _phantoms.tube(
            size, radius=0.25, thickness=0.08, length=0.6, supersample=supersample
        )
    return vol if vol.ndim == 4 else vol[None]


def _psf_box(size: int, sigma: float) -> int:
    """Odd cube side ``2 ceil(3 sigma) + 1`` capped to the largest odd size <= ``size``."""
    side = 2 * int(math.ceil(3.0 * sigma)) + 1
    cap = size if size % 2 else size - 1
    return max(1, min(side, cap))


def _add_noise(signal: np.ndarray, rng, noise_std: float, poisson_photons) -> np.ndarray:
    """``signal`` (scaled to [0, 1]) with Poisson noise of ``poisson_photons`` photons at
    intensity 1 (when given), then Gaussian noise of standard deviation ``noise_std``."""
    out = signal
    if poisson_photons is not None:
        out = (rng.poisson(out.astype(np.float64) * poisson_photons)
               / poisson_photons).astype(np.float32)
    if noise_std > 0:
        out = out + np.float32(noise_std) * rng.standard_normal(size=out.shape,
                                                                dtype=np.float32)
    return out


def simulate_dataset(
    *,
    phantom: str = "asymmetric",
    size: int = 50,
    n_particles: int = 20,
    sigma_xy: float = 1.5,
    sigma_z: float = 5.0,
    n_channels: int = 1,
    voxel_size=(0.05, 0.05, 0.05),
    optics: dict | None = None,
    seed=0,
    **kwargs,
) -> ParticleDataset:
    """The Eloy et al. 2023 simulated setting in one call: phantom, PSF, particles.

    Parameters
    ----------
    phantom : {"asymmetric", "c9", "npc", "shell", "tube"}, default "asymmetric"
        The ground truth (:mod:`spfluo.algorithms.phantoms`): the asymmetric object
        (fixed layout, ``seed=0`` of :func:`~spfluo.algorithms.phantoms.asymmetric_phantom`),
        the C9 centriole-like barrel, the C8 nuclear-pore-like pairs of spots
        (:func:`~spfluo.algorithms.phantoms.npc_c8`), a hollow sphere (radius 0.3, wall
        0.08 box sides) or an open tube along z (radius 0.25, wall 0.08, length 0.6).
    size : int, default 50
        Box side ``D`` in voxels (Eloy et al. 2023 resizes its volumes to 50^3).
    n_particles : int, default 20
        Number of particles (Eloy et al. 2023 default).
    sigma_xy, sigma_z : float, default 1.5 and 5.0
        Standard deviations of the Gaussian PSF in voxels, lateral and axial (Eloy et al. 2023
        eq. 26; Fortun et al. 2018 uses 4 and 16); ignored with ``optics``.
    optics : dict, optional
        A physical PSF instead of the Gaussian: the keyword arguments of
        :func:`spfluo.algorithms.psf.gibson_lanni_psf` (``numerical_aperture``,
        ``wavelength`` in micrometres, ``model`` "widefield" or "confocal", ``method``
        "scalar" or "vectorial", refractive indices, ``depth``...), sampled at
        ``voxel_size`` on the largest odd cube within the box (so a widefield PSF, longer
        than the box, is truncated by it, as a measured one is).
    n_channels : int, default 1
        1, or 2 with ``phantom="c9"`` (the barrel and a torus around it, Fortun et al. 2018); both
        channels get the same PSF.
    voxel_size : float or tuple of 3 float, default (0.05, 0.05, 0.05)
        Isotropic ``(z, y, x)`` voxel size in micrometres (stored in the result).
    seed : int or numpy.random.Generator, default 0
        Draws the poses, spots and noise (the phantom layout is fixed).
    **kwargs
        Passed to :func:`simulate_particles` (``noise_std``, ``n_spots``, ``max_shift``,
        ``oversampling``, ``poisson_photons``, ``rotations``, ``translations``, ...).

    Returns
    -------
    ParticleDataset

    Notes
    -----
    The PSF is :func:`~spfluo.algorithms.psf.gaussian_psf` on a cube of odd side
    ``2 ceil(3 sigma_z) + 1`` (31 for sigma_z = 5) capped to the box.  The phantom is
    drawn twice: on the particle grid (the ground truth) and directly on the grid
    ``oversampling`` times finer, from which the particles are simulated (module notes).
    """
    if phantom not in _PHANTOMS:
        raise ValueError(f"phantom must be one of {_PHANTOMS}, got {phantom!r}")
    size = check_int(size, "size", minimum=8)
    n_channels = check_int(n_channels, "n_channels", minimum=1)
    if n_channels > 2 or (n_channels == 2 and phantom != "c9"):
        raise ValueError(
            f"n_channels must be 1, or 2 with phantom='c9' (barrel + torus), got "
            f"n_channels={n_channels!r} with phantom={phantom!r}"
        )
    sigma_xy = _check_nonneg("sigma_xy", sigma_xy)
    sigma_z = _check_nonneg("sigma_z", sigma_z)
    for key in ("volume", "psf", "fine_volume"):
        if key in kwargs:
            raise ValueError(
                f"{key} is built by simulate_dataset; call simulate_particles to give your own"
            )
    factor = kwargs.get("oversampling", 2)
    factor = check_int(factor, "oversampling", minimum=1)
    if "rotations" not in kwargs and "translations" not in kwargs:
        kwargs.setdefault("n_particles", check_int(n_particles, "n_particles", minimum=1))
    volume = _phantom_channels(phantom, size, n_channels, supersample=4)
    fine = None
    if 1 < factor <= 4:
        fine = _phantom_channels(
            phantom, factor * size, n_channels, supersample=max(1, 4 // factor)
        )
    if optics is None:
        side = _psf_box(size, max(sigma_z, sigma_xy))
        h = gaussian_psf((side, side, side), (sigma_z, sigma_xy))
    else:
        if not isinstance(optics, dict):
            raise ValueError(f"optics must be a dict of gibson_lanni_psf arguments, got "
                             f"{type(optics).__name__}")
        side = size if size % 2 else size - 1
        h = np.asarray(gibson_lanni_psf((side,) * 3, voxel_size=voxel_size, **optics),
                       dtype=np.float32)
    return simulate_particles(
        volume, h, fine_volume=fine, voxel_size=voxel_size, seed=seed, **kwargs
    )


# ----------------------------------------------------------------------------- fields of view


def _support_radius(volume: np.ndarray) -> float:
    """Radius (particle voxels) of the ball about the box centre holding the object.

    The largest distance from the centre of a voxel above 1 % of the maximum, plus half
    a voxel diagonal.
    """
    mask = volume.max(axis=0) > 0.01 * float(volume.max())
    grid = _centred_grid(mask.shape)[:, mask.ravel()]
    return float(np.sqrt((grid**2).sum(axis=0)).max()) + math.sqrt(3.0) / 2


def _place(
    rng: np.random.Generator,
    lo: np.ndarray,
    hi: np.ndarray,
    scale: np.ndarray,
    n_single: int,
    n_pairs: int,
    pair_distance: tuple[float, float],
    min_distance: float,
    others: np.ndarray,
    other_distance: float,
    what: str,
) -> np.ndarray:
    """Rejection sampling of centres (field voxels) in the box ``[lo, hi]``.

    Distances are measured in particle voxels: ``|(p - q) * scale|`` with ``scale =
    voxel_size / particle_voxel``.  Pairs come first (rows ``2i, 2i+1``), at a distance
    uniform in ``pair_distance`` along a random lateral direction; every other pair of
    centres is at least ``min_distance`` apart, and every centre at least
    ``other_distance`` from the rows of ``others``.  Each centre is the first valid one
    of batches of ``_PLACE_BATCH`` random candidates (tested together); after
    ``_PLACE_BATCHES`` batches without a valid candidate the field is declared full.
    """
    placed = np.empty((0, 3))

    def valid(cands: np.ndarray) -> np.ndarray:
        ok = np.all((cands >= lo) & (cands <= hi), axis=-1)
        if placed.size:
            d = np.linalg.norm((cands[:, None] - placed[None]) * scale, axis=-1)
            ok &= d.min(axis=1) >= min_distance
        if others.size:
            d = np.linalg.norm((cands[:, None] - others[None]) * scale, axis=-1)
            ok &= d.min(axis=1) >= other_distance
        return ok

    def fail():
        raise ValueError(
            f"could not place {n_pairs} touching pairs and {n_single} {what} in the field "
            f"(placed {len(placed)}): enlarge shape, or reduce n_particles, n_debris or "
            "min_distance"
        )

    for _ in range(n_pairs):
        for _ in range(_PLACE_BATCHES):
            a = rng.uniform(lo, hi, size=(_PLACE_BATCH, 3))
            phi = rng.uniform(0.0, 2.0 * np.pi, size=_PLACE_BATCH)
            d = rng.uniform(*pair_distance, size=_PLACE_BATCH)
            step = np.stack([np.zeros_like(phi), np.sin(phi), np.cos(phi)], axis=-1)
            b = a + d[:, None] * step / scale
            ok = np.flatnonzero(valid(a) & valid(b))
            if ok.size:
                placed = np.concatenate([placed, a[ok[0]][None], b[ok[0]][None]])
                break
        else:
            fail()
    for _ in range(n_single):
        for _ in range(_PLACE_BATCHES):
            cands = rng.uniform(lo, hi, size=(_PLACE_BATCH, 3))
            ok = np.flatnonzero(valid(cands))
            if ok.size:
                placed = np.concatenate([placed, cands[ok[0]][None]])
                break
        else:
            fail()
    return placed


def _patch_offsets(half: np.ndarray) -> np.ndarray:
    """(3, V) integer offsets of a patch ``[-half, half]`` per axis (field voxels)."""
    axes = [np.arange(-int(h), int(h) + 1) for h in half]
    return np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")])


def _add_patches(image: np.ndarray, origins: np.ndarray, patches: np.ndarray, half) -> None:
    """``image[o - half : o + half + 1] += patch`` for each patch, clipped to the image."""
    size = 2 * np.asarray(half, dtype=int) + 1
    for origin, patch in zip(origins, patches):
        start = origin - half
        src, dst = [], []
        for a in range(3):
            s0 = max(0, -start[a])
            s1 = min(size[a], image.shape[a] - start[a])
            if s1 <= s0:
                break
            src.append(slice(s0, s1))
            dst.append(slice(start[a] + s0, start[a] + s1))
        else:
            image[tuple(dst)] += patch[tuple(src)]


def simulate_field(
    volume: Any,
    psf: Any,
    *,
    shape,
    n_particles: int = 30,
    n_debris: int = 5,
    touching_pairs: int = 2,
    min_distance: float | None = None,
    noise_std: float = 0.2,
    poisson_photons: float | None = None,
    voxel_size=(1.0, 1.0, 1.0),
    seed=0,
) -> FieldOfView:
    """Simulate a field of view holding many particles at random positions and orientations.

    Parameters
    ----------
    volume : ndarray, shape (D, D, D) or (C, D, D, D)
        The particle (ground truth, values in ``[0, 1]``) on isotropic voxels whose size is
        the lateral (x) voxel size of the field.
    psf : ndarray, shape (Zp, Yp, Xp) or (C, Zp, Yp, Xp)
        PSF sampled on the *field's* grid (``voxel_size``), centred, one per channel (or
        one for all); normalised to unit sum here.
    shape : tuple of 3 int
        Field shape ``(Z, Y, X)`` in field voxels.
    n_particles : int, default 30
        Number of particles (the touching pairs included).
    n_debris : int, default 5
        Number of debris blobs: anisotropic Gaussian blobs (standard deviations 10-25 % of
        the particle diameter, random orientation, peak 0.7-1), in every channel.
    touching_pairs : int, default 2
        Number of particle pairs placed touching: centre distance uniform in ``[0.75,
        0.95]`` times ``min(particle_size, min_distance)``, along a lateral direction (they
        merge on the maximum-intensity projection along z).  They are rows ``2i, 2i+1``
        of ``positions``.
    min_distance : float, optional
        Smallest distance between the centres of particles that are not a touching pair,
        and between a debris blob and anything else, in particle voxels (lateral field
        voxels).  Default: the particle diameter ``particle_size`` (supports do not
        overlap).
    noise_std : float, default 0.2
        Gaussian noise standard deviation, the noiseless field scaled to ``[0, 1]`` per
        channel.
    poisson_photons : float, optional
        If given, Poisson noise first: the expected number of photons at intensity 1.
    voxel_size : float or tuple of 3 float, default (1, 1, 1)
        ``(z, y, x)`` voxel size of the field in micrometres; z may be coarser.
    seed : int or numpy.random.Generator, default 0

    Returns
    -------
    FieldOfView

    Notes
    -----
    Resampling of a particle onto the field: with ``p = voxel_size[2]`` the particle's
    (isotropic) voxel size and ``s_a = voxel_size[a] / p``, field voxel ``J`` near the
    centre ``P`` of a particle of rotation ``R`` shows the reference at
    ``c + R^T ((J + o - P) * s)`` (particle voxels, ``c`` the box centre), averaged over
    ``ceil(s_a)`` sub-samples ``o`` per axis (the field voxel integrates the object over
    its extent, so a coarse z voxel averages several particle planes); the reference is
    read by cubic-spline interpolation.  Positions are continuous; the particles lie
    inside the field (their support ball, radius ``particle_size / 2``, is within the
    image).  The summed particles and debris are blurred by a linear convolution with
    the PSF, scaled to ``[0, 1]`` per channel, and Gaussian noise is added.  No DOL
    spots here.  All particles in one batched interpolation; the loop over particles
    only adds the patches into the image.
    """
    vol = _check_ground_truth(volume)
    n_ch, size = vol.shape[0], vol.shape[1]
    h = _check_psf(psf, n_ch)
    try:
        fshape = tuple(int(s) for s in shape)
        ok = len(fshape) == 3 and all(int(s) == s for s in shape) and min(fshape) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"shape must be three positive integers (Z, Y, X), got {shape!r}")
    n_particles = check_int(n_particles, "n_particles", minimum=0)
    n_debris = check_int(n_debris, "n_debris", minimum=0)
    touching_pairs = check_int(touching_pairs, "touching_pairs", minimum=0)
    if 2 * touching_pairs > n_particles:
        raise ValueError(
            f"touching_pairs={touching_pairs} needs {2 * touching_pairs} particles, but "
            f"n_particles={n_particles}: lower touching_pairs or raise n_particles"
        )
    noise_std = _check_nonneg("noise_std", noise_std)
    if poisson_photons is not None:
        poisson_photons = _check_nonneg("poisson_photons", poisson_photons, positive=True)
    vs = as_voxel_size(voxel_size)
    scale = vs / vs[2]  # field voxel -> particle voxels, per axis
    radius = _support_radius(vol)
    particle_size = 2.0 * radius
    if min_distance is None:
        min_distance = particle_size
    min_distance = _check_nonneg("min_distance", min_distance, positive=True)

    half_extent = radius / scale  # field voxels
    lo = half_extent
    hi = np.array(fshape, dtype=np.float64) - 1.0 - half_extent
    if np.any(hi < lo):
        axis = int(np.argmax(lo - hi))
        raise ValueError(
            f"shape {fshape} is too small along axis {axis} for a particle of diameter "
            f"{particle_size:.1f} particle voxels ({2 * half_extent[axis]:.1f} field voxels "
            f"on that axis): enlarge the field"
        )

    rng_pos, rng_rot, rng_debris, rng_noise = np.random.default_rng(seed).spawn(4)
    pair_d = min(particle_size, min_distance)
    positions = _place(
        rng_pos, lo, hi, scale, n_particles - 2 * touching_pairs, touching_pairs,
        (0.75 * pair_d, 0.95 * pair_d), min_distance, np.empty((0, 3)), 0.0, "particles",
    )
    debris_positions = _place(
        rng_pos, lo, hi, scale, n_debris, 0, (0.0, 0.0), min_distance, positions,
        min_distance, "debris blobs",
    )
    rotations = random_rotations(n_particles, seed=rng_rot)
    poses = Poses(rotations, np.zeros((n_particles, 3)))

    image = np.zeros((n_ch,) + fshape, dtype=np.float32)
    half = np.ceil(half_extent + 1.0).astype(int)
    offsets = _patch_offsets(half).astype(np.float64)  # (3, V) field voxels
    n_sub = tuple(int(max(1, math.ceil(s - 1e-9))) for s in scale)
    sub = _subsample_offsets(n_sub)  # (3, K) field voxels
    if n_particles:
        origins = np.rint(positions).astype(int)
        frac = positions - origins  # (N, 3)
        # particle-voxel offsets of every (sub-sample, patch voxel) from each centre
        local = (offsets[:, None, :] + sub[:, :, None]).reshape(3, -1)  # (3, K V)
        k, v = sub.shape[1], offsets.shape[1]
        coeffs = [_spline_coefficients(vol[c]) for c in range(n_ch)]
        centre = size // 2 + _SPLINE_PAD
        patches = np.empty((n_particles, n_ch, v), dtype=np.float32)
        step = max(1, _CHUNK_POINTS // local.shape[1])
        for start in range(0, n_particles, step):
            sl = slice(start, min(n_particles, start + step))
            q = (local[None] - frac[sl, :, None]) * scale[None, :, None]  # (B, 3, K V)
            src = np.matmul(np.swapaxes(rotations[sl], 1, 2), q) + centre
            src = np.moveaxis(src.astype(np.float32), 1, 0)
            for c in range(n_ch):
                vals = scipy.ndimage.map_coordinates(
                    coeffs[c], src, order=3, prefilter=False, mode="constant", cval=0.0,
                    output=np.float32,
                )
                patches[sl, c] = vals.reshape(-1, k, v).mean(axis=1)
        patches = np.clip(patches, 0.0, None).reshape((n_particles, n_ch) + tuple(2 * half + 1))
        for c in range(n_ch):
            _add_patches(image[c], origins, patches[:, c], half)

    if n_debris:
        widths = rng_debris.uniform(0.1, 0.25, size=(n_debris, 3)) * particle_size
        axes = random_rotations(n_debris, seed=rng_debris)
        peaks = rng_debris.uniform(0.7, 1.0, size=n_debris)
        dhalf = np.ceil(3.0 * widths.max() / scale + 1.0).astype(int)
        doff = _patch_offsets(dhalf).astype(np.float64)
        dorigins = np.rint(debris_positions).astype(int)
        dfrac = debris_positions - dorigins
        q = (doff[None] - dfrac[:, :, None]) * scale[None, :, None]  # (M, 3, V) particle vox
        u = np.matmul(np.swapaxes(axes, 1, 2), q) / widths[:, :, None]
        blobs = (peaks[:, None] * np.exp(-0.5 * (u**2).sum(axis=1))).astype(np.float32)
        blobs = blobs.reshape((n_debris,) + tuple(2 * dhalf + 1))
        for c in range(n_ch):
            _add_patches(image[c], dorigins, blobs, dhalf)

    for c in range(n_ch):
        blurred = _blur_linear(image[c][None], h[c])[0]
        np.clip(blurred, 0.0, None, out=blurred)
        peak = float(blurred.max())
        image[c] = blurred / peak if peak > 0 else blurred
    image = _add_noise(image, rng_noise, noise_std, poisson_photons)
    return FieldOfView(
        image=image,
        positions=positions,
        poses=poses,
        debris_positions=debris_positions,
        voxel_size=tuple(float(v) for v in vs),
        particle_size=float(particle_size),
        touching_pairs=np.arange(2 * touching_pairs).reshape(touching_pairs, 2),
    )
