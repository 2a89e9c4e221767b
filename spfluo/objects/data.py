"""Single data objects: poses, images, PSFs, coordinates, particles, volumes.

Every object that holds pixels points to a file (OME-TIFF, TIFF or MRC);
the project database stores the path, the shape and the voxel size, never the
pixels.  Conventions (``docs/conventions.md``): voxel sizes are
``(z, y, x)`` in micrometres, shapes are ``(C, Z, Y, X)``, stored poses are
4x4 matrices in ``(x, y, z)`` order with translations in micrometres.
"""

from __future__ import annotations

import json

import numpy as np
import pyworkflow.object as pwobj

from ..algorithms.geometry import vectors_voxels_to_um

__all__ = [
    "FluoObject",
    "Transform",
    "FluoImage",
    "PSFModel",
    "Coordinate3D",
    "Particle",
    "Volume",
]


def _as_voxel_size(voxel_size) -> tuple[float, float, float]:
    """Validate a voxel size: a positive float or a (z, y, x) triple, in micrometres."""
    vs = np.atleast_1d(np.asarray(voxel_size, dtype=float))
    if vs.shape == (1,):
        vs = np.repeat(vs, 3)
    if vs.shape != (3,) or not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise ValueError(
            f"voxel size must be a positive number or (z, y, x) in micrometres, got {voxel_size!r}"
        )
    return tuple(float(v) for v in vs)


class FluoObject(pwobj.Object):
    """Base class of every spfluo object (the Domain's object class)."""


class Transform(FluoObject):
    """A pose: a 4x4 matrix mapping reference coordinates to particle coordinates.

    The matrix is in ``(x, y, z)`` order with the translation in micrometres,
    stored as readable JSON (``[[r00, r01, r02, tx], ...]``).  An unset
    transform (no pose) has no value.
    """

    def __init__(self, matrix=None, **kwargs):
        super().__init__(**kwargs)
        self._matrix = pwobj.String()
        if matrix is not None:
            self.setMatrix(matrix)

    def hasMatrix(self) -> bool:
        return bool(self._matrix.get())

    def getMatrix(self) -> np.ndarray:
        """The (4, 4) float64 matrix; raises ValueError when no pose is set."""
        text = self._matrix.get()
        if not text:
            raise ValueError("this transform holds no pose")
        return np.array(json.loads(text), dtype=np.float64)

    def setMatrix(self, matrix) -> None:
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape != (4, 4) or not np.all(np.isfinite(m)):
            raise ValueError(f"a pose matrix must be a finite (4, 4) array, got shape {m.shape}")
        self._matrix.set(json.dumps(np.round(m, 12).tolist()))

    def getRotation(self) -> np.ndarray:
        """(3, 3) rotation in the (x, y, z) frame."""
        return self.getMatrix()[:3, :3]

    def getShifts(self) -> np.ndarray:
        """(3,) translation (x, y, z) in micrometres."""
        return self.getMatrix()[:3, 3]

    def clear(self) -> None:
        self._matrix.set(None)


