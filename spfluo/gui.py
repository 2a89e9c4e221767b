"""``spfluo gui`` and ``spfluo pick-examples``: the Scipion GUI and the example picker.

``spfluo gui [PROJECT]`` opens the engine's project window (or its list of projects)
in this process, with the environment that every ``spfluo`` command sets
(:func:`spfluo.environment.bootstrap`: the spfluo home's projects, hosts file and
domain), so no ``scipion3`` installation is needed.  Figures open in Tk windows
(:mod:`spfluo.viewers.window`), hence ``MPLBACKEND=TkAgg`` for the GUI.

``spfluo pick-examples PROJECT IMAGES`` opens the example picker
(:mod:`spfluo.viewers.picker`) on a set of images of a project and writes the
coordinates CSV that "import coordinates" reads (optionally importing it).
"""

from __future__ import annotations

import os

from .errors import ProjectError

__all__ = ["open_gui", "add_parser"]


def _check_display() -> None:
    """A clear error, before any window, when there is no display to open one on."""
    import sys

    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY") \
            and not os.environ.get("WAYLAND_DISPLAY"):
        raise ProjectError("no display to open a window on ($DISPLAY is not set): run this "
                           "in a desktop session, or connect with `ssh -X`")


def open_gui(name: str | None = None) -> int:
    """Open the project window of ``name`` (or the list of projects) and wait until it closes.

    Call :func:`spfluo.environment.bootstrap` first.
    """
    _check_display()
    os.environ["MPLBACKEND"] = "TkAgg"
    import tkinter

    try:
        if name:
            from pyworkflow.gui.project import ProjectWindow

            from .workflow import open_project

            path = open_project(name, chdir=False).getPath()
            ProjectWindow(path).show()
        else:
            from pyworkflow.gui.project import ProjectManagerWindow

            ProjectManagerWindow().show()
    except tkinter.TclError as exc:
        raise ProjectError(f"cannot open a window: {exc}") from exc
    return 0


def _cmd_gui(args) -> int:
    return open_gui(args.name)


def _cmd_pick_examples(args) -> int:
    from .io import read_coordinates_csv
    from .objects import SetOfFluoImages
    from .viewers.picker import ExamplePicker, fields_from_images, free_csv_path
    from .wizards import import_examples
    from .workflow import get_output, open_project, split_run_reference

    _check_display()
    project = open_project(args.name)
    images = get_output(project, args.images)
    if not isinstance(images, SetOfFluoImages):
        raise ProjectError(f"{args.images} is a {type(images).__name__}, not images: give the "
                           "output of an import of fields of view (e.g. 2.outputImages)")
    run, extended = split_run_reference(project, args.images)
    out = args.out_abs or str(free_csv_path(os.path.join(project.getPath(), "Uploads")))
    examples = read_coordinates_csv(args.examples_abs) if args.examples_abs else None
    imported = []

    def saved(path, _table):
        if not args.do_import:
            return None
        import pyworkflow.object as pwobj

        target = pwobj.Pointer(run, extended=extended or "outputImages")
        prot = import_examples(project, target, path, args.box_size)
        imported.append(prot)
        return f"imported as run #{prot.getObjId()} ({prot.getStatus()})"

    try:
        picker = ExamplePicker(fields_from_images(images, args.channel),
                               box_size_um=args.box_size, out=out, examples=examples,
                               on_saved=saved)
    except (ValueError, OSError) as exc:
        raise ProjectError(str(exc)) from exc
    import tkinter

    from .viewers.window import PickerWindow

    try:
        window = PickerWindow(picker, title=f"spfluo: click example particles in {args.images}")
    except tkinter.TclError as exc:
        raise ProjectError(f"cannot open a window: {exc}") from exc
    window.mainloop()
    if not os.path.exists(out) or not picker.count():
        print("no example saved")
        return 0
    print(f"saved {picker.count()} example(s) to {out}")
    for prot in imported[-1:]:
        print(f"imported as run #{prot.getObjId()} {prot.getRunName()}: {prot.getStatus()}; "
              f"use {prot.getObjId()}.outputCoordinates as the examples of 'pick particles'")
        return 0 if prot.getStatus() == "finished" else 1
    print(f"import it with: spfluo run {args.name} ProtImportCoordinates "
          f"inputImages={run.getObjId()}.{extended or 'outputImages'} coordinatesFile={out} "
          f"boxSize={args.box_size:g}")
    return 0


def add_parser(sub) -> None:
    """Register ``spfluo gui`` and ``spfluo pick-examples`` on the command's sub-parsers."""
    p = sub.add_parser("gui", help="open the Scipion GUI (a project, or the list of projects)",
                       description="Open the Scipion project window of PROJECT (or the list of "
                                   "projects) with spfluo's environment: the protocols, the "
                                   "runs graph, the forms with their help, and every output's "
                                   "figures in one window (Analyze results).")
    p.add_argument("name", nargs="?", metavar="PROJECT", help="project name or folder")
    p.set_defaults(func=_cmd_gui)

    p = sub.add_parser("pick-examples", help="click example particles on a project's images",
                       description="Open the fields of view of IMAGES (RUN.outputImages; RUN a "
                                   "run id or label) at physical scale: left click adds an "
                                   "example, right click removes one; 'save CSV' writes the "
                                   "coordinates file that ProtImportCoordinates reads.")
    p.add_argument("name", metavar="PROJECT", help="project name or folder")
    p.add_argument("images", metavar="IMAGES", help="the images, e.g. 2.outputImages")
    p.add_argument("--channel", type=int, default=0, help="channel shown (from 0)")
    p.add_argument("--box-size", type=float, default=1.0,
                   help="box drawn around each example and given to the import (µm)")
    p.add_argument("--examples", help="a coordinates CSV to start from (not modified)")
    p.add_argument("--out", help="the CSV to write (must not exist; default "
                                 "<project>/Uploads/examples-N.csv)")
    p.add_argument("--import", dest="do_import", action="store_true",
                   help="import the saved CSV into the project (ProtImportCoordinates)")
    p.set_defaults(func=_cmd_pick_examples, paths=["out", "examples"])
