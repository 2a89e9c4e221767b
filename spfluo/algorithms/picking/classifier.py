"""A classifier learnt from a few examples: novelty negatives, then self-training.

**Classifier** (:func:`score_candidates`): the examples are the positives.  The other
candidates are not negatives (most are particles that the user did not pick):
background is found by a nearest-neighbour novelty test against the examples, and a
classifier is then cross-fitted and retrained on its own votes (self-training) until
the labels are stable.  Classifiers: random forest (default), RBF support vector
machine (Fortun et al. 2018) and gradient boosting; ``benchmarks/picking.py`` compares them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from spfluo.algorithms.picking._validation import check_seed

__all__ = ["CLASSIFIERS", "ClassifierScores", "make_classifier", "score_candidates"]

#: Classifier names accepted by :func:`make_classifier` and :func:`pick_particles`.
CLASSIFIERS = ("forest", "svm", "boosting")


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ClassifierScores:
    """Scores of a set of samples (see :func:`score_candidates`).

    Attributes
    ----------
    scores : ndarray, shape (N,), float64
        Probability that each sample is a particle, in [0, 1], cross-fitted (a trained
        sample is scored by the model of the fold that held it out, the others by the
        mean of the fold models).
    novelty : ndarray, shape (N,), float64
        Novelty ratio of each sample: distance to the nearest examples over the typical
        distance between examples (about 1 for particles like the examples).
    rounds : int
        Number of classification rounds run (0: no background was found and the scores
        come from the novelty ratio alone).
    """

    scores: np.ndarray
    novelty: np.ndarray
    rounds: int


# ----------------------------------------------------------------------------- classifier


def make_classifier(method: str = "forest", *, seed: int = 0):
    """An unfitted scikit-learn classifier with ``predict_proba``.

    Parameters
    ----------
    method : {"forest", "svm", "boosting"}
        ``"forest"``: random forest of 100 trees (balanced class weights);
        ``"svm"``: standardised features and an RBF support vector machine (balanced
        class weights) with Platt probabilities fitted on 3-fold decision values (Fortun
        et al. 2018 uses SVMs); ``"boosting"``: gradient boosting of 100 depth-3 trees (fit it
        with balanced sample weights, as :func:`score_candidates` does).
    seed : int
        Random state of the estimator.

    Returns
    -------
    sklearn estimator
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if method not in CLASSIFIERS:
        raise ValueError(f"method must be one of {', '.join(CLASSIFIERS)}, got {method!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, got {seed!r}")
    seed = int(seed)
    if method == "forest":
        return RandomForestClassifier(n_estimators=100, min_samples_leaf=2, max_features="sqrt",
                                      class_weight="balanced", random_state=seed, n_jobs=1)
    if method == "svm":
        svm = make_pipeline(StandardScaler(), SVC(kernel="rbf", C=1.0, gamma="scale",
                                                  class_weight="balanced"))
        return CalibratedClassifierCV(svm, method="sigmoid", cv=3, ensemble=False)
    # the classic (single-threaded) implementation: on a few hundred samples the
    # histogram one spends its time in OpenMP synchronisation
    return GradientBoostingClassifier(n_estimators=100, learning_rate=0.1, max_depth=3,
                                      min_samples_leaf=3, subsample=0.8, random_state=seed)


def _balanced_weights(y: np.ndarray) -> np.ndarray:
    """Sample weights that give both classes the same total weight."""
    classes, counts = np.unique(y, return_counts=True)
    per_class = len(y) / (len(classes) * counts)
    return per_class[np.searchsorted(classes, y)]


def _cross_fit(X, y, g, score_only, *, method, n_folds, seed):
    """Out-of-fold P(y = 1) for the training rows, fold-model mean for ``score_only`` rows."""
    from sklearn.model_selection import StratifiedGroupKFold

    train = ~score_only
    Xt, yt, gt = X[train], y[train], g[train]
    k = int(min(n_folds, np.unique(gt[yt == 1]).size, np.unique(gt[yt == 0]).size))
    raw = np.zeros(X.shape[0])
    oof = np.zeros(Xt.shape[0])
    extra = np.zeros(int(score_only.sum()))
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for i, (tr, te) in enumerate(splitter.split(Xt, yt, gt)):
        model = make_classifier(method, seed=(seed + i) % (2**31 - 1))
        if method == "boosting":  # no class_weight option: balanced sample weights
            model.fit(Xt[tr], yt[tr], sample_weight=_balanced_weights(yt[tr]))
        else:
            if method == "svm":  # Platt calibration folds: at most the smaller class
                model.set_params(cv=int(max(2, min(3, np.bincount(yt[tr]).min()))))
            model.fit(Xt[tr], yt[tr])
        col = list(model.classes_).index(1)
        oof[te] = model.predict_proba(Xt[te])[:, col]
        if extra.size:
            extra += model.predict_proba(X[score_only])[:, col] / k
    raw[train] = oof
    raw[score_only] = extra
    return raw


