"""The regularisers of the ADMM: operators ``L``, ``L^T``, their symbols, proximal steps.

``phi(L x)`` is the isotropic total variation (``L`` the forward-difference gradient, 3
components) or the Hessian Schatten-1 (nuclear) norm (``L`` the Hessian, 6 components,
mixed terms times ``sqrt 2``; Fortun et al. 2017 eq. 5).  The differences are periodic on
the computation grid, so ``L^T L`` is the Fourier multiplier :func:`l_symbol`; the
proximal step of ``tau phi`` (:func:`prox`) acts on each voxel's vector of components.
"""

from __future__ import annotations

import math

import numpy as np


__all__ = [
    "REGULARIZERS",
    "check_regularizer",
    "gradient_symbol",
    "apply_l",
    "apply_lt",
    "l_symbol",
    "prox",
]


#: Regularisers of :func:`~spfluo.algorithms.reconstruct.admm.reconstruct_admm`.
REGULARIZERS = ("tv", "hessian")
_SQRT2 = math.sqrt(2.0)


def check_regularizer(regularizer):
    """``"tv"`` or ``"hessian"``."""
    if regularizer not in REGULARIZERS:
        raise ValueError(f"regularizer must be 'tv' or 'hessian', got {regularizer!r}")
    return regularizer


def gradient_symbol(xp, shape, dtype=np.float32):
    """``sum_a 4 sin^2(pi k_a)`` on the rfft half grid: |symbol|^2 of the forward gradient."""
    p = shape[0]
    kz = xp.asarray(np.fft.fftfreq(p), dtype=xp.float64)[:, None, None]
    ky = xp.asarray(np.fft.fftfreq(p), dtype=xp.float64)[None, :, None]
    kx = xp.asarray(np.fft.rfftfreq(p), dtype=xp.float64)[None, None, :]
    s = 4 * xp.sin(np.pi * kz) ** 2 + 4 * xp.sin(np.pi * ky) ** 2 + 4 * xp.sin(np.pi * kx) ** 2
    return s.astype(dtype)


# ---------------------------------------------------------------- operators L, L^T
# Split variables are stored component first, (M, *lead, P, P, P), so that each component
# is a contiguous volume.  Differences are periodic and written with slices (no rolls).


def _index(ndim: int, axis: int, sl: slice):
    index = [slice(None)] * ndim
    index[axis] = sl
    return tuple(index)


def _fdiff(xp, x, axis: int, out=None):
    """Periodic forward difference ``x(i + 1) - x(i)`` along ``axis``."""
    out = xp.empty_like(x) if out is None else out
    nd = x.ndim
    xp.subtract(x[_index(nd, axis, slice(1, None))], x[_index(nd, axis, slice(0, -1))],
                out=out[_index(nd, axis, slice(0, -1))])
    xp.subtract(x[_index(nd, axis, slice(0, 1))], x[_index(nd, axis, slice(-1, None))],
                out=out[_index(nd, axis, slice(-1, None))])
    return out


def _bdiff(xp, x, axis: int, out=None):
    """Periodic backward difference ``x(i) - x(i - 1)``; ``(D^+)^T = -D^-``."""
    out = xp.empty_like(x) if out is None else out
    nd = x.ndim
    xp.subtract(x[_index(nd, axis, slice(1, None))], x[_index(nd, axis, slice(0, -1))],
                out=out[_index(nd, axis, slice(1, None))])
    xp.subtract(x[_index(nd, axis, slice(0, 1))], x[_index(nd, axis, slice(-1, None))],
                out=out[_index(nd, axis, slice(0, 1))])
    return out


_PAIRS = ((0, 1), (0, 2), (1, 2))


def apply_l(xp, x, regularizer: str):
    """``L x`` for volumes (*lead, P, P, P): gradient (3, ...) or Hessian (6, ...).

    Gradient: forward differences ``D_a^+``.  Hessian: ``D_a^- D_a^+`` on the diagonal
    (the centred second difference) and ``sqrt2 D_a^+ D_b^+`` for the three mixed terms,
    so that the Euclidean norm over the 6 components is the Frobenius norm of the matrix.
    """
    axes = (-3, -2, -1)
    m = 3 if regularizer == "tv" else 6
    out = xp.empty((m,) + tuple(x.shape), dtype=x.dtype)
    if regularizer == "tv":
        for k, a in enumerate(axes):
            _fdiff(xp, x, a, out=out[k])
        return out
    fwd = [_fdiff(xp, x, a) for a in axes]
    for k, a in enumerate(axes):
        _bdiff(xp, fwd[k], a, out=out[k])
    for k, (i, j) in enumerate(_PAIRS):
        _fdiff(xp, fwd[j], axes[i], out=out[3 + k])
    out[3:] *= x.dtype.type(_SQRT2)
    return out


