"""Job ``abinitio``: a volume and the particles' poses without a template.

Job file::

    "inputs":  {"particles": ".../particles.csv",      # particle table (poses optional:
                                                        # ground truth for the figures)
                "psf": ".../psf.ome.tif"},              # (C, Z, Y, X) or one for all, any
                                                        # voxel size and box (resampled)
    "params":  {"method": "sgd",                        # sgd | annealing
                "max_epochs": 40,                       # sgd: maximum number of epochs
                "n_directions": 64, "n_psi": 8,         # sgd: N_d, N_psi drawn per particle
                "alpha_r": 1.2,                         # sgd: uniform-share decay
                "beta_d": 50.0, "beta_psi": 50.0,       # sgd: kernel concentrations
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
                "psf_prepared": ".../psf_prepared.ome.tif",  # optional: the PSF used
                "checkpoint": ".../checkpoint.npz"},    # sgd: written after every epoch
    "device": "cpu" | "gpu", "seed": 0

Defaults: :class:`~spfluo.algorithms.abinitio.options.SGDOptions` (Eloy et al. 2023) and
:class:`~spfluo.algorithms.abinitio.options.AnnealingOptions` (Fortun et al. 2018).

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
  plateau of the energy and the poses stopped the run, the fraction of the particles that
  moved in each epoch, timings and, with true poses, the median pose error.
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..algorithms.abinitio import (
    FINAL_METHODS,
    AnnealingOptions,
    SGDOptions,
    SGDState,
    default_grid_size,
    sgd_reconstruction,
)
from ..algorithms.geometry import Poses, align_rotations, geodesic_distance_sym
from ..io import (
    write_energies_csv,
    write_json_atomic,
    write_marginals_npz,
    write_particle_table,
    write_volume,
)
from ..algorithms.limits import (
    MAX_BOX_SIZE,
    MAX_CLASSES,
    MAX_DIRECTIONS,
    MAX_EPOCHS,
    MAX_IN_PLANE_ANGLES,
    MAX_SYMMETRY_ORDER,
    orientations_error,
)
from ._checkpoint import (
    checkpoint_path,
    input_digest,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)
from ._inputs import (
    choice_param,
    float_param,
    int_param,
    job_backend,
    particle_voxel_size,
    read_particle_data,
    read_particle_files,
    read_psf_input,
    reject_renamed_params,
    seed_param,
)
from .jobfile import Job, JobError, Progress

__all__ = ["run", "METHODS", "FINAL_METHODS"]

METHODS = ("sgd", "annealing")
_SGD = SGDOptions()
_ANNEALING = AnnealingOptions()
_CHECKPOINT_VERSION = 1


def _fail(message: str):
    raise JobError(f"job abinitio: {message}")


def _digest(job: Job, table, paths) -> str:
    """Fingerprint of everything the SGD result depends on (for safe resuming)."""
    psf = job.input("psf")
    return input_digest(job, table, paths, version=_CHECKPOINT_VERSION,
                        psf=str(psf), psf_mtime=os.path.getmtime(psf))


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



def _with_stages(progress: Progress, step):
    """Progress callback of an algorithm: stage messages (``{"stage": text}``) go to the
    log as they are, the other reports (epochs) to ``step``."""

    def report(info):
        if "stage" in info:
            progress.log(info["stage"])
        else:
            step(info)

    return report

def run(job: Job) -> None:
    """Ab initio reconstruction of the particles of ``job`` (see the module docstring)."""
    progress = Progress("abinitio")
    start = time.perf_counter()
    method = choice_param(job, "method", "sgd", METHODS)
    final = job.param("final_reconstruction", _SGD.final_reconstruction)
    if final is not None and final not in FINAL_METHODS:
        _fail(f"final_reconstruction must be one of {', '.join(FINAL_METHODS)} or null, got "
              f"{final!r}")
    symmetry = int_param(job, "symmetry", _SGD.symmetry, minimum=1, maximum=MAX_SYMMETRY_ORDER)
    seed = seed_param(job)
    reject_renamed_params(job, {"beta": "beta_d' and 'beta_psi"},
                          why="one concentration per kernel")
    if method == "sgd":  # the amounts of work, checked before any data is read
        max_epochs = int_param(job, "max_epochs", _SGD.max_epochs, minimum=1,
                               maximum=MAX_EPOCHS)
        n_directions = int_param(job, "n_directions", _SGD.n_directions, minimum=1,
                                 maximum=MAX_DIRECTIONS)
        n_psi = int_param(job, "n_psi", _SGD.n_psi, minimum=1, maximum=MAX_IN_PLANE_ANGLES)
        if orientations_error(n_directions, n_psi):
            _fail(orientations_error(n_directions, n_psi))
    else:
        n_classes = int_param(job, "n_classes", _ANNEALING.n_classes, minimum=1,
                              maximum=MAX_CLASSES)
        working_size = int_param(job, "working_size", _ANNEALING.working_size, minimum=8,
                                 maximum=MAX_BOX_SIZE)

    files = read_particle_files(job)
    table, paths, n_channels, box = files.table, files.paths, files.n_channels, files.box
    n = len(table)
    if n < 2:
        _fail(f"ab initio needs at least 2 particles, got {n}")
    vs = particle_voxel_size(job, files.file_voxel_size,
                             resample_hint="resample them (the extract protocol does it)")
    psf = read_psf_input(job, vs, n_channels=n_channels, box=box[0], log=progress.log)
    particles = read_particle_data(job, files)
    backend = job_backend(job)
    progress.log(f"{n} particles of {tuple(box)} voxels, {n_channels} channel(s), voxel "
                 f"{vs[0]:g} µm, method {method}, symmetry C{symmetry}, device {job.device}")

    options: dict = {}
    if method == "sgd":
        options = dict(
            max_epochs=max_epochs, n_directions=n_directions, n_psi=n_psi,
            alpha_r=float_param(job, "alpha_r", _SGD.alpha_r, low=1.0, strict=True),
            beta_d=float_param(job, "beta_d", _SGD.beta_d, low=0.0),
            beta_psi=float_param(job, "beta_psi", _SGD.beta_psi, low=0.0),
            downsampling=float_param(job, "downsampling", _SGD.downsampling, low=1.0),
            symmetry=symmetry, final_reconstruction=final, seed=seed,
        )
        md, mpsi = default_grid_size(symmetry)
        progress.log(f"SGD: N_d = {options['n_directions']} of M_d = {md} directions, N_psi = "
                     f"{options['n_psi']} of M_psi = {mpsi} in-plane angles, alpha_r = "
                     f"{options['alpha_r']:g}, beta_d = {options['beta_d']:g}, beta_psi = "
                     f"{options['beta_psi']:g}, downsampling {options['downsampling']:g} for "
                     "the first epochs")
        digest = _digest(job, table, paths)
        checkpoint_file = checkpoint_path(job)
        resume = load_checkpoint(
            checkpoint_file, digest, progress, state_class=SGDState,
            resumed=lambda st: f"resuming from the checkpoint of epoch {st.epoch}")

        def report(info):
            progress.step(info["epoch"], max_epochs, energy=float(info["energy"]),
                          moved=f"{100 * info['moved']:.0f}%",
                          band=info["band"], alpha=float(info["alpha"]),
                          epoch_s=float(info["seconds"]))

        def save(state):
            if checkpoint_file:
                save_checkpoint(checkpoint_file, state, digest)

        try:
            result = sgd_reconstruction(particles, psf, checkpoint=save, resume=resume,
                                        progress=_with_stages(progress, report),
                                        backend=backend, **options)
        except RuntimeError as exc:
            _fail(str(exc))
    else:
        from ..algorithms.abinitio.annealing import annealing_reconstruction

        if n_classes > n:
            _fail(f"n_classes ({n_classes}) must be at most the number of particles ({n})")
        options = dict(n_classes=n_classes, working_size=working_size,
                       symmetry=symmetry, final_reconstruction=final, seed=seed)
        progress.log(f"annealing: {n_classes} classes, working size "
                     f"{options['working_size']} voxels")

        def report(info):
            progress.step(info["epoch"], info["max_epochs"], energy=float(info["energy"]),
                          particle=info["particle"], chain_s=float(info["seconds"]))

        result = annealing_reconstruction(particles, psf,
                                          progress=_with_stages(progress, report),
                                          backend=backend, **options)

    volume = result.volume if result.volume.ndim == 4 else result.volume[None]
    names = [f"channel {c}" for c in range(volume.shape[0])]
    write_volume(job.output("volume"), volume, vs, channel_names=names)
    stored = result.poses.to_stored(vs)
    energies_per_particle = _particle_energies(result)
    write_particle_table(job.output("particles"), table.ids, paths, stored,
                         extra={"abinitio_energy": energies_per_particle})
    write_energies_csv(job.output("energies"), result.energies, result.epoch_bands,
                       result.epoch_seconds)
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
    if result.epoch_moved is not None:
        summary["epoch_moved_fraction"] = result.epoch_moved.tolist()
    if table.has_poses:
        true = Poses.from_stored(table.matrices, vs)
        extra = _true_pose_marginal_indices(result, true.rotations, symmetry)
        marginals.update(extra)
        summary["pose_error_median_deg"] = float(np.median(extra["pose_errors_deg"]))
        progress.log(f"against the input poses: median pose error "
                     f"{summary['pose_error_median_deg']:.2f} deg")
    write_marginals_npz(job.output("marginals"), marginals)
    summary["wall_s"] = time.perf_counter() - start
    write_json_atomic(job.output("summary"), summary)
    remove_checkpoint(job)
    if method == "sgd":
        ending = (" (converged: energy and poses settled)" if result.converged else
                  " (NOT converged: the epoch limit stopped it before the energy and the poses "
                  "settled; raise max_epochs)")
    else:
        ending = ""
    progress.log(f"done in {summary['wall_s']:.1f} s: {result.n_epochs} epochs" + ending)


def _particle_energies(result) -> list:
    return [float(v) for v in result.particle_energies]
