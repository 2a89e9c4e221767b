"""Particle picking: candidates, depth, features, classifier, NMS and the whole chain.

The fields are drawn here from analytic shapes (rings as particles, solid Gaussian blobs
as debris) on an anisotropic grid, independently of ``spfluo.algorithms.simulate``.
"""

import numpy as np
import pytest
import scipy.ndimage as ndi
from scipy.optimize import linear_sum_assignment

from spfluo.algorithms import picking as pk
from spfluo.algorithms.geometry import random_rotations

VS = (0.25, 0.1, 0.1)  # (z, y, x) micrometres
DIAMETER = 1.2  # micrometres: rings of radius 0.45 µm, tube 0.12 µm


def _ring(points_um, rotation, radius=0.45, tube=0.12):
    """Soft torus (axis along z before rotation) at points (..., 3) relative to its centre."""
    local = points_um @ rotation  # R^T p for row vectors
    rho = np.hypot(local[..., 1], local[..., 2])
    dist2 = (rho - radius) ** 2 + local[..., 0] ** 2
    return np.exp(-dist2 / (2 * tube**2))


def _blob(points_um, sigma=(0.12, 0.2, 0.12)):
    return np.exp(-0.5 * ((points_um / np.asarray(sigma)) ** 2).sum(axis=-1))


def _field(shape=(20, 96, 96), n_particles=8, n_debris=3, noise=0.08, seed=0,
           positions=None):
    """A field of rings (random orientations) and debris blobs, blurred, with noise.

    Returns the image (Z, Y, X) float32, particle and debris centres (voxels, z y x).
    """
    rng = np.random.default_rng(seed)
    vs = np.asarray(VS)
    extent = (np.asarray(shape) - 1) * vs
    margin = np.array([0.7, 0.8, 0.8])
    if positions is None:
        centres = []
        while len(centres) < n_particles + n_debris:
            c = rng.uniform(margin, extent - margin)
            if all(np.linalg.norm((c - q)[1:]) > 1.5 * DIAMETER for q in centres):
                centres.append(c)
        centres = np.array(centres)
    else:
        centres = np.asarray(positions, float) * vs
        n_particles, n_debris = len(centres), 0
    grid = np.stack(np.meshgrid(*[np.arange(n) * v for n, v in zip(shape, vs)],
                                indexing="ij"), axis=-1)
    image = np.zeros(shape)
    rotations = random_rotations(n_particles, seed=rng)
    for k, c in enumerate(centres):
        pts = grid - c
        image += _ring(pts, rotations[k]) if k < n_particles else 0.9 * _blob(pts)
    image = ndi.gaussian_filter(image, np.array([0.2, 0.08, 0.08]) / vs)  # the PSF
    image /= image.max()
    image += rng.normal(0, noise, shape)
    return image.astype(np.float32), centres[:n_particles] / vs, centres[n_particles:] / vs


def _match(found, truth, radius_um):
    """Number of true detections (one-to-one, within radius_um)."""
    if len(found) == 0 or len(truth) == 0:
        return 0
    d = np.linalg.norm((found[:, None] - truth[None]) * np.asarray(VS), axis=-1)
    r, c = linear_sum_assignment(d)
    return int((d[r, c] <= radius_um).sum())


@pytest.fixture(scope="module")
def fields():
    return [_field(seed=s) for s in (1, 2)]


# ----------------------------------------------------------------------------- normalisation


def test_normalize_image_gives_noise_units():
    rng = np.random.default_rng(0)
    img = 10.0 + 3.0 * rng.normal(size=(16, 40, 40))
    img[4:7, 10:14, 10:14] += 50.0  # a sparse bright object must not bias the scale
    out = pk.normalize_image(img.astype(np.float32))
    assert out.dtype == np.float32
    assert abs(np.median(out)) < 0.02
    assert 1.4826 * np.median(np.abs(out - np.median(out))) == pytest.approx(1.0, abs=1e-3)
    assert np.all(pk.normalize_image(np.full((4, 5, 6), 2.0, np.float32)) == 0)
    with pytest.raises(ValueError, match="NaN"):
        pk.normalize_image(np.full((4, 5, 6), np.nan))
    with pytest.raises(ValueError, match=r"\(Z, Y, X\)"):
        pk.normalize_image(np.zeros((5, 6)))


