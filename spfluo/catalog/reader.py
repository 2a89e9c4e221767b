"""Read one pyworkflow project into plain records, through the engine's API, without changing it.

pyworkflow writes to a project's database while loading it in some cases
(it updates active runs from their ``run.db``, checks their processes, adds
missing tables and columns, and a set whose file is missing gets an empty
file created).  The catalog never lets it: the reader opens the project on a
snapshot of ``project.sqlite`` (and of every set file it iterates, and of the
``run.db`` of active runs) taken with SQLite's backup API into a temporary
folder, and marks the project read-only.  The project's own files stay
byte-identical (tested).

The records are plain dataclasses (picklable: the sync reads projects in
worker processes).  Call :func:`spfluo.environment.bootstrap` before
:func:`read_project` (it imports pyworkflow).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import hashlib
import logging
import os
import pwd
import shutil
import sqlite3
import tempfile
from collections import defaultdict, deque
from dataclasses import dataclass, field

from .rules import GLOB_CHARS, is_dataset_class, metric_kind, metric_unit

__all__ = [
    "PROJECT_DB",
    "FileRec",
    "ObjectRec",
    "InputRec",
    "RunRec",
    "DatasetRec",
    "ProjectRec",
    "ProjectReadError",
    "read_project",
    "db_fingerprint",
    "file_sha256",
    "watch_fingerprint",
]

PROJECT_DB = "project.sqlite"
ACTIVE_STATUSES = ("launched", "running", "scheduled")
_CHUNK = 1 << 20
#: Most files a file-pattern parameter may expand to (beyond, its files are not recorded).
MAX_PATTERN_FILES = 10000

logger = logging.getLogger(__name__)


class ProjectReadError(Exception):
    """A project that cannot be read (the message says why)."""


# ------------------------------------------------------------------ records
@dataclass
class FileRec:
    role: str            # "output" or "param"
    ref: str             # output name or parameter name
    path: str            # absolute, as the project names it
    real_path: str       # symbolic links resolved
    present: bool
    size: int | None = None
    mtime_ns: int | None = None
    sha256: str | None = None
    container: bool = False  # a set's own SQLite file (not data)


@dataclass
class ObjectRec:
    obj_id: int
    name: str
    object_class: str
    summary: str
    n_items: int | None
    files: list[FileRec] = field(default_factory=list)
    # (name, kind, value, unit)
    metrics: list[tuple[str, str, float, str | None]] = field(default_factory=list)


@dataclass
class InputRec:
    param: str
    position: int
    source_prot_id: int | None
    extended: str | None
    object_class: str | None
    source_obj_id: int | None   # the output object it points to, when it is one


@dataclass
class RunRec:
    prot_id: int
    protocol_class: str
    label: str
    status: str
    started: dt.datetime | None
    ended: dt.datetime | None
    duration_s: float | None
    error_message: str | None
    host: str | None
    uses_gpu: bool
    gpu: str | None
    working_dir: str | None
    params: list[tuple[str, str | None, float | None, str]] = field(default_factory=list)
    inputs: list[InputRec] = field(default_factory=list)
    outputs: list[ObjectRec] = field(default_factory=list)
    param_files: list[FileRec] = field(default_factory=list)


@dataclass
class DatasetRec:
    key: str
    name: str
    n_files: int
    size_bytes: int
    source_prot_id: int


@dataclass
class ProjectRec:
    path: str
    name: str
    owner: str | None
    created: dt.datetime | None
    db_mtime_ns: int
    db_size: int
    db_sha256: str
    watch: dict[str, list[int]]
    runs: list[RunRec] = field(default_factory=list)
    run_edges: list[tuple[int, int]] = field(default_factory=list)  # parent, child prot ids
    object_edges: list[tuple[int, int, str]] = field(default_factory=list)  # parent, child, rel
    lineage: list[tuple[int, int, int]] = field(default_factory=list)  # ancestor, desc., dist.
    datasets: list[DatasetRec] = field(default_factory=list)
    run_datasets: list[tuple[int, str, bool]] = field(default_factory=list)  # prot, key, source
    # files hashed by this read: real path -> (size, mtime_ns, sha256)
    new_hashes: dict[str, tuple[int, int, str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ files
def file_sha256(path: str) -> str:
    """SHA-256 (hex) of a file's content, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def db_fingerprint(project_path: str) -> tuple[int, int]:
    """(mtime in ns, size in bytes) of a project's ``project.sqlite``."""
    st = os.stat(os.path.join(project_path, PROJECT_DB))
    return st.st_mtime_ns, st.st_size


