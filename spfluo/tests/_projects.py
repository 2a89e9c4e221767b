"""Pyworkflow projects in tests: create one, run protocols in it, check that validation rejects.

Shared by ``spfluo/tests/conftest.py`` (the ``project`` and ``launch`` fixtures), the
protocol tests and the catalog's template project (``catalog/_fixtures.py``, also used by
``benchmarks/catalog.py``).  pyworkflow is imported inside the functions: call
:func:`spfluo.environment.bootstrap` first (the conftest does).

A pointer value is written ``(protocol, "outputName")`` (``"outputImages.3"`` names one
item of a set).
"""

from __future__ import annotations

import contextlib
import os

import pytest

__all__ = ["new_project", "launch_protocol", "finished", "run_statuses", "assert_rejected"]


@contextlib.contextmanager
def new_project(path):
    """Create a pyworkflow Project in the folder ``path`` and yield it.

    pyworkflow changes the working directory into the project: the previous one is
    restored on exit.
    """
    import pyworkflow as pw
    from pyworkflow.project import Project

    cwd = os.getcwd()
    project = Project(pw.Config.getDomain(), str(path))
    project.create()
    try:
        yield project
    finally:
        os.chdir(cwd)


def _set_pointer(prot, key, target):
    """Point the input ``key`` of ``prot`` at ``target = (protocol, "outputName")``."""
    source, output = target
    getattr(prot, key).set(source)
    getattr(prot, key).setExtended(output)


def launch_protocol(project, cls, *, label=None, **values):
    """Run a new ``cls`` run in ``project`` with the form ``values`` and wait for it.

    Returns the run whatever its status (see :func:`finished`); ``label`` names the run.
    """
    pointers = {k: v for k, v in values.items() if isinstance(v, tuple)}
    prot = project.newProtocol(cls, **{k: v for k, v in values.items() if k not in pointers})
    for key, target in pointers.items():
        _set_pointer(prot, key, target)
    if label:
        prot.setObjLabel(label)
    project.launchProtocol(prot, wait=True)
    return prot


def finished(prot):
    """``prot``, after asserting that it finished (its error message otherwise)."""
    assert prot.getStatus() == "finished", prot.getErrorMessage()
    return prot


def run_statuses(project) -> dict:
    """Run id -> status of every run of ``project`` (read again from the database)."""
    return {p.getObjId(): p.getStatus() for p in project.getRuns(refresh=True)}


def assert_rejected(project, protocol, match, **values):
    """Validation fails with a message matching ``match``, and the project is unchanged.

    ``protocol`` is a protocol class or its class name; the run is made and launched
    through :mod:`spfluo.workflow` (which validates before saving anything).
    """
    from spfluo.workflow import ProjectError, launch, new_protocol

    before = run_statuses(project)
    name = protocol if isinstance(protocol, str) else protocol.__name__
    prot = new_protocol(project, name, {})
    for key, value in values.items():
        if isinstance(value, tuple):
            _set_pointer(prot, key, value)
        else:
            getattr(prot, key).set(value)
    with pytest.raises(ProjectError, match=match):
        launch(project, prot)
    assert run_statuses(project) == before
