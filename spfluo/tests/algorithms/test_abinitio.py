"""Ab initio by SGD with importance sampling: building blocks against oracles, recovery, resume."""

import numpy as np
import pytest

from spfluo.algorithms import abinitio as A
from spfluo.algorithms.abinitio.polarity import (
    flip_pose,
    flip_rotation,
    polarity_axis,
    polarity_consensus,
)
from spfluo.algorithms.backend import get_backend
from spfluo.algorithms.forward import ForwardModel
from spfluo.algorithms.fourier import shift_volume
from spfluo.algorithms.geometry import (
    Poses,
    cyclic_group,
    geodesic_distance_sym,
    random_rotations,
    so3_grid,
)
from spfluo.algorithms.metrics import compare_volumes, pose_error_summary
from spfluo.algorithms.phantoms import asymmetric_phantom
from spfluo.algorithms.psf import gaussian_psf
from spfluo.algorithms.reconstruct import reconstruct
from spfluo.algorithms.interpolation import gather, splat, trilinear_setup
from spfluo.algorithms.scoring.energies import Scorer
from spfluo.algorithms.scoring.model import FourierVolume
from spfluo.algorithms.scoring.spectra import particle_spectra
from spfluo.algorithms.simulate import simulate_dataset
from spfluo.algorithms.transform import rotate

# a small version of the Eloy et al. 2023 setting that the tests can afford (about 5 s on 2 cores)
SIM = dict(size=20, n_particles=10, sigma_xy=0.75, sigma_z=2.0, n_spots=20, noise_std=0.1)
FAST = dict(n_directions=32, n_psi=6, max_epochs=10)


@pytest.fixture(scope="module")
def dataset():
    return simulate_dataset(seed=0, **SIM)


@pytest.fixture(scope="module")
def clean():
    """Noise-free particles of an asymmetric phantom (trilinear forward model), 24^3."""
    gt = asymmetric_phantom((24,) * 3, seed=3)
    psf = gaussian_psf((15, 15, 15), (2.0, 0.8))
    rng = np.random.default_rng(0)
    R = random_rotations(4, seed=rng)
    t = rng.uniform(-1.5, 1.5, size=(4, 3))
    particles = ForwardModel((24,) * 3, R, t, psf=psf).apply(gt)
    return gt, psf, Poses(R, t), particles


# ----------------------------------------------------------------- building blocks


def test_spectral_particles_support_weights_and_noise_power():
    rng = np.random.default_rng(1)
    sigma = 0.3
    noise = (sigma * rng.standard_normal((3, 1, 24, 24, 24))).astype(np.float32)
    psf = gaussian_psf((15, 15, 15), (2.0, 0.8))
    data = particle_spectra(noise, psf, support_threshold=1e-3)
    p = np.asarray(data.points)
    assert p[:, 2].min() >= 0 and np.abs(p).max() < 12  # half spectrum, no Nyquist plane
    np.testing.assert_array_equal(data.weights, np.where(p[:, 2] == 0, 1.0, 2.0))
    # |h^|^2 >= threshold at every point (the OTF of a unit-sum PSF is 1 at 0)
    assert (np.abs(data.otf) ** 2).min() >= 1e-3 * 0.999
    # white noise of variance sigma^2 has a power D^3 sigma^2 per Fourier coefficient
    expected = 24**3 * sigma**2
    np.testing.assert_allclose(1.0 / np.asarray(data.inv_noise), expected, rtol=0.05)
    assert data.band % 2 == 0 and data.band > 2 * np.sqrt((p**2).sum(1)).max()


