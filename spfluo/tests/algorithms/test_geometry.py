"""Tests of spfluo.algorithms.geometry.

Oracles: scipy.spatial.transform.Rotation (xyz frame), RELION's published
closed-form Euler matrix, brute-force searches, and physical checks on small
arrays indexed (z, y, x).
"""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import ndimage, stats
from scipy.spatial.transform import Rotation

from spfluo.algorithms import geometry as g

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)
P = np.eye(3)[::-1]  # reverses (x, y, z) <-> (z, y, x)

angle_deg = st.floats(-180.0, 180.0, allow_nan=False)
tilt_deg = st.floats(0.0, 180.0, allow_nan=False)
eulers = st.tuples(angle_deg, tilt_deg, angle_deg).map(np.array)
quaternions = (
    st.tuples(*[st.floats(-1.0, 1.0, allow_nan=False)] * 4)
    .map(np.array)
    .filter(lambda q: np.linalg.norm(q) > 0.1)
)
rotvecs = st.tuples(*[st.floats(-6.0, 6.0, allow_nan=False)] * 3).map(np.array)
seeds = st.integers(0, 2**32 - 1)


def scipy_xyz(R_zyx):
    """scipy Rotation of zyx-frame matrices (independent of swap_xyz_zyx)."""
    return Rotation.from_matrix(P @ np.asarray(R_zyx, dtype=float) @ P)


# ---------- swap


@SETTINGS
@given(seeds)
def test_swap_is_conjugation_by_reversal_and_self_inverse(seed):
    rng = np.random.default_rng(seed)
    R = Rotation.random(4, random_state=seed).as_matrix()
    np.testing.assert_allclose(g.swap_xyz_zyx(R), P @ R @ P, atol=0)
    np.testing.assert_allclose(g.swap_xyz_zyx(g.swap_xyz_zyx(R)), R, atol=0)
    M = np.zeros((4, 4, 4))
    M[:, :3, :3] = R
    M[:, :3, 3] = rng.normal(size=(4, 3))
    M[:, 3, 3] = 1
    S = g.swap_xyz_zyx(M)
    np.testing.assert_allclose(S[:, :3, :3], P @ R @ P, atol=0)
    np.testing.assert_allclose(S[:, :3, 3], M[:, :3, 3][:, ::-1], atol=0)
    np.testing.assert_allclose(S[:, 3], M[:, 3], atol=0)
    np.testing.assert_allclose(g.swap_xyz_zyx(S), M, atol=0)


@SETTINGS
@given(seeds)
def test_swap_rotates_zyx_coordinates_like_xyz(seed):
    # rotating a (z, y, x) coordinate vector by R_zyx equals rotating the
    # reversed (x, y, z) vector by R_xyz
    rng = np.random.default_rng(seed)
    R_xyz = Rotation.random(random_state=seed).as_matrix()
    v_xyz = rng.normal(size=3)
    R_zyx = g.swap_xyz_zyx(R_xyz)
    np.testing.assert_allclose(R_zyx @ v_xyz[::-1], (R_xyz @ v_xyz)[::-1], atol=1e-12)
    M = np.eye(4)
    M[:3, :3] = R_xyz
    M[:3, 3] = rng.normal(size=3)
    p_xyz = np.append(v_xyz, 1.0)
    p_zyx = np.append(v_xyz[::-1], 1.0)
    out = g.swap_xyz_zyx(M) @ p_zyx
    np.testing.assert_allclose(out[:3], (M @ p_xyz)[:3][::-1], atol=1e-12)


def test_swap_keeps_dtype_and_rejects_bad_shape():
    assert g.swap_xyz_zyx(np.eye(3, dtype=np.float32)).dtype == np.float32
    with pytest.raises(ValueError, match=r"matrix must have shape \(\.\.\., 3, 3\) or"):
        g.swap_xyz_zyx(np.eye(2))


# ---------- Euler


@SETTINGS
@given(eulers)
def test_euler_matrix_matches_scipy_definition(angles):
    expected = Rotation.from_euler("ZYZ", angles, degrees=True).as_matrix().T
    np.testing.assert_allclose(g.matrix_from_euler(angles, frame="xyz"), expected, atol=1e-12)
    np.testing.assert_allclose(g.matrix_from_euler(angles), P @ expected @ P, atol=1e-12)
    np.testing.assert_allclose(
        g.matrix_from_euler(np.deg2rad(angles), degrees=False, frame="xyz"), expected, atol=1e-12
    )


