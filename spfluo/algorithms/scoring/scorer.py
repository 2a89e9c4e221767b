"""TODO docstring spfluo/algorithms/scoring/scorer.py."""

from __future__ import annotations

import math

import numpy as np

from spfluo.algorithms.backend import AXES3, to_numpy
from spfluo.algorithms.scoring.spectra import (
    ParticleSpectra,
)


#: Complex values of candidate surfaces held at once (bounds the work memory).
_SURFACE_BUDGET = 1 << 22


#: Samples of the correlation surfaces per degree of freedom of the support (>= 1).
_SURFACE_OVERSAMPLING = 1.0


#: Newton iterations on the exact correlation of the best candidates.
_NEWTON_ITERATIONS = 3


def _surface_shape(q: np.ndarray, grid: int, oversampling: float) -> tuple[int, int, int]:
    """Odd translation grid (gz, gy, gx) for correlations supported on frequencies ``q``.

    The correlation of two signals on the support is a trigonometric polynomial of degree
    ``e_a = max |q_a|`` per axis: ``2 e_a + 1`` samples hold it without aliasing;
    ``oversampling`` times more make the parabolic peak fit more reliable (Newton
    iterations then give the exact maximum).
    """
    extent = np.abs(q).max(axis=0)
    out = []
    for e in extent:
        size = max(int(math.ceil(oversampling * (2 * int(e) + 1))), 3)
        size += 1 - size % 2
        out.append(max(min(size, grid + 1 - grid % 2), 2 * int(e) + 1))
    return tuple(out)


def _gram_axis(extent: int, box: int, grid: int) -> np.ndarray:
    """``A[q', q] = (1/P) sum_{x in box} exp(2 i pi (q - q') x / P)``, ``|q|, |q'| <= extent``.

    With ``m(x) = P^-3 sum_q m^(q) exp(2 i pi q.x / P)`` band-limited to the cube of
    frequencies, ``P^3 sum_{x in box} m(x)^2 = m^H (A_z (x) A_y (x) A_x) m`` (the box is a
    product of intervals, so the Gram matrix is separable).
    """
    s = np.arange(-extent, extent + 1)
    diff = s[None, :] - s[:, None]  # [q', q] -> q - q'
    x = np.arange(box) - box // 2
    return np.exp(2j * np.pi * np.multiply.outer(diff, x) / grid).sum(axis=-1) / grid


def _newton_step(grad: np.ndarray, hess: np.ndarray, limit: float) -> np.ndarray:
    """Newton ascent steps ``-H^-1 g`` (B, 3) in voxels, zero where ``H`` (B, 3, 3) is not
    negative definite, each shortened to a norm of at most ``limit`` voxels."""
    concave = np.linalg.eigvalsh(hess).max(axis=1) < 0
    step = np.zeros_like(grad)
    if concave.any():
        step[concave] = -np.linalg.solve(hess[concave], grad[concave][:, :, None])[:, :, 0]
    norm = np.linalg.norm(step, axis=1)
    step *= np.minimum(1.0, limit / np.maximum(norm, 1e-12))[:, None]
    return step


