"""Gold-standard FSC of known-pose half maps, corrected by noise substitution.

Two half maps reconstructed from disjoint halves of the particles share more than the
signal: a non-linear regulariser (TV, Hessian) extrapolates both the same way beyond the
measured band, the trilinear back-rotation of the sums aliases the strong low
frequencies into the high ones alike in both halves, and a mask convolves the shared
low frequencies into the high ones.  Their plain FSC then stays above 0.143 up to
Nyquist whatever the data (measured: in most cases of ``benchmarks/resolution.py``).

High-resolution noise substitution (Chen et al. 2013, sec. 2.3 and eq. 1) measures that
shared part and removes it: the phases of every particle are randomised beyond a
frequency ``k_r`` (:func:`spfluo.algorithms.resolution.randomize_phases`), the
substituted particles are reconstructed exactly as the real ones (same halves, poses,
weight, support), and the masked FSC of their half maps, ``FSC_n``, holds everything
the processing correlates without the data.  Beyond ``k_r`` the corrected curve is
``(FSC_t - FSC_n) / (1 - FSC_n)``.  ``k_r`` is where the masked FSC of the real half
maps, or the FSC of their back-projections (linear in the data: no prior), first falls
below 0.8, at most the optical cutoff.  The second bound matters where the prior makes
both halves agree beyond the data: measured (``benchmarks/resolution.py``, widefield
PSF with Poisson noise), the half maps alone kept ``k_r`` at the cutoff and claimed 52 %
beyond the truth's resolution, the bound brings it to -14 %; a bound at 0.5 instead of
0.8 claimed +35 %.  The price is that a prior which happens to extrapolate right (smooth
rods, C9, 20 particles) is not credited: -27 % there; within 12 % on the 9 other cases
of the benchmark where the truth's resolution is below Nyquist.

Cost: one more pass over the particles (the sums of the substituted halves) and two
more half solves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from spfluo.algorithms.backend import to_numpy
from spfluo.algorithms.metrics import FSCCurve, fsc
from spfluo.algorithms.reconstruct.accumulation import run_accumulation
from spfluo.algorithms.reconstruct.mask import spherical_mask
from spfluo.algorithms.reconstruct.sums import ReconstructionSums
from spfluo.algorithms.resolution import (
    FSC_THRESHOLD,
    Resolution,
    corrected_fsc,
    randomization_frequency,
    randomize_phases,
    read_resolution,
)

__all__ = ["GoldStandardFSC", "particle_source", "noise_substitution_fsc"]


@dataclass(frozen=True, eq=False)
class GoldStandardFSC:
    """The FSC of one channel's half maps, corrected by noise substitution.

    Attributes
    ----------
    corrected : FSCCurve
        The curve to read (masked, substitution-corrected).
    masked : FSCCurve
        ``FSC_t``: the half maps under the soft mask.
    substituted : FSCCurve
        ``FSC_n``: the half maps of the noise-substituted particles under the mask.
    unmasked : FSCCurve
        The half maps as they are.
    randomize_from_per_voxel : float
        ``k_r``, cycles per voxel.
    resolution : Resolution
        Read on ``corrected`` at 0.143, with its verdict.
    """

    corrected: FSCCurve
    masked: FSCCurve
    substituted: FSCCurve
    unmasked: FSCCurve
    randomize_from_per_voxel: float
    resolution: Resolution


def particle_source(particles) -> Callable:
    """A function that returns the particle batches afresh at each call.

    ``particles``: an array ``(N, C, D, D, D)`` or ``(N, D, D, D)``, or a callable that
    returns an iterable of ``(slice, batch)`` pairs (e.g. ``lambda:
    spfluo.io.iter_particle_batches(paths, 16)``).  A one-shot iterable cannot be read
    twice and is refused.
    """
    if hasattr(particles, "ndim") and hasattr(particles, "shape"):
        return lambda: particles
    if callable(particles):
        return particles
    raise ValueError(
        "the gold-standard FSC reads the particles twice (noise substitution): give an array "
        "or a function that returns the (slice, batch) iterable again, not a one-shot "
        f"iterable ({type(particles).__name__})"
    )


def _substituted(source, frequency, batch_size: int, seed):
    """(slice, batch) pairs of the particles with phases randomised beyond ``frequency``
    (one per channel)."""
    rng = np.random.default_rng(seed)
    data = source()
    if hasattr(data, "ndim"):
        arr = data
        data = ((slice(s, min(arr.shape[0], s + batch_size)),
                 arr[s:min(arr.shape[0], s + batch_size)])
                for s in range(0, arr.shape[0], batch_size))
    for sl, batch in data:
        b = np.asarray(batch)
        f = frequency if b.ndim == 5 else frequency[0]
        yield sl, randomize_phases(b, f, seed=rng)


def noise_substitution_fsc(particles, poses, psf, half_maps, *, halves, solve: Callable,
                           symmetry: int = 1, mask_radius: float,
                           cutoff_per_voxel: float | None = None,
                           voxel_size_um: float | None = None,
                           threshold: float = FSC_THRESHOLD, seed=0, batch_size: int = 16,
                           order: int = 1, pad: float = 1.125, backend=None,
                           half_sums=None) -> tuple:
    """Masked, noise-substitution-corrected FSC of known-pose half maps, per channel.

    Parameters
    ----------
    particles : ndarray or callable
        As :func:`particle_source` (the particles the half maps come from).
    poses : Poses
    psf : ndarray, shape (d, d, d) or (C, d, d, d)
    half_maps : ndarray, shape (2, C, D, D, D)
        The two half maps of the real particles.
    halves : ndarray, int, shape (N,)
        Half (0 or 1) of each particle, as used for ``half_maps``.
    solve : callable
        ``solve(sums, half, k_r) -> (C, D, D, D)``: the reconstruction that made the half
        maps (same method, weight, iterations and support), applied to the sums of the
        substituted half ``half`` (0 or 1); ``k_r`` (C,) is the randomisation frequency
        per channel (a warm start must hold nothing beyond it).
    symmetry : int, default 1
    mask_radius : float
        Outer radius (voxels) of the soft mask of the FSC.
    cutoff_per_voxel : float, optional
        Optical cutoff (:func:`spfluo.algorithms.resolution.optical_cutoff`).
    voxel_size_um : float, optional
    threshold : float, default 0.143
    seed : int or numpy.random.Generator
        Random phases.
    batch_size, order, pad, backend
        As the sums of the half maps (:func:`precompute_sums`).
    half_sums : tuple of 2 ReconstructionSums, optional
        The sums of the real halves: ``k_r`` is then at most where the FSC of their
        back-projections (linear in the data, no prior) falls below 0.8.

    Returns
    -------
    tuple of GoldStandardFSC or None
        One per channel (None where a half map is empty).
    """
    maps = np.asarray(half_maps, dtype=np.float32)
    if maps.ndim != 5 or maps.shape[0] != 2:
        raise ValueError(f"half_maps must have shape (2, C, D, D, D), got {maps.shape}")
    source = particle_source(particles)
    n_ch = maps.shape[1]
    mask = np.asarray(spherical_mask(maps.shape[-3:], mask_radius, backend="cpu"))
    empty = [not (np.any(maps[0, c]) and np.any(maps[1, c])) for c in range(n_ch)]
    masked = [None if empty[c] else fsc(maps[0, c] * mask, maps[1, c] * mask)
              for c in range(n_ch)]
    start = np.array([randomization_frequency(m, cutoff_per_voxel=cutoff_per_voxel)
                      if m is not None else 0.5 for m in masked], dtype=np.float32)
    if half_sums is not None:
        b = [to_numpy(s.backprojection) for s in half_sums]
        for c in range(n_ch):
            if np.any(b[0][c]) and np.any(b[1][c]):
                start[c] = min(start[c], randomization_frequency(fsc(b[0][c], b[1][c])))
    rng = np.random.default_rng(seed)
    groups, shape, _ = run_accumulation(
        _substituted(source, start, batch_size, rng), poses, psf,
        groups=np.asarray(halves, dtype=np.int64), n_groups=2, symmetry=symmetry,
        batch_size=batch_size, order=order, pad=pad, backend=backend, with_kernel=True,
        filtered=True)
    sums = [ReconstructionSums(b, k, c, shape, symmetry) for b, k, c in groups]
    subst = np.stack([np.asarray(solve(s, h, start), dtype=np.float32)
                      for h, s in enumerate(sums)])
    out = []
    for c in range(n_ch):
        if empty[c] or not (np.any(subst[0, c]) and np.any(subst[1, c])):
            out.append(None)
            continue
        n_curve = fsc(subst[0, c] * mask, subst[1, c] * mask)
        corr = corrected_fsc(masked[c], n_curve, float(start[c]))
        res = read_resolution(corr, threshold=threshold, voxel_size_um=voxel_size_um,
                              cutoff_per_voxel=cutoff_per_voxel)
        out.append(GoldStandardFSC(corrected=corr, masked=masked[c], substituted=n_curve,
                                   unmasked=fsc(maps[0, c], maps[1, c]),
                                   randomize_from_per_voxel=float(start[c]), resolution=res))
    return tuple(out)
