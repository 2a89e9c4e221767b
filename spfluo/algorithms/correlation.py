"""Translation estimation by phase correlation, with sub-voxel refinement, batched.

For a target ``g ~ T_t r`` (``T_t r(x) = r(x - t)``, periodic), the cross-power
spectrum ``G conj(R)`` is ``|R|^2 exp(-2 i pi k . t)``; normalised to unit
modulus its inverse FFT is a sharp peak at ``t`` (Eloy et al. 2023 sec. 3, eq. 24-25).
The normalisation is regularised (``P / (|P| + eps max|P|)``, see
:func:`phase_correlation`) because blurred fluorescence volumes have no signal
at high frequencies.  The integer peak of that inverse FFT is refined by evaluating the same
correlation surface on a grid ``1 / upsample_factor`` voxel fine, in a window
of +-0.8 voxel around the peak, with a matrix-multiply DFT (Guizar-Sicairos et
al., Opt. Lett. 2008), and finally by a 3-point parabolic fit per axis on that
fine grid.  Everything is vectorised over the batch (many references against
one target: the pose-search case).

The returned score is the normalised cross-correlation (Pearson coefficient,
means removed, periodic boundary) between ``T_t r`` and ``g`` at the found
shift: 1 for a perfect match, comparable across references.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from spfluo.algorithms.backend import AXES3, resolve_backend
from spfluo.algorithms.fourier import _check_shape3, _check_volume

__all__ = ["ShiftResult", "phase_correlation", "phase_correlation_ft"]

# half-width, in voxels, of the window refined around the integer peak
_WINDOW = 0.8


@dataclass(frozen=True)
class ShiftResult:
    """Result of :func:`phase_correlation`.

    Attributes
    ----------
    shifts : ndarray, float32, shape (..., 3)
        Translations ``t`` in voxels ``(z, y, x)`` such that
        ``target ~ T_t(reference)``, ``T_t r(x) = r(x - t)``; shifts are
        periodic, each component is given in about ``[-n/2, n/2]``.
    scores : ndarray, float32, shape (...)
        Normalised cross-correlation between ``T_t(reference)`` and
        ``target`` (in ``[-1, 1]``, 1 = identical up to an affine change of
        intensity).
    """

    shifts: Any
    scores: Any


def _signed(xp, index, n):
    """Wrap FFT indices to signed shifts (fftfreq convention: n//2 -> -n/2 for even n)."""
    return xp.where(index >= (n + 1) // 2, index - n, index)


def _validate_common(upsample_factor, max_shift, normalization, regularization):
    if not isinstance(upsample_factor, (int, np.integer)) or upsample_factor < 1:
        raise ValueError(
            f"upsample_factor must be an integer >= 1 (1 = parabolic fit only), "
            f"got {upsample_factor!r}"
        )
    if max_shift is not None:
        if not np.isscalar(max_shift) or not np.isfinite(max_shift) or max_shift < 0:
            raise ValueError(
                f"max_shift must be None or a finite number of voxels >= 0, got {max_shift!r}"
            )
    if not np.isscalar(regularization) or not np.isfinite(regularization) or regularization < 0:
        raise ValueError(f"regularization must be a finite number >= 0, got {regularization!r}")
    if normalization not in ("phase", None):
        raise ValueError(
            f"normalization must be 'phase' (phase correlation) or None (plain "
            f"cross-correlation), got {normalization!r}"
        )


def phase_correlation(
    reference: Any,
    target: Any,
    *,
    upsample_factor: int = 10,
    max_shift: float | None = None,
    normalization: str | None = "phase",
    regularization: float = 1e-2,
    backend: Any = None,
) -> ShiftResult:
    """Estimate the translation from ``reference`` to ``target`` by phase correlation.

    Parameters
    ----------
    reference : ndarray, shape (..., Z, Y, X)
        Real reference volumes (e.g. a model rotated by many candidate
        rotations).
    target : ndarray, shape (..., Z, Y, X)
        Real target volumes; the leading axes broadcast with those of
        ``reference`` (one target against many references, or pairwise).
    upsample_factor : int, optional
        Sub-voxel refinement: the correlation is evaluated on a grid
        ``1/upsample_factor`` voxel fine around the integer peak, then a
        parabolic fit is made on that grid (default 10).  1: parabolic fit on
        the integer grid only (cheapest, less accurate).
    max_shift : float, optional
        Only shifts with Euclidean norm ``|t| <= max_shift`` voxels are
        searched (default: all).
    normalization : {"phase", None}, optional
        "phase": normalised cross-power spectrum ``P / (|P| + eps max|P|)``
        (phase correlation, a sharp peak); None: plain cross-correlation.
    regularization : float, optional
        ``eps`` above (default 1e-2); 0 is the textbook phase correlation,
        which weights every frequency equally and so breaks down on noisy,
        smooth (PSF-blurred) volumes whose high frequencies are pure noise.
        Measured on a smooth 32^3 phantom (Gaussian blobs, sigma 1.5-3
        voxels), 20 random shifts in [-4, 4] voxels (cubic-spline shifted),
        Gaussian noise of standard deviation 0.1 / 0.3 / 0.6 of the maximum:
        mean error 0.29 / 0.85 / 5.0 voxels with ``eps = 1e-6``,
        0.05 / 0.15 / 0.35 with ``eps = 1e-2``, 0.04 / 0.11 / 0.24 with
        ``normalization=None``; <= 0.007 voxel without noise in all cases
        (upsample_factor 10).
    backend : Backend or {"cpu", "gpu"}, optional

    Returns
    -------
    ShiftResult
        ``shifts`` (..., 3) float32 in voxels with ``target ~ T_t(reference)``,
        ``scores`` (...) float32 normalised cross-correlation at that shift.
    """
    bk = resolve_backend(backend, reference, target)
    xp = bk.xp
    reference = xp.asarray(reference)
    target = xp.asarray(target)
    _check_volume(xp, reference, "reference")
    _check_volume(xp, target, "target")
    if xp.iscomplexobj(reference) or xp.iscomplexobj(target):
        raise ValueError(
            "reference and target must be real volumes: use phase_correlation_ft for spectra"
        )
    if tuple(reference.shape[-3:]) != tuple(target.shape[-3:]):
        raise ValueError(
            f"reference and target must share their last three axes (Z, Y, X), got "
            f"{tuple(reference.shape)} and {tuple(target.shape)}"
        )
    _validate_common(upsample_factor, max_shift, normalization, regularization)
    shape = tuple(int(s) for s in reference.shape[-3:])
    ref_ft = bk.rfftn(reference.astype(xp.float32, copy=False), axes=AXES3)
    tgt_ft = bk.rfftn(target.astype(xp.float32, copy=False), axes=AXES3)
    return phase_correlation_ft(
        ref_ft, tgt_ft, shape=shape, upsample_factor=upsample_factor,
        max_shift=max_shift, normalization=normalization, regularization=regularization,
        backend=bk,
    )


def phase_correlation_ft(
    reference_ft: Any,
    target_ft: Any,
    *,
    shape: Sequence[int],
    upsample_factor: int = 10,
    max_shift: float | None = None,
    normalization: str | None = "phase",
    regularization: float = 1e-2,
    backend: Any = None,
) -> ShiftResult:
    """:func:`phase_correlation` on ``rfftn`` spectra (saves the forward FFTs).

    Parameters
    ----------
    reference_ft : ndarray, complex, shape (..., Z, Y, X//2 + 1)
        ``rfftn`` of the real references over their last three axes.
    target_ft : ndarray, complex, shape (..., Z, Y, X//2 + 1)
        ``rfftn`` of the real targets; leading axes broadcast with
        ``reference_ft``'s.
    shape : tuple of int
        Real-space shape ``(Z, Y, X)``.
    upsample_factor, max_shift, normalization, regularization, backend
        As in :func:`phase_correlation`.

    Returns
    -------
    ShiftResult
    """
    bk = resolve_backend(backend, reference_ft, target_ft)
    xp = bk.xp
    shape = _check_shape3(shape)
    half = (shape[0], shape[1], shape[2] // 2 + 1)
    reference_ft = xp.asarray(reference_ft)
    target_ft = xp.asarray(target_ft)
    for name, a in (("reference_ft", reference_ft), ("target_ft", target_ft)):
        _check_volume(xp, a, name)
        if not xp.iscomplexobj(a):
            raise ValueError(f"{name} must be a complex rfftn spectrum, got dtype {a.dtype}")
        if tuple(a.shape[-3:]) != half:
            raise ValueError(
                f"{name} must end with the rfftn shape {half} for shape={shape}, "
                f"got shape {tuple(a.shape)}"
            )
    _validate_common(upsample_factor, max_shift, normalization, regularization)
    try:
        lead = np.broadcast_shapes(tuple(reference_ft.shape[:-3]), tuple(target_ft.shape[:-3]))
    except ValueError:
        raise ValueError(
            f"the leading axes of reference_ft {tuple(reference_ft.shape)} and target_ft "
            f"{tuple(target_ft.shape)} do not broadcast"
        ) from None
    reference_ft = reference_ft.astype(xp.complex64, copy=False)
    target_ft = target_ft.astype(xp.complex64, copy=False)

    # cross-power spectrum, one row per (reference, target) pair
    cross = (target_ft * xp.conj(reference_ft))
    cross = xp.broadcast_to(cross, lead + half).reshape((-1,) + half)
    nb = cross.shape[0]
    q = cross.copy()
    q[:, 0, 0, 0] = 0  # the means carry no shift information
    if normalization == "phase":
        mag = xp.abs(q)
        # regularised normalisation |P| + eps max|P|: frequencies where the
        # volumes have no signal (noise, float32 round-off) get a small weight
        floor = mag.reshape(nb, -1).max(axis=1) * np.float32(regularization)
        q = q / (mag + floor[:, None, None, None] + np.float32(1e-30))

    # integer peak
    surface = bk.irfftn(q, s=shape, axes=AXES3)  # (B, Z, Y, X)
    signed = [
        _signed(xp, xp.arange(n), n).astype(xp.float32) for n in shape
    ]
    mask = None
    if max_shift is not None:
        r2 = (
            signed[0][:, None, None] ** 2 + signed[1][None, :, None] ** 2
            + signed[2][None, None, :] ** 2
        )
        mask = r2 <= np.float32(max_shift) ** 2
        if not bool(mask.any()):  # pragma: no cover - mask always holds 0
            raise ValueError(f"max_shift={max_shift} excludes every shift")
        surface = xp.where(mask[None], surface, -xp.inf)
    flat_peak = xp.argmax(surface.reshape(nb, -1), axis=1)
    peak_index = xp.stack(xp.unravel_index(flat_peak, shape), axis=1)  # (B, 3)
    peak = xp.stack(
        [signed[a][peak_index[:, a]] for a in range(3)], axis=1
    ).astype(xp.float64)

    if upsample_factor > 1:
        shifts = _refine_upsampled(xp, q, shape, peak, upsample_factor, max_shift)
    else:
        shifts = _refine_parabolic(xp, surface, peak_index, peak, shape)
    if max_shift is not None:
        norm = xp.sqrt((shifts**2).sum(axis=1))
        shifts = shifts * xp.minimum(1.0, max_shift / xp.maximum(norm, 1e-12))[:, None]

    scores = _ncc(xp, cross, reference_ft, target_ft, lead, shape, shifts)
    return ShiftResult(
        shifts=shifts.astype(xp.float32).reshape(lead + (3,)),
        scores=scores.astype(xp.float32).reshape(lead),
    )


def _parabola(xp, lo, mid, hi):
    """Vertex offset of the parabola through (-1, lo), (0, mid), (1, hi), in [-0.5, 0.5]."""
    finite = xp.isfinite(lo) & xp.isfinite(hi) & xp.isfinite(mid)
    lo = xp.where(finite, lo, 0.0)
    hi = xp.where(finite, hi, 0.0)
    mid = xp.where(finite, mid, 0.0)
    denom = lo - 2 * mid + hi
    ok = finite & (denom < 0)
    delta = 0.5 * (lo - hi) / xp.where(ok, denom, -1.0)
    return xp.clip(xp.where(ok, delta, 0.0), -0.5, 0.5)


def _refine_parabolic(xp, surface, peak_index, peak, shape):
    """3-point parabolic fit per axis on the integer correlation grid (periodic)."""
    nb = surface.shape[0]
    rows = xp.arange(nb)
    iz, iy, ix = peak_index[:, 0], peak_index[:, 1], peak_index[:, 2]
    mid = surface[rows, iz, iy, ix].astype(xp.float64)
    out = []
    for axis, n in enumerate(shape):
        idx_lo = [iz, iy, ix]
        idx_hi = [iz, iy, ix]
        idx_lo[axis] = (peak_index[:, axis] - 1) % n
        idx_hi[axis] = (peak_index[:, axis] + 1) % n
        lo = surface[(rows, *idx_lo)].astype(xp.float64)
        hi = surface[(rows, *idx_hi)].astype(xp.float64)
        delta = _parabola(xp, lo, mid, hi) if n >= 3 else xp.zeros(nb)
        out.append(peak[:, axis] + delta)
    return xp.stack(out, axis=1)


def _dft_kernels(xp, shape, positions, dtype):
    """exp(+2 i pi k x) for the three axes: (B, m, n_a), with the rfft weights on x."""
    kernels = []
    for axis, n in enumerate(shape):
        if axis == 2:
            k = np.fft.rfftfreq(n)
            w = np.full(k.size, 2.0)
            w[0] = 1.0
            if n % 2 == 0:
                w[-1] = 1.0
        else:
            k = np.fft.fftfreq(n)
            w = np.ones(k.size)
        k = xp.asarray(k)
        w = xp.asarray(w)
        e = xp.exp(2j * np.pi * positions[axis][:, :, None] * k[None, None, :]) * w
        kernels.append(e.astype(dtype))
    return kernels


def _refine_upsampled(xp, q, shape, peak, factor, max_shift):
    """Upsampled matrix-multiply DFT of the correlation around the peak, then a parabola."""
    nb = q.shape[0]
    half = int(np.ceil(_WINDOW * factor))
    offsets = xp.arange(-half, half + 1, dtype=xp.float64) / factor  # (m,)
    m = offsets.size
    positions = [peak[:, a, None] + offsets[None, :] for a in range(3)]  # 3 x (B, m)
    ez, ey, ex = _dft_kernels(xp, shape, positions, q.dtype)
    z, y, kx = q.shape[1:]
    # contract kx: (B, Z*Y, Kx) @ (B, Kx, m) -> (B, Z, Y, m_x)
    s = xp.matmul(q.reshape(nb, z * y, kx), ex.transpose(0, 2, 1)).reshape(nb, z, y, m)
    # contract ky: (B, Z, m_x, Y) @ (B, 1, Y, m_y) -> (B, Z, m_x, m_y)
    s = xp.matmul(s.transpose(0, 1, 3, 2), ey.transpose(0, 2, 1)[:, None])
    # contract kz: (B, m_z, Z) @ (B, Z, m_x * m_y) -> (B, m_z, m_x, m_y)
    s = xp.matmul(ez, s.reshape(nb, z, m * m)).reshape(nb, m, m, m)
    fine = s.real.transpose(0, 1, 3, 2).astype(xp.float64)  # (B, m_z, m_y, m_x)
    if max_shift is not None:
        r2 = (
            positions[0][:, :, None, None] ** 2 + positions[1][:, None, :, None] ** 2
            + positions[2][:, None, None, :] ** 2
        )
        fine = xp.where(r2 <= max_shift**2 + 1e-9, fine, -xp.inf)
    best = xp.argmax(fine.reshape(nb, -1), axis=1)
    bz, by, bx = xp.unravel_index(best, (m, m, m))
    rows = xp.arange(nb)
    mid = fine[rows, bz, by, bx]
    index = [bz, by, bx]
    out = []
    for axis in range(3):
        lo_idx = list(index)
        hi_idx = list(index)
        lo_idx[axis] = xp.clip(index[axis] - 1, 0, m - 1)
        hi_idx[axis] = xp.clip(index[axis] + 1, 0, m - 1)
        interior = (index[axis] > 0) & (index[axis] < m - 1)
        lo = fine[(rows, *lo_idx)]
        hi = fine[(rows, *hi_idx)]
        delta = xp.where(interior, _parabola(xp, lo, mid, hi), 0.0)
        out.append(peak[:, axis] + (offsets[index[axis]] + delta / factor))
    return xp.stack(out, axis=1)


def _ncc(xp, cross, reference_ft, target_ft, lead, shape, shifts):
    """Normalised cross-correlation of T_t(reference) and target, from the spectra."""
    nb = cross.shape[0]
    positions = [shifts[:, a, None] for a in range(3)]  # (B, 1)
    ez, ey, ex = _dft_kernels(xp, shape, positions, cross.dtype)  # (B, 1, n)
    c = cross.copy()
    c[:, 0, 0, 0] = 0  # remove the means
    # sum_k d_k P_k exp(2 i pi k t): contract x, then y, then z
    s = (c * ex[:, :, None, :]).sum(axis=-1)  # (B, Z, Y)
    s = (s * ey).sum(axis=-1)  # (B, Z)
    s = (s * ez[:, 0, :]).sum(axis=-1)  # (B,)
    numer = s.real.astype(xp.float64)

    w = np.full(shape[2] // 2 + 1, 2.0)
    w[0] = 1.0
    if shape[2] % 2 == 0:
        w[-1] = 1.0
    w = xp.asarray(w)

    def energy(spec):
        p = xp.abs(spec.astype(xp.complex128)) ** 2
        p = (p * w).reshape(p.shape[:-3] + (-1,)).sum(axis=-1) - p[..., 0, 0, 0]
        return xp.broadcast_to(p, lead).reshape(nb)

    denom = xp.sqrt(energy(reference_ft) * energy(target_ft))
    return xp.where(denom > 0, numer / xp.maximum(denom, 1e-300), 0.0)
