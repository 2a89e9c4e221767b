"""Shell metacharacters in project paths: refused wherever a path enters, so no command runs.

pyworkflow launches every run through a shell with the project folder between double
quotes; each test asserts that the command hidden in the path did not run (no marker
file) and that the message names the path and the fix.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from spfluo.errors import ProjectError
from spfluo.io import write_volume


def _payloads(marker):
    """Folder names that run ``touch MARKER`` when a shell reads them between double quotes."""
    return {
        "backticks": f"loc`touch {marker}`",
        "dollar-paren": f"loc$(touch {marker})",
        "semicolon": f'loc";touch {marker};"',
        "newline": f'loc"\ntouch {marker}\n"',
        "single-quote": f"loc';touch {marker};'",
    }


@pytest.fixture(params=["backticks", "dollar-paren", "semicolon", "newline", "single-quote"])
def payload(request, tmp_path):
    marker = tmp_path / "PWNED"
    return _payloads(marker)[request.param], marker


@pytest.fixture
def fov(data_dir):
    vol = np.zeros((6, 16, 16), np.float32)
    vol[3, 8, 8] = 1.0
    write_volume(data_dir / "fov.tif", vol, (0.25, 0.1, 0.1))
    return data_dir / "fov.tif"


def test_launch_in_a_project_folder_with_metacharacters_is_refused(tmp_path, payload, fov):
    """The engine would run the command at launch: validation refuses the folder first."""
    from spfluo.tests._projects import new_project
    from spfluo.workflow import launch, new_protocol

    folder, marker = payload
    with new_project(tmp_path / folder / "p") as project:
        prot = new_protocol(project, "ProtImportFluoImages", {"filesPattern": str(fov)})
        with pytest.raises(ProjectError, match="the project folder .* shell") as info:
            launch(project, prot)
        assert "Create the project in another location" in str(info.value)
        assert project.getRuns(refresh=True) == []
    assert not marker.exists()


def test_create_project_at_such_a_location_is_refused(tmp_path, payload):
    from spfluo.workflow import create_project

    folder, marker = payload
    with pytest.raises(ProjectError, match="the project folder"):
        create_project("safe-name", location=str(tmp_path / folder))
    assert not (tmp_path / folder).exists() and not marker.exists()


def test_open_project_whose_real_folder_has_metacharacters_is_refused(
        tmp_path, payload, spfluo_home):
    """A project linked into the projects folder from a bad location (the probe's case)."""
    from spfluo.tests._projects import new_project
    from spfluo.workflow import open_project

    folder, marker = payload
    with new_project(tmp_path / folder / "p"):
        pass
    name = f"linked-{abs(hash(folder))}"
    link = os.path.join(spfluo_home, "projects", name)
    os.symlink(tmp_path / folder / "p", link)
    try:
        with pytest.raises(ProjectError, match="the project folder"):
            open_project(name)
        with pytest.raises(ProjectError, match="the project folder"):
            open_project(str(tmp_path / folder / "p"))
    finally:
        os.remove(link)
    assert not marker.exists()


def test_home_with_metacharacters_is_refused_before_anything_is_made(tmp_path, payload):
    from spfluo.environment import bootstrap

    folder, marker = payload
    before = dict(os.environ)
    with pytest.raises(ProjectError, match="the spfluo home folder"):
        bootstrap(tmp_path / folder)
    assert not (tmp_path / folder).exists()
    assert dict(os.environ) == before


def test_project_names_are_letters_digits_and_dot_dash_underscore(tmp_path):
    from spfluo.workflow import create_project

    for name in ("a`touch x`", "a$(touch x)", "a;b", "a\nb", "a'b", 'a"b', "../up"):
        with pytest.raises(ProjectError, match="invalid project name"):
            create_project(name)


def _spfluo(*args, env_home=None, cwd=None):
    env = dict(os.environ)
    if env_home is not None:
        env["SPFLUO_HOME"] = str(env_home)
    return subprocess.run([sys.executable, "-m", "spfluo.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_cli_refuses_a_bad_home_or_location_and_runs_nothing(tmp_path, fov):
    """The probe's commands, end to end: exit status 2, a message, no marker."""
    marker = tmp_path / "PWNED"
    bad = tmp_path / f"h`touch {marker}`"
    out = _spfluo("--home", bad, "project", "list")
    assert out.returncode == 2 and "the spfluo home folder" in out.stderr
    out = _spfluo("project", "list", env_home=bad)
    assert out.returncode == 2 and "$SPFLUO_HOME" in out.stderr

    home = tmp_path / "home"
    out = _spfluo("project", "create", "p", "--location", tmp_path / f"loc$(touch {marker})",
                  env_home=home)
    assert out.returncode == 2 and "the project folder" in out.stderr, out.stderr
    # a project made elsewhere in a bad folder and linked in: `spfluo run` refuses it
    from spfluo.tests._projects import new_project

    with new_project(tmp_path / f"loc`touch {marker}`" / "p"):
        pass
    os.symlink(tmp_path / f"loc`touch {marker}`" / "p", home / "projects" / "p")
    out = _spfluo("run", "p", "ProtImportFluoImages", f"filesPattern={fov}", env_home=home)
    assert out.returncode == 2 and "the project folder" in out.stderr, out.stderr
    assert not marker.exists()
    assert not (tmp_path / f"loc`touch {marker}`" / "p" / "Runs").exists() or \
        not os.listdir(tmp_path / f"loc`touch {marker}`" / "p" / "Runs")
