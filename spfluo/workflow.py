"""Projects and runs from Python: create/open projects, set parameters from text, launch, describe.

Used by the ``spfluo`` command, batch processing and the catalog.  Call
:func:`spfluo.environment.bootstrap` before importing this module (it
imports pyworkflow).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import pyworkflow as pw
import pyworkflow.object as pwobj
import pyworkflow.protocol.params as params
from pyworkflow.project import Manager, Project

from .errors import ProjectError
from .queue_settings import queue_settings_error
from .safepaths import check_project_folder

__all__ = [
    "ProjectError",
    "create_project",
    "open_project",
    "list_projects",
    "protocol_classes",
    "protocol_class",
    "new_protocol",
    "set_params",
    "launch",
    "RunInfo",
    "describe_runs",
    "get_output",
    "check_workflow",
    "load_workflow_file",
    "find_run",
    "split_run_reference",
    "run_duration",
    "continue_run",
    "stop_run",
    "runs_to_launch",
    "launch_in_order",
]


def _manager() -> Manager:
    return Manager()


def create_project(name: str, *, location: str | None = None, chdir: bool = True) -> Project:
    """Create project ``name`` in the spfluo projects folder (or at ``location``).

    Like :func:`open_project`, the current directory is then the project folder
    (pyworkflow needs it) unless ``chdir=False``.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name or ""):
        raise ProjectError(f"invalid project name {name!r}: use letters, digits, '_', '-', '.'")
    manager = _manager()
    if manager.hasProject(name):
        raise ProjectError(f"project {name!r} already exists in {manager.PROJECTS}")
    path = (manager.getProjectPath(name) if location is None
            else os.path.join(os.path.abspath(os.path.expanduser(location)), name))
    check_project_folder(path)
    cwd = os.getcwd()
    try:
        if location is None:
            project = Project(pw.Config.getDomain(), path)
            project.create()
        else:
            project = manager.createProject(name, location=location)
    finally:
        os.chdir(project.getPath() if chdir and "project" in locals() else cwd)
    return project


def open_project(name_or_path: str, *, chdir: bool = True) -> Project:
    """Open a project by name (in the projects folder) or by path.

    pyworkflow needs the current directory to be the project folder while
    the project is used; with ``chdir=True`` (default) this function goes there.
    A project whose folder (or real folder) has a path that a shell would
    interpret is refused (:mod:`spfluo.safepaths`).
    """
    manager = _manager()
    if os.path.isdir(name_or_path) and os.path.exists(os.path.join(name_or_path, "project.sqlite")):
        path = os.path.abspath(name_or_path)
    elif manager.hasProject(name_or_path):
        path = manager.getProjectPath(name_or_path)
    else:
        raise ProjectError(f"no project {name_or_path!r} in {manager.PROJECTS}: "
                           "see `spfluo project list` or create it with `spfluo project create`")
    check_project_folder(path)
    project = Project(pw.Config.getDomain(), path)
    project.load(chdir=chdir)
    return project


def list_projects() -> list:
    """Project infos (name, path, modification time), newest first."""
    return _manager().listProjects()


def protocol_classes() -> dict:
    """spfluo protocol classes by name (the pyworkflow test plugin's are left out)."""
    domain = pw.Config.getDomain()
    return {name: cls for name, cls in domain.getProtocols().items()
            if cls.__module__.startswith("spfluo.") and getattr(cls, "_label", None)}


def protocol_class(name: str):
    classes = protocol_classes()
    if name in classes:
        return classes[name]
    lowered = {k.lower(): v for k, v in classes.items()}
    for candidate in (name.lower(), "prot" + name.lower()):
        if candidate in lowered:
            return lowered[candidate]
    raise ProjectError(f"unknown protocol {name!r}; known: {', '.join(sorted(classes))}")


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "y", "on"):
        return True
    if t in ("0", "false", "no", "n", "off"):
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def set_params(project: Project, prot, values: dict) -> None:
    """Set protocol parameters from text values.

    Pointers are written ``RUN.outputName`` (or ``RUN`` for the run itself), where
    ``RUN`` is a run id or a run label (:func:`split_run_reference`); enums accept the
    choice index or its label; booleans true/false/yes/no/1/0.
    """
    definition = prot.getDefinition()
    for key, text in values.items():
        param = definition.getParam(key)
        if param is None:
            known = sorted(name for name, _ in definition.iterParams())
            raise ProjectError(f"{prot.getClassName()} has no parameter {key!r}; "
                               f"parameters: {', '.join(known)}")
        attr = getattr(prot, key)
        text = str(text)
        try:
            if isinstance(param, params.PointerParam):
                target, extended = split_run_reference(project, text)
                output, _, item = extended.partition(".")
                if output:
                    obj = _output(target, output)
                    if item and (not item.isdigit() or not isinstance(obj, pwobj.Set)
                                 or obj[int(item)] is None):
                        raise ValueError(f"run {target.getObjId()}.{output} has no item "
                                         f"{item!r}")
                attr.set(target)
                if extended:
                    attr.setExtended(extended)
            elif isinstance(param, params.EnumParam):
                choices = list(param.choices)
                if text.isdigit() and int(text) < len(choices):
                    attr.set(int(text))
                else:
                    matches = [i for i, c in enumerate(choices) if c.lower() == text.lower()]
                    if not matches:
                        raise ValueError(f"choose one of {choices} (or its index)")
                    attr.set(matches[0])
            elif isinstance(param, params.BooleanParam):
                attr.set(_parse_bool(text))
            elif isinstance(param, params.IntParam):
                attr.set(int(text))
            elif isinstance(param, params.FloatParam):
                attr.set(float(text))
            else:
                attr.set(text)
        except ValueError as exc:
            raise ProjectError(f"parameter {key}={text!r}: {exc}") from exc


