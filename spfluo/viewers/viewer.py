"""The pyworkflow Viewer that shows every registered figure of an output in one window."""

from __future__ import annotations

from pyworkflow.viewer import DESKTOP_TKINTER, View, Viewer

from .registry import figures_for, viewable_classes

__all__ = ["FiguresView", "SpfluoViewer"]


class FiguresView(View):
    """Every figure of one object in one window, a tab per figure (needs a display).

    Parameters
    ----------
    figures : list of (str, Figure)
    title : str
        The window title.
    master : tkinter widget, optional
        The root of the running Tk application (the Scipion GUI); None opens a window
        with its own root and waits until it is closed.
    """

    def __init__(self, figures, title: str, master=None):
        self.figures = figures
        self.title = title
        self.master = master
        self.window = None

    def show(self):
        from .window import FiguresWindow

        self.window = FiguresWindow(self.figures, title=self.title, master=self.master)
        if self.master is None:
            self.window.mainloop()


class SpfluoViewer(Viewer):
    """Figures of spfluo objects: slices, particle grids, curves and maps."""

    _label = "spfluo figures"
    _environments = [DESKTOP_TKINTER]
    _targets = viewable_classes()

    def _visualize(self, obj, **kwargs):
        from .window import window_title

        run_id = run_label = output_name = None
        protocol = kwargs.get("protocol") or self.protocol
        if protocol is not None:
            run_id, run_label = protocol.getObjId(), protocol.getRunName()
            output_name = next((name for name, out in protocol.iterOutputAttributes()
                                if out.getObjId() == obj.getObjId()), None)
        title = window_title(obj, run_id=run_id, run_label=run_label, output_name=output_name)
        return [FiguresView(figures_for(obj), title, master=self._tkRoot)]