def watch_fingerprint(project_path: str, watch: dict) -> dict[str, list[int]]:
    """Current (mtime_ns, size) of the watched ``run.db`` files (missing: [0, -1])."""
    current = {}
    for rel in watch:
        try:
            st = os.stat(os.path.join(project_path, rel))
            current[rel] = [st.st_mtime_ns, st.st_size]
        except OSError:
            current[rel] = [0, -1]
    return current


class _Hasher:
    """Stat and hash files, reusing checksums known by (resolved path, size, mtime)."""

    def __init__(self, cache: dict, checksums: bool):
        self.cache = cache
        self.checksums = checksums
        self.new: dict[str, tuple[int, int, str]] = {}

    def record(self, path: str, *, role: str, ref: str, container: bool = False) -> FileRec:
        real = os.path.realpath(path)
        try:
            st = os.stat(real)
        except OSError:
            return FileRec(role, ref, path, real, False, container=container)
        sha = None
        if self.checksums and os.path.isfile(real):
            known = self.cache.get(real)
            if known is not None and known[0] == st.st_size and known[1] == st.st_mtime_ns:
                sha = known[2]
            else:
                try:
                    sha = file_sha256(real)
                except OSError:
                    sha = None
                else:
                    self.cache[real] = self.new[real] = (st.st_size, st.st_mtime_ns, sha)
        return FileRec(role, ref, path, real, True, st.st_size, st.st_mtime_ns, sha, container)


def _snapshot(src: str, dst: str) -> None:
    """Consistent copy of an SQLite file (backup API; the source is opened read-only)."""
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30)
    try:
        target = sqlite3.connect(dst)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()


@contextlib.contextmanager
def _in_folder(path: str):
    cwd = os.getcwd()
    try:
        yield
    finally:
        os.chdir(cwd)


# ------------------------------------------------------------------ values
def _datetime(text_obj) -> dt.datetime | None:
    try:
        return text_obj.datetime() if text_obj.hasValue() else None
    except (ValueError, TypeError):
        return None


def _owner(path: str) -> str | None:
    try:
        uid = os.stat(path).st_uid
    except OSError:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _number(value) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        f = float(value)
        return f if f == f and abs(f) != float("inf") else None
    return None


