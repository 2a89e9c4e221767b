"""Extraction says which voxel size and box it chose and why; `spfluo project show` lists the
voxel sizes and shapes of image and particle sets."""

import numpy as np

from spfluo.io import CoordinateTable, write_coordinates_csv, write_volume
from spfluo.tests._projects import finished


def test_automatic_voxel_size_and_box_come_with_their_reason(project, launch, data_dir):
    from spfluo.protocols import ProtExtractParticles, ProtImportCoordinates, ProtImportFluoImages
    from spfluo.workflow import describe_runs

    rng = np.random.default_rng(0)
    for k in range(2):
        write_volume(data_dir / f"fov_{k}.tif", rng.random((2, 10, 40, 48), dtype=np.float32),
                     (0.3, 0.1, 0.1))
    images = finished(launch(ProtImportFluoImages, filesPattern=str(data_dir / "fov_*.tif")))
    write_coordinates_csv(data_dir / "c.csv", CoordinateTable(
        image_ids=np.array(["fov_0", "fov_1", "fov_1"]),
        positions_zyx_um=np.array([[1.5, 2.0, 2.0], [1.2, 1.9, 2.4], [1.5, 1.8, 2.6]])))
    coords = finished(launch(ProtImportCoordinates, inputImages=(images, "outputImages"),
                             coordinatesFile=str(data_dir / "c.csv"), boxSize=0.8))
    ext = finished(launch(ProtExtractParticles, inputCoordinates=(coords, "outputCoordinates")))
    expected = ("voxel 0.1 µm: the finest axis (x) of the fields, whose voxels are 0.3 x 0.1 x "
                "0.1 µm (z, y, x); box 0.8 µm = 8^3 voxels: the box of the coordinates, given "
                "at the import (Box size)")
    assert f"Chosen: {expected}." in project.getProtocol(ext.getObjId()).summary()
    assert f"particles: {expected}" in open(ext.getLogPaths()[0]).read()
    assert ext.outputParticles.getVoxelSize() == (0.1, 0.1, 0.1)
    outputs = {r.run_id: r.outputs for r in describe_runs(project)}
    (name, cls, text, _), = outputs[images.getObjId()]
    assert text == ("2 item(s), 2 channel(s) of 10 x 40 x 48 voxels (z, y, x), voxel 0.3 x 0.1 "
                    "x 0.1 µm")
    (_, _, text, _), = outputs[ext.getObjId()]
    assert text == "3 item(s), 2 channel(s) of 8 x 8 x 8 voxels (z, y, x), voxel 0.1 x 0.1 x 0.1 µm"
    (_, _, text, _), = outputs[coords.getObjId()]
    assert text == "3 item(s), box 0.8 µm (given at the import (Box size))"
