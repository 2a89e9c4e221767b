"""Job ``abinitio``: a volume and the particles' poses without a template.

Job file::

    "inputs":  {"particles": ".../particles.csv",      # particle table (poses optional:
                                                        # ground truth for the figures)
                "psf": ".../psf.ome.tif"},              # (C, d, d, d) or one for all
    "params":  {"method": "sgd",                        # sgd (seed 002) | annealing (seed 000)
                "max_epochs": 40,                       # sgd: maximum number of epochs
                "n_directions": 64, "n_psi": 8,         # sgd: N_d, N_psi drawn per particle
                "alpha_r": 1.2, "beta": 50.0,           # sgd: uniform-share decay, kernels
                "downsampling": 2.0,                    # sgd: band reduction, coarse epochs
                "symmetry": 1,                          # Cn about z
                "final_reconstruction": "hessian",      # hessian | tv | tikhonov | null
                "n_classes": 10, "working_size": 30,    # annealing: k-means classes, box
                "voxel_size": [vz, vy, vx],             # optional: default from the files
                "psf_voxel_size": [vz, vy, vx]},        # optional: default from the file
    "outputs": {"volume": ".../volume.ome.tif",         # the reconstruction (C, D, D, D)
                "particles": ".../particles_abinitio.csv",  # table with the estimated poses
                "energies": ".../energies.csv",         # epoch, energy, band, seconds
                "marginals": ".../marginals.npz",       # final marginal likelihoods
                "summary": ".../abinitio.json",
                "checkpoint": ".../checkpoint.npz"},    # sgd: written after every epoch
    "device": "cpu" | "gpu", "seed": 0

Resuming: with method ``sgd``, the state after every epoch is written atomically to
``checkpoint`` (NumPy ``.npz``, with a digest of the inputs and parameters); when the job
starts and finds a checkpoint with the same digest, it continues from it, and the result
is the one an uninterrupted run gives.  The checkpoint is removed once the outputs are
written.

Files written:

- ``volume``: OME-TIFF ``(C, D, D, D)`` with the particles' voxel size;
- ``particles``: the particle table (same ids and files) with the estimated poses (stored
  convention: ``(x, y, z)``, micrometres) and a column ``abinitio_energy`` (relative
  residual energy of each particle at its pose);
- ``energies``: CSV ``epoch, energy, band, seconds`` (the mean relative energy of each
  epoch, the band of the volume grid, the epoch's wall time; annealing: one row per
  annealing chain);
- ``marginals``: ``.npz`` with ``ids`` (N,), ``psi`` (M_psi,) radians, ``directions``
  (M_d, 3) in ``(x, y, z)``, ``symmetry``, ``psi_marginals`` (N, M_psi),
  ``direction_marginals`` (N, M_d), ``rotations`` (N, 3, 3) the estimated zyx-frame
  rotations, and, when the input particles carry poses (e.g. simulated ground truth),
  ``true_rotations`` (N, 3, 3), the true rotations brought into the frame of the
  reconstruction (after the best global rotation,
  :func:`spfluo.algorithms.geometry.align_rotations`), ``true_psi_index`` and
  ``true_direction_index`` (N,), the grid element nearest to each of them, and
  ``pose_errors_deg`` (N,);
- ``summary``: JSON with the method, the options, the number of epochs, whether the
  energy plateau stopped the run, timings and, with true poses, the median pose error.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import time

import numpy as np

from ..algorithms.abinitio import SGDState, default_grid_size, sgd_reconstruction
from ..algorithms.backend import get_backend
from ..algorithms.geometry import Poses, align_rotations, geodesic_distance_sym
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

__all__ = ["run", "METHODS", "FINAL_METHODS"]

METHODS = ("sgd", "annealing")
FINAL_METHODS = ("hessian", "tv", "tikhonov")
_CHECKPOINT_VERSION = 1


def _fail(message: str):
    raise JobError(f"job abinitio: {message}")


def _int_param(job: Job, name: str, default, *, minimum: int) -> int:
    value = job.param(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value \
            or value < minimum:
        _fail(f"parameter '{name}' must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _float_param(job: Job, name: str, default, *, low: float, strict: bool = False) -> float:
    value = job.param(name, default)
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and (value > low if strict else value >= low))
    if not ok:
        _fail(f"parameter '{name}' must be a number {'>' if strict else '>='} {low:g}, got "
              f"{value!r}")
    return float(value)


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
              "them (the extract protocol does it)")
    return tuple(float(v) for v in arr)


def _read_psf(job: Job, voxel_size, n_channels: int, box: int) -> np.ndarray:
    path = job.existing_input("psf")
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
        _fail(f"the PSF ({tuple(data.shape[1:])} voxels) is larger than the particle box "
              f"({box}): crop it to the box")
    if data.shape[0] not in (1, n_channels):
        _fail(f"the PSF has {data.shape[0]} channels and the particles {n_channels}: give one "
              "PSF per channel or one for all")
    if not np.all(np.isfinite(data)) or not np.all(data.reshape(data.shape[0], -1).sum(1) > 0):
        _fail(f"the PSF {path} has non-finite values or a channel with no positive sum")
    return data


def _digest(job: Job, table, paths) -> str:
    """Fingerprint of everything the SGD result depends on (for safe resuming)."""
    content = {"params": job.params, "seed": job.seed, "device": job.device,
               "ids": table.ids.tolist(), "paths": list(paths),
               "mtimes": [os.path.getmtime(p) for p in paths],
               "psf": str(job.input("psf")), "psf_mtime": os.path.getmtime(job.input("psf")),
               "version": _CHECKPOINT_VERSION}
    return hashlib.sha1(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def _load_checkpoint(path, digest: str, progress: Progress) -> SGDState | None:
    if path is None or not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        if str(arrays.pop("digest", "")) != digest:
            progress.log(f"checkpoint {path} is from other inputs or parameters: starting anew")
            return None
        state = SGDState.from_arrays(arrays)
    except (OSError, ValueError, KeyError) as exc:
        progress.log(f"checkpoint {path} is unreadable ({exc}): starting anew")
        return None
    progress.log(f"resuming from the checkpoint of epoch {state.epoch}")
    return state


def _save_checkpoint(path, state: SGDState, digest: str) -> None:
    arrays = state.to_arrays()
    arrays["digest"] = np.asarray(digest)
    with atomic_write_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def _write_energies(path, result) -> None:
    with atomic_write_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch", "energy", "band", "seconds"])
        for k, (e, b, s) in enumerate(zip(result.energies, result.epoch_bands,
                                          result.epoch_seconds)):
            writer.writerow([k + 1, f"{e:.10g}", int(b), f"{s:.6g}"])


def read_energies_csv(path) -> dict:
    """The energies CSV of this job: ``{"epoch", "energy", "band", "seconds"}`` arrays."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or rows[0] != ["epoch", "energy", "band", "seconds"]:
        raise ValueError(f"{path} is not an ab initio energies CSV (header "
                         f"{rows[0] if rows else 'missing'})")
    data = np.array([[float(v) for v in row] for row in rows[1:]], dtype=float).reshape(-1, 4)
    return {"epoch": data[:, 0].astype(int), "energy": data[:, 1],
            "band": data[:, 2].astype(int), "seconds": data[:, 3]}


