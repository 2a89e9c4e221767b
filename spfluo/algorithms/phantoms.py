"""Synthetic objects (ground truths) defined in continuous space.

Each phantom is a function of continuous coordinates, averaged over each voxel by
supersampling (``supersample^3`` points on a regular sub-grid of the voxel), so that

- the same phantom can be drawn on any box and on a refined grid (simulate on a finer grid
  than the reconstruction uses, to avoid the "inverse crime"; Eloy et al. 2023 sec. 4.1);
- partial volumes give values between 0 and 1 at the edges instead of staircases.

Coordinates. Voxel ``(i, j, k)`` has its centre at ``((i - Z//2), (j - Y//2), (k - X//2)) / L``
with ``L = min(Z, Y, X)``: the origin is the box centre of the project conventions, and
sizes (radii, lengths) are fractions of the smallest box side, so a phantom scales with the
box. Values are in ``[0, 1]``, dtype float32, arrays indexed ``(z, y, x)``; z is the
symmetry axis of the barrel, tube and torus (the Cn axis of the project).

Shapes are combined by their maximum (a union that keeps values in ``[0, 1]``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from spfluo.algorithms._validation import check_box_shape

__all__ = ["c9_barrel", "npc_c8", "asymmetric_phantom", "sphere_shell", "tube"]

# A field takes the (z, y, x) coordinates (broadcastable arrays, box units) and returns
# the intensity in [0, 1] (one array, or (C, ...) for several channels).
Field = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


# ----------------------------------------------------------------------------- sampling


def _check_supersample(supersample) -> int:
    if not isinstance(supersample, (int, np.integer)) or supersample < 1:
        raise ValueError(
            f"supersample must be an int >= 1 (sub-samples per voxel and axis), got {supersample!r}"
        )
    return int(supersample)


def _check_positive(name: str, value, *, allow_zero: bool = False) -> float:
    if not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
        raise ValueError(
            f"{name} must be a finite number (fraction of the box side), got {value!r}"
        )
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(
            f"{name} must be {'>= 0' if allow_zero else '> 0'} (fraction of the box side), "
            f"got {value}"
        )
    return float(value)


def _check_fits(name: str, extent: float) -> None:
    if extent > 0.5 + 1e-9:
        raise ValueError(
            f"{name} reaches {extent:.3g} box sides from the centre, beyond the box "
            "(half a side is 0.5): reduce the sizes"
        )


def _sample(
    shape: tuple[int, int, int], field: Field, supersample: int, n_channels: int = 0
) -> np.ndarray:
    """Average ``field`` over each voxel with ``supersample^3`` regular sub-samples.

    One evaluation of the field on the whole grid per sub-sample offset (the loop runs over
    ``supersample^3`` offsets, never over voxels), accumulated in float64.
    """
    size = min(shape)
    axes = [(np.arange(n, dtype=np.float64) - n // 2) / size for n in shape]
    offsets = ((np.arange(supersample) + 0.5) / supersample - 0.5) / size
    out_shape = ((n_channels,) if n_channels else ()) + shape
    acc = np.zeros(out_shape, dtype=np.float64)
    for dz in offsets:
        z = (axes[0] + dz)[:, None, None]
        for dy in offsets:
            y = (axes[1] + dy)[None, :, None]
            for dx in offsets:
                x = (axes[2] + dx)[None, None, :]
                acc += np.broadcast_to(field(z, y, x), out_shape)
    acc /= supersample**3
    return np.clip(acc, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- fields


def _shell_field(radius: float, thickness: float) -> Field:
    def field(z, y, x):
        r = np.sqrt(z * z + y * y + x * x)
        return (np.abs(r - radius) <= thickness / 2).astype(np.float64)

    return field


def _tube_field(radius: float, thickness: float, length: float) -> Field:
    def field(z, y, x):
        rho = np.sqrt(y * y + x * x)
        return ((np.abs(rho - radius) <= thickness / 2) & (np.abs(z) <= length / 2)).astype(
            np.float64
        )

    return field


def _barrel_rod_centres(n_blades, radius, blade_tilt, rod_spacing, phase) -> np.ndarray:
    """(n_blades * 3, 2) rod centres ``(y, x)``: three rods per blade along the tilted blade."""
    phi = phase + 2.0 * np.pi * np.arange(n_blades) / n_blades
    centre = radius * np.stack([np.sin(phi), np.cos(phi)], axis=-1)  # (y, x), phi from +x
    along = np.stack([np.sin(phi + blade_tilt), np.cos(phi + blade_tilt)], axis=-1)
    steps = np.array([-1.0, 0.0, 1.0]) * rod_spacing
    return (centre[:, None, :] + steps[None, :, None] * along[:, None, :]).reshape(-1, 2)


def _barrel_field(centres: np.ndarray, rod_radius: float, length: float) -> Field:
    def field(z, y, x):
        inside_z = np.abs(z) <= length / 2
        out = np.zeros(np.broadcast_shapes(y.shape, x.shape), dtype=bool)
        for cy, cx in centres:  # a few tens of rods, each over the whole grid
            out |= (y - cy) ** 2 + (x - cx) ** 2 <= rod_radius**2
        return (out & inside_z).astype(np.float64)

    return field


def _torus_field(radius: float, half_width: float, half_height: float, z_centre: float) -> Field:
    def field(z, y, x):
        rho = np.sqrt(y * y + x * x)
        return (
            ((rho - radius) / half_width) ** 2 + ((z - z_centre) / half_height) ** 2 <= 1.0
        ).astype(np.float64)

    return field


# ----------------------------------------------------------------------------- public phantoms


def sphere_shell(shape, *, radius: float, thickness: float, supersample: int = 4) -> np.ndarray:
    """Hollow sphere centred in the box.

    Parameters
    ----------
    shape : int or tuple of 3 int
        ``(Z, Y, X)`` box size in voxels.
    radius : float
        Mid-wall radius, fraction of the smallest box side.
    thickness : float
        Wall thickness, fraction of the smallest box side (the wall is
        ``|r - radius| <= thickness / 2``).
    supersample : int, default 4
        Sub-samples per voxel along each axis.

    Returns
    -------
    volume : ndarray, shape (Z, Y, X), float32
        Values in ``[0, 1]`` (fraction of each voxel inside the wall).
    """
    shape = check_box_shape(shape)
    radius = _check_positive("radius", radius)
    thickness = _check_positive("thickness", thickness)
    _check_fits("the shell (radius + thickness / 2)", radius + thickness / 2)
    return _sample(shape, _shell_field(radius, thickness), _check_supersample(supersample))


def tube(
    shape, *, radius: float, thickness: float, length: float, supersample: int = 4
) -> np.ndarray:
    """Open hollow cylinder along z, centred in the box.

    Parameters
    ----------
    shape : int or tuple of 3 int
        ``(Z, Y, X)`` box size in voxels.
    radius : float
        Mid-wall radius in the (y, x) plane, fraction of the smallest box side.
    thickness : float
        Wall thickness, fraction of the smallest box side.
    length : float
        Length along z, fraction of the smallest box side.
    supersample : int, default 4
        Sub-samples per voxel along each axis.

    Returns
    -------
    volume : ndarray, shape (Z, Y, X), float32
        Values in ``[0, 1]``; invariant under any rotation about the z axis.
    """
    shape = check_box_shape(shape)
    radius = _check_positive("radius", radius)
    thickness = _check_positive("thickness", thickness)
    length = _check_positive("length", length)
    _check_fits("the tube wall (radius + thickness / 2)", radius + thickness / 2)
    _check_fits("the tube (length / 2)", length / 2)
    return _sample(shape, _tube_field(radius, thickness, length), _check_supersample(supersample))


def c9_barrel(
    shape,
    *,
    n_blades: int = 9,
    radius: float = 0.22,
    length: float = 0.6,
    rod_radius: float = 0.035,
    rod_spacing: float | None = None,
    blade_tilt: float = math.radians(50.0),
    phase: float = 0.0,
    second_channel: bool = False,
    torus_radius: float | None = None,
    torus_thickness: float = 0.08,
    torus_height: float = 0.3,
    torus_offset: float = 0.075,
    supersample: int = 4,
) -> np.ndarray:
    """Centriole-like barrel of ``n_blades`` triplet blades, axis along z.

    Each blade is three parallel rods along z (the A, B and C microtubules of a triplet),
    their centres on a segment through a point of the ring of radius ``radius`` and tilted
    by ``blade_tilt`` from the radial direction, as in a centriole cross-section. The
    blades are at azimuths ``phase + 2 pi k / n_blades`` (from +x towards +y), so the
    object is exactly ``C_{n_blades}``-symmetric about the z axis through the box centre
    (the continuous object; its sampling is symmetric up to the grid).

    Parameters
    ----------
    shape : int or tuple of 3 int
        ``(Z, Y, X)`` box size in voxels.
    n_blades : int, default 9
        Number of blades (the symmetry order).
    radius : float, default 0.22
        Radius of the ring of blade centres (the B rods), fraction of the smallest box side.
    length : float, default 0.6
        Barrel length along z, fraction of the smallest box side.
    rod_radius : float, default 0.035
        Radius of each rod, fraction of the smallest box side.
    rod_spacing : float, optional
        Distance between neighbouring rod centres in a blade (default ``2 rod_radius``,
        touching rods), fraction of the smallest box side.
    blade_tilt : float, default radians(50)
        Angle between the blade and the radial direction, radians.
    phase : float, default 0
        Azimuth of the first blade, radians.
    second_channel : bool, default False
        Also return a second channel: a torus of another protein around the barrel
        (Cep63 around the centriole in Fortun et al. 2018 Fig. 10: a torus wider than the barrel,
        about half its height, starting a little above its proximal end).
    torus_radius : float, optional
        Mean radius of the torus (default: ``1.55 radius``, the Cep63/tubulin diameter
        ratio of Fortun et al. 2018), fraction of the smallest box side.
    torus_thickness : float, default 0.08
        Radial thickness of the torus, fraction of the smallest box side.
    torus_height : float, default 0.3
        Height of the torus along z, fraction of the smallest box side.
    torus_offset : float, default 0.075
        Gap between the proximal (lower z) end of the barrel and the bottom of the torus,
        fraction of the smallest box side.
    supersample : int, default 4
        Sub-samples per voxel along each axis.

    Returns
    -------
    volume : ndarray, shape (Z, Y, X) or (2, Z, Y, X), float32
        Values in ``[0, 1]``; channel 0 the barrel, channel 1 the torus when
        ``second_channel`` is True.

    Notes
    -----
    Fortun et al. 2018 uses a Trichonympha cartwheel and C9 symmetry (Fig. 3) and measures a
    glutamylated-tubulin cylinder 400 nm high, 176 nm wide, with a Cep63 torus 224 nm
    high, 272 nm wide starting about 50 nm above the proximal end (Fig. 10); the default
    sizes keep those proportions inside the box.
    """
    shape = check_box_shape(shape)
    if not isinstance(n_blades, (int, np.integer)) or n_blades < 1:
        raise ValueError(f"n_blades must be an int >= 1, got {n_blades!r}")
    radius = _check_positive("radius", radius)
    length = _check_positive("length", length)
    rod_radius = _check_positive("rod_radius", rod_radius)
    rod_spacing = (
        2.0 * rod_radius
        if rod_spacing is None
        else _check_positive("rod_spacing", rod_spacing, allow_zero=True)
    )
    for name, value in (("blade_tilt", blade_tilt), ("phase", phase)):
        if not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite angle in radians, got {value!r}")
    supersample = _check_supersample(supersample)
    _check_fits("the barrel (length / 2)", length / 2)
    centres = _barrel_rod_centres(
        int(n_blades), radius, float(blade_tilt), rod_spacing, float(phase)
    )
    _check_fits(
        "the barrel rods", float(np.max(np.hypot(centres[:, 0], centres[:, 1]))) + rod_radius
    )
    barrel = _barrel_field(centres, rod_radius, length)
    if not second_channel:
        return _sample(shape, barrel, supersample)

    torus_radius = (
        1.55 * radius if torus_radius is None else _check_positive("torus_radius", torus_radius)
    )
    torus_thickness = _check_positive("torus_thickness", torus_thickness)
    torus_height = _check_positive("torus_height", torus_height)
    torus_offset = _check_positive("torus_offset", torus_offset, allow_zero=True)
    if torus_thickness / 2 >= torus_radius:
        raise ValueError(
            f"torus_thickness / 2 ({torus_thickness / 2}) must be smaller than torus_radius "
            f"({torus_radius}) so that the torus has a hole"
        )
    z_centre = -length / 2 + torus_offset + torus_height / 2
    _check_fits(
        "the torus (torus_radius + torus_thickness / 2)", torus_radius + torus_thickness / 2
    )
    _check_fits("the torus along z", abs(z_centre) + torus_height / 2)
    torus = _torus_field(torus_radius, torus_thickness / 2, torus_height / 2, z_centre)

    def both(z, y, x):
        a, b = np.broadcast_arrays(barrel(z, y, x), torus(z, y, x))
        return np.stack([a, b])

    return _sample(shape, both, supersample, n_channels=2)


def _spots_field(centres: np.ndarray, radius: float, weights: np.ndarray) -> Field:
    def field(z, y, x):
        out = np.zeros(np.broadcast_shapes(z.shape, y.shape, x.shape))
        for (cz, cy, cx), w in zip(centres, weights):
            inside = (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= radius**2
            out = np.maximum(out, w * inside)
        return out

    return field


def npc_c8(
    shape,
    *,
    n_corners: int = 8,
    radius: float = 0.25,
    pair_angle: float = math.radians(14.0),
    ring_distance: float = 0.12,
    spot_radius: float = 0.04,
    lower_intensity: float = 0.6,
    phase: float = 0.0,
    supersample: int = 4,
) -> np.ndarray:
    """Nuclear-pore-like object: ``n_corners`` pairs of spots on two rings, axis along z.

    Each ring (at ``z = +-ring_distance / 2``) holds ``n_corners`` corners at azimuths
    ``phase + 2 pi k / n_corners``; each corner is a pair of spots ``pair_angle`` apart
    along the ring (the two copies of a labelled subunit seen by single-molecule methods),
    so the object is ``C_{n_corners}``-symmetric and not ``C_{2 n_corners}``.  The lower
    ring is dimmer (``lower_intensity``): the cytoplasmic and nuclear rings differ, which
    sets the polarity.

    Parameters
    ----------
    shape : int or tuple of 3 int
        ``(Z, Y, X)`` box size in voxels.
    n_corners : int, default 8
        Symmetry order.
    radius : float, default 0.25
        Ring radius, fraction of the smallest box side.
    pair_angle : float, default 14 degrees
        Azimuthal distance between the two spots of a corner, radians.
    ring_distance : float, default 0.12
        Distance between the two rings along z, fraction of the smallest box side.
    spot_radius : float, default 0.04
        Radius of each spot, fraction of the smallest box side.
    lower_intensity : float, default 0.6
        Intensity of the lower ring's spots (the upper ones are 1).
    phase : float, default 0
        Azimuth of the first corner, radians from +x towards +y.
    supersample : int, default 4

    Returns
    -------
    ndarray, float32, shape (Z, Y, X)
    """
    shape = check_box_shape(shape)
    supersample = _check_supersample(supersample)
    if isinstance(n_corners, bool) or not isinstance(n_corners, (int, np.integer)) \
            or n_corners < 2:
        raise ValueError(f"n_corners must be an integer >= 2, got {n_corners!r}")
    radius = _check_positive("radius", radius)
    spot_radius = _check_positive("spot_radius", spot_radius)
    ring_distance = _check_positive("ring_distance", ring_distance, allow_zero=True)
    _check_fits("the pore", max(radius + spot_radius, ring_distance / 2 + spot_radius))
    if not 0.0 <= lower_intensity <= 1.0:
        raise ValueError(f"lower_intensity must be in [0, 1], got {lower_intensity!r}")
    corners = phase + 2.0 * np.pi * np.arange(n_corners) / n_corners
    azimuths = (corners[:, None] + np.array([-0.5, 0.5]) * pair_angle).ravel()
    centres, weights = [], []
    for z, w in ((ring_distance / 2, 1.0), (-ring_distance / 2, lower_intensity)):
        for a in azimuths:
            centres.append((z, radius * math.sin(a), radius * math.cos(a)))
            weights.append(w)
    return _sample(shape, _spots_field(np.asarray(centres), spot_radius, np.asarray(weights)),
                   supersample)


def _rotation_from_vector(rotvec: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix (Rodrigues) for a rotation vector in the (z, y, x) frame."""
    angle = float(np.linalg.norm(rotvec))
    if angle == 0:
        return np.eye(3)
    k = rotvec / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * (kx @ kx)


