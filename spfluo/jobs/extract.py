"""Job ``extract``: isotropic particle boxes around coordinates, every channel.

Job file::

    {"step": "extract",
     "inputs":  {"images": "extra/images.json",            # image list (spfluo.io.image_list)
                 "coordinates": "extra/coordinates.csv"},  # image_id,x,y,z (µm)[,particle_id]
     "params":  {"box_size_um": 1.6, "voxel_size_um": 0.1,
                 "border": "pad",                          # or "skip"
                 "normalize": "none",                      # or "zscore", "background"
                 "scheduler": null},                       # or a Dask address
     "outputs": {"particles": "extra/particles.csv",       # particle table
                 "particles_dir": "extra/particles",       # one OME-TIFF per particle
                 "report": "extra/extract_report.json"}}

The particle table has the columns ``id, path`` (``id`` is the coordinate's
``particle_id``, or its row number from 1 when the CSV has none) and ``image_id, x, y, z``
(the coordinate, micrometres), ``score`` (when the coordinates have one) and
``crosses_border`` (1 when the box crosses the image border and was padded).  The log
names every particle whose box crosses the border, padded or skipped.

The images are never read whole: each box is read with its resampling halo through a
memory map of the file (:func:`spfluo.io.fields.open_field`), in batches of
:data:`~spfluo.algorithms.extraction.EXTRACTION_BATCH` particles written before the next
batch is read; the fields one after the other, or one per task on the Dask cluster at
``scheduler`` (:mod:`spfluo.jobs._fields`).  The log gives the fields done out of the total
and the remaining time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..algorithms.extraction import box_voxels, iter_extractions
from ..io import (
    read_coordinates_csv,
    read_image_list,
    read_shape,
    write_particle_table,
    write_volume,
)
from ..io.fields import open_field
from ..io.atomic import write_json_atomic
from ..algorithms.limits import MAX_BOX_SIZE
from ._inputs import choice_param
from .jobfile import Job, JobError, Progress
from ._fields import FieldProgress, run_fields, scheduler_param
from .pick import check_inside, positions_by_image

__all__ = ["extract_field", "run"]

_NORMALIZE = {"none": None, "zscore": "zscore", "background": "background"}


def _params(job: Job) -> dict:
    box = float(job.param("box_size_um"))
    vs = float(job.param("voxel_size_um"))
    if not (np.isfinite(box) and box > 0):
        raise JobError(f"job extract: box_size_um must be > 0, got {box}")
    if not (np.isfinite(vs) and vs > 0):
        raise JobError(f"job extract: voxel_size_um must be > 0, got {vs}")
    border = job.param("border", "pad")
    if border not in ("pad", "skip"):
        raise JobError(f"job extract: border must be 'pad' or 'skip', got {border!r}")
    normalize = choice_param(job, "normalize", "none", _NORMALIZE)
    size = box_voxels(box, vs)
    if size > MAX_BOX_SIZE:
        raise JobError(f"job extract: a box of {box:g} µm holds {size} voxels of {vs:g} µm per "
                       f"side, more than {MAX_BOX_SIZE}: use larger voxels or a smaller box")
    return {"box": box, "voxel_size": vs, "border": border, "normalize": _NORMALIZE[normalize],
            "size": size, "scheduler": scheduler_param(job)}


def extract_field(path: str, n_channels: int, positions, image_voxel_size, ids, folder: str,
                  options: dict, progress=None) -> dict:
    """Extract and write the particles of one field (a task of :func:`run_fields`).

    ``positions`` are voxels ``(z, y, x)``, ``ids`` the particle ids (file names).
    Returns ``rows`` (the positions written, in order), their ``paths`` and ``crosses``
    (every position: its box crosses the border).
    """
    channels = [open_field(path, c) for c in range(n_channels)]
    rows, paths = [], []
    crosses = np.zeros(len(positions), bool)
    for batch, ext in iter_extractions(channels, positions, image_voxel_size,
                                       box_size=options["box"],
                                       voxel_size=options["voxel_size"],
                                       border=options["border"],
                                       normalize=options["normalize"]):
        crosses[batch] = ext.crosses_border
        for particle, j in zip(ext.particles, batch[ext.indices]):
            out = Path(folder) / f"particle_{int(ids[j]):06d}.ome.tif"
            write_volume(out, particle, (options["voxel_size"],) * 3)
            rows.append(int(j))
            paths.append(str(out))
        if progress is not None and batch.size:
            progress(batch[-1] + 1, len(positions))
    return {"rows": rows, "paths": paths, "crosses": crosses}


def run(job: Job) -> None:
    """Extract every coordinate's box from its image; one OME-TIFF per particle."""
    progress = Progress("extract")
    p = _params(job)
    entries = read_image_list(job.existing_input("images"))
    coords_path = job.existing_input("coordinates")
    table = read_coordinates_csv(coords_path)
    if len(table) == 0:
        raise JobError(f"{coords_path} lists no coordinate: pick particles first")
    per_image = positions_by_image(table, entries, what=f"coordinates ({coords_path})")
    check_inside(table, entries, what=f"coordinates ({coords_path})")
    ids = (table.particle_id if table.particle_id is not None
           else np.arange(1, len(table) + 1, dtype=np.int64))
    index = {e.image_id: k for k, e in enumerate(entries)}
    image_of_row = np.array([index[str(i)] for i in table.image_ids])
    rows_of_image = [np.flatnonzero(image_of_row == k) for k in range(len(entries))]
    folder = job.output("particles_dir")
    folder.mkdir(parents=True, exist_ok=True)
    progress.log(f"{len(table)} coordinate(s) in {sum(len(r) > 0 for r in rows_of_image)} "
                 f"image(s); box {p['box']:g} µm = {p['size']}^3 voxels of {p['voxel_size']:g} "
                 f"µm; border: {p['border']}; normalisation: {p['normalize'] or 'none'}")
    out_ids, out_paths, out_rows, out_cross = [], [], [], []
    used = [k for k in range(len(entries)) if rows_of_image[k].size]
    n_channels = read_shape(entries[used[0]].path)[0]
    for k in used:
        found = read_shape(entries[k].path)[0]
        if found != n_channels:
            raise JobError(f"image {entries[k].image_id!r} has {found} channel(s), "
                           f"{entries[used[0]].image_id!r} has {n_channels}: every image needs "
                           "the same channels")
    fields = FieldProgress(progress, [entries[k].image_id for k in used],
                           [rows_of_image[k].size for k in used])
    tasks = [dict(path=entries[k].path, n_channels=n_channels, positions=per_image[k],
                  image_voxel_size=entries[k].voxel_size, ids=ids[rows_of_image[k]],
                  folder=str(folder), options=p) for k in used]
    action = "padded" if p["border"] == "pad" else "skipped"
    for k, done in zip(used, run_fields(extract_field, tasks, fields, scheduler=p["scheduler"])):
        entry, rows = entries[k], rows_of_image[k]
        for j in np.flatnonzero(done["crosses"]):
            x, y, z = table.positions_zyx_um[rows[j]][::-1]
            progress.log(f"particle {int(ids[rows[j]])} (image {entry.image_id}, x, y, z = "
                         f"{x:.3f}, {y:.3f}, {z:.3f} µm) crosses the image border: {action}")
        out_ids += [int(ids[rows[j]]) for j in done["rows"]]
        out_paths += done["paths"]
        out_rows += [int(rows[j]) for j in done["rows"]]
        out_cross += [int(done["crosses"][j]) for j in done["rows"]]
        progress.log(f"image {entry.image_id}: {len(done['rows'])} particle(s), "
                     f"{int(done['crosses'].sum())} crossing the border")
    if not out_ids:
        raise JobError("every particle crosses the image border and was skipped: use "
                       "border 'pad' or a smaller box")
    order = np.argsort(out_ids, kind="stable")
    rows = np.asarray(out_rows)[order]
    pos = table.positions_zyx_um[rows]
    extra = {"image_id": [str(v) for v in table.image_ids[rows]],
             "x": pos[:, 2].tolist(), "y": pos[:, 1].tolist(), "z": pos[:, 0].tolist(),
             "crosses_border": np.asarray(out_cross)[order].tolist()}
    if table.score is not None:
        extra["score"] = table.score[rows].tolist()
    write_particle_table(job.output("particles"), np.asarray(out_ids)[order],
                         np.asarray(out_paths)[order], extra=extra)
    n_cross = int(sum(out_cross)) if p["border"] == "pad" else len(table) - len(out_ids)
    if "report" in job.outputs:
        write_json_atomic(job.output("report"), {
            "n_coordinates": len(table), "n_particles": len(out_ids),
            "n_crossing_border": n_cross, "border": p["border"],
            "box_voxels": p["size"], "voxel_size_um": p["voxel_size"],
            "n_channels": n_channels, "wall_s": round(progress.elapsed, 3)})
    progress.log(f"{len(out_ids)} particle(s) written; {n_cross} crossed the border "
                 f"({'padded' if p['border'] == 'pad' else 'skipped'})")
