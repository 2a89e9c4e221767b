"""Translations: correlation surfaces on a grid of shifts, and their peaks.

For a cross-power spectrum ``X(q) = sum_c w_q y^_c(q) conj(m^_c(q))`` on the support, the
correlation of the particle with the model shifted by ``t`` is the trigonometric
polynomial ``C(t) = Re sum_q X(q) exp(2 i pi q.t / P)``.  It is sampled at the shifts
``t = m P / K`` of a ``(Kz, Ky, Kx)`` grid by one batched inverse real FFT: frequency ``q``
goes to ``q mod K`` (exact at those shifts even when ``K`` is smaller than the support: the
phases are ``K``-periodic), with coefficient ``w_q / alpha`` (``alpha`` = 2 inside the half
spectrum of the grid, 1 on its planes ``k_x = 0`` and Nyquist), or conjugated at
``-q mod K`` when ``q_x mod K_x`` falls in the other half; frequencies that land on the
same sample add up.  Two grid policies:

- ``"exact"``: ``K_a = 2 e_a + 1`` samples (``e_a = max |q_a|``, odd) hold the polynomial
  without aliasing (Fortun et al. 2018 sec. IV-B, the refinement);
- ``"peak"``: the step ``P / K_a`` is about the width of the correlation peak along axis
  ``a`` (from the spread of ``|h^|^2``): smaller grids, aliased but exact at the samples
  (Eloy et al. 2023 sec. 3.3, the SGD).

The peak of each surface is refined by a parabola per axis (its height gives the
correlation); :meth:`ShiftSurface.peaks` stays on the device.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft

from spfluo.algorithms.backend import AXES3, Backend

__all__ = ["ShiftSurface", "SURFACE_POLICIES"]

SURFACE_POLICIES = ("exact", "peak")


def _exact_shape(q: np.ndarray, grid: int, oversampling: float) -> tuple[int, int, int]:
    """Odd translation grid (gz, gy, gx) holding correlations supported on ``q``.

    The correlation of two signals on the support is a trigonometric polynomial of degree
    ``e_a = max |q_a|`` per axis: ``2 e_a + 1`` samples hold it without aliasing;
    ``oversampling`` times more make the parabolic peak fit more reliable.
    """
    extent = np.abs(q).max(axis=0)
    out = []
    for e in extent:
        size = max(int(math.ceil(oversampling * (2 * int(e) + 1))), 3)
        size += 1 - size % 2
        out.append(max(min(size, grid + 1 - grid % 2), 2 * int(e) + 1))
    return tuple(out)


def _peak_shape(q: np.ndarray, grid: int, weights: np.ndarray, power: np.ndarray,
                shift_step: float) -> tuple[int, int, int]:
    """Even grid whose step is about the width of the correlation peak along each axis."""
    shape = []
    for axis in range(3):
        # spread of |h^|^2 along the axis -> width of the correlation peak, voxels
        spread = math.sqrt(float((weights * power * q[:, axis] ** 2).sum()
                                 / (weights * power).sum()))
        width = grid / (2.0 * math.pi * max(spread, 1e-3))
        k = int(math.ceil(grid / (shift_step * width)))
        k = scipy.fft.next_fast_len(max(k, 4), real=True)
        k = min(k + (k % 2), grid + (grid % 2))
        shape.append(int(k))
    return tuple(shape)


def _layers(xp, index: np.ndarray) -> tuple:
    """Split positions into layers whose target indices do not repeat (for ``+=``)."""
    order = np.argsort(index, kind="stable")
    sorted_idx = index[order]
    first = np.r_[0, np.nonzero(np.diff(sorted_idx))[0] + 1]
    rank = np.arange(index.size) - np.repeat(first, np.diff(np.r_[first, index.size]))
    layers = []
    for r in range(int(rank.max()) + 1):
        pos = np.sort(order[rank == r])
        layers.append((xp.asarray(pos), xp.asarray(index[pos].astype(np.int64))))
    return tuple(layers)


class ShiftSurface:
    """Correlation surfaces of cross spectra on the support ``q``, and their peaks.

    Parameters
    ----------
    bk : Backend
    q : ndarray, int, shape (M, 3)
        Support frequencies (half spectrum, ``q_x >= 0``), in units of ``1 / grid``.
    grid : int
        Side ``P`` of the Fourier grid of ``q`` (shifts are in its voxels).
    max_shift : float
        Largest translation norm, voxels: samples beyond it are never peaks.
    policy : {"exact", "peak"}
        Grid policy (module docstring).
    weights, power : ndarray, shape (M,), optional
        Hermitian weights and ``|h^|^2`` at ``q`` (the ``"peak"`` policy).
    shift_step : float
        ``"peak"``: grid step in units of the peak width.
    oversampling : float
        ``"exact"``: samples per polynomial degree (1: the fewest that avoid aliasing).
    """

    def __init__(self, bk: Backend, q: np.ndarray, grid: int, max_shift: float, *,
                 policy: str = "exact", weights=None, power=None, shift_step: float = 1.0,
                 oversampling: float = 1.0):
        xp = bk.xp
        self.bk = bk
        q = np.asarray(q, dtype=np.int64)
        if policy == "exact":
            shape = _exact_shape(q, grid, oversampling)
        elif policy == "peak":
            shape = _peak_shape(q.astype(np.float64), grid, np.asarray(weights, np.float64),
                                np.asarray(power, np.float64), shift_step)
        else:
            raise ValueError(f"policy must be one of {SURFACE_POLICIES}, got {policy!r}")
        self.shape = shape
        gz, gy, gx = shape
        self.half = (gz, gy, gx // 2 + 1)
        self.half_size = gz * gy * (gx // 2 + 1)
        self.cell = np.array([grid / s for s in shape])  # voxels per surface sample
        signed = [np.where(np.arange(s) >= (s + 1) // 2, np.arange(s) - s, np.arange(s))
                  for s in shape]
        positions = [signed[a] * self.cell[a] for a in range(3)]
        r2 = (positions[0][:, None, None] ** 2 + positions[1][None, :, None] ** 2
              + positions[2][None, None, :] ** 2)
        self.mask = xp.asarray(r2 <= max_shift**2 + 1e-9)
        self.signed = [xp.asarray(v) for v in signed]
        # placement of the half-spectrum values on the half grid
        kmod = q % np.array(shape)
        other = kmod[:, 2] > gx // 2
        kk = kmod.copy()
        kk[other] = (-q[other]) % np.array(shape)
        alpha = np.where((kk[:, 2] == 0) | (2 * kk[:, 2] == gx), 1.0, 2.0)
        w = np.where(q[:, 2] > 0, 2.0, 1.0)
        coef = w / alpha
        index = np.ravel_multi_index((kk[:, 0], kk[:, 1], kk[:, 2]), self.half)
        self.direct = bool(not other.any() and np.all(coef == 1.0)
                           and np.unique(index).size == index.size)
        self.index = xp.asarray(index)
        if not self.direct:
            self.layers = _layers(xp, index)
            self.coef = xp.asarray(coef.astype(np.float32))
            self.coef_imag = xp.asarray(np.where(other, -coef, coef).astype(np.float32))

    def surfaces(self, x):
        """``C`` at the grid shifts for cross spectra ``x`` (B, M): (B, Kz, Ky, Kx) float32."""
        bk = self.bk
        xp = bk.xp
        b = int(x.shape[0])
        s = xp.zeros((b, self.half_size), dtype=xp.complex64)
        if self.direct:
            s[:, self.index] = x
        else:
            values = (x.real * self.coef) + 1j * (x.imag * self.coef_imag)
            for r, (pos, gi) in enumerate(self.layers):
                if r == 0:
                    s[:, gi] = values[:, pos]
                else:
                    s[:, gi] += values[:, pos]
        gz, gy, gx = self.shape
        surf = bk.irfftn(s.reshape((b,) + self.half), s=self.shape, axes=AXES3)
        return surf * np.float32(gz * gy * gx)

    def peaks(self, x):
        """Peak of each cross spectrum's correlation surface: (c (B,), shifts (B, 3)),
        float64 on the device; a parabola per axis refines the best sample."""
        xp = self.bk.xp
        surf = self.surfaces(x)
        b = int(surf.shape[0])
        # the best sample within max_shift; the parabolas use its neighbours, inside or not
        flat = xp.where(self.mask[None], surf, -xp.inf).reshape(b, -1)
        j = xp.argmax(flat, axis=1)
        rows = xp.arange(b)
        mid = flat[rows, j].astype(xp.float64)
        idx = list(xp.unravel_index(j, self.shape))
        shifts = []
        value = mid.copy()
        for a in range(3):
            lo_i, hi_i = list(idx), list(idx)
            lo_i[a] = (idx[a] - 1) % self.shape[a]
            hi_i[a] = (idx[a] + 1) % self.shape[a]
            lo = surf[(rows, *lo_i)].astype(xp.float64)
            hi = surf[(rows, *hi_i)].astype(xp.float64)
            den = lo - 2.0 * mid + hi
            good = den < 0
            safe = xp.where(good, den, -1.0)
            raw = xp.where(good, 0.5 * (lo - hi) / safe, 0.0)
            delta = xp.clip(raw, -0.5, 0.5)
            # the height of the parabola at its vertex, or at the clipped offset (a vertex
            # beyond half a sample is outside the cell: the neighbour is higher there)
            vertex = (lo - hi) ** 2 / (8.0 * safe)
            clipped = 0.5 * (hi - lo) * delta + 0.5 * safe * delta * delta
            value = value + xp.where(good, xp.where(raw == delta, -vertex, clipped), 0.0)
            shifts.append((self.signed[a][idx[a]] + delta) * self.cell[a])
        return value, xp.stack(shifts, axis=1)
