"""Ab initio reconstruction by SGD with importance sampling (Eloy et al. 2023, Algorithm 1).

The multilevel problem of Eloy et al. 2023 (sec. 3):

- **volume** (top level): stochastic gradient descent on the Fourier transform ``f^`` of
  the volume, one particle per iteration, epochs that cycle through the shuffled particles
  (eq. 12, gradient eq. 33);
- **rotations** (middle level): for particle ``l`` draw ``N_d`` directions and ``N_psi``
  in-plane angles from per-particle sampling distributions (:mod:`.sampling`), evaluate
  the energy of all ``N_d N_psi`` pairs in one batch, keep the best;
- **translations** (bottom level): for every candidate, the correlation between
  ``h^ R(f^)`` and ``y^_l`` over all shifts with one inverse FFT, then a sub-voxel
  refinement (:mod:`spfluo.algorithms.scoring`).

How it is made fast (measured in ``benchmarks/abinitio.py``)
------------------------------------------------------------
- **Only where the OTF lives** (:mod:`spfluo.algorithms.scoring.spectra`).
- **The volume lives on a small grid.**  The parameter is the volume downsampled to
  ``L^3`` voxels, ``L`` (even) just above twice the largest support frequency index
  (``L = 28`` for a 50^3 box with the Eloy et al. 2023 PSF: the data carry nothing
  beyond); its spectrum, zero-padded to ``(2L)^3`` (oversampling 2), is what the candidates
  sample, at the rotated support frequencies, batched over all candidates of a particle
  (:class:`~spfluo.algorithms.scoring.model.FourierVolume`).  The gradient (eq. 33) is
  accumulated with the exact adjoint of the same interpolation (a splat), at ``q`` and
  ``-q`` (Hermitian symmetry).
- **Translations on a cropped grid** whose step is about the width of the correlation
  peak (the ``"peak"`` policy of :mod:`spfluo.algorithms.scoring.shifts`).
- **Coarse to fine.**  The first epochs (up to ``coarse_epochs``, or until their energy
  reaches a plateau) use the support restricted to ``|p| < L / (2 downsampling)``, then
  the volume is resampled to the full band.
- **On the device.**  The epoch loop keeps the poses, the sampling distributions and the
  volume where the particles are (NumPy or CuPy); the uniform numbers of the draws are drawn
  on the host once per epoch (the same seed gives the same run on the CPU), and nothing
  comes back to the host before the end of the epoch.

Design decisions (beyond the paper)
-----------------------------------
- **Step and constraints.**  Eloy et al. 2023 does not give ``mu``.  The gradient with
  respect to the ``L^3`` volume is ``P g`` (``g`` the splat gradient, ``P`` the crop to the
  box in real space); the step is ``lr * P F^-1[F[P g] / ((L / 2L)^3 B + lambda)]``, then
  the projection on non-negative values: a diagonal (Jacobi) preconditioner in Fourier
  space, ``(L / 2L)^3 = 1/8`` being the diagonal of ``P``, ``B`` the running sum (multiplied
  by ``memory`` at each epoch) of the curvatures ``|h^|^2 / s`` of the particles already
  seen at each frequency, ``lambda`` = ``regularization`` times the median curvature of one
  particle.  Measured: with known poses the energy decreases monotonically to the noise
  level in 2 epochs for both phantoms; without the factor 1/8 (the circulant
  approximation of ``P B P``) the C9 barrel with symmetry diverges.  The volume is thus
  non-negative and supported in its box at every step (the paper uses no constraint).
  The initial volume is uniform random values in [0, 1] (Eloy et al. 2023 sec. 4.3.1)
  times twice the particles' mean intensity, so that the first comparisons are on the
  data's scale.
- **Symmetry.**  With Cn, each particle's gradient is that of its ``n`` poses ``R C_k``,
  each with its own residual (so the step is the exact gradient of the symmetrised
  energy even where the iterate is not exactly symmetric).
- **Likelihood scale.**  ``p = exp(-E / T)`` with ``E`` the whitened energy of
  :mod:`spfluo.algorithms.scoring.energies` (a negative log-likelihood; the raw ``exp(-E)``
  of Algorithm 1 depends on the intensity scale).  ``temperature`` ``T`` (1 by default)
  broadens the likelihoods.
- **Global searches** (on by default): a particle whose sampling distribution settled in
  a wrong mode cannot leave it once the uniform share has decayed (measured: 1 to 3 of 20
  particles of the asymmetric phantom turned by about 180 degrees, up to 8 of 20 for the C9
  barrel, whose top and bottom look alike under the blur).  So when the energy reaches
  its plateau, every particle is searched exhaustively against the iterate
  (:func:`~spfluo.algorithms.abinitio.search.global_check`) and moves when a distant pose
  has a lower energy; the distributions of the particles that moved are re-centred on
  their new pose and the epochs continue until the next plateau, at most 3 searches.
- **Symmetric objects: the axis first** (``align_axis``, on by default).  Imposing Cn from
  the first epoch fails on the C9 barrel (measured: 2 of 5 seeds of the Eloy et al. 2023
  setting converged to a wrong volume, median pose error 54-77 degrees), while the same
  runs without symmetry find the barrel.  So a symmetric run starts without symmetry
  (in-plane grid over the whole circle, same spacing); at its first plateau at the full
  band the Cn axis of the iterate is found and turned onto z
  (:func:`spfluo.algorithms.symmetry.align_symmetry_axis`), the poses follow, the iterate
  is symmetrised, the preconditioner rebuilt for the Cn updates, the sampling
  distributions re-centred on the poses on the Cn grid, and the epochs continue with Cn;
  first the angle of every particle about the axis and which end is up are settled on a
  reference that keeps the n-fold structure (:mod:`.inplane`; with ``in_plane`` off, the
  polarity consensus on the iterate, :mod:`.polarity`).
- **Damping grows with the poses.**  The preconditioner sums the curvatures of ``N n``
  poses (particles times symmetry copies); with the damping of one particle, the steps
  at frequencies weakly covered next to strongly covered ones grow with it and the
  iterate diverges (measured: the C9 barrel in the Fortun et al. 2018 setting, 50
  particles, sigma 4/16 voxels, diverged with C9 imposed; 20 particles did not).  The
  damping is multiplied by ``max(1, N n / 150)``.
- **Final steps** (optional, on by default): each pose is refined by two local searches
  around it (2.5 degrees within 5, then 1 within 2) against the final iterate at the full
  band; the result volume is then the known-pose reconstruction of
  :mod:`spfluo.algorithms.reconstruct` (sharper than the SGD iterate), or the iterate.

Checkpoints: ``checkpoint(state)`` is called after every epoch with an :class:`SGDState`
(plain NumPy arrays, the random generator state included); ``sgd_reconstruction(...,
resume=state)`` continues from it and gives exactly the result of an uninterrupted run
with the same inputs.  No file I/O here (the job writes the state).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Callable

import numpy as np

from spfluo.algorithms._validation import as_particles
from spfluo.algorithms.abinitio.inplane import align_in_plane, last_move
from spfluo.algorithms.abinitio.options import SGDOptions
from spfluo.algorithms.abinitio.polarity import (
    curvature_sum,
    flip_rotation,
    polarity_axis,
    polarity_consensus,
)
from spfluo.algorithms.abinitio.results import AbInitioResult, SGDState
from spfluo.algorithms.abinitio.sampling import (
    direction_kernel,
    draw,
    likelihoods,
    marginals,
    psi_kernel,
)
from spfluo.algorithms.abinitio.search import (
    LOCAL_STAGES_DEG,
    coarse_band,
    global_check,
    refine_local,
)
from spfluo.algorithms.backend import Backend, resolve_backend, to_numpy
from spfluo.algorithms.geometry import Poses, cyclic_group, so3_grid
from spfluo.algorithms.scoring.energies import Scorer
from spfluo.algorithms.scoring.model import FourierVolume
from spfluo.algorithms.scoring.spectra import particle_spectra

__all__ = ["sgd_reconstruction", "sgd_update", "symmetrize_channels"]

# global check after the epochs: band of the volume grid, and (M_d, M_psi) of its grid
_GLOBAL_BAND = 12
_GLOBAL_GRID = (300, 24)
# most global searches in a run (each one that moves particles is followed by more epochs)
_MAX_CHECKS = 3
# poses (particles x symmetry copies) above which the SGD damping grows in proportion
_DAMPING_POSES = 150


def sgd_update(vol: FourierVolume, sc: Scorer, l: int, rotation, translation, *, group, lr,
               damping) -> None:
    """One preconditioned gradient step (Eloy et al. 2023 eq. 12, 33) for particle ``l``.

    The gradient ``conj(g) (g R_k f^ - y^)`` (``g = h^ rho_t``) of every pose ``R_k = R C_k``
    of the symmetry group ``group`` (n, 3, 3) (the particle counts once per element, each
    with its own residual) is splat with the adjoint of the trilinear gather at ``q = 2 R_k^T
    p`` and, conjugated, at ``-q`` (Hermitian symmetry); the curvature ``|h^|^2`` is
    accumulated the same way into ``B``; the step is :meth:`FourierVolume.apply_gradient`.
    ``rotation`` (3, 3) and ``translation`` (3,) may live on the device.
    """
    xp = vol.bk.xp
    rots = xp.matmul(xp.asarray(rotation, dtype=xp.float64)[None], group)  # poses R C_k
    ramp = sc.ramp(translation)  # rho_t
    weight = (sc.w * np.float32(0.5))[None] * sc.spectra.inv_noise[l][:, None]  # (C, M)
    g = sc.otf * ramp  # (C, M)
    resid = vol.at(rots, sc) * ramp - sc.data(l)[None]  # g b - y, (n, C, M)
    grad = (xp.conj(g)[None] * resid) * weight[None]
    curv = xp.broadcast_to(sc.otf_power * weight, grad.shape)
    grads = vol.backproject(rots, sc, grad).astype(xp.complex64)
    vol.curvature += vol.backproject(rots, sc, curv).astype(xp.float32)
    vol.apply_gradient(grads, vol.curvature, damping, lr)


def symmetrize_channels(bk: Backend, volume, symmetry: int):
    """Average of the volume (C, D, D, D) rotated by the elements of Cn (exact rotations
    about z)."""
    if symmetry == 1:
        return volume
    from spfluo.algorithms.transform import rotate_about_z

    out = sum(rotate_about_z(volume, 2.0 * np.pi * k / symmetry, backend=bk)
              for k in range(symmetry)) / symmetry
    return out.astype(volume.dtype, copy=False)


def move_threshold_deg(grid) -> float:
    """Rotation change (degrees) that counts as a move in an epoch: twice the spacing of the
    SO(3) grid (the larger of the direction spacing ``sqrt(4 pi / M_d)`` and the in-plane
    step ``2 pi / (n M_psi)``), so that jitter between neighbouring grid poses is not one.
    The poses have settled when at most ``pose_tol`` of the particles move per epoch."""
    spacing = max(math.sqrt(4.0 * math.pi / grid.n_directions),
                  2.0 * math.pi / (grid.symmetry * grid.n_psi))
    return math.degrees(2.0 * spacing)


def _plateau(energies: list, tol: float, patience: int) -> bool:
    if len(energies) < patience + 1:
        return False
    recent = np.asarray(energies[-(patience + 1):])
    return bool((recent.max() - recent.min()) <= tol * abs(recent.mean()))


class _SGD:
    """One SGD run: its state, and one method per phase (epoch, axis alignment, polarity,
    global search, final steps)."""

    def __init__(self, particles, psf, options: SGDOptions, *, seed, checkpoint, resume,
                 progress, backend):
        self.bk = bk = resolve_backend(backend, particles)
        xp = bk.xp
        self.y, self.squeeze = as_particles(particles, xp)
        n, c, box = (int(s) for s in self.y.shape[:3])
        self.n, self.c, self.box = n, c, box
        self.opt = opt = options.validated(box)
        if resume is not None and not isinstance(resume, SGDState):
            raise ValueError(f"resume must be an SGDState (from a checkpoint), got "
                             f"{type(resume).__name__}")
        self.psf, self.checkpoint, self.progress = psf, checkpoint, progress
        self.t_start = time.perf_counter()
        self.data = data = particle_spectra(self.y, psf, support_threshold=opt.support_threshold,
                                            backend=bk)
        # symmetric runs start without symmetry (phase 0) when align_axis: the same angular
        # spacing in-plane over the whole circle
        self.grids = {1: so3_grid(opt.grid_directions, opt.grid_psi, symmetry=opt.symmetry)}
        self.two_stage = opt.symmetry > 1 and opt.align_axis
        if self.two_stage:
            self.grids[0] = so3_grid(opt.grid_directions, opt.grid_psi * opt.symmetry,
                                     symmetry=1)
        self.full_band = data.band
        self.coarse_band = (self.full_band if opt.coarse_epochs == 0
                            else coarse_band(self.full_band, opt.downsampling))
        self.scorers = {b: Scorer.for_band(data, b, opt.max_shift, surface="peak")
                        for b in {self.full_band, self.coarse_band}}
        # damping: `regularization` times the median curvature of one particle at the OTF
        # peak, times max(1, N n / _DAMPING_POSES) (n the symmetry order of the updates)
        self.one = np.array([float(np.median(to_numpy(data.inv_noise[:, k])))
                             * float(to_numpy((data.otf[k].real**2 + data.otf[k].imag**2).max()))
                             for k in range(c)])
        self.check = None
        if opt.global_search:
            band = min(self.full_band, _GLOBAL_BAND)
            m_d, m_psi = _GLOBAL_GRID
            self.check = dict(
                band=band,
                scorer=self.scorers.get(band) or Scorer.for_band(data, band, opt.max_shift,
                                                                 surface="peak"),
                mats=so3_grid(m_d, max(4, int(math.ceil(m_psi / opt.symmetry))),
                              symmetry=opt.symmetry).matrices().reshape(-1, 3, 3))
        self.phase = 0 if self.two_stage else 1
        if resume is not None:
            self.phase = int(resume.phase)
            if self.phase == 0 and not self.two_stage:
                raise ValueError("resume comes from a symmetric run in its first stage without "
                                 "symmetry, but these options do not have that stage: resume "
                                 "with the same symmetry and align_axis")
        self.set_phase(self.phase)
        self.seed = seed
        if resume is None:
            self._start(seed)
        else:
            self._resume(resume)

    # -- state
    def set_phase(self, p: int) -> None:
        xp = self.bk.xp
        self.phase = p
        self.grid = grid = self.grids[p]
        self.mats = xp.asarray(grid.matrices())  # (M_d, M_psi, 3, 3)
        self.group_host = cyclic_group(grid.symmetry)
        self.group = xp.asarray(self.group_host)
        self.md, self.mpsi = grid.n_directions, grid.n_psi
        self.directions = xp.asarray(grid.directions)
        self.psi = xp.asarray(grid.psi)
        factor = max(1.0, self.n * grid.symmetry / _DAMPING_POSES)
        self.damping = xp.asarray((self.opt.regularization * factor * self.one).astype(
            np.float32))

    def _start(self, seed) -> None:
        xp = self.bk.xp
        n, c, box = self.n, self.c, self.box
        self.rng = np.random.default_rng(seed)
        # uniform random values in [0, 1] (Eloy et al. 2023 sec. 4.3.1), scaled to the
        # particles' mean intensity so that the first comparisons are on the data's scale
        level = to_numpy(xp.abs(self.y).mean(axis=(0, 2, 3, 4))).astype(np.float64)
        init = self.rng.uniform(0.0, 1.0, size=(c, box, box, box)) * (2.0 * level)[
            :, None, None, None]
        init = symmetrize_channels(self.bk, xp.asarray(init.astype(np.float32)),
                                   self.grid.symmetry)
        self.vol = FourierVolume.initial(self.bk, init, self.coarse_band)
        self.alpha = 1.0
        self.qd = xp.full((n, self.md), 1.0 / self.md)
        self.qpsi = xp.full((n, self.mpsi), 1.0 / self.mpsi)
        self.pid = self.qd.copy()
        self.pipsi = self.qpsi.copy()
        self.rotations = xp.asarray(np.broadcast_to(np.eye(3), (n, 3, 3)).copy())
        self.translations = xp.zeros((n, 3))
        self.last_relative = np.full(n, np.nan)
        self.energies, self.bands, self.seconds, self.checks = [], [], [], []
        self.moved = []
        self.epoch = 0
        self.switch_epoch = -1

    def _resume(self, state: SGDState) -> None:
        xp = self.bk.xp
        problems = []
        n, c, md, mpsi = self.n, self.c, self.md, self.mpsi
        if state.q_direction.shape != (n, md) or state.q_psi.shape != (n, mpsi):
            problems.append(f"distributions of shapes {state.q_direction.shape}, "
                            f"{state.q_psi.shape} instead of ({n}, {md}), ({n}, {mpsi})")
        bands = (self.coarse_band, self.full_band)
        if state.band not in bands:
            problems.append(f"band {state.band} instead of one of {bands}")
        b, g = state.band, 2 * state.band + 3
        if state.volume.shape != (c, b, b, b) or state.curvature.shape != (c, g, g, g):
            problems.append(f"volume of shape {state.volume.shape}")
        if problems:
            raise ValueError("resume does not match these particles and options ("
                             + "; ".join(problems) + "): start a new run")
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = json.loads(state.rng_state)
        self.vol = FourierVolume(self.bk, self.box, xp.asarray(state.volume).copy(),
                                 xp.asarray(state.curvature).copy())
        self.alpha = float(state.alpha)
        self.qd, self.qpsi = xp.array(state.q_direction), xp.array(state.q_psi)
        self.pid, self.pipsi = xp.array(state.pi_direction), xp.array(state.pi_psi)
        self.rotations = xp.array(state.rotations)
        self.translations = xp.array(state.translations)
        self.last_relative = state.relative.copy()
        self.energies = state.energies.tolist()
        self.bands = [int(b) for b in state.bands]
        self.seconds = state.seconds.tolist()
        self.moved = state.recorded_moves().tolist()
        self.checks = [int(k) for k in state.checks]
        self.epoch = int(state.epoch)
        self.switch_epoch = int(state.switch_epoch)

    def poses(self) -> Poses:
        return Poses(to_numpy(self.rotations), to_numpy(self.translations))

    def save_state(self) -> None:
        if self.checkpoint is not None:
            self.checkpoint(self.state())

    def state(self) -> SGDState:
        """The run's state after the last epoch (host copies)."""
        return (SGDState(
            epoch=self.epoch, band=self.vol.band, volume=to_numpy(self.vol.real).copy(),
            curvature=to_numpy(self.vol.curvature).copy(), alpha=self.alpha,
            q_direction=to_numpy(self.qd).copy(), q_psi=to_numpy(self.qpsi).copy(),
            pi_direction=to_numpy(self.pid).copy(), pi_psi=to_numpy(self.pipsi).copy(),
            rotations=to_numpy(self.rotations).copy(),
            translations=to_numpy(self.translations).copy(),
            relative=self.last_relative.copy(), energies=np.asarray(self.energies),
            bands=np.asarray(self.bands, dtype=np.int64), seconds=np.asarray(self.seconds),
            checks=np.asarray(self.checks, dtype=np.int64),
            rng_state=json.dumps(self.rng.bit_generator.state), phase=self.phase,
            switch_epoch=self.switch_epoch, moved=np.asarray(self.moved, dtype=np.float64)))

    def choose_start(self) -> None:
        """``starts`` random starts, one epoch each: the run goes on from the one with the
        lowest energy.  Start 0 is that of ``seed``; the others' seeds derive from it (an
        integer ``seed``: ``SeedSequence([seed, k])``; otherwise draws of start 0's
        generator after its epoch)."""
        opt = self.opt
        if opt.starts == 1 or self.epoch > 0:
            return
        checkpoint, progress = self.checkpoint, self.progress
        self.checkpoint = self.progress = None
        trials, children = [], None
        try:
            for k in range(opt.starts):
                if k and isinstance(self.seed, (int, np.integer)):
                    self._start(np.random.SeedSequence([int(self.seed), k]))
                elif k:
                    if children is None:
                        children = self.rng.integers(2**63, size=opt.starts - 1)
                    self._start(children[k - 1])
                self.run_epoch()
                trials.append(self.state())
        finally:
            self.checkpoint, self.progress = checkpoint, progress
        energies = [float(t.energies[-1]) for t in trials]
        best = int(np.argmin(energies))
        self._resume(trials[best])
        self.stage(f"{opt.starts} random starts, energy after one epoch "
                   + ", ".join(f"{e:.4g}" for e in energies) + f": start {best} goes on")
        self.save_state()
        self.report_epoch()

    def stage(self, message: str) -> None:
        if self.progress is not None:
            self.progress({"stage": message, "elapsed": time.perf_counter() - self.t_start})

    def recentre(self, moved) -> None:
        """Sampling distributions of the moved particles re-centred on their new pose."""
        xp = self.bk.xp
        opt, grid = self.opt, self.grid
        moved = np.atleast_1d(np.asarray(moved))
        jd, ip = grid.nearest(to_numpy(self.rotations)[moved])
        for l, j, i in zip(moved, np.atleast_1d(jd), np.atleast_1d(ip)):
            pi_d = direction_kernel(np, grid.directions, np.array([j]), opt.beta_d)[:, 0]
            pi_psi = psi_kernel(np, grid.psi, np.array([i]), opt.beta_psi, grid.symmetry)[:, 0]
            self.pid[l] = xp.asarray(pi_d / pi_d.sum())
            self.pipsi[l] = xp.asarray(pi_psi / pi_psi.sum())
            self.qd[l] = self.alpha / self.md + (1.0 - self.alpha) * self.pid[l]
            self.qpsi[l] = self.alpha / self.mpsi + (1.0 - self.alpha) * self.pipsi[l]

    def set_poses(self, poses: Poses) -> None:
        xp = self.bk.xp
        self.rotations = xp.array(poses.rotations, dtype=xp.float64)
        self.translations = xp.array(poses.translations, dtype=xp.float64)

    # -- phases
    def finished(self) -> bool:
        """A plateau at the full band since the last check or switch: the mean relative
        energy varies by at most ``tol`` over ``patience`` epochs, and in each of them at
        most ``pose_tol`` of the particles moved (NaN: not recorded)."""
        since = max(self.checks[-1] if self.checks else 0, self.switch_epoch)
        recent = [k for k, b in enumerate(self.bands) if k >= since and b == self.full_band]
        settled = all(not self.moved[k] > self.opt.pose_tol
                      for k in recent[-self.opt.patience:])
        return len(self.energies) >= max(self.opt.min_epochs, 1) and settled and _plateau(
            [self.energies[k] for k in recent], self.opt.tol, self.opt.patience)

    def next_band(self) -> int:
        """Band of the next epoch: coarse until ``coarse_epochs`` or a coarse plateau."""
        if self.coarse_band == self.full_band or any(b == self.full_band for b in self.bands):
            return self.full_band
        if len(self.bands) >= self.opt.coarse_epochs or _plateau(
                self.energies, self.opt.tol, self.opt.patience):
            return self.full_band
        return self.coarse_band

    def run_epoch(self) -> None:
        """One epoch: every particle, in a random order, draws its candidates, moves to the
        best, updates its distributions and takes its gradient step (on the device)."""
        xp = self.bk.xp
        opt = self.opt
        t_epoch = time.perf_counter()
        band = self.next_band()
        if self.vol.band != band:
            self.vol = self.vol.resized(band)
        sc = self.scorers[band]
        self.vol.curvature *= np.float32(opt.memory)
        n = self.n
        order = self.rng.permutation(n)
        # the uniform numbers of this epoch's draws, one transfer
        u_d = xp.asarray(self.rng.random((n, self.md)))
        u_psi = xp.asarray(self.rng.random((n, self.mpsi)))
        rel = xp.empty(n, dtype=xp.float64)
        inv_t = 1.0 / opt.temperature
        alpha = self.alpha
        before = self.rotations.copy()
        for l in order:
            l = int(l)
            jd = draw(xp, self.qd[l], u_d[l], opt.n_directions)
            ip = draw(xp, self.qpsi[l], u_psi[l], opt.n_psi)
            cand = self.mats[jd][:, ip].reshape(-1, 3, 3)
            ev = sc.evaluate(self.vol, l, cand, sync=False)
            k = xp.argmin(ev.nll)
            self.rotations[l] = cand[k]
            self.translations[l] = ev.shifts[k]
            rel[l] = ev.relative[k]
            p = likelihoods(xp, ev.nll, inv_t).reshape(jd.shape[0], ip.shape[0])
            pi_d, pi_psi = marginals(xp, p, jd, ip, self.qd[l], self.qpsi[l], self.directions,
                                     self.psi, beta_d=opt.beta_d, beta_psi=opt.beta_psi,
                                     symmetry=self.grid.symmetry)
            self.pid[l], self.pipsi[l] = pi_d, pi_psi
            self.qd[l] = alpha / self.md + (1.0 - alpha) * pi_d
            self.qpsi[l] = alpha / self.mpsi + (1.0 - alpha) * pi_psi
            sgd_update(self.vol, sc, l, cand[k], ev.shifts[k], group=self.group,
                       lr=opt.learning_rate, damping=self.damping)
        self.alpha /= opt.alpha_r
        self.epoch += 1
        cos = (xp.einsum("nij,nij->n", before, self.rotations) - 1.0) / 2.0
        moved = xp.arccos(xp.clip(cos, -1.0, 1.0)) > np.radians(move_threshold_deg(self.grid))
        # one read-back per epoch: the energies and the moves together
        host = to_numpy(xp.concatenate([rel, moved.astype(rel.dtype)]))
        self.last_relative = host[:n]
        self.energies.append(float(self.last_relative.mean()))
        self.moved.append(float(host[n:].mean()))
        self.bands.append(band)
        self.seconds.append(time.perf_counter() - t_epoch)
        self.save_state()
        self.report_epoch()

    def report_epoch(self) -> None:
        """``progress`` of the last epoch."""
        if self.progress is not None:
            self.progress({"epoch": self.epoch, "max_epochs": self.opt.max_epochs,
                           "energy": self.energies[-1], "moved": self.moved[-1],
                           "band": self.bands[-1], "alpha": self.alpha,
                           "seconds": self.seconds[-1],
                           "elapsed": time.perf_counter() - self.t_start})

    def run_polarity(self) -> int:
        """Polarity consensus (Cn) on the current iterate; returns the number turned."""
        theta, centre, _ = polarity_axis(self.vol, self.opt.symmetry)
        poses = self.poses()
        new_r, new_t, flipped, gain = polarity_consensus(
            self.vol, self.scorers[self.full_band], poses.rotations, poses.translations,
            self.group_host, flip_rotation(theta), centre, rng=self.rng)
        self.set_poses(Poses(new_r, new_t))
        if flipped.size:
            self.recentre(flipped)
        self.stage(f"polarity consensus after epoch {self.epoch}: {flipped.size} particle(s) "
                   f"turned upside down (energy -{gain:.3g})")
        return int(flipped.size)

    def run_in_plane(self) -> int:
        """The rotation of every particle about its symmetry axis, and its polarity
        (``polarity``), settled on a reference that keeps the n-fold structure
        (:mod:`.inplane`); the iterate and the sampling distributions follow.  Returns
        the number of particles turned upside down."""
        opt = self.opt
        poses = self.poses()
        found = align_in_plane(self.vol, self.scorers[self.full_band], poses.rotations,
                               poses.translations, opt.symmetry, polarity=opt.polarity)
        turned = int(np.sum(np.einsum("ni,ni->n", poses.rotations[:, :, 0],
                                      found.rotations[:, :, 0]) < 0.0))
        self.set_poses(Poses(found.rotations, found.translations))
        self.vol = found.reference
        self.recentre(np.arange(self.n))
        self.stage(f"in-plane angles settled after epoch {self.epoch} ({found.passes} "
                   f"pass(es)){last_move(found)}; {turned} particle(s) turned upside down")
        return turned

    def switch_to_symmetry(self) -> None:
        """End of the stage without symmetry: the Cn axis of the iterate turned onto z
        (poses follow), the iterate symmetrised, the Cn grid, then the angles about the axis
        and the polarity (:meth:`settle_symmetric_poses`)."""
        from spfluo.algorithms.symmetry import (
            align_symmetry_axis,
            realign_poses,
            symmetrize,
        )

        xp = self.bk.xp
        opt = self.opt
        if self.vol.band != self.full_band:
            self.vol = self.vol.resized(self.full_band)
        aligned = align_symmetry_axis(self.vol.to_volume(self.box, apodization=False),
                                      opt.symmetry, backend=self.bk)
        self.set_poses(realign_poses(self.poses(), aligned.rotation, aligned.shift))
        self.set_phase(1)
        volume = xp.asarray(symmetrize(aligned.volume, opt.symmetry, backend=self.bk))
        self.vol = FourierVolume.initial(self.bk, volume.reshape((self.c,) + (self.box,) * 3),
                                         self.full_band)
        # the preconditioner of the Cn updates (steady state of the running sum)
        steady = 1.0 / (1.0 - opt.memory) if opt.memory < 1.0 else float(max(self.epoch, 1))
        self.vol.curvature = curvature_sum(self.vol, self.scorers[self.full_band],
                                           to_numpy(self.rotations), self.group_host) * \
            np.float32(min(steady, max(self.epoch, 1)))
        n = self.n
        self.qd, self.qpsi = xp.empty((n, self.md)), xp.empty((n, self.mpsi))
        self.pid, self.pipsi = xp.empty((n, self.md)), xp.empty((n, self.mpsi))
        self.recentre(np.arange(n))
        self.switch_epoch = self.epoch
        self.stage(f"symmetry C{opt.symmetry} imposed after epoch {self.epoch}: axis aligned "
                   f"with z (score {aligned.axis.score:.3f})")
        self.settle_symmetric_poses()
        self.save_state()

    def settle_symmetric_poses(self) -> int:
        """The in-plane alignment, which also settles the polarity (:mod:`.inplane`); the
        polarity consensus on the iterate when the alignment is off.  Returns the number
        of particles turned upside down."""
        opt = self.opt
        if opt.in_plane:
            return self.run_in_plane()
        return self.run_polarity() if opt.polarity else 0

    def run_check(self) -> int:
        """Polarity consensus (Cn, first check, one-stage runs), else global search, at the
        current epoch; moved particles get their distributions re-centred on the new pose.
        Returns the number moved."""
        opt = self.opt
        if self.vol.band != self.full_band:
            self.vol = self.vol.resized(self.full_band)
        if opt.polarity and opt.symmetry > 1 and not self.checks and self.switch_epoch < 0:
            turned = self.settle_symmetric_poses()
            if turned:
                self.checks.append(self.epoch)
                self.save_state()
                return turned
        new, moved = global_check(
            self.vol.resized(self.check["band"]), self.check["scorer"], self.vol,
            self.scorers[self.full_band], self.poses(), self.check["mats"],
            self.vol.centre_of_mass(), group=self.group_host,
            keep_polarity=opt.polarity and opt.symmetry > 1)
        if moved.size:
            self.set_poses(new)
            self.recentre(moved)
        self.checks.append(self.epoch)
        self.save_state()
        self.stage(f"global search after epoch {self.epoch}: {moved.size} particle(s) moved "
                   "to a better distant pose")
        return int(moved.size)

    def run(self) -> AbInitioResult:
        opt = self.opt
        self.choose_start()
        while True:
            if self.epoch >= opt.max_epochs or self.finished():
                if self.phase == 0:
                    self.switch_to_symmetry()
                    if self.epoch >= opt.max_epochs:
                        break
                    continue
                if (self.check is None or (self.checks and self.checks[-1] == self.epoch)
                        or len(self.checks) >= _MAX_CHECKS):
                    break
                if self.run_check() == 0 or self.epoch >= opt.max_epochs:
                    break
                continue
            self.run_epoch()
        converged = self.finished() or bool((self.checks or self.switch_epoch >= 0)
                                            and self.epoch < opt.max_epochs)
        return self.finish(converged)

    def finish(self, converged: bool) -> AbInitioResult:
        """Local refinement of the poses and the final volume."""
        xp = self.bk.xp
        opt = self.opt
        if self.vol.band != self.full_band:
            self.vol = self.vol.resized(self.full_band)
        iterate = self.vol.to_volume(self.box)
        poses = self.poses()
        particle_energies = self.last_relative
        if opt.refine:
            poses, particle_energies = refine_local(self.vol, self.scorers[self.full_band],
                                                    poses, stages_deg=LOCAL_STAGES_DEG)
            self.stage("poses refined locally at the full band")
        if opt.final_reconstruction is not None:
            from spfluo.algorithms.reconstruct import reconstruct
            from spfluo.algorithms.symmetry import centring_shift, realign_poses

            if self.grid.symmetry == 1:
                # the SGD frame is defined up to a translation: the object is centred before
                # the final volume, whose support is a sphere about the box centre (symmetric
                # runs were centred when their axis was aligned)
                try:
                    shift = centring_shift(iterate, backend=self.bk)
                except ValueError:  # no signal above the background: nothing to centre
                    shift = np.zeros(3)
                poses = realign_poses(poses, np.eye(3), shift)
            self.stage(f"final volume: known-pose reconstruction ({opt.final_reconstruction})")
            volume = reconstruct(self.y, poses, self.psf, method=opt.final_reconstruction,
                                 symmetry=opt.symmetry, backend=self.bk).volume
            volume = xp.asarray(volume).reshape(iterate.shape)
        else:
            volume = xp.maximum(iterate, 0.0)
        volume = to_numpy(volume).astype(np.float32)
        iterate = to_numpy(iterate).astype(np.float32)
        if self.squeeze:
            volume, iterate = volume[0], iterate[0]
        return AbInitioResult(
            volume=volume, poses=poses, energies=np.asarray(self.energies, dtype=np.float64),
            epoch_bands=np.asarray(self.bands, dtype=np.int64),
            epoch_seconds=np.asarray(self.seconds, dtype=np.float64),
            psi_marginals=to_numpy(self.pipsi), direction_marginals=to_numpy(self.pid),
            grid=self.grid, particle_energies=np.asarray(particle_energies),
            converged=bool(converged), iterate=iterate,
            epoch_moved=np.asarray(self.moved, dtype=np.float64))


