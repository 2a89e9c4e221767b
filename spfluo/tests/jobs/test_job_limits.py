"""Jobs refuse unbounded work from their job file before reading any data."""

import re

import pytest

from spfluo.constants import EXIT_JOB_ERROR
from spfluo.jobs.__main__ import main
from spfluo.jobs.jobfile import write_job


@pytest.mark.parametrize("step,params,match", [
    ("reconstruct", {"iterations": 10**9}, "'iterations' must be an integer >= 1 and <= 10000"),
    ("reconstruct", {"symmetry": 10**6}, "'symmetry' must be an integer >= 1 and <= 100,"),
    ("refine", {"initial_admm_iterations": 10**9}, "'initial_admm_iterations' must be"),
    ("refine", {"schedule": [[0.5, None]]}, r"rotations per particle, more than 200,000"),
    ("abinitio", {"n_directions": 10**8}, "'n_directions' must be an integer >= 1 and <= 4096"),
    ("abinitio", {"n_directions": 4096, "n_psi": 360}, "orientations per particle and epoch"),
    ("abinitio", {"method": "annealing", "n_classes": 10**7}, "'n_classes' must be"),
    ("symmetry", {"order": 0, "max_order": 10**6}, "'max_order' must be an integer >= 2 and <="),
    ("simulate", {"size": 64, "n_particles": 10**9}, "'n_particles' must be"),
    ("simulate", {"size": 512, "n_particles": 100}, "The simulation holds 13,421,772,800"),
    ("simulate", {"size": 16, "kind": "fields", "field_shape": [10**6, 64, 64]},
     "'field_shape' must be .* each at most 4096"),
    ("compare", {"symmetry": 10**6}, "'symmetry' must be an integer >= 1 and <= 100,"),
    ("compare", {"coarse_step_deg": 0.5}, "registration's angular step.*rotations per particle"),
    ("extract", {"box_size_um": 100.0, "voxel_size_um": 0.001}, "holds 100000 voxels"),
])
def test_bounds_are_checked_before_the_inputs_are_read(tmp_path, capsys, step, params, match):
    """The inputs do not exist: the bound is the first thing the job checks."""
    missing = tmp_path / "missing.csv"
    inputs = {name: missing for name in ("particles", "psf", "volume", "reference",
                                         "coordinates", "images")}
    job = write_job(tmp_path / "job.json", step=step, inputs=inputs,
                    params={"voxel_size": [0.1] * 3, **params},
                    outputs={"summary": tmp_path / "out" / "summary.json"})
    assert main([step, str(job)]) == EXIT_JOB_ERROR
    err = capsys.readouterr().err
    assert "does not exist" not in err
    assert re.search(match, err), err
    assert not (tmp_path / "out" / "summary.json").exists()
