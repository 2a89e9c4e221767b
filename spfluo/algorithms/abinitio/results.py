"""What the ab initio methods return, and the SGD checkpoint (plain NumPy arrays)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spfluo.algorithms.geometry import (
    Poses,
    SO3Grid,
)


@dataclass(frozen=True, eq=False)
class SGDState:
    """Everything needed to continue an SGD run after an epoch (plain NumPy).

    Attributes
    ----------
    epoch : int
        Completed epochs.
    band : int
        Band ``L`` of the volume at the end of that epoch.
    volume : ndarray, float32, shape (C, L, L, L)
        The iterate, downsampled to ``L^3``.
    curvature : ndarray, float32, shape (C, 2L+3, 2L+3, 2L+3)
        The preconditioner ``B`` (padded Fourier grid).
    alpha : float
        Uniform share of the sampling distributions for the next epoch.
    q_direction, q_psi : ndarray, float64, shapes (N, M_d), (N, M_psi)
        Sampling distributions.
    pi_direction, pi_psi : ndarray, float64, shapes (N, M_d), (N, M_psi)
        Last smoothed marginal likelihoods.
    rotations : ndarray, float64, shape (N, 3, 3)
    translations : ndarray, float64, shape (N, 3)
        Current poses (voxels).
    relative : ndarray, float64, shape (N,)
        Relative energy of each particle in the last epoch.
    checks : ndarray, int64, shape (K,)
        Epochs after which a global search ran.
    energies : ndarray, float64, shape (epoch,)
        Mean relative energy of each completed epoch.
    bands : ndarray, int64, shape (epoch,)
        Band used by each epoch.
    seconds : ndarray, float64, shape (epoch,)
        Wall time of each epoch.
    rng_state : str
        JSON of ``numpy.random.Generator.bit_generator.state``.
    phase : int
        0 while a symmetric run is in its first stage without symmetry, 1 after
        (and for runs without symmetry).
    switch_epoch : int
        Epoch after which the symmetry axis was aligned and the symmetry imposed
        (-1: not yet, or no such stage).
    moved : ndarray, float64, shape (epoch,)
        Fraction of the particles whose rotation changed by more than
        :func:`~spfluo.algorithms.abinitio.sgd.move_threshold_deg` in each epoch (NaN: not recorded,
        checkpoints of earlier versions).
    """

    epoch: int
    band: int
    volume: np.ndarray
    curvature: np.ndarray
    alpha: float
    q_direction: np.ndarray
    q_psi: np.ndarray
    pi_direction: np.ndarray
    pi_psi: np.ndarray
    rotations: np.ndarray
    translations: np.ndarray
    relative: np.ndarray
    checks: np.ndarray
    energies: np.ndarray
    bands: np.ndarray
    seconds: np.ndarray
    rng_state: str
    phase: int = 1
    switch_epoch: int = -1
    moved: np.ndarray | None = None

    _ARRAYS = ("volume", "curvature", "q_direction", "q_psi", "pi_direction", "pi_psi",
               "rotations", "translations", "relative", "checks", "energies", "bands",
               "seconds")

    def to_arrays(self) -> dict:
        """A dict of NumPy arrays (for ``numpy.savez``); inverse :meth:`from_arrays`."""
        out = {name: np.asarray(getattr(self, name)) for name in self._ARRAYS}
        out["epoch"] = np.asarray(self.epoch, dtype=np.int64)
        out["band"] = np.asarray(self.band, dtype=np.int64)
        out["alpha"] = np.asarray(self.alpha, dtype=np.float64)
        out["rng_state"] = np.asarray(self.rng_state)
        out["phase"] = np.asarray(self.phase, dtype=np.int64)
        out["switch_epoch"] = np.asarray(self.switch_epoch, dtype=np.int64)
        out["moved"] = np.asarray(self.recorded_moves(), dtype=np.float64)
        return out

    def recorded_moves(self) -> np.ndarray:
        """:attr:`moved`, NaN for the epochs it was not recorded (older checkpoints)."""
        if self.moved is None:
            return np.full(len(self.energies), np.nan)
        return np.asarray(self.moved, dtype=np.float64)

    @classmethod
    def from_arrays(cls, arrays) -> "SGDState":
        """Rebuild a state from :meth:`to_arrays` output (e.g. a loaded ``.npz``)."""
        missing = [k for k in (*cls._ARRAYS, "epoch", "band", "alpha", "rng_state")
                   if k not in arrays]
        if missing:
            raise ValueError(f"the checkpoint lacks {', '.join(missing)}: it is not an SGD "
                             "ab initio checkpoint")
        kwargs = {name: np.array(arrays[name]) for name in cls._ARRAYS}
        # checkpoints written before the two-stage symmetric runs lack phase and switch_epoch
        return cls(epoch=int(arrays["epoch"]), band=int(arrays["band"]),
                   alpha=float(arrays["alpha"]), rng_state=str(arrays["rng_state"]),
                   phase=int(arrays["phase"]) if "phase" in arrays else 1,
                   switch_epoch=int(arrays["switch_epoch"]) if "switch_epoch" in arrays else -1,
                   moved=np.array(arrays["moved"]) if "moved" in arrays else None,
                   **kwargs)


@dataclass(frozen=True, eq=False)
class AbInitioResult:
    """Result of an ab initio reconstruction.

    Attributes
    ----------
    volume : ndarray, float32, shape (D, D, D) or (C, D, D, D)
        The reconstruction (channel axis as in the particles).
    poses : Poses
        Estimated pose of each particle (zyx frame, voxels); the volume's frame
        is arbitrary (register it to compare with a ground truth).
    energies : ndarray, float64, shape (E,)
        Mean relative energy ``||y^ - h^ rho_t R f^||^2 / ||y^||^2`` on the OTF
        support, per epoch (per temperature stage for annealing).
    epoch_bands : ndarray, int64, shape (E,)
        Volume band ``L`` (voxels across the box) used at each epoch.
    epoch_seconds : ndarray, float64, shape (E,)
        Wall time of each epoch, seconds.
    psi_marginals : ndarray, float64, shape (N, M_psi)
        Marginal likelihood of each in-plane angle of the grid, per particle.
    direction_marginals : ndarray, float64, shape (N, M_d)
        Marginal likelihood of each grid direction, per particle.
    grid : SO3Grid
        The grid the marginals refer to.
    particle_energies : ndarray, float64, shape (N,)
        Relative energy of each particle at its estimated pose.
    converged : bool
        True when the run stopped on a plateau of the relative energy and of the poses
        (False: the maximum number of epochs).
    iterate : ndarray, float32, same shape as ``volume``
        The last SGD iterate (annealing: its closed-form volume), before the
        final known-pose reconstruction (SGD without symmetry: in its own frame, which the
        final volume and ``poses`` shift to put the centre of mass at the box centre).
    epoch_moved : ndarray, float64, shape (E,), optional
        SGD: fraction of the particles whose rotation changed by more than
        :func:`~spfluo.algorithms.abinitio.sgd.move_threshold_deg` in each epoch (None: annealing).
    """

    volume: np.ndarray
    poses: Poses
    energies: np.ndarray
    epoch_bands: np.ndarray
    epoch_seconds: np.ndarray
    psi_marginals: np.ndarray
    direction_marginals: np.ndarray
    grid: SO3Grid
    particle_energies: np.ndarray
    converged: bool
    iterate: np.ndarray
    epoch_moved: np.ndarray | None = None

    @property
    def n_epochs(self) -> int:
        return int(self.energies.size)


@dataclass(frozen=True, eq=False)
class PoseSearchResult:
    """Result of :func:`pose_search`.

    Attributes
    ----------
    poses : Poses
        Best pose of each particle.
    energies : ndarray, float64, shape (N,)
        Relative energy at the best pose.
    psi_marginals : ndarray, float64, shape (N, M_psi)
        Exact marginal likelihoods over the in-plane angles (eq. 14), each row
        summing to 1.
    direction_marginals : ndarray, float64, shape (N, M_d)
        Exact marginal likelihoods over the directions (eq. 15).
    """

    poses: Poses
    energies: np.ndarray
    psi_marginals: np.ndarray
    direction_marginals: np.ndarray
