"""Volumes on disk: TIFF (plain, ImageJ hyperstack, OME-TIFF) and MRC, with voxel sizes.

In memory a volume is a :class:`VolumeData`: a float array of shape ``(C, Z, Y, X)``
(one channel gives ``C = 1``) and its voxel size ``(z, y, x)`` in micrometres.

Reading
    The axes that tifffile reports for the first image series (``ZYX``, ``CZYX``,
    ``ZCYX``, ``TZCYX`` with one time point, ``YX`` for a single plane, ...) are
    reordered to ``(C, Z, Y, X)``; axes of length 1 other than Y and X are dropped, RGB
    samples (``S``) count as channels, and one unnamed stacking axis (``I``, ``Q``) is
    taken as Z. Voxel sizes come from the metadata:

    - OME-TIFF: ``PhysicalSizeX/Y/Z`` with their units (default micrometre);
    - ImageJ hyperstack: ``XResolution``/``YResolution`` (pixels per unit), ``spacing``
      (z step) and ``unit`` (``yunit``/``zunit`` where present);
    - MRC/MRCS: the header voxel size in Angstrom (all zeros means "not set").

    Units nm, um (micron, µm), mm, cm, m, Angstrom, pm and inch are converted to
    micrometres. A plain TIFF carries no voxel size. A single plane (Z = 1) with no z step
    gets the x size as its z size (there is no z spacing to read). A ``voxel_size`` passed
    by the caller overrides the metadata.

Writing
    By extension: ``.ome.tif``/``.ome.tiff`` write OME-TIFF (axes ``CZYX``, physical sizes
    in micrometres, channel names), ``.tif``/``.tiff`` an ImageJ hyperstack (axes ``ZCYX``,
    ``spacing``, ``resolution`` and unit ``micron``; channel names as slice labels),
    ``.mrc``/``.map`` MRC (one channel, voxel size in Angstrom). Files are written
    atomically (:mod:`spfluo.io.atomic`). uint8 and uint16 arrays are stored as they are;
    every other dtype is stored as float32.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mrcfile
import numpy as np
import tifffile

from spfluo.io._files import regular_file
from spfluo.io.atomic import atomic_write_path

__all__ = ["VolumeData", "read_volume", "read_voxel_size", "read_shape", "write_volume"]

_FIX_VOXEL_SIZE = "pass voxel_size=(z, y, x) in micrometres or set it in the import protocol"
_TIFF_SUFFIXES = (".tif", ".tiff")
_OME_SUFFIXES = (".ome.tif", ".ome.tiff")
_MRC_READ_SUFFIXES = (".mrc", ".mrcs", ".map")
_MRC_WRITE_SUFFIXES = (".mrc", ".map")
_ANGSTROM_UM = 1e-4

# Micrometres per unit, for the unit spellings found in TIFF and OME metadata (lower case,
# micro sign and Greek mu both normalised to "u"). None means "uncalibrated".
_UM_PER_UNIT: dict[str, float | None] = {
    "um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0,
    "micrometers": 1.0, "micrometres": 1.0,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3, "nanometers": 1e-3, "nanometres": 1e-3,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3, "millimeters": 1e3, "millimetres": 1e3,
    "cm": 1e4, "centimeter": 1e4, "centimetre": 1e4, "centimeters": 1e4, "centimetres": 1e4,
    "m": 1e6, "meter": 1e6, "metre": 1e6, "meters": 1e6, "metres": 1e6,
    "a": 1e-4, "å": 1e-4, "angstrom": 1e-4, "angstroms": 1e-4, "ångström": 1e-4,
    "pm": 1e-6, "picometer": 1e-6, "picometre": 1e-6,
    "inch": 25400.0, "in": 25400.0, "inches": 25400.0,
    "pixel": None, "pixels": None, "px": None, "": None,
}


class _VolumeFileError(ValueError):
    """A ValueError whose message already names the file (not re-wrapped)."""


@dataclass(frozen=True, eq=False)
class VolumeData:
    """A volume with its voxel size.

    Attributes
    ----------
    data : ndarray, shape (C, Z, Y, X)
        The voxels, float (float32 unless another float dtype was asked for). One channel
        gives ``C = 1``.
    voxel_size : tuple of float
        ``(z, y, x)`` voxel size in micrometres.
    channel_names : tuple of str or None
        One name per channel when the file names them, else None.
    """

    data: np.ndarray
    voxel_size: tuple[float, float, float]
    channel_names: tuple[str, ...] | None = None

    def __post_init__(self):
        if not isinstance(self.data, np.ndarray) or self.data.ndim != 4:
            raise ValueError("VolumeData.data must be an ndarray of shape (C, Z, Y, X), got "
                             f"{getattr(self.data, 'shape', type(self.data).__name__)}")
        object.__setattr__(self, "voxel_size", _check_voxel_size(self.voxel_size))
        if self.channel_names is not None:
            names = tuple(str(n) for n in self.channel_names)
            if len(names) != self.data.shape[0]:
                raise ValueError(f"VolumeData.channel_names has {len(names)} names for "
                                 f"{self.data.shape[0]} channels; give one name per channel "
                                 "or None")
            object.__setattr__(self, "channel_names", names)

    @property
    def n_channels(self) -> int:
        """Number of channels C."""
        return int(self.data.shape[0])

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """Spatial shape ``(Z, Y, X)`` in voxels."""
        return tuple(int(n) for n in self.data.shape[1:])  # type: ignore[return-value]


# --------------------------------------------------------------------------- helpers


def _check_voxel_size(voxel_size: Any, name: str = "voxel_size") -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in voxel_size)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (z, y, x) tuple of 3 positive numbers in "
                         f"micrometres, got {voxel_size!r}") from None
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{name} must be a (z, y, x) tuple of 3 positive finite numbers in "
                         f"micrometres, got {voxel_size!r}")
    return values  # type: ignore[return-value]


def _kind(path: Path, *, writing: bool = False) -> str:
    name = path.name.lower()
    if name.endswith(_OME_SUFFIXES):
        return "ome"
    if name.endswith(_TIFF_SUFFIXES):
        return "tiff"
    mrc = _MRC_WRITE_SUFFIXES if writing else _MRC_READ_SUFFIXES
    if name.endswith(mrc):
        return "mrc"
    known = _OME_SUFFIXES + _TIFF_SUFFIXES + mrc
    raise ValueError(f"unsupported volume file extension in {str(path)!r}; use one of "
                     f"{', '.join(known)}")


def _existing(path: str | os.PathLike) -> Path:
    return regular_file(path, what="volume", kind="volume")


class _ErrorRecords(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class _reading:
    """Turn any failure of the underlying readers into a ValueError naming the file.

    tifffile logs (instead of raising) some corruptions, such as a tag whose value lies
    past the end of the file; errors it logs while the block runs also fail the read.
    """

    def __init__(self, path: Path):
        self.path = path
        self.records = _ErrorRecords()

    def __enter__(self):
        logging.getLogger("tifffile").addHandler(self.records)
        return self

    def __exit__(self, exc_type, exc, tb):
        logging.getLogger("tifffile").removeHandler(self.records)
        if exc is None and self.records.messages:
            raise ValueError(f"cannot read volume file {str(self.path)!r} (corrupt or truncated): "
                             f"{self.records.messages[0]}")
        if exc is None or isinstance(exc, (PermissionError, FileNotFoundError)):
            return False
        if isinstance(exc, _VolumeFileError):
            raise ValueError(str(exc)) from None
        if isinstance(exc, (ValueError, OSError, EOFError, struct.error, KeyError, IndexError,
                            TypeError, ET.ParseError)):
            raise ValueError(f"cannot read volume file {str(self.path)!r} (corrupt, truncated "
                             f"or not a supported file): {exc}") from exc
        return False


def _um_per_unit(unit: Any, path: Path, what: str) -> float | None:
    text = str(unit).strip().replace("\\u00B5", "u").replace("\\u00b5", "u")
    text = text.replace("\u00b5", "u").replace("\u03bc", "u").lower()
    if text not in _UM_PER_UNIT:
        raise _VolumeFileError(f"unknown length unit {str(unit)!r} for the {what} in "
                               f"{str(path)!r}; {_FIX_VOXEL_SIZE}")
    return _UM_PER_UNIT[text]


# --------------------------------------------------------------------------- axes


@dataclass(frozen=True)
class _AxesPlan:
    kept: tuple[int, ...]        # shape after dropping singleton non-spatial axes
    perm: tuple[int, ...]        # transpose of the kept array into C, Z, Y, X order (present axes)
    shape_czyx: tuple[int, int, int, int]


def _plan_axes(shape: Sequence[int], axes: str, path: Path) -> _AxesPlan:
    if len(shape) != len(axes):
        raise _VolumeFileError(f"{str(path)!r}: axes {axes!r} do not match shape {tuple(shape)}")
    kept_sizes: list[int] = []
    letters: list[str] = []
    for ax, n in zip(axes.upper(), shape):
        if ax not in "YX" and n == 1:
            continue
        if ax == "T":
            raise _VolumeFileError(f"{str(path)!r} is a time series with {n} time points; "
                                   "spfluo reads one volume per file: save each time point "
                                   "as its own file")
        kept_sizes.append(int(n))
        letters.append(ax if ax in "ZCYX" else ("C" if ax == "S" else "?"))
    unknown = [i for i, a in enumerate(letters) if a == "?"]
    if len(unknown) == 1 and "Z" not in letters:
        letters[unknown[0]] = "Z"
    if ("?" in letters or len(set(letters)) != len(letters) or "Y" not in letters
            or "X" not in letters):
        raise _VolumeFileError(f"cannot interpret the axes {axes!r} (shape {tuple(shape)}) of "
                               f"{str(path)!r} as (C, Z, Y, X); save it as a ZYX or CZYX stack")
    perm = tuple(letters.index(a) for a in "CZYX" if a in letters)
    sizes = dict(zip(letters, kept_sizes))
    shape_czyx = tuple(sizes.get(a, 1) for a in "CZYX")
    return _AxesPlan(tuple(kept_sizes), perm, shape_czyx)  # type: ignore[arg-type]


def _apply_plan(array: np.ndarray, plan: _AxesPlan) -> np.ndarray:
    return array.reshape(plan.kept).transpose(plan.perm).reshape(plan.shape_czyx)


# --------------------------------------------------------------------------- TIFF


def _tiff_series(tif: tifffile.TiffFile, path: Path):
    series = tif.series
    if len(series) == 0:
        raise _VolumeFileError(f"{str(path)!r} contains no image")
    if len(series) > 1:
        raise _VolumeFileError(f"{str(path)!r} contains {len(series)} image series of shapes "
                               f"{[s.shape for s in series]}; spfluo reads files that hold one "
                               "volume: save each series as its own file")
    return series[0]


def _check_tiff_size(series, path: Path) -> None:
    """Cheap truncation check on contiguous data: its end must lie inside the file."""
    offset = getattr(series, "dataoffset", None)
    if offset is None:
        return
    size = path.stat().st_size
    if offset + series.nbytes > size:
        raise _VolumeFileError(f"{str(path)!r} is truncated: its pixel data needs "
                               f"{offset + series.nbytes} bytes, the file has {size}")


def _ome_pixels(tif: tifffile.TiffFile):
    xml = tif.ome_metadata
    if not xml:
        return None
    root = ET.fromstring(xml)
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == "Pixels":
            return element
    return None


def _ome_voxel_size(pixels, nz: int, path: Path) -> tuple[float, float, float] | None:
    sizes = {}
    for ax in "XYZ":
        value = pixels.get(f"PhysicalSize{ax}")
        if value is None:
            sizes[ax] = None
            continue
        scale = _um_per_unit(pixels.get(f"PhysicalSize{ax}Unit", "µm"), path,
                             f"OME PhysicalSize{ax}")
        sizes[ax] = None if scale is None else float(value) * scale
    if sizes["X"] is None or sizes["Y"] is None:
        return None
    if sizes["Z"] is None:
        if nz != 1:
            return None
        sizes["Z"] = sizes["X"]
    return sizes["Z"], sizes["Y"], sizes["X"]


def _ome_channel_names(pixels, n_channels: int) -> tuple[str, ...] | None:
    names = [el.get("Name") for el in pixels if el.tag.rsplit("}", 1)[-1] == "Channel"]
    if len(names) != n_channels or any(not n for n in names):
        return None
    return tuple(names)


def _imagej_voxel_size(tif: tifffile.TiffFile, nz: int, path: Path):
    meta = tif.imagej_metadata or {}
    page = tif.pages[0]
    tags = page.tags
    unit = meta.get("unit")
    if unit is None:  # ImageJ writes a unit for every calibrated image
        return None
    x_scale = _um_per_unit(unit, path, "ImageJ unit")
    if x_scale is None:
        return None
    y_scale = _um_per_unit(meta["yunit"], path, "ImageJ yunit") if "yunit" in meta else x_scale
    z_scale = _um_per_unit(meta["zunit"], path, "ImageJ zunit") if "zunit" in meta else x_scale
    sizes = []
    for tag_name, scale in (("XResolution", x_scale), ("YResolution", y_scale)):
        tag = tags.get(tag_name)
        if tag is None or scale is None:
            return None
        num, den = tag.value
        if num <= 0 or den <= 0:
            return None
        sizes.append(den / num * scale)
    x, y = sizes
    if "spacing" in meta and z_scale is not None:
        z = float(meta["spacing"]) * z_scale
    elif nz == 1:
        z = x
    else:
        return None
    if not all(math.isfinite(v) and v > 0 for v in (z, y, x)):
        return None
    return z, y, x


def _imagej_channel_names(tif: tifffile.TiffFile, shape_czyx) -> tuple[str, ...] | None:
    labels = (tif.imagej_metadata or {}).get("Labels")
    n_c, n_z = shape_czyx[0], shape_czyx[1]
    if not labels or len(labels) != n_c * n_z:
        return None
    # ImageJ stores planes in TZC order, C fastest: label of (z, c) is labels[z * C + c].
    names = tuple(str(labels[c]) for c in range(n_c))
    if any(not n for n in names):
        return None
    if any(labels[z * n_c + c] != names[c] for z in range(n_z) for c in range(n_c)):
        return None
    return names


def _tiff_metadata(tif: tifffile.TiffFile, shape_czyx, path: Path):
    voxel_size = None
    names = None
    nz = shape_czyx[1]
    if tif.is_ome:
        pixels = _ome_pixels(tif)
        if pixels is not None:
            voxel_size = _ome_voxel_size(pixels, nz, path)
            names = _ome_channel_names(pixels, shape_czyx[0])
    if tif.is_imagej:
        if voxel_size is None:
            voxel_size = _imagej_voxel_size(tif, nz, path)
        if names is None:
            names = _imagej_channel_names(tif, shape_czyx)
    return voxel_size, names


# --------------------------------------------------------------------------- MRC


def _mrc_order(header) -> tuple[int, ...]:
    """Transpose taking mrcfile's (section, row, column) data to (z, y, x)."""
    phys = (int(header.maps), int(header.mapr), int(header.mapc))  # 1 = x, 2 = y, 3 = z
    if sorted(phys) != [1, 2, 3]:
        return (0, 1, 2)
    return tuple(int(i) for i in np.argsort([-p for p in phys]))


