"""Options of the refinement: each default defined once.

:class:`RefineOptions` holds the defaults of :func:`~spfluo.algorithms.refine.loop.refine`;
the job and the protocol form read them from here, and :meth:`RefineOptions.validated`
checks every value with a message that names it.  Counts have the maxima of
:mod:`spfluo.algorithms.limits`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from spfluo.algorithms import limits as L
from spfluo.algorithms._validation import (
    as_channels,
    check_float,
    check_int,
    check_max_shift,
    check_symmetry,
)
from spfluo.algorithms.reconstruct.mask import check_mask_radius
from spfluo.algorithms.reconstruct.regularizers import check_regularizer
from spfluo.algorithms.refine.schedule import DEFAULT_SCHEDULE, as_schedule
from spfluo.algorithms.scoring.spectra import DEFAULT_SUPPORT_THRESHOLD

__all__ = ["RefineOptions", "LOW_PASS_OF_CUTOFF"]

#: Default low-pass of the reference of the first pose update, as a fraction of the optical
#: cutoff of the PSF: both half sets start from what the optics pass at half their finest
#: period, well below the resolution a refinement claims.
LOW_PASS_OF_CUTOFF = 0.5


def _count(value, name: str, minimum: int, maximum: int) -> int:
    value = check_int(value, name, minimum=minimum)
    if value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value}")
    return value


@dataclass(frozen=True)
class RefineOptions:
    """Options of the high-accuracy refinement (defaults: Fortun et al. 2018 and Zehni et
    al. 2020 where they give them).  Parameters are documented in
    :func:`~spfluo.algorithms.refine.loop.refine`."""

    regularizer: str = "tv"
    weight: float | tuple | str = 3e-3
    schedule: tuple = DEFAULT_SCHEDULE
    exhaustive_iterations: int | None = None
    tolerance_deg: float | None = None
    continuous_iterations: int = 2
    gd_steps: int = 3
    continuous_tolerance_deg: float = 0.05
    initial_admm_iterations: int = 100
    admm_iterations: int = 30
    continuous_admm_iterations: int = 5
    final_admm_iterations: int = 50
    symmetry: int = 1
    keep_polarity: bool = True
    mask_radius: object = "default"
    low_pass: object = "default"
    channels: object = None
    half_maps: bool = True
    max_shift: float | None = None
    support_threshold: float = DEFAULT_SUPPORT_THRESHOLD
    pad: float = 1.5
    batch_size: int = 16

    def validated(self, n_particles: int, n_channels: int, box: int) -> "RefineOptions":
        """The options checked for ``n_particles`` particles of ``n_channels`` channels and
        side ``box``, with the schedule, the iteration counts, the tolerance, the channels
        and ``max_shift`` (voxels) resolved."""
        stages = as_schedule(self.schedule)
        n_exh = len(stages) + 2 if self.exhaustive_iterations is None else _count(
            self.exhaustive_iterations, "exhaustive_iterations", 0, L.MAX_OUTER_ITERATIONS)
        if n_exh < len(stages):
            raise ValueError(f"exhaustive_iterations must be at least the number of schedule "
                             f"stages ({len(stages)}), got {n_exh}")
        if self.tolerance_deg is None:
            tol = stages[-1].step_deg / 2.0 if stages else 0.0
        else:
            tol = check_float(self.tolerance_deg, "tolerance_deg", low=0.0, unit=" degrees")
        if not isinstance(self.keep_polarity, (bool, np.bool_)):
            raise ValueError(f"keep_polarity must be True or False, got "
                             f"{self.keep_polarity!r}")
        if not isinstance(self.half_maps, (bool, np.bool_)):
            raise ValueError(f"half_maps must be True or False, got {self.half_maps!r}")
        if self.half_maps and n_particles < 2:
            raise ValueError(f"half maps need at least 2 particles, got {n_particles}: set "
                             "half_maps=False")
        admm = {name: _count(getattr(self, name), name, 1, L.MAX_SOLVER_ITERATIONS)
                for name in ("initial_admm_iterations", "admm_iterations",
                             "continuous_admm_iterations", "final_admm_iterations")}
        if isinstance(self.weight, str) and self.weight != "auto":
            raise ValueError(f"weight must be a number, one per channel, or 'auto', got "
                             f"{self.weight!r}")
        if self.weight == "auto" and not self.half_maps:
            raise ValueError("weight='auto' is chosen on the half sets: set half_maps=True or "
                             "give a weight")
        low_pass = self.low_pass
        if low_pass is not None and low_pass != "default":
            low_pass = check_float(low_pass, "low_pass", low=0.0, high=0.5,
                                   low_inclusive=False, unit=" cycles per voxel")
        return dataclasses.replace(
            self,
            regularizer=check_regularizer(self.regularizer),
            mask_radius=check_mask_radius(self.mask_radius, box),
            low_pass=low_pass,
            schedule=stages,
            exhaustive_iterations=n_exh,
            tolerance_deg=tol,
            continuous_iterations=_count(self.continuous_iterations, "continuous_iterations",
                                         0, L.MAX_OUTER_ITERATIONS),
            gd_steps=_count(self.gd_steps, "gd_steps", 1, L.MAX_GRADIENT_STEPS),
            continuous_tolerance_deg=check_float(self.continuous_tolerance_deg,
                                                 "continuous_tolerance_deg", low=0.0,
                                                 unit=" degrees"),
            symmetry=_count(check_symmetry(self.symmetry), "symmetry", 1,
                            L.MAX_SYMMETRY_ORDER),
            channels=as_channels(self.channels, n_channels),
            max_shift=check_max_shift(self.max_shift, box),
            support_threshold=check_float(self.support_threshold, "support_threshold",
                                          low=0.0, high=1.0, low_inclusive=False),
            pad=check_float(self.pad, "pad", low=1.0, high=3.0),
            batch_size=_count(self.batch_size, "batch_size", 1, L.MAX_BATCH_SIZE),
            **admm,
        )


# the continuous refinement's step rule (Zehni et al. 2020, Algorithm 3): backtracking
# factor, most backtracks, largest rotation (radians) and translation (voxels) of a step
CONTINUOUS_STEP = dict(eta=0.25, max_backtracks=6, max_angle=math.radians(2.0),
                       max_shift_step=1.0)
