"""Semi-automatic particle detection: candidates, features, a classifier, non-maximum suppression.

The user picks a few particles; the picker finds the others (Fortun et al. 2018 sec. II-B):

1. :mod:`~spfluo.algorithms.picking.candidates`: blobs of the maximum projection along z
   and of the planes, with their depth (:func:`detect_candidates`,
   :func:`estimate_depth`), and :func:`non_maximum_suppression`;
2. :mod:`~spfluo.algorithms.picking.features`: 85 features per candidate
   (:func:`particle_features`);
3. :mod:`~spfluo.algorithms.picking.classifier`: negatives by a novelty test against the
   examples, then a self-trained classifier (:func:`score_candidates`);
4. :mod:`~spfluo.algorithms.picking.pipeline`: :func:`pick_particles` runs the chain on
   a set of images.

Fields of any size are read in lateral tiles with halos
(:mod:`~spfluo.algorithms.picking.tiles`: :func:`plan_tiles` fits them to a memory budget,
:func:`picking_peak_bytes` estimates the peak); the result does not depend on the tiles.

Positions are in voxels ``(z, y, x)`` of the image (algorithms work in voxels); the
particle diameter and the voxel sizes are in micrometres.
"""

from __future__ import annotations

from spfluo.algorithms.picking.candidates import (
    Candidates,
    DepthPeaks,
    detect_candidates,
    estimate_depth,
    non_maximum_suppression,
    normalize_image,
)
from spfluo.algorithms.picking.classifier import (
    CLASSIFIERS,
    ClassifierScores,
    make_classifier,
    score_candidates,
)
from spfluo.algorithms.picking.features import FEATURE_NAMES, particle_features
from spfluo.algorithms.picking.pipeline import (
    FieldTraining,
    PickingResult,
    classify_fields,
    field_training,
    pick_particles,
)
from spfluo.algorithms.picking.tiles import (
    DEFAULT_MEMORY_BYTES,
    TilePlan,
    picking_peak_bytes,
    plan_tiles,
)

__all__ = [
    "FEATURE_NAMES",
    "CLASSIFIERS",
    "Candidates",
    "DepthPeaks",
    "ClassifierScores",
    "PickingResult",
    "normalize_image",
    "detect_candidates",
    "estimate_depth",
    "particle_features",
    "make_classifier",
    "score_candidates",
    "non_maximum_suppression",
    "pick_particles",
    "FieldTraining",
    "field_training",
    "classify_fields",
    "DEFAULT_MEMORY_BYTES",
    "TilePlan",
    "plan_tiles",
    "picking_peak_bytes",
]