# ----------------------------------------------------------------------------- candidates


def test_detect_candidates_finds_every_object(fields):
    for image, particles, debris in fields:
        cands = pk.detect_candidates(image, VS, diameter=DIAMETER)
        truth = np.concatenate([particles, debris])
        assert _match(cands.positions, truth, 0.25) == len(truth)  # about one z voxel
        assert len(cands) <= 2 * len(truth)
        assert np.all(np.diff(cands.response) <= 0)  # sorted by decreasing response
        assert cands.positions.shape == (len(cands), 3) and cands.scale.shape == (len(cands),)


def test_tiled_candidates_equal_the_whole_field(fields):
    image = fields[0][0]
    whole = pk.detect_candidates(image, VS, diameter=DIAMETER)
    assert len(pk.plan_tiles(image.shape, VS, DIAMETER)) == 1  # the field fits: one tile
    tiled = pk.detect_candidates(image, VS, diameter=DIAMETER, tile=16)  # 36 tiles
    np.testing.assert_array_equal(tiled.positions, whole.positions)
    np.testing.assert_array_equal(tiled.response, whole.response)
    np.testing.assert_array_equal(tiled.scale, whole.scale)


def test_tile_plan_fits_the_memory_budget():
    shape = (100, 2048, 2048)
    plan = pk.plan_tiles(shape, VS, DIAMETER, memory_bytes=2e9)
    assert len(plan) > 1 and plan.peak_bytes <= 2e9
    # the cores partition the field; each read rectangle is its core and the halo
    cover = np.zeros(shape[1:], np.int64)
    for t in plan.tiles:
        y0, y1, x0, x1 = t.core
        cover[y0:y1, x0:x1] += 1
        assert t.read == (max(0, y0 - plan.halo[0]), min(shape[1], y1 + plan.halo[0]),
                          max(0, x0 - plan.halo[1]), min(shape[2], x1 + plan.halo[1]))
    assert np.all(cover == 1)
    smaller = pk.plan_tiles(shape, VS, DIAMETER, memory_bytes=1e9)
    assert len(smaller) > len(plan) and smaller.peak_bytes <= 1e9
    assert pk.picking_peak_bytes(shape, (2048, 2048)) > 2e9  # the whole field would not fit
    with pytest.raises(ValueError, match=r"needs at least 0\.\d\d GB.*allow more memory"):
        pk.plan_tiles(shape, VS, DIAMETER, memory_bytes=3e8)


def test_candidates_separate_particles_stacked_along_z():
    # two rings at the same lateral position, 2.5 µm apart in z: one blob on the projection
    image, truth, _ = _field(shape=(24, 48, 48), positions=[[5.0, 24, 24], [15.0, 24, 25]],
                             noise=0.02, seed=3)
    cands = pk.detect_candidates(image, VS, diameter=DIAMETER)
    assert _match(cands.positions, truth, 0.15) == 2


