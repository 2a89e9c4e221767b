"""Fourier-domain building blocks: frequency grids, shifts, padding, resampling, OTFs.

Conventions (see ``docs/conventions.md``):

- Arrays are indexed ``(z, y, x)``; batched arrays carry leading axes
  ``(..., Z, Y, X)`` and every function here acts on the last three axes.
- The centre of a box of shape ``(Z, Y, X)`` is the voxel ``(Z//2, Y//2, X//2)``;
  it is also where the zero frequency lies after ``fftshift``.
- Frequencies are in cycles per voxel, in FFT order (not shifted) unless a
  name says ``centred``.  Real FFTs (``rfftn``) keep the half spectrum along
  the last axis: ``(Z, Y, X//2 + 1)``.
- A translation by ``t`` voxels, ``T_t f(x) = f(x - t)``, multiplies the
  spectrum by the phase ramp ``exp(-2 i pi k . t)``
  (Eloy et al. 2023 eq. 9, whose ``rho_t`` has the opposite sign with its own Fourier
  convention; the sign here follows from ``T_t`` and ``numpy.fft``).  Even
  sizes follow the FFT convention of ``numpy.fft``: the Nyquist frequency is
  ``-1/2``, as in :func:`scipy.ndimage.fourier_shift`.
- float32 in, float32 out; complex64 in Fourier.

Every function takes ``backend=None`` (the backend of the input array); pass a
:class:`~spfluo.algorithms.backend.Backend` or ``"cpu"``/``"gpu"`` to choose.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from spfluo.algorithms.backend import (
    AXES3,
    resolve_backend,
)

__all__ = [
    "frequency_grid",
    "radial_frequency",
    "shell_index",
    "fourier_shift",
    "shift_volume",
    "pad_to",
    "crop_to",
    "resize_fourier",
    "otf_from_psf",
]



# ---------------------------------------------------------------------------
# private helpers shared by fourier.py, transform.py, forward.py, correlation.py
# ---------------------------------------------------------------------------


def _check_shape3(shape: Any, name: str = "shape") -> tuple[int, int, int]:
    """Validate a 3-tuple of positive integers."""
    try:
        out = tuple(int(s) for s in shape)
        ok = len(out) == 3 and all(int(s) == s for s in shape)
    except (TypeError, ValueError):
        ok = False
    if not ok or any(s < 1 for s in out):
        raise ValueError(
            f"{name} must be three positive integers (Z, Y, X), got {shape!r}"
        )
    return out  # type: ignore[return-value]


def _check_volume(
    xp: Any, volume: Any, name: str, *, ndims: Sequence[int] | None = None,
    expected: str = "(..., Z, Y, X)", finite: bool = True, real: bool = False,
) -> None:
    """Validate the dimensionality (``ndims``, default >= 3), size and finiteness of an array
    (and, with ``real``, that it is not complex)."""
    ok = volume.ndim >= 3 if ndims is None else volume.ndim in tuple(ndims)
    if not ok:
        raise ValueError(f"{name} must have shape {expected}, got shape {tuple(volume.shape)}")
    if volume.size == 0:
        raise ValueError(f"{name} is empty (shape {tuple(volume.shape)}): give a non-empty array")
    if finite and not bool(xp.isfinite(volume).all()):
        raise ValueError(
            f"{name} contains NaN or infinite values: clean the input "
            "(e.g. numpy.nan_to_num) before calling"
        )
    if real and xp.iscomplexobj(volume):
        raise ValueError(f"{name} must be real, got dtype {volume.dtype}")


def _real_dtype(dtype: Any) -> np.dtype:
    """float64 stays float64; everything else (ints, float16, float32) computes in float32."""
    dtype = np.dtype(dtype)
    if dtype == np.float64 or dtype == np.complex128:
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def _fit_to(xp: Any, volume: Any, shape: Sequence[int]) -> Any:
    """Centred pad (zeros) or crop of the trailing axes so that centre n//2 maps to m//2."""
    shape = tuple(int(s) for s in shape)
    k = len(shape)
    old = tuple(volume.shape[-k:])
    if old == shape:
        return volume
    lead = tuple(volume.shape[:-k])
    out = xp.zeros(lead + shape, dtype=volume.dtype)
    src = [slice(None)] * len(lead)
    dst = [slice(None)] * len(lead)
    for n, m in zip(old, shape):
        offset = m // 2 - n // 2
        s0, d0 = max(0, -offset), max(0, offset)
        length = min(n - s0, m - d0)
        src.append(slice(s0, s0 + length))
        dst.append(slice(d0, d0 + length))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def _as_shifts(xp: Any, shift: Any, name: str = "shift") -> Any:
    """Validate an array of 3-vectors (..., 3) of finite numbers (voxels), as float64."""
    shift = xp.asarray(shift, dtype=xp.float64)
    if shift.ndim < 1 or shift.shape[-1] != 3:
        raise ValueError(
            f"{name} must have shape (..., 3) in voxels (z, y, x), got shape {tuple(shift.shape)}"
        )
    if not bool(xp.isfinite(shift).all()):
        raise ValueError(f"{name} contains NaN or infinite values: give finite shifts in voxels")
    return shift


