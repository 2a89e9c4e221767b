"""From an acquisition to a result through the `spfluo` command, with no Python in between:
ImageJ fields at (0.15, 0.05, 0.05) µm, a bead measured at the fields' sampling, larger than
the particles' box and off centre on a camera background, a picks CSV.

The full-size path (64 x 128 x 128 fields) is ``benchmarks/user_path.py``; this is the same
path on smaller fields and a short ab initio.
"""

import glob
import os

import numpy as np
import pytest

from spfluo.algorithms.psf import gibson_lanni_psf
from spfluo.algorithms.psf_preparation import prepare_psf
from spfluo.batch.simulated import write_acquisition
from spfluo.io import read_star, read_volume
from spfluo.tests._user_path import run_user_path

FIELD_VS = (0.15, 0.05, 0.05)


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    root = tmp_path_factory.mktemp("user")
    acq = write_acquisition(root / "data", field_shape=(32, 80, 80), particle_box=16,
                            particles_per_field=5, n_examples=3)
    result = run_user_path(acq, home=root / "home", project="mine", export=root / "export",
                           abinitio={"maxEpochs": 2, "nDirections": 8, "nPsi": 4,
                                     "finalReconstruction": 3})
    return root, acq, result


def test_every_command_succeeds(path):
    _, _, result = path
    assert result.failed is None, result.failed
    for step in ("images", "psf", "picks", "pick", "extract", "abinitio", "export"):
        assert f"run #{result.runs[step]} " in result.outputs[step]
        assert ": finished" in result.outputs[step]


def test_picking_and_extraction_say_what_they_did(path):
    _, _, result = path
    n = int(result.outputs["pick"].split("outputCoordinates: SetOfCoordinates3D")[1]
            .split("(")[1].split()[0])
    assert 8 <= n <= 12  # 10 particles in the two fields
    assert ("Chosen: voxel 0.05 µm: the finest axis (x) of the fields, whose voxels are 0.15 x "
            "0.05 x 0.05 µm (z, y, x); box 0.8 µm = 16^3 voxels: the box of the coordinates"
            in result.outputs["extract"])
    show = result.outputs["show"]
    assert "1 channel(s) of 32 x 80 x 80 voxels (z, y, x), voxel 0.15 x 0.05 x 0.05 µm" in show
    assert "1 channel(s) of 16 x 16 x 16 voxels (z, y, x), voxel 0.05 x 0.05 x 0.05 µm" in show


def test_the_bead_became_the_particles_psf(path):
    root, acq, result = path
    run = glob.glob(str(root / "home" / "projects" / "mine" / "Runs" /
                        f"{int(result.runs['abinitio']):06d}_*"))[0]
    log = open(os.path.join(run, "logs", "run.stdout")).read()
    assert ("PSF 21x31x31 voxels of (0.15, 0.05, 0.05) µm (z, y, x) -> 16x16x16 voxels of "
            "(0.05, 0.05, 0.05) µm" in log)
    used = read_volume(os.path.join(run, "extra", "psf_prepared.ome.tif"))
    assert used.voxel_size == pytest.approx((0.05,) * 3)
    # the noise-free PSF of the acquisition, computed at the particles' sampling over the
    # bead's extent, centred on its centre of mass, in the particles' box
    fine = gibson_lanni_psf((63, 31, 31), voxel_size=0.05, numerical_aperture=1.4,
                            wavelength=0.52, immersion_index=1.518, sample_index=1.38,
                            depth=2.0)
    truth = prepare_psf(fine, 0.05, shape=16, subtract_background=False).psf[0]
    assert np.abs(used.data[0] - truth).max() < 0.06 * truth.max()


def test_the_results_are_exported(path):
    root, _, result = path
    export = root / "export"
    star = read_star(export / "particles.star")
    n = len(star["particles"]["rlnImageId"])
    assert star["optics"]["rlnImageSize"][0] == 16
    assert star["optics"]["rlnImagePixelSize"][0] == pytest.approx(500.0)  # Angstrom
    assert {"poses.csv", "volume.mrc", "volume.ome.tif"} <= set(os.listdir(export))
    assert len(glob.glob(str(export / "particle_*.mrc"))) == n
    assert read_volume(export / "volume.mrc").voxel_size == pytest.approx((0.05,) * 3)
