"""Tests for spfluo.algorithms.forward (dot-product test, scipy oracle, round trips)."""

import numpy as np
import pytest
import scipy.ndimage as ndi
from scipy.spatial.transform import Rotation

from spfluo.algorithms import transform as T
from spfluo.algorithms.forward import ForwardModel
from spfluo.algorithms.fourier import otf_from_psf

P = np.eye(3)[::-1]


def random_rotations(n, seed):
    return P @ Rotation.random(n, random_state=seed).as_matrix() @ P


def gaussian_psf(shape=(9, 7, 7), sigma=(2.0, 1.0, 1.0)):
    grid = np.indices(shape) - np.array([s // 2 for s in shape])[:, None, None, None]
    psf = np.exp(-sum(grid[a] ** 2 / (2 * sigma[a] ** 2) for a in range(3)))
    return (psf / psf.sum()).astype(np.float32)


def smooth_volume(shape, seed=0):
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float) - np.array([s // 2 for s in shape])[:, None, None, None]
    out = np.zeros(shape)
    for _ in range(5):
        p = rng.uniform(-3, 3, 3)
        s = rng.uniform(1.5, 2.5)
        out += np.exp(-((grid - p[:, None, None, None]) ** 2).sum(0) / (2 * s * s))
    return out.astype(np.float32)


@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_dot_product_adjoint_is_exact(batch_size):
    rng = np.random.default_rng(0)
    shape = (12, 14, 16)
    n = 7
    model = ForwardModel(
        shape, random_rotations(n, seed=1), rng.uniform(-3, 3, (n, 3)),
        psf=gaussian_psf(), batch_size=batch_size,
    )
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.standard_normal((n,) + shape).astype(np.float32)
    ax = model.apply(x)
    aty = model.adjoint(y)
    assert ax.dtype == np.float32 and ax.shape == (n,) + shape
    assert aty.dtype == np.float32 and aty.shape == shape
    lhs = np.vdot(ax.astype(np.float64), y)
    rhs = np.vdot(x.astype(np.float64), aty)
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)  # float32 precision (measured ~1e-7)


def test_batch_size_and_cache_do_not_change_results():
    rng = np.random.default_rng(2)
    shape = (10, 10, 10)
    rots, t = random_rotations(5, seed=3), rng.uniform(-2, 2, (5, 3))
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.standard_normal((5,) + shape).astype(np.float32)
    a = ForwardModel(shape, rots, t, psf=gaussian_psf(), batch_size=5)
    b = ForwardModel(shape, rots, t, psf=gaussian_psf(), batch_size=2, cache_bytes=0)
    np.testing.assert_allclose(a.apply(x), b.apply(x), atol=1e-5)
    np.testing.assert_allclose(a.adjoint(y), b.adjoint(y), atol=1e-4)
    np.testing.assert_allclose(b.apply(x), b.apply(x))  # recomputed tables are identical
    np.testing.assert_allclose(a.normal(x), a.adjoint(a.apply(x)), atol=1e-4)


def test_apply_matches_scipy_composition():
    # rotation: affine_transform (trilinear, zero outside); translation: scipy's
    # fourier_shift; blur: periodic convolution with the centred PSF
    rng = np.random.default_rng(4)
    shape = (15, 13, 11)  # odd sizes: no Nyquist ambiguity in the sub-voxel shift
    f = smooth_volume(shape, seed=5)
    rots, t = random_rotations(3, seed=6), rng.uniform(-2, 2, (3, 3))
    psf = gaussian_psf((7, 5, 5))
    out = ForwardModel(shape, rots, t, psf=psf).apply(f)
    c = np.array([s // 2 for s in shape], dtype=float)
    for i in range(3):
        r = ndi.affine_transform(
            f.astype(np.float64), rots[i].T, offset=c - rots[i].T @ c, order=1,
            mode="grid-constant",
        )
        r = np.fft.ifftn(ndi.fourier_shift(np.fft.fftn(r), t[i])).real
        r = ndi.convolve(r, psf.astype(np.float64), mode="wrap")
        np.testing.assert_allclose(out[i], r, atol=1e-5 * np.abs(r).max() + 1e-6)


def test_identity_pose_without_blur_is_identity_and_otf_input():
    shape = (8, 9, 10)
    f = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    model = ForwardModel(shape, np.eye(3))
    assert model.n_poses == 1 and len(model) == 1 and model.otf is None
    np.testing.assert_allclose(model.apply(f)[0], f, atol=1e-6)
    np.testing.assert_allclose(model.adjoint(f[None]), f, atol=1e-6)
    psf = gaussian_psf()
    by_psf = ForwardModel(shape, np.eye(3), psf=psf).apply(f)
    by_otf = ForwardModel(shape, np.eye(3), otf=otf_from_psf(psf, shape)).apply(f)
    np.testing.assert_array_equal(by_psf, by_otf)


def test_simulate_then_undo_with_true_pose():
    shape = (24, 24, 24)
    f = smooth_volume(shape, seed=8)
    rots = random_rotations(3, seed=9)
    t = np.random.default_rng(10).uniform(-2, 2, (3, 3))
    particles = ForwardModel(shape, rots, t).apply(f)  # no blur
    inv_t = -np.einsum("nji,nj->ni", rots, t)
    grid = np.indices(shape) - 12
    inner = (grid**2).sum(0) <= 7**2
    for i in range(3):
        back = T.rotate(particles[i], rots[i].T, translations=inv_t[i], order=3)
        err = np.linalg.norm((back - f)[inner]) / np.linalg.norm(f[inner])
        assert err < 0.05  # trilinear forward (smooths), cubic back: measured 0.021-0.028


def test_from_poses_matches_arrays():
    from spfluo.algorithms.geometry import Poses

    rng = np.random.default_rng(13)
    rots, t = random_rotations(3, seed=14), rng.uniform(-1, 1, (3, 3))
    f = smooth_volume((8, 8, 8), seed=15)
    a = ForwardModel.from_poses((8, 8, 8), Poses(rots, t), psf=gaussian_psf((3, 3, 3)))
    b = ForwardModel((8, 8, 8), rots, t, psf=gaussian_psf((3, 3, 3)))
    np.testing.assert_array_equal(a.apply(f), b.apply(f))


def test_properties_are_copies_and_repr():
    rots = random_rotations(2, seed=11)
    model = ForwardModel((6, 6, 6), rots, [[1, 2, 3], [0, 0, 0]], psf=gaussian_psf((3, 3, 3)))
    r = model.rotations
    r[:] = 0
    np.testing.assert_allclose(model.rotations, rots)
    assert model.translations.shape == (2, 3)
    assert model.otf.shape == (6, 6, 4) and model.otf.dtype == np.complex64
    assert "n_poses=2" in repr(model)


def test_forward_model_errors():
    shape = (6, 6, 6)
    rots = random_rotations(2, seed=12)
    with pytest.raises(ValueError, match="either psf or otf"):
        ForwardModel(shape, rots, psf=gaussian_psf(), otf=np.ones((6, 6, 4), np.complex64))
    with pytest.raises(ValueError, match="otf must be the rfftn half spectrum"):
        ForwardModel(shape, rots, otf=np.ones((6, 6, 6), np.complex64))
    with pytest.raises(ValueError, match="batch_size must be"):
        ForwardModel(shape, rots, batch_size=0)
    with pytest.raises(ValueError, match="cache_bytes must be"):
        ForwardModel(shape, rots, cache_bytes=-1)
    with pytest.raises(ValueError, match="proper rotation"):
        ForwardModel(shape, rots * 1.1)
    with pytest.raises(ValueError, match=r"rotations must have shape"):
        ForwardModel(shape, np.eye(3)[None, :2])
    with pytest.raises(ValueError, match="translations must have shape"):
        ForwardModel(shape, rots, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="shape must be three positive integers"):
        ForwardModel((6, 6), rots)
    model = ForwardModel(shape, rots)
    with pytest.raises(ValueError, match="volume must have shape"):
        model.apply(np.zeros((6, 6, 7), np.float32))
    with pytest.raises(ValueError, match="volume contains NaN"):
        model.apply(np.full(shape, np.nan, np.float32))
    with pytest.raises(ValueError, match="particles must have shape"):
        model.adjoint(np.zeros((3,) + shape, np.float32))
    with pytest.raises(ValueError, match="particles must have shape"):
        model.adjoint(np.zeros(shape, np.float32))
