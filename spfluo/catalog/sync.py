"""``spfluo catalog sync``: find projects under a folder, read the changed ones, upsert them.

Incremental: a project is read again only when its ``project.sqlite``
changed (modification time and size, then SHA-256 when only the time moved),
or when the ``run.db`` of a run that was active at the last read changed, or
when the last attempt to read it failed.  A sync with nothing changed opens
no project (it stats one file per project).

Reliable: each project is written in one transaction (its row upserted and
locked first, its runs upserted by (project, run id), everything below them
replaced), so an interrupted sync leaves every project either as it was or
complete, and two syncs at once serialise per project without duplicates
(unique keys; ``INSERT ... ON CONFLICT`` on SQLite and PostgreSQL).
Transactions that hit a deadlock or a locked database are retried.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine

from ..algorithms.limits import MAX_WORKERS
from .db import CatalogError, open_catalog, retry_transient
from .reader import (
    PROJECT_DB,
    ProjectReadError,
    ProjectRec,
    db_fingerprint,
    file_sha256,
    read_project,
    watch_fingerprint,
)
from .schema import (
    DataObject,
    Dataset,
    File,
    FileHash,
    Metric,
    ObjectEdge,
    Parameter,
    Project,
    Run,
    RunDataset,
    RunEdge,
    RunInput,
    RunLineage,
    SyncRun,
)

__all__ = ["SyncReport", "find_projects", "sync", "verify", "write_project"]

#: Folders never searched for projects.
_SKIP_DIRS = {"Runs", "Logs", "Tmp", "Uploads", ".config", "__pycache__", ".git"}


@dataclass
class SyncReport:
    """What one sync did (paths are resolved project folders)."""

    root: str
    found: int = 0
    read: list[str] = field(default_factory=list)
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)    # catalogued under root, gone from disk
    removed: list[str] = field(default_factory=list)    # ... and deleted from the catalog (prune)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


# ------------------------------------------------------------------ scanning
def find_projects(root: str, *, max_depth: int = 8) -> list[str]:
    """Resolved paths of the pyworkflow project folders under ``root`` (sorted).

    A folder holding ``project.sqlite`` is a project; its own sub-folders are
    not searched.  Symbolic links to folders are followed (the spfluo projects
    folder links projects created elsewhere), each real folder once.
    """
    root = os.path.realpath(os.path.expanduser(root))
    if not os.path.isdir(root):
        raise CatalogError(f"ROOT {root} is no folder: give the folder that holds the projects")
    found, seen = [], set()

    def walk(folder: str, depth: int) -> None:
        real = os.path.realpath(folder)
        if real in seen:
            return
        seen.add(real)
        if os.path.isfile(os.path.join(real, PROJECT_DB)):
            found.append(real)
            return
        if depth >= max_depth:
            return
        try:
            entries = sorted(os.scandir(real), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if entry.name in _SKIP_DIRS or entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=True):
                    walk(entry.path, depth + 1)
            except OSError:
                continue

    walk(root, 0)
    return sorted(found)


# ------------------------------------------------------------------ upserts
def _insert(conn: Connection, table):
    """``INSERT`` of the connection's dialect (it has ``on_conflict_do_update``)."""
    dialect = sqlite_dialect if conn.dialect.name == "sqlite" else pg_dialect
    return dialect.insert(table)


def _upsert(conn: Connection, table, rows: list[dict], keys: list[str], *, returning=None):
    if not rows:
        return []
    stmt = _insert(conn, table)
    updates = {c: stmt.excluded[c] for c in rows[0] if c not in keys}
    stmt = stmt.on_conflict_do_update(index_elements=keys, set_=updates) if updates else \
        stmt.on_conflict_do_nothing(index_elements=keys)
    if returning is not None:
        stmt = stmt.returning(*returning)
        return conn.execute(stmt, rows).all()
    conn.execute(stmt, rows)
    return []


def _run_ids_of(project_id: int):
    return select(Run.id).where(Run.project_id == project_id).scalar_subquery()


