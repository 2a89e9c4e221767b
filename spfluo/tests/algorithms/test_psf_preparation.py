"""Tests of spfluo.algorithms.psf_preparation against analytic Gaussians on both grids."""

import math

import numpy as np
import pytest

from spfluo.algorithms.psf_preparation import average_beads, prepare_psf, psf_background
from spfluo.tests._psf import analytic_gaussian

SIGMA_UM = (0.25, 0.08, 0.08)  # (z, y, x): a widefield-like anisotropic PSF
FIELD_VS = (0.15, 0.05, 0.05)


def _gaussian(shape, voxel_size, centre_um=(0.0, 0.0, 0.0), sigma_um=SIGMA_UM):
    return analytic_gaussian(shape, voxel_size, sigma_um, centre_um)


def _unit(arr):
    return arr / arr.sum()


def _com(vol):
    idx = np.indices(vol.shape)
    return np.array([(idx[k] * vol).sum() / vol.sum() for k in range(3)])


def _bead(rng, centre_um, *, peak=1000.0, background=100.0, noise=3.0, shape=(21, 31, 31)):
    return (peak * _gaussian(shape, FIELD_VS, centre_um) + background
            + rng.normal(0.0, noise, shape))


def test_field_sampled_bead_becomes_the_particle_psf():
    # a bead measured at the field's sampling (z 3x coarser), off centre, on a background
    # with noise, in a box larger than the particles' (31 x 0.05 > 24 x 0.05 laterally)
    rng = np.random.default_rng(0)
    centre = (0.07, -0.031, 0.043)
    prepared = prepare_psf(_bead(rng, centre), FIELD_VS, target_voxel_size=0.05, shape=24)
    out = prepared.psf
    assert out.shape == (1, 24, 24, 24) and out.dtype == np.float32
    assert out.min() >= 0 and abs(float(out.sum(dtype=np.float64)) - 1) < 1e-5
    expected = _unit(_gaussian((24, 24, 24), (0.05,) * 3))
    assert np.abs(out[0] - expected).max() < 0.03 * expected.max()
    np.testing.assert_allclose(_com(out[0]), [12, 12, 12], atol=0.1)  # a tenth of a voxel
    # the offsets found are the bead's, in field voxels (the noise threshold costs a little)
    np.testing.assert_allclose(prepared.offsets[0], np.divide(centre, FIELD_VS), atol=0.06)
    assert prepared.background[0] == pytest.approx(100.0, abs=0.5)
    assert prepared.voxel_size == (0.05, 0.05, 0.05)
    assert prepared.input_shape == (1, 21, 31, 31) and prepared.changed_sampling
    text = prepared.describe()
    assert "21x31x31 voxels of (0.15, 0.05, 0.05) µm" in text
    assert "-> 24x24x24 voxels of (0.05, 0.05, 0.05) µm" in text


def test_energy_kept_is_the_gaussian_mass_inside_the_box():
    # noise-free model PSF, cut by a 12-voxel box (voxels -6..5): the kept fraction is a product of erfs
    psf = _gaussian((41, 41, 41), (0.05,) * 3)
    prepared = prepare_psf(psf, 0.05, shape=12, subtract_background=False, centre=False)
    lo, hi = -6.5 * 0.05, 5.5 * 0.05
    expected = math.prod(
        0.5 * (math.erf(hi / (s * math.sqrt(2))) - math.erf(lo / (s * math.sqrt(2))))
        for s in SIGMA_UM)
    assert prepared.energy_kept[0] == pytest.approx(expected, abs=0.01)
    assert "the box holds" in prepared.describe()


def test_finer_psf_is_sampled_like_the_particles():
    psf = _gaussian((61, 61, 61), (0.02,) * 3)
    prepared = prepare_psf(psf, 0.02, target_voxel_size=0.064, shape=15,
                           subtract_background=False, centre=False)
    expected = _unit(_gaussian((15, 15, 15), (0.064,) * 3))
    assert np.abs(prepared.psf[0] - expected).max() < 0.01 * expected.max()


def test_same_grid_without_centring_is_the_normalised_input():
    psf = _gaussian((15, 17, 17), (0.05,) * 3, centre_um=(0.01, 0.02, -0.01))
    prepared = prepare_psf(psf, 0.05, subtract_background=False, centre=False)
    np.testing.assert_allclose(prepared.psf[0], _unit(psf), atol=1e-6 * psf.max())
    assert not prepared.changed_sampling and not np.any(prepared.offsets)


def test_each_channel_is_centred():
    rng = np.random.default_rng(1)
    centres = np.array([(0.1, 0.02, -0.04), (-0.05, -0.06, 0.03)])
    beads = np.stack([_bead(rng, c) for c in centres])
    prepared = prepare_psf(beads, FIELD_VS, target_voxel_size=0.05, shape=20)
    np.testing.assert_allclose(prepared.offsets, centres / np.array(FIELD_VS), atol=0.06)
    expected = _unit(_gaussian((20, 20, 20), (0.05,) * 3))
    for c in range(2):
        assert np.abs(prepared.psf[c] - expected).max() < 0.03 * expected.max()
        assert abs(float(prepared.psf[c].sum(dtype=np.float64)) - 1) < 1e-5


def test_background_and_noise_from_the_faces():
    rng = np.random.default_rng(2)
    level, sigma = psf_background(_bead(rng, (0, 0, 0), background=250.0, noise=5.0))
    assert level == pytest.approx(250.0, abs=0.5)
    assert sigma == pytest.approx(5.0, rel=0.1)


def test_average_of_beads_recovers_the_psf_and_their_offsets():
    rng = np.random.default_rng(3)
    centres = rng.uniform(-0.1, 0.1, (4, 3))
    beads = [_bead(rng, c, peak=rng.uniform(500, 2000)) for c in centres]
    avg = average_beads(beads, FIELD_VS)
    assert avg.psf.shape == (1, 21, 31, 31)
    expected = _unit(_gaussian((21, 31, 31), FIELD_VS))
    assert np.abs(avg.psf[0] - expected).max() < 0.02 * expected.max()
    np.testing.assert_allclose(avg.offsets[:, 0], centres / np.array(FIELD_VS), atol=0.1)
    assert np.all(avg.correlations > 0.99)
    np.testing.assert_allclose(avg.background, 100.0, atol=0.5)


def test_a_doublet_stands_out_among_the_beads():
    rng = np.random.default_rng(4)
    beads = [_bead(rng, (0, 0, 0)) for _ in range(3)]
    beads.append(_bead(rng, (0, 0, 0)) + 1000 * _gaussian((21, 31, 31), FIELD_VS,
                                                          (0.0, 0.3, 0.3)))
    avg = average_beads(beads, FIELD_VS)
    assert avg.correlations[3, 0] < avg.correlations[:3, 0].min() - 0.05


@pytest.mark.parametrize("bad, match", [
    (np.ones((5, 5)), "shape"),
    (np.ones((4, 2, 5, 5)), "at least 3 voxels"),
    (np.full((5, 5, 5), np.nan), "NaN"),
    (np.zeros((7, 7, 7)), "no positive value above the background"),
    (np.full((7, 7, 7), 3.0), "no positive value above the background"),
])
def test_prepare_psf_refuses_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        prepare_psf(bad, 0.1)


def test_average_beads_refuses_mixed_channels():
    with pytest.raises(ValueError, match="channel counts"):
        average_beads([np.ones((1, 5, 5, 5)), np.ones((2, 5, 5, 5))], 0.1)
    with pytest.raises(ValueError, match="at least one bead"):
        average_beads([], 0.1)
