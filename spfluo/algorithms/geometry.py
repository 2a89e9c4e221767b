"""Rotations, poses and their conventions: the one place where they are defined.

Every other module of spfluo calls this one to build, convert, compare or
sample rotations; nothing else converts.

Conventions
-----------
Axes
    Arrays are indexed ``(z, y, x)``; z (array axis 0) is the optical axis.
    Rotations act about the box centre ``(Z//2, Y//2, X//2)``.
Rotation matrices (the *zyx frame*)
    Algorithms use float arrays of shape ``(..., 3, 3)`` that act on column
    vectors of ``(z, y, x)`` coordinates.  They are *active* rotations: the
    rotated volume is ``(R f)(x) = f(R^T x)``.
The xyz frame
    Named representations (Euler angles, quaternions, rotation vectors,
    axis-angle, directions) are defined in the physical, right-handed
    ``(x, y, z)`` frame exactly as :class:`scipy.spatial.transform.Rotation`
    defines them.  A matrix changes frame by ``R_zyx = P R_xyz P`` where ``P``
    reverses the three axes (:func:`swap_xyz_zyx`).  Because the ``(z, y, x)``
    ordering is left-handed, a rotation vector written in ``(z, y, x)`` order
    would have the opposite sign: always write vectors of named
    representations in ``(x, y, z)``.
Pose of a particle
    Rotation ``R`` (zyx frame) and translation ``t`` (voxels, ``(z, y, x)``):
    ``particle(x) = f(R^T (x - c - t) + c)``, i.e. ``y = T_t(R f)``.  The 4x4
    matrix ``[[R, t], [0, 1]]`` maps reference coordinates (relative to the
    centre) to particle coordinates.  A set of poses is a :class:`Poses`.
Stored poses
    The same 4x4 matrix in ``(x, y, z)`` order with the translation in
    micrometres: ``M_xyz = P M_zyx P`` and
    ``t_xyz_um = reverse(t_zyx_vox * voxel_size_zyx)``.
Euler angles
    RELION's ZYZ ``(rot, tilt, psi)``: the pose rotation in the xyz frame is
    ``A = Rotation.from_euler("ZYZ", [rot, tilt, psi]).as_matrix().T``
    (RELION's ``Euler_angles2matrix``, mapping reference coordinates to
    particle coordinates).  Degrees by default (file edges, user parameters).
Quaternions
    Scalar-first ``(w, x, y, z)`` in the xyz frame, canonical sign ``w >= 0``.
Rotation vectors and axis-angle
    xyz frame, radians, right-handed; axis-angle angles are in ``[0, pi]``.
Directions
    ``d = (sin phi2 cos phi1, sin phi2 sin phi1, cos phi2)`` in xyz, azimuth
    ``phi1`` and inclination ``phi2`` from +z (Eloy et al. 2023, sec. 2.1).
Symmetry Cn
    About the physical z axis (array axis 0): rotations by ``2 pi k / n``.  A
    particle is ``R f`` and ``f = C_k f`` for a Cn-symmetric ``f``, so the
    poses ``R`` and ``R C_k`` are equivalent.
Units
    Angles in radians inside algorithms (degrees only where a name or keyword
    says so); translations in voxels; voxel sizes are ``(z, y, x)`` tuples in
    micrometres.

Matrix outputs keep the floating dtype of their input (float32 in, float32
out; integers give float64); computations run in float64.  :class:`Poses`
always stores float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from spfluo.algorithms._validation import check_int, check_symmetry

__all__ = [
    "swap_xyz_zyx",
    "matrix_from_euler",
    "euler_from_matrix",
    "matrix_from_quaternion",
    "quaternion_from_matrix",
    "matrix_from_rotvec",
    "rotvec_from_matrix",
    "matrix_from_axis_angle",
    "axis_angle_from_matrix",
    "rotation_about_z",
    "random_rotations",
    "perturb_rotations",
    "fibonacci_directions",
    "direction_angles",
    "direction_from_angles",
    "SO3Grid",
    "so3_grid",
    "so3_grid_for_step",
    "uniform_rotation_grid",
    "local_rotation_grid",
    "cyclic_group",
    "geodesic_distance",
    "geodesic_distance_sym",
    "as_voxel_size",
    "Poses",
    "align_rotations",
    "pose_errors",
]

#: Tolerance on ``max |R^T R - I|`` and ``|det R - 1|`` for a matrix to count as a rotation.
ROTATION_TOLERANCE = 1e-4
_GOLDEN_RATIO = (1.0 + np.sqrt(5.0)) / 2.0
_GIMBAL_TOLERANCE = 1e-9  # radians on the half tilt angle
_MAX_GRID_SIZE = 2_000_000
_FRAMES = ("zyx", "xyz")


# ---------- validation


def _float_dtype(*arrays: np.ndarray) -> np.dtype:
    """Output dtype: the floating dtype of the inputs, float64 for integers."""
    return np.result_type(*[a.dtype for a in arrays], np.float32)


def _as_real_array(value, name: str) -> np.ndarray:
    a = np.asarray(value)
    if a.dtype == object or not (
        np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)
    ):
        raise ValueError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values; remove or fix those entries")
    return a


def _check_frame(frame: str) -> None:
    if frame not in _FRAMES:
        raise ValueError(f"frame must be 'zyx' or 'xyz', got {frame!r}")


def _as_rotations(R, name: str = "R") -> np.ndarray:
    """Validate a stack of rotation matrices; return the input array (any float dtype)."""
    a = np.asarray(R)
    if a.ndim < 2 or a.shape[-2:] != (3, 3):
        raise ValueError(
            f"{name} must be rotation matrices of shape (..., 3, 3), got shape {a.shape}"
        )
    a = _as_real_array(a, name)
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


def _as_rotation_pair(R1, R2) -> tuple[np.ndarray, np.ndarray]:
    """Two stacks of rotation matrices as float64, checked to broadcast over leading axes."""
    a = _as_rotations(R1, "R1").astype(np.float64, copy=False)
    b = _as_rotations(R2, "R2").astype(np.float64, copy=False)
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(
            f"R1 of shape {a.shape} and R2 of shape {b.shape} do not broadcast "
            "over their leading axes"
        ) from None
    return a, b


def _quaternions_of(R, frame: str) -> tuple[np.ndarray, np.ndarray]:
    """The validated input ``R`` (its dtype kept) and its xyz-frame unit quaternions
    ``(w, x, y, z)``, float64, ``w >= 0``."""
    _check_frame(frame)
    a = _as_rotations(R, "R")
    q = _matrix_xyz_to_quat(_to_xyz(a.astype(np.float64), frame))
    return a, q


def _check_angle(value, name: str, *, low: float, high: float, low_inclusive: bool) -> float:
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


# ---------- frames


def swap_xyz_zyx(matrix) -> np.ndarray:
    """Change the frame of matrices between ``(x, y, z)`` and ``(z, y, x)`` order.

    Computes ``P m P`` where ``P`` reverses the three spatial axes; for 4x4
    homogeneous matrices the homogeneous row and column stay in place.  The
    operation is its own inverse.

    Parameters
    ----------
    matrix : ndarray, shape (..., 3, 3) or (..., 4, 4)
        Matrices acting on column vectors in one axis order.

    Returns
    -------
    ndarray, same shape and dtype as ``matrix``
        The same linear (or affine) maps acting on vectors in the other order.
    """
    m = np.asarray(matrix)
    if m.ndim < 2 or m.shape[-2:] not in ((3, 3), (4, 4)):
        raise ValueError(
            f"matrix must have shape (..., 3, 3) or (..., 4, 4), got shape {m.shape}"
        )
    order = [2, 1, 0] if m.shape[-1] == 3 else [2, 1, 0, 3]
    return np.ascontiguousarray(m[..., order, :][..., :, order])


def _to_xyz(R: np.ndarray, frame: str) -> np.ndarray:
    return R[..., ::-1, ::-1] if frame == "zyx" else R


def _from_xyz(R: np.ndarray, frame: str) -> np.ndarray:
    return np.ascontiguousarray(R[..., ::-1, ::-1] if frame == "zyx" else R)


# ---------- core kernels (float64, xyz, no validation)


def _quat_to_matrix_xyz(q: np.ndarray) -> np.ndarray:
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    R = np.empty(q.shape[:-1] + (3, 3))
    R[..., 0, 0] = 1 - 2 * (y * y + z * z)
    R[..., 0, 1] = 2 * (x * y - z * w)
    R[..., 0, 2] = 2 * (x * z + y * w)
    R[..., 1, 0] = 2 * (x * y + z * w)
    R[..., 1, 1] = 1 - 2 * (x * x + z * z)
    R[..., 1, 2] = 2 * (y * z - x * w)
    R[..., 2, 0] = 2 * (x * z - y * w)
    R[..., 2, 1] = 2 * (y * z + x * w)
    R[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return R


def _matrix_xyz_to_quat(R: np.ndarray) -> np.ndarray:
    """Shepperd's method: pick the best-conditioned of four formulas per matrix."""
    shape = R.shape[:-2]
    m = R.reshape(-1, 3, 3)
    m00, m11, m22 = m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]
    trace = m00 + m11 + m22
    choice = np.argmax(np.stack([trace, m00, m11, m22], axis=-1), axis=-1)
    q = np.empty((m.shape[0], 4))
    # w largest
    s = choice == 0
    if s.any():
        a = m[s]
        w = 0.5 * np.sqrt(np.maximum(1.0 + trace[s], 0.0))
        f = 0.25 / w
        q[s] = np.stack(
            [w, (a[:, 2, 1] - a[:, 1, 2]) * f, (a[:, 0, 2] - a[:, 2, 0]) * f,
             (a[:, 1, 0] - a[:, 0, 1]) * f], axis=-1)
    # x largest
    s = choice == 1
    if s.any():
        a = m[s]
        x = 0.5 * np.sqrt(np.maximum(1.0 + a[:, 0, 0] - a[:, 1, 1] - a[:, 2, 2], 0.0))
        f = 0.25 / x
        q[s] = np.stack(
            [(a[:, 2, 1] - a[:, 1, 2]) * f, x, (a[:, 0, 1] + a[:, 1, 0]) * f,
             (a[:, 0, 2] + a[:, 2, 0]) * f], axis=-1)
    # y largest
    s = choice == 2
    if s.any():
        a = m[s]
        y = 0.5 * np.sqrt(np.maximum(1.0 - a[:, 0, 0] + a[:, 1, 1] - a[:, 2, 2], 0.0))
        f = 0.25 / y
        q[s] = np.stack(
            [(a[:, 0, 2] - a[:, 2, 0]) * f, (a[:, 0, 1] + a[:, 1, 0]) * f, y,
             (a[:, 1, 2] + a[:, 2, 1]) * f], axis=-1)
    # z largest
    s = choice == 3
    if s.any():
        a = m[s]
        z = 0.5 * np.sqrt(np.maximum(1.0 - a[:, 0, 0] - a[:, 1, 1] + a[:, 2, 2], 0.0))
        f = 0.25 / z
        q[s] = np.stack(
            [(a[:, 1, 0] - a[:, 0, 1]) * f, (a[:, 0, 2] + a[:, 2, 0]) * f,
             (a[:, 1, 2] + a[:, 2, 1]) * f, z], axis=-1)
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    q[q[:, 0] < 0] *= -1.0
    return q.reshape(shape + (4,))


