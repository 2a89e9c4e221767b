"""Fixtures of the catalog tests: the template project (built once), copies, catalog URLs.

``db_url`` runs a test on SQLite, and on PostgreSQL when
``$SPFLUO_TEST_POSTGRES_URL`` names a server (``.ci/run`` starts one with
``spfluo/tests/catalog/postgres.sh``); otherwise the PostgreSQL case is
skipped with the reason.
"""

import os

import pytest

from ._fixtures import build_template, copy_project, make_data

PG_VAR = "SPFLUO_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def catalog_data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("catalog-data"))


@pytest.fixture(scope="session")
def template(tmp_path_factory, catalog_data):
    """(path, {key: run id}) of the 10-run template project (never modified by the tests)."""
    path = tmp_path_factory.mktemp("catalog-template") / "template"
    ids = build_template(path, catalog_data)
    return str(path), ids


@pytest.fixture
def root(tmp_path, template):
    """A folder with 3 copies of the template: alpha, beta and group/gamma."""
    base = tmp_path / "projects"
    (base / "group").mkdir(parents=True)
    for name in ("alpha", "beta", "group/gamma"):
        copy_project(template[0], base / name)
    return str(base)


def postgres_url() -> str:
    """The test server's URL, its catalog tables dropped; skips when there is no server."""
    url = os.environ.get(PG_VAR)
    if not url:
        pytest.skip(f"PostgreSQL catalog tests skipped: ${PG_VAR} is not set (`. "
                    "spfluo/tests/catalog/postgres.sh` starts a throw-away server, as .ci/run "
                    "does)")
    from sqlalchemy import text

    from spfluo.catalog.db import make_engine
    from spfluo.catalog.schema import Base

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:  # test processes in parallel: one database each (the user may create them)
        try:
            url = _worker_database(url, worker)
        except Exception as exc:
            pytest.skip(f"PostgreSQL catalog tests skipped: cannot create a database for the "
                        f"test process {worker} on {url} ({exc}); run with -n 0")
    try:
        engine = make_engine(url)
        with engine.begin() as conn:
            Base.metadata.drop_all(conn)
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    except Exception as exc:  # the server is down or refuses us
        pytest.skip(f"PostgreSQL catalog tests skipped: cannot use {url}: {exc}")
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    return postgres_url()


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'catalog.sqlite'}"


def _worker_database(url: str, worker: str) -> str:
    """``url`` with the database ``<its database>_<worker>``, created when missing."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from spfluo.catalog.db import make_engine

    base = make_url(url)
    name = f"{base.database}_{worker}"
    engine = make_engine(url)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                            {"n": name}).first() is None:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return base.set(database=name).render_as_string(hide_password=False)
