"""Picking protocols in a project: simulate -> import -> pick -> extract -> select, and the
pipeline check (the extracted particles with their true poses reconstruct the ground truth).
"""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from spfluo.algorithms import phantoms
from spfluo.algorithms.geometry import Poses
from spfluo.algorithms.metrics import normalize_for_comparison, ssim
from spfluo.algorithms.psf import gaussian_psf
from spfluo.algorithms.reconstruct import precompute_sums, reconstruct_admm
from spfluo.algorithms.simulate import simulate_field
from spfluo.io import CoordinateTable, write_coordinates_csv, write_volume
from spfluo.tests._projects import assert_rejected, finished

VS = (0.2, 0.1, 0.1)  # field voxels (z, y, x), micrometres
D = 24  # particle box, voxels of 0.1 µm
SIGMA = (4.8, 1.5, 1.5)  # PSF, in particle voxels (0.1 µm)


@pytest.fixture(scope="module")
def truth():
    """Ground truth: an asymmetric object (channel 0) and a shell (channel 1), 24^3."""
    return np.stack([phantoms.asymmetric_phantom(D, seed=0, supersample=2),
                     phantoms.sphere_shell(D, radius=0.3, thickness=0.08, supersample=2)])


@pytest.fixture(scope="module")
def fovs(truth):
    """Two 2-channel fields: 12 particles (a touching pair), 2 debris each; Eloy et al. 2023 PSF."""
    scale = np.asarray(VS) / VS[2]
    sig = np.asarray(SIGMA) / scale  # in field voxels
    psf = gaussian_psf((2 * int(np.ceil(3 * sig[0])) + 1, 11, 11), sig)
    return [simulate_field(truth, psf, shape=(24, 112, 112), n_particles=12, n_debris=2,
                           touching_pairs=1, noise_std=0.1, voxel_size=VS, seed=k)
            for k in range(2)]


def _diameter(fovs):
    return 0.8 * fovs[0].particle_size * VS[2]


def _write_fields(folder, fovs, name="fov", shape=None):
    for k, f in enumerate(fovs):
        image = f.image if shape is None else np.random.default_rng(k).random(shape, np.float32)
        write_volume(folder / f"{name}_{k}.ome.tif", image, VS)


def _examples_csv(path, positions_vox, image_id="fov_0", seed=0):
    rng = np.random.default_rng(seed)
    pos = positions_vox + rng.uniform(-0.5, 0.5, positions_vox.shape)  # hand picks
    write_coordinates_csv(path, CoordinateTable(
        image_ids=np.array([image_id] * len(pos)),
        positions_zyx_um=np.clip(pos, 0, None) * np.asarray(VS)))


def _match(found_um, truth_um, radius):
    d = np.linalg.norm(found_um[:, None] - truth_um[None], axis=-1)
    r, c = linear_sum_assignment(d)
    ok = d[r, c] <= radius
    return r[ok], c[ok]


def test_pick_extract_select_and_reconstruct(project, launch, data_dir, fovs, truth):
    from spfluo.protocols import (
        ProtExtractParticles,
        ProtImportCoordinates,
        ProtImportFluoImages,
        ProtPickParticles,
        ProtSelectParticles,
    )

    _write_fields(data_dir, fovs)
    images = finished(launch(ProtImportFluoImages, filesPattern=str(data_dir / "fov_*.tif")))
    _examples_csv(data_dir / "examples.csv", fovs[0].positions[:8])
    examples = finished(launch(ProtImportCoordinates, inputImages=(images, "outputImages"),
                               coordinatesFile=str(data_dir / "examples.csv"), boxSize=2.4))
    diameter = _diameter(fovs)
    pick = finished(launch(ProtPickParticles, inputImages=(images, "outputImages"),
                           inputExamples=(examples, "outputCoordinates"), channel=0,
                           diameter=diameter, threshold=0.5))
    coords = pick.outputCoordinates
    assert coords.getBoxSize() == pytest.approx(2.4)  # the examples' box size
    assert coords.getImages().getSize() == 2
    items = coords.items()
    scores = np.array([c.getScore() for c in items])
    assert np.all((scores >= 0) & (scores <= 1))
    # detection quality: F1 against the true centres, half a diameter
    tp = 0
    for k, f in enumerate(fovs):
        mine = np.array([c.getPositionZYX() for c in items if c.getImageId() == f"fov_{k}"])
        tp += len(_match(mine, f.positions * np.asarray(VS), diameter / 2)[0])
    precision, recall = tp / len(items), tp / sum(len(f.positions) for f in fovs)
    assert 2 * precision * recall / (precision + recall) >= 0.9
    assert [p.getObjId() for p in project.getSourceParents(coords)] == [images.getObjId(),
                                                                         examples.getObjId()]

    extract = finished(launch(ProtExtractParticles,
                              inputCoordinates=(pick, "outputCoordinates")))
    parts = extract.outputParticles
    assert parts.getSize() == len(items) and not parts.hasPoses()
    assert parts.getVoxelSize() == pytest.approx((0.1, 0.1, 0.1))  # the images' x voxel
    assert parts.getNumChannels() == 2 and tuple(parts.getBoxShape()) == (D, D, D)
    by_id = {c.getObjId(): c for c in items}
    from spfluo.objects.arrays import load_array

    particles, rotations, shifts = [], [], []
    for p in parts.items():
        c = by_id[p.getObjId()]
        assert p.getCoordinate().getPosition() == pytest.approx(c.getPosition())
        assert p.getSourceImageId() == c.getImageId()
        f = fovs[int(c.getImageId()[-1])]
        # the true particle at this pick, and its pose in the particle box: the rotation of
        # the simulation, the translation (true centre - box centre) in particle voxels
        centre = c.getPositionZYX()
        true_um = f.positions * np.asarray(VS)
        j = np.argmin(np.linalg.norm(true_um - centre, axis=1))
        if np.linalg.norm(true_um[j] - centre) > diameter / 2:
            continue  # a false pick
        particles.append(load_array(p))
        rotations.append(f.poses.rotations[j])
        shifts.append((true_um[j] - centre) / 0.1)
    assert len(particles) >= 20
    sums = precompute_sums(np.stack(particles)[:, :1], Poses(np.stack(rotations),
                                                             np.stack(shifts)),
                           gaussian_psf((D - 1,) * 3, SIGMA[:2]))
    volume = reconstruct_admm(sums, regularizer="hessian", weight=3e-4, iterations=60).volume
    assert ssim(normalize_for_comparison(volume[0], truth[0]), truth[0]) >= 0.85

    # select: by score, then an exclusion list, on coordinates and on particles
    ids = sorted(by_id)
    sel = finished(launch(ProtSelectParticles, inputSet=(pick, "outputCoordinates"),
                          minScore=0.9, excludeIds=f"{ids[0]}, {ids[1]}-{ids[2]}"))
    kept = sel.outputCoordinates
    expected = [i for i in ids[3:] if by_id[i].getScore() >= 0.9]
    assert sorted(c.getObjId() for c in kept.items()) == expected
    assert kept.getImages().getSize() == 2 and kept.getBoxSize() == pytest.approx(2.4)
    sel2 = finished(launch(ProtSelectParticles, inputSet=(extract, "outputParticles"),
                           excludeIds=str(ids[-1])))
    assert sel2.outputParticles.getSize() == parts.getSize() - 1
    assert sel2.outputParticles.getVoxelSize() == pytest.approx((0.1,) * 3)