def _rotvec_to_matrix_xyz(v: np.ndarray) -> np.ndarray:
    theta = np.linalg.norm(v, axis=-1)
    # sin(theta/2)/theta = 0.5 * sinc(theta / (2 pi)), exact at theta = 0.
    scale = 0.5 * np.sinc(theta / (2.0 * np.pi))
    q = np.concatenate([np.cos(theta / 2.0)[..., None], v * scale[..., None]], axis=-1)
    return _quat_to_matrix_xyz(q)


def _quat_to_rotvec(q: np.ndarray) -> np.ndarray:
    """Rotation vector of canonical quaternions (w >= 0): angle in [0, pi]."""
    vnorm = np.linalg.norm(q[..., 1:], axis=-1)
    theta = 2.0 * np.arctan2(vnorm, q[..., 0])
    # theta / sin(theta/2) = 2 / sinc(theta / (2 pi)); sinc >= 2/pi on [0, pi].
    return q[..., 1:] * (2.0 / np.sinc(theta / (2.0 * np.pi)))[..., None]


def _rz_xyz(angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    R = np.zeros(np.shape(angle) + (3, 3))
    R[..., 0, 0] = c
    R[..., 0, 1] = -s
    R[..., 1, 0] = s
    R[..., 1, 1] = c
    R[..., 2, 2] = 1.0
    return R


def _ry_xyz(angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    R = np.zeros(np.shape(angle) + (3, 3))
    R[..., 0, 0] = c
    R[..., 0, 2] = s
    R[..., 2, 0] = -s
    R[..., 2, 2] = c
    R[..., 1, 1] = 1.0
    return R


def _wrap(angle: np.ndarray, half_period: float = np.pi) -> np.ndarray:
    """Wrap angles to [-half_period, half_period) (rounding cannot reach the upper end)."""
    out = (angle + half_period) % (2.0 * half_period) - half_period
    return np.where(out >= half_period, out - 2.0 * half_period, out)


# ---------- Euler angles


def matrix_from_euler(angles, *, degrees: bool = True, frame: str = "zyx") -> np.ndarray:
    """Rotation matrices from RELION ZYZ Euler angles ``(rot, tilt, psi)``.

    Parameters
    ----------
    angles : array_like, shape (..., 3)
        ``(rot, tilt, psi)`` in degrees (``degrees=True``) or radians.
    degrees : bool, optional
        Unit of ``angles``.
    frame : {"zyx", "xyz"}, optional
        Frame of the returned matrices.

    Returns
    -------
    ndarray, shape (..., 3, 3)
        The pose rotations.  In the xyz frame this is RELION's matrix
        ``A = Rotation.from_euler("ZYZ", [rot, tilt, psi]).as_matrix().T``
        ``= Rz(-psi) Ry(-tilt) Rz(-rot)``.

    Notes
    -----
    Closed form (xyz frame), with ``c1, s1`` for ``rot``, ``c2, s2`` for
    ``tilt`` and ``c3, s3`` for ``psi``::

        A = [[ c3 c2 c1 - s3 s1,   c3 c2 s1 + s3 c1,  -c3 s2],
             [-s3 c2 c1 - c3 s1,  -s3 c2 s1 + c3 c1,   s3 s2],
             [ s2 c1,              s2 s1,              c2   ]]
    """
    _check_frame(frame)
    a = _as_real_array(angles, "angles")
    if a.ndim < 1 or a.shape[-1] != 3:
        raise ValueError(
            f"angles must have shape (..., 3) holding (rot, tilt, psi), got shape {a.shape}"
        )
    dtype = _float_dtype(a)
    rad = a.astype(np.float64)
    if degrees:
        rad = np.deg2rad(rad)
    rot, tilt, psi = np.moveaxis(rad, -1, 0)
    c1, s1 = np.cos(rot), np.sin(rot)
    c2, s2 = np.cos(tilt), np.sin(tilt)
    c3, s3 = np.cos(psi), np.sin(psi)
    A = np.empty(a.shape[:-1] + (3, 3))
    A[..., 0, 0] = c3 * c2 * c1 - s3 * s1
    A[..., 0, 1] = c3 * c2 * s1 + s3 * c1
    A[..., 0, 2] = -c3 * s2
    A[..., 1, 0] = -s3 * c2 * c1 - c3 * s1
    A[..., 1, 1] = -s3 * c2 * s1 + c3 * c1
    A[..., 1, 2] = s3 * s2
    A[..., 2, 0] = s2 * c1
    A[..., 2, 1] = s2 * s1
    A[..., 2, 2] = c2
    return _from_xyz(A, frame).astype(dtype, copy=False)


def euler_from_matrix(R, *, degrees: bool = True, frame: str = "zyx") -> np.ndarray:
    """RELION ZYZ Euler angles ``(rot, tilt, psi)`` of rotation matrices.

    Inverse of :func:`matrix_from_euler`.

    Parameters
    ----------
    R : array_like, shape (..., 3, 3)
        Rotation matrices in ``frame``.
    degrees : bool, optional
        Return degrees (default) or radians.
    frame : {"zyx", "xyz"}, optional
        Frame of ``R``.

    Returns
    -------
    ndarray, shape (..., 3)
        ``(rot, tilt, psi)`` with ``rot, psi`` in ``[-180, 180)`` and ``tilt`` in
        ``[0, 180]`` (degrees; ``[-pi, pi)`` and ``[0, pi]`` in radians).

    Notes
    -----
    The angles are read from the quaternion of ``M = A^T = Rz(rot) Ry(tilt)
    Rz(psi)``: ``(w, z) = cos(tilt/2) (cos S, sin S)`` and
    ``(y, -x) = sin(tilt/2) (cos D, sin D)`` with ``S = (rot + psi)/2`` and
    ``D = (rot - psi)/2``, which is well conditioned everywhere.  At gimbal
    lock (tilt within 2e-9 rad of 0 or 180 degrees) only ``rot + psi`` (tilt
    0) or ``rot - psi`` (tilt 180) is defined: the answer then has ``psi = 0``.
    """
    _check_frame(frame)
    a = _as_rotations(R, "R")
    dtype = _float_dtype(a)
    q = _matrix_xyz_to_quat(_to_xyz(a.astype(np.float64), frame))
    # quaternion of M = A^T is the conjugate of that of A
    w, x, y, z = q[..., 0], -q[..., 1], -q[..., 2], -q[..., 3]
    half_sum = np.arctan2(z, w)
    half_diff = np.arctan2(-x, y)
    half_tilt = np.arctan2(np.hypot(x, y), np.hypot(w, z))
    rot = half_sum + half_diff
    psi = half_sum - half_diff
    at_zero = half_tilt < _GIMBAL_TOLERANCE
    at_pi = (np.pi / 2 - half_tilt) < _GIMBAL_TOLERANCE
    rot = np.where(at_zero, 2.0 * half_sum, np.where(at_pi, 2.0 * half_diff, rot))
    psi = np.where(at_zero | at_pi, 0.0, psi)
    out = np.stack([rot, 2.0 * half_tilt, psi], axis=-1)
    half = np.pi
    if degrees:
        out, half = np.rad2deg(out), 180.0
    out[..., 0] = _wrap(out[..., 0], half)
    out[..., 2] = _wrap(out[..., 2], half)
    out[..., 1] = np.minimum(out[..., 1], half)
    return out.astype(dtype, copy=False)


# ---------- quaternions, rotation vectors, axis-angle


def matrix_from_quaternion(q, *, frame: str = "zyx") -> np.ndarray:
    """Rotation matrices from scalar-first quaternions ``(w, x, y, z)`` (xyz frame).

    Parameters
    ----------
    q : array_like, shape (..., 4)
        Quaternions, any non-zero norm (they are normalised here).
    frame : {"zyx", "xyz"}, optional
        Frame of the returned matrices.

    Returns
    -------
    ndarray, shape (..., 3, 3)
    """
    _check_frame(frame)
    a = _as_real_array(q, "q")
    if a.ndim < 1 or a.shape[-1] != 4:
        raise ValueError(f"q must have shape (..., 4) holding (w, x, y, z), got shape {a.shape}")
    a64 = a.astype(np.float64)
    norm = np.linalg.norm(a64, axis=-1)
    if a64.size and norm.min() < 1e-12:
        raise ValueError("q contains a zero quaternion; a rotation needs a non-zero quaternion")
    return _from_xyz(_quat_to_matrix_xyz(a64), frame).astype(_float_dtype(a), copy=False)


def quaternion_from_matrix(R, *, frame: str = "zyx") -> np.ndarray:
    """Unit quaternions ``(w, x, y, z)`` (xyz frame, ``w >= 0``) of rotation matrices.

    Parameters
    ----------
    R : array_like, shape (..., 3, 3)
        Rotation matrices in ``frame``.
    frame : {"zyx", "xyz"}, optional
        Frame of ``R``.

    Returns
    -------
    ndarray, shape (..., 4)
        Scalar-first unit quaternions with the canonical sign ``w >= 0``.
    """
    a, q = _quaternions_of(R, frame)
    return q.astype(_float_dtype(a), copy=False)


def matrix_from_rotvec(v, *, frame: str = "zyx") -> np.ndarray:
    """Rotation matrices from rotation vectors (xyz frame, radians).

    Parameters
    ----------
    v : array_like, shape (..., 3)
        Rotation vectors ``angle * axis`` with ``axis`` in ``(x, y, z)``.
    frame : {"zyx", "xyz"}, optional
        Frame of the returned matrices.

    Returns
    -------
    ndarray, shape (..., 3, 3)
        ``exp([v]_x)``.
    """
    _check_frame(frame)
    a = _as_real_array(v, "v")
    if a.ndim < 1 or a.shape[-1] != 3:
        raise ValueError(f"v must have shape (..., 3) in (x, y, z) order, got shape {a.shape}")
    R = _rotvec_to_matrix_xyz(a.astype(np.float64))
    return _from_xyz(R, frame).astype(_float_dtype(a), copy=False)


def rotvec_from_matrix(R, *, frame: str = "zyx") -> np.ndarray:
    """Rotation vectors (xyz frame, radians, norm in ``[0, pi]``) of rotation matrices.

    Parameters
    ----------
    R : array_like, shape (..., 3, 3)
        Rotation matrices in ``frame``.
    frame : {"zyx", "xyz"}, optional
        Frame of ``R``.

    Returns
    -------
    ndarray, shape (..., 3)
        ``log(R)`` as a vector in ``(x, y, z)`` order.
    """
    a, q = _quaternions_of(R, frame)
    return _quat_to_rotvec(q).astype(_float_dtype(a), copy=False)


def matrix_from_axis_angle(axis, angle, *, frame: str = "zyx") -> np.ndarray:
    """Rotation matrices from an axis (xyz) and a right-handed angle (radians).

    Parameters
    ----------
    axis : array_like, shape (..., 3)
        Rotation axes in ``(x, y, z)`` order (normalised here; must be non-zero).
    angle : array_like, shape (...)
        Angles in radians, broadcast against ``axis[..., 0]``.
    frame : {"zyx", "xyz"}, optional
        Frame of the returned matrices.

    Returns
    -------
    ndarray, shape (broadcast shape, 3, 3)
    """
    _check_frame(frame)
    ax = _as_real_array(axis, "axis")
    an = _as_real_array(angle, "angle")
    if ax.ndim < 1 or ax.shape[-1] != 3:
        raise ValueError(f"axis must have shape (..., 3) in (x, y, z) order, got shape {ax.shape}")
    ax64 = ax.astype(np.float64)
    norm = np.linalg.norm(ax64, axis=-1, keepdims=True)
    if ax64.size and norm.min() < 1e-12:
        raise ValueError("axis contains a zero vector; give a non-zero rotation axis")
    try:
        v = ax64 / norm * an.astype(np.float64)[..., None]
    except ValueError:
        raise ValueError(
            f"angle of shape {an.shape} does not broadcast against axis of shape {ax.shape}"
        ) from None
    R = _rotvec_to_matrix_xyz(v)
    return _from_xyz(R, frame).astype(_float_dtype(ax, an), copy=False)


def axis_angle_from_matrix(R, *, frame: str = "zyx") -> tuple[np.ndarray, np.ndarray]:
    """Axis (xyz, unit) and angle (radians, ``[0, pi]``) of rotation matrices.

    Parameters
    ----------
    R : array_like, shape (..., 3, 3)
        Rotation matrices in ``frame``.
    frame : {"zyx", "xyz"}, optional
        Frame of ``R``.

    Returns
    -------
    axis : ndarray, shape (..., 3)
        Unit axes in ``(x, y, z)`` order; ``(0, 0, 1)`` for the identity.
    angle : ndarray, shape (...)
        Right-handed angles in radians, in ``[0, pi]``.
    """
    a, q = _quaternions_of(R, frame)
    vnorm = np.linalg.norm(q[..., 1:], axis=-1)
    angle = 2.0 * np.arctan2(vnorm, q[..., 0])
    safe = vnorm > 1e-300
    axis = np.where(
        safe[..., None],
        q[..., 1:] / np.where(safe, vnorm, 1.0)[..., None],
        np.array([0.0, 0.0, 1.0]),
    )
    dtype = _float_dtype(a)
    return axis.astype(dtype, copy=False), angle.astype(dtype, copy=False)


def rotation_about_z(angle) -> np.ndarray:
    """Rotations about the physical z axis (array axis 0), zyx frame.

    Parameters
    ----------
    angle : array_like, shape (...)
        Right-handed angles in radians (from +x towards +y).

    Returns
    -------
    ndarray, shape (..., 3, 3)
        ``[[1, 0, 0], [0, cos, sin], [0, -sin, cos]]`` acting on ``(z, y, x)``:
        it turns the (y, x) plane of the array and leaves axis 0 unchanged.
    """
    a = _as_real_array(angle, "angle")
    return _from_xyz(_rz_xyz(a.astype(np.float64)), "zyx").astype(_float_dtype(a), copy=False)


def random_rotations(n: int, *, seed=None) -> np.ndarray:
    """Uniform (Haar) random rotations.

    Parameters
    ----------
    n : int
        Number of rotations (>= 0).
    seed : None, int or numpy.random.Generator, optional
        Passed to :func:`numpy.random.default_rng`.

    Returns
    -------
    ndarray, shape (n, 3, 3), float64
        zyx-frame rotation matrices.

    Notes
    -----
    Normalised 4D standard normal vectors are uniform on the unit sphere of
    quaternions, which double covers SO(3) with the Haar measure.
    """
    n = check_int(n, "n", minimum=0)
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n, 4))
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    q = q / np.maximum(norm, 1e-300)
    return _from_xyz(_quat_to_matrix_xyz(q), "zyx")


