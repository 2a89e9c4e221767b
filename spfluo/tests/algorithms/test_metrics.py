"""Tests of spfluo.algorithms.metrics: FSC, conical FSC, SSIM, PSNR, intensity matching."""

import math

import numpy as np
import pytest
import scipy.ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from spfluo.algorithms.metrics import (
    ConicalFSC,
    FSCCurve,
    conical_fsc,
    fsc,
    fsc_resolution,
    normalize_for_comparison,
    psnr,
    resolution_in_micrometres,
    ssim,
)


def _brute_force_fsc(a, b):
    """Full complex FFT, explicit loop over shells: the independent oracle of eq. 27."""
    fa, fb = np.fft.fftn(a), np.fft.fftn(b)
    k = [np.fft.fftfreq(n) for n in a.shape]
    radius = np.sqrt(k[0][:, None, None] ** 2 + k[1][None, :, None] ** 2 + k[2][None, None, :] ** 2)
    n = max(a.shape)
    shells = np.rint(radius * n).astype(int)
    values, counts = [], []
    for s in range(n // 2 + 1):
        m = shells == s
        num = np.real(np.sum(fa[m] * np.conj(fb[m])))
        values.append(num / np.sqrt(np.sum(np.abs(fa[m]) ** 2) * np.sum(np.abs(fb[m]) ** 2)))
        counts.append(m.sum())
    return np.array(values), np.array(counts)


def _gaussian_transfer(shape, sigma):
    k = [np.fft.fftfreq(n) for n in shape]
    k2 = k[0][:, None, None] ** 2 + k[1][None, :, None] ** 2 + k[2][None, None, :] ** 2
    return np.exp(-2 * np.pi**2 * sigma**2 * k2)


# ----------------------------------------------------------------------------- FSC


def test_fsc_of_a_volume_with_itself_is_one():
    vol = np.random.default_rng(0).normal(size=(32, 32, 32)).astype(np.float32)
    curve = fsc(vol, vol)
    assert isinstance(curve, FSCCurve)
    assert curve.frequencies.shape == curve.values.shape == curve.counts.shape == (17,)
    assert curve.frequencies[0] == 0 and curve.frequencies[-1] == 0.5
    np.testing.assert_allclose(curve.values, 1.0, atol=1e-6)
    # scale invariant
    np.testing.assert_allclose(fsc(vol, 3.0 * vol).values, 1.0, atol=1e-6)
    assert fsc_resolution(curve) == 0.5


def test_fsc_of_independent_noise_falls_below_threshold():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(32, 32, 32)).astype(np.float32)
    b = rng.normal(size=(32, 32, 32)).astype(np.float32)
    curve = fsc(a, b)
    assert fsc_resolution(curve) < 0.1
    # beyond the first few (small) shells the correlation is ~ 1 / sqrt(count)
    assert np.all(np.abs(curve.values[4:]) < 4 / np.sqrt(curve.counts[4:]) + 0.01)
    assert np.abs(curve.values[4:]).mean() < 0.05


@pytest.mark.parametrize("shape", [(20, 24, 17), (16, 16, 16), (15, 18, 21)])
def test_fsc_matches_brute_force_full_spectrum(shape):
    rng = np.random.default_rng(2)
    a = rng.normal(size=shape)
    b = a + rng.normal(size=shape)
    curve = fsc(a, b)
    values, counts = _brute_force_fsc(a, b)
    np.testing.assert_allclose(curve.values, values, atol=1e-10)
    np.testing.assert_array_equal(curve.counts, counts)
    np.testing.assert_allclose(curve.frequencies, np.arange(len(values)) / max(shape))


