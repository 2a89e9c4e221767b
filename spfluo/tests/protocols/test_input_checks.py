"""Validation that looks at the pixels and the tables, and at the memory a run needs:
every refusal names the file (and the plane) or the parameter, and the project is unchanged."""

import functools

import numpy as np
import pytest
import tifffile

from spfluo.io import write_volume
from spfluo.tests._projects import assert_rejected, finished

VS = (0.3, 0.1, 0.1)


def _field(rng, shape=(8, 32, 32)):
    return (rng.random(shape, dtype=np.float32) + 0.5).astype(np.float32)


@pytest.fixture
def rejected(project):
    return functools.partial(assert_rejected, project)


def test_images_that_are_not_volumes_with_signal_are_refused(rejected, data_dir):
    rng = np.random.default_rng(0)
    tifffile.imwrite(data_dir / "plane.tif", _field(rng, (32, 32)), imagej=True,
                     resolution=(10, 10), metadata={"unit": "micron"})
    rejected("ProtImportFluoImages", r"plane.tif is a 2D image \(one plane of 32 x 32 pixels\)",
             filesPattern=str(data_dir / "plane.tif"))
    stack = np.stack([_field(rng), _field(rng)])
    stack[1, 5, 3, 3] = np.nan
    tifffile.imwrite(data_dir / "nan.tif", np.ascontiguousarray(stack.transpose(1, 0, 2, 3)),
                     imagej=True, resolution=(10, 10),
                     metadata={"axes": "ZCYX", "spacing": 0.3, "unit": "micron"})
    rejected("ProtImportFluoImages", r"nan.tif holds 1 NaN or infinite value\(s\), the first 1 "
             r"in plane z=5 of channel 1", filesPattern=str(data_dir / "nan.tif"))
    inf = _field(rng)
    inf[2] = np.inf
    tifffile.imwrite(data_dir / "inf.ome.tif", inf, ome=True,
                     metadata={"axes": "ZYX", "PhysicalSizeX": 0.1, "PhysicalSizeY": 0.1,
                               "PhysicalSizeZ": 0.3})
    rejected("ProtImportFluoImages", r"inf.ome.tif holds 1024 NaN or infinite value\(s\), the "
             r"first 1024 in plane z=2 of channel 0", filesPattern=str(data_dir / "inf.ome.tif"))
    write_volume(data_dir / "zero.tif", np.zeros((8, 32, 32), np.uint16), VS)
    rejected("ProtImportFluoImages", "zero.tif is all zero: it holds no signal",
             filesPattern=str(data_dir / "zero.tif"))
    write_volume(data_dir / "flat.tif", np.full((8, 32, 32), 3.5, np.float32), VS)
    rejected("ProtImportFluoImages", r"flat.tif is constant \(3.5\)",
             filesPattern=str(data_dir / "flat.tif"))
    # the same checks guard the PSF and the particles
    rejected("ProtImportPSF", "plane.tif is a 2D PSF", psfFile=str(data_dir / "plane.tif"))
    rejected("ProtImportParticles", "zero.tif is all zero", filesPattern=str(data_dir / "zero.tif"))


def test_tables_without_rows_are_refused(project, launch, rejected, data_dir):
    from spfluo.protocols import ProtImportFluoImages

    rng = np.random.default_rng(1)
    write_volume(data_dir / "fov.tif", _field(rng), VS)
    images = finished(launch(ProtImportFluoImages, filesPattern=str(data_dir / "fov.tif")))
    (data_dir / "picks.csv").write_text("image_id,x,y,z\n")
    rejected("ProtImportCoordinates", r"picks.csv lists no coordinate \(only its header\)",
             inputImages=(images, "outputImages"), coordinatesFile=str(data_dir / "picks.csv"))
    for k in range(2):
        write_volume(data_dir / f"p{k}.tif", _field(rng, (12, 12, 12)), (0.1,) * 3)
    (data_dir / "poses.csv").write_text("id,rot,tilt,psi,tx,ty,tz\n")
    rejected("ProtImportParticles", r"poses.csv holds no pose \(only its header\)",
             filesPattern=str(data_dir / "p*.tif"), posesFile=str(data_dir / "poses.csv"))


