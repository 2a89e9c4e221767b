"""Options of the ab initio methods: each default defined once.

:class:`SGDOptions` and :class:`AnnealingOptions` hold the defaults of
:func:`~spfluo.algorithms.abinitio.sgd.sgd_reconstruction` and
:func:`~spfluo.algorithms.abinitio.annealing.annealing_reconstruction`; the job and the
protocol form read them from here (``SGDOptions().alpha_r``), and :meth:`validated` checks
every value with a message that names it.  Counts have a documented maximum (``MAXIMA``) so
that no option can ask for unbounded work.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from spfluo.algorithms import limits as L
from spfluo.algorithms._validation import check_float, check_int, check_max_shift

__all__ = ["SGDOptions", "AnnealingOptions", "FINAL_METHODS", "MAXIMA"]

#: Known-pose methods for the final volume (:mod:`spfluo.algorithms.reconstruct`).
FINAL_METHODS = ("hessian", "tv", "tikhonov")

#: Largest accepted value of each count option (bounded work; :mod:`spfluo.algorithms.limits`).
MAXIMA = {
    "max_epochs": L.MAX_EPOCHS,
    "min_epochs": L.MAX_EPOCHS,
    "starts": L.MAX_STARTS,
    "coarse_epochs": L.MAX_EPOCHS,
    "n_directions": L.MAX_DIRECTIONS,
    "n_psi": L.MAX_IN_PLANE_ANGLES,
    "grid_directions": L.MAX_GRID_DIRECTIONS,
    "grid_psi": L.MAX_GRID_IN_PLANE_ANGLES,
    "patience": L.MAX_EPOCHS,
    "symmetry": L.MAX_SYMMETRY_ORDER,
    "n_classes": L.MAX_CLASSES,
    "working_size": L.MAX_BOX_SIZE,
    "n_loops": L.MAX_OUTER_ITERATIONS,
    "n_probe": L.MAX_PROBES,
}


def _count(value, name: str, minimum: int) -> int:
    value = check_int(value, name, minimum=minimum)
    if value > MAXIMA[name]:
        raise ValueError(f"{name} must be at most {MAXIMA[name]}, got {value}")
    return value


def _final(method):
    if method not in (None,) + FINAL_METHODS:
        raise ValueError(f"final_reconstruction must be one of {FINAL_METHODS} or None, got "
                         f"{method!r}")
    return method


@dataclass(frozen=True)
class SGDOptions:
    """Options of the SGD with importance sampling (defaults: Eloy et al. 2023 where it
    gives them; the others are measured design decisions, module notes of
    :mod:`spfluo.algorithms.abinitio.sgd`).  Parameters are documented in
    :func:`~spfluo.algorithms.abinitio.sgd.sgd_reconstruction`."""

    max_epochs: int = 40
    min_epochs: int = 8
    starts: int = 3
    coarse_epochs: int = 15
    downsampling: float = 2.0
    n_directions: int = 64
    n_psi: int = 8
    grid_directions: int | None = None
    grid_psi: int | None = None
    alpha_r: float = 1.2
    beta_d: float = 50.0
    beta_psi: float = 50.0
    temperature: float = 1.0
    learning_rate: float = 1.0
    memory: float = 0.5
    regularization: float = 0.1
    tol: float = 2e-2
    pose_tol: float = 0.1
    patience: int = 3
    max_shift: float | None = None
    symmetry: int = 1
    support_threshold: float = 1e-3
    global_search: bool = True
    align_axis: bool = True
    polarity: bool = True
    in_plane: bool = True
    refine: bool = True
    final_reconstruction: str | None = "hessian"

    def validated(self, box: int) -> "SGDOptions":
        """The options checked, with the grid sizes and ``max_shift`` (voxels, default a
        quarter of the box side ``box``) resolved."""
        from spfluo.algorithms.abinitio.sampling import default_grid_size

        symmetry = _count(self.symmetry, "symmetry", 1)
        md, mpsi = default_grid_size(symmetry)
        error = L.orientations_error(_count(self.n_directions, "n_directions", 1),
                                     _count(self.n_psi, "n_psi", 1))
        if error:
            raise ValueError(error)
        return dataclasses.replace(
            self,
            max_epochs=_count(self.max_epochs, "max_epochs", 1),
            min_epochs=_count(self.min_epochs, "min_epochs", 0),
            starts=_count(self.starts, "starts", 1),
            coarse_epochs=_count(self.coarse_epochs, "coarse_epochs", 0),
            downsampling=check_float(self.downsampling, "downsampling", low=1.0, high=16.0),
            n_directions=_count(self.n_directions, "n_directions", 1),
            n_psi=_count(self.n_psi, "n_psi", 1),
            symmetry=symmetry,
            grid_directions=md if self.grid_directions is None else _count(
                self.grid_directions, "grid_directions", 1),
            grid_psi=mpsi if self.grid_psi is None else _count(self.grid_psi, "grid_psi", 1),
            alpha_r=check_float(self.alpha_r, "alpha_r", low=1.0, low_inclusive=False),
            beta_d=check_float(self.beta_d, "beta_d", low=0.0),
            beta_psi=check_float(self.beta_psi, "beta_psi", low=0.0),
            temperature=check_float(self.temperature, "temperature", low=0.0,
                                    low_inclusive=False),
            learning_rate=check_float(self.learning_rate, "learning_rate", low=0.0, high=1.0,
                                      low_inclusive=False),
            memory=check_float(self.memory, "memory", low=0.0, high=1.0),
            regularization=check_float(self.regularization, "regularization", low=0.0),
            tol=check_float(self.tol, "tol", low=0.0),
            pose_tol=check_float(self.pose_tol, "pose_tol", low=0.0, high=1.0),
            patience=_count(self.patience, "patience", 1),
            max_shift=check_max_shift(self.max_shift, box),
            support_threshold=check_float(self.support_threshold, "support_threshold",
                                          low=0.0, high=1.0, low_inclusive=False),
            final_reconstruction=_final(self.final_reconstruction),
        )


@dataclass(frozen=True)
class AnnealingOptions:
    """Options of the simulated annealing ab initio (defaults: Fortun et al. 2018 where it
    gives them).  Parameters are documented in
    :func:`~spfluo.algorithms.abinitio.annealing.annealing_reconstruction`."""

    n_classes: int = 10
    working_size: int = 30
    n_loops: int = 3
    gamma: float = 0.95
    final_temperature: float = 1e-4
    sigma_rotation: float = math.radians(50.0)
    sigma_translation: float = 5.0
    weight: float = 3e-2
    n_probe: int = 8
    max_shift: float | None = None
    symmetry: int = 1
    grid_directions: int = 500
    grid_psi: int = 36
    final_reconstruction: str | None = "hessian"
    polarity: bool = True
    in_plane: bool = True

    def validated(self, n_particles: int, box: int) -> "AnnealingOptions":
        """The options checked for ``n_particles`` particles of side ``box``, with
        ``max_shift`` (voxels, default a quarter of the box side) resolved."""
        n_classes = _count(self.n_classes, "n_classes", 1)
        if n_classes > n_particles:
            raise ValueError(f"n_classes must be at most the number of particles "
                             f"({n_particles}), got {n_classes}")
        gamma = check_float(self.gamma, "gamma", low=0.0, high=1.0, low_inclusive=False)
        if gamma >= 1.0:
            raise ValueError(f"gamma must be < 1 (the temperature must decrease), got "
                             f"{gamma!r}")
        if not isinstance(self.polarity, bool):
            raise ValueError(f"polarity must be True or False, got {self.polarity!r}")
        return dataclasses.replace(
            self,
            n_classes=n_classes,
            working_size=_count(self.working_size, "working_size", 8),
            n_loops=_count(self.n_loops, "n_loops", 1),
            gamma=gamma,
            final_temperature=check_float(self.final_temperature, "final_temperature",
                                          low=0.0, high=1.0, low_inclusive=False),
            sigma_rotation=check_float(self.sigma_rotation, "sigma_rotation", low=0.0),
            sigma_translation=check_float(self.sigma_translation, "sigma_translation",
                                          low=0.0),
            weight=check_float(self.weight, "weight", low=0.0),
            n_probe=_count(self.n_probe, "n_probe", 1),
            symmetry=_count(self.symmetry, "symmetry", 1),
            grid_directions=_count(self.grid_directions, "grid_directions", 1),
            grid_psi=_count(self.grid_psi, "grid_psi", 1),
            max_shift=check_max_shift(self.max_shift, box),
            final_reconstruction=_final(self.final_reconstruction),
        )
