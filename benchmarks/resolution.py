"""Benchmark of the automatic weight, the support and the gold-standard resolution (issue 16).

    python benchmarks/resolution.py [--quick] --out RESULT.json

Data: a neutral simulator, independent of the project's phantoms: ``blobs`` (six
anisotropic Gaussian blobs, a rod and a half shell; no symmetry) and ``rods`` (nine rods
tilted about the z axis and a ring, C9), drawn analytically on the particle grid (the
ground truth) and twice finer (the particles, :func:`spfluo.algorithms.simulate.
simulate_particles`), 32^3, Gaussian PSF sigma 1.5 (x, y) / 5 (z) voxels, no labelling
defects, true poses.

Cases: N = 20 and 200 particles x noise 0.05 and 0.2 x C1 (blobs) and C9 (rods): 8 cases
(``--quick``: noise 0.2 only, 4 cases).  The full run adds robustness cases whose
physics differs from the reconstruction model: a widefield vectorial PSF
(:func:`spfluo.algorithms.psf.gibson_lanni_psf`, NA 1.4, 0.52 µm, voxels 0.05 µm, its
31^3 box truncating it) with Poisson noise (50 photons at the maximum) and read noise
0.05, C1 and C9, N = 50; and a PSF that passes frequencies beyond Nyquist (sigma 0.6 /
2 voxels), where the resolution cannot be measured.

Each case: the default Hessian reconstruction (``reconstruct(weight="auto")``, default
support, gold-standard FSC); the same solver at each of 7 fixed weights (3e-6 to 3e-3,
half-decades) on the full sums; SSIM against the truth (true frame, affine intensity
match); the energy outside the sphere of 0.9 x the box radius (with the default support,
and at the same weight without it); the half-map FSC 0.143 resolution (masked, corrected
by noise substitution) against the FSC 0.5 resolution of the full map against the
truth; wall times.  Targets (issue 16): ``ssim_auto >= ssim_best_fixed - 0.02``,
``energy_outside <= 0.05``, the half-map resolution within 20 % of the ground truth's
where the latter is below Nyquist (the "not reached" verdict otherwise), never beyond
the optical cutoff.  Each row carries ``pass_*`` flags.  The JSON is a list of flat
objects, saved after each case.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from spfluo.algorithms import reconstruct as rc  # noqa: E402
from spfluo.algorithms.metrics import fsc, normalize_for_comparison, ssim  # noqa: E402
from spfluo.algorithms.psf import gaussian_psf, gibson_lanni_psf  # noqa: E402
from spfluo.algorithms.reconstruct.mask import default_mask_radius  # noqa: E402
from spfluo.algorithms.resolution import NYQUIST, optical_cutoff, read_resolution  # noqa: E402
from spfluo.algorithms.simulate import simulate_particles  # noqa: E402

SIZE = 32
VOXEL_UM = 0.05
FIXED_WEIGHTS = (3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6)
ITERATIONS = 100


# ----------------------------------------------------------------------------- phantoms
def _grid(size: int, factor: int):
    n = size * factor
    c = (np.arange(n) - n // 2) / factor
    return np.meshgrid(c, c, c, indexing="ij")


def _soft(d, r, w=0.5):
    return 0.5 * (1 - np.tanh((d - r) / w))


def _segment_distance(z, y, x, a, b):
    p = np.stack([z, y, x], -1)
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0, 1)
    return np.linalg.norm(p - (a + t[..., None] * ab), axis=-1)


def phantom(kind: str, size: int = SIZE, factor: int = 1) -> np.ndarray:
    """``blobs`` (no symmetry) or ``rods`` (C9 about z), values in [0, 1], drawn on a
    grid ``factor`` times finer than ``size`` (same box, same centre)."""
    z, y, x = _grid(size, factor)
    s = size / 32.0
    f = np.zeros(z.shape)
    if kind == "blobs":
        rng = np.random.default_rng(3)
        for _ in range(6):
            c = rng.uniform(-7, 7, 3) * s
            sig = rng.uniform(1.2, 3.0, 3) * s
            f += rng.uniform(0.5, 1) * np.exp(-0.5 * (((z - c[0]) / sig[0]) ** 2
                                                      + ((y - c[1]) / sig[1]) ** 2
                                                      + ((x - c[2]) / sig[2]) ** 2))
        f += 0.8 * _soft(_segment_distance(z, y, x, np.array([-8., -4., 6.]) * s,
                                           np.array([6., 7., -5.]) * s), 1.3 * s)
        r = np.sqrt(z ** 2 + (y - 2 * s) ** 2 + (x + 3 * s) ** 2)
        f += 0.6 * _soft(np.abs(r - 6 * s), 0.8 * s) * (z > s)
    elif kind == "rods":
        radius, half_length = 8 * s, 8 * s
        for k in range(9):
            a = 2 * np.pi * k / 9
            p0 = np.array([-half_length, radius * np.sin(a), radius * np.cos(a)])
            p1 = np.array([half_length, radius * np.sin(a + 0.35), radius * np.cos(a + 0.35)])
            f = np.maximum(f, _soft(_segment_distance(z, y, x, p0, p1), 1.4 * s))
        rho = np.sqrt(y ** 2 + x ** 2)
        f = np.maximum(f, 0.6 * _soft(np.sqrt((rho - 4 * s) ** 2 + (z + 6 * s) ** 2), 1.2 * s))
    else:
        raise ValueError(kind)
    return (f / f.max()).astype(np.float32)


def _psf(name: str) -> np.ndarray:
    if name == "gaussian":
        return gaussian_psf((31, 31, 31), (5.0, 1.5))
    if name == "fine-gaussian":
        return gaussian_psf((15, 15, 15), (2.0, 0.6))
    if name == "widefield":
        return gibson_lanni_psf((31, 31, 31), voxel_size=(VOXEL_UM,) * 3,
                                numerical_aperture=1.4, wavelength=0.52, method="vectorial")
    raise ValueError(name)


# ----------------------------------------------------------------------------- one case
def _ssim(volume, truth) -> float:
    return float(ssim(normalize_for_comparison(volume, truth), truth))


def run_case(kind: str, n: int, noise: float, *, psf_name: str = "gaussian",
             photons: float | None = None, seed: int = 0) -> dict:
    """One row of the benchmark (see the module docstring)."""
    symmetry = 9 if kind == "rods" else 1
    truth = phantom(kind)
    psf = _psf(psf_name)
    ds = simulate_particles(truth, psf, fine_volume=phantom(kind, factor=2), n_particles=n,
                            noise_std=noise, poisson_photons=photons, n_spots=0, seed=seed,
                            voxel_size=VOXEL_UM)
    radius = default_mask_radius(SIZE)
    cutoff = optical_cutoff(ds.psf)
    start = time.perf_counter()
    auto = rc.reconstruct(ds.particles, ds.poses, ds.psf, method="hessian", weight="auto",
                          symmetry=symmetry, iterations=ITERATIONS, voxel_size_um=VOXEL_UM,
                          seed=seed)
    wall_auto = time.perf_counter() - start
    ssim_auto = _ssim(auto.volume[0], truth)
    start = time.perf_counter()
    sums = rc.precompute_sums(ds.particles, ds.poses, ds.psf, symmetry=symmetry)
    fixed = []
    for w in FIXED_WEIGHTS:
        vol = rc.reconstruct_admm(sums, weight=w, iterations=ITERATIONS,
                                  support_radius=radius).volume
        fixed.append(_ssim(np.asarray(vol)[0], truth))
    wall_fixed = time.perf_counter() - start
    unsupported = np.asarray(rc.reconstruct_admm(sums, weight=auto.weight,
                                                 iterations=ITERATIONS).volume)
    best = int(np.argmax(fixed))
    gt = read_resolution(fsc(auto.volume[0], truth), threshold=0.5, voxel_size_um=VOXEL_UM,
                         cutoff_per_voxel=cutoff)
    half = auto.resolution[0]
    choice = auto.weight_choice
    row = {
        "case": f"{kind}_N{n}_noise{noise:g}" + (f"_{psf_name}" if psf_name != "gaussian" else "")
                + (f"_photons{photons:g}" if photons else ""),
        "phantom": kind, "symmetry": symmetry, "n_particles": n, "noise_std": noise,
        "poisson_photons": photons, "psf": psf_name, "box": SIZE, "voxel_um": VOXEL_UM,
        "weight_auto": float(auto.weight[0]), "weight_interior": bool(choice.interior[0]),
        "sweep_weights": choice.weights.tolist(), "sweep_misfit": choice.misfit[:, 0].tolist(),
        "ssim_auto": ssim_auto, "fixed_weights": list(FIXED_WEIGHTS), "ssim_fixed": fixed,
        "ssim_best_fixed": fixed[best], "weight_best_fixed": FIXED_WEIGHTS[best],
        "ssim_gap": fixed[best] - ssim_auto,
        "energy_outside": rc.energy_outside(auto.volume, 0.9 * SIZE / 2),
        "energy_outside_without_support": rc.energy_outside(unsupported, 0.9 * SIZE / 2),
        "cutoff_per_voxel": cutoff,
        "half_map_status": half.status, "half_map_resolution_per_voxel":
            half.frequency_per_voxel if half.measured else None,
        "half_map_resolution_um": half.um, "half_map_text": half.text(),
        "randomize_from_per_voxel": auto.fsc_details[0].randomize_from_per_voxel,
        "ground_truth_status": gt.status, "ground_truth_05_per_voxel":
            gt.frequency_per_voxel if gt.measured else None,
        "wall_auto_s": wall_auto, "wall_fixed_grid_s": wall_fixed,
        "load_average_1min": os.getloadavg()[0],
    }
    rel = None
    if gt.measured and half.measured:
        rel = half.frequency_per_voxel / gt.frequency_per_voxel - 1
    row["resolution_relative_error"] = rel
    row["pass_ssim"] = row["ssim_gap"] <= 0.02
    row["pass_energy"] = row["energy_outside"] <= 0.05
    if gt.measured and gt.frequency_per_voxel < NYQUIST:
        row["pass_resolution"] = rel is not None and abs(rel) <= 0.2
    else:
        row["pass_resolution"] = not half.measured
    row["pass_cutoff"] = (not half.measured) or half.frequency_per_voxel <= cutoff + 1.0 / SIZE
    return row


def _print(row: dict) -> None:
    rel = row["resolution_relative_error"]
    print(f"{row['case']}: SSIM auto {row['ssim_auto']:.3f} (weight {row['weight_auto']:.3g}"
          f"{'' if row['weight_interior'] else ', EDGE'}) vs best fixed "
          f"{row['ssim_best_fixed']:.3f} ({row['weight_best_fixed']:.0e}); energy outside "
          f"{100 * row['energy_outside']:.2f} % (no support "
          f"{100 * row['energy_outside_without_support']:.2f} %); half maps: "
          f"{row['half_map_text']}; truth 0.5: "
          + (f"{row['ground_truth_05_per_voxel']:.3f} 1/voxel" if row["ground_truth_05_per_voxel"]
             else row["ground_truth_status"])
          + (f" ({100 * rel:+.0f} %)" if rel is not None else "")
          + f"; {row['wall_auto_s']:.0f} s; pass "
          + "".join("Y" if row[k] else "n" for k in ("pass_ssim", "pass_energy",
                                                     "pass_resolution", "pass_cutoff")),
          flush=True)


def cases(quick: bool) -> list[dict]:
    out = []
    for kind in ("blobs", "rods"):
        for n in (20, 200):
            for noise in ((0.2,) if quick else (0.05, 0.2)):
                out.append(dict(kind=kind, n=n, noise=noise))
    if not quick:
        for kind in ("blobs", "rods"):
            out.append(dict(kind=kind, n=50, noise=0.05, psf_name="widefield", photons=50.0))
        out.append(dict(kind="blobs", n=50, noise=0.05, psf_name="fine-gaussian"))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 cases (noise 0.2)")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    rows = []
    start = time.perf_counter()
    for spec in cases(args.quick):
        row = run_case(**spec)
        rows.append(row)
        _print(row)
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1, default=lambda v: None if isinstance(v, float)
                      and not math.isfinite(v) else v)
    by = {(r["phantom"], r["n_particles"], r["noise_std"], r["psf"]): r["ssim_auto"] for r in rows}
    for (kind, n, noise, psf), value in sorted(by.items()):
        if n == 200 and (kind, 20, noise, psf) in by:
            print(f"more particles, {kind} noise {noise:g}: SSIM auto N=20 "
                  f"{by[(kind, 20, noise, psf)]:.3f} -> N=200 {value:.3f}")
        if noise == 0.05 and (kind, n, 0.2, psf) in by:
            print(f"more SNR, {kind} N={n}: SSIM auto noise 0.2 {by[(kind, n, 0.2, psf)]:.3f} "
                  f"-> 0.05 {value:.3f}")
    passed = sum(all(r[k] for k in r if k.startswith("pass_")) for r in rows)
    print(f"{passed}/{len(rows)} cases meet every target; {time.perf_counter() - start:.0f} s; "
          f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
