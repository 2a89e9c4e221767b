"""The rotation of Cn particles about their symmetry axis, from a reference that keeps it.

Once the symmetry axis of every particle is known (and its polarity), one angle per
particle is left: the rotation ``psi_l`` about the axis, modulo ``2 pi / n``.  Searching
it against a Cn-symmetrised iterate fails when the angles start scattered: the iterate
built from scattered angles is a ring, every angle fits a ring equally, and the search
stays there (measured on a C9 ring of rods with a vectorial PSF and Poisson noise:
in-plane errors at chance after the SGD and after the refinement, though the data
determine the angle: turning one particle by 20 degrees against the true volume costs
36 to 306 nats).

So the angles are settled before the symmetry averages them away, on a reference that
keeps the angular structure by construction (:func:`align_in_plane`):

1. the particles are ordered by how much of their rotation about the axis they can see:
   a top view (axis along the optical axis) shows the n-fold pattern at the sharp lateral
   resolution, a side view only through the blurred axial direction;
2. the reference starts as the first particle alone (its Cn-symmetrised back-projection,
   which keeps its own rods), and every next particle is turned about its axis to the
   angle (on a grid of ``step_deg`` over one period ``2 pi / n``, translations by
   correlation) that fits the reference of the particles before it best, then added;
3. passes over all the particles, each against the reference of all the others
   (its own contribution removed), until the angles stop moving.

With ``polarity=True`` every angle is also tried with the particle upside down, so that
the particles agree with the reference on which end is up.  The polarity of a Cn barrel
lies in its in-plane detail (turned upside down, a pinwheel cross-section is mirrored), so
it can only be decided once the angles about the axis are coherent: the polarity
consensus on the iterate before the angles are settled (:mod:`.polarity`) left 21 to 24 of
50 C9 barrels upside down (48^3, vectorial PSF, Poisson noise).

The choice between the two polarities needs a more exact comparison than the angle does.
Against the Tikhonov reference on its twice oversampled grid, read by trilinear
interpolation, a particle's energies at the n poses that the symmetry makes equal differ by
as much as its two polarities do (trilinear interpolation of a twice oversampled spectrum
is 6.5 % off, :mod:`spfluo.algorithms.scoring.model`).  So the two hypotheses, each at its
best angle of a grid eight times finer, are compared on the leave-one-out reference as a
volume (cropped to its box, non-negative, three times oversampled spectrum with the
gridding correction: :class:`~spfluo.algorithms.scoring.model.VolumeModel`), by the mean
energy of the n symmetric copies of each pose; the passes go on while any particle turns.
Measured on the C9 barrel (vectorial PSF, Poisson noise, 50 photons):

- from the reference of the 19 other particles at their true poses (48^3, 0.1 um voxels),
  the true polarity is chosen by 15 particles of 20 at one pose on the trilinear
  reference, by 20 of 20 with the mean over the copies (smallest gap 639 Gaussian units),
  on the volume model at one pose (565) and with the mean (904);
- aligning 20 particles (32^3, 0.1 um voxels, random angles, half upside down, 4 seeds),
  upside down after the alignment: 10, 10, 9, 6 when the polarities are compared at one
  pose on the trilinear reference; 7, 5, 6, 1 with the mean over the copies; 1, 1, 2, 1
  with the mean on the volume model (the test of this choice);
- 50 particles (48^3) at their true axes, random angles, half upside down: 25 upside down
  after the alignment at one pose on the trilinear reference (5 s of CPU), none with the
  mean on the volume model (16 s of CPU: the volume model of each particle's leave-one-out
  reference); the ab initio run on these particles: 15 upside down, then 1 (also 1 with
  the mean on the trilinear reference).

The reference is the closed-form (Tikhonov) volume of the chosen poses on the oversampled
grid of the iterate, ``x^ = sum_l b_l / (sum_l K_l + lambda)`` (``b_l``, ``K_l`` the whitened
back-projection of particle ``l`` and its curvature, for its ``n`` symmetric poses), as in
the polarity consensus (:mod:`.polarity`).  The energy gap between a particle's best angle
and its best angle of another basin is its in-plane margin (the energy of the
scorer: nats for its Gaussian noise model); the refinement reports a calibrated margin
(:mod:`spfluo.algorithms.refine.diagnostics`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spfluo.algorithms.abinitio.polarity import backprojection, flip_rotation
from spfluo.algorithms.backend import to_numpy
from spfluo.algorithms.geometry import rotation_about_z
from spfluo.algorithms.interpolation import padded_shape
from spfluo.algorithms.scoring.energies import Scorer
from spfluo.algorithms.scoring.model import FourierModel, FourierVolume, VolumeModel

__all__ = ["InPlaneAlignment", "align_in_plane", "in_plane_margins", "last_move"]


@dataclass(frozen=True)
class InPlaneAlignment:
    """Result of :func:`align_in_plane`.

    Attributes
    ----------
    rotations, translations : ndarray, shapes (N, 3, 3), (N, 3)
        The poses with their rotation about the symmetry axis settled (voxels).
    margins : ndarray, shape (N,)
        Energy of the best angle at least two grid steps away minus that of the chosen
        angle (the scorer's Gaussian energy, nats when the noise is that of the box
        background; Poisson noise makes it larger than the data support).
    polarity_margins : ndarray, shape (N,)
        With ``polarity``: energy of the particle upside down (at its best angle) minus
        that of the chosen pose, each the mean over the n symmetric copies, on the volume
        model of the reference of the others (same units; zeros without ``polarity``).
    passes : int
        Passes run over all the particles after the growing one.
    moved : ndarray, shape (passes,)
        Median change of the angles in each pass, degrees.
    turned : ndarray of int, shape (passes,)
        Particles turned upside down in each pass.
    reference : FourierVolume
        The closed-form volume of all the particles at the settled poses, as an iterate of
        the SGD (on the grid of the input iterate, non-negative).
    """

    rotations: np.ndarray
    translations: np.ndarray
    margins: np.ndarray
    polarity_margins: np.ndarray
    passes: int
    moved: np.ndarray
    turned: np.ndarray
    reference: FourierVolume


def last_move(found: InPlaneAlignment) -> str:
    """``": median change X deg, K turned upside down in the last pass"`` for a log message
    (empty without passes)."""
    if not len(found.moved):
        return ""
    return (f": median change {found.moved[-1]:.2g} deg, {int(found.turned[-1])} turned upside "
            "down in the last pass")


class _Reference:
    """The Tikhonov volume of accumulated back-projections on the iterate's grid."""

    def __init__(self, vol: FourierVolume, sc: Scorer, symmetry: int, regularization: float):
        xp = vol.bk.xp
        self.vol, self.sc = vol, sc
        self.group = np.stack([rotation_about_z(2.0 * math.pi * k / symmetry)
                               for k in range(symmetry)])
        g = vol.size
        axis = np.arange(g + 3) - 1 - g // 2
        r2 = axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2
        self.mask = xp.asarray(np.flatnonzero(r2.ravel() <= (vol.band + 2) ** 2))
        c = sc.spectra.n_channels
        self.b = xp.zeros((c, int(self.mask.size)), dtype=xp.complex64)
        self.k = xp.zeros((c, int(self.mask.size)), dtype=xp.float32)
        self.regularization = regularization
        self.lam = None
        self.spectrum = xp.zeros((c,) + padded_shape(vol.shape3), dtype=xp.complex64)
        self.model = FourierModel(vol.bk, self.spectrum, vol.size, 2.0)

    def contribution(self, l: int, rotation, translation):
        """``(b_l, K_l)`` of particle ``l`` at a pose, for its n symmetric poses."""
        return backprojection(self.vol, self.sc, l, np.matmul(rotation[None], self.group),
                              translation, self.mask)

    def set_damping(self, n_particles: int) -> None:
        xp = self.vol.bk.xp
        k = self.k
        self.lam = xp.asarray(np.asarray(
            [self.regularization * float(to_numpy(xp.mean(k[ch][k[ch] > 0]))) / n_particles
             for ch in range(k.shape[0])], dtype=np.float32))[:, None]

    def _update(self) -> None:
        c = self.b.shape[0]
        flat = self.spectrum.reshape(c, -1)
        flat[:, self.mask] = self.b / (self.k + self.lam)

    def at(self, rotations, scorer):
        """The reference's model at the scorer's support (as :meth:`FourierVolume.at`)."""
        xp = self.vol.bk.xp
        self._update()
        out = self.model.sample(rotations, scorer.model_frequencies)
        return xp.transpose(out, (1, 0, 2)) * scorer.otf[None]

    def iterate(self) -> FourierVolume:
        """The reference as an SGD iterate (non-negative, the curvature of ``vol`` kept)."""
        self._update()
        return self.vol.from_spectrum(self.spectrum)

    def exact(self) -> VolumeModel:
        """The reference cropped to its box, non-negative, as a given volume at the particle
        sampling (:class:`VolumeModel`: sampled without the trilinear attenuation, which the
        spectrum of accumulated data does not have)."""
        volume = self.iterate().to_volume(self.vol.box, apodization=False)
        return VolumeModel(self.vol.bk, volume, self.sc.spectra, self.sc.channels)


