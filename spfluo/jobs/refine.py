"""Job ``refine``: high-accuracy refinement of poses and volume (seed 000 sec. IV, seed 004).

Job file::

    "inputs":  {"particles": ".../particles.csv",       # particle table with poses
                "psf": ".../psf.ome.tif",                 # (C, d, d, d) or one for all
                "volume": ".../volume.ome.tif"},          # optional: reference of the first
                                                          # pose update (e.g. ab initio)
    "params":  {"regularizer": "tv",                      # tv | hessian
                "weight": 3e-3,                           # a number or one per channel
                "schedule": [[20, null], [5, 10], [1, 5]],   # [step_deg, range_deg or null]
                "exhaustive_iterations": null,            # default len(schedule) + 2
                "tolerance_deg": null,                    # default half the last step
                "continuous_iterations": 2, "gd_steps": 3,
                "initial_admm_iterations": 100, "admm_iterations": 30,
                "continuous_admm_iterations": 5, "final_admm_iterations": 50,
                "symmetry": 1,
                "channels": null,                         # pose search: null (all) or a list
                "half_maps": true,
                "max_shift": null,                        # voxels, default box / 4
                "pad": 1.5, "support_threshold": 1e-3,    # optional
                "voxel_size": [vz, vy, vx],               # optional: default from the files
                "psf_voxel_size": [vz, vy, vx]},          # optional: default from the file
    "outputs": {"volume": ".../volume.ome.tif", "half1": ".../half1.ome.tif",
                "half2": ".../half2.ome.tif", "fsc": ".../fsc.csv",
                "particles": ".../particles_refined.csv", "log": ".../refine_log.csv",
                "summary": ".../refine.json", "checkpoint": ".../checkpoint.npz"},
    "device": "cpu" | "gpu", "seed": 0

:func:`spfluo.algorithms.refine.refine` does the work.  Resuming: after every outer
iteration the state is written atomically to ``checkpoint`` (``.npz`` with a digest of
the inputs and parameters); a job that finds a checkpoint with the same digest continues
from it, and its result is the one an uninterrupted run gives.  The checkpoint is removed
once the outputs are written.

Files written:

- ``volume`` (and ``half1``/``half2`` with half maps): OME-TIFF ``(C, D, D, D)`` with the
  particles' voxel size;
- ``fsc`` (with half maps): CSV ``frequency_per_voxel, fsc_channel_0[, ...]`` (read with
  :func:`spfluo.jobs.compare.read_fsc_csv`);
- ``particles``: the particle table (same ids and files) with the refined poses (stored
  convention) and the columns ``refine_energy`` (relative energy at the refined pose),
  ``pose_change_deg`` (rotation change from the input poses, modulo Cn),
  ``last_change_deg`` (change in the last iteration) and ``half_set`` (0 or 1; -1 without
  half maps);
- ``log``: CSV, one row per outer iteration (:func:`read_refine_log`);
- ``summary``: JSON (options, iterations, converged, final resolution, timings).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time

import numpy as np

from ..algorithms.backend import get_backend
from ..algorithms.geometry import Poses
from ..algorithms.metrics import resolution_in_micrometres
from ..algorithms.refine import DEFAULT_SCHEDULE, RefineState, refine
from ..io import (
    atomic_write_path,
    particle_stack_info,
    read_particle_stack,
    read_particle_table,
    read_volume,
    read_voxel_size,
    write_json_atomic,
    write_particle_table,
    write_volume,
)
from .jobfile import Job, JobError, Progress

__all__ = ["run", "read_refine_log", "LOG_COLUMNS"]

_CHECKPOINT_VERSION = 1
#: Columns of the per-iteration log (then ``resolution_per_voxel_channel_<c>``).
LOG_COLUMNS = ("iteration", "phase", "step_deg", "range_deg", "energy", "pose_energy",
               "median_change_deg", "mean_change_deg", "median_shift_change_voxels",
               "seconds")


def _fail(message: str):
    raise JobError(f"job refine: {message}")


def _int_param(job: Job, name: str, default, *, minimum: int, allow_none: bool = False):
    value = job.param(name, default)
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value \
            or value < minimum:
        _fail(f"parameter '{name}' must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _float_param(job: Job, name: str, default, *, low: float, allow_none: bool = False):
    value = job.param(name, default)
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value < low:
        _fail(f"parameter '{name}' must be a number >= {low:g}, got {value!r}")
    return float(value)


def _weight(job: Job):
    value = job.param("weight", 3e-3)
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                             and math.isfinite(v) and v >= 0 for v in values):
        _fail(f"parameter 'weight' must be a number >= 0 or a list of them (one per channel), "
              f"got {value!r}")
    return [float(v) for v in values] if isinstance(value, list) else float(value)


def _schedule(job: Job):
    value = job.param("schedule", [[s.step_deg, s.range_deg] for s in DEFAULT_SCHEDULE])
    if not isinstance(value, list):
        _fail(f"parameter 'schedule' must be a list of [step_deg, range_deg or null], got "
              f"{value!r}")
    stages = []
    for item in value:
        if not isinstance(item, list) or len(item) != 2:
            _fail(f"each schedule stage must be [step_deg, range_deg or null], got {item!r}")
        stages.append((item[0], item[1]))
    return stages


def _voxel_size(job: Job, file_vs) -> tuple[float, float, float]:
    given = job.param("voxel_size", None)
    vs = given if given is not None else file_vs
    if vs is None:
        _fail("the particle files carry no voxel size: give params.voxel_size [z, y, x] in µm")
    arr = np.atleast_1d(np.asarray(vs, dtype=float))
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        _fail(f"voxel_size must be three positive numbers (z, y, x) in µm, got {vs!r}")
    if not np.allclose(arr, arr[0], rtol=1e-4):
        _fail(f"particles must have isotropic voxels, got {tuple(arr)} µm (z, y, x): resample "
              "them")
    return tuple(float(v) for v in arr)


def _read_image(job: Job, name: str, voxel_size, *, n_channels: int, box: int, what: str):
    path = job.existing_input(name, required=name == "psf")
    if path is None:
        return None
    try:
        vs = job.param(f"{name}_voxel_size", None) or read_voxel_size(path)
        if vs is None:
            _fail(f"the {what} {path} records no voxel size: give params.{name}_voxel_size")
        data = read_volume(path, voxel_size=vs)
    except ValueError as exc:
        _fail(f"cannot read the {what} {path}: {exc}")
    if not np.allclose(data.voxel_size, voxel_size, rtol=1e-3):
        _fail(f"the {what} voxel size {tuple(data.voxel_size)} µm differs from the particles' "
              f"{tuple(voxel_size)} µm: resample it")
    arr = data.data
    if not np.all(np.isfinite(arr)):
        _fail(f"the {what} {path} contains NaN or infinite values")
    if name == "psf":
        if any(s > box for s in arr.shape[1:]):
            _fail(f"the PSF ({tuple(arr.shape[1:])} voxels) is larger than the particle box "
                  f"({box}): crop it to the box")
        if arr.shape[0] not in (1, n_channels):
            _fail(f"the PSF has {arr.shape[0]} channels and the particles {n_channels}: give "
                  "one PSF per channel or one for all")
        if not np.all(arr.reshape(arr.shape[0], -1).sum(axis=1) > 0):
            _fail(f"the PSF {path} has a channel with no positive sum")
    else:
        if arr.shape != (n_channels, box, box, box):
            _fail(f"the initial volume is {arr.shape} (C, Z, Y, X), the particles "
                  f"({n_channels}, {box}, {box}, {box}): give a volume of the particles' box "
                  "and channels")
    return arr


def _digest(job: Job, table, paths) -> str:
    """Fingerprint of everything the result depends on (for safe resuming)."""
    files = [job.input("psf")] + ([job.input("volume")] if job.input(
        "volume", required=False) else [])
    content = {"params": job.params, "seed": job.seed, "device": job.device,
               "ids": table.ids.tolist(), "paths": list(paths),
               "poses": np.round(table.matrices, 12).tolist(),
               "mtimes": [os.path.getmtime(p) for p in paths],
               "files": [str(f) for f in files],
               "file_mtimes": [os.path.getmtime(f) for f in files],
               "version": _CHECKPOINT_VERSION}
    return hashlib.sha1(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def _load_checkpoint(path, digest: str, progress: Progress) -> RefineState | None:
    if path is None or not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        if str(arrays.pop("digest", "")) != digest:
            progress.log(f"checkpoint {path} is from other inputs or parameters: starting anew")
            return None
        state = RefineState.from_arrays(arrays)
    except (OSError, ValueError, KeyError) as exc:
        progress.log(f"checkpoint {path} is unreadable ({exc}): starting anew")
        return None
    progress.log(f"resuming after outer iteration {state.iteration} (checkpoint {path})")
    return state


def _save_checkpoint(path, state: RefineState, digest: str) -> None:
    arrays = state.to_arrays()
    arrays["digest"] = np.asarray(digest)
    with atomic_write_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def _write_csv(path, header, columns) -> None:
    data = np.column_stack([np.asarray(c, dtype=float) for c in columns])
    with atomic_write_path(path) as tmp, open(tmp, "w") as fh:
        fh.write(",".join(header) + "\n")
        np.savetxt(fh, data, delimiter=",", fmt="%.10g")


def _write_log(path, history) -> None:
    n_ch = history.resolution_per_voxel.shape[1]
    header = list(LOG_COLUMNS) + [f"resolution_per_voxel_channel_{c}" for c in range(n_ch)]
    columns = [history.iteration, history.phase, history.step_deg, history.range_deg,
               history.energy, history.pose_energy, history.median_change_deg,
               history.mean_change_deg, history.median_shift_change, history.seconds]
    columns += [history.resolution_per_voxel[:, c] for c in range(n_ch)]
    if len(history) == 0:
        with atomic_write_path(path) as tmp, open(tmp, "w") as fh:
            fh.write(",".join(header) + "\n")
        return
    _write_csv(path, header, columns)


def read_refine_log(path) -> dict:
    """The per-iteration log of a refinement.

    Returns
    -------
    dict of str to ndarray, shape (I,)
        The columns of :data:`LOG_COLUMNS` (``phase`` 0 exhaustive, 1 continuous;
        ``range_deg`` inf for a global search) and ``resolution`` (I, C), the half-map FSC
        resolution per channel in cycles per voxel (NaN without half maps).
    """
    if not os.path.exists(path):
        raise ValueError(f"refinement log {path} does not exist")
    with open(path) as fh:
        header = fh.readline().strip().split(",")
    missing = [c for c in LOG_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{path} is not a refinement log: columns {missing} are missing")
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    if data.size == 0:
        data = np.zeros((0, len(header)))
    if data.shape[1] != len(header):
        raise ValueError(f"{path}: expected {len(header)} columns, got {data.shape[1]}")
    cols = {name: data[:, k] for k, name in enumerate(header)}
    res = [name for name in header if name.startswith("resolution_per_voxel_channel_")]
    out = {name: cols[name] for name in LOG_COLUMNS}
    out["resolution"] = np.column_stack([cols[r] for r in res]) if res else \
        np.zeros((data.shape[0], 0))
    return out


def _micrometres(freq: float, vs) -> float | None:
    if not (math.isfinite(freq) and freq > 0):
        return None
    return resolution_in_micrometres(freq, vs[0])


def run(job: Job) -> None:
    """Refine the particles of ``job`` (see the module docstring)."""
    progress = Progress("refine")
    start = time.perf_counter()
    regularizer = job.param("regularizer", "tv")
    if regularizer not in ("tv", "hessian"):
        _fail(f"regularizer must be 'tv' or 'hessian', got {regularizer!r}")
    symmetry = _int_param(job, "symmetry", 1, minimum=1)
    half_maps = job.param("half_maps", True)
    if not isinstance(half_maps, bool):
        _fail(f"half_maps must be true or false, got {half_maps!r}")
    channels = job.param("channels", None)
    if channels is not None and (not isinstance(channels, list) or not channels or not all(
            isinstance(c, int) and not isinstance(c, bool) for c in channels)):
        _fail(f"parameter 'channels' must be null or a non-empty list of channel indices, got "
              f"{channels!r}")
    seed = job.seed if job.seed is not None else 0
    if isinstance(seed, bool) or not isinstance(seed, int):
        _fail(f"seed must be an integer, got {seed!r}")
    options = dict(
        regularizer=regularizer, weight=_weight(job), schedule=_schedule(job),
        exhaustive_iterations=_int_param(job, "exhaustive_iterations", None, minimum=0,
                                         allow_none=True),
        tolerance_deg=_float_param(job, "tolerance_deg", None, low=0.0, allow_none=True),
        continuous_iterations=_int_param(job, "continuous_iterations", 2, minimum=0),
        gd_steps=_int_param(job, "gd_steps", 3, minimum=1),
        initial_admm_iterations=_int_param(job, "initial_admm_iterations", 100, minimum=1),
        admm_iterations=_int_param(job, "admm_iterations", 30, minimum=1),
        continuous_admm_iterations=_int_param(job, "continuous_admm_iterations", 5, minimum=1),
        final_admm_iterations=_int_param(job, "final_admm_iterations", 50, minimum=1),
        symmetry=symmetry, channels=channels, half_maps=half_maps, seed=seed,
        max_shift=_float_param(job, "max_shift", None, low=0.0, allow_none=True),
        pad=_float_param(job, "pad", 1.5, low=1.0),
        support_threshold=_float_param(job, "support_threshold", 1e-3, low=0.0),
        batch_size=_int_param(job, "batch_size", 16, minimum=1),
    )

    table = read_particle_table(job.existing_input("particles"))
    if not table.has_poses:
        _fail(f"the particles of {job.input('particles')} have no poses: estimate them (ab "
              "initio) or import them first")
    paths = [str(p) for p in table.paths]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        _fail(f"{len(missing)} particle file(s) are missing, first {missing[0]}")
    (n_channels, *box), file_vs = particle_stack_info(paths)
    if len(set(box)) != 1:
        _fail(f"particles must be cubic boxes, got (z, y, x) = {tuple(box)}")
    n = len(table)
    if half_maps and n < 2:
        _fail(f"half maps need at least 2 particles, got {n}: set half_maps to false")
    vs = _voxel_size(job, file_vs)
    psf = _read_image(job, "psf", vs, n_channels=n_channels, box=box[0], what="PSF")
    volume = _read_image(job, "volume", vs, n_channels=n_channels, box=box[0],
                         what="initial volume")
    particles = read_particle_stack(paths)
    if not np.all(np.isfinite(particles)):
        _fail("the particles contain NaN or infinite values: fix the files")
    poses = Poses.from_stored(table.matrices, vs)
    try:
        backend = get_backend(job.device)
    except RuntimeError as exc:
        _fail(str(exc))
    progress.log(f"{n} particles of {tuple(box)} voxels, {n_channels} channel(s), voxel "
                 f"{vs[0]:g} µm, {regularizer} weight {options['weight']}, symmetry "
                 f"C{symmetry}, half maps {half_maps}, schedule {options['schedule']}, device "
                 f"{job.device}")

    digest = _digest(job, table, paths)
    checkpoint_path = job.outputs.get("checkpoint")
    if checkpoint_path:
        job.output("checkpoint")
    state = _load_checkpoint(checkpoint_path, digest, progress)

    def report(info):
        phase = "exhaustive" if info["phase"] == 0 else "continuous"
        stage = "" if info["phase"] else (
            f" step {info['step_deg']:g} deg " + ("global" if math.isinf(info["range_deg"])
                                                   else f"+-{info['range_deg']:g} deg"))
        res = ", ".join(f"{r:.3f}" for r in np.atleast_1d(info["resolution_per_voxel"]))
        progress.log(f"iteration {info['iteration']} ({phase}{stage}): energy "
                     f"{info['energy']:.6g}, median pose change "
                     f"{info['median_change_deg']:.3f} deg, shift change "
                     f"{info['median_shift_change']:.3f} voxels, half-map resolution [{res}] "
                     f"cycles/voxel, {info['seconds']:.1f} s")

    def save(st):
        if checkpoint_path:
            _save_checkpoint(checkpoint_path, st, digest)

    try:
        result = refine(particles, poses, psf, volume=volume, state=state, callback=save,
                        progress=report, backend=backend, **options)
    except RuntimeError as exc:  # e.g. a GPU asked for without CuPy
        _fail(str(exc))
    names = [f"channel {c}" for c in range(n_channels)]
    write_volume(job.output("volume"), result.volume, vs, channel_names=names)
    summary = {"n_particles": n, "box": list(box), "voxel_size": list(vs),
               "channels": n_channels, "search_channels": channels, "symmetry": symmetry,
               "regularizer": regularizer, "weight": options["weight"],
               "schedule": options["schedule"], "half_maps": half_maps,
               "iterations": len(result.history), "converged": result.converged,
               "median_pose_change_deg": float(np.median(result.changes_deg)),
               "mean_energy": float(np.mean(result.energies))}
    if half_maps:
        write_volume(job.output("half1"), result.half_maps[0], vs, channel_names=names)
        write_volume(job.output("half2"), result.half_maps[1], vs, channel_names=names)
        freqs = next(c.frequencies for c in result.fsc if c is not None)
        _write_csv(job.output("fsc"),
                   ["frequency_per_voxel"] + [f"fsc_channel_{c}" for c in range(n_channels)],
                   [freqs] + [np.zeros_like(freqs) if c is None else c.values
                              for c in result.fsc])
        res = [float(r) for r in result.resolution_per_voxel]
        summary["resolution_per_voxel"] = res
        summary["resolution_um"] = [_micrometres(r, vs) for r in res]
    halves = result.halves if result.halves is not None else np.full(n, -1)
    write_particle_table(job.output("particles"), table.ids, paths,
                         result.poses.to_stored(vs),
                         extra={"refine_energy": result.energies.tolist(),
                                "pose_change_deg": result.changes_deg.tolist(),
                                "last_change_deg": result.last_changes_deg.tolist(),
                                "half_set": [int(h) for h in halves]})
    _write_log(job.output("log"), result.history)
    summary["wall_s"] = time.perf_counter() - start
    write_json_atomic(job.output("summary"), summary)
    if checkpoint_path and os.path.exists(checkpoint_path):
        os.remove(checkpoint_path)
    progress.log(f"done in {summary['wall_s']:.1f} s: {summary['iterations']} iterations, "
                 f"converged {result.converged}, median pose change "
                 f"{summary['median_pose_change_deg']:.2f} deg"
                 + (f", half-map resolution {summary['resolution_per_voxel']} cycles/voxel"
                    if half_maps else ""))