def apply_lt(xp, u, regularizer: str):
    """Adjoint ``L^T u`` for ``u`` (M, *lead, P, P, P)."""
    axes = (-3, -2, -1)
    tmp = xp.empty_like(u[0])
    if regularizer == "tv":
        out = xp.zeros_like(u[0])
        for k, a in enumerate(axes):
            out -= _bdiff(xp, u[k], a, out=tmp)
        return out
    out = xp.zeros_like(u[0])
    tmp2 = xp.empty_like(u[0])
    for k, a in enumerate(axes):  # D^- D^+ is symmetric
        out += _bdiff(xp, _fdiff(xp, u[k], a, out=tmp), a, out=tmp2)
    mixed = xp.zeros_like(u[0])
    for k, (i, j) in enumerate(_PAIRS):  # (D_i^+ D_j^+)^T = D_j^- D_i^-
        mixed += _bdiff(xp, _bdiff(xp, u[3 + k], axes[i], out=tmp), axes[j], out=tmp2)
    mixed *= u.dtype.type(_SQRT2)
    out += mixed
    return out


def l_symbol(xp, shape, regularizer: str):
    """``|L^|^2`` on the rfft half grid: ``s`` (gradient) or ``s^2`` (Hessian),
    ``s = sum_a 4 sin^2(pi k_a)``."""
    s = gradient_symbol(xp, shape)
    return s if regularizer == "tv" else s * s


# ---------------------------------------------------------------- proximal steps


def _soft(xp, e, tau):
    return xp.sign(e) * xp.maximum(xp.abs(e) - tau, 0)


def _prox_nuclear_sym3(xp, a, tau):
    """Proximal step of ``tau ||.||_*`` on symmetric 3x3 matrices, vectorised.

    ``a`` is (6, M): ``m00, m11, m22, sqrt2 m01, sqrt2 m02, sqrt2 m12`` (so that the
    Euclidean norm of a column is the Frobenius norm of its matrix); ``tau`` broadcasts to
    (M,).  The eigenvalues ``e`` are soft-thresholded: ``sum_k s(e_k) v_k v_k^T`` with
    ``s(e) = sign(e) max(|e| - tau, 0)``.  Returns the thresholded matrices (6, M) in the
    same layout and their nuclear norms (M,).

    Closed form: eigenvalues by the trigonometric formula on the traceless part; only the
    eigenvector of the eigenvalue farthest from the other two is computed (cross product of
    two rows of ``A - e I``, the largest of the three); on the plane orthogonal to it the
    spectral function is the interpolation ``alpha I + beta (A - m I)`` through the two
    remaining eigenvalues, whose slope ``beta`` is a divided difference of ``s`` (in [0, 1],
    so equal eigenvalues cause no division by zero).  Exact to float32 precision against
    ``numpy.linalg.eigh``, degenerate eigenvalues included; a matrix whose Frobenius norm
    is <= tau maps exactly to 0.
    """
    dtype = a.dtype
    m00, m11, m22 = a[0], a[1], a[2]
    inv_sqrt2 = dtype.type(1 / _SQRT2)
    m01, m02, m12 = a[3] * inv_sqrt2, a[4] * inv_sqrt2, a[5] * inv_sqrt2
    q = (m00 + m11 + m22) / 3
    b00, b11, b22 = m00 - q, m11 - q, m22 - q
    p2 = (b00 * b00 + b11 * b11 + b22 * b22 + 2 * (m01 * m01 + m02 * m02 + m12 * m12)) / 6
    p = xp.sqrt(p2)
    det = (b00 * (b11 * b22 - m12 * m12) - m01 * (m01 * b22 - m12 * m02)
           + m02 * (m01 * m12 - b11 * m02))
    pos = p > 0
    r = xp.where(pos, det / xp.where(pos, 2 * p * p2, 1), 0)
    phi = xp.arccos(xp.clip(r, -1, 1)) / 3
    e1 = 2 * p * xp.cos(phi)  # largest (shifted by q)
    e3 = 2 * p * xp.cos(phi + dtype.type(2 * np.pi / 3))  # smallest
    e2 = -e1 - e3
    top = (e1 - e2) >= (e2 - e3)
    iso = xp.where(top, e1, e3)
    ea = xp.where(top, e2, e1)
    eb = xp.where(top, e3, e2)
    r1 = (b00 - iso, m01, m02)
    r2 = (m01, b11 - iso, m12)
    r3 = (m02, m12, b22 - iso)

    def cross(u, v):
        return (u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0])

    best = cross(r1, r2)
    norm = best[0] ** 2 + best[1] ** 2 + best[2] ** 2
    for other in (cross(r1, r3), cross(r2, r3)):
        n_other = other[0] ** 2 + other[1] ** 2 + other[2] ** 2
        use = n_other > norm
        best = tuple(xp.where(use, o, c) for o, c in zip(other, best))
        norm = xp.where(use, n_other, norm)
    nz = norm > 0
    inv = xp.where(nz, 1 / xp.sqrt(xp.where(nz, norm, 1)), 0)
    v0, v1, v2 = (c * inv for c in best)
    f_iso = _soft(xp, iso + q, tau)
    f_a = _soft(xp, ea + q, tau)
    f_b = _soft(xp, eb + q, tau)
    alpha = (f_a + f_b) / 2
    gap = ea - eb
    mid = (ea + eb) / 2
    has_gap = gap > 0
    beta = xp.where(has_gap, (f_a - f_b) / xp.where(has_gap, gap, 1),
                    (xp.abs(mid + q) > tau).astype(dtype))
    gamma = f_iso - alpha - beta * (iso - mid)
    diag = alpha - beta * mid
    out = xp.empty_like(a)
    out[0] = beta * b00 + diag + gamma * v0 * v0
    out[1] = beta * b11 + diag + gamma * v1 * v1
    out[2] = beta * b22 + diag + gamma * v2 * v2
    s2 = dtype.type(_SQRT2)
    out[3] = s2 * (beta * m01 + gamma * v0 * v1)
    out[4] = s2 * (beta * m02 + gamma * v0 * v2)
    out[5] = s2 * (beta * m12 + gamma * v1 * v2)
    nuclear = xp.abs(f_iso) + xp.abs(f_a) + xp.abs(f_b)
    return out, nuclear


