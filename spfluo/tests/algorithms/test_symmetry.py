"""Symmetry tools: axis of a turned C9 barrel, alignment, poses, symmetrisation, order."""

import math

import numpy as np
import pytest

from spfluo.algorithms import symmetry as sy
from spfluo.algorithms.geometry import Poses, random_rotations, rotation_about_z
from spfluo.algorithms.phantoms import asymmetric_phantom, c9_barrel
from spfluo.algorithms.transform import rotate


def _ncc(a, b) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@pytest.fixture(scope="module")
def barrel():
    return c9_barrel(32)


@pytest.fixture(scope="module")
def turned(barrel):
    """The barrel turned at random and shifted off-centre; its axis (x, y, z)."""
    g = random_rotations(1, seed=3)[0]
    vol = rotate(barrel, g, translations=np.array([1.5, -1.0, 0.7]), order=3)
    axis_zyx = g @ np.array([1.0, 0.0, 0.0])  # the barrel's axis is array axis 0
    return vol, axis_zyx[::-1], g


def test_axis_of_a_turned_barrel_is_found(turned):
    vol, axis, _ = turned
    found = sy.find_symmetry_axis(vol, 9)
    angle = math.degrees(math.acos(min(1.0, abs(float(found.axis @ axis)))))
    assert angle < 2.0
    assert found.score > 0.95 and found.order == 9
    assert found.axis[2] >= 0 and np.linalg.norm(found.axis) == pytest.approx(1.0)
    # the shift brings a point of the axis to the centre: the shifted centre lies on it
    point = np.array([16.0, 16.0, 16.0]) - found.centre_shift - (16 + np.array([1.5, -1.0, 0.7]))
    off_axis = point[::-1] - (point[::-1] @ axis) * axis
    assert np.linalg.norm(off_axis) < 1.0


def test_alignment_puts_the_axis_on_z_and_poses_follow(turned):
    vol, _, g = turned
    aligned = sy.align_symmetry_axis(vol, 9)
    assert aligned.volume.shape == vol.shape and aligned.volume.dtype == np.float32
    np.testing.assert_allclose(aligned.rotation @ aligned.rotation.T, np.eye(3), atol=1e-10)
    # C9 about z now maps the volume onto itself
    c9 = rotate(aligned.volume, rotation_about_z(2 * math.pi / 9), order=3)
    c20 = rotate(aligned.volume, rotation_about_z(math.radians(20)), order=3)
    assert _ncc(c9, aligned.volume) > 0.95
    assert _ncc(c9, aligned.volume) > _ncc(c20, aligned.volume) + 0.1
    # the axis of the aligned volume is z (within a degree)
    again = sy.find_symmetry_axis(aligned.volume, 9)
    assert math.degrees(math.acos(min(1.0, again.axis[2]))) < 1.0
    assert np.linalg.norm(again.centre_shift) < 0.5
    # poses: a particle T_t(R f) is T_t'(R' f') with the realigned pose
    poses = Poses(random_rotations(2, seed=9), np.array([[0.5, 1.0, -0.5], [0.0, -1.0, 0.2]]))
    new = sy.realign_poses(poses, aligned.rotation, aligned.shift)
    for k in range(2):
        direct = rotate(vol, poses.rotations[k], translations=poses.translations[k], order=3)
        via = rotate(aligned.volume, new.rotations[k], translations=new.translations[k], order=3)
        assert _ncc(direct, via) > 0.97


def test_symmetrize(barrel):
    noisy = barrel + 0.2 * np.random.default_rng(0).standard_normal(barrel.shape).astype(
        np.float32)
    sym = sy.symmetrize(noisy, 9)
    assert sym.shape == barrel.shape and sym.dtype == np.float32
    # closer to the clean barrel than the noisy input, and C9-invariant
    assert _ncc(sym, barrel) > _ncc(noisy, barrel) + 0.1
    turned = rotate(sym, rotation_about_z(2 * math.pi / 9), order=3)
    inner = (slice(4, -4),) * 3
    assert _ncc(turned[inner], sym[inner]) > 0.99
    # exact on band-limited volumes (oracle: Gaussian blobs rotated analytically, on a
    # background that symmetrize removes and puts back): measured 6e-7, cubic splines 3e-4
    blobs = [(np.array([1.0, 4.0, -3.0]), 1.6), (np.array([-3.0, -2.0, 4.5]), 1.8)]
    grid = np.indices((28, 28, 28)) - 14.0

    def render(rotation):
        out = np.full((28, 28, 28), 0.25)
        for centre, sigma in blobs:
            d = grid - (rotation @ centre)[:, None, None, None]
            out += np.exp(-(d**2).sum(0) / (2 * sigma**2))
        return out

    group = [rotation_about_z(2 * math.pi * k / 9) for k in range(9)]
    oracle = np.mean([render(r) for r in group], axis=0)
    exact = sy.symmetrize(render(np.eye(3)).astype(np.float32), 9)
    np.testing.assert_allclose(exact, oracle, atol=1e-5)
    spline = np.mean([rotate(render(np.eye(3)).astype(np.float32) - 0.25, r, order=3)
                      for r in group], axis=0) + 0.25
    assert np.abs(spline - oracle).max() > 10 * np.abs(exact - oracle).max()
    # channels are symmetrised independently, order 1 is a copy
    two = sy.symmetrize(np.stack([noisy, barrel]), 9)
    np.testing.assert_allclose(two[0], sym, atol=1e-6)
    np.testing.assert_array_equal(sy.symmetrize(noisy, 1), noisy)