class _Scorer:
    """Candidate energies for one ParticleSpectra and a set of channels.

    The particle is compared with the model inside the particle box only: with a padded
    grid (``P > D``) the blur is a linear convolution whose result is cropped to the box
    (what the microscope and the extraction do), so the model energy that enters the
    least-squares energy is ``||B m||^2`` (``B`` the box), computed exactly from the
    band-limited spectrum with the separable Gram matrix of :func:`_gram_axis`.  Without
    padding it is the plain spectral energy (circular model).
    """

    def __init__(self, spectra: ParticleSpectra, channels, max_shift: float, subset=None):
        bk = spectra.backend
        xp = bk.xp
        self.bk = bk
        self.spectra = spectra
        self.channels = list(channels)
        self.d = spectra.grid  # phases and translations live on the (padded) grid
        self.max_shift = float(max_shift)
        self.subset = None if subset is None else np.asarray(subset)
        q = spectra.frequencies if subset is None else spectra.frequencies[self.subset]
        self.n_freq = int(q.shape[0])
        self.q = xp.asarray(q.astype(np.float64))  # (M, 3)
        self.w = spectra.weights if subset is None else spectra.weights[xp.asarray(subset)]
        self.w64 = self.w.astype(xp.float64)
        self.g = _surface_shape(q, self.d, _SURFACE_OVERSAMPLING)
        gz, gy, gx = self.g
        ghalf = (gz, gy, gx // 2 + 1)
        self.half_size = gz * gy * (gx // 2 + 1)
        self.surface_index = xp.asarray(np.ravel_multi_index(tuple((q % np.array(ghalf)).T),
                                                             ghalf))
        self.cell = np.array([self.d / s for s in self.g])  # voxels per surface sample
        signed = [np.where(np.arange(s) > s // 2, np.arange(s) - s, np.arange(s)) for s in self.g]
        positions = [signed[a] * self.cell[a] for a in range(3)]
        r2 = (positions[0][:, None, None] ** 2 + positions[1][None, :, None] ** 2
              + positions[2][None, None, :] ** 2)
        self.mask = xp.asarray(r2 <= self.max_shift**2 + 1e-9)
        self.signed = [xp.asarray(v) for v in signed]
        self.energy = spectra.energy[:, self.channels].sum(axis=1)  # (N,) host
        self.boxed = spectra.grid != spectra.box
        if self.boxed:
            e = np.abs(q).max(axis=0).astype(int)
            self.cube = tuple(int(2 * v + 1) for v in e)
            pos = np.ravel_multi_index(tuple((q + e).T), self.cube)
            mirror = np.flatnonzero(q[:, 2] > 0)
            neg = np.ravel_multi_index(tuple((-q[mirror] + e).T), self.cube)
            self.cube_pos = xp.asarray(pos)
            self.cube_neg = xp.asarray(neg)
            self.cube_src = xp.asarray(mirror)
            self.gram = [xp.asarray(_gram_axis(int(v), spectra.box, spectra.grid),
                                    dtype=xp.complex64) for v in e]
            # beta(q) = sum_{x in box} exp(2 i pi q.x / P): the box sum of the model is
            # P^-3 Re sum_k w m^(k) beta(k) (separable), used to fit the intensity offset
            xs = np.arange(spectra.box) - spectra.box // 2
            beta = np.ones(q.shape[0], dtype=np.complex128)
            for a in range(3):
                beta *= np.exp(2j * np.pi * np.multiply.outer(q[:, a], xs) / self.d).sum(axis=1)
            self.beta_w = xp.asarray(beta) * self.w64
            self.offset_scale = 1.0 / (float(self.d) ** 3 * float(spectra.box) ** 3)
            coords = [np.arange(-v, v + 1, dtype=np.float64) for v in e]
            shape = [(-1, 1, 1), (1, -1, 1), (1, 1, -1)]
            # derivative of the phase exp(-2 i pi q.t / P) on the cube coordinates
            self.cube_deriv = [xp.asarray((-2j * np.pi / self.d) * coords[a].reshape(shape[a]),
                                          dtype=xp.complex64) for a in range(3)]

    # -- model terms
    def particles(self, indices):
        """Particle spectra (P, Cs, M) of particles ``indices`` on this scorer's support."""
        xp = self.bk.xp
        y = self.spectra.values[xp.asarray(indices)][:, self.channels]
        return y if self.subset is None else y[..., xp.asarray(self.subset)]

    def cross(self, y, m):
        """``X = sum_c y_c conj(m_c)``: y (P, Cs, M); m (P, K, Cs, M) or shared (K, Cs, M)."""
        xp = self.bk.xp
        if m.ndim == 3:
            return xp.einsum("pcm,kcm->pkm", y, xp.conj(m))
        return xp.einsum("pcm,pkcm->pkm", y, xp.conj(m))

    def _phase(self, t):
        """``exp(-2 i pi q.t / P)`` (B, M) complex64 for translations t (B, 3)."""
        xp = self.bk.xp
        t = xp.asarray(t, dtype=xp.float64)
        return xp.exp((-2j * np.pi / self.d) * (t @ self.q.T)).astype(xp.complex64)

    def _to_cube(self, u):
        """Half-spectrum support values (..., M) -> full cube (..., nz, ny, nx)."""
        xp = self.bk.xp
        lead = u.shape[:-1]
        v = xp.zeros(lead + (int(np.prod(self.cube)),), dtype=xp.complex64)
        v[..., self.cube_pos] = u
        v[..., self.cube_neg] = xp.conj(u[..., self.cube_src])
        return v.reshape(lead + self.cube)

    def _gram(self, v):
        """``(A_z (x) A_y (x) A_x) v`` on cubes (..., nz, ny, nx), one matrix product per axis."""
        xp = self.bk.xp
        az, ay, ax = self.gram
        nz, ny, nx = self.cube
        lead = v.shape[:-3]
        b = int(np.prod(lead)) if lead else 1
        out = (v.reshape(-1, nx) @ ax.T).reshape(b, nz, ny, nx)
        out = xp.swapaxes(out, 2, 3).reshape(-1, ny) @ ay.T  # (b nz nx, ny)
        out = xp.swapaxes(out.reshape(b, nz, nx, ny), 2, 3)  # (b, nz, ny, nx)
        out = az @ out.reshape(b, nz, ny * nx)
        return out.reshape(lead + self.cube)

    def model_energy(self, m, t=None):
        """Energy about its box mean ``P^3 ||B T_t m - mean||^2`` of models m (B, Cs, M),
        summed over channels (the intensity offset of each channel is fitted)."""
        xp = self.bk.xp
        if not self.boxed:
            # circular model: the support excludes the zero frequency, the mean is 0
            return ((m.real**2 + m.imag**2) * self.w).sum(axis=(-2, -1), dtype=xp.float64)
        u = m if t is None else m * self._phase(t)[:, None, :]
        v = self._to_cube(u)
        n = (xp.conj(v) * self._gram(v)).real.sum(axis=(-4, -3, -2, -1), dtype=xp.float64)
        sigma = (u * self.beta_w).real.sum(axis=-1, dtype=xp.float64)  # (B, Cs)
        return n - self.offset_scale * (sigma**2).sum(axis=-1)

    def model_energy_terms(self, m, t):
        """``n(t)``, its gradient (B, 3) and Hessian (B, 3, 3) in the translation."""
        xp = self.bk.xp
        b = m.shape[0]
        if not self.boxed:
            n = self.model_energy(m)
            return n, xp.zeros((b, 3)), xp.zeros((b, 3, 3))
        u = m * self._phase(t)[:, None, :]
        v = self._to_cube(u)
        av = self._gram(v)
        dv = [v * self.cube_deriv[a] for a in range(3)]
        adv = [self._gram(x) for x in dv]

        def inner(a_, b_):
            return (xp.conj(a_) * b_).real.sum(axis=(-4, -3, -2, -1), dtype=xp.float64)

        n = inner(v, av)
        grad = xp.stack([2.0 * inner(dv[a], av) for a in range(3)], axis=1)
        hess = xp.empty((b, 3, 3))
        for a in range(3):
            for c in range(a, 3):
                val = 2.0 * (inner(dv[a] * self.cube_deriv[c], av) + inner(dv[a], adv[c]))
                hess[:, a, c] = val
                hess[:, c, a] = val
        # offset: n -= k sum_c sigma_c^2, sigma_c(t) = Re sum w beta u_c
        k = self.q * (-2.0 * np.pi / self.d)  # d/dt of the phase exponent, per frequency
        ub = u * self.beta_w  # (B, Cs, M)
        sigma = ub.real.sum(axis=-1)
        dsig = xp.stack([(ub * (1j * k[:, a])).real.sum(axis=-1) for a in range(3)], axis=-1)
        d2sig = -xp.einsum("bcm,ma,md->bcad", ub.real.astype(xp.float64), k, k)
        s = self.offset_scale
        n = n - s * (sigma**2).sum(axis=-1)
        grad = grad - 2.0 * s * (sigma[:, :, None] * dsig).sum(axis=1)
        hess = hess - 2.0 * s * (dsig[:, :, :, None] * dsig[:, :, None, :]
                                 + sigma[:, :, None, None] * d2sig).sum(axis=1)
        return n, grad, hess

    def model_energy_derivatives(self, m, dm, t):
        """Derivatives (B, 3) of ``n`` along the model variations dm (3, B, Cs, M) at t."""
        xp = self.bk.xp
        if not self.boxed:
            return xp.stack([2.0 * ((xp.conj(m) * dm[j]).real * self.w).sum(
                axis=(-2, -1), dtype=xp.float64) for j in range(3)], axis=1)
        ph = self._phase(t)[:, None, :]
        u = m * ph
        av = self._gram(self._to_cube(u))
        sigma = (u * self.beta_w).real.sum(axis=-1, dtype=xp.float64)  # (B, Cs)
        out = []
        for j in range(3):
            du = dm[j] * ph
            dv = self._to_cube(du)
            dn = 2.0 * (xp.conj(dv) * av).real.sum(axis=(-4, -3, -2, -1), dtype=xp.float64)
            dsig = (du * self.beta_w).real.sum(axis=-1, dtype=xp.float64)
            out.append(dn - 2.0 * self.offset_scale * (sigma * dsig).sum(axis=-1))
        return xp.stack(out, axis=1)

    # -- the coarse surface
    def surface_peaks(self, x):
        """Peak of each candidate's correlation surface: (c (B,), shifts (B, 3)) float64."""
        bk = self.bk
        xp = bk.xp
        b = x.shape[0]
        gz, gy, gx = self.g
        s = xp.zeros((b, self.half_size), dtype=xp.complex64)
        s[:, self.surface_index] = x
        surf = bk.irfftn(s.reshape(b, gz, gy, gx // 2 + 1), s=self.g, axes=AXES3)
        surf = surf * np.float32(gz * gy * gx)
        surf = xp.where(self.mask[None], surf, -xp.inf)
        flat = surf.reshape(b, -1)
        j = xp.argmax(flat, axis=1)
        rows = xp.arange(b)
        mid = flat[rows, j].astype(xp.float64)
        idx = list(xp.unravel_index(j, self.g))
        shifts = []
        value = mid.copy()
        for a in range(3):
            lo_i, hi_i = list(idx), list(idx)
            lo_i[a] = (idx[a] - 1) % self.g[a]
            hi_i[a] = (idx[a] + 1) % self.g[a]
            lo = surf[(rows, *lo_i)].astype(xp.float64)
            hi = surf[(rows, *hi_i)].astype(xp.float64)
            ok = xp.isfinite(lo) & xp.isfinite(hi)
            lo = xp.where(ok, lo, mid)
            hi = xp.where(ok, hi, mid)
            den = lo - 2.0 * mid + hi
            good = ok & (den < 0)
            safe = xp.where(good, den, -1.0)
            delta = xp.clip(xp.where(good, 0.5 * (lo - hi) / safe, 0.0), -0.5, 0.5)
            value = value - xp.where(good, (lo - hi) ** 2 / (8.0 * safe), 0.0)
            shifts.append((self.signed[a][idx[a]] + delta) * self.cell[a])
        return value, xp.stack(shifts, axis=1)

    # -- exact correlation
    def correlation(self, x, t, *, derivatives: bool = False):
        """Exact ``c(t) = Re sum_k w X e^{2 i pi k.t}`` (B,), and its gradient (B, 3) and
        Hessian (B, 3, 3) in voxels when ``derivatives``."""
        xp = self.bk.xp
        phase = xp.exp((2j * np.pi / self.d) * (xp.asarray(t, dtype=xp.float64) @ self.q.T))
        z = x.astype(xp.complex128) * phase * self.w64
        c = z.real.sum(axis=1)
        if not derivatives:
            return c
        k = self.q * (2.0 * np.pi / self.d)
        grad = -(z.imag @ k)
        hess = -xp.einsum("bm,ma,mc->bac", z.real, k, k)
        return c, grad, hess

    def project(self, t):
        xp = self.bk.xp
        norm = xp.sqrt((t**2).sum(axis=1))
        factor = xp.minimum(1.0, self.max_shift / xp.maximum(norm, 1e-12))
        return t * factor[:, None]

    def newton(self, x, m, t0):
        """Translations maximising the correlation, from ``t0`` (B, 3), and the energy terms.

        Newton steps on the exact ``c(t)`` (accepted when ``c`` increases); the in-box model
        energy ``n`` is then evaluated exactly at the result (its dependence on ``t`` is
        weak: the continuous refinement optimises the exact joint energy).  Returns
        (c (B,), n (B,), t (B, 3)).
        """
        xp = self.bk.xp
        t = self.project(xp.asarray(t0, dtype=xp.float64))
        c = self.correlation(x, t)
        limit = float(self.cell.max())
        for _ in range(_NEWTON_ITERATIONS):
            _, grad, hess = self.correlation(x, t, derivatives=True)
            hess_h = to_numpy(hess)
            grad_h = to_numpy(grad)
            step = _newton_step(grad_h, hess_h, limit)
            t_new = self.project(t + xp.asarray(step))
            c_new = self.correlation(x, t_new)
            better = c_new > c
            t = xp.where(better[:, None], t_new, t)
            c = xp.where(better, c_new, c)
            if float(np.abs(step).max(initial=0.0)) < 1e-4:
                break
        return c, self.model_energy(m, t), t

    def newton_joint(self, x, m, t0):
        """Maximise ``max(c, 0)^2 / n`` over the translation from ``t0`` (B, 3).

        Newton steps on ``c(t) - (a / 2) n(t)`` with ``a = c / n`` (the stationarity of the
        least-squares energy at the optimal scale), accepted when the ratio increases.
        Returns (c (B,), n (B,), t (B, 3)).
        """
        xp = self.bk.xp
        t = self.project(xp.asarray(t0, dtype=xp.float64))
        c = self.correlation(x, t)
        n = self.model_energy(m, t)
        ratio = xp.maximum(c, 0.0) ** 2 / xp.maximum(n, 1e-300)
        limit = float(self.cell.max())
        for _ in range(_NEWTON_ITERATIONS):
            _, gc, hc = self.correlation(x, t, derivatives=True)
            _, gn, hn = self.model_energy_terms(m, t)
            a = (xp.maximum(c, 0.0) / xp.maximum(n, 1e-300))[:, None]
            hess_h = to_numpy(hc - 0.5 * a[:, :, None] * hn)
            grad_h = to_numpy(gc - 0.5 * a * gn)
            step = _newton_step(grad_h, hess_h, limit)
            t_new = self.project(t + xp.asarray(step))
            c_new = self.correlation(x, t_new)
            n_new = self.model_energy(m, t_new)
            r_new = xp.maximum(c_new, 0.0) ** 2 / xp.maximum(n_new, 1e-300)
            better = r_new > ratio
            t = xp.where(better[:, None], t_new, t)
            c = xp.where(better, c_new, c)
            n = xp.where(better, n_new, n)
            ratio = xp.where(better, r_new, ratio)
            if float(np.abs(step).max(initial=0.0)) < 1e-4:
                break
        return c, n, t

    def energies(self, c, n, energy):
        """Relative energy ``1 - max(c, 0)^2 / (n Y)`` (in [0, 1]); ``Y`` the particle's."""
        xp = self.bk.xp
        cp = xp.maximum(c, 0.0)
        return xp.clip(1.0 - cp * cp / xp.maximum(n * energy, 1e-300), 0.0, 1.0)
