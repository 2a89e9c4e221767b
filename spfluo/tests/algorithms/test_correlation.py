"""Tests for spfluo.algorithms.correlation (ground truth shifts made with scipy.ndimage.shift)."""

import numpy as np
import pytest
import scipy.ndimage as ndi

from spfluo.algorithms.correlation import (
    ShiftResult,
    phase_correlation,
    phase_correlation_ft,
)
from spfluo.algorithms.fourier import shift_volume

N = 24


def smooth_volume(seed=0, n=N, n_blobs=8, spread=4.0):
    """Asymmetric sum of Gaussian blobs (sigma 1.5-3 voxels), well inside the box."""
    rng = np.random.default_rng(seed)
    grid = np.indices((n, n, n)).astype(float) - n // 2
    out = np.zeros((n, n, n))
    for _ in range(n_blobs):
        p = rng.uniform(-spread, spread, 3)
        s = rng.uniform(1.5, 3.0)
        out += rng.uniform(0.5, 1.0) * np.exp(
            -((grid - p[:, None, None, None]) ** 2).sum(0) / (2 * s * s)
        )
    return (out / out.max()).astype(np.float32)


def shifted(volume, shifts):
    """Ground truth: cubic-spline shifts (independent of the Fourier code under test)."""
    return np.stack(
        [ndi.shift(volume, t, order=3, mode="grid-constant") for t in shifts]
    ).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    v = smooth_volume(2)
    shifts = rng.uniform(-3.5, 3.5, (12, 3))
    return v, shifts, shifted(v, shifts)


def test_recovers_subvoxel_shifts_noiseless(data):
    v, shifts, targets = data
    result = phase_correlation(v, targets)
    assert isinstance(result, ShiftResult)
    assert result.shifts.shape == (12, 3) and result.shifts.dtype == np.float32
    assert result.scores.shape == (12,) and result.scores.dtype == np.float32
    err = np.linalg.norm(result.shifts - shifts, axis=1)
    assert err.max() < 0.1  # measured 0.015
    assert result.scores.min() > 0.999


def test_recovers_subvoxel_shifts_with_noise(data):
    v, shifts, targets = data
    rng = np.random.default_rng(3)
    noisy = targets + 0.1 * rng.standard_normal(targets.shape).astype(np.float32)
    for kwargs in ({}, {"normalization": None}):
        result = phase_correlation(v, noisy, **kwargs)
        err = np.linalg.norm(result.shifts - shifts, axis=1)
        assert err.max() < 0.3  # measured 0.18 (phase), 0.10 (plain)
        assert 0.3 < result.scores.min() < 0.95


def test_parabolic_only_mode(data):
    v, shifts, targets = data
    result = phase_correlation(v, targets, upsample_factor=1)
    err = np.linalg.norm(result.shifts - shifts, axis=1)
    assert err.max() < 0.2  # measured 0.066


def test_integer_shifts_are_exact_with_roll():
    v = smooth_volume(4)
    for t in [(3, -5, 7), (-11, 0, 2), (0, 0, 0)]:
        result = phase_correlation(v, np.roll(v, t, axis=(0, 1, 2)))
        np.testing.assert_allclose(result.shifts, t, atol=1e-3)
        assert result.scores == pytest.approx(1.0, abs=1e-5)


def test_many_references_against_one_target_and_one_by_one():
    # the pose-search case: candidate references (here shifted copies) against one particle
    rng = np.random.default_rng(5)
    v = smooth_volume(6)
    ref_shifts = rng.uniform(-2, 2, (5, 3))
    references = shifted(v, ref_shifts)
    target = shifted(v, [[1.2, -0.7, 0.4]])[0]
    batched = phase_correlation(references, target)
    assert batched.shifts.shape == (5, 3)
    for i in range(5):
        one = phase_correlation(references[i], target)
        assert one.shifts.shape == (3,) and one.scores.shape == ()
        np.testing.assert_allclose(batched.shifts[i], one.shifts, atol=1e-5)
        np.testing.assert_allclose(batched.scores[i], one.scores, atol=1e-6)
    # target = T_t(reference): t = target shift - reference shift
    np.testing.assert_allclose(
        batched.shifts, np.array([1.2, -0.7, 0.4]) - ref_shifts, atol=0.05
    )