def _mrc_voxel_size(mrc) -> tuple[float, float, float] | None:
    vs = mrc.voxel_size
    x, y, z = float(vs.x), float(vs.y), float(vs.z)
    if not all(math.isfinite(v) and v > 0 for v in (x, y, z)):
        return None
    return z * _ANGSTROM_UM, y * _ANGSTROM_UM, x * _ANGSTROM_UM


def _is_volume_stack(header) -> bool:
    # Space groups 401-630 mark a stack of volumes of mz sections each (MRC2014).
    ispg, mz, nz = int(header.ispg), int(header.mz), int(header.nz)
    return 401 <= ispg <= 630 and 0 < mz < nz


def _mrc_shape(mrc, path: Path) -> tuple[int, int, int, int]:
    h = mrc.header
    if _is_volume_stack(h):
        raise _VolumeFileError(f"{str(path)!r} is a stack of several volumes; spfluo reads one "
                               "volume per file: split the stack")
    data_shape = (int(h.nz), int(h.ny), int(h.nx))
    z, y, x = (data_shape[i] for i in _mrc_order(h))
    return 1, z, y, x


def _check_mrc_size(mrc, path: Path, shape_czyx) -> None:
    mode_dtype = mrcfile.utils.dtype_from_mode(mrc.header.mode)
    needed = 1024 + int(mrc.header.nsymbt) + int(np.prod(shape_czyx)) * mode_dtype.itemsize
    size = path.stat().st_size
    if needed > size:
        raise _VolumeFileError(f"{str(path)!r} is truncated: its header announces {needed} "
                               f"bytes, the file has {size}")


