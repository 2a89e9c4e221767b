"""Ab initio reconstruction by simulated annealing on a reduced problem (Fortun et al. 2018 sec. III).

The reference-free step of Fortun et al. 2018, in four stages:

1. **Reduce the problem.**  The particles are downsampled (Fourier cropping) to
   ``working_size`` voxels (about 30^3 in Fortun et al. 2018), grouped by k-means into
   ``n_classes`` classes (5 to 10) on their normalised voxel values, and the
   particle closest to each centroid represents its class.
2. **Closed-form volume for given poses** (eq. 6): with the quadratic
   regulariser the volume is ``x^ = sum_i F{H_i^T y_i} / (sum_i |F{H_i}|^2 +
   lambda |F{D}|^2)``, the Tikhonov solution of
   :func:`spfluo.algorithms.reconstruct.reconstruct_tikhonov` on the sums of
   :func:`spfluo.algorithms.reconstruct.precompute_sums`.  Each representative's
   contribution to the sums is kept apart, so that a move of one pose changes
   only that particle's terms (Fortun et al. 2018 sec. III-B): the sums are means, and
   replacing a contribution is one subtraction and one addition.  The energy of
   the poses is the minimum of the quadratic problem,
   ``E = min_x 1/2 <x, (K + lambda G) x> - <x, b> = -1/2 <b, x^>`` (the constant
   ``sum ||y||^2`` dropped), in squared intensity units per particle.
3. **Metropolis-Hastings with annealing** (Algorithm 1) inside **incremental
   block coordinates** (Algorithm 2): the first representative is fixed at the
   identity (the frame is arbitrary); in the first loop the others are
   introduced one by one, each optimised with only the already introduced ones
   in the sums; ``n_loops - 1`` further loops revisit every pose with all of
   them.  A visit is one annealing chain on that pose: Gaussian proposals
   (rotation vector of standard deviation ``sigma_rotation`` applied in the
   reference frame, translation of standard deviation ``sigma_translation``
   voxels of the working grid), acceptance ``exp(-dE / T_t)`` for uphill moves,
   ``T_t = gamma^t T_0`` until ``T_t <= final_temperature T_0``.
4. **Extension to all particles**: the annealing volume, centred on its centre
   of mass, turned so that a Cn axis is along z (the annealing frame is that of
   the first representative) and upsampled to the particle box, is the reference
   of an exhaustive pose search of every particle
   (:func:`spfluo.algorithms.abinitio.pose_search`, exact marginal
   likelihoods).  For Cn (``polarity``, on by default) the poses then go
   through the polarity consensus of the SGD method
   (:func:`spfluo.algorithms.abinitio.polarity.polarity_consensus`, module
   notes there): every particle gets its pose and the pose for the volume turned
   upside down, and one hypothesis per particle is chosen so that all agree.
   The result volume is the known-pose reconstruction
   (:func:`spfluo.algorithms.reconstruct.reconstruct`) from those poses.

Design decisions (the paper leaves them open)
    - ``T_0`` is set per chain from the proposals themselves: the mean energy
      increase of ``n_probe`` random proposals from the chain's start, divided by
      ``ln 2`` (an average uphill move is first accepted with probability 1/2).
      With ``gamma = 0.95`` and a final ratio of ``1e-4`` a chain has 180 steps.
    - A chain returns the best pose it visited (the chain itself ends there at
      low temperature, but a last uphill acceptance cannot lose the optimum).
    - Rotations move by ``R exp([w])`` with ``w ~ N(0, sigma_r^2 I)`` (radians),
      translations are kept within ``max_shift``.  The proposal deviations
      shrink with the temperature, ``sigma (T_t / T_0)^(1/4)`` (down to a tenth
      at the final temperature): with constant 50-degree proposals the last
      steps of a chain almost never improve a pose (measured: the energy of the
      annealed representatives stayed above that of their true poses).
    - The annealing energy does not impose a Cn symmetry: folding it into the
      sums costs ``2 n`` volume rotations per proposal (measured: 64 ms instead
      of 9 ms per proposal at 30^3 for C9), and the alignment of a few
      representatives is well defined without it (modulo Cn).  The symmetry
      restricts the pose search that extends the poses to all particles and is
      imposed in the final reconstruction (Fortun et al. 2018 imposes it in the
      high-accuracy step, sec. IV-A).
    - The two ends of a Cn barrel look alike under the blur, and the pose
      search decides each particle's polarity alone, against a volume from a
      few representatives at the working size: on the C9 barrel (50^3, 20
      particles, sigma 1.5/5 voxels) 9 of 20 particles ended upside down and
      the final volume mixed the object with its turned copy (SSIM 0.92 of the
      known-pose one).  The polarity consensus decides collectively (the
      energy of the Tikhonov volume that explains all chosen poses, lowest when
      they agree), with the iterate at the full band as the volume (its turn
      axis, and the in-plane refinement of both hypotheses); measured on that
      case: 0 of 20 upside down, SSIM 0.99 of the known-pose one, 14 s more.
      When the blur erases the blades (24^3, sigma 1/2.5 voxels) the choice is
      no better than chance (measured: 3 then 4 of 10 upside down).  It runs once,
      after the pose search; the random restarts of its descent draw from the
      function's generator after the annealing, so runs without symmetry are
      unchanged.  The marginals and per-particle energies of the result stay
      those of the pose search (for a turned particle, those of its pose before
      the turn).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np

from spfluo.algorithms._validation import (
    as_particles,
    as_psf,
    check_int,
)
from spfluo.algorithms.abinitio.inplane import align_in_plane, last_move
from spfluo.algorithms.abinitio.options import AnnealingOptions
from spfluo.algorithms.abinitio.polarity import (
    flip_rotation,
    polarity_axis,
    polarity_consensus,
)
from spfluo.algorithms.abinitio.results import AbInitioResult
from spfluo.algorithms.abinitio.search import pose_search
from spfluo.algorithms.abinitio.sgd import symmetrize_channels
from spfluo.algorithms.backend import resolve_backend, to_numpy
from spfluo.algorithms.fourier import _fit_to, resize_fourier, shift_volume
from spfluo.algorithms.geometry import (
    Poses,
    cyclic_group,
    matrix_from_rotvec,
    rotation_about_z,
    so3_grid,
)
from spfluo.algorithms.reconstruct import (
    ReconstructionSums,
    precompute_sums,
    reconstruct,
    reconstruct_tikhonov,
)
from spfluo.algorithms.scoring.energies import Scorer
from spfluo.algorithms.scoring.model import FourierVolume
from spfluo.algorithms.scoring.spectra import particle_spectra
from spfluo.algorithms.transform import rotate


def select_representatives(particles, n_classes: int, *, seed=0) -> np.ndarray:
    """k-means classes of particles and the particle closest to each centroid.

    Parameters
    ----------
    particles : ndarray, shape (N, D, D, D) or (N, C, D, D, D)
        Particles (downsampled ones in Fortun et al. 2018).
    n_classes : int
        Number of classes ``L`` (1 <= L <= N).
    seed : int or numpy.random.Generator, optional
        Seeds the k-means initialisation.

    Returns
    -------
    ndarray of int, shape (L,)
        Index of the representative of each class, sorted, distinct.

    Notes
    -----
    Features: each particle's voxels (all channels), mean removed and scaled to
    unit norm, so that the classes follow the shapes (i.e. the orientations of
    one object), not the intensities.  :class:`sklearn.cluster.KMeans` with 10
    initialisations.
    """
    from sklearn.cluster import KMeans

    arr = np.asarray(to_numpy(particles), dtype=np.float64)
    if arr.ndim not in (4, 5) or arr.shape[0] < 1:
        raise ValueError(f"particles must have shape (N, D, D, D) or (N, C, D, D, D), got "
                         f"{arr.shape}")
    n = arr.shape[0]
    n_classes = check_int(n_classes, "n_classes", minimum=1)
    if n_classes > n:
        raise ValueError(f"n_classes must be at most the number of particles ({n}), got "
                         f"{n_classes}: ask for fewer classes")
    feats = arr.reshape(n, -1)
    feats = feats - feats.mean(axis=1, keepdims=True)
    feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    km = KMeans(n_clusters=n_classes, n_init=10, random_state=int(rng.integers(2**31 - 1)))
    labels = km.fit_predict(feats)
    reps = []
    for k in range(n_classes):
        members = np.nonzero(labels == k)[0]
        if members.size == 0:  # pragma: no cover - KMeans never leaves a cluster empty
            continue
        dist = np.linalg.norm(feats[members] - km.cluster_centers_[k], axis=1)
        reps.append(int(members[np.argmin(dist)]))
    return np.array(sorted(set(reps)), dtype=np.int64)


class _IncrementalSums:
    """Per-particle contributions to the known-pose sums, and their mean over a subset."""

    def __init__(self, particles, psf, poses: Poses, *, symmetry: int, weight: float, backend):
        self.particles = particles
        self.psf = psf
        self.symmetry = symmetry
        self.weight = weight
        self.backend = backend
        self.contrib = [self._one(i, poses[i]) for i in range(particles.shape[0])]

    def _one(self, i: int, pose: Poses) -> ReconstructionSums:
        return precompute_sums(self.particles[i:i + 1], pose, self.psf, symmetry=self.symmetry,
                               backend=self.backend)

    def candidate(self, i: int, rotation, translation) -> ReconstructionSums:
        return self._one(i, Poses(np.asarray(rotation)[None], np.asarray(translation)[None]))

    def energy(self, members, replace: dict | None = None) -> tuple[float, Any]:
        """``-1/2 <b, x^>`` for the mean sums over ``members`` (with replaced terms)."""
        replace = replace or {}
        parts = [replace.get(i, self.contrib[i]) for i in members]
        k = len(parts)
        b = sum(p.backprojection for p in parts) / np.float32(k)
        kern = sum(p.kernel for p in parts) / np.float32(k)
        # solved on the whole computation grid (no crop), so that -1/2 <b, x^> is the minimum
        sums = ReconstructionSums(b.astype(np.float32), kern.astype(np.float32), k,
                                  parts[0].grid_shape, self.symmetry)
        x = reconstruct_tikhonov(sums, weight=self.weight)
        xp = resolve_backend(None, x).xp
        value = -0.5 * float(to_numpy(xp.sum(b.astype(xp.float64) * x.astype(xp.float64))))
        return value, _fit_to(xp, x, (x.shape[0],) + tuple(parts[0].shape))


def _anneal_pose(sums: _IncrementalSums, i: int, members, rotation, translation, *,
                 rng: np.random.Generator, sigma_r: float, sigma_t: float, max_shift: float,
                 gamma: float, final_ratio: float, n_probe: int):
    """One annealing chain on the pose of particle ``i`` (Algorithm 1); best pose and energy."""
    cur_r = np.asarray(rotation, dtype=np.float64)
    cur_t = np.asarray(translation, dtype=np.float64)
    cur_e, _ = sums.energy(members)

    def propose(r, t, shrink=1.0):
        w = rng.normal(0.0, sigma_r * shrink, size=3)
        r_new = r @ matrix_from_rotvec(w)
        t_new = t + rng.normal(0.0, sigma_t * shrink, size=3)
        norm = np.linalg.norm(t_new)
        if norm > max_shift:
            t_new *= max_shift / norm
        return r_new, t_new

    def evaluate(r, t):
        contrib = sums.candidate(i, r, t)
        e, _ = sums.energy(members, {i: contrib})
        return e, contrib

    best = (cur_e, cur_r, cur_t, sums.contrib[i])
    cur_c = sums.contrib[i]
    rises = []
    for _ in range(n_probe):
        r, t = propose(cur_r, cur_t)
        e, c = evaluate(r, t)
        if e < best[0]:
            best = (e, r, t, c)
        rises.append(max(e - cur_e, 0.0))
    rises = np.asarray(rises)
    positive = rises[rises > 0]
    scale = float(positive.mean()) if positive.size else abs(cur_e) * 1e-3 + 1e-30
    t0 = scale / math.log(2.0)
    if best[0] < cur_e:  # a probe already improved: start the chain there
        cur_e, cur_r, cur_t, cur_c = best
    n_steps = int(math.ceil(math.log(final_ratio) / math.log(gamma)))
    for step in range(n_steps):
        temperature = t0 * gamma**step
        # proposals shrink with the temperature, (T / T0)^(1/4): from sigma to sigma/10
        r, t = propose(cur_r, cur_t, (gamma**step) ** 0.25)
        e, c = evaluate(r, t)
        d = e - cur_e
        if d <= 0 or rng.uniform() <= math.exp(-d / temperature):
            cur_e, cur_r, cur_t, cur_c = e, r, t, c
            if e < best[0]:
                best = (e, r, t, c)
    return best


def _centre_and_align(volume, symmetry: int, *, backend, n_directions: int = 400):
    """Centre a volume on its centre of mass and, for Cn, turn its symmetry axis onto z.

    The annealing frame is that of the first representative: the object's
    centre and symmetry axis are anywhere.  The pose search of every particle
    and the final reconstruction assume a Cn axis along z through the box
    centre, so the volume is shifted (Fourier phase) to put its centre of mass
    at the centre, then turned by the rotation ``R_j^T`` of the grid direction
    ``d_j`` (``so3_grid``, upper hemisphere) that maximises the correlation
    between the turned volume and its rotation by ``2 pi / n`` about z, and
    finally averaged over Cn.  (The particles' poses are re-estimated from this
    volume, so the representatives' poses need no change.)
    """
    xp = backend.xp
    v = xp.asarray(volume, dtype=xp.float32)  # (C, L, L, L)
    total = v.sum(axis=0)
    mass = float(to_numpy(total.sum()))
    if mass > 0:
        idx = [xp.arange(s, dtype=xp.float64) - s // 2 for s in total.shape]
        com = [float(to_numpy((total.sum(axis=tuple(a for a in range(3) if a != k))
                               * idx[k]).sum())) / mass for k in range(3)]
        v = shift_volume(v, -np.asarray(com), backend=backend)
        v = xp.maximum(v, 0.0)
    if symmetry == 1:
        return v
    grid = so3_grid(2 * n_directions, 1)
    up = grid.directions[:, 2] >= 0
    tilts = grid.matrices()[up, 0]  # carry z onto d_j
    turn = np.swapaxes(tilts, -1, -2)  # carry d_j onto z
    step = rotation_about_z(np.array(2.0 * np.pi / symmetry))
    ref = v.sum(axis=0)
    a = rotate(ref, turn, order=1, backend=backend).reshape(turn.shape[0], -1)
    b = rotate(ref, np.matmul(step[None], turn), order=1, backend=backend).reshape(
        turn.shape[0], -1)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    score = (a * b).sum(axis=1) / xp.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1) + 1e-30)
    best = turn[int(to_numpy(xp.argmax(score)))]
    aligned = xp.stack([rotate(v[k], best, order=3, backend=backend) for k in range(v.shape[0])])
    # mean over Cn by exact rotations about z (no interpolation blur)
    return xp.maximum(symmetrize_channels(backend, aligned, symmetry), 0.0).astype(xp.float32)


def _symmetric_poses(iterate, particles, psf, poses: Poses, symmetry: int, *,
                     max_shift: float, rng: np.random.Generator, polarity: bool,
                     in_plane: bool, backend):
    """Polarity consensus and rotation about the axis (Cn) of the pose-search poses.

    ``iterate`` (C, D, D, D) becomes a
    :class:`~spfluo.algorithms.scoring.model.FourierVolume` at the full band of the
    particles' spectra.  With ``polarity`` the turn ``F`` under which it looks most like
    itself (:func:`~spfluo.algorithms.abinitio.polarity.polarity_axis`) is found and
    :func:`~spfluo.algorithms.abinitio.polarity.polarity_consensus` chooses, for every
    particle, its (refined) pose or the one for the turned volume; with ``in_plane`` the
    rotations about the axis are settled on a reference that keeps the n-fold structure
    (:func:`~spfluo.algorithms.abinitio.inplane.align_in_plane`).  Returns ``(poses,
    messages)``.
    """
    xp = backend.xp
    data = particle_spectra(particles, psf, backend=backend)
    band = data.band
    vol = FourierVolume.initial(backend, xp.asarray(iterate, dtype=xp.float32), band)
    scorer = Scorer.for_band(data, band, max_shift, surface="peak")
    rotations, translations = np.asarray(poses.rotations), np.asarray(poses.translations)
    messages = []
    if polarity:
        theta, centre, _ = polarity_axis(vol, symmetry)
        rotations, translations, turned, gain = polarity_consensus(
            vol, scorer, rotations, translations, cyclic_group(symmetry),
            flip_rotation(theta), centre, rng=rng)
        messages.append(f"polarity consensus after the pose search: {turned.size} "
                        f"particle(s) turned upside down (energy -{gain:.3g})")
    if in_plane:
        found = align_in_plane(vol, scorer, rotations, translations, symmetry)
        rotations, translations = found.rotations, found.translations
        messages.append(f"in-plane angles settled ({found.passes} pass(es))"
                        f"{last_move(found)}")
    return Poses(rotations, translations), messages


def annealing_reconstruction(
    particles,
    psf,
    *,
    seed=0,
    progress: Callable[[dict], None] | None = None,
    backend: Any = None,
    **options,
) -> AbInitioResult:
    """Ab initio reconstruction by simulated annealing on class representatives (Fortun et al. 2018).

    Parameters
    ----------
    particles : ndarray, shape (N, D, D, D) or (N, C, D, D, D)
        Particles (cubic boxes, isotropic voxels).
    psf : ndarray, shape (d, d, d) or (C, d, d, d)
        Centred PSF(s), normalised to unit sum here.
    n_classes : int, optional
        ``L``, k-means classes, one representative each (5-10 in Fortun et al. 2018; at
        most N).
    working_size : int, optional
        Box side of the reduced problem, voxels (30 in Fortun et al. 2018; the particles
        are not upsampled when smaller).
    n_loops : int, optional
        ``N_bc``, block-coordinate loops (3 in Fortun et al. 2018).
    gamma : float, optional
        Cooling factor ``T_t = gamma^t T_0`` (0.95).
    final_temperature : float, optional
        A chain stops when ``T_t <= final_temperature * T_0`` (1e-4).
    sigma_rotation : float, optional
        Standard deviation of the rotation proposals, radians (50 degrees).
    sigma_translation : float, optional
        Standard deviation of the translation proposals, voxels of the particle
        box (5; scaled to the working grid).
    weight : float, optional
        ``lambda`` of the quadratic regulariser, per mean particle (as in
        :func:`~spfluo.algorithms.reconstruct.reconstruct_tikhonov`).
    n_probe : int, optional
        Proposals used to set each chain's ``T_0`` (module notes).
    max_shift : float, optional
        Largest translation norm, voxels of the particle box (default ``D / 4``).
    symmetry : int, optional
        Cn symmetry order (1 = none): used by the pose search (one asymmetric
        unit of in-plane angles) and the final reconstruction; the annealing
        energy does not impose it (module notes).
    grid_directions, grid_psi : int, optional
        Grid of the final pose search (:func:`~spfluo.algorithms.geometry.so3_grid`;
        ``grid_psi`` angles over one asymmetric unit, divided by the symmetry
        order, at least 4).
    final_reconstruction : str or None, optional
        Method of :func:`spfluo.algorithms.reconstruct.reconstruct` for the
        result volume (default "hessian"); None returns the annealing volume
        upsampled to the box.
    polarity : bool, optional
        For Cn (``symmetry > 1``), the polarity consensus after the pose search
        (module notes): the particles the search left upside down are turned
        so that all agree on one end of the object (default True; ignored
        without symmetry).
    seed : int or numpy.random.Generator, optional
        Seeds the k-means, the annealing chains and the consensus restarts.
    progress : callable, optional
        ``progress(info)`` after each chain: ``epoch`` (chain index),
        ``max_epochs``, ``energy``, ``particle``, ``seconds``, ``elapsed``;
        and once after the polarity consensus: ``stage`` (a message: the
        number of particles turned) and ``elapsed``.
    backend : Backend or {"cpu", "gpu"}, optional

    Returns
    -------
    AbInitioResult
        ``energies`` holds the energy ``-1/2 <b, x^>`` after each chain,
        ``epoch_bands`` the working size, ``iterate`` the annealing volume at the
        particle box; the marginals are those of the final pose search.
    """
    bk = resolve_backend(backend, particles)
    xp = bk.xp
    y, squeeze = as_particles(particles, xp)
    n, c, box = int(y.shape[0]), int(y.shape[1]), int(y.shape[2])
    opt = AnnealingOptions(**options).validated(n, box)
    h = as_psf(psf, c, box, xp)
    n_classes, working_size, n_loops, gamma = (opt.n_classes, opt.working_size, opt.n_loops,
                                               opt.gamma)
    final_temperature, sigma_rotation = opt.final_temperature, opt.sigma_rotation
    sigma_translation, weight, n_probe = opt.sigma_translation, opt.weight, opt.n_probe
    symmetry, max_shift = opt.symmetry, opt.max_shift
    grid_directions, grid_psi = opt.grid_directions, opt.grid_psi
    final_reconstruction, polarity = opt.final_reconstruction, opt.polarity
    rng = np.random.default_rng(seed)
    t_start = time.perf_counter()

    # 1. reduced problem
    ws = min(working_size, box)
    scale = ws / box
    small = resize_fourier(y, (ws,) * 3, backend=bk) if ws != box else y
    psf_full = _fit_to(xp, h, (c, box, box, box))
    psf_small = resize_fourier(psf_full, (ws,) * 3, backend=bk) if ws != box else psf_full
    psf_small = xp.maximum(psf_small, 0.0)
    psf_small = psf_small / psf_small.reshape(c, -1).sum(axis=1)[:, None, None, None]
    reps = select_representatives(to_numpy(small), n_classes, seed=rng)
    sub = small[xp.asarray(reps)]
    n_rep = int(sub.shape[0])
    poses0 = Poses(np.broadcast_to(np.eye(3), (n_rep, 3, 3)), np.zeros((n_rep, 3)))
    sums = _IncrementalSums(sub, psf_small, poses0, symmetry=1, weight=weight, backend=bk)
    rotations = poses0.rotations.copy()
    translations = poses0.translations.copy()

    # 2-3. incremental block-coordinate annealing (Algorithms 1 and 2)
    visits = [(m, l) for m in range(n_loops) for l in range(1, n_rep)]
    energies, seconds = [], []
    for index, (m, l) in enumerate(visits):
        t_visit = time.perf_counter()
        members = list(range(l + 1)) if m == 0 else list(range(n_rep))
        e, r, t, contrib = _anneal_pose(
            sums, l, members, rotations[l], translations[l], rng=rng, sigma_r=sigma_rotation,
            sigma_t=sigma_translation * scale, max_shift=max_shift * scale, gamma=gamma,
            final_ratio=final_temperature, n_probe=n_probe)
        rotations[l], translations[l] = r, t
        sums.contrib[l] = contrib
        energies.append(e)
        seconds.append(time.perf_counter() - t_visit)
        if progress is not None:
            progress({"epoch": index + 1, "max_epochs": len(visits), "energy": e,
                      "particle": int(reps[l]), "seconds": seconds[-1],
                      "elapsed": time.perf_counter() - t_start})
    _, x_small = sums.energy(list(range(n_rep)))
    x_small = xp.maximum(xp.asarray(x_small, dtype=xp.float32), 0.0)
    x_small = _centre_and_align(x_small, symmetry, backend=bk)
    iterate = resize_fourier(x_small, (box,) * 3, backend=bk) if ws != box else x_small
    iterate = xp.maximum(iterate, 0.0).astype(xp.float32)

    # 4. every particle against the annealing volume
    m_psi = max(4, int(math.ceil(grid_psi / symmetry)))
    grid = so3_grid(grid_directions, m_psi, symmetry=symmetry)
    search = pose_search(iterate, y, h, grid=grid, max_shift=max_shift, backend=bk)
    poses = search.poses
    if symmetry > 1 and (polarity or opt.in_plane):
        poses, messages = _symmetric_poses(iterate, y, h, poses, symmetry, max_shift=max_shift,
                                           rng=rng, polarity=polarity, in_plane=opt.in_plane,
                                           backend=bk)
        for message in messages:
            if progress is not None:
                progress({"stage": message, "elapsed": time.perf_counter() - t_start})
    if final_reconstruction is not None:
        volume = reconstruct(y, poses, h, method=final_reconstruction, symmetry=symmetry,
                             backend=bk).volume
    else:
        volume = iterate
    volume = to_numpy(volume).astype(np.float32).reshape(c, box, box, box)
    iterate = to_numpy(iterate).astype(np.float32)
    if squeeze:
        volume, iterate = volume[0], iterate[0]
    return AbInitioResult(
        volume=volume, poses=poses, energies=np.asarray(energies, dtype=np.float64),
        epoch_bands=np.full(len(energies), ws, dtype=np.int64),
        epoch_seconds=np.asarray(seconds, dtype=np.float64),
        psi_marginals=search.psi_marginals, direction_marginals=search.direction_marginals,
        grid=grid, particle_energies=np.asarray(search.energies, dtype=np.float64),
        converged=True, iterate=iterate)
