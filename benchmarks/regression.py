"""Output fingerprints of every solver, for changes that must not change results.

    python benchmarks/regression.py --out BEFORE.json          # before a restructure
    python benchmarks/regression.py --out AFTER.json --compare BEFORE.json

Each case calls one public entry point on small seeded inputs and records the SHA-256 of
every array it returns (poses, volumes, energies, scores), plus the largest absolute and
relative difference to the reference run when ``--compare`` is given.  A case whose hash
changed is listed with those differences, so that a change within rounding (a different
summation order) can be told from a change of behaviour.  About three minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


# fields that hold timings, not results
_TIMING = ("seconds", "wall", "elapsed")


def _arrays(obj, prefix="") -> dict:
    """Flatten a result (array, dataclass, tuple, dict, scalar) into named float64 arrays."""
    out = {}
    if obj is None or callable(obj) and not isinstance(obj, np.ndarray):
        return out
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "fciub":
            out[prefix or "value"] = obj
        return out
    if isinstance(obj, (float, int, np.floating, np.integer, bool)):
        out[prefix or "value"] = np.asarray(obj)
        return out
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            if f.name in ("backend", "bk") or any(w in f.name for w in _TIMING):
                continue
            out.update(_arrays(getattr(obj, f.name), f"{prefix}.{f.name}" if prefix else f.name))
        return out
    if isinstance(obj, dict):
        for k in sorted(obj, key=str):
            if any(w in str(k) for w in _TIMING):
                continue
            out.update(_arrays(obj[k], f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(_arrays(v, f"{prefix}[{i}]"))
        return out
    if hasattr(obj, "rotations") and hasattr(obj, "translations"):  # Poses
        out[f"{prefix}.rotations"] = np.asarray(obj.rotations)
        out[f"{prefix}.translations"] = np.asarray(obj.translations)
    return out


def _digest(arrays: dict) -> dict:
    return {k: hashlib.sha256(np.ascontiguousarray(v).tobytes() + str(v.dtype).encode()
                              + str(v.shape).encode()).hexdigest()[:16]
            for k, v in arrays.items()}


def _cases():
    from spfluo.algorithms import abinitio, reconstruct, refine, symmetry
    from spfluo.algorithms.abinitio import annealing
    from spfluo.algorithms.extraction import extract_particles
    from spfluo.algorithms.geometry import Poses, perturb_rotations, so3_grid
    from spfluo.algorithms.metrics import compare_volumes, fsc, pose_error_summary, ssim
    from spfluo.algorithms.phantoms import asymmetric_phantom, c9_barrel
    from spfluo.algorithms.picking import pick_particles
    from spfluo.algorithms.psf import gaussian_psf
    from spfluo.algorithms.reconstruct.weight import DEFAULT_WEIGHT
    from spfluo.algorithms.registration import register_volumes
    from spfluo.algorithms.simulate import simulate_dataset, simulate_field
    from spfluo.algorithms.transform import rotate, rotate_about_z

    asym = simulate_dataset(phantom="asymmetric", size=20, n_particles=10, sigma_xy=0.75,
                            sigma_z=2.0, n_spots=20, noise_std=0.1, seed=0)
    barrel = simulate_dataset(phantom="c9", size=24, n_particles=10, sigma_xy=0.8,
                              sigma_z=2.0, noise_std=0.1, seed=1)
    refd = simulate_dataset(phantom="asymmetric", size=24, n_particles=12, sigma_xy=1.5,
                            sigma_z=3.0, noise_std=0.05, n_spots=0, seed=2)
    turned = Poses(perturb_rotations(refd.poses.rotations, np.radians(12.0), seed=4),
                   refd.poses.translations)
    vol = asymmetric_phantom((24,) * 3, seed=3)
    rot = perturb_rotations(np.eye(3)[None].repeat(3, 0), np.radians(30.0), seed=1)

    yield "simulate_asym", lambda: asym
    yield "simulate_c9", lambda: barrel
    yield "field", lambda: simulate_field(c9_barrel((16,) * 3), gaussian_psf((9,) * 3, (1.0, 2.5)),
                                          shape=(12, 64, 64), n_particles=5, n_debris=2,
                                          voxel_size=(0.2, 0.05, 0.05), seed=0)
    yield "so3_grid", lambda: so3_grid(64, 8, symmetry=3).matrices()
    yield "rotate", lambda: rotate(vol, rot, translations=np.ones((3, 3)) * 0.3)
    yield "rotate_about_z", lambda: rotate_about_z(vol, np.radians([10.0, 40.0]))
    for method in reconstruct.METHODS:
        yield f"reconstruct_{method}", lambda m=method: reconstruct.reconstruct(
            asym.particles, asym.poses, asym.psf, method=m,
            weight=None if m in ("average",) else DEFAULT_WEIGHT.get(m, 1e-3),
            iterations=20)
    yield "reconstruct_auto_halfmaps", lambda: reconstruct.reconstruct(
        asym.particles, asym.poses, asym.psf, method="hessian", iterations=20, half_maps=True)
    yield "reconstruct_c9_auto", lambda: reconstruct.reconstruct(
        barrel.particles, barrel.poses, barrel.psf, method="tv", symmetry=9, iterations=20)
    yield "sgd_asym", lambda: abinitio.sgd_reconstruction(
        asym.particles, asym.psf, seed=0, n_directions=32, n_psi=6, max_epochs=8,
        final_reconstruction="tikhonov")
    yield "sgd_c9", lambda: abinitio.sgd_reconstruction(
        barrel.particles, barrel.psf, symmetry=9, n_directions=32, n_psi=6, max_epochs=12,
        seed=0, final_reconstruction="tikhonov")
    yield "pose_search", lambda: abinitio.pose_search(
        asym.volume, asym.particles, asym.psf, grid=so3_grid(48, 8))
    yield "annealing_c9", lambda: annealing.annealing_reconstruction(
        barrel.particles, barrel.psf, symmetry=9, n_classes=4, working_size=16,
        final_reconstruction="tikhonov", seed=0)
    spectra = refine.particle_spectra(refd.particles, refd.psf)
    yield "particle_spectra", lambda: (spectra.values, spectra.frequencies, spectra.otf,
                                       spectra.energy)
    yield "search_poses", lambda: refine.search_poses(refd.volume, spectra, turned, step_deg=5.0,
                                                      range_deg=10.0)
    yield "search_poses_c3", lambda: refine.search_poses(refd.volume, spectra, turned,
                                                         step_deg=10.0, range_deg=None,
                                                         symmetry=3)
    yield "pose_energies", lambda: refine.pose_energies(refd.volume, spectra, turned,
                                                        gradient=True)
    yield "refine_continuous", lambda: refine.refine_poses_continuous(refd.volume, spectra, turned)
    yield "refine_tv", lambda: refine.refine(refd.particles, turned, refd.psf,
                                            exhaustive_iterations=3, continuous_iterations=1,
                                            admm_iterations=10, initial_admm_iterations=20,
                                            final_admm_iterations=20, seed=0)
    yield "refine_c9_halves", lambda: refine.refine(
        barrel.particles, barrel.poses, barrel.psf, symmetry=9, half_maps=True,
        exhaustive_iterations=3, continuous_iterations=1, admm_iterations=10,
        initial_admm_iterations=20, final_admm_iterations=20, seed=0)
    yield "symmetry_axis", lambda: symmetry.find_symmetry_axis(barrel.volume[0], 9)
    yield "symmetry_order", lambda: symmetry.estimate_symmetry_order(barrel.volume[0], max_order=12)
    yield "symmetrize", lambda: symmetry.symmetrize(barrel.volume[0], 9)
    yield "register", lambda: register_volumes(rotate(vol, rot[:1])[0], vol)
    yield "metrics", lambda: (fsc(vol, rotate(vol, rot[:1])[0]).values,
                              ssim(vol, rotate(vol, rot[:1])[0]),
                              pose_error_summary(turned.rotations, refd.poses.rotations).errors_deg,
                              compare_volumes(barrel.volume[0], barrel.volume[0] + 0.01,
                                              voxel_size=barrel.voxel_size, symmetry=9).ssim)

    def picks():
        fov = simulate_field(c9_barrel((16,) * 3), gaussian_psf((9,) * 3, (1.0, 2.5)),
                             shape=(12, 96, 96), n_particles=8, n_debris=3,
                             voxel_size=(0.2, 0.05, 0.05), seed=1)
        truth = np.asarray(fov.positions)
        images = [fov.image[0] if fov.image.ndim == 4 else fov.image]
        res = pick_particles(images, [truth[:4]], fov.voxel_size, diameter=0.7, seed=0)
        ext = extract_particles(images[0], truth, fov.voxel_size, box_size=0.9, voxel_size=0.05)
        return res, ext
    yield "picking_extraction", picks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--compare", help="a reference run's JSON")
    ap.add_argument("--only", nargs="*", help="case names")
    args = ap.parse_args(argv)
    ref = None
    if args.compare:
        with open(args.compare, encoding="utf-8") as f:
            ref = {c["case"]: c for c in json.load(f)}
    results, changed = [], []
    store = os.path.splitext(args.out)[0] + "_arrays"
    os.makedirs(store, exist_ok=True)
    for name, make in _cases():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        try:
            arrays = {k: np.asarray(v) for k, v in _arrays(make()).items()}
        except Exception as exc:  # recorded: an error is an output too
            arrays = {"error": np.frombuffer(f"{type(exc).__name__}: {exc}".encode(), np.uint8)}
        wall = time.perf_counter() - t0
        np.savez(os.path.join(store, f"{name}.npz"), **{k.replace("/", "_"): v
                                                        for k, v in arrays.items()})
        case = {"case": name, "wall_s": round(wall, 2), "hashes": _digest(arrays)}
        line = f"{name}: {len(arrays)} arrays, {wall:.1f} s"
        if ref is not None and name in ref:
            diffs = {}
            old_store = os.path.splitext(args.compare)[0] + "_arrays"
            old = dict(np.load(os.path.join(old_store, f"{name}.npz")))
            for k, h in case["hashes"].items():
                if ref[name]["hashes"].get(k) != h:
                    a, b = arrays[k].astype(np.complex128), old.get(k.replace("/", "_"))
                    if b is None or b.shape != a.shape:
                        diffs[k] = "new or reshaped"
                        continue
                    d = float(np.abs(a - b).max()) if a.size else 0.0
                    scale = float(np.abs(b).max()) if b.size else 0.0
                    diffs[k] = {"max_abs": d, "max_rel": d / scale if scale else d}
            missing = sorted(set(ref[name]["hashes"]) - set(case["hashes"]))
            for k in missing:
                diffs[k] = "missing"
            case["identical"] = not diffs
            case["differences"] = diffs
            line += "  identical" if not diffs else f"  CHANGED {diffs}"
            if diffs:
                changed.append(name)
        print(line, flush=True)
        results.append(case)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    if ref is not None:
        print(f"{len(results) - len(changed)} identical, {len(changed)} changed: {changed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
