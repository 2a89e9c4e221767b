"""The picking driver: candidates, features and a classifier on a set of images.

:func:`pick_particles` runs the whole chain on a set of images.  Detection runs on one
channel (the caller chooses it); the coordinates apply to every channel.  Positions are
in voxels ``(z, y, x)`` of the image (algorithms work in voxels); the particle diameter
and the voxel sizes are in micrometres.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.spatial import cKDTree

from spfluo.algorithms.geometry import as_voxel_size
from spfluo.algorithms.picking._validation import (
    check_diameter,
    check_image,
    check_positions,
    check_positive,
    check_seed,
)
from spfluo.algorithms.picking.candidates import (
    candidates_from_volume,
    non_maximum_suppression,
    normalize_image,
    smoothed,
)
from spfluo.algorithms.picking.classifier import CLASSIFIERS, score_candidates
from spfluo.algorithms.picking.features import features_from_volume

__all__ = ["PickingResult", "pick_particles"]


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class PickingResult:
    """Detections in a set of images.

    Attributes
    ----------
    image_index : ndarray, shape (M,), int64
        Index (into the input list) of the image of each detection.
    positions : ndarray, shape (M, 3), float64
        Centres ``(z, y, x)`` in voxels of their image.
    scores : ndarray, shape (M,), float64
        Probability of being a particle, in [0, 1] (decreasing within each image).
    from_example : ndarray, shape (M,), bool
        True where the detection is one of the user's examples (kept whatever its score).
    n_candidates : ndarray, shape (n_images,), int64
        Number of blob candidates per image before classification.
    n_background : int
        Number of candidates that started as background in the novelty test.
    rounds : int
        Classification rounds run (see :class:`ClassifierScores`).
    """

    image_index: np.ndarray
    positions: np.ndarray
    scores: np.ndarray
    from_example: np.ndarray
    n_candidates: np.ndarray
    n_background: int
    rounds: int

    def __len__(self) -> int:
        return int(self.positions.shape[0])


# ----------------------------------------------------------------------------- pipeline


_SHIFTS = np.array([[0, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64)


def _training_rows(cpos, ex, vs, diameter, shape, *, augment: bool, first: int):
    """Rows to featurise in one image, with labels (1/0/-1), groups and output flags.

    Returns ``rows (R, 3)``, ``labels (R,)``, ``groups (R,)``, ``candidate (R,)`` (rows that
    can become detections: the candidates and the first copy of each example),
    ``example (R,)`` (the first copy of each example).
    """
    radius = diameter / 2
    ex_pos = ex.copy()
    snapped = np.full(len(ex), -1)
    if len(cpos) and len(ex):
        # an example snaps to the nearest candidate within half a radius (laterally, µm);
        # one candidate cannot stand for two examples: the closest wins
        dist, j = cKDTree(cpos[:, 1:] * vs[1:]).query(ex[:, 1:] * vs[1:])
        taken = set()
        for k in np.argsort(dist, kind="stable"):
            if dist[k] <= radius / 2 and int(j[k]) not in taken:
                snapped[k] = j[k]
                taken.add(int(j[k]))
        ex_pos[snapped >= 0] = cpos[snapped[snapped >= 0]]
    lab = np.zeros(len(cpos), dtype=np.int64)
    if len(ex) and len(cpos):
        near = cKDTree(ex_pos[:, 1:] * vs[1:]).query(cpos[:, 1:] * vs[1:])[0]
        lab[near <= diameter] = -1
    keep = np.ones(len(cpos), bool)
    keep[snapped[snapped >= 0]] = False  # replaced by the example rows
    c_rows, c_lab = cpos[keep], lab[keep]
    shifts = _SHIFTS if augment else _SHIFTS[:1]
    e_rows = (ex_pos[:, None, :] + shifts[None]).reshape(-1, 3)
    e_rows = np.clip(e_rows, 0, np.asarray(shape) - 1)
    e_groups = first + np.repeat(np.arange(len(ex)), len(shifts))
    c_groups = first + len(ex) + np.arange(len(c_rows))
    first_copy = np.zeros(len(e_rows), bool)
    first_copy[:: len(shifts)] = True
    rows = np.concatenate([c_rows, e_rows]).reshape(-1, 3)
    labels = np.concatenate([c_lab, np.ones(len(e_rows), np.int64)])
    groups = np.concatenate([c_groups, e_groups]).astype(np.int64)
    candidate = np.concatenate([np.ones(len(c_rows), bool), first_copy])
    example = np.concatenate([np.zeros(len(c_rows), bool), first_copy])
    return rows, labels, groups, candidate, example


def pick_particles(images: Sequence, examples: Sequence, voxel_size, *, diameter: float,
                   threshold: float = 0.5, method: str = "forest",
                   candidate_threshold: float = 3.0, nms_distance: float = 0.5,
                   novelty: float = 2.5, n_folds: int = 5, augment: bool = True,
                   seed=0) -> PickingResult:
    """Find the particles like the examples in a set of images.

    Parameters
    ----------
    images : sequence of ndarray, each (Z, Y, X)
        The detection channel of each field of view (shapes may differ).
    examples : sequence of ndarray, each (K_i, 3)
        The user's picks in each image, ``(z, y, x)`` in voxels (``K_i`` may be 0); at
        least 3 in all.
    voxel_size : float or tuple of 3 floats
        ``(z, y, x)`` in micrometres, shared by the images.
    diameter : float
        Particle diameter in micrometres.
    threshold : float, default 0.5
        Minimum score (estimated probability of being a particle, in [0, 1]).
    method : {"forest", "svm", "boosting"}, default "forest"
        Classifier (:func:`make_classifier`).
    candidate_threshold : float, default 3.0
        Blob detection threshold (:func:`detect_candidates`).
    nms_distance : float, default 0.5
        Non-maximum suppression distance, fraction of the diameter (3D, micrometres):
        two particles, even touching, are farther apart than half a diameter.
    novelty : float, default 2.5
        Novelty ratio above which a candidate starts as background
        (:func:`score_candidates`).
    n_folds : int, default 5
        Cross-fitting folds (:func:`score_candidates`).
    augment : bool, default True
        Add copies of each example shifted by one voxel along y and x as positives.
    seed : int or numpy Generator
        The same seed gives the same detections.

    Returns
    -------
    PickingResult

    Notes
    -----
    An example snaps to the nearest candidate within half a radius (laterally) and
    takes its position (the candidate's centre is found the same way as every other
    candidate's); an example with no candidate nearby is added as a candidate.
    Candidates farther than one diameter from every example are unlabelled; the
    others (neighbours of examples) are only scored.  The classifier
    (:func:`score_candidates`) learns from the examples, the candidates unlike every
    example (background) and its own votes.  Detections are the candidates with
    ``score >= threshold`` and every example, then non-maximum suppression.
    """
    try:
        n_images = len(images)
    except TypeError:
        raise ValueError("images must be a sequence of (Z, Y, X) arrays (one per field of "
                         f"view), got {type(images).__name__}") from None
    if n_images == 0:
        raise ValueError("images is empty; give at least one field of view")
    exs = list(examples)
    if len(exs) != n_images:
        raise ValueError(f"examples must hold one (K, 3) array per image: {n_images} images but "
                         f"{len(exs)} example arrays")
    exs = [check_positions(e, f"examples[{i}]") for i, e in enumerate(exs)]
    n_examples = sum(len(e) for e in exs)
    if n_examples < 3:
        raise ValueError(f"examples: need at least 3 example picks, got {n_examples}; pick more "
                         "particles (about 10-20 work well)")
    vs = as_voxel_size(voxel_size)
    d = check_positive(diameter, "diameter", "micrometres")
    thr = float(threshold)
    if not 0.0 <= thr <= 1.0:
        raise ValueError(f"threshold must be a score in [0, 1], got {threshold!r}")
    if method not in CLASSIFIERS:
        raise ValueError(f"method must be one of {', '.join(CLASSIFIERS)}, got {method!r}")
    nms = check_positive(nms_distance, "nms_distance", "fraction of the diameter")
    cthr = float(candidate_threshold)
    if not np.isfinite(cthr):
        raise ValueError(f"candidate_threshold must be a finite number, got "
                         f"{candidate_threshold!r}")
    nov = float(novelty)
    if not (np.isfinite(nov) and nov > 1.0):
        raise ValueError(f"novelty must be a ratio > 1, got {novelty!r}")
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    rng = check_seed(seed)

    feats, labels, groups, owner, pos_list, is_cand, is_ex = ([] for _ in range(7))
    n_candidates = np.zeros(n_images, dtype=np.int64)
    group = 0
    for i in range(n_images):
        # one image at a time: only candidate positions and features are kept
        img = check_image(images[i], f"images[{i}]")
        check_diameter(d, img.shape, vs)
        ex = check_positions(exs[i], f"examples[{i}]", img.shape)
        vol = smoothed(normalize_image(img), vs, d)
        cands = candidates_from_volume(vol, vs, d, cthr, 0.5)
        n_candidates[i] = len(cands)
        rows, lab, grp, cand_row, ex_row = _training_rows(
            cands.positions, ex, vs, d, img.shape, augment=bool(augment), first=group)
        group = int(grp.max()) + 1 if grp.size else group
        feats.append(features_from_volume(vol, rows, vs, d))
        labels.append(lab)
        groups.append(grp)
        owner.append(np.full(len(rows), i))
        pos_list.append(rows)
        is_cand.append(cand_row)
        is_ex.append(ex_row)
        del vol, img
    X = np.concatenate(feats)
    y = np.concatenate(labels)
    g = np.concatenate(groups)
    owner_all = np.concatenate(owner)
    scored = score_candidates(X, y, groups=g, method=method, n_folds=n_folds,
                              novelty=nov, seed=rng)
    positions = np.concatenate(pos_list)
    cand = np.concatenate(is_cand)
    example = np.concatenate(is_ex)

    out_img, out_pos, out_score, out_ex = [], [], [], []
    for i in range(n_images):
        sel = np.flatnonzero(cand & (owner_all == i) & ((scored.scores >= thr) | example))
        kept = sel[non_maximum_suppression(positions[sel] * vs, scored.scores[sel],
                                           min_distance=nms * d, keep=example[sel])]
        kept = kept[np.lexsort((np.arange(kept.size), -scored.scores[kept]))]
        out_img.append(np.full(kept.size, i, dtype=np.int64))
        out_pos.append(positions[kept])
        out_score.append(scored.scores[kept])
        out_ex.append(example[kept])
    return PickingResult(image_index=np.concatenate(out_img),
                         positions=np.concatenate(out_pos).reshape(-1, 3),
                         scores=np.concatenate(out_score), from_example=np.concatenate(out_ex),
                         n_candidates=n_candidates,
                         n_background=int(((y == 0) & (scored.novelty >= nov)).sum()),
                         rounds=scored.rounds)