def test_gather_and_scatter_are_adjoint():
    """<gather(F), v> = <F, scatter(v)>: the SGD gradient is the exact adjoint."""
    rng = np.random.default_rng(2)
    size = 16
    shape = (size + 3,) * 3  # the grid inside a zero border (1 before, 2 after)
    grid = np.zeros(shape, np.complex64)
    grid[1:-2, 1:-2, 1:-2] = (rng.standard_normal((size,) * 3)
                              + 1j * rng.standard_normal((size,) * 3))
    coords = rng.uniform(0.0, size, size=(3, 3, 50)).astype(np.float32)
    base, frac = trilinear_setup(np, coords, (size,) * 3)
    values = (rng.standard_normal((3, 50)) + 1j * rng.standard_normal((3, 50))).astype(
        np.complex64)
    sampled = gather(np, grid.ravel(), base, frac, (size,) * 3)
    spread = splat(get_backend("cpu"), base, frac, values, (size,) * 3, int(np.prod(shape)))
    lhs = np.vdot(values, sampled)
    rhs = np.vdot(spread, grid.ravel())
    assert abs(lhs - rhs) <= 1e-4 * abs(lhs)
    # and the gather is trilinear interpolation (scipy oracle, real part)
    import scipy.ndimage

    ref = scipy.ndimage.map_coordinates(grid.real, coords.transpose(1, 0, 2).reshape(3, -1) + 1,
                                        order=1)
    np.testing.assert_allclose(sampled.real.ravel(), ref, atol=1e-4)


def test_energies_find_the_true_pose_and_translation(clean):
    gt, psf, poses, particles = clean
    data = particle_spectra(particles, psf)
    vol = FourierVolume.initial(data.backend, gt[None], data.band)
    scale = Scorer.for_band(data, data.band, 6.0, surface="peak")
    rng = np.random.default_rng(5)
    for l in range(2):
        candidates = np.concatenate([poses.rotations[l:l + 1], random_rotations(63, seed=rng)])
        ev = scale.evaluate(vol, l, candidates)
        assert int(np.argmin(ev.nll)) == 0
        np.testing.assert_allclose(ev.shifts[0], poses.translations[l], atol=0.3)
        assert ev.relative[0] < 0.02 < ev.relative[1:].min()


def test_smoothed_marginals_match_a_brute_force_loop():
    grid = so3_grid(40, 12)
    rng = np.random.default_rng(3)
    jd = np.sort(rng.choice(40, 5, replace=False))
    ip = np.sort(rng.choice(12, 3, replace=False))
    qd = rng.uniform(0.5, 1.5, 40)
    qd /= qd.sum()
    qp = rng.uniform(0.5, 1.5, 12)
    qp /= qp.sum()
    p = rng.uniform(0, 1, (5, 3))
    pi_d, pi_psi = A.smoothed_marginals(p, jd, ip, qd, qp, grid=grid, beta_d=20.0,
                                        beta_psi=30.0)
    # eq. 16-21 written out
    tilde_psi = {i: sum(p[a, b] / qd[j] for a, j in enumerate(jd)) for b, i in enumerate(ip)}
    tilde_d = {j: sum(p[a, b] / qp[i] for b, i in enumerate(ip)) for a, j in enumerate(jd)}
    ref_psi = np.array([sum(np.exp(30.0 * np.cos(grid.psi[i] - grid.psi[k])) * v
                            for k, v in tilde_psi.items()) for i in range(12)])
    ref_d = np.array([sum(np.exp(20.0 * grid.directions[j] @ grid.directions[k]) * v
                          for k, v in tilde_d.items()) for j in range(40)])
    np.testing.assert_allclose(pi_psi, ref_psi / ref_psi.sum(), rtol=1e-10)
    np.testing.assert_allclose(pi_d, ref_d / ref_d.sum(), rtol=1e-10)


def test_pose_search_finds_the_true_poses(clean):
    gt, psf, poses, particles = clean
    result = A.pose_search(gt, particles, psf, grid=so3_grid(200, 18), max_shift=6.0)
    errors = pose_error_summary(result.poses.rotations, poses.rotations).errors_deg
    assert errors.max() < 3.0
    np.testing.assert_allclose(result.poses.translations, poses.translations, atol=0.4)
    assert result.psi_marginals.shape == (4, 18)
    np.testing.assert_allclose(result.direction_marginals.sum(axis=1), 1.0)