def new_protocol(project: Project, class_name: str, values: dict | None = None, *,
                 label: str | None = None):
    """A new (unsaved) protocol of ``class_name`` with parameters set from text."""
    prot = project.newProtocol(protocol_class(class_name))
    if label:
        prot.setObjLabel(label)
    set_params(project, prot, values or {})
    return prot


def launch(project: Project, prot, *, validate_first: bool = True) -> str:
    """Run ``prot`` and wait; returns its final status.

    With ``validate_first`` the protocol is validated in this process first,
    and a protocol with errors raises :class:`ProjectError` without being
    saved, so the project is left unchanged.
    """
    if validate_first:
        errors = prot.validate()
        if errors:
            raise ProjectError("\n".join(errors))
    project.launchProtocol(prot, wait=True)
    project.getRuns(refresh=True)
    return prot.getStatus()


@dataclass
class RunInfo:
    """What ``spfluo project show`` prints about one run."""

    run_id: int
    label: str
    class_name: str
    status: str
    duration_s: float | None
    error: str
    outputs: list = field(default_factory=list)   # (name, class, description, size_bytes)
    inputs: list = field(default_factory=list)    # (param, source run id, source output)


def _files_size(obj) -> int:
    files = set()
    if hasattr(obj, "getFiles"):
        try:
            files = set(obj.getFiles() or [])
        except Exception:
            files = set()
    if isinstance(obj, pwobj.Set) and obj.getFileName():
        files.add(obj.getFileName())
        if hasattr(obj, "items"):
            for item in obj.items():
                if hasattr(item, "getFiles"):
                    files |= set(item.getFiles())
    return sum(os.path.getsize(f) for f in files if f and os.path.exists(f))


def _set_geometry(obj) -> str:
    """Shapes and voxel size of a set of images or particles, the box of coordinates."""
    if hasattr(obj, "getBoxSizeReason"):  # coordinates
        box, why = obj.getBoxSize(), obj.getBoxSizeReason()
        return f"box {box:g} µm" + (f" ({why})" if why else "") if box else ""
    if not hasattr(obj, "getVoxelSize") or obj.getSize() == 0:
        return ""
    first = obj.getFirstItem()
    shapes = ({first.getShape()} if hasattr(obj, "getBoxShape")
              else {item.getShape() for item in obj.iterItems()})
    text = " or ".join(f"{s[0]} channel(s) of {' x '.join(map(str, s[1:]))} voxels"
                       for s in sorted(shapes))
    try:
        vs = obj.getVoxelSize()
    except ValueError:  # none recorded
        return text
    return text + f" (z, y, x), voxel {' x '.join(f'{v:g}' for v in vs)} µm"


def _describe_output(obj) -> str:
    if isinstance(obj, pwobj.Set):
        geometry = _set_geometry(obj)
        return f"{obj.getSize()} item(s)" + (f", {geometry}" if geometry else "")
    if isinstance(obj, pwobj.Scalar):
        return str(obj.get())
    return str(obj)


def describe_runs(project: Project) -> list[RunInfo]:
    """Runs in creation order with status, duration, outputs and input provenance."""
    project.getRunsGraph(refresh=True)
    infos = []
    for prot in sorted(project.getRuns(refresh=True), key=lambda p: p.getObjId()):
        info = RunInfo(run_id=prot.getObjId(), label=prot.getRunName(),
                       class_name=prot.getClassName(), status=prot.getStatus(),
                       duration_s=run_duration(prot), error=prot.getErrorMessage() or "")
        for name, out in prot.iterOutputAttributes():
            info.outputs.append((name, out.getClassName(), _describe_output(out), _files_size(out)))
        for key, pointer in prot.iterInputAttributes():
            source = pointer.getObjValue()
            if source is None:
                continue
            source_id = source.getObjId()
            if not isinstance(source, pw.protocol.Protocol):
                parent = project.getProtocol(source.getObjParentId()) if source.hasObjParentId() else None
                source_id = parent.getObjId() if parent is not None else source_id
            info.inputs.append((key, source_id, pointer.getExtended() or ""))
        infos.append(info)
    return infos


