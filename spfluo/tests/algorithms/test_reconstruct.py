"""Known-pose reconstruction: operators, proximal steps, sums, solvers, symmetry, quality.

Oracles: ``numpy.linalg.eigh`` (Hessian prox), the dot-product test and the Fourier
symbol (difference operators), a brute-force DTFT of the PSF at rotated frequencies
(kernel), exact 90-degree rotations (back-projection and symmetrisation without
interpolation error), an independent Chambolle-Pock solver (ADMM minimiser), and the
ground truth of simulated datasets (SSIM, FSC).
"""

import numpy as np
import pytest

from spfluo.algorithms import reconstruct as rc
from spfluo.algorithms.geometry import (
    Poses,
    cyclic_group,
    matrix_from_axis_angle,
    random_rotations,
)
from spfluo.algorithms.metrics import (
    fsc,
    fsc_resolution,
    normalize_for_comparison,
    psnr,
    ssim,
)
from spfluo.algorithms.psf import gaussian_psf
from spfluo.algorithms.reconstruct.accumulation import half_to_full_even
from spfluo.algorithms.reconstruct.regularizers import (
    _prox_nuclear_sym3,
    apply_l,
    apply_lt,
    l_symbol,
    prox,
)
from spfluo.algorithms.simulate import simulate_dataset
from spfluo.algorithms.transform import rotate

SQRT2 = np.sqrt(2.0)


def _score(volume, truth):
    v = normalize_for_comparison(volume, truth)
    return ssim(v, truth, data_range=1.0), psnr(v, truth, data_range=1.0)


@pytest.fixture(scope="module")
def dataset():
    """The Eloy et al. 2023 setting, reduced: asymmetric phantom, 20 particles of 32^3."""
    return simulate_dataset(phantom="asymmetric", size=32, n_particles=20, seed=0)


@pytest.fixture(scope="module")
def sums(dataset):
    return rc.precompute_sums(dataset.particles, dataset.poses, dataset.psf)


def _blobs(shape, rng, n=4):
    z, y, x = np.indices(shape)
    vol = np.zeros(shape, np.float32)
    for _ in range(n):
        c = rng.uniform(np.array(shape) * 0.3, np.array(shape) * 0.7)
        vol += np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / 6.0)
    return vol


# ------------------------------------------------------------------ operators and prox


def _matrices(a):
    m = np.zeros(a.shape[1:] + (3, 3))
    m[..., 0, 0], m[..., 1, 1], m[..., 2, 2] = a[0], a[1], a[2]
    m[..., 0, 1] = m[..., 1, 0] = a[3] / SQRT2
    m[..., 0, 2] = m[..., 2, 0] = a[4] / SQRT2
    m[..., 1, 2] = m[..., 2, 1] = a[5] / SQRT2
    return m


def _eigh_prox(a, tau):
    w, v = np.linalg.eigh(_matrices(a))
    f = np.einsum("...ij,...j,...kj->...ik", v, np.sign(w) * np.maximum(np.abs(w) - tau, 0), v)
    return np.stack([f[..., 0, 0], f[..., 1, 1], f[..., 2, 2], SQRT2 * f[..., 0, 1],
                     SQRT2 * f[..., 0, 2], SQRT2 * f[..., 1, 2]])


def test_hessian_prox_matches_eigh_including_degenerate_eigenvalues():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 3000))
    a[:, :300] = 0
    a[:3, :300] = rng.normal(size=300)  # multiples of the identity (triple eigenvalue)
    d = rng.normal(size=(3, 300))
    d /= np.linalg.norm(d, axis=0)
    rank1 = rng.normal(size=300)[:, None, None] * np.einsum("in,jn->nij", d, d) + \
        rng.normal(size=300)[:, None, None] * np.eye(3)  # a double eigenvalue
    a[:, 300:600] = np.stack([rank1[:, 0, 0], rank1[:, 1, 1], rank1[:, 2, 2],
                              SQRT2 * rank1[:, 0, 1], SQRT2 * rank1[:, 0, 2],
                              SQRT2 * rank1[:, 1, 2]])
    a32 = a.astype(np.float32)
    for tau in (0.0, 0.3, 1.0):
        out, nuclear = _prox_nuclear_sym3(np, a32, np.float32(tau))
        expected = _eigh_prox(a32.astype(np.float64), tau)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, expected, atol=2e-5 * np.abs(a).max())
        ev = np.linalg.eigvalsh(_matrices(expected))
        np.testing.assert_allclose(nuclear, np.abs(ev).sum(-1), atol=1e-4)


def test_prox_active_set_and_tv_shrinkage():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 2, 6, 6, 6)).astype(np.float32)  # component first, 2 channels
    tau = np.array([0.5, 2.5], np.float32)  # the second leaves < half the voxels active
    out, phi = prox(np, a, tau, "hessian")
    for c in range(2):
        expected = _eigh_prox(a[:, c].reshape(6, -1).astype(np.float64), tau[c])
        np.testing.assert_allclose(out[:, c].reshape(6, -1), expected, atol=1e-4)
        ev = np.linalg.eigvalsh(_matrices(expected))
        assert phi[c] == pytest.approx(np.abs(ev).sum(), rel=1e-4)
    g = a[:3]
    out, phi = prox(np, g, tau, "tv")
    norms = np.sqrt((g.astype(np.float64) ** 2).sum(0))
    shrink = np.maximum(1 - tau[:, None, None, None] / norms, 0)
    np.testing.assert_allclose(out, g * shrink, atol=1e-6)
    assert phi == pytest.approx(np.maximum(norms - tau[:, None, None, None], 0).sum((1, 2, 3)))


