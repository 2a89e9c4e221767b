"""Job ``reconstruct``: a volume from particles with known poses, with half maps.

Job file::

    "inputs":  {"particles": ".../particles.csv",     # particle table with poses
                "psf": ".../psf.ome.tif"},             # (C, Z, Y, X) or one channel for all,
                                                       # any voxel size and box (resampled,
                                                       # spfluo.jobs._inputs.read_psf_input);
                                                       # not needed by "average"
    "params":  {"method": "hessian",                   # tikhonov | tv | hessian | average
                                                       # | deconv-average | single-view
                "weight": "auto",                      # a number, one per channel, or "auto"
                "iterations": 100, "symmetry": 1,
                "mask_radius_um": 0.72,                # optional: radius of the spherical
                                                       # support; absent: 0.9 x the half
                                                       # box; null: no support
                "channels": null,                      # null (all) or a list of indices
                "half_maps": true,
                "voxel_size": [vz, vy, vx],            # optional: default from the files
                "psf_voxel_size": [vz, vy, vx],        # optional: default from the file
                "batch_size": 16, "order": 1, "pad": 1.125},   # optional
    "outputs": {"volume": ".../volume.ome.tif", "half1": ".../half1.ome.tif",
                "half2": ".../half2.ome.tif", "fsc": ".../fsc.csv",
                "coverage": ".../coverage.ome.tif", "summary": ".../reconstruction.json",
                "psf_prepared": ".../psf_prepared.ome.tif"},   # optional: the PSF used
    "device": "cpu" | "gpu", "seed": 0

The particles are streamed from their files in batches (memory bounded by
``batch_size`` boxes), the poses come from the table (stored convention: ``(x, y, z)``,
micrometres) and :func:`spfluo.algorithms.reconstruct.reconstruct` does the work.

Files written:

- ``volume`` (and ``half1``/``half2`` with half maps): OME-TIFF ``(C, D, D, D)`` with the
  particles' voxel size (``C`` = the channels reconstructed);
- ``fsc`` (with half maps): CSV ``frequency_per_voxel, fsc_channel_0[, ...]`` (the
  layout of :func:`spfluo.io.read_fsc_csv`; ``channel k`` is the k-th channel
  reconstructed);
- ``coverage`` (not for the baselines): the Fourier coverage ``K`` (summed rotated
  |OTF|^2, mean over particles), centred, OME-TIFF ``(C, P, P, P)``;
- ``summary``: JSON with the method, the weight per channel (and, for ``"auto"``, the
  sweep: weights, held-out misfit, whether each minimum is interior), the support
  radius, the half-map resolution per channel with its verdict (``resolution_status``,
  ``resolution_text``: measured, not reached below Nyquist, beyond the optical cutoff),
  the optical cutoff and Nyquist in micrometres, and the timings.

The particles are read twice with half maps: once for the sums, once more for the
noise-substitution correction of the FSC (:mod:`spfluo.algorithms.reconstruct.gold`).
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..algorithms.backend import get_backend
from ..algorithms.geometry import Poses, voxels_to_um
from ..algorithms.reconstruct import METHODS, reconstruct
from ..io import iter_particle_batches, write_json_atomic, write_volume
from ..algorithms.limits import MAX_BATCH_SIZE, MAX_SOLVER_ITERATIONS, MAX_SYMMETRY_ORDER
from ._inputs import (
    bool_param,
    mask_radius_param,
    channels_param,
    choice_param,
    int_param,
    is_weight,
    particle_voxel_size,
    read_particle_files,
    read_psf_input,
)
from ._outputs import write_half_map_outputs
from .jobfile import Job, JobError, Progress

__all__ = ["run"]


def _fail(message: str):
    raise JobError(f"job reconstruct: {message}")


def _weight_param(job: Job, method: str):
    value = job.param("weight", "auto")
    if value == "auto" or value is None:
        if value == "auto" and method in ("average", "deconv-average", "single-view"):
            return None  # the baselines have no sweep: their default weight
        return value
    if not is_weight(value):
        _fail(f"parameter 'weight' must be 'auto', a number >= 0 or a list of them, got "
              f"{value!r}")
    return value if isinstance(value, list) else float(value)


def _criterion(job: Job) -> None:
    value = job.param("criterion", "cross-validation")
    if value != "cross-validation":
        _fail(f"parameter 'criterion' {value!r} is no longer offered: the automatic weight is "
              "the held-out misfit (remove the parameter)")


def _channels(job: Job, n_channels: int) -> list[int]:
    value = channels_param(job)
    if value is None:
        return list(range(n_channels))
    bad = [c for c in value if not 0 <= c < n_channels]
    if bad or len(set(value)) != len(value):
        _fail(f"channels {value} must be distinct indices in 0..{n_channels - 1} (the particles "
              f"have {n_channels} channel(s))")
    return list(value)


def _read_psf(job: Job, voxel_size, channels: list[int], n_channels: int, box: int,
              method: str, log):
    psf = read_psf_input(job, voxel_size, n_channels=n_channels, box=box, log=log,
                         required=method != "average")
    if psf is None:  # the average needs no PSF
        return np.ones((1, 1, 1, 1), np.float32)
    return psf if psf.shape[0] == 1 else psf[channels]


def run(job: Job) -> None:
    """Reconstruct the particles of ``job`` (see the module docstring)."""
    progress = Progress("reconstruct")
    start = time.perf_counter()
    method = choice_param(job, "method", "hessian", METHODS)
    weight = _weight_param(job, method)
    _criterion(job)
    iterations = int_param(job, "iterations", 100, minimum=1, maximum=MAX_SOLVER_ITERATIONS)
    symmetry = int_param(job, "symmetry", 1, minimum=1, maximum=MAX_SYMMETRY_ORDER)
    batch_size = int_param(job, "batch_size", 16, minimum=1, maximum=MAX_BATCH_SIZE)
    half_maps = bool_param(job, "half_maps", True)

    files = read_particle_files(job, need_poses=True)
    table, paths, n_channels, box = files.table, files.paths, files.n_channels, files.box
    vs = particle_voxel_size(job, files.file_voxel_size)
    mask_radius = mask_radius_param(job, vs[0], box[0])
    channels = _channels(job, n_channels)
    psf = _read_psf(job, vs, channels, n_channels, box[0], method, progress.log)
    poses = Poses.from_stored(table.matrices, vs)
    n = len(table)
    progress.log(f"{n} particles of {tuple(box)} voxels, {n_channels} channel(s) "
                 f"(reconstructing {channels}), voxel {vs[0]:g} µm, method {method}, "
                 f"symmetry C{symmetry}, device {job.device}")

    def batches():
        for sl, batch in iter_particle_batches(paths, batch_size):
            yield sl, batch[:, channels]

    options = {}  # the library's defaults unless the job gives them
    if job.param("order", None) is not None:
        options["order"] = int_param(job, "order", 1, minimum=1)
    if job.param("pad", None) is not None:
        pad = job.param("pad")
        if isinstance(pad, bool) or not isinstance(pad, (int, float)):
            _fail(f"parameter 'pad' must be a number in [1, 3], got {pad!r}")
        options["pad"] = float(pad)
    try:
        result = reconstruct(
            batches if half_maps else batches(), poses, psf, method=method, weight=weight,
            iterations=iterations, symmetry=symmetry, half_maps=half_maps,
            seed=job.seed if job.seed is not None else 0, mask_radius=mask_radius,
            voxel_size_um=vs[0], batch_size=batch_size, backend=get_backend(job.device),
            progress=progress.log, **options,
        )
    except RuntimeError as exc:  # e.g. a GPU asked for without CuPy
        _fail(str(exc))
    names = [f"channel {c}" for c in channels]
    write_volume(job.output("volume"), result.volume, vs, channel_names=names)
    summary = {
        "method": method, "n_particles": n, "channels": channels, "symmetry": symmetry,
        "iterations": iterations, "voxel_size": list(vs), "box": list(box),
        "weight": [None if not math.isfinite(w) else float(w) for w in result.weight],
        "criterion": "cross-validation" if result.weight_choice is not None else None,
        "mask_radius_um": None if result.mask_radius is None
        else voxels_to_um(result.mask_radius, vs[0]),
        "half_maps": half_maps,
    }
    if half_maps:
        summary.update(write_half_map_outputs(job, result, vs, names))
    if result.coverage is not None and "coverage" in job.outputs:
        write_volume(job.output("coverage"), result.coverage, vs, channel_names=names)
    if result.weight_choice is not None:
        summary["sweep"] = {
            "weights": result.sweep_weights.tolist(),
            "heldout_misfit": result.sweep_misfit.tolist(),
            "half_set_weight": result.weight_choice.half_weight.tolist(),
            "minimum": result.weight_choice.minimum.tolist(),
            "interior": result.weight_choice.interior.tolist(),
        }
    summary["wall_s"] = time.perf_counter() - start
    write_json_atomic(job.output("summary"), summary)
    progress.log(f"done in {summary['wall_s']:.1f} s: weight {summary['weight']}"
                 + (", half-map resolution (FSC 0.143): " + "; ".join(summary["resolution_text"])
                    if half_maps else ""))