def _run(project: Project, run_id):
    """The protocol with id ``run_id`` (ProjectError if there is none)."""
    try:
        prot = project.getProtocol(int(run_id))
    except Exception:
        prot = None
    if prot is None:
        raise ProjectError(f"no run {run_id!r} in project {os.path.basename(project.getPath())}: "
                           "see `spfluo project show`")
    return prot


def _output(prot, name: str):
    outputs = [n for n, _ in prot.iterOutputAttributes()]
    if name not in outputs:
        raise ProjectError(f"run {prot.getObjId()} has no output {name!r} "
                           f"(outputs: {', '.join(outputs) or 'none'})")
    return getattr(prot, name)


def get_output(project: Project, ref: str):
    """The object named by ``RUN.outputName`` (or ``RUN.outputName.ITEMID`` for a set item);
    ``RUN`` is a run id or label (:func:`split_run_reference`)."""
    prot, extended = split_run_reference(project, ref)
    run_id = prot.getObjId()
    name, _, item = extended.partition(".")
    if not name:
        outputs = [n for n, _ in prot.iterOutputAttributes()]
        if len(outputs) != 1:
            raise ProjectError(f"run {run_id} has outputs {outputs}: write RUNID.outputName")
        name = outputs[0]
    obj = _output(prot, name)
    if item:
        found = obj[int(item)] if item.isdigit() and isinstance(obj, pwobj.Set) else None
        if found is None:
            raise ProjectError(f"run {run_id}.{name} has no item {item!r}")
        return found.clone()
    return obj


def check_workflow(protocols) -> None:
    """Check the protocols of a workflow JSON before the engine loads them.

    Raises :class:`ProjectError` naming the protocol and the field: the list must hold
    protocol definitions (objects), and their queue settings must be safe to write into
    a job script (:func:`spfluo.queue_settings.queue_settings_error`).
    """
    if not isinstance(protocols, list) or not all(isinstance(d, dict) for d in protocols):
        raise ProjectError("a workflow file holds a JSON list of protocol definitions "
                           "(as written by `spfluo export`)")
    for d in protocols:
        error = queue_settings_error(d)
        if error:
            raise ProjectError(f"workflow protocol {d.get('object.id', '?')} "
                               f"({d.get('object.className', '?')}): {error}")


def load_workflow_file(project: Project, path: str) -> list:
    """Add the protocols of the workflow JSON ``path`` to ``project`` (saved, not run).

    The file is checked first (:func:`check_workflow`): a refused file adds nothing.
    Returns the new protocols.
    """
    import json

    from .io import regular_file

    try:
        text = regular_file(path, what="workflow", kind="workflow JSON").read_text(
            encoding="utf-8")
        protocols = json.loads(text)
    except (OSError, ValueError) as exc:  # UnicodeDecodeError, JSONDecodeError included
        raise ProjectError(f"cannot read the workflow file {path}: {exc}") from exc
    check_workflow(protocols)
    before = {p.getObjId() for p in project.getRuns(refresh=True)}
    project.loadProtocols(jsonStr=text)
    new = sorted((p for p in project.getRuns(refresh=True) if p.getObjId() not in before),
                 key=lambda p: p.getObjId())
    # The engine creates the protocols in the file's order but drops their labels and
    # comments (its Protocol constructor does not pass them on): set them back.
    known = protocol_classes()
    loaded = [d for d in protocols if d.get("object.className") in known]
    for prot, d in zip(new, loaded):
        label, comment = d.get("object.label"), d.get("object.comment")
        if label:
            prot.setObjLabel(str(label))
        if comment:
            prot.setObjComment(str(comment))
        project.mapper.store(prot)
    project.mapper.commit()
    return [project.getProtocol(p.getObjId()) for p in new]


# ------------------------------------------------------------------ runs by label, control
def find_run(project: Project, ref: str):
    """The run whose id or label is ``ref`` (:class:`ProjectError` when none or several)."""
    prot, rest = split_run_reference(project, str(ref))
    if rest:
        raise ProjectError(f"{ref!r} names an output of run {prot.getObjId()}, not a run: "
                           f"give the run id or label ({prot.getObjId()} or "
                           f"{prot.getRunName()!r})")
    return prot


