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

Conventions: ``DEVELOPING.md`` (arrays ``(z, y, x)``, poses ``y = T_t(R f)``, rotations in the
zyx frame, translations in voxels, Cn about z).  Particles ``(N, C, D, D, D)`` (or ``(N, D,
D, D)``), PSFs ``(C, d, d, d)`` or ``(d, d, d)``, volumes ``(C, D, D, D)``, float32 in and out.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import numpy as np

from spfluo.algorithms._validation import (
    as_channels,
    as_particles,
    as_psf,
    check_float,
    check_int,
    check_max_shift,
    check_symmetry,
)
from spfluo.algorithms.geometry.poses import check_poses
from spfluo.algorithms.backend import resolve_backend, to_numpy
from spfluo.algorithms.geometry import (
    Poses,
)
from spfluo.algorithms.reconstruct import (
    ADMMState,
    combine_sums,
    half_split,
    precompute_half_sums,
    precompute_sums,
    reconstruct_admm,
    update_sums,
)
from spfluo.algorithms.reconstruct.regularizers import check_regularizer
from spfluo.algorithms.reconstruct.solve import half_fsc
from spfluo.algorithms.refine.continuous import (
    _batched_terms,
    _continuous,
)
from spfluo.algorithms.refine.schedule import (
    DEFAULT_SCHEDULE,
    _as_schedule,
)
from spfluo.algorithms.refine.search import (
    _changes,
    _coarse_subset,
    _search,
    particle_spectra,
    scorer_project,
)
from spfluo.algorithms.refine.state import (
    PHASE_CONTINUOUS,
    PHASE_EXHAUSTIVE,
    RefineHistory,
    RefineResult,
    RefineState,
)
from spfluo.algorithms.scoring.energies import Scorer
from spfluo.algorithms.scoring.model import VolumeModel


