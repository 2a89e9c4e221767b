"""The automatic weight and the spherical support, against the ground truth
(spfluo.algorithms.reconstruct.autoweight, spfluo.algorithms.reconstruct.mask)."""

import numpy as np
import pytest

from spfluo.algorithms import reconstruct as rc
from spfluo.algorithms.metrics import normalize_for_comparison, ssim
from spfluo.algorithms.psf import gaussian_psf
from spfluo.algorithms.reconstruct import autoweight
from spfluo.algorithms.reconstruct.mask import mask_edge
from spfluo.algorithms.simulate import simulate_particles
from spfluo.tests.algorithms._objects import blobs

BOX = 24
PSF = gaussian_psf((21, 21, 21), (3.5, 1.2))


def _ssim(volume, truth):
    return ssim(normalize_for_comparison(volume, truth), truth)


@pytest.fixture(scope="module")
def data():
    """Half sums of 20 and 200 particles (noise 0.2) of the same object, with the truth."""
    truth = blobs(BOX)
    ds = simulate_particles(truth, PSF, fine_volume=blobs(BOX, 2), n_particles=200,
                            noise_std=0.2, n_spots=0, seed=7)
    out = {"truth": truth}
    for n in (20, 200):
        out[n] = rc.precompute_half_sums(ds.particles[:n], ds.poses[:n], ds.psf, seed=0)
    return out


def test_automatic_weight_is_near_the_best_fixed_one_and_better_with_more_particles(data):
    """Issue 16, item 1: the automatic weight's SSIM is within 0.02 of the best of a fixed
    grid, and 200 particles are at least as good as 20 under the automatic weight."""
    truth = data["truth"]
    radius = rc.default_mask_radius(BOX)
    scores = {}
    for n in (20, 200):
        halves = data[n]
        choice = rc.choose_weight(halves, "hessian", iterations=30, support_radius=radius)
        assert choice.interior[0]
        full = rc.combine_sums(*halves)

        def solve(w):
            return rc.reconstruct_admm(full, weight=w, iterations=60,
                                       support_radius=radius).volume[0]

        scores[n] = _ssim(solve(choice.weight[0]), truth)
        fixed = max(_ssim(solve(w), truth) for w in (1e-2, 1e-3, 1e-4, 1e-5))
        assert scores[n] >= fixed - 0.02, (n, scores[n], fixed)
    assert scores[200] >= scores[20] - 1e-3, scores


def test_the_grid_is_extended_until_the_optimum_is_interior(data):
    logs = []
    choice = rc.choose_weight(data[20], "tikhonov", weights=[30.0, 10.0, 3.0],
                              progress=logs.append)
    assert choice.weights[:3].tolist() == [30.0, 10.0, 3.0]
    assert choice.weights.min() < 3.0 and choice.interior[0]
    i = int(np.argmin(choice.misfit[:, 0]))
    assert 0 < i < choice.weights.size - 1
    assert any("interior minimum" in line for line in logs)
    assert any(line.startswith("weight ") and "held-out misfit" in line for line in logs)


def test_an_optimum_outside_the_weights_allowed_is_said(data, monkeypatch):
    monkeypatch.setattr(autoweight, "WEIGHT_RANGE", (2.0, 1e2))
    logs = []
    choice = rc.choose_weight(data[20], "tikhonov", weights=[30.0, 10.0, 3.0],
                              progress=logs.append)
    assert not choice.interior[0]
    assert choice.weights.min() >= 2.0
    assert any("WARNING: no interior optimum" in line for line in logs)


def test_support_keeps_the_box_corners_empty(data):
    """Issue 16, item 2: with a weak weight the unconstrained solution spreads outside the
    object's sphere; with the support nothing lies outside and the result is closer to
    the truth."""
    truth = data["truth"]
    full = rc.combine_sums(*data[20])
    radius = rc.default_mask_radius(BOX)
    free = rc.reconstruct_admm(full, weight=1e-6, iterations=60).volume
    held = rc.reconstruct_admm(full, weight=1e-6, iterations=60, support_radius=radius).volume
    assert rc.energy_outside(free, 0.9 * BOX / 2) > 0.01
    assert rc.energy_outside(held, radius) == 0.0
    assert _ssim(held[0], truth) > _ssim(free[0], truth)
    masked = rc.reconstruct_tikhonov(full, weight=1e-2, mask_radius=radius)
    assert rc.energy_outside(masked, radius + mask_edge(BOX)) == 0.0


def test_mask_and_weight_inputs_are_checked(data):
    with pytest.raises(ValueError, match="pair of ReconstructionSums"):
        rc.choose_weight(data[20][0])
    with pytest.raises(ValueError, match="method must be one of"):
        rc.choose_weight(data[20], "average")
    with pytest.raises(ValueError, match="at least 3 numbers > 0"):
        rc.choose_weight(data[20], weights=[1e-3, 0.0, 1e-4])
    with pytest.raises(ValueError, match="support_radius must be a radius in voxels"):
        rc.reconstruct_admm(rc.combine_sums(*data[20]), support_radius=1.0)
    mask = rc.spherical_mask((16, 16, 16), 5.0, edge=2.0)
    assert mask[8, 8, 8] == 1.0 and mask[8, 8, 13] == 1.0 and mask[8, 8, 15] == 0.0
    assert mask[8, 8, 14] == pytest.approx(0.5)
