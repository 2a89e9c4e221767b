"""Trilinear interpolation on a zero-padded grid, and its exact adjoint.

The grid (a volume, or a centred spectrum) is embedded in a zero box padded by 1 sample
before and 2 after on each axis.  Coordinates are clipped to ``[-1, n]``: a point outside
the grid then reads only padding (zeros), so :func:`gather` is trilinear interpolation
with a zero extension, and :func:`splat` (its transpose) writes into padding that is
cropped away.  Used by the real-space rotations of :mod:`spfluo.algorithms.transform` and
by the Fourier-space models of the pose-scoring engine (:mod:`spfluo.algorithms.scoring`).

Coordinates are in samples of the unpadded grid, ``(z, y, x)``, batched as ``(..., 3, M)``
float32; :func:`trilinear_setup` turns them into the flat index of each point's lower
corner in the padded grid and the three fractions, once, for any number of gathers and
splats at the same points.
"""

from __future__ import annotations

from typing import Any

from spfluo.algorithms.backend import Backend

__all__ = ["padded_shape", "pad_volume", "trilinear_setup", "corner_offsets", "gather",
           "splat"]


def padded_shape(shape):
    """Shape of the padded grid: ``n + 3`` samples per axis."""
    return tuple(n + 3 for n in shape)


def pad_volume(xp, volume, shape):
    """Embed (..., Z, Y, X) in the padded zero box (1 before, 2 after)."""
    lead = tuple(volume.shape[:-3])
    out = xp.zeros(lead + padded_shape(shape), dtype=volume.dtype)
    out[..., 1:-2, 1:-2, 1:-2] = volume
    return out


def trilinear_setup(xp, coords, shape):
    """Base flat index into the padded box (int32/int64) and fractions (3, ...) float32.

    ``coords`` (B, 3, M): sample coordinates ``(z, y, x)`` of the unpadded grid ``shape``.
    """
    zp, yp, xp_ = padded_shape(shape)
    idx_dtype = xp.int32 if zp * yp * xp_ < 2**31 - 1 else xp.int64
    base = None
    fracs = []
    strides = (yp * xp_, xp_, 1)
    for axis, n in enumerate(shape):
        c = xp.clip(coords[:, axis], -1.0, float(n))
        f = xp.floor(c)
        fracs.append((c - f).astype(xp.float32))
        i = (f.astype(idx_dtype) + 1) * idx_dtype(strides[axis])
        base = i if base is None else base + i
    return base, xp.stack(fracs)


def corner_offsets(shape):
    """The 8 corners of a cell: ``(dz, dy, dx, flat offset)`` in the padded grid."""
    _, yp, xp_ = padded_shape(shape)
    sz, sy = yp * xp_, xp_
    return [(dz, dy, dx, dz * sz + dy * sy + dx) for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)]


def gather(xp, flat, base, frac, shape, pairwise=False):
    """Trilinear interpolation from the padded flat grid(s) (nested lerps).

    ``flat`` (V,) one grid, or (B, V) one grid per row of ``base`` (``pairwise``).
    """
    _, yp, xp_ = padded_shape(shape)
    sz, sy = yp * xp_, xp_
    fz, fy, fx = frac[0], frac[1], frac[2]

    if pairwise:
        def at(o):
            return xp.take_along_axis(flat, base + o, axis=1)
    else:
        def at(o):
            return flat[base + o]

    c00 = at(0) * (1 - fx) + at(1) * fx
    c01 = at(sy) * (1 - fx) + at(sy + 1) * fx
    c10 = at(sz) * (1 - fx) + at(sz + 1) * fx
    c11 = at(sz + sy) * (1 - fx) + at(sz + sy + 1) * fx
    c0 = c00 * (1 - fy) + c01 * fy
    c1 = c10 * (1 - fy) + c11 * fy
    return c0 * (1 - fz) + c1 * fz


def splat(bk: Backend, base, frac, values, shape, size: int):
    """Adjoint of :func:`gather`: ``values`` (shape of ``base``) added into a flat padded
    grid of ``size`` samples with the trilinear weights (a scatter-add per corner).

    Real values give float64 on the CPU (``numpy.bincount``); complex values are splat as
    their real and imaginary parts and come back complex.
    """
    xp = bk.xp
    if xp.iscomplexobj(values):
        return (splat(bk, base, frac, values.real, shape, size)
                + 1j * splat(bk, base, frac, values.imag, shape, size))
    fz, fy, fx = frac[0], frac[1], frac[2]
    weights = {0: (1 - fz, 1 - fy, 1 - fx), 1: (fz, fy, fx)}
    acc: Any = None
    for dz, dy, dx, off in corner_offsets(shape):
        w = weights[dz][0] * weights[dy][1] * weights[dx][2]
        part = bk.scatter_add(base + off, values * w, size)
        acc = part if acc is None else acc + part
    return acc

