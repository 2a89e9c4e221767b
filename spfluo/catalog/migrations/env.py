"""Alembic environment of the spfluo catalog.

Called by :func:`spfluo.catalog.db.upgrade` with an open connection (in
``config.attributes["connection"]``, inside a transaction that holds the
migration lock), or by the ``alembic`` command with ``-x db=URL`` or
``$SPFLUO_CATALOG_URL``.
"""

from alembic import context

from spfluo.catalog.schema import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copy
        compare_type=True,
    )


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    # the alembic command line: a URL from -x db=... or the environment
    if config.config_file_name is not None:
        from logging.config import fileConfig

        fileConfig(config.config_file_name, disable_existing_loggers=False)
    from spfluo.catalog.db import make_engine

    url = context.get_x_argument(as_dictionary=True).get("db")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


def run_offline() -> None:
    from spfluo.catalog.db import normalize_url

    url = context.get_x_argument(as_dictionary=True).get("db")
    context.configure(url=normalize_url(url), target_metadata=target_metadata,
                      literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