def perturb_rotations(R, angle, *, seed=None) -> np.ndarray:
    """Each rotation turned by exactly ``angle`` about its own uniformly random axis.

    Parameters
    ----------
    R : array_like, shape (n, 3, 3)
        zyx-frame rotation matrices.
    angle : float
        Turn, radians, in ``[0, pi]``.
    seed : None, int or numpy.random.Generator, optional
        Passed to :func:`numpy.random.default_rng` (one standard normal 3-vector per
        rotation gives its axis).

    Returns
    -------
    ndarray, shape (n, 3, 3), float64
        ``R_l T_l`` with ``T_l`` the turn by ``angle`` about axis ``a_l`` (zyx frame), so
        ``geodesic_distance(R, out) == angle`` for every rotation (what refinement tests
        start from: the true poses each wrong by the same angle).
    """
    Rs = _as_rotations(R).astype(np.float64, copy=False)
    if Rs.ndim != 3:
        raise ValueError(f"R must be a stack of rotations of shape (n, 3, 3), got shape "
                         f"{Rs.shape}")
    angle = _check_angle(angle, "angle", low=0.0, high=np.pi, low_inclusive=True)
    axes = np.random.default_rng(seed).standard_normal((Rs.shape[0], 3))
    axes /= np.maximum(np.linalg.norm(axes, axis=1, keepdims=True), 1e-300)
    return np.matmul(Rs, matrix_from_rotvec(axes * angle, frame="zyx"))


