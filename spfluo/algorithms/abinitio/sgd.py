"""TODO docstring spfluo/algorithms/abinitio/sgd.py."""

from __future__ import annotations

import json
import math
import time
from typing import Any, Callable

import numpy as np

from spfluo.algorithms._validation import (
    as_particles,
    check_float,
    check_int,
    check_max_shift,
)
from spfluo.algorithms.backend import Backend, resolve_backend, to_numpy
from spfluo.algorithms.geometry import (
    Poses,
    cyclic_group,
    so3_grid,
)
from spfluo.algorithms.transform import _padded_shape
from spfluo.algorithms.abinitio.polarity import (
    _curvature_sum,
    _flip_rotation,
    _polarity_axis,
    _polarity_consensus,
)
from spfluo.algorithms.abinitio.results import (
    AbInitioResult,
    SGDState,
)
from spfluo.algorithms.abinitio.sampling import (
    _direction_kernel,
    _draw,
    _likelihoods,
    _psi_kernel,
    default_grid_size,
    smoothed_marginals,
)
from spfluo.algorithms.abinitio.search import (
    _LOCAL_STAGES_DEG,
    _coarse_band,
    _global_check,
    _refine_local,
)
from spfluo.algorithms.scoring.gaussian import (
    _Scale,
    _evaluate,
    _make_scale,
    _models,
)
from spfluo.algorithms.scoring.model import (
    _FourierVolume,
    _rotated_coordinates,
    _scatter,
    _setup,
)
from spfluo.algorithms.scoring.spectra import (
    SpectralParticles,
)


#: Known-pose methods for the final volume (spfluo.algorithms.reconstruct).
FINAL_METHODS = ("hessian", "tv", "tikhonov")


# global check after the epochs: band of the volume grid, and (M_d, M_psi) of its grid
_GLOBAL_BAND = 12


_GLOBAL_GRID = (300, 24)


# most global searches in a run (each one that moves particles is followed by more epochs)
_MAX_CHECKS = 3


# poses (particles x symmetry copies) above which the SGD damping grows in proportion
_DAMPING_POSES = 150


