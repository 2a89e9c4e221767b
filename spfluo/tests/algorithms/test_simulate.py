"""Tests of spfluo.algorithms.simulate: particle datasets and fields of view."""

import numpy as np
import pytest
import scipy.signal

from spfluo.algorithms import geometry, phantoms, transform
from spfluo.algorithms.psf import gaussian_psf
from spfluo.algorithms.simulate import (
    FieldOfView,
    ParticleDataset,
    simulate_dataset,
    simulate_field,
    simulate_particles,
)


@pytest.fixture(scope="module")
def phantom24():
    return phantoms.asymmetric_phantom(24, supersample=2)


# ----------------------------------------------------------------------------- particles


def test_dataset_shapes_dtypes_and_scaling():
    ds = simulate_dataset(size=24, n_particles=5, sigma_z=3.0, seed=1)
    assert isinstance(ds, ParticleDataset)
    assert ds.particles.shape == (5, 1, 24, 24, 24) and ds.particles.dtype == np.float32
    assert ds.volume.shape == (1, 24, 24, 24) and ds.volume.dtype == np.float32
    assert 0.0 <= ds.volume.min() and ds.volume.max() <= 1.0
    # PSF cube of odd side 2 ceil(3 sigma_z) + 1 = 19, unit sum
    assert ds.psf.shape == (1, 19, 19, 19) and ds.psf.dtype == np.float32
    np.testing.assert_allclose(ds.psf.sum(axis=(1, 2, 3)), 1.0, rtol=1e-5)
    assert len(ds.poses) == 5 and ds.n_particles == 5 and ds.n_channels == 1
    assert ds.voxel_size == (0.05, 0.05, 0.05) and ds.noise_std == 0.2
    # random shifts within the default max_shift = 2 voxels per axis
    assert np.abs(ds.poses.translations).max() <= 2.0
    # the noiseless signal is scaled to [0, 1] (one factor for the whole set)
    clean = simulate_dataset(size=24, n_particles=5, sigma_z=3.0, seed=1, noise_std=0.0)
    assert clean.particles.min() >= 0.0
    assert clean.particles.max() == pytest.approx(1.0, abs=1e-6)


def test_two_channel_c9_dataset_shares_poses():
    ds = simulate_dataset(phantom="c9", size=24, n_particles=3, n_channels=2, sigma_z=3.0)
    assert ds.particles.shape == (3, 2, 24, 24, 24)
    assert ds.volume.shape == (2, 24, 24, 24) and ds.psf.shape[0] == 2
    # the two channels are different structures (barrel and torus)
    assert np.corrcoef(ds.volume[0].ravel(), ds.volume[1].ravel())[0, 1] < 0.5
    for c in range(2):
        clean = simulate_dataset(
            phantom="c9", size=24, n_particles=3, n_channels=2, sigma_z=3.0, noise_std=0.0
        )
        assert clean.particles[:, c].max() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("phantom", ["shell", "tube"])
def test_other_phantoms(phantom):
    ds = simulate_dataset(phantom=phantom, size=16, n_particles=2, sigma_z=2.0, noise_std=0.0)
    assert ds.particles.shape == (2, 1, 16, 16, 16)
    assert ds.particles.max() == pytest.approx(1.0, abs=1e-6)


def test_seeds_are_reproducible_and_distinct(phantom24):
    h = gaussian_psf(9, (3.0, 1.0))
    a = simulate_particles(phantom24, h, n_particles=3, seed=7)
    b = simulate_particles(phantom24, h, n_particles=3, seed=7)
    c = simulate_particles(phantom24, h, n_particles=3, seed=8)
    np.testing.assert_array_equal(a.particles, b.particles)
    np.testing.assert_array_equal(a.poses.rotations, b.poses.rotations)
    assert not np.allclose(a.particles, c.particles)
    assert not np.allclose(a.poses.rotations, c.poses.rotations)
    # a Generator works as seed too
    g = simulate_particles(phantom24, h, n_particles=3, seed=np.random.default_rng(7))
    np.testing.assert_array_equal(g.particles, a.particles)


