"""Fields of view in lateral tiles with halos: the geometry and the memory of the tiled picking.

A field of 2048 x 2048 x 100 voxels is 1.7 GB as float32, and the picking keeps a few
such arrays: it cannot hold the whole field.  The picking works on lateral tiles
(every plane, a rectangle of rows and columns) read one at a time: each tile is its
*core* (the voxels it answers for; the cores partition the image) widened by a *halo*
on every side, as wide as the filters reach from a core voxel (:func:`picking_halo`).
Every quantity computed at a core voxel then depends on voxels of the tile only, so the
tiled result is the whole-field result, bit for bit (the tiles are cut at the image
border, where the whole-field filters see the same border).

The tile size follows from a memory budget (:func:`plan_tiles`): the largest square
tile whose arrays fit, the cores balanced over the image; one tile when the whole
field fits.  :func:`picking_peak_bytes` is the estimate the protocols check before a
run.  A *field* is any array-like of shape ``(Z, Y, X)`` that returns voxels for a
slice ``field[:, y0:y1, x0:x1]`` (an ndarray, a memory map, a reader of
:mod:`spfluo.io.fields`): :func:`read_region` reads one tile.

Sizes are in voxels and bytes; the particle diameter and the voxel size in micrometres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spfluo.algorithms.picking._validation import check_diameter
from spfluo.algorithms.picking.local import Region, kernel_radius
from spfluo.algorithms.picking.scales import blob_pool, picking_sigmas

__all__ = ["Tile", "TilePlan", "TileCounter", "STAGE_WEIGHTS", "DEFAULT_MEMORY_BYTES", "check_field", "picking_halo",
           "plan_tiles", "picking_peak_bytes", "read_region", "lattice_stride",
           "MAX_NOISE_SAMPLES"]

#: Default peak memory of the picking of one field, bytes (the job's ``memory_gb``).
DEFAULT_MEMORY_BYTES = 2_000_000_000
#: Voxels sampled (a regular lateral lattice, every plane) for the noise statistics of a
#: field: the median and MAD of the image and of its blob response.
MAX_NOISE_SAMPLES = 1 << 22

# Memory model of a run (bytes): the interpreter with numpy, scipy and scikit-learn; per
# lateral pixel, the projection and its blob maps; per voxel of a tile, its float32
# arrays (the smoothed tile and the blob filters); per noise sample, the two lattices and
# the copies of their medians; the gathers of the local filters.  It bounds the peak
# from above: benchmarks/large_fields.py, 100 x 2048 x 2048 voxels in 9 tiles,
# estimate 1.77 GB, the pick job's resident peak (VmHWM) 1.08 GB.
_BASE_BYTES = 250_000_000
_BYTES_PER_PIXEL = 48
_BYTES_PER_TILE_VOXEL = 20
_BYTES_PER_SAMPLE = 16
_GATHER_BYTES = 100_000_000
#: Smallest tile core, voxels per lateral axis.
MIN_CORE = 16
#: Relative cost of one tile in each pass of the picking (blob maps; seeds; features),
#: for the remaining time of the progress lines.
STAGE_WEIGHTS = {"blobs": 3.0, "seeds": 1.0, "features": 1.0}


@dataclass(frozen=True)
class Tile:
    """One lateral tile: ``core`` and ``read`` are ``(y0, y1, x0, x1)``, ends exclusive;
    ``read`` is the core widened by the halo, cut at the image border."""

    core: tuple
    read: tuple


@dataclass(frozen=True)
class TilePlan:
    """How a field is cut into tiles.

    Attributes
    ----------
    shape : tuple of 3 int
        ``(Z, Y, X)`` of the field.
    halo : tuple of 2 int
        Halo along y and x, voxels.
    tiles : tuple of Tile
        Row by row.
    stride : int
        Lateral step of the lattice of noise samples (:func:`lattice_stride`).
    peak_bytes : int
        Estimated peak memory of the picking of this field, bytes.
    """

    shape: tuple
    halo: tuple
    tiles: tuple
    stride: int
    peak_bytes: int

    def __len__(self) -> int:
        return len(self.tiles)


class TileCounter:
    """The work done on a field, in tiles weighted by :data:`STAGE_WEIGHTS`.

    ``callback(done, total)`` (optional) hears of every tile done.
    """

    def __init__(self, n_tiles: int, callback=None):
        self.n_tiles = int(n_tiles)
        self.total = self.n_tiles * sum(STAGE_WEIGHTS.values())
        self.work = 0.0
        self.callback = callback

    def done(self, stage: str, tiles: int = 1) -> None:
        """``tiles`` tiles of ``stage`` are done."""
        self.work += STAGE_WEIGHTS[stage] * tiles
        if self.callback is not None:
            self.callback(self.work, self.total)

    def skip(self, stage: str) -> None:
        """A stage that has nothing to do on this field."""
        self.done(stage, self.n_tiles)


def check_field(field, name: str = "image") -> tuple:
    """Shape ``(Z, Y, X)`` of a field (an array-like); ``ValueError`` naming ``name`` when it
    is not a non-empty real volume.  No voxel is read."""
    shape = tuple(int(s) for s in getattr(field, "shape", ()))
    if len(shape) != 3:
        raise ValueError(f"{name} must be one channel of shape (Z, Y, X), got shape {shape}; "
                         "pick the detection channel first")
    if min(shape) < 1:
        raise ValueError(f"{name} is empty (shape {shape}); give a non-empty volume")
    dtype = np.dtype(getattr(field, "dtype", np.float32))
    if dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a real array, got dtype {dtype}")
    return shape


def lattice_stride(shape) -> int:
    """Lateral step of the lattice of at most :data:`MAX_NOISE_SAMPLES` voxels (1: every
    voxel, for fields of up to 4 million voxels)."""
    z, y, x = (int(s) for s in shape)
    return max(1, math.ceil(math.sqrt(z * y * x / MAX_NOISE_SAMPLES)))


def picking_halo(voxel_size, diameter: float, min_distance: float = 0.5) -> tuple:
    """Halo (y, x) in voxels that covers every filter of the picking around a core voxel.

    The sum, per lateral axis, of the smoothing radius and the largest of: the pooled
    blob filter and the neighbourhood of its local maxima (seeds); the lateral refinement
    within half a diameter, its blob filter or z-profile filter (seeds); the features'
    largest scale, the structure tensor's patch and its filter, the z-profile filter
    (features).  Gaussian radii are ``int(4 sigma + 0.5)`` voxels; the halo is a multiple
    of the pooling factor (:func:`~spfluo.algorithms.picking.scales.blob_pool`).
    """
    vs = np.asarray(voxel_size, dtype=np.float64)
    radius = diameter / 2
    sig = picking_sigmas(vs, diameter)
    pool = blob_pool(vs, diameter)
    out = []
    for a in (1, 2):
        v = vs[a]
        r_blob = kernel_radius(sig["blob"][a])
        r_prof = kernel_radius(sig["profile"][a])
        local_max = max(1, int(np.floor(min_distance * diameter / (pool * v))))
        seeds = pool * (kernel_radius(sig["blob"][a] / pool) + local_max + 1)
        reach = max(1, int(np.floor(0.5 * diameter / v))) + 1
        patch = int(np.ceil(1.5 * radius / v))
        need = max(seeds,                                    # seeds of the blob map
                   reach + 1 + max(r_blob, r_prof),          # lateral refinement, depth
                   1 + kernel_radius(radius / v),            # 2D and 3D features
                   patch + 1 + kernel_radius(0.5 * radius / v),  # structure tensor
                   r_prof)
        halo = kernel_radius(sig["smooth"][a]) + need
        out.append(-(-halo // pool) * pool)
    return tuple(out)


def _tiles_1d(n: int, n_tiles: int, halo: int, pool: int):
    core = -(-math.ceil(n / n_tiles) // pool) * pool  # cores start on the pooled grid
    return [(s, min(n, s + core), max(0, s - halo), min(n, s + core + halo))
            for s in range(0, n, core)]


def picking_peak_bytes(shape, tile_shape) -> int:
    """Estimated peak memory (bytes) of picking a field of ``shape`` ``(Z, Y, X)`` in tiles
    of ``tile_shape`` ``(Y', X')`` voxels (halo included)."""
    z, y, x = (int(s) for s in shape)
    s = lattice_stride(shape)
    samples = z * math.ceil(y / s) * math.ceil(x / s)
    return int(_BASE_BYTES + _GATHER_BYTES + _BYTES_PER_PIXEL * y * x
               + _BYTES_PER_SAMPLE * samples
               + _BYTES_PER_TILE_VOXEL * z * int(tile_shape[0]) * int(tile_shape[1]))


def plan_tiles(shape, voxel_size, diameter: float, *, memory_bytes: float = DEFAULT_MEMORY_BYTES,
               min_distance: float = 0.5, core: int | None = None) -> TilePlan:
    """Cut a field into lateral tiles whose picking fits ``memory_bytes``.

    Parameters
    ----------
    shape : tuple of 3 int
        ``(Z, Y, X)`` of the field.
    voxel_size : tuple of 3 float
        ``(z, y, x)`` in micrometres.
    diameter : float
        Particle diameter, micrometres.
    memory_bytes : float, default 2e9
        Peak memory allowed, bytes.
    min_distance : float, default 0.5
        Minimum distance between candidates, fraction of the diameter.
    core : int, optional
        Tile core size (voxels per lateral axis) instead of the largest that fits (the
        estimate is then not checked against ``memory_bytes``).

    Returns
    -------
    TilePlan

    Raises
    ------
    ValueError
        When tiles of :data:`MIN_CORE` voxels do not fit ``memory_bytes``: the message
        gives the memory they need.
    """
    z, y, x = (int(s) for s in shape)
    check_diameter(diameter, (z, y, x), np.asarray(voxel_size, dtype=np.float64))
    halo = picking_halo(voxel_size, diameter, min_distance)
    if core is not None:
        core = int(core)
        if core < 1:
            raise ValueError(f"core must be a positive number of voxels, got {core}")
        ny, nx = math.ceil(y / core), math.ceil(x / core)
    else:
        budget = float(memory_bytes) - picking_peak_bytes(shape, (0, 0))
        side = math.isqrt(max(0, int(budget / (_BYTES_PER_TILE_VOXEL * z))))
        if side >= y + 2 * halo[0] and side >= x + 2 * halo[1]:
            ny = nx = 1
        else:
            cy, cx = side - 2 * halo[0], side - 2 * halo[1]
            if min(cy, cx) < MIN_CORE:
                need = picking_peak_bytes(shape, (MIN_CORE + 2 * halo[0], MIN_CORE + 2 * halo[1]))
                raise ValueError(
                    f"picking a field of {z} x {y} x {x} voxels (z, y, x) needs at least "
                    f"{need / 1e9:.2f} GB (tiles of {MIN_CORE} voxels with halos of "
                    f"{halo[0]} x {halo[1]} voxels for a {diameter:g} µm particle), more "
                    f"than the {float(memory_bytes) / 1e9:.2f} GB allowed: allow more memory")
            ny, nx = math.ceil(y / cy) if cy < y else 1, math.ceil(x / cx) if cx < x else 1
    pool = blob_pool(voxel_size, diameter)
    rows, cols = _tiles_1d(y, ny, halo[0], pool), _tiles_1d(x, nx, halo[1], pool)
    tiles = tuple(Tile(core=(r[0], r[1], c[0], c[1]), read=(r[2], r[3], c[2], c[3]))
                  for r in rows for c in cols)
    largest = (max(t.read[1] - t.read[0] for t in tiles), max(t.read[3] - t.read[2] for t in tiles))
    return TilePlan(shape=(z, y, x), halo=halo, tiles=tiles, stride=lattice_stride(shape),
                    peak_bytes=picking_peak_bytes(shape, largest))


def read_region(field, tile: Tile, shape, name: str = "image") -> Region:
    """The voxels of a tile (every plane, its ``read`` rectangle) as float32, checked finite."""
    y0, y1, x0, x1 = tile.read
    data = np.asarray(field[:, y0:y1, x0:x1])
    if data.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a real array, got dtype {data.dtype}")
    data = data.astype(np.float32, copy=False)
    if not np.isfinite(data).all():
        raise ValueError(f"{name} contains NaN or infinite voxels (in rows {y0}-{y1 - 1}, "
                         f"columns {x0}-{x1 - 1}); fix or mask them first")
    return Region(data=data, origin=(0, y0, x0), image_shape=tuple(int(s) for s in shape))