def test_fsc_of_blurred_noisy_copy_matches_gaussian_transfer():
    # white-noise signal x, y = g * x + noise: for each Fourier voxel E[X Y*] = G E|X|^2,
    # E|Y|^2 = (G^2 + r^2) E|X|^2, so E[FSC(s)] ~ sum G / sqrt(n_s sum (G^2 + r^2)) over the
    # shell, with G(k) = exp(-2 pi^2 sigma^2 k^2) and r the noise/signal std ratio
    n, sigma, r = 32, 1.5, 0.1
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, n, n))
    transfer = _gaussian_transfer(x.shape, sigma)
    y = np.real(np.fft.ifftn(np.fft.fftn(x) * transfer)) + r * rng.normal(size=x.shape)
    curve = fsc(x.astype(np.float32), y.astype(np.float32))
    k = [np.fft.fftfreq(m) for m in x.shape]
    shells = np.rint(
        np.sqrt(k[0][:, None, None] ** 2 + k[1][None, :, None] ** 2 + k[2][None, None, :] ** 2) * n
    )
    expected = np.array(
        [
            transfer[shells == s].sum()
            / np.sqrt((shells == s).sum() * (transfer[shells == s] ** 2 + r**2).sum())
            for s in range(n // 2 + 1)
        ]
    )
    # sampling error of a correlation over count/2 independent complex pairs
    tolerance = 4 * (1 - expected**2) / np.sqrt(curve.counts / 2) + 0.01
    assert np.all(np.abs(curve.values - expected)[1:] < tolerance[1:])
    # the continuous transfer at the shell centres crosses 0.143 at f_t
    t = 0.143
    g_t = t * r / math.sqrt(1 - t * t)
    f_t = math.sqrt(-math.log(g_t) / (2 * np.pi**2 * sigma**2))
    assert fsc_resolution(curve) == pytest.approx(f_t, abs=0.015)


def test_fsc_resolution_interpolates_between_shells():
    freqs = np.arange(11) / 20.0  # 0 .. 0.5
    values = np.array([1.0, 0.95, 0.9, 0.8, 0.6, 0.4, 0.2, 0.1, 0.05, 0.02, 0.01])
    curve = FSCCurve(freqs, values, np.ones(11, dtype=np.int64))
    # 0.143 between shell 6 (0.2, f=0.30) and shell 7 (0.1, f=0.35): 0.30 + 0.57 * 0.05
    assert fsc_resolution(curve) == pytest.approx(0.30 + (0.2 - 0.143) / 0.1 * 0.05)
    assert fsc_resolution(curve, threshold=0.5) == pytest.approx(0.20 + 0.5 * 0.05)
    never = FSCCurve(freqs, np.full(11, 0.9), np.ones(11, dtype=np.int64))
    assert fsc_resolution(never) == 0.5
    # a dip below then back up: the first crossing counts
    dip = values.copy()
    dip[2] = 0.1
    assert fsc_resolution(FSCCurve(freqs, dip, np.ones(11))) == pytest.approx(
        0.05 + (0.95 - 0.143) / 0.85 * 0.05
    )


def test_resolution_in_micrometres():
    assert resolution_in_micrometres(0.25, 0.1) == pytest.approx(0.4)
    assert resolution_in_micrometres(0.25, (0.1, 0.1, 0.1)) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="isotropic"):
        resolution_in_micrometres(0.25, (0.3, 0.1, 0.1))
    with pytest.raises(ValueError, match="frequency"):
        resolution_in_micrometres(0.0, 0.1)
    with pytest.raises(ValueError, match="voxel_size"):
        resolution_in_micrometres(0.2, -0.1)


# ----------------------------------------------------------------------------- conical FSC


def test_conical_fsc_sees_axial_blur():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(32, 32, 32)).astype(np.float32)
    # blur along z only (sigma_z = 3 voxels), a little noise
    y = scipy.ndimage.gaussian_filter(x, (3.0, 0.0, 0.0), mode="wrap")
    y = (y / y.std() + 0.05 * rng.normal(size=x.shape)).astype(np.float32)
    result = conical_fsc(x, y, n_directions=(12, 5))
    assert isinstance(result, ConicalFSC)
    assert result.resolution.shape == (12, 5)
    assert result.values.shape == result.counts.shape == (12, 5, 17)
    np.testing.assert_allclose(np.linalg.norm(result.directions, axis=-1), 1.0)
    np.testing.assert_allclose(result.directions[0, 0], [1, 0, 0], atol=1e-12)  # phi2 = 0: z
    np.testing.assert_allclose(
        result.directions[0, -1], [0, 0, 1], atol=1e-12
    )  # phi1 = 0, phi2 = 90: x
    z_res = result.resolution[:, 0]
    xy_res = result.resolution[:, -1]
    assert z_res.max() < 0.3 and xy_res.min() > 0.45
    # analytic crossing along z: exp(-2 pi^2 9 k^2) / sqrt(. + r^2) = 0.143 within the cone
    assert 0.12 < z_res.mean() < 0.25
    # the isotropic FSC mixes the directions and does not see the loss
    assert fsc_resolution(fsc(x, y)) > 0.45


