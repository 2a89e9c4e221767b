"""TODO docstring spfluo/algorithms/abinitio/sampling.py."""

from __future__ import annotations

import math

import numpy as np

from spfluo.algorithms._validation import (
    check_int,
)
from spfluo.algorithms.geometry import (
    SO3Grid,
)


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


def _psi_kernel(psi: np.ndarray, columns: np.ndarray, beta: float, symmetry: int) -> np.ndarray:
    """``K^psi[:, columns]``, shape (M_psi, len(columns)), max 1 (eq. 20, period 2 pi / n)."""
    n = symmetry
    diff = psi[:, None] - psi[columns][None, :]
    return np.exp((beta / (n * n)) * (np.cos(n * diff) - 1.0))


def _direction_kernel(directions: np.ndarray, columns: np.ndarray, beta: float) -> np.ndarray:
    """``K^d[:, columns]``, shape (M_d, len(columns)), max 1 (eq. 21)."""
    return np.exp(beta * (directions @ directions[columns].T - 1.0))


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
    pi_psi_s = (p / qd[jd][:, None]).sum(axis=0)  # eq. 16
    pi_d_s = (p / qp[ip][None, :]).sum(axis=1)  # eq. 17
    pi_psi = _psi_kernel(grid.psi, ip, beta_psi, grid.symmetry) @ pi_psi_s  # eq. 18
    pi_d = _direction_kernel(grid.directions, jd, beta_d) @ pi_d_s  # eq. 19
    return pi_d / pi_d.sum(), pi_psi / pi_psi.sum()


def _draw(rng: np.random.Generator, q: np.ndarray, n: int) -> np.ndarray:
    """``n`` distinct indices drawn from ``q`` (all indices when ``n >= len(q)``)."""
    m = q.size
    if n >= m:
        return np.arange(m)
    nz = int(np.count_nonzero(q > 0))
    if nz < n:  # cannot happen with a uniform share > 0; keep a safe fallback
        q = q + 1e-12
        q = q / q.sum()
    return np.sort(rng.choice(m, size=n, replace=False, p=q))


def _likelihoods(nll: np.ndarray, inv_temperature: float) -> np.ndarray:
    return np.exp(-(nll - nll.min()) * inv_temperature)