def _novelty(X: np.ndarray, reference: np.ndarray, *, k: int = 3) -> np.ndarray:
    """Distance of each row of ``X`` to its ``k`` nearest reference rows, relative to the
    median leave-one-out distance among the references (features robustly standardised
    over ``X``)."""
    med = np.median(X, axis=0)
    mad = 1.4826 * np.median(np.abs(X - med), axis=0)
    scale = np.where(mad > 1e-9 * (np.abs(med) + 1.0), mad, 1.0)
    Z = (X - med) / scale
    R = Z[reference]
    k = int(min(k, len(R) - 1))
    tree = cKDTree(R)
    loo = tree.query(R, k=k + 1)[0][:, 1:].mean(axis=1)
    dist = tree.query(Z, k=k)[0]
    dist = dist.mean(axis=1) if dist.ndim == 2 else dist
    return dist / max(float(np.median(loo)), 1e-12)


def score_candidates(features, labels, *, groups=None, method: str = "forest",
                     n_folds: int = 5, novelty: float = 2.5, self_training: int = 5,
                     seed=0) -> ClassifierScores:
    """Particle probabilities from a few positives, cross-fitted self-training.

    Parameters
    ----------
    features : ndarray, shape (N, F)
        One row per sample.
    labels : ndarray, shape (N,), int
        1: positive (an example particle, possibly with shifted copies); 0: unlabelled
        (a candidate that may or may not be a particle); -1: only to be scored (never
        trained on).
    groups : ndarray, shape (N,), optional
        Samples of one group (an example and its shifted copies) stay in the same fold;
        the first sample of a positive group stands for it in the novelty test.
        Default: every sample its own group.
    method : {"forest", "svm", "boosting"}
        See :func:`make_classifier`.
    n_folds : int, default 5
        Number of folds (at least 2; at most the number of groups of each class).
    novelty : float, default 2.5
        Unlabelled samples farther from the examples than ``novelty`` times the typical
        distance between examples start as background (see Notes).
    self_training : int, default 5
        Maximum number of classification rounds.
    seed : int or numpy Generator
        Fold assignment and estimators.

    Returns
    -------
    ClassifierScores

    Notes
    -----
    Positives and negatives are both needed to train a classifier, and the user gives
    positives only.  The unlabelled candidates cannot all serve as negatives: most of
    them are particles the user did not pick.  Negatives are therefore found by a
    novelty test (a nearest-neighbour conformal score): in the feature space
    standardised by the median and MAD of all samples, the mean distance of a sample to
    its 3 nearest examples, divided by the median of the same distance among the
    examples (leave one out), is its novelty ratio; debris and noise, unlike every
    example, have ratios far above the particles' (about 1).  Unlabelled samples start
    as background when their ratio is at least ``novelty``, as particles otherwise.
    Then, for at most ``self_training`` rounds, a classifier is cross-fitted on the
    current labels (every sample is scored by a model that did not see it) and every
    unlabelled sample is relabelled by its probability (``>= 0.5``: particle), until
    the labels stop changing: a sample's new label is the vote of its neighbours, so a
    particle that started as background among particles flips, and the reverse.  The
    examples stay positive.  When no sample is novel (every candidate resembles the
    examples), the score is the novelty ratio mapped linearly from 1 (ratio <= 1) to
    0 (ratio >= ``novelty``).
    """
    X = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if X.ndim != 2:
        raise ValueError(f"features must have shape (N, F), got {X.shape}")
    if y.shape != (X.shape[0],) or not np.isin(y, (-1, 0, 1)).all():
        raise ValueError(f"labels must have shape ({X.shape[0]},) with values 1 (positive), "
                         f"0 (unlabelled) or -1 (score only), got shape {y.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("features contain NaN or infinite values; compute them on finite data")
    g = np.arange(X.shape[0]) if groups is None else np.asarray(groups)
    if g.shape != y.shape:
        raise ValueError(f"groups must have shape {y.shape}, got {g.shape}")
    if method not in CLASSIFIERS:
        raise ValueError(f"method must be one of {', '.join(CLASSIFIERS)}, got {method!r}")
    pos_idx = np.flatnonzero(y == 1)
    _, first = np.unique(g[pos_idx], return_index=True)
    representatives = pos_idx[first]
    if representatives.size < 3:
        raise ValueError(f"labels must mark at least 3 positive groups (examples), got "
                         f"{representatives.size}; pick more example particles")
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    nov = float(novelty)
    if not (np.isfinite(nov) and nov > 1.0):
        raise ValueError(f"novelty must be a ratio > 1, got {novelty!r}")
    if (isinstance(self_training, bool) or not isinstance(self_training, (int, np.integer))
            or self_training < 1):
        raise ValueError(f"self_training must be an integer >= 1, got {self_training!r}")
    rng = check_seed(seed)
    score_only = y < 0
    unlabelled = y == 0

    ratio = _novelty(X, representatives)
    current = np.where(unlabelled, (ratio < nov).astype(y.dtype), y)
    scores = np.clip((nov - ratio) / (nov - 1.0), 0.0, 1.0)
    scores[y == 1] = 1.0
    rounds = 0
    # every class needs groups in every training fold (the SVM's calibration: 2 samples)
    min_groups = 3 if method == "svm" else 2
    while rounds < int(self_training):
        if min(np.unique(g[current == 1]).size, np.unique(g[current == 0]).size) < min_groups:
            break
        scores = _cross_fit(X, current, g, score_only, method=method, n_folds=int(n_folds),
                            seed=int(rng.integers(2**31 - 1)))
        rounds += 1
        relabelled = np.where(unlabelled, (scores >= 0.5).astype(y.dtype), y)
        if np.array_equal(relabelled, current):
            break
        current = relabelled
    return ClassifierScores(scores=scores, novelty=ratio, rounds=rounds)
