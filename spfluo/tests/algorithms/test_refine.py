"""Refinement: spectral energies against oracles, pose search and continuous refinement
against ground truth, the alternated refinement (quality, gold standard, resume), errors."""

import io
import math

import numpy as np
import pytest
import scipy.fft

from spfluo.algorithms import refine as rf
from spfluo.algorithms.fourier import crop_to, otf_from_psf, pad_to
from spfluo.algorithms.geometry import (
    Poses,
    geodesic_distance,
    matrix_from_rotvec,
    perturb_rotations,
    pose_errors,
)
from spfluo.algorithms.metrics import normalize_for_comparison, ssim
from spfluo.algorithms.reconstruct import reconstruct
from spfluo.algorithms.scoring.model import band_spectra
from spfluo.algorithms.simulate import simulate_dataset
from spfluo.algorithms.transform import rotate


def _perturb(poses: Poses, angle_deg: float, seed: int) -> Poses:
    """Every rotation turned by exactly ``angle_deg`` about a random axis."""
    return Poses(perturb_rotations(poses.rotations, math.radians(angle_deg), seed=seed),
                 poses.translations)


def _median_error(poses: Poses, true: Poses, symmetry: int = 1) -> float:
    return float(np.median(np.degrees(pose_errors(poses.rotations, true.rotations,
                                                  symmetry=symmetry))))


def _ssim(volume, truth) -> float:
    return ssim(normalize_for_comparison(volume, truth), truth)


@pytest.fixture(scope="module")
def data():
    """16 particles of an asymmetric phantom, 24^3, PSF sigma 1.5 / 3 voxels, light noise."""
    return simulate_dataset(phantom="asymmetric", size=24, n_particles=16, sigma_xy=1.5,
                            sigma_z=3.0, noise_std=0.05, n_spots=0, seed=2)


@pytest.fixture(scope="module")
def clean():
    """Noise-free particles of the same phantom with a PSF almost as long as the box."""
    return simulate_dataset(phantom="asymmetric", size=24, n_particles=4, sigma_xy=1.5,
                            sigma_z=6.0, noise_std=0.0, n_spots=0, seed=5)


@pytest.fixture(scope="module")
def spectra(data):
    return rf.particle_spectra(data.particles, data.psf)


@pytest.fixture(scope="module")
def refined(data):
    """A full refinement from poses perturbed by 15 degrees (reused by several tests)."""
    start = _perturb(data.poses, 15.0, seed=0)
    states = []
    result = rf.refine(data.particles, start, data.psf, schedule=[(5, 10), (2, 4)],
                       exhaustive_iterations=2, continuous_iterations=1,
                       initial_admm_iterations=40, admm_iterations=10, final_admm_iterations=20,
                       callback=states.append)
    return start, result, states


# ----------------------------------------------------------------------------- energies


@pytest.mark.parametrize("size", [23, 24])
def test_band_spectra_equal_the_cropped_centred_spectrum(size):
    from spfluo.algorithms.backend import get_backend
    from spfluo.algorithms.transform import centred_spectrum

    vols = np.random.default_rng(size).random((2, size, size, size)).astype(np.float32)
    big = 3 * size
    band = band_spectra(get_backend("cpu"), vols, 9, big)
    c = big // 2
    for k in range(2):
        full = centred_spectrum(vols[k], oversampling=3, gridding_correction=True)
        ref = full[c - 9:c + 10, c - 9:c + 10, c - 9:c + 10]
        np.testing.assert_allclose(band[k], ref, atol=2e-6 * np.abs(ref).max())



def _real_space_energy(data, poses, k):
    """min_{a, b} ||y - a B(h * T_t(R f)) - b||^2 / ||y - mean y||^2 in real space: the
    blur is linear (zero-padded FFT), the result cropped to the box."""
    y = data.particles[k, 0].astype(np.float64)
    d = y.shape[0]
    p = 2 * d
    g = rotate(data.volume[0], poses.rotations[k], translations=poses.translations[k], order=3)
    otf = otf_from_psf(data.psf[0] / data.psf[0].sum(), (p, p, p))
    big = np.fft.ifftshift(pad_to(g, (p, p, p)))
    m = crop_to(np.fft.fftshift(scipy.fft.irfftn(scipy.fft.rfftn(big) * otf, s=(p, p, p))),
                (d, d, d)).astype(np.float64)
    yc, mc = y - y.mean(), m - m.mean()
    a = (yc * mc).sum() / (mc * mc).sum()
    return ((yc - a * mc) ** 2).sum() / (yc**2).sum()


