"""Benchmark of the facility catalog: sync of many projects, sync with nothing changed, queries.

    python benchmarks/catalog.py [--quick] [--pg URL] --out RESULT.json

Builds one real 10-run project (the test template: imports launched through
pyworkflow plus stored reconstruction/comparison runs), copies it into 50
projects (10 with ``--quick``), then times, each as a fresh ``spfluo``
process on a new SQLite catalog (and on PostgreSQL with ``--pg`` or
``$SPFLUO_TEST_POSTGRES_URL``):

- ``sync_full``: the first sync (every project read; target < 30 s for 50x10);
- ``sync_full_jobs2``: the same with 2 worker processes;
- ``sync_nochange``: a second sync with nothing changed (target < 3 s);
- ``sync_one_changed``: one project modified, the others unchanged;
- ``query_*``: queries answered from the catalog alone (in this process).

Sync cases report the command's wall time (``wall_s``, process start
included), its CPU time (``cpu_s``, independent of other load on the
machine) and the time the sync itself reported (``sync_s``).

Writes a JSON list of cases (``case``, parameters, ``wall_s``...) and prints
one line per case.  ``--gpu`` is accepted for uniformity and ignored (no GPU work).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from spfluo.environment import bootstrap  # noqa: E402

TARGETS = {"sync_full": 30.0, "sync_nochange": 3.0}


def _cli_sync(root: str, url: str, *extra) -> dict:
    """Run ``spfluo catalog sync`` as a new process: its wall time, CPU time and own timing."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "spfluo.cli", "catalog", "sync", root, "--db", url,
                          "--quiet", *extra], capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"sync failed ({out.returncode}): {out.stderr}{out.stdout}")
    summary = out.stdout.strip().splitlines()[-1]
    inside = re.search(r", ([0-9.]+) s$", summary)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return dict(wall_s=wall, cpu_s=cpu, sync_s=float(inside.group(1)) if inside else None,
                summary=summary)


def _fresh_pg(url: str) -> str:
    from sqlalchemy import text

    from spfluo.catalog.db import make_engine
    from spfluo.catalog.schema import Base

    engine = make_engine(url)
    with engine.begin() as conn:
        Base.metadata.drop_all(conn)
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()
    return url


def _touch_project(path: str) -> None:
    """Change one project through the engine: a new (stored) run."""
    import pyworkflow as pw
    from pyworkflow.project import Project

    from spfluo.protocols import ProtImportPSF
    from spfluo.tests.catalog._fixtures import store_run

    cwd = os.getcwd()
    proj = Project(pw.Config.getDomain(), path)
    proj.load()
    try:
        store_run(proj, ProtImportPSF, label="added", status="failed", error="benchmark")
        proj.closeMapper()
    finally:
        os.chdir(cwd)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 projects instead of 50")
    parser.add_argument("--gpu", action="store_true", help="ignored (no GPU work)")
    parser.add_argument("--pg", default=os.environ.get("SPFLUO_TEST_POSTGRES_URL"),
                        help="PostgreSQL URL to time as well (its catalog tables are dropped)")
    parser.add_argument("--out", required=True, help="JSON result file")
    args = parser.parse_args(argv)
    n_projects = 10 if args.quick else 50

    work = tempfile.mkdtemp(prefix="spfluo-bench-catalog-")
    bootstrap(os.path.join(work, "home"))
    from spfluo.catalog import query as q
    from spfluo.catalog.db import open_catalog
    from spfluo.catalog.sync import verify
    from spfluo.tests.catalog._fixtures import (
        N_RUNS,
        build_template,
        copy_project,
        make_data,
    )

    cases = []
    try:
        t0 = time.perf_counter()
        data = make_data(os.path.join(work, "data"))
        build_template(os.path.join(work, "template"), data)
        build_s = time.perf_counter() - t0
        root = os.path.join(work, "projects")
        os.makedirs(root)
        for k in range(n_projects):
            copy_project(os.path.join(work, "template"), os.path.join(root, f"project_{k:03d}"))
        print(f"template project ({N_RUNS} runs) built in {build_s:.1f} s, "
              f"copied {n_projects} times")

        backends = [("sqlite", lambda name: f"sqlite:///{os.path.join(work, name + '.sqlite')}")]
        if args.pg:
            backends.append(("postgresql", lambda name: _fresh_pg(args.pg)))
        common = {"n_projects": n_projects, "runs_per_project": N_RUNS}
        for backend, fresh in backends:
            url = fresh("jobs1")
            timing = _cli_sync(root, url)
            cases.append(dict(case="sync_full", backend=backend, jobs=1, **common, **timing,
                              per_project_s=timing["wall_s"] / n_projects))
            cases.append(dict(case="sync_nochange", backend=backend, jobs=1, **common,
                              **_cli_sync(root, url)))
            _touch_project(os.path.join(root, "project_000"))
            cases.append(dict(case="sync_one_changed", backend=backend, jobs=1, **common,
                              **_cli_sync(root, url)))
            engine = open_catalog(url, migrate=False, write=False)
            problems = verify(engine)
            for name, fn in (("query_uses_psf", lambda: q.uses(engine, data["psf"])),
                             ("query_best_resolution", lambda: q.best_resolution(engine)),
                             ("query_runs_by_param",
                              lambda: q.runs(engine, params=["voxelSizeZ=0.25"])),
                             ("query_runs_by_dataset",
                              lambda: q.runs(engine, dataset="particles"))):
                t0 = time.perf_counter()
                rows = len(fn())
                cases.append(dict(case=name, backend=backend, **common,
                                  wall_s=time.perf_counter() - t0, rows=rows))
            engine.dispose()
            if problems:
                raise SystemExit(f"catalog inconsistent after the benchmark: {problems}")
            if backend == "sqlite":
                url = fresh("jobs2")
                timing = _cli_sync(root, url, "--jobs", "2")
                cases.append(dict(case="sync_full_jobs2", backend=backend, jobs=2, **common,
                                  **timing, per_project_s=timing["wall_s"] / n_projects))
            elif args.pg:
                _fresh_pg(args.pg)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    for c in cases:
        target = TARGETS.get(c["case"]) if not args.quick else None
        if target is not None:
            c["target_s"] = target
            c["meets_target"] = c["wall_s"] < target
        extra = f" (target < {target:g} s: {'ok' if c['wall_s'] < target else 'MISSED'})" \
            if target else ""
        rows = f", {c['rows']} row(s)" if "rows" in c else ""
        cpu = (f" (process cpu {c['cpu_s']:.2f} s, sync itself {c['sync_s']:.2f} s)"
               if "cpu_s" in c else "")
        print(f"{c['case']:<24} {c['backend']:<10} {c['n_projects']} x {c['runs_per_project']} "
              f"runs: {c['wall_s']:.3f} s{cpu}{rows}{extra}")
    with open(args.out, "w") as f:
        json.dump(cases, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