@pytest.mark.parametrize(
    "rot,tilt,psi", [(0.3, 0.7, -1.2), (-2.5, 2.9, 0.4), (1.0, 0.0, 2.0), (3.0, np.pi, -0.5)]
)
def test_euler_matrix_matches_relion_closed_form(rot, tilt, psi):
    # RELION Euler_angles2matrix (src/euler.cpp), written out entry by entry
    ca, sa = np.cos(rot), np.sin(rot)
    cb, sb = np.cos(tilt), np.sin(tilt)
    cg, sg = np.cos(psi), np.sin(psi)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    A = np.array(
        [
            [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
            [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
            [sc, ss, cb],
        ]
    )
    got = g.matrix_from_euler([rot, tilt, psi], degrees=False, frame="xyz")
    np.testing.assert_allclose(got, A, atol=1e-14)
    assert got[0, 2] == pytest.approx(-np.cos(psi) * np.sin(tilt), abs=1e-15)


@SETTINGS
@given(eulers)
@example(np.array([2.0, 1.0, 180.0]))
@example(np.array([-180.0, 90.0, 180.0]))
@example(np.array([30.0, 0.0, -170.0]))
@example(np.array([30.0, 180.0, 170.0]))
def test_euler_round_trip(angles):
    R = g.matrix_from_euler(angles)
    back = g.euler_from_matrix(R)
    np.testing.assert_allclose(g.matrix_from_euler(back), R, atol=1e-9)
    assert -180 <= back[0] < 180 and 0 <= back[1] <= 180 and -180 <= back[2] < 180
    if 1e-3 < angles[1] < 180 - 1e-3:  # away from gimbal lock the angles are unique
        diff = (back - angles + 180) % 360 - 180
        np.testing.assert_allclose(diff, 0, atol=1e-6)
    R_xyz = g.matrix_from_euler(angles, frame="xyz")
    np.testing.assert_allclose(g.euler_from_matrix(R_xyz, frame="xyz"), back, atol=1e-9)


@pytest.mark.parametrize("tilt", [0.0, 180.0, 1e-12, 180.0 - 1e-12])
def test_euler_gimbal_lock_gives_valid_angles(tilt):
    R = g.matrix_from_euler([40.0, tilt, 25.0])
    rot, tilt_back, psi = g.euler_from_matrix(R)
    assert psi == 0.0
    assert tilt_back == pytest.approx(tilt, abs=1e-9)
    assert rot == pytest.approx(65.0 if tilt < 90 else 15.0, abs=1e-9)
    np.testing.assert_allclose(g.matrix_from_euler([rot, tilt_back, psi]), R, atol=1e-12)


def test_euler_dtypes_and_errors():
    a32 = np.array([[10, 20, 30]], dtype=np.float32)
    assert g.matrix_from_euler(a32).dtype == np.float32
    assert g.matrix_from_euler([10, 20, 30]).dtype == np.float64
    assert g.euler_from_matrix(g.matrix_from_euler(a32)).dtype == np.float32
    with pytest.raises(ValueError, match=r"angles must have shape \(\.\.\., 3\)"):
        g.matrix_from_euler([1.0, 2.0])
    with pytest.raises(ValueError, match="angles contains NaN"):
        g.matrix_from_euler([1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="frame must be 'zyx' or 'xyz', got 'yxz'"):
        g.matrix_from_euler([1.0, 2.0, 3.0], frame="yxz")
    with pytest.raises(ValueError, match="R is not a stack of rotation matrices"):
        g.euler_from_matrix(2 * np.eye(3))
    with pytest.raises(ValueError, match="R is not a stack of rotation matrices"):
        g.euler_from_matrix(np.diag([1.0, 1.0, -1.0]))


# ---------- quaternions, rotvec, axis-angle


@SETTINGS
@given(quaternions)
def test_quaternion_matches_scipy(q):
    expected = Rotation.from_quat(q, scalar_first=True).as_matrix()
    np.testing.assert_allclose(g.matrix_from_quaternion(q, frame="xyz"), expected, atol=1e-12)
    np.testing.assert_allclose(g.matrix_from_quaternion(q), P @ expected @ P, atol=1e-12)
    back = g.quaternion_from_matrix(expected, frame="xyz")
    assert back[0] >= 0
    qn = q / np.linalg.norm(q)
    sign_err = min(np.abs(back - qn).max(), np.abs(back + qn).max())
    assert sign_err < 1e-9
    np.testing.assert_allclose(g.quaternion_from_matrix(P @ expected @ P), back, atol=1e-12)


@SETTINGS
@given(seeds)
def test_quaternion_from_matrix_matches_scipy_batch(seed):
    r = Rotation.random(50, random_state=seed)
    q = g.quaternion_from_matrix(r.as_matrix(), frame="xyz")
    expected = r.as_quat(canonical=True, scalar_first=True)
    np.testing.assert_allclose(q, expected, atol=1e-12)


def test_quaternion_errors():
    with pytest.raises(ValueError, match="zero quaternion"):
        g.matrix_from_quaternion([0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"q must have shape \(\.\.\., 4\)"):
        g.matrix_from_quaternion([1.0, 0.0, 0.0])


@SETTINGS
@given(rotvecs)
def test_rotvec_matches_scipy(v):
    expected = Rotation.from_rotvec(v).as_matrix()
    np.testing.assert_allclose(g.matrix_from_rotvec(v, frame="xyz"), expected, atol=1e-12)
    R = g.matrix_from_rotvec(v)
    np.testing.assert_allclose(R, P @ expected @ P, atol=1e-12)
    back = g.rotvec_from_matrix(R)
    assert np.linalg.norm(back) <= np.pi + 1e-12
    np.testing.assert_allclose(g.matrix_from_rotvec(back), R, atol=1e-9)
    ref = Rotation.from_matrix(expected).as_rotvec()
    if np.linalg.norm(ref) < np.pi - 1e-6:  # unique away from half turns
        np.testing.assert_allclose(back, ref, atol=1e-9)


def test_rotvec_small_angles_are_accurate():
    v = np.array([1e-9, -2e-9, 3e-10])
    back = g.rotvec_from_matrix(g.matrix_from_rotvec(v))
    np.testing.assert_allclose(back, v, rtol=1e-6, atol=0)
    np.testing.assert_allclose(g.matrix_from_rotvec(np.zeros(3)), np.eye(3), atol=0)


@SETTINGS
@given(seeds)
def test_axis_angle_round_trip_and_scipy(seed):
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=(20, 3))
    angle = rng.uniform(-4, 4, size=20)
    unit = axis / np.linalg.norm(axis, axis=1, keepdims=True)
    expected = Rotation.from_rotvec(unit * angle[:, None]).as_matrix()
    R = g.matrix_from_axis_angle(axis, angle)
    np.testing.assert_allclose(R, P @ expected @ P, atol=1e-12)
    ax, an = g.axis_angle_from_matrix(R)
    assert np.all((an >= 0) & (an <= np.pi))
    np.testing.assert_allclose(np.linalg.norm(ax, axis=1), 1, atol=1e-12)
    np.testing.assert_allclose(g.matrix_from_axis_angle(ax, an), R, atol=1e-9)
    # same axis up to the sign of the angle
    flip = np.sign(angle) * np.where(np.abs(angle) > np.pi, -1, 1)
    np.testing.assert_allclose(ax, unit * flip[:, None], atol=1e-8)


def test_axis_angle_identity_and_errors():
    ax, an = g.axis_angle_from_matrix(np.eye(3))
    np.testing.assert_array_equal(ax, [0.0, 0.0, 1.0])
    assert an == 0.0
    with pytest.raises(ValueError, match="axis contains a zero vector"):
        g.matrix_from_axis_angle([0.0, 0.0, 0.0], 1.0)
    with pytest.raises(ValueError, match="does not broadcast"):
        g.matrix_from_axis_angle(np.ones((3, 3)), np.ones(4))


# ---------- rotation about z


def test_rotation_about_z_matches_scipy_and_keeps_axis0():
    angles = np.linspace(-3, 3, 7)
    R = g.rotation_about_z(angles)
    expected = Rotation.from_rotvec(np.outer(angles, [0, 0, 1])).as_matrix()
    np.testing.assert_allclose(R, P @ expected @ P, atol=1e-12)
    np.testing.assert_allclose(R[:, 0], np.tile([1.0, 0.0, 0.0], (7, 1)), atol=0)
    np.testing.assert_allclose(R[:, :, 0], np.tile([1.0, 0.0, 0.0], (7, 1)), atol=0)


def test_rotation_about_z_turns_the_yx_plane_of_an_array():
    # a voxel on +x moves to +y for +90 degrees (right-handed about z);
    # a voxel on the z axis (array axis 0) does not move
    shape = (17, 17, 17)
    c = np.array([8, 8, 8])
    f = np.zeros(shape)
    f[tuple(c + [0, 0, 5])] = 1.0  # +x
    f[tuple(c + [4, 0, 0])] = 2.0  # +z
    R = g.rotation_about_z(np.pi / 2)
    # particle(x) = f(R^T (x - c) + c)
    out = ndimage.affine_transform(f, R.T, offset=c - R.T @ c, order=1)
    assert np.unravel_index(np.argmax(out == 1.0), shape) == tuple(c + [0, 5, 0])
    assert out[tuple(c + [4, 0, 0])] == pytest.approx(2.0)
    assert out[tuple(c + [0, 0, 5])] == pytest.approx(0.0)


# ---------- random rotations


def test_perturb_rotations_turns_each_by_the_angle_about_random_axes():
    R = g.random_rotations(2000, seed=1)
    out = g.perturb_rotations(R, np.deg2rad(15.0), seed=2)
    np.testing.assert_allclose(np.degrees(g.geodesic_distance(R, out)), 15.0, atol=1e-9)
    np.testing.assert_array_equal(out, g.perturb_rotations(R, np.deg2rad(15.0), seed=2))
    # the turn R^T out has a uniformly distributed axis: its mean is 0 (std 1/sqrt(3 n))
    axes, angles = g.axis_angle_from_matrix(np.swapaxes(R, 1, 2) @ out)
    np.testing.assert_allclose(angles, np.deg2rad(15.0), atol=1e-9)
    assert np.abs(axes.mean(axis=0)).max() < 0.06
    np.testing.assert_allclose(g.perturb_rotations(R[:3], 0.0, seed=0), R[:3], atol=1e-15)
    with pytest.raises(ValueError, match="angle must be in"):
        g.perturb_rotations(R, 4.0)
    with pytest.raises(ValueError, match=r"shape \(n, 3, 3\)"):
        g.perturb_rotations(np.eye(3), 0.1)
    with pytest.raises(ValueError, match="not a stack of rotation"):
        g.perturb_rotations(2 * R[:2], 0.1)


def test_random_rotations_are_haar_uniform_and_seeded():
    R = g.random_rotations(4000, seed=7)
    assert R.shape == (4000, 3, 3)
    gram = np.swapaxes(R, 1, 2) @ R
    np.testing.assert_allclose(gram, np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1, atol=1e-12)
    np.testing.assert_array_equal(R, g.random_rotations(4000, seed=7))
    assert not np.allclose(R[:5], g.random_rotations(5, seed=8))
    # Haar: the mean matrix is 0 and the angle has CDF (theta - sin theta) / pi
    assert np.abs(R.mean(axis=0)).max() < 0.05
    theta = g.geodesic_distance(R, np.eye(3))
    p = stats.kstest(theta, lambda t: (t - np.sin(t)) / np.pi).pvalue
    assert p > 1e-3
    assert g.random_rotations(0).shape == (0, 3, 3)
    with pytest.raises(ValueError, match="n must be an integer >= 0, got -1"):
        g.random_rotations(-1)


# ---------- directions


def test_fibonacci_directions_formula_and_uniformity():
    n = 200
    d = g.fibonacci_directions(n)
    G = (1 + 5**0.5) / 2
    j = np.arange(n)
    phi1 = (2 * np.pi * j / G) % (2 * np.pi)
    phi2 = np.arccos(1 - (2 * j + 1) / n)
    expected = np.stack(
        [np.sin(phi2) * np.cos(phi1), np.sin(phi2) * np.sin(phi1), np.cos(phi2)], axis=1
    )
    np.testing.assert_allclose(d, expected, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1, atol=1e-12)
    a1, a2 = g.direction_angles(d)
    np.testing.assert_allclose(np.cos(a1 - phi1), 1, atol=1e-12)
    np.testing.assert_allclose(a2, phi2, atol=1e-12)
    # near-uniform: mean resultant ~ 0, nearest-neighbour spacing nearly constant
    assert np.linalg.norm(d.mean(axis=0)) < 1e-2
    cos = d @ d.T
    np.fill_diagonal(cos, -2)
    nn = np.arccos(np.clip(cos.max(axis=1), -1, 1))
    assert nn.max() / nn.min() < 1.5
    # one point per 4 pi / n of solid angle: hexagonal spacing ~ sqrt(8 pi / (sqrt(3) n))
    assert nn.mean() == pytest.approx(np.sqrt(8 * np.pi / (np.sqrt(3) * n)), rel=0.15)


@SETTINGS
@given(st.tuples(*[st.floats(-1, 1, allow_nan=False)] * 3).map(np.array).filter(
    lambda v: np.linalg.norm(v) > 1e-3))
def test_direction_angles_round_trip(v):
    phi1, phi2 = g.direction_angles(v)
    assert 0 <= phi1 < 2 * np.pi and 0 <= phi2 <= np.pi
    unit = v / np.linalg.norm(v)
    np.testing.assert_allclose(g.direction_from_angles(phi1, phi2), unit, atol=1e-12)


def test_direction_errors():
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        g.fibonacci_directions(0)
    with pytest.raises(ValueError, match="directions contains a zero vector"):
        g.direction_angles([0.0, 0.0, 0.0])


# ---------- SO(3) grids


def test_so3_grid_elements_follow_the_documented_convention():
    grid = g.so3_grid(12, 5)
    assert (grid.n_directions, grid.n_psi, grid.size) == (12, 5, 60)
    M = grid.matrices()
    assert M.shape == (12, 5, 3, 3)
    phi1, phi2 = g.direction_angles(grid.directions)
    np.testing.assert_allclose(grid.psi, 2 * np.pi * np.arange(5) / 5)
    for j in (0, 7, 11):
        for i in (0, 3):
            expected = Rotation.from_euler("ZYZ", [phi1[j], phi2[j], grid.psi[i]]).as_matrix()
            np.testing.assert_allclose(M[j, i], P @ expected @ P, atol=1e-12)
            np.testing.assert_allclose(grid.matrix(j, i), M[j, i], atol=1e-12)
    # the reference z axis (1, 0, 0) in zyx coordinates is carried onto d_j
    d_zyx = np.repeat(grid.directions[:, None, ::-1], 5, axis=1)
    np.testing.assert_allclose(M[:, :, :, 0], d_zyx, atol=1e-12)


def test_so3_grid_cyclic_restriction_covers_the_full_grid():
    n = 9
    sym = g.so3_grid(10, 4, symmetry=n)
    full = g.so3_grid(10, 4 * n)
    assert sym.psi.max() < 2 * np.pi / n
    expanded = (sym.matrices().reshape(-1, 1, 3, 3) @ g.cyclic_group(n)).reshape(-1, 3, 3)
    full_m = full.matrices().reshape(-1, 3, 3)
    assert expanded.shape == full_m.shape
    # every element of the full grid is an element of sym @ Cn and vice versa
    d = g.geodesic_distance(expanded[:, None], full_m[None])
    assert d.min(axis=0).max() < 1e-9 and d.min(axis=1).max() < 1e-9


@pytest.mark.parametrize("symmetry", [1, 3])
def test_so3_grid_nearest_matches_brute_force(symmetry):
    grid = g.so3_grid(30, 6, symmetry=symmetry)
    R = g.random_rotations(60, seed=11).reshape(3, 20, 3, 3)
    j, i = grid.nearest(R)
    assert j.shape == i.shape == (3, 20)
    all_m = grid.matrices().reshape(-1, 3, 3)
    brute = g.geodesic_distance_sym(R[..., None, :, :], all_m, symmetry=symmetry)
    np.testing.assert_allclose(
        g.geodesic_distance_sym(R, grid.matrices()[j, i], symmetry=symmetry),
        brute.min(axis=-1), atol=1e-12,
    )
    # grid elements, slightly perturbed and turned by a symmetry element, find themselves
    jj, ii = np.meshgrid(np.arange(30), np.arange(6), indexing="ij")
    small = g.matrix_from_rotvec(np.full((30, 6, 3), 1e-3))
    C = g.cyclic_group(symmetry)[np.arange(30 * 6).reshape(30, 6) % symmetry]
    j2, i2 = grid.nearest(grid.matrices() @ small @ C)
    np.testing.assert_array_equal(j2, jj)
    np.testing.assert_array_equal(i2, ii)


def test_so3_grid_errors():
    with pytest.raises(ValueError, match="n_psi must be an integer >= 1, got 0"):
        g.so3_grid(10, 0)
    with pytest.raises(ValueError, match="symmetry must be the order n >= 1"):
        g.so3_grid(10, 4, symmetry=0)
    with pytest.raises(ValueError, match="directions must be unit vectors"):
        g.SO3Grid(directions=np.ones((2, 3)), psi=np.zeros(1))
    with pytest.raises(ValueError, match=r"psi must have shape \(M_psi,\)"):
        g.SO3Grid(directions=np.eye(3), psi=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"j must be an integer in \[0, 3\), got 3"):
        g.SO3Grid(directions=np.eye(3), psi=np.zeros(1)).matrix(3, 0)


@pytest.mark.parametrize("step_deg,symmetry", [(20, 1), (20, 9), (35, 1)])
def test_uniform_rotation_grid_covers_so3(step_deg, symmetry):
    step = np.deg2rad(step_deg)
    grid = g.uniform_rotation_grid(step, symmetry=symmetry)
    if symmetry == 1:
        # about one element per step^3 of the volume 8 pi^2 of SO(3)
        assert 0.5 < len(grid) / (8 * np.pi**2 / step**3) < 2
    R = g.random_rotations(400, seed=5)
    d = g.geodesic_distance_sym(R[:, None], grid[None], symmetry=symmetry).min(axis=1)
    assert d.max() < step  # measured: 0.77 step
    with pytest.raises(ValueError, match="step must be in"):
        g.uniform_rotation_grid(0.0)


def test_local_rotation_grid():
    step, max_angle = np.deg2rad(5), np.deg2rad(10)
    L = g.local_rotation_grid(step, max_angle)
    assert L.shape == (33, 3, 3)
    np.testing.assert_allclose(L[0], np.eye(3), atol=0)
    angles = g.geodesic_distance(L, np.eye(3))
    assert angles.max() == pytest.approx(max_angle, abs=1e-12)
    assert np.all(np.diff(angles) >= -1e-12)
    w = g.rotvec_from_matrix(L) / step
    np.testing.assert_allclose(w, np.round(w), atol=1e-9)  # on the lattice
    assert len(np.unique(np.round(w), axis=0)) == 33
    # a neighbourhood R_center @ L stays within max_angle of R_center and contains it
    Rc = g.random_rotations(1, seed=3)[0]
    np.testing.assert_array_less(g.geodesic_distance(Rc @ L, Rc), max_angle + 1e-12)
    assert len(g.local_rotation_grid(np.deg2rad(1), np.deg2rad(5))) == 515
    assert len(g.local_rotation_grid(step, 0.0)) == 1
    with pytest.raises(ValueError, match="step must be in"):
        g.local_rotation_grid(0.0, 0.1)
    with pytest.raises(ValueError, match="max_angle must be in"):
        g.local_rotation_grid(0.1, -0.1)


def test_cyclic_group_closure():
    C = g.cyclic_group(9)
    np.testing.assert_allclose(C[0], np.eye(3), atol=0)
    products = (C[:, None] @ C[None]).reshape(-1, 3, 3)
    d = g.geodesic_distance(products[:, None], C[None]).min(axis=1)
    assert d.max() < 1e-12
    np.testing.assert_allclose(np.linalg.matrix_power(C[1], 9), np.eye(3), atol=1e-12)
    np.testing.assert_allclose(g.geodesic_distance(C[1], C[0]), 2 * np.pi / 9, atol=1e-12)
    np.testing.assert_allclose(g.cyclic_group(1), np.eye(3)[None], atol=0)
    with pytest.raises(ValueError, match="n must be the order of Cn, an integer >= 1, got 0"):
        g.cyclic_group(0)
    with pytest.raises(ValueError, match="got 2.5"):
        g.cyclic_group(2.5)


# ---------- distances


@SETTINGS
@given(seeds)
def test_geodesic_distance_matches_scipy(seed):
    R1 = g.random_rotations(10, seed=seed)
    R2 = g.random_rotations(10, seed=seed + 1)
    expected = (scipy_xyz(R1).inv() * scipy_xyz(R2)).magnitude()
    np.testing.assert_allclose(g.geodesic_distance(R1, R2), expected, atol=1e-10)
    d = g.geodesic_distance(R1[:, None], R2[None, :4])
    assert d.shape == (10, 4)
    np.testing.assert_allclose(d[:4].diagonal(), expected[:4], atol=1e-10)


def test_geodesic_distance_is_accurate_near_zero_and_pi():
    v = np.array([0.3, -0.5, 0.8])
    v /= np.linalg.norm(v)
    for angle in (1e-9, 1e-5, np.pi - 1e-7, np.pi):
        R = g.matrix_from_rotvec(v * angle)
        assert g.geodesic_distance(np.eye(3), R) == pytest.approx(angle, rel=1e-7)


def test_geodesic_distance_sym():
    R = g.random_rotations(20, seed=2)
    C = g.cyclic_group(9)
    k = np.arange(20) % 9
    np.testing.assert_allclose(g.geodesic_distance_sym(R, R @ C[k], symmetry=9), 0, atol=1e-7)
    R2 = g.random_rotations(20, seed=4)
    brute = np.min([g.geodesic_distance(R, R2 @ Ck) for Ck in C], axis=0)
    np.testing.assert_allclose(g.geodesic_distance_sym(R, R2, symmetry=9), brute, atol=1e-12)
    assert np.all(brute <= g.geodesic_distance(R, R2) + 1e-12)
    with pytest.raises(ValueError, match="do not broadcast"):
        g.geodesic_distance_sym(R, R2[:3], symmetry=9)
    with pytest.raises(ValueError, match="R1 is not a stack of rotation matrices"):
        g.geodesic_distance(np.ones((3, 3)), np.eye(3))


# ---------- Poses


def _random_poses(n, seed):
    rng = np.random.default_rng(seed)
    return g.Poses(g.random_rotations(n, seed=seed), rng.normal(scale=3.0, size=(n, 3)))


def test_poses_validation_errors():
    R = g.random_rotations(3, seed=0)
    t = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"rotations must have shape \(N, 3, 3\)"):
        g.Poses(R[0], t)
    with pytest.raises(ValueError, match=r"translations must have shape \(N, 3\)"):
        g.Poses(R, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="got 3 rotations and 2 translations"):
        g.Poses(R, np.zeros((2, 3)))
    bad = R.copy()
    bad[1] *= 1.01
    with pytest.raises(ValueError, match="rotations is not a stack of rotation matrices"):
        g.Poses(bad, t)
    with pytest.raises(ValueError, match="rotations is not a stack of rotation matrices"):
        g.Poses(-R, t)  # reflections
    nan = R.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="rotations contains NaN"):
        g.Poses(nan, t)
    with pytest.raises(ValueError, match="translations contains NaN"):
        g.Poses(R, np.full((3, 3), np.nan))
    p = g.Poses(R, t)
    with pytest.raises(ValueError, match="voxel_size must be finite and > 0"):
        p.to_stored((0.1, 0.0, 0.1))
    with pytest.raises(ValueError, match="voxel_size must be finite and > 0"):
        p.to_stored(-0.1)
    with pytest.raises(ValueError, match=r"a \(z, y, x\) tuple of 3 values"):
        p.to_stored((0.1, 0.1))
    M = p.matrices()
    M[0, 3, 0] = 1
    with pytest.raises(ValueError, match=r"last row \(0, 0, 0, 1\); matrix 0"):
        g.Poses.from_matrices(M)
    with pytest.raises(ValueError, match=r"matrices must have shape \(N, 4, 4\)"):
        g.Poses.from_matrices(np.eye(4))
    with pytest.raises(ValueError, match="non-empty sequence"):
        g.Poses.concatenate([])
    with pytest.raises(ValueError, match="n must be an integer >= 0"):
        g.Poses.identity(-2)


def test_poses_stored_round_trip_anisotropic():
    p = _random_poses(6, seed=1)
    vs = (0.3, 0.1, 0.12)  # (z, y, x) micrometres
    S = p.to_stored(vs)
    assert S.shape == (6, 4, 4)
    np.testing.assert_allclose(S[:, :3, :3], P @ p.rotations @ P, atol=0)
    np.testing.assert_allclose(S[:, :3, 3], (p.translations * vs)[:, ::-1], atol=1e-15)
    np.testing.assert_allclose(S[:, 3], np.tile([0, 0, 0, 1.0], (6, 1)), atol=0)
    back = g.Poses.from_stored(S, vs)
    np.testing.assert_allclose(back.rotations, p.rotations, atol=1e-15)
    np.testing.assert_allclose(back.translations, p.translations, atol=1e-12)
    back_m = g.Poses.from_matrices(p.matrices())
    np.testing.assert_array_equal(back_m.matrices(), p.matrices())


def test_poses_stored_matrix_maps_reference_points_in_micrometres():
    # isotropic voxels: the stored matrix maps a reference point (xyz, um) to the
    # particle point (xyz, um) that the voxel matrix gives in (z, y, x) voxels
    p = _random_poses(4, seed=2)
    vs = 0.08
    r_zyx = np.array([2.0, -1.0, 3.5])
    moved_zyx = p.rotations @ r_zyx + p.translations
    S = p.to_stored(vs)
    moved_xyz_um = S[:, :3, :3] @ (r_zyx[::-1] * vs) + S[:, :3, 3]
    np.testing.assert_allclose(moved_xyz_um, moved_zyx[:, ::-1] * vs, atol=1e-12)


def test_poses_indexing_composition_and_concatenation():
    p = _random_poses(5, seed=3)
    assert len(p) == 5 and repr(p) == "Poses(n=5)"
    assert len(p[2]) == 1 and np.array_equal(p[2].rotations[0], p.rotations[2])
    assert np.array_equal(p[-1].translations[0], p.translations[4])
    assert len(p[1:4]) == 3 and len(p[np.array([0, 0, 4])]) == 3
    assert len(p[p.translations[:, 0] > 100]) == 0
    with pytest.raises(IndexError):
        p[5]
    with pytest.raises(ValueError):
        p.rotations[0, 0, 0] = 2.0  # read-only
    ident = g.Poses.identity(5)
    np.testing.assert_array_equal(ident.matrices(), np.broadcast_to(np.eye(4), (5, 4, 4)))
    G = g.random_rotations(1, seed=9)[0]
    q = p.compose_rotation(G)
    np.testing.assert_allclose(q.rotations, p.rotations @ G, atol=1e-15)
    np.testing.assert_array_equal(q.translations, p.translations)
    # a reference point x maps to the same particle point as G^T x under the new poses
    x = np.array([1.0, 2.0, -3.0])
    np.testing.assert_allclose(q.rotations @ (G.T @ x), p.rotations @ x, atol=1e-12)
    with pytest.raises(ValueError, match=r"R must be one rotation matrix of shape \(3, 3\)"):
        p.compose_rotation(np.eye(4))
    both = g.Poses.concatenate([p, ident[:2]])
    assert len(both) == 7
    np.testing.assert_array_equal(both.rotations[:5], p.rotations)
    np.testing.assert_array_equal(both.translations[5:], 0)


# ---------- global alignment


def _aligned_dataset(n, symmetry, noise_deg, seed):
    rng = np.random.default_rng(seed)
    R_true = g.random_rotations(n, seed=rng)
    G = g.random_rotations(1, seed=rng)[0]
    # each particle is seen modulo a random symmetry element: R_true C_k = R_est G
    C = g.cyclic_group(symmetry)[rng.integers(0, symmetry, n)]
    noise = g.matrix_from_rotvec(rng.normal(size=(n, 3)) * np.deg2rad(noise_deg) / np.sqrt(3))
    R_est = R_true @ C @ G.T @ noise
    return R_est, R_true, G


@pytest.mark.parametrize("symmetry", [1, 9])
def test_align_rotations_recovers_the_global_rotation(symmetry):
    R_est, R_true, G = _aligned_dataset(50, symmetry, 0.0, seed=symmetry)
    G_est = g.align_rotations(R_est, R_true, symmetry=symmetry)
    err = g.geodesic_distance_sym(G_est, G, symmetry=symmetry)  # G is defined modulo Cn
    assert np.rad2deg(err) < 0.5  # measured: 1e-14 degrees
    errors = g.pose_errors(R_est, R_true, symmetry=symmetry)
    assert errors.shape == (50,) and errors.max() < 1e-8
    # the documented meaning: composing the estimated poses with G gives the true ones
    aligned = g.Poses(R_est, np.zeros((50, 3))).compose_rotation(G_est).rotations
    assert g.geodesic_distance_sym(aligned, R_true, symmetry=symmetry).max() < 1e-8


@pytest.mark.parametrize("symmetry", [1, 9])
def test_align_rotations_with_noise_and_outliers(symmetry):
    R_est, R_true, G = _aligned_dataset(60, symmetry, 2.0, seed=10 + symmetry)
    R_est[:12] = g.random_rotations(12, seed=99)  # 20 % outliers
    G_est = g.align_rotations(R_est, R_true, symmetry=symmetry)
    assert np.rad2deg(g.geodesic_distance_sym(G_est, G, symmetry=symmetry)) < 1.0
    errors = np.rad2deg(g.pose_errors(R_est, R_true, symmetry=symmetry))
    assert np.median(errors[12:]) < 3.0  # inliers: about the 2 degree noise
    # unaligned errors are large: the alignment is doing the work
    assert np.median(np.rad2deg(g.geodesic_distance_sym(R_est, R_true, symmetry=symmetry))) > 10


def test_align_rotations_errors():
    R = g.random_rotations(4, seed=0)
    with pytest.raises(ValueError, match="same N"):
        g.align_rotations(R, R[:3])
    with pytest.raises(ValueError, match="empty"):
        g.align_rotations(R[:0], R[:0])
    with pytest.raises(ValueError, match="symmetry must be the order n >= 1"):
        g.pose_errors(R, R, symmetry=-1)
