"""Jobs ``refine`` and ``symmetry`` on their own (no pyworkflow): files, resume, bad input."""

import json
import math

import numpy as np
import pytest

from spfluo.algorithms.geometry import Poses, geodesic_distance, perturb_rotations, pose_errors
from spfluo.algorithms.phantoms import asymmetric_phantom, c9_barrel
from spfluo.algorithms.simulate import simulate_dataset
from spfluo.algorithms.transform import rotate
from spfluo.constants import EXIT_JOB_ERROR
from spfluo.io import (
    read_fsc_csv,
    read_particle_table,
    read_refine_log,
    read_volume,
    write_particle_table,
    write_volume,
)
from spfluo.jobs import refine as refine_job
from spfluo.jobs.__main__ import main
from spfluo.jobs.jobfile import load_job, write_job

from ._subprocess import assert_ran_without_pyworkflow, run_job_in_subprocess

VS = 0.05


@pytest.fixture(scope="module")
def data():
    return simulate_dataset(phantom="asymmetric", size=20, n_particles=8, sigma_xy=1.5,
                            sigma_z=3.0, noise_std=0.05, n_spots=0, seed=4, voxel_size=VS)


@pytest.fixture(scope="module")
def start(data):
    return Poses(perturb_rotations(data.poses.rotations, math.radians(10), seed=1),
                 data.poses.translations)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, data, start):
    folder = tmp_path_factory.mktemp("refine_inputs")
    paths = []
    for k, particle in enumerate(data.particles):
        path = folder / f"p{k}.ome.tif"
        write_volume(path, particle, (VS,) * 3)
        paths.append(str(path))
    write_particle_table(folder / "particles.csv", np.arange(1, 9), paths,
                         start.to_stored((VS,) * 3))
    write_particle_table(folder / "no_poses.csv", np.arange(1, 9), paths)
    write_volume(folder / "psf.ome.tif", data.psf, (VS,) * 3)
    write_volume(folder / "psf_3ch.ome.tif", np.concatenate([data.psf] * 3), (VS,) * 3)
    return folder


def _job(folder, inputs_dir, name="job.json", **params):
    out = folder / "out"
    values = {"regularizer": "tv", "weight": 3e-3, "schedule": [[5, 10], [2, 4]],
              "exhaustive_iterations": 2, "continuous_iterations": 1,
              "initial_admm_iterations": 30, "admm_iterations": 10,
              "final_admm_iterations": 20, "symmetry": 1, "half_maps": True, **params}
    inputs = {"particles": inputs_dir / values.pop("table", "particles.csv"),
              "psf": inputs_dir / values.pop("psf", "psf.ome.tif")}
    if "volume" in values:
        inputs["volume"] = values.pop("volume")
    outputs = {"volume": out / "volume.ome.tif", "half1": out / "h1.ome.tif",
               "half2": out / "h2.ome.tif", "fsc": out / "fsc.csv",
               "particles": out / "particles.csv", "log": out / "log.csv",
               "summary": out / "summary.json", "checkpoint": out / "checkpoint.npz"}
    return write_job(folder / name, step="refine", inputs=inputs, params=values,
                     outputs=outputs, seed=5)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, inputs):
    """The job run as an external process, as a protocol runs it."""
    folder = tmp_path_factory.mktemp("refine_run")
    job = _job(folder, inputs)
    return folder, run_job_in_subprocess("refine", job, folder)