def test_boxed_model_fits_linear_blur_and_circular_model_does_not(clean):
    # the simulation blurs linearly and crops: with the padded (boxed) model the energy at
    # the true poses is the real-space least-squares energy of an exact linear model
    # (~0, up to the OTF support and interpolation), the circular model misfits
    boxed = rf.pose_energies(clean.volume, rf.particle_spectra(clean.particles, clean.psf),
                             clean.poses).energies
    circular = rf.pose_energies(
        clean.volume, rf.particle_spectra(clean.particles, clean.psf, pad=1.0),
        clean.poses).energies
    oracle = np.array([_real_space_energy(clean, clean.poses, k) for k in range(4)])
    assert np.all(oracle < 1e-3)
    assert np.all(boxed < 0.01)
    assert np.all(circular > 3 * boxed)
    # away from the truth both agree with the real-space energy ordering
    off = _perturb(clean.poses, 8.0, seed=1)
    boxed_off = rf.pose_energies(clean.volume, rf.particle_spectra(clean.particles, clean.psf),
                                 off).energies
    oracle_off = np.array([_real_space_energy(clean, off, k) for k in range(4)])
    assert np.all(boxed_off > boxed)
    np.testing.assert_allclose(boxed_off, oracle_off, rtol=0.15, atol=5e-3)


def _exact_energies(volume, sp, poses):
    """The circular-model relative energy with the exact rotated spectrum (a non-uniform
    DFT of the volume, no interpolation): the oracle of the analytic gradient."""
    f = volume[0].astype(np.float64)
    d = f.shape[0]
    x = np.arange(d) - d // 2
    q = sp.frequencies.astype(np.float64)
    k = q / sp.grid
    out = []
    for i in range(len(poses)):
        u = k @ poses.rotations[i]  # rows: R^T k, cycles per voxel (z, y, x)
        ez, ey, ex = (np.exp(-2j * np.pi * np.outer(u[:, a], x)) for a in range(3))
        # f^(u) = sum_zyx f exp(-2 i pi u.x), separable: contract x, then y, then z
        fh = (f.reshape(d * d, d) @ ex.T).reshape(d, d, -1)
        fh = np.einsum("zym,my->zm", fh, ey)
        fh = np.einsum("zm,mz->m", fh, ez)
        m = sp.otf[0] * fh
        phase = np.exp(2j * np.pi * (q @ poses.translations[i]) / sp.grid)
        c = (sp.weights * (sp.values[i, 0] * np.conj(m) * phase)).real.sum()
        n = (sp.weights * np.abs(m) ** 2).sum()
        out.append(1.0 - max(c, 0.0) ** 2 / (n * sp.energy[i, 0]))
    return np.array(out)


def _finite_differences(energy, poses, h=1e-3):
    fd_rot, fd_t = np.zeros((len(poses), 3)), np.zeros((len(poses), 3))
    for j in range(3):
        e = np.zeros(3)
        e[j] = h
        plus = Poses(poses.rotations @ matrix_from_rotvec(e, frame="zyx"), poses.translations)
        minus = Poses(poses.rotations @ matrix_from_rotvec(-e, frame="zyx"), poses.translations)
        fd_rot[:, j] = (energy(plus) - energy(minus)) / (2 * h)
        plus = Poses(poses.rotations, poses.translations + e)
        minus = Poses(poses.rotations, poses.translations - e)
        fd_t[:, j] = (energy(plus) - energy(minus)) / (2 * h)
    return fd_rot, fd_t


def _relative(a, b):
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


