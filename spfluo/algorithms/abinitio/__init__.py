"""Ab initio reconstruction without a template.

Two methods, both on the pose-scoring engine of :mod:`spfluo.algorithms.scoring`:

- :func:`sgd_reconstruction` (default): stochastic gradient descent on the Fourier
  volume with importance sampling of the orientations (Eloy et al. 2023, Algorithm 1),
  :mod:`.sgd`; sampling distributions in :mod:`.sampling`, exhaustive and local pose
  searches in :mod:`.search`, the polarity consensus of Cn particles in :mod:`.polarity`;
- :func:`~spfluo.algorithms.abinitio.annealing.annealing_reconstruction`: simulated
  annealing of a few class representatives (Fortun et al. 2018 sec. III), :mod:`.annealing`.
"""

from spfluo.algorithms.abinitio.options import (
    FINAL_METHODS,
    AnnealingOptions,
    SGDOptions,
)
from spfluo.algorithms.abinitio.results import (
    AbInitioResult,
    PoseSearchResult,
    SGDState,
)
from spfluo.algorithms.abinitio.sampling import (
    DEFAULT_M_D,
    DEFAULT_M_PSI,
    default_grid_size,
    smoothed_marginals,
)
from spfluo.algorithms.abinitio.search import pose_search, refine_poses_local
from spfluo.algorithms.abinitio.sgd import move_threshold_deg, sgd_reconstruction

__all__ = [
    "AbInitioResult",
    "SGDState",
    "PoseSearchResult",
    "SGDOptions",
    "AnnealingOptions",
    "sgd_reconstruction",
    "move_threshold_deg",
    "pose_search",
    "refine_poses_local",
    "default_grid_size",
    "smoothed_marginals",
    "FINAL_METHODS",
    "DEFAULT_M_D",
    "DEFAULT_M_PSI",
]
