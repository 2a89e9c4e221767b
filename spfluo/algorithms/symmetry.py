"""Cyclic symmetry of a volume: find its axis, align it with z, symmetrise, estimate the order.

Conventions (``docs/conventions.md``): volumes ``(z, y, x)`` (or ``(C, z, y, x)``, channels sharing
one transform), rotations in the zyx frame about the box centre, directions written in the
physical ``(x, y, z)`` frame, Cn about the physical z axis (array axis 0).

Method
------
Centre
    The centre of mass of a Cn-symmetric object (``n >= 2``) lies on its symmetry axis, so
    the volume (background removed: the mean of its outer faces, then clipped at 0) is
    first shifted so that its centre of mass is the box centre; the axis then passes
    through the centre.
Axis (:func:`find_symmetry_axis`)
    A direction ``d`` scores the normalised cross-correlation (inside the inscribed ball)
    between the centred volume and its copy rotated by ``2 pi / n`` about ``d``: 1 for the
    symmetry axis.  Candidates: a Fibonacci half-sphere of directions ``coarse_step_deg``
    apart and the three principal axes of the inertia tensor (the axis of a Cn object,
    ``n >= 2``, is one of them), scored on the volume downsampled to ``coarse_size``; the
    best distinct ones are refined by a pattern search on the sphere (the four neighbours
    ``step`` away, step halved down to ``final_step_deg``), at full size below 4 degrees.
Alignment (:func:`align_symmetry_axis`)
    The rotation ``R`` is the smallest one that takes the axis to z; the aligned volume is
    ``R T_s f`` (``s`` the centring shift, then ``R`` about the centre), resampled with cubic
    splines.  Poses follow (:func:`realign_poses`): a particle ``T_t(R_i f)`` is
    ``T_{t - R_i s}(R_i R^T f')``.
Order (:func:`estimate_symmetry_order`)
    Along an axis, the angular self-correlation ``A(phi)`` = NCC of the volume and its copy
    rotated by ``phi``.  The score of an order ``n`` is ``min_k A(2 pi k / n)``
    (``k = 1 .. n-1``): every rotation of Cn must leave the volume unchanged (the minimum
    rejects the multiples of the true order, e.g. 18 for a C9 object).  It is compared
    with the baseline ``b``, the median of ``A`` over rotations by 10 to 350 degrees:
    ``contrast(n) = (score(n) - b) / (1 - b)``.  The order is the largest ``n`` whose
    contrast reaches ``threshold``; 1 (no symmetry) when none does.  When ``b`` itself is
    close to 1 the object looks the same at every angle (cylindrical at this resolution):
    ``cylindrical`` is set and the order cannot be told from the volume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from spfluo.algorithms.backend import resolve_backend, to_numpy
from spfluo.algorithms.fourier import resize_fourier
from spfluo.algorithms.geometry import (
    Poses,
    fibonacci_directions,
    matrix_from_axis_angle,
    rotation_about_z,
)
from spfluo.algorithms.transform import rotate, rotate_about_z

__all__ = [
    "centring_shift",
    "SymmetryAxis",
    "SymmetryAlignment",
    "SymmetryOrderEstimate",
    "find_symmetry_axis",
    "align_symmetry_axis",
    "realign_poses",
    "symmetrize",
    "estimate_symmetry_order",
]

#: Below this step (degrees) the axis refinement runs on the full-size volume.
_FULL_SIZE_BELOW_DEG = 4.0
#: Distinct coarse candidates refined.
_N_REFINED = 3
#: Baseline above which the object counts as cylindrical (no order can be read).
_CYLINDRICAL_BASELINE = 0.97


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True, eq=False)
class SymmetryAxis:
    """Symmetry axis of a volume (:func:`find_symmetry_axis`).

    Attributes
    ----------
    axis : ndarray, float64, shape (3,)
        Unit direction of the axis in the physical ``(x, y, z)`` frame (sign: ``z >= 0``).
    centre_shift : ndarray, float64, shape (3,)
        Shift ``s`` in voxels ``(z, y, x)`` that brings the centre of mass (a point of the
        axis) to the box centre: the axis is the line through ``centre - s`` along
        ``axis``.
    order : int
        The order ``n`` the axis was searched for.
    score : float
        NCC between the centred volume and its copy rotated by ``2 pi / n`` about the axis
        (inside the inscribed ball); 1 for a perfect symmetry.
    """

    axis: np.ndarray
    centre_shift: np.ndarray
    order: int
    score: float


@dataclass(frozen=True, eq=False)
class SymmetryAlignment:
    """A volume turned so that its symmetry axis is z (:func:`align_symmetry_axis`).

    Attributes
    ----------
    volume : ndarray, float32, same shape as the input
        ``R T_s f``: shifted by ``s``, then rotated by ``R`` about the centre (cubic
        spline; what comes from outside the box gets the background level).
    rotation : ndarray, float64, shape (3, 3)
        ``R`` (zyx frame), the smallest rotation taking the axis to z.
    shift : ndarray, float64, shape (3,)
        ``s`` in voxels ``(z, y, x)``.
    axis : SymmetryAxis
        The axis found in the input volume.
    """

    volume: np.ndarray
    rotation: np.ndarray
    shift: np.ndarray
    axis: SymmetryAxis


@dataclass(frozen=True, eq=False)
class SymmetryOrderEstimate:
    """Order of the cyclic symmetry read from a volume (:func:`estimate_symmetry_order`).

    Attributes
    ----------
    order : int
        The detected order ``n`` (1: no symmetry found).
    orders : ndarray, int64, shape (K,)
        Orders tried, ``2 .. max_order``.
    scores : ndarray, float64, shape (K,)
        ``min_k A(2 pi k / n)`` for each order tried.
    contrasts : ndarray, float64, shape (K,)
        ``(score - baseline) / (1 - baseline)`` for each order tried.
    baseline : float
        Median of ``A(phi)`` over rotations by 10 to 350 degrees.
    cylindrical : bool
        True when the baseline is at least 0.97: the volume looks the same at every angle
        about its axis, so the order cannot be read.
    axis : SymmetryAxis
        The axis the profile was measured about (refined for the detected order).
    angles_deg : ndarray, float64, shape (A,)
        Angles of the self-correlation profile, degrees.
    profile : ndarray, float64, shape (A,)
        ``A(phi)`` at those angles.
    threshold : float
    """

    order: int
    orders: np.ndarray
    scores: np.ndarray
    contrasts: np.ndarray
    baseline: float
    cylindrical: bool
    axis: SymmetryAxis
    angles_deg: np.ndarray
    profile: np.ndarray
    threshold: float


# ----------------------------------------------------------------------------- validation


def _check_order(order, name: str = "order", minimum: int = 2) -> int:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} (the n of Cn), got {order!r}")
    return int(order)


def _check_positive(value, name: str, *, maximum: float = math.inf) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    if not ok or not math.isfinite(float(value)) or not 0 < float(value) <= maximum:
        raise ValueError(f"{name} must be a number in (0, {maximum:g}], got {value!r}")
    return float(value)


def _as_volume(xp, volume, name: str = "volume"):
    """(C, Z, Y, X) float32 (cubic), and whether the input had no channel axis."""
    vol = xp.asarray(volume)
    if vol.ndim not in (3, 4):
        raise ValueError(f"{name} must have shape (Z, Y, X) or (C, Z, Y, X), got "
                         f"{tuple(vol.shape)}")
    if vol.size == 0:
        raise ValueError(f"{name} is empty: give a non-empty volume")
    if xp.iscomplexobj(vol):
        raise ValueError(f"{name} must be real, got dtype {vol.dtype}")
    single = vol.ndim == 3
    vol = (vol[None] if single else vol).astype(xp.float32)
    z, y, x = (int(s) for s in vol.shape[-3:])
    if not (z == y == x):
        raise ValueError(f"{name} must be a cubic box (D, D, D), got (Z, Y, X) = {(z, y, x)}: "
                         "pad it to a cube first")
    if z < 8:
        raise ValueError(f"{name} boxes of {z} voxels are too small (need at least 8)")
    if not bool(xp.isfinite(vol).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return vol, single


# ----------------------------------------------------------------------------- helpers


def _background(xp, vol):
    """Per-channel mean of the six outer faces, shape (C,)."""
    faces = [vol[:, 0], vol[:, -1], vol[:, :, 0], vol[:, :, -1], vol[:, :, :, 0],
             vol[:, :, :, -1]]
    total = sum(f.astype(xp.float64).sum(axis=(1, 2)) for f in faces)
    return total / sum(f[0].size for f in faces)


def _mass(xp, vol):
    """Non-negative mass (summed over channels) of the background-free volume, (D, D, D)."""
    bg = _background(xp, vol)
    return xp.maximum(vol - bg.astype(xp.float32)[:, None, None, None], 0).sum(axis=0)


def _centre_of_mass_shift(xp, vol) -> np.ndarray:
    mass = _mass(xp, vol).astype(xp.float64)
    total = float(mass.sum())
    if not total > 0:
        raise ValueError("the volume has no signal above its background: nothing to align")
    d = vol.shape[-1]
    axes = xp.arange(d, dtype=xp.float64)
    com = np.array([float((mass.sum(axis=(1, 2)) * axes).sum()),
                    float((mass.sum(axis=(0, 2)) * axes).sum()),
                    float((mass.sum(axis=(0, 1)) * axes).sum())]) / total
    return d // 2 - com


def centring_shift(volume, *, backend: Any = None) -> np.ndarray:
    """Shift ``s`` (voxels, ``(z, y, x)``) that brings the centre of mass of ``volume``
    (background removed, channels summed) to the box centre ``D // 2``: ``T_s f`` is centred,
    and :func:`realign_poses` with the identity and ``s`` gives the particles' poses for it.

    Parameters
    ----------
    volume : ndarray, shape (D, D, D) or (C, D, D, D)
    backend : Backend or {"cpu", "gpu"}, optional
    """
    bk = resolve_backend(backend, volume)
    vol = bk.xp.asarray(volume, dtype=bk.xp.float32)
    if vol.ndim == 3:
        vol = vol[None]
    return _centre_of_mass_shift(bk.xp, vol)


def _inertia_axes(xp, vol) -> np.ndarray:
    """Principal axes (3, 3) of the mass distribution, rows in (x, y, z), about the COM."""
    mass = to_numpy(_mass(xp, vol)).astype(np.float64)
    d = mass.shape[0]
    grid = np.stack(np.meshgrid(*[np.arange(d, dtype=np.float64)] * 3, indexing="ij"), -1)
    w = mass.reshape(-1)
    pts = grid.reshape(-1, 3)
    com = (pts * w[:, None]).sum(axis=0) / w.sum()
    rel = pts - com
    cov = (rel * w[:, None]).T @ rel / w.sum()  # zyx
    _, vecs = np.linalg.eigh(cov)
    return vecs.T[:, ::-1]  # rows: eigenvectors in (x, y, z)


def _canonical(d: np.ndarray) -> np.ndarray:
    """Unit directions (..., 3) in xyz with the sign making z >= 0 (axes are unsigned)."""
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    flip = (d[..., 2] < 0) | ((d[..., 2] == 0) & (d[..., 0] < 0))
    return np.where(flip[..., None], -d, d)


class _Scorer:
    """NCC between a centred volume and its rotated copies, inside the inscribed ball."""

    def __init__(self, bk, vol):
        xp = bk.xp
        self.bk = bk
        self.vol = vol  # (C, d, d, d), background removed, centred
        d = vol.shape[-1]
        r = xp.arange(d, dtype=xp.float32) - d // 2
        r2 = r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2
        self.ball = r2 <= ((d - 1) / 2.0) ** 2
        inside = vol[:, self.ball]
        self.inside = inside - inside.mean(axis=1, keepdims=True)
        self.norm = float(xp.sqrt((self.inside.astype(xp.float64) ** 2).sum()))
        self.batch = max(1, (1 << 22) // int(vol[0].size))

    def score(self, rotations: np.ndarray) -> np.ndarray:
        """NCC for each rotation (K,) of the volume (channels pooled)."""
        xp = self.bk.xp
        out = np.empty(rotations.shape[0])
        for s in range(0, rotations.shape[0], self.batch):
            rot = rotations[s:s + self.batch]
            num = xp.zeros(rot.shape[0], dtype=xp.float64)
            den = xp.zeros(rot.shape[0], dtype=xp.float64)
            for c in range(self.vol.shape[0]):
                moved = rotate(self.vol[c], rot, order=1, backend=self.bk)[:, self.ball]
                moved = moved - moved.mean(axis=1, keepdims=True)
                num += (moved * self.inside[c]).sum(axis=1, dtype=xp.float64)
                den += (moved.astype(xp.float64) ** 2).sum(axis=1)
            out[s:s + rot.shape[0]] = to_numpy(num / xp.maximum(xp.sqrt(den) * self.norm, 1e-300))
        return out


def _rotations_about(axes_xyz: np.ndarray, angle: float) -> np.ndarray:
    """zyx-frame rotations by ``angle`` about each direction (K, 3) given in xyz."""
    return matrix_from_axis_angle(axes_xyz, np.full(axes_xyz.shape[0], angle), frame="zyx")


def _centred(bk, vol, shift):
    """``T_s`` of every channel of the background-free volume (cubic spline)."""
    xp = bk.xp
    bg = _background(xp, vol).astype(xp.float32)
    base = vol - bg[:, None, None, None]
    eye = np.eye(3)
    return xp.stack([rotate(base[c], eye, translations=shift, order=3, backend=bk)
                     for c in range(base.shape[0])])


def _perpendicular_basis(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    helper = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    a = np.cross(d, helper)
    a /= np.linalg.norm(a)
    return a, np.cross(d, a)


def _refine_axis(scorer: _Scorer, d: np.ndarray, angle: float, start_deg: float,
                 stop_deg: float, best: float):
    """Pattern search on the sphere: move to the best of 4 neighbours, halve the step."""
    step = start_deg
    while step >= stop_deg:
        for _ in range(8):
            a, b = _perpendicular_basis(d)
            t = math.radians(step)
            cands = np.stack([math.cos(t) * d + math.sin(t) * v for v in (a, -a, b, -b)])
            cands = _canonical(cands)
            scores = scorer.score(_rotations_about(cands, angle))
            i = int(np.argmax(scores))
            if scores[i] <= best:
                break
            best, d = float(scores[i]), cands[i]
        step /= 2.0
    return d, best, step


# ----------------------------------------------------------------------------- public


def find_symmetry_axis(volume, order: int, *, coarse_step_deg: float = 10.0,
                       final_step_deg: float = 0.25, coarse_size: int = 24,
                       backend: Any = None) -> SymmetryAxis:
    """Find the axis of the Cn symmetry of a volume.

    Parameters
    ----------
    volume : ndarray, shape (D, D, D) or (C, D, D, D)
        The volume (e.g. a reconstruction); channels share the axis.
    order : int
        The order ``n >= 2`` of the cyclic symmetry.
    coarse_step_deg : float, default 10
        Spacing of the directions of the global search, degrees.
    final_step_deg : float, default 0.25
        Finest step of the local refinement, degrees.
    coarse_size : int, default 24
        The global search runs on the volume downsampled (Fourier cropping) to at most this
        many voxels per side (>= 8).
    backend : Backend or {"cpu", "gpu"}, optional

    Returns
    -------
    SymmetryAxis

    Notes
    -----
    See the module docstring.  Cost: one trilinear rotation of the small volume per
    direction of the half-sphere (about ``2 pi / step^2``), then a few tens of rotations
    per refined candidate.
    """
    bk = resolve_backend(backend, volume)
    xp = bk.xp
    vol, _ = _as_volume(xp, volume)
    order = _check_order(order)
    coarse_step = _check_positive(coarse_step_deg, "coarse_step_deg", maximum=90.0)
    final_step = _check_positive(final_step_deg, "final_step_deg", maximum=90.0)
    if isinstance(coarse_size, bool) or not isinstance(coarse_size, (int, np.integer)) or \
            coarse_size < 8:
        raise ValueError(f"coarse_size must be an integer >= 8 voxels, got {coarse_size!r}")
    shift = _centre_of_mass_shift(xp, vol)
    centred = _centred(bk, vol, shift)
    angle = 2.0 * math.pi / order
    d = vol.shape[-1]
    small = centred
    if d > coarse_size:
        small = resize_fourier(centred, (coarse_size,) * 3, backend=bk)
    coarse = _Scorer(bk, small)
    full = _Scorer(bk, centred) if small is not centred else coarse
    n_dirs = max(8, int(math.ceil(4.0 * math.pi / math.radians(coarse_step) ** 2)))
    sphere = fibonacci_directions(n_dirs)
    dirs = _canonical(np.concatenate([sphere[sphere[:, 2] >= 0], _inertia_axes(xp, vol)]))
    scores = coarse.score(_rotations_about(dirs, angle))
    chosen: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if len(chosen) == _N_REFINED:
            break
        if chosen and np.max(np.abs(dirs[chosen] @ dirs[i])) > math.cos(
                math.radians(1.5 * coarse_step)):
            continue
        chosen.append(int(i))
    refined = []
    for i in chosen:
        dd, sc, step = _refine_axis(coarse, dirs[i], angle, coarse_step / 2.0,
                                    _FULL_SIZE_BELOW_DEG, float(scores[i]))
        refined.append((sc, dd, step))
    sc, dd, step = max(refined, key=lambda r: r[0])
    best = float(full.score(_rotations_about(dd[None], angle))[0])
    dd, best, _ = _refine_axis(full, dd, angle, max(step, final_step), final_step, best)
    return SymmetryAxis(axis=_canonical(dd), centre_shift=np.asarray(shift, dtype=np.float64),
                        order=order, score=float(best))


def _rotation_to_z(axis_xyz: np.ndarray) -> np.ndarray:
    """Smallest zyx-frame rotation taking the direction (xyz) to +z."""
    z = np.array([0.0, 0.0, 1.0])
    d = axis_xyz / np.linalg.norm(axis_xyz)
    cross = np.cross(d, z)
    s = np.linalg.norm(cross)
    if s < 1e-12:
        return np.eye(3) if d[2] > 0 else matrix_from_axis_angle(
            np.array([1.0, 0.0, 0.0]), np.array(math.pi), frame="zyx").astype(np.float64)
    ang = math.atan2(s, float(d @ z))
    return matrix_from_axis_angle(cross / s, np.array(ang), frame="zyx").astype(np.float64)


def align_symmetry_axis(volume, order: int, *, axis: SymmetryAxis | None = None,
                        backend: Any = None, **search) -> SymmetryAlignment:
    """Shift and rotate a volume so that its Cn symmetry axis is z through the centre.

    Parameters
    ----------
    volume : ndarray, shape (D, D, D) or (C, D, D, D)
    order : int
        The order ``n >= 2`` of the symmetry.
    axis : SymmetryAxis, optional
        An axis already found (default :func:`find_symmetry_axis`).
    backend : Backend or {"cpu", "gpu"}, optional
    **search
        Passed to :func:`find_symmetry_axis` (``coarse_step_deg``, ``final_step_deg``,
        ``coarse_size``).

    Returns
    -------
    SymmetryAlignment
        The aligned volume ``R T_s f`` (same shape as the input, float32), ``R``, ``s``.
        Update particle poses with :func:`realign_poses`.
    """
    bk = resolve_backend(backend, volume)
    xp = bk.xp
    vol, single = _as_volume(xp, volume)
    order = _check_order(order)
    if axis is None:
        axis = find_symmetry_axis(vol, order, backend=bk, **search)
    elif not isinstance(axis, SymmetryAxis):
        raise ValueError(f"axis must be a SymmetryAxis (find_symmetry_axis), got "
                         f"{type(axis).__name__}")
    rot = _rotation_to_z(axis.axis)
    shift = np.asarray(axis.centre_shift, dtype=np.float64)
    bg = _background(xp, vol).astype(xp.float32)
    t = rot @ shift  # R T_s f = T_{R s}(R f)
    out = xp.stack([rotate(vol[c] - bg[c], rot, translations=t, order=3, backend=bk) + bg[c]
                    for c in range(vol.shape[0])])
    out = to_numpy(out[0] if single else out).astype(np.float32)
    return SymmetryAlignment(volume=out, rotation=rot, shift=shift, axis=axis)


def realign_poses(poses: Poses, rotation, shift) -> Poses:
    """Poses of particles after their reference ``f`` became ``f' = R T_s f``.

    Parameters
    ----------
    poses : Poses
        Poses relative to ``f``: particle ``i`` is ``T_{t_i}(R_i f)``.
    rotation : array_like, shape (3, 3)
        ``R`` (zyx frame), e.g. :attr:`SymmetryAlignment.rotation`.
    shift : array_like, shape (3,)
        ``s`` in voxels ``(z, y, x)``.

    Returns
    -------
    Poses
        ``(R_i R^T, t_i - R_i s)``: particle ``i`` is ``T_{t_i - R_i s}(R_i R^T f')``.
    """
    if not isinstance(poses, Poses):
        raise ValueError(f"poses must be a Poses, got {type(poses).__name__}")
    rot = np.asarray(rotation, dtype=np.float64)
    s = np.asarray(shift, dtype=np.float64)
    if rot.shape != (3, 3) or s.shape != (3,):
        raise ValueError(f"rotation must be (3, 3) and shift (3,), got {rot.shape} and {s.shape}")
    if not (np.all(np.isfinite(rot)) and np.all(np.isfinite(s))):
        raise ValueError("rotation and shift must be finite")
    new_r = np.matmul(poses.rotations, rot.T)
    new_t = poses.translations - np.einsum("nij,j->ni", poses.rotations, s)
    return Poses(new_r, new_t)


def symmetrize(volume, order: int, *, backend: Any = None):
    """Average a volume over the rotations of Cn about z through the box centre.

    Parameters
    ----------
    volume : ndarray, shape (D, D, D) or (C, D, D, D)
        A volume whose symmetry axis is z (:func:`align_symmetry_axis` first otherwise).
    order : int
        ``n >= 1`` (1 returns a copy).
    backend : Backend or {"cpu", "gpu"}, optional

    Returns
    -------
    ndarray, float32, same shape as ``volume``
        ``(1/n) sum_k C_k f``, the rotations exact for band-limited volumes
        (:func:`~spfluo.algorithms.transform.rotate_about_z`: Fourier shears, no
        interpolation blur); outside the box counts as the background level, the mean of
        the outer faces.
    """
    bk = resolve_backend(backend, volume)
    xp = bk.xp
    vol, single = _as_volume(xp, volume)
    order = _check_order(order, minimum=1)
    if order == 1:
        out = vol.copy()
    else:
        bg = _background(xp, vol).astype(xp.float32)[:, None, None, None]
        base = vol - bg
        out = xp.zeros(base.shape, dtype=xp.float64)
        for angle in 2.0 * np.pi * np.arange(order) / order:
            out += rotate_about_z(base, angle, backend=bk)
        out = out / order + bg
    out = out[0] if single else out
    return out.astype(xp.float32)


def estimate_symmetry_order(volume, *, max_order: int = 12, threshold: float = 0.6,
                            axis: SymmetryAxis | None = None, coarse_size: int = 32,
                            backend: Any = None) -> SymmetryOrderEstimate:
    """Estimate the order of the cyclic symmetry of a volume.

    Parameters
    ----------
    volume : ndarray, shape (D, D, D) or (C, D, D, D)
    max_order : int, default 12
        Largest order tried (>= 2); orders ``2 .. max_order`` are scored.
    threshold : float, default 0.6
        Smallest contrast (in (0, 1]) for an order to count.
    axis : SymmetryAxis, optional
        Measure about this axis (default: among the principal axes of inertia, one about
        which the volume is cylindrical if any, else the one with the best contrast; the
        result's axis is then refined for the detected order).
    coarse_size : int, default 32
        The profile is measured on the volume downsampled to at most this size (>= 8).
    backend : Backend or {"cpu", "gpu"}, optional

    Returns
    -------
    SymmetryOrderEstimate
    """
    bk = resolve_backend(backend, volume)
    xp = bk.xp
    vol, _ = _as_volume(xp, volume)
    max_order = _check_order(max_order, "max_order")
    threshold = _check_positive(threshold, "threshold", maximum=1.0)
    if isinstance(coarse_size, bool) or not isinstance(coarse_size, (int, np.integer)) or \
            coarse_size < 8:
        raise ValueError(f"coarse_size must be an integer >= 8 voxels, got {coarse_size!r}")
    if axis is not None and not isinstance(axis, SymmetryAxis):
        raise ValueError(f"axis must be a SymmetryAxis, got {type(axis).__name__}")
    shift = _centre_of_mass_shift(xp, vol) if axis is None else axis.centre_shift
    centred = _centred(bk, vol, shift)
    d = vol.shape[-1]
    small = resize_fourier(centred, (coarse_size,) * 3, backend=bk) if d > coarse_size \
        else centred
    scorer = _Scorer(bk, small)
    orders = np.arange(2, max_order + 1)
    symmetric = sorted({round(360.0 * k / n, 9) for n in orders for k in range(1, n)})
    baseline_angles = np.arange(10.0, 351.0, 5.0)
    angles = np.array(sorted(set(symmetric) | set(baseline_angles.tolist())))
    candidates = [axis.axis] if axis is not None else list(_inertia_axes(xp, vol))

    def evaluate(direction):
        rots = np.matmul(_rotation_to_z(direction).T[None],
                         np.matmul(rotation_about_z(np.radians(angles)),
                                   _rotation_to_z(direction)[None]))
        prof = scorer.score(rots)
        lookup = dict(zip(np.round(angles, 9).tolist(), prof))
        base = float(np.median([lookup[round(a, 9)] for a in baseline_angles]))
        scores = np.array([min(lookup[round(360.0 * k / n, 9)] for k in range(1, n))
                           for n in orders])
        contrast = (scores - base) / max(1.0 - base, 1e-9)
        return prof, base, scores, contrast

    best = None
    for direction in candidates:
        direction = _canonical(np.asarray(direction, dtype=np.float64))
        prof, base, scores, contrast = evaluate(direction)
        # an axis about which every angle is a symmetry (cylindrical) wins, then contrast
        key = (base >= _CYLINDRICAL_BASELINE, float(np.max(contrast)))
        if best is None or key > best[0]:
            best = (key, direction, prof, base, scores, contrast)
    _, direction, prof, base, scores, contrast = best
    ok = np.flatnonzero(contrast >= threshold)
    cylindrical = bool(base >= _CYLINDRICAL_BASELINE)
    order = 1 if cylindrical or ok.size == 0 else int(orders[ok[-1]])
    if axis is None:
        if order >= 2:
            axis = find_symmetry_axis(vol, order, backend=bk)
        else:
            rot = _rotation_to_z(direction)
            score = float(scorer.score(np.matmul(rot.T, np.matmul(
                rotation_about_z(np.radians(180.0)), rot))[None])[0])
            axis = SymmetryAxis(axis=direction, centre_shift=np.asarray(shift, np.float64),
                                order=2, score=score)
    return SymmetryOrderEstimate(order=order, orders=orders, scores=scores, contrasts=contrast,
                                 baseline=base, cylindrical=cylindrical, axis=axis,
                                 angles_deg=angles, profile=prof, threshold=threshold)
