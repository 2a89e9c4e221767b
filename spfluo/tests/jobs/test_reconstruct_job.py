"""Job ``reconstruct`` on its own (no pyworkflow): files, agreement with the library, bad input."""

import json
import re

import numpy as np
import pytest

from spfluo.algorithms.reconstruct import reconstruct
from spfluo.algorithms.simulate import simulate_dataset
from spfluo.constants import EXIT_JOB_ERROR
from spfluo.io import (
    read_fsc_csv,
    read_fsc_details,
    read_volume,
    write_particle_table,
    write_volume,
)
from spfluo.jobs.__main__ import main
from spfluo.jobs.jobfile import write_job

from spfluo.tests._psf import analytic_gaussian

from ._subprocess import assert_ran_without_pyworkflow, run_job_in_subprocess

VS = 0.05


@pytest.fixture(scope="module")
def data():
    """Two channels (barrel + torus, one PSF each), 8 particles of 20^3."""
    return simulate_dataset(phantom="c9", size=20, n_particles=8, n_channels=2, seed=0,
                            noise_std=0.05, n_spots=0, voxel_size=VS)


def _inputs(folder, data, *, poses=True, psf=None, psf_vs=VS):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, particle in enumerate(data.particles):
        path = folder / f"p{k}.ome.tif"
        write_volume(path, particle, (VS,) * 3)
        paths.append(str(path))
    table = folder / "particles.csv"
    write_particle_table(table, np.arange(1, 9), paths,
                         data.poses.to_stored((VS,) * 3) if poses else None)
    write_volume(folder / "psf.ome.tif", data.psf if psf is None else psf, (psf_vs,) * 3)
    return {"particles": table, "psf": folder / "psf.ome.tif"}


def _job(folder, inputs, **params):
    out = folder / "out"
    values = {"method": "tv", "weight": 3e-3, "iterations": 20, "symmetry": 1,
              "channels": None, "half_maps": True, **params}
    return write_job(folder / "job.json", step="reconstruct", inputs=inputs, params=values,
                     outputs={"volume": out / "volume.ome.tif", "half1": out / "h1.ome.tif",
                              "half2": out / "h2.ome.tif", "fsc": out / "fsc.csv",
                              "coverage": out / "coverage.ome.tif",
                              "summary": out / "summary.json"}, seed=3)


def test_job_runs_without_pyworkflow(tmp_path, data):
    job = _job(tmp_path, _inputs(tmp_path / "in", data), channels=[1], batch_size=3)
    out = run_job_in_subprocess("reconstruct", job, tmp_path)
    assert_ran_without_pyworkflow(out)
    assert "half-map FSC resolution" in out.stdout  # progress lines in the log
    vol = read_volume(tmp_path / "out" / "volume.ome.tif")
    assert vol.data.shape == (1, 20, 20, 20) and vol.voxel_size == pytest.approx((VS,) * 3)
    for name in ("h1", "h2"):
        assert read_volume(tmp_path / "out" / f"{name}.ome.tif").data.shape == (1, 20, 20, 20)
    freqs, curves = read_fsc_csv(tmp_path / "out" / "fsc.csv")
    assert list(curves) == ["channel 0"] and freqs[-1] == pytest.approx(0.5)
    coverage = read_volume(tmp_path / "out" / "coverage.ome.tif").data
    assert coverage.shape == (1, 22, 22, 22)  # padded grid round(1.125 * 20)
    assert coverage[0, 11, 11, 11] == pytest.approx(1.0, rel=1e-4)  # K(0) = 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["method"] == "tv" and summary["channels"] == [1]
    assert summary["weight"] == [pytest.approx(3e-3)] and summary["n_particles"] == 8
    res = summary["resolution_per_voxel"][0]
    assert 0 < res <= 0.5 and summary["resolution_um"][0] == pytest.approx(VS / res)


def test_job_matches_the_library(tmp_path, data):
    job = _job(tmp_path, _inputs(tmp_path / "in", data), method="tikhonov", weight="auto",
               symmetry=9)
    assert main(["reconstruct", str(job)]) == 0
    expected = reconstruct(data.particles, data.poses, data.psf, method="tikhonov",
                           weight="auto", symmetry=9, seed=3, voxel_size_um=VS)
    vol = read_volume(tmp_path / "out" / "volume.ome.tif").data
    np.testing.assert_allclose(vol, expected.volume, atol=1e-5 * np.abs(expected.volume).max())
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["weight"] == pytest.approx(expected.weight.tolist())
    assert summary["sweep"]["weights"] == pytest.approx(expected.sweep_weights.tolist())
    assert summary["criterion"] == "cross-validation"
    _, curves = read_fsc_csv(tmp_path / "out" / "fsc.csv")
    assert list(curves) == ["channel 0", "channel 1"]
    np.testing.assert_allclose(curves["channel 1"], expected.fsc[1].values, atol=1e-6)
    assert summary["resolution_text"] == [r.text() for r in expected.resolution]
    assert summary["resolution_status"] == [r.status for r in expected.resolution]
    assert summary["cutoff_um"] == pytest.approx(VS / expected.cutoff_per_voxel)
    details = read_fsc_details(tmp_path / "out" / "fsc.csv")
    np.testing.assert_allclose(details["unmasked"]["channel 0"],
                               expected.fsc_details[0].unmasked.values, atol=1e-6)
    assert summary["mask_radius_um"] == pytest.approx(expected.mask_radius * VS)