def test_true_poses_reproduce_the_noiseless_particles(phantom24):
    """Undo the true pose of noiseless, spot-free particles: the blurred phantom comes back.

    With an isotropic PSF, R^T T_{-t}(h * T_t(R f)) = h * f.  Measured relative L2 error
    (after the global intensity scale) about 2 % (cubic-spline undo, voxel integration on
    the 2x grid); tolerance 4 %.
    """
    h = gaussian_psf(11, 1.5)
    ds = simulate_particles(phantom24, h, n_particles=4, noise_std=0.0, n_spots=0, seed=3)
    reference = scipy.signal.fftconvolve(phantom24, h, mode="same")
    for particle, R, t in zip(ds.particles[:, 0], ds.poses.rotations, ds.poses.translations):
        unshifted = transform.rotate(particle, np.eye(3), translations=-t, order=3)
        back = transform.rotate(unshifted, R.T, order=3)
        scale = (back * reference).sum() / (reference * reference).sum()
        error = np.linalg.norm(back - scale * reference) / np.linalg.norm(scale * reference)
        assert error < 0.04
    # a wrong pose is far off
    wrong = transform.rotate(ds.particles[0, 0], ds.poses.rotations[1].T, order=3)
    scale = (wrong * reference).sum() / (reference * reference).sum()
    assert np.linalg.norm(wrong - scale * reference) / np.linalg.norm(scale * reference) > 0.3


def test_given_poses_override_random_ones(phantom24):
    h = gaussian_psf(9, 1.0)
    R = geometry.random_rotations(2, seed=5)
    t = np.array([[0.5, -1.0, 1.5], [0.0, 0.0, 0.0]])
    ds = simulate_particles(phantom24, h, rotations=R, translations=t, noise_std=0.0)
    assert len(ds.poses) == 2
    np.testing.assert_allclose(ds.poses.rotations, R)
    np.testing.assert_allclose(ds.poses.translations, t)
    # identity pose, no spots: the particle is the blurred phantom (up to scale)
    ident = simulate_particles(
        phantom24, h, rotations=np.eye(3)[None], translations=np.zeros((1, 3)),
        noise_std=0.0, n_spots=0,
    )
    reference = scipy.signal.fftconvolve(phantom24, h, mode="same")
    reference /= reference.max()
    np.testing.assert_allclose(ident.particles[0, 0], reference, atol=0.03)


def test_oversampling_differs_from_trilinear_but_agrees_with_the_object(phantom24):
    """Oversampled simulation is close to, but not the same as, a plain trilinear rotation."""
    h = gaussian_psf(9, 1.0)
    R = geometry.random_rotations(2, seed=2)
    kwargs = dict(rotations=R, translations=np.zeros((2, 3)), noise_std=0.0, n_spots=0)
    fine = simulate_particles(phantom24, h, oversampling=2, **kwargs).particles[:, 0]
    cubic = simulate_particles(phantom24, h, oversampling=1, **kwargs).particles[:, 0]
    trilinear = np.stack([transform.rotate(phantom24, r, order=1) for r in R])
    trilinear = scipy.signal.fftconvolve(trilinear, h[None], mode="same", axes=(1, 2, 3))
    trilinear /= trilinear.max()
    for a in (fine, cubic):
        rel = np.linalg.norm(a - trilinear) / np.linalg.norm(trilinear)
        assert 1e-3 < rel < 0.05


def test_noise_level_matches_noise_std(phantom24):
    h = gaussian_psf(9, (3.0, 1.0))
    clean = simulate_particles(phantom24, h, n_particles=6, noise_std=0.0, seed=4)
    noisy = simulate_particles(phantom24, h, n_particles=6, noise_std=0.2, seed=4)
    measured = float((noisy.particles - clean.particles).std())
    assert measured == pytest.approx(0.2, rel=0.05)
    assert noisy.noise_std == 0.2


def test_poisson_noise_variance_follows_the_signal(phantom24):
    h = gaussian_psf(9, 1.0)
    clean = simulate_particles(phantom24, h, n_particles=4, noise_std=0.0, seed=2)
    noisy = simulate_particles(
        phantom24, h, n_particles=4, noise_std=0.0, poisson_photons=50.0, seed=2
    )
    bright = clean.particles > 0.5
    resid = noisy.particles[bright] - clean.particles[bright]
    # Var[Poisson(n y) / n] = y / n
    expected = float(np.mean(clean.particles[bright])) / 50.0
    assert resid.var() == pytest.approx(expected, rel=0.15)
    dark = clean.particles == 0
    assert np.all(noisy.particles[dark] == 0)