# --------------------------------------------------------------------------- public API


def read_shape(path: str | os.PathLike) -> tuple[int, int, int, int]:
    """Shape ``(C, Z, Y, X)`` of a volume file, read from its header only (no pixels).

    Parameters
    ----------
    path : str or path-like
        A ``.tif``/``.tiff``/``.ome.tif`` or ``.mrc``/``.mrcs``/``.map`` file.

    Returns
    -------
    tuple of int
        ``(C, Z, Y, X)``, as :func:`read_volume` would return it.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not a readable volume, is visibly truncated, or has axes that cannot
        be read as ``(C, Z, Y, X)`` (the message names the file and the reason).
    """
    path = _existing(path)
    kind = _kind(path)
    with _reading(path):
        if kind == "mrc":
            with mrcfile.open(path, header_only=True) as mrc:
                shape = _mrc_shape(mrc, path)
                _check_mrc_size(mrc, path, shape)
                return shape
        with tifffile.TiffFile(path) as tif:
            series = _tiff_series(tif, path)
            plan = _plan_axes(series.shape, series.axes, path)
            _check_tiff_size(series, path)
            return plan.shape_czyx


def read_voxel_size(path: str | os.PathLike) -> tuple[float, float, float] | None:
    """Voxel size recorded in a volume file's metadata (no pixels are read).

    Parameters
    ----------
    path : str or path-like
        A ``.tif``/``.tiff``/``.ome.tif`` or ``.mrc``/``.mrcs``/``.map`` file.

    Returns
    -------
    tuple of float or None
        ``(z, y, x)`` in micrometres, or None when the file records none (plain TIFF, an
        uncalibrated ImageJ file, an MRC header with a zero voxel size).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file cannot be read or records an unknown length unit.
    """
    path = _existing(path)
    kind = _kind(path)
    with _reading(path):
        if kind == "mrc":
            with mrcfile.open(path, header_only=True) as mrc:
                return _mrc_voxel_size(mrc)
        with tifffile.TiffFile(path) as tif:
            series = _tiff_series(tif, path)
            plan = _plan_axes(series.shape, series.axes, path)
            return _tiff_metadata(tif, plan.shape_czyx, path)[0]