def test_support_radius_in_micrometres_or_none(tmp_path, data):
    job = _job(tmp_path, _inputs(tmp_path / "in", data), method="tikhonov", weight=1e-2,
               mask_radius_um=None, channels=[0])
    assert main(["reconstruct", str(job)]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["mask_radius_um"] is None


def test_average_needs_no_psf_and_no_halves(tmp_path, data):
    inputs = _inputs(tmp_path / "in", data)
    job = _job(tmp_path, {"particles": inputs["particles"]}, method="average",
               weight="auto", half_maps=False)
    assert main(["reconstruct", str(job)]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["weight"] == [None, None] and "resolution_per_voxel" not in summary
    assert not (tmp_path / "out" / "fsc.csv").exists()
    assert not (tmp_path / "out" / "coverage.ome.tif").exists()


def test_single_view_baseline(tmp_path, data):
    """The job's single view is the algorithm's (the default 'auto' weight means the
    deconvolution's own default for a baseline)."""
    job = _job(tmp_path, _inputs(tmp_path / "in", data), method="single-view",
               weight="auto", half_maps=False, iterations=20)
    assert main(["reconstruct", str(job)]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["method"] == "single-view"
    expected = reconstruct(data.particles, data.poses, data.psf, method="single-view",
                           weight=None, half_maps=False, iterations=20)
    vol = read_volume(tmp_path / "out" / "volume.ome.tif").data
    np.testing.assert_allclose(vol, expected.volume, atol=1e-5 * float(np.abs(vol).max()))


def test_psf_at_the_field_sampling_is_prepared_for_the_particles(tmp_path, data, capsys):
    # a PSF sampled like the fields (z 3x coarser) in a box larger than the particles'
    sigma = (0.2, 0.07, 0.07)
    field_psf = analytic_gaussian((11, 31, 31), (3 * VS, VS, VS), sigma)
    inputs = _inputs(tmp_path / "in", data, psf=field_psf.astype(np.float32))
    job = _job(tmp_path, inputs, psf_voxel_size=[3 * VS, VS, VS], channels=[0])
    out = json.loads(job.read_text())
    out["outputs"]["psf_prepared"] = str(tmp_path / "out" / "psf_prepared.ome.tif")
    job.write_text(json.dumps(out))
    assert main(["reconstruct", str(job)]) == 0
    assert ("PSF 11x31x31 voxels of (0.15, 0.05, 0.05) µm (z, y, x) -> 20x20x20 voxels of "
            "(0.05, 0.05, 0.05) µm") in capsys.readouterr().out
    used = read_volume(tmp_path / "out" / "psf_prepared.ome.tif")
    assert used.voxel_size == pytest.approx((VS,) * 3) and used.data.shape == (1, 20, 20, 20)
    expected = analytic_gaussian((20, 20, 20), (VS,) * 3, sigma)
    expected /= expected.sum()
    assert np.abs(used.data[0] - expected).max() < 0.03 * expected.max()


@pytest.mark.parametrize("case,match", [
    ("no_poses", "have no poses"),
    ("psf_channels", "the PSF has 3 channels and the particles 2"),
    ("symmetry", "symmetry' must be an integer >= 1"),
    ("method", "method must be one of"),
    ("channels", "distinct indices in 0..1"),
    ("weight", "'weight' must be 'auto'"),
    ("criterion", "criterion' 'fsc' is no longer offered"),
    ("mask", "'mask_radius_um' 5 µm is"),
    ("missing_file", "particle file\\(s\\) are missing"),
])
def test_bad_jobs_fail_with_a_reason(tmp_path, data, capsys, case, match):
    kwargs, params = {}, {}
    if case == "no_poses":
        kwargs["poses"] = False
    elif case == "psf_channels":
        kwargs["psf"] = np.ones((3, 5, 5, 5), np.float32)
    elif case == "symmetry":
        params["symmetry"] = 0
    elif case == "method":
        params["method"] = "wiener"
    elif case == "channels":
        params["channels"] = [0, 2]
    elif case == "weight":
        params["weight"] = -1
    elif case == "criterion":
        params["criterion"] = "fsc"
    elif case == "mask":
        params["mask_radius_um"] = 5.0
    inputs = _inputs(tmp_path / "in", data, **kwargs)
    if case == "missing_file":
        (tmp_path / "in" / "p3.ome.tif").unlink()
    job = _job(tmp_path, inputs, **params)
    assert main(["reconstruct", str(job)]) == EXIT_JOB_ERROR
    err = capsys.readouterr().err
    assert err.startswith("spfluo job reconstruct:") and len(err.strip().splitlines()) == 1
    assert re.search(match, err), err
    assert not (tmp_path / "out" / "volume.ome.tif").exists()
