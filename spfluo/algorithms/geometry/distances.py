"""Comparing rotations: geodesic distances modulo Cn, global alignment, pose errors.

A reconstruction's frame is arbitrary, so estimated poses are compared with true ones
after the global rotation that best aligns them (:func:`align_rotations`, a geodesic L1
median); with a Cn-symmetric reference, poses ``R`` and ``R C_k`` are equivalent.
"""

from __future__ import annotations

import numpy as np

from spfluo.algorithms._validation import check_symmetry
from spfluo.algorithms.geometry._validation import as_rotation_pair, as_rotations
from spfluo.algorithms.geometry.rotations import (
    cyclic_group,
    matrix_xyz_to_quat,
    quat_to_rotvec,
    rotvec_to_matrix_xyz,
)

__all__ = ["geodesic_distance", "geodesic_distance_sym", "align_rotations", "pose_errors",
           "axis_and_in_plane_errors", "in_plane_resultant"]


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
    a, b = as_rotation_pair(R1, R2)
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
    a, b = as_rotation_pair(R1, R2)
    if symmetry == 1:
        return _geodesic(a, b)
    b_sym = np.matmul(b[..., None, :, :], cyclic_group(symmetry))
    return _geodesic(a[..., None, :, :], b_sym).min(axis=-1)


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
    A = as_rotations(R_est, "R_est").astype(np.float64)
    B = as_rotations(R_true, "R_true").astype(np.float64)
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
        w = quat_to_rotvec(matrix_xyz_to_quat(np.matmul(G.T, T)))  # log(G^T T_l), frame-free use
        dist = np.linalg.norm(w, axis=-1)
        weights = 1.0 / np.maximum(dist, 1e-12)
        step = (w * weights[:, None]).sum(axis=0) / weights.sum()
        G = G @ rotvec_to_matrix_xyz(step)
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


def axis_and_in_plane_errors(R_est, R_true, *, symmetry: int = 1):
    """Pose errors split into the error of the symmetry axis and the in-plane residual.

    After the best global alignment ``G`` (:func:`align_rotations`, modulo Cn), the
    residual ``D = R_true^T R_est G`` of each particle is split into a swing (which tilts
    the z axis: the error of the particle's symmetry axis) and a twist about z (the error
    of the rotation about the axis), ``D = swing twist``.

    Parameters
    ----------
    R_est, R_true : array_like, shape (N, 3, 3)
        Estimated and true zyx-frame rotations of the same particles.
    symmetry : int, optional
        Order n of the cyclic symmetry about z of the reference.

    Returns
    -------
    axis : ndarray, shape (N,), float64
        Angle between the estimated and the true symmetry axis (``R e_z``), radians.
    in_plane : ndarray, shape (N,), float64
        Signed twist about the axis, radians, wrapped to ``[-pi/n, pi/n)``: an estimate
        that only knows the axis gives values spread evenly over that interval.
    """
    from spfluo.algorithms.geometry.rotations import quaternion_from_matrix

    G = align_rotations(R_est, R_true, symmetry=symmetry)
    est = np.matmul(np.asarray(R_est, dtype=np.float64), G)
    D = np.matmul(np.transpose(np.asarray(R_true, dtype=np.float64), (0, 2, 1)), est)
    q = quaternion_from_matrix(D)  # (w, x, y, z), xyz frame, w >= 0
    twist = 2.0 * np.arctan2(q[:, 3], q[:, 0])
    swing = 2.0 * np.arccos(np.clip(np.hypot(q[:, 0], q[:, 3]), 0.0, 1.0))
    period = 2.0 * np.pi / symmetry
    return swing, (twist + period / 2.0) % period - period / 2.0


def in_plane_resultant(in_plane, symmetry: int = 1) -> float:
    """``|mean exp(i n psi)|`` of in-plane residuals ``psi`` (radians): 1 when every
    particle has the same residual (a common offset), about ``1 / sqrt(N)`` when they
    are spread at random over the period ``2 pi / n``."""
    psi = np.asarray(in_plane, dtype=np.float64)
    return float(np.abs(np.mean(np.exp(1j * symmetry * psi))))
