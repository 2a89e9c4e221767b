"""Large fields of view: refusals from header sizes alone, before any pixel is read.

The large files are sparse (a TIFF header and a hole): 2 GiB on paper, a few kB on disk.
"""

import time

import numpy as np
import tifffile

from spfluo.constants import EXIT_JOB_ERROR
from spfluo.io import write_particle_table, write_volume
from spfluo.jobs.__main__ import main
from spfluo.jobs.jobfile import write_job
from spfluo.tests._projects import assert_rejected, finished

VS = (0.3, 0.1, 0.1)


def _sparse_field(path, shape=(128, 2048, 2048)):
    """A float32 OME-TIFF of ``shape`` whose pixels are never written (2 GiB by default)."""
    tifffile.imwrite(path, shape=shape, dtype=np.float32, ome=True,
                     metadata={"axes": "ZYX", "PhysicalSizeZ": VS[0], "PhysicalSizeY": VS[1],
                               "PhysicalSizeX": VS[2]})
    return path


def test_a_field_given_as_psf_is_refused_at_once(project, data_dir):
    from spfluo.protocols import ProtImportPSF

    path = _sparse_field(data_dir / "field.ome.tif")
    start = time.perf_counter()
    assert_rejected(project, ProtImportPSF,
                    r"128 x 2048 x 2048 voxels .*2\.1 GB as float32.*much larger than any "
                    r"particle box.*'import images'", psfFile=str(path))
    assert time.perf_counter() - start < 5.0


def test_a_job_refuses_a_field_as_psf_before_reading_it(tmp_path, capsys):
    particle = np.random.default_rng(0).random((1, 16, 16, 16), np.float32)
    write_volume(tmp_path / "p.ome.tif", particle, (0.1,) * 3)
    write_particle_table(tmp_path / "particles.csv", np.array([1]),
                         [str(tmp_path / "p.ome.tif")], np.eye(4)[None])
    psf = _sparse_field(tmp_path / "field.ome.tif")
    job = write_job(tmp_path / "job.json", step="reconstruct",
                    inputs={"particles": tmp_path / "particles.csv", "psf": psf},
                    params={"method": "tikhonov", "weight": 1e-3, "symmetry": 1,
                            "channels": None, "half_maps": False},
                    outputs={"volume": tmp_path / "out" / "v.ome.tif",
                             "summary": tmp_path / "out" / "s.json"}, seed=0)
    start = time.perf_counter()
    assert main(["reconstruct", str(job)]) == EXIT_JOB_ERROR
    assert time.perf_counter() - start < 5.0
    assert "much larger than any particle box" in capsys.readouterr().err


def test_picking_memory_and_cluster_are_checked_before_launch(project, launch, data_dir, monkeypatch):
    from spfluo.protocols.base import MEMORY_VAR
    from spfluo.io import CoordinateTable, write_coordinates_csv
    from spfluo.protocols import (
        ProtExtractParticles,
        ProtImportCoordinates,
        ProtImportFluoImages,
        ProtPickParticles,
    )

    rng = np.random.default_rng(0)
    write_volume(data_dir / "fov_0.ome.tif", rng.random((12, 64, 64), np.float32), VS)
    images = finished(launch(ProtImportFluoImages, filesPattern=str(data_dir / "fov_*.tif")))
    write_coordinates_csv(data_dir / "ex.csv", CoordinateTable(
        image_ids=np.array(["fov_0"] * 3),
        positions_zyx_um=np.array([[1.0, 2, 2], [1.5, 3, 4], [2, 4, 3]])))
    examples = finished(launch(ProtImportCoordinates, inputImages=(images, "outputImages"),
                               coordinatesFile=str(data_dir / "ex.csv"), boxSize=1.5))
    form = dict(inputImages=(images, "outputImages"),
                inputExamples=(examples, "outputCoordinates"), diameter=1.0)
    # the tiles with their halos cannot fit: the estimate and the parameter to raise
    assert_rejected(project, ProtPickParticles,
                    r"Image fov_0: picking a field of 12 x 64 x 64 voxels .*needs at least "
                    r"0\.\d\d GB.*0\.05 GB allowed.*raise Memory \(GB\) \(memoryGb\)",
                    memoryGb=0.05, **form)
    assert_rejected(project, ProtPickParticles, r"Memory \(GB\) must be > 0",
                    memoryGb=0.0, **form)
    assert_rejected(project, ProtPickParticles, r"Dask scheduler 'node; ls' is not the "
                    r"address of a Dask scheduler", scheduler="node; ls", **form)
    assert_rejected(project, ProtExtractParticles, r"Dask scheduler 'tcp:/x' is not",
                    inputCoordinates=(examples, "outputCoordinates"), scheduler="tcp:/x")
    # the estimate against the machine's memory
    monkeypatch.setenv(MEMORY_VAR, "0.1")
    assert_rejected(project, ProtPickParticles,
                    r"Picking image fov_0 \(12 x 64 x 64 voxels, z, y, x\) in 1 tile\(s\) needs "
                    r"about \d+ MB of memory at its peak, more than the 100 MB of this machine: "
                    r"lower Memory \(GB\)", **form)
