"""`spfluo gui`: the engine's project window (or project list) opens with spfluo's
environment, shows something (not a blank window) and closes."""

import os
import subprocess
import sys

import numpy as np
import pytest

from spfluo.io import write_volume

from ._screen import grab, is_blank, wait_for, window_bbox


def _spfluo(home, *args, **kwargs):
    env = dict(os.environ, SPFLUO_HOME=str(home))
    env.update(kwargs.pop("env", {}))
    return subprocess.run([sys.executable, "-m", "spfluo.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A spfluo home with the project `guiproj` holding one finished import."""
    root = tmp_path_factory.mktemp("gui")
    vol = np.zeros((4, 16, 16), np.float32)
    vol[2, 8, 8] = 1.0
    write_volume(root / "fov.tif", vol, (0.25, 0.1, 0.1))
    home = root / "home"
    assert _spfluo(home, "project", "create", "guiproj").returncode == 0
    out = _spfluo(home, "run", "guiproj", "ProtImportFluoImages", f"filesPattern={root}/fov.tif",
                  "--label", "my fields")
    assert out.returncode == 0, out.stderr
    return home


def _open_and_close(home, display, args, title, tmp_path):
    """Start `spfluo gui ARGS`; wait for a non-blank window titled TITLE; close it."""
    env = dict(os.environ, SPFLUO_HOME=str(home), DISPLAY=display)
    log = tmp_path / "gui.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "spfluo.cli", "gui", *args], env=env,
                                stdout=fh, stderr=subprocess.STDOUT)
    try:
        bbox = wait_for(lambda: window_bbox(display, title), 120, f"a window {title!r}", proc)
        shot = wait_for(lambda: (lambda im: None if is_blank(im) else im)(grab(display, bbox)),
                        60, "the window's content", proc)
        shot.save(tmp_path / "window.png")  # kept with the test's files, to look at
        assert shot.width > 300 and shot.height > 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    return shot


def test_spfluo_gui_opens_the_project_window(home, xdisplay, tmp_path):
    shot = _open_and_close(home, xdisplay, ["guiproj"], "guiproj (", tmp_path)
    # the window shows the runs graph: several colours (the run boxes, the Scipion logo)
    assert len(shot.getcolors(1 << 20)) > 50


def test_spfluo_gui_without_a_project_lists_the_projects(home, xdisplay, tmp_path):
    _open_and_close(home, xdisplay, [], "Projects", tmp_path)


def test_spfluo_gui_says_why_without_a_display(home):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    out = subprocess.run([sys.executable, "-m", "spfluo.cli", "gui", "guiproj"],
                         env=dict(env, SPFLUO_HOME=str(home)), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "no display" in out.stderr
    out = _spfluo(home, "gui", "nosuchproject", env={"DISPLAY": ":12345"})
    assert out.returncode == 2 and "no project 'nosuchproject'" in out.stderr