def test_conical_fsc_of_isotropic_pair_is_flat():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(24, 24, 24))
    y = np.real(np.fft.ifftn(np.fft.fftn(x) * _gaussian_transfer(x.shape, 1.5))) + 0.1 * rng.normal(
        size=x.shape
    )
    result = conical_fsc(x, y, n_directions=(8, 4), cone_half_angle=math.radians(30))
    iso = fsc_resolution(fsc(x, y))
    # every cone sees the same transfer: the map is flat up to the sampling noise of cones
    assert abs(result.resolution.mean() - iso) < 0.02
    np.testing.assert_allclose(result.resolution, iso, atol=0.08)


# ----------------------------------------------------------------------------- SSIM, PSNR


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ssim_matches_skimage(dtype):
    rng = np.random.default_rng(6)
    ref = scipy.ndimage.gaussian_filter(rng.random((24, 26, 22)), 1.0)
    vol = ref + 0.05 * rng.normal(size=ref.shape)
    ref, vol = ref.astype(dtype), vol.astype(dtype)
    for data_range in (None, 1.0):
        expected = structural_similarity(
            vol.astype(np.float64),
            ref.astype(np.float64),
            data_range=float(np.ptp(ref)) if data_range is None else data_range,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert ssim(vol, ref, data_range=data_range) == pytest.approx(expected, abs=1e-4)
    assert ssim(ref, ref) == pytest.approx(1.0, abs=1e-6)


def test_ssim_global_is_seed_000_eq_9():
    rng = np.random.default_rng(7)
    ref = rng.random((15, 15, 15))
    vol = 0.7 * ref + 0.2 * rng.random(ref.shape)
    # skimage with a uniform window covering the whole volume (the only unpadded voxel)
    expected = structural_similarity(
        vol, ref, data_range=float(np.ptp(ref)), win_size=15, use_sample_covariance=False
    )
    assert ssim(vol, ref, window="global") == pytest.approx(expected, abs=1e-10)


def test_psnr_matches_skimage():
    rng = np.random.default_rng(8)
    ref = rng.random((16, 16, 16))
    vol = ref + 0.1 * rng.normal(size=ref.shape)
    assert psnr(vol, ref, data_range=1.0) == pytest.approx(
        peak_signal_noise_ratio(ref, vol, data_range=1.0), abs=1e-4
    )
    expected = peak_signal_noise_ratio(ref, vol, data_range=float(np.ptp(ref)))
    assert psnr(vol.astype(np.float32), ref.astype(np.float32)) == pytest.approx(expected, abs=1e-4)
    assert psnr(ref, ref) == math.inf


def test_normalize_for_comparison_recovers_affine_intensity():
    rng = np.random.default_rng(9)
    ref = rng.random((16, 16, 16)).astype(np.float32)
    out = normalize_for_comparison(3.0 * ref + 2.0, ref)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-5)
    # noisy: the fit is the least-squares one (oracle: numpy.polyfit)
    noisy = 5.0 * ref - 1.0 + 0.3 * rng.normal(size=ref.shape)
    a, b = np.polyfit(noisy.ravel().astype(np.float64), ref.ravel().astype(np.float64), 1)
    np.testing.assert_allclose(normalize_for_comparison(noisy, ref), a * noisy + b, atol=1e-5)
    assert psnr(normalize_for_comparison(noisy, ref), ref) > psnr(noisy, ref)
    # an inverted-contrast volume is not flipped back: it becomes the mean of the reference
    np.testing.assert_allclose(normalize_for_comparison(-ref, ref), ref.mean(), atol=1e-6)
    np.testing.assert_allclose(
        normalize_for_comparison(np.ones_like(ref), ref), ref.mean(), atol=1e-6
    )


