"""Gold-standard resolution: optical cutoff, phase randomisation, verdicts, noise
substitution against the ground truth (spfluo.algorithms.resolution,
spfluo.algorithms.reconstruct.gold)."""

import math

import numpy as np
import pytest

from spfluo.algorithms import reconstruct as rc
from spfluo.algorithms.metrics import FSCCurve, fsc
from spfluo.algorithms.psf import gaussian_psf
from spfluo.algorithms.reconstruct.mask import spherical_mask
from spfluo.algorithms.resolution import (
    BEYOND_CUTOFF,
    MEASURED,
    NOT_REACHED,
    low_pass_reference,
    masked_fsc,
    optical_cutoff,
    randomize_phases,
    read_resolution,
)
from spfluo.algorithms.simulate import simulate_particles
from spfluo.tests.algorithms._objects import blobs


# ------------------------------------------------------------------ optical cutoff


def test_optical_cutoff_of_a_gaussian_psf_is_the_analytic_one():
    # OTF exp(-2 pi^2 sigma^2 k^2) = 1e-3 at k = sqrt(ln(1000) / (2 pi^2 sigma^2))
    h = gaussian_psf((31, 31, 31), (5.0, 1.5))
    expected = math.sqrt(math.log(1e3) / (2 * math.pi ** 2 * 1.5 ** 2))
    assert optical_cutoff(h) == pytest.approx(expected, abs=0.01)
    # a PSF finer than the voxels passes beyond Nyquist
    assert optical_cutoff(gaussian_psf((15, 15, 15), (1.0, 0.5))) == 0.5


def test_optical_cutoff_is_not_fooled_by_a_psf_truncated_by_its_box():
    # constant along z over the whole box (a widefield PSF's out-of-focus light, cut by
    # the box): its OTF rings along kz far above 1e-3; the lateral cutoff is the answer
    lateral = gaussian_psf((1, 31, 31), (1.0, 2.0))[0]
    h = np.broadcast_to(lateral, (31, 31, 31)).astype(np.float32)
    expected = math.sqrt(math.log(1e3) / (2 * math.pi ** 2 * 2.0 ** 2))
    assert optical_cutoff(h) == pytest.approx(expected, abs=0.01)


# ------------------------------------------------------------------ verdicts


def _curve(values):
    f = np.arange(len(values)) / (2 * (len(values) - 1))
    return FSCCurve(f, np.asarray(values, dtype=float), np.zeros(len(values), int))


def test_read_resolution_measures_or_says_why_not():
    f = np.arange(17) / 32
    falling = FSCCurve(f, np.clip(1 - f / 0.4, -1, 1), np.zeros(17, int))  # 0.143 at 0.3428
    res = read_resolution(falling, voxel_size_um=0.05)
    assert res.status == MEASURED
    assert res.frequency_per_voxel == pytest.approx(0.4 * (1 - 0.143), abs=1e-9)
    assert res.um == pytest.approx(0.05 / res.frequency_per_voxel)
    assert "µm (FSC 0.143" in res.text()
    flat = FSCCurve(f, np.ones(17), np.zeros(17, int))
    res = read_resolution(flat, voxel_size_um=0.064)
    assert res.status == NOT_REACHED and res.um is None
    assert res.text() == "not reached below Nyquist (0.128 µm): sample finer"
    # the optics pass nothing beyond 0.3: a curve above 0.143 up to Nyquist is no data
    res = read_resolution(flat, voxel_size_um=0.064, cutoff_per_voxel=0.3)
    assert res.status == BEYOND_CUTOFF and res.um is None and math.isnan(res.frequency_per_voxel)
    assert "optical cutoff of the PSF (0.213 µm)" in res.text()
    # a crossing more than a shell beyond the cutoff is refused; within a shell, it is
    # the cutoff that is claimed
    assert read_resolution(falling, cutoff_per_voxel=0.25).status == BEYOND_CUTOFF
    near = read_resolution(falling, cutoff_per_voxel=0.33)
    assert near.measured and near.frequency_per_voxel == pytest.approx(0.33)
    assert near.as_dict()["cutoff_um"] is None  # no voxel size, no lengths


# ------------------------------------------------------------------ phase randomisation


def test_randomize_phases_keeps_moduli_and_low_frequencies():
    v = np.random.default_rng(0).standard_normal((2, 16, 16, 16)).astype(np.float32)
    r = randomize_phases(v, 0.25, seed=1)
    assert r.dtype == np.float32 and r.shape == v.shape
    np.testing.assert_allclose(np.abs(np.fft.rfftn(r, axes=(1, 2, 3))),
                               np.abs(np.fft.rfftn(v, axes=(1, 2, 3))), rtol=1e-3, atol=1e-3)
    low = low_pass_reference(v, 0.2, edge_per_voxel=0.0)
    np.testing.assert_allclose(low_pass_reference(r, 0.2, edge_per_voxel=0.0), low, atol=1e-4)
    curve = fsc(r[0], v[0])
    assert np.all(curve.values[curve.frequencies < 0.24] > 0.999)
    assert np.abs(curve.values[curve.frequencies > 0.3]).max() < 0.3


