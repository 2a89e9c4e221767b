"""Sets of images, coordinates and particles (items in their own SQLite file).

Every set overrides ``_loadClassesDict`` so that a fresh process can rebuild
spfluo items from the set file (pyworkflow otherwise only knows its own
classes and silently drops ours).
"""

from __future__ import annotations

import numpy as np
import pyworkflow.object as pwobj

from .data import (
    Coordinate3D,
    FluoImage,
    FluoObject,
    Particle,
    PSFModel,
    Transform,
    Volume,
    _as_voxel_size,
)
from .results import VolumeComparison

__all__ = ["FluoSet", "SetOfFluoImages", "SetOfCoordinates3D", "SetOfParticles", "SetOfVolumes"]


def _classes_dict() -> dict:
    classes = dict(pwobj.OBJECTS_DICT)
    for cls in (FluoObject, Transform, FluoImage, PSFModel, Coordinate3D, Particle, Volume):
        classes[cls.__name__] = cls
    classes[VolumeComparison.__name__] = VolumeComparison
    return classes


class FluoSet(pwobj.Set, FluoObject):
    """Base of spfluo sets: knows spfluo's classes and exposes ``items()``."""

    ITEM_TYPE = FluoObject

    def _loadClassesDict(self):
        return _classes_dict()

    def items(self) -> list:
        """Detached copies of every item, in id order.

        Iterating a set reuses one item object (pyworkflow's row template);
        this returns independent clones that can be kept.
        """
        return [item.clone() for item in self.iterItems(orderBy="id")]

    def append(self, item):
        if not isinstance(item, self.ITEM_TYPE):
            raise TypeError(f"{self.getClassName()} holds {self.ITEM_TYPE.__name__} items, "
                            f"got {type(item).__name__}")
        super().append(item)


class _VoxelSizeSet(FluoSet):
    """A set whose items all share one voxel size and one channel count."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._voxelSize = pwobj.CsvList(pType=float)
        self._numChannels = pwobj.Integer()

    def getVoxelSize(self) -> tuple[float, float, float]:
        if len(self._voxelSize) != 3:
            raise ValueError(f"{self.getClassName()}: no voxel size recorded (empty set?)")
        return tuple(self._voxelSize)

    def setVoxelSize(self, voxelSize) -> None:
        self._voxelSize.set(list(_as_voxel_size(voxelSize)))

    def getNumChannels(self):
        return self._numChannels.get()

    def append(self, item):
        vs = item.getVoxelSize()
        if len(self._voxelSize) != 3:
            self.setVoxelSize(vs)
        elif not np.allclose(vs, self.getVoxelSize(), rtol=1e-6, atol=0):
            raise ValueError(
                f"voxel size {vs} µm of {item.getFileName()} differs from the set's "
                f"{self.getVoxelSize()} µm: resample it or import it into another set"
            )
        nc = item.getNumChannels()
        if self._numChannels.get() is None:
            self._numChannels.set(nc)
        elif nc != self._numChannels.get():
            raise ValueError(
                f"{item.getFileName()} has {nc} channel(s), the set has {self._numChannels.get()}: "
                "every item of a set must have the same channels"
            )
        super().append(item)


class SetOfFluoImages(_VoxelSizeSet):
    """Fields of view (or any volumes) sharing one voxel size and channel count."""

    ITEM_TYPE = FluoImage

    def getImageIds(self) -> list[str]:
        return [img.getImageId() for img in self.iterItems(orderBy="id")]

    def getImageById(self, imageId) -> FluoImage | None:
        for img in self.iterItems():
            if img.getImageId() == str(imageId):
                return img.clone()
        return None


class SetOfVolumes(_VoxelSizeSet):
    """Reconstructed volumes (e.g. one per class or per dataset)."""

    ITEM_TYPE = Volume


class SetOfCoordinates3D(FluoSet):
    """Particle positions, linked to the set of images they were picked in."""

    ITEM_TYPE = Coordinate3D

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._imagesPointer = pwobj.Pointer()
        self._boxSize = pwobj.Float()
        self._boxSizeReason = pwobj.String()

    def getImages(self) -> SetOfFluoImages | None:
        return self._imagesPointer.get()

    def setImages(self, images) -> None:
        """Link to a SetOfFluoImages (or a Pointer to one)."""
        if isinstance(images, pwobj.Pointer):
            self._imagesPointer.copy(images)
        else:
            self._imagesPointer.set(images)

    def getBoxSize(self):
        """Box size in micrometres."""
        return self._boxSize.get()

    def setBoxSize(self, size_um, reason: str | None = None) -> None:
        """Box size in micrometres, and why it was chosen (e.g. "1.5 x the diameter")."""
        if not size_um or size_um <= 0:
            raise ValueError(f"box size must be > 0 µm, got {size_um}")
        self._boxSize.set(float(size_um))
        if reason is not None:
            self._boxSizeReason.set(reason)

    def getBoxSizeReason(self) -> str | None:
        """Why the box size was chosen (None when not recorded)."""
        return self._boxSizeReason.get()

    def iterImageCoordinates(self, imageId):
        """Clones of the coordinates that belong to ``imageId``."""
        return [c.clone() for c in self.iterItems(orderBy="id") if c.getImageId() == str(imageId)]


class SetOfParticles(_VoxelSizeSet):
    """Particles of one box size and voxel size, with or without poses."""

    ITEM_TYPE = Particle

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._hasPoses = pwobj.Boolean(False)

    def hasPoses(self) -> bool:
        return bool(self._hasPoses.get())

    def setHasPoses(self, value: bool) -> None:
        self._hasPoses.set(bool(value))

    def getBoxShape(self):
        first = self.getFirstItem()
        return None if first is None else first.getDimensions()
