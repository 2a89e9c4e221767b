"""Between objects and arrays: load an object's pixels, build objects from arrays.

Arrays follow the conventions: ``(C, Z, Y, X)`` float32, voxel sizes
``(z, y, x)`` in micrometres.  Writing goes through :mod:`spfluo.io`
(atomic, OME-TIFF by default).
"""

from __future__ import annotations

import os

import numpy as np

from ..io import read_volume, write_volume
from .data import FluoImage

__all__ = ["load_array", "image_from_array"]


def load_array(image: FluoImage, *, channel: int | None = None) -> np.ndarray:
    """Pixels of ``image`` as float32, ``(C, Z, Y, X)`` (or ``(Z, Y, X)`` for one channel).

    The voxel size recorded on the object wins over the file's metadata (the
    user may have set it at import).
    """
    vs = image.getVoxelSize() if image.hasVoxelSize() else None
    data = read_volume(image.getFileName(), voxel_size=vs).data
    if channel is None:
        return data
    if not 0 <= channel < data.shape[0]:
        raise ValueError(f"{image.getFileName()} has {data.shape[0]} channel(s), "
                         f"channel {channel} does not exist")
    return data[channel]


def image_from_array(cls, array, voxel_size, path, *, image_id=None, channel_names=None):
    """Write ``array`` to ``path`` and return a ``cls`` object (FluoImage subclass) for it.

    Parameters
    ----------
    cls : type
        FluoImage, PSFModel, Particle or Volume.
    array : ndarray, shape (Z, Y, X) or (C, Z, Y, X)
    voxel_size : tuple of float, (z, y, x) in micrometres
    path : str
        Destination file (``.ome.tif`` recommended).
    image_id : str, optional
        Defaults to the file name without its extension.
    """
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ValueError(f"expected an array (Z, Y, X) or (C, Z, Y, X), got shape {array.shape}")
    write_volume(path, array, voxel_size, channel_names=channel_names)
    if image_id is None:
        image_id = os.path.basename(str(path)).split(".")[0]
    return cls(filename=str(path), voxelSize=voxel_size, shape=array.shape, imageId=image_id)
