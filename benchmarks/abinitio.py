"""Benchmark of ab initio reconstruction (issue 5): speed and quality at the Eloy et al. 2023 setting.

    python benchmarks/abinitio.py [--quick] [--gpu] --out RESULT.json

Cases (each runs in its own process, so that ``peak_rss_mb`` is its own):

- ``sgd_asymmetric_seed{0..4}``: the Eloy et al. 2023 defaults (asymmetric phantom, 50^3, 20
  particles, Gaussian PSF sigma_xy = 1.5, sigma_z = 5 voxels, noise 0.2, 120 DOL spots;
  N_d = 64, N_psi = 8, alpha_r = 1.2, beta = 50), SGD with importance sampling, final
  volume by the known-pose Hessian solver (weight chosen on half maps);
- ``sgd_c9_seed{0..4}``: the C9 barrel with symmetry 9 (the same setting);
- ``sgd_c9_seed000``: the C9 barrel in the Fortun et al. 2018 setting (45^3, two channels: barrel
  and torus, 50 particles, sigma 4 / 16 voxels), symmetry 9;
- ``sgd_sigmaz10_n40``: robustness, sigma_z = 10 and 40 particles (Eloy et al. 2023 sec. 4.3.5);
- ``annealing_c9``: the simulated annealing method (Fortun et al. 2018) on the C9 barrel;
- ``scaling_n{10,20,40}`` and ``scaling_nd{16,32,64}``: two full-band epochs (no coarse
  stage, no global search), to measure the time per epoch against the number of
  particles and against N_d x N_psi.

Metrics: ``wall_s`` (ab initio to its final volume), ``per_epoch_s`` (mean wall time of the
epochs at the full band) and ``coarse_per_epoch_s``, ``n_epochs``, ``peak_rss_mb``, ``ssim``
and ``fsc_resolution_per_voxel`` against the ground truth after registration
(:func:`spfluo.algorithms.metrics.compare_volumes`), ``pose_error_median_deg`` after the
best global rotation (modulo the symmetry), for the barrel ``axis_error_median_deg`` (the angle between the
estimated and true barrel axes ``R e_z`` after the same global rotation) and
``n_upside_down`` (pose error above 90 degrees), the same volume metrics for the known-pose
reconstruction of the same data with the true poses (``known_ssim``,
``known_fsc_resolution_per_voxel``: the ceiling) and ``ssim_ratio`` = ``ssim /
known_ssim`` (target >= 0.95), ``iterate_ssim`` (the ab initio iterate before the final
known-pose step).  ``--quick``: 32^3, 12 particles, N_d = 32, Tikhonov final volume,
one seed, two scaling points.  Timings are wall-clock on whatever else runs on the
machine (``load_avg_1min`` is recorded at the start of each case).
"""

from __future__ import annotations

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks._runner import main, peak_rss_mb  # noqa: E402


def _cases(quick: bool) -> dict:
    if quick:
        sim = dict(size=32, n_particles=12, sigma_xy=1.0, sigma_z=3.2)
        algo = dict(n_directions=32, n_psi=8, final_reconstruction="tikhonov")
        return {
            "sgd_asymmetric_seed0": dict(method="sgd", sim=dict(sim, phantom="asymmetric",
                                                                seed=0), algo=algo),
            "scaling_n6": dict(method="scaling", sim=dict(sim, phantom="asymmetric",
                                                          n_particles=6, seed=0),
                               algo=dict(n_directions=32, n_psi=8)),
            "scaling_n12": dict(method="scaling", sim=dict(sim, phantom="asymmetric", seed=0),
                                algo=dict(n_directions=32, n_psi=8)),
        }
    sim = dict(size=50, n_particles=20, sigma_xy=1.5, sigma_z=5.0)
    algo = dict(n_directions=64, n_psi=8, alpha_r=1.2, beta_d=50.0, beta_psi=50.0,
                final_reconstruction="hessian")
    cases = {f"sgd_asymmetric_seed{s}": dict(method="sgd", sim=dict(sim, phantom="asymmetric",
                                                                    seed=s), algo=algo)
             for s in range(5)}
    for s in range(5):
        cases[f"sgd_c9_seed{s}"] = dict(method="sgd", sim=dict(sim, phantom="c9", seed=s),
                                        algo=dict(algo, symmetry=9))
    cases["sgd_c9_seed000"] = dict(method="sgd", sim=dict(size=45, n_particles=50, sigma_xy=4.0,
                                                          sigma_z=16.0, phantom="c9",
                                                          n_channels=2, seed=0),
                                   algo=dict(algo, symmetry=9))
    cases["sgd_sigmaz10_n40"] = dict(method="sgd", sim=dict(sim, phantom="asymmetric",
                                                            sigma_z=10.0, n_particles=40,
                                                            seed=0), algo=algo)
    cases["annealing_c9"] = dict(method="annealing", sim=dict(sim, phantom="c9", seed=0),
                                 algo=dict(symmetry=9, final_reconstruction="hessian"))
    for n in (10, 20, 40):
        cases[f"scaling_n{n}"] = dict(method="scaling", sim=dict(sim, phantom="asymmetric",
                                                                 n_particles=n, seed=0),
                                      algo=dict(n_directions=64, n_psi=8))
    for nd in (16, 32):
        cases[f"scaling_nd{nd}"] = dict(method="scaling", sim=dict(sim, phantom="asymmetric",
                                                                   seed=0),
                                        algo=dict(n_directions=nd, n_psi=8))
    return cases


