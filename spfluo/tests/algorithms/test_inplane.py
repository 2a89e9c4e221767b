"""The rotation of Cn particles about their symmetry axis: found from the data, measured
against the ground truth, and flagged when the data do not determine it."""

import math

import numpy as np
import pytest

from spfluo.algorithms.abinitio.inplane import align_in_plane, in_plane_margins
from spfluo.algorithms.backend import get_backend
from spfluo.algorithms.geometry import (
    Poses,
    axis_and_in_plane_errors,
    in_plane_resultant,
    random_rotations,
    rotation_about_z,
)
from spfluo.algorithms.metrics import pose_error_summary
from spfluo.algorithms.phantoms import c9_barrel
from spfluo.algorithms.refine.diagnostics import UNDETERMINED_NATS, in_plane_scan
from spfluo.algorithms.refine.search import particle_spectra as refine_spectra
from spfluo.algorithms.scoring import FourierVolume, Scorer, VolumeModel, particle_spectra
from spfluo.algorithms.simulate import simulate_particles

# a vectorial widefield PSF (psfmodels, NA 1.4, 0.6 um) at 0.1 um voxels, Poisson noise
VOXEL = 0.1
OPTICS = dict(numerical_aperture=1.4, wavelength=0.6, method="vectorial")


@pytest.fixture(scope="module")
def psf():
    from spfluo.algorithms.psf import gibson_lanni_psf

    return np.asarray(gibson_lanni_psf((23, 23, 23), voxel_size=VOXEL, **OPTICS), np.float32)


def _particles(volume, psf, n, seed):
    return simulate_particles(volume, psf, n_particles=n, noise_std=0.02, poisson_photons=50.0,
                              n_spots=0, voxel_size=VOXEL, seed=seed)


def test_axis_and_in_plane_errors_split_a_turn_about_the_axis():
    truth = random_rotations(40, seed=0)
    tilt = rotation_about_z(0.0)  # no axis error
    rng = np.random.default_rng(1)
    psi = rng.uniform(-math.pi / 9, math.pi / 9, 40)
    est = np.matmul(truth, np.matmul(tilt, rotation_about_z(psi)))
    axis, in_plane = axis_and_in_plane_errors(est, truth, symmetry=9)
    np.testing.assert_allclose(axis, 0.0, atol=1e-6)
    # the global alignment absorbs the mean turn: the residuals keep the spread
    spread = np.angle(np.exp(1j * 9 * (in_plane - psi))) / 9
    np.testing.assert_allclose(spread - np.mean(spread), 0.0, atol=1e-6)
    assert in_plane_resultant(psi, 9) < 0.3  # uniform over the period: near chance
    assert in_plane_resultant(np.full(40, 0.1), 9) == pytest.approx(1.0)


def test_in_plane_margins_on_a_periodic_grid():
    nll = np.array([[5.0, 1.0, 1.5, 4.0, 0.0, 6.0, 7.0, 8.0],
                    # one basin about index 4, a shallow dip of noise at 6
                    [5.0, 4.0, 3.0, 1.0, 0.0, 2.0, 1.9, 6.0]])
    best, margin = in_plane_margins(nll, 8)
    assert best.tolist() == [4, 4]
    assert margin[0] == pytest.approx(1.0)  # the minimum at index 1, another basin
    assert margin[1] == pytest.approx(1.9)  # index 6: a local minimum 2 steps away
    best, margin = in_plane_margins(nll, 8, separation=3)
    assert margin[1] == pytest.approx(6.0)  # no other basin 3 steps away: the highest


def test_rotation_about_the_axis_is_found_from_the_data(psf):
    """C9 barrel, realistic PSF and Poisson noise: true axes, random turns about them; the
    alignment recovers every turn (in-plane error against the ground truth)."""
    volume = c9_barrel(32)
    ds = _particles(volume, psf, 16, seed=0)
    data = particle_spectra(ds.particles, ds.psf)
    scorer = Scorer.for_band(data, data.band, 8.0, surface="peak")
    vol = FourierVolume.initial(get_backend("cpu"), np.zeros((1, 32, 32, 32), np.float32),
                                data.band)
    rng = np.random.default_rng(3)
    start = np.matmul(ds.poses.rotations, rotation_about_z(rng.uniform(-math.pi, math.pi, 16)))
    before = pose_error_summary(start, ds.poses.rotations, symmetry=9)
    found = align_in_plane(vol, scorer, start, ds.poses.translations, 9, step_deg=2.0)
    after = pose_error_summary(found.rotations, ds.poses.rotations, symmetry=9)
    # measured: chance before (resultant 0.23, median 11 deg); after, median 1.3 deg,
    # resultant 0.98
    assert before.in_plane_resultant < 0.5
    assert after.in_plane_resultant >= 0.9, after.in_plane_errors_deg
    assert after.in_plane_median_deg <= 3.0
    assert after.axis_median_deg <= 0.5
    assert np.all(found.margins > 0)