def refine(particles, poses: Poses, psf, *, volume=None, regularizer: str = "tv",
           weight=3e-3, schedule=DEFAULT_SCHEDULE, exhaustive_iterations: int | None = None,
           tolerance_deg: float | None = None, continuous_iterations: int = 2,
           gd_steps: int = 3, continuous_tolerance_deg: float = 0.05,
           initial_admm_iterations: int = 100, admm_iterations: int = 30,
           continuous_admm_iterations: int = 5, final_admm_iterations: int = 50,
           symmetry: int = 1, channels=None, half_maps: bool = True, halves=None, seed=0,
           max_shift: float | None = None, support_threshold: float = 1e-3, pad: float = 1.5,
           batch_size: int = 16, state: RefineState | None = None,
           callback: Callable[[RefineState], None] | None = None,
           progress: Callable[[dict], None] | None = None, backend=None) -> RefineResult:
    """High-accuracy refinement: alternate regularised reconstruction and pose updates.

    Each outer iteration: (a) the sums of the known-pose problem for the current poses
    (:func:`spfluo.algorithms.reconstruct.precompute_sums` the first time, then
    :func:`~spfluo.algorithms.reconstruct.update_sums` for the particles that moved), then
    ADMM iterations warm-started from the previous state
    (:func:`spfluo.algorithms.reconstruct.reconstruct_admm`, TV or Hessian); (b) a pose
    update of every particle against its half set's volume.  First the
    exhaustive search, one ``schedule`` stage per iteration, the last stage repeated until
    the median rotation change is at most ``tolerance_deg``; then ``continuous_iterations``
    continuous refinements (``gd_steps`` gradient steps each, Zehni et al. 2020).  Finally the
    volume is reconstructed from all the particles with the refined poses.

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
    weight : float or sequence of float (one per channel), default 3e-3
        Regularisation weight per mean particle, data normalised to ``max(b) = 1``
        (:func:`~spfluo.algorithms.reconstruct.reconstruct_admm`).
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
    channels : None, int or sequence of int
        Channels compared by the pose updates (default all); every channel is
        reconstructed.
    half_maps : bool, default True
        Gold standard: two random half sets refined independently, their FSC reported at
        every iteration.
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
    arr = as_particles(particles)[0]
    n, c, d = int(arr.shape[0]), int(arr.shape[1]), int(arr.shape[2])
    poses = check_poses(poses, n)
    regularizer = check_regularizer(regularizer)
    stages = _as_schedule(schedule)
    n_exh = len(stages) + 2 if exhaustive_iterations is None else check_int(
        exhaustive_iterations, "exhaustive_iterations", minimum=0)
    if n_exh < len(stages):
        raise ValueError(f"exhaustive_iterations must be at least the number of schedule "
                         f"stages ({len(stages)}), got {n_exh}")
    if tolerance_deg is None:
        tol = stages[-1].step_deg / 2.0 if stages else 0.0
    else:
        tol = check_float(tolerance_deg, "tolerance_deg", low=0.0, unit=" degrees")
    n_cont = check_int(continuous_iterations, "continuous_iterations", minimum=0)
    gd_steps = check_int(gd_steps, "gd_steps", minimum=1)
    cont_tol = check_float(continuous_tolerance_deg, "continuous_tolerance_deg", low=0.0,
                            unit=" degrees")
    it0 = check_int(initial_admm_iterations, "initial_admm_iterations", minimum=1)
    it_exh = check_int(admm_iterations, "admm_iterations", minimum=1)
    it_cont = check_int(continuous_admm_iterations, "continuous_admm_iterations", minimum=1)
    it_final = check_int(final_admm_iterations, "final_admm_iterations", minimum=1)
    symmetry = check_symmetry(symmetry)
    chans = as_channels(channels, c)
    if not isinstance(half_maps, (bool, np.bool_)):
        raise ValueError(f"half_maps must be True or False, got {half_maps!r}")
    if half_maps and n < 2:
        raise ValueError(f"half maps need at least 2 particles, got {n}: set half_maps=False")
    max_shift = check_max_shift(max_shift, d)
    h = as_psf(psf, c, d)
    bk = resolve_backend(backend, particles)
    init_volume = None
    if volume is not None:
        init_volume = np.asarray(to_numpy(volume), dtype=np.float32)
        if init_volume.ndim == 3:
            init_volume = init_volume[None]
        if init_volume.shape != (c, d, d, d):
            raise ValueError(f"volume must have shape ({c}, {d}, {d}, {d}) like the particles, "
                             f"got {np.asarray(to_numpy(volume)).shape}")
        if not np.all(np.isfinite(init_volume)):
            raise ValueError("volume contains NaN or infinite values")
        if not np.any(init_volume):
            raise ValueError("volume is zero everywhere: give a reference or leave it out")

    if state is None:
        if half_maps:
            labels = half_split(n, seed=seed) if halves is None else np.asarray(halves)
            if labels.shape != (n,) or not np.isin(labels, (0, 1)).all() or \
                    len(np.unique(labels)) != 2:
                raise ValueError(f"halves must hold one 0 or 1 per particle ({n}), both "
                                 f"present, got {np.asarray(halves)!r}")
            labels = labels.astype(np.int8)
        else:
            labels = np.zeros(n, dtype=np.int8)
        state = RefineState(
            iteration=0, phase=PHASE_EXHAUSTIVE if stages else (
                PHASE_CONTINUOUS if n_cont else 2),
            stage=0, continuous_done=0, rotations=poses.rotations.copy(),
            translations=poses.translations.copy(), halves=labels,
            angle_steps_deg=np.full(n, 1.0), shift_steps=np.full(n, 0.5), admm=None,
            history=RefineHistory.empty(c))
    else:
        if not isinstance(state, RefineState):
            raise ValueError(f"state must be a RefineState (from a callback), got "
                             f"{type(state).__name__}")
        if state.rotations.shape != (n, 3, 3) or state.halves.shape != (n,):
            raise ValueError(f"state describes {state.rotations.shape[0]} particles, not {n}: "
                             "resume with the same particles")
        if half_maps != bool(np.any(state.halves)):
            raise ValueError("state was made with a different half_maps setting: resume with "
                             "the same options")
    groups = [np.flatnonzero(state.halves == g) for g in ((0, 1) if half_maps else (0,))]
    spectra = particle_spectra(arr, h, support_threshold=support_threshold, pad=pad,
                               batch_size=batch_size, backend=bk)
    scorer = Scorer(spectra, chans, max_shift)
    coarse = Scorer(spectra, chans, max_shift, subset=_coarse_subset(spectra.frequencies))
    input_rotations = poses.rotations

    cache = {}  # the last sums and their poses: the next ones are an update of them

    def sums_for(rotations, translations):
        current = Poses(rotations, translations)
        if cache:  # only the particles that moved are taken out and put back
            previous = cache["poses"]
            sums = [update_sums(s, arr, previous, current, h, indices=idx,
                                batch_size=batch_size, backend=bk)
                    for s, idx in zip(cache["sums"], groups)]
        elif half_maps:
            sums = list(precompute_half_sums(arr, current, h, halves=state.halves,
                                             symmetry=symmetry, batch_size=batch_size,
                                             backend=bk))
        else:
            sums = [precompute_sums(arr, current, h, symmetry=symmetry, batch_size=batch_size,
                                    backend=bk)]
        cache.update(poses=Poses(current.rotations.copy(), current.translations.copy()),
                     sums=sums)
        return sums

    last_changes = np.zeros(n)
    last_energies = np.full(n, np.nan)
    while state.phase != 2:
        t_it = time.perf_counter()
        it = state.iteration
        phase = state.phase
        rot = state.rotations.copy()
        trans = state.translations.copy()
        # (a) volume update
        if it == 0 and init_volume is not None:
            vols = [init_volume for _ in groups]
            admm = state.admm
            energy = math.nan
            resolution = np.full(c, np.nan)
        else:
            sums = sums_for(rot, trans)
            admm_new, vols, energy = [], [], 0.0
            for g, s in enumerate(sums):
                if state.admm is None:
                    init = None if init_volume is None else init_volume
                    iters = it0
                else:
                    init = state.admm[g]
                    iters = it_cont if phase == PHASE_CONTINUOUS else it_exh
                res = reconstruct_admm(s, regularizer=regularizer, weight=weight,
                                       iterations=iters, init=init)
                admm_new.append(_host_state(res.state))
                vols.append(to_numpy(res.volume).astype(np.float32))
                energy += float(res.energies[-1])
            admm = tuple(admm_new)
            resolution = (half_fsc(vols[0], vols[1])[1] if half_maps
                          else np.full(c, np.nan))
        # (b) pose update, each half set against its own volume
        energies = np.empty(n)
        a_steps = state.angle_steps_deg.copy()
        s_steps = state.shift_steps.copy()
        for g, idx in enumerate(groups):
            need_gradient = phase == PHASE_CONTINUOUS or (
                spectra.grid != spectra.box and not stages[state.stage].is_global)
            model = VolumeModel(bk, vols[g], spectra, chans, gradient=need_gradient)
            t_now = scorer_project(scorer, trans[idx])
            if phase == PHASE_EXHAUSTIVE:
                stage = stages[state.stage]
                r_new, t_new, e_new = _search(model, scorer, coarse, idx, rot[idx], t_now,
                                              stage, symmetry, 8)
            else:
                r_new, t_new, e_new, a_new, s_new = _continuous(
                    model, scorer, idx, rot[idx], t_now, np.radians(a_steps[idx]),
                    s_steps[idx], steps=gd_steps, eta=0.25, max_backtracks=6,
                    max_angle=math.radians(2.0), max_shift_step=1.0)
                a_steps[idx] = np.degrees(a_new)
                s_steps[idx] = s_new
            rot[idx], trans[idx], energies[idx] = r_new, t_new, e_new
        changes, shifts = _changes(state.rotations, rot, state.translations, trans, symmetry)
        last_changes, last_energies = changes, energies
        med = float(np.median(changes))
        # next phase
        stage_idx, cont_done, next_phase = state.stage, state.continuous_done, phase
        if phase == PHASE_EXHAUSTIVE:
            done_exh = int(np.sum(state.history.phase == PHASE_EXHAUSTIVE)) + 1
            if stage_idx < len(stages) - 1:
                stage_idx += 1
            elif med <= tol or done_exh >= n_exh:
                next_phase = PHASE_CONTINUOUS if n_cont else 2
            step_deg = stages[state.stage].step_deg
            range_deg = math.inf if stages[state.stage].is_global else \
                stages[state.stage].range_deg
        else:
            cont_done += 1
            if cont_done >= n_cont or med <= cont_tol:
                next_phase = 2
            step_deg = range_deg = math.nan
        entry = dict(iteration=it, phase=phase, step_deg=step_deg, range_deg=range_deg,
                     energy=energy, pose_energy=float(np.mean(energies)),
                     median_change_deg=med, mean_change_deg=float(np.mean(changes)),
                     median_shift_change=float(np.median(shifts)),
                     resolution_per_voxel=resolution,
                     seconds=time.perf_counter() - t_it)
        state = RefineState(iteration=it + 1, phase=next_phase, stage=stage_idx,
                            continuous_done=cont_done, rotations=rot, translations=trans,
                            halves=state.halves, angle_steps_deg=a_steps, shift_steps=s_steps,
                            admm=admm, history=state.history.appended(**entry))
        if progress is not None:
            progress({**entry, "elapsed": time.perf_counter() - t_start})
        if callback is not None:
            callback(state)

    # final reconstruction with the refined poses
    final_poses = state.poses
    sums = sums_for(state.rotations, state.translations)
    halves_out = None
    half = None
    curves = None
    resolution = np.full(c, np.nan)
    if half_maps:
        maps = []
        for g, s in enumerate(sums):
            init = state.admm[g] if state.admm is not None else init_volume
            res = reconstruct_admm(s, regularizer=regularizer, weight=weight,
                                   iterations=it_final if state.admm is not None else it0,
                                   init=init)
            maps.append(to_numpy(res.volume).astype(np.float32))
        half = np.stack(maps)
        curves, resolution = half_fsc(half[0], half[1])
        curves = tuple(curves)
        full = combine_sums(sums[0], sums[1])
        res = reconstruct_admm(full, regularizer=regularizer, weight=weight,
                               iterations=it_final, init=half.mean(axis=0))
        halves_out = state.halves.copy()
    else:
        init = state.admm[0] if state.admm is not None else init_volume
        res = reconstruct_admm(sums[0], regularizer=regularizer, weight=weight,
                               iterations=it_final if state.admm is not None else it0,
                               init=init)
    volume_out = to_numpy(res.volume).astype(np.float32)
    hist = state.history
    converged = bool(len(hist) and (
        (hist.phase[-1] == PHASE_CONTINUOUS and (hist.median_change_deg[-1] <= cont_tol))
        or (hist.phase[-1] == PHASE_EXHAUSTIVE and hist.median_change_deg[-1] <= tol)))
    total, _ = _changes(input_rotations, final_poses.rotations, poses.translations,
                        final_poses.translations, symmetry)
    if not np.all(np.isfinite(last_energies)):
        last_energies = _batched_terms(
            VolumeModel(bk, volume_out, spectra, chans, gradient=False), scorer, np.arange(n),
            final_poses.rotations, scorer_project(scorer, final_poses.translations),
            rotation_gradient=False, translation_gradient=False)[0]
        last_changes = np.full(n, np.nan)
    return RefineResult(volume=volume_out, half_maps=half, poses=final_poses,
                        halves=halves_out, fsc=curves, resolution_per_voxel=resolution,
                        energies=last_energies, changes_deg=total,
                        last_changes_deg=last_changes, history=hist, converged=converged,
                        state=state)


def _host_state(st: ADMMState) -> ADMMState:
    """The ADMM state with its arrays on the host (checkpoints, resume)."""
    return ADMMState(**{f.name: (getattr(st, f.name) if isinstance(getattr(st, f.name), str)
                                 else to_numpy(getattr(st, f.name)))
                        for f in dataclasses.fields(ADMMState)})
