"""One Tk window with every figure of an output: a tab per figure, each at its own size.

The Scipion GUI is a Tk application: the window is a ``Toplevel`` of its root, so
several outputs can be open at once and none blocks the project window.  A figure keeps
the size its function gave it (no squeezed panels); when it is larger than the screen
allows, its tab scrolls.  Each tab has matplotlib's toolbar (zoom, pan, save).
"""

from __future__ import annotations

__all__ = ["FiguresWindow", "PickerWindow", "figure_pixels", "window_title"]

#: The window takes at most this fraction of the screen in each direction.
SCREEN_FRACTION = 0.9


def figure_pixels(fig) -> tuple[int, int]:
    """Width and height of ``fig`` in pixels at its dpi."""
    w, h = fig.get_size_inches() * fig.dpi
    return int(round(w)), int(round(h))


def window_title(obj, *, run_id=None, run_label=None, output_name=None) -> str:
    """``"run #8 refine C9: outputVolume (volume)"``, or the object's name alone."""
    from .labels import object_name

    what = object_name(obj)
    if output_name:
        what = f"{output_name} ({what})"
    if run_id is not None:
        return f"run #{run_id} {run_label or ''}".rstrip() + f": {what}"
    return what


class FiguresWindow:
    """A window (a ``Toplevel`` of ``master``, or its own Tk root) holding ``figures``.

    Parameters
    ----------
    figures : list of (str, matplotlib.figure.Figure)
        ``(name, figure)`` pairs as :func:`spfluo.viewers.figures_for` returns them; the tab
        of each is labelled by :func:`spfluo.viewers.labels.figure_label`.
    title : str
        The window title (see :func:`window_title`).
    master : tkinter widget, optional
        The application's root (the Scipion project window); None creates a Tk root
        (call :meth:`mainloop` to wait for the window to be closed).

    Attributes
    ----------
    top : tkinter.Tk or tkinter.Toplevel
    notebook : tkinter.ttk.Notebook
        One tab per figure, in order.
    canvases : list of FigureCanvasTkAgg
    """

    def __init__(self, figures, *, title: str, master=None):
        import tkinter as tk
        from tkinter import ttk

        from .labels import figure_label

        figures = list(figures)
        if not figures:
            raise ValueError("no figure to show")
        self.top = tk.Tk() if master is None else tk.Toplevel(master)
        self.top.title(title)
        self.notebook = ttk.Notebook(self.top)
        self.notebook.pack(fill="both", expand=True)
        self.canvases = []
        sizes = []
        for name, fig in figures:
            frame = ttk.Frame(self.notebook)
            self.notebook.add(frame, text=figure_label(name))
            sizes.append(self._add_figure(frame, fig))
        self._fit(sizes)

    def _add_figure(self, frame, fig) -> tuple[int, int]:
        """The figure at its own size in a scrolled area, its toolbar above; returns the
        pixel size the tab needs."""
        import tkinter as tk

        from matplotlib.backends.backend_tkagg import FigureCanvasTkAgg, NavigationToolbar2Tk

        area = tk.Canvas(frame, highlightthickness=0, background="white")
        xbar = tk.Scrollbar(frame, orient="horizontal", command=area.xview)
        ybar = tk.Scrollbar(frame, orient="vertical", command=area.yview)
        area.configure(xscrollcommand=xbar.set, yscrollcommand=ybar.set)
        canvas = FigureCanvasTkAgg(fig, master=area)
        widget = canvas.get_tk_widget()
        width, height = figure_pixels(fig)
        widget.configure(width=width, height=height)
        area.create_window(0, 0, window=widget, anchor="nw")
        area.configure(scrollregion=(0, 0, width, height))
        toolbar = NavigationToolbar2Tk(canvas, frame, pack_toolbar=False)
        toolbar.update()
        toolbar.grid(row=0, column=0, columnspan=2, sticky="ew")
        area.grid(row=1, column=0, sticky="nsew")
        ybar.grid(row=1, column=1, sticky="ns")
        xbar.grid(row=2, column=0, sticky="ew")
        frame.rowconfigure(1, weight=1)
        frame.columnconfigure(0, weight=1)
        canvas.draw()
        self.canvases.append(canvas)
        return width, height + toolbar.winfo_reqheight()

    def _fit(self, sizes) -> None:
        """Size the window to its largest figure, within the screen."""
        self.top.update_idletasks()
        extra_w, extra_h = 24, 60  # scroll bar, tabs and window frame
        width = max(w for w, _ in sizes) + extra_w
        height = max(h for _, h in sizes) + extra_h
        screen_w = int(self.top.winfo_screenwidth() * SCREEN_FRACTION)
        screen_h = int(self.top.winfo_screenheight() * SCREEN_FRACTION)
        self.top.geometry(f"{min(width, screen_w)}x{min(height, screen_h)}")

    def mainloop(self) -> None:
        """Wait until the window is closed (only for a window with its own root)."""
        self.top.mainloop()

    def close(self) -> None:
        self.top.destroy()


class PickerWindow:
    """The example picker (:class:`spfluo.viewers.picker.ExamplePicker`) in a Tk window.

    Parameters
    ----------
    picker : ExamplePicker
    title : str
    master : tkinter widget, optional
        The application's root (the Scipion form); None creates a Tk root (call
        :meth:`mainloop` to wait for the window to be closed).

    Attributes
    ----------
    top : tkinter.Tk or tkinter.Toplevel
    canvas : FigureCanvasTkAgg
        The picker's figure canvas (its Tk widget receives the clicks and keys).
    """

    def __init__(self, picker, *, title: str, master=None):
        import tkinter as tk

        from matplotlib.backends.backend_tkagg import FigureCanvasTkAgg, NavigationToolbar2Tk

        self.picker = picker
        self.top = tk.Tk() if master is None else tk.Toplevel(master)
        self.top.title(title)
        self.canvas = FigureCanvasTkAgg(picker.fig, master=self.top)
        toolbar = NavigationToolbar2Tk(self.canvas, self.top, pack_toolbar=False)
        toolbar.update()
        toolbar.pack(side="bottom", fill="x")
        widget = self.canvas.get_tk_widget()
        width, height = figure_pixels(picker.fig)
        widget.configure(width=width, height=height)
        widget.pack(side="top", fill="both", expand=True)
        picker.draw()
        widget.focus_set()  # keys (n, p, m, u, s) go to the figure
        self.top.update_idletasks()
        screen_w = int(self.top.winfo_screenwidth() * SCREEN_FRACTION)
        screen_h = int(self.top.winfo_screenheight() * SCREEN_FRACTION)
        self.top.geometry(f"{min(width, screen_w)}x"
                          f"{min(height + toolbar.winfo_reqheight(), screen_h)}")

    def mainloop(self) -> None:
        """Wait until the window is closed (only for a window with its own root)."""
        self.top.mainloop()

    def close(self) -> None:
        self.top.destroy()
