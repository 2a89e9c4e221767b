"""The pixels of a volume file checked plane by plane, before any heavy work.

:func:`scan_volume` reads a TIFF (plain, ImageJ, OME) or MRC file one plane at a time (its
memory is one plane, whatever the file's size) and records, per channel, the smallest and
largest finite value and the first plane holding NaN or infinite values.
:func:`volume_problems` turns a scan into the messages an import shows: a single plane (2D
image), non-finite values (naming the file and the plane), a constant or all-zero channel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import mrcfile
import numpy as np
import tifffile

from spfluo.io.volumes import (
    _existing,
    _kind,
    _mrc_order,
    _mrc_shape,
    _plan_axes,
    _reading,
    _tiff_series,
)

__all__ = ["VolumeScan", "scan_volume", "volume_problems"]


@dataclass(frozen=True)
class VolumeScan:
    """What the pixels of a volume file hold.

    Attributes
    ----------
    path : str
        The file.
    shape : tuple of 4 int
        ``(C, Z, Y, X)`` as :func:`spfluo.io.read_volume` returns it.
    minimum, maximum : ndarray, shape (C,), float64
        Smallest and largest finite value of each channel (NaN for a channel with none).
    nonfinite : tuple or None
        ``(channel, z, count)``: the first plane (z index, from 0) holding NaN or infinite
        values and how many it holds; None when every value is finite.
    n_nonfinite : int
        NaN and infinite values in the whole file.
    """

    path: str
    shape: tuple
    minimum: np.ndarray
    maximum: np.ndarray
    nonfinite: tuple | None
    n_nonfinite: int


class _Stats:
    def __init__(self, n_channels: int):
        self.minimum = np.full(n_channels, np.inf)
        self.maximum = np.full(n_channels, -np.inf)
        self.nonfinite = None
        self.count = 0

    def add(self, plane: np.ndarray, c: int, z: int) -> None:
        if plane.dtype.kind == "f":
            finite = np.isfinite(plane)
            bad = int(plane.size - np.count_nonzero(finite))
            if bad:
                self.count += bad
                if self.nonfinite is None:
                    self.nonfinite = (c, z, bad)
                plane = plane[finite]
        if plane.size:
            self.minimum[c] = min(self.minimum[c], float(plane.min()))
            self.maximum[c] = max(self.maximum[c], float(plane.max()))


def _roles(shape, axes: str) -> list:
    """For each axis of a TIFF series: 'C', 'Z' or None (a dropped axis of length 1), as
    :func:`spfluo.io.volumes._plan_axes` reads them."""
    roles = []
    for ax, n in zip(axes.upper(), shape):
        if ax not in "YX" and n == 1:
            roles.append(None)
        else:
            roles.append(ax if ax in "ZCYX" else ("C" if ax == "S" else "?"))
    if roles.count("?") == 1 and "Z" not in roles:
        roles[roles.index("?")] = "Z"
    return roles


def _tiff_planes(tif, series):
    """``(index of each leading axis, plane array)`` for every plane, one at a time."""
    page_ndim = len(series.pages[0].shape) if series.pages and series.pages[0] is not None \
        else 2
    lead_shape = tuple(series.shape[:len(series.shape) - page_ndim])
    n_planes = int(np.prod(lead_shape, dtype=np.int64))
    pages = series.pages
    if len(pages) == n_planes and all(p is not None for p in pages):
        for i, page in enumerate(pages):
            yield np.unravel_index(i, lead_shape) if lead_shape else (), page.asarray()
        return
    if series.dataoffset is not None:  # contiguous, uncompressed: map it
        data = np.memmap(tif.filehandle.path, dtype=series.dtype, mode="r",
                         offset=series.dataoffset, shape=series.shape)
    else:  # no per-plane access: the reader's whole array
        data = series.asarray()
    flat = data.reshape((n_planes,) + tuple(series.shape[len(lead_shape):]))
    for i in range(n_planes):
        yield np.unravel_index(i, lead_shape) if lead_shape else (), np.asarray(flat[i])


def _scan_tiff(path) -> tuple:
    with tifffile.TiffFile(path) as tif:
        series = _tiff_series(tif, path)
        plan = _plan_axes(series.shape, series.axes, path)
        roles = _roles(series.shape, series.axes)
        stats = _Stats(plan.shape_czyx[0])
        for index, plane in _tiff_planes(tif, series):
            c = z = 0
            for role, i in zip(roles, index):
                if role == "C":
                    c = int(i)
                elif role == "Z":
                    z = int(i)
            page_axes = series.axes.upper()[len(series.axes) - plane.ndim:]
            if "S" in page_axes:  # samples (RGB, planar channels) are channels
                axis = page_axes.index("S")
                for k in range(plane.shape[axis]):
                    stats.add(np.take(plane, k, axis=axis), k, z)
            else:
                stats.add(plane, c, z)
        return plan.shape_czyx, stats


def _scan_mrc(path) -> tuple:
    with mrcfile.mmap(path, mode="r") as mrc:
        shape = _mrc_shape(mrc, path)
        stats = _Stats(1)
        data = mrc.data if mrc.data.ndim == 3 else mrc.data[None]
        order = _mrc_order(mrc.header)
        z_axis = order.index(0)  # the data axis that becomes z
        for k in range(data.shape[z_axis]):
            stats.add(np.asarray(np.take(data, k, axis=z_axis)), 0, k)
        return shape, stats


def scan_volume(path: str | os.PathLike) -> VolumeScan:
    """Read every plane of a volume file once and record what its pixels hold.

    Parameters
    ----------
    path : str or path-like
        A TIFF (plain, ImageJ hyperstack, OME-TIFF) or MRC file.

    Returns
    -------
    VolumeScan

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not a readable volume (the message names the file and the reason).
    """
    path = _existing(path)
    kind = _kind(path)
    with _reading(path):
        shape, stats = _scan_mrc(path) if kind == "mrc" else _scan_tiff(path)
    minimum = np.where(np.isfinite(stats.minimum), stats.minimum, np.nan)
    maximum = np.where(np.isfinite(stats.maximum), stats.maximum, np.nan)
    return VolumeScan(path=str(path), shape=tuple(int(s) for s in shape), minimum=minimum,
                      maximum=maximum, nonfinite=stats.nonfinite, n_nonfinite=stats.count)


def volume_problems(scan: VolumeScan, *, what: str = "image") -> list[str]:
    """The reasons a volume cannot be used, one message each (empty: none).

    Parameters
    ----------
    scan : VolumeScan
    what : str
        What the file is, for the messages ("image", "PSF", "particle").
    """
    problems = []
    c_, z_, y_, x_ = scan.shape
    if z_ == 1:
        problems.append(f"{scan.path} is a 2D {what} (one plane of {y_} x {x_} pixels): spfluo "
                        "reconstructs from 3D stacks; give the z-stack (the plane would be "
                        "smeared along z by the extraction).")
    elif min(z_, y_, x_) < 3:
        problems.append(f"{scan.path} has {z_} x {y_} x {x_} voxels (z, y, x): a 3D {what} "
                        "needs at least 3 voxels along each axis.")
    if scan.nonfinite is not None:
        c, z, count = scan.nonfinite
        problems.append(f"{scan.path} holds {scan.n_nonfinite} NaN or infinite value(s), the "
                        f"first {count} in plane z={z} of channel {c} (planes numbered from "
                        "0): replace them (e.g. by the background) before importing.")
    for c in range(c_):
        lo, hi = scan.minimum[c], scan.maximum[c]
        if np.isnan(lo):
            continue
        if lo == hi:
            kind = "all zero" if lo == 0 else f"constant ({lo:g})"
            channel = f" channel {c}" if c_ > 1 else ""
            problems.append(f"{scan.path}{channel} is {kind}: it holds no signal; check the "
                            "export (channel, bit depth) of this file.")
    return problems