def test_phase_randomised_fsc_drops_where_the_masked_noise_fsc_does_not():
    """A shared smooth signal cut by a tight mask, plus independent noise in each half map:
    the masked FSC stays high where the unmasked one (the truth: the halves share nothing
    there) has fallen; the phase-randomisation correction brings it back down."""
    rng = np.random.default_rng(3)
    n = 32
    c = np.arange(n) - n // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    signal = np.exp(-(z ** 2 + y ** 2 + x ** 2) / (2 * 4.0 ** 2))  # cut by the mask
    signal = 5 * signal / signal.std()
    halves = [(signal + rng.standard_normal((n, n, n))).astype(np.float32) for _ in range(2)]
    mask = spherical_mask((n, n, n), 5.0, edge=2.0)
    out = masked_fsc(halves[0], halves[1], mask, seed=0)
    high = out.masked.frequencies > 0.3
    # truth: beyond 0.3 the signal is far below the noise, the unmasked halves do not agree
    assert np.all(out.unmasked.values[high] < 0.143)
    assert np.all(out.masked.values[high] > 0.3)  # the mask's correlation
    # corrected: back to chance (a shell of ~1500 Fourier voxels: noise ~0.05 / (1 - FSC_n))
    assert np.abs(out.corrected.values[high]).mean() < 0.1
    assert np.all(np.abs(out.corrected.values[high]) < 0.2)
    assert out.randomize_from_per_voxel < 0.3
    below = out.masked.frequencies <= out.randomize_from_per_voxel
    np.testing.assert_array_equal(out.corrected.values[below], out.masked.values[below])


def test_low_pass_reference_keeps_nothing_beyond_its_frequency():
    v = np.random.default_rng(1).standard_normal((24, 24, 24)).astype(np.float32)
    low = low_pass_reference(v, 0.2)
    spec = np.abs(np.fft.fftshift(np.fft.fftn(low)))
    k = np.sqrt(sum(g ** 2 for g in np.meshgrid(*(np.fft.fftshift(np.fft.fftfreq(24)),) * 3,
                                                 indexing="ij")))
    assert spec[k > 0.2 + 1e-6].max() < 1e-4 * spec.max()
    np.testing.assert_allclose(fsc(low, v).values[1:4], 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="frequency_per_voxel must be in"):
        low_pass_reference(v, 0.7)


# ------------------------------------------------------------------ against the truth


def test_half_map_resolution_agrees_with_the_ground_truth():
    """Item 4 of issue 16: the masked, noise-substitution-corrected half-map FSC at 0.143
    reads within 20 % of the FSC of the full map against the truth at 0.5 (the truth is
    sampled finely enough: its resolution is below Nyquist and the cutoff)."""
    truth = blobs(24)
    psf = gaussian_psf((21, 21, 21), (3.5, 1.2))
    ds = simulate_particles(truth, psf, fine_volume=blobs(24, 2), n_particles=20,
                            noise_std=0.2, n_spots=0, seed=4)
    out = rc.reconstruct(ds.particles, ds.poses, ds.psf, voxel_size_um=0.05, seed=0,
                         iterations=60)
    gt = read_resolution(fsc(out.volume[0], truth), threshold=0.5,
                         cutoff_per_voxel=out.cutoff_per_voxel)
    half = out.resolution[0]
    assert gt.measured and gt.frequency_per_voxel < 0.5
    assert half.measured, half.text()
    assert half.frequency_per_voxel == pytest.approx(gt.frequency_per_voxel, rel=0.2)
    detail = out.fsc_details[0]
    # the uncorrected masked FSC of the regularised half maps overstates it
    assert read_resolution(detail.masked).status != MEASURED or (
        read_resolution(detail.masked).frequency_per_voxel > half.frequency_per_voxel)
    assert detail.randomize_from_per_voxel < half.frequency_per_voxel


def test_resolution_and_masks_reject_bad_input():
    with pytest.raises(ValueError, match="positive sum"):
        optical_cutoff(np.zeros((5, 5, 5)))
    with pytest.raises(ValueError, match="threshold must be in"):
        read_resolution(_curve([1, 0.5, 0.1]), threshold=1.5)
    with pytest.raises(ValueError, match="one shape"):
        masked_fsc(np.ones((8, 8, 8)), np.ones((8, 8, 8)), np.ones((6, 6, 6)))
    with pytest.raises(ValueError, match="radius must be a positive"):
        spherical_mask((8, 8, 8), -1.0)
