"""Rigid registration of a volume onto a reference (rotation + translation), symmetry aware.

Convention
    :func:`register_volumes` returns ``(R, t)`` such that

        aligned = T_t(R volume) ~ reference,    aligned(x) = volume(R^T (x - c - t) + c),

    the pose convention of the project (``docs/conventions.md``): ``aligned`` is what
    :func:`spfluo.algorithms.transform.rotate` gives for ``(volume, R, translations=t)``.

Relation with particle poses and :func:`spfluo.algorithms.geometry.align_rotations`
    Let a reconstruction ``f_est`` come with estimated particle poses ``(R_l, s_l)``
    (particle ``l`` is ``T_{s_l}(R_l f_est)``), and let ``(R, t)`` register ``f_est`` onto
    the ground truth ``f``: ``f ~ T_t(R f_est)``.  Then ``f_est ~ R^T T_{-t} f``, and
    particle ``l`` is ``T_{s_l - R_l R^T t}((R_l R^T) f)``: its pose in the frame of the
    ground truth is

        rotation  R_l R^T,    translation  s_l - R_l R^T t.

    In the words of :func:`~spfluo.algorithms.geometry.align_rotations` (``f_est = G f``
    and ``R_true = R_est G``), ``G = R^T``: ``Poses(R_est, s).compose_rotation(R.T)``
    are the estimated rotations in the true frame, and ``align_rotations(R_est,
    R_true)`` estimates the same ``R^T`` from the poses alone (the compare protocol can
    report both: volume metrics after this registration, pose errors after
    ``align_rotations``; the two estimates of ``G`` should agree within the pose
    errors).  With a Cn-symmetric reference, ``R`` is defined modulo ``R ~ C_k R``
    (and then ``t ~ C_k t``), consistent with ``G ~ G C_k`` in
    :func:`~spfluo.algorithms.geometry.align_rotations`.

Method (Eloy et al. 2023 sec. 4.2 registers with an exhaustive 10 degree search maximising the
mutual information, then a gradient refinement; here the criterion is the normalised
cross-correlation, maximised over translations by FFT for every candidate rotation)
    1. Background: the mean of the outer faces of each volume is subtracted (a constant
       offset would otherwise create edges when the reference is rotated).
    2. Coarse: both volumes are downsampled by Fourier cropping
       (:func:`~spfluo.algorithms.fourier.resize_fourier`) to at most ``coarse_size``
       voxels per axis.  Candidates ``Q`` (applied to the reference) on
       :func:`~spfluo.algorithms.geometry.uniform_rotation_grid` of spacing
       ``coarse_step_deg`` over SO(3)/Cn (the reference is ``Cn``-symmetric, so ``Q ~ Q
       C_k``: the grid covers one asymmetric unit).  For each ``Q``, in batches: one
       trilinear rotation of the reference (only inside the inscribed ball, the part
       that stays in the box for every rotation), one FFT, the cross-correlation with the
       moving volume for every integer shift (one inverse FFT), and the normalised
       cross-correlation (NCC) at its maximum.  The moving volume's spectrum is
       computed once.
    3. The ``n_candidates`` best distinct candidates are refined by a pattern search on
       SO(3): the six neighbours ``Q exp(+-step e_a)``
       (:func:`~spfluo.algorithms.geometry.local_rotation_grid` with ``max_angle =
       step``), moving to the best while it improves, then halving the step; at the
       coarse size while the step is >= 4 degrees (starting at half the global step).
       The best two (distinct) continue at full size down to
       ``final_step_deg``, with sub-voxel translations (upsampled DFT of the
       cross-correlation, :func:`~spfluo.algorithms.correlation.phase_correlation_ft`
       without normalisation).
    4. ``R = Q^T`` and ``t = -Q^T s`` (``s`` the shift with ``volume ~ T_s(Q
       reference)``), and ``aligned`` is the cubic-spline resampling of the volume
       (background removed, resampled, background added back: what comes from outside
       the box is at the background level).

Several channels ``(C, D, D, D)`` share one transform: their cross-correlations and
energies are summed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from spfluo.algorithms.backend import AXES3, resolve_backend, to_numpy
from spfluo.algorithms.correlation import phase_correlation_ft
from spfluo.algorithms.fourier import resize_fourier
from spfluo.algorithms.geometry import (
    geodesic_distance_sym,
    local_rotation_grid,
    uniform_rotation_grid,
)
from spfluo.algorithms.transform import rotate

__all__ = ["RegistrationResult", "register_volumes"]

# voxels (rotated reference + spectrum) handled per batch of candidate rotations
_BATCH_VOXELS = 1 << 22
# local refinement switches from the coarse to the full size below this step
_FINE_SWITCH_DEG = 4.0
# coarse-refined candidates carried on to the full size
_N_FULL = 2


@dataclass(frozen=True, eq=False)
class RegistrationResult:
    """Result of :func:`register_volumes`.

    Attributes
    ----------
    rotation : ndarray, shape (3, 3), float64
        ``R`` (zyx frame) with ``aligned = T_t(R volume) ~ reference``.
    translation : ndarray, shape (3,), float64
        ``t`` in voxels ``(z, y, x)``, applied after the rotation.
    score : float
        Normalised cross-correlation (Pearson, over all voxels and channels) between
        ``aligned`` and ``reference``; 1 for a perfect match.
    aligned : ndarray, float32, same shape as the moving volume
        The moving volume resampled into the reference's frame (cubic spline); voxels
        that come from outside the box get the volume's background level (the mean of
        its outer faces).
    """

    rotation: np.ndarray
    translation: np.ndarray
    score: float
    aligned: np.ndarray


# ----------------------------------------------------------------------------- validation


def _check_pair(xp, volume, reference):
    out = []
    for name, arr in (("volume", volume), ("reference", reference)):
        a = xp.asarray(arr)
        if a.ndim not in (3, 4):
            raise ValueError(
                f"{name} must have shape (D, D, D) or (C, D, D, D), got shape {tuple(a.shape)}"
            )
        if a.size == 0:
            raise ValueError(f"{name} is empty (shape {tuple(a.shape)})")
        if a.dtype.kind not in "biuf":
            raise ValueError(f"{name} must be real-valued, got dtype {a.dtype}")
        if not bool(xp.isfinite(a).all()):
            raise ValueError(f"{name} contains NaN or infinite values: clean it first")
        out.append(a)
    if tuple(out[0].shape) != tuple(out[1].shape):
        raise ValueError(
            f"volume and reference must have the same shape, got {tuple(out[0].shape)} and "
            f"{tuple(out[1].shape)}: crop or pad one of them"
        )
    if min(out[0].shape[-3:]) < 4:
        raise ValueError(f"volumes must be at least 4 voxels per axis, got {tuple(out[0].shape)}")
    return out


def _check_positive(name: str, value: Any, *, maximum: float = math.inf) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(value)
        or not 0 < value <= maximum
    ):
        raise ValueError(f"{name} must be a number in (0, {maximum}], got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------- scoring


class _Level:
    """Volumes at one resolution: the moving spectrum (precomputed) and the reference."""

    def __init__(self, bk, volume, reference, max_shift):
        xp = bk.xp
        self.bk = bk
        self.shape = tuple(int(s) for s in volume.shape[-3:])
        self.reference = reference  # (C, Z, Y, X) float32
        spec = bk.rfftn(volume, axes=AXES3)  # (C, Z, Y, Kx)
        spec[..., 0, 0, 0] = 0  # means removed
        self.volume_ft = spec
        centred = volume - volume.mean(axis=(-3, -2, -1), keepdims=True)
        self.volume_energy = float((centred.astype(xp.float64) ** 2).sum())
        self.max_shift = max_shift
        n = self.shape
        signed = [
            xp.where(xp.arange(k) >= (k + 1) // 2, xp.arange(k) - k, xp.arange(k)) for k in n
        ]
        self.signed = signed
        if max_shift is None:
            self.mask = None
        else:
            r2 = (
                signed[0][:, None, None] ** 2
                + signed[1][None, :, None] ** 2
                + signed[2][None, None, :] ** 2
            )
            self.mask = r2 <= max_shift**2
        # voxels of the inscribed ball: the only ones a rotated reference keeps in every pose
        axes = [xp.arange(k, dtype=xp.float32) - (k // 2) for k in n]
        zz, yy, xx = xp.meshgrid(*axes, indexing="ij")
        r2 = zz**2 + yy**2 + xx**2
        ball = (r2 <= (min(n) / 2.0) ** 2).ravel()
        self.ball_index = xp.flatnonzero(ball)
        self.ball_points = xp.stack([zz.ravel()[ball], yy.ravel()[ball], xx.ravel()[ball]])
        self.centre = xp.asarray([k // 2 for k in n], dtype=xp.float32)
        half = (n[0], n[1], n[2] // 2 + 1)
        self.ones_ft = xp.ones(half, dtype=xp.complex64)
        w = np.full(half[2], 2.0)
        w[0] = 1.0
        if n[2] % 2 == 0:
            w[-1] = 1.0
        self.weights = xp.asarray(w, dtype=xp.float32)

    def _batch(self) -> int:
        c = self.reference.shape[0]
        return max(1, _BATCH_VOXELS // (c * int(np.prod(self.shape))))

    def score(self, rotations: np.ndarray, *, subvoxel: bool):
        """NCC at the best shift for each candidate ``Q``: (scores (K,), shifts (K, 3)).

        ``shifts`` are ``s`` with ``volume ~ T_s(Q reference)``, voxels of this level.
        """
        bk = self.bk
        xp = bk.xp
        k = rotations.shape[0]
        scores = np.empty(k)
        shifts = np.empty((k, 3))
        step = self._batch()
        n_vox = float(np.prod(self.shape))
        for start in range(0, k, step):
            sl = slice(start, min(k, start + step))
            rot = self._rotate_reference(rotations[sl])  # (B, C, Z, Y, X)
            rot_ft = bk.rfftn(rot, axes=AXES3)
            rot_ft[..., 0, 0, 0] = 0
            centred = rot - rot.mean(axis=(-3, -2, -1), keepdims=True)
            energy = (centred.astype(xp.float64) ** 2).sum(axis=(1, 2, 3, 4))  # (B,)
            del rot, centred
            cross = (self.volume_ft[None] * xp.conj(rot_ft)).sum(axis=1)  # (B, Z, Y, Kx)
            del rot_ft
            if subvoxel:
                res = phase_correlation_ft(
                    self.ones_ft, cross, shape=self.shape, upsample_factor=10,
                    max_shift=self.max_shift, normalization=None, backend=bk,
                )
                s = res.shifts.astype(xp.float64)
                numer = self._correlation_at(cross, s) / n_vox
            else:
                surface = bk.irfftn(cross, s=self.shape, axes=AXES3)
                if self.mask is not None:
                    surface = xp.where(self.mask[None], surface, -xp.inf)
                flat = surface.reshape(surface.shape[0], -1)
                best = xp.argmax(flat, axis=1)
                numer = xp.take_along_axis(flat, best[:, None], axis=1)[:, 0].astype(xp.float64)
                idx = xp.unravel_index(best, self.shape)
                s = xp.stack([self.signed[a][idx[a]] for a in range(3)], axis=1)
            denom = xp.sqrt(xp.maximum(energy * self.volume_energy, 1e-300))
            scores[sl] = to_numpy(numer / denom)
            shifts[sl] = to_numpy(s)
        return scores, shifts

    def _rotate_reference(self, rotations: np.ndarray):
        """Trilinear ``Q reference`` inside the inscribed ball (zero outside), (B, C, Z, Y, X)."""
        bk = self.bk
        xp = bk.xp
        b = rotations.shape[0]
        c = self.reference.shape[0]
        rt = xp.asarray(np.swapaxes(rotations, 1, 2), dtype=xp.float32)
        src = xp.matmul(rt, self.ball_points) + self.centre[None, :, None]  # (B, 3, Vb)
        src = xp.moveaxis(src, 1, 0).reshape(3, -1)
        out = xp.zeros((b, c, int(np.prod(self.shape))), dtype=xp.float32)
        for ch in range(c):
            vals = bk.ndimage.map_coordinates(
                self.reference[ch], src, order=1, mode="constant", cval=0.0, output=xp.float32
            )
            out[:, ch, self.ball_index] = vals.reshape(b, -1)
        return out.reshape((b, c) + self.shape)

    def _correlation_at(self, cross, shifts):
        """``sum_x v(x) r(x - s)`` at real shifts ``s`` (trigonometric interpolation), times N."""
        xp = self.bk.xp
        factors = []
        for axis, n in enumerate(self.shape):
            k = np.fft.rfftfreq(n) if axis == 2 else np.fft.fftfreq(n)
            k = xp.asarray(k)
            e = xp.exp(2j * np.pi * shifts[:, axis, None] * k[None, :]).astype(xp.complex64)
            factors.append(e)
        ez, ey, ex = factors
        total = (cross * (ex * self.weights)[:, None, None, :]).sum(axis=-1)  # (B, Z, Y)
        total = (total * ey[:, None, :]).sum(axis=-1)  # (B, Z)
        total = (total * ez).sum(axis=-1)  # (B,)
        return total.real.astype(xp.float64)


def _distinct_best(rotations, scores, n, min_angle, symmetry):
    """Indices of up to ``n`` best-scoring rotations, pairwise more than ``min_angle`` apart."""
    order = np.argsort(-scores, kind="stable")
    chosen: list[int] = []
    for i in order:
        if len(chosen) == n:
            break
        if chosen:
            d = geodesic_distance_sym(rotations[i][None], rotations[chosen], symmetry=symmetry)
            if np.min(d) <= min_angle:
                continue
        chosen.append(int(i))
    return chosen


def _background_removed(xp, vol):
    """Subtract, per channel, the mean of the six outer faces of the box."""
    faces = [
        vol[:, 0], vol[:, -1], vol[:, :, 0], vol[:, :, -1], vol[:, :, :, 0], vol[:, :, :, -1]
    ]
    total = sum(f.astype(xp.float64).sum(axis=(1, 2)) for f in faces)
    count = sum(f[0].size for f in faces)
    return (vol - (total / count).astype(vol.dtype)[:, None, None, None]).astype(xp.float32)


def _refine(level, q, step_deg, stop_deg, *, subvoxel, max_moves=6):
    """Pattern search on SO(3) around ``q``: the 6 neighbours ``q exp(+-step e_a)``.

    At each step size the centre moves to its best neighbour while one scores higher
    (at most ``max_moves`` times), then the step is halved, while ``step >= stop_deg``.
    Returns ``((score, q, shift), step)`` with ``step`` the first size not searched.
    """
    score, shift = level.score(q[None], subvoxel=subvoxel)
    best = (float(score[0]), q, shift[0])
    step = step_deg
    while step >= stop_deg:
        neighbours = local_rotation_grid(math.radians(step), math.radians(step))[1:]
        for _ in range(max_moves):
            cands = np.matmul(best[1][None], neighbours)
            scores, shifts = level.score(cands, subvoxel=subvoxel)
            i = int(np.argmax(scores))
            if scores[i] <= best[0]:
                break
            best = (float(scores[i]), cands[i], shifts[i])
        step /= 2.0
    return best, step


# ----------------------------------------------------------------------------- public


def register_volumes(
    volume: Any,
    reference: Any,
    *,
    symmetry: int = 1,
    coarse_step_deg: float = 20.0,
    refine: bool = True,
    final_step_deg: float = 0.25,
    coarse_size: int = 20,
    n_candidates: int = 8,
    max_shift: float | None = None,
    backend: Any = None,
) -> RegistrationResult:
    """Rigid registration of ``volume`` onto ``reference``: ``T_t(R volume) ~ reference``.

    Parameters
    ----------
    volume : ndarray, shape (Z, Y, X) or (C, Z, Y, X)
        The moving volume (e.g. a reconstruction in an arbitrary frame).  Channels share
        one transform.
    reference : ndarray, same shape as ``volume``
        The fixed volume (e.g. the ground truth).
    symmetry : int, default 1
        Order n of the cyclic symmetry Cn about z of the reference: the search covers
        SO(3)/Cn and the rotation is defined modulo ``R ~ C_k R``.
    coarse_step_deg : float, default 20
        Spacing of the global rotation grid, degrees (Fortun et al. 2018 starts at 20, Eloy et al. 2023
        uses 10; 20 covers SO(3) with 1872 rotations at n = 1, 216 at n = 9).
    refine : bool, default True
        Refine the best global candidates locally (coarse-to-fine down to
        ``final_step_deg``, sub-voxel translation).  False: the best global candidate
        and its integer translation at full size.
    final_step_deg : float, default 0.25
        Finest local step, degrees.
    coarse_size : int, default 20
        The global search runs on volumes downsampled (Fourier cropping) to at most this
        many voxels per axis.
    n_candidates : int, default 8
        Distinct global candidates refined at the coarse size (the best two continue at
        full size).
    max_shift : float, optional
        Largest translation searched, voxels (default: any periodic shift).
    backend : Backend or {"cpu", "gpu"}, optional
        Default: the backend of ``volume``.

    Returns
    -------
    RegistrationResult
        ``rotation`` (3, 3) and ``translation`` (3,) with ``aligned = T_t(R volume)``,
        ``score`` (NCC of ``aligned`` with ``reference``), ``aligned`` (same shape as
        ``volume``, float32, on the host).

    Notes
    -----
    See the module docstring for the method and for the relation between ``(R, t)``
    and particle poses.  Cost: the global search is one trilinear rotation and two FFTs
    of the coarse volume per grid rotation (1872 at 20 degrees, n = 1), then a few tens
    of rotations per refined candidate.  A reference with a symmetry the search is not
    told about has several equivalent optima (and, for a barrel, near-optima turned
    upside down at the coarse size): give ``symmetry``.  Measured accuracy and time:
    ``spfluo/tests/algorithms/test_registration.py`` and ``benchmarks/simulation.py``.
    """
    bk = resolve_backend(backend, volume)
    xp = bk.xp
    vol, ref = _check_pair(xp, volume, reference)
    if isinstance(symmetry, bool) or not isinstance(symmetry, (int, np.integer)) or symmetry < 1:
        raise ValueError(f"symmetry must be an integer >= 1 (order of Cn), got {symmetry!r}")
    symmetry = int(symmetry)
    coarse_step_deg = _check_positive("coarse_step_deg", coarse_step_deg, maximum=90.0)
    final_step_deg = _check_positive("final_step_deg", final_step_deg, maximum=90.0)
    if isinstance(coarse_size, bool) or not isinstance(coarse_size, (int, np.integer)) or (
        coarse_size < 8
    ):
        raise ValueError(f"coarse_size must be an integer >= 8 voxels, got {coarse_size!r}")
    if isinstance(n_candidates, bool) or not isinstance(n_candidates, (int, np.integer)) or (
        n_candidates < 1
    ):
        raise ValueError(f"n_candidates must be an integer >= 1, got {n_candidates!r}")
    if max_shift is not None:
        if (
            isinstance(max_shift, bool)
            or not isinstance(max_shift, (int, float, np.integer, np.floating))
            or not math.isfinite(max_shift)
            or max_shift < 0
        ):
            raise ValueError(
                f"max_shift must be None or a number of voxels >= 0, got {max_shift!r}"
            )
        max_shift = float(max_shift)
    single = vol.ndim == 3
    vol4 = (vol[None] if single else vol).astype(xp.float32)
    ref4 = (ref[None] if single else ref).astype(xp.float32)
    for name, a in (("volume", vol4), ("reference", ref4)):
        if not bool(xp.any(a != a.reshape(a.shape[0], -1)[:, :1, None, None])):
            raise ValueError(f"{name} is constant: there is nothing to register")
    v0 = _background_removed(xp, vol4)
    r0 = _background_removed(xp, ref4)

    shape = tuple(int(s) for s in vol4.shape[-3:])
    factor = min(1.0, coarse_size / max(shape))
    coarse_shape = tuple(max(4, int(round(n * factor))) for n in shape)
    if coarse_shape != shape:
        vc = resize_fourier(v0, coarse_shape, backend=bk)
        rc = resize_fourier(r0, coarse_shape, backend=bk)
    else:
        vc, rc = v0, r0
    scale = np.array(shape, dtype=np.float64) / np.array(coarse_shape, dtype=np.float64)
    coarse_max = None if max_shift is None else max_shift / float(scale.max())
    coarse = _Level(bk, vc, rc, coarse_max)
    full = coarse if coarse_shape == shape else _Level(bk, v0, r0, max_shift)

    # 1. global search
    grid = uniform_rotation_grid(math.radians(coarse_step_deg), symmetry=symmetry)
    scores, _ = coarse.score(grid, subvoxel=False)
    chosen = _distinct_best(
        grid, scores, int(n_candidates), 1.5 * math.radians(coarse_step_deg), symmetry
    )

    if refine:
        # 2. local refinement of each candidate at the coarse size
        results = []
        for i in chosen:
            best, step = _refine(
                coarse, grid[i], coarse_step_deg / 2.0, _FINE_SWITCH_DEG, subvoxel=False
            )
            results.append(best)
        # 3. the best distinct ones at full size, sub-voxel shifts
        rots = np.stack([r[1] for r in results])
        keep = _distinct_best(
            rots, np.array([r[0] for r in results]), _N_FULL, math.radians(2 * step), symmetry
        )
        start = max(step, final_step_deg)
        finals = [
            _refine(full, rots[i], start, final_step_deg, subvoxel=True)[0] for i in keep
        ]
        _, q, s = max(finals, key=lambda b: b[0])
    else:
        q = grid[chosen[0]]
        _, s = full.score(q[None], subvoxel=False)
        s = s[0]

    R = q.T
    t = -(R @ s)
    # resample the background-free volume and put the background back, so that what
    # comes from outside the box has the background level, not 0
    background = (vol4 - v0).reshape(vol4.shape[0], -1)[:, 0]
    aligned = xp.stack(
        [
            rotate(v0[c], R, translations=t, order=3, backend=bk) + background[c]
            for c in range(vol4.shape[0])
        ]
    )
    a = aligned.astype(xp.float64)
    b = ref4.astype(xp.float64)
    a = a - a.mean()
    b = b - b.mean()
    denom = float(xp.sqrt((a * a).sum() * (b * b).sum()))
    score = float((a * b).sum()) / denom if denom > 0 else 0.0
    aligned = to_numpy(aligned[0] if single else aligned).astype(np.float32)
    return RegistrationResult(
        rotation=np.asarray(R, dtype=np.float64),
        translation=np.asarray(t, dtype=np.float64),
        score=score,
        aligned=aligned,
    )