def read_volume(path: str | os.PathLike, *, voxel_size: Sequence[float] | None = None,
                dtype: Any = np.float32) -> VolumeData:
    """Read a volume file into a :class:`VolumeData` of shape ``(C, Z, Y, X)``.

    Parameters
    ----------
    path : str or path-like
        A TIFF (plain, ImageJ hyperstack, OME-TIFF: ``.tif``, ``.tiff``, ``.ome.tif``) or
        MRC (``.mrc``, ``.mrcs``, ``.map``) file.
    voxel_size : tuple of float, optional
        ``(z, y, x)`` in micrometres. When given it is used whatever the file records;
        when omitted the file's metadata must provide it.
    dtype : float dtype, default float32
        dtype of the returned array.

    Returns
    -------
    VolumeData
        ``data`` of shape ``(C, Z, Y, X)`` and dtype ``dtype``, ``voxel_size`` ``(z, y, x)``
        in micrometres, ``channel_names`` when the file names its channels.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is corrupt or truncated, has axes that cannot be read as
        ``(C, Z, Y, X)``, holds NaN/Inf voxels, or records no voxel size and none was
        passed (every message names the file and says how to fix it).
    """
    if voxel_size is not None:
        voxel_size = _check_voxel_size(voxel_size)
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise ValueError("dtype must be a floating point dtype such as float32, got "
                         f"{dtype!r}") from None
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a floating point dtype such as float32, got {dtype}")
    path = _existing(path)
    kind = _kind(path)
    names = None
    with _reading(path):
        if kind == "mrc":
            with mrcfile.open(path, mode="r") as mrc:
                _mrc_shape(mrc, path)  # rejects volume stacks
                raw = np.asarray(mrc.data)
                if raw.ndim == 2:
                    raw = raw[None]
                raw = raw.transpose(_mrc_order(mrc.header))[None]
                found = _mrc_voxel_size(mrc)
        else:
            with tifffile.TiffFile(path) as tif:
                series = _tiff_series(tif, path)
                plan = _plan_axes(series.shape, series.axes, path)
                found, names = _tiff_metadata(tif, plan.shape_czyx, path)
                raw = _apply_plan(series.asarray(), plan)
    if raw.dtype.kind not in "biuf":
        raise ValueError(f"{str(path)!r} holds {raw.dtype} voxels; spfluo reads real-valued "
                         "volumes: convert it to float32 or uint16")
    if voxel_size is None:
        if found is None:
            raise ValueError(f"no voxel size found in {str(path)!r}; {_FIX_VOXEL_SIZE}")
        voxel_size = found
    data = np.ascontiguousarray(raw, dtype=dtype)
    if data.size == 0:
        raise ValueError(f"{str(path)!r} holds an empty volume of shape {data.shape}")
    if not np.isfinite(data).all():
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        raise ValueError(f"{str(path)!r} contains {bad} NaN or infinite voxel values (or values "
                         f"out of the {dtype} range); fix or replace them before importing")
    return VolumeData(data=data, voxel_size=voxel_size, channel_names=names)


