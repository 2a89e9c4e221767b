"""Benchmark of the known-pose reconstruction (issue 4): speed, memory and quality.

    python benchmarks/reconstruct.py [--quick] [--gpu] --out RESULT.json

Timing cases (``timing_N<N>``): N = 10, 100, 1000 particles of 64^3 (``--quick``: 10,
100 of 32^3), Hessian regulariser, 100 ADMM iterations, each in a fresh process (so that
``peak_rss_mb`` is its own): the time of the sums over particles (``precompute_s``), the
time per ADMM iteration (``per_iteration_s``), their total (``wall_s``) and the peak
resident memory.  The particles are streamed in batches of 16 from a file (memory map)
of 100 simulated particles (noise 0.2) with their true poses, cycled to reach N: nothing
of size N is ever held.  One more case, ``timing_N100_pad1``, runs without the default
padding (grid 64^3 instead of 72^3).

Quality cases (``quality_noise<sigma>_<method>``), the Fortun et al. 2017 Table 1 layout: a
simulated C9 barrel (``spfluo.algorithms.simulate.simulate_dataset``, Gaussian PSF
sigma 1.5 / 5 voxels, no labelling defects as in Fortun et al. 2017), 100 true poses, Gaussian noise
of standard deviation 0.1, 0.2 and 0.4 on particles scaled to [0, 1] (one noiseless
simulation, three noise draws), box 64^3 (``--quick``: 32^3 and 30 poses).  Methods:
Average, Deconv/Average, Tikhonov, TV, Hessian.  Each method is scored (PSNR, SSIM after
an affine intensity match, true frame: no registration) at the best weight of a small
grid judged against the ground truth (the oracle choice of Fortun et al. 2017 and Donati 2020), and,
for Tikhonov, TV and Hessian, at the weight chosen automatically from the half maps
(held-out misfit; ``*_auto`` fields).

Every case prints a one-line summary; the JSON is a list of flat objects.  Timings are
wall-clock on whatever else runs on the machine; the timing cases also record the CPU
time of their process (all threads: FFTs and the resampling pool use every core) and the
1-minute load average at their end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from spfluo.algorithms import reconstruct as rc  # noqa: E402
from spfluo.algorithms.backend import get_backend, to_numpy  # noqa: E402
from spfluo.algorithms.geometry import Poses  # noqa: E402
from spfluo.algorithms.metrics import normalize_for_comparison, psnr, ssim  # noqa: E402
from spfluo.algorithms.simulate import simulate_dataset  # noqa: E402

POOL = 100  # particles simulated (the timing cases cycle through them)
ITERATIONS = 100
NOISE_LEVELS = (0.1, 0.2, 0.4)
WEIGHT_GRIDS = {  # the oracle grids (the deconvolution of every particle is the slow one)
    "tikhonov": (1e-3, 3e-3, 1e-2, 3e-2),
    "tv": (1e-4, 3e-4, 1e-3, 3e-3),
    "hessian": (3e-5, 1e-4, 3e-4, 1e-3),
    "deconv-average": (1e-3, 3e-3),
}


def _clean_dataset(size: int, n: int):
    """The noiseless C9 barrel dataset (one simulation for every case)."""
    return simulate_dataset(phantom="c9", size=size, n_particles=n, seed=1, n_spots=0,
                            noise_std=0.0)


def _stream(particles, n: int, batch: int = 16):
    """(slice, batch) pairs for n particles taken cyclically from the pool."""
    pool = particles.shape[0]
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        idx = np.arange(start, stop) % pool
        yield slice(start, stop), np.asarray(particles[idx])


def _timing_child(queue, folder: str, n: int, pad: float, device: str) -> None:
    particles = np.load(os.path.join(folder, "particles.npy"), mmap_mode="r")
    rot = np.load(os.path.join(folder, "rotations.npy"))
    trans = np.load(os.path.join(folder, "translations.npy"))
    psf = np.load(os.path.join(folder, "psf.npy"))
    reps = -(-n // rot.shape[0])
    poses = Poses(np.tile(rot, (reps, 1, 1))[:n], np.tile(trans, (reps, 1))[:n])
    backend = get_backend(device)
    start, cpu = time.perf_counter(), time.process_time()
    sums = rc.precompute_sums(_stream(particles, n), poses, psf, pad=pad, backend=backend)
    if backend.is_gpu:  # pragma: no cover - GPU only
        backend.xp.cuda.Device().synchronize()
    pre, pre_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    result = rc.reconstruct_admm(sums, regularizer="hessian", weight=3e-4,
                                 iterations=ITERATIONS)
    to_numpy(result.volume)
    solve, solve_cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB -> MB (Linux)
    queue.put({"n_particles": n, "box": int(particles.shape[-1]), "grid": sums.grid_shape[0],
               "pad": pad, "regularizer": "hessian", "iterations": ITERATIONS,
               "precompute_s": pre, "solve_s": solve, "per_iteration_s": solve / ITERATIONS,
               "wall_s": pre + solve, "precompute_cpu_s": pre_cpu, "solve_cpu_s": solve_cpu,
               "peak_rss_mb": peak, "device": device, "load_average_1min": os.getloadavg()[0]})


def _timing(folder: str, n: int, pad: float, device: str) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_timing_child, args=(queue, folder, n, pad, device))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def _score(volume, truth) -> tuple[float, float]:
    v = normalize_for_comparison(volume, truth)
    return float(psnr(v, truth, data_range=1.0)), float(ssim(v, truth, data_range=1.0))


def _quality(clean, device: str, rows: list, out: str) -> None:
    """Append the quality cases to ``rows`` (saved to ``out`` after each noise level)."""
    truth = clean.volume[0]
    n, size = clean.n_particles, clean.particles.shape[-1]
    backend = get_backend(device)
    for level, sigma in enumerate(NOISE_LEVELS):
        rng = np.random.default_rng(100 + level)
        particles = clean.particles + rng.normal(0, sigma, clean.particles.shape).astype(
            np.float32)
        args = (particles, clean.poses)
        t0 = time.perf_counter()
        sums = rc.precompute_sums(*args, clean.psf, backend=backend)
        t_pre = time.perf_counter() - t0
        results = {}
        start = time.perf_counter()
        results["average"] = {"scores": _score(rc.average(*args, backend=backend)[0], truth),
                              "weight": None, "wall_s": time.perf_counter() - start}
        for method, grid in WEIGHT_GRIDS.items():
            best = None
            for w in grid:
                start = time.perf_counter()
                if method == "tikhonov":
                    vol = rc.reconstruct_tikhonov(sums, weight=w)
                elif method == "deconv-average":
                    vol = rc.deconv_average(*args, clean.psf, weight=w, iterations=50,
                                            backend=backend)
                else:
                    vol = rc.reconstruct_admm(sums, regularizer=method, weight=w,
                                              iterations=ITERATIONS).volume
                wall = time.perf_counter() - start
                if method != "deconv-average":
                    wall += t_pre
                score = _score(to_numpy(vol)[0], truth)
                if best is None or score[0] > best["scores"][0]:
                    best = {"scores": score, "weight": w, "wall_s": wall}
            results[method] = best
        for method in ("tikhonov", "tv", "hessian"):
            start = time.perf_counter()
            auto = rc.reconstruct(*args, clean.psf, method=method, weight="auto",
                                  iterations=ITERATIONS, seed=0, backend=backend)
            results[method]["auto"] = {
                "scores": _score(auto.volume[0], truth), "weight": float(auto.weight[0]),
                "resolution": float(auto.resolution_per_voxel[0]),
                "wall_s": time.perf_counter() - start}
        for method, res in results.items():
            row = {"case": f"quality_noise{sigma:g}_{method}", "method": method,
                   "noise_std": sigma, "n_particles": n, "box": size, "symmetry": 1,
                   "weight": res["weight"], "psnr_db": res["scores"][0],
                   "ssim": res["scores"][1], "wall_s": res["wall_s"]}
            if "auto" in res:
                auto = res["auto"]
                row.update(weight_auto=auto["weight"], psnr_db_auto=auto["scores"][0],
                           ssim_auto=auto["scores"][1],
                           fsc_resolution_per_voxel_auto=auto["resolution"],
                           wall_s_auto=auto["wall_s"])
            rows.append(row)
            extra = (f"; auto weight {row['weight_auto']:.3g}: PSNR {row['psnr_db_auto']:.2f} "
                     f"dB, SSIM {row['ssim_auto']:.3f}" if "auto" in res else "")
            weight = "-" if res["weight"] is None else f"{res['weight']:.3g}"
            print(f"{row['case']}: PSNR {row['psnr_db']:.2f} dB, SSIM {row['ssim']:.3f} "
                  f"(weight {weight}, {row['wall_s']:.1f} s){extra}", flush=True)
        _save(rows, out)


def _save(rows, path) -> None:
    with open(path, "w") as fh:
        json.dump(rows, fh, indent=1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced setting (~minutes)")
    parser.add_argument("--gpu", action="store_true", help="run on the GPU (CuPy)")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args(argv)
    device = "gpu" if args.gpu else "cpu"
    size = 32 if args.quick else 64
    start = time.perf_counter()
    clean = _clean_dataset(size, 30 if args.quick else POOL)
    print(f"simulated {clean.n_particles} particles of {size}^3 in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    rows = []
    if not args.skip_timing:
        with tempfile.TemporaryDirectory() as folder:
            noisy = clean.particles + np.random.default_rng(7).normal(
                0, 0.2, clean.particles.shape).astype(np.float32)
            np.save(os.path.join(folder, "particles.npy"), noisy)
            np.save(os.path.join(folder, "rotations.npy"), clean.poses.rotations)
            np.save(os.path.join(folder, "translations.npy"), clean.poses.translations)
            np.save(os.path.join(folder, "psf.npy"), clean.psf)
            del noisy
            cases = [(n, 1.125) for n in ((10, 100) if args.quick else (10, 100, 1000))]
            cases.append((100, 1.0))
            for n, pad in cases:
                row = _timing(folder, n, pad, device)
                row["case"] = f"timing_N{n}" + ("_pad1" if pad == 1.0 else "")
                rows.append(row)
                _save(rows, args.out)
                print(f"{row['case']}: {n} particles of {size}^3 (grid {row['grid']}^3), "
                      f"precompute {row['precompute_s']:.2f} s, "
                      f"{row['per_iteration_s'] * 1e3:.1f} ms/iteration, total "
                      f"{row['wall_s']:.2f} s, peak {row['peak_rss_mb']:.0f} MB", flush=True)
        timing = {r["case"]: r for r in rows}
        first, last = timing["timing_N10"], timing[f"timing_N{100 if args.quick else 1000}"]
        print(f"per-iteration time, N={last['n_particles']} over N=10: "
              f"{last['per_iteration_s'] / first['per_iteration_s']:.2f}x", flush=True)
    if not args.skip_quality:
        _quality(clean, device, rows, args.out)
    _save(rows, args.out)
    print(f"wrote {len(rows)} cases to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
