"""The example picker in Tk windows: the wizard of the picking and import forms (real Tk
clicks on the figure), and `spfluo pick-examples`."""

import os
import subprocess
import sys

import numpy as np
import pytest

from spfluo.io import read_coordinates_csv, write_volume
from spfluo.protocols import ProtImportCoordinates, ProtImportFluoImages, ProtPickParticles
from spfluo.tests._projects import finished

from ._screen import grab, is_blank, wait_for, window_bbox


class _Form:
    """What a wizard uses of the engine's FormWindow: the protocol, the Tk root, setVar."""

    def __init__(self, protocol, root):
        self.protocol, self.root = protocol, root
        self.values, self.errors = {}, []

    def setVar(self, name, value):
        self.values[name] = value

    def showError(self, message):
        self.errors.append(message)


@pytest.fixture
def images(launch, data_dir):
    data = np.random.default_rng(0).random((6, 40, 48)).astype(np.float32) * 0.1
    data[3, 9:12, 11:14] = 3.0
    write_volume(data_dir / "fov_a.tif", data, (0.2, 0.1, 0.1))
    return finished(launch(ProtImportFluoImages, filesPattern=str(data_dir / "fov_*.tif")))


def _tk_click(window, ax, x_um, y_um, button=1):
    """A real Tk click on the figure's widget at data position (x, y) of ``ax``."""
    widget = window.canvas.get_tk_widget()
    window.top.update()
    px, py = ax.transData.transform((x_um, y_um))
    height = window.canvas.figure.bbox.height
    scale = widget.winfo_height() / height  # the widget may be scaled to the screen
    x, y = int(round(px * scale)), int(round((height - py) * scale))
    widget.event_generate(f"<ButtonPress-{button}>", x=x, y=y)
    widget.event_generate(f"<ButtonRelease-{button}>", x=x, y=y)
    window.top.update()


def _tk_button(window, key):
    """A Tk click at the centre of one of the picker's buttons."""
    ax = window.picker._buttons[key].ax
    _tk_click(window, ax, *ax.transData.inverted().transform(ax.transAxes.transform((0.5, 0.5))))


@pytest.fixture
def root(on_display):
    import tkinter as tk

    root = tk.Tk()
    root.withdraw()
    yield root
    root.destroy()


def test_the_picking_forms_wizard_imports_the_clicked_examples(project, images, root,
                                                               on_display, tmp_path):
    import pyworkflow as pw
    from pyworkflow.viewer import DESKTOP_TKINTER

    from spfluo.wizards import IMPORT_LABEL, PickExamplesWizard

    prot = project.newProtocol(ProtPickParticles, boxSize=0.6)
    prot.inputImages.set(images)
    prot.inputImages.setExtended("outputImages")
    # the engine puts the wizard beside "Example particles"
    assert pw.Config.getDomain().findWizards(prot, DESKTOP_TKINTER).get("inputExamples") \
        is PickExamplesWizard
    form = _Form(prot, root)
    window = PickExamplesWizard().show(form)
    picker = window.picker
    shot = grab(on_display, (window.top.winfo_rootx(), window.top.winfo_rooty(),
                             window.top.winfo_rootx() + window.top.winfo_width(),
                             window.top.winfo_rooty() + window.top.winfo_height()))
    shot.save(tmp_path / "picker.png")
    assert not is_blank(shot)
    _tk_click(window, picker.ax_xy, 1.2, 1.0)           # on the blob: depth 0.6 µm
    _tk_click(window, picker.ax_xy, 3.0, 3.0)
    _tk_click(window, picker.ax_xy, 4.0, 0.5)
    _tk_click(window, picker.ax_xy, 4.0, 0.5, button=3)  # removed again
    assert picker.count() == 2
    np.testing.assert_allclose(picker.points["fov_a"][0], [0.6, 1.0, 1.2], atol=0.051)
    _tk_button(window, "save")
    assert not form.errors and "imported as run #" in picker.message, picker.message
    pointer = form.values["inputExamples"]
    run = pointer.getObjValue()
    assert run.getRunName() == IMPORT_LABEL and run.getStatus() == "finished"
    assert pointer.getExtended() == "outputCoordinates"
    coords = pointer.get()
    assert coords.getSize() == 2 and coords.getBoxSize() == pytest.approx(0.6)
    csv = os.path.join(project.getPath(), "Uploads", "examples-1.csv")
    assert read_coordinates_csv(csv).positions_zyx_um.shape == (2, 3)
    window.close()
    # opened again from the form, the picker starts from the chosen examples
    prot.inputExamples.copy(pointer)
    again = PickExamplesWizard().show(form)
    assert again.picker.count() == 2 and again.picker.out.name == "examples-2.csv"
    again.close()


def test_the_import_forms_wizard_fills_the_file(project, images, root, on_display):
    from spfluo.wizards import PickExamplesWizard

    prot = project.newProtocol(ProtImportCoordinates, boxSize=0.5)
    form = _Form(prot, root)
    assert PickExamplesWizard().show(form) is None  # no images chosen yet: says so
    assert form.errors and "Choose the images first" in form.errors[0]
    prot.inputImages.set(images)
    prot.inputImages.setExtended("outputImages")
    window = PickExamplesWizard().show(form)
    _tk_click(window, window.picker.ax_xy, 1.2, 1.0)
    _tk_button(window, "save")
    path = form.values["coordinatesFile"]
    assert path.endswith("examples-1.csv") and read_coordinates_csv(path).image_ids.size == 1
    window.close()


def test_pick_examples_command_opens_the_picker(images, project, on_display, tmp_path):
    """`spfluo pick-examples` on a project: its window shows the field; refusals are clear."""
    env = dict(os.environ, SPFLUO_HOME=os.environ["SPFLUO_HOME"], DISPLAY=on_display)
    path = project.getPath()
    cmd = [sys.executable, "-m", "spfluo.cli", "pick-examples", path,
           f"{images.getObjId()}.outputImages", "--box-size", "0.6"]
    log = tmp_path / "pick.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        bbox = wait_for(lambda: window_bbox(on_display, "click example particles"), 120,
                        "the picker's window", proc)
        shot = wait_for(lambda: (lambda im: None if is_blank(im) else im)(
            grab(on_display, bbox)), 60, "the field of view", proc)
        assert shot.width > 400
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "Traceback" not in log.read_text()
    bad = subprocess.run(cmd[:5] + [f"{images.getObjId()}.outputImages.1"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not images" in bad.stderr
    mine = tmp_path / "mine.csv"
    mine.write_text("x")
    bad = subprocess.run(cmd + ["--out", str(mine)], env=env, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "never overwrites" in bad.stderr and mine.read_text() == "x"
