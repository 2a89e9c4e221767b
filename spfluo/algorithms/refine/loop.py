"""High-accuracy refinement: alternated pose search and regularised reconstruction.

Fortun et al. 2018 sec. IV and V-A-4, Zehni et al. 2020 sec. III (Algorithms 1-3).
Starting from particles with approximate poses (ab initio, or any estimate), alternate

(a) the known-pose reconstruction (:mod:`spfluo.algorithms.reconstruct`: sums over the
    particles for the current poses, then a few TV or Hessian ADMM iterations warm-started
    from the previous state, split and dual variables included), and
(b) a pose update of every particle against the current volume,

until the poses stop changing.  Two pose updates: the exhaustive search (:mod:`.search`),
coarse to fine (:mod:`.schedule`), then the continuous refinement (:mod:`.continuous`).

Gold standard
    With ``half_maps=True`` the particles are split in two random halves
    (:func:`spfluo.algorithms.reconstruct.half_split`); each half has its own volume, ADMM
    state and pose updates against its own volume, so the half-map FSC reported at every
    iteration is independent of overfitting.  The final volume comes from the sums of all
    the particles with their refined poses (warm-started from the mean of the half maps).

Checkpoints: :mod:`.state`.

Conventions: ``docs/conventions.md`` (arrays ``(z, y, x)``, poses ``y = T_t(R f)``, rotations in the
zyx frame, translations in voxels, Cn about z).  Particles ``(N, C, D, D, D)`` (or ``(N, D,
D, D)``), PSFs ``(C, d, d, d)`` or ``(d, d, d)``, volumes ``(C, D, D, D)``, float32 in and out.
"""


from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import numpy as np

from spfluo.algorithms._validation import as_particles, as_psf
from spfluo.algorithms.backend import resolve_backend, to_numpy
from spfluo.algorithms.geometry import Poses
from spfluo.algorithms.geometry.poses import check_poses
from spfluo.algorithms.reconstruct import (
    ADMMState,
    combine_sums,
    half_split,
    precompute_half_sums,
    precompute_sums,
    reconstruct_admm,
    update_sums,
)
from spfluo.algorithms.reconstruct.autoweight import choose_weight
from spfluo.algorithms.reconstruct.gold import noise_substitution_fsc
from spfluo.algorithms.reconstruct.mask import default_mask_radius
from spfluo.algorithms.reconstruct.solve import half_fsc
from spfluo.algorithms.resolution import NYQUIST, low_pass_reference, optical_cutoff
from spfluo.algorithms.refine.continuous import _batched_terms, _continuous
from spfluo.algorithms.refine.diagnostics import UNDETERMINED_NATS, in_plane_scan
from spfluo.algorithms.refine.options import CONTINUOUS_STEP, LOW_PASS_OF_CUTOFF, RefineOptions
from spfluo.algorithms.refine.search import (
    _changes,
    _coarse_subset,
    _search,
    particle_spectra,
    scorer_project,
)
from spfluo.algorithms.refine.state import (
    PHASE_CONTINUOUS,
    PHASE_DONE,
    PHASE_EXHAUSTIVE,
    RefineHistory,
    RefineResult,
    RefineState,
)
from spfluo.algorithms.scoring.energies import Scorer
from spfluo.algorithms.scoring.model import VolumeModel

__all__ = ["refine"]

# exhaustive candidates whose translations are refined before the final choice
_TOP_K = 8