def test_a_run_that_needs_more_memory_than_the_machine_is_refused(project, launch, rejected,
                                                                   data_dir, monkeypatch):
    from spfluo.io import CoordinateTable, write_coordinates_csv
    from spfluo.protocols import ProtImportCoordinates, ProtImportFluoImages

    rng = np.random.default_rng(2)
    write_volume(data_dir / "fov.tif", _field(rng), VS)
    images = finished(launch(ProtImportFluoImages, filesPattern=str(data_dir / "fov.tif")))
    write_coordinates_csv(data_dir / "c.csv", CoordinateTable(
        image_ids=np.array(["fov"] * 3), positions_zyx_um=np.array([[1.2, 1.5, 1.5]] * 3)))
    coords = finished(launch(ProtImportCoordinates, inputImages=(images, "outputImages"),
                             coordinatesFile=str(data_dir / "c.csv"), boxSize=1.0))
    monkeypatch.setenv("SPFLUO_MEMORY_GB", "0.5")
    # 1 µm at 0.004 µm: 3 particles of 250^3 voxels and the box being read (250 MB), and
    # the coordinates, values and masks of one box (15.6 million points of 34 bytes, 531 MB)
    rejected("ProtExtractParticles",
             r"Extracting the 3 particle\(s\) of image fov in boxes of 250\^3 voxels \(1 µm at "
             r"0.004 µm\) needs about 782 MB of memory at its peak, more than the 500 MB of this "
             r"machine: choose a larger Voxel size \(voxelSize\) or a smaller Box size",
             inputCoordinates=(coords, "outputCoordinates"), voxelSize=0.004)
    monkeypatch.setenv("SPFLUO_MEMORY_GB", "lots")
    rejected("ProtExtractParticles", "SPFLUO_MEMORY_GB='lots' is not a positive number of GB",
             inputCoordinates=(coords, "outputCoordinates"), voxelSize=0.05)
    monkeypatch.delenv("SPFLUO_MEMORY_GB")
    from spfluo.workflow import new_protocol

    prot = new_protocol(project, "ProtExtractParticles",
                        {"inputCoordinates": f"{coords.getObjId()}.outputCoordinates",
                         "voxelSize": "0.004"})
    assert prot.validate() == []  # this machine has the memory


def test_ab_initio_counts_the_particles_it_holds(project, launch, rejected, data_dir,
                                                monkeypatch):
    from spfluo.protocols import ProtImportParticles, ProtImportPSF

    rng = np.random.default_rng(3)
    for k in range(4):
        write_volume(data_dir / f"p{k}.tif", _field(rng, (16, 16, 16)), (0.1,) * 3)
    parts = finished(launch(ProtImportParticles, filesPattern=str(data_dir / "p*.tif")))
    z, y, x = np.indices((7, 7, 7)) - 3
    write_volume(data_dir / "psf.tif", np.exp(-(z**2 + y**2 + x**2) / 2.0).astype(np.float32),
                 (0.1,) * 3)
    psf = finished(launch(ProtImportPSF, psfFile=str(data_dir / "psf.tif")))
    monkeypatch.setenv("SPFLUO_MEMORY_GB", "0.00001")  # 10 kB; the particles: 4 x 16^3 x 4 B
    rejected("ProtAbInitio", r"Holding the 4 particles of 1 x 16\^3 voxels \(Particles, "
             r"inputParticles\) in memory needs about 66 kB of memory at its peak, more than the 10 "
             r"kB of this machine: extract them on coarser voxels",
             inputParticles=(parts, "outputParticles"), inputPSF=(psf, "outputPSF"))
