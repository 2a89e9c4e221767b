"""Job ``refine``: high-accuracy refinement of poses and volume (Fortun et al. 2018 sec. IV, Zehni et al. 2020).

Job file::

    "inputs":  {"particles": ".../particles.csv",       # particle table with poses
                "psf": ".../psf.ome.tif",                 # (C, Z, Y, X) or one for all, any
                                                          # voxel size and box (resampled)
                "volume": ".../volume.ome.tif"},          # optional: reference of the first
                                                          # pose update (e.g. ab initio)
    "params":  {"regularizer": "tv",                      # tv | hessian
                "weight": 3e-3,                           # a number, one per channel, or "auto"
                "schedule": [[20, null], [5, 10], [1, 5]],   # [step_deg, range_deg or null]
                "exhaustive_iterations": null,            # default len(schedule) + 2
                "tolerance_deg": null,                    # default half the last step
                "continuous_iterations": 2, "gd_steps": 3,
                "initial_admm_iterations": 100, "admm_iterations": 30,
                "continuous_admm_iterations": 5, "final_admm_iterations": 50,
                "symmetry": 1, "keep_polarity": true,     # Cn: no particle turned over
                "channels": null,                         # pose search: null (all) or a list
                "half_maps": true,
                "mask_radius_um": 0.72,                   # optional: spherical support;
                                                          # absent: 0.9 x the half box; null: none
                "low_pass_um": 0.5,                       # optional: the first reference of the
                                                          # half sets low-passed to this period;
                                                          # absent: twice the optical cutoff's;
                                                          # null: not low-passed
                "max_shift_um": null,                     # µm, default a quarter of the box
                "pad": 1.5, "support_threshold": 1e-3,    # optional
                "voxel_size": [vz, vy, vx],               # optional: default from the files
                "psf_voxel_size": [vz, vy, vx]},          # optional: default from the file
    "outputs": {"volume": ".../volume.ome.tif", "half1": ".../half1.ome.tif",
                "half2": ".../half2.ome.tif", "fsc": ".../fsc.csv",
                "particles": ".../particles_refined.csv", "log": ".../refine_log.csv",
                "summary": ".../refine.json", "checkpoint": ".../checkpoint.npz",
                "psf_prepared": ".../psf_prepared.ome.tif"},   # optional: the PSF used
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
  :func:`spfluo.io.read_fsc_csv`);
- ``particles``: the particle table (same ids and files) with the refined poses (stored
  convention) and the columns ``refine_energy`` (relative energy at the refined pose),
  ``pose_change_deg`` (rotation change from the input poses, modulo Cn),
  ``in_plane_margin_nats`` (Cn: how much better the particle's rotation about its axis
  fits than the best other angle, nats; NaN without symmetry),
  ``last_change_deg`` (change in the last iteration) and ``half_set`` (0 or 1; -1 without
  half maps);
- ``log``: CSV, one row per outer iteration (:func:`spfluo.io.read_refine_log`);
- ``summary``: JSON (options, iterations, converged, final resolution, timings).
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from ..algorithms.geometry import Poses, um_to_voxels, voxels_to_um
from ..algorithms.reconstruct.mask import default_mask_radius
from ..algorithms.refine import RefineOptions, RefineState, refine
from ..algorithms.refine.diagnostics import UNDETERMINED_NATS
from ..io import (
    write_json_atomic,
    write_particle_table,
    write_refine_log,
    write_volume,
)
from ..algorithms.limits import (
    MAX_BATCH_SIZE,
    MAX_GRADIENT_STEPS,
    MAX_OUTER_ITERATIONS,
    MAX_SOLVER_ITERATIONS,
    MAX_SYMMETRY_ORDER,
    search_size_error,
)
from ._checkpoint import (
    checkpoint_path,
    input_digest,
    load_checkpoint,
    remove_checkpoint,
)

# a module attribute, looked up at every save (a test interposes on it to stop a run)
from ._checkpoint import save_checkpoint as _save_checkpoint
from ._inputs import (
    bool_param,
    channels_param,
    float_param,
    int_param,
    is_weight,
    job_backend,
    mask_radius_param,
    particle_voxel_size,
    read_particle_data,
    read_particle_files,
    read_psf_input,
    read_volume_input,
    reject_renamed_params,
    seed_param,
)
from ._outputs import write_half_map_outputs
from .jobfile import Job, JobError, Progress

__all__ = ["run"]

_CHECKPOINT_VERSION = 1


def _fail(message: str):
    raise JobError(f"job refine: {message}")


_DEFAULTS = RefineOptions()


def _weight(job: Job):
    value = job.param("weight", _DEFAULTS.weight)
    if value == "auto":
        return value
    if not is_weight(value):
        _fail(f"parameter 'weight' must be 'auto', a number >= 0 or a list of them (one per "
              f"channel), got {value!r}")
    return [float(v) for v in value] if isinstance(value, list) else float(value)


def _low_pass(job: Job, voxel: float):
    """``low_pass_um`` as a frequency in cycles per voxel ("default" when absent, None when
    null); a period of at least two voxels."""
    if "low_pass_um" not in job.params:
        return "default"
    value = float_param(job, "low_pass_um", low=0.0, strict=True, allow_none=True)
    if value is None:
        return None
    if value < 2.0 * voxel:
        _fail(f"parameter 'low_pass_um' {value:g} µm is finer than the Nyquist period "
              f"{2.0 * voxel:g} µm: give at least that, or null (no low-pass)")
    return voxel / value


def _schedule(job: Job, symmetry: int):
    """The search stages ``(step_deg, range_deg)``; a stage of too many rotations is refused."""
    value = job.param("schedule", [[s.step_deg, s.range_deg] for s in _DEFAULTS.schedule])
    if not isinstance(value, list):
        _fail(f"parameter 'schedule' must be a list of [step_deg, range_deg or null], got "
              f"{value!r}")
    stages = []
    for item in value:
        if not isinstance(item, list) or len(item) != 2:
            _fail(f"each schedule stage must be [step_deg, range_deg or null], got {item!r}")
        step, rng = item
        # other values are refused by the refinement itself, with their own message
        if _is_positive(step) and (rng is None or _is_positive(rng)):
            error = search_size_error(step, rng, symmetry, what=f"schedule stage {item}")
            if error:
                _fail(error)
        stages.append((step, rng))
    return stages


def _is_positive(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def _read_volume(job: Job, voxel_size, *, n_channels: int, box: int):
    """The optional initial volume, at the particles' voxel size, box and channels."""
    arr = read_volume_input(job, "volume", voxel_size, what="initial volume",
                            mismatch_fix="resample it", required=False)
    if arr is None:
        return None
    if arr.shape != (n_channels, box, box, box):
        _fail(f"the initial volume is {arr.shape} (C, Z, Y, X), the particles "
              f"({n_channels}, {box}, {box}, {box}): give a volume of the particles' box "
              "and channels")
    return arr