def test_local_refinement_brings_perturbed_poses_back(clean):
    gt, psf, poses, particles = clean
    data = particle_spectra(particles, psf)
    rng = np.random.default_rng(4)
    from spfluo.algorithms.geometry import matrix_from_rotvec

    turn = matrix_from_rotvec(np.deg2rad(4.0) * rng.normal(size=(4, 3)) / np.sqrt(3))
    start = Poses(np.matmul(poses.rotations, turn), poses.translations + 0.7)
    refined, energies = A.refine_poses_local(gt, data, start, max_shift=6.0)
    before = pose_error_summary(start.rotations, poses.rotations).errors_deg
    after = pose_error_summary(refined.rotations, poses.rotations).errors_deg
    assert after.max() < 1.5 < before.max()
    np.testing.assert_allclose(refined.translations, poses.translations, atol=0.3)
    assert energies.shape == (4,) and np.all(energies < 0.02)
    with pytest.raises(ValueError, match="volume must have shape"):
        A.refine_poses_local(gt[:-1], data, start)
    with pytest.raises(ValueError, match="one pose per particle"):
        A.refine_poses_local(gt, data, start[:2])


# ----------------------------------------------------------------- polarity (Cn)

# a small C9 barrel whose blades (their tilt: the only difference between the two ends)
# survive the blur: measured, 5 of 12 particles end upside down without the consensus
C9_SIM = dict(phantom="c9", size=28, n_particles=12, sigma_xy=0.7, sigma_z=2.0, n_spots=0,
              noise_std=0.1, seed=1)


@pytest.fixture(scope="module")
def barrel():
    return simulate_dataset(**C9_SIM)


def test_flip_pose_gives_the_same_particle_from_the_turned_volume(clean):
    """T_t R f = T_t' R' (F_c f) with (R', t') = flip_pose(R, t, F, c)."""
    gt, psf, poses, _ = clean
    flip = flip_rotation(0.3)
    np.testing.assert_allclose(flip @ flip, np.eye(3), atol=1e-12)  # a half turn
    np.testing.assert_allclose(flip[0], [-1.0, 0.0, 0.0], atol=1e-12)  # z turned over
    centre = np.array([2.0, -1.0, 0.5])
    # F_c f (x) = f(F (x - c) + c): rotate about the box centre, then shift by (I - F) c
    turned = rotate(gt, flip, translations=(np.eye(3) - flip) @ centre, order=3)
    rotations, translations = flip_pose(poses.rotations, poses.translations, flip, centre)
    shape = gt.shape
    direct = ForwardModel(shape, poses.rotations, poses.translations, psf=psf).apply(gt)
    via_turn = ForwardModel(shape, rotations, translations, psf=psf).apply(turned)
    wrong = ForwardModel(shape, rotations, poses.translations, psf=psf).apply(turned)

    def rel(a):
        return float(np.linalg.norm(a - direct) / np.linalg.norm(direct))

    # measured 0.023 (interpolation), 1.13 without the translation term
    assert rel(via_turn) < 0.05 < 0.5 < rel(wrong)


def test_polarity_axis_and_consensus_sort_out_a_mixture(barrel):
    """Against a half-half mixture of the barrel and its turned copy, the consensus finds
    the particles given the other polarity (and turns nobody when all agree)."""
    ds = barrel
    data = particle_spectra(ds.particles, ds.psf)
    gt = ds.volume[0]
    flip = flip_rotation(np.deg2rad(10.0))  # the barrel's best self-overlap (blades)
    centre = np.array([1.5, 0.0, 0.0])
    shifted = shift_volume(gt, centre)
    mixed = 0.5 * (shifted + rotate(shifted, flip, translations=(np.eye(3) - flip) @ centre,
                                    order=3))
    vol = FourierVolume.initial(data.backend, mixed[None], data.band)
    theta, found_centre, score = polarity_axis(vol, 9)
    period = 20.0
    dtheta = (np.degrees(theta) - 10.0 + period / 2) % period - period / 2
    assert abs(dtheta) <= 1.0 and score > 0.95
    np.testing.assert_allclose(found_centre, centre, atol=0.3)
    # poses relative to the shifted barrel T_c f: (R, t - R c); 5 of 12 given the turned copy
    rotations = ds.poses.rotations.copy()
    translations = ds.poses.translations - np.einsum("nij,j->ni", rotations, centre)
    truth_r, truth_t = rotations.copy(), translations.copy()
    turned = np.array([1, 4, 5, 8, 10])
    rotations[turned], translations[turned] = flip_pose(rotations[turned],
                                                           translations[turned], flip, centre)
    scale = Scorer.for_band(data, data.band, 7.0, surface="peak")
    group = cyclic_group(9)
    new_r, new_t, flipped, gain = polarity_consensus(
        vol, scale, rotations, translations, group, flip, centre,
        rng=np.random.default_rng(0))
    np.testing.assert_array_equal(flipped, turned)
    assert gain > 0
    errors = geodesic_distance_sym(new_r, truth_r, symmetry=9)
    assert np.degrees(errors).max() < 3.0
    np.testing.assert_allclose(new_t, truth_t, atol=0.5)
    # everybody already agrees: nobody is turned
    _, _, none, _ = polarity_consensus(vol, scale, truth_r, truth_t, group, flip, centre,
                                       rng=np.random.default_rng(0))
    assert none.size == 0


