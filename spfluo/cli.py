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
from .algorithms.limits import MAX_DPI

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
    from .protocols.base import IntRange
    from .workflow import protocol_class, protocol_classes

    if args.protocol:
        cls = protocol_class(args.protocol)
        print(f"{cls.__name__}: {cls._label}\n  {(cls.__doc__ or '').strip().splitlines()[0]}")
        prot = cls()
        for name, param in prot.getDefinition().iterParams():
            if name in ("runName", "runMode", "hostName", "numberOfMpi", "numberOfThreads",
                        "_useQueue", "_queueParams", "_prerequisites", "gpuList", "useGpu"):
                continue
            default = param.default.get() if param.default.hasValue() else ""
            limit = next((v.maximum for v in param.validators if isinstance(v, IntRange)), None)
            print(f"  {name:<24} {param.label.get() or '':<40} default: {default}"
                  + (f", at most {limit}" if limit is not None else ""))
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


def cmd_load(args) -> int:
    from .workflow import load_workflow_file, open_project

    project = open_project(args.name)
    new = load_workflow_file(project, args.file_abs)
    print(f"loaded {len(new)} protocol(s) into {args.name} (saved, not run): "
          + ", ".join(f"#{p.getObjId()} {p.getClassName()}" for p in new))
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
    p.add_argument("--out", default="spfluo-demo-figures", help="folder for the figures")
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
                                   "pointer to another run's output is RUNID.outputName. "
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

    p = sub.add_parser("load", help="add the protocols of a workflow JSON to a project (not run)")
    p.add_argument("name")
    p.add_argument("file")
    p.set_defaults(func=cmd_load, paths=["file"])

    p = sub.add_parser("show", help="render the figures of a run's output (headless)")
    p.add_argument("name", help="project name")
    p.add_argument("output", help="RUNID.outputName")
    p.add_argument("--save", required=True, help="PNG (or PDF/SVG) path; several figures get suffixes")
    p.add_argument("--dpi", type=bounded_int(10, MAX_DPI), default=100,
                   help=f"resolution of the figures (10 to {MAX_DPI})")
    p.set_defaults(func=cmd_show, paths=["save"])

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