def _phase_ramp_factors(xp: Any, shape: tuple[int, int, int], shift: Any, *, rfft: bool, dtype):
    """The three separable factors exp(-2 i pi k_a t_a) of the phase ramp.

    ``shift`` is (..., 3); returns arrays of shapes (..., Z, 1, 1), (..., 1, Y, 1),
    (..., 1, 1, Kx) whose product is the ramp.  Angles are computed in float64 on
    these 1D arrays (cheap) and cast to ``dtype``.
    """
    ks = _frequencies_1d(shape, rfft=rfft)
    out = []
    for axis, k in enumerate(ks):
        k = xp.asarray(k, dtype=xp.float64)
        angle = shift[..., axis, None] * k  # (..., n)
        f = xp.exp(-2j * np.pi * angle).astype(dtype)
        index = [None, None, None]
        index[axis] = slice(None)
        out.append(f[(Ellipsis, *index)])
    return out


def _frequencies_1d(shape: Sequence[int], *, rfft: bool) -> list[np.ndarray]:
    ks = [np.fft.fftfreq(n) for n in shape]
    if rfft:
        ks[-1] = np.fft.rfftfreq(shape[-1])
    return ks


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------


def frequency_grid(
    shape: Sequence[int], *, rfft: bool = False, backend: Any = None, dtype: Any = np.float32
) -> tuple:
    """Frequencies of each Fourier voxel, one broadcastable array per axis.

    Parameters
    ----------
    shape : tuple of int
        Real-space shape ``(Z, Y, X)`` (any number of axes is accepted).
    rfft : bool, optional
        If True, the last axis holds the half spectrum of ``rfftn``
        (``X//2 + 1`` non-negative frequencies).
    backend : Backend or {"cpu", "gpu"}, optional
        Where to build the arrays; default the CPU.
    dtype : dtype, optional
        Floating dtype of the result (float32).

    Returns
    -------
    tuple of ndarray
        ``(kz, ky, kx)`` in cycles per voxel, FFT order (not shifted); array ``a``
        has shape ``(1, ..., n_a, ..., 1)`` so that they broadcast to the spectrum
        shape ``(Z, Y, X)`` (or ``(Z, Y, X//2 + 1)``).
    """
    shape = tuple(shape)
    if len(shape) < 1 or any(int(s) != s or s < 1 for s in shape):
        raise ValueError(f"shape must be a tuple of positive integers, got {shape!r}")
    bk = resolve_backend(backend)
    ks = _frequencies_1d([int(s) for s in shape], rfft=rfft)
    out = []
    for axis, k in enumerate(ks):
        view = [1] * len(shape)
        view[axis] = k.size
        out.append(bk.xp.asarray(k.reshape(view), dtype=dtype))
    return tuple(out)


def radial_frequency(
    shape: Sequence[int], *, rfft: bool = False, backend: Any = None, dtype: Any = np.float32
):
    """Modulus ``|k|`` of the frequency of each Fourier voxel.

    Parameters
    ----------
    shape : tuple of int
        Real-space shape ``(Z, Y, X)``.
    rfft : bool, optional
        Half spectrum of ``rfftn`` along the last axis.
    backend : Backend or {"cpu", "gpu"}, optional
    dtype : dtype, optional

    Returns
    -------
    ndarray, shape (Z, Y, X) or (Z, Y, X//2 + 1)
        ``sqrt(kz**2 + ky**2 + kx**2)`` in cycles per voxel, FFT order.
    """
    ks = frequency_grid(shape, rfft=rfft, backend=backend, dtype=dtype)
    total = 0
    for k in ks:
        total = total + k * k
    xp = resolve_backend(backend).xp
    return xp.sqrt(total).astype(dtype, copy=False)