def test_sgd_recovers_the_c9_barrel_without_turned_particles(barrel):
    ds = barrel
    messages = []
    result = A.sgd_reconstruction(ds.particles, ds.psf, symmetry=9, n_directions=32, n_psi=6,
                                  max_epochs=20, final_reconstruction=None, seed=0,
                                  progress=lambda info: messages.append(info.get("stage")))
    assert result.grid.symmetry == 9 and result.grid.psi.max() < 2 * np.pi / 9
    assert any(m and m.startswith("symmetry C9 imposed") for m in messages)
    errors = pose_error_summary(result.poses.rotations, ds.poses.rotations, symmetry=9)
    # measured: all below 2 degrees; without the consensus (polarity=False) 5 of 12 at 180
    assert errors.max_deg < 10.0, errors.errors_deg


# ----------------------------------------------------------------- the whole method


def test_sgd_recovers_an_asymmetric_phantom(dataset):
    ds = dataset
    result = A.sgd_reconstruction(ds.particles, ds.psf, seed=0, final_reconstruction="tikhonov",
                                  **FAST)
    assert result.volume.shape == (1, 20, 20, 20) and result.volume.dtype == np.float32
    assert len(result.poses) == 10 and result.n_epochs == result.energies.size <= 10
    errors = pose_error_summary(result.poses.rotations, ds.poses.rotations)
    assert errors.median_deg < 10.0
    known = reconstruct(ds.particles, ds.poses, ds.psf, method="tikhonov").volume
    vs = ds.voxel_size
    ceiling = compare_volumes(known[0], ds.volume[0], voxel_size=vs, register=False).ssim
    found = compare_volumes(result.volume[0], ds.volume[0], voxel_size=vs).ssim
    assert found >= 0.85 * ceiling, (found, ceiling)
    # the final volume is centred in the box (its support is a sphere about the centre)
    from spfluo.algorithms.symmetry import centring_shift

    assert np.abs(centring_shift(result.volume)).max() < 1.0
    # energies fall from the random start; marginals are distributions on the grid
    assert result.energies[-1] < 0.5 * result.energies[0]
    assert result.psi_marginals.shape == (10, result.grid.n_psi)
    np.testing.assert_allclose(result.direction_marginals.sum(axis=1), 1.0)


def test_killed_and_resumed_run_equals_the_uninterrupted_one(dataset):
    ds = dataset
    options = dict(n_directions=12, n_psi=4, max_epochs=4, coarse_epochs=2, min_epochs=10,
                   final_reconstruction=None, seed=7)
    particles = ds.particles[:6]
    full = A.sgd_reconstruction(particles, ds.psf, **options)

    class Killed(Exception):
        pass

    saved = []

    def checkpoint(state):
        saved.append(A.SGDState.from_arrays(state.to_arrays()))  # as a file round trip
        if state.epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        A.sgd_reconstruction(particles, ds.psf, checkpoint=checkpoint, **options)
    assert [s.epoch for s in saved] == [1, 2]
    resumed = A.sgd_reconstruction(particles, ds.psf, resume=saved[-1], **options)
    np.testing.assert_array_equal(resumed.volume, full.volume)
    np.testing.assert_array_equal(resumed.poses.rotations, full.poses.rotations)
    np.testing.assert_array_equal(resumed.energies, full.energies)