def test_estimate_depth_single_and_stacked_peaks():
    z = np.arange(30)[:, None, None] * 0.25
    yx = np.indices((32, 32))
    lateral = np.exp(-((yx[0] - 16) ** 2 + (yx[1] - 16) ** 2) / (2 * 3.0**2))
    one = np.exp(-((z - 2.3) ** 2) / (2 * 0.3**2)) * lateral
    peaks = pk.estimate_depth(one.astype(np.float32), [[16, 16]], VS, diameter=1.0)
    assert len(peaks) == 1 and peaks.index.tolist() == [0]
    assert peaks.z[0] == pytest.approx(2.3 / 0.25, abs=0.15)
    # FWHM of a Gaussian of sigma 0.3 µm (plus the light smoothing): about 0.7 µm
    assert peaks.fwhm_um[0] == pytest.approx(2.3548 * 0.3, rel=0.15)
    two = one + 0.6 * np.exp(-((z - 5.5) ** 2) / (2 * 0.3**2)) * lateral
    peaks = pk.estimate_depth(two.astype(np.float32), [[16, 16], [0, 0]], VS, diameter=1.0)
    first = peaks.z[peaks.index == 0]
    assert np.allclose(np.sort(first), [2.3 / 0.25, 5.5 / 0.25], atol=0.2)
    with pytest.raises(ValueError, match="positions_yx"):
        pk.estimate_depth(one, [[1, 2, 3]], VS, diameter=1.0)
    with pytest.raises(ValueError, match="min_peak"):
        pk.estimate_depth(one, [[1, 2]], VS, diameter=1.0, min_peak=0)


def test_detect_candidates_rejects_bad_input(fields):
    image = fields[0][0]
    with pytest.raises(ValueError, match="larger than the image"):
        pk.detect_candidates(image, VS, diameter=50.0)
    with pytest.raises(ValueError, match="fewer than 3 voxels"):
        pk.detect_candidates(image, VS, diameter=0.2)
    with pytest.raises(ValueError, match="diameter must be a positive"):
        pk.detect_candidates(image, VS, diameter=-1)
    with pytest.raises(ValueError, match="voxel_size"):
        pk.detect_candidates(image, (0.1, 0.1), diameter=1.0)
    with pytest.raises(ValueError, match="threshold"):
        pk.detect_candidates(image, VS, diameter=1.0, threshold=np.nan)


# ----------------------------------------------------------------------------- features


def test_features_shape_and_invariances(fields):
    image, particles, debris = fields[0]
    pos = np.rint(np.concatenate([particles[:3], debris[:1]]))
    f = pk.particle_features(image, pos, VS, diameter=DIAMETER)
    assert f.shape == (4, len(pk.FEATURE_NAMES)) and f.dtype == np.float32
    assert len(pk.FEATURE_NAMES) == 85 and len(set(pk.FEATURE_NAMES)) == 85
    assert np.all(np.isfinite(f))
    # intensity scale and offset: the image is normalised first
    tol = 1e-3 * (np.abs(f).max(axis=0) + 1e-3)  # per feature
    g = pk.particle_features(3.0 * image + 7.0, pos, VS, diameter=DIAMETER)
    assert np.all(np.abs(g - f) <= tol)
    # a quarter turn about z (square pixels): every feature is rotation invariant
    Y = image.shape[1]
    turned = np.rot90(image, k=1, axes=(1, 2)).copy()  # (y, x) -> (X - 1 - x, y)
    tpos = np.stack([pos[:, 0], image.shape[2] - 1 - pos[:, 2], pos[:, 1]], axis=1)
    assert turned.shape[1] == image.shape[2] and Y == turned.shape[2]
    h = pk.particle_features(turned, tpos, VS, diameter=DIAMETER)
    assert np.all(np.abs(h - f) <= tol)
    # brightness: the contrast is in noise units, the intensity features relative to it
    k = pk.FEATURE_NAMES.index("vol_intensity_s0.25")
    assert np.allclose(f[:, k], 1.0)
    assert np.all(f[:, pk.FEATURE_NAMES.index("zprofile_contrast")] > 1)


def test_features_reject_positions_outside_the_image(fields):
    image = fields[0][0]
    with pytest.raises(ValueError, match="outside the image"):
        pk.particle_features(image, [[0, 0, 500]], VS, diameter=DIAMETER)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        pk.particle_features(image, [[0, 0]], VS, diameter=DIAMETER)