@pytest.mark.parametrize("regularizer", ["tv", "hessian"])
def test_difference_operators_are_adjoint_and_diagonal_in_fourier(regularizer):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 9, 10, 11)).astype(np.float32)
    m = 3 if regularizer == "tv" else 6
    u = rng.normal(size=(m, 2, 9, 10, 11)).astype(np.float32)
    lhs = float((apply_l(np, x, regularizer).astype(np.float64) * u).sum())
    rhs = float((x.astype(np.float64) * apply_lt(np, u, regularizer)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-5)
    # L^T L is the Fourier multiplier |L^|^2 (cubic grid)
    x = rng.normal(size=(10, 10, 10)).astype(np.float32)
    ltl = apply_lt(np, apply_l(np, x, regularizer), regularizer)
    symbol = l_symbol(np, (10, 10, 10), regularizer)
    expected = np.fft.irfftn(np.fft.rfftn(x) * symbol, s=x.shape)
    np.testing.assert_allclose(ltl, expected, atol=1e-4 * np.abs(expected).max())


def test_hessian_of_a_quadratic_is_exact():
    z, y, x = np.indices((12, 12, 12)).astype(np.float64)
    f = (1.5 * z**2 - 2.0 * y * x + 0.5 * x**2 + 3 * z * y).astype(np.float32)
    h = apply_l(np, f, "hessian")[:, 3:-3, 3:-3, 3:-3]  # away from the periodic seam
    expected = [3.0, 0.0, 1.0, SQRT2 * 3.0, 0.0, SQRT2 * -2.0]
    for comp, value in zip(h, expected):
        np.testing.assert_allclose(comp, value, atol=1e-3)


def test_half_to_full_even_spectrum():
    rng = np.random.default_rng(3)
    for p in (8, 9):
        f = rng.random((p, p, p))
        neg = (-np.arange(p)) % p
        f = f + f[neg][:, neg][:, :, neg]  # even: its spectrum is real and even
        full = np.fft.fftn(f).real
        out = half_to_full_even(np, full[..., : p // 2 + 1], (p, p, p))
        np.testing.assert_allclose(out, full, atol=1e-9)


# ------------------------------------------------------------------ the sums


def _dtft_power(psf, freqs):
    """|sum_x h(x) exp(-2 i pi q . (x - c))|^2 at frequencies ``freqs`` (M, 3), brute force."""
    idx = np.argwhere(np.ones(psf.shape, bool)) - np.array(psf.shape) // 2
    phase = np.exp(-2j * np.pi * freqs @ idx.T)
    return np.abs(phase @ psf.ravel().astype(np.float64)) ** 2


def test_kernel_is_the_rotated_otf_power():
    p = 16
    psf = gaussian_psf((9, 9, 9), (2.0, 1.2, 0.7))  # anisotropic in z, y and x
    rot = matrix_from_axis_angle(np.array([0.3, -0.5, 0.8]), 0.9)
    y = np.zeros((1, 1, p, p, p), np.float32)
    kz = np.fft.fftfreq(p)
    kx = np.fft.rfftfreq(p)
    grid = np.stack(np.meshgrid(kz, kz, kx, indexing="ij"), -1).reshape(-1, 3)
    rotated = grid @ rot.T  # R k, the particle-frame frequency
    expected = _dtft_power(psf, rotated)  # |H(R k)|^2
    inside = np.abs(rotated).max(axis=1) < 0.45  # beyond the Nyquist cube K is 0 by design
    for order in (1, 3):
        k = rc.precompute_sums(y, Poses(rot[None], np.zeros((1, 3))), psf, order=order,
                               pad=1.0)
        k = k.kernel[0].ravel()
        if order == 1:  # trilinear transfer folded in: prod sinc^2 of the particle frequency
            k = k / np.prod(np.sinc(rotated) ** 2, axis=1)
        tol = 3e-2 if order == 1 else 2e-3  # trilinear on the 2x grid: 2.7 % measured
        np.testing.assert_allclose(k[inside], expected[inside], atol=tol * expected.max())
    # the inverse rotation gives a different kernel: the direction is not a matter of luck
    wrong = _dtft_power(psf, grid @ rot)
    assert np.abs(wrong - expected)[inside].max() > 0.2 * expected.max()


def test_backprojection_with_exact_rotation_and_shift():
    rng = np.random.default_rng(4)
    p = 12
    y = rng.random((1, 1, p, p, p)).astype(np.float32)
    psf = gaussian_psf((5, 5, 5), (1.5, 0.8))
    rot = matrix_from_axis_angle(np.array([1.0, 0.0, 0.0]), np.pi / 2)  # about x: grid to grid
    shift = np.array([[2.0, -1.0, 3.0]])
    sums = rc.precompute_sums(y, Poses(rot[None], shift), psf, pad=1.0)
    # oracle: T_{-t}(h^T * y) by FFT (integer shift: a roll), then the exact inverse rotation
    h = np.zeros((p, p, p))
    h[p // 2 - 2:p // 2 + 3, p // 2 - 2:p // 2 + 3, p // 2 - 2:p // 2 + 3] = psf
    otf = np.fft.rfftn(np.fft.ifftshift(h))
    g = np.fft.irfftn(np.fft.rfftn(y[0, 0]) * np.conj(otf), s=(p, p, p))
    g = np.roll(g, (-2, 1, -3), axis=(0, 1, 2))
    expected = rotate(g.astype(np.float32), rot.T, order=0)  # R^T g, nearest = exact here
    np.testing.assert_allclose(sums.backprojection[0], expected, atol=1e-5)
    assert sums.backprojection.dtype == np.float32 and sums.kernel.dtype == np.float32
    assert sums.kernel[0, 0, 0, 0] == pytest.approx(1.0, rel=1e-5)  # unit-sum PSF


def test_streamed_batches_give_the_same_sums(dataset):
    a = rc.precompute_sums(dataset.particles, dataset.poses, dataset.psf, batch_size=20)
    batches = ((slice(s, min(s + 3, 20)), dataset.particles[s:s + 3]) for s in range(0, 20, 3))
    b = rc.precompute_sums(batches, dataset.poses, dataset.psf, batch_size=3)
    np.testing.assert_allclose(b.backprojection, a.backprojection, atol=1e-6)
    np.testing.assert_allclose(b.kernel, a.kernel, atol=1e-6)
    assert b.n_particles == 20 and b.shape == (32, 32, 32)


def test_half_sums_combine_into_the_full_sums(dataset, sums):
    halves = rc.half_split(20, seed=5)
    assert sorted(np.bincount(halves)) == [10, 10]
    np.testing.assert_array_equal(halves, rc.half_split(20, seed=5))
    h1, h2 = rc.precompute_half_sums(dataset.particles, dataset.poses, dataset.psf,
                                     halves=halves)
    assert (h1.n_particles, h2.n_particles) == (10, 10)
    full = rc.combine_sums(h1, h2)
    np.testing.assert_allclose(full.backprojection, sums.backprojection, atol=1e-5)
    np.testing.assert_allclose(full.kernel, sums.kernel, atol=1e-6)
    only1 = rc.precompute_sums(dataset.particles[halves == 0], dataset.poses[halves == 0],
                               dataset.psf)
    np.testing.assert_allclose(h1.backprojection, only1.backprojection, atol=1e-6)


def _moved_poses(poses, which, seed):
    """``poses`` with the particles ``which`` turned (about 5 deg) and shifted."""
    rng = np.random.default_rng(seed)
    rot, t = poses.rotations.copy(), poses.translations.copy()
    rot[which] = rot[which] @ matrix_from_axis_angle(rng.standard_normal((len(which), 3)),
                                                     np.full(len(which), 0.09))
    t[which] += rng.uniform(-0.7, 0.7, (len(which), 3))
    return Poses(rot, t)


@pytest.mark.parametrize("symmetry", [1, 9])
def test_update_sums_equals_the_recomputation(symmetry):
    data = simulate_dataset(phantom="c9", size=20, n_particles=8, seed=4)
    y, psf = data.particles, data.psf
    old = rc.precompute_sums(y, data.poses, psf, symmetry=symmetry)
    for which in ([1, 5], [0, 2, 3, 4, 6, 7]):  # out and in; more than half: one pass
        new = _moved_poses(data.poses, which, seed=len(which))
        updated = rc.update_sums(old, y, data.poses, new, psf, batch_size=3)
        expected = rc.precompute_sums(y, new, psf, symmetry=symmetry)
        peak_b, peak_k = np.abs(expected.backprojection).max(), expected.kernel.max()
        np.testing.assert_allclose(updated.backprojection, expected.backprojection,
                                   atol=1e-6 * peak_b)  # measured 3e-7
        np.testing.assert_allclose(updated.kernel, expected.kernel, atol=1e-6 * peak_k)
        assert np.abs(old.backprojection - expected.backprojection).max() > 1e-3 * peak_b
        assert (updated.n_particles, updated.symmetry, updated.shape) == (8, symmetry,
                                                                         (20, 20, 20))
        assert updated.backprojection.dtype == np.float32
    assert rc.update_sums(old, y, data.poses, data.poses, psf) is old  # nothing moved


def test_update_sums_of_a_half_and_tolerances():
    data = simulate_dataset(phantom="asymmetric", size=16, n_particles=8, seed=5)
    y, psf = data.particles, data.psf
    halves = np.array([0, 1, 0, 1, 1, 0, 0, 1])
    h0, h1 = rc.precompute_half_sums(y, data.poses, psf, halves=halves)
    new = _moved_poses(data.poses, [0, 1, 2], seed=1)
    e0, e1 = rc.precompute_half_sums(y, new, psf, halves=halves)
    for got, want, g in ((h0, e0, 0), (h1, e1, 1)):  # the particles of one half, in place
        up = rc.update_sums(got, y, data.poses, new, psf, indices=np.flatnonzero(halves == g))
        np.testing.assert_allclose(up.backprojection, want.backprojection,
                                   atol=1e-6 * np.abs(want.backprojection).max())
        np.testing.assert_allclose(up.kernel, want.kernel, atol=1e-6)
    # a tolerance keeps the particles that moved less (3: 0.5 deg, 0.01 voxel; 4: 1.5 deg):
    # their old pose stays in the sums
    rot, t = new.rotations.copy(), new.translations.copy()
    z = np.array([0.0, 0.0, 1.0])
    rot[3] = data.poses.rotations[3] @ matrix_from_axis_angle(z, np.radians(0.5))
    t[3] = data.poses.translations[3] + 0.01
    rot[4] = data.poses.rotations[4] @ matrix_from_axis_angle(z, np.radians(1.5))
    kept_rot, kept_t = rot.copy(), t.copy()
    kept_rot[3], kept_t[3] = data.poses.rotations[3], data.poses.translations[3]
    full = rc.precompute_sums(y, data.poses, psf)
    kept = rc.update_sums(full, y, data.poses, Poses(rot, t), psf, tolerance_deg=1.0,
                          tolerance_shift=0.05)
    expected = rc.precompute_sums(y, Poses(kept_rot, kept_t), psf)
    np.testing.assert_allclose(kept.backprojection, expected.backprojection,
                               atol=1e-6 * np.abs(expected.backprojection).max())
    exact = rc.precompute_sums(y, Poses(rot, t), psf)
    assert np.abs(kept.backprojection - exact.backprojection).max() > 1e-4 * np.abs(
        exact.backprojection).max()
    with pytest.raises(ValueError, match="sums must be a ReconstructionSums"):
        rc.update_sums(full.backprojection, y, data.poses, new, psf)
    with pytest.raises(ValueError, match="particles must be an array"):
        rc.update_sums(full, [y], data.poses, new, psf)
    with pytest.raises(ValueError, match="do not match the sums"):
        rc.update_sums(full, y[..., :12, :12, :12], data.poses, new, psf)
    with pytest.raises(ValueError, match="7 poses but there are 8"):
        rc.update_sums(full, y, data.poses, new[:7], psf)
    with pytest.raises(ValueError, match="indices must be distinct positions"):
        rc.update_sums(full, y, data.poses, new, psf, indices=[0, 0, 9])
    with pytest.raises(ValueError, match="tolerance_deg must be a number >= 0"):
        rc.update_sums(full, y, data.poses, new, psf, tolerance_deg=-1)
    with pytest.raises(ValueError, match="order must be 1"):
        rc.update_sums(full, y, data.poses, new, psf, order=2)


def test_symmetry_equals_adding_the_rotated_poses():
    """C4: the symmetrised sums equal the sums over the 4N poses R_i C_j (exact on the grid)."""
    rng = np.random.default_rng(6)
    p, n = 13, 3  # odd: rotations by 90 degrees about the centre map the grid onto itself
    y = rng.random((n, 1, p, p, p)).astype(np.float32)
    psf = gaussian_psf((7, 7, 7), (2.0, 1.0))
    poses = Poses(random_rotations(n, seed=6), rng.uniform(-1, 1, (n, 3)))
    sym = rc.precompute_sums(y, poses, psf, symmetry=4)
    group = cyclic_group(4)
    rot = np.concatenate([poses.rotations[i] @ group for i in range(n)])
    expanded = Poses(rot, np.repeat(poses.translations, 4, axis=0))
    explicit = rc.precompute_sums(np.repeat(y, 4, axis=0), expanded, psf)
    np.testing.assert_allclose(sym.backprojection, explicit.backprojection, atol=1e-4)
    np.testing.assert_allclose(sym.kernel, explicit.kernel, atol=1e-4)
    assert sym.symmetry == 4 and sym.n_particles == n


def test_channels_are_reconstructed_with_their_own_psf():
    rng = np.random.default_rng(7)
    p = 16
    y = rng.random((4, 2, p, p, p)).astype(np.float32)
    psfs = np.stack([gaussian_psf((9, 9, 9), (2.5, 1.0)), gaussian_psf((9, 9, 9), (1.5, 0.7))])
    poses = Poses(random_rotations(4, seed=7), np.zeros((4, 3)))
    both = rc.precompute_sums(y, poses, psfs)
    for c in range(2):
        one = rc.precompute_sums(y[:, c:c + 1], poses, psfs[c])
        np.testing.assert_allclose(both.backprojection[c], one.backprojection[0], atol=1e-6)
        np.testing.assert_allclose(both.kernel[c], one.kernel[0], atol=1e-6)
        x_both = rc.reconstruct_admm(both, regularizer="tv", weight=[1e-3, 3e-3],
                                     iterations=10).volume
        x_one = rc.reconstruct_admm(one, regularizer="tv", weight=[1e-3, 3e-3][c],
                                    iterations=10).volume
        np.testing.assert_allclose(x_both[c], x_one[0], atol=1e-5 * np.abs(x_one).max())


# ------------------------------------------------------------------ solvers


def test_tikhonov_solves_the_normal_equations():
    rng = np.random.default_rng(8)
    p = 12
    y = rng.random((5, 1, p, p, p)).astype(np.float32)
    psf = gaussian_psf((7, 7, 7), (2.0, 1.0))
    s = rc.precompute_sums(y, Poses(random_rotations(5, seed=8), np.zeros((5, 3))), psf,
                           pad=1.0)
    w = 0.05
    x = rc.reconstruct_tikhonov(s, weight=w)[0].astype(np.float64)
    # (K + w G^T G) x = b with K applied in Fourier and G the real-space forward gradient
    kx = np.fft.irfftn(np.fft.rfftn(x) * s.kernel[0], s=x.shape)
    gtg = apply_lt(np, apply_l(np, x[None], "tv"), "tv")[0]
    np.testing.assert_allclose(kx + w * gtg, s.backprojection[0], atol=1e-4)


def _chambolle_pock(bhat, kernel, shape, w, regularizer, iterations):
    """Independent solver of min_{x >= 0} 1/2 <x,Kx> - <x,b> + w phi(Lx).

    Chambolle-Pock on ``F(Lx, x) + G(x)`` with ``F = w phi + i_{>=0}`` (dual proxes:
    Moreau's identity on the prox of ``phi``, and ``min(z, 0)``) and ``G`` the quadratic
    data term (its prox is a division in Fourier space): no splitting, no rho.
    """
    norm2 = float(l_symbol(np, shape, regularizer).max()) + 1.0
    tau = sigma = 0.99 / np.sqrt(norm2)
    x = np.zeros(shape)
    xbar = x.copy()
    m = 3 if regularizer == "tv" else 6
    y1 = np.zeros((m,) + shape)
    y2 = np.zeros(shape)
    for _ in range(iterations):
        z = y1 + sigma * apply_l(np, xbar, regularizer)
        v = z / sigma  # prox of sigma F* = z - sigma prox_{F/sigma}(z / sigma)
        if regularizer == "tv":
            nrm = np.sqrt((v**2).sum(0))
            pv = v * np.maximum(1 - (w / sigma) / np.maximum(nrm, 1e-30), 0)
        else:  # the closed form, checked against eigh above (eigh here would take 30 s)
            pv = _prox_nuclear_sym3(np, v.reshape(6, -1), w / sigma)[0].reshape(v.shape)
        y1 = z - sigma * pv
        y2 = np.minimum(y2 + sigma * xbar, 0)
        xn = x - tau * (apply_lt(np, y1, regularizer) + y2)
        xn = np.fft.irfftn((np.fft.rfftn(xn) + tau * bhat) / (1 + tau * kernel), s=shape)
        xbar = 2 * xn - x
        x = xn
    return x


@pytest.mark.parametrize("regularizer,weight,iterations,cp_iterations",
                         [("tv", 1e-2, 500, 3000), ("hessian", 3e-3, 300, 1500)])
def test_admm_reaches_the_minimiser_of_an_independent_solver(regularizer, weight, iterations,
                                                             cp_iterations):
    rng = np.random.default_rng(9)
    p = 10
    truth = _blobs((p, p, p), rng)
    psf = gaussian_psf((5, 5, 5), (1.5, 0.7))
    rots = random_rotations(6, seed=9)
    y = np.stack([rotate(truth, r, order=3) for r in rots])[:, None]
    y += 0.05 * rng.standard_normal(y.shape).astype(np.float32)
    s = rc.precompute_sums(y, Poses(rots, np.zeros((6, 3))), psf, pad=1.0)
    res = rc.reconstruct_admm(s, regularizer=regularizer, weight=weight, iterations=iterations)
    scale = float(np.abs(s.backprojection).max())
    bhat = np.fft.rfftn(s.backprojection[0].astype(np.float64) / scale)
    ref = scale * _chambolle_pock(bhat, s.kernel[0].astype(np.float64), (p, p, p), weight,
                                  regularizer, cp_iterations)
    err = np.linalg.norm(res.volume[0] - ref) / np.linalg.norm(ref)
    assert err < 1e-2, err  # measured 0.4 % (TV) and 0.03 % (Hessian)
    assert res.energies.shape == (iterations,)
    assert res.primal_residuals[-1] < res.primal_residuals[5]


def test_admm_positivity_and_warm_start(sums, dataset):
    first = rc.reconstruct_admm(sums, regularizer="tv", weight=3e-3, iterations=20)
    assert first.volume.dtype == np.float32 and first.volume.min() >= 0
    assert first.volume.shape == (1, 32, 32, 32)
    more = rc.reconstruct_admm(sums, regularizer="tv", weight=3e-3, iterations=20,
                               init=first.state)
    cold = rc.reconstruct_admm(sums, regularizer="tv", weight=3e-3, iterations=40)
    # continuing from the state goes on where it stopped: no restart transient, and it
    # ends where a single run of the same length ends
    assert more.energies[0] < first.energies[-1] + 1e-3 * abs(first.energies[-1])
    assert more.energies[-1] == pytest.approx(cold.energies[-1], rel=1e-3)
    diff = np.linalg.norm(more.volume - cold.volume) / np.linalg.norm(cold.volume)
    assert diff < 0.02
    # a volume as init: a few iterations from a good start beat a few from zero
    truth = dataset.volume[0]
    from_volume = rc.reconstruct_admm(sums, regularizer="tv", weight=3e-3, iterations=5,
                                      init=cold.volume)
    from_zero = rc.reconstruct_admm(sums, regularizer="tv", weight=3e-3, iterations=5)
    assert _score(from_volume.volume[0], truth)[0] > _score(from_zero.volume[0], truth)[0]


# ------------------------------------------------------------------ quality


def test_reconstruction_with_true_poses_matches_the_ground_truth(dataset, sums):
    truth = dataset.volume[0]
    results = {
        "average": rc.average(dataset.particles, dataset.poses)[0],
        "tikhonov": rc.reconstruct_tikhonov(sums, weight=3e-2)[0],
        "tv": rc.reconstruct_admm(sums, regularizer="tv", weight=3e-3).volume[0],
        "hessian": rc.reconstruct_admm(sums, regularizer="hessian", weight=1e-3).volume[0],
    }
    scores = {k: _score(v, truth) for k, v in results.items()}
    # measured: average 0.40, Tikhonov 0.63, TV 0.93, Hessian 0.92 (SSIM)
    assert scores["tv"][0] >= 0.9 and scores["hessian"][0] >= 0.9
    assert scores["tikhonov"][0] > scores["average"][0] + 0.1
    assert scores["tv"][1] > scores["tikhonov"][1] > scores["average"][1]
    res_tv = fsc_resolution(fsc(normalize_for_comparison(results["tv"], truth), truth),
                            threshold=0.5)
    res_avg = fsc_resolution(fsc(normalize_for_comparison(results["average"], truth), truth),
                             threshold=0.5)
    assert res_tv > 0.3 and res_tv > res_avg + 0.1  # measured 0.42 and 0.20 cycles/voxel


def test_symmetry_helps_when_particles_are_few():
    """Fortun et al. 2018 Fig. 6: the C9 constraint matters most with few particles.

    Eloy et al. 2023 setting (C9 barrel, Gaussian PSF 1.5/5 voxels, its noise), 4 particles of
    32^3 with their true poses.  Folding C9 into the sums must beat both the plain
    reconstruction and its symmetrisation after the fact (which cannot fill the Fourier
    regions that 4 poses leave empty).  Measured SSIM (weights 3e-4, 1e-3): plain 0.604,
    0.648; symmetrised afterwards 0.705, 0.679; folded 0.738, 0.687 (with the former
    trilinear folding: 0.693, 0.641, below the symmetrised plain reconstruction).
    """
    from spfluo.algorithms.symmetry import symmetrize

    data = simulate_dataset(phantom="c9", size=32, n_particles=4, seed=2)
    truth = data.volume[0]
    plain, after, folded = [], [], []
    s1 = rc.precompute_sums(data.particles, data.poses, data.psf, symmetry=1)
    s9 = rc.precompute_sums(data.particles, data.poses, data.psf, symmetry=9)
    for w in (3e-4, 1e-3):
        v1 = rc.reconstruct_admm(s1, regularizer="hessian", weight=w, iterations=60).volume[0]
        v9 = rc.reconstruct_admm(s9, regularizer="hessian", weight=w, iterations=60).volume[0]
        plain.append(_score(v1, truth)[0])
        after.append(_score(symmetrize(v1, 9), truth)[0])
        folded.append(_score(v9, truth)[0])
    assert all(f >= a for f, a in zip(folded, after)), (folded, after)
    assert max(folded) > max(plain) + 0.05, (folded, plain)
    assert max(folded) > max(after) + 0.02, (folded, after)


def test_c9_folding_is_exact_for_the_kernel_and_the_backprojection():
    """C9 (not a grid symmetry): the folded kernel is the DTFT oracle of the 9N poses
    (trilinear tolerance), and the folded back-projection the analytic mean of the
    rotated copies (exact rotations: no interpolation blur)."""
    from spfluo.algorithms.geometry import rotation_about_z

    p, n = 20, 3
    psf = gaussian_psf((19, 19, 19), (3.0, 1.0))
    psf /= psf.sum()
    rots = random_rotations(n, seed=1)
    y = np.zeros((n, 1, p, p, p), np.float32)
    folded = rc.precompute_sums(y, Poses(rots, np.zeros((n, 3))), psf, symmetry=9, pad=1.0)
    kz, kx = np.fft.fftfreq(p), np.fft.rfftfreq(p)
    grid = np.stack(np.meshgrid(kz, kz, kx, indexing="ij"), -1).reshape(-1, 3)
    # the Gaussian PSF is separable (to 4e-8): its DTFT is the product of its marginals'
    marginals = [psf.sum(axis=tuple(b for b in range(3) if b != a)) for a in range(3)]
    expected = np.zeros(len(grid))
    for r in rots:
        for c in cyclic_group(9):
            k = grid @ (r @ c).T  # the particle-frame frequency of the pose R_i C_j
            inside = np.abs(k).max(axis=1) <= 0.5  # K is 0 beyond the Nyquist cube
            power = np.prod([_dtft_power(m, k[:, a:a + 1]) for a, m in enumerate(marginals)],
                            axis=0)
            expected += power * np.prod(np.sinc(k) ** 2, axis=1) * inside
    expected /= 9 * n
    err = np.abs(folded.kernel[0].ravel() - expected)
    # measured 0.024 (max) and 8e-4 (rms) of the peak: the trilinear sampling of |H|^2,
    # as without symmetry; the former trilinear rotation of K: 0.063 and 2.5e-3
    assert err.max() < 0.035 * expected.max()
    assert np.sqrt(np.mean(err**2)) < 1.5e-3 * expected.max()
    # back-projection: a delta PSF, the identity pose and an integer shift, so that
    # b = T_{-t} y exactly; y is a sum of Gaussian blobs, shifted by t
    blobs = [(np.array([1.0, 3.0, -2.5]), 1.6), (np.array([-2.0, -3.5, 1.0]), 1.8)]
    shift = np.array([1.0, -2.0, 1.0])
    q = 28
    cells = np.indices((q, q, q)) - q // 2

    def render(rotation, offset=np.zeros(3)):
        out = np.zeros((q, q, q))
        for centre, sigma in blobs:
            d = cells - (rotation @ centre + offset)[:, None, None, None]
            out += np.exp(-(d**2).sum(0) / (2 * sigma**2))
        return out

    particle = render(np.eye(3), shift).astype(np.float32)[None, None]
    sums = rc.precompute_sums(particle, Poses(np.eye(3)[None], shift[None]),
                              np.ones((1, 1, 1), np.float32), symmetry=9, pad=1.0)
    oracle = np.mean([render(rotation_about_z(2 * np.pi * j / 9)) for j in range(9)], axis=0)
    # measured 3e-6 of the peak (the former trilinear rotations: 4e-2)
    np.testing.assert_allclose(sums.backprojection[0], oracle, atol=2e-5 * oracle.max())


def test_reconstruct_with_half_maps_and_automatic_weight(dataset):
    grid = [1e-1, 3e-2, 1e-2]
    out = rc.reconstruct(dataset.particles, dataset.poses, dataset.psf, method="tikhonov",
                         weight="auto", weights=grid, seed=1, voxel_size_um=0.05)
    assert out.volume.shape == (1, 32, 32, 32) and out.half_maps.shape == (2, 1, 32, 32, 32)
    choice = out.weight_choice
    # the given grid comes first, extended towards weak weights until the minimum is inside
    assert out.sweep_weights[:3].tolist() == grid and out.sweep_weights.size > 3
    assert choice.interior[0]
    i = int(np.argmin(out.sweep_misfit[:, 0]))
    assert 0 < i < out.sweep_weights.size - 1
    # the half-set weight is the largest within 3 standard errors of the minimum, halved
    w = out.sweep_weights
    excess = out.sweep_misfit[:, 0] - out.sweep_misfit[i, 0] - 3 * choice.standard_error[:, 0]
    within = (w >= w[i]) & (w <= choice.half_weight[0])
    assert np.all(excess[within] <= 0)
    stronger = np.flatnonzero(w > choice.half_weight[0])
    assert stronger.size and excess[stronger[-1]] > 0  # the next stronger one is beyond
    assert choice.minimum[0] <= choice.half_weight[0] * (1 + 1e-9)
    assert out.weight[0] == pytest.approx(0.5 * choice.half_weight[0], rel=1e-9)
    assert out.mask_radius == pytest.approx(14.4)
    assert np.bincount(out.halves).tolist() == [10, 10]
    assert out.coverage.shape == (1, 36, 36, 36)  # the padded grid (pad 1.125)
    assert out.coverage[0, 18, 18, 18] == pytest.approx(1.0, rel=1e-5)
    res = out.resolution[0]
    assert res.measured and 0.1 < res.frequency_per_voxel <= out.cutoff_per_voxel
    assert out.resolution_per_voxel[0] == res.frequency_per_voxel
    assert res.um == pytest.approx(0.05 / res.frequency_per_voxel)
    # the chosen weight's ground-truth PSNR is within 0.5 dB of the best of a fine grid
    truth = dataset.volume[0]
    s = rc.combine_sums(*rc.precompute_half_sums(dataset.particles, dataset.poses,
                                                 dataset.psf, seed=1))
    psnrs = [_score(rc.reconstruct_tikhonov(s, weight=w, mask_radius=14.4)[0], truth)[1]
             for w in np.logspace(-3, -1, 9)]
    chosen = _score(out.volume[0], truth)[1]
    assert chosen > max(psnrs) - 0.5, (chosen, max(psnrs))


def test_baselines_order(dataset):
    truth = dataset.volume[0]
    # the default weight="auto" is ignored by the average
    avg = rc.reconstruct(dataset.particles, dataset.poses, None, method="average", seed=0)
    assert np.isnan(avg.weight).all() and avg.coverage is None
    assert avg.half_maps.shape == (2, 1, 32, 32, 32)
    sub = dataset.particles[:8], dataset.poses[:8]
    deconv = rc.deconv_average(*sub, dataset.psf, weight=3e-3, iterations=30)
    plain = rc.average(*sub)
    assert _score(deconv[0], truth)[1] > _score(plain[0], truth)[1] + 2  # dB


# ------------------------------------------------------------------ validation


def test_invalid_inputs_are_rejected(dataset, sums):
    y, poses, psf = dataset.particles[:4], dataset.poses[:4], dataset.psf
    with pytest.raises(ValueError, match="poses must be a"):
        rc.precompute_sums(y, poses.rotations, psf)
    with pytest.raises(ValueError, match="5 poses but there are 4|4 particles but poses has 5"):
        rc.precompute_sums(y, dataset.poses[:5], psf)
    with pytest.raises(ValueError, match="larger than the particle box"):
        rc.precompute_sums(y, poses, np.ones((33, 5, 5), np.float32))
    with pytest.raises(ValueError, match="psf has 3 channels"):
        rc.precompute_sums(y, poses, np.ones((3, 5, 5, 5), np.float32))
    with pytest.raises(ValueError, match="positive sum"):
        rc.precompute_sums(y, poses, np.zeros((5, 5, 5), np.float32))
    bad = y.copy()
    bad[0, 0, 3, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        rc.precompute_sums(bad, poses, psf)
    with pytest.raises(ValueError, match="cubic boxes"):
        rc.precompute_sums(y[..., :30], poses, psf)
    with pytest.raises(ValueError, match="symmetry must be an integer >= 1"):
        rc.precompute_sums(y, poses, psf, symmetry=0)
    with pytest.raises(ValueError, match="order must be 1"):
        rc.precompute_sums(y, poses, psf, order=2)
    with pytest.raises(ValueError, match="pad must be"):
        rc.precompute_sums(y, poses, psf, pad=0.5)
    with pytest.raises(ValueError, match="shape \\(N, C, D, D, D\\)"):
        rc.precompute_sums(y[0, 0], poses, psf)
    with pytest.raises(ValueError, match="\\(slice, batch\\)"):
        rc.precompute_sums([y], poses, psf)
    with pytest.raises(ValueError, match="held 3 particles but poses has 4"):
        rc.precompute_sums([(slice(0, 3), y[:3])], poses, psf)
    with pytest.raises(ValueError, match="empty"):
        rc.precompute_sums([], poses, psf)
    with pytest.raises(ValueError, match="weight must be a number >= 0"):
        rc.reconstruct_tikhonov(sums, weight=-1.0)
    with pytest.raises(ValueError, match="sums must be a ReconstructionSums"):
        rc.reconstruct_admm(sums.backprojection)
    with pytest.raises(ValueError, match="regularizer must be"):
        rc.reconstruct_admm(sums, regularizer="l2")
    with pytest.raises(ValueError, match="iterations must be an integer >= 1"):
        rc.reconstruct_admm(sums, iterations=0)
    with pytest.raises(ValueError, match="init must be an ADMMState or a volume"):
        rc.reconstruct_admm(sums, init=np.zeros((1, 8, 8, 8)))
    state = rc.reconstruct_admm(sums, regularizer="tv", iterations=1).state
    with pytest.raises(ValueError, match="warm start with the same regulariser"):
        rc.reconstruct_admm(sums, regularizer="hessian", init=state)
    with pytest.raises(ValueError, match="method must be one of"):
        rc.reconstruct(y, poses, psf, method="wiener")
    with pytest.raises(ValueError, match="set half_maps=True"):
        rc.reconstruct(y, poses, psf, weight="auto", half_maps=False)
    with pytest.raises(ValueError, match="not 'deconv-average'"):
        rc.reconstruct(y, poses, psf, method="deconv-average", weight="auto")
    with pytest.raises(ValueError, match="weights is the grid of weight='auto'"):
        rc.reconstruct(y, poses, psf, weight=1e-3, weights=[1e-3, 1e-4, 1e-5])
    with pytest.raises(ValueError, match="mask_radius must be a radius in voxels"):
        rc.reconstruct(y, poses, psf, weight=1e-3, mask_radius=100.0)
    with pytest.raises(ValueError, match="one-shot iterable"):
        rc.reconstruct(iter([(slice(0, 4), y)]), poses, psf, weight=1e-3)
    with pytest.raises(ValueError, match="at least 2 particles"):
        rc.reconstruct(y[:1], poses[:1], psf, weight=1e-3)
    with pytest.raises(ValueError, match="n_particles must be an integer >= 2"):
        rc.half_split(1)
    with pytest.raises(ValueError, match="halves must hold one 0 or 1 per particle"):
        rc.precompute_half_sums(y, poses, psf, halves=[0, 1, 2, 0])


def test_single_view_deconvolves_the_best_particle():
    """Fortun et al. 2018's single view: the particle of best signal-to-noise ratio (here
    the one given ten times less noise) deconvolved and turned into the reference frame;
    worse than a reconstruction from all the particles, better than nothing."""
    ds = simulate_dataset(phantom="asymmetric", size=24, n_particles=8, sigma_xy=1.5,
                          sigma_z=3.0, noise_std=0.0, n_spots=0, seed=4)
    rng = np.random.default_rng(0)
    noisy = ds.particles + rng.normal(0, 0.3, ds.particles.shape).astype(np.float32)
    noisy[5] = ds.particles[5] + rng.normal(0, 0.03, ds.particles[5].shape).astype(np.float32)
    from spfluo.algorithms.reconstruct.baselines import best_particle

    assert best_particle(noisy, ds.psf) == 5
    single = rc.reconstruct(noisy, ds.poses, ds.psf, method="single-view", weight=None,
                            half_maps=False)
    alone = rc.deconv_average(noisy[5:6], ds.poses[5:6], ds.psf, iterations=50)
    np.testing.assert_allclose(single.volume, alone, atol=1e-6 * float(np.abs(alone).max()))
    truth = ds.volume[0]
    s_single = ssim(normalize_for_comparison(single.volume[0], truth), truth)
    full = rc.reconstruct(noisy, ds.poses, ds.psf, method="hessian", weight=None,
                          half_maps=False)
    s_full = ssim(normalize_for_comparison(full.volume[0], truth), truth)
    assert 0.3 < s_single < s_full
    halves = rc.reconstruct(noisy, ds.poses, ds.psf, method="single-view", weight=None)
    assert halves.half_maps.shape == (2, 1, 24, 24, 24)
    with pytest.raises(ValueError, match="not 'single-view'"):
        rc.reconstruct(noisy, ds.poses, ds.psf, method="single-view", weight="auto")
