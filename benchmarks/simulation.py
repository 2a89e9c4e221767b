"""Benchmark of the simulated data and the registration every comparison relies on.

Usage::

    python benchmarks/simulation.py [--quick] [--gpu] --out RESULT.json

Cases (each in a fresh process, so that ``peak_rss_mb`` is its own):

- ``simulate_particles``: :func:`spfluo.algorithms.simulate.simulate_dataset` with the
  Eloy et al. 2023 defaults (asymmetric phantom, 50^3, Gaussian PSF sigma_xy 1.5 / sigma_z 5,
  120 DOL spots, noise 0.2, oversampling 2), 100 particles (20 with ``--quick``);
- ``simulate_field``: :func:`~spfluo.algorithms.simulate.simulate_field`, 30 particles of
  32^3 in a (48, 384, 384) field with z voxels twice the lateral size (one smaller field
  with ``--quick``);
- ``register``: :func:`spfluo.algorithms.registration.register_volumes` of a 50^3
  asymmetric phantom turned by a random rotation and shifted by up to 3 voxels, blurred
  (Gaussian, 1 voxel) and noisy (10 % of the maximum), onto the phantom; time per
  registration and the errors against the known transform (3 seeds, 1 with ``--quick``);
- ``compare_volumes``: :func:`spfluo.algorithms.metrics.compare_volumes` of the same
  kind of pair without noise (registration + SSIM, PSNR, FSC, conical FSC).

The JSON is a list of one object per case: ``case``, its parameters, and flat metrics
whose names carry their unit (``wall_s`` elapsed, ``cpu_s`` CPU time of all threads,
``peak_rss_mb`` the case process's peak resident memory).  The machine's load average at
the start is recorded in every case (``load_average``): wall times on a shared machine
are only comparable at similar loads.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import time

import numpy as np


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def _case_simulate_particles(quick: bool, gpu: bool) -> dict:
    from spfluo.algorithms.simulate import simulate_dataset

    n = 20 if quick else 100
    start, cpu = time.perf_counter(), time.process_time()
    ds = simulate_dataset(size=50, n_particles=n, seed=0)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "case": "simulate_particles",
        "phantom": "asymmetric",
        "size": 50,
        "n_particles": n,
        "sigma_xy": 1.5,
        "sigma_z": 5.0,
        "oversampling": 2,
        "n_spots": 120,
        "noise_std": 0.2,
        "wall_s": wall,
        "cpu_s": cpu,
        "per_particle_s": wall / n,
        "measured_noise_std": float(ds.particles.std()),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _case_simulate_field(quick: bool, gpu: bool) -> dict:
    from spfluo.algorithms import phantoms
    from spfluo.algorithms.psf import gaussian_psf
    from spfluo.algorithms.simulate import simulate_field

    shape = (32, 192, 192) if quick else (48, 384, 384)
    n = 12 if quick else 30
    volume = phantoms.c9_barrel(32)
    psf = gaussian_psf((9, 11, 11), (2.5, 1.5))  # sigma_z 5 particle voxels = 2.5 field voxels
    start, cpu = time.perf_counter(), time.process_time()
    fov = simulate_field(volume, psf, shape=shape, n_particles=n, n_debris=5, touching_pairs=2,
                         voxel_size=(0.1, 0.05, 0.05), seed=0)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "case": "simulate_field",
        "field_shape": list(shape),
        "particle_size_voxels": 32,
        "n_particles": n,
        "n_debris": len(fov.debris_positions),
        "voxel_size_um": [0.1, 0.05, 0.05],
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _registration_pair(seed: int, size: int = 50, noise: float = 0.1):
    import scipy.ndimage

    from spfluo.algorithms import geometry, phantoms, transform

    reference = phantoms.asymmetric_phantom(size)
    rng = np.random.default_rng(seed)
    R0 = geometry.random_rotations(1, seed=rng)[0]
    t0 = rng.uniform(-3.0, 3.0, size=3)
    moved = transform.rotate(scipy.ndimage.gaussian_filter(reference, 1.0), R0,
                             translations=t0, order=3)
    moved = moved + rng.normal(0.0, noise * float(moved.max()), moved.shape)
    return moved.astype(np.float32), reference, R0, t0


def _case_register(quick: bool, gpu: bool) -> dict:
    from spfluo.algorithms import geometry
    from spfluo.algorithms.registration import register_volumes

    seeds = [0] if quick else [0, 1, 2]
    walls, cpus, angles, shifts = [], [], [], []
    for seed in seeds:
        moved, reference, R0, t0 = _registration_pair(seed)
        start, cpu = time.perf_counter(), time.process_time()
        res = register_volumes(moved, reference, backend="gpu" if gpu else None)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
        angles.append(float(np.degrees(geometry.geodesic_distance(res.rotation, R0.T))))
        shifts.append(float(np.linalg.norm(res.translation - (-R0.T @ t0))))
    return {
        "case": "register",
        "size": 50,
        "n_registrations": len(seeds),
        "coarse_step_deg": 20.0,
        "coarse_size": 20,
        "device": "gpu" if gpu else "cpu",
        "wall_s": float(np.mean(walls)),
        "wall_max_s": float(np.max(walls)),
        "cpu_s": float(np.mean(cpus)),
        "rotation_error_max_deg": float(np.max(angles)),
        "rotation_error_mean_deg": float(np.mean(angles)),
        "translation_error_max_voxels": float(np.max(shifts)),
        "translation_error_mean_voxels": float(np.mean(shifts)),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _case_compare(quick: bool, gpu: bool) -> dict:
    from spfluo.algorithms.metrics import compare_volumes

    moved, reference, _, _ = _registration_pair(7, noise=0.0)
    start, cpu = time.perf_counter(), time.process_time()
    c = compare_volumes(moved, reference, voxel_size=0.05, backend="gpu" if gpu else None)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "case": "compare_volumes",
        "size": 50,
        "device": "gpu" if gpu else "cpu",
        "wall_s": wall,
        "cpu_s": cpu,
        "ssim": c.ssim,
        "psnr_db": c.psnr_db,
        "fsc_resolution_per_voxel": c.resolution_per_voxel,
        "fsc_resolution_05_per_voxel": c.resolution_05_per_voxel,
        "registration_score": c.registration.score,
        "peak_rss_mb": _peak_rss_mb(),
    }


_CASES = [_case_simulate_particles, _case_simulate_field, _case_register, _case_compare]


_PARAMETERS = {"coarse_step_deg", "particle_size_voxels"}


def _summary(result: dict) -> str:
    keys = [k for k in result if k not in _PARAMETERS and (
        k.endswith(("_s", "_mb", "_deg", "_voxels", "_db")) or k in ("ssim",)
        or k.startswith("fsc_resolution"))]
    parts = " ".join(
        f"{k}={result[k]:.3g}" if isinstance(result[k], float) else f"{k}={result[k]}"
        for k in keys
    )
    return f"{result['case']}: {parts}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced setting (~1 minute)")
    parser.add_argument("--gpu", action="store_true", help="registration on the GPU (CuPy)")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    ctx = multiprocessing.get_context("spawn")
    results = []
    for case in _CASES:
        load = os.getloadavg()[0]
        with ctx.Pool(1) as pool:
            result = pool.apply(case, (args.quick, args.gpu))
        result["load_average"] = load
        print(_summary(result), flush=True)
        results.append(result)
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
