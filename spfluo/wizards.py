"""Wizards of the Scipion forms: click example particles on the fields of view.

pyworkflow finds this module as the plugin's ``wizards`` and puts a wizard button next
to the parameters of ``_targets``:

- "pick particles", *Example particles*: the picker opens on the form's images (its
  detection channel), starting from the examples already chosen; each save writes a CSV
  in the project's ``Uploads/``, imports it ("import coordinates", run and waited for)
  and chooses its output as the form's example particles;
- "import coordinates", *Coordinates file*: the picker opens on the form's images,
  starting from the file already given; each save writes a new CSV in ``Uploads/`` and
  puts its path in the form.
"""

from __future__ import annotations

import os

import numpy as np
import pyworkflow.object as pwobj
from pyworkflow.viewer import DESKTOP_TKINTER
from pyworkflow.wizard import Wizard

from .io import CoordinateTable, read_coordinates_csv
from .protocols import ProtImportCoordinates, ProtPickParticles
from .protocols.base import pointed

__all__ = ["PickExamplesWizard", "import_examples"]

#: Label of the import runs that the picking form's wizard launches.
IMPORT_LABEL = "examples picked by hand"


def _coordinates_table(coords) -> CoordinateTable:
    items = coords.items()
    return CoordinateTable(image_ids=np.array([c.getImageId() for c in items], dtype=str),
                           positions_zyx_um=np.array([c.getPositionZYX() for c in items],
                                                     dtype=float).reshape(-1, 3))


def import_examples(project, images_pointer, path, box_size_um: float):
    """Run "import coordinates" on ``path`` for the images of ``images_pointer``; wait.

    Returns the run (finished, or not: see its status and error).
    """
    from .workflow import launch

    prot = project.newProtocol(ProtImportCoordinates)
    prot.setObjLabel(IMPORT_LABEL)
    prot.inputImages.copy(images_pointer)
    prot.coordinatesFile.set(str(path))
    prot.boxSize.set(float(box_size_um))
    launch(project, prot)
    return project.getProtocol(prot.getObjId())


class PickExamplesWizard(Wizard):
    """Click example particles on the images of the form (see the module docstring)."""

    _targets = [(ProtPickParticles, ["inputExamples"]),
                (ProtImportCoordinates, ["coordinatesFile"])]
    _environments = [DESKTOP_TKINTER]

    def show(self, form, *params):
        """Open the picker beside the form; ``self.window`` is the picker's window."""
        from .errors import ProjectError
        from .viewers.picker import ExamplePicker, fields_from_images, free_csv_path
        from .viewers.window import PickerWindow

        prot = form.protocol
        images = pointed(prot.inputImages)
        if images is None:
            form.showError("Choose the images first: the examples are clicked on them.")
            return None
        picking = isinstance(prot, ProtPickParticles)
        project = prot.getProject()
        try:
            if picking:
                channel, box = int(prot.channel.get() or 0), prot._boxSize()
                chosen = pointed(prot.inputExamples)
                examples = _coordinates_table(chosen) if chosen is not None else None
            else:
                channel, box = 0, float(prot.boxSize.get() or 1.0)
                given = prot.coordinatesFile.get()
                examples = read_coordinates_csv(given) if given and os.path.isfile(given) \
                    else None
            fields = fields_from_images(images, channel)
            out = free_csv_path(os.path.join(project.getPath(), "Uploads"))
            picker = ExamplePicker(fields, box_size_um=box, out=out, examples=examples,
                                   on_saved=self._after_save(form, project, box, picking))
        except (ValueError, OSError, ProjectError) as exc:
            form.showError(f"Cannot open the example picker: {exc}")
            return None
        self.window = PickerWindow(picker, title=f"spfluo: click example particles "
                                                 f"(channel {channel})", master=form.root)
        return self.window

    @staticmethod
    def _after_save(form, project, box: float, picking: bool):
        """What a save does to the form: set the file, or import it and choose the import."""
        from .errors import ProjectError

        def saved(path, table):
            if not picking:
                form.setVar("coordinatesFile", str(path))
                return "set as the form's coordinates file"
            try:
                run = import_examples(project, form.protocol.inputImages, path, box)
            except ProjectError as exc:
                return f"the import was refused: {exc}"
            if run.getStatus() != "finished":
                return f"the import failed: {run.getErrorMessage()}"
            form.setVar("inputExamples", pwobj.Pointer(run, extended="outputCoordinates"))
            return f"imported as run #{run.getObjId()}, chosen as the form's example particles"

        return saved
