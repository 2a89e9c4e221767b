"""Tests of spfluo.algorithms.psf: Gaussian and optical PSFs, centring, normalisation, FWHM."""

import math

import numpy as np
import pytest
import scipy.ndimage
import scipy.stats

from spfluo.algorithms.psf import (
    born_wolf_psf,
    center_psf,
    gaussian_psf,
    gibson_lanni_psf,
    normalize_psf,
    psf_fwhm,
)

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

# NA 1.4 oil objective, green emission, 50 nm voxels: the optical test case
OIL = dict(voxel_size=0.05, numerical_aperture=1.4, wavelength=0.52, refractive_index=1.518)


def _com(vol):
    return np.array(scipy.ndimage.center_of_mass(vol.astype(np.float64)))


# ----------------------------------------------------------------------------- Gaussian


@pytest.mark.parametrize("shape", [(31, 25, 27), (32, 24, 26)])
def test_gaussian_psf_unit_sum_float32_centred(shape):
    psf = gaussian_psf(shape, (4.0, 1.5))
    assert psf.dtype == np.float32 and psf.shape == shape
    assert psf.min() >= 0
    assert abs(float(psf.sum(dtype=np.float64)) - 1.0) < 1e-5
    centre = np.array([n // 2 for n in shape])
    assert tuple(np.unravel_index(np.argmax(psf), shape)) == tuple(centre)
    # odd boxes: exactly centred; even boxes: the one extra voxel on the low side shifts the
    # mass by less than the tail mass beyond the box (negligible for 4 sigma < N / 2)
    tol = 1e-4 if shape[0] % 2 else 2e-3
    np.testing.assert_allclose(_com(psf), centre, atol=tol)


def test_gaussian_psf_small_sigma_is_exact_voxel_integral():
    # oracle: the Gaussian mass over [i - 1/2, i + 1/2] from scipy.stats.norm.cdf
    sigma = 0.5
    psf = gaussian_psf((1, 1, 9), (0.0, 0.0, sigma))
    offsets = np.arange(9) - 4
    mass = scipy.stats.norm.cdf(offsets + 0.5, scale=sigma) - scipy.stats.norm.cdf(
        offsets - 0.5, scale=sigma
    )
    np.testing.assert_allclose(psf[0, 0], mass / mass.sum(), rtol=1e-6, atol=1e-9)
    cube = gaussian_psf(9, sigma)
    assert abs(float(cube.sum(dtype=np.float64)) - 1.0) < 1e-6
    np.testing.assert_array_equal(cube, cube[::-1, ::-1, ::-1])
    np.testing.assert_array_equal(cube, cube.transpose(2, 0, 1))


def test_gaussian_psf_zero_sigma_is_dirac_along_that_axis():
    psf = gaussian_psf((9, 9, 9), (0.0, 2.0))
    assert psf[:4].max() == 0 and psf[5:].max() == 0
    assert abs(float(psf[4].sum()) - 1.0) < 1e-6


@pytest.mark.parametrize("sigma", [2.0, 3.0, 5.0])
def test_gaussian_psf_fwhm_matches_sigma(sigma):
    psf = gaussian_psf((41, 41, 41), (sigma, 1.5))
    fwhm = psf_fwhm(psf)
    assert abs(fwhm[0] / (FWHM_PER_SIGMA * sigma) - 1) < 0.02
    # the voxel integration adds 1/12 voxel^2 of variance: tighter check against that
    assert abs(fwhm[0] / (FWHM_PER_SIGMA * math.sqrt(sigma**2 + 1 / 12)) - 1) < 0.002
    assert abs(fwhm[1] / (FWHM_PER_SIGMA * math.sqrt(1.5**2 + 1 / 12)) - 1) < 0.002
    assert fwhm[1] == pytest.approx(fwhm[2])


def test_gaussian_psf_sigma_forms_and_micrometres():
    a = gaussian_psf((21, 21, 21), (4.0, 2.0))
    b = gaussian_psf((21, 21, 21), (4.0, 2.0, 2.0))
    np.testing.assert_array_equal(a, b)
    # 0.4 um / 0.1 um = 4 voxels along z, 0.1 um / 0.05 um = 2 voxels in y and x
    c = gaussian_psf((21, 21, 21), (0.4, 0.1), voxel_size=(0.1, 0.05, 0.05))
    np.testing.assert_allclose(c, b, rtol=1e-6)
    d = gaussian_psf((21, 21, 21), 2.0)
    np.testing.assert_allclose(d, gaussian_psf((21, 21, 21), (2.0, 2.0, 2.0)))


@pytest.mark.parametrize(
    "shape, sigma, kwargs, match",
    [
        ((0, 8, 8), 1.0, {}, "shape"),
        ((8, 8), 1.0, {}, "shape"),
        ((8.5, 8, 8), 1.0, {}, "shape"),
        ((8, 8, 8), -1.0, {}, "sigma"),
        ((8, 8, 8), (1.0, 2.0, 3.0, 4.0), {}, "sigma"),
        ((8, 8, 8), float("nan"), {}, "sigma"),
        ((8, 8, 8), 1.0, {"voxel_size": (0.1, 0.0, 0.1)}, "voxel_size"),
        ((8, 8, 8), 1.0, {"voxel_size": (0.1, 0.1)}, "voxel_size"),
    ],
)
def test_gaussian_psf_rejects_bad_input(shape, sigma, kwargs, match):
    with pytest.raises(ValueError, match=match):
        gaussian_psf(shape, sigma, **kwargs)


# ----------------------------------------------------------------------------- optical


def test_born_wolf_widefield_anisotropy_and_theory():
    psf = born_wolf_psf((49, 33, 33), **OIL)
    assert psf.dtype == np.float32 and psf.shape == (49, 33, 33)
    assert psf.min() >= 0 and abs(float(psf.sum(dtype=np.float64)) - 1) < 1e-5
    assert tuple(np.unravel_index(np.argmax(psf), psf.shape)) == (24, 16, 16)
    # aberration-free: symmetric about the focal plane, and rotation-symmetric in (y, x)
    np.testing.assert_allclose(psf, psf[::-1], atol=1e-6 * psf.max())
    np.testing.assert_allclose(psf, psf.transpose(0, 2, 1), atol=1e-6 * psf.max())
    fz, fy, fx = psf_fwhm(psf, voxel_size=0.05)
    assert fz / fx > 2.0
    # textbook widefield widths: lateral 0.51 lambda / NA,
    # axial 0.88 lambda / (n - sqrt(n^2 - NA^2))
    assert fx == pytest.approx(0.51 * 0.52 / 1.4, rel=0.1)
    assert fz == pytest.approx(0.88 * 0.52 / (1.518 - math.sqrt(1.518**2 - 1.4**2)), rel=0.15)


def test_born_wolf_even_box_centred_at_half():
    psf = born_wolf_psf((32, 24, 24), **OIL)
    assert tuple(np.unravel_index(np.argmax(psf), psf.shape)) == (16, 12, 12)


def test_confocal_is_narrower_and_pinhole_widens():
    wide = psf_fwhm(born_wolf_psf((41, 33, 33), **OIL))
    point = psf_fwhm(
        born_wolf_psf((41, 33, 33), **OIL, model="confocal", excitation_wavelength=0.488)
    )
    open_ = psf_fwhm(
        born_wolf_psf(
            (41, 33, 33), **OIL, model="confocal", excitation_wavelength=0.488, pinhole_diameter=1.0
        )
    )
    assert point[2] < 0.8 * wide[2] and point[0] < 0.8 * wide[0]
    assert point[2] < open_[2] < wide[2]
    conf = born_wolf_psf(
        (41, 33, 33), **OIL, model="confocal", excitation_wavelength=0.488, pinhole_diameter=1.0
    )
    assert conf.dtype == np.float32 and abs(float(conf.sum(dtype=np.float64)) - 1) < 1e-5
    assert tuple(np.unravel_index(np.argmax(conf), conf.shape)) == (20, 16, 16)


def test_gibson_lanni_reduces_to_born_wolf_and_shows_depth_aberration():
    common = dict(voxel_size=0.05, numerical_aperture=1.4, wavelength=0.52)
    bw = born_wolf_psf((41, 25, 25), **common, refractive_index=1.518)
    gl = gibson_lanni_psf(
        (41, 25, 25),
        **common,
        immersion_index=1.518,
        sample_index=1.518,
        coverslip_index=1.518,
        depth=0.0
    )
    np.testing.assert_allclose(gl, bw, atol=1e-6 * bw.max())
    # 5 um deep in a sample of index 1.33 under oil: asymmetric along z, focus shifted
    deep = gibson_lanni_psf((41, 25, 25), **common, sample_index=1.33, depth=5.0)
    assert abs(float(deep.sum(dtype=np.float64)) - 1) < 1e-5
    axial = deep[:, 12, 12]
    assert np.abs(axial - axial[::-1]).max() > 0.1 * axial.max()
    vec = gibson_lanni_psf((41, 25, 25), **common, method="vectorial")
    assert psf_fwhm(vec)[0] / psf_fwhm(vec)[2] > 2.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(numerical_aperture=1.6), "numerical_aperture"),
        (dict(numerical_aperture=0.0), "numerical_aperture"),
        (dict(wavelength=-0.5), "wavelength"),
        (dict(wavelength=520.0), "nanometres"),
        (dict(voxel_size=-0.05), "voxel_size"),
        (dict(voxel_size=(0.1, 0.05, 0.06)), "equal y and x"),
        (dict(model="sted"), "model"),
        (dict(model="confocal"), "excitation_wavelength"),
        (
            dict(model="confocal", excitation_wavelength=0.488, pinhole_diameter=-1.0),
            "pinhole_diameter",
        ),
        (dict(refractive_index=0.9), "refractive_index"),
    ],
)
def test_born_wolf_rejects_bad_parameters(kwargs, match):
    params = dict(OIL)
    params.update(kwargs)
    with pytest.raises(ValueError, match=match):
        born_wolf_psf((9, 9, 9), **params)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(depth=-1.0), "depth"),
        (dict(sample_index=0.5), "sample_index"),
        (dict(coverslip_thickness=0.0), "coverslip_thickness"),
        (dict(immersion_index=1.33), "numerical_aperture"),
        (dict(method="exact"), "method"),
    ],
)
def test_gibson_lanni_rejects_bad_parameters(kwargs, match):
    params = dict(voxel_size=0.05, numerical_aperture=1.4, wavelength=0.52)
    params.update(kwargs)
    with pytest.raises(ValueError, match=match):
        gibson_lanni_psf((9, 9, 9), **params)


