"""The pyworkflow Viewer that shows every registered figure of an object."""

from __future__ import annotations

from pyworkflow.viewer import DESKTOP_TKINTER, View, Viewer

from .registry import figures_for, viewable_classes

__all__ = ["FigureView", "SpfluoViewer"]


class FigureView(View):
    """Shows one matplotlib Figure in a window (needs a display)."""

    def __init__(self, figure, name=""):
        self.figure = figure
        self.name = name

    def show(self):
        import matplotlib.pyplot as plt

        manager = plt.figure().canvas.manager
        manager.canvas.figure = self.figure
        self.figure.set_canvas(manager.canvas)
        plt.show()


class SpfluoViewer(Viewer):
    """Figures of spfluo objects: slices, particle grids, curves and maps."""

    _label = "spfluo figures"
    _environments = [DESKTOP_TKINTER]
    _targets = viewable_classes()

    def _visualize(self, obj, **kwargs):
        return [FigureView(fig, name) for name, fig in figures_for(obj)]