# ---------- directions and SO(3) grids


def direction_from_angles(phi1, phi2) -> np.ndarray:
    """Unit vectors (xyz) from azimuth ``phi1`` and inclination ``phi2`` (radians).

    Parameters
    ----------
    phi1, phi2 : array_like, broadcastable shapes
        Azimuth about +z from +x, and inclination from +z, in radians.

    Returns
    -------
    ndarray, shape (broadcast shape, 3)
        ``(sin phi2 cos phi1, sin phi2 sin phi1, cos phi2)``.
    """
    p1 = _as_real_array(phi1, "phi1")
    p2 = _as_real_array(phi2, "phi2")
    dtype = _float_dtype(p1, p2)
    a, b = np.broadcast_arrays(p1.astype(np.float64), p2.astype(np.float64))
    d = np.stack([np.sin(b) * np.cos(a), np.sin(b) * np.sin(a), np.cos(b)], axis=-1)
    return d.astype(dtype, copy=False)


def direction_angles(directions) -> tuple[np.ndarray, np.ndarray]:
    """Azimuth and inclination of directions (inverse of :func:`direction_from_angles`).

    Parameters
    ----------
    directions : array_like, shape (..., 3)
        Non-zero vectors in ``(x, y, z)`` order (need not be unit).

    Returns
    -------
    phi1 : ndarray, shape (...)
        Azimuth in radians, in ``[0, 2 pi)``.
    phi2 : ndarray, shape (...)
        Inclination from +z in radians, in ``[0, pi]``.
    """
    d = _as_real_array(directions, "directions")
    if d.ndim < 1 or d.shape[-1] != 3:
        raise ValueError(
            f"directions must have shape (..., 3) in (x, y, z) order, got shape {d.shape}"
        )
    d64 = d.astype(np.float64)
    if d64.size and np.linalg.norm(d64, axis=-1).min() < 1e-12:
        raise ValueError("directions contains a zero vector; a direction must be non-zero")
    x, y, z = np.moveaxis(d64, -1, 0)
    phi1 = np.mod(np.arctan2(y, x), 2.0 * np.pi)
    phi1 = np.where(phi1 >= 2.0 * np.pi, 0.0, phi1)  # -0.0 % 2 pi rounding
    phi2 = np.arctan2(np.hypot(x, y), z)
    dtype = _float_dtype(d)
    return phi1.astype(dtype, copy=False), phi2.astype(dtype, copy=False)