# ------------------------------------------------------------------ the reader
class _ProjectReader:
    def __init__(self, path: str, tmp: str, hasher: _Hasher):
        import pyworkflow.object as pwobj
        import pyworkflow.protocol as pwprot
        import pyworkflow.protocol.params as params

        self.pwobj, self.pwprot, self.params = pwobj, pwprot, params
        self.path = path
        self.tmp = tmp
        self.hasher = hasher
        self.warnings: list[str] = []
        self._n_copies = 0
        self._opened = []  # projects opened on run.db snapshots (closed at the end)
        self.mapper = None  # the project's mapper (on the snapshot), once loaded

    # -- helpers --------------------------------------------------------
    def _abs(self, p: str) -> str:
        return os.path.normpath(os.path.join(self.path, os.path.expanduser(str(p))))

    def _copy_db(self, rel_or_abs: str) -> str | None:
        src = self._abs(rel_or_abs)
        if not os.path.isfile(src):
            return None
        self._n_copies += 1
        dst = os.path.join(self.tmp, f"db{self._n_copies}.sqlite")
        _snapshot(src, dst)
        return dst

    def _class_name(self, obj) -> str:
        """The class name stored in the project (pyworkflow loads unknown classes as Legacy)."""
        name = obj.getClassName()
        if name == "LegacyProtocol" and self.mapper is not None and obj.hasObjId():
            with contextlib.suppress(Exception):
                row = self.mapper.db.selectObjectById(obj.getObjId())
                if row is not None and row["classname"]:
                    return row["classname"]
        return name

    # -- pyworkflow objects -------------------------------------------
    def _set_items_files(self, obj, name: str, files: list) -> None:
        """Files of a set's items, iterated on a snapshot of the set file."""
        set_file = obj.getFileName()
        if not set_file:
            return
        copy = self._copy_db(set_file)
        if copy is None:
            self.warnings.append(f"{name}: set file {set_file} is missing")
            return
        snapshot = None
        try:
            # the same set class on the snapshot (its own item classes, no write to the original)
            snapshot = type(obj)(filename=copy, prefix=obj.getPrefix() or "")
            seen = set()
            for item in snapshot.iterItems():
                getter = getattr(item, "getFiles", None)
                for f in (getter() or ()) if getter else ():
                    if f and f not in seen:
                        seen.add(f)
                        files.append(self.hasher.record(self._abs(f), role="output", ref=name))
        except Exception as exc:  # a broken set: keep the rest of the project
            self.warnings.append(f"{name}: cannot read the items of {set_file}: {exc}")
        finally:
            if snapshot is not None:
                snapshot.close()

    def _metrics(self, name: str, obj) -> list:
        pwobj = self.pwobj
        found = {}

        def add(attr_name, value):
            mk = metric_kind(attr_name)
            number = _number(value)
            if mk is not None and number is not None:
                bare = attr_name.lstrip("_")
                found.setdefault(bare, (bare, mk.kind, number, metric_unit(attr_name, mk)))

        if isinstance(obj, (pwobj.Float, pwobj.Integer)):
            add(name, obj.get())
        else:
            getter = getattr(obj, "getResolution", None)
            if callable(getter):
                with contextlib.suppress(Exception):
                    add("resolution", getter())
            for attr_name, attr in obj.getAttributes():
                if isinstance(attr, (pwobj.Float, pwobj.Integer)):
                    add(attr_name, attr.get())
        return list(found.values())

    def _output(self, name: str, obj) -> ObjectRec:
        pwobj = self.pwobj
        is_set = isinstance(obj, pwobj.Set)
        files: list[FileRec] = []
        if is_set:
            if obj.getFileName():
                files.append(self.hasher.record(self._abs(obj.getFileName()), role="output",
                                                ref=name, container=True))
            self._set_items_files(obj, name, files)
            summary = f"{obj.getSize()} item(s)"
        else:
            getter = getattr(obj, "getFiles", None)
            paths = []
            if callable(getter):
                with contextlib.suppress(Exception):
                    paths = sorted(p for p in (getter() or ()) if p)
            files = [self.hasher.record(self._abs(p), role="output", ref=name) for p in paths]
            summary = str(obj.get()) if isinstance(obj, pwobj.Scalar) else str(obj)
        return ObjectRec(obj_id=obj.getObjId(), name=name, object_class=self._class_name(obj),
                         summary=summary[:2000], n_items=obj.getSize() if is_set else None,
                         files=files, metrics=self._metrics(name, obj))

    def _param_value(self, param, attr, owners) -> tuple[str | None, float | None]:
        pwobj, params = self.pwobj, self.params
        if isinstance(attr, pwobj.PointerList):
            texts = (self._pointer_text(p, owners) for p in attr)
            return ",".join(t for t in texts if t) or None, None
        if isinstance(attr, pwobj.Pointer):
            return self._pointer_text(attr, owners), None
        value = attr.get() if hasattr(attr, "get") else None
        if value is None:
            return None, None
        if isinstance(param, params.EnumParam) and isinstance(value, int):
            choices = list(param.choices or [])
            text = choices[value] if 0 <= value < len(choices) else str(value)
            return str(text), float(value)
        if isinstance(value, bool):
            return ("true" if value else "false"), float(value)
        if isinstance(value, list):
            return ",".join(map(str, value)), None
        return str(value), _number(value)

    def _pointer_text(self, pointer, owners) -> str | None:
        target = pointer.getObjValue()
        if target is None:
            return None
        ext = pointer.getExtended() or ""
        if isinstance(target, self.pwprot.Protocol):
            return f"{target.getObjId()}.{ext}" if ext else str(target.getObjId())
        owner = owners.get(target.getObjId())
        if owner is not None:
            return f"{owner[0]}.{owner[1]}" + (f".{ext}" if ext else "")
        return f"object {target.getObjId()}" + (f".{ext}" if ext else "")

    def _param_files(self, name: str, value: str) -> list[FileRec]:
        text = os.path.expanduser(value.strip())
        if not text or "\n" in text:
            return []
        full = self._abs(text)
        if any(c in text for c in GLOB_CHARS):
            matches = sorted(glob.glob(full))
            if len(matches) > MAX_PATTERN_FILES:
                self.warnings.append(f"parameter {name}: {len(matches)} files match {value}, "
                                     f"not recorded (more than {MAX_PATTERN_FILES})")
                return []
            paths = [m for m in matches if os.path.isfile(m)]
        elif os.path.isfile(full):
            paths = [full]
        else:
            return []
        return [self.hasher.record(p, role="param", ref=name) for p in paths]

    def _input(self, key, position, pointer, owners) -> InputRec:
        target = pointer.getObjValue()
        ext = pointer.getExtended() or None
        source_prot = obj_class = source_obj = None
        if target is not None:
            if isinstance(target, self.pwprot.Protocol):
                source_prot = target.getObjId()
                out = getattr(target, ext, None) if ext else None
                if out is not None and out.hasObjId() and out.getObjId() in owners:
                    source_obj = out.getObjId()
            elif target.getObjId() in owners:
                source_prot = owners[target.getObjId()][0]
                source_obj = target.getObjId()
            with contextlib.suppress(Exception):
                final = pointer.get()
                if final is not None:
                    obj_class = self._class_name(final)
        return InputRec(key, position, source_prot, ext, obj_class, source_obj)

    def _field(self, prot, name: str, read, default=None):
        """``read()``, or ``default`` with a warning naming the run and the field if it fails.

        A project may hold values its protocols would refuse today (an old version, a
        hand-edited workflow): the catalog records what it can read and reports the rest.
        """
        try:
            return read()
        except Exception as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self.warnings.append(f"run {prot.getObjId()}: field {name} cannot be read "
                                 f"({type(exc).__name__}: {text})"[:1000]
                                 + (f"; recorded as {default!r}" if isinstance(default, str)
                                    else "; left out"))
            return default

    def _gpu(self, prot) -> str | None:
        """The run's GPU ids (``"0 1"``); the stored text when the engine cannot parse it."""
        raw = prot.gpuList.get() if prot.hasAttribute("gpuList") else None
        return self._field(prot, "gpuList", lambda: " ".join(map(str, prot.getGpuList())),
                           default=None if raw is None else str(raw)[:255])

    def _run(self, prot, owners) -> RunRec:
        params = self.params
        started, ended = _datetime(prot.initTime), _datetime(prot.endTime)
        duration = (ended - started).total_seconds() if (started and ended) else None
        uses_gpu = bool(self._field(prot, "useGpu", lambda: prot.allowsGpu() and prot.usesGpu(),
                                    default=False))
        gpu = self._gpu(prot) if uses_gpu else None
        protocol_class = self._class_name(prot)
        if protocol_class != prot.getClassName():
            self.warnings.append(f"run {prot.getObjId()}: protocol {protocol_class} is unknown here "
                                 "(its plugin is not installed): its parameters are not read")
        rec = RunRec(prot_id=prot.getObjId(), protocol_class=protocol_class,
                     label=prot.getRunName()[:255], status=prot.getStatus(), started=started,
                     ended=ended, duration_s=duration, error_message=prot.getErrorMessage() or None,
                     host=prot.getHostName() or None, uses_gpu=uses_gpu, gpu=gpu,
                     working_dir=self._abs(prot.getWorkingDir()) if prot.getWorkingDir() else None)
        definition = prot.getDefinition()
        for name, attr in prot.iterDefinitionAttributes():
            param = definition.getParam(name)
            value, number = self._field(prot, name,
                                        lambda: self._param_value(param, attr, owners),
                                        default=(None, None))
            rec.params.append((name, value, number, type(param).__name__))
            if (value and isinstance(param, params.StringParam)
                    and not isinstance(param, (params.TextParam, params.LabelParam))):
                rec.param_files.extend(self._field(prot, f"{name} (files)",
                                                   lambda: self._param_files(name, value),
                                                   default=[]))
        positions: dict[str, int] = defaultdict(int)
        for key, pointer in prot.iterInputAttributes():
            entry = self._field(prot, key,
                                lambda: self._input(key, positions[key], pointer, owners))
            if entry is not None:
                rec.inputs.append(entry)
            positions[key] += 1
        for name, out in prot.iterOutputAttributes():
            if out is None or not out.hasObjId():
                continue
            entry = self._field(prot, name, lambda: self._output(name, out))
            if entry is not None:
                rec.outputs.append(entry)
        return rec

    def _active_run(self, prot):
        """An active run as its ``run.db`` has it (pyworkflow's own update, on a snapshot)."""
        copy = self._copy_db(prot.getDbPath())
        if copy is None:
            return prot
        try:
            fresh = self.pwprot.getProtocolFromDb(self.path, copy, prot.getObjId())
        except Exception as exc:
            self.warnings.append(f"run {prot.getObjId()}: cannot read its run.db: {exc}")
            return prot
        self._opened.append(fresh.getProject())
        fresh.setObjLabel(prot.getObjLabel())
        return fresh

    # -- the project ----------------------------------------------------
    def read(self, fingerprint: tuple[int, int, str]) -> ProjectRec:
        import pyworkflow as pw
        from pyworkflow.project import Project
        from pyworkflow.project.config import ProjectSettings

        os.chdir(self.path)
        snapshot = self._copy_db(PROJECT_DB)
        project = Project(pw.Config.getDomain(), self.path)
        project.load(dbPath=snapshot, chdir=True, loadAllConfig=False)
        self.mapper = project.mapper
        try:
            project.settings = ProjectSettings()
            project.setReadOnly(True)  # no update of active runs, no store
            graph = project.getRunsGraph(refresh=True)
            runs = sorted((r for r in project.getRuns(refresh=False) if not r.isChild()),
                          key=lambda r: r.getObjId())
            watch = {}
            current = []
            for prot in runs:
                if prot.getStatus() in ACTIVE_STATUSES:
                    rel = os.path.relpath(self._abs(prot.getDbPath()), self.path)
                    with contextlib.suppress(OSError):
                        st = os.stat(self._abs(rel))
                        watch[rel] = [st.st_mtime_ns, st.st_size]
                    prot = self._active_run(prot)
                current.append(prot)
            owners = {}
            for prot in current:
                for name, out in prot.iterOutputAttributes():
                    if out is not None and out.hasObjId():
                        owners[out.getObjId()] = (prot.getObjId(), name)
            rec = ProjectRec(path=self.path, name=os.path.basename(self.path),
                             owner=_owner(self.path), created=self._created(project),
                             db_mtime_ns=fingerprint[0], db_size=fingerprint[1],
                             db_sha256=fingerprint[2], watch=watch)
            rec.runs = [self._run(prot, owners) for prot in current]
            ids = {r.prot_id for r in rec.runs}
            for node in graph.getNodes():
                run = getattr(node, "run", None)
                if run is None:
                    continue
                for child in node.getChildren():
                    crun = getattr(child, "run", None)
                    if crun is not None and run.getObjId() in ids and crun.getObjId() in ids:
                        rec.run_edges.append((run.getObjId(), crun.getObjId()))
            rec.run_edges = sorted(set(rec.run_edges))
            rec.object_edges = self._object_edges(project)
        finally:
            for opened in self._opened:
                with contextlib.suppress(Exception):
                    opened.closeMapper()
            project.closeMapper()
        rec.lineage = _lineage(ids, rec.run_edges)
        rec.datasets, rec.run_datasets = _datasets(rec)
        rec.new_hashes = dict(self.hasher.new)
        rec.warnings = self.warnings
        return rec

    def _created(self, project) -> dt.datetime | None:
        try:
            return project.getCreationTime()
        except Exception:
            return None

    def _object_edges(self, project) -> list[tuple[int, int, str]]:
        pwobj = self.pwobj
        edges = set()
        graphs = ((pwobj.RELATION_SOURCE, project.getSourceGraph),
                  (pwobj.RELATION_TRANSFORM, project.getTransformGraph))
        for relation, get_graph in graphs:
            try:
                graph = get_graph(refresh=False)
            except Exception as exc:
                self.warnings.append(f"relations {relation!r}: {exc}")
                continue
            for node in graph.getNodes():
                parent = _node_object(node)
                if parent is None:
                    continue
                for child in node.getChildren():
                    obj = _node_object(child)
                    if obj is not None and obj != parent:
                        edges.add((parent, obj, relation))
        return sorted(edges)