def write_project(conn: Connection, rec: ProjectRec, *, host: str | None = None) -> int:
    """Write one project record in the current transaction; returns the project's catalog id."""
    now = dt.datetime.now()
    row = dict(path=rec.path, name=rec.name[:255], owner=rec.owner, created=rec.created,
               n_runs=len(rec.runs), db_mtime_ns=rec.db_mtime_ns, db_size=rec.db_size,
               db_sha256=rec.db_sha256, watch=json.dumps(rec.watch, sort_keys=True),
               synced_at=now, synced_by=host, read_error=None, error_at=None)
    # first statement: the project's row is locked until commit (PostgreSQL)
    pid = _upsert(conn, Project.__table__, [row], ["path"], returning=[Project.id])[0][0]

    new_ids = [r.prot_id for r in rec.runs]
    gone = delete(Run).where(Run.project_id == pid)
    if new_ids:
        gone = gone.where(Run.prot_id.not_in(new_ids))
    conn.execute(gone)
    conn.execute(delete(DataObject).where(DataObject.project_id == pid))
    runs_q = _run_ids_of(pid)
    for table in (Parameter, RunInput, File, Metric, RunDataset):
        conn.execute(delete(table).where(table.run_id.in_(runs_q)))
    conn.execute(delete(RunEdge).where(RunEdge.project_id == pid))
    conn.execute(delete(RunLineage).where(RunLineage.ancestor_id.in_(runs_q)))
    if not rec.runs:
        return pid

    run_rows = [dict(project_id=pid, prot_id=r.prot_id, protocol_class=r.protocol_class,
                     label=r.label, status=r.status, started=r.started, ended=r.ended,
                     duration_s=r.duration_s, error_message=r.error_message, host=r.host,
                     uses_gpu=r.uses_gpu, gpu=r.gpu, working_dir=r.working_dir)
                for r in rec.runs]
    run_pk = {prot: rid for rid, prot in
              _upsert(conn, Run.__table__, run_rows, ["project_id", "prot_id"],
                      returning=[Run.id, Run.prot_id])}

    obj_rows = [dict(project_id=pid, run_id=run_pk[r.prot_id], obj_id=o.obj_id, name=o.name,
                     object_class=o.object_class, summary=o.summary, n_items=o.n_items,
                     n_files=len(o.files), size_bytes=sum(f.size or 0 for f in o.files))
                for r in rec.runs for o in r.outputs]
    obj_pk = {}
    if obj_rows:
        result = conn.execute(insert(DataObject).returning(DataObject.id, DataObject.obj_id),
                              obj_rows)
        obj_pk = {obj: oid for oid, obj in result}

    params, inputs, files, metrics = [], [], [], []
    for r in rec.runs:
        rid = run_pk[r.prot_id]
        params.extend(dict(run_id=rid, name=n, value=v, value_num=num, type=t)
                      for n, v, num, t in r.params)
        inputs.extend(dict(run_id=rid, param=i.param, position=i.position,
                           source_prot_id=i.source_prot_id, extended=i.extended,
                           object_class=i.object_class, object_id=obj_pk.get(i.source_obj_id))
                      for i in r.inputs)
        owned = [(None, f) for f in r.param_files]
        owned += [(obj_pk[o.obj_id], f) for o in r.outputs for f in o.files]
        seen = set()
        for oid, f in owned:
            key = (f.role, f.ref, f.path)
            if key in seen:
                continue
            seen.add(key)
            files.append(dict(run_id=rid, object_id=oid, role=f.role, ref=f.ref, path=f.path,
                              real_path=f.real_path, present=f.present, size=f.size,
                              mtime_ns=f.mtime_ns, sha256=f.sha256))
        metrics.extend(dict(run_id=rid, object_id=obj_pk[o.obj_id], name=name, kind=kind,
                            value=value, unit=unit)
                       for o in r.outputs for name, kind, value, unit in o.metrics)
    for table, rows in ((Parameter, params), (RunInput, inputs), (File, files), (Metric, metrics)):
        if rows:
            conn.execute(insert(table), rows)
    edges = [dict(project_id=pid, parent_id=run_pk[a], child_id=run_pk[b])
             for a, b in rec.run_edges if a in run_pk and b in run_pk]
    if edges:
        conn.execute(insert(RunEdge), edges)
    oedges = [dict(project_id=pid, parent_id=obj_pk[a], child_id=obj_pk[b], relation=rel)
              for a, b, rel in rec.object_edges if a in obj_pk and b in obj_pk]
    if oedges:
        conn.execute(insert(ObjectEdge), oedges)
    lineage = [dict(ancestor_id=run_pk[a], descendant_id=run_pk[d], distance=dist)
               for a, d, dist in rec.lineage if a in run_pk and d in run_pk]
    if lineage:
        conn.execute(insert(RunLineage), lineage)

    # shared rows, in key order (two transactions lock them in the same order: no deadlock)
    datasets = sorted(rec.datasets, key=lambda d: d.key)
    ds_pk = {}
    for d in datasets:
        (ds_id,), = _upsert(conn, Dataset.__table__,
                            [dict(key=d.key, name=d.name[:2048], n_files=d.n_files,
                                  size_bytes=d.size_bytes)], ["key"], returning=[Dataset.id])
        ds_pk[d.key] = ds_id
    links = [dict(run_id=run_pk[p], dataset_id=ds_pk[k], is_source=s)
             for p, k, s in rec.run_datasets if p in run_pk and k in ds_pk]
    if links:
        conn.execute(insert(RunDataset), links)
    hashes = [dict(real_path=path, size=size, mtime_ns=mtime, sha256=sha)
              for path, (size, mtime, sha) in sorted(rec.new_hashes.items())]
    if hashes:
        _upsert(conn, FileHash.__table__, hashes, ["real_path"])
    return pid


