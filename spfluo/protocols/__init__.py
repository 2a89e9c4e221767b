"""spfluo protocols (pyworkflow collects every Protocol subclass exported here)."""

from .protocol_abinitio import ProtAbInitio
from .protocol_compare import ProtCompareVolumes
from .protocol_export import ProtExportParticles
from .protocol_import import (
    ProtImportCoordinates,
    ProtImportFluoImages,
    ProtImportParticles,
    ProtImportPSF,
)
from .protocol_picking import ProtExtractParticles, ProtPickParticles, ProtSelectParticles
from .protocol_psf import ProtTheoreticalPSF
from .protocol_reconstruct import ProtReconstructKnownPoses
from .protocol_refine import ProtRefine
from .protocol_simulate import ProtSimulateDataset
from .protocol_symmetry import ProtAlignSymmetryAxis, ProtSymmetrize

__all__ = [
    "ProtImportFluoImages",
    "ProtImportPSF",
    "ProtImportParticles",
    "ProtImportCoordinates",
    "ProtTheoreticalPSF",
    "ProtSimulateDataset",
    "ProtCompareVolumes",
    "ProtReconstructKnownPoses",
    "ProtAbInitio",
    "ProtRefine",
    "ProtAlignSymmetryAxis",
    "ProtSymmetrize",
    "ProtPickParticles",
    "ProtExtractParticles",
    "ProtSelectParticles",
    "ProtExportParticles",
]
