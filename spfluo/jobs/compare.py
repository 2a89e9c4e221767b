"""Job ``compare``: a volume against a reference (and estimated poses against true ones).

Job file::

    "inputs":  {"volume": "...ome.tif", "reference": "...ome.tif",
                "particles": "...csv", "reference_particles": "...csv"},   # optional pair
    "params":  {"voxel_size": [vz, vy, vx], "symmetry": 1, "register": true,
                "cone_half_angle_deg": 20, "coarse_step_deg": 20},
    "outputs": {"metrics": ".../metrics.json", "fsc": ".../fsc.csv",
                "conical_fsc": ".../conical_fsc.csv", "aligned": ".../aligned.ome.tif",
                "pose_errors": ".../pose_errors.csv"}          # with the particle tables

The volumes are read with the voxel size of the job (the one recorded on the objects);
they must have the same shape and channels, and isotropic voxels.  With ``register``,
all channels are registered jointly
(:func:`spfluo.algorithms.registration.register_volumes`), then each channel is
measured by :func:`spfluo.algorithms.metrics.compare_volumes` (``register=False``).
The two particle tables list the same particles in the same order (same ids); their
rotations give the pose errors (:func:`spfluo.algorithms.metrics.pose_error_summary`).

Files written (every number of the first channel is also in ``metrics.json["metrics"]``
under the names of :class:`spfluo.objects.VolumeComparison`; non-finite numbers, e.g.
the PSNR of identical volumes, are written as null):

- ``fsc``: CSV ``frequency_per_voxel, fsc_channel_0[, fsc_channel_1...]``;
- ``conical_fsc``: CSV ``phi1_deg, phi2_deg, resolution_per_voxel_channel_0[, ...]``, one
  row per direction (phi1 major, phi2 minor);
- ``pose_errors``: CSV ``id, error_deg``;
- ``aligned``: the registered volume (OME-TIFF, all channels);
- ``metrics``: JSON (per channel, registration, pose errors).

:func:`read_fsc_csv`, :func:`read_conical_csv` and :func:`read_pose_errors_csv` read
the CSV files back (the viewers use them).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..algorithms.geometry import Poses, geodesic_distance_sym, swap_xyz_zyx
from ..algorithms.metrics import compare_volumes, pose_error_summary
from ..algorithms.registration import register_volumes
from ..io import read_particle_table, read_volume, write_json_atomic, write_volume
from ..limits import MAX_SYMMETRY_ORDER, search_size_error
from ._inputs import bool_param, float_param, int_param
from ._outputs import write_csv, write_fsc_csv
from .jobfile import Job, JobError, Progress

__all__ = ["run", "read_fsc_csv", "read_conical_csv", "read_pose_errors_csv"]


# ----------------------------------------------------------------------------- CSV files
def _read_csv(path, required: tuple[str, ...], what: str) -> dict:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{what} file {path} does not exist")
    with open(path) as fh:
        header = fh.readline().strip().split(",")
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{path} is not a {what} file: columns {missing} are missing "
                         f"(got {header})")
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    if data.shape[0] == 0 or data.shape[1] != len(header):
        raise ValueError(f"{path}: expected {len(header)} columns and at least one row")
    return {name: data[:, k] for k, name in enumerate(header)}


def read_fsc_csv(path) -> tuple[np.ndarray, dict]:
    """FSC curves of a comparison.

    Returns
    -------
    frequencies : ndarray, shape (S,)
        Cycles per voxel.
    curves : dict of str to ndarray, shape (S,)
        ``{"channel 0": fsc, ...}``.
    """
    cols = _read_csv(path, ("frequency_per_voxel",), "FSC")
    curves = {name.replace("fsc_channel_", "channel "): v for name, v in cols.items()
              if name.startswith("fsc_channel_")}
    if not curves:
        raise ValueError(f"{path} holds no fsc_channel_<c> column")
    return cols["frequency_per_voxel"], curves


def read_conical_csv(path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Conical FSC resolution maps of a comparison.

    Returns
    -------
    phi1 : ndarray, shape (n_phi1,)
        Azimuths, radians, increasing.
    phi2 : ndarray, shape (n_phi2,)
        Inclinations from +z, radians, increasing.
    maps : dict of str to ndarray, shape (n_phi1, n_phi2)
        ``{"channel 0": resolution in cycles per voxel, ...}``.
    """
    cols = _read_csv(path, ("phi1_deg", "phi2_deg"), "conical FSC")
    p1, p2 = np.unique(cols["phi1_deg"]), np.unique(cols["phi2_deg"])
    n = len(cols["phi1_deg"])
    if n != p1.size * p2.size:
        raise ValueError(f"{path}: {n} rows do not form a phi1 x phi2 grid "
                         f"({p1.size} x {p2.size})")
    order = np.lexsort((cols["phi2_deg"], cols["phi1_deg"]))  # phi1 major
    prefix = "resolution_per_voxel_channel_"
    maps = {name.replace(prefix, "channel "): v[order].reshape(p1.size, p2.size)
            for name, v in cols.items() if name.startswith(prefix)}
    if not maps:
        raise ValueError(f"{path} holds no {prefix}<c> column")
    return np.radians(p1), np.radians(p2), maps