# ----------------------------------------------------------------------------- classifier


def _clusters(seed=0):
    """Particles (a broad cluster, 10 of them examples) and debris (a small far cluster)."""
    rng = np.random.default_rng(seed)
    particles = rng.normal(0, 1, (90, 6))
    debris = rng.normal(0, 0.5, (15, 6)) + np.array([6, -5, 4, 0, 0, 0])
    X = np.concatenate([particles, debris])
    labels = np.zeros(len(X), int)
    labels[:10] = 1
    return X, labels


@pytest.mark.parametrize("method, rounds", [("forest", 5), ("svm", 5), ("boosting", 2)])
def test_score_candidates_finds_unpicked_particles_and_rejects_debris(method, rounds):
    X, labels = _clusters()
    out = pk.score_candidates(X, labels, method=method, self_training=rounds, seed=0)
    assert out.scores.shape == (len(X),) and out.rounds >= 1
    assert (out.scores[10:90] >= 0.5).mean() >= 0.95
    assert np.all(out.scores[90:] < 0.5)
    assert np.all(out.novelty[90:] > 2.5) and np.median(out.novelty[10:90]) < 1.5
    again = pk.score_candidates(X, labels, method=method, self_training=rounds, seed=0)
    np.testing.assert_array_equal(again.scores, out.scores)


def test_score_candidates_without_background_uses_novelty():
    X, labels = _clusters()
    X, labels = X[:90], labels[:90]  # no debris: nothing is novel
    out = pk.score_candidates(X, labels, seed=0)
    assert out.rounds == 0
    assert (out.scores[10:] >= 0.5).mean() >= 0.9


def test_score_candidates_rejects_bad_input():
    X, labels = _clusters()
    with pytest.raises(ValueError, match="at least 3 positive"):
        pk.score_candidates(X, np.where(np.arange(len(X)) < 2, 1, 0))
    with pytest.raises(ValueError, match="labels must have shape"):
        pk.score_candidates(X, labels[:-1])
    with pytest.raises(ValueError, match="labels must have shape"):
        pk.score_candidates(X, labels + 2)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pk.score_candidates(bad, labels)
    with pytest.raises(ValueError, match="method"):
        pk.score_candidates(X, labels, method="knn")
    with pytest.raises(ValueError, match="n_folds"):
        pk.score_candidates(X, labels, n_folds=1)
    with pytest.raises(ValueError, match="novelty"):
        pk.score_candidates(X, labels, novelty=0.5)
    with pytest.raises(ValueError, match="groups"):
        pk.score_candidates(X, labels, groups=np.arange(3))


def test_make_classifier():
    for method in pk.CLASSIFIERS:
        assert hasattr(pk.make_classifier(method, seed=1), "predict_proba")
    with pytest.raises(ValueError, match="method must be one of"):
        pk.make_classifier("tree")
    with pytest.raises(ValueError, match="seed"):
        pk.make_classifier("forest", seed=1.5)


# ----------------------------------------------------------------------------- NMS


def _nms_brute(p, s, d, keep):
    order = sorted(range(len(s)), key=lambda i: (not keep[i], -s[i], i))
    kept = []
    for i in order:
        if keep[i] or all(np.linalg.norm(p[i] - p[j]) > d for j in kept):
            kept.append(i)
    return kept


def test_non_maximum_suppression_matches_brute_force():
    rng = np.random.default_rng(4)
    p = rng.uniform(0, 10, (200, 3))
    s = rng.uniform(0, 1, 200)
    keep = rng.uniform(size=200) < 0.05
    got = pk.non_maximum_suppression(p, s, min_distance=1.0, keep=keep)
    assert got.tolist() == _nms_brute(p, s, 1.0, keep)
    plain = pk.non_maximum_suppression(p, s, min_distance=1.0)
    d = np.linalg.norm(p[plain][:, None] - p[plain][None], axis=-1)
    assert d[np.triu_indices(len(plain), 1)].min() > 1.0
    assert pk.non_maximum_suppression(np.zeros((0, 3)), [], min_distance=1).size == 0
    with pytest.raises(ValueError, match="scores must have shape"):
        pk.non_maximum_suppression(p, s[:3], min_distance=1.0)
    with pytest.raises(ValueError, match="min_distance"):
        pk.non_maximum_suppression(p, s, min_distance=0)