def test_gradient_matches_finite_differences_of_the_exact_energy(data):
    # circular model: the oracle rotates the spectrum exactly (non-uniform DFT)
    sp = rf.particle_spectra(data.particles[:4], data.psf, pad=1.0)
    poses = _perturb(data.poses[:4], 5.0, seed=3)
    poses = Poses(poses.rotations, poses.translations + 0.4)
    got = rf.pose_energies(data.volume, sp, poses, gradient=True)
    np.testing.assert_allclose(got.energies, _exact_energies(data.volume, sp, poses),
                               atol=2e-3)  # trilinear, 3x oversampled, gridding-corrected
    fd_rot, _ = _finite_differences(lambda p: _exact_energies(data.volume, sp, p), poses)
    assert np.all(_relative(got.rotation_gradient, fd_rot) < 0.02)
    # the translation derivative is a phase factor: exact against our own energy
    _, fd_t = _finite_differences(lambda p: rf.pose_energies(data.volume, sp, p).energies,
                                  poses)
    assert np.all(_relative(got.translation_gradient, fd_t) < 2e-3)


def test_gradient_of_the_boxed_energy(data):
    # in-box model energy and fitted offset (pad 1.5): translation exact, rotation within
    # the trilinear interpolant's own derivative error
    sp = rf.particle_spectra(data.particles[:4], data.psf, pad=1.5)
    poses = _perturb(data.poses[:4], 5.0, seed=3)
    poses = Poses(poses.rotations, poses.translations + 0.4)
    got = rf.pose_energies(data.volume, sp, poses, gradient=True)
    fd_rot, fd_t = _finite_differences(
        lambda p: rf.pose_energies(data.volume, sp, p).energies, poses)
    assert np.all(_relative(got.translation_gradient, fd_t) < 2e-3)
    assert np.all(_relative(got.rotation_gradient, fd_rot) < 0.1)
    assert np.all((0 <= got.energies) & (got.energies <= 1))


# ----------------------------------------------------------------------------- pose updates


def test_global_search_finds_poses_from_nothing(data, spectra):
    update = rf.search_poses(data.volume, spectra, Poses.identity(16), step_deg=20)
    errors = np.degrees(geodesic_distance(update.poses.rotations, data.poses.rotations))
    assert np.median(errors) < 15.0  # the nearest rotations of a 20-degree grid
    assert np.mean(errors < 25.0) >= 0.9
    shifts = np.linalg.norm(update.poses.translations - data.poses.translations, axis=1)
    assert np.median(shifts) < 1.0
    np.testing.assert_array_equal(update.angle_steps_deg, 20.0)
    # good current poses are not replaced by the (coarser) grid rotations
    kept = rf.search_poses(data.volume, spectra, data.poses, step_deg=20)
    assert _median_error(kept.poses, data.poses) < 1.0


def test_coarse_to_fine_local_search_and_continuous_refinement(data, spectra):
    poses = _perturb(data.poses, 8.0, seed=4)
    start_energy = rf.pose_energies(data.volume, spectra, poses).energies
    for step, rng in ((5, 10), (2, 4)):
        update = rf.search_poses(data.volume, spectra, poses, step_deg=step, range_deg=rng)
        poses = update.poses
    assert _median_error(poses, data.poses) < 2.5
    assert np.all(update.energies <= start_energy + 1e-9)
    cont = rf.refine_poses_continuous(data.volume, spectra, poses, steps=4)
    # every accepted step decreases the energy; particles never get worse
    assert np.all(cont.energies <= update.energies + 1e-9)
    assert _median_error(cont.poses, data.poses) < _median_error(poses, data.poses) + 0.05
    assert _median_error(cont.poses, data.poses) < 1.0
    np.testing.assert_allclose(cont.changes_deg, np.degrees(geodesic_distance(
        cont.poses.rotations, poses.rotations)), atol=1e-9)


