"""Tests of spfluo.algorithms.phantoms: ranges, analytic volumes, symmetry, refinement."""

import math

import numpy as np
import pytest
import scipy.ndimage

from spfluo.algorithms.phantoms import asymmetric_phantom, c9_barrel, sphere_shell, tube


def _corr(a, b):
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _rotate(vol, angle_deg, axes):
    """Rotation about the box centre (N//2 along odd axes = the geometric centre)."""
    return scipy.ndimage.rotate(
        vol.astype(np.float64), angle_deg, axes=axes, reshape=False, order=1
    )


PHANTOMS = {
    "barrel": lambda s: c9_barrel(s),
    "asymmetric": lambda s: asymmetric_phantom(s, seed=0),
    "shell": lambda s: sphere_shell(s, radius=0.3, thickness=0.1),
    "tube": lambda s: tube(s, radius=0.3, thickness=0.08, length=0.7),
}


@pytest.mark.parametrize("name", sorted(PHANTOMS))
@pytest.mark.parametrize("shape", [(16, 16, 16), (20, 24, 22)])
def test_phantoms_range_dtype_shape(name, shape):
    vol = PHANTOMS[name](shape)
    assert vol.shape == shape and vol.dtype == np.float32
    assert vol.min() >= 0 and vol.max() <= 1
    assert vol.max() > 0.5  # the object is there
    # nothing touches the box border
    border = np.concatenate(
        [vol[[0, -1]].ravel(), vol[:, [0, -1]].ravel(), vol[:, :, [0, -1]].ravel()]
    )
    assert border.max() == 0


def test_sphere_shell_and_tube_volumes_match_geometry():
    n = 40
    radius, thickness = 0.3 * n, 0.1 * n
    shell = sphere_shell(n, radius=0.3, thickness=0.1)
    exact = 4 / 3 * math.pi * ((radius + thickness / 2) ** 3 - (radius - thickness / 2) ** 3)
    assert float(shell.sum(dtype=np.float64)) == pytest.approx(exact, rel=0.005)
    cyl = tube(n, radius=0.3, thickness=0.1, length=0.6)
    exact = 2 * math.pi * radius * thickness * 0.6 * n  # annulus area x length
    assert float(cyl.sum(dtype=np.float64)) == pytest.approx(exact, rel=0.005)
    # the box unit is the smallest side: a longer box holds the same object
    longer = tube((48, 40, 40), radius=0.3, thickness=0.1, length=0.6)
    np.testing.assert_allclose(longer[4:44], cyl, atol=1e-6)


@pytest.mark.parametrize("name", sorted(PHANTOMS))
def test_refined_grid_converges_to_coarse(name):
    # The box centre is voxel N//2, so a 2x finer grid is offset by a quarter of a coarse
    # voxel; with a 3x finer grid the fine voxels 3i-1, 3i, 3i+1 tile coarse voxel i exactly.
    n = 16
    coarse = PHANTOMS[name](n).astype(np.float64)
    fine = PHANTOMS[name](3 * n).astype(np.float64)
    blocks = np.roll(fine, 1, axis=(0, 1, 2)).reshape(n, 3, n, 3, n, 3).mean(axis=(1, 3, 5))
    error = np.abs(blocks - coarse).sum() / coarse.sum()
    shifted = np.abs(np.roll(coarse, 1, axis=2) - coarse).sum() / coarse.sum()
    assert error < 0.12
    assert error < 0.25 * shifted


def test_c9_barrel_is_c9_symmetric():
    n = 41  # odd: the rotation centre of scipy.ndimage.rotate is the voxel N//2
    vol = c9_barrel(n).astype(np.float64)
    errors = {
        a: np.abs(_rotate(vol, a, (1, 2)) - vol).sum() / vol.sum()
        for a in (0, 20, 40, 80, 120, 160)
    }
    # rotations by multiples of 40 degrees leave only the interpolation error of the rotation
    # itself (about the same as a rotation by 0 ... with order=1 the 0 rotation is exact, so
    # compare with a non-symmetric angle instead)
    for angle in (40, 80, 120, 160):
        assert errors[angle] < 0.45 * errors[20]
    # exact statement on the continuous object: a barrel whose blades start at 40 degrees is
    # the same barrel
    np.testing.assert_allclose(c9_barrel(24, phase=math.radians(40)), c9_barrel(24), atol=1e-6)
    assert np.abs(c9_barrel(24, phase=math.radians(20)) - c9_barrel(24)).max() > 0.5
    # another order
    five = c9_barrel(n, n_blades=5).astype(np.float64)
    e72 = np.abs(_rotate(five, 72, (1, 2)) - five).sum() / five.sum()
    e36 = np.abs(_rotate(five, 36, (1, 2)) - five).sum() / five.sum()
    assert e72 < 0.45 * e36


