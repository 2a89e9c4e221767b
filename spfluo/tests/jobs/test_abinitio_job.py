"""Job ``abinitio`` on its own (no pyworkflow): outputs, resume from a checkpoint, bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from spfluo.algorithms.geometry import Poses
from spfluo.algorithms.simulate import simulate_dataset
from spfluo.io import (
    read_energies_csv,
    read_particle_table,
    read_volume,
    write_particle_table,
    write_volume,
)
from spfluo.jobs.__main__ import main
from spfluo.jobs.jobfile import write_job

from ._subprocess import assert_ran_without_pyworkflow, run_job_in_subprocess

VOXEL = 0.05
FAST = {"method": "sgd", "max_epochs": 4, "n_directions": 12, "n_psi": 4,
        "final_reconstruction": "tikhonov"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Six simulated particles (with their true poses in the table) and the PSF, on disk."""
    folder = tmp_path_factory.mktemp("abinitio_data")
    ds = simulate_dataset(seed=0, n_particles=6, size=20, sigma_xy=0.75, sigma_z=2.0,
                          n_spots=10, noise_std=0.1, voxel_size=VOXEL)
    paths = []
    for k, particle in enumerate(ds.particles):
        path = folder / f"particle_{k}.ome.tif"
        write_volume(path, particle, ds.voxel_size)
        paths.append(str(path))
    write_volume(folder / "psf.ome.tif", ds.psf, ds.voxel_size)
    write_particle_table(folder / "particles.csv", np.arange(1, 7), paths,
                         ds.poses.to_stored(ds.voxel_size))
    write_particle_table(folder / "no_poses.csv", np.arange(1, 7), paths)
    return folder, ds


def _job(folder, data_folder, *, particles="particles.csv", psf="psf.ome.tif", seed=0,
         **params):
    out = folder / "out"
    outputs = {"volume": out / "volume.ome.tif", "particles": out / "particles.csv",
               "energies": out / "energies.csv", "marginals": out / "marginals.npz",
               "summary": out / "abinitio.json", "checkpoint": out / "checkpoint.npz"}
    return write_job(folder / "job.json", step="abinitio",
                     inputs={"particles": data_folder / particles, "psf": data_folder / psf},
                     params={**FAST, **params}, outputs=outputs, seed=seed)


def test_sgd_job_without_pyworkflow(tmp_path, data):
    folder, ds = data
    job = _job(tmp_path, folder)
    out = run_job_in_subprocess("abinitio", job, tmp_path)
    assert_ran_without_pyworkflow(out)
    # progress: epoch, energy, elapsed and remaining time in the log
    assert "4/4 energy=" in out.stdout and "remaining ~" in out.stdout
    assert "known-pose reconstruction (tikhonov)" in out.stdout

    res = tmp_path / "out"
    vol = read_volume(res / "volume.ome.tif")
    assert vol.data.shape == (1, 20, 20, 20) and vol.voxel_size == pytest.approx((VOXEL,) * 3)
    table = read_particle_table(res / "particles.csv")
    assert table.ids.tolist() == [1, 2, 3, 4, 5, 6] and table.has_poses
    assert np.isfinite(table.extra["abinitio_energy"]).all()
    poses = Poses.from_stored(table.matrices, VOXEL)  # valid rotations, shifts within D/4
    assert np.abs(poses.translations).max() <= 5.0 + 1e-6
    energies = read_energies_csv(res / "energies.csv")
    assert energies["epoch"].tolist() == [1, 2, 3, 4]
    assert np.all(energies["band"] > 0) and np.all(energies["seconds"] > 0)
    with np.load(res / "marginals.npz") as m:
        assert m["psi_marginals"].shape == (6, 72) and m["direction_marginals"].shape == (6, 1500)
        np.testing.assert_allclose(m["psi_marginals"].sum(axis=1), 1.0)
        # the input table carried poses: true values in the reconstruction's frame
        assert m["true_psi_index"].shape == (6,) and m["true_rotations"].shape == (6, 3, 3)
        errors = m["pose_errors_deg"]
    summary = json.loads((res / "abinitio.json").read_text())
    assert summary["method"] == "sgd" and summary["n_epochs"] == 4
    assert summary["pose_error_median_deg"] == pytest.approx(float(np.median(errors)))
    assert summary["grid"] == [1500, 72]
    assert not (res / "checkpoint.npz").exists()  # removed once the outputs are written


