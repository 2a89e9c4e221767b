"""Connect to a catalog database (SQLite file or PostgreSQL); bring its schema to the head revision.

URLs: ``sqlite:///path/catalog.sqlite`` (or a plain file path),
``postgresql://user:password@host/dbname`` (driven by psycopg 3).  The
default is ``$SPFLUO_CATALOG_URL``, else ``<spfluo home>/catalog.sqlite``.

SQLite is set up for several writers: WAL journal (readers never block),
foreign keys on (cascading deletes), a busy timeout, and write transactions
that start with ``BEGIN IMMEDIATE`` so that two ``sync`` processes queue for
the write lock instead of failing on a stale snapshot.  PostgreSQL relies on
row locks taken by the upserts and is retried on deadlock or serialization
failure (:func:`retry_transient`).

The schema belongs to Alembic (``spfluo/catalog/migrations``):
:func:`upgrade` runs ``upgrade head`` on one connection under a lock (SQLite
write lock, PostgreSQL advisory lock), so concurrent first syncs migrate once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError

__all__ = [
    "CATALOG_URL_VAR",
    "CatalogError",
    "default_url",
    "normalize_url",
    "make_engine",
    "open_catalog",
    "upgrade",
    "head_revision",
    "current_revision",
    "alembic_config",
    "retry_transient",
]

#: Environment variable holding the default catalog URL.
CATALOG_URL_VAR = "SPFLUO_CATALOG_URL"
_HERE = Path(__file__).resolve().parent
_PG_LOCK_KEY = 0x5F1C_A7A1  # advisory lock taken while migrating


class CatalogError(Exception):
    """A catalog request that cannot be done (the message says why and what to do)."""


def default_url() -> str:
    """``$SPFLUO_CATALOG_URL``, else ``sqlite:///<spfluo home>/catalog.sqlite``."""
    url = os.environ.get(CATALOG_URL_VAR)
    if url:
        return url
    from ..environment import spfluo_home

    return f"sqlite:///{spfluo_home() / 'catalog.sqlite'}"


def normalize_url(url: str | URL | None) -> URL:
    """A SQLAlchemy URL from a URL, a file path or None (the default).

    ``postgresql://`` is driven by psycopg 3 (``postgresql+psycopg``); a path
    without ``://`` is an SQLite file.
    """
    if url is None:
        url = default_url()
    if isinstance(url, str) and "://" not in url:
        url = f"sqlite:///{os.path.abspath(os.path.expanduser(url))}"
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise CatalogError(f"--db {url!r} is no database URL: write sqlite:///path/catalog.sqlite "
                           f"or postgresql://user:password@host/dbname ({exc})") from exc
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend not in ("sqlite", "postgresql"):
        raise CatalogError(f"--db {parsed.render_as_string(hide_password=True)}: the catalog "
                           f"supports SQLite and PostgreSQL, not {backend}")
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise CatalogError("--db: an in-memory SQLite catalog would vanish at exit; "
                               "give a file, e.g. sqlite:///catalog.sqlite")
        parsed = parsed.set(database=os.path.abspath(os.path.expanduser(parsed.database)))
    return parsed


def make_engine(url: str | URL | None = None, *, write: bool = True,
                busy_timeout_s: float = 120.0) -> Engine:
    """An engine for the catalog at ``url`` (no migration; see :func:`open_catalog`).

    ``write=True`` (SQLite): every transaction starts with ``BEGIN IMMEDIATE``
    (it waits for, then holds, the write lock); ``write=False``: plain
    deferred transactions for readers, which WAL never blocks.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        folder = os.path.dirname(parsed.database)
        if folder:
            os.makedirs(folder, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": busy_timeout_s})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" event emits BEGIN
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            # writers take the write lock at once: a deferred transaction that reads first
            # and writes later fails with SQLITE_BUSY when another writer committed meanwhile
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise CatalogError("a PostgreSQL catalog needs the psycopg driver: "
                           "pip install 'psycopg[binary]'") from exc
    return create_engine(parsed, pool_pre_ping=True)


def alembic_config(connection=None):
    """Alembic configuration of the catalog (``alembic.ini`` and ``migrations/`` beside this)."""
    from alembic.config import Config

    cfg = Config(str(_HERE / "alembic.ini"))
    cfg.set_main_option("script_location", str(_HERE / "migrations"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The revision this spfluo's schema is at."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _stored_revision(engine: Engine) -> str | None:
    """The revision in the ``alembic_version`` table (None when there is none)."""
    from sqlalchemy import inspect

    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return rows[0] if len(rows) == 1 else None


def upgrade(engine: Engine) -> str:
    """Bring the catalog to the head revision (a no-op when it is there); returns the revision.

    Runs in one transaction under a lock, so several processes may call it at once.
    """
    from .schema import SCHEMA_REVISION

    if _stored_revision(engine) == SCHEMA_REVISION:  # up to date: Alembic is not even imported
        return SCHEMA_REVISION
    from alembic import command

    head = head_revision()
    with engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE holds the write lock
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        from alembic.runtime.migration import MigrationContext

        if MigrationContext.configure(conn).get_current_revision() != head:
            command.upgrade(alembic_config(conn), "head")
    return head


def open_catalog(url: str | URL | None = None, *, migrate: bool = True,
                 write: bool = True) -> Engine:
    """Engine for the catalog at ``url``, its schema at the head revision.

    With ``migrate=False`` (queries), a catalog that is not at the head
    revision raises :class:`CatalogError` instead of being migrated.
    ``write``: see :func:`make_engine`.
    """
    if migrate and not write:
        raise ValueError("open_catalog: migrate=True needs write=True (migrating writes)")
    engine = make_engine(url, write=write)
    where = engine.url.render_as_string(hide_password=True)
    try:
        if migrate:
            upgrade(engine)
        else:
            from .schema import SCHEMA_REVISION

            rev, head = _stored_revision(engine), SCHEMA_REVISION
            if rev is None:
                raise CatalogError(f"the catalog {where} is empty: fill it with "
                                   "`spfluo catalog sync ROOT --db ...`")
            if rev != head:
                raise CatalogError(f"the catalog {where} has schema revision {rev}, this spfluo "
                                   f"needs {head}: run `spfluo catalog migrate --db ...`")
    except OperationalError as exc:
        engine.dispose()
        raise CatalogError(f"cannot open the catalog {where}: {exc.orig}") from exc
    except CatalogError:
        engine.dispose()
        raise
    return engine


def _is_transient(exc: Exception) -> bool:
    orig = getattr(exc, "orig", None)
    state = getattr(orig, "sqlstate", None)
    if state in ("40001", "40P01"):  # serialization failure, deadlock detected
        return True
    message = str(orig or exc).lower()
    return "database is locked" in message or "database is busy" in message


def retry_transient(fn, *, attempts: int = 5, wait_s: float = 0.2):
    """Call ``fn()``; on a deadlock, a serialization failure or a locked SQLite, retry."""
    attempt = 0
    while True:
        try:
            return fn()
        except DBAPIError as exc:
            attempt += 1
            if attempt >= attempts or not _is_transient(exc):
                raise
            time.sleep(wait_s * (2 ** (attempt - 1)))