def test_c9_barrel_geometry():
    n = 40
    vol = c9_barrel(n, length=0.6).astype(np.float64)
    zprofile = vol.sum(axis=(1, 2))
    occupied = np.nonzero(zprofile > 0.5 * zprofile.max())[0]
    assert occupied[-1] - occupied[0] + 1 == pytest.approx(0.6 * n, abs=1)
    # the rods sit around radius 0.22 n
    yy, xx = np.mgrid[:n, :n] - n // 2
    rho = np.hypot(yy, xx)
    section = vol[n // 2]
    mean_radius = (section * rho).sum() / section.sum()
    assert mean_radius == pytest.approx(0.22 * n, rel=0.15)
    # 27 rods of radius 0.035 n over 0.6 n, minus the overlaps of touching rods
    rods = 27 * math.pi * (0.035 * n) ** 2 * 0.6 * n
    assert 0.8 * rods < vol.sum() <= 1.01 * rods


def test_c9_barrel_second_channel_torus():
    n = 41
    both = c9_barrel(n, second_channel=True)
    assert both.shape == (2, n, n, n) and both.dtype == np.float32
    assert both.min() >= 0 and both.max() <= 1
    np.testing.assert_array_equal(both[0], c9_barrel(n))
    torus = both[1].astype(np.float64)
    # rotation-invariant about z: a rotation by 37 degrees changes it less than a shift by
    # one voxel along z does (only the interpolation of the rotation remains)
    assert _corr(torus, _rotate(torus, 37, (1, 2))) > 0.98
    assert _corr(torus, _rotate(torus, 37, (1, 2))) > _corr(torus, np.roll(torus, 1, axis=0)) + 0.02
    # centred around the proximal (low z) half of the barrel, wider than the barrel
    z = np.arange(n) - n // 2
    zc = (torus.sum(axis=(1, 2)) * z).sum() / torus.sum()
    assert zc == pytest.approx((-0.3 + 0.075 + 0.15) * n, abs=0.5)
    yy, xx = np.mgrid[:n, :n] - n // 2
    rho = np.hypot(yy, xx)
    r_torus = (torus.sum(axis=0) * rho).sum() / torus.sum()
    assert r_torus == pytest.approx(1.55 * 0.22 * n, rel=0.05)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_asymmetric_phantom_has_no_symmetry(seed):
    n = 33
    vol = asymmetric_phantom(n, seed=seed).astype(np.float64)
    for axes in [(0, 1), (0, 2), (1, 2)]:
        for k in (1, 2, 3):  # 90, 180, 270 degrees, exact on the grid
            assert _corr(vol, np.rot90(vol, k, axes=axes)) < 0.6
        for angle in (120, 240):
            assert _corr(vol, _rotate(vol, angle, axes)) < 0.6
    # a proper rotation by 360 degrees through the same interpolation is (close to) itself
    assert _corr(vol, _rotate(vol, 360, (0, 1))) > 0.99


def test_asymmetric_phantom_seeds():
    a = asymmetric_phantom(16, seed=3)
    np.testing.assert_array_equal(a, asymmetric_phantom(16, seed=np.random.default_rng(3)))
    assert np.abs(a - asymmetric_phantom(16, seed=4)).max() > 0.3
    # distinct intensity levels in the interior of the objects
    big = asymmetric_phantom(32, seed=3)
    values = big[big > 0.3].astype(np.float64)
    levels = np.linspace(0.35, 1.0, 7)
    present = [np.count_nonzero(np.isclose(values, level, atol=1e-5)) > 10 for level in levels]
    assert sum(present) >= 5


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: sphere_shell((16, 16), radius=0.3, thickness=0.1), "shape"),
        (lambda: sphere_shell((16, 0, 16), radius=0.3, thickness=0.1), "shape"),
        (lambda: sphere_shell(16, radius=-0.3, thickness=0.1), "radius"),
        (lambda: sphere_shell(16, radius=0.5, thickness=0.2), "beyond the box"),
        (lambda: sphere_shell(16, radius=0.3, thickness=float("nan")), "thickness"),
        (lambda: tube(16, radius=0.3, thickness=0.1, length=1.2), "beyond the box"),
        (lambda: tube(16, radius=0.3, thickness=0.1, length=0.5, supersample=0), "supersample"),
        (lambda: c9_barrel(16, n_blades=0), "n_blades"),
        (lambda: c9_barrel(16, radius=0.45), "beyond the box"),
        (lambda: c9_barrel(16, blade_tilt=float("inf")), "blade_tilt"),
        (lambda: c9_barrel(16, second_channel=True, torus_thickness=0.8), "torus_thickness"),
        (lambda: c9_barrel(16, second_channel=True, torus_radius=0.48), "beyond the box"),
        (lambda: asymmetric_phantom(16, n_ellipsoids=1, n_rods=0), "at least 2"),
        (lambda: asymmetric_phantom(16, n_rods=-1), "n_rods"),
    ],
)
def test_phantoms_reject_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
