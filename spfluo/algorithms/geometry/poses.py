"""Particle poses: :class:`Poses` (zyx frame, voxels) and the stored form (xyz, micrometres).

``Poses.from_stored`` and ``Poses.to_stored`` are the one conversion between the
algorithm side (``(N, 3, 3)`` rotations, ``(N, 3)`` translations in voxels) and the 4x4
matrices of objects and files (``(x, y, z)`` order, translations in micrometres).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from spfluo.algorithms._validation import check_int
from spfluo.algorithms.geometry._validation import as_real_array, as_rotations
from spfluo.algorithms.geometry.rotations import swap_xyz_zyx
from spfluo.algorithms.geometry.units import as_voxel_size

__all__ = ["Poses", "check_poses"]


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
        R = np.array(as_rotations(R, "rotations"), dtype=np.float64)
        t = np.array(as_real_array(t, "translations"), dtype=np.float64)
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
        M = as_real_array(M, "matrices").astype(np.float64)
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
        M = swap_xyz_zyx(as_real_array(M, "matrices_xyz_um").astype(np.float64))
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
        G = as_rotations(G, "R").astype(np.float64)
        return Poses(np.matmul(self.rotations, G), self.translations)


def check_poses(poses: Any, n: int | None) -> Any:
    """A non-empty :class:`spfluo.algorithms.geometry.Poses`, with ``n`` poses unless ``n``
    is None (one pose per particle)."""
    if not isinstance(poses, Poses):
        raise ValueError(
            f"poses must be a spfluo.algorithms.geometry.Poses, got {type(poses).__name__}: "
            "build one with Poses(rotations, translations)"
        )
    if len(poses) == 0:
        raise ValueError("poses is empty: give one pose per particle")
    if n is not None and len(poses) != n:
        raise ValueError(
            f"poses has {len(poses)} poses but there are {n} particles: give one pose per particle"
        )
    return poses
