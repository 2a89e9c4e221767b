"""Benchmark of symmetric particles (issue 15): every pose modulo Cn, axis and in-plane.

    python benchmarks/symmetry.py [--quick] [--gpu] --out RESULT.json

Cases (each in its own process):

- ``<phantom>_photons<p>``: the C9 centriole-like barrel and the C8 nuclear-pore-like
  pairs of spots (:mod:`spfluo.algorithms.phantoms`), 50 particles of 48^3 at 0.1 µm,
  blurred by a vectorial widefield PSF (psfmodels Gibson-Lanni, NA 1.4, emission 0.6 µm,
  truncated by the box), Poisson noise with ``p`` = 20 and 50 photons at the brightest voxel
  and a read-noise floor of 1 photon; ab initio (SGD, symmetry n, package defaults) then
  refinement (symmetry n, package defaults);
- ``annealing_c9_default_blur``: the simulated annealing method on the C9 barrel in the
  setting of Eloy et al. 2023 (50^3, 20 particles, Gaussian PSF sigma 1.5 / 5 voxels,
  noise 0.2).

Metrics: for ab initio (``abinitio_``) and after the refinement (``refined_``) the Cn pose
error (:func:`spfluo.algorithms.metrics.pose_error_summary`: median of the total error,
of the axis error and of the absolute in-plane error, degrees; the n-fold mean resultant
length of the in-plane errors, 1 = recovered, about 0.14 = chance for 50 particles);
SSIM against the ground truth (registered modulo Cn) and the SSIM of the known-pose
reconstruction with the same solver and weight (``known_ssim``); ``wall_s`` and ``cpu_s`` (ab initio
plus refinement); the refinement's count of particles whose in-plane angle it flags as
undetermined.  ``--quick``: 32^3, 20 particles, one photon level.
"""

from __future__ import annotations

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks._runner import cpu_seconds, main, peak_rss_mb  # noqa: E402

OPTICS = dict(numerical_aperture=1.4, wavelength=0.6, method="vectorial")
READ_NOISE_PHOTONS = 1.0
ORDER = {"c9": 9, "npc": 8}


def _cases(quick: bool) -> dict:
    size, n, photons = (32, 20, (50.0,)) if quick else (48, 50, (20.0, 50.0))
    cases = {}
    for phantom in ("c9", "npc"):
        for p in photons:
            cases[f"{phantom}_photons{int(p)}"] = dict(
                kind="cn", sim=dict(phantom=phantom, size=size, n_particles=n,
                                    voxel_size=0.1, optics=OPTICS, poisson_photons=p,
                                    noise_std=READ_NOISE_PHOTONS / p, n_spots=0, seed=0))
    sim = (dict(size=32, n_particles=12, sigma_xy=1.0, sigma_z=3.2) if quick
           else dict(size=50, n_particles=20, sigma_xy=1.5, sigma_z=5.0))
    cases["annealing_c9_default_blur"] = dict(
        kind="annealing", sim=dict(sim, phantom="c9", noise_std=0.2, seed=0))
    return cases


def _errors(prefix: str, rotations, truth, order: int) -> dict:
    from spfluo.algorithms.metrics import pose_error_summary

    pe = pose_error_summary(rotations, truth, symmetry=order)
    return {f"{prefix}pose_error_median_deg": round(pe.median_deg, 3),
            f"{prefix}axis_error_median_deg": round(pe.axis_median_deg, 3),
            f"{prefix}in_plane_error_median_deg": round(pe.in_plane_median_deg, 3),
            f"{prefix}in_plane_resultant": round(pe.in_plane_resultant, 3),
            f"{prefix}n_upside_down": int((pe.axis_errors_deg > 90.0).sum())}


def run_case(name: str, spec: dict, gpu: bool) -> dict:
    from spfluo.algorithms.abinitio import sgd_reconstruction
    from spfluo.algorithms.abinitio.annealing import annealing_reconstruction
    from spfluo.algorithms.backend import get_backend
    from spfluo.algorithms.metrics import compare_volumes
    from spfluo.algorithms.reconstruct import reconstruct
    from spfluo.algorithms.refine import refine
    from spfluo.algorithms.simulate import simulate_dataset

    backend = get_backend("gpu" if gpu else "cpu")
    out = {"case": name, **{f"sim_{k}": v for k, v in spec["sim"].items() if k != "optics"},
           "load_avg_1min": round(os.getloadavg()[0], 2)}
    ds = simulate_dataset(**spec["sim"])
    order = ORDER.get(spec["sim"]["phantom"], 1) if spec["kind"] == "cn" else 9
    vs = ds.voxel_size
    t0, c0 = time.perf_counter(), cpu_seconds()
    if spec["kind"] == "annealing":
        ab = annealing_reconstruction(ds.particles, ds.psf, symmetry=order, seed=0,
                                      backend=backend)
        out["wall_s"] = round(time.perf_counter() - t0, 2)
        out["cpu_s"] = round(cpu_seconds() - c0, 2)
        out.update(_errors("abinitio_", ab.poses.rotations, ds.poses.rotations, order))
        method = "hessian"
        result_volume = ab.volume
    else:
        ab = sgd_reconstruction(ds.particles, ds.psf, symmetry=order, seed=0, backend=backend)
        out["abinitio_wall_s"] = round(time.perf_counter() - t0, 2)
        out.update(_errors("abinitio_", ab.poses.rotations, ds.poses.rotations, order))
        rf = refine(ds.particles, ab.poses, ds.psf, volume=ab.volume, symmetry=order,
                    backend=backend)
        out["wall_s"] = round(time.perf_counter() - t0, 2)
        out["cpu_s"] = round(cpu_seconds() - c0, 2)
        out.update(_errors("refined_", rf.poses.rotations, ds.poses.rotations, order))
        out["refined_undetermined"] = int(rf.undetermined.sum())
        method = "tv"
        result_volume = rf.volume
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    vol = result_volume if result_volume.ndim == 3 else result_volume[0]
    out["ssim"] = round(compare_volumes(vol, ds.volume[0], voxel_size=vs,
                                        symmetry=order).ssim, 4)
    # the weight the pipeline's last volume used (the method's default)
    known = reconstruct(ds.particles, ds.poses, ds.psf, method=method, weight=None,
                        symmetry=order, backend=backend).volume
    out["known_ssim"] = round(compare_volumes(known[0], ds.volume[0], voxel_size=vs,
                                              symmetry=order, register=False).ssim, 4)
    out["ssim_ratio"] = round(out["ssim"] / out["known_ssim"], 4) if out["known_ssim"] else None
    return out


KEYS = ("abinitio_pose_error_median_deg", "abinitio_in_plane_resultant",
        "refined_pose_error_median_deg", "refined_axis_error_median_deg",
        "refined_in_plane_error_median_deg", "refined_in_plane_resultant",
        "refined_undetermined", "ssim", "known_ssim", "ssim_ratio", "wall_s", "cpu_s",
        "peak_rss_mb", "load_avg_1min")

if __name__ == "__main__":
    sys.exit(main(__file__, __doc__, _cases, run_case, KEYS))
