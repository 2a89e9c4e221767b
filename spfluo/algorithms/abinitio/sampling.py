"""Importance sampling of orientations (Eloy et al. 2023 eq. 16-23).

Every particle has two sampling distributions on the product grid of
:class:`~spfluo.algorithms.geometry.SO3Grid`: ``Q^d`` on the directions and ``Q^psi`` on the
in-plane angles.  Each epoch draws ``N_d`` directions and ``N_psi`` angles from them
(without replacement), scores the ``N_d N_psi`` candidates, and replaces the distributions
by the importance-weighted marginal likelihoods of the candidates (eq. 16-17), smoothed
on the whole grid by the kernels of eq. 20-21 (eq. 18-19) and mixed with the uniform
distribution (eq. 22-23): ``Q = alpha / M + (1 - alpha) pi``, ``alpha`` divided by
``alpha_r`` after each epoch.

Grid (design decision): Eloy et al. 2023 does not give ``M_d, M_psi``.  Defaults ``M_d =
1500`` (mean spacing 5.2 degrees) and ``M_psi = 72`` (5 degrees), finer than the kernel
width ``1 / sqrt(beta)`` = 8 degrees at ``beta = 50``.  With Cn symmetry the in-plane angles
cover one asymmetric unit ``[0, 2 pi / n)`` with ``ceil(M_psi / n)`` values and the
in-plane kernel is ``exp((beta / n^2) cos(n dpsi))`` (same width, period ``2 pi / n``).

The functions work on NumPy or CuPy arrays alike (the draws take uniform numbers drawn
on the host, so that a seed gives the same run on the CPU).
"""

from __future__ import annotations

import math

import numpy as np

from spfluo.algorithms._validation import check_int
from spfluo.algorithms.geometry import SO3Grid

__all__ = ["DEFAULT_M_D", "DEFAULT_M_PSI", "default_grid_size", "smoothed_marginals",
           "marginals", "draw", "likelihoods"]

#: Default grid sizes M_d (Fibonacci directions) and M_psi (in-plane angles, no symmetry).
DEFAULT_M_D = 1500
DEFAULT_M_PSI = 72


def default_grid_size(symmetry: int = 1) -> tuple[int, int]:
    """Default ``(M_d, M_psi)`` of the SO(3) grid for the cyclic symmetry Cn.

    Parameters
    ----------
    symmetry : int
        Order n of the cyclic symmetry about z (1 = none).

    Returns
    -------
    tuple of int
        ``(1500, ceil(72 / n))`` (at least 4 in-plane angles): about 5 degrees
        between neighbouring directions and between in-plane angles.
    """
    n = check_int(symmetry, "symmetry", minimum=1)
    return DEFAULT_M_D, max(4, int(math.ceil(DEFAULT_M_PSI / n)))


def psi_kernel(xp, psi, columns, beta: float, symmetry: int):
    """``K^psi[:, columns]``, shape (M_psi, len(columns)), max 1 (eq. 20, period 2 pi / n)."""
    n = symmetry
    diff = psi[:, None] - psi[columns][None, :]
    return xp.exp((beta / (n * n)) * (xp.cos(n * diff) - 1.0))


def direction_kernel(xp, directions, columns, beta: float):
    """``K^d[:, columns]``, shape (M_d, len(columns)), max 1 (eq. 21)."""
    return xp.exp(beta * (directions @ directions[columns].T - 1.0))


def marginals(xp, p, jd, ip, qd, qp, directions, psi, *, beta_d: float, beta_psi: float,
              symmetry: int):
    """Smoothed marginals (eq. 16-19) of likelihoods ``p`` (N_d, N_psi) sampled at ``jd``,
    ``ip`` from ``qd``, ``qp``; arrays of one namespace ``xp``, no checks."""
    pi_psi_s = (p / qd[jd][:, None]).sum(axis=0)  # eq. 16
    pi_d_s = (p / qp[ip][None, :]).sum(axis=1)  # eq. 17
    pi_psi = psi_kernel(xp, psi, ip, beta_psi, symmetry) @ pi_psi_s  # eq. 18
    pi_d = direction_kernel(xp, directions, jd, beta_d) @ pi_d_s  # eq. 19
    return pi_d / pi_d.sum(), pi_psi / pi_psi.sum()


