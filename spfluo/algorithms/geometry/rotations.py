"""Rotation representations and their conversions.

zyx-frame rotation matrices (what algorithms use) to and from the named representations
of the xyz frame: the frame swap, RELION ZYZ Euler angles, quaternions, rotation vectors,
axis-angle; rotations about z and the cyclic group Cn; random and perturbed rotations.
The conventions are written once, in the docstring of :mod:`spfluo.algorithms.geometry`.

The private kernels (``*_xyz``, quaternion <-> matrix, no validation) work in float64
in the xyz frame; the other modules of the package use them too.
"""

from __future__ import annotations

import numpy as np

from spfluo.algorithms._validation import check_int
from spfluo.algorithms.geometry._validation import (
    as_real_array,
    as_rotations,
    check_angle,
    check_frame,
    float_dtype,
)

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
    "cyclic_group",
]

_GIMBAL_TOLERANCE = 1e-9  # radians on the half tilt angle


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


def from_xyz(R: np.ndarray, frame: str) -> np.ndarray:
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


def matrix_xyz_to_quat(R: np.ndarray) -> np.ndarray:
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


def rotvec_to_matrix_xyz(v: np.ndarray) -> np.ndarray:
    theta = np.linalg.norm(v, axis=-1)
    # sin(theta/2)/theta = 0.5 * sinc(theta / (2 pi)), exact at theta = 0.
    scale = 0.5 * np.sinc(theta / (2.0 * np.pi))
    q = np.concatenate([np.cos(theta / 2.0)[..., None], v * scale[..., None]], axis=-1)
    return _quat_to_matrix_xyz(q)


def quat_to_rotvec(q: np.ndarray) -> np.ndarray:
    """Rotation vector of canonical quaternions (w >= 0): angle in [0, pi]."""
    vnorm = np.linalg.norm(q[..., 1:], axis=-1)
    theta = 2.0 * np.arctan2(vnorm, q[..., 0])
    # theta / sin(theta/2) = 2 / sinc(theta / (2 pi)); sinc >= 2/pi on [0, pi].
    return q[..., 1:] * (2.0 / np.sinc(theta / (2.0 * np.pi)))[..., None]


def rz_xyz(angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    R = np.zeros(np.shape(angle) + (3, 3))
    R[..., 0, 0] = c
    R[..., 0, 1] = -s
    R[..., 1, 0] = s
    R[..., 1, 1] = c
    R[..., 2, 2] = 1.0
    return R


def ry_xyz(angle: np.ndarray) -> np.ndarray:
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


def _quaternions_of(R, frame: str) -> tuple[np.ndarray, np.ndarray]:
    """The validated input ``R`` (its dtype kept) and its xyz-frame unit quaternions
    ``(w, x, y, z)``, float64, ``w >= 0``."""
    check_frame(frame)
    a = as_rotations(R, "R")
    q = matrix_xyz_to_quat(_to_xyz(a.astype(np.float64), frame))
    return a, q



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
    check_frame(frame)
    a = as_real_array(angles, "angles")
    if a.ndim < 1 or a.shape[-1] != 3:
        raise ValueError(
            f"angles must have shape (..., 3) holding (rot, tilt, psi), got shape {a.shape}"
        )
    dtype = float_dtype(a)
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
    return from_xyz(A, frame).astype(dtype, copy=False)


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
    check_frame(frame)
    a = as_rotations(R, "R")
    dtype = float_dtype(a)
    q = matrix_xyz_to_quat(_to_xyz(a.astype(np.float64), frame))
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
    check_frame(frame)
    a = as_real_array(q, "q")
    if a.ndim < 1 or a.shape[-1] != 4:
        raise ValueError(f"q must have shape (..., 4) holding (w, x, y, z), got shape {a.shape}")
    a64 = a.astype(np.float64)
    norm = np.linalg.norm(a64, axis=-1)
    if a64.size and norm.min() < 1e-12:
        raise ValueError("q contains a zero quaternion; a rotation needs a non-zero quaternion")
    return from_xyz(_quat_to_matrix_xyz(a64), frame).astype(float_dtype(a), copy=False)


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
    return q.astype(float_dtype(a), copy=False)


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
    check_frame(frame)
    a = as_real_array(v, "v")
    if a.ndim < 1 or a.shape[-1] != 3:
        raise ValueError(f"v must have shape (..., 3) in (x, y, z) order, got shape {a.shape}")
    R = rotvec_to_matrix_xyz(a.astype(np.float64))
    return from_xyz(R, frame).astype(float_dtype(a), copy=False)


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
    return quat_to_rotvec(q).astype(float_dtype(a), copy=False)


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
    check_frame(frame)
    ax = as_real_array(axis, "axis")
    an = as_real_array(angle, "angle")
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
    R = rotvec_to_matrix_xyz(v)
    return from_xyz(R, frame).astype(float_dtype(ax, an), copy=False)


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
    dtype = float_dtype(a)
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
    a = as_real_array(angle, "angle")
    return from_xyz(rz_xyz(a.astype(np.float64)), "zyx").astype(float_dtype(a), copy=False)


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
    return from_xyz(_quat_to_matrix_xyz(q), "zyx")


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
    Rs = as_rotations(R).astype(np.float64, copy=False)
    if Rs.ndim != 3:
        raise ValueError(f"R must be a stack of rotations of shape (n, 3, 3), got shape "
                         f"{Rs.shape}")
    angle = check_angle(angle, "angle", low=0.0, high=np.pi, low_inclusive=True)
    axes = np.random.default_rng(seed).standard_normal((Rs.shape[0], 3))
    axes /= np.maximum(np.linalg.norm(axes, axis=1, keepdims=True), 1e-300)
    return np.matmul(Rs, matrix_from_rotvec(axes * angle, frame="zyx"))


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
