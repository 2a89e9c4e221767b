"""The CuPy paths against the NumPy paths (skipped, saying why, where no CUDA GPU is usable).

Each case runs one algorithm on the CPU and on the GPU from the same inputs and checks that
the results agree: to float32 rounding for the linear operations, and in quality against the
ground truth for the iterative methods (whose float32 sums may be ordered differently).
"""

import numpy as np
import pytest

from spfluo.algorithms.backend import get_backend, gpu_available, to_numpy

pytestmark = pytest.mark.skipif(not gpu_available(),
                                reason="no usable CUDA GPU (install spfluo[gpu] on a GPU host)")


@pytest.fixture(scope="module")
def dataset():
    from spfluo.algorithms.simulate import simulate_dataset

    return simulate_dataset(phantom="asymmetric", size=24, n_particles=12, sigma_xy=1.0,
                            sigma_z=3.0, seed=0)


def _ssim(volume, ds):
    from spfluo.algorithms.metrics import compare_volumes

    vol = to_numpy(volume)
    return compare_volumes(vol.reshape(ds.volume.shape)[0], ds.volume[0],
                           voxel_size=ds.voxel_size).ssim


def test_rotations_agree():
    from spfluo.algorithms.geometry import random_rotations
    from spfluo.algorithms.transform import rotate, rotate_about_z

    rng = np.random.default_rng(0)
    volume = rng.random((20, 20, 20)).astype(np.float32)
    rots = random_rotations(4, seed=1)
    shifts = rng.normal(size=(4, 3))
    cpu = rotate(volume, rots, translations=shifts, order=1, backend="cpu")
    gpu = to_numpy(rotate(volume, rots, translations=shifts, order=1, backend="gpu"))
    np.testing.assert_allclose(gpu, cpu, atol=1e-5)
    cpu = rotate_about_z(volume, 0.7, backend="cpu")
    gpu = to_numpy(rotate_about_z(volume, 0.7, backend="gpu"))
    np.testing.assert_allclose(gpu, cpu, atol=1e-4)


@pytest.mark.parametrize("method", ["tikhonov", "hessian"])
def test_known_pose_reconstruction_agrees(dataset, method):
    from spfluo.algorithms.reconstruct import reconstruct

    kw = dict(method=method, weight=1e-3, iterations=30, half_maps=False)
    cpu = reconstruct(dataset.particles, dataset.poses, dataset.psf, backend=get_backend("cpu"),
                      **kw).volume
    gpu = to_numpy(reconstruct(dataset.particles, dataset.poses, dataset.psf,
                               backend=get_backend("gpu"), **kw).volume)
    assert gpu.dtype == np.float32
    np.testing.assert_allclose(gpu, cpu, atol=1e-3 * float(np.abs(cpu).max()))


def test_sgd_ab_initio_reaches_the_same_quality(dataset):
    from spfluo.algorithms.abinitio import sgd_reconstruction

    kw = dict(max_epochs=12, min_epochs=4, coarse_epochs=4, n_directions=32, n_psi=8, seed=0)
    cpu = sgd_reconstruction(dataset.particles, dataset.psf, backend=get_backend("cpu"), **kw)
    gpu = sgd_reconstruction(dataset.particles, dataset.psf, backend=get_backend("gpu"), **kw)
    ssim_cpu, ssim_gpu = _ssim(cpu.volume, dataset), _ssim(gpu.volume, dataset)
    assert ssim_gpu > ssim_cpu - 0.05, (ssim_gpu, ssim_cpu)


def test_refinement_reaches_the_same_quality(dataset):
    from spfluo.algorithms.geometry import Poses, perturb_rotations
    from spfluo.algorithms.refine import SearchStage, refine

    start = Poses(perturb_rotations(dataset.poses.rotations, np.deg2rad(8.0), seed=3),
                  dataset.poses.translations)
    kw = dict(schedule=(SearchStage(5.0, 10.0), SearchStage(2.0, 4.0)), exhaustive_iterations=2,
              continuous_iterations=1)
    cpu = refine(dataset.particles, start, dataset.psf, backend=get_backend("cpu"), **kw)
    gpu = refine(dataset.particles, start, dataset.psf, backend=get_backend("gpu"), **kw)
    assert _ssim(gpu.volume, dataset) > _ssim(cpu.volume, dataset) - 0.03