def test_polarity_is_found_from_the_data_with_the_angles():
    """C9 barrel (supersampled), vectorial PSF, Poisson noise: true axes, random turns about
    them and half of the particles upside down; the alignment puts the particles the right
    way up (against the ground truth) and recovers the turns."""
    from spfluo.algorithms.abinitio.polarity import flip_rotation
    from spfluo.algorithms.simulate import simulate_dataset

    n = 20
    ds = simulate_dataset(phantom="c9", size=32, n_particles=n, voxel_size=VOXEL,
                          optics=OPTICS, poisson_photons=50.0, noise_std=0.02, n_spots=0,
                          seed=0)
    data = particle_spectra(ds.particles, ds.psf)
    scorer = Scorer.for_band(data, data.band, 8.0, surface="peak")
    vol = FourierVolume.initial(get_backend("cpu"), np.zeros((1, 32, 32, 32), np.float32),
                                data.band)
    rng = np.random.default_rng(3)
    start = np.matmul(ds.poses.rotations, rotation_about_z(rng.uniform(-math.pi, math.pi, n)))
    turned = rng.permutation(n)[:n // 2]
    start[turned] = np.matmul(start[turned], flip_rotation(0.3))
    before = pose_error_summary(start, ds.poses.rotations, symmetry=9)
    found = align_in_plane(vol, scorer, start, ds.poses.translations, 9, step_deg=2.0,
                           polarity=True)
    after = pose_error_summary(found.rotations, ds.poses.rotations, symmetry=9)
    assert np.sum(before.axis_errors_deg > 90) == n // 2
    # measured: 1 particle of 20 upside down, in-plane resultant 0.99, median 0.6 deg; the
    # polarities compared at one pose on the trilinear reference: 10 upside down; with the
    # mean over the n copies on the trilinear reference: 7
    assert np.sum(after.axis_errors_deg > 90) <= 1, after.axis_errors_deg
    assert after.in_plane_resultant >= 0.9
    assert after.median_deg <= 3.0


def _smooth_ring(size: int) -> np.ndarray:
    """A band of radius size/4 about the z axis through the box centre, Gaussian across
    (sigma 1.3 voxels), smooth ends: invariant under any rotation about the axis."""
    z, y, x = np.mgrid[:size, :size, :size] - float(size // 2)
    rho = np.hypot(y, x)
    band = np.exp(-((rho - size / 4) ** 2) / (2 * 1.3**2))
    ends = 0.5 * (np.tanh((0.3 * size - np.abs(z)) / 1.5) + 1.0)
    return (band * ends).astype(np.float32)


def test_refinement_flags_particles_whose_angle_is_not_determined(psf):
    """A ring has no angle about its axis: every particle is flagged; the C9 barrel seen at
    the same blur and noise has one, and it is the true one."""
    results = {}
    for name, volume in (("ring", _smooth_ring(32)), ("barrel", c9_barrel(32))):
        ds = _particles(volume, psf, 8, seed=1)
        spectra = refine_spectra(ds.particles, ds.psf)
        scorer = Scorer(spectra, None, 8.0)
        model = VolumeModel(get_backend("cpu"), ds.volume, spectra, [0])
        margins, offsets = in_plane_scan(model, scorer, ds.poses.rotations,
                                         ds.poses.translations, 9, step_deg=2.0)
        results[name] = margins
        if name == "barrel":  # the true pose is the best angle
            assert np.all(np.abs(offsets) <= 2.0), offsets
    # measured: ring margins 0.004 to 0.43 nats, barrel margins 9.3 to 16 nats
    assert np.all(results["ring"] < UNDETERMINED_NATS), results["ring"]
    assert np.all(results["barrel"] > 2 * UNDETERMINED_NATS), results["barrel"]
    # the Gaussian scorer's energies are not a profile likelihood: refused
    with pytest.raises(ValueError, match="fitted offset"):
        in_plane_scan(model, Scorer(particle_spectra(ds.particles, ds.psf), None, 8.0),
                      ds.poses.rotations, ds.poses.translations, 9)


def test_poses_keep_their_axis_through_the_alignment(psf):
    ds = _particles(c9_barrel(32), psf, 6, seed=2)
    data = particle_spectra(ds.particles, ds.psf)
    scorer = Scorer.for_band(data, data.band, 8.0, surface="peak")
    vol = FourierVolume.initial(get_backend("cpu"), np.zeros((1, 32, 32, 32), np.float32),
                                data.band)
    found = align_in_plane(vol, scorer, ds.poses.rotations, ds.poses.translations, 9,
                           step_deg=2.0)
    moved_axis = np.einsum("nij,nij->n", found.rotations[:, :, 0:1],
                           ds.poses.rotations[:, :, 0:1])
    np.testing.assert_allclose(moved_axis, 1.0, atol=1e-9)  # R e_z unchanged
    assert isinstance(Poses(found.rotations, found.translations), Poses)
    with pytest.raises(ValueError, match="symmetry order >= 2"):
        align_in_plane(vol, scorer, ds.poses.rotations, ds.poses.translations, 1)