def fibonacci_directions(n: int) -> np.ndarray:
    """Fibonacci sphere: ``n`` nearly uniform unit vectors (Eloy et al. 2023, sec. 2.1).

    Parameters
    ----------
    n : int
        Number of directions (>= 1).

    Returns
    -------
    ndarray, shape (n, 3), float64
        ``d_j = direction_from_angles(phi1_j, phi2_j)`` (xyz) with
        ``phi1_j = 2 pi j / G mod 2 pi`` (``G`` the golden ratio) and
        ``phi2_j = arccos(1 - (2 j + 1) / n)``.
    """
    n = check_int(n, "n", minimum=1)
    j = np.arange(n, dtype=np.float64)
    phi1 = np.mod(2.0 * np.pi * j / _GOLDEN_RATIO, 2.0 * np.pi)
    phi2 = np.arccos(1.0 - (2.0 * j + 1.0) / n)
    return direction_from_angles(phi1, phi2)


@dataclass(frozen=True, eq=False, repr=False)
class SO3Grid:
    """Product grid of SO(3): directions x in-plane angles (Eloy et al. 2023, sec. 2.1).

    The element ``(j, i)`` is the rotation whose xyz matrix is
    ``Rotation.from_euler("ZYZ", [phi1_j, phi2_j, psi_i]) = Rz(phi1) Ry(phi2)
    Rz(psi)``: it first turns the reference by ``psi`` about its own z axis,
    then carries the reference z axis onto the direction ``d_j``.

    Design decision: this differs on purpose from the literal axis-angle
    reading of Eloy et al. 2023 (rotation by ``psi`` about the axis ``d``).  The Haar
    measure is the product of the uniform measure on the direction ``R e_z``
    and the uniform measure on the in-plane angle, so this product grid is
    uniform on SO(3); and Cn symmetry about z (``R ~ R C_k``) adds
    ``2 pi k / n`` to ``psi`` only, so SO(3)/Cn is covered exactly by
    restricting ``psi`` to ``[0, 2 pi / n)``.

    Attributes
    ----------
    directions : ndarray, shape (M_d, 3)
        Unit vectors in ``(x, y, z)`` order (read-only).
    psi : ndarray, shape (M_psi,)
        In-plane angles in radians (read-only).
    symmetry : int
        Order n of the cyclic symmetry Cn about z that the grid is reduced by
        (1 = none); used by :meth:`nearest`.
    """

    directions: np.ndarray
    psi: np.ndarray
    symmetry: int = 1

    def __post_init__(self):
        d = _as_real_array(self.directions, "directions")
        if d.ndim != 2 or d.shape[1] != 3 or d.shape[0] < 1:
            raise ValueError(
                f"directions must have shape (M_d, 3) with M_d >= 1, got shape {d.shape}"
            )
        d = np.array(d, dtype=np.float64)
        norm = np.linalg.norm(d, axis=-1)
        if np.abs(norm - 1.0).max() > 1e-6:
            raise ValueError(
                "directions must be unit vectors "
                f"(max | |d| - 1 | = {np.abs(norm - 1).max():.3g}); "
                "normalise them first"
            )
        p = _as_real_array(self.psi, "psi")
        if p.ndim != 1 or p.shape[0] < 1:
            raise ValueError(f"psi must have shape (M_psi,) with M_psi >= 1, got shape {p.shape}")
        p = np.array(p, dtype=np.float64)
        sym = check_symmetry(self.symmetry)
        d.flags.writeable = False
        p.flags.writeable = False
        object.__setattr__(self, "directions", d)
        object.__setattr__(self, "psi", p)
        object.__setattr__(self, "symmetry", sym)

    def __repr__(self) -> str:
        return (
            f"SO3Grid(n_directions={self.n_directions}, n_psi={self.n_psi}, "
            f"symmetry={self.symmetry})"
        )

    @property
    def n_directions(self) -> int:
        """Number of directions M_d."""
        return self.directions.shape[0]

    @property
    def n_psi(self) -> int:
        """Number of in-plane angles M_psi."""
        return self.psi.shape[0]

    @property
    def size(self) -> int:
        """Number of grid elements M_d * M_psi."""
        return self.n_directions * self.n_psi

    def _tilts_xyz(self) -> np.ndarray:
        phi1, phi2 = direction_angles(self.directions)
        return np.matmul(_rz_xyz(phi1), _ry_xyz(phi2))

    def matrices(self) -> np.ndarray:
        """All grid rotations.

        Returns
        -------
        ndarray, shape (M_d, M_psi, 3, 3), float64
            zyx-frame matrices; element ``[j, i]`` is ``Rz(phi1_j) Ry(phi2_j)
            Rz(psi_i)`` (xyz) converted to the zyx frame.
        """
        R = np.matmul(self._tilts_xyz()[:, None], _rz_xyz(self.psi)[None, :])
        return _from_xyz(R, "zyx")

    def matrix(self, j: int, i: int) -> np.ndarray:
        """The zyx-frame rotation ``(3, 3)`` of direction ``j`` and in-plane angle ``i``."""
        for name, idx, size in (("j", j, self.n_directions), ("i", i, self.n_psi)):
            if isinstance(idx, bool) or not isinstance(idx, (int, np.integer)) or not (
                0 <= idx < size
            ):
                raise ValueError(f"{name} must be an integer in [0, {size}), got {idx!r}")
        phi1, phi2 = direction_angles(self.directions[j])
        R = _rz_xyz(phi1) @ _ry_xyz(phi2) @ _rz_xyz(self.psi[i])
        return _from_xyz(R, "zyx")

    def nearest(self, R) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the grid element nearest to rotations, modulo the grid's symmetry.

        Parameters
        ----------
        R : array_like, shape (..., 3, 3)
            zyx-frame rotation matrices.

        Returns
        -------
        j : ndarray of int, shape (...)
            Direction indices.
        i : ndarray of int, shape (...)
            In-plane angle indices; the geodesic distance
            ``geodesic_distance_sym(R, grid.matrix(j, i), symmetry=grid.symmetry)``
            is minimal over the grid.

        Notes
        -----
        Exhaustive: the geodesic distance is monotone in ``trace(G^T R)``, so
        the nearest element maximises a matrix product ``(B, 9) @ (9, K n)``,
        computed in chunks of queries.
        """
        a = _as_rotations(R, "R").astype(np.float64)
        shape = a.shape[:-2]
        q = a.reshape(-1, 9)
        grid = self.matrices().reshape(-1, 3, 3)
        grid = np.matmul(grid[:, None], cyclic_group(self.symmetry)[None])  # (K, n, 3, 3)
        k, n = grid.shape[:2]
        g = grid.reshape(k * n, 9).T
        best = np.empty(q.shape[0], dtype=np.intp)
        chunk = max(1, (1 << 22) // (k * n))
        for start in range(0, q.shape[0], chunk):
            scores = (q[start : start + chunk] @ g).reshape(-1, k, n).max(axis=-1)
            best[start : start + chunk] = np.argmax(scores, axis=-1)
        j, i = np.unravel_index(best, (self.n_directions, self.n_psi))
        return j.reshape(shape), i.reshape(shape)


def so3_grid(n_directions: int, n_psi: int, *, symmetry: int = 1) -> SO3Grid:
    """The Eloy et al. 2023 grid of SO(3) (or SO(3)/Cn): Fibonacci directions x in-plane angles.

    Parameters
    ----------
    n_directions : int
        Number M_d of Fibonacci directions (>= 1).
    n_psi : int
        Number M_psi of in-plane angles (>= 1).
    symmetry : int, optional
        Order n of the cyclic symmetry about z; the in-plane angles are
        ``psi_i = 2 pi i / (n_psi * symmetry)``, ``i < n_psi``, covering one
        asymmetric unit ``[0, 2 pi / n)``.

    Returns
    -------
    SO3Grid
        See :class:`SO3Grid` for the element convention.
    """
    n_directions = check_int(n_directions, "n_directions", minimum=1)
    n_psi = check_int(n_psi, "n_psi", minimum=1)
    symmetry = check_symmetry(symmetry)
    psi = 2.0 * np.pi * np.arange(n_psi) / (n_psi * symmetry)
    return SO3Grid(directions=fibonacci_directions(n_directions), psi=psi, symmetry=symmetry)


def so3_grid_for_step(step: float, *, symmetry: int = 1) -> SO3Grid:
    """The :func:`so3_grid` whose angular spacing is about ``step`` radians.

    Parameters
    ----------
    step : float
        Target spacing in radians, in ``(0, pi]``.
    symmetry : int, optional
        Order n of the cyclic symmetry about z.

    Returns
    -------
    SO3Grid
        ``n_directions = ceil(4 pi / step^2)`` (one direction per ``step^2``
        of solid angle) and ``n_psi = ceil(2 pi / (step * symmetry))``.
    """
    step = _check_angle(step, "step", low=0.0, high=np.pi, low_inclusive=False)
    symmetry = check_symmetry(symmetry)
    n_d = max(1, int(np.ceil(4.0 * np.pi / step**2 - 1e-9)))
    n_psi = max(1, int(np.ceil(2.0 * np.pi / (step * symmetry) - 1e-9)))
    if n_d * n_psi > _MAX_GRID_SIZE:
        raise ValueError(
            f"step = {step:g} rad gives {n_d * n_psi} rotations (more than {_MAX_GRID_SIZE}); "
            "use a coarser step, then local_rotation_grid around the best candidates"
        )
    return so3_grid(n_d, n_psi, symmetry=symmetry)


def uniform_rotation_grid(step: float, *, symmetry: int = 1) -> np.ndarray:
    """Rotations covering SO(3) (or SO(3)/Cn) with an angular spacing of about ``step``.

    Parameters
    ----------
    step : float
        Target spacing in radians, in ``(0, pi]`` (e.g. ``np.deg2rad(20)`` for
        the exhaustive coarse search of Fortun et al. 2018, sec. V-A-4).
    symmetry : int, optional
        Order n of the cyclic symmetry about z: the grid covers one
        asymmetric unit.

    Returns
    -------
    ndarray, shape (K, 3, 3), float64
        zyx-frame rotations, ``K = n_directions * n_psi`` of
        :func:`so3_grid_for_step`, in its ``(j, i)`` row-major order.  Every
        rotation lies within about ``step`` (geodesic, modulo Cn) of one of them.
    """
    return so3_grid_for_step(step, symmetry=symmetry).matrices().reshape(-1, 3, 3)


def local_rotation_grid(step: float, max_angle: float) -> np.ndarray:
    """Small rotations on a cubic lattice of rotation vectors, for local searches.

    Parameters
    ----------
    step : float
        Lattice spacing of the rotation vectors, radians (> 0).
    max_angle : float
        Largest rotation angle kept, radians, in ``[0, pi]`` (inclusive, up
        to 1e-9 relative rounding).

    Returns
    -------
    ndarray, shape (K, 3, 3), float64
        zyx-frame matrices ``exp([w]_x)`` for the lattice vectors ``w = step *
        (a, b, c)`` (integers) with ``|w| <= max_angle``, sorted by ``|w|``; the
        identity comes first.

    Notes
    -----
    A neighbourhood of a rotation ``R_center`` is ``R_center @ local``: the
    increment is applied first, in the reference frame (a particle
    ``R_center exp([w]) f`` is the reference turned a little, then posed).
    With ``step = 5 deg, max_angle = 10 deg`` there are 33 elements; with
    ``1 deg, 5 deg``, 515.
    """
    step = _check_angle(step, "step", low=0.0, high=np.inf, low_inclusive=False)
    max_angle = _check_angle(max_angle, "max_angle", low=0.0, high=np.pi, low_inclusive=True)
    m = int(np.floor(max_angle / step * (1 + 1e-9)))
    if (2 * m + 1) ** 3 > 20 * _MAX_GRID_SIZE:
        raise ValueError(
            f"step = {step:g} rad is too fine for max_angle = {max_angle:g} rad "
            f"({(2 * m + 1) ** 3} lattice points); use a larger step"
        )
    r = np.arange(-m, m + 1, dtype=np.float64)
    w = np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1).reshape(-1, 3) * step
    norm = np.linalg.norm(w, axis=-1)
    keep = norm <= max_angle * (1 + 1e-9)
    w, norm = w[keep], norm[keep]
    w = w[np.argsort(norm, kind="stable")]
    return _from_xyz(_rotvec_to_matrix_xyz(w), "zyx")


def cyclic_group(n: int) -> np.ndarray:
    """The cyclic group Cn about the physical z axis.

    Parameters
    ----------
    n : int
        Order of the group (>= 1).

    Returns
    -------
    ndarray, shape (n, 3, 3), float64
        zyx-frame rotations by ``2 pi k / n`` about z, ``k = 0 .. n-1``
        (the identity first).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be the order of Cn, an integer >= 1, got {n!r}")
    return rotation_about_z(2.0 * np.pi * np.arange(int(n)) / int(n)).astype(np.float64)


