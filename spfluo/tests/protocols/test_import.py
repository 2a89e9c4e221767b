"""Import protocols: real runs in a project, outputs, provenance, reopening, bad inputs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from spfluo.io import write_coordinates_csv, write_poses_csv, write_volume
from spfluo.io.coordinates import CoordinateTable
from spfluo.tests._projects import assert_rejected


def _blobs(shape, rng, n=3):
    z, y, x = np.indices(shape)
    vol = np.zeros(shape, np.float32)
    for _ in range(n):
        c = rng.uniform(2, np.array(shape) - 3)
        vol += np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / 4.0)
    return vol


@pytest.fixture
def fields(data_dir):
    """Two 2-channel fields of view (ImageJ TIFF) with voxel size (0.3, 0.1, 0.1) µm."""
    rng = np.random.default_rng(0)
    paths = []
    for k in range(2):
        vol = np.stack([_blobs((8, 24, 20), rng), _blobs((8, 24, 20), rng)])
        p = data_dir / f"fov_{k}.tif"
        write_volume(p, vol, (0.3, 0.1, 0.1))
        paths.append(p)
    return paths


def test_import_images(project, launch, fields, data_dir):
    from spfluo.protocols import ProtImportFluoImages

    prot = launch(ProtImportFluoImages, filesPattern=str(data_dir / "fov_*.tif"))
    assert prot.getStatus() == "finished", prot.getErrorMessage()
    images = prot.outputImages
    assert images.getSize() == 2
    assert images.getVoxelSize() == pytest.approx((0.3, 0.1, 0.1))
    assert images.getNumChannels() == 2
    assert sorted(images.getImageIds()) == ["fov_0", "fov_1"]
    first = images.items()[0]
    assert first.getShape() == (2, 8, 24, 20)
    from spfluo.objects.arrays import load_array

    arr = load_array(first)
    assert arr.shape == (2, 8, 24, 20) and arr.dtype == np.float32


def test_import_then_reopen_in_a_new_process(project, launch, fields, data_dir):
    from spfluo.protocols import ProtImportCoordinates, ProtImportFluoImages

    imp = launch(ProtImportFluoImages, filesPattern=str(data_dir / "fov_*.tif"))
    table = CoordinateTable(image_ids=np.array(["fov_0", "fov_1", "fov_1"]),
                            positions_zyx_um=np.array([[0.9, 1.2, 1.0], [0.3, 0.5, 0.5],
                                                       [2.1, 2.3, 1.9]]))
    write_coordinates_csv(data_dir / "coords.csv", table)
    coords = launch(ProtImportCoordinates, inputImages=(imp, "outputImages"),
                    coordinatesFile=str(data_dir / "coords.csv"), boxSize=0.8)
    assert coords.getStatus() == "finished", coords.getErrorMessage()
    assert coords.outputCoordinates.getSize() == 3
    code = f"""