class _Refinement:
    """One refinement: its inputs, its state, and one method per step (the sums, the volume
    update, the pose update, the phase transition, the final reconstruction)."""

    def __init__(self, particles, poses, psf, options: RefineOptions, *, volume, halves, seed,
                 state, backend):
        self.arr = arr = as_particles(particles)[0]
        n, c, d = int(arr.shape[0]), int(arr.shape[1]), int(arr.shape[2])
        self.n, self.c, self.d = n, c, d
        self.input_poses = check_poses(poses, n)
        self.opt = opt = options.validated(n, c, d)
        self.h = as_psf(psf, c, d)
        self.bk = resolve_backend(backend, particles)
        self.init_volume = self._initial_volume(volume)
        self.state = self._initial_state(state, halves, seed)
        self.seed = seed
        self.cutoff = optical_cutoff(self.h)
        self.low_pass = math.nan
        self.start_volume = self.init_volume
        if self.init_volume is not None and opt.half_maps and opt.low_pass is not None:
            # both half sets start from a common reference that holds nothing they could
            # share beyond what is claimed: independent from the start (gold standard)
            f = (LOW_PASS_OF_CUTOFF * min(self.cutoff, NYQUIST) if opt.low_pass == "default"
                 else opt.low_pass)
            self.low_pass = float(f)
            self.start_volume = low_pass_reference(self.init_volume, self.low_pass)
        self.weight = (self.state.weight if opt.weight == "auto" else opt.weight)
        self.weight_log: list[str] = []
        self.groups = [np.flatnonzero(self.state.halves == g)
                       for g in ((0, 1) if opt.half_maps else (0,))]
        self.spectra = particle_spectra(arr, self.h, support_threshold=opt.support_threshold,
                                        pad=opt.pad, batch_size=opt.batch_size, backend=self.bk)
        self.scorer = Scorer(self.spectra, opt.channels, opt.max_shift)
        self.coarse = Scorer(self.spectra, opt.channels, opt.max_shift,
                             subset=_coarse_subset(self.spectra.frequencies))
        self.cache: dict = {}  # the last sums and their poses: the next ones update them
        self.last_changes = np.zeros(n)
        self.last_energies = np.full(n, np.nan)

    def _initial_volume(self, volume):
        if volume is None:
            return None
        c, d = self.c, self.d
        init = np.asarray(to_numpy(volume), dtype=np.float32)
        if init.ndim == 3:
            init = init[None]
        if init.shape != (c, d, d, d):
            raise ValueError(f"volume must have shape ({c}, {d}, {d}, {d}) like the particles, "
                             f"got {np.asarray(to_numpy(volume)).shape}")
        if not np.all(np.isfinite(init)):
            raise ValueError("volume contains NaN or infinite values")
        if not np.any(init):
            raise ValueError("volume is zero everywhere: give a reference or leave it out")
        return init

    def _initial_state(self, state, halves, seed) -> RefineState:
        n, opt = self.n, self.opt
        if state is not None:
            if not isinstance(state, RefineState):
                raise ValueError(f"state must be a RefineState (from a callback), got "
                                 f"{type(state).__name__}")
            if state.rotations.shape != (n, 3, 3) or state.halves.shape != (n,):
                raise ValueError(f"state describes {state.rotations.shape[0]} particles, not "
                                 f"{n}: resume with the same particles")
            if opt.half_maps != bool(np.any(state.halves)):
                raise ValueError("state was made with a different half_maps setting: resume "
                                 "with the same options")
            return state
        if opt.half_maps:
            labels = half_split(n, seed=seed) if halves is None else np.asarray(halves)
            if labels.shape != (n,) or not np.isin(labels, (0, 1)).all() or \
                    len(np.unique(labels)) != 2:
                raise ValueError(f"halves must hold one 0 or 1 per particle ({n}), both "
                                 f"present, got {np.asarray(halves)!r}")
            labels = labels.astype(np.int8)
        else:
            labels = np.zeros(n, dtype=np.int8)
        phase = PHASE_EXHAUSTIVE if opt.schedule else (
            PHASE_CONTINUOUS if opt.continuous_iterations else PHASE_DONE)
        poses = self.input_poses
        return RefineState(
            iteration=0, phase=phase, stage=0, continuous_done=0,
            rotations=poses.rotations.copy(), translations=poses.translations.copy(),
            halves=labels, angle_steps_deg=np.full(n, 1.0), shift_steps=np.full(n, 0.5),
            admm=None, history=RefineHistory.empty(self.c))

    # -- steps
    def sums_for(self, rotations, translations):
        """The known-pose sums of every half set for these poses (an update of the last)."""
        opt, bk = self.opt, self.bk
        current = Poses(rotations, translations)
        if self.cache:  # only the particles that moved are taken out and put back
            previous = self.cache["poses"]
            sums = [update_sums(s, self.arr, previous, current, self.h, indices=idx,
                                batch_size=opt.batch_size, backend=bk)
                    for s, idx in zip(self.cache["sums"], self.groups)]
        elif opt.half_maps:
            sums = list(precompute_half_sums(self.arr, current, self.h,
                                             halves=self.state.halves, symmetry=opt.symmetry,
                                             batch_size=opt.batch_size, backend=bk))
        else:
            sums = [precompute_sums(self.arr, current, self.h, symmetry=opt.symmetry,
                                    batch_size=opt.batch_size, backend=bk)]
        self.cache.update(poses=Poses(current.rotations.copy(), current.translations.copy()),
                          sums=sums)
        return sums

    def choose_weight(self, sums) -> None:
        """``weight="auto"``: the weight chosen once, on the half sums of the first volume
        update (:func:`~spfluo.algorithms.reconstruct.autoweight.choose_weight`)."""
        if self.weight is not None:
            return
        choice = choose_weight(tuple(sums), self.opt.regularizer,
                               iterations=self.opt.admm_iterations,
                               support_radius=self.opt.mask_radius)
        self.weight = np.asarray(choice.weight, dtype=np.float64)
        self.weight_log = choice.describe()

    def update_volumes(self, rotations, translations):
        """(a) The volume of every half set: ADMM warm-started from the previous state.
        Returns (volumes, ADMM states, energy, half-map resolution per channel)."""
        opt, state = self.opt, self.state
        if state.iteration == 0 and self.start_volume is not None:
            return ([self.start_volume for _ in self.groups], state.admm, math.nan,
                    np.full(self.c, np.nan))
        sums = self.sums_for(rotations, translations)
        self.choose_weight(sums)
        admm, vols, energy = [], [], 0.0
        for g, s in enumerate(sums):
            if state.admm is None:
                init, iters = self.start_volume, opt.initial_admm_iterations
            else:
                init = state.admm[g]
                iters = (opt.continuous_admm_iterations if state.phase == PHASE_CONTINUOUS
                         else opt.admm_iterations)
            res = reconstruct_admm(s, regularizer=opt.regularizer, weight=self.weight,
                                   iterations=iters, init=init,
                                   support_radius=opt.mask_radius)
            admm.append(_host_state(res.state))
            vols.append(to_numpy(res.volume).astype(np.float32))
            energy += float(res.energies[-1])
        resolution = (half_fsc(vols[0], vols[1])[1] if opt.half_maps
                      else np.full(self.c, np.nan))
        return vols, tuple(admm), energy, resolution

    def update_poses(self, vols, rotations, translations):
        """(b) The pose of every particle against its half set's volume (exhaustive search
        or continuous refinement).  Returns the poses, energies and step sizes."""
        opt, state, spectra = self.opt, self.state, self.spectra
        energies = np.empty(self.n)
        a_steps = state.angle_steps_deg.copy()
        s_steps = state.shift_steps.copy()
        for g, idx in enumerate(self.groups):
            need_gradient = state.phase == PHASE_CONTINUOUS or (
                spectra.grid != spectra.box and not opt.schedule[state.stage].is_global)
            model = VolumeModel(self.bk, vols[g], spectra, opt.channels, gradient=need_gradient)
            t_now = scorer_project(self.scorer, translations[idx])
            if state.phase == PHASE_EXHAUSTIVE:
                r_new, t_new, e_new = _search(model, self.scorer, self.coarse, idx,
                                              rotations[idx], t_now, opt.schedule[state.stage],
                                              opt.symmetry, _TOP_K,
                                              keep_polarity=opt.keep_polarity
                                              and opt.symmetry > 1)
            else:
                r_new, t_new, e_new, a_new, s_new = _continuous(
                    model, self.scorer, idx, rotations[idx], t_now, np.radians(a_steps[idx]),
                    s_steps[idx], steps=opt.gd_steps, **CONTINUOUS_STEP)
                a_steps[idx] = np.degrees(a_new)
                s_steps[idx] = s_new
            rotations[idx], translations[idx], energies[idx] = r_new, t_new, e_new
        return rotations, translations, energies, a_steps, s_steps

    def next_phase(self, median_change: float):
        """The phase, stage and continuous count after this iteration, and the iteration's
        step and range (degrees; NaN in the continuous phase)."""
        opt, state = self.opt, self.state
        stage, done, phase = state.stage, state.continuous_done, state.phase
        if phase == PHASE_EXHAUSTIVE:
            exhaustive_done = int(np.sum(state.history.phase == PHASE_EXHAUSTIVE)) + 1
            if stage < len(opt.schedule) - 1:
                stage += 1
            elif median_change <= opt.tolerance_deg or \
                    exhaustive_done >= opt.exhaustive_iterations:
                phase = PHASE_CONTINUOUS if opt.continuous_iterations else PHASE_DONE
            current = opt.schedule[state.stage]
            step_deg = current.step_deg
            range_deg = math.inf if current.is_global else current.range_deg
        else:
            done += 1
            if done >= opt.continuous_iterations or \
                    median_change <= opt.continuous_tolerance_deg:
                phase = PHASE_DONE
            step_deg = range_deg = math.nan
        return phase, stage, done, step_deg, range_deg

    def iterate(self) -> dict:
        """One outer iteration: volumes, poses, next phase; returns the history entry."""
        t_it = time.perf_counter()
        state, opt = self.state, self.opt
        rot, trans = state.rotations.copy(), state.translations.copy()
        vols, admm, energy, resolution = self.update_volumes(rot, trans)
        rot, trans, energies, a_steps, s_steps = self.update_poses(vols, rot, trans)
        changes, shifts = _changes(state.rotations, rot, state.translations, trans,
                                   opt.symmetry)
        self.last_changes, self.last_energies = changes, energies
        median = float(np.median(changes))
        phase, stage, done, step_deg, range_deg = self.next_phase(median)
        entry = dict(iteration=state.iteration, phase=state.phase, step_deg=step_deg,
                     range_deg=range_deg, energy=energy, pose_energy=float(np.mean(energies)),
                     median_change_deg=median, mean_change_deg=float(np.mean(changes)),
                     median_shift_change=float(np.median(shifts)),
                     resolution_per_voxel=resolution, seconds=time.perf_counter() - t_it)
        self.state = RefineState(
            iteration=state.iteration + 1, phase=phase, stage=stage, continuous_done=done,
            rotations=rot, translations=trans, halves=state.halves, angle_steps_deg=a_steps,
            shift_steps=s_steps, admm=admm, history=state.history.appended(**entry),
            weight=self.weight if opt.weight == "auto" else None)
        return entry

    def in_plane_margins(self, poses: Poses, volume, half) -> np.ndarray:
        """In-plane margins (nats) of every particle against the half map it did not
        contribute to (the final volume without half maps)."""
        trans = scorer_project(self.scorer, poses.translations)
        if half is None:
            model = VolumeModel(self.bk, volume, self.spectra, self.opt.channels)
            return in_plane_scan(model, self.scorer, poses.rotations, trans,
                                 self.opt.symmetry)[0]
        margins = np.full(self.n, np.nan)
        for g in (0, 1):
            idx = np.flatnonzero(self.state.halves == g)
            model = VolumeModel(self.bk, half[1 - g], self.spectra, self.opt.channels)
            margins[idx] = in_plane_scan(model, self.scorer, poses.rotations[idx], trans[idx],
                                         self.opt.symmetry)[0]
        return margins

    def solve_half(self, sums) -> np.ndarray:
        """A final half map from its sums, cold-started (``initial_admm_iterations``)."""
        opt = self.opt
        res = reconstruct_admm(sums, regularizer=opt.regularizer, weight=self.weight,
                               iterations=opt.initial_admm_iterations,
                               support_radius=opt.mask_radius)
        return to_numpy(res.volume).astype(np.float32)

    def finish(self) -> RefineResult:
        """The final reconstruction with the refined poses (half maps and their FSC)."""
        opt, state = self.opt, self.state
        final_poses = state.poses
        sums = self.sums_for(state.rotations, state.translations)
        self.choose_weight(sums)
        warm = state.admm is not None
        iterations = opt.final_admm_iterations if warm else opt.initial_admm_iterations
        half = curves = halves_out = details = None
        resolution = np.full(self.c, np.nan)
        if opt.half_maps:
            # the final half maps are solved from scratch, as the noise-substituted ones
            # are, so that the correction removes what the solver shares between them
            maps = [self.solve_half(s) for s in sums]
            half = np.stack(maps)
            details = noise_substitution_fsc(
                self.arr, final_poses, self.h, half, halves=state.halves,
                solve=lambda s, h, k_r: self.solve_half(s), symmetry=opt.symmetry,
                mask_radius=opt.mask_radius or default_mask_radius(self.d),
                cutoff_per_voxel=self.cutoff, seed=self.seed, batch_size=opt.batch_size,
                backend=self.bk, half_sums=sums)
            curves = tuple(None if d is None else d.corrected for d in details)
            for ch, d in enumerate(details):
                if d is not None and d.resolution.measured:
                    resolution[ch] = d.resolution.frequency_per_voxel
            res = reconstruct_admm(combine_sums(sums[0], sums[1]), regularizer=opt.regularizer,
                                   weight=self.weight, iterations=opt.final_admm_iterations,
                                   init=half.mean(axis=0), support_radius=opt.mask_radius)
            halves_out = state.halves.copy()
        else:
            res = reconstruct_admm(sums[0], regularizer=opt.regularizer, weight=self.weight,
                                   iterations=iterations,
                                   init=state.admm[0] if warm else self.start_volume,
                                   support_radius=opt.mask_radius)
        volume_out = to_numpy(res.volume).astype(np.float32)
        hist = state.history
        converged = bool(len(hist) and (
            (hist.phase[-1] == PHASE_CONTINUOUS
             and hist.median_change_deg[-1] <= opt.continuous_tolerance_deg)
            or (hist.phase[-1] == PHASE_EXHAUSTIVE
                and hist.median_change_deg[-1] <= opt.tolerance_deg)))
        total, _ = _changes(self.input_poses.rotations, final_poses.rotations,
                            self.input_poses.translations, final_poses.translations,
                            opt.symmetry)
        last_energies, last_changes = self.last_energies, self.last_changes
        if not np.all(np.isfinite(last_energies)):
            last_energies = _batched_terms(
                VolumeModel(self.bk, volume_out, self.spectra, opt.channels, gradient=False),
                self.scorer, np.arange(self.n), final_poses.rotations,
                scorer_project(self.scorer, final_poses.translations),
                rotation_gradient=False, translation_gradient=False)[0]
            last_changes = np.full(self.n, np.nan)
        margins = np.full(self.n, np.nan)
        if opt.symmetry > 1:
            margins = self.in_plane_margins(final_poses, volume_out, half)
        return RefineResult(volume=volume_out, half_maps=half, poses=final_poses,
                            halves=halves_out, fsc=curves, resolution_per_voxel=resolution,
                            energies=last_energies, changes_deg=total,
                            last_changes_deg=last_changes, history=hist, converged=converged,
                            state=state, in_plane_margins=margins,
                            undetermined=margins < UNDETERMINED_NATS, fsc_details=details,
                            weight=np.atleast_1d(np.asarray(self.weight, dtype=np.float64)),
                            weight_log=tuple(self.weight_log),
                            low_pass_per_voxel=self.low_pass)