def smoothed_marginals(likelihoods, direction_index, psi_index, q_direction, q_psi, *,
                       grid: SO3Grid, beta_d: float = 50.0,
                       beta_psi: float = 50.0) -> tuple[np.ndarray, np.ndarray]:
    """Kernel-smoothed, importance-weighted marginal likelihoods (Eloy et al. 2023 eq. 16-21).

    Parameters
    ----------
    likelihoods : ndarray, shape (N_d, N_psi)
        ``p_ij`` of the sampled candidates (any positive scale).
    direction_index : ndarray of int, shape (N_d,)
        Sampled direction indices ``I^d`` (into ``grid.directions``).
    psi_index : ndarray of int, shape (N_psi,)
        Sampled in-plane indices ``I^psi``.
    q_direction : ndarray, shape (M_d,)
        Sampling distribution ``Q^d`` the directions were drawn from.
    q_psi : ndarray, shape (M_psi,)
        Sampling distribution ``Q^psi``.
    grid : SO3Grid
        The grid (directions, angles and symmetry order).
    beta_d, beta_psi : float, optional
        Kernel concentrations (eq. 20-21; 50 in Eloy et al. 2023).

    Returns
    -------
    pi_direction : ndarray, shape (M_d,), float64
        ``Z_d^-1 sum_k K^d_jk pi~_k``, sums to 1.
    pi_psi : ndarray, shape (M_psi,), float64
        ``Z_psi^-1 sum_k K^psi_ik pi~_k``, sums to 1.
    """
    p = np.asarray(likelihoods, dtype=np.float64)
    jd = np.asarray(direction_index)
    ip = np.asarray(psi_index)
    if p.ndim != 2 or p.shape != (jd.size, ip.size):
        raise ValueError(f"likelihoods must have shape (N_d, N_psi) = ({jd.size}, {ip.size}), "
                         f"got {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError("likelihoods must be finite, >= 0 and not all zero")
    qd = np.asarray(q_direction, dtype=np.float64)
    qp = np.asarray(q_psi, dtype=np.float64)
    if qd.shape != (grid.n_directions,) or qp.shape != (grid.n_psi,):
        raise ValueError(f"q_direction and q_psi must have shapes ({grid.n_directions},) and "
                         f"({grid.n_psi},), got {qd.shape} and {qp.shape}")
    if np.any(qd[jd] <= 0) or np.any(qp[ip] <= 0):
        raise ValueError("q_direction and q_psi must be > 0 at the sampled indices")
    return marginals(np, p, jd, ip, qd, qp, grid.directions, grid.psi, beta_d=beta_d,
                     beta_psi=beta_psi, symmetry=grid.symmetry)


def draw(xp, q, uniform, n: int):
    """``n`` distinct indices drawn from the distribution ``q`` (M,) without replacement,
    sorted (all indices when ``n >= M``).

    The Gumbel top-k trick: the ``n`` largest ``log q_i + g_i`` with ``g_i = -log(-log u_i)``
    (``uniform`` (M,) in (0, 1)) are a draw without replacement with probabilities
    proportional to ``q`` (successive sampling), computed where ``q`` lives.
    """
    m = int(q.shape[0])
    if n >= m:
        return xp.arange(m)
    keys = xp.log(q + 1e-300) - xp.log(-xp.log(uniform))
    return xp.sort(xp.argpartition(-keys, n - 1)[:n])


def likelihoods(xp, nll, inv_temperature: float):
    """``exp(-(E - min E) / T)`` of energies (negative log-likelihoods)."""
    return xp.exp(-(nll - nll.min()) * inv_temperature)
