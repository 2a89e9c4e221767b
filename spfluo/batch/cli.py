"""``spfluo batch``: the command-line side of :mod:`spfluo.batch.runner`."""

from __future__ import annotations

import os
import sys

from ..params import bounded_int
from ..algorithms.limits import MAX_WORKERS

__all__ = ["add_parser"]

_DESCRIPTION = """\
Run a workflow template on every dataset folder: one project per dataset
(named PREFIX-FOLDER), its protocols launched in order, datasets processed in
parallel on Dask (a local cluster of --workers processes, or an existing one
with --scheduler). Writes OUT/summary.csv (dataset, project, status, runtime_s,
resolution_um, resolution_per_voxel, resolution_text, ssim, error). Running again skips the
finished datasets and continues the failed ones. Exit status 1 when a dataset
failed.

A dataset folder holds: fields/* (fields of view) or particles/* (extracted
particles), psf.tif, and optionally examples.csv, poses.csv, reference.tif and
dataset.json (values of the template's fields by alias, e.g.
{"voxel_size_xy": 0.04, "voxel_size_z": 0.12, "diameter": 0.8, "symmetry": 9}).
"""


def _cmd_batch(args) -> int:
    from .runner import run_batch
    from .templates import TemplateError, list_templates, template_fields

    if args.list_templates or not args.template:
        for t in list_templates():
            print(f"{t.name}\n  {t.description.strip()}")
            aliases = []
            for f in template_fields(t):
                if f.getAlias() not in aliases:
                    aliases.append(f.getAlias())
            print(f"  fields (aliases): {', '.join(aliases)}")
        return 0 if args.list_templates else 2
    if not args.datasets:
        print("spfluo: give one or more dataset folders after the template", file=sys.stderr)
        return 2
    try:
        result = run_batch(args.template, [os.path.abspath(d) for d in args.datasets],
                           out=args.out_abs, workers=args.workers, scheduler=args.scheduler,
                           home=args.home, prefix=args.prefix)
    except (TemplateError, ValueError) as exc:
        print(f"spfluo: {exc}", file=sys.stderr)
        return 2
    print(f"\n{'project':<36} {'status':<9} {'runtime':>9} {'resolution':>12} {'SSIM':>7}")
    for row in result.rows:
        res = f"{row['resolution_um']} µm" if row["resolution_um"] else "-"
        print(f"{row['project']:<36} {row['status']:<9} {row['runtime_s'] or '-':>7} s "
              f"{res:>12} {row['ssim'] or '-':>7}")
        if not row["resolution_um"] and row.get("resolution_text"):
            print(f"  FSC 0.143: {row['resolution_text']}")
        if row["error"]:
            print(f"  error: {row['error']}")
    print(f"\nbatch of {len(result.rows)} dataset(s) in {result.wall_s:.1f} s "
          f"({len(result.skipped)} skipped as finished); summary: {result.summary_path}")
    return 0 if all(r["status"] == "finished" for r in result.rows) else 1


def add_parser(sub) -> None:
    """Register ``spfluo batch`` on the ``spfluo`` command's sub-parsers."""
    import argparse

    p = sub.add_parser("batch", help="run a workflow template on many datasets (Dask)",
                       description=_DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("template", nargs="?",
                   help="template name (see --list-templates) or a .json.template file")
    p.add_argument("datasets", nargs="*", metavar="DATASET_DIR", help="dataset folders")
    p.add_argument("--workers", type=bounded_int(1, MAX_WORKERS), default=2,
                   help=f"worker processes of the local Dask cluster (1 to {MAX_WORKERS}, "
                        "default 2)")
    p.add_argument("--scheduler", default=None,
                   help="address of an existing Dask scheduler, e.g. tcp://node:8786")
    p.add_argument("--out", default="spfluo-batch", help="folder of summary.csv")
    p.add_argument("--prefix", default=None, help="project name prefix (default: template name)")
    p.add_argument("--list-templates", action="store_true", help="list the templates and exit")
    p.set_defaults(func=_cmd_batch, paths=["out"])