def test_search_on_one_channel_and_modulo_symmetry():
    ds = simulate_dataset(phantom="c9", size=20, n_particles=5, n_channels=2, sigma_xy=1.0,
                          sigma_z=2.0, noise_std=0.02, n_spots=0, seed=1)
    sp = rf.particle_spectra(ds.particles, ds.psf, support_threshold=1e-2)
    start = _perturb(ds.poses, 6.0, seed=2)
    both = rf.search_poses(ds.volume, sp, start, step_deg=2, range_deg=8, symmetry=9)
    torus = rf.search_poses(ds.volume, sp, start, step_deg=2, range_deg=8, symmetry=9,
                            channels=[1])
    # modulo C9 the barrel channel pins the poses; the torus alone leaves the angle about
    # its axis free: the poses differ, but the axis direction is found by both
    assert _median_error(both.poses, ds.poses, symmetry=9) < 3.0
    ez = np.array([1.0, 0.0, 0.0])
    axis_err = np.degrees(np.arccos(np.clip(np.einsum(
        "ni,ni->n", torus.poses.rotations @ ez, ds.poses.rotations @ ez), -1, 1)))
    assert np.median(axis_err) < 3.0
    # changes are reported modulo C9
    c9 = Poses(start.rotations @ np.array([[1, 0, 0], [0, np.cos(2 * np.pi / 9),
                                                         np.sin(2 * np.pi / 9)],
                                           [0, -np.sin(2 * np.pi / 9), np.cos(2 * np.pi / 9)]]),
               start.translations)
    again = rf.search_poses(ds.volume, sp, c9, step_deg=4, range_deg=8, symmetry=9)
    assert np.median(again.changes_deg) < 10.0


def test_global_search_keeps_the_polarity_of_cn_particles():
    """Where the two ends of a particle look alike (a torus, the second channel of the c9
    phantom), the global search keeps every axis in the hemisphere of its input one: half
    the particles start upside down and stay so, with their axis found."""
    ds = simulate_dataset(phantom="c9", size=20, n_particles=6, n_channels=2, sigma_xy=1.0,
                          sigma_z=2.0, noise_std=0.02, n_spots=0, seed=3)
    sp = rf.particle_spectra(ds.particles, ds.psf, support_threshold=1e-2)
    flip = np.diag([-1.0, -1.0, 1.0])  # half a turn about x: the axis z reversed
    start_r = ds.poses.rotations.copy()
    start_r[::2] = start_r[::2] @ flip
    start = _perturb(Poses(start_r, ds.poses.translations), 25.0, seed=4)
    start_r = start.rotations
    out = rf.search_poses(ds.volume, sp, start, step_deg=20, symmetry=9, channels=[1],
                          keep_polarity=True)
    axis_in = start_r[:, :, 0]
    axis_out = out.poses.rotations[:, :, 0]
    cos = np.einsum("ni,ni->n", axis_in, axis_out)
    assert np.all(cos > 0), cos
    assert np.degrees(np.median(np.arccos(np.clip(cos, -1, 1)))) < 15.0  # the 20-deg grid


# ----------------------------------------------------------------------------- refine


def test_refine_improves_poses_and_volume(data, refined):
    start, result, _ = refined
    before = _median_error(start, data.poses)
    after = _median_error(result.poses, data.poses)
    assert before > 14.0 and after < 5.0
    first = reconstruct(data.particles, start, data.psf, method="tv", weight=3e-3,
                        iterations=40, half_maps=False).volume[0]
    assert _ssim(result.volume[0], data.volume[0]) > _ssim(first, data.volume[0]) + 0.03
    # gold standard: two half maps, their FSC, halves of the split
    assert result.half_maps.shape == (2, 1, 24, 24, 24)
    assert sorted(np.bincount(result.halves)) == [8, 8]
    assert 0 < result.resolution_per_voxel[0] <= 0.5
    hist = result.history
    assert len(hist) == 3 and hist.phase.tolist() == [0, 0, 1]
    assert hist.step_deg[:2].tolist() == [5.0, 2.0] and np.isnan(hist.step_deg[2])
    assert hist.resolution_per_voxel.shape == (3, 1)
    assert np.all(np.isfinite(hist.energy)) and np.all(hist.seconds > 0)
    # the first update moves the particles most (they start 15 degrees off)
    assert hist.median_change_deg[0] > hist.median_change_deg[-1]
    np.testing.assert_allclose(result.changes_deg, np.degrees(geodesic_distance(
        result.poses.rotations, start.rotations)), atol=1e-9)
    assert result.volume.dtype == np.float32 and result.volume.shape == (1, 24, 24, 24)