def asymmetric_phantom(
    shape, *, seed=0, n_ellipsoids: int = 4, n_rods: int = 3, supersample: int = 4
) -> np.ndarray:
    """Ellipsoids and rods of different sizes, orientations and intensities, no symmetry.

    Parameters
    ----------
    shape : int or tuple of 3 int
        ``(Z, Y, X)`` box size in voxels.
    seed : int or numpy.random.Generator, default 0
        Draws the layout (``numpy.random.default_rng(seed)``).
    n_ellipsoids : int, default 4
        Number of solid ellipsoids (semi-axes 0.05 to 0.12 box sides, all different).
    n_rods : int, default 3
        Number of rods (capsules of radius 0.03 to 0.05 and length 0.2 to 0.35).
    supersample : int, default 4
        Sub-samples per voxel along each axis.

    Returns
    -------
    volume : ndarray, shape (Z, Y, X), float32
        Values in ``[0, 1]``; every object within 0.45 box sides of the centre. The
        objects have distinct intensities in ``[0.35, 1]``, distinct sizes and random
        orientations, and sit at distinct distances from the centre, so that no rotation
        maps the phantom onto itself: registration has a unique solution.
    """
    shape = check_box_shape(shape)
    supersample = _check_supersample(supersample)
    for name, value in (("n_ellipsoids", n_ellipsoids), ("n_rods", n_rods)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    n_obj = int(n_ellipsoids) + int(n_rods)
    if n_obj < 2:
        raise ValueError(f"need at least 2 objects (n_ellipsoids + n_rods), got {n_obj}")
    rng = np.random.default_rng(seed)
    intensities = rng.permutation(np.linspace(0.35, 1.0, n_obj))
    # distinct distances from the centre (no two objects exchangeable by a rotation)
    distances = rng.permutation(np.linspace(0.1, 0.3, n_obj))
    directions = rng.normal(size=(n_obj, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    centres = distances[:, None] * directions
    objects = []
    semi = np.sort(rng.uniform(0.05, 0.12, size=(n_ellipsoids, 3)), axis=1)[:, ::-1]
    for i in range(n_ellipsoids):
        rot = _rotation_from_vector(rng.normal(size=3) * np.pi)
        objects.append(("ellipsoid", centres[i], rot, semi[i], intensities[i]))
    for i in range(n_rods):
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        rod_length = rng.uniform(0.2, 0.35)
        rod_radius = rng.uniform(0.03, 0.05)
        j = n_ellipsoids + i
        objects.append(("rod", centres[j], axis, (rod_length, rod_radius), intensities[j]))

    # keep every object inside a ball of radius 0.45 (shrink the layout if needed)
    def reach(obj):
        kind, c, _, size, _ = obj
        return np.linalg.norm(c) + (max(size) if kind == "ellipsoid" else size[0] / 2 + size[1])

    factor = min(1.0, 0.45 / max(reach(o) for o in objects))

    def field(z, y, x):
        out = np.zeros(np.broadcast_shapes(z.shape, y.shape, x.shape), dtype=np.float64)
        for kind, c, orient, size, value in objects:
            dz, dy, dx = z - factor * c[0], y - factor * c[1], x - factor * c[2]
            if kind == "ellipsoid":
                # coordinates in the ellipsoid frame: orient^T d
                u = orient[0, 0] * dz + orient[1, 0] * dy + orient[2, 0] * dx
                v = orient[0, 1] * dz + orient[1, 1] * dy + orient[2, 1] * dx
                w = orient[0, 2] * dz + orient[1, 2] * dy + orient[2, 2] * dx
                a, b, cc = (factor * s for s in size)
                inside = (u / a) ** 2 + (v / b) ** 2 + (w / cc) ** 2 <= 1.0
            else:
                half, rad = factor * size[0] / 2, factor * size[1]
                t = np.clip(orient[0] * dz + orient[1] * dy + orient[2] * dx, -half, half)
                inside = (dz - t * orient[0]) ** 2 + (dy - t * orient[1]) ** 2 + (
                    dx - t * orient[2]
                ) ** 2 <= rad**2
            out = np.maximum(out, np.where(inside, value, 0.0))
        return out

    return _sample(shape, field, supersample)
