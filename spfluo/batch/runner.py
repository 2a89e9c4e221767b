"""``spfluo batch``: one project per dataset folder, datasets processed in parallel on Dask.

For each dataset, :func:`process_dataset` (run by a Dask worker) fills the
template's fields from the folder (:mod:`spfluo.batch.dataset`), loads the
protocols into a new project with the engine's loader, and launches them one
after the other (``spfluo.workflow.launch``).  The project remembers which runs
the template made (``spfluo-batch.json`` in the project folder), so that a later
batch skips a dataset whose runs all finished and continues a failed one: the
finished runs are kept, the failed or unfinished ones are launched again (the
engine's "continue" mode re-runs their failed steps).

Datasets run in parallel on a ``dask.distributed`` cluster: by default a
``LocalCluster`` of ``workers`` processes with one thread each; with
``scheduler`` an existing cluster (e.g. one started on SLURM nodes with
dask-jobqueue), whose workers must see the same spfluo home folder and the
dataset folders.  A worker runs one dataset at a time (the engine needs the
current directory to be the project folder), and a dataset that fails, even
by killing its worker, never stops the others.

The summary (``summary.csv`` in the output folder, rewritten after every dataset)
has one row per dataset: ``dataset, project, status, runtime_s, resolution_um,
resolution_per_voxel, resolution_text, ssim, error``.  Resolution and SSIM come from the
last comparison with a reference (``VolumeComparison``: FSC 0.143 and SSIM; the resolution
only where the FSC crosses 0.143, ``resolution_text`` saying why otherwise), else
resolution from the last reconstructed volume's half-map FSC.
"""

from __future__ import annotations

import csv
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..algorithms.limits import MAX_WORKERS
from .dataset import project_name, read_dataset

__all__ = [
    "SUMMARY_FILE",
    "SUMMARY_COLUMNS",
    "STATE_FILE",
    "FINISHED",
    "FAILED",
    "BatchResult",
    "run_batch",
    "process_dataset",
    "project_metrics",
    "read_summary",
    "write_summary",
]

SUMMARY_FILE = "summary.csv"
SUMMARY_COLUMNS = ("dataset", "project", "status", "runtime_s", "resolution_um",
                   "resolution_per_voxel", "resolution_text", "ssim", "error")
#: File in each project folder: the template, the dataset and the runs the template made.
STATE_FILE = "spfluo-batch.json"
FINISHED, FAILED = "finished", "failed"

# The engine works in the current directory: one dataset at a time per process, even
# on a Dask worker with several threads.
_PROCESS_LOCK = threading.Lock()


class DatasetError(Exception):
    """A dataset that cannot go further (the message names the step and the reason)."""


@dataclass(frozen=True)
class BatchResult:
    """What a batch did.

    Attributes
    ----------
    rows : list of dict
        One summary row per dataset given, in order (columns :data:`SUMMARY_COLUMNS`).
    summary_path : Path
        The summary CSV.
    wall_s : float
        Wall time of the batch, seconds.
    skipped : list of str
        Projects of the datasets skipped because they had finished before.
    """

    rows: list = field(default_factory=list)
    summary_path: Path | None = None
    wall_s: float = 0.0
    skipped: list = field(default_factory=list)


# ----------------------------------------------------------------- summary file
def read_summary(path: str | os.PathLike) -> dict:
    """Rows of a summary CSV by project name (empty when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["project"]: {c: row.get(c, "") or "" for c in SUMMARY_COLUMNS}
                for row in csv.DictReader(fh) if row.get("project")}


def write_summary(path: str | os.PathLike, rows) -> Path:
    """Write summary rows (dicts with :data:`SUMMARY_COLUMNS`) to a CSV, atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in SUMMARY_COLUMNS})
    os.replace(tmp, path)
    return path


def _one_line(text) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return " | ".join(lines)


def _fmt(value, digits=4) -> str:
    return "" if value is None else f"{value:.{digits}g}"


