"""Job ``simulate`` on its own (no pyworkflow): files, ground truth, determinism, bad input."""

import json

import numpy as np
import pytest

from spfluo.algorithms.geometry import Poses
from spfluo.algorithms.psf import psf_fwhm
from spfluo.io import (
    read_coordinates_csv,
    read_particle_table,
    read_poses_csv,
    read_volume,
)
from spfluo.jobs.__main__ import main
from spfluo.jobs.jobfile import write_job

from ._subprocess import assert_ran_without_pyworkflow, run_job_in_subprocess

# lengths in micrometres: PSF sigma 1 (x, y) and 2 (z) voxels, shifts up to 1.5 voxels of 0.06 µm
BASE = {"phantom": "asymmetric", "size": 16, "voxel_size": 0.06, "sigma_xy_um": 1.0 * 0.06,
        "sigma_z_um": 2.0 * 0.06, "n_channels": 1, "noise_std": 0.1, "n_spots": 5,
        "max_shift_um": 1.5 * 0.06}


def _particles_job(folder, *, seed=0, **params):
    out = folder / "out"
    return write_job(folder / "job.json", step="simulate", inputs={},
                     params={**BASE, "kind": "particles", "n_particles": 4, **params},
                     outputs={"volume": out / "gt.ome.tif", "psf": out / "psf.ome.tif",
                              "summary": out / "sim.json", "particles_dir": out / "particles",
                              "particles": out / "particles.csv"}, seed=seed)


def _fields_job(folder, **params):
    out = folder / "out"
    values = {**BASE, "kind": "fields", "size": 20, "field_shape": [16, 64, 64],
              "field_voxel_size_z": 0.12, "n_fields": 2, "particles_per_field": 3,
              "n_debris": 1, "touching_pairs": 1, "noise_std": 0.02, **params}
    return write_job(folder / "job.json", step="simulate", inputs={}, params=values,
                     outputs={"volume": out / "gt.ome.tif", "psf": out / "psf.ome.tif",
                              "summary": out / "sim.json", "fields_dir": out / "fields",
                              "coordinates": out / "coords.csv", "poses": out / "poses.csv",
                              "debris": out / "debris.csv"}, seed=5)


def test_particles_without_pyworkflow(tmp_path):
    job = _particles_job(tmp_path)
    out = run_job_in_subprocess("simulate", job, tmp_path)
    assert_ran_without_pyworkflow(out)
    assert "4/4" in out.stdout  # progress lines

    table = read_particle_table(tmp_path / "out" / "particles.csv")
    assert table.ids.tolist() == [1, 2, 3, 4] and table.has_poses
    assert [p.split("/")[-1] for p in table.paths] == [f"particle_{k:06d}.ome.tif"
                                                      for k in range(1, 5)]
    for path in table.paths:
        vol = read_volume(tmp_path / path)
        assert vol.data.shape == (1, 16, 16, 16)
        assert vol.voxel_size == pytest.approx((0.06,) * 3)
    # stored poses: rotations, translations within max_shift voxels, in µm (x, y, z)
    poses = Poses.from_stored(table.matrices, 0.06)
    assert np.abs(poses.translations).max() <= 1.5 + 1e-9
    assert np.abs(table.matrices[:, :3, 3]).max() <= 1.5 * 0.06 + 1e-9
    gt = read_volume(tmp_path / "out" / "gt.ome.tif")
    psf = read_volume(tmp_path / "out" / "psf.ome.tif")
    assert gt.data.shape == (1, 16, 16, 16) and gt.voxel_size == pytest.approx((0.06,) * 3)
    assert psf.data.sum() == pytest.approx(1.0, rel=1e-4)
    summary = json.loads((tmp_path / "out" / "sim.json").read_text())
    assert summary["kind"] == "particles" and summary["n_particles"] == 4
    assert summary["psf_voxel_size"] == pytest.approx([0.06] * 3)


def test_particles_are_deterministic_per_seed(tmp_path):
    stacks = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        folder = tmp_path / name
        folder.mkdir()
        assert main(["simulate", str(_particles_job(folder, seed=seed, n_particles=2))]) == 0
        table = read_particle_table(folder / "out" / "particles.csv")
        stacks[name] = (table.matrices, read_volume(table.paths[0]).data)
    np.testing.assert_array_equal(stacks["a"][1], stacks["b"][1])
    np.testing.assert_allclose(stacks["a"][0], stacks["b"][0])
    assert not np.allclose(stacks["a"][0], stacks["c"][0])