# ----------------------------------------------------------------------------- errors

_OK = np.random.default_rng(10).random((16, 16, 16))
_NAN = _OK.copy()
_NAN[3, 4, 5] = np.nan


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: fsc(_OK, _OK[:15]), "same shape"),
        (lambda: fsc(_OK, _NAN), "NaN"),
        (lambda: fsc(np.zeros((0, 4, 4)), np.zeros((0, 4, 4))), "empty"),
        (lambda: fsc(_OK[0], _OK[0]), "3D"),
        (lambda: fsc(_OK, np.zeros_like(_OK)), "all zeros"),
        (lambda: fsc(_OK, _OK + 1j), "real-valued"),
        (lambda: fsc_resolution(fsc(_OK, _OK), threshold=1.5), "threshold"),
        (lambda: fsc_resolution(np.ones(5)), "FSCCurve"),
        (lambda: conical_fsc(_OK, _OK[:, :15]), "same shape"),
        (lambda: conical_fsc(_OK, _OK, n_directions=(0, 3)), "n_directions"),
        (lambda: conical_fsc(_OK, _OK, n_directions=5), "n_directions"),
        (lambda: conical_fsc(_OK, _OK, cone_half_angle=0.0), "cone_half_angle"),
        (lambda: conical_fsc(_OK, _OK, min_count=0), "min_count"),
        (lambda: ssim(_OK, _OK[:, :, :15]), "same shape"),
        (lambda: ssim(_NAN, _OK), "NaN"),
        (lambda: ssim(np.zeros((0, 16, 16)), np.zeros((0, 16, 16))), "empty"),
        (lambda: ssim(_OK[:8, :8, :8], _OK[:8, :8, :8]), "smaller than the SSIM window"),
        (lambda: ssim(_OK, _OK, window="box"), "window"),
        (lambda: ssim(_OK, _OK, sigma=0.0), "sigma"),
        (lambda: ssim(_OK, np.ones_like(_OK)), "data_range"),
        (lambda: ssim(_OK, _OK, data_range=-1.0), "data_range"),
        (lambda: psnr(_OK, _OK[1:]), "same shape"),
        (lambda: psnr(_OK, _NAN), "NaN"),
        (lambda: psnr(_OK, np.zeros_like(_OK)), "data_range"),
        (lambda: normalize_for_comparison(_OK, _OK[:4]), "same shape"),
        (lambda: normalize_for_comparison(_NAN, _OK), "NaN"),
    ],
)
def test_metrics_reject_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------- pose errors
# (appended with the registration module: pose_error_summary, compare_volumes)

from spfluo.algorithms import geometry, phantoms, transform  # noqa: E402
from spfluo.algorithms.metrics import (  # noqa: E402
    PoseErrorSummary,
    VolumeComparison,
    compare_volumes,
    pose_error_summary,
)


def _rotation_about(axis_xyz, angle_deg):
    return geometry.matrix_from_axis_angle(np.asarray(axis_xyz, float), np.radians(angle_deg))


def test_pose_error_summary_known_errors_after_a_global_rotation():
    """R_est = R_true E_l G^T with small known perturbations E_l and an arbitrary frame G."""
    rng = np.random.default_rng(1)
    R_true = geometry.random_rotations(40, seed=rng)
    angles = np.concatenate([np.full(30, 2.0), np.full(8, 7.0), np.full(2, 30.0)])
    axes = rng.normal(size=(40, 3))
    E = np.stack([_rotation_about(a, d) for a, d in zip(axes, angles)])
    G = geometry.random_rotations(1, seed=9)[0]
    R_est = R_true @ E @ G.T
    s = pose_error_summary(R_est, R_true)
    assert isinstance(s, PoseErrorSummary)
    assert s.errors_deg.shape == (40,)
    # the L1 alignment is driven by the 30 particles at 2 degrees: errors close to the truth
    np.testing.assert_allclose(np.sort(s.errors_deg)[-2:], 30.0, atol=2.5)
    assert s.median_deg == pytest.approx(2.0, abs=1.0)
    assert s.fraction_below_5deg == pytest.approx(30 / 40)
    assert s.fraction_below_10deg == pytest.approx(38 / 40)
    assert s.max_deg == pytest.approx(s.errors_deg.max())
    assert s.mean_deg == pytest.approx(s.errors_deg.mean())
    assert s.rms_deg == pytest.approx(np.sqrt(np.mean(s.errors_deg**2)))
    assert np.degrees(geometry.geodesic_distance(s.alignment, G)) < 2.0
    # the same numbers as geometry.pose_errors
    np.testing.assert_allclose(s.errors_deg, np.degrees(geometry.pose_errors(R_est, R_true)))


