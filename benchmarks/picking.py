"""Benchmark of the semi-automatic particle picking (issue 7): detection quality and speed.

    python benchmarks/picking.py [--quick] [--gpu] --out RESULT.json

Simulated fields of view (:func:`spfluo.algorithms.simulate.simulate_field`): the C9
barrel (``c9``) and the asymmetric object (``asymmetric``) on boxes of 32^3 particle
voxels of 0.1 µm, at uniform random orientations, in fields of 32 x 256 x 256 voxels of
(0.2, 0.1, 0.1) µm (anisotropic: z twice coarser), 36 particles per field of which 3
touching pairs (centres 0.75-0.95 support diameters apart), 6 debris blobs of another shape
(anisotropic Gaussians), the Eloy et al. 2023 Gaussian PSF (sigma 1.5 lateral, 5 axial particle
voxels) and noise (standard deviation 0.2 on fields scaled to [0, 1]); 4 fields per
phantom (``--quick``: 2 fields of 24 x 192 x 192 with 22 particles, 1 touching pair,
3 debris, c9 only).

Examples: 10 or 20 particles of the first field, picked "by hand" (true centres jittered
by up to a voxel laterally and half a voxel along z), either scattered over the field
(``random``) or all the particles of one region (``region``: the nearest to a random
particle).  The particle diameter given to the picker is the visible diameter of the
object (twice the largest distance from the box centre of a voxel above 10 % of the
maximum of the ground truth).  Classifiers: random forest (the default), RBF SVM (Fortun
et al. 2018) and gradient boosting.

Metrics per case, at the default score threshold 0.5 (and ``*_at_0.3``, ``*_at_0.7`` at
the thresholds 0.3 and 0.7, from the same run): precision, recall and F1 over all fields
(one-to-one matching of the detections to the true centres within half a diameter, in
micrometres, Hungarian assignment per field), the fraction of debris blobs detected
(``debris_accepted``), the fraction of touching pairs with both particles found, the
candidate recall (true centres with a blob candidate within half a diameter, before
classification), the number of candidates per field, and the time per field
(``per_image_s``: the whole ``pick_particles`` call over all fields, divided by their
number).  ``--gpu`` is accepted for the common interface; picking runs on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from scipy.optimize import linear_sum_assignment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from spfluo.algorithms import phantoms  # noqa: E402
from spfluo.algorithms import picking as pk  # noqa: E402
from spfluo.algorithms.psf import gaussian_psf  # noqa: E402
from spfluo.algorithms.simulate import simulate_field  # noqa: E402

VOXEL = (0.2, 0.1, 0.1)  # field voxel size (z, y, x), micrometres
SIGMA = (5.0, 1.5)  # Eloy et al. 2023 PSF, particle voxels (axial, lateral)
NOISE = 0.2


def _phantom(name: str, size: int) -> np.ndarray:
    if name == "c9":
        return phantoms.c9_barrel(size, supersample=2)
    return phantoms.asymmetric_phantom(size, seed=0, supersample=2)


def visible_diameter(volume: np.ndarray, voxel: float) -> float:
    """Twice the largest distance from the box centre of a voxel above 10 % of the maximum."""
    grid = np.indices(volume.shape) - (np.asarray(volume.shape) // 2)[:, None, None, None]
    r = np.sqrt((grid**2).sum(axis=0))[volume > 0.1 * volume.max()]
    return float(2 * r.max() * voxel)


def make_fields(phantom: str, *, size: int, shape, n_fields: int, n_particles: int,
                touching: int, n_debris: int, seed: int):
    vol = _phantom(phantom, size)
    scale = np.asarray(VOXEL) / VOXEL[2]
    sig = np.array([SIGMA[0], SIGMA[1], SIGMA[1]]) / scale
    psf = gaussian_psf(tuple(2 * int(np.ceil(3 * s)) + 1 for s in sig), sig)
    fields = [simulate_field(vol, psf, shape=shape, n_particles=n_particles, n_debris=n_debris,
                             touching_pairs=touching, noise_std=NOISE, voxel_size=VOXEL,
                             seed=seed + k) for k in range(n_fields)]
    return vol, fields


def choose_examples(truth: np.ndarray, n: int, mode: str, rng) -> np.ndarray:
    """Hand picks in one field: scattered, or all the particles of one region."""
    if mode == "random":
        idx = rng.choice(len(truth), n, replace=False)
    else:
        centre = truth[rng.integers(len(truth)), 1:]
        idx = np.argsort(np.linalg.norm(truth[:, 1:] - centre, axis=1), kind="stable")[:n]
    jitter = np.c_[rng.uniform(-0.5, 0.5, n), rng.uniform(-1.0, 1.0, (n, 2))]
    return truth[idx] + jitter


def _matches(found_um: np.ndarray, truth_um: np.ndarray, radius: float):
    if len(found_um) == 0 or len(truth_um) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    d = np.linalg.norm(found_um[:, None] - truth_um[None], axis=-1)
    r, c = linear_sum_assignment(d)
    ok = d[r, c] <= radius
    return r[ok], c[ok]


def evaluate(result, fields, diameter: float, threshold: float = 0.5) -> dict:
    """Detection metrics of the detections with ``score >= threshold`` (and the examples).

    Greedy non-maximum suppression keeps a detection unless a better one is near, so the
    detections of a run at threshold 0 filtered at ``threshold`` are those of a run at
    ``threshold``.
    """
    vs = np.asarray(VOXEL)
    tp = n_true = n_found = debris_hit = n_debris = pairs_found = n_pairs = 0
    kept = (result.scores >= threshold) | result.from_example
    for i, f in enumerate(fields):
        found = result.positions[(result.image_index == i) & kept] * vs
        hits, matched = _matches(found, f.positions * vs, diameter / 2)
        tp += len(matched)
        n_true += len(f.positions)
        n_found += len(found)
        # debris: detections left over near a debris blob
        unmatched = np.setdiff1d(np.arange(len(found)), hits)
        debris_hit += len(_matches(found[unmatched], f.debris_positions * vs, diameter / 2)[0])
        n_debris += len(f.debris_positions)
        for a, b in f.touching_pairs:
            n_pairs += 1
            pairs_found += int(a in matched and b in matched)
    precision = tp / max(n_found, 1)
    recall = tp / max(n_true, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return {"precision": precision, "recall": recall, "f1": f1,
            "debris_accepted": debris_hit / max(n_debris, 1),
            "touching_pairs_found": pairs_found / max(n_pairs, 1),
            "n_detections": int(n_found), "n_particles": int(n_true)}


def candidate_recall(fields, diameter: float) -> tuple[float, float]:
    vs = np.asarray(VOXEL)
    found = total = 0
    counts = []
    for f in fields:
        cands = pk.detect_candidates(f.image[0], VOXEL, diameter=diameter)
        counts.append(len(cands))
        found += len(_matches(cands.positions * vs, f.positions * vs, diameter / 2)[1])
        total += len(f.positions)
    return found / total, float(np.mean(counts))


def run(quick: bool) -> list[dict]:
    if quick:
        setting = dict(size=32, shape=(24, 192, 192), n_fields=2, n_particles=22, touching=1,
                       n_debris=3)
        phantom_names, counts, modes = ["c9"], [10, 20], ["random", "region"]
    else:
        setting = dict(size=32, shape=(32, 256, 256), n_fields=4, n_particles=36, touching=3,
                       n_debris=6)
        phantom_names, counts, modes = ["c9", "asymmetric"], [10, 20], ["random", "region"]
    cases = []
    for p_index, phantom in enumerate(phantom_names):
        vol, fields = make_fields(phantom, seed=100 * (p_index + 1), **setting)
        diameter = visible_diameter(vol, VOXEL[2])
        c_recall, c_mean = candidate_recall(fields, diameter)
        images = [f.image[0] for f in fields]
        for mode in modes:
            for n in counts:
                rng = np.random.default_rng(1000 * p_index + 10 * n + (mode == "region"))
                picks = choose_examples(fields[0].positions, n, mode, rng)
                examples = [picks] + [np.zeros((0, 3))] * (len(fields) - 1)
                for method in pk.CLASSIFIERS:
                    start = time.perf_counter()
                    res = pk.pick_particles(images, examples, VOXEL, diameter=diameter,
                                            method=method, threshold=0.0, seed=0)
                    wall = time.perf_counter() - start
                    metrics = evaluate(res, fields, diameter, threshold=0.5)
                    for t in (0.3, 0.7):
                        other = evaluate(res, fields, diameter, threshold=t)
                        metrics.update({f"{k}_at_{t:g}": other[k]
                                        for k in ("precision", "recall", "f1",
                                                  "debris_accepted")})
                    case = {"case": f"{phantom}_{mode}_{n}ex_{method}", "phantom": phantom,
                            "examples": n, "example_mode": mode, "classifier": method,
                            "n_fields": len(fields), "field_shape": list(setting["shape"]),
                            "particles_per_field": setting["n_particles"],
                            "debris_per_field": setting["n_debris"],
                            "touching_pairs_per_field": setting["touching"],
                            "voxel_size_um": list(VOXEL), "noise_std": NOISE,
                            "diameter_um": round(diameter, 4),
                            **{k: (round(v, 4) if isinstance(v, float) else v)
                               for k, v in metrics.items()},
                            "candidate_recall": round(c_recall, 4),
                            "candidates_per_field": round(c_mean, 1),
                            "rounds": res.rounds,
                            "wall_s": round(wall, 2),
                            "per_image_s": round(wall / len(fields), 2)}
                    cases.append(case)
                    print(f"{case['case']:32s} F1 {case['f1']:.3f}  P {case['precision']:.3f}  "
                          f"R {case['recall']:.3f}  debris {case['debris_accepted']:.2f}  "
                          f"pairs {case['touching_pairs_found']:.2f}  "
                          f"(F1 at 0.3: {case['f1_at_0.3']:.3f})  "
                          f"{case['per_image_s']:.1f} s/field", flush=True)
    return cases


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced setting (about a minute)")
    parser.add_argument("--gpu", action="store_true", help="accepted; picking runs on the CPU")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    cases = run(args.quick)
    with open(args.out, "w") as fh:
        json.dump(cases, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
