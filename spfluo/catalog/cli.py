"""``spfluo catalog``: sync projects into the facility catalog, query it, check it, migrate it.

``spfluo/cli.py`` registers these commands with :func:`add_parser`.  Exit
status: 0 on success, 1 when ``sync`` could not read some project (the others
are catalogued), 2 on a bad request (unknown database, bad filter).
"""

from __future__ import annotations

import argparse
import sys

from ..algorithms.limits import MAX_WORKERS

__all__ = ["add_parser"]

DATASET_HELP = ("part of the dataset name (its files or pattern, e.g. fov_*.tif), key prefix "
                "or number")


def _db_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--db", metavar="URL",
                        help="catalog database: sqlite:///path/catalog.sqlite (default "
                             "$SPFLUO_CATALOG_URL, else <spfluo home>/catalog.sqlite) or "
                             "postgresql://user:password@host/dbname")
    return parent


def _fail(message) -> int:
    print(f"spfluo: {message}", file=sys.stderr)
    return 2


def cmd_sync(args) -> int:
    from ..environment import projects_folder
    from .db import CatalogError
    from .sync import sync

    root = args.root or str(projects_folder())
    quiet = args.quiet

    def progress(event, path, detail):
        if event == "failed":
            print(f"FAILED   {path}: {detail}", file=sys.stderr)
        elif not quiet:
            print(f"{event:<8} {path}: {detail}")

    try:
        report = sync(root, args.db, jobs=args.jobs, checksums=not args.no_checksums,
                      prune=args.prune, throttle_s=args.throttle, progress=progress)
    except (CatalogError, ValueError) as exc:
        return _fail(exc)
    print(f"catalog sync of {report.root}: {report.found} project(s) found, "
          f"{len(report.read)} read, {report.unchanged} unchanged, {len(report.failed)} "
          f"could not be read, {len(report.missing)} missing"
          + (f" ({len(report.removed)} removed)" if report.removed else "")
          + f", {report.wall_s:.2f} s")
    if report.missing and not report.removed and not quiet:
        print("  missing from disk (kept; --prune removes them): " + ", ".join(report.missing))
    return 0 if report.ok else 1


