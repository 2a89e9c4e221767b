"""Catalog schema: Alembic migrations equal the ORM models, migrate up and down; metric rules."""

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from spfluo.catalog.db import (
    alembic_config,
    current_revision,
    head_revision,
    normalize_url,
    open_catalog,
)
from spfluo.catalog.rules import metric_kind, metric_unit
from spfluo.catalog.schema import SCHEMA_REVISION, Base


def test_migrations_match_the_models(db_url):
    engine = open_catalog(db_url)
    try:
        assert current_revision(engine) == head_revision() == SCHEMA_REVISION
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                    Base.metadata)
        assert diff == []
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        with engine.connect() as conn:
            assert inspect(conn).get_table_names() == ["alembic_version"]
        assert current_revision(engine) is None
        open_catalog(db_url).dispose()  # upgrades again
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) == set(Base.metadata.tables) | {
                "alembic_version"}
    finally:
        engine.dispose()


def test_urls():
    assert normalize_url("postgresql://u:p@h/db").drivername == "postgresql+psycopg"
    url = normalize_url("relative/cat.sqlite")
    assert url.drivername == "sqlite" and url.database.endswith("/relative/cat.sqlite")
    assert url.database.startswith("/")


@pytest.mark.parametrize("name,kind,unit", [
    ("_resolution", "resolution", "µm"), ("fscResolution", "resolution", "µm"),
    ("fsc_resolution_0143_um", "resolution", "µm"),
    ("fsc_resolution_0143_per_voxel", "resolution_frequency", "1/voxel"),
    ("conical_resolution_worst_per_voxel", "resolution_frequency", "1/voxel"),
    ("registration_angle_deg", None, None), ("n_matched_particles", None, None),
    ("ssim", "ssim", None), ("_ssimMean", "ssim", None), ("psnr_db", "psnr", "dB"),
    ("fsc_at_half", "fsc", None), ("pose_error_median_deg", "pose_error", "deg"),
    ("f1", "f1", None), ("voxelSize", None, None), ("_size", None, None),
])
def test_metric_rules(name, kind, unit):
    mk = metric_kind(name)
    assert (mk.kind if mk else None) == kind
    if mk:
        assert metric_unit(name, mk) == unit