def test_a_killed_job_continues_from_its_checkpoint(tmp_path, data, monkeypatch):
    folder, _ = data
    reference = tmp_path / "reference"
    reference.mkdir()
    assert main(["abinitio", str(_job(reference, folder, seed=3))]) == 0

    # the same job killed after its second epoch: its checkpoint is what it leaves behind
    from spfluo.algorithms import abinitio as algo

    class Killed(BaseException):  # like a signal, not an error the job would record
        pass

    killed = tmp_path / "killed"
    killed.mkdir()
    job = _job(killed, folder, seed=3)
    original = algo.sgd_reconstruction

    def until_epoch_2(*args, checkpoint=None, **kwargs):
        def stop(state):
            checkpoint(state)
            if state.epoch == 2:
                raise Killed

        return original(*args, checkpoint=stop, **kwargs)

    import spfluo.jobs.abinitio as job_module

    with monkeypatch.context() as patch:
        patch.setattr(job_module, "sgd_reconstruction", until_epoch_2)
        with pytest.raises(Killed):
            main(["abinitio", str(job)])
    assert (killed / "out" / "checkpoint.npz").exists()
    assert not (killed / "out" / "volume.ome.tif").exists()

    out = subprocess.run([sys.executable, "-m", "spfluo.jobs", "abinitio", str(job)],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "resuming from the checkpoint of epoch 2" in out.stdout
    assert "1/4" not in out.stdout and "3/4" in out.stdout
    a = read_volume(reference / "out" / "volume.ome.tif").data
    b = read_volume(killed / "out" / "volume.ome.tif").data
    # the same numbers up to the last bit of float64 arithmetic: numpy's vectorised loops may
    # round a sum differently with the arrays' memory alignment, which differs between
    # processes (measured once in a few dozen runs: 1 ulp in 6 of 96 pose entries)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * float(np.abs(a).max()))
    ta = read_particle_table(reference / "out" / "particles.csv")
    tb = read_particle_table(killed / "out" / "particles.csv")
    np.testing.assert_allclose(ta.matrices, tb.matrices, rtol=0, atol=1e-12)


def test_checkpoint_of_other_parameters_is_not_resumed(tmp_path, data):
    folder, _ = data
    job = _job(tmp_path, folder, max_epochs=1, final_reconstruction=None)
    assert main(["abinitio", str(job)]) == 0
    # a stale checkpoint from another parameter set is ignored
    stale = tmp_path / "out" / "checkpoint.npz"
    np.savez(stale, digest=np.asarray("other"), epoch=np.asarray(1))
    job = _job(tmp_path, folder, max_epochs=2, final_reconstruction=None)
    assert main(["abinitio", str(job)]) == 0
    assert json.loads((tmp_path / "out" / "abinitio.json").read_text())["n_epochs"] == 2


def test_annealing_job(tmp_path, data):
    folder, _ = data
    job = _job(tmp_path, folder, particles="no_poses.csv", method="annealing", n_classes=2,
               working_size=12, symmetry=1, final_reconstruction=None)
    assert main(["abinitio", str(job)]) == 0
    summary = json.loads((tmp_path / "out" / "abinitio.json").read_text())
    assert summary["method"] == "annealing" and "pose_error_median_deg" not in summary
    energies = read_energies_csv(tmp_path / "out" / "energies.csv")
    assert energies["epoch"].size == 3  # N_bc = 3 loops over the L - 1 = 1 free pose
    assert np.all(energies["band"] == 12)
    with np.load(tmp_path / "out" / "marginals.npz") as m:
        assert "true_psi_index" not in m.files
    assert read_particle_table(tmp_path / "out" / "particles.csv").has_poses


def test_annealing_job_with_symmetry_logs_its_polarity_consensus(tmp_path, data, capsys):
    folder, _ = data
    job = _job(tmp_path, folder, particles="no_poses.csv", method="annealing", n_classes=2,
               working_size=12, symmetry=3, final_reconstruction=None)
    assert main(["abinitio", str(job)]) == 0
    log = capsys.readouterr().out
    assert "polarity consensus after the pose search" in log
    assert read_particle_table(tmp_path / "out" / "particles.csv").has_poses


@pytest.mark.parametrize("change, message", [
    ({"method": "ransac"}, "method must be one of"),
    ({"final_reconstruction": "average"}, "final_reconstruction must be one of"),
    ({"max_epochs": 0}, "max_epochs"),
    ({"alpha_r": 1.0}, "alpha_r"),
    ({"n_directions": 2.5}, "n_directions"),
    ({"method": "annealing", "n_classes": 9}, "n_classes"),
    ({"voxel_size": [0.1, 0.05, 0.05]}, "isotropic"),
])
def test_bad_parameters_fail_with_a_reason(tmp_path, data, capsys, change, message):
    folder, _ = data
    job = _job(tmp_path, folder, **change)
    assert main(["abinitio", str(job)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out" / "volume.ome.tif").exists()


def test_bad_files_fail_with_a_reason(tmp_path, data, capsys):
    folder, ds = data
    job = _job(tmp_path, folder, psf="missing.ome.tif")
    assert main(["abinitio", str(job)]) == 2
    assert "psf" in capsys.readouterr().err
    three = tmp_path / "psf3.ome.tif"
    write_volume(three, np.ones((3, 5, 5, 5), np.float32), (VOXEL,) * 3)
    job = _job(tmp_path, tmp_path, particles=str(folder / "particles.csv"), psf="psf3.ome.tif")
    assert main(["abinitio", str(job)]) == 2
    assert "the PSF has 3 channels" in capsys.readouterr().err
    one = tmp_path / "one.csv"
    write_particle_table(one, [1], [str(folder / "particle_0.ome.tif")])
    job = _job(tmp_path, folder, particles=str(one))
    assert main(["abinitio", str(job)]) == 2
    assert "at least 2 particles" in capsys.readouterr().err