def test_order_is_detected_on_the_barrel_and_not_on_the_asymmetric_phantom(turned):
    vol, axis, _ = turned
    est = sy.estimate_symmetry_order(vol)
    assert est.order == 9 and not est.cylindrical
    assert est.orders.tolist() == list(range(2, 13))
    by_order = dict(zip(est.orders.tolist(), est.contrasts))
    assert by_order[9] > 0.6 and by_order[3] > 0.6  # C3 is a subgroup of C9
    assert max(by_order[n] for n in (2, 4, 5, 6, 7, 8, 10, 11, 12)) < 0.3
    assert math.degrees(math.acos(min(1.0, abs(float(est.axis.axis @ axis))))) < 2.0
    assert est.profile.shape == est.angles_deg.shape
    none = sy.estimate_symmetry_order(asymmetric_phantom(32))
    assert none.order == 1 and np.max(none.contrasts) < 0.6


def test_a_cylinder_is_reported_cylindrical():
    from spfluo.algorithms.phantoms import tube

    est = sy.estimate_symmetry_order(tube(24, radius=0.25, thickness=0.1, length=0.6))
    assert est.cylindrical and est.order == 1 and est.baseline > 0.97


def test_bad_inputs_are_rejected(barrel):
    with pytest.raises(ValueError, match="order must be an integer >= 2"):
        sy.find_symmetry_axis(barrel, 1)
    with pytest.raises(ValueError, match="cubic box"):
        sy.find_symmetry_axis(np.ones((16, 16, 12), np.float32), 3)
    with pytest.raises(ValueError, match="NaN"):
        bad = barrel.copy()
        bad[0, 0, 0] = np.nan
        sy.symmetrize(bad, 3)
    with pytest.raises(ValueError, match="no signal above its background"):
        sy.find_symmetry_axis(np.ones((16, 16, 16), np.float32), 3)
    with pytest.raises(ValueError, match="coarse_size"):
        sy.find_symmetry_axis(barrel, 9, coarse_size=4)
    with pytest.raises(ValueError, match="threshold"):
        sy.estimate_symmetry_order(barrel, threshold=0.0)
    with pytest.raises(ValueError, match="max_order"):
        sy.estimate_symmetry_order(barrel, max_order=1)
    with pytest.raises(ValueError, match="axis must be a SymmetryAxis"):
        sy.align_symmetry_axis(barrel, 9, axis=(0, 0, 1))
    with pytest.raises(ValueError, match="rotation must be"):
        sy.realign_poses(Poses.identity(1), np.eye(2), np.zeros(3))


def test_centring_shift_brings_the_centre_of_mass_to_the_box_centre():
    """A centred object moved by a known shift: the centring shift is minus that shift, and
    a volume without signal above its background is refused."""
    from spfluo.algorithms.fourier import shift_volume

    centred = asymmetric_phantom((32,) * 3, seed=1)
    com = lambda v: np.array([(v.sum(axis=tuple(a for a in range(3) if a != k))
                                * np.arange(32)).sum() for k in range(3)]) / v.sum()
    centred = shift_volume(centred, 16 - com(centred)).astype(np.float32)
    moved = shift_volume(centred, np.array([3.0, -2.0, 1.5])).astype(np.float32)
    np.testing.assert_allclose(sy.centring_shift(moved), [-3.0, 2.0, -1.5], atol=0.25)
    np.testing.assert_allclose(sy.centring_shift(moved[None]), sy.centring_shift(moved))
    with pytest.raises(ValueError, match="no signal"):
        sy.centring_shift(np.ones((16, 16, 16), np.float32))
