"""Private argument checks shared by the modules of :mod:`spfluo.algorithms`.

Each check returns the value converted to its plain Python type, or raises a
``ValueError`` that names the parameter and shows the value received.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from spfluo.algorithms.backend import to_numpy

__all__ = ["check_int", "check_symmetry", "check_box_shape", "check_float", "check_max_shift",
           "as_particles", "check_finite", "as_channels", "as_psf"]


def check_int(value: Any, name: str, *, minimum: int) -> int:
    """An integer (not a bool) ``>= minimum``, as an ``int``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_symmetry(symmetry: Any) -> int:
    """The order ``n >= 1`` of a cyclic symmetry Cn about z (1 = none), as an ``int``."""
    if isinstance(symmetry, bool) or not isinstance(symmetry, (int, np.integer)) or symmetry < 1:
        raise ValueError(
            f"symmetry must be the order n >= 1 of the cyclic group Cn (1 = no symmetry), "
            f"got {symmetry!r}"
        )
    return int(symmetry)


def check_box_shape(shape: Any, name: str = "shape") -> tuple[int, int, int]:
    """A box ``(Z, Y, X)`` of 3 positive ints in voxels; an int gives a cube."""
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),) * 3
    try:
        out = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(
            f"{name} must be a (Z, Y, X) tuple of 3 positive ints, got {shape!r}"
        ) from None
    if len(out) != 3 or any(s < 1 for s in out) or any(int(s) != s for s in shape):
        raise ValueError(f"{name} must be a (Z, Y, X) tuple of 3 positive ints, got {shape!r}")
    return out


def check_float(value: Any, name: str, *, low: float = -math.inf, high: float = math.inf,
                low_inclusive: bool = True, unit: str = "") -> float:
    """A finite real number (not a bool) in ``[low, high]`` (``(low, high]`` when not
    ``low_inclusive``), as a ``float``; ``unit`` (e.g. ``" voxels"``) ends the message."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    v = float(value) if ok else math.nan
    ok = ok and math.isfinite(v) and (v >= low if low_inclusive else v > low) and v <= high
    if not ok:
        bracket = "[" if low_inclusive else "("
        raise ValueError(f"{name} must be a finite number in {bracket}{low:g}, {high:g}]{unit}, "
                         f"got {value!r}")
    return v


def check_max_shift(max_shift: Any, box: int) -> float:
    """Largest translation norm in voxels (>= 0); None gives a quarter of the box side."""
    if max_shift is None:
        return box / 4.0
    return check_float(max_shift, "max_shift", low=0.0, unit=" voxels")


def as_particles(particles: Any, xp: Any = None) -> tuple[Any, bool]:
    """Particles as ``(N, C, D, D, D)``, and whether the input had no channel axis.

    Checks the structure (dimensions, emptiness, cubic boxes of side >= 8, real values).
    Without ``xp`` the array is returned as given (callers that stream batches check
    finiteness per batch); with ``xp`` it is converted to float32 in that namespace and
    checked for NaN and infinities.
    """
    if not (hasattr(particles, "ndim") and hasattr(particles, "shape")):
        raise ValueError(f"particles must be an array (N, C, D, D, D) or (N, D, D, D), got "
                         f"{type(particles).__name__}")
    if particles.ndim not in (4, 5):
        raise ValueError(f"particles must have shape (N, C, D, D, D) or (N, D, D, D), got "
                         f"{tuple(particles.shape)}")
    squeeze = particles.ndim == 4
    arr = particles[:, None] if squeeze else particles
    n, c, d, e, f = (int(s) for s in arr.shape)
    if n == 0 or c == 0:
        raise ValueError(f"particles is empty (shape {tuple(particles.shape)}): give at least "
                         "one particle")
    if not d == e == f:
        raise ValueError(f"particles must be cubic boxes (D, D, D), got (Z, Y, X) = "
                         f"{(d, e, f)}: extract them with a cubic box")
    if d < 8:
        raise ValueError(f"particle boxes of {d} voxels are too small (need at least 8)")
    if arr.dtype.kind == "c":
        raise ValueError(f"particles must be real, got dtype {arr.dtype}")
    if xp is not None:
        arr = xp.asarray(arr).astype(xp.float32, copy=False)
        check_finite(xp, arr, "particles")
    return arr, squeeze


def check_finite(xp: Any, array: Any, name: str) -> None:
    """Refuse NaN and infinite values, with the fix."""
    if not bool(xp.isfinite(array).all()):
        raise ValueError(f"{name} contain NaN or infinite values: clean them "
                         "(e.g. numpy.nan_to_num) first")


def as_channels(channels: Any, n_channels: int) -> tuple[int, ...]:
    """Channel indices: None or ``"all"`` (every channel), one index, or distinct indices
    in ``[0, n_channels)``."""
    if channels is None or (isinstance(channels, str) and channels == "all"):
        return tuple(range(n_channels))
    values = [channels] if isinstance(channels, (int, np.integer)) else channels
    try:
        out = tuple(int(c) for c in values)
        ok = all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in values)
    except (TypeError, ValueError):
        ok = False
    if not ok or not out or len(set(out)) != len(out) or any(
            not 0 <= c < n_channels for c in out):
        raise ValueError(
            f"channels must be None/'all', a channel index or a list of distinct indices in "
            f"[0, {n_channels}), got {channels!r}"
        )
    return out


def as_psf(psf: Any, n_channels: int, box: int | None, xp: Any = np) -> Any:
    """A PSF for ``n_channels`` channels: ``(C, d, d, d)`` float32 in namespace ``xp``, each
    channel normalised to unit sum (sums in float64), one PSF broadcast to every channel.

    ``psf`` is ``(d, d, d)`` or ``(C, d, d, d)``, real, finite, with a positive sum per
    channel, and no larger than the particle box ``box`` (voxels; None: any size).
    """
    psf = np.asarray(to_numpy(psf))
    if psf.ndim == 3:
        psf = psf[None]
    if psf.ndim != 4:
        raise ValueError(f"psf must have shape (d, d, d) or (C, d, d, d), got {psf.shape}")
    if psf.size == 0:
        raise ValueError(f"psf is empty (shape {psf.shape}): give a non-empty PSF")
    if not np.issubdtype(psf.dtype, np.number) or np.iscomplexobj(psf):
        raise ValueError(f"psf must be real, got dtype {psf.dtype}")
    if not np.all(np.isfinite(psf)):
        raise ValueError("psf contains NaN or infinite values: clean it before reconstructing")
    if box is not None and any(s > box for s in psf.shape[1:]):
        raise ValueError(
            f"psf of shape {psf.shape[1:]} is larger than the particle box ({box} voxels): "
            "crop the PSF to the box"
        )
    if psf.shape[0] not in (1, n_channels):
        raise ValueError(
            f"psf has {psf.shape[0]} channels but the particles have {n_channels}: give one "
            "PSF per channel, or one for all"
        )
    sums = psf.reshape(psf.shape[0], -1).sum(axis=1, dtype=np.float64)
    if np.any(sums <= 0):
        raise ValueError(f"psf must have a positive sum in every channel, got sums {sums}")
    psf = (psf / sums[:, None, None, None]).astype(np.float32)
    if psf.shape[0] != n_channels:
        psf = np.repeat(psf, n_channels, axis=0)
    return xp.asarray(psf)
