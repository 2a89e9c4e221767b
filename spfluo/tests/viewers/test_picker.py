"""The example picker on the Agg backend, driven by synthetic mouse and key events: clicks
add and remove examples at physical positions, the depth is found, the CSV it saves is the
one "import coordinates" reads."""

import numpy as np
import pytest
from matplotlib.backend_bases import KeyEvent, MouseEvent
from matplotlib.backends.backend_agg import FigureCanvasAgg

from spfluo.io import read_coordinates_csv, write_volume
from spfluo.protocols import ProtImportCoordinates, ProtImportFluoImages
from spfluo.tests._projects import finished
from spfluo.viewers.picker import ExamplePicker, FieldOfView, fields_from_images

VOXEL = (0.2, 0.1, 0.1)  # (z, y, x) µm
#: Bright blobs: (field, z, y, x) voxels.
BLOBS = [("fov_a", 5, 10, 12), ("fov_a", 2, 30, 40), ("fov_b", 6, 20, 25)]


def _fields():
    fields = {}
    for name in ("fov_a", "fov_b"):
        data = np.random.default_rng(len(name)).random((8, 40, 48)).astype(np.float32) * 0.1
        for f, z, y, x in BLOBS:
            if f == name:
                data[z, y - 1:y + 2, x - 1:x + 2] = 3.0
        fields[name] = data
    return fields


def _click(picker, ax, x_um, y_um, button=1):
    """Press (and release) the mouse at (x, y) in the data coordinates of ``ax``."""
    canvas = picker.fig.canvas
    px, py = ax.transData.transform((x_um, y_um))
    for name in ("button_press_event", "button_release_event"):
        canvas.callbacks.process(name, MouseEvent(name, canvas, px, py, button=button))


def _key(picker, key):
    canvas = picker.fig.canvas
    canvas.callbacks.process("key_press_event", KeyEvent("key_press_event", canvas, key))


def _press_button(picker, key):
    """Click the centre of one of the picker's buttons."""
    ax = picker._buttons[key].ax
    canvas = picker.fig.canvas
    px, py = ax.transAxes.transform((0.5, 0.5))
    for name in ("button_press_event", "button_release_event"):
        canvas.callbacks.process(name, MouseEvent(name, canvas, px, py, button=1))


def test_clicks_make_the_csv_that_the_import_reads(project, launch, data_dir, tmp_path):
    for name, data in _fields().items():
        write_volume(data_dir / f"{name}.tif", data, VOXEL)
    images = finished(launch(ProtImportFluoImages, filesPattern=str(data_dir / "fov_*.tif")))
    fields = fields_from_images(images.outputImages, channel=0)
    assert [f.image_id for f in fields] == ["fov_a", "fov_b"]
    out = tmp_path / "examples.csv"
    picker = ExamplePicker(fields, box_size_um=0.6, out=out)
    FigureCanvasAgg(picker.fig)
    picker.fig.canvas.draw()

    # field fov_a: a click on each blob of the projection; the depth is the blob's plane
    _click(picker, picker.ax_xy, 12 * 0.1, 10 * 0.1)
    _click(picker, picker.ax_xy, 40 * 0.1 + 0.02, 30 * 0.1)
    _click(picker, picker.ax_xy, 0.3, 3.5)  # a third one, on the background
    assert [tuple(np.round(p, 6)) for p in picker.points["fov_a"][:2]] == \
        [(1.0, 1.0, 1.2), (0.4, 3.0, 4.02)]
    _click(picker, picker.ax_xy, 0.35, 3.45, button=3)  # right click: removed
    assert len(picker.points["fov_a"]) == 2
    _click(picker, picker.ax_xy, 3.0, 0.3, button=3)  # nothing near: nothing removed
    assert len(picker.points["fov_a"]) == 2
    # the XZ view moves the nearest example (in x) to the clicked depth
    _click(picker, picker.ax_xz, 4.0, 1.0)
    assert picker.points["fov_a"][1][0] == pytest.approx(1.0, abs=1e-9)
    _click(picker, picker.ax_xz, 4.0, 0.4)  # and back
    # next field (key n); slice mode (key m) puts an example on the shown plane
    _key(picker, "n")
    assert picker.field.image_id == "fov_b"
    _key(picker, "m")
    picker.set_slice(0.8)
    _click(picker, picker.ax_xy, 2.0, 1.0)
    assert picker.points["fov_b"][0][0] == pytest.approx(0.8)
    _key(picker, "u")  # undo
    assert not picker.points["fov_b"]
    _key(picker, "m")
    _click(picker, picker.ax_xy, 2.5, 2.0)
    assert picker.points["fov_b"][0] == pytest.approx([1.2, 2.0, 2.5])
    # a position at the edge (half a pixel out) is clipped into the image (the import
    # refuses positions outside)
    assert picker.add(-0.05, 3.95) == pytest.approx([picker.depth_um(3.9, 0.0), 3.9, 0.0])
    picker.undo()

    _press_button(picker, "save")
    assert out.exists() and "saved 3 example(s)" in picker.message
    table = read_coordinates_csv(out)
    assert [str(i) for i in table.image_ids] == ["fov_a", "fov_a", "fov_b"]
    np.testing.assert_allclose(table.positions_zyx_um,
                               [[1.0, 1.0, 1.2], [0.4, 3.0, 4.02], [1.2, 2.0, 2.5]])
    # the import reads it: three coordinates at the same places
    imported = finished(launch(ProtImportCoordinates,
                               inputImages=(images, "outputImages"),
                               coordinatesFile=str(out), boxSize=0.6))
    got = sorted((c.getImageId(), *np.round(c.getPositionZYX(), 6))
                 for c in imported.outputCoordinates.items())
    assert got == [("fov_a", 0.4, 3.0, 4.02), ("fov_a", 1.0, 1.0, 1.2), ("fov_b", 1.2, 2.0, 2.5)]
    # saving again rewrites the picker's own file
    _click(picker, picker.ax_xy, 1.0, 1.0)
    picker.save()
    assert len(read_coordinates_csv(out).image_ids) == 4


def test_the_picker_starts_from_examples_and_never_overwrites(tmp_path):
    data = _fields()["fov_a"]
    fields = [FieldOfView("fov_a", data, VOXEL)]
    mine = tmp_path / "mine.csv"
    mine.write_text("the user's file")
    with pytest.raises(FileExistsError, match="never overwrites"):
        ExamplePicker(fields, box_size_um=0.6, out=mine)
    assert mine.read_text() == "the user's file"
    from spfluo.io import CoordinateTable

    start = CoordinateTable(image_ids=np.array(["fov_a"]),
                            positions_zyx_um=np.array([[0.4, 1.0, 1.0]]))
    picker = ExamplePicker(fields, box_size_um=0.6, out=tmp_path / "new.csv", examples=start)
    FigureCanvasAgg(picker.fig)
    assert picker.count() == 1
    other = CoordinateTable(image_ids=np.array(["elsewhere"]),
                            positions_zyx_um=np.array([[0.4, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="'elsewhere', which is not among the fields"):
        ExamplePicker(fields, box_size_um=0.6, out=tmp_path / "x.csv", examples=other)
    empty = ExamplePicker(fields, box_size_um=0.6, out=tmp_path / "empty.csv")
    FigureCanvasAgg(empty.fig)
    _press_button(empty, "save")
    assert empty.message.startswith("not saved: no example yet")
    assert not (tmp_path / "empty.csv").exists()
    with pytest.raises(ValueError, match="box size must be > 0"):
        ExamplePicker(fields, box_size_um=0, out=tmp_path / "y.csv")