def _write_failure(conn: Connection, path: str, error: str, host: str | None) -> None:
    """Record that ``path`` could not be read; what the catalog had about it stays."""
    now = dt.datetime.now()
    stmt = _insert(conn, Project.__table__).values(
        path=path, name=os.path.basename(path)[:255], n_runs=0, read_error=error,
        error_at=now, synced_by=host)
    conn.execute(stmt.on_conflict_do_update(
        index_elements=["path"], set_=dict(read_error=error, error_at=now, synced_by=host)))


# ------------------------------------------------------------------ reading
_WORKER_CACHE: dict = {}


def _init_worker(cache: dict) -> None:
    global _WORKER_CACHE
    _WORKER_CACHE = cache


def _read_one(path: str, checksums: bool, cache: dict | None = None):
    try:
        rec = read_project(path, hash_cache=_WORKER_CACHE if cache is None else cache,
                           checksums=checksums)
        return path, rec, None
    except ProjectReadError as exc:
        return path, None, str(exc)
    except Exception as exc:  # never let one project stop the others
        return path, None, f"{path}: {type(exc).__name__}: {exc}"


def _needs_read(path: str, known: dict | None) -> tuple[bool, tuple | None]:
    """(read it?, new (mtime, size) when only the modification time moved)."""
    try:
        mtime_ns, size = db_fingerprint(path)
    except OSError:
        return True, None
    if known is None or known["read_error"] or known["db_sha256"] is None:
        return True, None
    watch = json.loads(known["watch"] or "{}")
    if watch and watch_fingerprint(path, watch) != watch:
        return True, None
    if known["db_mtime_ns"] == mtime_ns and known["db_size"] == size:
        return False, None
    if known["db_size"] == size:
        try:
            if file_sha256(os.path.join(path, PROJECT_DB)) == known["db_sha256"]:
                return False, (mtime_ns, size)
        except OSError:
            return True, None
    return True, None