def run_case(name: str, spec: dict, gpu: bool) -> dict:
    """One case in this process: simulate, reconstruct, measure."""
    import numpy as np

    from spfluo.algorithms.abinitio import sgd_reconstruction
    from spfluo.algorithms.abinitio.annealing import annealing_reconstruction
    from spfluo.algorithms.backend import get_backend
    from spfluo.algorithms.metrics import compare_volumes, pose_error_summary
    from spfluo.algorithms.reconstruct import reconstruct
    from spfluo.algorithms.simulate import simulate_dataset

    backend = get_backend("gpu" if gpu else "cpu")
    load = os.getloadavg()[0]
    ds = simulate_dataset(**spec["sim"])
    sym = spec["algo"].get("symmetry", 1)
    out = {"case": name, "method": spec["method"], **{f"sim_{k}": v for k, v in
                                                       spec["sim"].items()},
           **{k: v for k, v in spec["algo"].items()}, "load_avg_1min": round(load, 2)}
    start = time.perf_counter()
    if spec["method"] == "scaling":
        result = sgd_reconstruction(ds.particles, ds.psf, max_epochs=2, coarse_epochs=0,
                                    min_epochs=10, global_search=False, refine=False,
                                    final_reconstruction=None, seed=0, backend=backend,
                                    **spec["algo"])
        out["per_epoch_s"] = float(np.mean(result.epoch_seconds))
        out["candidates_per_particle"] = spec["algo"]["n_directions"] * spec["algo"]["n_psi"]
        out["peak_rss_mb"] = round(peak_rss_mb(), 1)
        return out
    if spec["method"] == "sgd":
        result = sgd_reconstruction(ds.particles, ds.psf, seed=0, backend=backend,
                                    **spec["algo"])
    else:
        result = annealing_reconstruction(ds.particles, ds.psf, seed=0, backend=backend,
                                          **spec["algo"])
    out["wall_s"] = round(time.perf_counter() - start, 2)
    bands = result.epoch_bands
    full = bands == bands.max()
    out["n_epochs"] = int(result.n_epochs)
    out["converged"] = bool(result.converged)
    out["per_epoch_s"] = round(float(result.epoch_seconds[full].mean()), 3)
    if (~full).any():
        out["coarse_per_epoch_s"] = round(float(result.epoch_seconds[~full].mean()), 3)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    pe = pose_error_summary(result.poses.rotations, ds.poses.rotations, symmetry=sym)
    out["pose_error_median_deg"] = round(pe.median_deg, 3)
    out["pose_error_max_deg"] = round(pe.max_deg, 2)
    out["fraction_below_10deg"] = round(pe.fraction_below_10deg, 3)
    out["n_upside_down"] = int((pe.errors_deg > 90.0).sum())
    if sym > 1:
        ez = np.array([1.0, 0.0, 0.0])
        a = np.einsum("nij,j->ni", np.matmul(result.poses.rotations, pe.alignment), ez)
        b = np.einsum("nij,j->ni", ds.poses.rotations, ez)
        axis = np.degrees(np.arccos(np.clip((a * b).sum(axis=1), -1.0, 1.0)))
        out["axis_error_median_deg"] = round(float(np.median(axis)), 2)
    vs = ds.voxel_size
    found = compare_volumes(result.volume[0], ds.volume[0], voxel_size=vs, symmetry=sym)
    iterate = compare_volumes(result.iterate[0], ds.volume[0], voxel_size=vs, symmetry=sym)
    final = spec["algo"].get("final_reconstruction") or "hessian"
    known_vol = reconstruct(ds.particles, ds.poses, ds.psf, method=final, symmetry=sym,
                            backend=backend).volume
    known = compare_volumes(known_vol[0], ds.volume[0], voxel_size=vs, symmetry=sym,
                            register=False)
    out.update(
        ssim=round(found.ssim, 4), fsc_resolution_per_voxel=round(found.resolution_per_voxel, 4),
        iterate_ssim=round(iterate.ssim, 4), known_ssim=round(known.ssim, 4),
        known_fsc_resolution_per_voxel=round(known.resolution_per_voxel, 4),
        ssim_ratio=round(found.ssim / known.ssim, 4) if known.ssim > 0 else None)
    return out


KEYS = ("wall_s", "n_epochs", "per_epoch_s", "ssim", "known_ssim", "ssim_ratio",
        "pose_error_median_deg", "n_upside_down", "axis_error_median_deg",
        "fsc_resolution_per_voxel", "peak_rss_mb", "load_avg_1min")


if __name__ == "__main__":
    sys.exit(main(__file__, __doc__, _cases, run_case, KEYS))