def _node_object(node) -> int | None:
    pointer = getattr(node, "pointer", None)
    if pointer is None:
        return None
    with contextlib.suppress(Exception):
        obj = pointer.get()
        if obj is not None and obj.hasObjId():
            return obj.getObjId()
    return None


def _lineage(ids, edges) -> list[tuple[int, int, int]]:
    children = defaultdict(list)
    for parent, child in edges:
        children[parent].append(child)
    rows = []
    for start in sorted(ids):
        seen = {start: 0}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            for child in children[node]:
                if child not in seen:
                    seen[child] = seen[node] + 1
                    queue.append(child)
        rows.extend((start, d, dist) for d, dist in seen.items())
    return sorted(rows)


def _datasets(rec: ProjectRec):
    """Datasets: runs without input runs whose outputs are data (rules.DATASET_CLASSES)."""
    has_parent = {child for _, child in rec.run_edges}
    by_ancestor = defaultdict(list)
    for anc, desc, _ in rec.lineage:
        by_ancestor[anc].append(desc)
    datasets, links = [], []
    for run in rec.runs:
        if run.prot_id in has_parent or run.status != "finished":
            continue
        data = [f for o in run.outputs if is_dataset_class(o.object_class)
                for f in o.files if not f.container and f.present]
        if not data:
            continue
        if all(f.sha256 for f in data):
            key = hashlib.sha256("\n".join(sorted({f.sha256 for f in data})).encode()).hexdigest()
        else:
            key = hashlib.sha256(("paths:" + "\n".join(sorted({f.real_path for f in data})))
                                 .encode()).hexdigest()
        matched = {f.ref for f in run.param_files}
        patterns = [v for n, v, _, _ in run.params
                    if v and n in matched and any(c in v for c in GLOB_CHARS)]
        if patterns:
            name = patterns[0]
        else:
            reals = sorted({f.real_path for f in data})
            name = reals[0] if len(reals) == 1 else os.path.commonpath(reals)
        unique = {f.real_path: f.size or 0 for f in data}
        datasets.append(DatasetRec(key, name, len(unique), sum(unique.values()), run.prot_id))
        links.extend((desc, key, desc == run.prot_id) for desc in by_ancestor[run.prot_id])
    # a run reached from two roots of the same data gets one link (source wins)
    merged: dict[tuple[int, str], bool] = {}
    for prot_id, key, source in links:
        merged[(prot_id, key)] = merged.get((prot_id, key), False) or source
    unique_ds = {d.key: d for d in datasets}
    return list(unique_ds.values()), sorted((p, k, s) for (p, k), s in merged.items())


