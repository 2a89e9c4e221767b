"""Regularisation weights: the check, the default per method, the held-out misfit.

The automatic choice that uses them is :mod:`~spfluo.algorithms.reconstruct.autoweight`.
"""

from __future__ import annotations

import numpy as np

from spfluo.algorithms.backend import AXES3, resolve_backend, to_numpy
from spfluo.algorithms.fourier import _fit_to
from spfluo.algorithms.reconstruct.accumulation import rfft_weights
from spfluo.algorithms.reconstruct.sums import ReconstructionSums, check_sums, nonnegative

__all__ = [
    "DEFAULT_WEIGHT",
    "KERNEL_FLOOR",
    "check_weight",
    "misfit",
    "heldout_misfit",
]


#: Default weights, per mean particle (data normalised to max(b) = 1 for TV/Hessian).
DEFAULT_WEIGHT = {"tikhonov": 3e-2, "tv": 3e-3, "hessian": 1e-3, "deconv-average": 3e-3}
# the single view is the deconvolution of deconv-average applied to one particle
DEFAULT_WEIGHT["single-view"] = DEFAULT_WEIGHT["deconv-average"]
#: The held-out misfit counts the frequencies where the other half's kernel exceeds this
#: fraction of its peak (|OTF|^2 averaged over the poses; 1e-3 is an OTF of 3 %).  Outside
#: that band the back-projection holds no measurement but the aliasing of the trilinear
#: back-rotation and, with Cn folding, the ringing of the exact rotations, both shared by
#: the halves: a misfit that counts them keeps falling as the weight goes to 0.  Measured
#: (:mod:`~spfluo.algorithms.reconstruct.autoweight`): 1e-3 is within 0.005 SSIM of the
#: best weight in the 8 cases of ``benchmarks/resolution.py``; 0 (every frequency) lost
#: up to 0.30 with C9, 1e-4 up to 0.16 and 1e-2 up to 0.11.
KERNEL_FLOOR = 1e-3


def check_weight(weight, n_channels: int, name: str = "weight") -> np.ndarray:
    """A weight ``>= 0``, one for all channels or one per channel, as (C,) float64."""
    w = np.atleast_1d(np.asarray(weight, dtype=np.float64)) if not isinstance(weight, str) else None
    if w is None or w.ndim != 1 or w.size not in (1, n_channels) or not np.all(np.isfinite(w)) \
            or np.any(w < 0):
        raise ValueError(
            f"{name} must be a number >= 0 or one per channel ({n_channels}), got {weight!r}"
        )
    return np.broadcast_to(w, (n_channels,)).astype(np.float64)


def _misfit_terms(volume, sums: ReconstructionSums, floor: float | None):
    bk = resolve_backend(None, sums.backprojection)
    xp = bk.xp
    shape = sums.grid_shape
    x = _fit_to(xp, xp.asarray(volume, dtype=xp.float32), shape)
    xhat = bk.rfftn(x, axes=AXES3)
    bhat = bk.rfftn(sums.backprojection, axes=AXES3)
    kernel = nonnegative(xp, sums.kernel)
    w = rfft_weights(xp, shape)
    if floor is not None:
        peak = kernel.reshape(kernel.shape[0], -1).max(axis=1)
        w = w * (kernel > floor * peak[:, None, None, None])
    quad = (kernel * (xhat.real**2 + xhat.imag**2) * w).sum(axis=AXES3, dtype=xp.float64)
    lin = ((xhat.real * bhat.real + xhat.imag * bhat.imag) * w).sum(axis=AXES3,
                                                                    dtype=xp.float64)
    return to_numpy(0.5 * quad - lin) / float(np.prod(shape))


def misfit(volume, sums: ReconstructionSums):
    """Data misfit ``1/2 <x, K x> - <x, b>`` of ``volume`` (C, D, D, D) on ``sums``, per
    channel: ``1/(2N) sum_i ||y_i - H_i x||^2`` up to a constant (Parseval, half grid)."""
    return _misfit_terms(volume, check_sums(sums), None)


def heldout_misfit(volume, sums: ReconstructionSums, *, floor: float = KERNEL_FLOOR):
    """:func:`misfit` of ``volume`` on held-out ``sums``, on the measured band only.

    Parameters
    ----------
    volume : ndarray, shape (C, D, D, D)
        A reconstruction from other particles than those of ``sums``.
    sums : ReconstructionSums
        The held-out particles.
    floor : float, default :data:`KERNEL_FLOOR`
        Frequencies where ``K`` is at most ``floor`` times its peak are left out.

    Returns
    -------
    ndarray, float64, shape (C,)
        ``sum_k [K |x^|^2 / 2 - Re(x^ conj b^)]`` over the band, divided by the number of
        voxels (squared particle units, up to a constant; lower is better).
    """
    return _misfit_terms(volume, check_sums(sums), float(floor))
