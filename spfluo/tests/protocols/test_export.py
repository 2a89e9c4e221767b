"""Export of particles with poses: RELION 3.1 STAR checked against RELION's Euler matrix,
CSV, MRC particles and volumes with their voxel sizes, the export folder's safety."""

import functools
import os

import mrcfile
import numpy as np
import pytest

from spfluo.io import read_poses_csv, read_star, read_volume, write_poses_csv, write_volume
from spfluo.tests._projects import assert_rejected, finished, launch_protocol, new_project
from spfluo.tests._relion import relion_matrix

VOXEL = 0.05


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Four 2-channel particles with known poses, their average volume, one export."""
    root = tmp_path_factory.mktemp("export")
    data_dir = root / "data"
    data_dir.mkdir()
    with new_project(root / "project") as project:
        yield (project, data_dir) + _export(functools.partial(launch_protocol, project),
                                            data_dir)


def _export(launch, data_dir):
    from spfluo.protocols import (
        ProtExportParticles,
        ProtImportParticles,
        ProtReconstructKnownPoses,
    )

    rng = np.random.default_rng(0)
    for k in range(4):
        write_volume(data_dir / f"p{k}.tif", rng.random((2, 12, 12, 12), dtype=np.float32),
                     (VOXEL,) * 3)
    angles = rng.uniform([-180, 0, -180], [180, 180, 180], (4, 3))
    shifts = rng.uniform(-0.1, 0.1, (4, 3))
    matrices = np.tile(np.eye(4), (4, 1, 1))
    matrices[:, :3, :3] = [relion_matrix(*a) for a in angles]
    matrices[:, :3, 3] = shifts
    write_poses_csv(data_dir / "poses.csv", np.arange(1, 5), matrices)
    parts = finished(launch(ProtImportParticles, filesPattern=str(data_dir / "p*.tif"),
                            posesFile=str(data_dir / "poses.csv")))
    volume = finished(launch(ProtReconstructKnownPoses, inputParticles=(parts, "outputParticles"),
                             method=3, doHalfMaps=False))
    folder = data_dir / "export"
    exp = finished(launch(ProtExportParticles, inputParticles=(parts, "outputParticles"),
                          inputVolume=(volume, "outputVolume"), channel=1,
                          exportFolder=str(folder)))
    return parts, volume, exp, folder, matrices


def test_star_rotations_follow_relion(exported):
    _, _, parts, _, _, folder, matrices = exported
    star = read_star(folder / "particles.star")
    optics, particles = star["optics"], star["particles"]
    assert optics["rlnImagePixelSize"][0] == pytest.approx(VOXEL * 1e4)
    assert optics["rlnImageSize"][0] == 12 and optics["rlnImageDimensionality"][0] == 3
    by_id = {int(i): k for k, i in enumerate(particles["rlnImageId"])}
    for pid, k in by_id.items():
        angles = [particles[f"rlnAngle{n}"][k] for n in ("Rot", "Tilt", "Psi")]
        np.testing.assert_allclose(relion_matrix(*angles), matrices[pid - 1, :3, :3],
                                   atol=1e-6)
        origin = [particles[f"rlnOrigin{a}Angst"][k] for a in "XYZ"]
        np.testing.assert_allclose(origin, -matrices[pid - 1, :3, 3] * 1e4, atol=1e-4)
        assert particles["rlnImageName"][k] == f"particle_{pid:06d}.mrc"


def test_mrc_particles_csv_and_volume_keep_values_and_sizes(exported):
    project, _, parts, volume, exp, folder, matrices = exported
    for p in parts.outputParticles.items():
        with mrcfile.open(folder / f"particle_{p.getObjId():06d}.mrc") as mrc:
            assert float(mrc.voxel_size.x) == pytest.approx(VOXEL * 1e4, rel=1e-5)
            np.testing.assert_array_equal(mrc.data, read_volume(p.getFileName()).data[1])
    table = read_poses_csv(folder / "poses.csv")
    np.testing.assert_allclose(table.matrices[np.argsort(table.ids)], matrices, atol=1e-6)
    data = read_volume(os.path.join(project.getPath(), volume.outputVolume.getFileName())).data
    ome = read_volume(folder / "volume.ome.tif")
    assert ome.voxel_size == pytest.approx((VOXEL,) * 3)
    np.testing.assert_array_equal(ome.data, data)
    for c in range(2):
        mrc = read_volume(folder / f"volume_c{c}.mrc")
        assert mrc.voxel_size == pytest.approx((VOXEL,) * 3)
        np.testing.assert_array_equal(mrc.data[0], data[c])
    # the same files in the run's folder, and the manifest of what spfluo wrote
    assert sorted(os.listdir(exp._getExtraPath("export"))) == sorted(
        n for n in os.listdir(folder) if not n.startswith("."))
    assert (folder / ".spfluo-files.json").exists()


def test_an_export_folder_of_other_files_is_refused(exported):
    project, data_dir, parts, _, _, _, _ = exported
    from spfluo.protocols import ProtExportParticles, ProtImportParticles

    other = data_dir / "theirs"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert_rejected(project, ProtExportParticles, "theirs is not empty and spfluo did not "
                    "write it", inputParticles=(parts, "outputParticles"),
                    exportFolder=str(other))
    assert (other / "notes.txt").read_text() == "mine"
    assert_rejected(project, ProtExportParticles, "Channel 2 does not exist",
                    inputParticles=(parts, "outputParticles"), channel=2)
    bare = finished(launch_protocol(project, ProtImportParticles,
                                    filesPattern=str(data_dir / "p*.tif")))  # no poses file
    assert_rejected(project, ProtExportParticles, "have no poses",
                    inputParticles=(bare, "outputParticles"))
