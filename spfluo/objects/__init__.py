"""The spfluo data model: pyworkflow Objects and Sets, file-backed.

Pixels live in files (OME-TIFF, TIFF, MRC); the project database stores
paths, shapes, voxel sizes and poses.  ``spfluo.objects.arrays`` loads an
object's pixels as a NumPy array and builds objects from arrays.
"""

from .data import Coordinate3D, FluoImage, FluoObject, Particle, PSFModel, Transform, Volume
from .results import VolumeComparison
from .sets import FluoSet, SetOfCoordinates3D, SetOfFluoImages, SetOfParticles, SetOfVolumes

__all__ = [
    "FluoObject",
    "Transform",
    "FluoImage",
    "PSFModel",
    "Coordinate3D",
    "Particle",
    "Volume",
    "FluoSet",
    "SetOfFluoImages",
    "SetOfCoordinates3D",
    "SetOfParticles",
    "SetOfVolumes",
    "VolumeComparison",
]