def test_gold_standard_automatic_weight_and_support(data):
    """weight="auto" chooses the weight on the half sums (kept across a resume); the half
    sets start from the ab initio volume low-passed to half the optical cutoff; nothing of
    the volume lies outside the support; the final FSC carries its verdict."""
    from spfluo.algorithms.reconstruct.mask import default_mask_radius, energy_outside
    from spfluo.algorithms.resolution import optical_cutoff

    start = _perturb(data.poses, 5.0, seed=3)
    states = []
    opts = dict(schedule=[(2, 4)], exhaustive_iterations=2, continuous_iterations=0,
                initial_admm_iterations=20, admm_iterations=10, final_admm_iterations=10,
                weight="auto")
    result = rf.refine(data.particles, start, data.psf, volume=data.volume, **opts,
                       callback=states.append)
    assert result.weight.shape == (1,) and 1e-6 < result.weight[0] < 1.0
    assert result.weight_log and any("weight" in line for line in result.weight_log)
    assert states[-1].weight == pytest.approx(result.weight)
    assert result.low_pass_per_voxel == pytest.approx(0.5 * optical_cutoff(data.psf))
    radius = default_mask_radius(24)
    assert energy_outside(result.volume[0], radius) < 1e-6
    assert energy_outside(result.half_maps[0, 0], radius) < 1e-6
    (detail,) = result.fsc_details
    assert detail.resolution.status in ("measured", "not reached", "beyond cutoff")
    measured = detail.resolution.measured
    assert np.isfinite(result.resolution_per_voxel[0]) == measured
    # resumed after the iteration that chose it: the same weight, not chosen again
    assert states[0].weight is None  # the first pose update uses the low-passed reference
    again = rf.refine(data.particles, start, data.psf, volume=data.volume, **opts,
                      state=states[1])
    assert again.weight == pytest.approx(result.weight)
    assert not again.weight_log
    with pytest.raises(ValueError, match="weight='auto' is chosen on the half sets"):
        rf.refine(data.particles, start, data.psf, weight="auto", half_maps=False)