def cmd_query(args) -> int:
    from . import query as q
    from .db import CatalogError, open_catalog

    try:
        engine = open_catalog(args.db, migrate=False, write=False)
    except CatalogError as exc:
        return _fail(exc)
    try:
        what = args.what
        if what == "runs":
            table = q.runs(engine, project=args.project, dataset=args.dataset,
                           protocol=args.protocol, status=args.status,
                           params=tuple(args.param or ()))
        elif what == "uses":
            table = q.uses(engine, args.file, all_runs=args.all)
        elif what == "best-resolution":
            table = q.best_resolution(engine, dataset=args.dataset, project=args.project)
        elif what == "datasets":
            table = q.datasets(engine, dataset=args.dataset)
        elif what == "projects":
            table = q.projects(engine, project=args.project)
        else:
            table = q.metrics(engine, kind=args.kind, project=args.project,
                              dataset=args.dataset, protocol=args.protocol)
        text = q.format_table(table, args.format)
    except ValueError as exc:
        return _fail(exc)
    finally:
        engine.dispose()
    if args.output:
        with open(args.output, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        print(f"wrote {len(table)} row(s) to {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_check(args) -> int:
    from .db import CatalogError
    from .sync import verify

    try:
        problems = verify(args.db)
    except CatalogError as exc:
        return _fail(exc)
    for p in problems:
        print(f"  {p}")
    print("catalog consistent" if not problems else f"{len(problems)} problem(s)")
    return 0 if not problems else 1


def cmd_migrate(args) -> int:
    from .db import CatalogError, current_revision, open_catalog

    try:
        engine = open_catalog(args.db)
    except CatalogError as exc:
        return _fail(exc)
    try:
        print(f"catalog {engine.url.render_as_string(hide_password=True)} at schema revision "
              f"{current_revision(engine)}")
    finally:
        engine.dispose()
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``catalog`` (sync, query, check, migrate) to the ``spfluo`` sub-commands."""
    db = _db_parent()
    cat = subparsers.add_parser(
        "catalog", help="facility catalog: every project, run, parameter, output and metric",
        description="One database (SQLite or PostgreSQL) with every project, run, parameter, "
                    "output file and metric found under a folder: sync it, then query it "
                    "without opening the projects.")
    csub = cat.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")

    p = csub.add_parser("sync", parents=[db], help="read new and changed projects into the catalog",
                        description="Find the projects under ROOT, read those that changed since "
                                    "the last sync (never modifying them) and update the catalog. "
                                    "Exit status 1 when a project could not be read (it is "
                                    "reported and skipped).")
    p.add_argument("root", nargs="?", metavar="ROOT",
                   help="folder holding the projects (default: the spfluo projects folder)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help=f"projects read in parallel (worker processes, 1 to {MAX_WORKERS}, "
                        "default 1)")
    p.add_argument("--no-checksums", action="store_true",
                   help="record file sizes only, no SHA-256 (faster on huge data)")
    p.add_argument("--prune", action="store_true",
                   help="remove from the catalog the projects under ROOT that no longer exist")
    p.add_argument("--throttle", type=float, default=0.0, metavar="SECONDS",
                   help="pause after each project read (spares a busy file server)")
    p.add_argument("--quiet", action="store_true", help="print the summary and failures only")
    p.set_defaults(func=cmd_sync)

    p = csub.add_parser("query", help="ask the catalog (table or CSV)",
                        description="Questions answered from the catalog alone.")
    qsub = p.add_subparsers(dest="what", required=True, metavar="QUESTION")
    fmt = argparse.ArgumentParser(add_help=False)
    fmt.add_argument("--format", choices=("table", "csv"), default="table")
    fmt.add_argument("--output", metavar="FILE", help="write to FILE instead of the terminal")
    common = [db, fmt]

    q = qsub.add_parser("runs", parents=common, help="runs by project, dataset, protocol, "
                                                     "status, parameter values")
    q.add_argument("--project", help="part of the project name or path")
    q.add_argument("--dataset", help=DATASET_HELP)
    q.add_argument("--protocol", help="protocol class (Prot prefix optional)")
    q.add_argument("--status", help="finished, failed, running, aborted...")
    q.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="parameter filter: NAME=VALUE, NAME!=VALUE, NAME<V, NAME<=V, NAME>V, "
                        "NAME>=V, NAME~PATTERN (repeat to combine)")
    q = qsub.add_parser("uses", parents=common,
                        help="reconstructions that used a file (e.g. a PSF)")
    q.add_argument("file", help="the file, e.g. /data/psf.tif (matched by path and checksum)")
    q.add_argument("--all", action="store_true", help="every downstream run, not only "
                                                     "reconstructions")
    q = qsub.add_parser("best-resolution", parents=common, help="best resolution per dataset")
    q.add_argument("--dataset", help=DATASET_HELP)
    q.add_argument("--project", help="only runs of these projects")
    q = qsub.add_parser("datasets", parents=common, help="datasets and how many runs used them")
    q.add_argument("--dataset", help=DATASET_HELP)
    q = qsub.add_parser("projects", parents=common, help="catalogued projects")
    q.add_argument("--project", help="part of the project name or path")
    q = qsub.add_parser("metrics", parents=common, help="metrics of outputs (resolution, SSIM...)")
    q.add_argument("--kind", help="resolution, resolution_frequency, ssim, psnr, fsc, "
                                   "pose_error, f1")
    q.add_argument("--project", help="part of the project name or path")
    q.add_argument("--dataset", help=DATASET_HELP)
    q.add_argument("--protocol", help="protocol class (Prot prefix optional)")
    p.set_defaults(func=cmd_query)

    p = csub.add_parser("check", parents=[db], help="check the catalog's consistency")
    p.set_defaults(func=cmd_check)
    p = csub.add_parser("migrate", parents=[db], help="bring the catalog's schema to this "
                                                      "version (sync does it too)")
    p.set_defaults(func=cmd_migrate)
    return cat