def split_run_reference(project: Project, text: str):
    """``(run, rest)`` for ``RUN[.rest]``, where ``RUN`` is a run id or a run label.

    A label may hold dots and spaces; the longest label that ``text`` starts with wins.
    A label that several runs share is refused (give the id).
    """
    head, _, rest = text.partition(".")
    if head.isdigit():
        return _run(project, head), rest
    matches = [p for p in project.getRuns(refresh=True)
               if text == p.getRunName() or text.startswith(p.getRunName() + ".")]
    if not matches:
        raise ProjectError(f"no run with the id or label {head!r} in project "
                           f"{os.path.basename(project.getPath())}: see `spfluo project show`")
    longest = max(len(p.getRunName()) for p in matches)
    same = sorted(p.getObjId() for p in matches if len(p.getRunName()) == longest)
    if len(same) > 1:
        raise ProjectError(f"the label {text[:longest]!r} names runs "
                           f"{', '.join(map(str, same))}: write the run id instead")
    return project.getProtocol(same[0]), text[longest + 1:]


def run_duration(prot) -> float | None:
    """Seconds the run took (or has been running), from the engine's start and end times."""
    elapsed = prot.getElapsedTime(default=None)
    return None if elapsed is None else elapsed.total_seconds()


def continue_run(project: Project, prot) -> str:
    """Resume a failed, aborted or interrupted run and wait; returns its final status.

    The engine's resume mode keeps the steps that finished with the same parameters, and
    the long jobs (ab initio, refinement) restart from their last checkpoint.  A run that
    is still running, or finished, is refused (:class:`ProjectError`).
    """
    import pyworkflow.protocol as pwprot

    status = prot.getStatus()
    if status in (pwprot.STATUS_RUNNING, pwprot.STATUS_LAUNCHED, pwprot.STATUS_SCHEDULED):
        raise ProjectError(f"run {prot.getObjId()} ({prot.getRunName()}) is {status}: "
                           f"wait for it, or stop it first (`spfluo stop`)")
    if status == pwprot.STATUS_FINISHED:
        raise ProjectError(f"run {prot.getObjId()} ({prot.getRunName()}) is finished: "
                           "nothing to continue")
    prot.runMode.set(pwprot.MODE_RESUME)
    return launch(project, prot)


def stop_run(project: Project, prot) -> str:
    """Stop a running run (its processes are killed; it becomes ``aborted``).

    A run that is not running is refused (:class:`ProjectError`).  ``continue_run``
    resumes it later.
    """
    import pyworkflow.protocol as pwprot

    project.getRuns(refresh=True)
    prot = project.getProtocol(prot.getObjId())
    if prot.getStatus() not in pwprot.ACTIVE_STATUS:
        raise ProjectError(f"run {prot.getObjId()} ({prot.getRunName()}) is "
                           f"{prot.getStatus()}, not running: nothing to stop")
    project.stopProtocol(prot)
    project.getRuns(refresh=True)
    return project.getProtocol(prot.getObjId()).getStatus()


def runs_to_launch(project: Project, refs=None) -> list:
    """Runs to launch in provenance order: ``refs`` (ids or labels), else every run that
    was saved and never run (e.g. a loaded workflow); a run comes after the runs it uses."""
    import pyworkflow.protocol as pwprot

    project.getRunsGraph(refresh=True)
    if refs:
        chosen = {find_run(project, r).getObjId() for r in refs}
    else:
        chosen = {p.getObjId() for p in project.getRuns(refresh=True)
                  if p.getStatus() in (pwprot.STATUS_SAVED, pwprot.STATUS_NEW)}
    parents = {}
    for info in describe_runs(project):
        if info.run_id in chosen:
            parents[info.run_id] = {src for _, src, _ in info.inputs
                                    if src in chosen and src != info.run_id}
    order, done = [], set()
    while len(order) < len(parents):
        ready = [i for i in sorted(parents) if i not in done and parents[i] <= done] \
            or [i for i in sorted(parents) if i not in done]
        order.append(ready[0])
        done.add(ready[0])
    return [project.getProtocol(i) for i in order]


def launch_in_order(project: Project, runs, *, report=None) -> list[tuple[object, str]]:
    """Launch ``runs`` one after the other, waiting for each; stop at the first that
    does not finish.  ``report(prot, status)`` is called after each (and with status
    None before).  Returns ``[(run, status)]`` of the runs launched."""
    done = []
    for prot in runs:
        if report:
            report(prot, None)
        status = launch(project, project.getProtocol(prot.getObjId()))
        prot = project.getProtocol(prot.getObjId())
        done.append((prot, status))
        if report:
            report(prot, status)
        if status != "finished":
            break
    return done