def test_spots_lower_the_mean_intensity(phantom24):
    """DOL spots remove signal before the blur: before the [0, 1] rescaling the mean drops."""
    h = gaussian_psf(9, 1.0)
    kwargs = dict(rotations=np.eye(3)[None].repeat(4, 0), translations=np.zeros((4, 3)),
                  noise_std=0.0, oversampling=1)
    full = simulate_particles(phantom24, h, n_spots=0, **kwargs).particles
    spotted = simulate_particles(phantom24, h, n_spots=120, seed=1, **kwargs).particles
    # same poses, so the spot-free particles are identical; the spotted ones differ
    assert spotted.shape == full.shape
    # compare on a common scale: the ratio of the means to the means of the maxima
    ratio_full = full.mean() / full.max()
    ratio_spotted = spotted.mean() / spotted.max()
    assert ratio_spotted < 0.95 * ratio_full
    # every spotted particle is different (independent spots per particle)
    assert not np.allclose(spotted[0], spotted[1])
    # more intense spots remove more
    weak = simulate_particles(phantom24, h, n_spots=120, seed=1, spot_intensity=(0.0, 0.2),
                              **kwargs).particles
    assert weak.mean() / weak.max() > ratio_spotted


def test_fine_volume_is_used(phantom24):
    h = gaussian_psf(9, 1.0)
    fine = phantoms.asymmetric_phantom(48, supersample=1)
    kwargs = dict(n_particles=2, noise_std=0.0, n_spots=0, seed=0)
    a = simulate_particles(phantom24, h, fine_volume=fine, **kwargs).particles
    b = simulate_particles(phantom24, h, **kwargs).particles
    rel = np.linalg.norm(a - b) / np.linalg.norm(b)
    assert 0 < rel < 0.1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(volume=np.zeros((4, 4))), "volume must have shape"),
        (dict(volume=np.full((8, 8, 8), 2.0)), r"values in \[0, 1\]"),
        (dict(volume=np.zeros((8, 8, 8))), "all zeros"),
        (dict(volume=np.ones((8, 8, 6)) * 0.5), "cube"),
        (dict(volume=np.full((8, 8, 8), np.nan)), "NaN"),
        (dict(psf=np.ones((2, 3, 3, 3))), "one PSF per channel"),
        (dict(psf=-np.ones((3, 3, 3))), "negative"),
        (dict(noise_std=-1.0), "noise_std"),
        (dict(n_spots=-1), "n_spots"),
        (dict(spot_sigma=(0.05, 0.02)), "spot_sigma"),
        (dict(oversampling=0), "oversampling"),
        (dict(poisson_photons=0.0), "poisson_photons"),
        (dict(rotations=np.eye(3)), r"rotations must have shape \(N, 3, 3\)"),
        (dict(rotations=np.ones((1, 3, 3))), "rotation"),
        (dict(translations=np.zeros((2, 2))), "translations must have shape"),
        (dict(rotations=np.eye(3)[None], n_particles=3), "ambiguous"),
        (dict(fine_volume=np.zeros((10, 10, 10))), "fine_volume must have shape"),
    ],
)
def test_simulate_particles_rejects_bad_input(kwargs, match):
    args = dict(volume=np.full((8, 8, 8), 0.5, dtype=np.float32), psf=np.ones((3, 3, 3)))
    args.update(kwargs)
    volume, psf = args.pop("volume"), args.pop("psf")
    with pytest.raises(ValueError, match=match):
        simulate_particles(volume, psf, **args)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(phantom="cube"), "phantom must be one of"),
        (dict(n_channels=2), "n_channels"),
        (dict(size=4), "size"),
        (dict(sigma_z=-1.0), "sigma_z"),
        (dict(psf=np.ones((3, 3, 3))), "simulate_particles"),
    ],
)
def test_simulate_dataset_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate_dataset(**kwargs)


# ----------------------------------------------------------------------------- fields


@pytest.fixture(scope="module")
def field():
    vol = phantoms.c9_barrel(20, supersample=2)
    h = gaussian_psf((7, 9, 9), (0.8, 1.2))
    return simulate_field(
        vol, h, shape=(24, 128, 128), n_particles=12, n_debris=3, touching_pairs=2,
        voxel_size=(0.1, 0.05, 0.05), seed=3, noise_std=0.0,
    )


def _distances(positions, voxel_size):
    scale = np.asarray(voxel_size) / voxel_size[2]
    d = (positions[:, None] - positions[None]) * scale
    return np.linalg.norm(d, axis=-1)


def test_field_shapes_and_particles_inside(field):
    assert isinstance(field, FieldOfView)
    assert field.image.shape == (1, 24, 128, 128) and field.image.dtype == np.float32
    assert field.positions.shape == (12, 3) and len(field.poses) == 12
    assert field.debris_positions.shape == (3, 3)
    assert field.voxel_size == (0.1, 0.05, 0.05)
    assert field.image.max() == pytest.approx(1.0, abs=1e-6) and field.image.min() >= 0
    # support ball inside the image: radius particle_size / 2 in particle voxels,
    # that is radius / (voxel_size / voxel_size_x) field voxels on each axis
    half = field.particle_size / 2 / (np.asarray(field.voxel_size) / field.voxel_size[2])
    assert np.all(field.positions - half >= -1e-9)
    assert np.all(field.positions + half <= np.array(field.image.shape[1:]) - 1 + 1e-9)
    # each particle is bright at its centre region (the barrel wall lies around it)
    for p in field.positions:
        z, y, x = np.rint(p).astype(int)
        assert field.image[0, z - 2 : z + 3, y - 6 : y + 7, x - 6 : x + 7].max() > 0.2