# ----------------------------------------------------------------------------- preparation


def test_center_psf_moves_centre_of_mass_to_box_centre():
    shape = (32, 31, 30)
    reference = gaussian_psf(shape, (3.0, 2.0))
    shift = (1.3, -0.7, 0.4)
    moved = scipy.ndimage.shift(reference.astype(np.float64), shift, order=3, mode="constant")
    np.testing.assert_allclose(_com(moved), _com(reference) + shift, atol=0.02)
    centred = center_psf(moved)
    assert centred.dtype == np.float32 and centred.min() >= 0
    np.testing.assert_allclose(_com(centred), [16, 15, 15], atol=2e-3)
    assert float(centred.sum(dtype=np.float64)) == pytest.approx(
        float(np.clip(moved, 0, None).sum()), rel=1e-5
    )
    # and it is the reference Gaussian again (up to the cubic interpolation of the shift)
    assert np.abs(centred - reference).max() < 0.01 * reference.max()


def test_normalize_psf_clips_negatives_and_sums_to_one():
    rng = np.random.default_rng(0)
    psf = gaussian_psf(17, 2.0).astype(np.float64) * 7.0 + rng.normal(scale=1e-4, size=(17, 17, 17))
    out = normalize_psf(psf)
    assert out.dtype == np.float32 and out.min() >= 0
    assert abs(float(out.sum(dtype=np.float64)) - 1) < 1e-6
    expected = np.clip(psf, 0, None) / np.clip(psf, 0, None).sum()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("func", [normalize_psf, center_psf, psf_fwhm])
@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((0, 4, 4)), "empty"),
        (np.full((5, 5, 5), np.nan), "NaN"),
        (np.zeros((5, 5, 5)), "no positive value"),
        (-np.ones((5, 5, 5)), "no positive value"),
        (np.ones((5, 5)), "3D"),
    ],
)
def test_psf_preparation_rejects_bad_arrays(func, bad, match):
    with pytest.raises(ValueError, match=match):
        func(bad)


def test_psf_fwhm_in_micrometres_and_too_small_box():
    psf = gaussian_psf((41, 41, 41), (6.0, 2.0))
    vox = psf_fwhm(psf)
    np.testing.assert_allclose(psf_fwhm(psf, voxel_size=(0.1, 0.05, 0.05)), vox * [0.1, 0.05, 0.05])
    wide = gaussian_psf((9, 41, 41), (20.0, 2.0))
    with pytest.raises(ValueError, match="larger box"):
        psf_fwhm(wide)