import json, sys
from spfluo.environment import bootstrap
bootstrap({os.environ['SPFLUO_HOME']!r})
from spfluo.workflow import open_project, describe_runs
proj = open_project({project.getPath()!r})
runs = describe_runs(proj)
coords = proj.getProtocol({coords.getObjId()}).outputCoordinates
c = coords.items()[2]
imgs = coords.getImages()
parents = [p.getObjId() for p in proj.getSourceParents(coords)]
print(json.dumps({{"runs": [[r.run_id, r.class_name, r.status, [o[0] for o in r.outputs],
                            r.inputs] for r in runs],
                  "pos": c.getPosition(), "image": c.getImageId(), "box": coords.getBoxSize(),
                  "n_images": imgs.getSize(), "voxel": list(imgs.getVoxelSize()),
                  "parents": parents}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["runs"] == [
        [imp.getObjId(), "ProtImportFluoImages", "finished", ["outputImages"], []],
        [coords.getObjId(), "ProtImportCoordinates", "finished", ["outputCoordinates"],
         [["inputImages", imp.getObjId(), "outputImages"]]],
    ]
    assert data["pos"] == pytest.approx([1.9, 2.3, 2.1])
    assert data["image"] == "fov_1" and data["box"] == pytest.approx(0.8)
    assert data["n_images"] == 2 and data["voxel"] == pytest.approx([0.3, 0.1, 0.1])
    # provenance: the coordinates derive from the import run's outputImages
    assert data["parents"] == [imp.getObjId()]


def test_import_psf_is_centred_and_normalised(project, launch, data_dir):
    from spfluo.protocols import ProtImportPSF

    z, y, x = np.indices((15, 21, 21))
    psf = np.exp(-((z - 8.6) ** 2 / 8 + (y - 9.2) ** 2 / 2 + (x - 11.4) ** 2 / 2)) * 7.0
    write_volume(data_dir / "psf.tif", psf.astype(np.float32), (0.2, 0.1, 0.1))
    prot = launch(ProtImportPSF, psfFile=str(data_dir / "psf.tif"))
    assert prot.getStatus() == "finished", prot.getErrorMessage()
    from spfluo.objects.arrays import load_array

    out = load_array(prot.outputPSF)[0]
    assert out.sum() == pytest.approx(1.0, rel=1e-4)
    com = np.array([(np.indices(out.shape)[k] * out).sum() for k in range(3)])
    assert com == pytest.approx([7, 10, 10], abs=0.05)
    assert prot.outputPSF.getVoxelSize() == pytest.approx((0.2, 0.1, 0.1))


def test_several_beads_are_registered_and_averaged(project, launch, data_dir):
    from spfluo.objects.arrays import load_array
    from spfluo.protocols import ProtImportPSF
    from spfluo.tests._psf import analytic_gaussian

    rng = np.random.default_rng(4)
    vs, sigma = (0.15, 0.05, 0.05), (0.25, 0.08, 0.08)
    for k in range(3):  # beads of different brightness and shape, off centre, on a background
        shape = (17, 25, 25 + 2 * k)
        bead = 2000 * (k + 1) * analytic_gaussian(shape, vs, sigma, rng.uniform(-0.06, 0.06, 3))
        write_volume(data_dir / f"bead_{k}.tif",
                     (bead + 100 + rng.normal(0, 3, shape)).astype(np.float32), vs)
    prot = launch(ProtImportPSF, psfFile=str(data_dir / "bead_*.tif"))
    assert prot.getStatus() == "finished", prot.getErrorMessage()
    out = load_array(prot.outputPSF)[0]
    assert out.shape == (17, 25, 25) and prot.outputPSF.getVoxelSize() == pytest.approx(vs)
    expected = analytic_gaussian((17, 25, 25), vs, sigma)
    expected /= expected.sum()
    assert np.abs(out - expected).max() < 0.02 * expected.max()
    log = open(prot.getLogPaths()[0]).read()
    assert log.count("correlation with the average") == 3
    assert "3 beads registered and averaged" in log


def test_import_particles_with_poses(project, launch, data_dir):
    from spfluo.protocols import ProtImportParticles

    rng = np.random.default_rng(1)
    for k in range(3):
        write_volume(data_dir / f"p{k}.ome.tif", _blobs((12, 12, 12), rng), (0.05, 0.05, 0.05))
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[:, 0, 3] = [0.1, -0.05, 0.0]
    poses[2, :3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    write_poses_csv(data_dir / "poses.csv", np.arange(3), poses)
    prot = launch(ProtImportParticles, filesPattern=str(data_dir / "p*.ome.tif"),
                  posesFile=str(data_dir / "poses.csv"))
    assert prot.getStatus() == "finished", prot.getErrorMessage()
    parts = prot.outputParticles
    assert parts.getSize() == 3 and parts.hasPoses()
    items = parts.items()
    assert [p.getImageId() for p in items] == ["p0", "p1", "p2"]
    for p, m in zip(items, poses):
        np.testing.assert_allclose(p.getTransform().getMatrix(), m, atol=1e-9)

    # the convert layer hands them to a job and takes new poses back
    from spfluo.io import read_particle_table
    from spfluo.protocols.convert import particles_with_poses, write_particles_for_job

    table = read_particle_table(write_particles_for_job(parts, str(data_dir / "job.csv")))
    assert table.ids.tolist() == [p.getObjId() for p in items]
    np.testing.assert_allclose(table.matrices, poses, atol=1e-9)
    new = {pid: np.eye(4) for pid in table.ids.tolist()}
    out = particles_with_poses(parts, new, str(data_dir / "new.sqlite"),
                               extra_attributes={table.ids[0]: {"_score": 0.5}})
    assert out.getSize() == 3 and out.hasPoses()
    first = out.items()[0]
    np.testing.assert_allclose(first.getTransform().getMatrix(), np.eye(4))
    assert first.getFileName() == items[0].getFileName() and first._score.get() == 0.5
    with pytest.raises(ValueError, match="no estimated pose"):
        particles_with_poses(parts, {}, str(data_dir / "none.sqlite"))


# ------------------------------------------------------------ bad inputs
def test_bad_image_imports_are_rejected(project, launch, fields, data_dir):
    from spfluo.protocols import ProtImportFluoImages

    ok = launch(ProtImportFluoImages, filesPattern=str(data_dir / "fov_*.tif"))
    assert_rejected(project, ProtImportFluoImages, "empty", filesPattern="")
    assert_rejected(project, ProtImportFluoImages, "No file matches",
                    filesPattern=str(data_dir / "nothing_*.tif"))
    (data_dir / "broken.tif").write_bytes(b"II*\x00garbage")
    assert_rejected(project, ProtImportFluoImages, "broken.tif",
                    filesPattern=str(data_dir / "broken.tif"))
    import tifffile

    tifffile.imwrite(data_dir / "novs.tif", _blobs((6, 8, 8), np.random.default_rng(5)),
                     photometric="minisblack")
    assert_rejected(project, ProtImportFluoImages, "no voxel size.*given below",
                    filesPattern=str(data_dir / "novs.tif"))
    rng = np.random.default_rng(6)
    write_volume(data_dir / "mix_a.tif", _blobs((6, 8, 8), rng), (0.3, 0.1, 0.1))
    write_volume(data_dir / "mix_b.tif", _blobs((6, 8, 8), rng), (0.2, 0.1, 0.1))
    assert_rejected(project, ProtImportFluoImages, "Voxel sizes differ",
                    filesPattern=str(data_dir / "mix_*.tif"))
    write_volume(data_dir / "ch_a.tif", np.stack([_blobs((6, 8, 8), rng)] * 2), (0.3, 0.1, 0.1))
    write_volume(data_dir / "ch_b.tif", _blobs((6, 8, 8), rng), (0.3, 0.1, 0.1))
    assert_rejected(project, ProtImportFluoImages, "Channel counts differ",
                    filesPattern=str(data_dir / "ch_*.tif"))
    assert_rejected(project, ProtImportFluoImages, "Voxel size must be > 0",
                    filesPattern=str(data_dir / "fov_*.tif"), voxelSizeSource=1, voxelSizeZ=0.0)
    # the earlier run and its output are intact
    assert project.getProtocol(ok.getObjId()).outputImages.getSize() == 2


def test_engine_launch_of_invalid_protocol_fails_cleanly(project, launch, data_dir):
    """Launched without our pre-validation, the engine marks the run failed with the message."""
    from spfluo.protocols import ProtImportFluoImages

    prot = launch(ProtImportFluoImages, filesPattern=str(data_dir / "nothing_*.tif"))
    assert prot.getStatus() == "failed"
    assert "No file matches" in prot.getErrorMessage()
    assert not list(prot.iterOutputAttributes())


def test_bad_psf_and_particles_and_coordinates(project, launch, fields, data_dir):
    from spfluo.protocols import ProtImportCoordinates, ProtImportFluoImages, ProtImportParticles, \
        ProtImportPSF

    assert_rejected(project, ProtImportPSF, "does not exist", psfFile=str(data_dir / "none.tif"))
    write_volume(data_dir / "zero.tif", np.zeros((5, 5, 5), np.float32), (0.1, 0.1, 0.1))
    assert_rejected(project, ProtImportPSF, "zero.tif is all zero", psfFile=str(data_dir / "zero.tif"))
    nan = np.ones((5, 5, 5), np.float32)
    nan[2, 2, 2] = np.nan
    import tifffile

    tifffile.imwrite(data_dir / "nan.tif", nan, imagej=True, resolution=(10, 10),
                     metadata={"spacing": 0.1, "unit": "micron"})
    assert_rejected(project, ProtImportPSF, "nan.tif", psfFile=str(data_dir / "nan.tif"))

    rng = np.random.default_rng(2)
    for k in range(3):
        write_volume(data_dir / f"q{k}.tif", _blobs((10, 10, 10), rng), (0.05, 0.05, 0.05))
    write_poses_csv(data_dir / "two.csv", np.arange(2), np.tile(np.eye(4), (2, 1, 1)))
    assert_rejected(project, ProtImportParticles, "2 pose.*3 particle",
                    filesPattern=str(data_dir / "q*.tif"), posesFile=str(data_dir / "two.csv"))
    write_volume(data_dir / "r0.tif", _blobs((10, 12, 12), rng), (0.05, 0.05, 0.05))
    assert_rejected(project, ProtImportParticles, "cubic", filesPattern=str(data_dir / "r0.tif"))

    imp = launch(ProtImportFluoImages, filesPattern=str(data_dir / "fov_*.tif"))
    outside = CoordinateTable(image_ids=np.array(["fov_0"]),
                              positions_zyx_um=np.array([[0.5, 1.0, 5.0]]))
    write_coordinates_csv(data_dir / "outside.csv", outside)
    assert_rejected(project, ProtImportCoordinates, "outside image fov_0",
                    inputImages=(imp, "outputImages"),
                    coordinatesFile=str(data_dir / "outside.csv"), boxSize=1.0)
    unknown = CoordinateTable(image_ids=np.array(["fov_9"]),
                              positions_zyx_um=np.array([[0.5, 1.0, 1.0]]))
    write_coordinates_csv(data_dir / "unknown.csv", unknown)
    assert_rejected(project, ProtImportCoordinates, "fov_9",
                    inputImages=(imp, "outputImages"),
                    coordinatesFile=str(data_dir / "unknown.csv"), boxSize=1.0)
