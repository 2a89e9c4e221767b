"""Benchmark of a user's path through the `spfluo` command (issue 17): time, memory, quality.

    python benchmarks/user_path.py [--quick] [--gpu] --out RESULT.json

The acquisition (:func:`spfluo.batch.simulated.write_acquisition`): two ImageJ TIFF fields of
64 x 128 x 128 voxels of (0.15, 0.05, 0.05) µm (uint16 camera counts) holding 8 C9 barrels
each (boxes of 24 lateral voxels) and a debris blob, blurred by a widefield Gibson & Lanni
PSF (NA 1.4 oil, emission 0.52 µm, sample index 1.38, 2 µm deep); a bead image of that PSF
at the fields' sampling, 21 x 31 x 31 voxels (larger than the particles' box), off centre by
(0.4, -0.3, 0.35) voxels, on an offset of 100 counts with read noise; a picks CSV of 4
particles.  ``--quick``: fields of 32 x 80 x 80, boxes of 16, 5 particles per field, 3 picks.

The path (:func:`spfluo.tests._user_path.run_user_path`), each command a fresh
``python -m spfluo.cli`` process: project create, import the fields, the bead and the picks,
pick, extract (automatic voxel size and box), ab initio (SGD, 6 epochs of 16 directions x 6
in-plane angles, Tikhonov final volume; ``--quick``: 2 epochs, 8 x 4, no final volume),
project show, export-particles.

Measured: the wall time of each command; the peak resident memory of each job (the last line
of its log, ``ru_maxrss``); the picking recall and precision against the true
centres (within half a diameter); the largest difference between the PSF the ab initio job
used and the noise-free PSF computed at the particles' sampling (fraction of its peak).
``--gpu`` runs ab initio on the GPU.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _settings(quick: bool) -> dict:
    if quick:
        return {"field_shape": (32, 80, 80), "particle_box": 16, "particles_per_field": 5,
                "n_examples": 3,
                "abinitio": {"maxEpochs": 2, "nDirections": 8, "nPsi": 4,
                             "finalReconstruction": 3}}
    return {"field_shape": (64, 128, 128), "particle_box": 24, "particles_per_field": 8,
            "n_examples": 4,
            "abinitio": {"maxEpochs": 6, "nDirections": 16, "nPsi": 6, "finalReconstruction": 2}}


def _picking(project_runs: str, pick_run: str, acq) -> dict:
    """Recall and precision of the picks against the true centres (half a diameter)."""
    from spfluo.io import read_coordinates_csv

    run = glob.glob(os.path.join(project_runs, f"{int(pick_run):06d}_*"))[0]
    table = read_coordinates_csv(os.path.join(run, "extra", "coordinates.csv"))
    found, true_positive = len(table), 0
    for k, truth in enumerate(acq.positions_um):
        picks = table.positions_zyx_um[np.asarray(table.image_ids).astype(str) == f"fov_{k}"]
        if len(picks) == 0:
            continue
        d = np.linalg.norm(truth[:, None] - picks[None], axis=-1)
        true_positive += int((d.min(axis=1) <= acq.diameter_um / 2).sum())
    n_true = sum(len(t) for t in acq.positions_um)
    return {"picked": found, "true": n_true, "recall": round(true_positive / n_true, 3),
            "precision": round(true_positive / max(found, 1), 3)}


def _job_memory(project_runs: str) -> dict:
    """Peak resident memory (MB) of each job, from the last line of its run's log."""
    peaks = {}
    for log in sorted(glob.glob(os.path.join(project_runs, "*", "logs", "run.stdout"))):
        for line in open(log, encoding="utf-8", errors="replace"):
            found = re.search(r"spfluo job (\w+): peak resident memory (\d+) MB", line)
            if found:
                peaks[found.group(1)] = int(found.group(2))
    return peaks


def _psf_error(project_runs: str, abinitio_run: str, box: int) -> float:
    from spfluo.algorithms.psf import gibson_lanni_psf
    from spfluo.algorithms.psf_preparation import prepare_psf
    from spfluo.io import read_volume

    run = glob.glob(os.path.join(project_runs, f"{int(abinitio_run):06d}_*"))[0]
    used = read_volume(os.path.join(run, "extra", "psf_prepared.ome.tif")).data[0]
    fine = gibson_lanni_psf((63, 31, 31), voxel_size=0.05, numerical_aperture=1.4,
                            wavelength=0.52, immersion_index=1.518, sample_index=1.38,
                            depth=2.0)
    truth = prepare_psf(fine, 0.05, shape=box, subtract_background=False).psf[0]
    return round(float(np.abs(used - truth).max() / truth.max()), 4)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small fields (about 20 s)")
    parser.add_argument("--gpu", action="store_true", help="ab initio on the GPU")
    parser.add_argument("--out", required=True, help="JSON file of the results")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)

    from spfluo.batch.simulated import write_acquisition
    from spfluo.tests._user_path import run_user_path

    s = _settings(args.quick)
    work = tempfile.mkdtemp(prefix="spfluo-bench-user-")
    try:
        acq = write_acquisition(os.path.join(work, "data"), field_shape=s["field_shape"],
                                particle_box=s["particle_box"],
                                particles_per_field=s["particles_per_field"],
                                n_examples=s["n_examples"])
        abinitio = dict(s["abinitio"], **({"useGpu": "true", "gpuList": "0"} if args.gpu else {}))
        load = os.getloadavg()[0]
        start = time.perf_counter()
        path = run_user_path(acq, home=os.path.join(work, "home"), project="user",
                             export=os.path.join(work, "export"), abinitio=abinitio)
        wall = time.perf_counter() - start
        runs = os.path.join(work, "home", "projects", "user", "Runs")
        result = {"quick": args.quick, "gpu": args.gpu, "field_shape": list(s["field_shape"]),
                  "field_voxel_size_um": [0.15, 0.05, 0.05], "psf_shape": [21, 31, 31],
                  "particle_box": s["particle_box"], "failed": path.failed,
                  "command_s": path.seconds, "wall_s": round(wall, 2),
                  "job_peak_memory_mb": _job_memory(runs),
                  "load_avg_1min": round(load, 2), "cpu_count": os.cpu_count()}
        if path.failed is None:
            result["picking"] = _picking(runs, path.runs["pick"], acq)
            result["psf_max_error_of_peak"] = _psf_error(runs, path.runs["abinitio"],
                                                         s["particle_box"])
        print(json.dumps(result, indent=2))
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if result.get("failed") is None else 1


if __name__ == "__main__":
    sys.exit(main())
