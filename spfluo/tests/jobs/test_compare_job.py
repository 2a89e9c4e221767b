"""Job ``compare`` on its own (no pyworkflow): metrics, curves, pose errors, bad input."""

import json

import numpy as np
import pytest

from spfluo.algorithms.geometry import Poses, matrix_from_axis_angle, random_rotations
from spfluo.algorithms.phantoms import asymmetric_phantom
from spfluo.algorithms.transform import rotate
from spfluo.io import (
    read_conical_csv,
    read_pose_error_parts,
    read_fsc_csv,
    read_pose_errors_csv,
    write_particle_table,
    write_volume,
)
from spfluo.jobs.__main__ import main
from spfluo.jobs.jobfile import write_job

from ._subprocess import assert_ran_without_pyworkflow, run_job_in_subprocess

VS = 0.05
ANGLE_DEG = 30.0


@pytest.fixture(scope="module")
def truth():
    return asymmetric_phantom(20, seed=0)


def _job(folder, volume, reference, *, particles=None, **params):
    out = folder / "out"
    outputs = {"metrics": out / "metrics.json", "fsc": out / "fsc.csv",
               "conical_fsc": out / "conical.csv", "aligned": out / "aligned.ome.tif"}
    inputs = {"volume": volume, "reference": reference}
    if particles is not None:
        inputs.update(particles=particles[0], reference_particles=particles[1])
        outputs["pose_errors"] = out / "pose_errors.csv"
    values = {"voxel_size": [VS] * 3, "symmetry": 1, "register": True,
              "cone_half_angle_deg": 20.0, "coarse_step_deg": 20.0, **params}
    return write_job(folder / "job.json", step="compare", inputs=inputs, params=values,
                     outputs=outputs)


def _rotated(truth):
    R = matrix_from_axis_angle([0.6, 0.0, 0.8], np.radians(ANGLE_DEG))
    return R, rotate(truth, R, translations=[1.0, 0.0, -1.0], order=3)


def _pose_tables(folder):
    """True poses, and estimates = true @ G^T (a global frame change) with particle 3 off by
    12 degrees: the pose errors are 0 except 12 degrees for particle 3."""
    true = random_rotations(8, seed=4)
    G = matrix_from_axis_angle([0.0, 1.0, 0.0], 1.1)
    est = np.matmul(true, G.T)
    est[3] = est[3] @ matrix_from_axis_angle([1.0, 0.0, 0.0], np.radians(12.0))
    paths = [f"p{k}.tif" for k in range(8)]
    ids = np.arange(10, 18)
    tables = []
    for name, rot in (("est", est), ("true", true)):
        stored = Poses(rot, np.zeros((8, 3))).to_stored(VS)
        tables.append(write_particle_table(folder / f"{name}.csv", ids, paths, stored))
    return tables, ids


