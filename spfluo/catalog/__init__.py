"""Facility catalog: every project, run, parameter, output and metric in one database.

``spfluo catalog sync ROOT`` reads the pyworkflow projects under a folder
(through the engine's API, on snapshots: the projects are never modified)
into one SQLAlchemy database, SQLite by default or PostgreSQL for a facility
server; ``spfluo catalog query`` answers from that database alone.

Modules: :mod:`.schema` (ORM tables), :mod:`.db` (engines, Alembic
migrations), :mod:`.reader` (one project -> records), :mod:`.sync`
(incremental, transactional upserts), :mod:`.query` (questions, table/CSV),
:mod:`.rules` (which attributes are metrics, what is a dataset or a
reconstruction), :mod:`.cli` (the commands).

Entry points: ``spfluo.catalog.sync.sync(root, url)``,
``spfluo.catalog.db.open_catalog(url)``, the functions of
``spfluo.catalog.query``.  Importing this package imports neither pyworkflow
nor SQLAlchemy.
"""

__all__ = ["schema", "db", "reader", "sync", "query", "rules", "cli"]
