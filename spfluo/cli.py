"""The ``spfluo`` command: demo, projects, runs, workflows and figures.

Every command bootstraps the engine's environment (``spfluo.environment``)
before pyworkflow is imported; ``--home`` (or ``$SPFLUO_HOME``) chooses where
projects live.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

from .environment import bootstrap
from .errors import ProjectError
from .params import bounded_int, parse_key_values
from .algorithms.limits import MAX_CHANNELS, MAX_DPI

__all__ = ["main", "build_parser"]


def _fmt_size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _fmt_duration(s) -> str:
    if s is None:
        return "-"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def print_project(project, *, stream=None) -> None:
    """Runs (id, label, protocol, status, duration), outputs with sizes, provenance."""
    from .workflow import describe_runs

    out = stream or sys.stdout
    runs = describe_runs(project)
    print(f"Project {os.path.basename(project.getPath())} ({project.getPath()}): {len(runs)} run(s)", file=out)
    for r in runs:
        print(f"  #{r.run_id:<5} {r.label:<32} {r.class_name:<28} {r.status:<9} "
              f"{_fmt_duration(r.duration_s)}", file=out)
        for key, src, ext in r.inputs:
            print(f"         <- {key}: run #{src}{'.' + ext if ext else ''}", file=out)
        for name, cls, desc, size in r.outputs:
            print(f"         -> {name} ({cls}): {desc}, {_fmt_size(size)}", file=out)
        if r.error:
            print(f"         error: {r.error.strip().splitlines()[-1]}", file=out)


# ------------------------------------------------------------------ commands
def cmd_project_create(args) -> int:
    from .workflow import create_project

    project = create_project(args.name, location=args.location)
    print(f"created project {args.name} at {project.getPath()}")
    return 0


def cmd_project_list(args) -> int:
    from .workflow import list_projects

    projects = list_projects()
    if not projects:
        print("no project yet: create one with `spfluo project create NAME`")
    for info in projects:
        when = datetime.datetime.fromtimestamp(info.getModificationTime())
        print(f"{info.getName():<32} {when:%Y-%m-%d %H:%M}  {info.realPath()}")
    return 0


def cmd_project_show(args) -> int:
    from .workflow import open_project

    print_project(open_project(args.name))
    return 0


def cmd_protocols(args) -> int:
    from .workflow import protocol_class, protocol_classes

    if args.protocol:
        from .protocol_help import describe_protocol

        print(describe_protocol(protocol_class(args.protocol)))
        return 0
    for name, cls in sorted(protocol_classes().items()):
        print(f"{name:<32} {cls._label}")
    return 0


def cmd_run(args) -> int:
    from .workflow import launch, new_protocol, open_project

    project = open_project(args.name)
    prot = new_protocol(project, args.protocol, parse_key_values(args.params), label=args.label)
    status = launch(project, prot)
    print(f"run #{prot.getObjId()} {prot.getRunName()}: {status}")
    for name, out in prot.iterOutputAttributes():
        print(f"  {name}: {out}")
    if status == "finished":
        for line in prot.summary():
            print(f"  {line}")
    if status != "finished":
        print(f"  error: {prot.getErrorMessage()}", file=sys.stderr)
        print(f"  log: {prot.getLogPaths()[1]}", file=sys.stderr)
        return 1
    return 0


def cmd_export(args) -> int:
    from .workflow import open_project

    project = open_project(args.name)
    project.getRunsGraph(refresh=True)
    runs = sorted(project.getRuns(refresh=True), key=lambda p: p.getObjId())
    if not runs:
        raise ProjectError(f"project {args.name} has no run to export")
    project.exportProtocols(runs, args.file_abs)
    print(f"exported {len(runs)} protocol(s) to {args.file_abs}")
    return 0


def cmd_export_particles(args) -> int:
    """Run ProtExportParticles (recorded in the project) and list the files written."""
    from .workflow import launch, new_protocol, open_project

    project = open_project(args.name)
    values = {"inputParticles": args.particles, "exportFolder": args.folder_abs,
              "writeMrc": "false" if args.no_mrc else "true", "channel": args.channel}
    if args.volume:
        values["inputVolume"] = args.volume
    prot = new_protocol(project, "ProtExportParticles", values, label=args.label)
    status = launch(project, prot)
    print(f"run #{prot.getObjId()} {prot.getRunName()}: {status}")
    if status != "finished":
        print(f"  error: {prot.getErrorMessage()}", file=sys.stderr)
        return 1
    for name in sorted(os.listdir(args.folder_abs)):
        if not name.startswith("."):
            print(f"  {os.path.join(args.folder_abs, name)}")
    return 0


def cmd_load(args) -> int:
    from .workflow import load_workflow_file, open_project

    project = open_project(args.name)
    new = load_workflow_file(project, args.file_abs)
    print(f"loaded {len(new)} protocol(s) into {args.name}"
          + (":" if args.run else f" (saved, not run; `spfluo launch {args.name}` runs them):")
          + "".join(f"\n  #{p.getObjId()} {p.getRunName()} ({p.getClassName()})" for p in new))
    if args.run:
        return _launch_runs(project, new)
    return 0


def cmd_show(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from .viewers import figures_for
    from .workflow import get_output, open_project

    project = open_project(args.name)
    figures = figures_for(get_output(project, args.output))
    base, ext = os.path.splitext(args.save_abs)
    ext = ext or ".png"
    for k, (name, fig) in enumerate(figures):
        path = f"{base}{ext}" if k == 0 else f"{base}_{name}{ext}"
        fig.savefig(path, dpi=args.dpi)
        print(f"wrote {path} ({name})")
    return 0


# ------------------------------------------------- run control: continue, stop, launch saved
def _print_launch(prot, status) -> None:
    from .workflow import run_duration

    if status is None:
        print(f"run #{prot.getObjId()} {prot.getRunName()} ...", flush=True)
        return
    print(f"run #{prot.getObjId()} {prot.getRunName()}: {status} in "
          f"{_fmt_duration(run_duration(prot))}", flush=True)
    if status != "finished":
        print(f"  error: {prot.getErrorMessage()}", file=sys.stderr)
        print(f"  log: {prot.getLogPaths()[1]}", file=sys.stderr)


def _launch_runs(project, runs) -> int:
    """Launch ``runs`` in provenance order, one at a time; 1 if one does not finish."""
    from .workflow import launch_in_order, runs_to_launch

    ids = [str(p.getObjId()) for p in runs]
    ordered = runs_to_launch(project, ids) if ids else []
    if not ordered:
        print("no run to launch")
        return 0
    done = launch_in_order(project, ordered, report=_print_launch)
    return 0 if all(status == "finished" for _, status in done) and \
        len(done) == len(ordered) else 1


def cmd_launch(args) -> int:
    from .workflow import open_project, runs_to_launch

    project = open_project(args.name)
    return _launch_runs(project, runs_to_launch(project, args.runs or None))


def cmd_continue(args) -> int:
    from .workflow import continue_run, find_run, open_project

    project = open_project(args.name)
    prot = find_run(project, args.run)
    print(f"continuing run #{prot.getObjId()} {prot.getRunName()} ({prot.getStatus()})",
          flush=True)
    status = continue_run(project, prot)
    prot = project.getProtocol(prot.getObjId())
    _print_launch(prot, status)
    return 0 if status == "finished" else 1


def cmd_stop(args) -> int:
    from .workflow import find_run, open_project, stop_run

    project = open_project(args.name)
    prot = find_run(project, args.run)
    status = stop_run(project, prot)
    print(f"run #{prot.getObjId()} {prot.getRunName()}: {status}; `spfluo continue "
          f"{args.name} {prot.getObjId()}` resumes it")
    return 0


def _add_run_control_parsers(sub) -> None:
    continue_text = ("Resume run RUN (id or label) in the engine's continue mode: finished steps "
                     "are kept and the long jobs (ab initio, refinement) restart from their last "
                     "checkpoint. Exit status 1 when it fails again, 2 when refused.")
    launch_text = ("Launch the given runs (ids or labels), or every run that was saved and never "
                   "run, one after the other in provenance order, waiting for each; stop at the "
                   "first that fails (exit status 1).")
    commands = [
        ("continue", cmd_continue, "resume a failed or stopped run from its checkpoint",
         continue_text, dict(help="run id or label")),
        ("stop", cmd_stop, "stop a running run (it can be continued later)", None,
         dict(help="run id or label")),
        ("launch", cmd_launch, "run saved runs (e.g. a loaded workflow) in order", launch_text,
         dict(nargs="*", help="run ids or labels (default: all saved runs)")),
    ]
    for command, func, summary, text, run_arg in commands:
        p = sub.add_parser(command, help=summary, description=text)
        p.add_argument("name", help="project name")
        p.add_argument("runs" if command == "launch" else "run", metavar="RUN", **run_arg)
        p.set_defaults(func=func)


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(name=args.project, quick=args.quick, out=args.out_abs)


# ------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spfluo",
        description="Single particle reconstruction in 3D fluorescence microscopy "
                    "(a Scipion/pyworkflow plugin).")
    parser.add_argument("--home", help="spfluo home folder (default $SPFLUO_HOME or ~/.spfluo)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="simulate data, run the pipeline in a new project, report")
    p.add_argument("--quick", action="store_true", help="small sizes (about 30 s): a smoke test of the same chain")
    p.add_argument("--project", default=None, help="project name (default: a new spfluo-demo-N)")
    p.add_argument("--out", default=None, help="folder of the figures and the report (default: "
                                               "the project's report folder)")
    p.set_defaults(func=cmd_demo, paths=["out"])

    proj = sub.add_parser("project", help="create, list and show projects")
    psub = proj.add_subparsers(dest="project_command", required=True, metavar="ACTION")
    p = psub.add_parser("create", help="create a project")
    p.add_argument("name")
    p.add_argument("--location", help="folder to create it in (linked into the projects folder)")
    p.set_defaults(func=cmd_project_create)
    p = psub.add_parser("list", help="list projects")
    p.set_defaults(func=cmd_project_list)
    p = psub.add_parser("show", help="runs with status, duration, outputs and provenance")
    p.add_argument("name")
    p.set_defaults(func=cmd_project_show)

    p = sub.add_parser("protocols", help="list protocols, or the parameters of one")
    p.add_argument("protocol", nargs="?")
    p.set_defaults(func=cmd_protocols)

    p = sub.add_parser("run", help="run a protocol in a project and wait for it",
                       description="Launch any spfluo protocol. Parameters are key=value; a "
                                   "pointer to another run's output is RUN.outputName (RUN: "
                                   "its id or label). "
                                   "Exit status 1 when the run fails, 2 on invalid input.")
    p.add_argument("name", help="project name")
    p.add_argument("protocol", help="protocol class, e.g. ProtImportFluoImages")
    p.add_argument("params", nargs="*", metavar="key=value")
    p.add_argument("--label", help="run label")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("export", help="write the project's workflow as the engine's JSON")
    p.add_argument("name")
    p.add_argument("file")
    p.set_defaults(func=cmd_export, paths=["file"])

    p = sub.add_parser("export-particles",
                       help="write particles with poses (RELION STAR, CSV, MRC) and a volume",
                       description="Export particles with their poses as a RELION 3.1 STAR "
                                   "file, a CSV and MRC particles, and a volume as OME-TIFF "
                                   "and MRC, into a new or empty folder (a run of "
                                   "ProtExportParticles in the project).")
    p.add_argument("name", help="project name")
    p.add_argument("particles", help="RUNID.outputParticles (particles with poses)")
    p.add_argument("folder", help="a new or empty folder (or one spfluo exported to)")
    p.add_argument("--volume", help="RUNID.outputVolume to export too")
    p.add_argument("--channel", type=bounded_int(0, MAX_CHANNELS - 1), default=0,
                   help="channel of the MRC particles (default 0)")
    p.add_argument("--no-mrc", action="store_true",
                   help="do not write the particles as MRC (the STAR names the project's files)")
    p.add_argument("--label", help="run label")
    p.set_defaults(func=cmd_export_particles, paths=["folder"])

    p = sub.add_parser("load", help="add the protocols of a workflow JSON to a project",
                       description="Add the protocols of a workflow JSON (as `spfluo export` "
                                   "writes it) with their labels; saved, not run, unless --run "
                                   "(or a later `spfluo launch`) runs them in order.")
    p.add_argument("name")
    p.add_argument("file")
    p.add_argument("--run", action="store_true", help="then run them in order, waiting for each")
    p.set_defaults(func=cmd_load, paths=["file"])

    p = sub.add_parser("show", help="render the figures of a run's output (headless)")
    p.add_argument("name", help="project name")
    p.add_argument("output", help="RUN.outputName (RUN: run id or label)")
    p.add_argument("--save", required=True, help="PNG (or PDF/SVG) path; several figures get suffixes")
    p.add_argument("--dpi", type=bounded_int(10, MAX_DPI), default=100,
                   help=f"resolution of the figures (10 to {MAX_DPI})")
    p.set_defaults(func=cmd_show, paths=["save"])

    _add_run_control_parsers(sub)
    from .gui import add_parser as add_gui_parser

    add_gui_parser(sub)

    from .catalog.cli import add_parser as add_catalog_parser

    add_catalog_parser(sub)

    from .batch.cli import add_parser as add_batch_parser
    from .queue import add_parser as add_queue_parser
    from .report import add_parser as add_report_parser

    add_batch_parser(sub)
    add_report_parser(sub)
    add_queue_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # paths given on the command line are relative to where the user is, not to the project
    for attr in getattr(args, "paths", []):
        value = getattr(args, attr)
        setattr(args, f"{attr}_abs", None if value is None else os.path.abspath(value))
    try:
        bootstrap(args.home)
        return args.func(args)
    except ProjectError as exc:
        print(f"spfluo: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
