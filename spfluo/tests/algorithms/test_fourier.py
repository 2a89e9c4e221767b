"""Tests for spfluo.algorithms.fourier (oracles: numpy.fft, scipy.ndimage, scipy.signal)."""

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.signal as ss

from spfluo.algorithms import fourier as F


def _smooth(shape, seed=0, n_blobs=5, sigma=(1.5, 2.5)):
    """Sum of Gaussian blobs well inside the box (smooth, ~band-limited)."""
    rng = np.random.default_rng(seed)
    centre = np.array([s // 2 for s in shape])[:, None, None, None]
    grid = np.indices(shape).astype(np.float64) - centre
    out = np.zeros(shape)
    for _ in range(n_blobs):
        p = rng.uniform(-3, 3, 3)
        s = rng.uniform(*sigma)
        out += np.exp(-((grid - p[:, None, None, None]) ** 2).sum(0) / (2 * s * s))
    return out.astype(np.float32)


# -- frequency grids ----------------------------------------------------------


@pytest.mark.parametrize("rfft", [False, True])
def test_frequency_grid_matches_fftfreq(rfft):
    shape = (6, 7, 8)
    kz, ky, kx = F.frequency_grid(shape, rfft=rfft)
    assert kz.shape == (6, 1, 1) and ky.shape == (1, 7, 1)
    assert kx.shape == (1, 1, 5 if rfft else 8)
    assert kz.dtype == np.float32
    np.testing.assert_array_equal(kz.ravel(), np.fft.fftfreq(6).astype(np.float32))
    np.testing.assert_array_equal(ky.ravel(), np.fft.fftfreq(7).astype(np.float32))
    expected_x = np.fft.rfftfreq(8) if rfft else np.fft.fftfreq(8)
    np.testing.assert_array_equal(kx.ravel(), expected_x.astype(np.float32))
    # the grid matches the spectrum layout of numpy's FFTs
    spectrum = (np.fft.rfftn if rfft else np.fft.fftn)(np.zeros(shape))
    assert np.broadcast_shapes(kz.shape, ky.shape, kx.shape) == spectrum.shape


def test_radial_frequency_and_shell_index_brute_force():
    shape = (8, 8, 8)
    k = F.radial_frequency(shape, rfft=True)
    assert k.dtype == np.float32 and k.shape == (8, 8, 5)
    shells = F.shell_index(shape, rfft=True)
    assert shells.dtype == np.int32
    for iz in range(8):
        for iy in range(8):
            for ix in range(5):
                fz, fy = np.fft.fftfreq(8)[iz], np.fft.fftfreq(8)[iy]
                fx = np.fft.rfftfreq(8)[ix]
                r = np.sqrt(fz**2 + fy**2 + fx**2)
                assert abs(k[iz, iy, ix] - r) < 1e-6
                assert shells[iz, iy, ix] == round(r * 8)
    # shell 0 is only the zero frequency; shell 1 holds the 6 face and the 12
    # edge neighbours (|i| = 1 and sqrt(2)); the corners (sqrt(3)) are in shell 2
    full = F.shell_index(shape)
    assert (full == 0).sum() == 1
    assert (full == 1).sum() == 18


def test_shell_index_non_cubic_uses_the_largest_axis():
    shells = F.shell_index((4, 8, 16))
    k = np.sqrt(
        np.fft.fftfreq(4)[:, None, None] ** 2 + np.fft.fftfreq(8)[None, :, None] ** 2
        + np.fft.fftfreq(16)[None, None, :] ** 2
    )
    np.testing.assert_array_equal(shells, np.rint(k * 16).astype(np.int32))


# -- shifts -------------------------------------------------------------------


def test_fourier_shift_matches_scipy_on_odd_shapes_batched():
    rng = np.random.default_rng(1)
    shape = (9, 11, 13)  # odd sizes: no Nyquist bin, rfft and full FFT agree exactly
    vols = rng.standard_normal((3,) + shape).astype(np.float32)
    shifts = rng.uniform(-4, 4, (3, 3))
    out = F.shift_volume(vols, shifts)
    assert out.dtype == np.float32 and out.shape == (3,) + shape
    for v, t, o in zip(vols, shifts, out):
        ref = np.fft.ifftn(ndi.fourier_shift(np.fft.fftn(v.astype(np.float64)), t)).real
        np.testing.assert_allclose(o, ref, atol=2e-5)


def test_fourier_shift_full_spectrum_matches_scipy_even_shape():
    rng = np.random.default_rng(2)
    shape = (8, 10, 12)
    v = rng.standard_normal(shape)
    spec = np.fft.fftn(v).astype(np.complex64)
    t = np.array([1.3, -2.6, 0.45])
    out = F.fourier_shift(spec, t, shape=shape, rfft=False)
    assert out.dtype == np.complex64
    ref = ndi.fourier_shift(np.fft.fftn(v), t)
    np.testing.assert_allclose(out, ref, atol=2e-4 * np.abs(ref).max())


def test_shift_volume_integer_is_roll_even_shape():
    rng = np.random.default_rng(3)
    v = rng.standard_normal((16, 12, 10)).astype(np.float32)
    for t in [(2, -3, 5), (-8, 6, 0), (0, 0, 1)]:
        out = F.shift_volume(v, t)
        np.testing.assert_allclose(out, np.roll(v, t, axis=(0, 1, 2)), atol=2e-6)


def test_fourier_shift_many_shifts_of_one_volume_broadcast():
    rng = np.random.default_rng(4)
    shape = (8, 8, 8)
    v = rng.standard_normal(shape).astype(np.float32)
    spec = np.fft.rfftn(v).astype(np.complex64)
    shifts = rng.uniform(-2, 2, (5, 3))
    batched = F.fourier_shift(spec, shifts, shape=shape)
    assert batched.shape == (5, 8, 8, 5)
    for i in range(5):
        np.testing.assert_allclose(
            batched[i], F.fourier_shift(spec, shifts[i], shape=shape), atol=1e-5
        )


def test_shift_round_trip_is_identity():
    # even size: the Nyquist bin of a sub-voxel shift is lossy (its amplitude is
    # multiplied by cos(pi t)), so use a volume with no energy there
    v = _smooth((24, 24, 24), n_blobs=3, sigma=(1.5, 2.0))
    t = np.array([0.3, -1.7, 2.2])
    back = F.shift_volume(F.shift_volume(v, t), -t)
    np.testing.assert_allclose(back, v, atol=1e-5)


# -- padding, cropping --------------------------------------------------------


def test_pad_and_crop_keep_the_centre():
    for n, m in [(5, 8), (6, 9), (6, 8), (5, 7), (4, 4)]:
        v = np.zeros((n, n, n), np.float32)
        v[n // 2, n // 2, n // 2] = 1
        p = F.pad_to(v, (m, m, m))
        assert p.shape == (m, m, m) and p.dtype == np.float32
        assert p[m // 2, m // 2, m // 2] == 1 and p.sum() == 1
        np.testing.assert_array_equal(F.crop_to(p, (n, n, n)), v)


def test_pad_crop_trailing_axes_of_a_batch():
    rng = np.random.default_rng(5)
    v = rng.standard_normal((2, 4, 5, 6)).astype(np.float32)
    p = F.pad_to(v, (6, 7, 9))
    assert p.shape == (2, 6, 7, 9)
    # explicit offsets m//2 - n//2 = 1, 1, 1
    np.testing.assert_array_equal(p[:, 1:5, 1:6, 1:7], v)
    assert p.sum() == pytest.approx(v.sum(), rel=1e-5)
    np.testing.assert_array_equal(F.crop_to(p, (4, 5, 6)), v)
    c = F.crop_to(v, (5, 4))  # only the last two axes
    np.testing.assert_array_equal(c, v[:, :, 0:5, 1:5])


def test_pad_crop_errors():
    v = np.zeros((4, 4, 4), np.float32)
    with pytest.raises(ValueError, match="cannot shrink"):
        F.pad_to(v, (3, 4, 4))
    with pytest.raises(ValueError, match="cannot enlarge"):
        F.crop_to(v, (5, 4, 4))
    with pytest.raises(ValueError, match="shape must be"):
        F.pad_to(v, (4, 4, 4, 4, 4))
    with pytest.raises(ValueError, match="shape must be"):
        F.crop_to(v, (0, 4, 4))


# -- Fourier resampling -------------------------------------------------------


@pytest.mark.parametrize(
    "new_shape", [(8, 10, 12), (24, 30, 27), (9, 11, 13), (12, 25, 9), (16, 20, 18)]
)
def test_resize_fourier_matches_scipy_signal_resample(new_shape):
    # scipy.signal.resample is Fourier resampling with the origin at index 0;
    # moving the box centre to index 0 and back gives the centred convention
    rng = np.random.default_rng(6)
    v = rng.standard_normal((2, 16, 20, 18)).astype(np.float32)
    out = F.resize_fourier(v, new_shape)
    assert out.shape == (2,) + new_shape and out.dtype == np.float32
    ref = np.fft.ifftshift(v, axes=(1, 2, 3)).astype(np.float64)
    for axis, m in zip((1, 2, 3), new_shape):
        ref = ss.resample(ref, m, axis=axis)
    ref = np.fft.fftshift(ref, axes=(1, 2, 3))
    np.testing.assert_allclose(out, ref, atol=5e-6)


def test_resize_fourier_band_limited_round_trip_and_sampling():
    # a periodic function band-limited below the Nyquist frequency of 10 samples
    n, m = 20, 10

    def f(z, y, x, size):
        c = size // 2
        u = 2 * np.pi / size
        return (
            1.0 + np.cos(u * 2 * (z - c) + 0.3) * np.sin(u * 3 * (x - c) - 0.5)
            + 0.5 * np.cos(u * 4 * (y - c) + 1.0)
        )

    fine = np.fromfunction(lambda z, y, x: f(z, y, x, n), (n, n, n)).astype(np.float32)
    coarse = np.fromfunction(lambda z, y, x: f(z, y, x, m), (m, m, m)).astype(np.float32)
    down = F.resize_fourier(fine, (m, m, m))
    np.testing.assert_allclose(down, coarse, atol=2e-5)  # exact sampling, centre to centre
    up = F.resize_fourier(down, (n, n, n))
    np.testing.assert_allclose(up, fine, atol=2e-5)
    # mean intensity preserved
    assert down.mean() == pytest.approx(fine.mean(), rel=1e-5)
    const = np.full((7, 9, 10), 3.0, np.float32)
    np.testing.assert_allclose(F.resize_fourier(const, (12, 5, 6)), 3.0, rtol=1e-5)


def test_resize_fourier_nyquist_cosine_is_folded():
    # cos at exactly the new Nyquist frequency samples to (-1)^j on the coarse grid
    n, m = 16, 8
    x = np.arange(n) - n // 2
    fine = np.broadcast_to(np.cos(np.pi * x * m / n), (n, n, n)).astype(np.float32)
    down = F.resize_fourier(fine, (n, n, m))
    j = np.arange(m) - m // 2
    np.testing.assert_allclose(down[0, 0], np.cos(np.pi * j), atol=1e-5)


# -- OTF ----------------------------------------------------------------------


def test_otf_convolution_matches_fftconvolve_same():
    rng = np.random.default_rng(7)
    shape = (16, 14, 12)
    v = np.zeros(shape, np.float32)
    v[4:12, 4:10, 4:8] = rng.random((8, 6, 4))  # margins: circular = linear here
    psf = rng.random((5, 3, 5)).astype(np.float32)  # odd sizes, centre at n//2
    otf = F.otf_from_psf(psf, shape)
    assert otf.dtype == np.complex64 and otf.shape == (16, 14, 7)
    out = np.fft.irfftn(np.fft.rfftn(v) * otf, s=shape)
    ref = ss.fftconvolve(v.astype(np.float64), psf.astype(np.float64), mode="same")
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_otf_of_centred_delta_is_one_even_and_larger_psf():
    psf = np.zeros((20, 9, 8), np.float32)  # larger than the volume along z: cropped
    psf[10, 4, 4] = 1
    otf = F.otf_from_psf(psf, (12, 12, 12))
    np.testing.assert_allclose(otf, 1.0, atol=1e-7)
    full = F.otf_from_psf(psf, (12, 12, 12), rfft=False)
    assert full.shape == (12, 12, 12)
    np.testing.assert_allclose(full, 1.0, atol=1e-7)


def test_otf_gaussian_is_real_and_matches_analytic():
    # a centred symmetric Gaussian PSF has a real, positive OTF ~ Gaussian
    n = 16
    g = np.indices((n, n, n)) - n // 2
    s = 1.5
    psf = np.exp(-(g**2).sum(0) / (2 * s * s)).astype(np.float32)
    psf /= psf.sum()
    otf = F.otf_from_psf(psf, (n, n, n))
    k2 = F.radial_frequency((n, n, n), rfft=True) ** 2
    np.testing.assert_allclose(otf.real, np.exp(-2 * np.pi**2 * s * s * k2), atol=1e-4)
    np.testing.assert_allclose(otf.imag, 0, atol=1e-6)


# -- validation ---------------------------------------------------------------


def test_errors_name_the_parameter():
    v = np.zeros((8, 8, 8), np.float32)
    spec = np.fft.rfftn(v).astype(np.complex64)
    with pytest.raises(ValueError, match="volume must have shape"):
        F.shift_volume(np.zeros((8, 8), np.float32), (1, 1, 1))
    bad = v.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        F.shift_volume(bad, (1, 1, 1))
    with pytest.raises(ValueError, match="NaN"):
        F.resize_fourier(bad, (4, 4, 4))
    with pytest.raises(ValueError, match="shift must have shape"):
        F.shift_volume(v, (1, 1))
    with pytest.raises(ValueError, match="shift contains NaN"):
        F.shift_volume(v, (1, np.nan, 1))
    with pytest.raises(ValueError, match="must be a complex spectrum"):
        F.fourier_shift(v, (1, 1, 1), shape=(8, 8, 8))
    with pytest.raises(ValueError, match="must end with the spectrum shape"):
        F.fourier_shift(spec, (1, 1, 1), shape=(8, 9, 8))
    with pytest.raises(ValueError, match="do not broadcast"):
        F.fourier_shift(np.stack([spec] * 2), np.zeros((3, 3)), shape=(8, 8, 8))
    with pytest.raises(ValueError, match="shape must be three positive integers"):
        F.resize_fourier(v, (4, 4))
    with pytest.raises(ValueError, match="psf must have shape"):
        F.otf_from_psf(np.zeros((2, 8, 8, 8), np.float32), (8, 8, 8))
    with pytest.raises(ValueError, match="psf is empty"):
        F.otf_from_psf(np.zeros((0, 3, 3), np.float32), (8, 8, 8))
    with pytest.raises(ValueError, match="shape must be a tuple"):
        F.frequency_grid((8, -1, 8))
    with pytest.raises(ValueError, match="backend must be"):
        F.frequency_grid((8, 8, 8), backend=3)


def test_fourier_shift_rejects_nan_spectrum():
    spec = np.zeros((4, 4, 3), np.complex64)
    spec[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="volume_ft contains NaN"):
        F.fourier_shift(spec, (1, 1, 1), shape=(4, 4, 4))