def test_fields_positions_poses_and_psf(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", str(_fields_job(tmp_path))]) == 0
    out = tmp_path / "out"
    summary = json.loads((out / "sim.json").read_text())
    assert [f["image_id"] for f in summary["fields"]] == ["field_001", "field_002"]
    coords = read_coordinates_csv(out / "coords.csv")
    poses = read_poses_csv(out / "poses.csv")
    assert len(coords) == 6 and coords.particle_id.tolist() == list(range(1, 7))
    assert poses.ids.tolist() == list(range(1, 7))
    assert poses.extra["image_id"].tolist() == coords.image_ids.tolist()
    np.testing.assert_allclose(poses.matrices[:, :3, 3], 0)
    debris = read_coordinates_csv(out / "debris.csv")
    assert len(debris) == 2
    for field in summary["fields"]:
        vol = read_volume(field["path"])
        assert vol.data.shape == (1, 16, 64, 64)
        assert vol.voxel_size == pytest.approx((0.12, 0.06, 0.06))
        vs = np.array(vol.voxel_size)
        here = coords.positions_zyx_um[coords.image_ids == field["image_id"]]
        assert np.all(here >= 0) and np.all(here <= (np.array(vol.data.shape[1:]) - 1) * vs)
        # each true position sits on a particle: brighter than the field on average
        for pos in here:
            k = np.rint(pos / vs).astype(int)
            box = vol.data[0, max(k[0] - 2, 0):k[0] + 3, max(k[1] - 6, 0):k[1] + 7,
                           max(k[2] - 6, 0):k[2] + 7]
            assert box.mean() > vol.data[0].mean() + 0.05
        assert field["touching_pairs"] == [[0, 1]]
    # the field PSF is the same physical PSF as the particles', sampled on the field grid
    psf = read_volume(out / "psf.ome.tif")
    assert psf.voxel_size == pytest.approx((0.12, 0.06, 0.06))
    fwhm_um = psf_fwhm(psf.data[0], voxel_size=psf.voxel_size)
    # Gaussian of sigma 2 (z) and 1 (x, y) particle voxels of 0.06 µm; the voxel integration
    # adds 1/12 voxel^2 of variance on each grid
    expected = 2.3548 * np.sqrt(np.array([2.0, 1.0, 1.0]) ** 2 * 0.06**2
                                + np.array([0.12, 0.06, 0.06]) ** 2 / 12)
    np.testing.assert_allclose(fwhm_um, expected, rtol=0.05)


def test_widefield_psf_and_photon_noise(tmp_path):
    """psfmodels vectorial PSF on the particle box and Poisson noise with a read-noise floor:
    the PSF is the one psfmodels gives for these optics (an independent call), and the
    noise of the background is the read noise, that of the brightest voxels Poisson's."""
    from spfluo.algorithms.psf import gibson_lanni_psf

    optics = {"psf_model": "widefield-vectorial", "numerical_aperture": 1.4,
              "wavelength_um": 0.6, "immersion_index": 1.518, "sample_index": 1.518,
              "depth_um": 0.0}
    job = _particles_job(tmp_path, **optics, phantom="npc", size=21, voxel_size=0.1,
                         n_spots=0, n_particles=40, poisson_photons=20.0, noise_std=0.05)
    assert main(["simulate", str(job)]) == 0
    psf = read_volume(tmp_path / "out" / "psf.ome.tif").data[0]
    expected = gibson_lanni_psf((21, 21, 21), voxel_size=0.1, numerical_aperture=1.4,
                                wavelength=0.6, sample_index=1.518, method="vectorial")
    np.testing.assert_allclose(psf, expected / expected.sum(), atol=1e-6 * psf.max())
    fwhm = psf_fwhm(psf, voxel_size=(0.1,) * 3)
    assert 2.0 < fwhm[0] / fwhm[1] < 5.0  # longer along z
    table = read_particle_table(tmp_path / "out" / "particles.csv")
    stack = np.stack([read_volume(p).data[0] for p in table.paths])
    # the photon grid: values are k / 20 plus read noise; corners hold almost no signal
    corners = stack[:, :3, :3, :3].ravel()
    assert np.std(corners) == pytest.approx(0.05, rel=0.25)
    bright = stack[stack > 0.7]
    assert np.var(bright) > np.var(corners)  # shot noise grows with the signal
    summary = json.loads((tmp_path / "out" / "sim.json").read_text())
    assert summary["params"]["psf_model"] == "widefield-vectorial"


@pytest.mark.parametrize("change, match", [
    ({"psf_model": "airy"}, "psf_model must be one of"),
    ({"psf_model": "widefield-scalar", "numerical_aperture": 1.6},
     "numerical aperture 1.6 must be below the immersion index"),
    ({"psf_model": "widefield-scalar", "wavelength_um": 600},
     "'wavelength_um' must be a number >= 0.2 and <= 2"),
    ({"poisson_photons": -5}, "'poisson_photons' must be a number >= 0"),
    ({"kind": "movie"}, "kind must be one of particles, fields"),
    ({"phantom": "cube"}, "phantom must be one of"),
    ({"n_particles": 0}, "'n_particles' must be an integer >= 1"),
    ({"voxel_size": -1}, "'voxel_size' must be a number > 0"),
    ({"kind": "fields", "field_shape": [10, 10]}, r"'field_shape' must be \[Z, Y, X\]"),
    ({"kind": "fields", "field_shape": [8, 20, 20]}, "too small"),
])
def test_bad_parameters_fail_with_a_reason(tmp_path, capsys, change, match):
    job = _fields_job(tmp_path) if change.get("kind") == "fields" else _particles_job(tmp_path)
    data = json.loads(job.read_text())
    data["params"].update(change)
    job.write_text(json.dumps(data))
    assert main(["simulate", str(job)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spfluo job simulate:")
    assert __import__("re").search(match, err), err


def test_lengths_in_voxels_of_older_job_files_are_rejected(tmp_path, capsys):
    job = _particles_job(tmp_path)
    data = json.loads(job.read_text())
    data["params"]["max_shift"] = 1.5  # voxels: job files carry max_shift_um
    job.write_text(json.dumps(data))
    assert main(["simulate", str(job)]) == 2
    assert "parameter 'max_shift' is now 'max_shift_um'" in capsys.readouterr().err