def shell_index(shape: Sequence[int], *, rfft: bool = False, backend: Any = None):
    """Index of the radial Fourier shell of each Fourier voxel (for FSC).

    Shell ``s`` holds the frequencies with ``round(|k| * N) == s``, where ``|k|``
    is in cycles per voxel and ``N = max(shape)``: shells are ``1/N`` cycles per
    voxel wide, centred on ``s / N``.  For a cubic box of side ``N`` this is
    ``round(sqrt(iz**2 + iy**2 + ix**2))`` with ``i`` the integer frequency
    indices, so shell ``s`` has frequency ``s / N`` and shells ``0 .. N//2`` are
    complete spheres (higher shells are the box corners).

    Parameters
    ----------
    shape : tuple of int
        Real-space shape ``(Z, Y, X)``.
    rfft : bool, optional
        Half spectrum of ``rfftn`` along the last axis.
    backend : Backend or {"cpu", "gpu"}, optional

    Returns
    -------
    ndarray of int32, shape (Z, Y, X) or (Z, Y, X//2 + 1)
        Shell indices, FFT order; the frequency of shell ``s`` is ``s / max(shape)``
        cycles per voxel.
    """
    shape = tuple(shape)
    if len(shape) < 1 or any(int(s) != s or s < 1 for s in shape):
        raise ValueError(f"shape must be a tuple of positive integers, got {shape!r}")
    xp = resolve_backend(backend).xp
    k = radial_frequency(shape, rfft=rfft, backend=backend, dtype=np.float64)
    return xp.rint(k * max(int(s) for s in shape)).astype(xp.int32)


