"""The viewer of the Scipion GUI: one window per output with all of its figures, a tab each,
at the figures' own size (scrolled when larger than the screen), titled by run and output."""

from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.figure import Figure

from spfluo.protocols import ProtSimulateDataset
from spfluo.tests._projects import finished

from ._screen import grab, is_blank


@pytest.fixture
def root(on_display):
    import tkinter as tk

    root = tk.Tk()
    root.withdraw()  # as the project window's root: the viewer opens Toplevels of it
    yield root
    root.destroy()


def _shot(display, top):
    top.update()
    x, y = top.winfo_rootx(), top.winfo_rooty()
    return grab(display, (x, y, x + top.winfo_width(), y + top.winfo_height()))


def test_analyze_results_opens_one_window_with_every_figure(project, launch, root, on_display,
                                                           tmp_path):
    import pyworkflow as pw
    from pyworkflow.viewer import DESKTOP_TKINTER

    from spfluo.viewers import SpfluoViewer, figures_for
    from spfluo.viewers.labels import figure_label

    sim = finished(launch(ProtSimulateDataset, boxSize=12, nParticles=3, nSpots=0,
                          label="simulated"))
    volume = sim.outputVolume
    # what "Analyze results" finds for the output: spfluo's viewer
    viewers = pw.Config.getDomain().findViewers(volume, DESKTOP_TKINTER)
    assert viewers and viewers[0] is SpfluoViewer
    viewer = SpfluoViewer(project=project, protocol=sim, parent=SimpleNamespace(root=root))
    views = viewer._visualize(volume)
    assert len(views) == 1  # one window per output
    views[0].show()  # a Toplevel of the GUI's root: returns at once
    window = views[0].window
    names = [name for name, _ in figures_for(volume)]
    assert window.top.title() == f"run #{sim.getObjId()} simulated: outputVolume (volume " \
                                 f"{volume.getImageId()})"
    tabs = [window.notebook.tab(k, "text") for k in range(window.notebook.index("end"))]
    assert tabs == [figure_label(n) for n in names] and len(tabs) >= 2
    for k in range(len(tabs)):
        window.notebook.select(k)
        shot = _shot(on_display, window.top)
        shot.save(tmp_path / f"tab{k}.png")
        assert not is_blank(shot), tabs[k]
    # the figures keep their size (not squeezed to the window): the window fits the largest
    widths = [c.get_tk_widget().winfo_reqwidth() for c in window.canvases]
    for canvas, w in zip(window.canvases, widths):
        fw, _ = canvas.figure.get_size_inches() * canvas.figure.dpi
        assert w == pytest.approx(fw, abs=2)
    assert window.top.winfo_width() >= min(max(widths), 0.9 * window.top.winfo_screenwidth())
    window.close()


def test_a_figure_wider_than_the_screen_scrolls_instead_of_shrinking(root, on_display):
    from spfluo.viewers.window import FiguresWindow, figure_pixels

    wide = Figure(figsize=(30, 3), dpi=100)  # 3000 px on a 1600 px screen
    ax = wide.add_subplot()
    ax.plot(np.arange(10), np.arange(10) ** 2)
    ax.set_title("a wide figure")
    small = Figure(figsize=(4, 3), dpi=100)
    small.add_subplot().imshow(np.random.default_rng(0).random((8, 8)))
    window = FiguresWindow([("wide_one", wide), ("slices", small)], title="two figures",
                           master=root)
    window.top.update()
    screen = window.top.winfo_screenwidth()
    assert window.top.winfo_width() <= 0.9 * screen + 1  # within the screen
    widget = window.canvases[0].get_tk_widget()
    assert widget.winfo_width() == figure_pixels(wide)[0] == 3000  # drawn at full size
    area = widget.master
    assert [int(float(v)) for v in area.cget("scrollregion").split()] == [0, 0, 3000, 300]
    assert [window.notebook.tab(k, "text") for k in range(2)] == ["wide one",
                                                                  "slices and projections"]
    assert not is_blank(_shot(on_display, window.top))
    window.close()
    with pytest.raises(ValueError, match="no figure"):
        FiguresWindow([], title="none", master=root)


def test_an_input_that_is_one_image_of_a_set_is_named_in_the_runs_panel(project, launch,
                                                                        data_dir):
    """The GUI names an input RUN.outputImages.ITEM after the image ("from fov_b"), not
    "from None" (the item has no parent in the project)."""
    from pyworkflow.gui.project.viewprotocols_extra import RunIOTreeProvider

    from spfluo.io import write_volume
    from spfluo.protocols import ProtCompareVolumes, ProtImportFluoImages

    for name in ("fov_a", "fov_b"):
        write_volume(data_dir / f"{name}.tif", np.ones((4, 8, 8), np.float32), (0.1,) * 3)
    images = finished(launch(ProtImportFluoImages, filesPattern=str(data_dir / "fov_*.tif")))
    prot = project.newProtocol(ProtCompareVolumes)
    prot.referenceVolume.set(images)
    prot.referenceVolume.setExtended("outputImages.2")
    item = prot.referenceVolume.get()
    label = RunIOTreeProvider.getObjectLabel(item, project.mapper.getParent(item))
    assert label == "fov_b"