def read_project(path: str, *, hash_cache: dict | None = None,
                 checksums: bool = True) -> ProjectRec:
    """Read a pyworkflow project folder into a :class:`ProjectRec`.

    Parameters
    ----------
    path : str
        The project folder (the one holding ``project.sqlite``).
    hash_cache : dict, optional
        ``{resolved path: (size, mtime_ns, sha256)}`` of files already hashed;
        updated in place with the files hashed now.
    checksums : bool
        Compute the SHA-256 of every file (else sizes only).

    Raises
    ------
    ProjectReadError
        When the folder is no readable pyworkflow project.
    """
    path = os.path.realpath(path)
    db = os.path.join(path, PROJECT_DB)
    if not os.path.isfile(db):
        raise ProjectReadError(f"{path}: no {PROJECT_DB}, this is not a pyworkflow project")
    try:
        mtime_ns, size = db_fingerprint(path)
        sha = file_sha256(db)
    except OSError as exc:
        raise ProjectReadError(f"{path}: cannot read {PROJECT_DB}: {exc}") from exc
    hasher = _Hasher(hash_cache if hash_cache is not None else {}, checksums)
    pw_logger = logging.getLogger("pyworkflow")
    level = pw_logger.level
    pw_logger.setLevel(logging.ERROR)
    tmp = tempfile.mkdtemp(prefix="spfluo-catalog-")
    try:
        with _in_folder(path):
            return _ProjectReader(path, tmp, hasher).read((mtime_ns, size, sha))
    except ProjectReadError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ProjectReadError(f"{path}: {type(exc).__name__}: {first}"[:2000]) from exc
    finally:
        pw_logger.setLevel(level)
        shutil.rmtree(tmp, ignore_errors=True)
