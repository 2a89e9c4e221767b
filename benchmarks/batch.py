"""Benchmark of ``spfluo batch`` (issue 8): 4 datasets on 2 Dask workers vs one after the other.

    python benchmarks/batch.py [--quick] [--gpu] --out RESULT.json

Four simulated datasets of C9 barrels (``spfluo.batch.simulated.write_particles_dataset``:
extracted particles, PSF, ground truth as ``reference.tif``) run through the template
"SPR from extracted particles" (import particles, import PSF, ab initio, align the C9
axis, refine with C9 symmetry, import reference, compare): once with ``--workers 1`` (the
datasets one after the other, ``sequential``) and once with ``--workers 2``
(``parallel``), each in a fresh spfluo home, on a local Dask cluster.  Default: 30
particles of 24^3 voxels per dataset, 6 ab initio epochs, a two-stage refinement;
``--quick``: 12 particles of 16^3, 2 epochs, one refinement iteration.  The values are
given by template alias in each dataset's ``dataset.json`` (``max_epochs`` fills the ab
initio form's ``maxEpochs``, ``n_directions`` ``nDirections``, ``n_psi`` ``nPsi``,
``final_reconstruction`` ``finalReconstruction`` (2 = Tikhonov), ``refine_schedule``
``schedule``, ...).

Per case: ``wall_s`` (the whole batch, cluster start included), ``cpu_s`` (user + system
time of this process and its finished children: workers, protocol runs, jobs),
``per_dataset_wall_s`` (mean runtime of a dataset in the summary), ``ssim`` and
``fsc_resolution_um`` (mean over the datasets, against the ground truth).  The parallel
case also has ``speedup_ratio`` = parallel wall / sequential wall (target <= 0.6).
Timings are wall-clock on whatever else runs on the machine (``load_avg_1min`` is
recorded at the start of each case; ``cpu_share`` = ``cpu_s / wall_s``, the cores the
batch actually got).  Only an otherwise idle machine measures the speed-up: where the
kernel shares the CPUs between sessions (Linux autogroups), a busy machine gives a
session the same share whatever its number of worker processes, and both cases then
get about the same ``cpu_share``.  ``--gpu`` is accepted for the common interface;
the batch runs on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

N_DATASETS = 4


def _cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _settings(quick: bool) -> dict:
    if quick:
        return {"n_particles": 12, "box": 16, "max_epochs": 2, "n_directions": 16, "n_psi": 4,
                "refine_schedule": "30:all", "refine_iterations": 1}
    return {"n_particles": 30, "box": 24, "max_epochs": 6, "n_directions": 32, "n_psi": 6,
            "refine_schedule": "15:all, 5:10", "refine_iterations": 2}


def _write_datasets(folder: str, s: dict) -> list[str]:
    from spfluo.batch.simulated import write_particles_dataset

    paths = []
    for k in range(N_DATASETS):
        path = write_particles_dataset(
            os.path.join(folder, f"barrels_{k}"), n_particles=s["n_particles"], box=s["box"],
            voxel_size=0.05, noise_std=0.1, seed=100 + k,
            values={"max_epochs": s["max_epochs"], "n_directions": s["n_directions"],
                    "n_psi": s["n_psi"], "final_reconstruction": 2, "registration_step": 30,
                    "refine_schedule": s["refine_schedule"],
                    "refine_iterations": s["refine_iterations"], "continuous_iterations": 0})
        paths.append(str(path))
    return paths


def _mean(values) -> float | None:
    values = [float(v) for v in values if v not in ("", None)]
    return round(sum(values) / len(values), 4) if values else None


def run_case(name: str, workers: int, datasets: list[str], work: str, s: dict) -> dict:
    from spfluo.batch import run_batch

    home = os.path.join(work, f"home_{name}")
    load = os.getloadavg()[0]
    cpu0, t0 = _cpu_s(), time.perf_counter()
    result = run_batch("spr_particles", datasets, out=os.path.join(work, f"out_{name}"),
                       workers=workers, home=home, log=lambda line: None)
    wall = time.perf_counter() - t0
    rows = result.rows
    failed = [r["project"] + ": " + r["error"] for r in rows if r["status"] != "finished"]
    return {
        "case": name, "workers": workers, "n_datasets": len(datasets),
        "n_particles": s["n_particles"], "box": s["box"], "max_epochs": s["max_epochs"],
        "wall_s": round(wall, 2), "cpu_s": round(_cpu_s() - cpu0, 2),
        "cpu_share": round((_cpu_s() - cpu0) / wall, 2),
        "per_dataset_wall_s": _mean(r["runtime_s"] for r in rows),
        "ssim": _mean(r["ssim"] for r in rows),
        "fsc_resolution_um": _mean(r["resolution_um"] for r in rows),
        "n_failed": len(failed), "errors": failed, "load_avg_1min": round(load, 2),
        "cpu_count": os.cpu_count(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small datasets (about a minute)")
    parser.add_argument("--gpu", action="store_true", help="accepted; the batch runs on the CPU")
    parser.add_argument("--out", required=True, help="JSON file of the results")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)

    from spfluo.environment import bootstrap

    work = tempfile.mkdtemp(prefix="spfluo-bench-batch-")
    bootstrap(os.path.join(work, "home_sequential"))
    settings = _settings(args.quick)
    try:
        datasets = _write_datasets(os.path.join(work, "data"), settings)
        results = [run_case("sequential", 1, datasets, work, settings),
                   run_case("parallel", 2, datasets, work, settings)]
        results[1]["speedup_ratio"] = round(results[1]["wall_s"] / results[0]["wall_s"], 3)
        for r in results:
            extra = f", ratio {r['speedup_ratio']} (target <= 0.6)" if "speedup_ratio" in r else ""
            print(f"{r['case']}: {r['n_datasets']} datasets, {r['workers']} worker(s): "
                  f"{r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU, SSIM {r['ssim']}, "
                  f"{r['n_failed']} failed, load {r['load_avg_1min']}{extra}")
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