# ------------------------------------------------------------------ sync
def sync(root: str, url=None, *, jobs: int = 1, checksums: bool = True, prune: bool = False,
         throttle_s: float = 0.0,
         progress: Callable[[str, str, str], None] | None = None) -> SyncReport:
    """Bring the catalog up to date with the projects under ``root``.

    Parameters
    ----------
    root : str
        Folder searched for project folders (see :func:`find_projects`).
    url : str or Engine, optional
        Catalog URL (default :func:`spfluo.catalog.db.default_url`) or an engine.
    jobs : int
        Projects read in parallel (worker processes); 1 reads in this process.
    checksums : bool
        SHA-256 of every file (cached by path, size and modification time).
    prune : bool
        Delete from the catalog the projects under ``root`` that no longer exist.
    throttle_s : float
        Pause after each project read, in seconds (spares a busy file server).
    progress : callable, optional
        Called as ``progress(event, path, detail)`` with event ``read``,
        ``failed``, ``warning`` or ``removed``.

    Returns
    -------
    SyncReport
    """
    if not 1 <= jobs <= MAX_WORKERS:
        raise ValueError(f"jobs must be >= 1 and <= {MAX_WORKERS}, got {jobs}")
    if throttle_s < 0:
        raise ValueError(f"throttle_s must be >= 0 seconds, got {throttle_s}")
    t0 = time.perf_counter()
    own_engine = not isinstance(url, Engine)
    engine = open_catalog(url) if own_engine else url
    host = socket.gethostname()
    report = SyncReport(root=os.path.realpath(os.path.expanduser(root)))
    notify = progress or (lambda *_: None)
    try:
        paths = find_projects(root)
        report.found = len(paths)
        with engine.begin() as conn:
            sync_id = conn.execute(insert(SyncRun).returning(SyncRun.id), [dict(
                root=report.root, host=host, pid=os.getpid(), started=dt.datetime.now(),
                status="running", n_found=len(paths), n_read=0, n_unchanged=0, n_failed=0,
                n_removed=0)]).scalar_one()
        with engine.connect() as conn:
            known = {row.path: row._asdict() for row in conn.execute(
                select(Project.path, Project.db_mtime_ns, Project.db_size, Project.db_sha256,
                       Project.watch, Project.read_error))}
            conn.rollback()
        todo, touched = [], []
        for path in paths:
            need, moved = _needs_read(path, known.get(path))
            if need:
                todo.append(path)
            else:
                report.unchanged += 1
                if moved is not None:
                    touched.append((path, moved))
        if touched:
            def _touch():
                with engine.begin() as conn:
                    for path, (mtime_ns, size) in touched:
                        conn.execute(update(Project).where(Project.path == path)
                                     .values(db_mtime_ns=mtime_ns, db_size=size))
            retry_transient(_touch)
        if todo:
            _read_and_write(engine, todo, report, jobs=jobs, checksums=checksums,
                            throttle_s=throttle_s, host=host, notify=notify)
        _missing(engine, report, set(paths), prune=prune, notify=notify)

        def _finish():
            with engine.begin() as conn:
                conn.execute(update(SyncRun).where(SyncRun.id == sync_id).values(
                    finished=dt.datetime.now(), status="done", n_read=len(report.read),
                    n_unchanged=report.unchanged, n_failed=len(report.failed),
                    n_removed=len(report.removed)))
        retry_transient(_finish)
    finally:
        if own_engine:
            engine.dispose()
    report.wall_s = time.perf_counter() - t0
    return report