def test_compare_job_without_pyworkflow(tmp_path, truth):
    R, moved = _rotated(truth)
    write_volume(tmp_path / "truth.ome.tif", truth, (VS,) * 3)
    write_volume(tmp_path / "moved.ome.tif", moved, (VS,) * 3)
    tables, ids = _pose_tables(tmp_path)
    job = _job(tmp_path, tmp_path / "moved.ome.tif", tmp_path / "truth.ome.tif",
               particles=tables)
    out = run_job_in_subprocess("compare", job, tmp_path)
    assert_ran_without_pyworkflow(out)

    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    m = data["metrics"]
    assert m["ssim"] > 0.95 and m["psnr_db"] > 25
    assert m["registration_angle_deg"] == pytest.approx(ANGLE_DEG, abs=1.5)
    assert m["registration_shift_um"] == pytest.approx(np.sqrt(2) * VS, abs=0.3 * VS)
    # the registration undoes the motion: its rotation is R^T
    reg = np.array(data["registration"]["rotation_zyx"])
    assert np.degrees(np.arccos((np.trace(reg @ R) - 1) / 2)) < 1.5
    # stored matrix = the same transform in xyz / µm
    stored = Poses.from_stored(np.array(data["registration"]["matrix_xyz_um"])[None], VS)
    np.testing.assert_allclose(stored.rotations[0], reg, atol=1e-9)
    np.testing.assert_allclose(stored.translations[0],
                               data["registration"]["translation_zyx_voxels"], atol=1e-9)
    # pose errors: 12 degrees for particle 3 (id 13), 0 for the others
    pid, err = read_pose_errors_csv(tmp_path / "out" / "pose_errors.csv")
    assert pid.tolist() == ids.tolist()
    expected = np.zeros(8)
    expected[3] = 12.0
    np.testing.assert_allclose(err, expected, atol=1e-6)
    assert m["pose_error_max_deg"] == pytest.approx(12.0, abs=1e-6)
    assert m["pose_error_median_deg"] == pytest.approx(0.0, abs=1e-6)
    assert m["n_matched_particles"] == 8
    # no symmetry: no split into axis and in-plane errors
    assert "in_plane_resultant" not in m
    assert read_pose_error_parts(tmp_path / "out" / "pose_errors.csv") is None
    # curves: the FSC file and the conical map agree with the numbers
    freqs, curves = read_fsc_csv(tmp_path / "out" / "fsc.csv")
    assert list(curves) == ["channel 0"] and freqs[0] == 0 and freqs[-1] == pytest.approx(0.5)
    phi1, phi2, maps = read_conical_csv(tmp_path / "out" / "conical.csv")
    res = maps["channel 0"]
    assert res.shape == (phi1.size, phi2.size) == (24, 7)
    assert phi2[0] == 0 and phi2[-1] == pytest.approx(np.pi / 2)
    assert res.max() == pytest.approx(m["conical_resolution_best_per_voxel"])
    assert res.min() == pytest.approx(m["conical_resolution_worst_per_voxel"])


def test_cn_pose_errors_split_into_axis_and_in_plane(tmp_path, monkeypatch):
    """C9: estimates = truth turned about the axis by a global angle (no error), particle 2
    tilted 6 degrees off its axis, particle 5 turned 8 degrees about it."""
    from spfluo.algorithms.geometry import rotation_about_z
    from spfluo.algorithms.phantoms import c9_barrel

    monkeypatch.chdir(tmp_path)
    vol = c9_barrel(20)
    write_volume(tmp_path / "v.ome.tif", vol, (VS,) * 3)
    true = random_rotations(8, seed=6)
    est = np.matmul(true, rotation_about_z(0.9))  # a global turn about the axis
    est[2] = est[2] @ matrix_from_axis_angle([0.0, 1.0, 0.0], np.radians(6.0))
    est[5] = est[5] @ rotation_about_z(np.radians(8.0))
    ids, tables = np.arange(1, 9), []
    for name, rot in (("est", est), ("true", true)):
        tables.append(write_particle_table(tmp_path / f"{name}.csv", ids,
                                           [f"p{k}.tif" for k in range(8)],
                                           Poses(rot, np.zeros((8, 3))).to_stored(VS)))
    job = _job(tmp_path, tmp_path / "v.ome.tif", tmp_path / "v.ome.tif", particles=tables,
               symmetry=9, register=False)
    assert main(["compare", str(job)]) == 0
    axis, in_plane = read_pose_error_parts(tmp_path / "out" / "pose_errors.csv")
    np.testing.assert_allclose(axis, [0, 0, 6, 0, 0, 0, 0, 0], atol=0.05)
    np.testing.assert_allclose(np.abs(in_plane), [0, 0, 0, 0, 0, 8, 0, 0], atol=1.1)
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]
    assert m["axis_error_median_deg"] == pytest.approx(0.0, abs=0.05)
    # 9-fold resultant of the in-plane errors: |7 + exp(9i 8 deg)| / 8
    assert m["in_plane_resultant"] == pytest.approx(abs(7 + np.exp(9j * np.radians(8.0))) / 8,
                                                    abs=0.01)


