"""Jobs ``pick`` and ``extract`` on their own (no pyworkflow): files, values, bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from spfluo.algorithms import phantoms
from spfluo.algorithms.extraction import extract_particles
from spfluo.algorithms.psf import gaussian_psf
from spfluo.algorithms.simulate import simulate_field
from spfluo.constants import EXIT_JOB_ERROR
from spfluo.io import (
    CoordinateTable,
    ImageEntry,
    read_coordinates_csv,
    read_image_list,
    read_particle_table,
    read_volume,
    write_coordinates_csv,
    write_image_list,
    write_volume,
)
from spfluo.jobs.__main__ import main
from spfluo.jobs.jobfile import write_job

VS = (0.2, 0.1, 0.1)  # field voxels (z, y, x), micrometres
SIZE = 16  # particle box, lateral voxels


@pytest.fixture(scope="module")
def fields():
    """Two 2-channel fields (asymmetric object + shell), 7 particles and 2 debris each."""
    vol = np.stack([phantoms.asymmetric_phantom(SIZE, seed=0, supersample=2),
                    phantoms.sphere_shell(SIZE, radius=0.3, thickness=0.1, supersample=2)])
    psf = gaussian_psf((9, 9, 9), (1.2, 1.2, 1.2))
    return [simulate_field(vol, psf, shape=(16, 72, 72), n_particles=7, n_debris=2,
                           touching_pairs=0, noise_std=0.05, voxel_size=VS, seed=k)
            for k in range(2)]


@pytest.fixture
def inputs(tmp_path, fields):
    folder = tmp_path / "in"
    folder.mkdir()
    entries = []
    for k, f in enumerate(fields):
        write_volume(folder / f"fov{k}.ome.tif", f.image, VS)
        entries.append(ImageEntry(f"fov{k}", str(folder / f"fov{k}.ome.tif"), VS))
    write_image_list(folder / "images.json", entries)
    ex = fields[0].positions[:5] * np.asarray(VS)
    write_coordinates_csv(folder / "examples.csv",
                          CoordinateTable(image_ids=np.array(["fov0"] * 5), positions_zyx_um=ex))
    return folder


def _diameter(fields):
    return 0.8 * fields[0].particle_size * VS[2]


def _pick_job(folder, out, fields, **params):
    values = {"channel": 0, "diameter_um": _diameter(fields), "threshold": 0.5,
              "box_size_um": 1.6, "classifier": "forest", **params}
    return write_job(folder / "pick.json", step="pick",
                     inputs={"images": folder / "images.json",
                             "examples": folder / "examples.csv"},
                     params=values, outputs={"coordinates": out / "coords.csv",
                                             "report": out / "pick.json"}, seed=0)


def _extract_job(folder, coords, out, **params):
    values = {"box_size_um": 1.6, "voxel_size_um": 0.1, "border": "pad", "normalize": "none",
              **params}
    return write_job(folder / "extract.json", step="extract",
                     inputs={"images": folder / "images.json", "coordinates": coords},
                     params=values, outputs={"particles": out / "particles.csv",
                                             "particles_dir": out / "particles",
                                             "report": out / "extract.json"})


def _run(step, job, cwd):
    code = ("import sys; from spfluo.jobs.__main__ import main; rc = main(sys.argv[1:]); "
            "print('pyworkflow' in sys.modules); sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, step, str(job)], cwd=cwd,
                          capture_output=True, text=True)


def test_image_list_round_trip(tmp_path):
    entries = [ImageEntry("a", "a.tif", (0.3, 0.1, 0.1)), ImageEntry(2, "b.tif", [1, 1, 1])]
    write_image_list(tmp_path / "l.json", entries)
    back = read_image_list(tmp_path / "l.json")
    assert back == [ImageEntry("a", "a.tif", (0.3, 0.1, 0.1)), ImageEntry("2", "b.tif", (1, 1, 1))]
    with pytest.raises(ValueError, match="unique"):
        write_image_list(tmp_path / "d.json", [entries[0], entries[0]])
    with pytest.raises(ValueError, match="voxel_size"):
        ImageEntry("x", "x.tif", (0.1, 0.1))


def test_pick_then_extract_without_pyworkflow(tmp_path, inputs, fields):
    out = tmp_path / "out"
    run = _run("pick", _pick_job(inputs, out, fields), tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "False"
    assert "image fov1:" in run.stdout and "particle(s) picked" in run.stdout
    assert "read by memory map" in run.stdout  # never a whole float32 copy
    assert "2/2 field(s) done" in run.stdout and "remaining ~" in run.stdout
    coords = read_coordinates_csv(out / "coords.csv")
    assert coords.particle_id.tolist() == list(range(1, len(coords) + 1))
    assert np.all((coords.score >= 0) & (coords.score <= 1))
    assert np.allclose(coords.box_size_um, 1.6)
    # the picks match the true centres (within half a diameter, micrometres)
    tp = 0
    for k, f in enumerate(fields):
        mine = coords.positions_zyx_um[coords.image_ids == f"fov{k}"]
        d = np.linalg.norm(mine[:, None] - (f.positions * np.asarray(VS))[None], axis=-1)
        r, c = linear_sum_assignment(d)
        tp += int((d[r, c] <= _diameter(fields) / 2).sum())
    assert tp >= 13 and len(coords) - tp <= 2  # 14 particles, 4 debris
    report = json.loads((out / "pick.json").read_text())
    assert report["n_examples"] == 5 and report["examples_kept"] == 5
    assert sum(report["n_detections"]) == len(coords) and len(report["n_candidates"]) == 2
    assert report["n_tiles"] == [1, 1] and 0 < report["estimated_peak_gb"] <= 2.0

    # extraction of every pick, both channels, isotropic voxels
    run = _run("extract", _extract_job(inputs, out / "coords.csv", out), tmp_path)
    assert run.returncode == 0, run.stderr
    assert "2/2 field(s) done" in run.stdout and "remaining ~" in run.stdout
    table = read_particle_table(out / "particles.csv")
    assert table.ids.tolist() == coords.particle_id.tolist()
    assert list(table.extra["image_id"]) == [str(i) for i in coords.image_ids]
    np.testing.assert_allclose(table.extra["score"], coords.score)
    first = read_volume(table.paths[0])
    assert first.data.shape == (2, 16, 16, 16) and first.voxel_size == pytest.approx((0.1,) * 3)
    # the same pixels as the library, at the coordinate converted to voxels
    k = int(str(coords.image_ids[0])[-1])
    expected = extract_particles(fields[k].image, coords.positions_zyx_um[:1] / np.asarray(VS),
                                 VS, box_size=1.6, voxel_size=0.1)
    np.testing.assert_allclose(first.data, expected.particles[0], atol=1e-5)
    report = json.loads((out / "extract.json").read_text())
    assert report["n_particles"] == len(coords) and report["box_voxels"] == 16
    assert report["n_channels"] == 2


def test_extract_logs_the_border_particles(tmp_path, inputs):
    coords = CoordinateTable(image_ids=np.array(["fov0", "fov1", "fov1"]),
                             positions_zyx_um=np.array([[1.5, 3.6, 3.6], [1.5, 0.2, 3.0],
                                                        [1.5, 3.0, 3.0]]),
                             particle_id=np.array([4, 9, 2]))
    write_coordinates_csv(tmp_path / "c.csv", coords)
    out = tmp_path / "pad"
    run = _run("extract", _extract_job(inputs, tmp_path / "c.csv", out, normalize="zscore"),
               tmp_path)
    assert run.returncode == 0, run.stderr
    assert "particle 9 (image fov1" in run.stdout and "padded" in run.stdout
    table = read_particle_table(out / "particles.csv")
    assert table.ids.tolist() == [2, 4, 9]
    assert list(table.extra["crosses_border"]) == [0, 0, 1]
    assert read_volume(table.paths[0]).data.mean() == pytest.approx(0, abs=1e-4)
    out = tmp_path / "skip"
    run = _run("extract", _extract_job(inputs, tmp_path / "c.csv", out, border="skip"), tmp_path)
    assert run.returncode == 0, run.stderr
    assert "particle 9 (image fov1" in run.stdout and "skipped" in run.stdout
    assert read_particle_table(out / "particles.csv").ids.tolist() == [2, 4]


def test_bad_jobs_are_rejected(tmp_path, inputs, fields, capsys):
    out = tmp_path / "out"
    write_coordinates_csv(inputs / "two.csv", CoordinateTable(
        image_ids=np.array(["fov0", "fov0"]), positions_zyx_um=np.array([[1, 2, 2], [1, 3, 3]])))
    job = _pick_job(inputs, out, fields)
    data = json.loads(job.read_text())
    cases = [
        ({"inputs": {**data["inputs"], "examples": str(inputs / "two.csv")}},
         "at least 3 example"),
        ({"params": {**data["params"], "channel": 5}}, "channel 5 does not exist"),
        ({"params": {**data["params"], "classifier": "cnn"}}, "classifier must be one of"),
        ({"params": {**data["params"], "diameter_um": 50.0}}, "larger than the image"),
        ({"params": {**data["params"], "memory_gb": 0.05}},
         "allowed: allow more memory (parameter memory_gb)"),
        ({"params": {**data["params"], "memory_gb": 0}}, "'memory_gb' must be a number > 0"),
        ({"inputs": {**data["inputs"], "images": str(inputs / "none.json")}}, "does not exist"),
    ]
    for change, match in cases:
        job.write_text(json.dumps({**data, **change}))
        assert main(["pick", str(job)]) == EXIT_JOB_ERROR
        assert match in capsys.readouterr().err
    write_coordinates_csv(inputs / "unknown.csv", CoordinateTable(
        image_ids=np.array(["fov7"] * 3), positions_zyx_um=np.ones((3, 3))))
    job.write_text(json.dumps({**data, "inputs": {**data["inputs"],
                                                  "examples": str(inputs / "unknown.csv")}}))
    assert main(["pick", str(job)]) == EXIT_JOB_ERROR
    assert "image id 'fov7' is not in the image list" in capsys.readouterr().err
    outside = CoordinateTable(image_ids=np.array(["fov0"] * 3),
                              positions_zyx_um=np.array([[1, 2, 2], [1, 3, 3], [1, 3, 30]]))
    write_coordinates_csv(inputs / "outside.csv", outside)
    job.write_text(json.dumps({**data, "inputs": {**data["inputs"],
                                                  "examples": str(inputs / "outside.csv")}}))
    assert main(["pick", str(job)]) == EXIT_JOB_ERROR
    assert "is outside image fov0" in capsys.readouterr().err

    ext = _extract_job(inputs, inputs / "examples.csv", out)
    data = json.loads(ext.read_text())
    for change, match in [({"border": "wrap"}, "border must be"),
                          ({"normalize": "max"}, "normalize must be"),
                          ({"box_size_um": 0.2}, "at least 4 voxels"),
                          ({"voxel_size_um": -1}, "voxel_size_um must be > 0")]:
        ext.write_text(json.dumps({**data, "params": {**data["params"], **change}}))
        assert main(["extract", str(ext)]) == EXIT_JOB_ERROR
        assert match in capsys.readouterr().err
    ext.write_text(json.dumps({**data, "inputs": {**data["inputs"],
                                                  "coordinates": str(inputs / "unknown.csv")}}))
    assert main(["extract", str(ext)]) == EXIT_JOB_ERROR
    assert "not in the image list" in capsys.readouterr().err


def test_fields_on_a_dask_cluster_give_the_same_particles(tmp_path, inputs, fields, capsys):
    from dask.distributed import LocalCluster

    here, there = tmp_path / "here", tmp_path / "there"
    assert main(["pick", str(_pick_job(inputs, here, fields))]) == 0
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                      dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert main(["pick", str(_pick_job(inputs, there, fields, scheduler=address))]) == 0
        log = capsys.readouterr().out
        assert f"2 field(s) sent to the Dask scheduler {address}" in log
        assert "2/2 field(s) done" in log
        a, b = (read_coordinates_csv(d / "coords.csv") for d in (here, there))
        np.testing.assert_array_equal(a.positions_zyx_um, b.positions_zyx_um)
        np.testing.assert_array_equal(a.score, b.score)
        assert main(["extract", str(_extract_job(inputs, here / "coords.csv", here))]) == 0
        assert main(["extract", str(_extract_job(inputs, here / "coords.csv", there,
                                                 scheduler=address))]) == 0
    p, q = (read_particle_table(d / "particles.csv") for d in (here, there))
    assert p.ids.tolist() == q.ids.tolist()
    for x, y in zip(p.paths, q.paths):
        np.testing.assert_array_equal(read_volume(x).data, read_volume(y).data)
    job = _pick_job(inputs, there, fields, scheduler="node; rm -rf /")
    assert main(["pick", str(job)]) == EXIT_JOB_ERROR
    assert "scheduler must be the address of a Dask scheduler" in capsys.readouterr().err