def refine(particles, poses: Poses, psf, *, volume=None, halves=None, seed=0,
           state: RefineState | None = None,
           callback: Callable[[RefineState], None] | None = None,
           progress: Callable[[dict], None] | None = None, backend=None,
           **options) -> RefineResult:
    """High-accuracy refinement: alternate regularised reconstruction and pose updates.

    Each outer iteration: (a) the sums of the known-pose problem for the current poses
    (:func:`spfluo.algorithms.reconstruct.precompute_sums` the first time, then
    :func:`~spfluo.algorithms.reconstruct.update_sums` for the particles that moved), then
    ADMM iterations warm-started from the previous state
    (:func:`spfluo.algorithms.reconstruct.reconstruct_admm`, TV or Hessian); (b) a pose
    update of every particle against its half set's volume.  First the exhaustive search,
    one ``schedule`` stage per iteration, the last stage repeated until the median rotation
    change is at most ``tolerance_deg``; then ``continuous_iterations`` continuous
    refinements (``gd_steps`` gradient steps each, Zehni et al. 2020).  Finally the volume
    is reconstructed from all the particles with the refined poses.

    Parameters
    ----------
    particles : ndarray, shape (N, C, D, D, D) or (N, D, D, D)
        Particles (cubic boxes, isotropic voxels); channels share the poses.
    poses : Poses
        Initial poses (ab initio, or any estimate), zyx frame, translations in voxels.
    psf : ndarray, shape (d, d, d) or (C, d, d, d)
        Centred PSF(s), ``d <= D``.
    volume : ndarray, shape (C, D, D, D) or (D, D, D), optional
        Reference for the first pose update (e.g. the ab initio volume; any intensity
        scale); by default the first volume is reconstructed from the input poses.  It must
        be in the frame of the poses (and have its Cn axis along z with ``symmetry``).
    regularizer : {"tv", "hessian"}, default "tv"
    weight : float, sequence of float (one per channel) or "auto", default 3e-3
        Regularisation weight per mean particle, data normalised to ``max(b) = 1``
        (:func:`~spfluo.algorithms.reconstruct.reconstruct_admm`); ``"auto"`` (needs
        ``half_maps``) chooses it once, on the half sums of the first volume update
        (:func:`~spfluo.algorithms.reconstruct.autoweight.choose_weight`).
    mask_radius : float, "default" or None
        Spherical support of every volume, voxels from the box centre (default 0.9 times
        the half box; None: none).
    low_pass : float, "default" or None
        With half maps and a given ``volume``: the common reference of the first pose
        update (and the start of both half sets) is low-passed to this frequency, cycles
        per voxel (default half the optical cutoff of the PSF), so that the half sets share
        nothing finer than it and their FSC is a gold standard; None keeps ``volume``
        whole.
    schedule : sequence of SearchStage or (step_deg, range_deg) pairs
        Coarse-to-fine exhaustive stages (default Fortun et al. 2018: ``(20, None), (5, 10), (1,
        5)``); an empty schedule skips the exhaustive search.
    exhaustive_iterations : int, optional
        Most exhaustive iterations (default ``len(schedule) + 2``; at least
        ``len(schedule)``).
    tolerance_deg : float, optional
        The exhaustive search stops when the median rotation change is at most this
        (default half the last stage's step).
    continuous_iterations : int, default 2
        Continuous refinement iterations after the exhaustive search (0: none).
    gd_steps : int, default 3
        Gradient steps per particle and continuous iteration (``K_GD``).
    continuous_tolerance_deg : float, default 0.05
        The continuous phase stops early when the median rotation change is at most this.
    initial_admm_iterations, admm_iterations : int
    continuous_admm_iterations, final_admm_iterations : int
        ADMM iterations of the first volume update (from scratch), of the next ones in the
        exhaustive phase, of the continuous phase (``K_ADMM``, Zehni et al. 2020 uses 2 to 5) and of
        the final reconstructions (all warm-started but the first).
    symmetry : int, default 1
        Order n of the Cn symmetry about z: symmetrised sums, search over SO(3)/Cn, changes
        modulo Cn.
    keep_polarity : bool, default True
        Cn: the global stages keep every particle's symmetry axis in the hemisphere of its
        input one (the polarity found by the ab initio consensus); measured on a C9 barrel
        under a vectorial widefield PSF at 20 photons (50 particles of 48^3), the free
        global search turned about half of them upside down.
    channels : None, int or sequence of int
        Channels compared by the pose updates (default all); every channel is
        reconstructed.
    half_maps : bool, default True
        Gold standard: two random half sets refined independently, their FSC reported at
        every iteration (plain); the final half maps are solved from scratch and their FSC
        is masked and corrected by noise substitution (Chen et al. 2013), a resolution only
        where it is a measurement (``fsc_details``).
    halves : array_like of int, shape (N,), optional
        The half set (0 or 1) of each particle; default
        :func:`~spfluo.algorithms.reconstruct.half_split` with ``seed``.
    seed : int or numpy.random.Generator
        Seed of the half split.
    max_shift : float, optional
        Largest translation norm, voxels (default ``D / 4``).
    support_threshold : float, default 1e-3
        OTF support of the pose updates (:func:`particle_spectra`).
    pad : float, default 1.5
        Padding of the pose updates' blur (:func:`particle_spectra`; 1.5 makes it linear
        for objects within the box and PSFs up to the box size).
    batch_size : int, default 16
        Particles processed together by the sums.
    state : RefineState, optional
        Continue from this state (same inputs and options): the result is the one of an
        uninterrupted run.
    callback : callable, optional
        ``callback(state)`` after every outer iteration (checkpoints).
    progress : callable, optional
        ``progress(info)`` after every outer iteration, ``info`` a dict with the history
        entry and ``elapsed``.
    backend : Backend or {"cpu", "gpu"}, optional

    Returns
    -------
    RefineResult
    """
    t_start = time.perf_counter()
    run = _Refinement(particles, poses, psf, RefineOptions(**options), volume=volume,
                      halves=halves, seed=seed, state=state, backend=backend)
    while run.state.phase != PHASE_DONE:
        entry = run.iterate()
        if progress is not None:
            progress({**entry, "elapsed": time.perf_counter() - t_start})
        if callback is not None:
            callback(run.state)
    return run.finish()


def _host_state(st: ADMMState) -> ADMMState:
    """The ADMM state with its arrays on the host (checkpoints, resume)."""
    return ADMMState(**{f.name: (getattr(st, f.name) if isinstance(getattr(st, f.name), str)
                                 else to_numpy(getattr(st, f.name)))
                        for f in dataclasses.fields(ADMMState)})