def read_pose_errors_csv(path) -> tuple[np.ndarray, np.ndarray]:
    """``(ids (N,) int64, errors (N,) degrees)`` of a comparison."""
    cols = _read_csv(path, ("id", "error_deg"), "pose errors")
    return cols["id"].astype(np.int64), cols["error_deg"]


# ----------------------------------------------------------------------------- job
def _finite(value):
    value = float(value)
    return value if math.isfinite(value) else None


def _voxel_size(job: Job) -> np.ndarray:
    vs = job.param("voxel_size")
    try:
        vs = np.broadcast_to(np.asarray(vs, dtype=float), (3,)).copy()
    except (TypeError, ValueError):
        raise JobError(f"job compare: voxel_size must be (z, y, x) in µm, got {vs!r}") from None
    if not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise JobError(f"job compare: voxel_size must be positive, got {vs.tolist()}")
    if not np.allclose(vs, vs[0], rtol=1e-3):
        raise JobError(f"job compare: voxels must be isotropic to compare volumes, got "
                       f"{vs.tolist()} µm (z, y, x): resample the volumes first")
    return vs


def _read_pair(job: Job, vs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    vol = read_volume(job.existing_input("volume"), voxel_size=tuple(vs)).data
    ref = read_volume(job.existing_input("reference"), voxel_size=tuple(vs)).data
    if vol.shape[0] != ref.shape[0]:
        raise JobError(f"job compare: the volume has {vol.shape[0]} channel(s), the reference "
                       f"{ref.shape[0]}")
    if vol.shape != ref.shape:
        raise JobError(f"job compare: the volume is {vol.shape[1:]} voxels, the reference "
                       f"{ref.shape[1:]} (z, y, x): crop or pad one of them")
    return vol, ref


def _channel_metrics(result) -> dict:
    cfsc = result.conical_fsc.resolution
    return {
        "ssim": _finite(result.ssim),
        "psnr_db": _finite(result.psnr_db),
        "fsc_resolution_0143_per_voxel": _finite(result.resolution_per_voxel),
        "fsc_resolution_05_per_voxel": _finite(result.resolution_05_per_voxel),
        "fsc_resolution_0143_um": _finite(result.resolution_um),
        "fsc_resolution_05_um": _finite(result.resolution_05_um),
        "conical_resolution_best_per_voxel": _finite(cfsc.max()),
        "conical_resolution_worst_per_voxel": _finite(cfsc.min()),
    }


def _pose_errors(job: Job, symmetry: int, registration, progress: Progress):
    est_path = job.input("particles", required=False)
    ref_path = job.input("reference_particles", required=False)
    if est_path is None and ref_path is None:
        return None
    if est_path is None or ref_path is None:
        raise JobError("job compare: give both particle tables (particles and "
                       "reference_particles) or neither")
    est = read_particle_table(job.existing_input("particles"))
    ref = read_particle_table(job.existing_input("reference_particles"))
    for what, table in (("particles", est), ("reference_particles", ref)):
        if not table.has_poses:
            raise JobError(f"job compare: the {what} table has no poses")
    if len(est) != len(ref) or not np.array_equal(est.ids, ref.ids):
        raise JobError(f"job compare: the particle tables must list the same particles in the "
                       f"same order (ids), got {len(est)} and {len(ref)} rows")
    r_est = swap_xyz_zyx(est.matrices)[:, :3, :3]
    r_true = swap_xyz_zyx(ref.matrices)[:, :3, :3]
    summary = pose_error_summary(r_est, r_true, symmetry=symmetry)
    write_csv(job.output("pose_errors"), ["id", "error_deg"], [est.ids, summary.errors_deg])
    info = {"n_matched_particles": len(est), "median_deg": summary.median_deg,
            "mean_deg": summary.mean_deg, "rms_deg": summary.rms_deg,
            "max_deg": summary.max_deg, "fraction_below_5deg": summary.fraction_below_5deg,
            "fraction_below_10deg": summary.fraction_below_10deg,
            "alignment_zyx": summary.alignment.tolist()}
    if registration is not None:
        # G (from the poses) should be R^T (from the volumes), modulo the symmetry
        gap = geodesic_distance_sym(summary.alignment[None], registration.rotation.T[None],
                                    symmetry=symmetry)
        info["alignment_vs_registration_deg"] = float(np.degrees(gap[0]))
    progress.log(f"pose errors over {len(est)} particles: median {summary.median_deg:.2f} deg, "
                 f"max {summary.max_deg:.2f} deg")
    return info


def run(job: Job) -> None:
    """Compare the volume of ``job`` with its reference (see the module docstring)."""
    progress = Progress("compare")
    vs = _voxel_size(job)
    symmetry = int_param(job, "symmetry", 1, minimum=1, maximum=MAX_SYMMETRY_ORDER)
    register = bool_param(job, "register", True)
    cone = math.radians(float(job.param("cone_half_angle_deg", 20.0)))
    step = float_param(job, "coarse_step_deg", 20.0, low=0.0, strict=True)
    error = search_size_error(step, None, symmetry, what="the registration's angular step")
    if register and error:
        raise JobError(f"job compare: {error}")
    vol, ref = _read_pair(job, vs)
    n_channels = vol.shape[0]

    registration = None
    aligned = vol
    if register:
        progress.log(f"registering {vol.shape} (C, Z, Y, X) onto the reference (C{symmetry}, "
                     f"step {step:g} deg)")
        registration = register_volumes(vol, ref, symmetry=symmetry, coarse_step_deg=step)
        aligned = registration.aligned
        angle = float(np.degrees(geodesic_distance_sym(registration.rotation[None],
                                                       np.eye(3)[None], symmetry=symmetry)[0]))
        shift_um = float(np.linalg.norm(registration.translation * vs))
        progress.log(f"registration: {angle:.2f} deg, {shift_um:.4g} µm, "
                     f"NCC {registration.score:.4f}")
        poses = Poses(registration.rotation[None], registration.translation[None])
        reg_info = {"rotation_zyx": registration.rotation.tolist(),
                    "translation_zyx_voxels": registration.translation.tolist(),
                    "matrix_xyz_um": poses.to_stored(vs)[0].tolist(),
                    "angle_deg": angle, "shift_um": shift_um, "score": registration.score}
    else:
        reg_info = {"matrix_xyz_um": np.eye(4).tolist(), "angle_deg": None, "shift_um": None}
    write_volume(job.output("aligned"), aligned, tuple(vs))

    channels, fscs, maps = [], [], []
    for c in range(n_channels):
        result = compare_volumes(aligned[c], ref[c], voxel_size=tuple(vs), symmetry=symmetry,
                                 register=False, cone_half_angle=cone)
        channels.append(_channel_metrics(result))
        fscs.append(result.fsc)
        maps.append(result.conical_fsc)
        progress.step(c + 1, n_channels, ssim=result.ssim, psnr_db=result.psnr_db,
                      fsc_0143_per_voxel=result.resolution_per_voxel)
    write_fsc_csv(job.output("fsc"), fscs)
    p1, p2 = np.meshgrid(np.degrees(maps[0].phi1), np.degrees(maps[0].phi2), indexing="ij")
    write_csv(job.output("conical_fsc"),
              ["phi1_deg", "phi2_deg"]
              + [f"resolution_per_voxel_channel_{c}" for c in range(n_channels)],
              [p1.ravel(), p2.ravel()] + [m.resolution.ravel() for m in maps])

    pose_info = _pose_errors(job, symmetry, registration, progress)
    metrics = dict(channels[0])
    metrics.update(registration_angle_deg=reg_info["angle_deg"],
                   registration_shift_um=reg_info["shift_um"],
                   symmetry=symmetry, n_channels=n_channels)
    if pose_info is not None:
        metrics.update(pose_error_median_deg=pose_info["median_deg"],
                       pose_error_mean_deg=pose_info["mean_deg"],
                       pose_error_max_deg=pose_info["max_deg"],
                       n_matched_particles=pose_info["n_matched_particles"])
    write_json_atomic(job.output("metrics"), {
        "metrics": metrics, "voxel_size": vs.tolist(), "symmetry": symmetry,
        "register": register, "n_channels": n_channels, "channels": channels,
        "registration": reg_info, "pose_errors": pose_info,
        "conical_fsc": {"cone_half_angle_deg": math.degrees(cone), "threshold": 0.143},
    })
    progress.log("done: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()
                                      if isinstance(v, float)))