def test_field_distances_and_touching_pairs(field):
    d = _distances(field.positions, field.voxel_size)
    pairs = {tuple(p) for p in field.touching_pairs.tolist()}
    assert pairs == {(0, 1), (2, 3)}
    n = len(field.positions)
    for i in range(n):
        for j in range(i + 1, n):
            if (i, j) in pairs:
                assert d[i, j] < field.particle_size  # touching: closer than a diameter
            else:
                assert d[i, j] >= field.particle_size - 1e-9  # default min_distance
    # debris away from the particles, and present in the image
    scale = np.asarray(field.voxel_size) / field.voxel_size[2]
    dd = np.linalg.norm((field.debris_positions[:, None] - field.positions[None]) * scale, axis=-1)
    assert dd.min() >= field.particle_size - 1e-9
    for p in field.debris_positions:
        assert field.image[(0, *np.rint(p).astype(int))] > 0.2


def test_field_particle_matches_the_rotated_volume():
    """One particle, no blur: the field shows R f around its centre (cubic spline).

    Isotropic field: the same as transform.rotate(order=3) of the padded volume shifted
    to the continuous position.  Field with z voxels twice as large: each field plane is
    the mean of two particle planes (the documented voxel integration).  Measured
    relative error ~2e-6 (float32); tolerance 1e-4.
    """
    vol = phantoms.asymmetric_phantom(16, supersample=2)
    delta = np.ones((1, 1, 1), dtype=np.float32)
    kw = dict(n_particles=1, n_debris=0, touching_pairs=0, noise_std=0.0, seed=1)
    f = simulate_field(vol, delta, shape=(24, 24, 24), **kw)
    p, R = f.positions[0], f.poses.rotations[0]
    expected = transform.rotate(np.pad(vol, 4), R, translations=p - 12, order=3)
    expected = np.clip(expected, 0, None)
    got = f.image[0] * (expected.max() / f.image[0].max())
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-4

    f = simulate_field(vol, delta, shape=(14, 24, 24), voxel_size=(0.2, 0.1, 0.1), **kw)
    p, R = f.positions[0], f.poses.rotations[0]
    # isotropic box (28, 24, 24), centre (14, 12, 12): plane k at z = k - 14 - t_z, and
    # field plane J averages z = 2 (J - p_z) -+ 0.5, i.e. planes 2J and 2J + 1
    iso = transform.rotate(
        np.pad(vol, ((6, 6), (4, 4), (4, 4))), R,
        translations=[2 * p[0] + 0.5 - 14, p[1] - 12, p[2] - 12], order=3,
    )
    expected = np.clip(0.5 * (iso[0::2] + iso[1::2]), 0, None)
    got = f.image[0] * (expected.max() / f.image[0].max())
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-4


def test_field_seed_and_min_distance():
    vol = phantoms.sphere_shell(12, radius=0.3, thickness=0.1, supersample=2)
    h = gaussian_psf(5, 1.0)
    kw = dict(shape=(16, 96, 96), n_particles=10, n_debris=2, touching_pairs=1)
    a = simulate_field(vol, h, seed=5, min_distance=15.0, **kw)
    b = simulate_field(vol, h, seed=5, min_distance=15.0, **kw)
    np.testing.assert_array_equal(a.image, b.image)
    d = _distances(a.positions, a.voxel_size)
    d[0, 1] = d[1, 0] = np.inf  # the touching pair
    np.fill_diagonal(d, np.inf)
    assert d.min() >= 15.0
    assert a.touching_pairs.tolist() == [[0, 1]]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(shape=(4, 64, 64)), "too small along axis 0"),
        (dict(shape=(32, 32)), "shape must be three"),
        (dict(touching_pairs=6, n_particles=10), "touching_pairs"),
        (dict(n_particles=500), "could not place"),
        (dict(min_distance=0.0), "min_distance"),
    ],
)
def test_simulate_field_rejects_bad_input(kwargs, match):
    vol = phantoms.sphere_shell(12, radius=0.3, thickness=0.1, supersample=1)
    args = dict(shape=(16, 64, 64))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        simulate_field(vol, np.ones((3, 3, 3)), **args)
