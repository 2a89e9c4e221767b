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
- ``metrics``: JSON (per channel, registration, pose errors); a resolution is a number
  only where the FSC crosses its threshold below Nyquist (else null), and
  ``resolution_text`` holds, per channel, the verdict a user reads (``fsc_0143``,
  ``fsc_05``: the resolution, or "not reached below Nyquist (X µm): sample finer").

:func:`spfluo.io.read_fsc_csv`, :func:`spfluo.io.read_conical_csv` and
:func:`spfluo.io.read_pose_errors_csv` read the CSV files back (the viewers use them).
"""

from __future__ import annotations

import math

import numpy as np

from ..algorithms.geometry import (
    Poses,
    geodesic_distance_sym,
    swap_xyz_zyx,
    vectors_voxels_to_um,
)
from ..algorithms.metrics import compare_volumes, pose_error_summary
from ..algorithms.registration import register_volumes
from ..algorithms.resolution import read_resolution
from ..io import (
    read_particle_table,
    read_volume,
    write_conical_csv,
    write_fsc_csv,
    write_json_atomic,
    write_pose_errors_csv,
    write_volume,
)
from ..algorithms.limits import MAX_SYMMETRY_ORDER, search_size_error
from ._inputs import bool_param, float_param, int_param
from .jobfile import Job, JobError, Progress

__all__ = ["run"]


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


def _channel_metrics(result, voxel: float) -> tuple[dict, dict]:
    """The numbers of one channel (resolutions None unless the FSC crosses the threshold
    below Nyquist) and the verdicts a user reads (``fsc_0143``, ``fsc_05``)."""
    cfsc = result.conical_fsc.resolution
    verdicts = {key: read_resolution(result.fsc, threshold=t, voxel_size_um=voxel)
                for key, t in (("0143", 0.143), ("05", 0.5))}

    def measured(key, value):
        return _finite(value) if verdicts[key].measured else None

    numbers = {
        "ssim": _finite(result.ssim),
        "psnr_db": _finite(result.psnr_db),
        "fsc_resolution_0143_per_voxel": measured("0143", result.resolution_per_voxel),
        "fsc_resolution_05_per_voxel": measured("05", result.resolution_05_per_voxel),
        "fsc_resolution_0143_um": measured("0143", result.resolution_um),
        "fsc_resolution_05_um": measured("05", result.resolution_05_um),
        "conical_resolution_best_per_voxel": _finite(cfsc.max()),
        "conical_resolution_worst_per_voxel": _finite(cfsc.min()),
    }
    return numbers, {f"fsc_{key}": r.text() for key, r in verdicts.items()}


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
    cn = symmetry > 1  # the split into axis and in-plane errors is that of Cn particles
    write_pose_errors_csv(job.output("pose_errors"), est.ids, summary.errors_deg,
                          summary.axis_errors_deg if cn else None,
                          summary.in_plane_errors_deg if cn else None)
    info = {"n_matched_particles": len(est), "median_deg": summary.median_deg,
            "mean_deg": summary.mean_deg, "rms_deg": summary.rms_deg,
            "max_deg": summary.max_deg, "fraction_below_5deg": summary.fraction_below_5deg,
            "fraction_below_10deg": summary.fraction_below_10deg,
            "alignment_zyx": summary.alignment.tolist()}
    if cn:
        info.update(axis_median_deg=summary.axis_median_deg,
                    in_plane_median_deg=summary.in_plane_median_deg,
                    in_plane_resultant=summary.in_plane_resultant)
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
        shift_um = float(np.linalg.norm(vectors_voxels_to_um(registration.translation, vs)))
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

    channels, fscs, maps, verdicts = [], [], [], []
    for c in range(n_channels):
        result = compare_volumes(aligned[c], ref[c], voxel_size=tuple(vs), symmetry=symmetry,
                                 register=False, cone_half_angle=cone)
        numbers, texts = _channel_metrics(result, float(vs[0]))
        channels.append(numbers)
        verdicts.append(texts)
        fscs.append(result.fsc)
        maps.append(result.conical_fsc)
        progress.step(c + 1, n_channels, ssim=result.ssim, psnr_db=result.psnr_db,
                      fsc_0143_per_voxel=result.resolution_per_voxel)
    write_fsc_csv(job.output("fsc"), fscs)
    write_conical_csv(job.output("conical_fsc"), maps)

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
        if "in_plane_resultant" in pose_info:
            metrics.update(axis_error_median_deg=pose_info["axis_median_deg"],
                           in_plane_error_median_deg=pose_info["in_plane_median_deg"],
                           in_plane_resultant=pose_info["in_plane_resultant"])
    write_json_atomic(job.output("metrics"), {
        "metrics": metrics, "voxel_size": vs.tolist(), "symmetry": symmetry,
        "register": register, "n_channels": n_channels, "channels": channels,
        "resolution_text": verdicts,
        "registration": reg_info, "pose_errors": pose_info,
        "conical_fsc": {"cone_half_angle_deg": math.degrees(cone), "threshold": 0.143},
    })
    progress.log("done: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()
                                      if isinstance(v, float)))
