"""Quality metrics of a reconstruction: FSC, conical FSC, SSIM, PSNR.

- :func:`fsc` is the Fourier shell correlation of Eloy et al. 2023 eq. 27, shells ``1/N`` cycles per
  voxel wide up to Nyquist; :func:`fsc_resolution` reads the resolution where it falls below
  a threshold (0.143 between half maps or against a ground truth as in Eloy et al. 2023; 0.5 is the
  stricter criterion against a ground truth).
- :func:`conical_fsc` restricts the FSC to double cones around directions of a hemisphere
  (Eloy et al. 2023 sec. 4.2 and Fig. 4): it shows the anisotropy of the resolution, e.g. the
  axial (z) resolution gained by combining views.
- :func:`ssim` (Fortun et al. 2018 eq. 9, Wang et al. 2004) and :func:`psnr` compare a volume to a
  reference on a common intensity scale: reconstructions have an arbitrary scale and
  offset, so call :func:`normalize_for_comparison` first.

Register the volume onto the reference first (Eloy et al. 2023 sec. 4.2): these metrics assume the
two volumes are in the same frame. Frequencies are in cycles per voxel (the inverse of a
resolution in voxels); :func:`resolution_in_micrometres` converts for isotropic voxels.

- :func:`compare_volumes` is the one call that benchmarks and the compare protocol use:
  registration (:func:`spfluo.algorithms.registration.register_volumes`), intensity
  matching, then SSIM, PSNR, FSC (0.143 and 0.5) and conical FSC against the ground truth.
- :func:`pose_error_summary` summarises the angular errors of estimated particle poses
  after the best global rotation, modulo the symmetry
  (:func:`spfluo.algorithms.geometry.align_rotations`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spfluo.algorithms.backend import Backend, backend_of, get_backend, to_numpy
from spfluo.algorithms.fourier import shell_index
from spfluo.algorithms.geometry import (
    align_rotations,
    axis_and_in_plane_errors,
    geodesic_distance_sym,
    in_plane_resultant,
)
from spfluo.algorithms.registration import RegistrationResult, register_volumes

__all__ = [
    "FSCCurve",
    "ConicalFSC",
    "fsc",
    "fsc_resolution",
    "resolution_in_micrometres",
    "conical_fsc",
    "ssim",
    "psnr",
    "normalize_for_comparison",
    "PoseErrorSummary",
    "pose_error_summary",
    "VolumeComparison",
    "compare_volumes",
]


# ----------------------------------------------------------------------------- helpers


def _resolve_backend(backend, array) -> Backend:
    if backend is None:
        return backend_of(array)
    if isinstance(backend, Backend):
        return backend
    if isinstance(backend, str):
        return get_backend(backend)
    raise ValueError(f"backend must be None, a Backend or 'cpu'/'gpu', got {backend!r}")


def _check_pair(volume1, volume2, xp, names=("volume1", "volume2")):
    """Validate two real 3D volumes of the same shape; return them as float arrays."""
    out = []
    for name, vol in zip(names, (volume1, volume2)):
        arr = xp.asarray(vol)
        if arr.ndim != 3:
            raise ValueError(
                f"{name} must be a 3D array of shape (Z, Y, X), got shape {tuple(arr.shape)}"
            )
        if arr.size == 0:
            raise ValueError(
                f"{name} is empty (shape {tuple(arr.shape)}): give a non-empty (Z, Y, X) volume"
            )
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{name} must be a real-valued array, got dtype {arr.dtype}")
        if arr.dtype != np.float64:
            arr = arr.astype(np.float32)
        if not bool(xp.isfinite(arr).all()):
            raise ValueError(
                f"{name} contains NaN or infinite values: clean it (e.g. numpy.nan_to_num) first"
            )
        out.append(arr)
    if out[0].shape != out[1].shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(out[0].shape)} and "
            f"{tuple(out[1].shape)}: crop or pad one of them"
        )
    return out


def _check_fsc_pair(volume1, volume2, xp):
    """:func:`_check_pair`, and neither volume all zeros (its FSC would be undefined)."""
    v1, v2 = _check_pair(volume1, volume2, xp)
    for name, v in (("volume1", v1), ("volume2", v2)):
        if not bool(xp.any(v != 0)):
            raise ValueError(f"{name} is all zeros: the FSC is undefined")
    return v1, v2


def _check_threshold(threshold) -> float:
    if not isinstance(threshold, (int, float, np.integer, np.floating)) or not 0 < threshold < 1:
        raise ValueError(
            f"threshold must be a number in (0, 1) (e.g. 0.143 or 0.5), got {threshold!r}"
        )
    return float(threshold)


def _half_spectrum_weights(xp, shape):
    """Multiplicity of each rfft column in the full spectrum: 1 for kx = 0 and Nyquist, else 2."""
    nx = shape[2]
    w = np.full(nx // 2 + 1, 2.0)
    w[0] = 1.0
    if nx % 2 == 0:
        w[-1] = 1.0
    return xp.asarray(w)[None, None, :]


def _spectra_terms(bk: Backend, volume1, volume2):
    """Re(F1 F2*), |F1|^2, |F2|^2 and the weight of each half-spectrum voxel, weighted."""
    xp = bk.xp
    f1 = bk.rfftn(volume1)
    f2 = bk.rfftn(volume2)
    w = xp.broadcast_to(_half_spectrum_weights(xp, volume1.shape), f1.shape)
    cross = (f1.real * f2.real + f1.imag * f2.imag) * w
    p1 = (f1.real**2 + f1.imag**2) * w
    p2 = (f2.real**2 + f2.imag**2) * w
    return cross, p1, p2, w


def _n_shells(shape) -> tuple[int, int]:
    n = max(shape)
    return n, n // 2 + 1


def _first_crossing(values: np.ndarray, frequencies: np.ndarray, threshold: float) -> np.ndarray:
    """First frequency where ``values[..., s]`` falls below ``threshold`` (linear interpolation).

    The search starts at shell 1 (shell 0 is the mean); 0.5 (Nyquist) where the curve never
    falls below; 0 where even the zero frequency is below.
    """
    values = np.asarray(values, dtype=np.float64)
    below = values[..., 1:] < threshold
    has = below.any(axis=-1)
    first = np.argmax(below, axis=-1) + 1
    v1 = np.take_along_axis(values, first[..., None], axis=-1)[..., 0]
    v0 = np.take_along_axis(values, first[..., None] - 1, axis=-1)[..., 0]
    f1 = frequencies[first]
    f0 = frequencies[first - 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(v0 > v1, (v0 - threshold) / (v0 - v1), 0.0)
    frac = np.clip(frac, 0.0, 1.0)
    res = f0 + frac * (f1 - f0)
    return np.where(has, res, 0.5)


# ----------------------------------------------------------------------------- FSC


@dataclass(frozen=True, eq=False)
class FSCCurve:
    """A Fourier shell correlation curve.

    Attributes
    ----------
    frequencies : ndarray, shape (S,), float64
        Shell centres ``s / N`` in cycles per voxel, ``N = max(shape)``, from 0 to
        Nyquist (0.5 for even ``N``).
    values : ndarray, shape (S,), float64
        FSC per shell, in ``[-1, 1]`` (0 for a shell where one volume has no energy).
    counts : ndarray, shape (S,), int64
        Number of Fourier voxels (full spectrum) in each shell.
    """

    frequencies: np.ndarray
    values: np.ndarray
    counts: np.ndarray


def fsc(volume1, volume2, *, backend=None) -> FSCCurve:
    """Fourier shell correlation between two volumes.

    Parameters
    ----------
    volume1, volume2 : ndarray, shape (Z, Y, X)
        Real volumes in the same frame (two half maps, or a reconstruction registered on
        its ground truth), NumPy or CuPy.
    backend : Backend or {"cpu", "gpu"}, optional
        Where to compute (default: where ``volume1`` lives).

    Returns
    -------
    FSCCurve
        ``FSC(s) = sum Re(F1 conj F2) / sqrt(sum |F1|^2 sum |F2|^2)`` over the Fourier voxels
        of shell ``s`` (``round(|k| N) == s``, ``|k|`` in cycles per voxel; see
        :func:`spfluo.algorithms.fourier.shell_index`), ``s = 0 .. N//2``.

    Raises
    ------
    ValueError
        Shapes differ, a volume is not 3D, empty, holds NaN/inf, or is all zeros.

    Notes
    -----
    Eloy et al. 2023 eq. 27. The real FFT holds half of the spectrum; each of its voxels is counted
    with its Hermitian mirror (weight 2, except the ``kx = 0`` and Nyquist planes), so the
    sums equal the full-spectrum ones. Sums are accumulated in float64.
    """
    bk = _resolve_backend(backend, volume1)
    xp = bk.xp
    v1, v2 = _check_fsc_pair(volume1, volume2, xp)
    shape = tuple(v1.shape)
    n, n_shells = _n_shells(shape)
    cross, p1, p2, w = _spectra_terms(bk, v1, v2)
    idx = shell_index(shape, rfft=True, backend=bk)
    keep = idx < n_shells
    idx = idx[keep]

    def shell_sum(q):
        return to_numpy(xp.bincount(idx, weights=q[keep].astype(xp.float64), minlength=n_shells))

    num, d1, d2, cnt = (shell_sum(q) for q in (cross, p1, p2, w))
    den = np.sqrt(d1 * d2)
    values = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return FSCCurve(
        frequencies=np.arange(n_shells, dtype=np.float64) / n,
        values=np.clip(values, -1.0, 1.0),
        counts=np.rint(cnt).astype(np.int64),
    )


def fsc_resolution(curve: FSCCurve, *, threshold: float = 0.143) -> float:
    """Resolution read on an FSC curve: where it first falls below ``threshold``.

    Parameters
    ----------
    curve : FSCCurve
        From :func:`fsc`.
    threshold : float, default 0.143
        0.143 (half maps, or Eloy et al. 2023 against a ground truth) or 0.5.

    Returns
    -------
    float
        Frequency in cycles per voxel (higher is better): the first shell ``s >= 1`` whose
        value is below ``threshold``, linearly interpolated with the previous shell; 0.5
        (Nyquist) when the curve never falls below; 0 when shell 0 is already below.
    """
    if not isinstance(curve, FSCCurve):
        raise ValueError(f"curve must be an FSCCurve (from fsc), got {type(curve).__name__}")
    threshold = _check_threshold(threshold)
    freqs = np.asarray(curve.frequencies, dtype=np.float64)
    vals = np.asarray(curve.values, dtype=np.float64)
    if freqs.ndim != 1 or freqs.shape != vals.shape or freqs.size < 2:
        raise ValueError(
            f"curve must hold matching 1D frequencies and values with at least 2 shells, got "
            f"shapes {freqs.shape} and {vals.shape}"
        )
    if not np.all(np.isfinite(vals)):
        raise ValueError("curve.values contains NaN or infinite values")
    return float(_first_crossing(vals, freqs, threshold))


def resolution_in_micrometres(frequency: float, voxel_size) -> float:
    """Convert a resolution in cycles per voxel to a length in micrometres.

    Parameters
    ----------
    frequency : float
        Resolution in cycles per voxel, ``0 < frequency`` (e.g. from :func:`fsc_resolution`).
    voxel_size : float or tuple of 3 float
        Voxel size in micrometres; a ``(z, y, x)`` tuple must be isotropic.

    Returns
    -------
    float
        ``voxel_size / frequency``, micrometres.
    """
    if (
        not isinstance(frequency, (int, float, np.integer, np.floating))
        or not math.isfinite(frequency)
        or frequency <= 0
    ):
        raise ValueError(f"frequency must be > 0 cycles per voxel, got {frequency!r}")
    vs = np.atleast_1d(np.asarray(voxel_size, dtype=np.float64))
    if vs.ndim != 1 or vs.size not in (1, 3) or not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise ValueError(
            "voxel_size must be a positive number or a (z, y, x) tuple in micrometres, "
            f"got {voxel_size!r}"
        )
    if not np.allclose(vs, vs[0], rtol=1e-6):
        raise ValueError(
            f"voxel_size must be isotropic to convert an FSC resolution, got {tuple(vs)}: resample "
            "the volumes to isotropic voxels first"
        )
    return float(vs[0] / frequency)


# ----------------------------------------------------------------------------- conical FSC


@dataclass(frozen=True, eq=False)
class ConicalFSC:
    """FSC curves restricted to double cones around directions of a hemisphere.

    Attributes
    ----------
    phi1 : ndarray, shape (n_phi1,), float64
        Azimuths in radians, ``2 pi i / n_phi1`` (from +x towards +y).
    phi2 : ndarray, shape (n_phi2,), float64
        Inclinations from +z in radians, from 0 (the optical axis) to ``pi / 2`` (the
        (x, y) plane). Direction ``(phi1, phi2)`` is ``(sin phi2 cos phi1, sin phi2 sin
        phi1, cos phi2)`` in ``(x, y, z)`` (``docs/conventions.md``), and its opposite gives the
        same values (double cones; real volumes have Hermitian spectra).
    directions : ndarray, shape (n_phi1, n_phi2, 3), float64
        The unit directions in ``(z, y, x)`` order.
    frequencies : ndarray, shape (S,), float64
        Shell centres in cycles per voxel (as :class:`FSCCurve`).
    values : ndarray, shape (n_phi1, n_phi2, S), float64
        FSC in each cone and shell; a shell with fewer than ``min_count`` Fourier voxels
        in the cone (near the origin) repeats the previous shell's value.
    counts : ndarray, shape (n_phi1, n_phi2, S), int64
        Fourier voxels (full spectrum) of each shell inside each cone.
    resolution : ndarray, shape (n_phi1, n_phi2), float64
        Resolution per direction in cycles per voxel (:func:`fsc_resolution` rule).
    cone_half_angle : float
        Radians.
    threshold : float
        The FSC threshold used for ``resolution``.
    """

    phi1: np.ndarray
    phi2: np.ndarray
    directions: np.ndarray
    frequencies: np.ndarray
    values: np.ndarray
    counts: np.ndarray
    resolution: np.ndarray
    cone_half_angle: float
    threshold: float


def conical_fsc(
    volume1,
    volume2,
    *,
    n_directions: tuple[int, int] = (24, 7),
    cone_half_angle: float = math.radians(20.0),
    threshold: float = 0.143,
    min_count: int = 10,
    backend=None,
) -> ConicalFSC:
    """Conical FSC: the FSC in double cones around a grid of directions.

    Parameters
    ----------
    volume1, volume2 : ndarray, shape (Z, Y, X)
        Real volumes in the same frame, NumPy or CuPy. Voxels are assumed isotropic.
    n_directions : tuple of 2 int, default (24, 7)
        ``(n_phi1, n_phi2)``: azimuths ``2 pi i / n_phi1`` and inclinations
        ``linspace(0, pi / 2, n_phi2)`` (a hemisphere: opposite directions are equal).
    cone_half_angle : float, default radians(20)
        Half opening angle of each cone, radians, in ``(0, pi / 2]``.
    threshold : float, default 0.143
        FSC threshold for the resolution map.
    min_count : int, default 10
        A shell holding fewer Fourier voxels than this inside a cone (near the origin,
        where a cone meets a handful of voxels and the correlation is pure chance) is not
        measured: it repeats the previous shell's value.
    backend : Backend or {"cpu", "gpu"}, optional

    Returns
    -------
    ConicalFSC
        Curves, counts and the ``(n_phi1, n_phi2)`` resolution map (cycles per voxel).

    Notes
    -----
    Eloy et al. 2023 sec. 4.2, Fig. 4 (after Diebolder et al. 2015): for direction ``d`` the sums of
    eq. 27 run over the Fourier voxels ``k`` of each shell with ``|k . d| >= |k|
    cos(cone_half_angle)``; the zero frequency belongs to every cone. The directions are
    processed in batches (memory bounded), and the per-shell sums of all cones of a
    batch come from one cumulative sum over the voxels sorted by shell.
    """
    bk = _resolve_backend(backend, volume1)
    xp = bk.xp
    v1, v2 = _check_fsc_pair(volume1, volume2, xp)
    try:
        n_phi1, n_phi2 = (int(k) for k in n_directions)
        ok = len(tuple(n_directions)) == 2 and all(int(k) == k for k in n_directions)
    except (TypeError, ValueError):
        ok = False
    if not ok or n_phi1 < 1 or n_phi2 < 1:
        raise ValueError(
            f"n_directions must be two positive ints (n_phi1, n_phi2), got {n_directions!r}"
        )
    if (
        not isinstance(cone_half_angle, (int, float, np.integer, np.floating))
        or not 0 < cone_half_angle <= math.pi / 2
    ):
        raise ValueError(f"cone_half_angle must be in (0, pi/2] radians, got {cone_half_angle!r}")
    threshold = _check_threshold(threshold)
    if not isinstance(min_count, (int, np.integer)) or min_count < 1:
        raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")

    shape = tuple(v1.shape)
    n, n_shells = _n_shells(shape)
    cross, p1, p2, w = _spectra_terms(bk, v1, v2)
    idx = shell_index(shape, rfft=True, backend=bk)
    # frequency vectors (z, y, x) in cycles per voxel of the half spectrum
    kz = xp.asarray(np.fft.fftfreq(shape[0]))[:, None, None]
    ky = xp.asarray(np.fft.fftfreq(shape[1]))[None, :, None]
    kx = xp.asarray(np.fft.rfftfreq(shape[2]))[None, None, :]
    kvec = xp.stack([xp.broadcast_to(k, idx.shape) for k in (kz, ky, kx)], axis=-1)

    # shell 0 (the mean) goes to every cone; the other voxels within Nyquist, sorted by shell
    dc = [float(to_numpy(q[0, 0, 0])) for q in (cross, p1, p2, w)]
    keep = (idx >= 1) & (idx < n_shells)
    shells = idx[keep]
    order = xp.argsort(shells, kind="stable")
    shells = shells[order]
    unit = kvec[keep][order]
    unit = unit / xp.linalg.norm(unit, axis=1, keepdims=True)
    terms = xp.stack([q[keep][order].astype(xp.float64) for q in (cross, p1, p2, w)])  # (4, V)
    # the voxels of shell s are bounds[s]:bounds[s + 1]
    bounds = xp.searchsorted(shells, xp.arange(n_shells + 1))

    phi1 = 2.0 * np.pi * np.arange(n_phi1) / n_phi1
    phi2 = np.linspace(0.0, np.pi / 2, n_phi2)
    p1g, p2g = np.meshgrid(phi1, phi2, indexing="ij")
    directions = np.stack(
        [np.cos(p2g), np.sin(p2g) * np.sin(p1g), np.sin(p2g) * np.cos(p1g)], axis=-1
    )
    dirs = xp.asarray(directions.reshape(-1, 3))
    n_dir = dirs.shape[0]
    cos_limit = math.cos(cone_half_angle)

    n_vox = max(int(unit.shape[0]), 1)
    batch = max(1, min(n_dir, (1 << 20) // n_vox))
    sums = np.empty((4, n_dir, n_shells))
    for start in range(0, n_dir, batch):
        d = dirs[start : start + batch]  # (m, 3)
        inside = xp.abs(d @ unit.T) >= cos_limit  # (m, V)
        masked = inside[None, :, :] * terms[:, None, :]  # (4, m, V)
        csum = xp.concatenate(
            [xp.zeros(masked.shape[:2] + (1,)), xp.cumsum(masked, axis=-1)], axis=-1
        )
        sums[:, start : start + batch] = to_numpy(csum[..., bounds[1:]] - csum[..., bounds[:-1]])
    for q in range(4):
        sums[q, :, 0] += dc[q]
    num, d1, d2, cnt = sums
    den = np.sqrt(d1 * d2)
    values = np.clip(np.divide(num, den, out=np.zeros_like(num), where=den > 0), -1.0, 1.0)
    counts = np.rint(cnt).astype(np.int64)
    # forward-fill the shells a cone barely reaches (shell 0 is always kept)
    measured = counts >= min_count
    measured[:, 0] = True
    last = np.maximum.accumulate(np.where(measured, np.arange(n_shells), 0), axis=-1)
    values = np.take_along_axis(values, last, axis=-1)
    frequencies = np.arange(n_shells, dtype=np.float64) / n
    resolution = _first_crossing(values, frequencies, threshold)
    return ConicalFSC(
        phi1=phi1,
        phi2=phi2,
        directions=directions,
        frequencies=frequencies,
        values=values.reshape(n_phi1, n_phi2, n_shells),
        counts=counts.reshape(n_phi1, n_phi2, n_shells),
        resolution=resolution.reshape(n_phi1, n_phi2),
        cone_half_angle=float(cone_half_angle),
        threshold=threshold,
    )


# ----------------------------------------------------------------------------- SSIM, PSNR


def _data_range(reference, data_range, xp) -> float:
    if data_range is None:
        value = float(xp.max(reference) - xp.min(reference))
        if not value > 0:
            raise ValueError(
                "the reference is constant, so its range is 0: pass data_range explicitly "
                "(e.g. data_range=1.0 for volumes scaled to [0, 1])"
            )
        return value
    if (
        not isinstance(data_range, (int, float, np.integer, np.floating))
        or not math.isfinite(data_range)
        or data_range <= 0
    ):
        raise ValueError(f"data_range must be a positive number, got {data_range!r}")
    return float(data_range)


def ssim(
    volume1,
    volume2,
    *,
    data_range: float | None = None,
    window: str = "gaussian",
    sigma: float = 1.5,
    backend=None,
) -> float:
    """Structural similarity index between a volume and a reference volume.

    Parameters
    ----------
    volume1 : ndarray, shape (Z, Y, X)
        The volume to assess (a reconstruction, registered and intensity-matched, see
        :func:`normalize_for_comparison`).
    volume2 : ndarray, shape (Z, Y, X)
        The reference (ground truth).
    data_range : float, optional
        Dynamic range ``L`` of the intensities; default ``max - min`` of ``volume2``.
    window : {"gaussian", "global"}, default "gaussian"
        ``"gaussian"``: local statistics under a Gaussian window of standard deviation
        ``sigma`` voxels (truncated at 3.5 sigma, reflected at the borders), the SSIM map
        averaged away from the borders (a strip of ``int(3.5 sigma + 0.5)`` voxels), as
        Wang et al. 2004 and ``skimage.metrics.structural_similarity(gaussian_weights=True,
        use_sample_covariance=False)``. ``"global"``: Fortun et al. 2018 eq. 9 with the means and
        variances of the whole volumes.
    sigma : float, default 1.5
        Gaussian window width, voxels.
    backend : Backend or {"cpu", "gpu"}, optional

    Returns
    -------
    float
        SSIM in ``[-1, 1]``; 1 for identical volumes.

    Notes
    -----
    ``SSIM = (2 mu1 mu2 + C1)(2 s12 + C2) / ((mu1^2 + mu2^2 + C1)(s1^2 + s2^2 + C2))`` with
    ``C1 = (K1 L)^2``, ``C2 = (K2 L)^2``, ``K1 = 0.01``, ``K2 = 0.03`` (Fortun et al. 2018 eq. 9; its
    "C1 = 0.01, C2 = 0.03" are Wang et al.'s ``K1, K2``). Statistics are computed in
    float64 (population covariances).
    """
    bk = _resolve_backend(backend, volume1)
    xp = bk.xp
    v1, v2 = _check_pair(volume1, volume2, xp)
    if window not in ("gaussian", "global"):
        raise ValueError(f"window must be 'gaussian' or 'global', got {window!r}")
    if (
        not isinstance(sigma, (int, float, np.integer, np.floating))
        or not math.isfinite(sigma)
        or sigma <= 0
    ):
        raise ValueError(f"sigma must be a positive number of voxels, got {sigma!r}")
    big_l = _data_range(v2, data_range, xp)
    c1 = (0.01 * big_l) ** 2
    c2 = (0.03 * big_l) ** 2
    a = v1.astype(xp.float64)
    b = v2.astype(xp.float64)
    if window == "global":
        mu1, mu2 = a.mean(), b.mean()
        var1, var2 = ((a - mu1) ** 2).mean(), ((b - mu2) ** 2).mean()
        cov = ((a - mu1) * (b - mu2)).mean()
        value = ((2 * mu1 * mu2 + c1) * (2 * cov + c2)) / (
            (mu1**2 + mu2**2 + c1) * (var1 + var2 + c2)
        )
        return float(value)

    radius = int(3.5 * sigma + 0.5)
    win = 2 * radius + 1
    if min(a.shape) < win:
        raise ValueError(
            f"the volumes (shape {tuple(a.shape)}) are smaller than the SSIM window ({win} voxels "
            f"for sigma={sigma}): use a smaller sigma or window='global'"
        )

    def smooth(u):
        return bk.ndimage.gaussian_filter(u, sigma=sigma, truncate=3.5, mode="reflect")

    mu1, mu2 = smooth(a), smooth(b)
    var1 = smooth(a * a) - mu1 * mu1
    var2 = smooth(b * b) - mu2 * mu2
    cov = smooth(a * b) - mu1 * mu2
    smap = ((2 * mu1 * mu2 + c1) * (2 * cov + c2)) / ((mu1**2 + mu2**2 + c1) * (var1 + var2 + c2))
    inner = smap[radius:-radius, radius:-radius, radius:-radius] if radius > 0 else smap
    return float(inner.mean())


def psnr(volume, reference, *, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio of a volume against a reference.

    Parameters
    ----------
    volume : ndarray, shape (Z, Y, X)
        The volume to assess (intensity-matched, see :func:`normalize_for_comparison`).
    reference : ndarray, shape (Z, Y, X)
        The ground truth.
    data_range : float, optional
        Peak value range ``L``; default ``max - min`` of ``reference``.

    Returns
    -------
    float
        ``10 log10(L^2 / MSE)`` in dB (``inf`` for identical volumes).
    """
    xp = backend_of(volume).xp
    v, r = _check_pair(volume, reference, xp, names=("volume", "reference"))
    big_l = _data_range(r, data_range, xp)
    mse = float(((v.astype(xp.float64) - r.astype(xp.float64)) ** 2).mean())
    if mse == 0:
        return math.inf
    return float(10.0 * math.log10(big_l**2 / mse))


def normalize_for_comparison(volume, reference) -> np.ndarray:
    """Match the intensities of a volume to a reference by an affine map.

    Parameters
    ----------
    volume : ndarray, shape (Z, Y, X)
        A reconstruction (arbitrary intensity scale and offset).
    reference : ndarray, shape (Z, Y, X)
        The ground truth it is compared with.

    Returns
    -------
    ndarray, shape (Z, Y, X), float32
        ``a volume + b`` with ``(a, b)`` the least-squares fit of ``reference`` by
        ``a volume + b``, the scale constrained to ``a >= 0`` (a negative scale would invert
        the contrast and flatter a wrong reconstruction; then ``a = 0`` and ``b`` is the
        mean of the reference). A constant volume gives the constant mean of the reference.

    Notes
    -----
    Reconstructions are defined up to the scale of the data and the regularisation, so
    SSIM and PSNR against a ground truth are computed after this fit (it maximises the
    PSNR over affine intensity maps with ``a >= 0``).
    """
    xp = backend_of(volume).xp
    v, r = _check_pair(volume, reference, xp, names=("volume", "reference"))
    vd = v.astype(xp.float64)
    rd = r.astype(xp.float64)
    mv, mr = vd.mean(), rd.mean()
    var = float(((vd - mv) ** 2).mean())
    cov = float(((vd - mv) * (rd - mr)).mean())
    scale = max(cov / var, 0.0) if var > 0 else 0.0
    return (scale * (vd - mv) + mr).astype(np.float32)


# ----------------------------------------------------------------------------- pose errors


@dataclass(frozen=True, eq=False)
class PoseErrorSummary:
    """Angular errors of estimated particle rotations against the true ones.

    Attributes
    ----------
    errors_deg : ndarray, shape (N,), float64
        Per-particle geodesic angle between ``R_est @ alignment`` and ``R_true``, modulo
        the symmetry, degrees.
    median_deg, mean_deg, rms_deg, max_deg : float
        Median, mean, root mean square and largest error, degrees.
    fraction_below_5deg, fraction_below_10deg : float
        Fraction of particles whose error is below 5 (10) degrees, in ``[0, 1]``.
    alignment : ndarray, shape (3, 3), float64
        The global rotation ``G`` (zyx frame) with ``R_true ~ R_est @ G``
        (:func:`spfluo.algorithms.geometry.align_rotations`); for a reconstruction
        registered onto the truth by ``(R, t)`` (:func:`compare_volumes`), ``G`` should
        be close to ``R^T`` modulo the symmetry.
    symmetry : int
        Order n of the cyclic symmetry the errors are taken modulo.
    axis_errors_deg : ndarray, shape (N,), float64
        Angle between each estimated and true symmetry axis (``R e_z``), degrees.
    in_plane_errors_deg : ndarray, shape (N,), float64
        Signed error of the rotation about the axis, degrees, in ``[-180/n, 180/n)``
        (:func:`spfluo.algorithms.geometry.axis_and_in_plane_errors`).
    axis_median_deg, in_plane_median_deg : float
        Median axis error and median absolute in-plane error, degrees.  For Cn particles
        whose rotation about the axis is not recovered the in-plane median is about
        ``90 / n`` degrees (chance).
    in_plane_resultant : float
        n-fold mean resultant length ``|mean exp(i n psi)|`` of the in-plane errors, in
        ``[0, 1]``: about 1 when the rotation about the axis is recovered, about
        ``1 / sqrt(N)`` at chance.
    """

    errors_deg: np.ndarray
    median_deg: float
    mean_deg: float
    rms_deg: float
    max_deg: float
    fraction_below_5deg: float
    fraction_below_10deg: float
    alignment: np.ndarray
    symmetry: int
    axis_errors_deg: np.ndarray
    in_plane_errors_deg: np.ndarray
    axis_median_deg: float
    in_plane_median_deg: float
    in_plane_resultant: float


def pose_error_summary(R_est, R_true, *, symmetry: int = 1) -> PoseErrorSummary:
    """Angular pose errors after the best global rotation, modulo Cn (Eloy et al. 2023 sec. 4.2).

    Parameters
    ----------
    R_est : array_like, shape (N, 3, 3)
        Estimated zyx-frame rotations (the reconstruction's frame is arbitrary).
    R_true : array_like, shape (N, 3, 3)
        True zyx-frame rotations of the same particles, same order.
    symmetry : int, default 1
        Order n of the cyclic symmetry about z of the reference.

    Returns
    -------
    PoseErrorSummary
        The per-particle errors (degrees), their statistics and the alignment ``G``.

    Notes
    -----
    ``G = align_rotations(R_est, R_true, symmetry=n)`` (a geodesic L1 median, robust to
    a few wrong poses), then ``errors = geodesic_distance_sym(R_est G, R_true, n)``:
    the same numbers as :func:`spfluo.algorithms.geometry.pose_errors`.  Translations
    are not assessed here (they depend on the registration of the volumes).
    """
    G = align_rotations(R_est, R_true, symmetry=symmetry)
    a = np.asarray(R_est, dtype=np.float64)
    errors = np.degrees(geodesic_distance_sym(np.matmul(a, G), R_true, symmetry=symmetry))
    axis, in_plane = axis_and_in_plane_errors(R_est, R_true, symmetry=symmetry)
    return PoseErrorSummary(
        errors_deg=errors,
        median_deg=float(np.median(errors)),
        mean_deg=float(np.mean(errors)),
        rms_deg=float(np.sqrt(np.mean(errors**2))),
        max_deg=float(np.max(errors)),
        fraction_below_5deg=float(np.mean(errors < 5.0)),
        fraction_below_10deg=float(np.mean(errors < 10.0)),
        alignment=G,
        symmetry=int(symmetry),
        axis_errors_deg=np.degrees(axis),
        in_plane_errors_deg=np.degrees(in_plane),
        axis_median_deg=float(np.degrees(np.median(axis))),
        in_plane_median_deg=float(np.degrees(np.median(np.abs(in_plane)))),
        in_plane_resultant=in_plane_resultant(in_plane, symmetry),
    )


# ----------------------------------------------------------------------------- comparison


@dataclass(frozen=True, eq=False)
class VolumeComparison:
    """A volume compared with a reference (ground truth) by :func:`compare_volumes`.

    Attributes
    ----------
    ssim : float
        SSIM (Gaussian window, sigma 1.5 voxels; :func:`ssim`) of the compared volume
        against the reference, ``data_range`` that of the reference.
    psnr_db : float
        PSNR in dB (:func:`psnr`), same data range.
    fsc : FSCCurve
        FSC curve between the compared volume and the reference.
    resolution_per_voxel : float
        FSC resolution at the 0.143 threshold, cycles per voxel (Eloy et al. 2023).
    resolution_05_per_voxel : float
        FSC resolution at the 0.5 threshold, cycles per voxel.
    resolution_um : float
        ``resolution_per_voxel`` as a length in micrometres (``inf`` when 0).
    resolution_05_um : float
        ``resolution_05_per_voxel`` in micrometres (``inf`` when 0).
    conical_fsc : ConicalFSC
        Conical FSC (0.143) between the compared volume and the reference.
    registration : RegistrationResult or None
        The transform that registered the volume (``aligned = T_t(R volume)``), None when
        ``register=False``.
    compared : ndarray, shape (Z, Y, X), float32
        The volume that was measured: registered, then intensity-matched to the
        reference (:func:`normalize_for_comparison`).
    """

    ssim: float
    psnr_db: float
    fsc: FSCCurve
    resolution_per_voxel: float
    resolution_05_per_voxel: float
    resolution_um: float
    resolution_05_um: float
    conical_fsc: ConicalFSC
    registration: RegistrationResult | None
    compared: np.ndarray


def compare_volumes(
    volume,
    reference,
    *,
    voxel_size,
    symmetry: int = 1,
    register: bool = True,
    coarse_step_deg: float = 20.0,
    cone_half_angle: float = math.radians(20.0),
    backend=None,
) -> VolumeComparison:
    """Register a volume onto a reference and measure SSIM, PSNR, FSC and conical FSC.

    Parameters
    ----------
    volume : ndarray, shape (Z, Y, X)
        The volume to assess (a reconstruction, in an arbitrary frame and intensity scale).
    reference : ndarray, shape (Z, Y, X)
        The ground truth.
    voxel_size : float or tuple of 3 float
        Isotropic ``(z, y, x)`` voxel size in micrometres (for the resolutions in µm).
    symmetry : int, default 1
        Order n of the cyclic symmetry about z of the reference (registration modulo Cn).
    register : bool, default True
        Register the volume onto the reference first
        (:func:`~spfluo.algorithms.registration.register_volumes`); False compares the
        volumes as they are.
    coarse_step_deg : float, default 20
        Global search step of the registration, degrees.
    cone_half_angle : float, default radians(20)
        Half-angle of the cones of the conical FSC, radians.
    backend : Backend or {"cpu", "gpu"}, optional

    Returns
    -------
    VolumeComparison

    Notes
    -----
    The protocol, in order (Eloy et al. 2023 sec. 4.2):

    1. registration of ``volume`` onto ``reference`` (rotation + translation, symmetry
       aware, NCC; the registered volume is the cubic-spline resampling, at the
       volume's background level where it comes from outside the box);
    2. intensity matching: :func:`normalize_for_comparison` fits ``a v + b`` (``a >= 0``)
       to the reference by least squares, so the arbitrary scale and offset of a
       reconstruction do not count;
    3. SSIM and PSNR of the matched volume against the reference with the reference's
       range as ``data_range``; FSC and conical FSC between them (invariant to the
       scale; the offset only changes the zero frequency).

    No mask: every voxel of the box counts (a mask would raise the FSC by removing the
    background noise of reconstructions).  Several channels: register them jointly with
    ``register_volumes`` on ``(C, D, D, D)`` arrays, then call this function per channel
    on ``registration.aligned[c]`` with ``register=False``.
    """
    xp = backend_of(volume).xp if backend is None else _resolve_backend(backend, volume).xp
    v, r = _check_pair(volume, reference, xp, names=("volume", "reference"))
    for name, a in (("volume", v), ("reference", r)):
        if not float(xp.max(a)) > float(xp.min(a)):
            raise ValueError(f"{name} is constant: there is nothing to compare")
    if not isinstance(register, (bool, np.bool_)):
        raise ValueError(f"register must be True or False, got {register!r}")
    vs = np.atleast_1d(np.asarray(voxel_size, dtype=np.float64)) if np.ndim(voxel_size) <= 1 \
        else None
    if vs is None or vs.size not in (1, 3) or not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise ValueError(
            f"voxel_size must be a positive number or a (z, y, x) tuple in micrometres, "
            f"got {voxel_size!r}"
        )
    if not np.allclose(vs, vs[0], rtol=1e-6):
        raise ValueError(
            f"voxel_size must be isotropic to compare volumes, got {tuple(vs)}: resample the "
            "volumes to isotropic voxels first"
        )
    registration = None
    aligned = v
    if register:
        registration = register_volumes(
            v, r, symmetry=symmetry, coarse_step_deg=coarse_step_deg, backend=backend
        )
        aligned = xp.asarray(registration.aligned)
    compared = normalize_for_comparison(aligned, r)
    curve = fsc(compared, r, backend=backend)
    res143 = fsc_resolution(curve, threshold=0.143)
    res05 = fsc_resolution(curve, threshold=0.5)

    def to_um(freq: float) -> float:
        return math.inf if freq <= 0 else resolution_in_micrometres(freq, vs)

    return VolumeComparison(
        ssim=ssim(compared, r, backend=backend),
        psnr_db=psnr(compared, r),
        fsc=curve,
        resolution_per_voxel=res143,
        resolution_05_per_voxel=res05,
        resolution_um=to_um(res143),
        resolution_05_um=to_um(res05),
        conical_fsc=conical_fsc(compared, r, cone_half_angle=cone_half_angle, backend=backend),
        registration=registration,
        compared=to_numpy(compared).astype(np.float32),
    )
