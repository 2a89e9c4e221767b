"""Fields of view read part by part: one channel of a volume file, never loaded whole.

A field of 2048 x 2048 x 100 voxels is 0.8 GB as uint16 and 1.7 GB as float32; the
picking and the extraction read it a region at a time.  :func:`open_field` returns a
:class:`FieldReader`: an array-like of shape ``(Z, Y, X)`` whose ``reader[z0:z1, y0:y1,
x0:x1]`` reads that region only, as float32:

- MRC files and TIFF files whose pixels are stored in one contiguous block (uncompressed
  files written by tifffile, ImageJ and most OME-TIFF writers) through a memory map
  (``mrcfile.mmap``, ``numpy.memmap`` at the offset tifffile reports): only the pages
  of the region are read;
- other TIFF files (compressed, or planes scattered in the file) plane by plane: each
  plane of the region is decoded and cropped, one at a time.

The reader holds no open file between reads (each read opens and closes the file), so
it can be pickled and sent to another process.  The axes are those of
:func:`spfluo.io.volumes.read_volume`: ``(C, Z, Y, X)`` after the same interpretation of
the file's axes.
"""

from __future__ import annotations

import os
from pathlib import Path

import mrcfile
import numpy as np
import tifffile

from spfluo.io.jobfile import JobError
from spfluo.io.volumes import (
    _apply_plan,
    _existing,
    _kind,
    _mrc_order,
    _mrc_shape,
    _plan_axes,
    _reading,
    _tiff_series,
    read_shape,
)

__all__ = ["FieldReader", "open_field"]


class FieldReader:
    """One channel of a volume file as a read-only array-like ``(Z, Y, X)``.

    Attributes
    ----------
    path : str
    channel : int
    shape : tuple of 3 int
        ``(Z, Y, X)``.
    dtype : numpy dtype
        float32 (what a read returns; the file's own type is :attr:`stored_dtype`).
    stored_dtype : numpy dtype
        The voxel type in the file.
    mode : {"mmap", "planes"}
        Memory map, or plane by plane (see the module notes).
    """

    ndim = 3
    dtype = np.dtype(np.float32)

    def __init__(self, path, channel: int, shape_czyx, *, mode: str, stored_dtype,
                 layout: dict):
        self.path, self.channel, self.mode = str(path), int(channel), mode
        self.shape = tuple(int(s) for s in shape_czyx[1:])
        self.stored_dtype = np.dtype(stored_dtype)
        self._shape_czyx = tuple(int(s) for s in shape_czyx)
        self._layout = layout

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        """Bytes of the channel as float32 (what reading it whole would take)."""
        return 4 * self.size

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return (f"FieldReader({self.path!r}, channel={self.channel}, shape={self.shape}, "
                f"{self.stored_dtype}, {self.mode})")

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if len(key) > 3 or any(not isinstance(k, slice) for k in key):
            raise TypeError("a FieldReader is read by slices along (z, y, x), e.g. "
                            "reader[:, y0:y1, x0:x1]")
        key = key + (slice(None),) * (3 - len(key))
        with _reading(Path(self.path)):
            if self.mode == "mmap":
                return self._read_mmap(key)
            return self._read_planes(key)

    def __array__(self, dtype=None, copy=None):
        out = self[:, :, :]
        return out if dtype is None else out.astype(dtype, copy=False)

    def _read_mmap(self, key) -> np.ndarray:
        lay = self._layout
        if lay["kind"] == "mrc":
            with mrcfile.mmap(self.path, mode="r") as mrc:
                data = mrc.data if mrc.data.ndim == 3 else mrc.data[None]
                view = data.transpose(lay["order"])
                return np.array(view[key], dtype=np.float32)
        mm = np.memmap(self.path, dtype=lay["dtype"], mode="r", offset=lay["offset"],
                       shape=lay["shape"])
        try:
            view = _apply_plan(mm, lay["plan"])[self.channel]
            return np.array(view[key], dtype=np.float32)
        finally:
            del mm

    def _read_planes(self, key) -> np.ndarray:
        zs = range(*key[0].indices(self.shape[0]))
        ny, nx = (len(range(*k.indices(n))) for k, n in zip(key[1:], self.shape[1:]))
        out = np.empty((len(zs), ny, nx), np.float32)
        pages = self._layout["pages"][self.channel]
        with tifffile.TiffFile(self.path) as tif:
            series = _tiff_series(tif, Path(self.path))
            for j, z in enumerate(zs):  # one decoded plane in memory at a time
                out[j] = series.pages[int(pages[z])].asarray()[key[1], key[2]]
        return out


def open_field(path: str | os.PathLike, channel: int = 0) -> FieldReader:
    """A :class:`FieldReader` of one channel of a TIFF/OME-TIFF or MRC file (header only
    is read here).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it is not a readable volume (the message names the file).
    JobError
        If ``channel`` does not exist.
    """
    path = _existing(path)
    shape_czyx = read_shape(path)
    if not 0 <= int(channel) < shape_czyx[0]:
        raise JobError(f"{path} has {shape_czyx[0]} channel(s); channel {channel} does not "
                       "exist (channels count from 0)")
    with _reading(path):
        if _kind(path) == "mrc":
            with mrcfile.open(path, header_only=True) as mrc:
                _mrc_shape(mrc, path)
                order = _mrc_order(mrc.header)
                stored = mrcfile.utils.dtype_from_mode(mrc.header.mode)
            return FieldReader(path, channel, shape_czyx, mode="mmap", stored_dtype=stored,
                               layout={"kind": "mrc", "order": order})
        with tifffile.TiffFile(path) as tif:
            series = _tiff_series(tif, path)
            plan = _plan_axes(series.shape, series.axes, path)
            stored = np.dtype(series.dtype)
            offset = getattr(series, "dataoffset", None)
            if offset is not None:
                return FieldReader(path, channel, shape_czyx, mode="mmap", stored_dtype=stored,
                                   layout={"kind": "tiff", "offset": int(offset),
                                           "shape": tuple(series.shape), "plan": plan,
                                           "dtype": stored.newbyteorder(tif.byteorder)})
            axes = series.axes.upper()
            if not axes.endswith("YX") or len(series.pages) != int(np.prod(series.shape[:-2])):
                raise ValueError(f"{str(path)!r} stores its planes in a way that cannot be "
                                 f"read plane by plane (axes {series.axes}); save it as an "
                                 "uncompressed ZYX or CZYX stack")
            lead = tuple(series.shape[:-2])
            ids = np.arange(int(np.prod(lead)), dtype=np.int64).reshape(lead + (1, 1))
            pages = _apply_plan(ids, _plan_axes(lead + (1, 1), series.axes, path))[:, :, 0, 0]
            return FieldReader(path, channel, shape_czyx, mode="planes", stored_dtype=stored,
                               layout={"kind": "tiff", "pages": pages})
