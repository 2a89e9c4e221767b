"""Test configuration: a throw-away spfluo home (engine environment) for the session.

The environment must be prepared before anything imports pyworkflow, so it
happens here at import time.  The ``project`` fixture gives a fresh Project
and restores the working directory afterwards (pyworkflow chdirs into
projects).
"""

import atexit
import os
import shutil
import tempfile

from spfluo.environment import bootstrap

_HOME = tempfile.mkdtemp(prefix="spfluo-tests-")
bootstrap(_HOME)
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def spfluo_home():
    """The session's spfluo home folder (SPFLUO_HOME)."""
    return _HOME


@pytest.fixture
def project(tmp_path):
    """A fresh pyworkflow Project in a temporary folder (cwd restored afterwards)."""
    import pyworkflow as pw
    from pyworkflow.project import Project

    cwd = os.getcwd()
    proj = Project(pw.Config.getDomain(), str(tmp_path / "project"))
    proj.create()
    try:
        yield proj
    finally:
        os.chdir(cwd)


@pytest.fixture
def data_dir(tmp_path):
    """A folder outside the project for input files."""
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def launch(project):
    """Run a protocol in the project and wait: ``launch(ProtClass, label=..., **params)``.

    A pointer parameter takes ``(protocol, "outputName")``.
    """

    def _launch(cls, *, label=None, **values):
        pointers = {k: v for k, v in values.items() if isinstance(v, tuple)}
        plain = {k: v for k, v in values.items() if k not in pointers}
        prot = project.newProtocol(cls, **plain)
        for key, (source, output) in pointers.items():
            getattr(prot, key).set(source)
            getattr(prot, key).setExtended(output)
        if label:
            prot.setObjLabel(label)
        project.launchProtocol(prot, wait=True)
        return prot

    return _launch