def test_bad_picking_inputs_are_rejected(project, launch, data_dir, fovs):
    from spfluo.protocols import (
        ProtExtractParticles,
        ProtImportCoordinates,
        ProtImportFluoImages,
        ProtPickParticles,
        ProtSelectParticles,
    )

    (data_dir / "small").mkdir()
    (data_dir / "big").mkdir()
    _write_fields(data_dir / "small", fovs[:1])
    _write_fields(data_dir / "big", fovs[:1], shape=(2, 24, 200, 200))
    small = finished(launch(ProtImportFluoImages,
                            filesPattern=str(data_dir / "small" / "fov_*.tif")))
    big = finished(launch(ProtImportFluoImages, filesPattern=str(data_dir / "big" / "fov_*.tif")))
    far = np.array([[10, 150, 150], [10, 160, 160.0]])  # two picks, outside the small fields
    _examples_csv(data_dir / "far.csv", far)
    outside = finished(launch(ProtImportCoordinates, inputImages=(big, "outputImages"),
                              coordinatesFile=str(data_dir / "far.csv"), boxSize=2.4))
    _examples_csv(data_dir / "ok.csv", fovs[0].positions[:4])
    ok = finished(launch(ProtImportCoordinates, inputImages=(small, "outputImages"),
                         coordinatesFile=str(data_dir / "ok.csv"), boxSize=2.4))
    good = dict(inputImages=(small, "outputImages"), inputExamples=(ok, "outputCoordinates"),
                diameter=1.5)
    for match in ("Only 2 example", "outside image fov_0"):
        assert_rejected(project, ProtPickParticles, match,
                        **{**good, "inputExamples": (outside, "outputCoordinates")})
    assert_rejected(project, ProtPickParticles, "larger than the images",
                    **{**good, "diameter": 50.0})
    assert_rejected(project, ProtPickParticles, "fewer than 3 voxels",
                    **{**good, "diameter": 0.2})
    assert_rejected(project, ProtPickParticles, "channel 5 does not exist",
                    **{**good, "channel": 5})
    assert_rejected(project, ProtPickParticles, "threshold must be in",
                    **{**good, "threshold": 1.5})
    assert_rejected(project, ProtPickParticles, "Choose the example",
                    inputImages=(small, "outputImages"), diameter=1.5)

    coords = (ok, "outputCoordinates")
    assert_rejected(project, ProtExtractParticles, "at least 4",
                    inputCoordinates=coords, boxSize=0.3)
    assert_rejected(project, ProtExtractParticles, "larger than the images",
                    inputCoordinates=coords, boxSize=20.0)
    assert_rejected(project, ProtExtractParticles, "Voxel size must be",
                    inputCoordinates=coords, voxelSize=-0.1)

    assert_rejected(project, ProtSelectParticles, "Give a minimum score",
                    inputSet=coords)
    assert_rejected(project, ProtSelectParticles, "not an id or a range",
                    inputSet=coords, excludeIds="3 a")
    assert_rejected(project, ProtSelectParticles, r"\[99\] are not in the input set",
                    inputSet=coords, excludeIds="99")
    assert_rejected(project, ProtSelectParticles, "have no score",
                    inputSet=coords, minScore=0.5)
    assert_rejected(project, ProtSelectParticles, "keeps no item",
                    inputSet=coords, excludeIds="1-4")
