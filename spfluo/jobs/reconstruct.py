"""Job ``reconstruct``: a volume from particles with known poses, with half maps.

Job file::

    "inputs":  {"particles": ".../particles.csv",     # particle table with poses
                "psf": ".../psf.ome.tif"},             # (C, d, d, d) or one channel for all;
                                                       # not needed by "average"
    "params":  {"method": "hessian",                   # tikhonov | tv | hessian | average
                                                       # | deconv-average
                "weight": "auto",                      # a number, one per channel, or "auto"
                "criterion": "cross-validation",       # or "fsc" (weight "auto")
                "iterations": 100, "symmetry": 1,
                "channels": null,                      # null (all) or a list of indices
                "half_maps": true,
                "voxel_size": [vz, vy, vx],            # optional: default from the files
                "psf_voxel_size": [vz, vy, vx],        # optional: default from the file
                "batch_size": 16, "order": 1, "pad": 1.125},   # optional
    "outputs": {"volume": ".../volume.ome.tif", "half1": ".../half1.ome.tif",
                "half2": ".../half2.ome.tif", "fsc": ".../fsc.csv",
                "coverage": ".../coverage.ome.tif", "summary": ".../reconstruction.json"},
    "device": "cpu" | "gpu", "seed": 0

The particles are streamed from their files in batches (memory bounded by
``batch_size`` boxes), the poses come from the table (stored convention: ``(x, y, z)``,
micrometres) and :func:`spfluo.algorithms.reconstruct.reconstruct` does the work.

Files written:

- ``volume`` (and ``half1``/``half2`` with half maps): OME-TIFF ``(C, D, D, D)`` with the
  particles' voxel size (``C`` = the channels reconstructed);
- ``fsc`` (with half maps): CSV ``frequency_per_voxel, fsc_channel_0[, ...]`` (the
  layout of :func:`spfluo.jobs.compare.read_fsc_csv`; ``channel k`` is the k-th channel
  reconstructed);
- ``coverage`` (not for the baselines): the Fourier coverage ``K`` (summed rotated
  |OTF|^2, mean over particles), centred, OME-TIFF ``(C, P, P, P)``;
- ``summary``: JSON with the method, the weight per channel, the half-map resolution per
  channel (cycles per voxel and micrometres), the ``"auto"`` sweep and the timings.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from ..algorithms.backend import get_backend
from ..algorithms.geometry import Poses
from ..algorithms.metrics import resolution_in_micrometres
from ..algorithms.reconstruct import METHODS, reconstruct
from ..io import (
    atomic_write_path,
    iter_particle_batches,
    particle_stack_info,
    read_particle_table,
    read_volume,
    read_voxel_size,
    write_json_atomic,
    write_volume,
)
from .jobfile import Job, JobError, Progress

__all__ = ["run", "CRITERIA"]

CRITERIA = ("cross-validation", "fsc")


def _fail(message: str):
    raise JobError(f"job reconstruct: {message}")


def _int_param(job: Job, name: str, default, *, minimum: int) -> int:
    value = job.param(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value \
            or value < minimum:
        _fail(f"parameter '{name}' must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _weight_param(job: Job, method: str):
    value = job.param("weight", "auto")
    if value == "auto" or value is None:
        if value == "auto" and method in ("average", "deconv-average"):
            return None  # the baselines have no sweep: their default weight
        return value
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                             and math.isfinite(v) and v >= 0 for v in values):
        _fail(f"parameter 'weight' must be 'auto', a number >= 0 or a list of them, got "
              f"{value!r}")
    return values if isinstance(value, list) else float(value)


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
    return tuple(float(v) for v in arr)


def _channels(job: Job, n_channels: int) -> list[int]:
    value = job.param("channels", None)
    if value is None:
        return list(range(n_channels))
    if not isinstance(value, list) or not value or not all(
            isinstance(c, int) and not isinstance(c, bool) for c in value):
        _fail(f"parameter 'channels' must be null or a non-empty list of channel indices, got "
              f"{value!r}")
    bad = [c for c in value if not 0 <= c < n_channels]
    if bad or len(set(value)) != len(value):
        _fail(f"channels {value} must be distinct indices in 0..{n_channels - 1} (the particles "
              f"have {n_channels} channel(s))")
    return list(value)


def _read_psf(job: Job, voxel_size, channels: list[int], n_channels: int, box: int,
              method: str):
    path = job.existing_input("psf", required=method != "average")
    if path is None:  # the average needs no PSF
        return np.ones((1, 1, 1, 1), np.float32)
    try:
        psf_vs = job.param("psf_voxel_size", None) or read_voxel_size(path)
        if psf_vs is None:
            _fail(f"the PSF {path} records no voxel size: give params.psf_voxel_size")
        psf = read_volume(path, voxel_size=psf_vs)
    except ValueError as exc:
        _fail(f"cannot read the PSF {path}: {exc}")
    if not np.allclose(psf.voxel_size, voxel_size, rtol=1e-3):
        _fail(f"the PSF voxel size {tuple(psf.voxel_size)} µm differs from the particles' "
              f"{tuple(voxel_size)} µm: resample the PSF to the particles' voxel size")
    data = psf.data
    if any(s > box for s in data.shape[1:]):
        _fail(f"the PSF ({tuple(data.shape[1:])} voxels) is larger than the particle box ({box}): "
              "crop it to the box")
    if data.shape[0] == 1:
        return data
    if data.shape[0] != n_channels:
        _fail(f"the PSF has {data.shape[0]} channels and the particles {n_channels}: give one "
              "PSF per channel or one for all")
    return data[channels]


def _write_fsc(path, curves, channels) -> None:
    freqs = next(c.frequencies for c in curves if c is not None)
    columns = [freqs] + [np.zeros_like(freqs) if c is None else c.values for c in curves]
    header = ["frequency_per_voxel"] + [f"fsc_channel_{k}" for k in range(len(channels))]
    data = np.column_stack([np.asarray(c, dtype=float) for c in columns])
    with atomic_write_path(path) as tmp, open(tmp, "w") as fh:
        fh.write(",".join(header) + "\n")
        np.savetxt(fh, data, delimiter=",", fmt="%.10g")


def _micrometres(freq: float, vs) -> float | None:
    if not (isinstance(freq, float) and math.isfinite(freq) and freq > 0):
        return None
    return resolution_in_micrometres(freq, vs[0])


def run(job: Job) -> None:
    """Reconstruct the particles of ``job`` (see the module docstring)."""
    progress = Progress("reconstruct")
    start = time.perf_counter()
    method = job.param("method", "hessian")
    if method not in METHODS:
        _fail(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    weight = _weight_param(job, method)
    criterion = job.param("criterion", "cross-validation")
    if criterion not in CRITERIA:
        _fail(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    iterations = _int_param(job, "iterations", 100, minimum=1)
    symmetry = _int_param(job, "symmetry", 1, minimum=1)
    batch_size = _int_param(job, "batch_size", 16, minimum=1)
    half_maps = job.param("half_maps", True)
    if not isinstance(half_maps, bool):
        _fail(f"half_maps must be true or false, got {half_maps!r}")

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
    vs = _voxel_size(job, file_vs)
    if not np.allclose(vs, vs[0], rtol=1e-4):
        _fail(f"particles must have isotropic voxels, got {vs} µm (z, y, x): resample them")
    channels = _channels(job, n_channels)
    psf = _read_psf(job, vs, channels, n_channels, box[0], method)
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
        options["order"] = _int_param(job, "order", 1, minimum=1)
    if job.param("pad", None) is not None:
        pad = job.param("pad")
        if isinstance(pad, bool) or not isinstance(pad, (int, float)):
            _fail(f"parameter 'pad' must be a number in [1, 3], got {pad!r}")
        options["pad"] = float(pad)
    try:
        result = reconstruct(
            batches(), poses, psf, method=method, weight=weight, iterations=iterations,
            symmetry=symmetry, half_maps=half_maps, seed=job.seed if job.seed is not None else 0,
            criterion=criterion, batch_size=batch_size, backend=get_backend(job.device),
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
        "criterion": criterion if job.param("weight", "auto") == "auto" else None,
        "half_maps": half_maps,
    }
    if half_maps:
        write_volume(job.output("half1"), result.half_maps[0], vs, channel_names=names)
        write_volume(job.output("half2"), result.half_maps[1], vs, channel_names=names)
        _write_fsc(job.output("fsc"), result.fsc, channels)
        res = [float(r) for r in result.resolution_per_voxel]
        summary["resolution_per_voxel"] = res
        summary["resolution_um"] = [_micrometres(r, vs) for r in res]
    if result.coverage is not None and "coverage" in job.outputs:
        write_volume(job.output("coverage"), result.coverage, vs, channel_names=names)
    if result.sweep_weights.size:
        summary["sweep"] = {
            "weights": result.sweep_weights.tolist(),
            "resolution_per_voxel": result.sweep_resolution.tolist(),
            "heldout_misfit": result.sweep_misfit.tolist(),
        }
    summary["wall_s"] = time.perf_counter() - start
    write_json_atomic(job.output("summary"), summary)
    progress.log(f"done in {summary['wall_s']:.1f} s: weight {summary['weight']}"
                 + (f", half-map resolution {summary['resolution_per_voxel']} cycles/voxel"
                    if half_maps else ""))