class FluoImage(FluoObject):
    """A file-backed volume with its voxel size, shape and image id.

    Attributes stored: file name, voxel size ``(z, y, x)`` in micrometres,
    shape ``(C, Z, Y, X)`` and an image id (unique within its set; coordinates
    and particles refer to their image through it).
    """

    def __init__(self, filename=None, voxelSize=None, shape=None, imageId=None, **kwargs):
        super().__init__(**kwargs)
        self._filename = pwobj.String(filename)
        self._voxelSize = pwobj.CsvList(pType=float)
        self._shape = pwobj.CsvList(pType=int)
        self._imageId = pwobj.String(imageId)
        if voxelSize is not None:
            self.setVoxelSize(voxelSize)
        if shape is not None:
            self.setShape(shape)

    # -- file -------------------------------------------------------------
    def getFileName(self) -> str:
        return self._filename.get()

    def setFileName(self, filename) -> None:
        self._filename.set(str(filename))

    def getFiles(self) -> set:
        return {self.getFileName()}

    # -- geometry ------------------------------------------------------------
    def getVoxelSize(self) -> tuple[float, float, float]:
        """(z, y, x) in micrometres."""
        if len(self._voxelSize) != 3:
            raise ValueError(f"{self.getFileName()}: no voxel size recorded")
        return tuple(self._voxelSize)

    def setVoxelSize(self, voxelSize) -> None:
        self._voxelSize.set(list(_as_voxel_size(voxelSize)))

    def hasVoxelSize(self) -> bool:
        return len(self._voxelSize) == 3

    def getShape(self) -> tuple[int, int, int, int]:
        """(C, Z, Y, X) in voxels."""
        return tuple(self._shape)

    def setShape(self, shape) -> None:
        shape = tuple(int(s) for s in shape)
        if len(shape) == 3:
            shape = (1,) + shape
        if len(shape) != 4 or min(shape) < 1:
            raise ValueError(f"shape must be (C, Z, Y, X) or (Z, Y, X) with positive sizes, got {shape}")
        self._shape.set(list(shape))

    def getNumChannels(self) -> int:
        return self.getShape()[0]

    def getDimensions(self) -> tuple[int, int, int]:
        """(Z, Y, X) in voxels."""
        return self.getShape()[1:]

    def getPhysicalSize(self) -> tuple[float, float, float]:
        """(z, y, x) extent in micrometres."""
        um = vectors_voxels_to_um(self.getDimensions(), self.getVoxelSize())
        return tuple(float(x) for x in um)

    # -- identity -----------------------------------------------------------
    def getImageId(self) -> str:
        return self._imageId.get()

    def setImageId(self, imageId) -> None:
        self._imageId.set(str(imageId))

    def getObjLabel(self) -> str:
        """The label, else the image id: what the GUI names the item of a set by (an
        input ``RUN.outputImages.ITEM`` reads "from field_0", not "from None")."""
        return super().getObjLabel() or (self.getImageId() or "")

    def __str__(self):
        shape = "x".join(map(str, self.getShape())) if len(self._shape) else "?"
        vs = ", ".join(f"{v:g}" for v in self._voxelSize) if self.hasVoxelSize() else "?"
        return f"{self.getClassName()} ({shape}, voxel {vs} µm)"


class PSFModel(FluoImage):
    """A point spread function: centred on its box, unit sum, one per channel."""


class Coordinate3D(FluoObject):
    """A particle position in its image.

    Position ``(x, y, z)`` in micrometres from the image origin (the centre of
    voxel 0), the box size in micrometres, the id of its image, an optional
    detection score and an optional orientation.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._x = pwobj.Float()
        self._y = pwobj.Float()
        self._z = pwobj.Float()
        self._boxSize = pwobj.Float()
        self._imageId = pwobj.String()
        self._score = pwobj.Float()
        self._transform = Transform()

    def getPosition(self) -> tuple[float, float, float]:
        """(x, y, z) in micrometres."""
        return (self._x.get(), self._y.get(), self._z.get())

    def setPosition(self, x, y, z) -> None:
        values = [float(v) for v in (x, y, z)]
        if not np.all(np.isfinite(values)):
            raise ValueError(f"coordinate position must be finite, got {values}")
        self._x.set(values[0])
        self._y.set(values[1])
        self._z.set(values[2])

    def getPositionZYX(self) -> np.ndarray:
        """(z, y, x) in micrometres, the array-order convention."""
        return np.array(self.getPosition()[::-1])

    def getBoxSize(self) -> float:
        return self._boxSize.get()

    def setBoxSize(self, size_um) -> None:
        self._boxSize.set(float(size_um))

    def getImageId(self) -> str:
        return self._imageId.get()

    def setImageId(self, imageId) -> None:
        self._imageId.set(str(imageId))

    def getScore(self):
        return self._score.get()

    def setScore(self, score) -> None:
        self._score.set(None if score is None else float(score))

    def getTransform(self) -> Transform:
        return self._transform

    def setTransform(self, matrix) -> None:
        self._transform.setMatrix(matrix)


class Particle(FluoImage):
    """A sub-volume cut around a coordinate, with its pose.

    The pose (a :class:`Transform`) maps the reference volume to this
    particle; unset when the poses are not known yet.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._coordinate = Coordinate3D()
        self._sourceImageId = pwobj.String()
        self._transform = Transform()

    def getCoordinate(self) -> Coordinate3D:
        return self._coordinate

    def setCoordinate(self, coord: Coordinate3D) -> None:
        self._coordinate.copy(coord, copyId=False)

    def getSourceImageId(self) -> str:
        return self._sourceImageId.get()

    def setSourceImageId(self, imageId) -> None:
        self._sourceImageId.set(str(imageId))

    def getTransform(self) -> Transform:
        return self._transform

    def setTransform(self, matrix) -> None:
        self._transform.setMatrix(matrix)

    def hasPose(self) -> bool:
        return self._transform.hasMatrix()


