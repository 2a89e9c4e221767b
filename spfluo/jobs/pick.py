"""Job ``pick``: find the particles like a few examples in a set of images.

Job file::

    {"step": "pick",
     "inputs":  {"images": "extra/images.json",          # image list (see below)
                 "examples": "extra/examples.csv"},      # coordinates CSV (µm), >= 3 rows
     "params":  {"channel": 0, "diameter_um": 0.5, "threshold": 0.5,
                 "box_size_um": 0.75, "classifier": "forest",
                 "candidate_threshold": 3.0, "nms_distance": 0.5, "novelty": 2.5,
                 "memory_gb": 2.0,                      # peak memory per field
                 "scheduler": null},                    # or a Dask address, tcp://node:8786
     "outputs": {"coordinates": "extra/coordinates.csv",  # image_id,x,y,z,score,box_size_um,
                                                          # particle_id
                 "report": "extra/pick_report.json"},
     "seed": 0}

The image list is a JSON list of ``{"image_id": str, "path": str, "voxel_size": [z, y, x]}``
(micrometres; the voxel size recorded in the project wins over the file's metadata), written
and read by :func:`spfluo.io.write_image_list` and :func:`spfluo.io.read_image_list`; the
``extract`` job reads the same list.  Coordinates are micrometres from the centre of voxel 0 of their image
(``spfluo.io.coordinates``).  Detection runs on ``channel``; the coordinates apply to every
channel.

Each field is read through a memory map or plane by plane (:func:`spfluo.io.fields.open_field`)
in lateral tiles that fit ``memory_gb`` (:func:`spfluo.algorithms.picking.plan_tiles`); the
tiles are planned for every field before the first is read, and a field that cannot fit is
refused with the memory it needs.  The fields run one after the other, or one per task
on the Dask cluster at ``scheduler`` (:mod:`spfluo.jobs._fields`); the log gives the fields
done out of the total and the remaining time.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..algorithms.geometry import vectors_um_to_voxels, vectors_voxels_to_um
from ..algorithms.picking import (
    CLASSIFIERS,
    DEFAULT_MEMORY_BYTES,
    classify_fields,
    field_training,
    plan_tiles,
)
from ..io import (
    CoordinateTable,
    ImageEntry,
    read_coordinates_csv,
    read_image_list,
    read_shape,
    write_coordinates_csv,
)
from ..io.atomic import write_json_atomic
from ..io.fields import open_field
from ..algorithms.limits import MAX_CHANNELS
from ._inputs import choice_param, float_param, int_param
from ._fields import FieldProgress, run_fields, scheduler_param
from .jobfile import Job, JobError, Progress

__all__ = ["positions_by_image", "check_inside", "plan_fields", "run"]

#: Fewest example picks the classifier learns from.
MIN_EXAMPLES = 3


def positions_by_image(table: CoordinateTable, entries: Sequence[ImageEntry], *,
                      what: str = "coordinates") -> list[np.ndarray]:
    """Positions of a coordinate table split by image, in voxels ``(z, y, x)``.

    Raises JobError when a row names an image that is not in the list.
    """
    index = {e.image_id: k for k, e in enumerate(entries)}
    out = [[] for _ in entries]
    for row, (image_id, pos) in enumerate(zip(table.image_ids, table.positions_zyx_um)):
        key = str(image_id)
        if key not in index:
            raise JobError(f"{what} row {row + 1}: image id {key!r} is not in the image list "
                           f"({', '.join(sorted(index)[:5])}...)")
        k = index[key]
        out[k].append(vectors_um_to_voxels(pos, entries[k].voxel_size))
    return [np.asarray(v, dtype=np.float64).reshape(-1, 3) for v in out]


def check_inside(table: CoordinateTable, entries: Sequence[ImageEntry], *,
                 what: str = "coordinates") -> None:
    """Raise JobError for the first coordinate outside its image (headers only are read)."""
    index = {e.image_id: e for e in entries}
    shapes = {}
    for row, (image_id, pos) in enumerate(zip(table.image_ids, table.positions_zyx_um)):
        entry = index[str(image_id)]
        if entry.image_id not in shapes:
            shapes[entry.image_id] = np.asarray(read_shape(entry.path)[1:], dtype=np.float64)
        extent = vectors_voxels_to_um(shapes[entry.image_id] - 1, entry.voxel_size)
        half = vectors_voxels_to_um(np.full(3, 0.5), entry.voxel_size)
        if np.any(pos < -half) or np.any(pos > extent + half):
            raise JobError(f"{what} row {row + 1}: position (x, y, z) = "
                           f"{tuple(np.round(pos[::-1], 4))} µm is outside image "
                           f"{entry.image_id} (x, y, z up to {tuple(np.round(extent[::-1], 4))} "
                           "µm); fix the coordinates or their unit (micrometres)")


def _params(job: Job) -> dict:
    channel = int_param(job, "channel", 0, minimum=0, maximum=MAX_CHANNELS - 1)
    diameter = float(job.param("diameter_um"))
    threshold = float(job.param("threshold", 0.5))
    box = job.param("box_size_um", None)
    box = 1.5 * diameter if box in (None, 0) else float(box)
    if box <= 0:
        raise JobError(f"job pick: box_size_um must be > 0, got {box}")
    classifier = choice_param(job, "classifier", "forest", CLASSIFIERS)
    return {"channel": channel, "diameter": diameter, "threshold": threshold, "box": box,
            "classifier": classifier,
            "candidate_threshold": float(job.param("candidate_threshold", 3.0)),
            "nms_distance": float(job.param("nms_distance", 0.5)),
            "novelty": float(job.param("novelty", 2.5)),
            "memory_bytes": 1e9 * float_param(job, "memory_gb", DEFAULT_MEMORY_BYTES / 1e9,
                                              low=0.0, strict=True),
            "scheduler": scheduler_param(job)}


def plan_fields(readers, entries, diameter: float, memory_bytes: float) -> list:
    """The tile plan of every field (header sizes only); JobError naming the field, the
    memory it needs and the parameter to change when one cannot fit."""
    plans = []
    for r, e in zip(readers, entries):
        try:
            plans.append(plan_tiles(r.shape, e.voxel_size, diameter, memory_bytes=memory_bytes))
        except ValueError as exc:
            raise JobError(f"image {e.image_id!r}: {exc} (parameter memory_gb)") from None
    return plans


def run(job: Job) -> None:
    """Read the images and examples, pick, write the coordinates CSV and a JSON report."""
    progress = Progress("pick")
    p = _params(job)
    entries = read_image_list(job.existing_input("images"))
    examples_path = job.existing_input("examples")
    table = read_coordinates_csv(examples_path)
    vs0 = entries[0].voxel_size
    for e in entries[1:]:
        if not np.allclose(e.voxel_size, vs0, rtol=1e-4):
            raise JobError(f"image {e.image_id!r} has voxel size {e.voxel_size} µm but "
                           f"{entries[0].image_id!r} has {vs0} µm; pick in images of one "
                           "voxel size")
    examples = positions_by_image(table, entries, what=f"examples ({examples_path})")
    check_inside(table, entries, what=f"examples ({examples_path})")
    n_ex = sum(len(x) for x in examples)
    progress.log(f"{len(entries)} image(s), {n_ex} example(s), channel {p['channel']}, "
                 f"diameter {p['diameter']:g} µm, classifier {p['classifier']}, "
                 f"threshold {p['threshold']:g}")
    if n_ex < MIN_EXAMPLES:
        raise JobError(f"examples ({examples_path}): need at least {MIN_EXAMPLES} example "
                       f"picks, got {n_ex}; pick more particles (about 10-20 work well)")
    readers = [open_field(e.path, p["channel"]) for e in entries]
    plans = plan_fields(readers, entries, p["diameter"], p["memory_bytes"])
    for e, r, plan in zip(entries, readers, plans):
        z, y, x = r.shape
        progress.log(f"image {e.image_id}: {z} x {y} x {x} voxels (z, y, x), {r.stored_dtype}, "
                     f"read by {'memory map' if r.mode == 'mmap' else 'plane'}; "
                     f"{len(plan)} tile(s), estimated peak {plan.peak_bytes / 1e9:.2f} GB "
                     f"(memory_gb {p['memory_bytes'] / 1e9:g})")
    seed = 0 if job.seed is None else int(job.seed)
    fields = FieldProgress(progress, [e.image_id for e in entries],
                           [r.size for r in readers])
    tasks = [dict(field=r, examples=examples[k], voxel_size=vs0, diameter=p["diameter"],
                  candidate_threshold=p["candidate_threshold"], memory_bytes=p["memory_bytes"],
                  name=f"image {e.image_id}") for k, (e, r) in enumerate(zip(entries, readers))]
    trainings = run_fields(field_training, tasks, fields, scheduler=p["scheduler"])
    progress.log(f"classifying {sum(len(t.rows) for t in trainings)} candidate(s) and "
                 "example(s)")
    result = classify_fields(trainings, vs0, diameter=p["diameter"], threshold=p["threshold"],
                             method=p["classifier"], nms_distance=p["nms_distance"],
                             novelty=p["novelty"], seed=seed)
    per_image = np.bincount(result.image_index, minlength=len(entries))
    for e, n_cand, n_det in zip(entries, result.n_candidates, per_image):
        progress.log(f"image {e.image_id}: {n_cand} candidate(s), {n_det} detection(s)")
    progress.log(f"{len(result)} particle(s) picked in all ({result.n_background} candidate(s) "
                 f"unlike every example, {result.rounds} classification round(s))")
    if len(result) == 0:
        raise JobError("no particle found: lower the threshold or check the diameter and the "
                       "channel")
    ids = np.array([entries[k].image_id for k in result.image_index])
    positions_um = vectors_voxels_to_um(result.positions, vs0)
    positions_um = np.maximum(positions_um, 0.0)  # sub-voxel centres may fall just below 0
    out = CoordinateTable(image_ids=ids, positions_zyx_um=positions_um,
                          score=result.scores.astype(np.float64),
                          box_size_um=np.full(len(result), p["box"]),
                          particle_id=np.arange(1, len(result) + 1))
    write_coordinates_csv(job.output("coordinates"), out)
    if "report" in job.outputs:
        write_json_atomic(job.output("report"), {
            "images": [e.image_id for e in entries],
            "n_candidates": result.n_candidates.tolist(),
            "n_detections": per_image.tolist(),
            "n_examples": n_ex,
            "examples_kept": int(result.from_example.sum()),
            "n_background": int(result.n_background),
            "rounds": int(result.rounds),
            "classifier": p["classifier"],
            "threshold": p["threshold"],
            "diameter_um": p["diameter"],
            "n_tiles": [len(plan) for plan in plans],
            "estimated_peak_gb": round(max(plan.peak_bytes for plan in plans) / 1e9, 3),
            "memory_gb": p["memory_bytes"] / 1e9,
            "wall_s": round(progress.elapsed, 3),
        })
    progress.log("done")
