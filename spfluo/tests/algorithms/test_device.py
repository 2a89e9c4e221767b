"""The hot loops stay on the device: device -> host transfers counted on an emulated GPU.

The emulated device (:mod:`._device`) is NumPy behind a device boundary that counts every
transfer to the host and refuses what CuPy refuses (implicit conversions, host arrays
mixed into device operations), so these tests also run the GPU code paths without a GPU.
"""

import math

import numpy as np
import pytest

from spfluo.algorithms.abinitio import sgd_reconstruction
from spfluo.algorithms.backend import to_numpy
from spfluo.algorithms.geometry import Poses, perturb_rotations
from spfluo.algorithms.reconstruct import precompute_sums, reconstruct_admm
from spfluo.algorithms.refine import refine
from spfluo.algorithms.simulate import simulate_dataset
from spfluo.tests.algorithms import _device

SIM = dict(phantom="asymmetric", size=20, sigma_xy=0.9, sigma_z=2.2, noise_std=0.05, n_spots=0,
           seed=2)


@pytest.fixture(scope="module")
def device():
    return _device.emulated_backend()


def _dataset(n):
    return simulate_dataset(n_particles=n, **SIM)


def test_the_emulated_device_counts_and_refuses_like_cupy(device):
    xp = device.xp
    a = xp.asarray(np.arange(6.0))
    _device.reset()
    b = (a * 2 + 1).sum()
    assert _device.COUNTS["d2h"] == 0
    assert float(b) == 36.0 and _device.COUNTS["d2h"] == 1
    np.testing.assert_array_equal(to_numpy(a), np.arange(6.0))
    assert _device.COUNTS["d2h"] == 2
    with pytest.raises(TypeError, match="implicit conversion"):
        np.asarray(a)
    with pytest.raises(TypeError, match="host"):
        a + np.ones(6)


def _sgd_epoch_transfers(device, n):
    ds = _dataset(n)
    counts = []

    def progress(info):
        if "epoch" in info:
            counts.append(_device.COUNTS["d2h"])

    options = dict(n_directions=12, n_psi=4, max_epochs=3, coarse_epochs=1, global_search=False,
                   refine=False, final_reconstruction=None, seed=0)
    _device.reset()
    result = sgd_reconstruction(device.xp.asarray(ds.particles), ds.psf, progress=progress,
                                backend=device, **options)
    cpu = sgd_reconstruction(ds.particles, ds.psf, **options)
    # the emulated device computes with NumPy: the same run as on the CPU (to rounding:
    # a few matrix products take another summation order)
    np.testing.assert_allclose(result.poses.rotations, cpu.poses.rotations, atol=1e-9)
    return np.diff(counts)


def test_sgd_epochs_read_back_once_whatever_the_particles(device):
    """An epoch reads its energies back once (twice when the band changes), whatever the
    number of particles."""
    small = _sgd_epoch_transfers(device, 4)
    large = _sgd_epoch_transfers(device, 8)
    assert np.array_equal(small, large) and small.max() <= 2, (small, large)


def _refine_iteration_transfers(device, n):
    ds = _dataset(n)
    start = Poses(perturb_rotations(ds.poses.rotations, math.radians(8.0), seed=1),
                  ds.poses.translations)
    counts = []
    _device.reset()
    refine(device.xp.asarray(ds.particles), start, ds.psf, schedule=((5.0, 10.0),),
           exhaustive_iterations=1, continuous_iterations=2, admm_iterations=5,
           initial_admm_iterations=10, final_admm_iterations=5, half_maps=False,
           progress=lambda info: counts.append(_device.COUNTS["d2h"]), backend=device)
    return np.diff([0] + counts)


def test_refinement_transfers_do_not_grow_with_the_particles(device):
    """Pose updates read back per batch of particles (and per backtracking step), never per
    particle: 24 more particles add far fewer transfers per iteration than 24."""
    small = _refine_iteration_transfers(device, 6)
    large = _refine_iteration_transfers(device, 30)
    assert np.all(large - small < 12), (small, large)


@pytest.mark.parametrize("regularizer", ["tv", "hessian"])
def test_admm_iterations_read_back_every_ten_iterations_only(device, regularizer):
    ds = _dataset(6)
    sums = precompute_sums(device.xp.asarray(ds.particles), ds.poses, ds.psf, backend=device)
    counts = []
    for iterations in (10, 30):
        _device.reset()
        reconstruct_admm(sums, regularizer=regularizer, weight=1e-3, iterations=iterations)
        counts.append(_device.COUNTS["d2h"])
    assert counts[1] - counts[0] <= 2, counts  # the residual balancing, every 10
