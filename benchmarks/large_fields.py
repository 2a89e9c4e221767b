"""Benchmark of picking and extraction on a large field of view (issue 21): bounded memory.

    python benchmarks/large_fields.py [--quick] [--gpu] --out RESULT.json
        [--size 2048] [--depth 100] [--particles 200] [--memory-gb 2] [--keep DIR]

The field: ``depth x size x size`` voxels of (0.2, 0.1, 0.1) µm, two channels (the
asymmetric object and a shell, boxes of 24^3 particle voxels of 0.1 µm), stored as a
uint16 OME-TIFF (2 x 100 x 2048 x 2048: 1.7 GB).  It is simulated block by block
(:func:`spfluo.algorithms.simulate.simulate_field` on lateral blocks of 256 x 256 voxels,
each with its particles, one debris blob and its noise, the Eloy et al. 2023 Gaussian
PSF) and written into a memory map of the file, so the generator never holds the field.
``--quick``: 40 x 512 x 512 voxels, 20 particles.

Then the jobs run as the protocols run them, each in its own process (``python -m
spfluo.jobs``): ``pick`` from 10 examples (the true centres nearest a corner of the
field, jittered by up to a voxel laterally and half a voxel along z) with the default
memory budget (``--memory-gb``), and ``extract`` of every pick (both channels, boxes of
1.5 diameters at 0.1 µm).  Recorded per job: wall time and CPU time (user + system, s:
the measure that a loaded machine changes least), peak resident memory (MB, the VmHWM
of its process), the tiles and the estimated peak (GB); for the picks, precision,
recall and F1 against the true centres (one-to-one within half a diameter, µm).

Whole field against tiles, on a crop small enough for both (``crop_*``): the picking of
an in-memory crop holding the examples in one tile and in tiles of 128 voxels
(``crop_picks_identical``: the detections and their scores equal bit for bit), and the
extraction of its picks from the in-memory crop and from the crop written to a file and
memory-mapped (``crop_particles_identical``).
Timings depend on the load of the machine: the load average is recorded.  ``--gpu`` is
accepted for the common interface; this runs on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import tifffile
from scipy.optimize import linear_sum_assignment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from spfluo.algorithms import phantoms  # noqa: E402
from spfluo.algorithms import picking as pk  # noqa: E402
from spfluo.algorithms.extraction import extract_particles  # noqa: E402
from spfluo.algorithms.psf import gaussian_psf  # noqa: E402
from spfluo.algorithms.simulate import simulate_field  # noqa: E402
from spfluo.io import (  # noqa: E402
    CoordinateTable,
    ImageEntry,
    read_coordinates_csv,
    write_coordinates_csv,
    write_image_list,
    write_volume,
)
from spfluo.io.fields import open_field  # noqa: E402
from spfluo.jobs.jobfile import write_job  # noqa: E402

VOXEL = (0.2, 0.1, 0.1)  # field voxels (z, y, x), micrometres
SIGMA = (5.0, 1.5)  # Eloy et al. 2023 PSF, particle voxels (axial, lateral)
NOISE = 0.1
BOX = 24  # particle box, voxels of 0.1 µm
BLOCK = 256  # lateral block of the simulation, voxels
N_EXAMPLES = 10


def write_field(path, *, depth: int, size: int, n_particles: int, seed: int = 0):
    """Simulate the two-channel field block by block into a uint16 OME-TIFF.

    Returns the true centres ``(N, 3)`` in voxels and the particle diameter (µm).
    """
    vol = np.stack([phantoms.asymmetric_phantom(BOX, seed=0, supersample=2),
                    phantoms.sphere_shell(BOX, radius=0.3, thickness=0.08, supersample=2)])
    scale = np.asarray(VOXEL) / VOXEL[2]
    sig = np.array([SIGMA[0], SIGMA[1], SIGMA[1]]) / scale
    psf = gaussian_psf(tuple(2 * int(np.ceil(3 * s)) + 1 for s in sig), sig)
    n_blocks = -(-size // BLOCK)
    counts = np.full(n_blocks**2, n_particles // n_blocks**2)
    counts[:n_particles % n_blocks**2] += 1
    field = tifffile.memmap(path, shape=(2, depth, size, size), dtype=np.uint16, ome=True,
                            metadata={"axes": "CZYX", "PhysicalSizeZ": VOXEL[0],
                                      "PhysicalSizeY": VOXEL[1], "PhysicalSizeX": VOXEL[2]})
    truth, particle_size = [], None
    for k in range(n_blocks**2):
        y0, x0 = (k // n_blocks) * BLOCK, (k % n_blocks) * BLOCK
        shape = (depth, min(BLOCK, size - y0), min(BLOCK, size - x0))
        fov = simulate_field(vol, psf, shape=shape, n_particles=int(counts[k]), n_debris=1,
                             touching_pairs=0, noise_std=NOISE, voxel_size=VOXEL,
                             seed=seed + k)
        field[:, :, y0:y0 + shape[1], x0:x0 + shape[2]] = np.clip(
            np.rint(2000 + 20000 * fov.image), 0, 65535).astype(np.uint16)
        truth.append(fov.positions + [0, y0, x0])
        particle_size = fov.particle_size
    field.flush()
    del field
    return np.concatenate(truth), 0.8 * particle_size * VOXEL[2]


def _examples(truth: np.ndarray, rng) -> np.ndarray:
    """The true centres nearest the corner (0, 0), jittered like hand picks (voxels)."""
    idx = np.argsort(np.linalg.norm(truth[:, 1:], axis=1), kind="stable")[:N_EXAMPLES]
    jitter = np.c_[rng.uniform(-0.5, 0.5, len(idx)), rng.uniform(-1.0, 1.0, (len(idx), 2))]
    return np.clip(truth[idx] + jitter, 0, None)


def f1_score(found_um: np.ndarray, truth_um: np.ndarray, radius: float) -> dict:
    d = np.linalg.norm(found_um[:, None] - truth_um[None], axis=-1)
    r, c = linear_sum_assignment(d)
    tp = int((d[r, c] <= radius).sum())
    precision, recall = tp / max(len(found_um), 1), tp / max(len(truth_um), 1)
    return {"precision": precision, "recall": recall,
            "f1": 2 * precision * recall / max(precision + recall, 1e-12),
            "n_detections": int(len(found_um)), "n_particles": int(len(truth_um))}


# The job in its own process, then the high-water mark of its resident memory (VmHWM:
# ru_maxrss would include the benchmark's own memory, kept across exec on Linux).
_JOB = ("import sys\nfrom spfluo.jobs.__main__ import main\nrc = main(sys.argv[1:])\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
        "print('job peak RSS', hwm[0].split()[1], 'kB')\nsys.exit(rc)")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_job(step: str, job, cwd) -> dict:
    start, cpu = time.perf_counter(), _children_cpu_s()
    out = subprocess.run([sys.executable, "-c", _JOB, step, str(job)], cwd=cwd,
                         capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, _children_cpu_s() - cpu
    if out.returncode != 0:
        raise RuntimeError(f"job {step} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    peak = re.search(r"job peak RSS (\d+) kB", out.stdout)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "peak_rss_mb": round(int(peak.group(1)) / 1e3),
            "log_tail": out.stdout.strip().splitlines()[-7:-1]}


def crop_comparison(path, truth, examples, diameter: float) -> dict:
    """Whole field against tiles on a crop holding the examples (see the module notes)."""
    reach = int(np.ceil(examples[:, 1:].max() + 2 * diameter / VOXEL[1]))
    side = min(max(384, reach), open_field(path, 0).shape[1])
    readers = [open_field(path, c) for c in range(2)]
    crop = np.stack([r[:, :side, :side] for r in readers])
    ex = examples[(examples[:, 1] < side) & (examples[:, 2] < side)]
    start = time.perf_counter()
    whole = pk.pick_particles([crop[0]], [ex], VOXEL, diameter=diameter, seed=0)
    t_whole = time.perf_counter() - start
    start = time.perf_counter()
    tiled = pk.pick_particles([crop[0]], [ex], VOXEL, diameter=diameter, seed=0, tile=128)
    t_tiled = time.perf_counter() - start
    same_picks = (np.array_equal(whole.positions, tiled.positions)
                  and np.array_equal(whole.scores, tiled.scores))
    options = dict(box_size=1.5 * diameter, voxel_size=VOXEL[2])
    start = time.perf_counter()
    in_memory = extract_particles(crop, whole.positions, VOXEL, **options)
    t_mem = time.perf_counter() - start
    crop_path = write_volume(os.path.join(os.path.dirname(path), "crop.ome.tif"), crop, VOXEL)
    start = time.perf_counter()
    streamed = extract_particles([open_field(crop_path, c) for c in range(2)], whole.positions,
                                 VOXEL, **options)
    t_stream = time.perf_counter() - start
    inside = truth[(truth[:, 1] < side) & (truth[:, 2] < side)]
    return {"crop_shape": list(crop.shape[1:]), "crop_n_examples": int(len(ex)),
            "crop_n_tiles": len(pk.plan_tiles(crop.shape[1:], VOXEL, diameter, core=128)),
            "crop_pick_whole_s": round(t_whole, 2), "crop_pick_tiled_s": round(t_tiled, 2),
            "crop_extract_in_memory_s": round(t_mem, 2),
            "crop_extract_streamed_s": round(t_stream, 2),
            "crop_picks_identical": bool(same_picks),
            "crop_particles_identical": bool(np.array_equal(in_memory.particles,
                                                            streamed.particles)),
            "crop_f1": f1_score(whole.positions * VOXEL, inside * VOXEL, diameter / 2)["f1"]}


def run(args) -> dict:
    size, depth, n = (512, 40, 20) if args.quick else (args.size, args.depth, args.particles)
    folder = args.keep or tempfile.mkdtemp(prefix="spfluo_large_")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "field.ome.tif")
    start = time.perf_counter()
    truth, diameter = write_field(path, depth=depth, size=size, n_particles=n)
    result = {"benchmark": "large_fields", "field_shape_czyx": [2, depth, size, size],
              "field_gb_uint16": round(2 * 2 * depth * size * size / 1e9, 3),
              "voxel_size_um": list(VOXEL), "n_particles": int(len(truth)),
              "diameter_um": round(diameter, 4), "memory_gb": args.memory_gb,
              "simulate_s": round(time.perf_counter() - start, 1)}
    print(f"field {depth} x {size} x {size} x 2 channels written ({result['simulate_s']} s)",
          flush=True)
    examples = _examples(truth, np.random.default_rng(0))
    write_image_list(os.path.join(folder, "images.json"),
                     [ImageEntry("field", path, VOXEL)])
    write_coordinates_csv(os.path.join(folder, "examples.csv"), CoordinateTable(
        image_ids=np.array(["field"] * len(examples)),
        positions_zyx_um=examples * np.asarray(VOXEL)))
    pick = write_job(os.path.join(folder, "pick.json"), step="pick",
                     inputs={"images": os.path.join(folder, "images.json"),
                             "examples": os.path.join(folder, "examples.csv")},
                     params={"channel": 0, "diameter_um": diameter, "threshold": 0.5,
                             "box_size_um": 1.5 * diameter, "memory_gb": args.memory_gb},
                     outputs={"coordinates": os.path.join(folder, "coords.csv"),
                              "report": os.path.join(folder, "pick_report.json")}, seed=0)
    result["pick"] = run_job("pick", pick, folder)
    report = json.load(open(os.path.join(folder, "pick_report.json")))
    result["pick"].update(n_tiles=report["n_tiles"][0],
                          estimated_peak_gb=report["estimated_peak_gb"])
    coords = read_coordinates_csv(os.path.join(folder, "coords.csv"))
    result["pick"].update(f1_score(coords.positions_zyx_um, truth * np.asarray(VOXEL),
                                   diameter / 2))
    print(f"pick: {result['pick']['wall_s']} s, {result['pick']['peak_rss_mb']} MB, "
          f"F1 {result['pick']['f1']:.3f}", flush=True)
    extract = write_job(os.path.join(folder, "extract.json"), step="extract",
                        inputs={"images": os.path.join(folder, "images.json"),
                                "coordinates": os.path.join(folder, "coords.csv")},
                        params={"box_size_um": 1.5 * diameter, "voxel_size_um": VOXEL[2],
                                "border": "pad", "normalize": "none"},
                        outputs={"particles": os.path.join(folder, "particles.csv"),
                                 "particles_dir": os.path.join(folder, "particles"),
                                 "report": os.path.join(folder, "extract_report.json")})
    result["extract"] = run_job("extract", extract, folder)
    result["extract"]["n_particles"] = json.load(
        open(os.path.join(folder, "extract_report.json")))["n_particles"]
    print(f"extract: {result['extract']['wall_s']} s, {result['extract']['peak_rss_mb']} MB",
          flush=True)
    result["total_s"] = round(result["pick"]["wall_s"] + result["extract"]["wall_s"], 1)
    result["peak_rss_mb"] = max(result["pick"]["peak_rss_mb"], result["extract"]["peak_rss_mb"])
    result.update(crop_comparison(path, truth, examples, diameter))
    print(f"crop {result['crop_shape']}: picks identical {result['crop_picks_identical']}, "
          f"particles identical {result['crop_particles_identical']}", flush=True)
    result["loadavg"] = open("/proc/loadavg").read().split()[:3] if os.path.exists(
        "/proc/loadavg") else None
    result["cpus"] = os.cpu_count()
    result["machine"] = platform.platform()
    if not args.keep:  # the temporary folder made above
        shutil.rmtree(folder)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 x 512 x 512, 20 particles")
    parser.add_argument("--gpu", action="store_true", help="accepted; this runs on the CPU")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--size", type=int, default=2048, help="lateral size, voxels")
    parser.add_argument("--depth", type=int, default=100, help="planes")
    parser.add_argument("--particles", type=int, default=200)
    parser.add_argument("--memory-gb", type=float, default=pk.DEFAULT_MEMORY_BYTES / 1e9,
                        help="memory_gb of the pick job")
    parser.add_argument("--keep", help="folder for the field and the outputs (kept)")
    args = parser.parse_args(argv)
    result = run(args)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
