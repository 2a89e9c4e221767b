"""The `spfluo` command in fresh processes: projects, runs, provenance, workflow JSON, figures."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from spfluo.io import write_volume


def spfluo(home, *args, cwd=None):
    env = dict(os.environ, SPFLUO_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "spfluo.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


def test_every_command_has_help(home):
    for args in (["--help"], ["project", "--help"], ["project", "create", "--help"],
                 ["project", "list", "--help"], ["project", "show", "--help"], ["run", "--help"],
                 ["export", "--help"], ["load", "--help"], ["show", "--help"], ["demo", "--help"],
                 ["protocols", "--help"]):
        out = spfluo(home, *args)
        assert out.returncode == 0, (args, out.stderr)
        assert "usage: spfluo" in out.stdout


def test_project_run_show_export_load(home, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    vol = np.zeros((6, 16, 16), np.float32)
    vol[3, 8, 8] = 1.0
    write_volume(data / "fov_a.tif", vol, (0.25, 0.1, 0.1))
    write_volume(data / "fov_b.tif", vol, (0.25, 0.1, 0.1))

    out = spfluo(home, "project", "create", "p1")
    assert out.returncode == 0, out.stderr
    assert spfluo(home, "project", "create", "p1").returncode == 2  # exists
    assert "p1" in spfluo(home, "project", "list").stdout

    out = spfluo(home, "run", "p1", "ProtImportFluoImages", f"filesPattern={data}/fov_*.tif",
                 "--label", "fields")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "finished" in out.stdout and "outputImages" in out.stdout
    run_id = int(out.stdout.split("#")[1].split()[0])

    # a rejected run: exit 2, clear message, nothing added to the project
    bad = spfluo(home, "run", "p1", "ProtImportFluoImages", f"filesPattern={data}/none_*.tif")
    assert bad.returncode == 2 and "No file matches" in bad.stderr
    bad = spfluo(home, "run", "p1", "ProtImportFluoImages", "nosuchparam=1")
    assert bad.returncode == 2 and "no parameter 'nosuchparam'" in bad.stderr

    (data / "c.csv").write_text("image_id,x,y,z\nfov_a,0.8,0.8,0.75\n")
    out = spfluo(home, "run", "p1", "ProtImportCoordinates", f"inputImages={run_id}.outputImages",
                 f"coordinatesFile={data}/c.csv", "boxSize=0.6")
    assert out.returncode == 0, out.stderr + out.stdout

    show = spfluo(home, "project", "show", "p1")
    assert show.returncode == 0, show.stderr
    text = show.stdout
    assert "2 run(s)" in text
    assert "fields" in text and "ProtImportFluoImages" in text and "ProtImportCoordinates" in text
    assert f"<- inputImages: run #{run_id}.outputImages" in text
    assert "outputImages (SetOfFluoImages): 2 item(s)" in text
    assert "outputCoordinates (SetOfCoordinates3D): 1 item(s)" in text

    wf = tmp_path / "wf.json"
    out = spfluo(home, "export", "p1", "wf.json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    exported = json.loads(wf.read_text())
    assert [d["object.className"] for d in exported] == ["ProtImportFluoImages",
                                                         "ProtImportCoordinates"]
    assert spfluo(home, "project", "create", "p2").returncode == 0
    out = spfluo(home, "load", "p2", str(wf))
    assert out.returncode == 0, out.stderr
    assert "loaded 2 protocol(s)" in out.stdout
    assert "saved" in spfluo(home, "project", "show", "p2").stdout

    png = tmp_path / "fov.png"
    out = spfluo(home, "show", "p1", f"{run_id}.outputImages", "--save", "fov.png", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert spfluo(home, "show", "p1", f"{run_id}.nothing", "--save", str(png)).returncode == 2
    assert spfluo(home, "show", "p1", "999.outputImages", "--save", str(png)).returncode == 2
    # one item of a set: RUNID.outputName.ITEMID
    out = spfluo(home, "show", "p1", f"{run_id}.outputImages.1", "--save", str(tmp_path / "one.png"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "one.png").exists()
    assert spfluo(home, "show", "p1", f"{run_id}.outputImages.77", "--save",
                  str(png)).returncode == 2


def test_unknown_project_and_protocol(home):
    out = spfluo(home, "project", "show", "nope")
    assert out.returncode == 2 and "no project 'nope'" in out.stderr
    spfluo(home, "project", "create", "p")
    out = spfluo(home, "run", "p", "ProtDoesNotExist")
    assert out.returncode == 2 and "unknown protocol" in out.stderr
    out = spfluo(home, "protocols")
    assert "ProtImportFluoImages" in out.stdout
    out = spfluo(home, "protocols", "ProtImportCoordinates")
    assert "boxSize" in out.stdout and "Box size (µm)" in out.stdout
