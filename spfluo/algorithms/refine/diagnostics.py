"""What the data determine of each refined pose, without a ground truth.

For Cn particles the rotation about the symmetry axis is the part of the pose that
volume scores cannot check: Cn folding draws the n-fold structure whatever the angles are.
:func:`in_plane_margins` scans every particle's angle about its axis over one period
``2 pi / n`` against the refined volume and reports the margin between its chosen angle
and the best angle at least two grid steps away, as a negative log-likelihood difference
(nats): a particle whose margin is near 0 could sit at another angle as well (a ring, a
top view of a blurred pore, a particle with too few photons), and is flagged.
"""

from __future__ import annotations

import math

import numpy as np

from spfluo.algorithms.abinitio.inplane import UNDETERMINED_NATS, in_plane_margins
from spfluo.algorithms.backend import to_numpy
from spfluo.algorithms.geometry import rotation_about_z
from spfluo.algorithms.scoring.energies import SURFACE_BUDGET, Scorer
from spfluo.algorithms.scoring.model import VolumeModel

__all__ = ["in_plane_scan", "UNDETERMINED_NATS"]


def in_plane_scan(model: VolumeModel, scorer: Scorer, rotations, translations, symmetry: int,
                  *, step_deg: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """In-plane margins (nats) and best in-plane offsets (degrees) of every particle.

    Parameters
    ----------
    model : VolumeModel
        The refined volume.
    scorer : Scorer
        The refinement's scorer (relative energies; scale and offset fitted).
    rotations, translations : ndarray, shapes (N, 3, 3), (N, 3)
        The refined poses (translations in voxels, within ``max_shift``).
    symmetry : int
        Order n of the cyclic symmetry about z (n >= 2).
    step_deg : float, default 1
        Grid step over the period ``360 / n`` degrees.

    Returns
    -------
    margins : ndarray, shape (N,)
        Negative log-likelihood of the best angle at least two steps from the chosen one,
        minus that of the chosen one, nats: the relative energy difference times
        ``Y / (2 s)`` (``Y`` the particle's energy about its mean, ``s`` its noise power
        per Fourier coefficient, summed over the channels compared).
    offsets : ndarray, shape (N,)
        Angle of the best grid turn from the refined pose, degrees (near 0 for a refined
        pose at its optimum).
    """
    xp = scorer.bk.xp
    period = 2.0 * math.pi / symmetry
    count = max(8, int(math.ceil(period / math.radians(step_deg))))
    angles = period * np.arange(count) / count
    turns = rotation_about_z(angles)
    rot = np.asarray(rotations, dtype=np.float64)
    trans = np.asarray(translations, dtype=np.float64)
    n = rot.shape[0]
    spectra = scorer.spectra
    per = len(scorer.channels) * max(scorer.n_freq, int(np.prod(scorer.cube))
                                     if scorer.boxed else scorer.n_freq) * count
    batch = max(1, SURFACE_BUDGET // max(per, 1))
    energies = np.empty((n, count))
    for start in range(0, n, batch):
        idx = np.arange(start, min(n, start + batch))
        cand = np.matmul(rot[idx][:, None], turns[None]).reshape(-1, 3, 3)
        t = np.repeat(trans[idx], count, axis=0)
        m = model.at(cand, scorer)  # (P count, Cs, M)
        y = xp.repeat(scorer.particles(idx), count, axis=0)
        x = (y * xp.conj(m)).sum(axis=1)
        c = scorer.correlation(x, t)
        nrg = scorer.model_energy(m, t)
        total = xp.asarray(np.repeat(scorer.energy[idx], count))
        energies[idx] = to_numpy(scorer.energies(c, nrg, total)).reshape(len(idx), count)
    best, margin = in_plane_margins(energies, count)
    # relative energy -> nats: ||y - a m - b||^2 / (2 s) = E_rel Y / (2 s)
    inv_noise = to_numpy(spectra.inv_noise)[:, scorer.channels].astype(np.float64)
    scale = 0.5 * (spectra.energy[:, scorer.channels] * inv_noise).sum(axis=1)
    offsets = np.degrees(angles[best])
    offsets = (offsets + 180.0 / symmetry) % (360.0 / symmetry) - 180.0 / symmetry
    return margin * scale, offsets