def test_job_runs_without_pyworkflow(uninterrupted, data, start):
    folder, out = uninterrupted
    assert_ran_without_pyworkflow(out)
    assert "iteration 0 (exhaustive step 5 deg +-10 deg)" in out.stdout
    assert "iteration 2 (continuous)" in out.stdout
    vol = read_volume(folder / "out" / "volume.ome.tif")
    assert vol.data.shape == (1, 20, 20, 20) and vol.voxel_size == pytest.approx((VS,) * 3)
    for name in ("h1", "h2"):
        assert read_volume(folder / "out" / f"{name}.ome.tif").data.shape == (1, 20, 20, 20)
    freqs, curves = read_fsc_csv(folder / "out" / "fsc.csv")
    assert list(curves) == ["channel 0"] and freqs[-1] == pytest.approx(0.5)
    table = read_particle_table(folder / "out" / "particles.csv")
    assert table.ids.tolist() == list(range(1, 9)) and table.has_poses
    assert set(table.extra) >= {"refine_energy", "pose_change_deg", "last_change_deg",
                                "half_set"}
    assert sorted(np.bincount(np.asarray(table.extra["half_set"], dtype=int))) == [4, 4]
    refined = Poses.from_stored(table.matrices, (VS,) * 3)
    err_before = np.degrees(pose_errors(start.rotations, data.poses.rotations))
    err_after = np.degrees(pose_errors(refined.rotations, data.poses.rotations))
    assert np.median(err_after) < 0.6 * np.median(err_before)
    np.testing.assert_allclose(table.extra["pose_change_deg"], np.degrees(
        geodesic_distance(refined.rotations, start.rotations)), atol=1e-5)
    log = read_refine_log(folder / "out" / "log.csv")
    assert log["iteration"].tolist() == [0, 1, 2] and log["phase"].tolist() == [0, 0, 1]
    assert log["resolution"].shape == (3, 1) and np.all(log["resolution"] > 0)
    summary = json.loads((folder / "out" / "summary.json").read_text())
    assert summary["iterations"] == 3 and summary["n_particles"] == 8
    # no symmetry, no rotation about an axis to report
    assert np.all(np.isnan(np.asarray(table.extra["in_plane_margin_nats"], dtype=float)))
    assert "in_plane_undetermined" not in summary
    # a resolution is a number only when measured; the verdict says why otherwise
    res, status = summary["resolution_per_voxel"][0], summary["resolution_status"][0]
    assert (0 < res < 0.5) if status == "measured" else res is None
    assert summary["resolution_text"][0] and summary["nyquist_um"] > 0
    if status == "measured":
        assert summary["resolution_um"][0] == pytest.approx(VS / res)
    else:
        assert summary["resolution_um"][0] is None
    assert not (folder / "out" / "checkpoint.npz").exists()  # removed once done


def test_symmetric_job_reports_the_in_plane_margins(tmp_path):
    """C9 barrel, true axes: the table holds every particle's in-plane margin and the
    summary the count below the threshold; a C1 run has none."""
    ds = simulate_dataset(phantom="c9", size=20, n_particles=6, sigma_xy=1.0, sigma_z=2.0,
                          noise_std=0.02, n_spots=0, seed=2, voxel_size=VS)
    paths = []
    for k, particle in enumerate(ds.particles):
        write_volume(tmp_path / f"p{k}.ome.tif", particle, (VS,) * 3)
        paths.append(str(tmp_path / f"p{k}.ome.tif"))
    write_particle_table(tmp_path / "particles.csv", np.arange(1, 7), paths,
                         ds.poses.to_stored((VS,) * 3))
    write_volume(tmp_path / "psf.ome.tif", ds.psf, (VS,) * 3)
    job = _job(tmp_path, tmp_path, symmetry=9, schedule=[[2, 4]], exhaustive_iterations=1,
               continuous_iterations=0)
    assert main(["refine", str(job)]) == 0
    table = read_particle_table(tmp_path / "out" / "particles.csv")
    margins = np.asarray(table.extra["in_plane_margin_nats"], dtype=float)
    assert margins.shape == (6,) and np.all(np.isfinite(margins)) and np.all(margins >= 0)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["in_plane_undetermined"] == int(np.sum(
        margins < summary["in_plane_undetermined_below_nats"]))
    assert summary["in_plane_margin_median_nats"] == pytest.approx(np.median(margins))