def _sgd_update(vol: "_FourierVolume", sc: _Scale, data: SpectralParticles, l: int, rotation,
                translation, *, box: int, group, lr: float, damping) -> None:
    """One preconditioned gradient step (Eloy et al. 2023 eq. 12, 33) for particle ``l``.

    The gradient ``conj(g) (g R_k f^ - y^)`` (``g = h^ rho_t``) of every pose
    ``R_k = R C_k`` of the symmetry group (the particle counts once per element,
    each with its own residual, so that the step is the exact gradient of the
    symmetrised energy even when the iterate is not exactly symmetric) is
    scattered with the adjoint of the trilinear gather at ``q = 2 R_k^T p`` and,
    conjugated, at ``-q`` (Hermitian symmetry); the curvature ``|h^|^2`` is
    accumulated the same way into ``B``; the step is
    :meth:`_FourierVolume.apply_gradient`.
    """
    bk = vol.bk
    xp = bk.xp
    c = data.n_channels
    rotation = np.asarray(rotation, dtype=np.float64)
    rots = np.matmul(rotation[None], group)  # (n, 3, 3): the poses R C_k
    n_sym = rots.shape[0]
    models = _models(vol, sc, rots)  # h R_k f^, (C, n, Ms)
    p = sc.points
    phase = (p @ xp.asarray(np.asarray(translation, dtype=np.float32))) * np.float32(
        -2.0 * np.pi / box)
    ramp = (xp.cos(phase) + 1j * xp.sin(phase)).astype(xp.complex64)  # rho_t
    y = data.spectra[l][:, sc.select]
    inv_s = data.inv_noise[l]
    half_w = sc.weights * np.float32(0.5)
    pts2 = xp.concatenate([p, -p], axis=0)  # (2Ms, 3)
    coords = _rotated_coordinates(xp, rots, pts2, vol.size // 2)
    base, frac = _setup(xp, coords, vol.size)
    padded = _padded_shape(vol.shape3)
    size = int(np.prod(padded))
    grads = xp.empty((c,) + padded, dtype=xp.complex64)
    for k in range(c):
        g_k = sc.otf[k] * ramp
        resid = models[k] * ramp - y[k]  # g b - y, (n, Ms)
        grad = (xp.conj(g_k) * resid) * (half_w * inv_s[k])
        curv = xp.broadcast_to(sc.otf_power[k] * (half_w * inv_s[k]), grad.shape)
        vals = xp.concatenate([grad, xp.conj(grad)], axis=1)
        cvals = xp.concatenate([curv, curv], axis=1)
        grads[k] = _scatter(bk, size, base, frac, vol.size, vals).reshape(padded)
        vol.curvature[k] += _scatter(bk, size, base, frac, vol.size, cvals).reshape(padded)
    del n_sym
    vol.apply_gradient(grads, vol.curvature, damping, lr)


def _symmetrize(bk: Backend, volume, symmetry: int):
    """Average of the volume rotated by the elements of Cn (exact rotations about z),
    (C, D, D, D)."""
    if symmetry == 1:
        return volume
    from spfluo.algorithms.transform import rotate_about_z

    out = sum(rotate_about_z(volume, 2.0 * np.pi * k / symmetry, backend=bk)
              for k in range(symmetry)) / symmetry
    return out.astype(volume.dtype, copy=False)


def _final_volume(particles, poses: Poses, psf, *, symmetry: int, method: str, backend):
    """Known-pose reconstruction (spfluo.algorithms.reconstruct) for the final step."""
    from spfluo.algorithms import reconstruct as _reconstruct

    return _reconstruct.reconstruct(particles, poses, psf, method=method, symmetry=symmetry,
                                    backend=backend).volume


def _plateau(energies: list, tol: float, patience: int) -> bool:
    if len(energies) < patience + 1:
        return False
    recent = np.asarray(energies[-(patience + 1):])
    return bool((recent.max() - recent.min()) <= tol * abs(recent.mean()))


def sgd_reconstruction(
    particles,
    psf,
    *,
    max_epochs: int = 40,
    min_epochs: int = 8,
    coarse_epochs: int = 15,
    downsampling: float = 2.0,
    n_directions: int = 64,
    n_psi: int = 8,
    grid_directions: int | None = None,
    grid_psi: int | None = None,
    alpha_r: float = 1.2,
    beta_d: float = 50.0,
    beta_psi: float = 50.0,
    temperature: float = 1.0,
    learning_rate: float = 1.0,
    memory: float = 0.5,
    regularization: float = 0.1,
    tol: float = 2e-2,
    patience: int = 3,
    max_shift: float | None = None,
    symmetry: int = 1,
    support_threshold: float = 1e-3,
    global_search: bool = True,
    align_axis: bool = True,
    polarity: bool = True,
    refine: bool = True,
    final_reconstruction: str | None = "hessian",
    seed=0,
    checkpoint: Callable[[SGDState], None] | None = None,
    resume: SGDState | None = None,
    progress: Callable[[dict], None] | None = None,
    backend: Any = None,
) -> AbInitioResult:
    """Ab initio reconstruction by SGD with importance sampling of the orientations.

    Eloy et al. 2023, Algorithm 1 (see the module docstring for the design).

    Parameters
    ----------
    particles : ndarray, shape (N, D, D, D) or (N, C, D, D, D)
        Particles, cubic boxes, isotropic voxels; several channels share the
        poses.
    psf : ndarray, shape (d, d, d) or (C, d, d, d)
        PSF centred at ``d//2`` (``d <= D`` is padded), one per channel or one
        for all; normalised to unit sum here.
    max_epochs : int, optional
        Maximum number of epochs (>= 1).
    min_epochs : int, optional
        No plateau stop before this many epochs.
    coarse_epochs : int, optional
        Most epochs run on the band reduced by ``downsampling`` (0: none); the
        coarse stage ends earlier on a plateau of the energy.
    downsampling : float, optional
        Band reduction of the coarse epochs (>= 1).
    n_directions, n_psi : int, optional
        ``N_d`` and ``N_psi``, directions and in-plane angles drawn per particle
        and epoch (64 and 8 in Eloy et al. 2023); ``N_d N_psi`` candidates per particle.
    grid_directions, grid_psi : int, optional
        Grid sizes ``M_d``, ``M_psi`` (default :func:`default_grid_size`).
    alpha_r : float, optional
        Decay of the uniform share per epoch (> 1; 1.2 in Eloy et al. 2023).
    beta_d, beta_psi : float, optional
        Kernel concentrations (50 in Eloy et al. 2023).
    temperature : float, optional
        Likelihood temperature (> 0).
    learning_rate : float, optional
        SGD step relative to the preconditioner (in ``(0, 1]``).
    memory : float, optional
        Factor in ``[0, 1]`` applied to the preconditioner at each epoch.
    regularization : float, optional
        Damping ``lambda`` relative to the curvature of one particle (>= 0).
    tol : float, optional
        Plateau: the mean relative energy varies by less than ``tol``
        (relative) over ``patience`` epochs; a plateau ends the coarse stage,
        and at the full band (after ``min_epochs``) the run.
    patience : int, optional
    max_shift : float, optional
        Largest translation norm, voxels (default ``D / 4``).
    symmetry : int, optional
        Order n of a cyclic symmetry Cn about z (1 = none): grid restricted to
        one asymmetric unit, symmetric gradient updates, symmetric result
        (after a first stage without symmetry when ``align_axis``).
    support_threshold : float, optional
        Relative ``|h^|^2`` threshold of the OTF support (1e-3).
    global_search : bool, optional
        When the energy reaches its plateau (or at ``max_epochs``), search every
        particle exhaustively against the iterate and move the particles whose
        sampling settled in a wrong mode; if some moved, run more epochs (at
        most 3 searches in all).  See the module docstring.
    align_axis : bool, optional
        With ``symmetry > 1``: run the epochs without symmetry until the energy
        reaches its plateau at the full band, then find the Cn axis of the
        iterate (:func:`spfluo.algorithms.symmetry.align_symmetry_axis`), turn it
        onto z (the poses follow), symmetrise the iterate and continue with Cn
        (module docstring).  False imposes Cn from the first epoch.
    polarity : bool, optional
        With ``symmetry > 1``: the polarity consensus (which end of the object is
        up, decided for all particles together) when the symmetry is imposed
        (``align_axis``) or at the first global search (otherwise); the later
        global searches then keep each particle's polarity (module docstring).
    refine : bool, optional
        Local pose refinement at the end (see the module docstring).
    final_reconstruction : {"hessian", "tv", "tikhonov", None}, optional
        Method of :func:`spfluo.algorithms.reconstruct.reconstruct` (weight
        chosen on half maps) for the final volume from the estimated poses;
        None keeps the SGD iterate.
    seed : int or numpy.random.Generator, optional
        Seeds the initial volume, the shuffles and the draws.
    checkpoint : callable, optional
        ``checkpoint(state)`` after every epoch (:class:`SGDState`).
    resume : SGDState, optional
        Continue from this state (same particles, PSF and options).
    progress : callable, optional
        ``progress(info)`` after every epoch, ``info`` a dict with ``epoch``,
        ``max_epochs``, ``energy``, ``band``, ``alpha``, ``seconds``,
        ``elapsed``; and after each final step, a dict with ``stage`` (a
        message) and ``elapsed``.
    backend : Backend or {"cpu", "gpu"}, optional

    Returns
    -------
    AbInitioResult
    """
    bk = resolve_backend(backend, particles)
    xp = bk.xp
    y, squeeze = as_particles(particles, xp)
    n, c, box = int(y.shape[0]), int(y.shape[1]), int(y.shape[2])
    max_epochs = check_int(max_epochs, "max_epochs", minimum=1)
    min_epochs = check_int(min_epochs, "min_epochs", minimum=0)
    coarse_epochs = check_int(coarse_epochs, "coarse_epochs", minimum=0)
    downsampling = check_float(downsampling, "downsampling", low=1.0)
    n_directions = check_int(n_directions, "n_directions", minimum=1)
    n_psi = check_int(n_psi, "n_psi", minimum=1)
    symmetry = check_int(symmetry, "symmetry", minimum=1)
    md_default, mpsi_default = default_grid_size(symmetry)
    grid_directions = md_default if grid_directions is None else check_int(
        grid_directions, "grid_directions", minimum=1)
    grid_psi = mpsi_default if grid_psi is None else check_int(grid_psi, "grid_psi", minimum=1)
    alpha_r = check_float(alpha_r, "alpha_r", low=1.0, low_inclusive=False)
    beta_d = check_float(beta_d, "beta_d", low=0.0)
    beta_psi = check_float(beta_psi, "beta_psi", low=0.0)
    temperature = check_float(temperature, "temperature", low=0.0, low_inclusive=False)
    learning_rate = check_float(learning_rate, "learning_rate", low=0.0, high=1.0,
                                 low_inclusive=False)
    memory = check_float(memory, "memory", low=0.0, high=1.0)
    regularization = check_float(regularization, "regularization", low=0.0)
    tol = check_float(tol, "tol", low=0.0)
    patience = check_int(patience, "patience", minimum=1)
    max_shift = check_max_shift(max_shift, box)
    if final_reconstruction not in (None,) + FINAL_METHODS:
        raise ValueError(f"final_reconstruction must be one of {FINAL_METHODS} or None, got "
                         f"{final_reconstruction!r}")
    if resume is not None and not isinstance(resume, SGDState):
        raise ValueError(f"resume must be an SGDState (from a checkpoint), got "
                         f"{type(resume).__name__}")

    t_start = time.perf_counter()
    data = SpectralParticles.build(y, psf, support_threshold=support_threshold, backend=bk)
    # symmetric runs start without symmetry (phase 0) when align_axis: the same angular
    # spacing in-plane over the whole circle
    grids = {1: so3_grid(grid_directions, grid_psi, symmetry=symmetry)}
    two_stage = symmetry > 1 and align_axis
    if two_stage:
        grids[0] = so3_grid(grid_directions, grid_psi * symmetry, symmetry=1)
    full_band = data.band
    coarse_band = _coarse_band(full_band, downsampling)
    if coarse_epochs == 0:
        coarse_band = full_band
    scales = {full_band: _make_scale(data, full_band, max_shift)}
    if coarse_band != full_band:
        scales[coarse_band] = _make_scale(data, coarse_band, max_shift)
    # damping: `regularization` times the median curvature of one particle at the OTF peak,
    # times max(1, N n / _DAMPING_POSES) (n the symmetry order of the updates): the
    # preconditioner sums N n curvatures, and the step at frequencies weakly covered next to
    # strongly covered ones grows with it (measured: the C9 barrel, 50 particles, sigma 4/16
    # voxels, diverged with the damping of one particle; 20 particles did not)
    one = [float(np.median(to_numpy(data.inv_noise[:, k])))
           * float(to_numpy((data.otf[k].real**2 + data.otf[k].imag**2).max()))
           for k in range(c)]

    def damping_for(order: int) -> list:
        factor = max(1.0, n * order / _DAMPING_POSES)
        return [regularization * factor * v for v in one]

    grid = mats = group = None
    md = mpsi = 0

    def set_phase(p: int) -> None:
        nonlocal grid, mats, group, md, mpsi
        grid = grids[p]
        mats = grid.matrices()  # (M_d, M_psi, 3, 3)
        group = cyclic_group(grid.symmetry)
        md, mpsi = grid.n_directions, grid.n_psi

    phase = 0 if two_stage else 1
    if resume is not None:
        phase = int(resume.phase)
        if phase == 0 and not two_stage:
            raise ValueError("resume comes from a symmetric run in its first stage without "
                             "symmetry, but these options do not have that stage: resume with "
                             "the same symmetry and align_axis")
    set_phase(phase)
    if resume is None:
        rng = np.random.default_rng(seed)
        # uniform random values in [0, 1] (Eloy et al. 2023 sec. 4.3.1), scaled to the particles'
        # mean intensity so that the first comparisons are on the data's scale
        level = to_numpy(xp.abs(y).mean(axis=(0, 2, 3, 4))).astype(np.float64)
        init = rng.uniform(0.0, 1.0, size=(c, box, box, box)) * (2.0 * level)[:, None, None, None]
        init = init.astype(np.float32)
        init = _symmetrize(bk, xp.asarray(init), grid.symmetry)
        band0 = coarse_band
        vol = _FourierVolume.initial(bk, init, band0)
        alpha = 1.0
        qd = np.full((n, md), 1.0 / md)
        qpsi = np.full((n, mpsi), 1.0 / mpsi)
        pid = qd.copy()
        pipsi = qpsi.copy()
        rotations = np.broadcast_to(np.eye(3), (n, 3, 3)).copy()
        translations = np.zeros((n, 3))
        last_relative = np.full(n, np.nan)
        energies: list = []
        bands: list = []
        seconds: list = []
        checks: list = []
        epoch = 0
        switch_epoch = -1
    else:
        _check_resume(resume, n=n, c=c, md=md, mpsi=mpsi, bands=(coarse_band, full_band))
        rng = np.random.default_rng()
        rng.bit_generator.state = json.loads(resume.rng_state)
        vol = _FourierVolume(bk, box, xp.asarray(resume.volume).copy(),
                             xp.asarray(resume.curvature).copy())
        alpha = float(resume.alpha)
        qd, qpsi = resume.q_direction.copy(), resume.q_psi.copy()
        pid, pipsi = resume.pi_direction.copy(), resume.pi_psi.copy()
        rotations, translations = resume.rotations.copy(), resume.translations.copy()
        last_relative = resume.relative.copy()
        energies = resume.energies.tolist()
        bands = [int(b) for b in resume.bands]
        seconds = resume.seconds.tolist()
        checks = [int(k) for k in resume.checks]
        epoch = int(resume.epoch)
        switch_epoch = int(resume.switch_epoch)

    inv_t = 1.0 / temperature
    check = None
    if global_search:
        check_band = min(full_band, _GLOBAL_BAND)
        m_d, m_psi = _GLOBAL_GRID
        check = dict(
            band=check_band,
            scale=scales.get(check_band) or _make_scale(data, check_band, max_shift),
            mats=so3_grid(m_d, max(4, int(math.ceil(m_psi / symmetry))),
                          symmetry=symmetry).matrices().reshape(-1, 3, 3))

    def save_state():
        if checkpoint is not None:
            checkpoint(SGDState(
                epoch=epoch, band=vol.band, volume=to_numpy(vol.real).copy(),
                curvature=to_numpy(vol.curvature).copy(), alpha=alpha, q_direction=qd.copy(),
                q_psi=qpsi.copy(), pi_direction=pid.copy(), pi_psi=pipsi.copy(),
                rotations=rotations.copy(), translations=translations.copy(),
                relative=last_relative.copy(), energies=np.asarray(energies),
                bands=np.asarray(bands, dtype=np.int64), seconds=np.asarray(seconds),
                checks=np.asarray(checks, dtype=np.int64),
                rng_state=json.dumps(rng.bit_generator.state), phase=phase,
                switch_epoch=switch_epoch))

    def recentre(moved):
        """Sampling distributions of the moved particles re-centred on their new pose."""
        jd, ip = grid.nearest(rotations[moved])
        for l, j, i in zip(moved, np.atleast_1d(jd), np.atleast_1d(ip)):
            pi_d = _direction_kernel(grid.directions, np.array([j]), beta_d)[:, 0]
            pi_psi = _psi_kernel(grid.psi, np.array([i]), beta_psi, grid.symmetry)[:, 0]
            pid[l], pipsi[l] = pi_d / pi_d.sum(), pi_psi / pi_psi.sum()
            qd[l] = alpha / md + (1.0 - alpha) * pid[l]
            qpsi[l] = alpha / mpsi + (1.0 - alpha) * pipsi[l]

    def run_polarity() -> int:
        """Polarity consensus (Cn) on the current iterate; returns the number turned."""
        theta, centre, _ = _polarity_axis(vol, symmetry)
        new_r, new_t, flipped, gain = _polarity_consensus(
            vol, scales[full_band], data, rotations, translations, group,
            _flip_rotation(theta), centre, rng=rng, max_shift=max_shift)
        rotations[:], translations[:] = new_r, new_t
        if flipped.size:
            recentre(flipped)
        _stage(progress, t_start, f"polarity consensus after epoch {epoch}: {flipped.size} "
               f"particle(s) turned upside down (energy -{gain:.3g})")
        return int(flipped.size)

    def switch_to_symmetry() -> None:
        """End of the stage without symmetry: the Cn axis of the iterate turned onto z
        (poses follow), the iterate symmetrised, the Cn grid, then the polarity consensus."""
        nonlocal vol, phase, switch_epoch, qd, qpsi, pid, pipsi
        from spfluo.algorithms.symmetry import (
            align_symmetry_axis,
            realign_poses,
            symmetrize,
        )

        if vol.band != full_band:
            vol = vol.resized(full_band)
        aligned = align_symmetry_axis(vol.to_volume(box, apodization=False), symmetry,
                                      backend=bk)
        new = realign_poses(Poses(rotations, translations), aligned.rotation, aligned.shift)
        rotations[:], translations[:] = new.rotations, new.translations
        phase = 1
        set_phase(phase)
        volume = xp.asarray(symmetrize(aligned.volume, symmetry, backend=bk))
        vol = _FourierVolume.initial(bk, volume.reshape(c, box, box, box), full_band)
        # the preconditioner of the Cn updates (steady state of the running sum)
        steady = 1.0 / (1.0 - memory) if memory < 1.0 else float(max(epoch, 1))
        vol.curvature = _curvature_sum(vol, scales[full_band], data, rotations, group) * \
            np.float32(min(steady, max(epoch, 1)))
        qd, qpsi = np.empty((n, md)), np.empty((n, mpsi))
        pid, pipsi = np.empty((n, md)), np.empty((n, mpsi))
        recentre(np.arange(n))
        switch_epoch = epoch
        _stage(progress, t_start, f"symmetry C{symmetry} imposed after epoch {epoch}: axis "
               f"aligned with z (score {aligned.axis.score:.3f})")
        if polarity:
            run_polarity()
        save_state()

    def run_check():
        """Polarity consensus (Cn, first check, one-stage runs), else global search, at
        the current epoch; moved particles get their distributions re-centred on the new
        pose.  Returns the number moved."""
        nonlocal vol
        if vol.band != full_band:
            vol = vol.resized(full_band)
        if polarity and symmetry > 1 and not checks and switch_epoch < 0:
            turned = run_polarity()
            if turned:
                checks.append(epoch)
                save_state()
                return turned
        new, moved = _global_check(vol.resized(check["band"]), check["scale"], vol,
                                   scales[full_band], data, Poses(rotations, translations),
                                   check["mats"], vol.centre_of_mass(), max_shift=max_shift,
                                   group=group, keep_polarity=polarity and symmetry > 1)
        if moved.size:
            rotations[moved] = new.rotations[moved]
            translations[moved] = new.translations[moved]
            recentre(moved)
        checks.append(epoch)
        save_state()
        _stage(progress, t_start, f"global search after epoch {epoch}: {moved.size} "
               "particle(s) moved to a better distant pose")
        return int(moved.size)

    def finished() -> bool:
        since = max(checks[-1] if checks else 0, switch_epoch)
        recent = [(e, b) for k, (e, b) in enumerate(zip(energies, bands)) if k >= since]
        return len(energies) >= max(min_epochs, 1) and _plateau(
            [e for e, b in recent if b == full_band], tol, patience)

    while True:
        if epoch >= max_epochs or finished():
            if phase == 0:
                switch_to_symmetry()
                if epoch >= max_epochs:
                    break
                continue
            if (check is None or (checks and checks[-1] == epoch)
                    or len(checks) >= _MAX_CHECKS):
                break
            if run_check() == 0 or epoch >= max_epochs:
                break
            continue
        t_epoch = time.perf_counter()
        band = _next_band(energies, bands, coarse_band, full_band, coarse_epochs, tol, patience)
        if vol.band != band:
            vol = vol.resized(band)
        sc = scales[band]
        for k in range(c):
            vol.curvature[k] *= np.float32(memory)
        order = rng.permutation(n)
        rel = np.empty(n)
        for l in order:
            jd = _draw(rng, qd[l], n_directions)
            ip = _draw(rng, qpsi[l], n_psi)
            cand = mats[jd][:, ip].reshape(-1, 3, 3)
            ev = _evaluate(vol, sc, data, int(l), cand, box=box, max_shift=max_shift)
            k = int(np.argmin(ev.nll))
            t_best = ev.shifts[k]
            rotations[l] = cand[k]
            translations[l] = t_best
            rel[l] = ev.relative[k]
            p = _likelihoods(ev.nll, inv_t).reshape(jd.size, ip.size)
            pi_d, pi_psi = smoothed_marginals(p, jd, ip, qd[l], qpsi[l], grid=grid,
                                              beta_d=beta_d, beta_psi=beta_psi)
            pid[l], pipsi[l] = pi_d, pi_psi
            qd[l] = alpha / md + (1.0 - alpha) * pi_d
            qpsi[l] = alpha / mpsi + (1.0 - alpha) * pi_psi
            _sgd_update(vol, sc, data, int(l), cand[k], t_best, box=box, group=group,
                        lr=learning_rate, damping=damping_for(grid.symmetry))
        alpha /= alpha_r
        epoch += 1
        energies.append(float(rel.mean()))
        last_relative = rel
        bands.append(band)
        seconds.append(time.perf_counter() - t_epoch)
        save_state()
        if progress is not None:
            progress({"epoch": epoch, "max_epochs": max_epochs, "energy": energies[-1],
                      "band": band, "alpha": alpha, "seconds": seconds[-1],
                      "elapsed": time.perf_counter() - t_start})
    converged = finished() or bool((checks or switch_epoch >= 0) and epoch < max_epochs)

    if vol.band != full_band:
        vol = vol.resized(full_band)
    iterate = vol.to_volume(box)
    poses = Poses(rotations, translations)
    particle_energies = last_relative
    if refine:
        poses, particle_energies = _refine_local(vol, scales[full_band], data, poses,
                                                 stages_deg=_LOCAL_STAGES_DEG,
                                                 max_shift=max_shift)
        _stage(progress, t_start, "poses refined locally at the full band")
    if final_reconstruction is not None:
        _stage(progress, t_start, f"final volume: known-pose reconstruction "
               f"({final_reconstruction})")
        volume = xp.asarray(_final_volume(y, poses, psf, symmetry=symmetry,
                                          method=final_reconstruction, backend=bk))
        volume = volume.reshape(iterate.shape)
    else:
        volume = xp.maximum(iterate, 0.0)
    volume = to_numpy(volume).astype(np.float32)
    iterate = to_numpy(iterate).astype(np.float32)
    if squeeze:
        volume, iterate = volume[0], iterate[0]
    return AbInitioResult(
        volume=volume, poses=poses, energies=np.asarray(energies, dtype=np.float64),
        epoch_bands=np.asarray(bands, dtype=np.int64),
        epoch_seconds=np.asarray(seconds, dtype=np.float64), psi_marginals=pipsi,
        direction_marginals=pid, grid=grid, particle_energies=np.asarray(particle_energies),
        converged=bool(converged), iterate=iterate)


def _next_band(energies, bands, coarse_band, full_band, coarse_epochs, tol, patience) -> int:
    """Band of the next epoch: coarse until ``coarse_epochs`` or a coarse plateau."""
    if coarse_band == full_band or any(b == full_band for b in bands):
        return full_band
    if len(bands) >= coarse_epochs or _plateau(energies, tol, patience):
        return full_band
    return coarse_band


def _stage(progress, t_start: float, message: str) -> None:
    if progress is not None:
        progress({"stage": message, "elapsed": time.perf_counter() - t_start})


def _check_resume(state: SGDState, *, n, c, md, mpsi, bands) -> None:
    problems = []
    if state.q_direction.shape != (n, md) or state.q_psi.shape != (n, mpsi):
        problems.append(f"distributions of shapes {state.q_direction.shape}, "
                        f"{state.q_psi.shape} instead of ({n}, {md}), ({n}, {mpsi})")
    if state.band not in bands:
        problems.append(f"band {state.band} instead of one of {bands}")
    b, g = state.band, 2 * state.band + 3
    if state.volume.shape != (c, b, b, b) or state.curvature.shape != (c, g, g, g):
        problems.append(f"volume of shape {state.volume.shape}")
    if problems:
        raise ValueError("resume does not match these particles and options ("
                         + "; ".join(problems) + "): start a new run")