# ---------- distances


def _geodesic(R1: np.ndarray, R2: np.ndarray) -> np.ndarray:
    Q = np.matmul(np.swapaxes(R1, -1, -2), R2)
    cos2 = Q[..., 0, 0] + Q[..., 1, 1] + Q[..., 2, 2] - 1.0
    sin2 = np.sqrt(
        (Q[..., 2, 1] - Q[..., 1, 2]) ** 2
        + (Q[..., 0, 2] - Q[..., 2, 0]) ** 2
        + (Q[..., 1, 0] - Q[..., 0, 1]) ** 2
    )
    return np.arctan2(sin2, cos2)


def geodesic_distance(R1, R2) -> np.ndarray:
    """Geodesic (angular) distance between rotations.

    Parameters
    ----------
    R1, R2 : array_like, shape (..., 3, 3)
        Rotation matrices (same frame; the distance does not depend on it),
        broadcast over the leading axes.

    Returns
    -------
    ndarray, shape (broadcast leading shape), float64
        The angle of ``R1^T R2`` in radians, in ``[0, pi]``.

    Notes
    -----
    Computed in float64 as ``atan2(|vee(Q - Q^T)| / 2, (tr Q - 1) / 2)``, which
    is accurate at small angles and near pi (no arccos of a clipped cosine).
    """
    a, b = _as_rotation_pair(R1, R2)
    return _geodesic(a, b)