def _storage(data: Any) -> np.ndarray:
    array = np.asarray(data)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"data must be a real-valued array, got dtype {array.dtype}")
    if array.ndim not in (3, 4):
        raise ValueError(f"data must have shape (Z, Y, X) or (C, Z, Y, X), got {array.shape}")
    if array.size == 0:
        raise ValueError(f"data is empty (shape {array.shape}); nothing to write")
    if array.dtype not in (np.uint8, np.uint16):
        array = array.astype(np.float32, copy=False)
        if not np.isfinite(array).all():
            raise ValueError("data contains NaN or infinite values (or values beyond the "
                             "float32 range); replace them before writing")
    if array.ndim == 3:
        array = array[None]
    return np.ascontiguousarray(array)


def write_volume(path: str | os.PathLike, data: np.ndarray, voxel_size: Sequence[float], *,
                 channel_names: Sequence[str] | None = None) -> Path:
    """Write a volume, choosing the format from the file extension, atomically.

    Parameters
    ----------
    path : str or path-like
        Destination. ``.ome.tif``/``.ome.tiff``: OME-TIFF; ``.tif``/``.tiff``: ImageJ
        hyperstack; ``.mrc``/``.map``: MRC (one channel only). Its folder must exist.
    data : ndarray, shape (Z, Y, X) or (C, Z, Y, X)
        The voxels. uint8 and uint16 are stored as they are, anything else as float32.
    voxel_size : tuple of float
        ``(z, y, x)`` in micrometres.
    channel_names : sequence of str, optional
        One name per channel, stored in TIFF files (OME channel names, ImageJ slice
        labels). MRC has no place for them and does not store them.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If the extension is not supported, ``data`` has the wrong shape or holds NaN/Inf,
        ``voxel_size`` is not three positive numbers, ``channel_names`` does not have one
        name per channel, or a multi-channel array is written to MRC.
    FileNotFoundError
        If the destination folder does not exist.
    """
    path = Path(path)
    kind = _kind(path, writing=True)
    array = _storage(data)
    z, y, x = _check_voxel_size(voxel_size)
    n_c = array.shape[0]
    names = None
    if channel_names is not None:
        if isinstance(channel_names, str):
            raise ValueError("channel_names must be a sequence of names, one per channel, got "
                             f"the string {channel_names!r}; wrap it in a list")
        names = [str(n) for n in channel_names]
        if len(names) != n_c:
            raise ValueError(f"channel_names has {len(names)} names for {n_c} channels; give one "
                             "name per channel")
    if kind == "mrc" and n_c != 1:
        raise ValueError(f"MRC holds one channel, data has {n_c} channels (shape "
                         f"{array.shape}); write it to a .tif or .ome.tif file instead, or write "
                         "one MRC file per channel")
    with atomic_write_path(path) as tmp:
        if kind == "mrc":
            with mrcfile.new(tmp, overwrite=True) as mrc:
                mrc.set_data(array[0])
                mrc.voxel_size = (x / _ANGSTROM_UM, y / _ANGSTROM_UM, z / _ANGSTROM_UM)
        elif kind == "ome":
            metadata: dict[str, Any] = {
                "axes": "CZYX",
                "PhysicalSizeX": x, "PhysicalSizeXUnit": "µm",
                "PhysicalSizeY": y, "PhysicalSizeYUnit": "µm",
                "PhysicalSizeZ": z, "PhysicalSizeZUnit": "µm",
            }
            if names is not None:
                metadata["Channel"] = {"Name": names}
            tifffile.imwrite(tmp, array, ome=True, photometric="minisblack", metadata=metadata,
                             bigtiff=array.nbytes > 2**32 - 2**25)
        else:
            metadata = {"axes": "ZCYX", "spacing": z, "unit": "micron"}
            if names is not None:
                metadata["Labels"] = names * array.shape[1]
            tifffile.imwrite(tmp, np.ascontiguousarray(array.transpose(1, 0, 2, 3)), imagej=True,
                             resolution=(1.0 / x, 1.0 / y), metadata=metadata)
    return path
