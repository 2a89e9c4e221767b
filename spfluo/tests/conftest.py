"""Test configuration: a throw-away spfluo home (engine environment) for the session.

The environment must be prepared before anything imports pyworkflow, so it
happens here at import time.  The ``project`` fixture gives a fresh Project
and restores the working directory afterwards (pyworkflow chdirs into
projects).
"""

import atexit
import functools
import shutil
import tempfile

from spfluo.environment import bootstrap

_HOME = tempfile.mkdtemp(prefix="spfluo-tests-")
bootstrap(_HOME)
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)

import pytest  # noqa: E402

# the shared test helpers report their failed asserts with pytest's detail
pytest.register_assert_rewrite("spfluo.tests._projects", "spfluo.tests.jobs._subprocess",
                               "spfluo.tests.viewers._figures")

from spfluo.tests._projects import launch_protocol, new_project  # noqa: E402


@pytest.fixture(scope="session")
def spfluo_home():
    """The session's spfluo home folder (SPFLUO_HOME)."""
    return _HOME


@pytest.fixture
def project(tmp_path):
    """A fresh pyworkflow Project in a temporary folder (cwd restored afterwards)."""
    with new_project(tmp_path / "project") as proj:
        yield proj


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
    return functools.partial(launch_protocol, project)
