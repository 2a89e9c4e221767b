"""The picking driver: candidates, features and a classifier on a set of images.

:func:`pick_particles` runs the whole chain on a set of images.  It is two steps, which a
caller may run apart: :func:`field_training` finds the candidates of one field and their
features, reading the field tile by tile in bounded memory (fields are independent: a
cluster may run one per task); :func:`classify_fields` trains the classifier on the
examples and candidates of every field and keeps the detections.  Detection runs on one
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
    check_positions,
    check_positive,
    check_seed,
)
from spfluo.algorithms.picking.candidates import find_candidates, non_maximum_suppression
from spfluo.algorithms.picking.classifier import CLASSIFIERS, score_candidates
from spfluo.algorithms.picking.features import field_features
from spfluo.algorithms.picking.tiles import (
    DEFAULT_MEMORY_BYTES,
    TileCounter,
    check_field,
    plan_tiles,
)

__all__ = ["PickingResult", "FieldTraining", "pick_particles", "field_training",
           "classify_fields"]


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


@dataclass(frozen=True)
class FieldTraining:
    """What one field gives the classifier (:func:`field_training`).

    Attributes
    ----------
    rows : ndarray, shape (R, 3), float64
        Positions ``(z, y, x)`` (voxels) of the rows: the candidates, then the examples
        (with their shifted copies).
    labels : ndarray, shape (R,), int64
        1 (example), 0 (unlabelled candidate) or -1 (candidate next to an example, only
        scored).
    groups : ndarray, shape (R,), int64
        Group of each row from 0 (an example and its copies share one).
    candidate : ndarray, shape (R,), bool
        Rows that can become detections.
    example : ndarray, shape (R,), bool
        The first copy of each example.
    features : ndarray, shape (R, 85), float32
    n_candidates : int
        Blob candidates of the field.
    """

    rows: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    candidate: np.ndarray
    example: np.ndarray
    features: np.ndarray
    n_candidates: int


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


def _check_options(*, threshold, method, nms_distance, novelty, n_folds) -> dict:
    """The classification options, checked (ValueError naming the option)."""
    thr = float(threshold)
    if not 0.0 <= thr <= 1.0:
        raise ValueError(f"threshold must be a score in [0, 1], got {threshold!r}")
    if method not in CLASSIFIERS:
        raise ValueError(f"method must be one of {', '.join(CLASSIFIERS)}, got {method!r}")
    nms = check_positive(nms_distance, "nms_distance", "fraction of the diameter")
    nov = float(novelty)
    if not (np.isfinite(nov) and nov > 1.0):
        raise ValueError(f"novelty must be a ratio > 1, got {novelty!r}")
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    return {"threshold": thr, "method": method, "nms_distance": nms, "novelty": nov,
            "n_folds": int(n_folds)}


def _candidate_threshold(value) -> float:
    cthr = float(value)
    if not np.isfinite(cthr):
        raise ValueError(f"candidate_threshold must be a finite number, got {value!r}")
    return cthr


def field_training(field, examples, voxel_size, *, diameter: float,
                   candidate_threshold: float = 3.0, augment: bool = True,
                   memory_bytes: float = DEFAULT_MEMORY_BYTES, tile: int | None = None,
                   progress=None, name: str = "image") -> FieldTraining:
    """Candidates of one field and the features of its training rows, in bounded memory.

    Parameters
    ----------
    field : array-like, shape (Z, Y, X)
        The detection channel: an ndarray or any array-like read by lateral slices
        (``field[:, y0:y1, x0:x1]``, e.g. :mod:`spfluo.io.fields`).
    examples : ndarray, shape (K, 3)
        The user's picks in this field, ``(z, y, x)`` in voxels (``K`` may be 0).
    voxel_size : float or tuple of 3 floats
        ``(z, y, x)`` in micrometres.
    diameter : float
        Particle diameter in micrometres.
    candidate_threshold : float, default 3.0
        Blob detection threshold (:func:`detect_candidates`).
    augment : bool, default True
        Add copies of each example shifted by one voxel along y and x as positives.
    memory_bytes : float, default 2e9
        Peak memory allowed: the field is read in lateral tiles that fit
        (:func:`~spfluo.algorithms.picking.tiles.plan_tiles`); the result does not
        depend on the tiles.
    tile : int, optional
        Tile core size in voxels instead of the largest that fits.
    progress : callable, optional
        ``progress(done, total)``: the work done on the field, in weighted tiles.
    name : str
        The field's name in messages.

    Returns
    -------
    FieldTraining
    """
    shape = check_field(field, name)
    vs = as_voxel_size(voxel_size)
    d = check_diameter(diameter, shape, vs)
    ex = check_positions(examples, f"examples of {name}", shape)
    cthr = _candidate_threshold(candidate_threshold)
    plan = plan_tiles(shape, vs, d, memory_bytes=memory_bytes, min_distance=0.5, core=tile)
    counter = TileCounter(len(plan), progress)
    cands, noise = find_candidates(field, plan, vs, d, threshold=cthr, min_distance=0.5,
                                   counter=counter)
    rows, labels, groups, candidate, example = _training_rows(
        cands.positions, ex, vs, d, shape, augment=bool(augment), first=0)
    features = field_features(field, plan, rows, vs, d, noise, counter)
    return FieldTraining(rows=rows, labels=labels, groups=groups, candidate=candidate,
                         example=example, features=features, n_candidates=len(cands))


def classify_fields(trainings: Sequence[FieldTraining], voxel_size, *, diameter: float,
                    threshold: float = 0.5, method: str = "forest", nms_distance: float = 0.5,
                    novelty: float = 2.5, n_folds: int = 5, seed=0) -> PickingResult:
    """Train the classifier on the rows of every field and keep the detections.

    Parameters
    ----------
    trainings : sequence of FieldTraining
        One per field (:func:`field_training`), in the order of the images.
    voxel_size, diameter, threshold, method, nms_distance, novelty, n_folds, seed
        As :func:`pick_particles`.

    Returns
    -------
    PickingResult
    """
    opt = _check_options(threshold=threshold, method=method, nms_distance=nms_distance,
                         novelty=novelty, n_folds=n_folds)
    vs = as_voxel_size(voxel_size)
    d = check_positive(diameter, "diameter", "micrometres")
    rng = check_seed(seed)
    n_images = len(trainings)
    groups, group = [], 0
    for t in trainings:  # groups numbered across the fields
        groups.append(t.groups + group)
        group = int(groups[-1].max()) + 1 if t.groups.size else group
    X = np.concatenate([t.features for t in trainings])
    y = np.concatenate([t.labels for t in trainings])
    g = np.concatenate(groups)
    owner_all = np.concatenate([np.full(len(t.rows), i) for i, t in enumerate(trainings)])
    scored = score_candidates(X, y, groups=g, method=opt["method"], n_folds=opt["n_folds"],
                              novelty=opt["novelty"], seed=rng)
    positions = np.concatenate([t.rows for t in trainings]).reshape(-1, 3)
    cand = np.concatenate([t.candidate for t in trainings])
    example = np.concatenate([t.example for t in trainings])

    out_img, out_pos, out_score, out_ex = [], [], [], []
    for i in range(n_images):
        sel = np.flatnonzero(cand & (owner_all == i)
                             & ((scored.scores >= opt["threshold"]) | example))
        kept = sel[non_maximum_suppression(positions[sel] * vs, scored.scores[sel],
                                           min_distance=opt["nms_distance"] * d,
                                           keep=example[sel])]
        kept = kept[np.lexsort((np.arange(kept.size), -scored.scores[kept]))]
        out_img.append(np.full(kept.size, i, dtype=np.int64))
        out_pos.append(positions[kept])
        out_score.append(scored.scores[kept])
        out_ex.append(example[kept])
    return PickingResult(image_index=np.concatenate(out_img),
                         positions=np.concatenate(out_pos).reshape(-1, 3),
                         scores=np.concatenate(out_score), from_example=np.concatenate(out_ex),
                         n_candidates=np.array([t.n_candidates for t in trainings],
                                               dtype=np.int64),
                         n_background=int(((y == 0) & (scored.novelty >= opt["novelty"])).sum()),
                         rounds=scored.rounds)


def pick_particles(images: Sequence, examples: Sequence, voxel_size, *, diameter: float,
                   threshold: float = 0.5, method: str = "forest",
                   candidate_threshold: float = 3.0, nms_distance: float = 0.5,
                   novelty: float = 2.5, n_folds: int = 5, augment: bool = True,
                   seed=0, memory_bytes: float = DEFAULT_MEMORY_BYTES,
                   tile: int | None = None) -> PickingResult:
    """Find the particles like the examples in a set of images.

    Parameters
    ----------
    images : sequence of array-like, each (Z, Y, X)
        The detection channel of each field of view (shapes may differ): ndarrays or
        array-likes read by lateral slices (memory maps of large files).
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
    memory_bytes : float, default 2e9
        Peak memory of the candidates and features of one field (:func:`field_training`).
    tile : int, optional
        Tile core size in voxels instead of the largest that fits.

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
    ``score >= threshold`` and every example, then non-maximum suppression.  One field
    at a time is in memory, in tiles (:func:`field_training`).
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
    for i in range(n_images):  # every field before the first is read
        shape = check_field(images[i], f"images[{i}]")
        check_diameter(d, shape, vs)
        check_positions(exs[i], f"examples[{i}]", shape)
    options = _check_options(threshold=threshold, method=method, nms_distance=nms_distance,
                             novelty=novelty, n_folds=n_folds)
    _candidate_threshold(candidate_threshold)
    rng = check_seed(seed)
    trainings = [field_training(images[i], exs[i], voxel_size, diameter=diameter,
                                candidate_threshold=candidate_threshold, augment=augment,
                                memory_bytes=memory_bytes, tile=tile, name=f"images[{i}]")
                 for i in range(n_images)]
    return classify_fields(trainings, voxel_size, diameter=diameter, seed=rng, **options)
