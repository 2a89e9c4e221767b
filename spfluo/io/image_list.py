"""Image lists: the JSON file that names the images a picking or extraction job reads.

A JSON list of ``{"image_id": str, "path": str, "voxel_size": [z, y, x]}`` (micrometres;
the voxel size recorded in the project wins over the file's metadata).  The picking
protocols write it with :func:`write_image_list`; the ``pick`` and ``extract`` jobs read
it with :func:`read_image_list`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from spfluo.io.atomic import write_json_atomic
from spfluo.io.jobfile import JobError, read_json_file
from spfluo.io.volumes import read_volume

__all__ = ["ImageEntry", "read_image_list", "write_image_list"]


@dataclass(frozen=True)
class ImageEntry:
    """One image of an image list.

    Attributes
    ----------
    image_id : str
        Identifier of the image (unique in the list; coordinates refer to it).
    path : str
        Volume file (TIFF, OME-TIFF, MRC).
    voxel_size : tuple of 3 float
        ``(z, y, x)`` in micrometres (the project's value wins over the file's metadata).
    """

    image_id: str
    path: str
    voxel_size: tuple

    def __post_init__(self):
        try:
            vs = [float(v) for v in self.voxel_size]
        except (TypeError, ValueError):
            vs = []
        if len(vs) != 3 or not all(np.isfinite(vs)) or min(vs) <= 0:
            raise ValueError(f"image {self.image_id!r}: voxel_size must be 3 positive numbers "
                             f"(z, y, x) in micrometres, got {self.voxel_size!r}")
        object.__setattr__(self, "image_id", str(self.image_id))
        object.__setattr__(self, "path", str(self.path))
        object.__setattr__(self, "voxel_size", tuple(vs))

    def as_dict(self) -> dict:
        return {"image_id": self.image_id, "path": self.path, "voxel_size": list(self.voxel_size)}

    def read(self, *, channel: int | None = None) -> np.ndarray:
        """The pixels, float32: ``(C, Z, Y, X)``, or ``(Z, Y, X)`` for one ``channel``."""
        data = read_volume(self.path, voxel_size=self.voxel_size).data
        if channel is None:
            return data
        if not 0 <= channel < data.shape[0]:
            raise JobError(f"image {self.image_id!r} ({self.path}) has {data.shape[0]} "
                           f"channel(s); channel {channel} does not exist (channels count from 0)")
        return data[channel]


def write_image_list(path: str | os.PathLike, entries: Sequence[ImageEntry]) -> Path:
    """Write an image list (JSON) atomically; image ids must be unique."""
    entries = list(entries)
    if not entries:
        raise ValueError("an image list needs at least one image")
    ids = [e.image_id for e in entries]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"image id {dup[0]!r} appears twice; image ids must be unique")
    return write_json_atomic(path, [e.as_dict() for e in entries])


def read_image_list(path: str | os.PathLike) -> list[ImageEntry]:
    """Read an image list written by :func:`write_image_list`."""
    path = Path(path)
    data = read_json_file(path, what="image list")
    if not isinstance(data, list) or not data:
        raise JobError(f"image list {path} must be a non-empty JSON list of images")
    entries = []
    for k, item in enumerate(data):
        if not isinstance(item, dict) or not {"image_id", "path", "voxel_size"} <= set(item):
            raise JobError(f"image list {path}, entry {k}: needs image_id, path and voxel_size")
        try:
            entries.append(ImageEntry(item["image_id"], item["path"], item["voxel_size"]))
        except (TypeError, ValueError) as exc:
            raise JobError(f"image list {path}, entry {k}: {exc}") from None
    ids = [e.image_id for e in entries]
    if len(set(ids)) != len(ids):
        raise JobError(f"image list {path} repeats an image id; ids must be unique")
    return entries
