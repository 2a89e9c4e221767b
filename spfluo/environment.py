"""Prepare the pyworkflow engine's environment under one spfluo home folder.

pyworkflow reads its configuration from environment variables once, when
``pyworkflow`` is first imported, and exits the process when its hosts file is
missing.  :func:`bootstrap` therefore has to run before that import: the
``spfluo`` command and the test suite call it first thing.

Layout of the home folder (default ``~/.spfluo``, or ``$SPFLUO_HOME``)::

    <home>/projects/        the projects (SCIPION_USER_DATA/projects)
    <home>/scipion/config/  hosts.conf (SCIPION_HOME/config)
    <home>/matplotlib/      matplotlib's cache (MPLCONFIGDIR)
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from .constants import SPFLUO_HOME_VAR
from .safepaths import check_path

__all__ = ["bootstrap", "spfluo_home", "projects_folder", "HOSTS_CONF_BASIC"]

#: hosts.conf for running on this machine; ``%_(`` is pyworkflow's escape for ``%(``.
HOSTS_CONF_BASIC = """[localhost]
PARALLEL_COMMAND = mpirun -np %_(JOB_NODES)d %_(COMMAND)s
NAME = SCIPION_LOCALHOST
ADDRESS = localhost
MPI_COMMAND = mpirun -np %_(JOB_NODES)d %_(COMMAND)s
"""


def spfluo_home(home: str | os.PathLike | None = None) -> Path:
    """The spfluo home folder: ``home``, else ``$SPFLUO_HOME``, else ``~/.spfluo``."""
    if home is None:
        home = os.environ.get(SPFLUO_HOME_VAR) or Path.home() / ".spfluo"
    return Path(home).expanduser().resolve()


def projects_folder(home: str | os.PathLike | None = None) -> Path:
    """Folder where ``spfluo project create NAME`` puts projects."""
    return spfluo_home(home) / "projects"


def bootstrap(home: str | os.PathLike | None = None, *, hosts_conf: str | None = None) -> Path:
    """Set pyworkflow's environment variables and write its hosts file.

    Must be called before ``import pyworkflow``.  When pyworkflow is already
    imported, its ``Config`` attributes are patched as well, so the call still
    takes effect in this process (and in every subprocess, through the
    environment).

    Parameters
    ----------
    home : path, optional
        The spfluo home folder (see :func:`spfluo_home`).
    hosts_conf : str, optional
        Content of ``hosts.conf``; the default describes this machine. An
        existing file is kept unless this is given.

    Returns
    -------
    Path
        The resolved home folder.

    Raises
    ------
    ProjectError
        When the home folder or the Python interpreter has a path that a shell would
        interpret (see :mod:`spfluo.safepaths`); nothing is created then.
    """
    root = spfluo_home(home)
    check_path(root, what="the spfluo home folder (--home or $SPFLUO_HOME)",
               fix="Choose another home folder")
    check_path(sys.executable, what="the Python interpreter",
               fix="Install spfluo in a virtual environment at another path")
    engine = importlib.util.find_spec("pyworkflow")  # located, not imported
    if engine is not None and engine.origin:
        check_path(os.path.dirname(engine.origin), what="the pyworkflow installation",
                   fix="Install spfluo in a virtual environment at another path")
    scipion_home = root / "scipion"
    config_dir = scipion_home / "config"
    hosts = config_dir / "hosts.conf"
    for folder in (root / "projects", config_dir, root / "matplotlib"):
        folder.mkdir(parents=True, exist_ok=True)
    if hosts_conf is not None or not hosts.exists():
        tmp = hosts.with_suffix(".conf.tmp")
        tmp.write_text(hosts_conf if hosts_conf is not None else HOSTS_CONF_BASIC)
        os.replace(tmp, hosts)

    env = {
        SPFLUO_HOME_VAR: str(root),
        "SCIPION_HOME": str(scipion_home),
        "SCIPION_USER_DATA": str(root),
        "SCIPION_HOSTS": str(hosts),
        "SCIPION_CONFIG": str(config_dir / "scipion.conf"),
        "SCIPION_TESTS_OUTPUT": str(root / "tests-output"),
        "SCIPION_DOMAIN": "spfluo",
        "SCIPION_PYTHON": sys.executable,
        "SCIPION_TEST_NOSYNC": "True",
        "SCIPION_NOTIFY": "False",
        "NO_COLOR": "1",
        "MPLCONFIGDIR": str(root / "matplotlib"),
        "MPLBACKEND": "Agg",
    }
    os.environ.update(env)

    if "pyworkflow" in sys.modules:  # too late for the import-time read: patch Config
        import pyworkflow as pw

        for name in ("SCIPION_HOME", "SCIPION_USER_DATA", "SCIPION_HOSTS", "SCIPION_CONFIG",
                     "SCIPION_TESTS_OUTPUT", "SCIPION_PYTHON"):
            setattr(pw.Config, name, env[name])
        pw.Config.setDomain("spfluo")
    return root