#: Columns per block of the Hessian prox on the CPU: its ~100 temporaries then stay in
#: cache (measured 2.8x faster than whole volumes of 64^3).
_PROX_BLOCK = 16384


def _prox_columns(xp, cols, norms, tau, regularizer):
    """Prox on columns (M, n) with their norms (n,) and thresholds (n,)."""
    if regularizer == "tv":
        pos = norms > tau
        shrink = xp.where(pos, 1 - tau / xp.where(pos, norms, 1), 0)
        return cols * shrink, xp.maximum(norms - tau, 0)
    n = cols.shape[1]
    if xp is not np or n <= _PROX_BLOCK:
        return _prox_nuclear_sym3(xp, cols, tau)
    out = np.empty_like(cols)
    values = np.empty(n, dtype=cols.dtype)
    for start in range(0, n, _PROX_BLOCK):
        sl = slice(start, min(n, start + _PROX_BLOCK))
        out[:, sl], values[sl] = _prox_nuclear_sym3(np, cols[:, sl], tau[sl])
    return out, values


def prox(xp, a, tau, regularizer: str):
    """Proximal step of ``tau phi`` on ``a`` (M, *lead, P, P, P), ``tau`` of shape lead.

    Returns ``(u, phi(u))`` with ``phi(u)`` per lead entry (float64, on the device).  Voxels whose
    vector has a norm <= tau map to 0 for both regularisers (the Frobenius norm bounds
    every eigenvalue): when they are the majority, only the others are processed.
    """
    m = a.shape[0]
    lead = tuple(a.shape[1:-3])
    nl = int(np.prod(lead)) if lead else 1
    p3 = int(np.prod(a.shape[-3:]))
    flat = a.reshape(m, nl * p3)
    norms = xp.sqrt(xp.einsum("ij,ij->j", flat, flat))
    tau_l = xp.asarray(tau, dtype=a.dtype).reshape(nl)
    active = (norms.reshape(nl, p3) > tau_l[:, None]).ravel()
    # on the CPU only the active voxels are processed when they are few; on a device the
    # dense path avoids reading their number back (one sync per iteration)
    n_active = int(active.sum()) if xp is np else flat.shape[1]
    out = xp.zeros_like(flat)
    phi = xp.zeros(nl)
    if n_active == 0:
        return out.reshape(a.shape), phi.reshape(lead)
    if n_active > flat.shape[1] // 2:
        t = xp.broadcast_to(tau_l[:, None], (nl, p3)).ravel()
        res, values = _prox_columns(xp, flat, norms, t, regularizer)
        out = res
        phi = values.reshape(nl, p3).sum(axis=1, dtype=xp.float64)
    else:
        idx = xp.flatnonzero(active)
        t = xp.full(idx.shape, tau_l[0]) if nl == 1 else tau_l[idx // p3]
        res, values = _prox_columns(xp, xp.take(flat, idx, axis=1), norms[idx], t, regularizer)
        for k in range(m):  # (2D fancy assignment is much slower in NumPy)
            out[k][idx] = res[k]
        if nl == 1:
            phi = np.array([float(values.sum(dtype=xp.float64))])
        else:
            phi = xp.bincount(idx // p3, weights=values.astype(xp.float64), minlength=nl)
    return out.reshape(a.shape), phi.reshape(lead)
