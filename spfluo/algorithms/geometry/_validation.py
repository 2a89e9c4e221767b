"""Private argument checks of the geometry package: real arrays, frames, rotation matrices,
angles.

Each check raises a ``ValueError`` that names the argument and says what to pass.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ROTATION_TOLERANCE", "float_dtype", "as_real_array", "check_frame", "as_rotations",
           "as_rotation_pair", "check_angle"]

#: Tolerance on ``max |R^T R - I|`` and ``|det R - 1|`` for a matrix to count as a rotation.
ROTATION_TOLERANCE = 1e-4
_FRAMES = ("zyx", "xyz")


def float_dtype(*arrays: np.ndarray) -> np.dtype:
    """Output dtype: the floating dtype of the inputs, float64 for integers."""
    return np.result_type(*[a.dtype for a in arrays], np.float32)


def as_real_array(value, name: str) -> np.ndarray:
    """``value`` as an integer or floating array, all finite (``name`` in the messages)."""
    a = np.asarray(value)
    if a.dtype == object or not (
        np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)
    ):
        raise ValueError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values; remove or fix those entries")
    return a


def check_frame(frame: str) -> None:
    """Reject a ``frame`` other than ``"zyx"`` or ``"xyz"``."""
    if frame not in _FRAMES:
        raise ValueError(f"frame must be 'zyx' or 'xyz', got {frame!r}")


def as_rotations(R, name: str = "R") -> np.ndarray:
    """Validate a stack of rotation matrices; return the input array (any float dtype)."""
    a = np.asarray(R)
    if a.ndim < 2 or a.shape[-2:] != (3, 3):
        raise ValueError(
            f"{name} must be rotation matrices of shape (..., 3, 3), got shape {a.shape}"
        )
    a = as_real_array(a, name)
    if a.size:
        a64 = a.astype(np.float64, copy=False)
        gram = np.matmul(np.swapaxes(a64, -1, -2), a64)
        orth = np.abs(gram - np.eye(3)).max()
        det = np.linalg.det(a64)
        det_err = np.abs(det - 1.0).max()
        if orth > ROTATION_TOLERANCE or det_err > ROTATION_TOLERANCE:
            raise ValueError(
                f"{name} is not a stack of rotation matrices (max |R^T R - I| = {orth:.3g}, "
                f"max |det R - 1| = {det_err:.3g}, tolerance {ROTATION_TOLERANCE:g}); pass "
                "orthonormal matrices with determinant +1 (not reflections)"
            )
    return a


def as_rotation_pair(R1, R2) -> tuple[np.ndarray, np.ndarray]:
    """Two stacks of rotation matrices as float64, checked to broadcast over leading axes."""
    a = as_rotations(R1, "R1").astype(np.float64, copy=False)
    b = as_rotations(R2, "R2").astype(np.float64, copy=False)
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(
            f"R1 of shape {a.shape} and R2 of shape {b.shape} do not broadcast "
            "over their leading axes"
        ) from None
    return a, b


def check_angle(value, name: str, *, low: float, high: float, low_inclusive: bool) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number (radians), got {value!r}") from None
    ok_low = v >= low if low_inclusive else v > low
    if not (np.isfinite(v) and ok_low and v <= high):
        bracket = "[" if low_inclusive else "("
        raise ValueError(
            f"{name} must be in {bracket}{low:g}, {high:g}] radians, got {value!r}"
        )
    return v