class Volume(FluoImage):
    """A reconstruction, optionally with its two half maps, half-map FSC and coverage.

    ``fscFile`` is a CSV (frequency in 1/voxel, FSC) written by the job that
    made the volume; ``resolution`` is the half-map FSC resolution at 0.143
    in micrometres, set only when it was measured; ``resolutionText`` is the
    verdict a user reads (the resolution, "not reached below Nyquist (X µm):
    sample finer", or "beyond the optical cutoff"); ``opticalCutoff`` is the
    optical cutoff of the PSF in micrometres; ``coverageFile`` is the Fourier
    coverage of the poses that made it (a centred spectrum ``(C, P, P, P)``, the
    sum of the rotated |OTF|^2 per particle, written by "reconstruct with known
    poses").
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._halfMap1 = pwobj.String()
        self._halfMap2 = pwobj.String()
        self._fscFile = pwobj.String()
        self._resolution = pwobj.Float()
        self._resolutionText = pwobj.String()
        self._opticalCutoff = pwobj.Float()
        self._coverageFile = pwobj.String()

    def hasHalfMaps(self) -> bool:
        return bool(self._halfMap1.get()) and bool(self._halfMap2.get())

    def getHalfMaps(self) -> tuple[str, str]:
        if not self.hasHalfMaps():
            raise ValueError(f"{self.getFileName()}: this volume has no half maps")
        return (self._halfMap1.get(), self._halfMap2.get())

    def setHalfMaps(self, half1, half2) -> None:
        self._halfMap1.set(str(half1))
        self._halfMap2.set(str(half2))

    def getFscFile(self):
        return self._fscFile.get()

    def setFscFile(self, path) -> None:
        self._fscFile.set(str(path))

    def getResolution(self):
        """Half-map FSC resolution (0.143) in micrometres, or None."""
        return self._resolution.get()

    def setResolution(self, resolution_um) -> None:
        self._resolution.set(float(resolution_um))

    def getResolutionText(self):
        """The half-map resolution verdict (first channel) as a user reads it, or None."""
        return self._resolutionText.get()

    def setResolutionText(self, text) -> None:
        self._resolutionText.set(str(text))

    def getOpticalCutoff(self):
        """Optical cutoff of the PSF (µm; the finest length the optics pass), or None."""
        return self._opticalCutoff.get()

    def setOpticalCutoff(self, cutoff_um) -> None:
        self._opticalCutoff.set(float(cutoff_um))

    def getCoverageFile(self):
        """Path of the Fourier coverage volume, or None.

        Projects made before this field stored it as a dynamic ``coverageFile``
        attribute: it is read as a fallback.
        """
        path = self._coverageFile.get()
        if not path:
            legacy = getattr(self, "coverageFile", None)
            path = legacy.get() if isinstance(legacy, pwobj.String) else None
        return path or None

    def setCoverageFile(self, path) -> None:
        self._coverageFile.set(str(path))

    def getFiles(self) -> set:
        files = {self.getFileName()}
        if self.hasHalfMaps():
            files.update(self.getHalfMaps())
        if self.getFscFile():
            files.add(self.getFscFile())
        if self.getCoverageFile():
            files.add(self.getCoverageFile())
        return files