# ----------------------------------------------------------------- in the worker
def _read_state(project_path: str) -> dict | None:
    path = os.path.join(project_path, STATE_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _load_template(project, template, dataset) -> dict:
    from ..io import write_json_atomic
    from .templates import fill_template, load_workflow

    protocols, left_out = fill_template(template, dataset.values)
    runs = load_workflow(project, protocols)
    state = {"template": template.getObjId(), "template_path": template.templatePath,
             "dataset": str(dataset.path), "values": dataset.values,
             "runs": [r.getObjId() for r in runs], "labels": [r.getRunName() for r in runs],
             "left_out": left_out}
    write_json_atomic(os.path.join(project.getPath(), STATE_FILE), state)
    return state


def _open_or_create(name: str, template, dataset):
    from pyworkflow.project import Manager

    from ..workflow import create_project, open_project

    if not Manager().hasProject(name):
        project = create_project(name)
        return project, _load_template(project, template, dataset)
    project = open_project(name)
    state = _read_state(project.getPath())
    if state is None:
        runs = project.getRuns(refresh=True)
        if any(not r.isSaved() for r in runs):
            raise DatasetError(f"project {name} exists and was not made by spfluo batch (no "
                               f"{STATE_FILE}): remove it or choose another --prefix")
        if runs:  # a batch stopped between loading the template and writing its state
            project.deleteProtocol(*runs)
        return project, _load_template(project, template, dataset)
    if state.get("dataset") != str(dataset.path):
        raise DatasetError(f"project {name} holds dataset {state.get('dataset')}, not "
                           f"{dataset.path}: rename the dataset folder or use another --prefix")
    if state.get("template") != template.getObjId():
        raise DatasetError(f"project {name} was made from template {state.get('template')}, not "
                           f"{template.getObjId()}: remove it or use another --prefix")
    return project, state


def _failure(prot) -> str:
    """The protocol's error, with the last line of its stderr log (the job's reason)."""
    message = _one_line(prot.getErrorMessage() or f"status {prot.getStatus()}")
    try:
        stderr = prot.getLogPaths()[1]
        with open(stderr, encoding="utf-8", errors="replace") as fh:
            lines = [ln.strip() for ln in fh if ln.strip()]
    except (OSError, IndexError):
        lines = []
    if lines and lines[-1] not in message and "non-zero exit status" in message:
        message += f" ({lines[-1]})"
    return message


def project_metrics(project, run_ids) -> dict:
    """Resolution and SSIM of a dataset's project from its runs (in the given order).

    Returns
    -------
    dict
        ``resolution_um``, ``resolution_per_voxel``, ``resolution_text`` (the verdict of the
        comparison's FSC at 0.143: why there is no number, when there is none), ``ssim`` as
        text ('' when unknown): from the last :class:`~spfluo.objects.VolumeComparison` (FSC
        0.143 against the reference), else from the last :class:`~spfluo.objects.Volume`
        with a half-map resolution.
    """
    from ..objects import Volume, VolumeComparison

    comparison, volume = None, None
    for run_id in run_ids:
        prot = project.getProtocol(int(run_id))
        if prot is None or not prot.isFinished():
            continue
        for _, out in prot.iterOutputAttributes():
            if isinstance(out, VolumeComparison):
                comparison = out
            elif isinstance(out, Volume) and out.getResolution():
                volume = out
    metrics = {"resolution_um": "", "resolution_per_voxel": "", "resolution_text": "",
               "ssim": ""}
    if comparison is not None:
        m = comparison.getMetrics()
        metrics.update(resolution_um=_fmt(m["fsc_resolution_0143_um"]),
                       resolution_per_voxel=_fmt(m["fsc_resolution_0143_per_voxel"]),
                       resolution_text=comparison.getResolutionText() or "",
                       ssim=_fmt(m["ssim"]))
    elif volume is not None:
        res = volume.getResolution()
        metrics.update(resolution_um=_fmt(res),
                       resolution_per_voxel=_fmt(volume.getVoxelSize()[-1] / res))
    return metrics


def _run_dataset(task: dict) -> dict:
    from ..workflow import ProjectError, launch
    from .templates import find_template

    dataset = read_dataset(task["dataset"])
    template = find_template(task["template"])
    project, state = _open_or_create(task["project"], template, dataset)
    for run_id in state["runs"]:
        prot = project.getProtocol(int(run_id))
        if prot is None:
            raise DatasetError(f"run {run_id} of the template is missing from project "
                               f"{task['project']}: remove the project to start again")
        if prot.isFinished():
            continue
        label = prot.getRunName()
        try:
            status = launch(project, prot)
        except ProjectError as exc:  # rejected by its validation: nothing ran
            raise DatasetError(f"{label}: {_one_line(exc)}") from None
        if status != FINISHED:
            raise DatasetError(f"{label} {status}: {_failure(prot)}")
    return {"status": FINISHED, "left_out": state.get("left_out", []),
            **project_metrics(project, state["runs"])}


def process_dataset(task: dict) -> dict:
    """Run a template on one dataset in its own project (what a Dask worker does).

    Parameters
    ----------
    task : dict
        ``dataset`` (folder), ``project`` (name), ``template`` (name or file) and
        ``home`` (the spfluo home folder, shared with the submitting process).

    Returns
    -------
    dict
        The summary row (:data:`SUMMARY_COLUMNS`), plus ``left_out`` (labels of the
        template's protocols left out for this dataset) when it finished; never raises
        for a dataset error: the row's status is ``failed`` and ``error`` says why.
    """
    from ..environment import bootstrap

    start = time.perf_counter()
    row = {c: "" for c in SUMMARY_COLUMNS}
    row.update(dataset=task["dataset"], project=task["project"], status=FAILED)
    with _PROCESS_LOCK:
        cwd = os.getcwd()
        try:
            bootstrap(task["home"])
            row.update(_run_dataset(task))
        except (Exception, SystemExit) as exc:  # reported, never propagated (the engine may
            # call sys.exit, e.g. on an unreadable hosts.conf)
            text = _one_line(exc) or type(exc).__name__
            row["error"] = text if isinstance(exc, (DatasetError, ValueError)) else \
                f"{type(exc).__name__}: {text}"
        finally:
            os.chdir(cwd)
    row["runtime_s"] = f"{time.perf_counter() - start:.1f}"
    return row


# ----------------------------------------------------------------- in the caller
def _dataset_done(name: str) -> bool:
    """Whether project ``name`` exists and every run its template made has finished."""
    from pyworkflow.project import Manager

    from ..workflow import open_project

    if not Manager().hasProject(name):
        return False
    cwd = os.getcwd()
    try:
        project = open_project(name)
        state = _read_state(project.getPath())
        if state is None:
            return False
        runs = [project.getProtocol(int(i)) for i in state["runs"]]
        return all(r is not None and r.isFinished() for r in runs)
    finally:
        os.chdir(cwd)


def _client(workers: int, scheduler: str | None):
    from dask.distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler, timeout="60s"), None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=40)
    return Client(cluster), cluster