def _digest(job: Job, table, paths) -> str:
    """Fingerprint of everything the result depends on (for safe resuming)."""
    files = [job.input("psf")] + ([job.input("volume")] if job.input(
        "volume", required=False) else [])
    return input_digest(job, table, paths, version=_CHECKPOINT_VERSION,
                        poses=np.round(table.matrices, 12).tolist(),
                        files=[str(f) for f in files],
                        file_mtimes=[os.path.getmtime(f) for f in files])


def run(job: Job) -> None:
    """Refine the particles of ``job`` (see the module docstring)."""
    progress = Progress("refine")
    start = time.perf_counter()
    regularizer = job.param("regularizer", _DEFAULTS.regularizer)
    if regularizer not in ("tv", "hessian"):
        _fail(f"regularizer must be 'tv' or 'hessian', got {regularizer!r}")
    symmetry = int_param(job, "symmetry", _DEFAULTS.symmetry, minimum=1,
                         maximum=MAX_SYMMETRY_ORDER)
    half_maps = bool_param(job, "half_maps", _DEFAULTS.half_maps)
    channels = channels_param(job)
    seed = seed_param(job)
    reject_renamed_params(job, {"max_shift": "max_shift_um"})
    max_shift_um = float_param(job, "max_shift_um", None, low=0.0, allow_none=True)

    def admm(name):
        return int_param(job, name, getattr(_DEFAULTS, name), minimum=1,
                         maximum=MAX_SOLVER_ITERATIONS)

    options = dict(
        regularizer=regularizer, weight=_weight(job), schedule=_schedule(job, symmetry),
        exhaustive_iterations=int_param(job, "exhaustive_iterations", None, minimum=0,
                                        maximum=MAX_OUTER_ITERATIONS, allow_none=True),
        tolerance_deg=float_param(job, "tolerance_deg", None, low=0.0, allow_none=True),
        continuous_iterations=int_param(job, "continuous_iterations",
                                        _DEFAULTS.continuous_iterations, minimum=0,
                                        maximum=MAX_OUTER_ITERATIONS),
        gd_steps=int_param(job, "gd_steps", _DEFAULTS.gd_steps, minimum=1,
                           maximum=MAX_GRADIENT_STEPS),
        initial_admm_iterations=admm("initial_admm_iterations"),
        admm_iterations=admm("admm_iterations"),
        continuous_admm_iterations=admm("continuous_admm_iterations"),
        final_admm_iterations=admm("final_admm_iterations"),
        symmetry=symmetry, channels=channels, half_maps=half_maps, seed=seed,
        keep_polarity=bool_param(job, "keep_polarity", _DEFAULTS.keep_polarity),
        pad=float_param(job, "pad", _DEFAULTS.pad, low=1.0),
        support_threshold=float_param(job, "support_threshold", _DEFAULTS.support_threshold,
                                      low=0.0),
        batch_size=int_param(job, "batch_size", _DEFAULTS.batch_size, minimum=1,
                             maximum=MAX_BATCH_SIZE),
    )

    files = read_particle_files(job, need_poses=True)
    table, paths, n_channels, box = files.table, files.paths, files.n_channels, files.box
    n = len(table)
    if half_maps and n < 2:
        _fail(f"half maps need at least 2 particles, got {n}: set half_maps to false")
    vs = particle_voxel_size(job, files.file_voxel_size)
    options["max_shift"] = None if max_shift_um is None else um_to_voxels(max_shift_um, vs[0])
    options["mask_radius"] = mask_radius_param(job, vs[0], box[0])
    options["low_pass"] = _low_pass(job, vs[0])
    psf = read_psf_input(job, vs, n_channels=n_channels, box=box[0], log=progress.log)
    volume = _read_volume(job, vs, n_channels=n_channels, box=box[0])
    particles = read_particle_data(job, files)
    poses = Poses.from_stored(table.matrices, vs)
    backend = job_backend(job)
    progress.log(f"{n} particles of {tuple(box)} voxels, {n_channels} channel(s), voxel "
                 f"{vs[0]:g} µm, {regularizer} weight {options['weight']}, symmetry "
                 f"C{symmetry}, half maps {half_maps}, schedule {options['schedule']}, device "
                 f"{job.device}")

    digest = _digest(job, table, paths)
    checkpoint_file = checkpoint_path(job)
    state = load_checkpoint(
        checkpoint_file, digest, progress, state_class=RefineState,
        resumed=lambda st: (f"resuming after outer iteration {st.iteration} "
                            f"(checkpoint {checkpoint_file})"))

    def report(info):
        phase = "exhaustive" if info["phase"] == 0 else "continuous"
        stage = "" if info["phase"] else (
            f" step {info['step_deg']:g} deg " + ("global" if math.isinf(info["range_deg"])
                                                   else f"+-{info['range_deg']:g} deg"))
        res = ", ".join(f"{r:.3f}" for r in np.atleast_1d(info["resolution_per_voxel"]))
        progress.log(f"iteration {info['iteration']} ({phase}{stage}): energy "
                     f"{info['energy']:.6g}, median pose change "
                     f"{info['median_change_deg']:.3f} deg, shift change "
                     f"{info['median_shift_change']:.3f} voxels, plain half-map FSC 0.143 at "
                     f"[{res}] cycles/voxel (not corrected: a convergence indicator), "
                     f"{info['seconds']:.1f} s")

    def save(st):
        if checkpoint_file:
            _save_checkpoint(checkpoint_file, st, digest)

    try:
        result = refine(particles, poses, psf, volume=volume, state=state, callback=save,
                        progress=report, backend=backend, **options)
    except RuntimeError as exc:  # e.g. a GPU asked for without CuPy
        _fail(str(exc))
    names = [f"channel {c}" for c in range(n_channels)]
    write_volume(job.output("volume"), result.volume, vs, channel_names=names)
    summary = {"n_particles": n, "box": list(box), "voxel_size": list(vs),
               "channels": n_channels, "search_channels": channels, "symmetry": symmetry,
               "regularizer": regularizer, "weight": result.weight.tolist(),
               "weight_requested": options["weight"],
               "mask_radius_um": None if options["mask_radius"] is None else voxels_to_um(
                   default_mask_radius(box[0]) if options["mask_radius"] == "default"
                   else options["mask_radius"], vs[0]),
               "low_pass_um": (vs[0] / result.low_pass_per_voxel
                               if math.isfinite(result.low_pass_per_voxel) else None),
               "schedule": options["schedule"], "half_maps": half_maps,
               "iterations": len(result.history), "converged": result.converged,
               "median_pose_change_deg": float(np.median(result.changes_deg)),
               "mean_energy": float(np.mean(result.energies))}
    if options["weight"] == "auto":
        for line in result.weight_log:
            progress.log(line)
        progress.log("automatic weight: " + ", ".join(f"{w:.3g}" for w in result.weight))
    if math.isfinite(result.low_pass_per_voxel):
        progress.log(f"half sets started from the reference low-passed to "
                     f"{summary['low_pass_um']:.3g} µm (gold standard)")
    if symmetry > 1:
        summary.update(in_plane_margin_median_nats=float(np.median(result.in_plane_margins)),
                       in_plane_undetermined=int(result.undetermined.sum()),
                       in_plane_undetermined_below_nats=UNDETERMINED_NATS)
        progress.log(f"rotation about the C{symmetry} axis: median margin "
                     f"{summary['in_plane_margin_median_nats']:.3g} nats over the best other "
                     f"angle; {summary['in_plane_undetermined']} of {n} particle(s) below "
                     f"{UNDETERMINED_NATS:g} nats (angle not determined by their data)")
    if half_maps:
        summary.update(write_half_map_outputs(job, result, vs, names, psf=psf))
    halves = result.halves if result.halves is not None else np.full(n, -1)
    write_particle_table(job.output("particles"), table.ids, paths,
                         result.poses.to_stored(vs),
                         extra={"refine_energy": result.energies.tolist(),
                                "pose_change_deg": result.changes_deg.tolist(),
                                "last_change_deg": result.last_changes_deg.tolist(),
                                "half_set": [int(h) for h in halves],
                                "in_plane_margin_nats": result.in_plane_margins.tolist()})
    write_refine_log(job.output("log"), result.history)
    summary["wall_s"] = time.perf_counter() - start
    write_json_atomic(job.output("summary"), summary)
    remove_checkpoint(job)
    progress.log(f"done in {summary['wall_s']:.1f} s: {summary['iterations']} iterations, "
                 f"converged {result.converged}, median pose change "
                 f"{summary['median_pose_change_deg']:.2f} deg"
                 + (f", half-map resolution {summary['resolution_per_voxel']} cycles/voxel"
                    if half_maps else ""))