def _read_and_write(engine, todo, report, *, jobs, checksums, throttle_s, host, notify) -> None:
    with engine.connect() as conn:
        cache = {r.real_path: (r.size, r.mtime_ns, r.sha256)
                 for r in conn.execute(select(FileHash))} if checksums else {}
        conn.rollback()

    def handle(path, rec, error):
        if rec is None:
            report.failed.append((path, error))
            retry_transient(lambda: _in_tx(engine, _write_failure, path, error, host))
            notify("failed", path, error)
        else:
            retry_transient(lambda: _in_tx(engine, write_project, rec, host=host))
            report.read.append(path)
            for message in rec.warnings:
                report.warnings.append((path, message))
                notify("warning", path, message)
            notify("read", path, f"{len(rec.runs)} run(s)")
        if throttle_s:
            time.sleep(throttle_s)

    if jobs == 1 or len(todo) == 1:
        for path in todo:
            handle(*_read_one(path, checksums, cache))
        return
    engine.dispose()  # no open catalog connection is inherited by the workers
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=context,
                             initializer=_init_worker, initargs=(cache,)) as pool:
        for result in pool.map(_read_one, todo, [checksums] * len(todo)):
            handle(*result)


def _in_tx(engine: Engine, fn, *args, **kwargs):
    with engine.begin() as conn:
        return fn(conn, *args, **kwargs)


def _missing(engine, report, found: set, *, prune: bool, notify) -> None:
    prefix = report.root.rstrip(os.sep) + os.sep
    with engine.connect() as conn:
        under = [p for (p,) in conn.execute(select(Project.path)) if p.startswith(prefix)
                 or p == report.root]
        conn.rollback()
    gone = sorted(p for p in under if p not in found
                  and not os.path.isfile(os.path.join(p, PROJECT_DB)))
    report.missing = gone
    if prune and gone:
        def _delete():
            with engine.begin() as conn:
                conn.execute(delete(Project).where(Project.path.in_(gone)))
        retry_transient(_delete)
        report.removed = list(gone)
        for p in gone:
            notify("removed", p, "no longer on disk")


# ------------------------------------------------------------------ checks
def verify(url=None) -> list[str]:
    """Consistency problems of a catalog (an empty list when it is consistent).

    Checks that every project's run count matches its runs, that every run is
    its own ancestor in the lineage, that every object's file count matches its
    files, and that no natural key is duplicated.
    """
    own = not isinstance(url, Engine)
    engine = open_catalog(url, migrate=False, write=False) if own else url
    problems = []
    try:
        with engine.connect() as conn:
            counts = dict(conn.execute(select(Run.project_id, func.count())
                                       .group_by(Run.project_id)).all())
            for pid, path, n_runs in conn.execute(select(Project.id, Project.path, Project.n_runs)
                                                  .where(Project.read_error.is_(None))):
                if counts.get(pid, 0) != n_runs:
                    problems.append(f"project {path}: n_runs={n_runs} but {counts.get(pid, 0)} "
                                    "run rows")
            selfless = conn.execute(select(func.count()).select_from(Run).where(
                ~select(RunLineage.ancestor_id).where(RunLineage.ancestor_id == Run.id,
                                                      RunLineage.descendant_id == Run.id)
                .exists())).scalar_one()
            if selfless:
                problems.append(f"{selfless} run(s) missing from the lineage table")
            nfiles = dict(conn.execute(select(File.object_id, func.count())
                                       .where(File.object_id.is_not(None))
                                       .group_by(File.object_id)).all())
            for oid, n in conn.execute(select(DataObject.id, DataObject.n_files)):
                if nfiles.get(oid, 0) != n:
                    problems.append(f"object {oid}: n_files={n} but {nfiles.get(oid, 0)} file rows")
            for table, cols in ((Project, ("path",)), (Run, ("project_id", "prot_id")),
                                (DataObject, ("project_id", "obj_id")),
                                (Parameter, ("run_id", "name")), (Dataset, ("key",))):
                columns = [getattr(table, c) for c in cols]
                total = conn.execute(select(func.count()).select_from(table)).scalar_one()
                distinct = conn.execute(select(func.count()).select_from(
                    select(*columns).group_by(*columns).subquery())).scalar_one()
                if total != distinct:
                    problems.append(f"{table.__tablename__}: {total - distinct} duplicate(s) of "
                                    f"{'/'.join(cols)}")
            conn.rollback()
    finally:
        if own:
            engine.dispose()
    return problems
