"""Job ``symmetry``: align the Cn axis of a volume with z, or symmetrise a volume.

Job file::

    "inputs":  {"volume": ".../volume.ome.tif",
                "particles": ".../particles.csv"},      # optional (align): poses to follow
    "params":  {"operation": "align",                   # align | symmetrize
                "order": 0,                             # n of Cn; 0 = estimate it
                "max_order": 12,                        # largest order tried (order 0)
                "threshold": 0.6,                       # contrast needed (order 0)
                "voxel_size": [vz, vy, vx]},            # optional: default from the file
    "outputs": {"volume": ".../aligned.ome.tif",
                "particles": ".../particles_aligned.csv",   # with input particles
                "summary": ".../symmetry.json"},

``align`` (:func:`spfluo.algorithms.symmetry.align_symmetry_axis`): the volume is shifted
so that its centre of mass (a point of the axis) is the box centre and rotated so that the
axis is z; the particles' poses follow (:func:`~spfluo.algorithms.symmetry.realign_poses`),
so that a reconstruction from them gives the aligned volume.  With ``order`` 0 the order is
first estimated (:func:`~spfluo.algorithms.symmetry.estimate_symmetry_order`); if no
symmetry is found the job fails (give the order), and a cylindrical volume (the same at
every angle about its axis) is aligned with the C2 criterion.

``symmetrize`` (:func:`~spfluo.algorithms.symmetry.symmetrize`): the mean of the volume over
the rotations of Cn about z through the box centre (align the axis first); ``order`` 0
estimates the order first (about the volume's own axis) but symmetrises about z.

The summary (JSON) holds the order used, the estimate (orders, contrasts, baseline,
cylindrical) when it was made, the axis in ``(x, y, z)``, its NCC score, the rotation (zyx
and stored xyz 4x4 with the shift in µm).
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..algorithms.geometry import Poses
from ..algorithms.symmetry import (
    align_symmetry_axis,
    estimate_symmetry_order,
    find_symmetry_axis,
    realign_poses,
    symmetrize,
)
from ..io import (
    read_particle_table,
    read_volume,
    write_json_atomic,
    write_particle_table,
    write_volume,
)
from ..algorithms.limits import MAX_SYMMETRY_ORDER
from ._inputs import choice_param, int_param
from .jobfile import Job, JobError, Progress

__all__ = ["run", "OPERATIONS"]

OPERATIONS = ("align", "symmetrize")


def _fail(message: str):
    raise JobError(f"job symmetry: {message}")


def _estimate(volume, job: Job, progress: Progress, max_order: int, axis=None) -> dict:
    threshold = job.param("threshold", 0.6)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or \
            not 0 < threshold <= 1:
        _fail(f"parameter 'threshold' must be in (0, 1], got {threshold!r}")
    est = estimate_symmetry_order(volume, max_order=max_order, threshold=float(threshold),
                                  axis=axis)
    table = ", ".join(f"C{n}: {c:.2f}" for n, c in zip(est.orders, est.contrasts))
    progress.log(f"order estimate: C{est.order} (baseline {est.baseline:.3f}"
                 f"{', cylindrical' if est.cylindrical else ''}); contrasts {table}")
    return {"estimate": est, "info": {
        "estimated_order": est.order, "orders": est.orders.tolist(),
        "scores": est.scores.tolist(), "contrasts": est.contrasts.tolist(),
        "baseline": est.baseline, "cylindrical": est.cylindrical,
        "threshold": est.threshold}}


def run(job: Job) -> None:
    """Align or symmetrise the volume of ``job`` (see the module docstring)."""
    progress = Progress("symmetry")
    start = time.perf_counter()
    operation = choice_param(job, "operation", "align", OPERATIONS)
    order = int_param(job, "order", 0, minimum=0, maximum=MAX_SYMMETRY_ORDER)
    max_order = int_param(job, "max_order", 12, minimum=2, maximum=MAX_SYMMETRY_ORDER) \
        if order == 0 else None
    if order == 1 and operation != "align":
        _fail("order 1 means no symmetry: give the order n >= 2 of Cn, or 0 to estimate it")
    path = job.existing_input("volume")
    try:
        data = read_volume(path, voxel_size=job.param("voxel_size", None))
    except ValueError as exc:
        _fail(f"cannot read the volume {path}: {exc}")
    vs = tuple(float(v) for v in data.voxel_size)
    if not np.allclose(vs, vs[0], rtol=1e-4):
        _fail(f"the volume must have isotropic voxels, got {vs} µm (z, y, x): resample it")
    vol = data.data
    if not np.all(np.isfinite(vol)):
        _fail(f"the volume {path} contains NaN or infinite values")
    if len(set(vol.shape[1:])) != 1:
        _fail(f"the volume must be a cubic box, got (z, y, x) = {vol.shape[1:]}")
    if not float(vol.max()) > float(vol.min()):
        _fail(f"the volume {path} is constant: there is no symmetry to find")
    summary: dict = {"operation": operation, "voxel_size": list(vs),
                     "requested_order": order, "n_channels": int(vol.shape[0])}
    progress.log(f"{operation} {vol.shape} (C, Z, Y, X), order "
                 f"{'estimated' if order == 0 else order}")
    estimate = None
    if order == 0:
        found = _estimate(vol, job, progress, max_order)
        estimate = found["estimate"]
        summary.update(found["info"])
        if estimate.order == 1 and not estimate.cylindrical:
            _fail("no cyclic symmetry found in the volume (every order's contrast is below "
                  f"{estimate.threshold:g}): give the order explicitly")
    names = [f"channel {c}" for c in range(vol.shape[0])]
    if operation == "align":
        if order == 1:
            # C1: no axis to align; volume and poses pass on unchanged, so that a workflow
            # keeps its alignment step for particles without symmetry
            used, aligned, rotation, shift = 1, vol, np.eye(3), np.zeros(3)
            axis_xyz, axis_score, angle = np.array([0.0, 0.0, 1.0]), 1.0, 0.0
            progress.log("C1: nothing to align, the volume and poses pass on unchanged")
        else:
            used = order or (2 if estimate.cylindrical else estimate.order)
            axis = estimate.axis if (estimate is not None and estimate.axis.order == used) \
                else find_symmetry_axis(vol, used)
            result = align_symmetry_axis(vol, used, axis=axis)
            aligned, rotation, shift = result.volume, result.rotation, result.shift
            axis_xyz, axis_score = axis.axis, axis.score
            angle = math.degrees(math.acos(float(np.clip(axis.axis[2], -1.0, 1.0))))
            progress.log(f"C{used} axis (x, y, z) {np.round(axis.axis, 4).tolist()}, "
                         f"{angle:.2f} deg from z, score {axis.score:.4f}; centre shift "
                         f"{np.round(axis.centre_shift, 3).tolist()} voxels")
        write_volume(job.output("volume"), aligned, vs, channel_names=names)
        transform = Poses(rotation[None], (rotation @ shift)[None])
        summary.update(order=used, axis_xyz=np.asarray(axis_xyz).tolist(),
                       axis_score=float(axis_score), axis_angle_from_z_deg=angle,
                       rotation_zyx=np.asarray(rotation).tolist(),
                       shift_zyx_voxels=np.asarray(shift).tolist(),
                       matrix_xyz_um=transform.to_stored(vs)[0].tolist())
        particles_path = job.input("particles", required=False)
        if particles_path is not None:
            table = read_particle_table(job.existing_input("particles"))
            if not table.has_poses:
                _fail(f"the particles of {particles_path} have no poses: there is nothing to "
                      "realign")
            poses = realign_poses(Poses.from_stored(table.matrices, vs), rotation, shift)
            write_particle_table(job.output("particles"), table.ids, table.paths,
                                 poses.to_stored(vs), extra=table.extra)
            summary["n_particles"] = len(table)
            progress.log(f"{len(table)} particle poses realigned")
    else:
        used = order or estimate.order
        if used < 2:
            _fail("the volume looks cylindrical (the same at every angle about its axis): the "
                  "order cannot be estimated, give it explicitly")
        out = symmetrize(vol, used)
        write_volume(job.output("volume"), out, vs, channel_names=names)
        summary["order"] = used
        before = vol - vol.mean()
        change = float(np.linalg.norm(out - vol) / max(np.linalg.norm(before), 1e-30))
        summary["relative_change"] = change
        progress.log(f"symmetrised with C{used} about z: relative change {change:.4f}")
    summary["wall_s"] = time.perf_counter() - start
    write_json_atomic(job.output("summary"), summary)
    progress.log(f"done in {summary['wall_s']:.1f} s")