def fourier_shift(
    volume_ft: Any, shift: Any, *, shape: Sequence[int], rfft: bool = True, backend: Any = None
):
    """Translate in Fourier space: multiply a spectrum by ``exp(-2 i pi k . t)``.

    Parameters
    ----------
    volume_ft : ndarray, complex, shape (..., Z, Y, X//2 + 1) or (..., Z, Y, X)
        Spectrum (FFT order) of real volumes: ``rfftn`` output when ``rfft`` is
        True, ``fftn`` output otherwise.
    shift : array_like, shape (..., 3)
        Translations ``t`` in voxels, ``(z, y, x)``; the leading axes broadcast
        with those of ``volume_ft`` (one shift per volume, or many shifts of one
        volume).
    shape : tuple of int
        Real-space shape ``(Z, Y, X)`` (needed to tell the rfft half spectrum).
    rfft : bool, optional
        Whether ``volume_ft`` is a half spectrum (default True).
    backend : Backend or {"cpu", "gpu"}, optional

    Returns
    -------
    ndarray, complex, shape (broadcast(...), Z, Y, Kx)
        The spectrum of ``T_t f``, ``T_t f(x) = f(x - t)`` (periodic boundary);
        same complex dtype as ``volume_ft``.
    """
    bk = resolve_backend(backend, volume_ft)
    xp = bk.xp
    shape = _check_shape3(shape)
    volume_ft = xp.asarray(volume_ft)
    if not xp.iscomplexobj(volume_ft):
        raise ValueError(
            f"volume_ft must be a complex spectrum (rfftn/fftn output), got dtype {volume_ft.dtype}"
        )
    expected = (shape[0], shape[1], shape[2] // 2 + 1 if rfft else shape[2])
    if volume_ft.ndim < 3 or tuple(volume_ft.shape[-3:]) != expected:
        raise ValueError(
            f"volume_ft must end with the spectrum shape {expected} for shape={shape} "
            f"(rfft={rfft}), got shape {tuple(volume_ft.shape)}"
        )
    if not bool(xp.isfinite(volume_ft).all()):
        raise ValueError("volume_ft contains NaN or infinite values")
    shift = _as_shifts(xp, shift)
    try:
        np.broadcast_shapes(tuple(shift.shape[:-1]), tuple(volume_ft.shape[:-3]))
    except ValueError:
        raise ValueError(
            f"the leading axes of shift {tuple(shift.shape)} do not broadcast with those of "
            f"volume_ft {tuple(volume_ft.shape)}"
        ) from None
    ez, ey, ex = _phase_ramp_factors(xp, shape, shift, rfft=rfft, dtype=volume_ft.dtype)
    return volume_ft * ez * ey * ex


def shift_volume(volume: Any, shift: Any, *, backend: Any = None):
    """Translate real volumes by (sub-voxel) shifts with a Fourier phase ramp.

    Parameters
    ----------
    volume : ndarray, shape (..., Z, Y, X)
        Real volumes.
    shift : array_like, shape (..., 3)
        Translations in voxels ``(z, y, x)``, broadcast with the leading axes of
        ``volume``.
    backend : Backend or {"cpu", "gpu"}, optional

    Returns
    -------
    ndarray, shape (broadcast(...), Z, Y, X)
        ``f(x - t)`` with periodic boundary (what leaves one side re-enters the
        other: pad first if that matters); float32 for float32 input.
    """
    bk = resolve_backend(backend, volume)
    xp = bk.xp
    volume = xp.asarray(volume)
    _check_volume(xp, volume, "volume")
    volume = volume.astype(_real_dtype(volume.dtype), copy=False)
    shape = tuple(volume.shape[-3:])
    ft = bk.rfftn(volume, axes=AXES3)
    ft = fourier_shift(ft, shift, shape=shape, rfft=True, backend=bk)
    return bk.irfftn(ft, s=shape, axes=AXES3).astype(volume.dtype, copy=False)


def _pad_crop_check(volume: Any, shape: Any, *, mode: str):
    shape = tuple(shape)
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a tuple of positive integers, got {shape!r}") from None
    if not (1 <= len(shape) <= volume.ndim) or any(s < 1 for s in shape):
        raise ValueError(
            f"shape must be 1 to {volume.ndim} positive integers (applied to the trailing "
            f"axes of volume {tuple(volume.shape)}), got {shape!r}"
        )
    old = tuple(volume.shape[-len(shape):])
    if mode == "pad" and any(m < n for n, m in zip(old, shape)):
        raise ValueError(f"pad_to cannot shrink {old} to {shape}: use crop_to")
    if mode == "crop" and any(m > n for n, m in zip(old, shape)):
        raise ValueError(f"crop_to cannot enlarge {old} to {shape}: use pad_to")
    return shape


def pad_to(volume: Any, shape: Sequence[int], *, backend: Any = None):
    """Zero-pad the trailing axes to ``shape``, keeping the box centre.

    Parameters
    ----------
    volume : ndarray, shape (..., Z, Y, X)
    shape : tuple of int
        New sizes of the trailing ``len(shape)`` axes, each >= the old one.
    backend : Backend or {"cpu", "gpu"}, optional

    Returns
    -------
    ndarray, shape (..., *shape)
        Same dtype; the old centre voxel ``n//2`` sits at ``m//2``.
    """
    xp = resolve_backend(backend, volume).xp
    volume = xp.asarray(volume)
    shape = _pad_crop_check(volume, shape, mode="pad")
    return _fit_to(xp, volume, shape)


def crop_to(volume: Any, shape: Sequence[int], *, backend: Any = None):
    """Crop the trailing axes to ``shape`` around the box centre.

    Parameters
    ----------
    volume : ndarray, shape (..., Z, Y, X)
    shape : tuple of int
        New sizes of the trailing ``len(shape)`` axes, each <= the old one.
    backend : Backend or {"cpu", "gpu"}, optional

    Returns
    -------
    ndarray, shape (..., *shape)
        A copy, same dtype; the old centre voxel ``n//2`` sits at ``m//2``.
    """
    xp = resolve_backend(backend, volume).xp
    volume = xp.asarray(volume)
    shape = _pad_crop_check(volume, shape, mode="crop")
    return _fit_to(xp, volume, shape)


def _resize_full_axis(xp: Any, spec: Any, axis: int, n: int, m: int):
    """Centred crop/pad of one full (fftshifted) spectrum axis, with the Nyquist split/fold."""
    if m == n:
        return spec
    out = _fit_to(xp, xp.moveaxis(spec, axis, -1), (m,))
    out = xp.moveaxis(out, -1, axis)
    index = [slice(None)] * spec.ndim
    if m > n and n % 2 == 0:
        # the old Nyquist bin (-n/2) is also +n/2: split it evenly between both
        lo, hi = m // 2 - n // 2, m // 2 + n // 2
        index[axis] = lo
        half = out[tuple(index)] * 0.5
        out[tuple(index)] = half
        index[axis] = hi
        out[tuple(index)] = half
    elif m < n and m % 2 == 0:
        # the new Nyquist bin -m/2 aliases with +m/2: fold the +m/2 bin onto it
        index[axis] = n // 2 + m // 2
        extra = spec[tuple(index)]
        index[axis] = 0
        out[tuple(index)] = out[tuple(index)] + extra
    return out


def _resize_half_axis(xp: Any, spec: Any, n: int, m: int):
    """Resize the last (rfft half) axis from n to m real samples, Nyquist handled."""
    if m == n:
        return spec
    k_new = m // 2 + 1
    if m > n:
        out = xp.zeros(spec.shape[:-1] + (k_new,), dtype=spec.dtype)
        out[..., : spec.shape[-1]] = spec
        if n % 2 == 0:
            out[..., n // 2] *= 0.5  # old Nyquist column becomes interior (counted twice)
        return out
    out = spec[..., :k_new].copy()
    if m % 2 == 0:
        out[..., m // 2] *= 2.0  # new Nyquist column (counted once) gathers +m/2 and -m/2
    return out


def resize_fourier(volume: Any, shape: Sequence[int], *, backend: Any = None):
    """Band-limited resampling of volumes by Fourier cropping or zero-padding.

    The output samples the same field of view on a grid of ``shape``: the voxel
    size is multiplied by ``n / m`` per axis (downsampling when ``m < n``, for
    coarse-to-fine searches).  Conventions:

    - the box centre ``n//2`` maps to the new centre ``m//2`` (rotations about
      the centre stay consistent across scales);
    - intensities are preserved pointwise (the mean is unchanged; the sum scales
      by ``prod(m) / prod(n)``): a constant volume stays the same constant;
    - downsampling is an ideal low-pass filter at the new Nyquist frequency,
      then sampling; at an even new size the two bins ``+-m/2`` are folded
      onto the new Nyquist bin (what sampling the band-limited signal gives);
      upsampling splits an old Nyquist bin evenly between ``+-n/2``.  For data
      band-limited below both Nyquist frequencies, down- then up-sampling is
      exact.

    Parameters
    ----------
    volume : ndarray, shape (..., Z, Y, X)
        Real volumes (batched over leading axes).
    shape : tuple of int
        New ``(Z', Y', X')``.
    backend : Backend or {"cpu", "gpu"}, optional

    Returns
    -------
    ndarray, shape (..., Z', Y', X')
        float32 for float32 input.
    """
    bk = resolve_backend(backend, volume)
    xp = bk.xp
    volume = xp.asarray(volume)
    _check_volume(xp, volume, "volume")
    shape = _check_shape3(shape)
    old = tuple(volume.shape[-3:])
    volume = volume.astype(_real_dtype(volume.dtype), copy=False)
    if old == shape:
        return volume.copy()
    # put the box centre at index 0 so that the FFT grids of both sizes share it
    spec = bk.rfftn(xp.fft.ifftshift(volume, axes=AXES3), axes=AXES3)
    spec = xp.fft.fftshift(spec, axes=(-3, -2))
    for axis in (-3, -2):
        spec = _resize_full_axis(xp, spec, axis, old[axis], shape[axis])
    spec = xp.fft.ifftshift(spec, axes=(-3, -2))
    spec = _resize_half_axis(xp, spec, old[2], shape[2])
    out = bk.irfftn(spec, s=shape, axes=AXES3)
    scale = float(np.prod(shape)) / float(np.prod(old))
    out = xp.fft.fftshift(out, axes=AXES3) * out.dtype.type(scale)
    return out.astype(volume.dtype, copy=False)


def otf_from_psf(psf: Any, shape: Sequence[int], *, rfft: bool = True, backend: Any = None):
    """Optical transfer function of a centred PSF, for volumes of ``shape``.

    The PSF (centre at voxel ``N//2``) is padded or cropped around its centre to
    ``shape``, its centre moved to index 0 (``ifftshift``) and Fourier
    transformed.  Convolution of a volume ``v`` of ``shape`` with the PSF
    (periodic boundary) is then ``irfftn(rfftn(v) * otf, s=shape)``.  The PSF is
    not normalised here: the convolution preserves total intensity when
    ``psf.sum() == 1``.

    Parameters
    ----------
    psf : ndarray, shape (Zp, Yp, Xp)
        Real PSF centred at ``(Zp//2, Yp//2, Xp//2)``.
    shape : tuple of int
        Shape ``(Z, Y, X)`` of the volumes it will blur.
    rfft : bool, optional
        Half spectrum (``rfftn``, default) or full spectrum (``fftn``).
    backend : Backend or {"cpu", "gpu"}, optional

    Returns
    -------
    ndarray, complex64, shape (Z, Y, X//2 + 1) or (Z, Y, X)
        The OTF in FFT order.
    """
    bk = resolve_backend(backend, psf)
    xp = bk.xp
    psf = xp.asarray(psf)
    _check_volume(xp, psf, "psf", ndims=(3,), expected="(Z, Y, X)", real=True)
    shape = _check_shape3(shape)
    h = _fit_to(xp, psf.astype(xp.float32, copy=False), shape)
    h = xp.fft.ifftshift(h, axes=AXES3)
    otf = bk.rfftn(h, axes=AXES3) if rfft else bk.fftn(h, axes=AXES3)
    return otf.astype(xp.complex64, copy=False)
