"""The catalog's tables (SQLAlchemy 2 ORM).

One row per project, run, parameter, output object, file, metric and
provenance edge, for every project of a facility.  The schema is created and
upgraded by the Alembic migrations in ``spfluo/catalog/migrations`` (never by
``create_all``), so a facility database can be migrated in place; a test
checks that the migrations and these models agree.

Identity (unique keys, what makes ``sync`` idempotent):

- a project is its resolved folder path;
- a run is (project, the protocol's object id in the project: ``prot_id``);
- an output object is (project, its object id in the project: ``obj_id``);
- a parameter is (run, name); a file is (run, role, ref, path); a metric is
  (object, name); an edge is (parent, child);
- a dataset is the SHA-256 of its data files' checksums (the same data
  imported in two projects is one dataset);
- a file checksum is cached by resolved path, size and modification time.

Times are naive datetimes in the local time of the machine that ran the
protocol (as pyworkflow stores them); durations are in seconds; sizes in bytes.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "Base",
    "Project",
    "Run",
    "Parameter",
    "RunInput",
    "DataObject",
    "File",
    "Metric",
    "RunEdge",
    "ObjectEdge",
    "RunLineage",
    "Dataset",
    "RunDataset",
    "FileHash",
    "SyncRun",
    "PATH_LEN",
    "SCHEMA_REVISION",
]

#: The Alembic revision these models describe (the head of ``migrations/versions``; tested).
#: Checked without importing Alembic when the catalog is already there (a fast no-change sync).
SCHEMA_REVISION = "0001"

#: Longest path stored, in characters (indexed: PostgreSQL's btree takes keys up to about 2.7 kB).
PATH_LEN = 2048

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _fk(target: str, *, nullable: bool = False, ondelete: str = "CASCADE", index: bool = True):
    return mapped_column(ForeignKey(target, ondelete=ondelete), nullable=nullable, index=index)


class Project(Base):
    """A pyworkflow project folder and the fingerprint of its database at the last read."""

    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(PATH_LEN), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    owner: Mapped[str | None] = mapped_column(String(255))
    created: Mapped[dt.datetime | None] = mapped_column(DateTime)
    n_runs: Mapped[int] = mapped_column(Integer, default=0)
    # fingerprint of project.sqlite when it was read (None: never read successfully)
    db_mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    db_size: Mapped[int | None] = mapped_column(BigInteger)
    db_sha256: Mapped[str | None] = mapped_column(String(64))
    # JSON {relative path: [mtime_ns, size]} of the run.db files of runs active at that read
    watch: Mapped[str | None] = mapped_column(Text)
    synced_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    synced_by: Mapped[str | None] = mapped_column(String(255))
    # why the last attempt to read it failed (None when it succeeded)
    read_error: Mapped[str | None] = mapped_column(Text)
    error_at: Mapped[dt.datetime | None] = mapped_column(DateTime)

    runs: Mapped[list[Run]] = relationship(back_populates="project", passive_deletes=True)


class Run(Base):
    """One protocol run of a project."""

    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("project_id", "prot_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = _fk("projects.id")
    prot_id: Mapped[int] = mapped_column(Integer)  # the run's id in its project ("run #")
    protocol_class: Mapped[str] = mapped_column(String(255), index=True)
    label: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32), index=True)
    started: Mapped[dt.datetime | None] = mapped_column(DateTime)
    ended: Mapped[dt.datetime | None] = mapped_column(DateTime)
    duration_s: Mapped[float | None] = mapped_column(Float)
    error_message: Mapped[str | None] = mapped_column(Text)
    host: Mapped[str | None] = mapped_column(String(255))
    uses_gpu: Mapped[bool] = mapped_column(Boolean, default=False)
    gpu: Mapped[str | None] = mapped_column(String(255))  # GPU ids, e.g. "0 1"
    working_dir: Mapped[str | None] = mapped_column(String(PATH_LEN))

    project: Mapped[Project] = relationship(back_populates="runs")


class Parameter(Base):
    """A form value of a run; pointers are written ``RUNID.outputName``."""

    __tablename__ = "parameters"
    __table_args__ = (UniqueConstraint("run_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = _fk("runs.id")
    name: Mapped[str] = mapped_column(String(255), index=True)
    value: Mapped[str | None] = mapped_column(Text)
    value_num: Mapped[float | None] = mapped_column(Float)  # numbers and booleans, for comparisons
    type: Mapped[str] = mapped_column(String(64))  # the form's param class, e.g. FloatParam


class DataObject(Base):
    """An output object of a run (a set, a volume, a PSF, a scalar...)."""

    __tablename__ = "objects"
    __table_args__ = (UniqueConstraint("project_id", "obj_id"), UniqueConstraint("run_id", "name"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = _fk("projects.id")
    run_id: Mapped[int] = _fk("runs.id")
    obj_id: Mapped[int] = mapped_column(Integer)  # its id in the project
    name: Mapped[str] = mapped_column(String(255))  # the output name, e.g. outputVolume
    object_class: Mapped[str] = mapped_column(String(255), index=True)
    summary: Mapped[str | None] = mapped_column(Text)
    n_items: Mapped[int | None] = mapped_column(Integer)  # sets only
    n_files: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class RunInput(Base):
    """An input pointer of a run (``position`` orders the items of a multi-pointer)."""

    __tablename__ = "run_inputs"
    __table_args__ = (UniqueConstraint("run_id", "param", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = _fk("runs.id")
    param: Mapped[str] = mapped_column(String(255))
    position: Mapped[int] = mapped_column(Integer, default=0)
    source_prot_id: Mapped[int | None] = mapped_column(Integer)
    extended: Mapped[str | None] = mapped_column(String(255))
    object_class: Mapped[str | None] = mapped_column(String(255))
    object_id: Mapped[int | None] = _fk("objects.id", nullable=True, ondelete="SET NULL")


class File(Base):
    """A file of an output object (role ``output``) or named by a parameter (role ``param``).

    ``ref`` is the output name or the parameter name; ``path`` is absolute as
    the project names it, ``real_path`` with symbolic links resolved.
    """

    __tablename__ = "files"
    __table_args__ = (UniqueConstraint("run_id", "role", "ref", "path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = _fk("runs.id")
    object_id: Mapped[int | None] = _fk("objects.id", nullable=True)
    role: Mapped[str] = mapped_column(String(16))
    ref: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(String(PATH_LEN))
    real_path: Mapped[str] = mapped_column(String(PATH_LEN), index=True)
    present: Mapped[bool] = mapped_column(Boolean)  # the file existed when read
    size: Mapped[int | None] = mapped_column(BigInteger)
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)


class Metric(Base):
    """A number measured on an output object (see :mod:`spfluo.catalog.rules`)."""

    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("object_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = _fk("runs.id")
    object_id: Mapped[int] = _fk("objects.id")
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32), index=True)
    value: Mapped[float] = mapped_column(Float)
    unit: Mapped[str | None] = mapped_column(String(16))


class RunEdge(Base):
    """Run ``child_id`` takes an output of run ``parent_id`` as input."""

    __tablename__ = "run_edges"
    __table_args__ = (UniqueConstraint("parent_id", "child_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = _fk("projects.id")
    parent_id: Mapped[int] = _fk("runs.id")
    child_id: Mapped[int] = _fk("runs.id")


class ObjectEdge(Base):
    """Object ``child_id`` derives from object ``parent_id`` (pyworkflow relation, e.g. source)."""

    __tablename__ = "object_edges"
    __table_args__ = (UniqueConstraint("parent_id", "child_id", "relation"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = _fk("projects.id")
    parent_id: Mapped[int] = _fk("objects.id")
    child_id: Mapped[int] = _fk("objects.id")
    relation: Mapped[str] = mapped_column(String(64))


class RunLineage(Base):
    """Transitive closure of the run edges (each run is its own ancestor at distance 0)."""

    __tablename__ = "run_lineage"

    ancestor_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"),
                                             primary_key=True)
    descendant_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"),
                                               primary_key=True, index=True)
    distance: Mapped[int] = mapped_column(Integer)


class Dataset(Base):
    """Data that entered a project through a run without inputs (an import, a simulation)."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(PATH_LEN))
    n_files: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)


class RunDataset(Base):
    """Run ``run_id`` descends from dataset ``dataset_id`` (``is_source``: it brought it in)."""

    __tablename__ = "run_datasets"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"),
                                        primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"),
                                            primary_key=True, index=True)
    is_source: Mapped[bool] = mapped_column(Boolean, default=False)


class FileHash(Base):
    """Checksum cache: a file is hashed again only when its size or modification time change."""

    __tablename__ = "file_hashes"

    real_path: Mapped[str] = mapped_column(String(PATH_LEN), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))


class SyncRun(Base):
    """One ``spfluo catalog sync``: what it scanned, read, skipped and could not read.

    A sync that was interrupted keeps ``finished`` empty and ``status`` running.
    """

    __tablename__ = "sync_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    root: Mapped[str] = mapped_column(String(PATH_LEN))
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    started: Mapped[dt.datetime] = mapped_column(DateTime)
    finished: Mapped[dt.datetime | None] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(16))
    n_found: Mapped[int] = mapped_column(Integer, default=0)
    n_read: Mapped[int] = mapped_column(Integer, default=0)
    n_unchanged: Mapped[int] = mapped_column(Integer, default=0)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    n_removed: Mapped[int] = mapped_column(Integer, default=0)
