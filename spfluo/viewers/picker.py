"""Click example particles on fields of view: the coordinates CSV that the import reads.

:class:`ExamplePicker` draws one field of view at a time at physical scale (µm): the
XY view (maximum projection along z, or one z slice) above the XZ maximum projection,
with a box around every example.  On the XY view a left click adds an example (its
depth is the brightest plane under the click in the projection, the shown plane in
slice mode) and a right click removes the nearest one; on the XZ view a left click
moves the nearest example to the clicked depth.  Buttons and keys: previous/next
image (``p``/``n``), projection or slice (``m``), slice up/down (arrow keys or the
slider), undo (``u``), save (``s``).

Saving writes ``image_id, x, y, z`` in micrometres from the centre of voxel 0
(:func:`spfluo.io.write_coordinates_csv`), the format of "import coordinates", to a
file the picker creates: it never overwrites a file it did not write.

The figure is a plain :class:`matplotlib.figure.Figure` with matplotlib widgets: the
Scipion form's wizard and ``spfluo pick-examples`` embed it in a Tk window
(:func:`spfluo.viewers.window.show_picker`); tests drive it with synthetic events on
the Agg backend.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.widgets import Button, Slider

from ..io import CoordinateTable, write_coordinates_csv
from ._images import display_limits

__all__ = ["FieldOfView", "ExamplePicker", "fields_from_images", "free_csv_path",
           "RECOMMENDED_EXAMPLES"]

#: The picker learns from at least 3 examples; about 10 to 20 work well.
RECOMMENDED_EXAMPLES = (3, 10, 20)


@dataclass(frozen=True)
class FieldOfView:
    """One channel of a field of view.

    Attributes
    ----------
    image_id : str
        The id the coordinates CSV gives (the image set's ``getImageId``).
    data : ndarray, shape (Z, Y, X), float32
    voxel_size : tuple of 3 float
        ``(z, y, x)`` in micrometres.
    """

    image_id: str
    data: np.ndarray
    voxel_size: tuple

    @property
    def extent_um(self) -> np.ndarray:
        """``(z, y, x)`` position of the last voxel's centre, micrometres."""
        return (np.array(self.data.shape) - 1) * np.array(self.voxel_size, dtype=float)


def fields_from_images(images, channel: int = 0) -> list[FieldOfView]:
    """The fields of view of a ``SetOfFluoImages`` (one channel of each)."""
    from ..objects.arrays import load_array

    fields = [FieldOfView(str(img.getImageId()), load_array(img, channel=channel),
                          tuple(float(v) for v in img.getVoxelSize()))
              for img in images.items()]
    if not fields:
        raise ValueError("the image set is empty: import fields of view first")
    return fields


def free_csv_path(folder: str | os.PathLike, stem: str = "examples") -> Path:
    """``folder/stem-N.csv`` with the first N for which no file exists."""
    folder = Path(folder)
    k = 1
    while (folder / f"{stem}-{k}.csv").exists():
        k += 1
    return folder / f"{stem}-{k}.csv"


class ExamplePicker:
    """Example particles clicked on fields of view (see the module docstring).

    Parameters
    ----------
    fields : list of FieldOfView
    box_size_um : float
        Side of the box drawn around each example, micrometres (> 0).
    out : path
        The CSV written by :meth:`save`; it must not exist yet (spfluo never overwrites a
        file it did not write).
    examples : CoordinateTable, optional
        Examples to start from (e.g. an earlier import); their image ids must be among
        the fields'.
    on_saved : callable, optional
        ``on_saved(path, table)`` after each save; its return value (a message) is shown.
    figure : matplotlib.figure.Figure, optional
        Where to draw (default: a new one).

    Attributes
    ----------
    fig : Figure
    ax_xy, ax_xz : Axes
        The XY view and the XZ maximum projection (axes in µm).
    index : int
        The field shown.
    mode : {"projection", "slice"}
    message : str
        The last status or error shown under the buttons.
    """

    def __init__(self, fields, *, box_size_um: float, out, examples: CoordinateTable | None = None,
                 on_saved: Callable | None = None, figure: Figure | None = None):
        self.fields = list(fields)
        if not self.fields:
            raise ValueError("no field of view to pick in")
        if not box_size_um or box_size_um <= 0:
            raise ValueError(f"box size must be > 0 µm, got {box_size_um}")
        self.box = float(box_size_um)
        self.out = Path(out)
        if self.out.exists():
            raise FileExistsError(f"{self.out} exists: spfluo never overwrites a file it did not "
                                  "write; give a new file name")
        self._written = False
        self.on_saved = on_saved
        self.points: dict[str, list[np.ndarray]] = {f.image_id: [] for f in self.fields}
        if examples is not None:
            for image_id, pos in zip(examples.image_ids, examples.positions_zyx_um):
                key = str(image_id)
                if key not in self.points:
                    raise ValueError(f"example in image {key!r}, which is not among the fields "
                                     f"({', '.join(self.points)}): pick in the same images")
                self.points[key].append(np.asarray(pos, dtype=float))
        self._history: list[tuple[str, int]] = []
        self.index = 0
        self.mode = "projection"
        self.z_um = float(self.fields[0].extent_um[0] / 2)
        self.message = ""
        self.fig = figure if figure is not None else Figure(figsize=(11, 8.5))
        self._build()
        self.draw()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        f = self.fields[0]
        z_ext, y_ext = (f.extent_um[:2] + np.array(f.voxel_size[:2]))
        grid = self.fig.add_gridspec(2, 2, height_ratios=[y_ext, max(z_ext, 0.2 * y_ext)],
                                     width_ratios=[1, 0.22], left=0.07, right=0.98,
                                     top=0.93, bottom=0.12, hspace=0.25, wspace=0.15)
        self.ax_xy = self.fig.add_subplot(grid[0, 0])
        self.ax_xz = self.fig.add_subplot(grid[1, 0], sharex=self.ax_xy)
        panel = grid[:, 1].get_position(self.fig)
        x0, w = panel.x0 + 0.01, panel.width - 0.01
        self._buttons = {}
        labels = [("previous", "◀ previous image (p)", self.previous_image),
                  ("next", "next image (n) ▶", self.next_image),
                  ("mode", "projection / slice (m)", self.toggle_mode),
                  ("undo", "undo (u)", self.undo),
                  ("save", "save CSV (s)", self._save_clicked)]
        top = panel.y1
        for k, (key, text, action) in enumerate(labels):
            ax = self.fig.add_axes([x0, top - 0.06 * (k + 1), w, 0.05])
            button = Button(ax, text)
            button.label.set_fontsize(9)
            button.on_clicked(lambda _event, action=action: action())
            self._buttons[key] = button
        slider_ax = self.fig.add_axes([x0 + w / 2 - 0.01, panel.y0 + 0.12, 0.02,
                                       top - 0.06 * len(labels) - panel.y0 - 0.2])
        self.slider = Slider(slider_ax, "slice z (µm)", 0.0, float(f.extent_um[0]),
                             valinit=self.z_um, orientation="vertical")
        self.slider.on_changed(self._slider_changed)
        self._status = self.fig.text(0.07, 0.015, "", fontsize=9, va="bottom")
        self.fig.canvas.mpl_connect("button_press_event", self._on_click)
        self.fig.canvas.mpl_connect("key_press_event", self._on_key)

    # ------------------------------------------------------------------ state
    @property
    def field(self) -> FieldOfView:
        return self.fields[self.index]

    def count(self) -> int:
        """Examples in every field."""
        return sum(len(v) for v in self.points.values())

    def table(self) -> CoordinateTable:
        """The examples, field by field, as the CSV holds them."""
        ids, positions = [], []
        for f in self.fields:
            for pos in self.points[f.image_id]:
                ids.append(f.image_id)
                positions.append(pos)
        return CoordinateTable(image_ids=np.array(ids, dtype=str),
                               positions_zyx_um=np.array(positions, dtype=float).reshape(-1, 3))

    def depth_um(self, y_um: float, x_um: float) -> float:
        """The depth (µm) of the brightest plane under ``(y, x)``, averaged over a quarter box."""
        f = self.field
        vz, vy, vx = f.voxel_size
        Z, Y, X = f.data.shape
        iy, ix = int(round(y_um / vy)), int(round(x_um / vx))
        r = max(1, int(round(self.box / 4 / vx)))
        column = f.data[:, max(iy - r, 0):iy + r + 1, max(ix - r, 0):ix + r + 1].mean(axis=(1, 2))
        if Z >= 3:  # a 3-plane weighted average: one noisy plane does not win
            column = np.convolve(np.pad(column, 1, mode="edge"), [0.25, 0.5, 0.25], "valid")
        return float(np.argmax(column) * vz)

    def _clip(self, pos) -> np.ndarray:
        return np.clip(np.asarray(pos, dtype=float), 0.0, self.field.extent_um)

    # ------------------------------------------------------------------ actions
    def add(self, x_um: float, y_um: float, z_um: float | None = None) -> np.ndarray:
        """Add an example to the field shown; returns its ``(z, y, x)`` in µm.

        Without ``z_um``: the shown plane in slice mode, else :meth:`depth_um`.
        """
        if z_um is None:
            z_um = self.z_um if self.mode == "slice" else self.depth_um(y_um, x_um)
        pos = self._clip((z_um, y_um, x_um))
        points = self.points[self.field.image_id]
        points.append(pos)
        self._history.append((self.field.image_id, len(points) - 1))
        self._say(f"added an example at (x, y, z) = ({pos[2]:.2f}, {pos[1]:.2f}, {pos[0]:.2f}) µm")
        return pos

    def _nearest(self, a: float, b: float, axes: tuple[int, int]) -> int | None:
        """Index of the example of the shown field nearest to ``(a, b)`` in the plane of
        ``axes`` (zyx indices), within half a box; None when there is none."""
        points = self.points[self.field.image_id]
        if not points:
            return None
        arr = np.array(points)
        dist = np.hypot(arr[:, axes[0]] - a, arr[:, axes[1]] - b)
        k = int(np.argmin(dist))
        return k if dist[k] <= self.box / 2 else None

    def remove_near(self, x_um: float, y_um: float) -> bool:
        """Remove the example nearest to ``(x, y)`` (within half a box); True if one was."""
        k = self._nearest(y_um, x_um, (1, 2))
        if k is None:
            self._say("no example within half a box of the click")
            return False
        self.points[self.field.image_id].pop(k)
        self._history = [(i, j if j < k else j - 1) for i, j in self._history
                         if not (i == self.field.image_id and j == k)]
        self._say("removed an example")
        return True

    def move_depth(self, x_um: float, z_um: float) -> bool:
        """Move the example nearest in x (within half a box) of the XZ view to depth ``z_um``."""
        points = self.points[self.field.image_id]
        if not points:
            return False
        arr = np.array(points)
        k = int(np.argmin(np.abs(arr[:, 2] - x_um)))
        if abs(arr[k, 2] - x_um) > self.box / 2:
            self._say("no example within half a box of the click (in x)")
            return False
        points[k] = self._clip((z_um, arr[k, 1], arr[k, 2]))
        self._say(f"moved example {k + 1} to z = {points[k][0]:.2f} µm")
        return True

    def undo(self) -> None:
        """Remove the last example added (in any field)."""
        if not self._history:
            self._say("nothing to undo")
            return
        image_id, k = self._history.pop()
        self.points[image_id].pop(k)
        self._say(f"removed the last example added (image {image_id})")

    def set_image(self, index: int) -> None:
        self.index = int(index) % len(self.fields)
        self.z_um = min(self.z_um, float(self.field.extent_um[0]))
        self.slider.valmax = float(self.field.extent_um[0])
        self.slider.ax.set_ylim(0, max(self.slider.valmax, 1e-9))
        self._say("")

    def next_image(self) -> None:
        self.set_image(self.index + 1)

    def previous_image(self) -> None:
        self.set_image(self.index - 1)

    def toggle_mode(self) -> None:
        self.mode = "slice" if self.mode == "projection" else "projection"
        self._say("")

    def set_slice(self, z_um: float) -> None:
        """Show the plane nearest to depth ``z_um`` (slice mode)."""
        self.mode = "slice"
        self.z_um = float(np.clip(z_um, 0.0, self.field.extent_um[0]))
        if abs(self.slider.val - self.z_um) > 1e-12:
            self.slider.set_val(self.z_um)  # calls back _slider_changed
        self._say("")

    def save(self) -> Path:
        """Write the CSV (every field's examples); returns its path.

        Raises ``ValueError`` when there is no example and ``FileExistsError`` when the
        file appeared meanwhile (written by someone else).
        """
        if self.count() == 0:
            raise ValueError("no example yet: click particles on the XY view first")
        if self.out.exists() and not self._written:
            raise FileExistsError(f"{self.out} appeared meanwhile: spfluo does not overwrite it")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        table = self.table()
        write_coordinates_csv(self.out, table)
        self._written = True
        note = self.on_saved(self.out, table) if self.on_saved is not None else None
        low, good, _ = RECOMMENDED_EXAMPLES
        hint = (f" (the picker needs at least {low}; about {good}-20 work well)"
                if self.count() < good else "")
        self._say(f"saved {self.count()} example(s) to {self.out}{hint}"
                  + (f"; {note}" if note else ""))
        return self.out

    # ------------------------------------------------------------------ events
    def _say(self, text: str) -> None:
        self.message = text
        self.draw()

    def _save_clicked(self) -> None:
        try:
            self.save()
        except (ValueError, OSError) as exc:
            self._say(f"not saved: {exc}")

    def _slider_changed(self, value) -> None:
        self.mode = "slice"
        self.z_um = float(value)
        self.draw()

    def _toolbar_busy(self) -> bool:
        toolbar = getattr(self.fig.canvas, "toolbar", None)
        return bool(toolbar is not None and getattr(toolbar, "mode", ""))

    def _on_click(self, event) -> None:
        if self._toolbar_busy() or event.xdata is None or event.ydata is None:
            return
        if event.inaxes is self.ax_xy:
            if event.button == 1:
                self.add(event.xdata, event.ydata)
            elif event.button == 3:
                self.remove_near(event.xdata, event.ydata)
        elif event.inaxes is self.ax_xz and event.button == 1:
            self.move_depth(event.xdata, event.ydata)

    def _on_key(self, event) -> None:
        actions = {"n": self.next_image, "p": self.previous_image, "m": self.toggle_mode,
                   "u": self.undo, "s": self._save_clicked,
                   "up": lambda: self.set_slice(self.z_um + self.field.voxel_size[0]),
                   "down": lambda: self.set_slice(self.z_um - self.field.voxel_size[0])}
        if event.key in actions:
            actions[event.key]()

    # ------------------------------------------------------------------ drawing
    def draw(self) -> None:
        """Redraw the field, its examples and the status line."""
        f = self.field
        vz, vy, vx = f.voxel_size
        Z, Y, X = f.data.shape
        iz = int(round(self.z_um / vz))
        xy = f.data.max(axis=0) if self.mode == "projection" else f.data[min(iz, Z - 1)]
        xz = f.data.max(axis=1)
        ext_xy = (-vx / 2, (X - 0.5) * vx, (Y - 0.5) * vy, -vy / 2)
        ext_xz = (-vx / 2, (X - 0.5) * vx, (Z - 0.5) * vz, -vz / 2)
        for ax, img, ext, ylabel in ((self.ax_xy, xy, ext_xy, "y (µm)"),
                                     (self.ax_xz, xz, ext_xz, "z (µm)")):
            ax.clear()
            lo, hi = display_limits(img)
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, extent=ext, interpolation="nearest",
                      aspect="equal")
            ax.set_ylabel(ylabel)
        self.ax_xz.set_xlabel("x (µm)")
        self.ax_xz.set_title("XZ maximum projection (click: move the nearest example to this "
                             "depth)", fontsize=9)
        view = ("maximum projection along z" if self.mode == "projection"
                else f"slice z = {min(iz, Z - 1) * vz:.2f} µm")
        self.ax_xy.set_title(f"{f.image_id} ({self.index + 1} of {len(self.fields)}): {view}; "
                             "left click adds, right click removes", fontsize=10)
        if self.mode == "slice":
            self.ax_xz.axhline(min(iz, Z - 1) * vz, color="tab:cyan", lw=1, gid="slice")
        for k, (z, y, x) in enumerate(self.points[f.image_id]):
            for ax, (a, b) in ((self.ax_xy, (x, y)), (self.ax_xz, (x, z))):
                ax.add_patch(Rectangle((a - self.box / 2, b - self.box / 2), self.box, self.box,
                                       fill=False, edgecolor="tab:orange", lw=1.5,
                                       gid="example"))
                ax.text(a + self.box / 2, b - self.box / 2, str(k + 1), color="tab:orange",
                        fontsize=10, fontweight="bold", va="bottom", ha="left")
        self.ax_xy.set_xlim(ext_xy[0], ext_xy[1])
        self.ax_xy.set_ylim(ext_xy[2], ext_xy[3])
        self.ax_xz.set_ylim(ext_xz[2], ext_xz[3])
        here = len(self.points[f.image_id])
        status = f"{here} example(s) in this image, {self.count()} in all; will be saved to " \
                 f"{self.out}"
        self._status.set_text(status + (f"\n{self.message}" if self.message else ""))
        self._status.set_color("tab:red" if self.message.startswith("not saved") else "black")
        self.fig.canvas.draw_idle()
