"""The refinement's per-iteration history, its checkpoint state and its result.

``callback(state)`` receives a :class:`RefineState` after every outer iteration; passed
back as ``state=`` (same inputs and options) the refinement continues to the result of an
uninterrupted run.  No file I/O here (the ``refine`` job writes the state).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from spfluo.algorithms.backend import to_numpy
from spfluo.algorithms.geometry import (
    Poses,
)
from spfluo.algorithms.reconstruct import (
    ADMMState,
)

#: Phases of a refinement (RefineState.phase).
PHASE_EXHAUSTIVE, PHASE_CONTINUOUS, PHASE_DONE = 0, 1, 2


_HISTORY_FIELDS = ("iteration", "phase", "step_deg", "range_deg", "energy", "pose_energy",
                   "median_change_deg", "mean_change_deg", "median_shift_change",
                   "resolution_per_voxel", "seconds")


@dataclass(frozen=True, eq=False)
class RefineHistory:
    """Per-iteration log of a refinement (one entry per outer iteration).

    Attributes
    ----------
    iteration : ndarray, int64, shape (I,)
        Outer iteration number, from 0.
    phase : ndarray, int64, shape (I,)
        0: exhaustive search, 1: continuous refinement.
    step_deg, range_deg : ndarray, float64, shape (I,)
        The search stage (degrees); ``range_deg`` is ``inf`` for a global search; both NaN
        for continuous iterations.
    energy : ndarray, float64, shape (I,)
        ADMM energy after the volume update, summed over the half sets (``1/2 <x, K x> -
        <x, b> + w phi``, squared particle units, constant terms dropped; NaN when the
        first pose update used a given volume).
    pose_energy : ndarray, float64, shape (I,)
        Mean relative energy of the particles after the pose update (see
        :class:`PoseUpdate`).
    median_change_deg, mean_change_deg : ndarray, float64, shape (I,)
        Median and mean rotation change of the pose update, modulo Cn, degrees.
    median_shift_change : ndarray, float64, shape (I,)
        Median translation change, voxels.
    resolution_per_voxel : ndarray, float64, shape (I, C)
        Half-map FSC resolution at 0.143 after the volume update, cycles per voxel (NaN
        without half maps).
    seconds : ndarray, float64, shape (I,)
        Wall time of the iteration.
    """

    iteration: np.ndarray
    phase: np.ndarray
    step_deg: np.ndarray
    range_deg: np.ndarray
    energy: np.ndarray
    pose_energy: np.ndarray
    median_change_deg: np.ndarray
    mean_change_deg: np.ndarray
    median_shift_change: np.ndarray
    resolution_per_voxel: np.ndarray
    seconds: np.ndarray

    def __len__(self) -> int:
        return int(self.iteration.shape[0])

    @classmethod
    def empty(cls, n_channels: int) -> "RefineHistory":
        kw = {name: np.zeros(0) for name in _HISTORY_FIELDS}
        kw["iteration"] = np.zeros(0, dtype=np.int64)
        kw["phase"] = np.zeros(0, dtype=np.int64)
        kw["resolution_per_voxel"] = np.zeros((0, n_channels))
        return cls(**kw)

    def appended(self, **entry) -> "RefineHistory":
        """A new history with one more entry (every field given)."""
        kw = {}
        for name in _HISTORY_FIELDS:
            old = getattr(self, name)
            value = np.asarray(entry[name], dtype=old.dtype)
            kw[name] = np.concatenate([old, value.reshape((1,) + old.shape[1:])])
        return RefineHistory(**kw)


@dataclass(frozen=True, eq=False)
class RefineState:
    """Everything a refinement needs to continue after an outer iteration (checkpoint).

    Attributes
    ----------
    iteration : int
        Outer iterations completed.
    phase : int
        Phase of the next iteration: 0 exhaustive, 1 continuous, 2 done (only the final
        reconstruction is left).
    stage : int
        Index in the schedule of the next exhaustive iteration.
    continuous_done : int
        Continuous iterations completed.
    rotations : ndarray, float64, shape (N, 3, 3)
    translations : ndarray, float64, shape (N, 3)
        Current poses (zyx frame, voxels).
    halves : ndarray, int8, shape (N,)
        Half set of each particle (all 0 without half maps).
    angle_steps_deg, shift_steps : ndarray, float64, shape (N,)
        Last accepted moves of the continuous refinement (degrees, voxels).
    admm : tuple of ADMMState or None
        The ADMM state of each half set (one without half maps); None before the first
        volume update.
    history : RefineHistory
    weight : ndarray, float64, shape (C,), or None
        The regularisation weight chosen by ``weight="auto"`` (None before the choice, or
        with a fixed weight).

    Notes
    -----
    :meth:`to_arrays` and :meth:`from_arrays` convert to and from a flat dict of NumPy
    arrays (``numpy.savez``).
    """

    iteration: int
    phase: int
    stage: int
    continuous_done: int
    rotations: np.ndarray
    translations: np.ndarray
    halves: np.ndarray
    angle_steps_deg: np.ndarray
    shift_steps: np.ndarray
    admm: tuple | None
    history: RefineHistory
    weight: np.ndarray | None = None

    @property
    def poses(self) -> Poses:
        return Poses(self.rotations, self.translations)

    def to_arrays(self) -> dict:
        out = {"iteration": np.int64(self.iteration), "phase": np.int64(self.phase),
               "stage": np.int64(self.stage), "continuous_done": np.int64(self.continuous_done),
               "rotations": self.rotations, "translations": self.translations,
               "halves": self.halves, "angle_steps_deg": self.angle_steps_deg,
               "shift_steps": self.shift_steps,
               "n_admm": np.int64(0 if self.admm is None else len(self.admm)),
               "weight": np.full(0, np.nan) if self.weight is None else
               np.asarray(self.weight, dtype=np.float64)}
        for name in _HISTORY_FIELDS:
            out[f"history_{name}"] = getattr(self.history, name)
        for g, st in enumerate(self.admm or ()):
            for f in dataclasses.fields(ADMMState):
                value = getattr(st, f.name)
                out[f"admm{g}_{f.name}"] = np.array(value) if isinstance(value, str) \
                    else np.asarray(to_numpy(value))
        return out

    @classmethod
    def from_arrays(cls, arrays) -> "RefineState":
        try:
            n_admm = int(arrays["n_admm"])
            admm = None
            if n_admm:
                admm = tuple(
                    ADMMState(**{f.name: _from_saved(arrays[f"admm{g}_{f.name}"])
                                 for f in dataclasses.fields(ADMMState)})
                    for g in range(n_admm))
            history = RefineHistory(**{name: np.array(arrays[f"history_{name}"])
                                       for name in _HISTORY_FIELDS})
            return cls(iteration=int(arrays["iteration"]), phase=int(arrays["phase"]),
                       stage=int(arrays["stage"]),
                       continuous_done=int(arrays["continuous_done"]),
                       rotations=np.array(arrays["rotations"], dtype=np.float64),
                       translations=np.array(arrays["translations"], dtype=np.float64),
                       halves=np.array(arrays["halves"], dtype=np.int8),
                       angle_steps_deg=np.array(arrays["angle_steps_deg"], dtype=np.float64),
                       shift_steps=np.array(arrays["shift_steps"], dtype=np.float64),
                       admm=admm, history=history,
                       weight=_saved_weight(arrays))
        except KeyError as exc:
            raise ValueError(f"arrays are not a refinement state: {exc.args[0]!r} is missing") \
                from None


def _saved_weight(arrays):
    """The chosen weight of a saved state (None when none was chosen, or an older state)."""
    if "weight" not in arrays:
        return None
    w = np.array(arrays["weight"], dtype=np.float64)
    return w if w.size else None


def _from_saved(value):
    a = np.array(value)
    return str(a) if a.dtype.kind in "US" else a


@dataclass(frozen=True, eq=False)
class RefineResult:
    """Output of :func:`refine`.

    Attributes
    ----------
    volume : ndarray, float32, shape (C, D, D, D)
        Reconstruction from all the particles with their refined poses (host).
    half_maps : ndarray, float32, shape (2, C, D, D, D), or None
        The two independently refined half maps (None without half maps).
    poses : Poses
        Refined poses.
    halves : ndarray, int8, shape (N,) or None
        Half set of each particle.
    fsc : tuple of FSCCurve (one per channel) or None
        Final half-map FSC: masked and corrected by noise substitution (the curves to read).
    resolution_per_voxel : ndarray, float64, shape (C,)
        Final half-map FSC resolution at 0.143, cycles per voxel, where it is a measurement
        (NaN otherwise, and without half maps).
    fsc_details : tuple of GoldStandardFSC (one per channel) or None
        The gold-standard FSC of the half maps with its verdicts
        (:func:`spfluo.algorithms.reconstruct.gold.noise_substitution_fsc`).
    weight : ndarray, float64, shape (C,)
        The regularisation weight used (chosen, with ``weight="auto"``).
    weight_log : tuple of str
        With ``weight="auto"``: the curve of the choice, one line per weight tried.
    low_pass_per_voxel : float
        Frequency the reference of the first pose update was low-passed to, cycles per
        voxel (NaN when it was not).
    energies : ndarray, float64, shape (N,)
        Relative energy of each particle at its refined pose (last pose update).
    changes_deg : ndarray, float64, shape (N,)
        Rotation change of each particle from the input poses, modulo Cn, degrees.
    last_changes_deg : ndarray, float64, shape (N,)
        Rotation change of each particle in the last pose update, degrees.
    history : RefineHistory
    converged : bool
        True when the poses stopped changing (the tolerances were met) before the
        iteration limits.
    state : RefineState
        The final state.
    in_plane_margins : ndarray, float64, shape (N,)
        Cn only (NaN otherwise): how much better each particle's rotation about its
        symmetry axis fits than the best angle of another basin, nats
        (:func:`spfluo.algorithms.refine.diagnostics.in_plane_scan`).
    undetermined : ndarray, bool, shape (N,)
        Particles whose in-plane margin is below
        :data:`~spfluo.algorithms.refine.diagnostics.UNDETERMINED_NATS` (False for C1).
    """

    volume: np.ndarray
    half_maps: np.ndarray | None
    poses: Poses
    halves: np.ndarray | None
    fsc: tuple | None
    resolution_per_voxel: np.ndarray
    energies: np.ndarray
    changes_deg: np.ndarray
    last_changes_deg: np.ndarray
    history: RefineHistory
    converged: bool
    state: RefineState
    in_plane_margins: np.ndarray
    undetermined: np.ndarray
    fsc_details: tuple | None = None
    weight: np.ndarray | None = None
    weight_log: tuple = ()
    low_pass_per_voxel: float = float("nan")