def sgd_reconstruction(particles, psf, *, seed=0,
                       checkpoint: Callable[[SGDState], None] | None = None,
                       resume: SGDState | None = None,
                       progress: Callable[[dict], None] | None = None, backend: Any = None,
                       **options) -> AbInitioResult:
    """Ab initio reconstruction by SGD with importance sampling of the orientations.

    Eloy et al. 2023, Algorithm 1 (module docstring for the design).

    Parameters
    ----------
    particles : ndarray, shape (N, D, D, D) or (N, C, D, D, D)
        Particles, cubic boxes, isotropic voxels; several channels share the poses.
    psf : ndarray, shape (d, d, d) or (C, d, d, d)
        PSF centred at ``d//2`` (``d <= D`` is padded), one per channel or one for all;
        normalised to unit sum here.
    seed : int or numpy.random.Generator, optional
        Seeds the initial volume, the shuffles and the draws.
    checkpoint : callable, optional
        ``checkpoint(state)`` after every epoch (:class:`SGDState`).
    resume : SGDState, optional
        Continue from this state (same particles, PSF and options).
    progress : callable, optional
        ``progress(info)`` after every epoch, ``info`` a dict with ``epoch``,
        ``max_epochs``, ``energy``, ``moved`` (fraction of the particles whose rotation
        changed by more than :func:`move_threshold_deg`), ``band``, ``alpha``, ``seconds``,
        ``elapsed``; and
        after each stage, a dict with ``stage`` (a message) and ``elapsed``.
    backend : Backend or {"cpu", "gpu"}, optional
    **options
        The fields of :class:`~spfluo.algorithms.abinitio.options.SGDOptions` (defaults
        there):

        - ``starts``: random starts, one epoch each; the run goes on from the one of lowest
          energy (:meth:`_SGD.choose_start`);
        - ``max_epochs`` (>= 1), ``min_epochs`` (no plateau stop before), ``coarse_epochs``
          (most epochs on the band reduced by ``downsampling`` (>= 1); 0: none);
        - ``n_directions``, ``n_psi``: ``N_d`` and ``N_psi`` drawn per particle and epoch
          (64 and 8 in Eloy et al. 2023); ``grid_directions``, ``grid_psi``: ``M_d``,
          ``M_psi`` (default :func:`~spfluo.algorithms.abinitio.sampling.default_grid_size`);
        - ``alpha_r`` (> 1, decay of the uniform share per epoch), ``beta_d``, ``beta_psi``
          (kernel concentrations), ``temperature`` (> 0, likelihood temperature);
        - ``learning_rate`` (in (0, 1]), ``memory`` (factor in [0, 1] of the preconditioner
          per epoch), ``regularization`` (damping relative to one particle's curvature);
        - ``tol``, ``patience``: plateau when the mean relative energy varies by less than
          ``tol`` (relative) over ``patience`` epochs (ends the coarse stage; the run ends
          when, in addition, at most ``pose_tol`` of the particles moved in each of them);
        - ``max_shift``: largest translation norm, voxels (default ``D / 4``);
        - ``symmetry``: order n of a cyclic symmetry Cn about z (1 = none);
        - ``support_threshold``: relative ``|h^|^2`` threshold of the OTF support;
        - ``global_search``, ``align_axis``, ``polarity``, ``refine``: the stages of the
          module docstring;
        - ``final_reconstruction``: ``"hessian"``, ``"tv"``, ``"tikhonov"`` (method of
          :func:`spfluo.algorithms.reconstruct.reconstruct`, weight chosen on half maps)
          or None (the SGD iterate).

    Returns
    -------
    AbInitioResult
    """
    run = _SGD(particles, psf, SGDOptions(**options), seed=seed, checkpoint=checkpoint,
               resume=resume, progress=progress, backend=backend)
    return run.run()