def test_the_run_converges_only_when_energy_and_poses_settle(dataset):
    """The moved fraction of each epoch is that of the checkpointed poses; an energy plateau
    with poses still moving is not convergence."""
    ds = dataset
    options = dict(n_directions=12, n_psi=4, max_epochs=6, coarse_epochs=0, min_epochs=1,
                   tol=10.0, patience=2, final_reconstruction=None, global_search=False,
                   refine=False, seed=5)
    particles = ds.particles[:8]
    rotations = []
    loose = A.sgd_reconstruction(particles, ds.psf, pose_tol=1.0,
                                 checkpoint=lambda st: rotations.append(st.rotations), **options)
    # energy plateau at once: the run stops after patience + 1 epochs, converged
    assert loose.converged and loose.n_epochs == 3
    start = np.broadcast_to(np.eye(3), rotations[0].shape)
    for k, (a, b) in enumerate(zip([start] + rotations[:-1], rotations)):
        changed = (np.degrees(geodesic_distance_sym(a, b, symmetry=1))
                   > A.move_threshold_deg(loose.grid))
        assert loose.epoch_moved[k] == pytest.approx(changed.mean())
    assert loose.epoch_moved[0] > 0.5  # the first epoch moves everything from the identity
    strict = A.sgd_reconstruction(particles, ds.psf, pose_tol=0.0, **options)
    if np.all(strict.epoch_moved[-2:] == 0.0):
        assert strict.converged
    else:
        assert not strict.converged and strict.n_epochs == 6


def test_the_run_goes_on_from_the_start_of_lowest_energy(dataset):
    """Each start alone (its seed derived from the run's) gives the energy the choice
    compares; the run's first epoch is the lowest of them."""
    ds = dataset
    options = dict(n_directions=8, n_psi=4, max_epochs=1, global_search=False, refine=False,
                   final_reconstruction=None)
    particles = ds.particles[:8]
    alone = [A.sgd_reconstruction(particles, ds.psf, starts=1, seed=seed, **options).energies[0]
             for seed in (4, np.random.SeedSequence([4, 1]), np.random.SeedSequence([4, 2]))]
    assert max(alone) > min(alone)  # the starts differ
    messages = []
    chosen = A.sgd_reconstruction(particles, ds.psf, starts=3, seed=4,
                                  progress=lambda m: messages.append(m.get("stage", "")),
                                  **options)
    assert chosen.energies[0] == pytest.approx(min(alone), rel=1e-9)
    assert any(f"start {int(np.argmin(alone))} goes on" in m for m in messages)
    # a Generator seed: start 0 is the run that seed gives alone, the others derive from it
    one = A.sgd_reconstruction(particles, ds.psf, starts=1, seed=np.random.default_rng(4),
                               **options).energies[0]
    three = A.sgd_reconstruction(particles, ds.psf, starts=3, seed=np.random.default_rng(4),
                                 **options).energies[0]
    assert one == pytest.approx(alone[0], rel=1e-9) and three <= one


def test_symmetry_restricts_the_in_plane_grid(dataset):
    ds = dataset
    result = A.sgd_reconstruction(ds.particles[:4], ds.psf, symmetry=3, n_directions=8, n_psi=4,
                                  max_epochs=1, final_reconstruction=None, global_search=False,
                                  refine=False)
    assert result.grid.symmetry == 3 and result.grid.n_psi == A.default_grid_size(3)[1] == 24
    assert result.grid.psi.max() < 2 * np.pi / 3
    assert A.default_grid_size(1) == (1500, 72)


# ----------------------------------------------------------------- errors