def test_batched_leading_axes_broadcast():
    rng = np.random.default_rng(7)
    v = smooth_volume(8)
    shifts = rng.uniform(-2, 2, (2, 3, 3))
    targets = shifted(v, shifts.reshape(-1, 3)).reshape(2, 3, N, N, N)
    result = phase_correlation(v, targets)
    assert result.shifts.shape == (2, 3, 3) and result.scores.shape == (2, 3)
    np.testing.assert_allclose(result.shifts, shifts, atol=0.05)


def test_spectra_variant_equals_real_variant(data):
    v, _, targets = data
    direct = phase_correlation(v, targets[:4])
    via_ft = phase_correlation_ft(
        np.fft.rfftn(v).astype(np.complex64),
        np.fft.rfftn(targets[:4], axes=(1, 2, 3)).astype(np.complex64),
        shape=v.shape,
    )
    np.testing.assert_allclose(via_ft.shifts, direct.shifts, atol=1e-4)
    np.testing.assert_allclose(via_ft.scores, direct.scores, atol=1e-5)


def test_score_is_the_normalised_cross_correlation():
    rng = np.random.default_rng(9)
    v = smooth_volume(10)
    target = shifted(v, [[0.6, -1.3, 2.1]])[0] + 0.05 * rng.standard_normal(v.shape).astype(
        np.float32
    )
    result = phase_correlation(v, target)
    moved = shift_volume(v, result.shifts)  # periodic shift, like the score
    expected = np.corrcoef(moved.ravel(), target.ravel())[0, 1]
    assert result.scores == pytest.approx(expected, abs=1e-4)
    # another (blobby, so similar-looking) volume scores lower, white noise near 0
    other = phase_correlation(smooth_volume(11), target)
    assert other.scores < result.scores  # measured 0.84 against 0.91
    noise = phase_correlation(rng.standard_normal(v.shape).astype(np.float32), target)
    assert abs(noise.scores) < 0.1


def test_max_shift_is_honoured():
    # the target holds two copies: a strong one far away and a weak one close by
    v = smooth_volume(12, n_blobs=3, spread=2.5)
    near, far = np.array([1.3, -0.8, 0.5]), np.array([0.0, 6.0, -5.0])
    target = 0.6 * shifted(v, [near])[0] + shifted(v, [far])[0]
    free = phase_correlation(v, target)
    np.testing.assert_allclose(free.shifts, far, atol=0.3)
    limited = phase_correlation(v, target, max_shift=3.0)
    assert np.linalg.norm(limited.shifts) <= 3.0 + 1e-6
    np.testing.assert_allclose(limited.shifts, near, atol=0.3)
    # a single copy beyond the limit: the result stays inside the ball
    beyond = phase_correlation(v, shifted(v, [[0, 5.5, 0]])[0], max_shift=2.0)
    assert np.linalg.norm(beyond.shifts) <= 2.0 + 1e-6
    zero = phase_correlation(v, target, max_shift=0)
    np.testing.assert_allclose(zero.shifts, 0, atol=1e-6)


def test_errors_name_the_parameter():
    v = smooth_volume(13, n=8)
    with pytest.raises(ValueError, match="reference must have shape"):
        phase_correlation(v[0], v)
    with pytest.raises(ValueError, match="share their last three axes"):
        phase_correlation(v, v[:, :, :7])
    bad = v.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="target contains NaN"):
        phase_correlation(v, bad)
    with pytest.raises(ValueError, match="upsample_factor must be"):
        phase_correlation(v, v, upsample_factor=0)
    with pytest.raises(ValueError, match="max_shift must be"):
        phase_correlation(v, v, max_shift=-1)
    with pytest.raises(ValueError, match="normalization must be"):
        phase_correlation(v, v, normalization="whiten")
    with pytest.raises(ValueError, match="regularization must be"):
        phase_correlation(v, v, regularization=np.nan)
    with pytest.raises(ValueError, match="must be real volumes"):
        phase_correlation(v.astype(np.complex64), v)
    spec = np.fft.rfftn(v).astype(np.complex64)
    with pytest.raises(ValueError, match="target_ft must end with the rfftn shape"):
        phase_correlation_ft(spec, spec[..., :4], shape=v.shape)
    with pytest.raises(ValueError, match="reference_ft must be a complex"):
        phase_correlation_ft(v, spec, shape=v.shape)
    with pytest.raises(ValueError, match="do not broadcast"):
        phase_correlation_ft(np.stack([spec] * 2), np.stack([spec] * 3), shape=v.shape)
