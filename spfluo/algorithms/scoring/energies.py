"""Candidate energies: how well a model at a pose explains a particle.

For a particle ``y`` and a candidate model ``m = h^ R f^`` (:mod:`.model`) on the support
(:mod:`.spectra`), three terms make every energy: the correlation ``c(t)`` of the particle
with the model shifted by ``t`` (its best ``t`` by :class:`~.shifts.ShiftSurface`, refined by
Newton iterations on the exact trigonometric polynomial), the model's energy ``n`` and the
particle's energy ``Y``.  The data model of the spectra chooses the energy:

- **Gaussian** (``offset=False``, Eloy et al. 2023 eq. 12): the negative log-likelihood
  ``(Y + n - 2 c) / 2`` of white noise, each channel whitened by its noise power ``s``
  (so the energies are on the scale of log-likelihoods, whatever the intensities);
- **best scale and offset** (``offset=True``, Fortun et al. 2018 eq. 8 with an intensity
  scale and a background per particle and channel): ``min_{a >= 0, b} ||y - a B m -
  b||^2 / ||y - mean||^2 = 1 - max(c, 0)^2 / (n Y)`` in ``[0, 1]``.  With a padded grid
  (``P > D``) the blur is a linear convolution whose result is cropped to the particle box
  ``B`` (what the microscope and the extraction do), so ``n = ||B m||^2`` about its mean,
  computed exactly from the band-limited spectrum with a separable Gram matrix
  (:func:`_gram_axis`); without padding it is the plain spectral energy (circular model).
  By the envelope theorem the gradient of this energy is that of the least-squares energy
  at the optimal scale and offset (what the continuous refinement descends).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spfluo.algorithms.backend import to_numpy
from spfluo.algorithms.scoring.shifts import ShiftSurface
from spfluo.algorithms.scoring.spectra import ParticleSpectra

__all__ = ["Scorer", "Evaluation", "NEWTON_ITERATIONS"]

#: Newton iterations on the exact correlation of the best candidates.
NEWTON_ITERATIONS = 3
#: Complex values of candidate surfaces held at once (bounds the work memory).
SURFACE_BUDGET = 1 << 22
# candidate points (candidates x frequencies) modelled at once by Scorer.evaluate
_CHUNK_POINTS = 1 << 21


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


def _newton_step(xp, grad, hess, limit: float):
    """Newton ascent steps ``-H^-1 g`` (B, 3) in voxels, zero where ``H`` (B, 3, 3) is not
    negative definite, each shortened to a norm of at most ``limit`` voxels (on the device
    of the arrays)."""
    concave = xp.linalg.eigvalsh(hess).max(axis=1) < 0
    safe = xp.where(concave[:, None, None], hess, -xp.eye(3)[None])
    step = -xp.linalg.solve(safe, grad[:, :, None])[:, :, 0]
    step = xp.where(concave[:, None], step, 0.0)
    norm = xp.sqrt((step**2).sum(axis=1))
    return step * xp.minimum(1.0, limit / xp.maximum(norm, 1e-12))[:, None]


@dataclass(frozen=True)
class Evaluation:
    """Energies of one particle's candidates, each at its best translation (on the device of
    the spectra).

    Attributes
    ----------
    nll : ndarray, float64, shape (B,)
        Gaussian energy (whitened half residual, a negative log-likelihood up to a
        constant) or, for offset-fitted spectra, the relative energy.
    shifts : ndarray, float64, shape (B, 3)
        Best translation of each candidate, voxels ``(z, y, x)``.
    relative : ndarray, float64, shape (B,)
        Residual energy relative to the particle's (``2 nll / Y`` for the Gaussian energy).
    """

    nll: np.ndarray
    shifts: np.ndarray
    relative: np.ndarray


class Scorer:
    """Candidate energies for one :class:`~.spectra.ParticleSpectra`, channels and support.

    Parameters
    ----------
    spectra : ParticleSpectra
    channels : sequence of int, optional
        Channels compared (default all; they share the poses).
    max_shift : float
        Largest translation norm, voxels.
    subset : array_like of int, optional
        Support frequencies used (default all), e.g. a band for a coarse stage.
    surface : {"exact", "peak"}
        Grid policy of the correlation surfaces (:mod:`.shifts`).
    shift_step : float
        ``surface="peak"``: grid step in units of the correlation peak width.
    """

    def __init__(self, spectra: ParticleSpectra, channels=None, max_shift: float = math.inf,
                 subset=None, *, surface: str = "exact", shift_step: float = 1.0):
        bk = spectra.backend
        xp = bk.xp
        self.bk = bk
        self.spectra = spectra
        self.channels = list(range(spectra.n_channels) if channels is None else channels)
        self.d = spectra.grid  # phases and translations live on the (padded) grid
        self.max_shift = float(max_shift)
        self.subset = None if subset is None else np.asarray(subset)
        self.gaussian = not spectra.offset
        q = spectra.frequencies if subset is None else spectra.frequencies[self.subset]
        self.n_freq = int(q.shape[0])
        # the support in units of 1 / D cycles per voxel (host), where models are sampled
        self.model_frequencies = q.astype(np.float64) * (spectra.box / spectra.grid)
        # with their Hermitian partners -q (the adjoint of a real volume's model)
        self.model_frequencies_pm = np.concatenate([self.model_frequencies,
                                                    -self.model_frequencies])
        self.points = xp.asarray(self.model_frequencies.astype(np.float32))  # (M, 3)
        self.q = xp.asarray(q.astype(np.float64))  # (M, 3)
        sub = None if subset is None else xp.asarray(self.subset)
        self.w = spectra.weights if subset is None else spectra.weights[sub]
        self.w64 = self.w.astype(xp.float64)
        self.otf = spectra.otf[self.channels] if subset is None else \
            spectra.otf[self.channels][:, sub]
        self.otf_power = (self.otf.real**2 + self.otf.imag**2).astype(xp.float32)
        power = to_numpy(self.otf_power.sum(axis=0)) if surface == "peak" else None
        self.surface = ShiftSurface(bk, q, self.d, self.max_shift, policy=surface,
                                    weights=to_numpy(self.w), power=power,
                                    shift_step=shift_step)
        self.cell = self.surface.cell
        if self.gaussian:
            # whitened spectral energy sum_c sum_q w |y_c|^2 / s_c of every particle on this
            # support (device, float64)
            y = spectra.values[:, self.channels]
            if subset is not None:
                y = y[..., sub]
            power = ((y.real**2 + y.imag**2) * self.w).sum(axis=-1)
            self.energy = (power * spectra.inv_noise[:, self.channels]).sum(
                axis=-1).astype(xp.float64)
        else:
            self.energy = spectra.energy[:, self.channels].sum(axis=1)  # (N,) host
        self.boxed = spectra.grid != spectra.box
        if self.boxed:
            self._box_setup(q)

    def _box_setup(self, q):
        xp = self.bk.xp
        spectra = self.spectra
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

    @classmethod
    def for_band(cls, spectra: ParticleSpectra, band: int, max_shift: float, **kw) -> "Scorer":
        """The support restricted to the band ``|q| < band / 2`` (units of ``1 / D``) of a
        volume of ``band^3`` voxels, every channel; ``kw`` as for the constructor."""
        radius = np.sqrt((spectra.frequencies.astype(np.float64) ** 2).sum(axis=1)) * (
            spectra.box / spectra.grid)
        subset = np.nonzero(radius < band / 2.0)[0]
        if subset.size < 4:
            raise ValueError(f"band {band} keeps only {subset.size} support frequencies: use "
                             "less downsampling")
        return cls(spectra, None, max_shift, subset, **kw)

    @property
    def half_size(self) -> int:
        return self.surface.half_size

    def ramp(self, t):
        """``rho_t = exp(-2 i pi q.t / P)`` (M,) complex64 for one translation t (3,) voxels."""
        xp = self.bk.xp
        phase = (self.points @ xp.asarray(t, dtype=xp.float32)) * np.float32(
            -2.0 * np.pi / self.spectra.box)
        return (xp.cos(phase) + 1j * xp.sin(phase)).astype(xp.complex64)

    def data(self, particle: int):
        """Particle spectra (Cs, M) of one particle on this support, not whitened."""
        y = self.spectra.values[particle][self.channels]
        return y if self.subset is None else y[:, self.bk.xp.asarray(self.subset)]

    # -- particles and model terms
    def particles(self, indices):
        """Particle spectra (P, Cs, M) of particles ``indices`` on this support (whitened by
        the noise power of each channel for the Gaussian energy)."""
        xp = self.bk.xp
        idx = xp.asarray(indices)
        y = self.spectra.values[idx][:, self.channels]
        if self.subset is not None:
            y = y[..., xp.asarray(self.subset)]
        if self.gaussian:
            y = y * self.spectra.inv_noise[idx][:, self.channels][:, :, None]
        return y

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

    def model_energy(self, m, t=None, inv_noise=None):
        """Model energy of models m (B, Cs, M), summed over channels: ``P^3 ||B T_t m -
        mean||^2`` in the box (offset fitted), or the spectral energy (circular model),
        each channel weighted by ``inv_noise`` (Cs,) for the Gaussian energy."""
        xp = self.bk.xp
        if not self.boxed:
            power = (m.real**2 + m.imag**2) * self.w
            if inv_noise is not None:
                return (power.sum(axis=-1) * inv_noise[None]).sum(axis=-1, dtype=xp.float64)
            # circular model: the support excludes the zero frequency, the mean is 0
            return power.sum(axis=(-2, -1), dtype=xp.float64)
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

    # -- translations
    def surface_peaks(self, x):
        """Peak of each candidate's correlation surface: (c (B,), shifts (B, 3)) float64, the
        shifts within ``max_shift``."""
        c, t = self.surface.peaks(x)
        return c, self.project(t)

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
        """Translations (B, 3) scaled back to the ball ``|t| <= max_shift``."""
        xp = self.bk.xp
        norm = xp.sqrt((t**2).sum(axis=1))
        factor = xp.minimum(1.0, self.max_shift / xp.maximum(norm, 1e-12))
        return t * factor[:, None]

    def newton(self, x, m, t0, inv_noise=None, *, sync: bool = True):
        """Translations maximising the correlation, from ``t0`` (B, 3), and the energy terms.

        Newton steps on the exact ``c(t)`` (accepted when ``c`` increases); the model
        energy ``n`` is then evaluated exactly at the result (its dependence on ``t`` is
        weak: the continuous refinement optimises the exact joint energy).  Returns
        (c (B,), n (B,), t (B, 3)) on the device.  With ``sync`` the iterations stop when
        every step is below 1e-4 voxel (a check on the host); without, all of them run.
        """
        xp = self.bk.xp
        t = self.project(xp.asarray(t0, dtype=xp.float64))
        c = self.correlation(x, t)
        limit = float(self.cell.max())
        for _ in range(NEWTON_ITERATIONS):
            _, grad, hess = self.correlation(x, t, derivatives=True)
            step = _newton_step(xp, grad, hess, limit)
            t_new = self.project(t + step)
            c_new = self.correlation(x, t_new)
            better = c_new > c
            t = xp.where(better[:, None], t_new, t)
            c = xp.where(better, c_new, c)
            if sync and float(xp.abs(step).max()) < 1e-4:
                break
        return c, self.model_energy(m, t, inv_noise=inv_noise), t

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
        for _ in range(NEWTON_ITERATIONS):
            _, gc, hc = self.correlation(x, t, derivatives=True)
            _, gn, hn = self.model_energy_terms(m, t)
            a = (xp.maximum(c, 0.0) / xp.maximum(n, 1e-300))[:, None]
            step = _newton_step(xp, gc - 0.5 * a * gn, hc - 0.5 * a[:, :, None] * hn, limit)
            t_new = self.project(t + step)
            c_new = self.correlation(x, t_new)
            n_new = self.model_energy(m, t_new)
            r_new = xp.maximum(c_new, 0.0) ** 2 / xp.maximum(n_new, 1e-300)
            better = r_new > ratio
            t = xp.where(better[:, None], t_new, t)
            c = xp.where(better, c_new, c)
            n = xp.where(better, n_new, n)
            ratio = xp.where(better, r_new, ratio)
            if float(xp.abs(step).max()) < 1e-4:
                break
        return c, n, t

    # -- energies
    def energies(self, c, n, energy):
        """The energy of the terms: Gaussian ``(Y + n - 2 c) / 2``, or relative ``1 -
        max(c, 0)^2 / (n Y)`` (in [0, 1]) for offset-fitted spectra."""
        xp = self.bk.xp
        if self.gaussian:
            return 0.5 * (energy + n - 2.0 * c)
        cp = xp.maximum(c, 0.0)
        return xp.clip(1.0 - cp * cp / xp.maximum(n * energy, 1e-300), 0.0, 1.0)

    def evaluate(self, model, particle: int, rotations, *, exact: int = 4,
                 sync: bool = True) -> Evaluation:
        """Energies of one particle for every rotation (B, 3, 3), each at its best translation.

        The correlation surface of every candidate (one batched inverse FFT) gives its
        translation and energy; the ``exact`` best candidates then get Newton iterations on
        the exact correlation.  ``model`` samples the volume (:mod:`.model`).  The arrays of
        the result stay on the device; ``sync=False`` runs every Newton iteration instead of
        checking for convergence on the host.
        """
        xp = self.bk.xp
        rotations = xp.asarray(rotations, dtype=xp.float64)
        nb = int(rotations.shape[0])
        y = self.particles([particle])  # (1, Cs, M)
        inv_s = self.spectra.inv_noise[particle][self.channels] if self.gaussian else None
        energy = self.energy[particle]
        nll = xp.empty(nb, dtype=xp.float64)
        shifts = xp.empty((nb, 3), dtype=xp.float64)
        step = max(1, _CHUNK_POINTS // max(self.n_freq, 1))
        for start in range(0, nb, step):
            sl = slice(start, min(nb, start + step))
            m = model.at(rotations[sl], self)  # (b, Cs, M)
            x = self.cross(y, m)[0]  # (b, M)
            c, t = self.surface_peaks(x)
            n = self.model_energy(m, inv_noise=inv_s)
            nll[sl] = self.energies(c, n, energy)
            shifts[sl] = t
        if exact:
            best = xp.argsort(nll)[:exact]
            m = model.at(rotations[best], self)
            c, n, t = self.newton(self.cross(y, m)[0], m, shifts[best], inv_noise=inv_s,
                                  sync=sync)
            e = self.energies(c, n, energy)
            better = e <= nll[best]
            nll[best] = xp.where(better, e, nll[best])
            shifts[best] = xp.where(better[:, None], t, shifts[best])
        relative = 2.0 * nll / xp.maximum(energy, 1e-30) if self.gaussian else nll.copy()
        return Evaluation(nll=nll, shifts=shifts, relative=relative)

    def energies_at(self, model, particle: int, rotations, translations):
        """Energies (B,) of one particle at given poses: rotations (B, 3, 3), translations
        (B, 3) voxels (on the device)."""
        xp = self.bk.xp
        rotations = xp.asarray(rotations, dtype=xp.float64)
        translations = xp.asarray(translations, dtype=xp.float64)
        y = self.particles([particle])
        inv_s = self.spectra.inv_noise[particle][self.channels] if self.gaussian else None
        energy = self.energy[particle]
        nb = int(rotations.shape[0])
        out = xp.empty(nb, dtype=xp.float64)
        step = max(1, _CHUNK_POINTS // max(self.n_freq, 1))
        for start in range(0, nb, step):
            sl = slice(start, min(nb, start + step))
            m = model.at(rotations[sl], self)
            c = self.correlation(self.cross(y, m)[0], translations[sl])
            n = self.model_energy(m, translations[sl], inv_noise=inv_s)
            out[sl] = self.energies(c, n, energy)
        return out
