"""Separable Gaussian filters evaluated on small boxes around points of a large volume.

A picking feature needs a smoothed volume at a few voxels around each candidate, not
everywhere: filtering the whole field of view at every scale costs about a hundred
multiply-adds per voxel and scale, most of them far from any candidate.  The functions
here evaluate the same separable correlations (Gaussian kernels and their second
derivatives, truncated at 4 standard deviations, ``mode="nearest"`` at the image border,
as ``scipy.ndimage.gaussian_filter``) on a box of ``2m + 1`` voxels per axis around
each point: the input box (the output box widened by the kernel radius) is gathered
with its indices clipped to the image (the "nearest" extension), then correlated axis
after axis in the order z, y, x, keeping the "valid" part, in float64.

Every value depends only on the image voxels within the kernel support of its point,
whatever part of the image is in memory: a :class:`Region` (a tile of the field with
its halo) that holds that support gives the same value as the whole field, bit for
bit.  This is what makes the tiled picking (:mod:`spfluo.algorithms.picking.tiles`)
identical to the whole-field one.

Positions are voxel indices ``(z, y, x)`` of the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Region", "gaussian_kernel", "kernel_radius", "gather", "correlate_valid",
           "filter_boxes", "box_values"]

#: Gaussian kernels are truncated at this many standard deviations (scipy's default).
TRUNCATE = 4.0
# float64 values gathered at once (the batches of points are cut to this size)
_GATHER_VALUES = 1 << 22


@dataclass(frozen=True)
class Region:
    """The part of an image held in memory.

    Attributes
    ----------
    data : ndarray, shape (Z', Y', X'), float32
        The voxels ``origin`` to ``origin + data.shape`` (exclusive) of the image.
    origin : tuple of 3 int
        Index ``(z, y, x)`` in the image of ``data[0, 0, 0]``.
    image_shape : tuple of 3 int
        Shape ``(Z, Y, X)`` of the whole image (the "nearest" extension clips to it).
    """

    data: np.ndarray
    origin: tuple
    image_shape: tuple


def kernel_radius(sigma: float) -> int:
    """Radius in voxels of a Gaussian kernel of ``sigma`` voxels: ``int(4 sigma + 0.5)``."""
    return int(TRUNCATE * float(sigma) + 0.5) if sigma > 1e-15 else 0


def gaussian_kernel(sigma: float, order: int = 0) -> np.ndarray:
    """Correlation weights of a Gaussian of ``sigma`` voxels (``order`` 0) or of its second
    derivative (``order`` 2), length ``2 R + 1`` (:func:`kernel_radius`), float64.

    A ``sigma`` of 0 gives the identity ``[1.0]`` (order 0 only).
    """
    r = kernel_radius(sigma)
    if r == 0:
        if order != 0:
            raise ValueError(f"a derivative needs sigma > 0, got sigma {sigma!r}")
        return np.ones(1)
    x = np.arange(-r, r + 1, dtype=np.float64)
    s2 = float(sigma) ** 2
    phi = np.exp(-0.5 / s2 * x**2)
    phi /= phi.sum()
    if order == 0:
        return phi
    if order == 2:
        return phi * (x**2 / s2**2 - 1.0 / s2)
    raise ValueError(f"order must be 0 or 2, got {order!r}")


def gather(region: Region, starts, lengths) -> np.ndarray:
    """Boxes of the image, its "nearest" extension beyond the border, as float64.

    Parameters
    ----------
    region : Region
        Must hold every clipped index of every box.
    starts : ndarray, shape (N, 3), int
        First voxel ``(z, y, x)`` of each box in the image (may lie outside it).
    lengths : tuple of 3 int
        Size of the boxes along z, y, x.

    Returns
    -------
    ndarray, shape (N, Lz, Ly, Lx), float64
    """
    starts = np.asarray(starts, dtype=np.int64).reshape(-1, 3)
    lengths = tuple(int(n) for n in lengths)
    shape = np.asarray(region.image_shape, dtype=np.int64)
    origin = np.asarray(region.origin, dtype=np.int64)
    lo = np.clip(starts, 0, shape - 1) - origin
    hi = np.clip(starts + np.asarray(lengths) - 1, 0, shape - 1) - origin
    if len(starts) and ((lo < 0).any() or (hi >= np.asarray(region.data.shape)).any()):
        raise RuntimeError("a box reaches beyond the tile in memory: the tile halo is "
                           "smaller than the filters need")
    out = np.empty((len(starts),) + lengths, dtype=np.float64)
    inside = ((starts >= 0) & (starts + np.asarray(lengths) <= shape)).all(axis=1)
    for n in range(len(starts)):
        if inside[n]:  # a plain block of the tile
            out[n] = region.data[lo[n, 0]:hi[n, 0] + 1, lo[n, 1]:hi[n, 1] + 1,
                                 lo[n, 2]:hi[n, 2] + 1]
        else:  # the "nearest" extension: clipped indices
            ix = [np.clip(starts[n, a] + np.arange(lengths[a]), 0, shape[a] - 1) - origin[a]
                  for a in range(3)]
            out[n] = region.data[np.ix_(*ix)]
    return out


def correlate_valid(a: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """Correlation of ``a`` with symmetric ``weights`` (odd length) along ``axis``, the fully
    overlapping part.

    The output is ``len(weights) - 1`` shorter along ``axis``:
    ``out[j] = sum_k weights[k] a[j + k]``.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.size == 1:
        return a * w[0] if w[0] != 1.0 else a
    n_out = a.shape[axis] - w.size + 1
    r = (w.size - 1) // 2

    def part(k):
        index = [slice(None)] * a.ndim
        index[axis] = slice(k, k + n_out)
        return a[tuple(index)]

    # the kernels are symmetric: one product per pair of taps
    out = w[r] * part(r)
    for k in range(r):
        pair = part(k) + part(w.size - 1 - k)
        pair *= w[k]
        out += pair
    return out


def filter_boxes(region: Region, centres, half, kernels) -> np.ndarray:
    """A separable filter evaluated on a box around each centre.

    Parameters
    ----------
    region : Region
    centres : ndarray, shape (N, 3), int
        Voxel ``(z, y, x)`` of the image at the centre of each output box.
    half : tuple of 3 int
        Half-widths ``m`` of the output boxes (``2 m + 1`` voxels per axis); ``None`` for
        an axis means the whole axis (outputs at every index of the image along it).
    kernels : tuple of 3 ndarray
        Correlation weights along z, y, x (``[1.0]`` for none), applied in that order.

    Returns
    -------
    ndarray, shape (N, Lz, Ly, Lx), float64
        Output voxel ``j`` of axis ``a`` is image index ``centre_a - m_a + j`` (or ``j``
        for a whole axis), filtered with the "nearest" extension of the image.
    """
    centres = np.asarray(centres, dtype=np.int64).reshape(-1, 3)
    radii = [(np.asarray(k).size - 1) // 2 for k in kernels]
    starts = np.empty_like(centres)
    lengths = []
    for a in range(3):
        if half[a] is None:
            starts[:, a] = -radii[a]
            lengths.append(region.image_shape[a] + 2 * radii[a])
        else:
            starts[:, a] = centres[:, a] - half[a] - radii[a]
            lengths.append(2 * half[a] + 1 + 2 * radii[a])
    per_point = int(np.prod(lengths))
    step = max(1, _GATHER_VALUES // max(per_point, 1))
    parts = []
    for s in range(0, len(centres), step):
        box = gather(region, starts[s:s + step], lengths)
        for a in range(3):
            box = correlate_valid(box, kernels[a], axis=a + 1)
        parts.append(box)
    if not parts:
        out_len = [region.image_shape[a] if half[a] is None else 2 * half[a] + 1
                   for a in range(3)]
        return np.zeros((0, *out_len))
    return np.concatenate(parts)


def box_values(boxes: np.ndarray, centres, half, offsets, image_shape) -> np.ndarray:
    """Values of :func:`filter_boxes` output at the voxels ``centre + offset`` clipped to the
    image (the way ``scipy.ndimage`` results are read at clipped indices).

    Parameters
    ----------
    boxes : ndarray, shape (N, Lz, Ly, Lx)
    centres : ndarray, shape (N, 3), int
    half : tuple of 3 int or None
        As given to :func:`filter_boxes`.
    offsets : ndarray, shape (K, 3), int
    image_shape : tuple of 3 int

    Returns
    -------
    ndarray, shape (N, K)
    """
    centres = np.asarray(centres, dtype=np.int64).reshape(-1, 1, 3)
    target = centres + np.asarray(offsets, dtype=np.int64)[None]
    target = np.clip(target, 0, np.asarray(image_shape) - 1)
    pos = []
    for a in range(3):
        base = 0 if half[a] is None else centres[:, :, a] - half[a]
        pos.append(target[:, :, a] - base)
    n = np.arange(boxes.shape[0])[:, None]
    return boxes[n, pos[0], pos[1], pos[2]]
