"""Initial catalog schema: projects, runs, parameters, objects, files, metrics, provenance.

Revision ID: 0001
Revises:
Created: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

PATH = sa.String(length=2048)


def _pk(table, *cols):
    return sa.PrimaryKeyConstraint(*(cols or ("id",)), name=op.f(f"pk_{table}"))


def _fk(table, col, target, ondelete="CASCADE"):
    ref = target.split(".")[0]
    return sa.ForeignKeyConstraint([col], [target], name=op.f(f"fk_{table}_{col}_{ref}"),
                                   ondelete=ondelete)


def _uq(table, *cols):
    return sa.UniqueConstraint(*cols, name=op.f(f"uq_{table}_{'_'.join(cols)}"))


def _indexes(table, *cols):
    for col in cols:
        op.create_index(op.f(f"ix_{table}_{col}"), table, [col], unique=False)


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("path", PATH, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=True),
        sa.Column("created", sa.DateTime(), nullable=True),
        sa.Column("n_runs", sa.Integer(), nullable=False),
        sa.Column("db_mtime_ns", sa.BigInteger(), nullable=True),
        sa.Column("db_size", sa.BigInteger(), nullable=True),
        sa.Column("db_sha256", sa.String(length=64), nullable=True),
        sa.Column("watch", sa.Text(), nullable=True),
        sa.Column("synced_at", sa.DateTime(), nullable=True),
        sa.Column("synced_by", sa.String(length=255), nullable=True),
        sa.Column("read_error", sa.Text(), nullable=True),
        sa.Column("error_at", sa.DateTime(), nullable=True),
        _pk("projects"),
        _uq("projects", "path"),
    )
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("name", PATH, nullable=False),
        sa.Column("n_files", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        _pk("datasets"),
        _uq("datasets", "key"),
    )
    op.create_table(
        "file_hashes",
        sa.Column("real_path", PATH, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        _pk("file_hashes", "real_path"),
    )
    op.create_table(
        "sync_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("root", PATH, nullable=False),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("started", sa.DateTime(), nullable=False),
        sa.Column("finished", sa.DateTime(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("n_found", sa.Integer(), nullable=False),
        sa.Column("n_read", sa.Integer(), nullable=False),
        sa.Column("n_unchanged", sa.Integer(), nullable=False),
        sa.Column("n_failed", sa.Integer(), nullable=False),
        sa.Column("n_removed", sa.Integer(), nullable=False),
        _pk("sync_runs"),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("prot_id", sa.Integer(), nullable=False),
        sa.Column("protocol_class", sa.String(length=255), nullable=False),
        sa.Column("label", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("started", sa.DateTime(), nullable=True),
        sa.Column("ended", sa.DateTime(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("uses_gpu", sa.Boolean(), nullable=False),
        sa.Column("gpu", sa.String(length=255), nullable=True),
        sa.Column("working_dir", PATH, nullable=True),
        _fk("runs", "project_id", "projects.id"),
        _pk("runs"),
        _uq("runs", "project_id", "prot_id"),
    )
    _indexes("runs", "project_id", "protocol_class", "status")
    op.create_table(
        "objects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("obj_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("object_class", sa.String(length=255), nullable=False),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("n_items", sa.Integer(), nullable=True),
        sa.Column("n_files", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        _fk("objects", "project_id", "projects.id"),
        _fk("objects", "run_id", "runs.id"),
        _pk("objects"),
        _uq("objects", "project_id", "obj_id"),
        _uq("objects", "run_id", "name"),
    )
    _indexes("objects", "object_class", "project_id", "run_id")
    op.create_table(
        "parameters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("value_num", sa.Float(), nullable=True),
        sa.Column("type", sa.String(length=64), nullable=False),
        _fk("parameters", "run_id", "runs.id"),
        _pk("parameters"),
        _uq("parameters", "run_id", "name"),
    )
    _indexes("parameters", "name", "run_id")
    op.create_table(
        "run_inputs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("param", sa.String(length=255), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("source_prot_id", sa.Integer(), nullable=True),
        sa.Column("extended", sa.String(length=255), nullable=True),
        sa.Column("object_class", sa.String(length=255), nullable=True),
        sa.Column("object_id", sa.Integer(), nullable=True),
        _fk("run_inputs", "object_id", "objects.id", ondelete="SET NULL"),
        _fk("run_inputs", "run_id", "runs.id"),
        _pk("run_inputs"),
        _uq("run_inputs", "run_id", "param", "position"),
    )
    _indexes("run_inputs", "object_id", "run_id")
    op.create_table(
        "files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("object_id", sa.Integer(), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("ref", sa.String(length=255), nullable=False),
        sa.Column("path", PATH, nullable=False),
        sa.Column("real_path", PATH, nullable=False),
        sa.Column("present", sa.Boolean(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        _fk("files", "object_id", "objects.id"),
        _fk("files", "run_id", "runs.id"),
        _pk("files"),
        _uq("files", "run_id", "role", "ref", "path"),
    )
    _indexes("files", "object_id", "real_path", "run_id", "sha256")
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("object_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("unit", sa.String(length=16), nullable=True),
        _fk("metrics", "object_id", "objects.id"),
        _fk("metrics", "run_id", "runs.id"),
        _pk("metrics"),
        _uq("metrics", "object_id", "name"),
    )
    _indexes("metrics", "kind", "object_id", "run_id")
    op.create_table(
        "run_edges",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=False),
        sa.Column("child_id", sa.Integer(), nullable=False),
        _fk("run_edges", "child_id", "runs.id"),
        _fk("run_edges", "parent_id", "runs.id"),
        _fk("run_edges", "project_id", "projects.id"),
        _pk("run_edges"),
        _uq("run_edges", "parent_id", "child_id"),
    )
    _indexes("run_edges", "child_id", "parent_id", "project_id")
    op.create_table(
        "object_edges",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=False),
        sa.Column("child_id", sa.Integer(), nullable=False),
        sa.Column("relation", sa.String(length=64), nullable=False),
        _fk("object_edges", "child_id", "objects.id"),
        _fk("object_edges", "parent_id", "objects.id"),
        _fk("object_edges", "project_id", "projects.id"),
        _pk("object_edges"),
        _uq("object_edges", "parent_id", "child_id", "relation"),
    )
    _indexes("object_edges", "child_id", "parent_id", "project_id")
    op.create_table(
        "run_lineage",
        sa.Column("ancestor_id", sa.Integer(), nullable=False),
        sa.Column("descendant_id", sa.Integer(), nullable=False),
        sa.Column("distance", sa.Integer(), nullable=False),
        _fk("run_lineage", "ancestor_id", "runs.id"),
        _fk("run_lineage", "descendant_id", "runs.id"),
        _pk("run_lineage", "ancestor_id", "descendant_id"),
    )
    _indexes("run_lineage", "descendant_id")
    op.create_table(
        "run_datasets",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("is_source", sa.Boolean(), nullable=False),
        _fk("run_datasets", "dataset_id", "datasets.id"),
        _fk("run_datasets", "run_id", "runs.id"),
        _pk("run_datasets", "run_id", "dataset_id"),
    )
    _indexes("run_datasets", "dataset_id")


def downgrade() -> None:
    for table in ("run_datasets", "run_lineage", "object_edges", "run_edges", "metrics", "files",
                  "run_inputs", "parameters", "objects", "runs", "sync_runs", "file_hashes",
                  "datasets", "projects"):
        op.drop_table(table)
