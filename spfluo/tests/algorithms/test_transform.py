"""Tests for spfluo.algorithms.transform (oracles: scipy.ndimage, np.rot90, brute force,
analytic rotations of Gaussian blobs, dot-product tests)."""

import numpy as np
import pytest
import scipy.ndimage as ndi
from scipy.spatial.transform import Rotation

from spfluo.algorithms import transform as T

P = np.eye(3)[::-1]  # reverses (x, y, z) <-> (z, y, x)


def zyx(rot: Rotation) -> np.ndarray:
    """Rotation matrices in the zyx frame: R_zyx = P R_xyz P."""
    return P @ rot.as_matrix() @ P


def random_rotations(n, seed):
    return zyx(Rotation.random(n, random_state=seed))


def smooth_volume(shape, seed=0, n_blobs=6, spread=4.0, sigma=(1.5, 2.5)):
    rng = np.random.default_rng(seed)
    centre = np.array([s // 2 for s in shape])
    grid = np.indices(shape).astype(np.float64) - centre[:, None, None, None]
    out = np.zeros(shape)
    for _ in range(n_blobs):
        p = rng.uniform(-spread, spread, 3)
        s = rng.uniform(*sigma)
        out += np.exp(-((grid - p[:, None, None, None]) ** 2).sum(0) / (2 * s * s))
    return out.astype(np.float32)


def affine_oracle(volume, rotation, translation, order):
    """particle(x) = f(R^T (x - c - t) + c) with scipy.ndimage.affine_transform."""
    c = np.array([s // 2 for s in volume.shape], dtype=float)
    offset = c - rotation.T @ (c + translation)
    return ndi.affine_transform(
        volume, rotation.T, offset=offset, order=order, mode="grid-constant", cval=0.0
    )


def central_sphere(shape, radius):
    grid = np.indices(shape) - np.array([s // 2 for s in shape])[:, None, None, None]
    return (grid**2).sum(0) <= radius**2


# -- real-space rotation ---------------------------------------------------------


@pytest.mark.parametrize("order", [0, 1, 3])
def test_rotate_matches_scipy_affine_transform(order):
    rng = np.random.default_rng(0)
    v = rng.standard_normal((10, 12, 14)).astype(np.float32)
    rots = random_rotations(4, seed=1)
    t = rng.uniform(-2, 2, (4, 3))
    out = T.rotate(v, rots, translations=t, order=order)
    assert out.shape == (4, 10, 12, 14) and out.dtype == np.float32
    for i in range(4):
        np.testing.assert_allclose(out[i], affine_oracle(v, rots[i], t[i], order), atol=2e-5)


@pytest.mark.parametrize("order", [1, 3])
def test_rotate_identity_is_identity(order):
    v = np.random.default_rng(1).standard_normal((9, 10, 11)).astype(np.float32)
    out = T.rotate(v, np.eye(3), order=order)
    assert out.shape == v.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, v, atol=1e-5)


def test_rotate_90_degrees_about_z_is_rot90():
    # odd (y, x) sizes: the centre n//2 is the exact middle, so the rotation is a permutation
    v = np.random.default_rng(2).standard_normal((6, 11, 11)).astype(np.float32)
    r = zyx(Rotation.from_euler("z", 90, degrees=True))  # physical z = array axis 0
    # +90 degrees about z turns +x into +y: np.rot90 from the x axis (2) towards y (1)
    expected = np.rot90(v, k=1, axes=(2, 1))
    np.testing.assert_allclose(T.rotate(v, r, order=1), expected, atol=1e-5)
    np.testing.assert_allclose(T.rotate(v, r, order=3), expected, atol=1e-4)
    op = T.RotationOperator(v.shape, r)
    np.testing.assert_allclose(op.apply(v)[0], expected, atol=1e-5)
    # 180 degrees is two quarter turns
    r180 = zyx(Rotation.from_euler("z", 180, degrees=True))
    np.testing.assert_allclose(T.rotate(v, r180), np.rot90(v, 2, axes=(1, 2)), atol=1e-5)


def test_geometry_rotation_about_z_turns_x_towards_y():
    # the conventions of geometry.py and transform.py agree: +x goes to +y
    from spfluo.algorithms.geometry import rotation_about_z

    v = np.zeros((5, 9, 9), np.float32)
    v[2, 4, 6] = 1  # on +x from the centre (2, 4, 4)
    out = T.rotate(v, rotation_about_z(np.pi / 2))
    assert out[2, 6, 4] == pytest.approx(1, abs=1e-5)  # now on +y
    assert out.sum() == pytest.approx(1, abs=1e-5)


def test_rotate_composition():
    v = smooth_volume((24, 24, 24), seed=3)
    r1, r2 = random_rotations(2, seed=4)
    twice = T.rotate(T.rotate(v, r1, order=3), r2, order=3)
    once = T.rotate(v, r2 @ r1, order=3)
    inner = central_sphere(v.shape, 8)
    err = np.linalg.norm((twice - once)[inner]) / np.linalg.norm(once[inner])
    assert err < 0.005  # measured 0.0006 (two cubic interpolations against one)


def test_rotate_then_undo_recovers_the_volume():
    # particle = T_t(R f); undo with the inverse pose (R^T, -R^T t)
    v = smooth_volume((24, 24, 24), seed=5)
    rots = random_rotations(3, seed=6)
    t = np.random.default_rng(7).uniform(-2, 2, (3, 3))
    particles = T.rotate(v, rots, translations=t, order=3)
    inv_t = -np.einsum("nji,nj->ni", rots, t)
    inner = central_sphere(v.shape, 7)
    for i in range(3):
        back = T.rotate(particles[i], rots[i].T, translations=inv_t[i], order=3)
        err = np.linalg.norm((back - v)[inner]) / np.linalg.norm(v[inner])
        assert err < 0.005  # measured 0.0017


def test_rotate_single_equals_batched():
    v = smooth_volume((12, 12, 12), seed=8)
    rots = random_rotations(3, seed=9)
    batch = T.rotate(v, rots, translations=[0.5, -1, 0.25])
    for i in range(3):
        np.testing.assert_array_equal(
            batch[i], T.rotate(v, rots[i], translations=[0.5, -1, 0.25])
        )


# -- trilinear operator with exact adjoint --------------------------------------


def test_rotation_operator_matches_rotate_order_1():
    rng = np.random.default_rng(10)
    v = rng.standard_normal((10, 11, 12)).astype(np.float32)
    rots = random_rotations(5, seed=11)
    t = rng.uniform(-3, 3, (5, 3))
    op = T.RotationOperator(v.shape, rots, t)
    assert op.n_poses == 5 and op.shape == (10, 11, 12)
    assert op.nbytes == 5 * v.size * 16
    out = op.apply(v)
    assert out.dtype == np.float32 and out.shape == (5, 10, 11, 12)
    np.testing.assert_allclose(out, T.rotate(v, rots, translations=t, order=1), atol=2e-5)
    # pairwise: volume i by pose i
    vols = rng.standard_normal((5, 10, 11, 12)).astype(np.float32)
    pair = op.apply(vols)
    for i in range(5):
        np.testing.assert_allclose(
            pair[i], T.rotate(vols[i], rots[i], translations=t[i], order=1), atol=2e-5
        )


def test_rotation_operator_adjoint_is_the_transpose_brute_force():
    # build the matrix of apply column by column and compare with adjoint row by row
    shape = (4, 5, 6)
    v_size = int(np.prod(shape))
    rots = random_rotations(2, seed=12)
    t = np.array([[0.3, -0.6, 0.2], [-1.2, 0.4, 0.7]])
    op = T.RotationOperator(shape, rots, t)
    eye = np.eye(v_size, dtype=np.float32).reshape((v_size,) + shape)
    a = np.stack([op.apply(e).ravel() for e in eye], axis=1)  # (2V, V)
    at = np.stack(
        [op.adjoint(e.reshape((2,) + shape)).ravel() for e in np.eye(2 * v_size, dtype=np.float32)],
        axis=1,
    )  # (V, 2V)
    np.testing.assert_allclose(at, a.T, atol=1e-6)


def test_rotation_operator_dot_product_test():
    rng = np.random.default_rng(13)
    shape = (12, 14, 16)
    rots = random_rotations(6, seed=14)
    op = T.RotationOperator(shape, rots, rng.uniform(-2, 2, (6, 3)))
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.standard_normal((6,) + shape).astype(np.float32)
    lhs = np.vdot(op.apply(x).astype(np.float64), y)
    rhs = np.vdot(x.astype(np.float64), op.adjoint(y))
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)
    # pairwise version: <A_i x_i, y_i> = <x_i, A_i^T y_i>
    xs = rng.standard_normal((6,) + shape).astype(np.float32)
    back = op.adjoint(y, reduce=False)
    assert back.shape == (6,) + shape and back.dtype == np.float32
    lhs = np.vdot(op.apply(xs).astype(np.float64), y)
    rhs = np.vdot(xs.astype(np.float64), back)
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)
    np.testing.assert_allclose(back.sum(0), op.adjoint(y), atol=1e-4)


def test_rotation_operator_errors():
    op = T.RotationOperator((6, 6, 6), random_rotations(2, seed=0))
    with pytest.raises(ValueError, match=r"volume must have shape"):
        op.apply(np.zeros((6, 6, 7), np.float32))
    with pytest.raises(ValueError, match=r"volume must have shape"):
        op.apply(np.zeros((3, 6, 6, 6), np.float32))
    with pytest.raises(ValueError, match=r"volumes must have shape"):
        op.adjoint(np.zeros((6, 6, 6), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        op.apply(np.full((6, 6, 6), np.nan, np.float32))
    with pytest.raises(ValueError, match="translations must have shape"):
        T.RotationOperator((6, 6, 6), random_rotations(2, seed=0), np.zeros((3, 3)))


# -- Fourier-space rotation -----------------------------------------------------


def test_centred_spectrum_conventions_and_round_trip():
    n = 10
    delta = np.zeros((n, n, n), np.float32)
    delta[n // 2, n // 2, n // 2] = 1
    spec = T.centred_spectrum(delta)
    assert spec.shape == (20, 20, 20) and spec.dtype == np.complex64
    np.testing.assert_allclose(spec, 1.0, atol=1e-6)  # centred delta: zero phase
    v = smooth_volume((n, n, n), seed=15)
    spec = T.centred_spectrum(v, oversampling=1.5)
    assert spec.shape == (15, 15, 15)
    assert spec[7, 7, 7].real == pytest.approx(v.sum(), rel=1e-5)  # zero frequency at m//2
    back = T.volume_from_centred_spectrum(spec, v.shape)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, v, atol=1e-5)


@pytest.mark.parametrize("correction, tolerance", [(False, 0.05), (True, 0.015)])
def test_fourier_rotation_agrees_with_real_space(correction, tolerance):
    v = smooth_volume((24, 24, 24), seed=16)
    rots = random_rotations(4, seed=17)
    reference = T.rotate(v, rots, order=3)
    spec = T.centred_spectrum(v, oversampling=2, gridding_correction=correction)
    rotated = T.rotate_fourier(spec, rots)
    assert rotated.shape == (4, 48, 48, 48) and rotated.dtype == np.complex64
    out = T.volume_from_centred_spectrum(rotated, v.shape)
    for i in range(4):
        err = np.linalg.norm(out[i] - reference[i]) / np.linalg.norm(reference[i])
        # measured 0.039 without correction, 0.0015-0.009 with it
        assert err < tolerance


def test_fourier_rotation_by_quarter_turn_is_exact_on_odd_grid():
    rng = np.random.default_rng(18)
    spec = (rng.standard_normal((5, 9, 9)) + 1j * rng.standard_normal((5, 9, 9))).astype(
        np.complex64
    )
    r = zyx(Rotation.from_euler("z", 90, degrees=True))
    np.testing.assert_allclose(
        T.rotate_fourier(spec, r), np.rot90(spec, k=1, axes=(2, 1)), atol=1e-5
    )


def test_fourier_rotation_at_points_equals_full_grid():
    v = smooth_volume((12, 12, 12), seed=19)
    spec = T.centred_spectrum(v)
    rots = random_rotations(3, seed=20)
    k = spec.shape[0]
    rng = np.random.default_rng(21)
    idx = rng.choice(k**3, size=200, replace=False)
    points = np.stack(np.unravel_index(idx, spec.shape), axis=1) - k // 2
    at_points = T.rotate_fourier(spec, rots, points=points)
    assert at_points.shape == (3, 200) and at_points.dtype == np.complex64
    full = T.rotate_fourier(spec, rots).reshape(3, -1)[:, idx]
    np.testing.assert_allclose(at_points, full, atol=1e-4)
    single = T.rotate_fourier(spec, rots[1], points=points)
    np.testing.assert_allclose(single, at_points[1], atol=1e-6)
    # off-grid points: trilinear interpolation between the neighbouring samples
    mid = T.rotate_fourier(spec, np.eye(3), points=[[0.5, 0.0, 0.0]])
    c = k // 2
    assert mid[0] == pytest.approx(0.5 * (spec[c, c, c] + spec[c + 1, c, c]), rel=1e-5)


# -- exact rotation about z (quarter turn + Fourier shears) ---------------------


def gaussian_blobs(shape, blobs, rotation=np.eye(3)):
    """Sum of isotropic Gaussians (centre (z, y, x) from the box centre, sigma), each
    centre turned by ``rotation``: the analytic rotation of a band-limited volume."""
    grid = np.indices(shape).astype(np.float64) - np.array([s // 2 for s in shape])[
        :, None, None, None]
    out = np.zeros(shape)
    for centre, sigma in blobs:
        d = grid - (rotation @ np.asarray(centre, float))[:, None, None, None]
        out += np.exp(-(d**2).sum(0) / (2 * sigma**2))
    return out


BLOBS = [((1.0, 5.0, -3.0), 1.5), ((-2.0, -4.0, 5.5), 2.0), ((0.0, 0.5, 1.0), 1.7),
         ((2.0, -6.0, -2.0), 1.6)]


@pytest.mark.parametrize("n", [39, 40])
@pytest.mark.parametrize("outside", ["zero", "wrap"])
def test_rotate_about_z_matches_the_analytic_rotation(n, outside):
    from spfluo.algorithms.geometry import rotation_about_z

    # the blobs vanish (< 1e-7) outside the cylinder where "wrap" is exact (0.46 n)
    shape = (7, n, n)
    v = gaussian_blobs(shape, BLOBS).astype(np.float32)
    angles = np.array([0.3, -2.5, np.pi / 4, -np.pi / 4, 2 * np.pi / 9, 7.0])
    out = T.rotate_about_z(v, angles, outside=outside)
    assert out.shape == (6,) + shape and out.dtype == np.float32
    for a, o in zip(angles, out):
        expected = gaussian_blobs(shape, BLOBS, rotation_about_z(a))
        # measured 2e-5 of the peak (sigma 1.5: aliased spectral tail); trilinear 7e-2
        np.testing.assert_allclose(o, expected, atol=6e-5 * expected.max())
    trilinear = T.rotate(v, rotation_about_z(0.3), order=1)
    assert np.abs(trilinear - gaussian_blobs(shape, BLOBS, rotation_about_z(0.3))).max() > 1e-2


@pytest.mark.parametrize("outside", ["zero", "wrap"])
def test_rotate_about_z_quarter_turns_are_exact_permutations(outside):
    rng = np.random.default_rng(11)
    odd = rng.standard_normal((2, 4, 11, 11)).astype(np.float32)  # white noise, batched
    for k in (1, 2, 3, -1, 4):
        out = T.rotate_about_z(odd, k * np.pi / 2, outside=outside)
        # +90 degrees turns +x towards +y: np.rot90 from the x axis (-1) towards y (-2)
        np.testing.assert_array_equal(out, np.rot90(odd, k, axes=(-1, -2)))
    # even side: the centre N//2 is not the middle (N-1)/2 that np.rot90 turns about
    even = rng.standard_normal((3, 10, 10)).astype(np.float32)
    out = T.rotate_about_z(even, np.pi / 2, outside=outside)
    if outside == "wrap":  # on the torus: rot90 then one voxel along x
        np.testing.assert_array_equal(out, np.roll(np.rot90(even, 1, axes=(2, 1)), 1, axis=2))
    else:  # what comes from outside the box is 0, as with rotate (exact on the grid)
        r = zyx(Rotation.from_euler("z", 90, degrees=True))
        np.testing.assert_allclose(out, T.rotate(even, r, order=1), atol=1e-6)
        assert not out[:, :, 0].any()


@pytest.mark.parametrize("outside", ["zero", "wrap"])
def test_rotate_about_z_nine_steps_of_40_degrees_return_the_input(outside):
    v = gaussian_blobs((5, 40, 40), BLOBS).astype(np.float32)
    out = v
    for _ in range(9):
        out = T.rotate_about_z(out, np.radians(40.0), outside=outside)
    np.testing.assert_allclose(out, v, atol=1.5e-4 * v.max())  # measured 5e-5
    back = T.rotate_about_z(T.rotate_about_z(v, 1.1, outside=outside), -1.1, outside=outside)
    np.testing.assert_allclose(back, v, atol=2e-5 * v.max())


@pytest.mark.parametrize("n", [15, 16])
@pytest.mark.parametrize("outside", ["zero", "wrap"])
def test_rotate_about_z_adjoint_is_the_rotation_by_minus_the_angle(n, outside):
    # dot-product test on white noise (not band-limited): exact to float64 precision
    rng = np.random.default_rng(12)
    u = rng.standard_normal((3, n, n))
    w = rng.standard_normal((3, n, n))
    for angle in (0.3, -0.7, np.pi / 4, 2.0, -2.0, 3 * np.pi / 4, 7.0):
        lhs = np.sum(T.rotate_about_z(u, angle, outside=outside) * w)
        rhs = np.sum(u * T.rotate_about_z(w, -angle, outside=outside))
        assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)
    assert T.rotate_about_z(u, 0.3).dtype == np.float64  # float64 stays float64


def test_rotate_about_z_wraps_corners_only_with_wrap():
    # a blob in a corner of the box (outside the inscribed cylinder)
    v = gaussian_blobs((1, 32, 32), [((0.0, -14.0, 12.0), 1.5)]).astype(np.float32)
    zero = T.rotate_about_z(v, np.radians(40))
    wrap = T.rotate_about_z(v, np.radians(40), outside="wrap")
    assert zero.sum() < 0.1 * v.sum()  # it left the box
    assert wrap.sum() == pytest.approx(v.sum(), rel=1e-4)  # it came back in elsewhere


def test_rotate_about_z_batches_and_channels():
    v = np.stack([gaussian_blobs((6, 20, 20), BLOBS[:2]),
                  gaussian_blobs((6, 20, 20), BLOBS[2:])]).astype(np.float32)
    angles = np.array([0.5, np.pi / 2, -1.0, 0.0])
    batch = T.rotate_about_z(v, angles)
    assert batch.shape == (4, 2, 6, 20, 20)
    for a, out in zip(angles, batch):
        np.testing.assert_allclose(out, T.rotate_about_z(v, a), atol=1e-6)
        np.testing.assert_allclose(out[1], T.rotate_about_z(v[1], a), atol=1e-6)
    np.testing.assert_array_equal(batch[3], v)


def test_rotate_about_z_errors():
    v = np.zeros((4, 6, 6), np.float32)
    with pytest.raises(ValueError, match="square"):
        T.rotate_about_z(np.zeros((4, 6, 8)), 0.1)
    with pytest.raises(ValueError, match="outside must be 'zero' or 'wrap'"):
        T.rotate_about_z(v, 0.1, outside="nearest")
    with pytest.raises(ValueError, match="angles must be"):
        T.rotate_about_z(v, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="angles must be"):
        T.rotate_about_z(v, [np.nan])
    with pytest.raises(ValueError, match="angles must be"):
        T.rotate_about_z(v, [])
    with pytest.raises(ValueError, match="volume must be real"):
        T.rotate_about_z(v.astype(np.complex64), 0.1)
    with pytest.raises(ValueError, match="volume must have shape"):
        T.rotate_about_z(np.zeros((6, 6)), 0.1)
    with pytest.raises(ValueError, match="volume contains NaN"):
        T.rotate_about_z(np.full((2, 4, 4), np.nan), 0.1)


# -- validation -----------------------------------------------------------------


def test_rotation_input_errors():
    v = np.zeros((6, 6, 6), np.float32)
    with pytest.raises(ValueError, match=r"rotations must have shape \(3, 3\) or \(N, 3, 3\)"):
        T.rotate(v, np.eye(4))
    with pytest.raises(ValueError, match=r"rotations must have shape"):
        T.rotate(v, np.zeros((2, 3, 2)))
    with pytest.raises(ValueError, match="proper rotation matrices"):
        T.rotate(v, 2 * np.eye(3))
    with pytest.raises(ValueError, match="proper rotation matrices"):
        T.rotate(v, -np.eye(3))  # a reflection
    with pytest.raises(ValueError, match="rotations contains NaN"):
        T.rotate(v, np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="rotations is empty"):
        T.rotate(v, np.zeros((0, 3, 3)))
    with pytest.raises(ValueError, match=r"volume must have shape \(Z, Y, X\)"):
        T.rotate(np.zeros((6, 6)), np.eye(3))
    with pytest.raises(ValueError, match="volume contains NaN"):
        T.rotate(np.full((4, 4, 4), np.nan), np.eye(3))
    with pytest.raises(ValueError, match="order must be"):
        T.rotate(v, np.eye(3), order=7)
    with pytest.raises(ValueError, match="translations must have shape"):
        T.rotate(v, np.eye(3), translations=[1, 2])
    with pytest.raises(ValueError, match="translations contains NaN"):
        T.rotate(v, np.eye(3), translations=[1, np.nan, 2])
    spec = T.centred_spectrum(v)
    with pytest.raises(ValueError, match=r"points must have shape \(M, 3\)"):
        T.rotate_fourier(spec, np.eye(3), points=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="points contains NaN"):
        T.rotate_fourier(spec, np.eye(3), points=[[0, np.nan, 0]])
    with pytest.raises(ValueError, match="oversampling must be"):
        T.centred_spectrum(v, oversampling=0.5)
    with pytest.raises(ValueError, match="must not exceed"):
        T.volume_from_centred_spectrum(spec, (13, 12, 12))
