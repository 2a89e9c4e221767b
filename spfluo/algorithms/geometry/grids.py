"""Sampling SO(3): Fibonacci directions, the product grid of Eloy et al. 2023, local grids.

Directions ``d = (sin phi2 cos phi1, sin phi2 sin phi1, cos phi2)`` (xyz) with their
angles; :class:`SO3Grid` (directions x in-plane angles, uniform on SO(3), one asymmetric
unit of Cn by restricting the in-plane angle) and its constructors for a number of
elements or an angular step; lattices of small rotations for local searches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spfluo.algorithms._validation import check_int, check_symmetry
from spfluo.algorithms.geometry._validation import (
    as_real_array,
    as_rotations,
    check_angle,
    float_dtype,
)
from spfluo.algorithms.geometry.rotations import (
    cyclic_group,
    from_xyz,
    rotvec_to_matrix_xyz,
    ry_xyz,
    rz_xyz,
)

__all__ = [
    "fibonacci_directions",
    "direction_angles",
    "direction_from_angles",
    "SO3Grid",
    "so3_grid",
    "so3_grid_for_step",
    "grid_size_for_step",
    "uniform_rotation_grid",
    "local_rotation_grid",
]

_GOLDEN_RATIO = (1.0 + np.sqrt(5.0)) / 2.0
_MAX_GRID_SIZE = 2_000_000


# ---------- directions


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
    p1 = as_real_array(phi1, "phi1")
    p2 = as_real_array(phi2, "phi2")
    dtype = float_dtype(p1, p2)
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
    d = as_real_array(directions, "directions")
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
    dtype = float_dtype(d)
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


# ---------- SO(3) grids


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
        d = as_real_array(self.directions, "directions")
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
        p = as_real_array(self.psi, "psi")
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
        return np.matmul(rz_xyz(phi1), ry_xyz(phi2))

    def matrices(self) -> np.ndarray:
        """All grid rotations.

        Returns
        -------
        ndarray, shape (M_d, M_psi, 3, 3), float64
            zyx-frame matrices; element ``[j, i]`` is ``Rz(phi1_j) Ry(phi2_j)
            Rz(psi_i)`` (xyz) converted to the zyx frame.
        """
        R = np.matmul(self._tilts_xyz()[:, None], rz_xyz(self.psi)[None, :])
        return from_xyz(R, "zyx")

    def matrix(self, j: int, i: int) -> np.ndarray:
        """The zyx-frame rotation ``(3, 3)`` of direction ``j`` and in-plane angle ``i``."""
        for name, idx, size in (("j", j, self.n_directions), ("i", i, self.n_psi)):
            if isinstance(idx, bool) or not isinstance(idx, (int, np.integer)) or not (
                0 <= idx < size
            ):
                raise ValueError(f"{name} must be an integer in [0, {size}), got {idx!r}")
        phi1, phi2 = direction_angles(self.directions[j])
        R = rz_xyz(phi1) @ ry_xyz(phi2) @ rz_xyz(self.psi[i])
        return from_xyz(R, "zyx")

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
        a = as_rotations(R, "R").astype(np.float64)
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


#: Fewest in-plane angles per period 2 pi / n of a Cn grid: a coarse step must not alias
#: the n-fold structure (a 20-degree step is half the 40-degree period of C9).
MIN_IN_PLANE_PER_PERIOD = 8


def grid_size_for_step(step: float, symmetry: int = 1) -> tuple[int, int]:
    """``(n_directions, n_psi)`` of the grid of spacing ``step`` radians: one direction per
    ``step^2`` of solid angle, and in-plane angles every ``step`` over one period ``2 pi /
    n``, at least :data:`MIN_IN_PLANE_PER_PERIOD` of them for ``n > 1``."""
    n_d = max(1, int(np.ceil(4.0 * np.pi / step**2 - 1e-9)))
    n_psi = max(1, int(np.ceil(2.0 * np.pi / (step * symmetry) - 1e-9)))
    if symmetry > 1:
        n_psi = max(n_psi, MIN_IN_PLANE_PER_PERIOD)
    return n_d, n_psi


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
        Sizes of :func:`grid_size_for_step`.
    """
    step = check_angle(step, "step", low=0.0, high=np.pi, low_inclusive=False)
    symmetry = check_symmetry(symmetry)
    n_d, n_psi = grid_size_for_step(step, symmetry)
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
    step = check_angle(step, "step", low=0.0, high=np.inf, low_inclusive=False)
    max_angle = check_angle(max_angle, "max_angle", low=0.0, high=np.pi, low_inclusive=True)
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
    return from_xyz(rotvec_to_matrix_xyz(w), "zyx")