def test_killed_and_resumed_equals_uninterrupted(data, refined):
    start, result, states = refined
    assert [s.iteration for s in states] == [1, 2, 3]
    # a run killed after its first iteration: the checkpoint went through an .npz file
    buffer = io.BytesIO()
    np.savez(buffer, **states[0].to_arrays())
    buffer.seek(0)
    with np.load(buffer) as f:
        saved = rf.RefineState.from_arrays({k: f[k] for k in f.files})
    resumed = rf.refine(data.particles, start, data.psf, schedule=[(5, 10), (2, 4)],
                        exhaustive_iterations=2, continuous_iterations=1,
                        initial_admm_iterations=40, admm_iterations=10,
                        final_admm_iterations=20, state=saved)
    np.testing.assert_allclose(resumed.volume, result.volume, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(resumed.poses.rotations, result.poses.rotations, atol=1e-9)
    np.testing.assert_allclose(resumed.poses.translations, result.poses.translations,
                               atol=1e-9)
    np.testing.assert_allclose(resumed.half_maps, result.half_maps, rtol=1e-5, atol=1e-6)
    assert len(resumed.history) == len(result.history)
    np.testing.assert_allclose(resumed.history.median_change_deg,
                               result.history.median_change_deg)


def test_refine_from_a_given_volume_without_half_maps(data):
    start = _perturb(data.poses, 10.0, seed=7)
    result = rf.refine(data.particles, start, data.psf, volume=data.volume,
                       schedule=[(4, 8)], exhaustive_iterations=1, continuous_iterations=0,
                       half_maps=False, initial_admm_iterations=30, final_admm_iterations=30,
                       regularizer="hessian")
    assert result.half_maps is None and result.halves is None and result.fsc is None
    assert np.isnan(result.resolution_per_voxel).all()
    assert np.isnan(result.history.energy[0])  # the first pose update used the given volume
    assert _median_error(result.poses, data.poses) < 4.0


def test_state_round_trip_and_history(refined):
    _, result, _ = refined
    arrays = result.state.to_arrays()
    back = rf.RefineState.from_arrays(arrays)
    assert back.iteration == result.state.iteration and back.phase == 2
    np.testing.assert_array_equal(back.rotations, result.state.rotations)
    np.testing.assert_array_equal(back.admm[1].x, result.state.admm[1].x)
    assert back.admm[0].regularizer == "tv"
    np.testing.assert_array_equal(back.history.median_change_deg,
                                  result.history.median_change_deg)
    with pytest.raises(ValueError, match="not a refinement state"):
        rf.RefineState.from_arrays({"iteration": 1})


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_are_rejected(data, spectra):
    p, psf = data.particles, data.psf
    with pytest.raises(ValueError, match="poses has 3 poses"):
        rf.refine(p, data.poses[:3], psf)
    with pytest.raises(ValueError, match="regularizer must be"):
        rf.refine(p, data.poses, psf, regularizer="l2")
    with pytest.raises(ValueError, match="step_deg must be"):
        rf.refine(p, data.poses, psf, schedule=[(0, 5)])
    with pytest.raises(ValueError, match="each schedule stage"):
        rf.refine(p, data.poses, psf, schedule=[5])
    with pytest.raises(ValueError, match="exhaustive_iterations must be at least"):
        rf.refine(p, data.poses, psf, exhaustive_iterations=1)
    with pytest.raises(ValueError, match="channels must be"):
        rf.refine(p, data.poses, psf, channels=[3])
    with pytest.raises(ValueError, match="volume must have shape"):
        rf.refine(p, data.poses, psf, volume=np.ones((20, 20, 20), np.float32))
    with pytest.raises(ValueError, match="volume is zero"):
        rf.refine(p, data.poses, psf, volume=np.zeros((24, 24, 24), np.float32))
    with pytest.raises(ValueError, match="halves must hold"):
        rf.refine(p, data.poses, psf, halves=np.zeros(16))
    with pytest.raises(ValueError, match="symmetry must be"):
        rf.refine(p, data.poses, psf, symmetry=0)
    with pytest.raises(ValueError, match="state must be a RefineState"):
        rf.refine(p, data.poses, psf, state={"iteration": 1})
    with pytest.raises(ValueError, match="cubic boxes"):
        rf.particle_spectra(np.zeros((2, 1, 24, 24, 20), np.float32), psf)
    with pytest.raises(ValueError, match="NaN"):
        bad = p[:2].copy()
        bad[0, 0, 0, 0, 0] = np.nan
        rf.particle_spectra(bad, psf)
    with pytest.raises(ValueError, match="support_threshold"):
        rf.particle_spectra(p, psf, support_threshold=0.0)
    with pytest.raises(ValueError, match="pad must be"):
        rf.particle_spectra(p, psf, pad=4.0)
    with pytest.raises(ValueError, match="larger than the particle box"):
        rf.particle_spectra(p, np.ones((30, 30, 30), np.float32))
    with pytest.raises(ValueError, match="spectra must be a ParticleSpectra"):
        rf.search_poses(data.volume, p, data.poses, step_deg=5)
    with pytest.raises(ValueError, match="range_deg must be"):
        rf.search_poses(data.volume, spectra, data.poses, step_deg=5, range_deg=200)
    with pytest.raises(ValueError, match="volume must have shape"):
        rf.search_poses(np.ones((2, 24, 24, 24), np.float32), spectra, data.poses, step_deg=5)
    with pytest.raises(ValueError, match="eta must be"):
        rf.refine_poses_continuous(data.volume, spectra, data.poses, eta=1.0)
    with pytest.raises(ValueError, match="angle_steps_deg must hold"):
        rf.refine_poses_continuous(data.volume, spectra, data.poses, angle_steps_deg=[1.0])
