"""Questions to the catalog, answered from its tables alone (no project is opened).

Every function takes an engine (see :func:`spfluo.catalog.db.open_catalog`)
and returns a :class:`Table`; :func:`format_table` prints it as aligned text
or CSV.

- :func:`projects`, :func:`datasets`: what is catalogued;
- :func:`runs`: runs filtered by project, dataset, protocol, status and
  parameter values (``name=value``, ``name<value``, ``name~pattern``...);
- :func:`uses`: the reconstructions (or all runs) downstream of a file, e.g.
  "which reconstructions used this PSF file";
- :func:`best_resolution`: the best (smallest) resolution per dataset, with
  the run and output that reached it;
- :func:`metrics`: every metric, filtered.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import re
from dataclasses import dataclass

from sqlalchemy import and_, func, literal, or_, select
from sqlalchemy.engine import Engine

from .reader import file_sha256
from .rules import METRIC_KINDS, RECONSTRUCTION_CLASSES
from .schema import (
    DataObject,
    Dataset,
    File,
    Metric,
    Parameter,
    Project,
    Run,
    RunDataset,
    RunEdge,
    RunLineage,
)

__all__ = [
    "Table",
    "ParamFilter",
    "parse_param_filter",
    "projects",
    "datasets",
    "runs",
    "uses",
    "best_resolution",
    "metrics",
    "format_table",
]

_FILTER_RE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|!=|=|<|>|~)\s*(.*?)\s*$", re.S)
_BOOLS = {"true": 1.0, "yes": 1.0, "on": 1.0, "false": 0.0, "no": 0.0, "off": 0.0}


@dataclass(frozen=True)
class Table:
    """A query result: column names and rows (tuples of str, int, float, datetime or None)."""

    columns: tuple[str, ...]
    rows: tuple[tuple, ...]

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list:
        """The values of one column."""
        k = self.columns.index(name)
        return [row[k] for row in self.rows]

    def dicts(self) -> list[dict]:
        return [dict(zip(self.columns, row)) for row in self.rows]


@dataclass(frozen=True)
class ParamFilter:
    """``name OP value`` on run parameters (OP one of = != < <= > >= ~)."""

    name: str
    op: str
    value: str


def parse_param_filter(text: str) -> ParamFilter:
    """Parse ``name=value``, ``name<=0.3``, ``name~*.tif`` (``~``: shell pattern)."""
    m = _FILTER_RE.match(text or "")
    if not m:
        raise ValueError(f"--param {text!r}: write NAME=VALUE (or NAME!=, <, <=, >, >=, ~PATTERN), "
                         "e.g. --param voxelSizeZ=0.3")
    name, op, value = m.groups()
    if op in ("<", "<=", ">", ">=") and _as_number(value) is None:
        raise ValueError(f"--param {text!r}: {op} compares numbers, got {value!r}")
    return ParamFilter(name, op, value)


def _as_number(text: str) -> float | None:
    if text.strip().lower() in _BOOLS:
        return _BOOLS[text.strip().lower()]
    try:
        return float(text)
    except ValueError:
        return None


def _like(pattern: str) -> str:
    """Shell pattern (``*``, ``?``) to SQL LIKE (``\\`` escapes)."""
    out = []
    for ch in pattern:
        if ch in "%_\\":
            out.append("\\" + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def _param_condition(f: ParamFilter):
    number = _as_number(f.value)
    if f.op == "~":
        cond = Parameter.value.like(_like(f.value), escape="\\")
    elif f.op in ("=", "!="):
        if number is not None:
            tol = 1e-9 * max(1.0, abs(number))
            cond = or_(and_(Parameter.value_num.is_not(None),
                            func.abs(Parameter.value_num - number) <= tol),
                       Parameter.value == f.value)
        elif any(c in f.value for c in "*?"):
            cond = Parameter.value.like(_like(f.value), escape="\\")
        else:
            cond = Parameter.value == f.value
    else:
        column = Parameter.value_num
        cond = {"<": column < number, "<=": column <= number,
                ">": column > number, ">=": column >= number}[f.op]
    match = select(Parameter.run_id).where(Parameter.name == f.name, cond)
    return Run.id.not_in(match) if f.op == "!=" else Run.id.in_(match)


def _literal_like(text: str) -> str:
    """LIKE pattern matching ``text`` anywhere, every character literal."""
    return "%" + "".join("\\" + c if c in "%_\\" else c for c in text) + "%"


def _dataset_condition(text: str):
    """Datasets whose name contains ``text`` (literally: names hold file patterns such as
    ``fov_*.tif``), whose key starts with it, or whose number it is."""
    text = text.strip()
    conds = [Dataset.name.like(_literal_like(text), escape="\\")]
    if re.fullmatch(r"[0-9a-fA-F]{6,64}", text):
        conds.append(Dataset.key.like(text.lower() + "%"))
    if text.isdigit():
        conds.append(Dataset.id == int(text))
    return or_(*conds)


def _runs_of_datasets(text: str):
    return (select(RunDataset.run_id).join(Dataset, Dataset.id == RunDataset.dataset_id)
            .where(_dataset_condition(text)))


def _protocol_condition(text: str):
    t = text.strip().lower()
    if any(c in t for c in "*?"):
        return func.lower(Run.protocol_class).like(_like(t), escape="\\")
    return func.lower(Run.protocol_class).in_([t, "prot" + t])


def _project_condition(text: str):
    pattern = _like(text if any(c in text for c in "*?") else f"*{text}*")
    return or_(Project.name.like(pattern, escape="\\"), Project.path.like(pattern, escape="\\"))


def _table(engine: Engine, stmt, columns) -> Table:
    with engine.connect() as conn:
        rows = tuple(tuple(r) for r in conn.execute(stmt))
    return Table(tuple(columns), rows)


# ------------------------------------------------------------------ queries
def projects(engine: Engine, *, project: str | None = None) -> Table:
    """Catalogued projects: path, owner, creation, run count, last sync, read error."""
    stmt = (select(Project.name, Project.path, Project.owner, Project.created, Project.n_runs,
                   Project.synced_at, Project.read_error)
            .order_by(Project.path))
    if project:
        stmt = stmt.where(_project_condition(project))
    return _table(engine, stmt, ("project", "path", "owner", "created", "runs", "synced",
                                 "read_error"))


def datasets(engine: Engine, *, dataset: str | None = None) -> Table:
    """Datasets with the number of projects and runs that used them."""
    n_projects = func.count(func.distinct(Run.project_id))
    n_runs = func.count(func.distinct(Run.id))
    stmt = (select(Dataset.id, func.substr(Dataset.key, 1, 12), Dataset.name, Dataset.n_files,
                   Dataset.size_bytes, n_projects, n_runs)
            .join(RunDataset, RunDataset.dataset_id == Dataset.id)
            .join(Run, Run.id == RunDataset.run_id)
            .group_by(Dataset.id, Dataset.key, Dataset.name, Dataset.n_files, Dataset.size_bytes)
            .order_by(Dataset.name, Dataset.id))
    if dataset:
        stmt = stmt.where(_dataset_condition(dataset))
    return _table(engine, stmt, ("dataset", "key", "name", "files", "bytes", "projects", "runs"))


_RUN_COLUMNS = ("project", "run", "label", "protocol", "status", "started", "duration_s", "host",
                "gpu", "error")


def runs(engine: Engine, *, project: str | None = None, dataset: str | None = None,
         protocol: str | None = None, status: str | None = None,
         params: tuple = ()) -> Table:
    """Runs matching every given filter, in project then run order.

    Parameters
    ----------
    project : str, optional
        Part of the project name or path (shell patterns allowed).
    dataset : str, optional
        Part of a dataset name (its data files' pattern or folder), a key
        prefix (6+ hex digits) or a dataset number: runs downstream of it.
    protocol : str, optional
        Protocol class, with or without its ``Prot`` prefix, any case.
    status : str, optional
        finished, failed, running, aborted, saved...
    params : sequence of str or ParamFilter
        ``name=value`` (numbers compared numerically, ``*`` patterns on text),
        ``name!=value``, ``name<v``, ``name<=v``, ``name>v``, ``name>=v``,
        ``name~pattern``.
    """
    stmt = (select(Project.name, Run.prot_id, Run.label, Run.protocol_class, Run.status,
                   Run.started, Run.duration_s, Run.host, Run.gpu, Run.error_message)
            .join(Project, Project.id == Run.project_id)
            .order_by(Project.path, Run.prot_id))
    if project:
        stmt = stmt.where(_project_condition(project))
    if dataset:
        stmt = stmt.where(Run.id.in_(_runs_of_datasets(dataset)))
    if protocol:
        stmt = stmt.where(_protocol_condition(protocol))
    if status:
        stmt = stmt.where(Run.status == status.strip().lower())
    for f in params:
        pf = f if isinstance(f, ParamFilter) else parse_param_filter(f)
        stmt = stmt.where(_param_condition(pf))
    return _table(engine, stmt, _RUN_COLUMNS)


def _is_reconstruction():
    """Runs with an input run and a volume output (rules.RECONSTRUCTION_CLASSES)."""
    return and_(Run.id.in_(select(DataObject.run_id).where(
        DataObject.object_class.in_(sorted(RECONSTRUCTION_CLASSES)))),
        Run.id.in_(select(RunEdge.child_id)))


def _best_resolution_of_run():
    return (select(func.min(Metric.value)).where(Metric.run_id == Run.id,
                                                 Metric.kind == "resolution")
            .correlate(Run).scalar_subquery())


def uses(engine: Engine, path: str, *, all_runs: bool = False) -> Table:
    """Runs downstream of a file: by default the reconstructions that used it.

    The file is matched by its resolved path and, when it exists here, by its
    SHA-256 (a copy elsewhere is the same file), among the files named by
    parameters (e.g. the PSF file of an import) and the files of outputs.

    Parameters
    ----------
    path : str
        The file, e.g. ``/data/psf.tif``.
    all_runs : bool
        Every run downstream (the file's own runs included), not only the
        reconstructions (runs with a Volume or SetOfVolumes output).
    """
    if not path:
        raise ValueError("uses: give the file to look for, e.g. /data/psf.tif")
    absolute = os.path.abspath(os.path.expanduser(path))
    real = os.path.realpath(absolute)
    conds = [File.real_path == real, File.path == absolute]
    if os.path.isfile(real):
        conds.append(File.sha256 == file_sha256(real))
    hits = select(File.run_id).where(or_(*conds))
    source = Run.__table__.alias("source")
    stmt = (select(Project.name, Run.prot_id, Run.label, Run.protocol_class, Run.status,
                   _best_resolution_of_run(),
                   func.min(source.c.prot_id), RunLineage.distance)
            .join(Project, Project.id == Run.project_id)
            .join(RunLineage, RunLineage.descendant_id == Run.id)
            .join(source, source.c.id == RunLineage.ancestor_id)
            .where(RunLineage.ancestor_id.in_(hits))
            .group_by(Project.name, Project.path, Run.id, Run.prot_id, Run.label,
                      Run.protocol_class, Run.status, RunLineage.distance)
            .order_by(Project.path, Run.prot_id))
    if not all_runs:
        stmt = stmt.where(_is_reconstruction())
    table = _table(engine, stmt, ("project", "run", "label", "protocol", "status",
                                  "resolution_um", "via_run", "steps"))
    # one row per run: the closest route to the file
    best: dict = {}
    for row in table.rows:
        key = (row[0], row[1])
        if key not in best or row[7] < best[key][7]:
            best[key] = row
    return Table(table.columns, tuple(best[k] for k in sorted(best, key=lambda k: (k[0], k[1]))))


def best_resolution(engine: Engine, *, dataset: str | None = None,
                    project: str | None = None) -> Table:
    """For each dataset, the best (smallest) resolution reached, and where.

    Resolutions are the metrics of kind ``resolution`` (lengths in µm: the
    half-map FSC resolution of a Volume, the FSC resolution of a comparison
    with a reference...) of finished runs; ``metric`` names which one.
    ``runs_measured`` counts the runs of the dataset that measured one.
    """
    ranked = (select(RunDataset.dataset_id.label("dataset_id"), Metric.value.label("value"),
                     Metric.unit.label("unit"), Metric.name.label("metric"),
                     Metric.run_id.label("run_id"),
                     Metric.object_id.label("object_id"),
                     func.row_number().over(partition_by=RunDataset.dataset_id,
                                            order_by=(Metric.value.asc(), Metric.id.asc()))
                     .label("rank"))
              .join(RunDataset, RunDataset.run_id == Metric.run_id)
              .join(Run, Run.id == Metric.run_id)
              .join(Project, Project.id == Run.project_id)
              .where(Metric.kind == "resolution", Run.status == "finished"))
    if project:
        ranked = ranked.where(_project_condition(project))
    ranked = ranked.subquery()
    counts = (select(RunDataset.dataset_id.label("dataset_id"),
                     func.count(func.distinct(Metric.run_id)).label("n"))
              .join(Metric, Metric.run_id == RunDataset.run_id)
              .join(Run, Run.id == Metric.run_id)
              .where(Metric.kind == "resolution", Run.status == "finished")
              .group_by(RunDataset.dataset_id).subquery())
    stmt = (select(Dataset.id, Dataset.name, ranked.c.value, ranked.c.unit, ranked.c.metric,
                   Project.name, Run.prot_id, Run.label, Run.protocol_class, DataObject.name,
                   counts.c.n)
            .join(ranked, and_(ranked.c.dataset_id == Dataset.id, ranked.c.rank == literal(1)))
            .join(Run, Run.id == ranked.c.run_id)
            .join(Project, Project.id == Run.project_id)
            .join(DataObject, DataObject.id == ranked.c.object_id)
            .join(counts, counts.c.dataset_id == Dataset.id)
            .order_by(Dataset.name, Dataset.id))
    if dataset:
        stmt = stmt.where(_dataset_condition(dataset))
    return _table(engine, stmt, ("dataset", "name", "resolution", "unit", "metric", "project",
                                 "run", "label", "protocol", "output", "runs_measured"))


def metrics(engine: Engine, *, kind: str | None = None, project: str | None = None,
            dataset: str | None = None, protocol: str | None = None) -> Table:
    """Every metric of every output, filtered (kind: resolution, ssim, psnr, fsc...)."""
    if kind is not None and kind not in {k.kind for k in METRIC_KINDS}:
        raise ValueError(f"--kind {kind!r}: choose one of "
                         f"{', '.join(k.kind for k in METRIC_KINDS)}")
    stmt = (select(Project.name, Run.prot_id, Run.label, Run.protocol_class, DataObject.name,
                   Metric.name, Metric.kind, Metric.value, Metric.unit)
            .join(Run, Run.id == Metric.run_id)
            .join(Project, Project.id == Run.project_id)
            .join(DataObject, DataObject.id == Metric.object_id)
            .order_by(Project.path, Run.prot_id, DataObject.name, Metric.name))
    if kind:
        stmt = stmt.where(Metric.kind == kind)
    if project:
        stmt = stmt.where(_project_condition(project))
    if dataset:
        stmt = stmt.where(Run.id.in_(_runs_of_datasets(dataset)))
    if protocol:
        stmt = stmt.where(_protocol_condition(protocol))
    return _table(engine, stmt, ("project", "run", "label", "protocol", "output", "metric",
                                 "kind", "value", "unit"))


# ------------------------------------------------------------------ output
def _text(value, *, csv_mode: bool) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if csv_mode else f"{value:.4g}"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    text = str(value)
    if not csv_mode:
        lines = text.strip().splitlines()
        text = lines[-1] if lines else ""
        if len(text) > 60:
            text = text[:57] + "..."
    return text


def format_table(table: Table, fmt: str = "table") -> str:
    """The table as aligned text (``table``) or CSV with a header (``csv``)."""
    if fmt not in ("table", "csv"):
        raise ValueError(f"--format {fmt!r}: choose table or csv")
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(table.columns)
        for row in table.rows:
            writer.writerow([_text(v, csv_mode=True) for v in row])
        return buf.getvalue()
    cells = [list(table.columns)] + [[_text(v, csv_mode=False) for v in row] for row in table.rows]
    widths = [max(len(r[k]) for r in cells) for k in range(len(table.columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if not table.rows:
        lines.append("(no match)")
    return "\n".join(lines) + "\n"
