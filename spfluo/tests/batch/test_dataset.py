"""Dataset folders: files found by name, dataset.json values, simulated folders (no engine)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from spfluo.batch.dataset import project_name, read_dataset
from spfluo.batch.simulated import write_fields_dataset, write_particles_dataset
from spfluo.io import read_coordinates_csv, read_volume


def test_files_found_by_name(tmp_path):
    ds = tmp_path / "ds1"
    (ds / "fields").mkdir(parents=True)
    (ds / "fields" / "a.tif").write_bytes(b"x")
    (ds / "particles").mkdir()  # empty: not a value
    (ds / "psf.ome.tif").write_bytes(b"x")
    (ds / "examples.csv").write_text("image_id,x,y,z\n")
    (ds / "reference.mrc").write_bytes(b"x")
    (ds / "poses.star").write_text("")
    d = read_dataset(ds)
    assert d.name == "ds1" and d.path == ds.resolve()
    assert d.files == {"fields": str(ds.resolve() / "fields" / "*"),
                       "psf": str(ds.resolve() / "psf.ome.tif"),
                       "reference": str(ds.resolve() / "reference.mrc"),
                       "examples": str(ds.resolve() / "examples.csv"),
                       "poses": str(ds.resolve() / "poses.star")}
    assert d.values["dataset"] == str(ds.resolve()) and d.values["name"] == "ds1"
    assert "particles" not in d.values and "voxel_source" not in d.values


def test_dataset_json_overrides_and_voxel_sizes(tmp_path):
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "psf.tif").write_bytes(b"x")
    (ds / "dataset.json").write_text(json.dumps({
        "voxel_size_xy": 0.04, "voxel_size_z": 0.12, "symmetry": 9, "doRegister": True,
        "psf_voxel_size_z": 0.2, "examples": "picks/ex.csv", "reference": "/abs/ref.tif"}))
    v = read_dataset(ds).values
    assert v["symmetry"] == "9" and v["doRegister"] == "true"
    assert v["voxel_source"] == v["psf_voxel_source"] == v["reference_voxel_source"] == "1"
    assert float(v["voxel_size_xy"]) == 0.04 and float(v["psf_voxel_size_xy"]) == 0.04
    assert float(v["psf_voxel_size_z"]) == 0.2          # given: kept
    assert float(v["reference_voxel_size_z"]) == 0.12   # propagated
    assert v["examples"] == str(ds.resolve() / "picks" / "ex.csv")  # relative to the folder
    assert v["reference"] == "/abs/ref.tif"
    assert v["psf"] == str(ds.resolve() / "psf.tif")


def test_dataset_errors(tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        read_dataset(tmp_path / "missing")
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "dataset.json").write_text("{not json")
    with pytest.raises(ValueError, match="Cannot read .*dataset.json"):
        read_dataset(ds)
    (ds / "dataset.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="holds a JSON list; it must be a JSON object"):
        read_dataset(ds)
    (ds / "dataset.json").write_text('{"symmetry": [9]}')
    with pytest.raises(ValueError, match="value of 'symmetry' is list"):
        read_dataset(ds)
    (ds / "dataset.json").write_text('{"diameter": NaN}')
    with pytest.raises(ValueError, match="value of 'diameter' is nan; give a finite number"):
        read_dataset(ds)


def test_project_names():
    assert project_name("spr", "my data (2)") == "spr-my_data__2_"
    assert project_name("", "_x") == "d_x"
    assert project_name("p", "ok.1-a") == "p-ok.1-a"


def test_simulated_folders(tmp_path):
    p = write_particles_dataset(tmp_path / "p", n_particles=3, box=12, values={"max_epochs": 2})
    d = read_dataset(p)
    assert set(d.files) == {"particles", "psf", "reference"}
    assert len(list((p / "particles").iterdir())) == 3
    ref = read_volume(p / "reference.tif")
    assert ref.data.shape == (1, 12, 12, 12) and np.allclose(ref.voxel_size, 0.05)
    assert json.loads((p / "dataset.json").read_text()) == {"symmetry": 9, "max_epochs": 2}

    f = write_fields_dataset(tmp_path / "f", n_fields=2, n_examples=2)
    d = read_dataset(f)
    assert set(d.files) == {"fields", "psf", "examples"}
    field = read_volume(f / "fields" / "field_1.ome.tif")
    assert field.data.shape == (1, 16, 48, 48) and np.allclose(field.voxel_size, (0.1, 0.05, 0.05))
    table = read_coordinates_csv(f / "examples.csv")
    assert list(table.image_ids) == ["field_0", "field_0"]
    extent = np.array([16, 48, 48]) * np.array([0.1, 0.05, 0.05])
    assert np.all(table.positions_zyx_um >= 0) and np.all(table.positions_zyx_um <= extent)
    assert float(d.values["diameter"]) == pytest.approx(12 * 0.05)

    with pytest.raises(ValueError, match="already holds a dataset"):
        write_fields_dataset(f)
    with pytest.raises(ValueError, match="n_particles must be an integer >= 1, got 0"):
        write_particles_dataset(tmp_path / "q", n_particles=0)
    with pytest.raises(ValueError, match=r"n_examples \(4\) must be <= particles_per_field \(3\)"):
        write_fields_dataset(tmp_path / "g", n_examples=4)


def test_modules_import_without_pyworkflow():
    code = ("import sys, spfluo.batch, spfluo.batch.simulated, spfluo.batch.cli, spfluo.queue, "
            "spfluo.report; print('pyworkflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