def _in_plane_grid(step_deg: float, symmetry: int) -> np.ndarray:
    period = 2.0 * math.pi / symmetry
    count = max(8, int(math.ceil(period / math.radians(step_deg))))
    return rotation_about_z(period * np.arange(count) / count)


def in_plane_margins(nll, count: int, separation: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Best index and margin of energies ``nll`` (..., count) on a periodic in-plane grid.

    The margin is the lowest energy of another basin minus the best: the lowest local
    minimum at least ``separation`` steps from the best one, or, when the whole period is
    one basin, the highest energy.  Shallow minima of noise beside the best one do not
    count as another angle.
    """
    nll = np.asarray(nll, dtype=np.float64)
    best = np.argmin(nll, axis=-1)
    steps = np.arange(count)
    distance = np.abs(steps[None, :] - best.reshape(-1, 1))
    distance = np.minimum(distance, count - distance).reshape(nll.shape)
    local = (nll <= np.roll(nll, 1, axis=-1)) & (nll <= np.roll(nll, -1, axis=-1))
    far = np.where(local & (distance >= separation), nll, np.inf).min(axis=-1)
    far = np.where(np.isfinite(far), far, nll.max(axis=-1))
    best_value = np.take_along_axis(nll, best[..., None], axis=-1)[..., 0]
    return best, far - best_value


#: Points of the fine search about the best grid angle of each hypothesis (within a step).
_FINE = 8
#: Angles of the polarity comparison about each hypothesis's best angle, in fine steps.
_CHECK = np.arange(-2, 3)


def align_in_plane(vol: FourierVolume, sc: Scorer, rotations, translations, symmetry: int, *,
                   step_deg: float = 1.0, max_passes: int = 3, tolerance_deg: float = 0.5,
                   regularization: float = 0.1, polarity: bool = False) -> InPlaneAlignment:
    """Settle every particle's rotation about its symmetry axis (module docstring).

    Parameters
    ----------
    vol : FourierVolume
        The iterate at the full band: its grid holds the reference (its values are not
        used).
    sc : Scorer
        The particles on the full-band support (Gaussian energy, every channel).
    rotations, translations : ndarray, shapes (N, 3, 3), (N, 3)
        Poses whose symmetry axis is right (translations in voxels), and their polarity
        unless ``polarity``.
    symmetry : int
        Order n >= 2 of the cyclic symmetry about z.
    step_deg : float, default 1
        Grid step of the angle about the axis, degrees (one period ``360 / n`` covered).
    max_passes : int, default 3
        Most passes over all the particles after the growing one.
    tolerance_deg : float, default 0.5
        The passes stop when the median change of the angles is at most this (and, with
        ``polarity``, no particle turned upside down).
    regularization : float, default 0.1
        Damping of the reference relative to the mean curvature of one particle.
    polarity : bool, default False
        Also choose every particle's polarity: each angle is tried with the particle as it
        is and turned upside down (a half turn about an axis of the xy plane), so that the
        particles agree with the reference on which end is up; the two are compared on the
        exact model of the reference (module docstring).

    Returns
    -------
    InPlaneAlignment
    """
    if symmetry < 2:
        raise ValueError(f"the rotation about the axis needs a symmetry order >= 2, got "
                         f"{symmetry}")
    xp = vol.bk.xp
    rot = np.array(rotations, dtype=np.float64)
    trans = np.array(translations, dtype=np.float64)
    n = rot.shape[0]
    turns = _in_plane_grid(step_deg, symmetry)
    count = turns.shape[0]
    ref = _Reference(vol, sc, symmetry, regularization)
    # top views first: |z component of the symmetry axis R e_z in the lab frame|
    order = np.argsort(-np.abs(rot[:, 0, 0]), kind="stable")
    parts = {}

    # the hypotheses of a particle: its angle about the axis, as it is or upside down
    starts = (np.eye(3), flip_rotation(0.0)) if polarity else (np.eye(3),)
    turns_h = np.concatenate([np.matmul(f[None], turns) for f in starts])
    grid_step = 2.0 * math.pi / symmetry / count
    # the best angle of each hypothesis refined on a grid 8 times finer: compared on the
    # coarse grid alone, the polarity would go to the hypothesis whose grid happens to fall
    # nearer the particle's angle
    fine = rotation_about_z(grid_step * np.linspace(-1.0, 1.0, _FINE + 1)[1:-1])
    # the polarity comparison: a few angles of that finer grid about each best angle
    check = rotation_about_z(grid_step / _FINE * _CHECK)

    def choose(l):
        """Best pose of particle ``l`` against the reference: rotation, translation, the
        in-plane margin and the polarity margin."""
        cand = np.matmul(rot[l][None], turns_h)
        nll = to_numpy(sc.evaluate(ref, l, cand, sync=False).nll)
        best = []
        for h in range(len(starts)):
            k = h * count + int(np.argmin(nll[h * count:(h + 1) * count]))
            local = np.matmul(cand[k][None], fine)
            ev = sc.evaluate(ref, l, local, sync=False)
            j = int(np.argmin(to_numpy(ev.nll)))
            best.append((float(to_numpy(ev.nll[j])), local[j], to_numpy(ev.shifts[j])))
        if polarity:
            exact = ref.exact()
            group = ref.group
            for h in range(len(starts)):
                local = np.matmul(best[h][1][None], check)
                shifts = to_numpy(sc.evaluate(exact, l, local, exact=len(local),
                                              sync=False).shifts)
                # the mean energy of the n poses that the symmetry makes equal
                copies = np.matmul(local[:, None], group[None]).reshape(-1, 3, 3)
                e = to_numpy(sc.energies_at(exact, l, copies,
                                            np.repeat(shifts, len(group), axis=0)))
                e = e.reshape(len(local), len(group)).mean(axis=1)
                j = int(np.argmin(e))
                best[h] = (float(e[j]), local[j], shifts[j])
        h = int(np.argmin([b[0] for b in best]))
        _, margin = in_plane_margins(nll[h * count:(h + 1) * count], count)
        gap = best[1 - h][0] - best[h][0] if polarity else 0.0
        return best[h][1], best[h][2], float(margin), gap

    # 1. grow the reference from the most informative particle
    first = int(order[0])
    parts[first] = ref.contribution(first, rot[first], trans[first])
    ref.b += parts[first][0]
    ref.k += parts[first][1]
    ref.set_damping(n)
    for l in order[1:]:
        l = int(l)
        rot[l], trans[l], _, _ = choose(l)
        parts[l] = ref.contribution(l, rot[l], trans[l])
        ref.b += parts[l][0]
        ref.k += parts[l][1]
    # 2. passes, each particle against the others
    ref.set_damping(n)
    margins = np.zeros(n)
    gaps = np.zeros(n)
    moved, turned = [], []
    for _ in range(max_passes):
        before = rot.copy()
        for l in order:
            l = int(l)
            ref.b -= parts[l][0]
            ref.k -= parts[l][1]
            rot[l], trans[l], margins[l], gaps[l] = choose(l)
            parts[l] = ref.contribution(l, rot[l], trans[l])
            ref.b += parts[l][0]
            ref.k += parts[l][1]
        cos = (np.einsum("nij,nij->n", before, rot) - 1.0) / 2.0
        moved.append(float(np.degrees(np.median(np.arccos(np.clip(cos, -1.0, 1.0))))))
        # the symmetry axis R e_z of the particles turned upside down changes sign
        turned.append(int(np.sum(np.einsum("ni,ni->n", before[:, :, 0], rot[:, :, 0]) < 0.0)))
        if moved[-1] <= tolerance_deg and turned[-1] == 0:
            break
    return InPlaneAlignment(rotations=rot, translations=trans, margins=margins,
                            polarity_margins=gaps, passes=len(moved), moved=np.asarray(moved),
                            turned=np.asarray(turned, dtype=np.int64),
                            reference=ref.iterate())
