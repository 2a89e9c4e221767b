"""TODO docstring spfluo/algorithms/scoring/gaussian.py."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft

from spfluo.algorithms.backend import AXES3, to_numpy
from spfluo.algorithms.scoring.model import (
    _FourierVolume,
    _gather,
    _rotated_coordinates,
    _setup,
)
from spfluo.algorithms.scoring.spectra import (
    SpectralParticles,
)


# candidate points processed at once (bounds the temporary memory of a batch)
_CHUNK_POINTS = 1 << 21


@dataclass(frozen=True, eq=False)
class _Scale:
    """The support restricted to a band ``|p| < L/2``, and its correlation grid.

    The correlation ``C(t) = Re sum_p w_p c_p exp(2 i pi p.t / D)`` of a cross
    spectrum ``c`` is sampled at the shifts ``t = m D / K`` by one inverse real
    FFT of a ``(Kz, Ky, Kx)`` grid: point ``p`` goes to ``p mod K`` (exact at
    those shifts even when ``K`` is smaller than the support: the phases are
    ``K``-periodic), with coefficient ``w_p / alpha`` (``alpha`` = 2 inside the
    half spectrum of the grid, 1 on its planes ``k_x = 0`` and Nyquist), or
    conjugated at ``-p mod K`` when ``p_x mod K_x`` falls in the other half.
    ``K_a`` is chosen so that the step ``D / K_a`` is about the width of the
    correlation peak along axis ``a`` (from the spread of ``|h^|^2``).
    """

    band: int
    select: Any  # indices into SpectralParticles.points
    points: Any  # (Ms, 3) float32
    weights: Any  # (Ms,)
    otf: Any  # (C, Ms)
    otf_power: Any  # (C, Ms) float32
    grid: tuple  # correlation grid (Kz, Ky, Kx)
    grid_coef: Any  # (Ms,) float32 coefficient of the real part
    grid_coef_imag: Any  # (Ms,) float32 coefficient of the imaginary part (sign: conj)
    grid_layers: tuple  # ((point indices, grid flat indices), ...) without repeats each
    shift_mask: Any  # (Kz, Ky, Kx) bool, shifts within max_shift
    shift_axes: tuple  # three 1D arrays of shifts (voxels) per grid index
    data_energy: Any  # (N,) whitened sum_c sum_p w |Y|^2 / s


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


def _make_scale(data: SpectralParticles, band: int, max_shift: float,
                shift_step: float = 1.0) -> _Scale:
    xp = data.backend.xp
    d = data.box
    pts = to_numpy(data.points)
    r = np.sqrt((pts.astype(np.float64) ** 2).sum(axis=1))
    sel = np.nonzero(r < band / 2.0)[0]
    if sel.size < 4:
        raise ValueError(f"band {band} keeps only {sel.size} support frequencies: use less "
                         "downsampling")
    p = pts[sel]
    sel_x = xp.asarray(sel)
    w = data.weights[sel_x]
    otf = data.otf[:, sel_x]
    power = to_numpy((otf.real**2 + otf.imag**2).sum(axis=0)).astype(np.float64)
    wn = to_numpy(w).astype(np.float64)
    grid = []
    for axis in range(3):
        # spread of |h^|^2 along the axis -> width of the correlation peak, voxels
        spread = math.sqrt(float((wn * power * p[:, axis] ** 2).sum() / (wn * power).sum()))
        width = d / (2.0 * math.pi * max(spread, 1e-3))
        k = int(math.ceil(d / (shift_step * width)))
        k = scipy.fft.next_fast_len(max(k, 4), real=True)
        k = min(k + (k % 2), d + (d % 2))
        grid.append(int(k))
    kz, ky, kx = grid
    half = (kz, ky, kx // 2 + 1)
    kmod = np.stack([p[:, 0] % kz, p[:, 1] % ky, p[:, 2] % kx], axis=1)
    other = kmod[:, 2] > kx // 2
    kk = kmod.copy()
    kk[other] = np.stack([(-p[other, 0]) % kz, (-p[other, 1]) % ky, (-p[other, 2]) % kx],
                         axis=1)
    alpha = np.where((kk[:, 2] == 0) | (2 * kk[:, 2] == kx), 1.0, 2.0)
    coef = wn / alpha
    gidx = np.ravel_multi_index((kk[:, 0], kk[:, 1], kk[:, 2]), half)
    axes = []
    for k in grid:
        m = np.arange(k)
        signed = np.where(m >= (k + 1) // 2, m - k, m)
        axes.append(signed * (d / k))
    t2 = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
    mask = t2 <= max_shift**2 + 1e-9
    y = data.spectra[:, :, sel_x]
    energy = ((y.real**2 + y.imag**2) * w).sum(axis=-1)  # (N, C)
    energy = (energy * data.inv_noise).sum(axis=-1)
    return _Scale(
        band=int(band),
        select=sel_x,
        points=xp.asarray(p.astype(np.float32)),
        weights=w,
        otf=otf,
        otf_power=(otf.real**2 + otf.imag**2).astype(xp.float32),
        grid=(kz, ky, kx),
        grid_layers=_layers(xp, gidx),
        grid_coef=xp.asarray(coef.astype(np.float32)),
        grid_coef_imag=xp.asarray(np.where(other, -coef, coef).astype(np.float32)),
        shift_mask=xp.asarray(mask),
        shift_axes=tuple(xp.asarray(a) for a in axes),
        data_energy=energy.astype(xp.float64),
    )


def _parabola(lo, mid, hi):
    """Vertex offset in [-0.5, 0.5] and value of the parabola through (-1,lo),(0,mid),(1,hi)."""
    a = 0.5 * (lo + hi) - mid
    b = 0.5 * (hi - lo)
    ok = a < 0
    delta = np.where(ok, -b / np.where(ok, 2 * a, -1.0), 0.0)
    delta = np.clip(delta, -0.5, 0.5)
    return delta, mid + b * delta + a * delta * delta


@dataclass(frozen=True)
class _Evaluation:
    nll: np.ndarray  # (B,) float64, whitened half energy
    shifts: np.ndarray  # (B, 3) float64 voxels
    relative: np.ndarray  # (B,) relative residual energy


def _models(vol: "_FourierVolume", sc: _Scale, rotations):
    """``h^ R f^`` at the support points: (C, B, Ms) complex64."""
    xp = vol.bk.xp
    coords = _rotated_coordinates(xp, rotations, sc.points, vol.size // 2)
    base, frac = _setup(xp, coords, vol.size)
    c = int(vol.spectrum.shape[0])
    return xp.stack([_gather(xp, vol.spectrum[k].reshape(-1), base, frac, vol.size) * sc.otf[k]
                     for k in range(c)])


def _evaluate(vol: "_FourierVolume", sc: _Scale, data: SpectralParticles, l: int, rotations,
              *, box: int, max_shift: float, exact: int = 4) -> _Evaluation:
    """Energies of particle ``l`` for every rotation, each at its best translation.

    ``nll = (Y2 + |h b|^2 - 2 max_t C(t)) / 2``, whitened by the noise power:
    ``C`` is sampled on the correlation grid of ``sc`` (one batched inverse
    FFT) and refined by a parabola per axis; the ``exact`` best candidates
    then get Newton iterations on the exact ``C(t)`` (:func:`_refine_translation`).
    """
    bk = vol.bk
    xp = bk.xp
    rotations = np.asarray(rotations, dtype=np.float64)
    nb = rotations.shape[0]
    ms = int(sc.points.shape[0])
    kz, ky, kx = sc.grid
    half = (kz, ky, kx // 2 + 1)
    ng = half[0] * half[1] * half[2]
    inv_s = data.inv_noise[l]
    y = data.spectra[l][:, sc.select]  # (C, Ms)
    yw = y * inv_s[:, None]
    nll = np.empty(nb)
    shifts = np.empty((nb, 3))
    step = max(1, _CHUNK_POINTS // ms)
    for start in range(0, nb, step):
        sl = slice(start, min(nb, start + step))
        b = sl.stop - sl.start
        model = _models(vol, sc, rotations[sl])  # (C, b, Ms)
        power = model.real**2 + model.imag**2
        hb2 = ((power * sc.weights).sum(axis=-1) * inv_s[:, None]).sum(axis=0)  # (b,)
        cross = (yw[:, None, :] * xp.conj(model)).sum(axis=0)  # (b, Ms)
        values = (cross.real * sc.grid_coef) + 1j * (cross.imag * sc.grid_coef_imag)
        grid = xp.zeros((b, ng), dtype=xp.complex64)
        for r, (pos, gi) in enumerate(sc.grid_layers):
            if r == 0:
                grid[:, gi] = values[:, pos]
            else:
                grid[:, gi] += values[:, pos]
        grid = grid.reshape((b,) + half)
        surface = bk.irfftn(grid, s=sc.grid, axes=AXES3)
        surface *= np.float32(kz * ky * kx)
        masked = xp.where(sc.shift_mask[None], surface, -xp.inf)
        peak = xp.argmax(masked.reshape(b, -1), axis=1)
        iz, iy, ix = xp.unravel_index(peak, sc.grid)
        rows = xp.arange(b)
        mid = to_numpy(surface[rows, iz, iy, ix]).astype(np.float64)
        idx = [iz, iy, ix]
        best_value = mid.copy()
        out = []
        for axis, k in enumerate(sc.grid):
            lo_i = list(idx)
            hi_i = list(idx)
            lo_i[axis] = (idx[axis] - 1) % k
            hi_i[axis] = (idx[axis] + 1) % k
            lo = to_numpy(surface[(rows, *lo_i)]).astype(np.float64)
            hi = to_numpy(surface[(rows, *hi_i)]).astype(np.float64)
            delta, value = _parabola(lo, mid, hi)
            best_value += value - mid  # separable estimate of the peak height
            out.append(to_numpy(sc.shift_axes[axis][idx[axis]]) + delta * (box / k))
        shifts[sl] = np.stack(out, axis=1)
        nll[sl] = 0.5 * (to_numpy(sc.data_energy[l] + hb2) - 2.0 * best_value)
    for k in np.argsort(nll, kind="stable")[:exact]:
        t, value = _refine_translation(vol, sc, data, l, rotations[k], shifts[k], box=box,
                                       max_shift=max_shift)
        if value <= nll[k]:
            shifts[k], nll[k] = t, value
    data_energy = float(to_numpy(sc.data_energy[l]))
    relative = 2.0 * nll / max(data_energy, 1e-30)
    return _Evaluation(nll=nll, shifts=shifts, relative=relative)


def _refine_translation(vol, sc, data, l, rotation, t0, *, box: int, max_shift: float,
                        iterations: int = 5):
    """Newton iterations on the exact correlation ``C(t)`` for one rotation.

    Returns (t (3,), nll) with ``nll`` the exact whitened half energy at ``t``.
    """
    xp = vol.bk.xp
    model = _models(vol, sc, np.asarray(rotation)[None])[:, 0]  # (C, Ms)
    inv_s = data.inv_noise[l]
    y = data.spectra[l][:, sc.select]
    cross = (y * xp.conj(model) * inv_s[:, None]).sum(axis=0)  # (Ms,)
    wc = to_numpy(cross * sc.weights).astype(np.complex128)
    hb2 = float(to_numpy((((model.real**2 + model.imag**2) * sc.weights).sum(axis=1)
                          * inv_s).sum()))
    p = to_numpy(sc.points).astype(np.float64)
    scale = 2.0 * np.pi / box
    t = np.asarray(t0, dtype=np.float64).copy()
    norm0 = np.linalg.norm(t)
    if norm0 > max_shift:
        t *= max_shift / norm0

    def corr(tt):
        return float(np.real(wc * np.exp(1j * scale * (p @ tt))).sum())

    best_c = corr(t)
    for _ in range(iterations):
        z = wc * np.exp(1j * scale * (p @ t))
        grad = -scale * (z.imag @ p)
        hess = -(scale**2) * ((p * z.real[:, None]).T @ p)
        eig = np.linalg.eigvalsh(hess)
        if eig.max() >= 0:
            break
        step = -np.linalg.solve(hess, grad)
        norm = np.linalg.norm(step)
        if norm > 2.0:
            step *= 2.0 / norm
        cand = t + step
        cn = np.linalg.norm(cand)
        if cn > max_shift:
            cand *= max_shift / cn
        c_new = corr(cand)
        if c_new < best_c:
            break
        t, best_c = cand, c_new
        if norm < 1e-3:
            break
    nll = 0.5 * (float(to_numpy(sc.data_energy[l])) + hb2 - 2.0 * best_c)
    return t, nll


def _energies_at_shifts(fv: "_FourierVolume", sc: _Scale, data: SpectralParticles, l: int,
                        rotations, translations) -> np.ndarray:
    """Whitened half energies of particle ``l`` for rotations at given translations (B,)."""
    xp = fv.bk.xp
    rotations = np.asarray(rotations, dtype=np.float64)
    translations = np.asarray(translations, dtype=np.float64)
    nb = rotations.shape[0]
    ms = int(sc.points.shape[0])
    inv_s = data.inv_noise[l]
    yw = data.spectra[l][:, sc.select] * inv_s[:, None]  # (C, Ms)
    out = np.empty(nb)
    step = max(1, _CHUNK_POINTS // ms)
    for start in range(0, nb, step):
        sl = slice(start, min(nb, start + step))
        model = _models(fv, sc, rotations[sl])  # (C, b, Ms)
        power = model.real**2 + model.imag**2
        hb2 = ((power * sc.weights).sum(axis=-1) * inv_s[:, None]).sum(axis=0)
        cross = (yw[:, None, :] * xp.conj(model)).sum(axis=0)  # (b, Ms)
        t = xp.asarray(translations[sl].astype(np.float32))
        phase = (t @ sc.points.T) * np.float32(2.0 * np.pi / data.box)  # (b, Ms)
        corr = ((cross.real * xp.cos(phase) - cross.imag * xp.sin(phase)) * sc.weights).sum(-1)
        out[sl] = 0.5 * to_numpy(sc.data_energy[l] + hb2 - 2.0 * corr.astype(xp.float64))
    return out
