"""Reconstruction with known poses: Tikhonov, TV and Hessian-Schatten ADMM, baselines.

Particle ``i`` is ``y_i = h * T_{t_i}(R_i f) + noise`` with a known pose ``(R_i, t_i)``
(Fortun et al. 2017 eq. 1-4; Fortun et al. 2018 eq. 1-2).  The joint solvers work on two
sums over the particles, the back-projection ``b`` and the kernel ``K`` of the normal
operator, computed once (the model is stated in
:mod:`~spfluo.algorithms.reconstruct.sums`), so that an iteration costs the same for 10
or 10,000 particles.

Modules
    - :mod:`~spfluo.algorithms.reconstruct.sums`: the sums (:class:`ReconstructionSums`),
      their halves, combination and update;
    - :mod:`~spfluo.algorithms.reconstruct.accumulation`: streaming the particles into the
      sums (PSF filter, shift, back-rotation, kernel sampling, Cn folding);
    - :mod:`~spfluo.algorithms.reconstruct.regularizers`: TV and Hessian operators and
      their proximal steps;
    - :mod:`~spfluo.algorithms.reconstruct.admm`: the solvers on the sums (Tikhonov, ADMM);
    - :mod:`~spfluo.algorithms.reconstruct.baselines`: align and average, deconvolve and
      average;
    - :mod:`~spfluo.algorithms.reconstruct.weight`: default weights, held-out misfit;
    - :mod:`~spfluo.algorithms.reconstruct.autoweight`: the automatic weight
      (:func:`choose_weight`, on the sums of two halves);
    - :mod:`~spfluo.algorithms.reconstruct.mask`: spherical support and soft mask;
    - :mod:`~spfluo.algorithms.reconstruct.gold`: gold-standard FSC corrected by noise
      substitution;
    - :mod:`~spfluo.algorithms.reconstruct.solve`: :func:`reconstruct`, the whole
      reconstruction with gold-standard half maps.

Shapes: particles ``(N, C, D, D, D)`` (or ``(N, D, D, D)``), PSFs ``(C, d, d, d)`` or
``(d, d, d)`` with ``d <= D``, volumes ``(C, D, D, D)``; float32 in and out.  Poses are a
:class:`spfluo.algorithms.geometry.Poses` (zyx frame, translations in voxels).
"""

from spfluo.algorithms.reconstruct.admm import (
    ADMMResult,
    ADMMState,
    reconstruct_admm,
    reconstruct_tikhonov,
)
from spfluo.algorithms.reconstruct.baselines import average, best_particle, deconv_average, single_view
from spfluo.algorithms.reconstruct.gold import GoldStandardFSC, noise_substitution_fsc
from spfluo.algorithms.reconstruct.mask import (
    default_mask_radius,
    energy_outside,
    spherical_mask,
    support,
)
from spfluo.algorithms.reconstruct.solve import (
    JOINT_METHODS,
    METHODS,
    Reconstruction,
    map_gold_standard,
    reconstruct,
)
from spfluo.algorithms.reconstruct.sums import (
    ReconstructionSums,
    combine_sums,
    half_split,
    precompute_half_sums,
    precompute_sums,
    update_sums,
)
from spfluo.algorithms.reconstruct.autoweight import WeightChoice, choose_weight
from spfluo.algorithms.reconstruct.weight import heldout_misfit

__all__ = [
    "ReconstructionSums",
    "ADMMState",
    "ADMMResult",
    "Reconstruction",
    "METHODS",
    "JOINT_METHODS",
    "half_split",
    "precompute_sums",
    "precompute_half_sums",
    "combine_sums",
    "update_sums",
    "reconstruct_tikhonov",
    "reconstruct_admm",
    "average",
    "deconv_average",
    "single_view",
    "best_particle",
    "reconstruct",
    "map_gold_standard",
    "GoldStandardFSC",
    "noise_substitution_fsc",
    "WeightChoice",
    "choose_weight",
    "heldout_misfit",
    "default_mask_radius",
    "spherical_mask",
    "support",
    "energy_outside",
]
