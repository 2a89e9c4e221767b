"""Tests of spfluo.algorithms.registration: rigid, symmetry-aware volume registration."""

import numpy as np
import pytest
import scipy.ndimage

from spfluo.algorithms import geometry, phantoms, transform
from spfluo.algorithms.registration import RegistrationResult, register_volumes


@pytest.fixture(scope="module")
def asym32():
    return phantoms.asymmetric_phantom(32, supersample=2)


def _posed(volume, R0, t0):
    """``T_t0(R0 volume)`` by cubic spline (a different interpolation than the search's)."""
    return transform.rotate(volume, R0, translations=t0, order=3)


@pytest.mark.parametrize("seed", [0, 1])
def test_recovers_a_known_rotation_and_shift(asym32, seed):
    """volume = T_t0(R0 f) registered onto f: R = R0^T, t = -R0^T t0.

    Measured (32^3 asymmetric phantom, 4 seeds): rotation errors 0.12-0.18 degree,
    shift errors 0.008-0.03 voxel.  Tolerances (issue): 2 degrees, 0.5 voxel.
    """
    rng = np.random.default_rng(seed)
    R0 = geometry.random_rotations(1, seed=rng)[0]
    t0 = rng.uniform(-2.5, 2.5, size=3)
    res = register_volumes(_posed(asym32, R0, t0), asym32)
    assert isinstance(res, RegistrationResult)
    assert res.rotation.shape == (3, 3) and res.translation.shape == (3,)
    angle = np.degrees(geometry.geodesic_distance(res.rotation, R0.T))
    shift = np.linalg.norm(res.translation - (-R0.T @ t0))
    assert angle < 2.0, angle
    assert shift < 0.5, shift
    # aligned = T_t(R volume) = transform.rotate of the volume, and matches the reference
    assert res.aligned.shape == asym32.shape and res.aligned.dtype == np.float32
    expected = transform.rotate(_posed(asym32, R0, t0), res.rotation,
                                translations=res.translation, order=3)
    np.testing.assert_allclose(res.aligned, expected, atol=1e-4)
    assert res.score > 0.98
    assert res.score == pytest.approx(np.corrcoef(res.aligned.ravel(), asym32.ravel())[0, 1],
                                      abs=1e-6)


def test_noisy_blurred_volume_and_relation_with_align_rotations(asym32):
    """A blurred, noisy copy still registers; G = R^T matches align_rotations on poses."""
    rng = np.random.default_rng(5)
    R0 = geometry.random_rotations(1, seed=11)[0]
    t0 = np.array([1.0, -1.5, 0.5])
    blurred = scipy.ndimage.gaussian_filter(asym32, 1.0)
    vol = _posed(blurred, R0, t0) + rng.normal(0, 0.1 * blurred.max(), asym32.shape)
    res = register_volumes(vol.astype(np.float32), asym32, final_step_deg=0.5)
    assert np.degrees(geometry.geodesic_distance(res.rotation, R0.T)) < 2.0
    assert np.linalg.norm(res.translation - (-R0.T @ t0)) < 0.5
    # vol plays a reconstruction f_est = R0 f (up to the shift): particles R_true f are
    # R_est f_est with R_est = R_true R0^T; align_rotations finds G = R0 (f_est = G f),
    # which is R^T for the registration R = R0^T
    R_true = geometry.random_rotations(6, seed=2)
    R_est = R_true @ R0.T
    G = geometry.align_rotations(R_est, R_true)
    assert np.degrees(geometry.geodesic_distance(G, res.rotation.T)) < 2.0