def test_killed_job_continues_from_its_checkpoint(tmp_path, inputs, uninterrupted, monkeypatch):
    ref_folder, ref = uninterrupted
    assert ref.returncode == 0
    job = _job(tmp_path, inputs)
    saver = refine_job._save_checkpoint
    calls = []

    class Killed(Exception):
        pass

    def save_then_die(path, state, digest):
        saver(path, state, digest)
        calls.append(state.iteration)
        if len(calls) == 2:
            raise Killed  # the process dies after writing the checkpoint of iteration 2

    monkeypatch.setattr(refine_job, "_save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        refine_job.run(load_job(job))
    assert (tmp_path / "out" / "checkpoint.npz").exists()
    assert not (tmp_path / "out" / "volume.ome.tif").exists()
    monkeypatch.setattr(refine_job, "_save_checkpoint", saver)
    captured = []
    monkeypatch.setattr(refine_job.Progress, "log", lambda self, m: captured.append(m))
    refine_job.run(load_job(job))
    assert any("resuming after outer iteration 2" in m for m in captured)
    assert not any("iteration 0 (" in m for m in captured)  # not recomputed
    for name in ("volume", "h1", "h2"):
        np.testing.assert_allclose(read_volume(tmp_path / "out" / f"{name}.ome.tif").data,
                                   read_volume(ref_folder / "out" / f"{name}.ome.tif").data,
                                   rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(read_particle_table(tmp_path / "out" / "particles.csv").matrices,
                               read_particle_table(ref_folder / "out" / "particles.csv").matrices,
                               atol=1e-8)


def test_checkpoint_of_other_parameters_is_ignored(tmp_path, inputs, monkeypatch):
    job = _job(tmp_path, inputs, schedule=[[5, 10]], exhaustive_iterations=1,
               continuous_iterations=0)
    # a checkpoint left by a run with another weight is not used
    other = _job(tmp_path, inputs, name="other.json", schedule=[[5, 10]],
                 exhaustive_iterations=1, continuous_iterations=0, weight=1e-2)
    saver = refine_job._save_checkpoint

    def save_then_die(path, state, digest):
        saver(path, state, digest)
        raise KeyboardInterrupt

    monkeypatch.setattr(refine_job, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        refine_job.run(load_job(other))
    monkeypatch.setattr(refine_job, "_save_checkpoint", saver)
    captured = []
    monkeypatch.setattr(refine_job.Progress, "log", lambda self, m: captured.append(m))
    refine_job.run(load_job(job))
    assert any("from other inputs or parameters" in m for m in captured)
    assert (tmp_path / "out" / "volume.ome.tif").exists()


@pytest.mark.parametrize("change, message", [
    ({"table": "no_poses.csv"}, "have no poses"),
    ({"schedule": [[5]]}, "each schedule stage"),
    ({"schedule": [[0, 5]]}, "step_deg must be"),
    ({"regularizer": "l1"}, "regularizer must be"),
    ({"weight": -1}, "weight"),
    ({"psf": "psf_3ch.ome.tif"}, "the PSF has 3 channels"),
    ({"channels": [2]}, "channels must be"),
    ({"half_maps": "yes"}, "half_maps must be"),
])
def test_bad_jobs_fail_with_a_reason(tmp_path, inputs, capsys, change, message):
    job = _job(tmp_path, inputs, **change)
    assert main(["refine", str(job)]) == EXIT_JOB_ERROR
    assert message in capsys.readouterr().err


def test_bad_initial_volume(tmp_path, inputs, capsys):
    write_volume(tmp_path / "v.ome.tif", np.ones((1, 16, 16, 16), np.float32), (VS,) * 3)
    job = _job(tmp_path, inputs, volume=tmp_path / "v.ome.tif")
    assert main(["refine", str(job)]) == EXIT_JOB_ERROR
    assert "initial volume is (1, 16, 16, 16)" in capsys.readouterr().err


# ----------------------------------------------------------------------------- symmetry


def _symmetry_job(folder, volume, **params):
    inputs = {"volume": volume}
    outputs = {"volume": folder / "out" / "out.ome.tif", "summary": folder / "out" / "s.json"}
    if "particles" in params:
        inputs["particles"] = params.pop("particles")
        outputs["particles"] = folder / "out" / "particles.csv"
    return write_job(folder / "sym.json", step="symmetry", inputs=inputs,
                     params={"operation": "align", "order": 0, **params}, outputs=outputs)


def test_symmetry_job_aligns_estimates_and_realigns_poses(tmp_path):
    g = np.array([[0.36, 0.48, -0.8], [-0.8, 0.6, 0.0], [0.48, 0.64, 0.6]])
    barrel = rotate(c9_barrel(28), g, order=3)
    write_volume(tmp_path / "turned.ome.tif", barrel, (VS,) * 3)
    poses = Poses(np.stack([np.eye(3), g]), np.zeros((2, 3)))
    write_particle_table(tmp_path / "p.csv", [3, 7], ["a.tif", "b.tif"],
                         poses.to_stored((VS,) * 3))
    job = _symmetry_job(tmp_path, tmp_path / "turned.ome.tif", particles=tmp_path / "p.csv")
    assert main(["symmetry", str(job)]) == 0
    summary = json.loads((tmp_path / "out" / "s.json").read_text())
    assert summary["estimated_order"] == 9 and summary["order"] == 9
    axis_xyz = (g @ np.array([1.0, 0.0, 0.0]))[::-1]
    assert math.degrees(math.acos(min(1.0, abs(np.dot(summary["axis_xyz"], axis_xyz))))) < 2.0
    aligned = read_volume(tmp_path / "out" / "out.ome.tif")
    assert aligned.data.shape == (1, 28, 28, 28) and aligned.voxel_size == pytest.approx((VS,) * 3)
    table = read_particle_table(tmp_path / "out" / "particles.csv")
    assert table.ids.tolist() == [3, 7]
    rot = np.asarray(summary["rotation_zyx"])
    np.testing.assert_allclose(Poses.from_stored(table.matrices, (VS,) * 3).rotations,
                               np.matmul(poses.rotations, rot.T), atol=1e-6)


def test_symmetry_job_symmetrizes_and_rejects_bad_input(tmp_path, capsys):
    barrel = c9_barrel(24)
    noisy = barrel + 0.1 * np.random.default_rng(0).standard_normal(barrel.shape)
    write_volume(tmp_path / "noisy.ome.tif", noisy.astype(np.float32), (VS,) * 3)
    job = _symmetry_job(tmp_path, tmp_path / "noisy.ome.tif", operation="symmetrize", order=9)
    assert main(["symmetry", str(job)]) == 0
    out = read_volume(tmp_path / "out" / "out.ome.tif").data[0]
    err_in = np.linalg.norm(noisy - barrel)
    assert np.linalg.norm(out - barrel) < 0.6 * err_in
    summary = json.loads((tmp_path / "out" / "s.json").read_text())
    assert summary["order"] == 9 and 0 < summary["relative_change"] < 1
    # no symmetry to find in the asymmetric phantom
    write_volume(tmp_path / "asym.ome.tif", asymmetric_phantom(24), (VS,) * 3)
    job = _symmetry_job(tmp_path, tmp_path / "asym.ome.tif")
    assert main(["symmetry", str(job)]) == EXIT_JOB_ERROR
    assert "no cyclic symmetry found" in capsys.readouterr().err
    job = _symmetry_job(tmp_path, tmp_path / "asym.ome.tif", operation="symmetrize", order=1)
    assert main(["symmetry", str(job)]) == EXIT_JOB_ERROR
    assert "order 1 means no symmetry" in capsys.readouterr().err
    job = _symmetry_job(tmp_path, tmp_path / "asym.ome.tif", operation="mirror")
    assert main(["symmetry", str(job)]) == EXIT_JOB_ERROR
    assert "operation must be one of" in capsys.readouterr().err
    write_volume(tmp_path / "aniso.ome.tif", barrel, (0.1, VS, VS))
    job = _symmetry_job(tmp_path, tmp_path / "aniso.ome.tif", order=9)
    assert main(["symmetry", str(job)]) == EXIT_JOB_ERROR
    assert "isotropic voxels" in capsys.readouterr().err


def test_align_with_order_1_passes_volume_and_poses_on(tmp_path):
    """C1 alignment is the identity: a workflow keeps the step for asymmetric particles."""
    vol = asymmetric_phantom(20)
    write_volume(tmp_path / "asym.ome.tif", vol, (VS,) * 3)
    M = Poses(np.stack([np.eye(3), np.diag([1.0, -1.0, -1.0])]),
              np.array([[0.0, 1.0, -2.0], [0.5, 0.0, 0.0]])).to_stored((VS,) * 3)
    write_particle_table(tmp_path / "p.csv", [1, 2], ["a.tif", "b.tif"], M)
    job = _symmetry_job(tmp_path, tmp_path / "asym.ome.tif", order=1, particles=tmp_path / "p.csv")
    assert main(["symmetry", str(job)]) == 0
    np.testing.assert_array_equal(read_volume(tmp_path / "out" / "out.ome.tif").data[0], vol)
    np.testing.assert_allclose(read_particle_table(tmp_path / "out" / "particles.csv").matrices,
                               M, atol=1e-12)
    summary = json.loads((tmp_path / "out" / "s.json").read_text())
    assert summary["order"] == 1 and summary["axis_angle_from_z_deg"] == 0.0