def run_batch(template: str, datasets, *, out: str | os.PathLike, workers: int = 2,
              scheduler: str | None = None, home: str | os.PathLike | None = None,
              prefix: str | None = None, log=print) -> BatchResult:
    """Run a workflow template on every dataset folder, in parallel on Dask.

    Parameters
    ----------
    template : str
        Template name (``spr_particles``), engine id or ``.json.template`` path.
    datasets : sequence of path
        Dataset folders (layout in :mod:`spfluo.batch.dataset`); their names must
        differ (each gives the project ``PREFIX-NAME``).
    out : path
        Folder of the summary CSV (created).  Running again with the same folder
        skips the datasets that finished and continues the others.
    workers : int, default 2
        Worker processes of the local Dask cluster (one thread each).
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:8786``); ``workers`` is
        then unused.
    home : path, optional
        spfluo home folder (default ``$SPFLUO_HOME`` or ``~/.spfluo``); workers use it.
    prefix : str, optional
        Project name prefix (default: the template name).
    log : callable, default print
        Receives one progress line per dataset.

    Returns
    -------
    BatchResult

    Raises
    ------
    ValueError
        Bad ``workers``, no dataset, two datasets with the same name, or an unknown
        template (before anything runs).
    """
    from ..environment import bootstrap

    if isinstance(workers, bool) or not isinstance(workers, int) or \
            not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers must be an integer >= 1 and <= {MAX_WORKERS}, got "
                         f"{workers!r}.")
    datasets = [str(d) for d in datasets]
    if not datasets:
        raise ValueError("No dataset given: pass one or more dataset folders.")
    root = bootstrap(home)
    from .templates import find_template

    tmpl = find_template(template)
    prefix = tmpl.name if prefix is None else prefix
    start = time.perf_counter()
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / SUMMARY_FILE
    rows = read_summary(summary_path)

    order, tasks, skipped = [], [], []
    paths_by_project = {}
    for d in datasets:
        path = os.path.abspath(os.path.expanduser(d))
        name = project_name(prefix, os.path.basename(os.path.normpath(path)))
        if name in paths_by_project:
            raise ValueError(f"Datasets {paths_by_project[name]} and {path} both give project "
                             f"{name}: dataset folder names must differ.")
        paths_by_project[name] = path
        order.append(name)
        try:
            read_dataset(path)
        except ValueError as exc:  # this dataset fails alone
            rows[name] = {**{c: "" for c in SUMMARY_COLUMNS}, "dataset": path, "project": name,
                          "status": FAILED, "runtime_s": "0.0", "error": _one_line(exc)}
            log(f"{name}: failed: {rows[name]['error']}")
            continue
        previous = rows.get(name)
        if previous and previous["status"] == FINISHED and _dataset_done(name):
            skipped.append(name)
            log(f"{name}: finished before, skipped")
            continue
        tasks.append({"dataset": path, "project": name, "template": tmpl.templatePath
                      if tmpl.source == "local" else tmpl.getObjId(), "home": str(root)})
    write_summary(summary_path, [rows[n] for n in order if n in rows]
                  + [r for n, r in rows.items() if n not in order])

    if tasks:
        from dask.distributed import as_completed

        client, cluster = _client(workers, scheduler)
        try:
            futures = {client.submit(process_dataset, task, pure=False,
                                     key=f"spfluo-batch-{task['project']}-{uuid.uuid4().hex[:8]}"):
                       task for task in tasks}
            for k, future in enumerate(as_completed(futures), 1):
                task = futures[future]
                try:
                    row = future.result()
                except Exception as exc:  # the worker died (memory, signal...)
                    row = {**{c: "" for c in SUMMARY_COLUMNS}, "dataset": task["dataset"],
                           "project": task["project"], "status": FAILED,
                           "error": f"worker lost: {type(exc).__name__}: {_one_line(exc)}"}
                rows[row["project"]] = {c: row.get(c, "") for c in SUMMARY_COLUMNS}
                write_summary(summary_path, [rows[n] for n in order if n in rows]
                              + [r for n, r in rows.items() if n not in order])
                detail = f" ({row['error']})" if row["error"] else ""
                if row.get("left_out"):
                    detail += f" (left out: {', '.join(row['left_out'])})"
                log(f"[{k}/{len(tasks)}] {row['project']}: {row['status']} in "
                    f"{row['runtime_s'] or '?'} s{detail}")
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    return BatchResult(rows=[rows[n] for n in order], summary_path=summary_path,
                       wall_s=time.perf_counter() - start, skipped=skipped)