def test_pose_error_summary_modulo_symmetry():
    R_true = geometry.random_rotations(10, seed=3)
    C = geometry.cyclic_group(9)
    k = np.random.default_rng(0).integers(0, 9, size=10)
    R_est = R_true @ C[k]  # equivalent poses of a C9 object
    assert pose_error_summary(R_est, R_true, symmetry=9).max_deg < 1e-6
    assert pose_error_summary(R_est, R_true, symmetry=1).max_deg > 10.0


def test_compare_volumes_against_a_rotated_shifted_copy():
    """A smooth volume against a rotated + shifted copy of itself: SSIM ~1, FSC to Nyquist.

    Measured (24^3): SSIM 0.99997, PSNR 68 dB, both FSC resolutions 0.5 cycle/voxel
    (the last shell at 0.60), conical FSC >= 0.499 in every direction; without
    registration the SSIM drops below 0.5.
    """
    ref = scipy.ndimage.gaussian_filter(phantoms.asymmetric_phantom(24, supersample=2), 1.0)
    R0 = geometry.random_rotations(1, seed=3)[0]
    moved = 3.0 * transform.rotate(ref, R0, translations=[1.2, -0.6, 0.4], order=3) + 0.5
    c = compare_volumes(moved, ref, voxel_size=0.05)
    assert isinstance(c, VolumeComparison)
    assert c.ssim > 0.99
    assert c.psnr_db > 35.0
    assert c.resolution_per_voxel == 0.5 and c.resolution_05_per_voxel == 0.5
    assert c.resolution_um == pytest.approx(0.1) and c.resolution_05_um == pytest.approx(0.1)
    assert c.conical_fsc.resolution.min() > 0.45
    assert np.degrees(geometry.geodesic_distance(c.registration.rotation, R0.T)) < 2.0
    assert c.compared.shape == ref.shape and c.compared.dtype == np.float32
    # intensity matched: the scale 3 and offset 0.5 are undone
    np.testing.assert_allclose(c.compared, ref, atol=0.05 * ref.max())
    raw = compare_volumes(moved, ref, voxel_size=0.05, register=False)
    assert raw.registration is None
    assert raw.ssim < 0.5 and raw.resolution_05_per_voxel < 0.2


def test_compare_volumes_sees_a_blurred_volume():
    """A blurred copy: FSC resolution drops, the 0.5 threshold lower than the 0.143 one."""
    ref = phantoms.asymmetric_phantom(24, supersample=2)
    blurred = scipy.ndimage.gaussian_filter(ref, 2.0)
    c = compare_volumes(blurred, ref, voxel_size=(0.1, 0.1, 0.1), register=False)
    assert 0 < c.resolution_05_per_voxel < c.resolution_per_voxel < 0.5
    assert c.resolution_um == pytest.approx(0.1 / c.resolution_per_voxel)
    assert c.ssim < 0.95


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: compare_volumes(_OK, _OK[:15], voxel_size=1.0), "same shape"),
        (lambda: compare_volumes(_OK, np.ones_like(_OK), voxel_size=1.0), "constant"),
        (lambda: compare_volumes(_OK, _OK, voxel_size=(1.0, 0.5, 0.5)), "isotropic"),
        (lambda: compare_volumes(_OK, _OK, voxel_size=-1.0), "voxel_size"),
        (lambda: compare_volumes(_OK, _OK, voxel_size=1.0, register="yes"), "register"),
        (lambda: pose_error_summary(np.eye(3)[None], np.eye(3)[None].repeat(2, 0)), "same N"),
    ],
)
def test_comparison_rejects_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
