"""High-accuracy refinement: alternated pose updates and regularised reconstruction.

Fortun et al. 2018 sec. IV and V-A-4, Zehni et al. 2020 sec. III (Algorithms 1-3), on the
pose-scoring engine of :mod:`spfluo.algorithms.scoring`: the coarse-to-fine schedule
(:mod:`.schedule`), the exhaustive pose search (:mod:`.search`), the continuous
refinement (:mod:`.continuous`), and the alternated loop with its state (:mod:`.loop`,
:mod:`.state`).
"""

from spfluo.algorithms.refine.continuous import (
    PoseEnergies,
    pose_energies,
    refine_poses_continuous,
)
from spfluo.algorithms.refine.loop import refine
from spfluo.algorithms.refine.options import RefineOptions
from spfluo.algorithms.refine.schedule import DEFAULT_SCHEDULE, SearchStage
from spfluo.algorithms.refine.search import PoseUpdate, particle_spectra, search_poses
from spfluo.algorithms.refine.state import RefineHistory, RefineResult, RefineState
from spfluo.algorithms.scoring.spectra import ParticleSpectra

__all__ = [
    "RefineOptions",
    "SearchStage",
    "DEFAULT_SCHEDULE",
    "ParticleSpectra",
    "PoseUpdate",
    "PoseEnergies",
    "RefineHistory",
    "RefineState",
    "RefineResult",
    "particle_spectra",
    "pose_energies",
    "search_poses",
    "refine_poses_continuous",
    "refine",
]