def _true_pose_marginal_indices(result, true_rotations: np.ndarray, symmetry: int) -> dict:
    """Nearest grid element of each true pose, in the reconstruction's frame, and errors."""
    est = result.poses.rotations
    G = align_rotations(est, true_rotations, symmetry=symmetry)
    in_frame = np.matmul(true_rotations, G.T)  # R_true G^T ~ R_est
    j, i = result.grid.nearest(in_frame)
    errors = np.degrees(geodesic_distance_sym(np.matmul(est, G), true_rotations,
                                              symmetry=symmetry))
    return {"true_direction_index": np.asarray(j, dtype=np.int64),
            "true_psi_index": np.asarray(i, dtype=np.int64),
            "true_rotations": in_frame, "pose_errors_deg": errors}


def run(job: Job) -> None:
    """Ab initio reconstruction of the particles of ``job`` (see the module docstring)."""
    progress = Progress("abinitio")
    start = time.perf_counter()
    method = job.param("method", "sgd")
    if method not in METHODS:
        _fail(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    final = job.param("final_reconstruction", "hessian")
    if final is not None and final not in FINAL_METHODS:
        _fail(f"final_reconstruction must be one of {', '.join(FINAL_METHODS)} or null, got "
              f"{final!r}")
    symmetry = _int_param(job, "symmetry", 1, minimum=1)
    seed = job.seed if job.seed is not None else 0
    if isinstance(seed, bool) or not isinstance(seed, int):
        _fail(f"seed must be an integer, got {seed!r}")

    table = read_particle_table(job.existing_input("particles"))
    paths = [str(p) for p in table.paths]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        _fail(f"{len(missing)} particle file(s) are missing, first {missing[0]}")
    (n_channels, *box), file_vs = particle_stack_info(paths)
    if len(set(box)) != 1:
        _fail(f"particles must be cubic boxes, got (z, y, x) = {tuple(box)}")
    n = len(table)
    if n < 2:
        _fail(f"ab initio needs at least 2 particles, got {n}")
    vs = _voxel_size(job, file_vs)
    psf = _read_psf(job, vs, n_channels, box[0])
    particles = read_particle_stack(paths)
    if not np.all(np.isfinite(particles)):
        _fail("the particles contain NaN or infinite values: fix the files")
    try:
        backend = get_backend(job.device)
    except RuntimeError as exc:
        _fail(str(exc))
    progress.log(f"{n} particles of {tuple(box)} voxels, {n_channels} channel(s), voxel "
                 f"{vs[0]:g} µm, method {method}, symmetry C{symmetry}, device {job.device}")

    options: dict = {}
    if method == "sgd":
        beta = _float_param(job, "beta", 50.0, low=0.0)
        options = dict(
            max_epochs=_int_param(job, "max_epochs", 40, minimum=1),
            n_directions=_int_param(job, "n_directions", 64, minimum=1),
            n_psi=_int_param(job, "n_psi", 8, minimum=1),
            alpha_r=_float_param(job, "alpha_r", 1.2, low=1.0, strict=True),
            beta_d=beta, beta_psi=beta,
            downsampling=_float_param(job, "downsampling", 2.0, low=1.0),
            symmetry=symmetry, final_reconstruction=final, seed=seed,
        )
        md, mpsi = default_grid_size(symmetry)
        progress.log(f"SGD: N_d = {options['n_directions']} of M_d = {md} directions, N_psi = "
                     f"{options['n_psi']} of M_psi = {mpsi} in-plane angles, alpha_r = "
                     f"{options['alpha_r']:g}, beta = {beta:g}, downsampling "
                     f"{options['downsampling']:g} for the first epochs")
        digest = _digest(job, table, paths)
        checkpoint_path = job.outputs.get("checkpoint")
        if checkpoint_path:
            job.output("checkpoint")
        resume = _load_checkpoint(checkpoint_path, digest, progress)
        max_epochs = options["max_epochs"]

        def report(info):
            if "stage" in info:
                progress.log(info["stage"])
                return
            progress.step(info["epoch"], max_epochs, energy=float(info["energy"]),
                          band=info["band"], alpha=float(info["alpha"]),
                          epoch_s=float(info["seconds"]))

        def save(state):
            if checkpoint_path:
                _save_checkpoint(checkpoint_path, state, digest)

        try:
            result = sgd_reconstruction(particles, psf, checkpoint=save, resume=resume,
                                        progress=report, backend=backend, **options)
        except RuntimeError as exc:
            _fail(str(exc))
    else:
        from ..algorithms.annealing import annealing_reconstruction

        n_classes = _int_param(job, "n_classes", 10, minimum=1)
        if n_classes > n:
            _fail(f"n_classes ({n_classes}) must be at most the number of particles ({n})")
        options = dict(n_classes=n_classes,
                       working_size=_int_param(job, "working_size", 30, minimum=8),
                       symmetry=symmetry, final_reconstruction=final, seed=seed)
        progress.log(f"annealing: {n_classes} classes, working size "
                     f"{options['working_size']} voxels")

        def report(info):
            progress.step(info["epoch"], info["max_epochs"], energy=float(info["energy"]),
                          particle=info["particle"], chain_s=float(info["seconds"]))

        result = annealing_reconstruction(particles, psf, progress=report, backend=backend,
                                          **options)

    volume = result.volume if result.volume.ndim == 4 else result.volume[None]
    names = [f"channel {c}" for c in range(volume.shape[0])]
    write_volume(job.output("volume"), volume, vs, channel_names=names)
    stored = result.poses.to_stored(vs)
    energies_per_particle = _particle_energies(result)
    write_particle_table(job.output("particles"), table.ids, paths, stored,
                         extra={"abinitio_energy": energies_per_particle})
    _write_energies(job.output("energies"), result)
    marginals = {"ids": table.ids, "psi": result.grid.psi, "directions": result.grid.directions,
                 "symmetry": np.asarray(symmetry), "psi_marginals": result.psi_marginals,
                 "direction_marginals": result.direction_marginals,
                 "rotations": result.poses.rotations}
    summary = {"method": method, "n_particles": n, "box": list(box), "voxel_size": list(vs),
               "channels": n_channels, "symmetry": symmetry, "final_reconstruction": final,
               "seed": seed, "n_epochs": result.n_epochs, "converged": result.converged,
               "grid": [result.grid.n_directions, result.grid.n_psi],
               "options": {k: v for k, v in options.items() if k != "seed"},
               "epoch_seconds": result.epoch_seconds.tolist(),
               "energies": result.energies.tolist()}
    if table.has_poses:
        true = Poses.from_stored(table.matrices, vs)
        extra = _true_pose_marginal_indices(result, true.rotations, symmetry)
        marginals.update(extra)
        summary["pose_error_median_deg"] = float(np.median(extra["pose_errors_deg"]))
        progress.log(f"against the input poses: median pose error "
                     f"{summary['pose_error_median_deg']:.2f} deg")
    with atomic_write_path(job.output("marginals")) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **marginals)
    summary["wall_s"] = time.perf_counter() - start
    write_json_atomic(job.output("summary"), summary)
    checkpoint_path = job.outputs.get("checkpoint")
    if checkpoint_path and os.path.exists(checkpoint_path):
        os.remove(checkpoint_path)
    progress.log(f"done in {summary['wall_s']:.1f} s: {result.n_epochs} epochs"
                 + (" (energy plateau)" if method == "sgd" and result.converged else ""))


def _particle_energies(result) -> list:
    return [float(v) for v in result.particle_energies]