def geodesic_distance_sym(R1, R2, *, symmetry: int = 1) -> np.ndarray:
    """Geodesic distance modulo the cyclic symmetry Cn about z.

    Parameters
    ----------
    R1, R2 : array_like, shape (..., 3, 3)
        zyx-frame rotation matrices, broadcast over the leading axes.
    symmetry : int, optional
        Order n of the cyclic symmetry (1 = plain geodesic distance).

    Returns
    -------
    ndarray, shape (broadcast leading shape), float64
        ``min_k geodesic_distance(R1, R2 @ C_k)`` in radians: poses of a
        Cn-symmetric reference are equivalent under ``R ~ R C_k``.
    """
    symmetry = check_symmetry(symmetry)
    a, b = _as_rotation_pair(R1, R2)
    if symmetry == 1:
        return _geodesic(a, b)
    b_sym = np.matmul(b[..., None, :, :], cyclic_group(symmetry))
    return _geodesic(a[..., None, :, :], b_sym).min(axis=-1)


# ---------- poses


def as_voxel_size(voxel_size) -> np.ndarray:
    """Validate a voxel size and return it as a ``(z, y, x)`` float64 array.

    Parameters
    ----------
    voxel_size : float or sequence of 3 floats
        Voxel size in micrometres, ``(z, y, x)``; a scalar means isotropic.

    Returns
    -------
    ndarray, shape (3,), float64
        ``(z, y, x)`` voxel size in micrometres, all > 0.
    """
    try:
        v = np.asarray(voxel_size, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"voxel_size must be a number or a (z, y, x) tuple in micrometres, got {voxel_size!r}"
        ) from None
    if v.ndim == 0:
        v = np.full(3, float(v))
    if v.shape != (3,):
        raise ValueError(
            f"voxel_size must be a number or a (z, y, x) tuple of 3 values in micrometres, "
            f"got {voxel_size!r}"
        )
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise ValueError(
            f"voxel_size must be finite and > 0 (micrometres, (z, y, x)), got {voxel_size!r}"
        )
    return v


@dataclass(frozen=True, eq=False, repr=False)
class Poses:
    """A set of particle poses (algorithm side: zyx frame, voxels).

    Particle ``l`` is ``T_{t_l}(R_l f)``: the reference rotated about the box
    centre by ``rotations[l]``, then shifted by ``translations[l]``.

    Attributes
    ----------
    rotations : ndarray, shape (N, 3, 3), float64
        zyx-frame rotation matrices (orthonormal, det +1 within 1e-4),
        read-only.
    translations : ndarray, shape (N, 3), float64
        Shifts in voxels, ``(z, y, x)``, read-only.

    Notes
    -----
    Build with ``Poses(rotations, translations)`` or the named constructors
    :meth:`identity`, :meth:`from_matrices`, :meth:`from_stored`,
    :meth:`concatenate`.
    """

    rotations: np.ndarray
    translations: np.ndarray

    def __post_init__(self):
        R = np.asarray(self.rotations)
        t = np.asarray(self.translations)
        if R.ndim != 3 or R.shape[1:] != (3, 3):
            raise ValueError(f"rotations must have shape (N, 3, 3), got shape {R.shape}")
        if t.ndim != 2 or t.shape[1] != 3:
            raise ValueError(
                f"translations must have shape (N, 3) in voxels (z, y, x), got shape {t.shape}"
            )
        if R.shape[0] != t.shape[0]:
            raise ValueError(
                f"rotations and translations must describe the same number of particles, "
                f"got {R.shape[0]} rotations and {t.shape[0]} translations"
            )
        R = np.array(_as_rotations(R, "rotations"), dtype=np.float64)
        t = np.array(_as_real_array(t, "translations"), dtype=np.float64)
        R.flags.writeable = False
        t.flags.writeable = False
        object.__setattr__(self, "rotations", R)
        object.__setattr__(self, "translations", t)

    # -- constructors
    @classmethod
    def identity(cls, n: int) -> "Poses":
        """``n`` poses with identity rotation and zero translation (``n >= 0``)."""
        n = check_int(n, "n", minimum=0)
        return cls(np.broadcast_to(np.eye(3), (n, 3, 3)), np.zeros((n, 3)))

    @classmethod
    def from_matrices(cls, matrices) -> "Poses":
        """Poses from homogeneous matrices.

        Parameters
        ----------
        matrices : array_like, shape (N, 4, 4)
            ``[[R, t], [0, 0, 0, 1]]`` in the zyx frame, ``t`` in voxels.
        """
        M = np.asarray(matrices)
        if M.ndim != 3 or M.shape[1:] != (4, 4):
            raise ValueError(f"matrices must have shape (N, 4, 4), got shape {M.shape}")
        M = _as_real_array(M, "matrices").astype(np.float64)
        if M.shape[0]:
            err = np.abs(M[:, 3] - np.array([0.0, 0.0, 0.0, 1.0])).max(axis=1)
            if err.max() > 1e-6:
                raise ValueError(
                    "matrices must be homogeneous with last row (0, 0, 0, 1); matrix "
                    f"{int(np.argmax(err))} has last row {M[int(np.argmax(err)), 3].tolist()}"
                )
        return cls(M[:, :3, :3], M[:, :3, 3])

    @classmethod
    def from_stored(cls, matrices_xyz_um, voxel_size) -> "Poses":
        """Poses from stored matrices (xyz order, translations in micrometres).

        Parameters
        ----------
        matrices_xyz_um : array_like, shape (N, 4, 4)
            ``[[R_xyz, t_xyz], [0, 1]]`` with ``t_xyz`` in micrometres.
        voxel_size : float or tuple of 3 floats
            ``(z, y, x)`` voxel size in micrometres (> 0).
        """
        vs = as_voxel_size(voxel_size)
        M = np.asarray(matrices_xyz_um)
        if M.ndim != 3 or M.shape[1:] != (4, 4):
            raise ValueError(
                f"matrices_xyz_um must have shape (N, 4, 4), got shape {M.shape}"
            )
        M = swap_xyz_zyx(_as_real_array(M, "matrices_xyz_um").astype(np.float64))
        M[:, :3, 3] /= vs
        return cls.from_matrices(M)

    @classmethod
    def concatenate(cls, poses: Sequence["Poses"]) -> "Poses":
        """One pose set from several, in order (a non-empty sequence of Poses)."""
        poses = list(poses)
        if not poses:
            raise ValueError("poses must be a non-empty sequence of Poses, got an empty one")
        bad = [type(p).__name__ for p in poses if not isinstance(p, Poses)]
        if bad:
            raise ValueError(f"poses must contain only Poses objects, got {bad}")
        return cls(
            np.concatenate([p.rotations for p in poses]),
            np.concatenate([p.translations for p in poses]),
        )

    # -- views
    def __len__(self) -> int:
        return self.rotations.shape[0]

    def __repr__(self) -> str:
        return f"Poses(n={len(self)})"

    def __getitem__(self, index) -> "Poses":
        """A subset as Poses (an int gives a set of one)."""
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            index = [int(index)]
        return Poses(self.rotations[index], self.translations[index])

    def matrices(self) -> np.ndarray:
        """Homogeneous matrices ``(N, 4, 4)``: zyx frame, translations in voxels."""
        M = np.zeros((len(self), 4, 4))
        M[:, :3, :3] = self.rotations
        M[:, :3, 3] = self.translations
        M[:, 3, 3] = 1.0
        return M

    def to_stored(self, voxel_size) -> np.ndarray:
        """Stored matrices ``(N, 4, 4)``: xyz order, translations in micrometres.

        Parameters
        ----------
        voxel_size : float or tuple of 3 floats
            ``(z, y, x)`` voxel size in micrometres (> 0).
        """
        vs = as_voxel_size(voxel_size)
        M = self.matrices()
        M[:, :3, 3] *= vs
        return swap_xyz_zyx(M)

    def compose_rotation(self, R) -> "Poses":
        """Right-multiply every rotation by ``R`` (change of reference frame).

        Parameters
        ----------
        R : array_like, shape (3, 3)
            zyx-frame rotation.

        Returns
        -------
        Poses
            Rotations ``R_l @ R``, same translations: the same particles
            described for the reference turned by ``R^T`` (``T_t(R_l f) =
            T_t(R_l R (R^T f))``).
        """
        G = np.asarray(R)
        if G.shape != (3, 3):
            raise ValueError(f"R must be one rotation matrix of shape (3, 3), got shape {G.shape}")
        G = _as_rotations(G, "R").astype(np.float64)
        return Poses(np.matmul(self.rotations, G), self.translations)