def test_c9_barrel_modulo_the_group():
    """With symmetry=9 the rotation is found modulo R ~ C_k R, and t ~ C_k t.

    Measured: 0.17-0.22 degree and 0.04-0.06 voxel (32^3 barrel, 3 seeds).
    """
    barrel = phantoms.c9_barrel(32, supersample=2)
    rng = np.random.default_rng(3)
    R0 = geometry.random_rotations(1, seed=rng)[0]
    t0 = rng.uniform(-2.0, 2.0, size=3)
    res = register_volumes(_posed(barrel, R0, t0), barrel, symmetry=9)
    C = geometry.cyclic_group(9)
    # the expected rotation is R0^T up to a left factor C_k
    dist = geometry.geodesic_distance(res.rotation[None], C @ R0.T)
    k = int(np.argmin(dist))
    assert np.degrees(dist[k]) < 2.0
    assert np.degrees(geometry.geodesic_distance_sym(res.rotation.T, R0, symmetry=9)) < 2.0
    assert np.linalg.norm(res.translation - C[k] @ (-R0.T @ t0)) < 0.5
    assert res.score > 0.95


def test_two_channels_share_one_transform():
    first = phantoms.asymmetric_phantom(24, supersample=2)
    second = phantoms.sphere_shell(24, radius=0.2, thickness=0.1, supersample=1)
    ref = np.stack([first, second])
    R0 = geometry.random_rotations(1, seed=4)[0]
    t0 = np.array([-1.0, 0.5, 2.0])
    vol = np.stack([_posed(c, R0, t0) for c in ref])
    res = register_volumes(vol, ref, final_step_deg=0.5)
    assert res.aligned.shape == (2, 24, 24, 24)
    assert np.degrees(geometry.geodesic_distance(res.rotation, R0.T)) < 2.0
    assert np.linalg.norm(res.translation - (-R0.T @ t0)) < 0.5


def test_without_refinement_the_global_search_is_coarse(asym32):
    R0 = geometry.random_rotations(1, seed=6)[0]
    vol = _posed(asym32, R0, np.zeros(3))
    res = register_volumes(vol, asym32, refine=False)
    angle = np.degrees(geometry.geodesic_distance(res.rotation, R0.T))
    assert angle < 20.0  # within about one step of the 20 degree grid
    # t = -R s with s the integer shift of the global search
    s = -res.rotation.T @ res.translation
    np.testing.assert_allclose(s, np.rint(s), atol=1e-9)


def test_identity_and_background_level():
    """A constant offset is removed for the search and is the fill value of ``aligned``."""
    ref = phantoms.asymmetric_phantom(24, supersample=2)
    res = register_volumes(ref + 0.25, ref, final_step_deg=0.5)
    assert np.degrees(geometry.geodesic_distance(res.rotation, np.eye(3))) < 0.5
    assert np.linalg.norm(res.translation) < 0.1
    expected = transform.rotate(ref, res.rotation, translations=res.translation, order=3)
    np.testing.assert_allclose(res.aligned, expected + 0.25, atol=1e-4)
    assert res.score > 0.999


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(volume=np.zeros((4, 4))), "volume must have shape"),
        (dict(reference=np.ones((8, 8, 9))), "same shape"),
        (dict(volume=np.full((8, 8, 8), np.nan)), "NaN"),
        (dict(volume=np.ones((8, 8, 8))), "constant"),
        (dict(symmetry=0), "symmetry"),
        (dict(coarse_step_deg=0.0), "coarse_step_deg"),
        (dict(final_step_deg=-1.0), "final_step_deg"),
        (dict(coarse_size=4), "coarse_size"),
        (dict(n_candidates=0), "n_candidates"),
        (dict(max_shift=-1.0), "max_shift"),
        (dict(volume=np.zeros((2, 2, 2))), "at least 4 voxels"),
    ],
)
def test_register_rejects_bad_input(kwargs, match):
    rng = np.random.default_rng(0)
    args = dict(volume=rng.random((8, 8, 8)), reference=rng.random((8, 8, 8)))
    args.update(kwargs)
    if args["reference"].shape != args["volume"].shape and "reference" not in kwargs:
        args["reference"] = rng.random(args["volume"].shape)
    volume, reference = args.pop("volume"), args.pop("reference")
    with pytest.raises(ValueError, match=match):
        register_volumes(volume, reference, **args)