# ----------------------------------------------------------------------------- whole chain


def test_pick_particles_from_a_few_examples(fields, tmp_path):
    images = [f[0] for f in fields]
    truths = [f[1] for f in fields]
    debris = [f[2] for f in fields]
    rng = np.random.default_rng(0)
    jitter = np.c_[rng.uniform(-0.5, 0.5, 5), rng.uniform(-1, 1, (5, 2))]
    examples = [truths[0][:5] + jitter, np.zeros((0, 3))]
    res = pk.pick_particles(images, examples, VS, diameter=DIAMETER, seed=0)
    tp = sum(_match(res.positions[res.image_index == i], truths[i], DIAMETER / 2)
             for i in range(2))
    n_true = sum(len(t) for t in truths)
    precision, recall = tp / len(res), tp / n_true
    assert 2 * precision * recall / (precision + recall) >= 0.9
    debris_hits = sum(_match(res.positions[res.image_index == i], debris[i], DIAMETER / 2)
                      for i in range(2))
    assert debris_hits <= 1  # debris mostly rejected
    assert res.from_example.sum() == 5 and np.all(res.scores >= 0) and np.all(res.scores <= 1)
    assert res.n_candidates.shape == (2,) and res.rounds >= 1
    for i in range(2):  # sorted by score within each image
        assert np.all(np.diff(res.scores[res.image_index == i]) <= 0)
    # the same picks from memory-mapped fields read in tiles of 24 x 24 voxels (9-16 tiles
    # a field, each with its halo): the tiles change nothing, bit for bit
    maps = []
    for i, img in enumerate(images):
        m = np.memmap(tmp_path / f"field{i}.raw", dtype=np.float32, mode="w+", shape=img.shape)
        m[:] = img
        m.flush()
        maps.append(np.memmap(tmp_path / f"field{i}.raw", dtype=np.float32, mode="r",
                              shape=img.shape))
    tiled = pk.pick_particles(maps, examples, VS, diameter=DIAMETER, seed=0, tile=24)
    np.testing.assert_array_equal(tiled.positions, res.positions)
    np.testing.assert_array_equal(tiled.scores, res.scores)
    np.testing.assert_array_equal(tiled.n_candidates, res.n_candidates)


def test_pick_particles_rejects_bad_input(fields):
    images = [f[0] for f in fields]
    ex = [fields[0][1][:4], np.zeros((0, 3))]
    with pytest.raises(ValueError, match="at least 3 example"):
        pk.pick_particles(images, [ex[0][:2], ex[1]], VS, diameter=DIAMETER)
    with pytest.raises(ValueError, match="outside the image"):
        pk.pick_particles(images, [ex[0] + [0, 0, 500], ex[1]], VS, diameter=DIAMETER)
    with pytest.raises(ValueError, match="larger than the image"):
        pk.pick_particles(images, ex, VS, diameter=30.0)
    with pytest.raises(ValueError, match="one \\(K, 3\\) array per image"):
        pk.pick_particles(images, ex[:1], VS, diameter=DIAMETER)
    with pytest.raises(ValueError, match="threshold"):
        pk.pick_particles(images, ex, VS, diameter=DIAMETER, threshold=1.5)
    with pytest.raises(ValueError, match="images is empty"):
        pk.pick_particles([], [], VS, diameter=DIAMETER)
    with pytest.raises(ValueError, match="method"):
        pk.pick_particles(images, ex, VS, diameter=DIAMETER, method="cnn")
