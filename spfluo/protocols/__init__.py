"""spfluo protocols (pyworkflow collects every Protocol subclass exported here)."""

from .protocol_import import (
    ProtImportCoordinates,
    ProtImportFluoImages,
    ProtImportParticles,
    ProtImportPSF,
)

__all__ = [
    "ProtImportFluoImages",
    "ProtImportPSF",
    "ProtImportParticles",
    "ProtImportCoordinates",
]