# ---------- global alignment


def _project_to_so3(M: np.ndarray) -> np.ndarray:
    """Nearest rotation (Frobenius) to a 3x3 matrix."""
    U, _, Vt = np.linalg.svd(M)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt)) or 1.0])
    return U @ D @ Vt


def align_rotations(R_est, R_true, *, symmetry: int = 1) -> np.ndarray:
    """Global rotation that best aligns estimated poses onto true poses.

    A reconstruction's frame is arbitrary: if the estimated volume is the true
    one turned by ``G`` (``f_est = G f``, i.e. ``f_est(x) = f(G^T x)``), the
    particles ``R_true f = (R_true G^T) f_est`` give ``R_est = R_true G^T``,
    that is ``R_true = R_est @ G``.  This function finds that ``G``; then
    ``Poses(R_est, t).compose_rotation(G)`` are the poses in the true frame and
    the estimated volume turned by ``G^T`` is comparable with the truth.

    Parameters
    ----------
    R_est : array_like, shape (N, 3, 3)
        Estimated zyx-frame rotations.
    R_true : array_like, shape (N, 3, 3)
        True zyx-frame rotations, same particles in the same order.
    symmetry : int, optional
        Order n of the cyclic symmetry about z of the reference: each pair is
        compared modulo ``R_true ~ R_true C_k``, and ``G`` is defined modulo
        ``G ~ G C_k``.

    Returns
    -------
    ndarray, shape (3, 3), float64
        zyx-frame ``G`` minimising ``sum_l min_k d(R_est_l G, R_true_l C_k)``
        (``d`` the geodesic distance).

    Notes
    -----
    With ``Q_l = R_est_l^T R_true_l``, ``d(R_est_l G, R_true_l C_k) = d(G, Q_l
    C_k)``: ``G`` is the geodesic L1 median of the cosets ``Q_l Cn``.
    Starting points: the chordal L2 mean of the ``Q_l`` and up to 32 of the
    ``Q_l`` themselves (each is an exact answer for its own particle); the
    best start by the L1 cost is then refined by alternating the choice of
    ``k_l`` with Weiszfeld steps on SO(3) (robust to outlier poses).
    """
    symmetry = check_symmetry(symmetry)
    A = _as_rotations(R_est, "R_est").astype(np.float64)
    B = _as_rotations(R_true, "R_true").astype(np.float64)
    if A.ndim != 3 or B.ndim != 3 or A.shape != B.shape:
        raise ValueError(
            f"R_est and R_true must both have shape (N, 3, 3) with the same N, "
            f"got {A.shape} and {B.shape}"
        )
    if A.shape[0] == 0:
        raise ValueError("R_est and R_true are empty; at least one pose pair is needed")
    C = cyclic_group(symmetry)
    Q = np.matmul(np.swapaxes(A, -1, -2), B)  # (N, 3, 3)
    cosets = np.matmul(Q[:, None], C[None])  # (N, n, 3, 3)
    flat = cosets.reshape(-1, 9)  # rows: (l, k)
    n_pairs = Q.shape[0]

    def cost_and_targets(G: np.ndarray):
        # max trace(G^T Q_l C_k) <=> min distance; choose k per particle
        scores = (flat @ G.reshape(9)).reshape(n_pairs, symmetry)
        k = np.argmax(scores, axis=1)
        T = cosets[np.arange(n_pairs), k]
        return _geodesic(G, T).sum(), T

    idx = np.unique(np.linspace(0, n_pairs - 1, min(n_pairs, 32)).round().astype(int))
    starts = [Q[i] for i in idx]
    starts.append(_project_to_so3(Q.sum(axis=0)))
    costs = [cost_and_targets(G0)[0] for G0 in starts]
    G = starts[int(np.argmin(costs))]

    # chordal mean of the assigned representatives, then Weiszfeld (L1 median)
    _, T = cost_and_targets(G)
    G_mean = _project_to_so3(T.sum(axis=0))
    if cost_and_targets(G_mean)[0] <= cost_and_targets(G)[0]:
        G = G_mean
    for _ in range(200):
        _, T = cost_and_targets(G)
        w = _quat_to_rotvec(_matrix_xyz_to_quat(np.matmul(G.T, T)))  # log(G^T T_l), frame-free use
        dist = np.linalg.norm(w, axis=-1)
        weights = 1.0 / np.maximum(dist, 1e-12)
        step = (w * weights[:, None]).sum(axis=0) / weights.sum()
        G = G @ _rotvec_to_matrix_xyz(step)
        if np.linalg.norm(step) < 1e-12:
            break
    return _project_to_so3(G)


def pose_errors(R_est, R_true, *, symmetry: int = 1) -> np.ndarray:
    """Per-particle angular errors after the best global alignment, modulo Cn.

    Parameters
    ----------
    R_est, R_true : array_like, shape (N, 3, 3)
        Estimated and true zyx-frame rotations of the same particles.
    symmetry : int, optional
        Order n of the cyclic symmetry about z of the reference.

    Returns
    -------
    ndarray, shape (N,), float64
        ``geodesic_distance_sym(R_est @ G, R_true, symmetry=n)`` in radians,
        with ``G = align_rotations(R_est, R_true, symmetry=n)``.
    """
    G = align_rotations(R_est, R_true, symmetry=symmetry)
    A = np.asarray(R_est, dtype=np.float64)
    return geodesic_distance_sym(np.matmul(A, G), R_true, symmetry=symmetry)