def test_identical_volumes_without_registration(tmp_path, truth, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_volume(tmp_path / "truth.ome.tif", truth, (VS,) * 3)
    job = _job(tmp_path, "truth.ome.tif", "truth.ome.tif", register=False)
    assert main(["compare", str(job)]) == 0
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    m = data["metrics"]
    assert m["ssim"] == pytest.approx(1.0)
    assert m["psnr_db"] is None  # infinite: written as null
    # identical volumes: the FSC never falls, no resolution is a measurement
    assert m["fsc_resolution_0143_per_voxel"] is None and m["fsc_resolution_0143_um"] is None
    assert data["resolution_text"][0]["fsc_0143"] == (
        f"not reached below Nyquist ({2 * VS:.3g} µm): sample finer")
    assert m["registration_angle_deg"] is None
    np.testing.assert_allclose(data["registration"]["matrix_xyz_um"], np.eye(4))
    assert data["pose_errors"] is None


def test_two_channels_are_registered_jointly(tmp_path, truth, monkeypatch):
    monkeypatch.chdir(tmp_path)
    second = np.roll(truth, 3, axis=2) * 0.5
    ref = np.stack([truth, second])
    R, moved0 = _rotated(truth)
    moved = np.stack([moved0, rotate(second, R, translations=[1.0, 0.0, -1.0], order=3)])
    write_volume(tmp_path / "ref.ome.tif", ref, (VS,) * 3)
    write_volume(tmp_path / "mov.ome.tif", moved, (VS,) * 3)
    assert main(["compare", str(_job(tmp_path, "mov.ome.tif", "ref.ome.tif"))]) == 0
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert data["n_channels"] == 2 and len(data["channels"]) == 2
    assert all(c["ssim"] > 0.95 for c in data["channels"])
    assert data["metrics"]["ssim"] == data["channels"][0]["ssim"]
    _, curves = read_fsc_csv(tmp_path / "out" / "fsc.csv")
    assert list(curves) == ["channel 0", "channel 1"]
    _, _, maps = read_conical_csv(tmp_path / "out" / "conical.csv")
    assert list(maps) == ["channel 0", "channel 1"]


def test_bad_inputs_fail_with_a_reason(tmp_path, truth, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_volume(tmp_path / "truth.ome.tif", truth, (VS,) * 3)
    write_volume(tmp_path / "small.ome.tif", truth[2:-2], (VS,) * 3)
    write_volume(tmp_path / "two.ome.tif", np.stack([truth, truth]), (VS,) * 3)
    tables, _ = _pose_tables(tmp_path)
    write_particle_table(tmp_path / "short.csv", [10, 11], ["a.tif", "b.tif"],
                         np.tile(np.eye(4), (2, 1, 1)))
    write_particle_table(tmp_path / "nopose.csv", np.arange(10, 18),
                         [f"p{k}.tif" for k in range(8)])
    cases = [
        (dict(volume="small.ome.tif"), {}, r"\(16, 20, 20\) voxels.*crop or pad"),
        (dict(volume="two.ome.tif"), {}, "2 channel"),
        (dict(volume="missing.ome.tif"), {}, "does not exist"),
        ({}, {"voxel_size": [0.1, 0.05, 0.05]}, "isotropic"),
        ({}, {"symmetry": 0}, "symmetry. must be an integer >= 1"),
        ({}, {"register": "yes"}, "register must be true or false"),
        (dict(particles=(tables[0], "short.csv")), {}, "same particles in the same order"),
        (dict(particles=(tables[0], "nopose.csv")), {}, "reference_particles table has no "
                                                        "poses"),
    ]
    for inputs, params, match in cases:
        volume = inputs.get("volume", "truth.ome.tif")
        job = _job(tmp_path, volume, "truth.ome.tif", particles=inputs.get("particles"),
                   **{"register": False, **params})
        assert main(["compare", str(job)]) == 2, match
        err = capsys.readouterr().err
        assert err.startswith("spfluo job compare:")
        assert __import__("re").search(match, err), (match, err)
