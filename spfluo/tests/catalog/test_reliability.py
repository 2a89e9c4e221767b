"""Two syncs at once, and a sync killed half-way then run again: the catalog stays consistent."""

import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select

from spfluo.catalog.db import CatalogError, open_catalog
from spfluo.catalog.schema import Project, SyncRun
from spfluo.catalog.sync import sync, verify

from ._fixtures import N_RUNS, copy_project
from .test_sync import _dump

N_PROJECTS = 5


@pytest.fixture
def root5(tmp_path, template):
    base = tmp_path / "five"
    base.mkdir()
    for k in range(N_PROJECTS):
        copy_project(template[0], base / f"p{k}")
    return str(base)


@pytest.fixture
def reference(root5, tmp_path):
    """Dump of a catalog filled by one uninterrupted sync (the expected content)."""
    url = f"sqlite:///{tmp_path / 'reference.sqlite'}"
    assert sync(root5, url).ok
    engine = open_catalog(url)
    try:
        return _dump(engine)
    finally:
        engine.dispose()


def _spfluo_sync(root, url, *extra):
    return subprocess.Popen([sys.executable, "-m", "spfluo.cli", "catalog", "sync", root,
                             "--db", url, "--quiet", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_syncs_at_once(root5, db_url, reference):
    procs = [_spfluo_sync(root5, db_url, "--throttle", "0.4") for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err + out
        assert f"{N_PROJECTS} project(s) found" in out
    engine = open_catalog(db_url)
    try:
        assert verify(engine) == []
        assert _dump(engine) == reference
        with engine.connect() as conn:
            runs = conn.execute(select(SyncRun.status, SyncRun.started, SyncRun.finished)).all()
        assert [r.status for r in runs] == ["done", "done"]
        (_, start1, end1), (_, start2, end2) = sorted(runs, key=lambda r: r.started)
        assert start2 < end1  # they did run at the same time
    finally:
        engine.dispose()


def _n_synced(url) -> int:
    try:
        engine = open_catalog(url, migrate=False, write=False)
    except CatalogError:
        return 0  # not created or not migrated yet
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(Project)
                                .where(Project.synced_at.is_not(None))).scalar_one()
    finally:
        engine.dispose()


def test_killed_sync_leaves_a_consistent_catalog_and_resumes(root5, db_url, reference):
    proc = _spfluo_sync(root5, db_url, "--throttle", "1.0")
    deadline = time.monotonic() + 60
    try:
        while _n_synced(db_url) < 1:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the sync ended or stalled before committing a project: "
                            f"{proc.communicate()}")
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    done = _n_synced(db_url)
    assert 1 <= done < N_PROJECTS
    engine = open_catalog(db_url)
    try:
        assert verify(engine) == []
        with engine.connect() as conn:
            # every catalogued project is complete: all its runs are there
            rows = conn.execute(select(Project.n_runs)).scalars().all()
            assert rows == [N_RUNS] * done
            interrupted = conn.execute(select(SyncRun.status, SyncRun.finished)).all()
        assert interrupted == [("running", None)]
        again = sync(root5, engine)
        assert again.ok and len(again.read) == N_PROJECTS - done and again.unchanged == done
        assert verify(engine) == []
        assert _dump(engine) == reference
    finally:
        engine.dispose()