def test_bad_inputs_are_rejected(dataset):
    ds = dataset
    y, h = ds.particles, ds.psf
    with pytest.raises(ValueError, match="particles must have shape"):
        A.sgd_reconstruction(y[:, 0, 0], h)
    with pytest.raises(ValueError, match="cubic boxes"):
        A.sgd_reconstruction(y[..., :-1], h)
    bad = y.copy()
    bad[0, 0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        A.sgd_reconstruction(bad, h)
    with pytest.raises(ValueError, match="psf has 2 channels"):
        A.sgd_reconstruction(y, np.concatenate([h, h]))
    with pytest.raises(ValueError, match="positive sum"):
        A.sgd_reconstruction(y, -h)
    with pytest.raises(ValueError, match="alpha_r"):
        A.sgd_reconstruction(y, h, alpha_r=1.0)
    with pytest.raises(ValueError, match="n_directions"):
        A.sgd_reconstruction(y, h, n_directions=0)
    with pytest.raises(ValueError, match="final_reconstruction"):
        A.sgd_reconstruction(y, h, final_reconstruction="average")
    with pytest.raises(ValueError, match="resume must be an SGDState"):
        A.sgd_reconstruction(y, h, resume={"epoch": 1})
    with pytest.raises(ValueError, match="lacks"):
        A.SGDState.from_arrays({"epoch": np.asarray(1)})
    with pytest.raises(ValueError, match="likelihoods must have shape"):
        A.smoothed_marginals(np.ones((2, 2)), [0], [0], np.ones(40) / 40, np.ones(12) / 12,
                             grid=so3_grid(40, 12))
    with pytest.raises(ValueError, match="grid must be an SO3Grid"):
        A.pose_search(ds.volume, y, h, grid="coarse")


def test_two_stage_symmetric_run_resumes_exactly_in_either_stage(barrel):
    """Killed before or after the symmetry is imposed, the resumed run gives the same result."""
    options = dict(symmetry=9, n_directions=8, n_psi=4, max_epochs=6, coarse_epochs=1,
                   min_epochs=1, tol=10.0, pose_tol=1.0, patience=1,
                   final_reconstruction=None,
                   global_search=False, refine=False, seed=3)
    particles = barrel.particles[:6]
    saved = []
    full = A.sgd_reconstruction(particles, barrel.psf,
                                checkpoint=lambda st: saved.append(st.to_arrays()), **options)
    phases = [(int(a["epoch"]), int(a["phase"]), int(a["switch_epoch"])) for a in saved]
    # plateau after epoch 3 (two full-band epochs): C9 imposed, then epochs 4 and 5
    assert phases == [(1, 0, -1), (2, 0, -1), (3, 0, -1), (3, 1, 3), (4, 1, 3), (5, 1, 3)]
    assert full.grid.symmetry == 9 and full.n_epochs == 5
    for index in (1, 4):  # in the stage without symmetry, and after the switch
        state = A.SGDState.from_arrays(saved[index])
        resumed = A.sgd_reconstruction(particles, barrel.psf, resume=state, **options)
        np.testing.assert_array_equal(resumed.volume, full.volume)
        np.testing.assert_array_equal(resumed.poses.rotations, full.poses.rotations)
        np.testing.assert_array_equal(resumed.energies, full.energies)
    with pytest.raises(ValueError, match="first stage without symmetry"):
        A.sgd_reconstruction(particles, barrel.psf, resume=A.SGDState.from_arrays(saved[1]),
                             **{**options, "align_axis": False})
    # checkpoints written before the two-stage runs load as finished first stages
    old = {k: v for k, v in saved[4].items() if k not in ("phase", "switch_epoch")}
    state = A.SGDState.from_arrays(old)
    assert state.phase == 1 and state.switch_epoch == -1


def test_resume_from_other_options_is_rejected(dataset):
    ds = dataset
    saved = []
    A.sgd_reconstruction(ds.particles, ds.psf, n_directions=8, n_psi=4, max_epochs=1,
                         final_reconstruction=None, global_search=False, refine=False,
                         checkpoint=saved.append)
    with pytest.raises(ValueError, match="does not match"):
        A.sgd_reconstruction(ds.particles, ds.psf, grid_directions=500, resume=saved[-1])
