"""catalog queries: runs by dataset/protocol/parameter/status, file use, best resolution, CSV."""

import csv
import io
import os
import shutil

import pytest

from spfluo.catalog import query as q
from spfluo.catalog.db import CatalogError, open_catalog
from spfluo.catalog.sync import sync

from ._fixtures import RECON_RESOLUTIONS


@pytest.fixture
def synced(root, db_url, template):
    """The 3 copies synced; the projects are then moved away (queries must not need them)."""
    assert sync(root, db_url).ok
    hidden = root + "-moved"
    shutil.move(root, hidden)
    engine = open_catalog(db_url, migrate=False, write=False)
    yield engine, template[1]
    engine.dispose()


def _keys(table, ids):
    names = {v: k for k, v in ids.items()}
    return sorted((row[0], names[row[1]]) for row in table.rows)


def test_runs_filters(synced, catalog_data):
    engine, ids = synced
    everything = q.runs(engine)
    assert len(everything) == 30 and everything.columns[:5] == ("project", "run", "label",
                                                                "protocol", "status")
    assert _keys(q.runs(engine, status="failed"), ids) == sorted(
        (p, k) for p in ("alpha", "beta", "gamma") for k in ("typo", "no_psf"))
    psf = q.runs(engine, protocol="importpsf", project="alpha")
    assert _keys(psf, ids) == [("alpha", "no_psf"), ("alpha", "psf")]
    assert _keys(q.runs(engine, protocol="ProtImportPSF", status="finished", project="gam*"),
                 ids) == [("gamma", "psf")]
    # parameters: numbers compare numerically, text exactly or with patterns
    assert _keys(q.runs(engine, params=["voxelSizeZ=0.25"], project="beta"), ids) == [
        ("beta", "cells")]
    assert _keys(q.runs(engine, params=["voxelSizeZ<0.2", "voxelSizeSource=1"]), ids) == []
    assert _keys(q.runs(engine, params=["boxSize<=0.6", "boxSize>0.59"], project="alpha"), ids) == [
        ("alpha", "picks")]
    assert _keys(q.runs(engine, params=["copyFiles=true"], project="alpha"), ids) == [
        ("alpha", "particles")]
    assert _keys(q.runs(engine, params=["copyFiles=yes"], project="alpha"), ids) == [
        ("alpha", "particles")]
    assert _keys(q.runs(engine, params=[f"filesPattern={catalog_data['fov']}"], project="alpha"),
                 ids) == [("alpha", "fields")]
    assert _keys(q.runs(engine, params=["filesPattern~*/fov2/*"], project="alpha"), ids) == [
        ("alpha", "cells")]
    assert _keys(q.runs(engine, params=["voxelSizeSource=given below"], project="alpha"),
                 ids) == [("alpha", "cells")]
    assert len(q.runs(engine, params=["filesPattern!=nothing"], project="alpha")) == 10
    # by dataset: the fields' runs and everything downstream of them
    assert _keys(q.runs(engine, dataset="fov_*.tif", project="alpha"), ids) == [
        ("alpha", "fields"), ("alpha", "picks"), ("alpha", "recon2")]
    assert _keys(q.runs(engine, dataset="particles", project="beta"), ids) == [
        ("beta", "compare"), ("beta", "particles"), ("beta", "recon")]
    assert len(q.runs(engine, dataset="no such dataset")) == 0


def test_uses_psf_file(synced, catalog_data):
    engine, ids = synced
    recon = q.uses(engine, catalog_data["psf"])
    assert _keys(recon, ids) == sorted((p, k) for p in ("alpha", "beta", "gamma")
                                       for k in ("recon", "recon2"))
    by_run = {(r[0], r[1]): r for r in recon.rows}
    row = by_run[("alpha", ids["recon"])]
    assert row[recon.columns.index("resolution_um")] == pytest.approx(RECON_RESOLUTIONS[0])
    assert row[recon.columns.index("via_run")] == ids["psf"]
    assert row[recon.columns.index("steps")] == 1
    everything = q.uses(engine, catalog_data["psf"], all_runs=True)
    assert {k for _, k in _keys(everything, ids)} == {"psf", "recon", "recon2", "compare"}
    # a copy of the PSF elsewhere is the same file (checksum)
    copy = os.path.join(os.path.dirname(catalog_data["psf"]), "..", "psf-copy.tif")
    shutil.copyfile(catalog_data["psf"], copy)
    assert _keys(q.uses(engine, copy), ids) == _keys(recon, ids)
    # a file nobody used
    assert len(q.uses(engine, catalog_data["poses"] + ".nope")) == 0
    with pytest.raises(ValueError, match="give the file"):
        q.uses(engine, "")


def test_best_resolution_per_dataset(synced, catalog_data):
    engine, ids = synced
    best = q.best_resolution(engine)
    rows = {r[1]: r for r in best.rows}
    # two datasets have a reconstruction: particles (0.12) and fields (0.2); cells has none
    assert set(rows) == {catalog_data["fov"], catalog_data["particles"]}
    particles = rows[catalog_data["particles"]]
    assert particles[best.columns.index("resolution")] == pytest.approx(RECON_RESOLUTIONS[0])
    assert particles[best.columns.index("unit")] == "µm"
    assert particles[best.columns.index("run")] == ids["recon"]
    assert particles[best.columns.index("output")] == "outputVolume"
    assert particles[best.columns.index("runs_measured")] == 3  # one per project
    assert rows[catalog_data["fov"]][best.columns.index("resolution")] == pytest.approx(
        RECON_RESOLUTIONS[1])
    assert len(q.best_resolution(engine, dataset="cell_")) == 0
    only = q.best_resolution(engine, dataset="particles", project="gamma")
    assert len(only) == 1 and only.rows[0][only.columns.index("project")] == "gamma"


def test_best_resolution_picks_the_minimum_over_projects(root, sqlite_url, template):
    """Lower one project's resolution: it becomes the best of its dataset."""
    import pyworkflow as pw
    from pyworkflow.project import Project as PwProject

    cwd = os.getcwd()
    proj = PwProject(pw.Config.getDomain(), os.path.join(root, "beta"))
    proj.load()
    try:
        prot = proj.getProtocol(template[1]["recon"])
        prot.outputVolume.setResolution(0.05)
        proj.mapper.store(prot.outputVolume)
        proj.mapper.commit()
        proj.closeMapper()
    finally:
        os.chdir(cwd)
    sync(root, sqlite_url)
    engine = open_catalog(sqlite_url)
    try:
        best = q.best_resolution(engine, dataset="particles")
        assert len(best) == 1
        row = best.dicts()[0]
        assert row["project"] == "beta" and row["resolution"] == pytest.approx(0.05)
        values = sorted(r["value"] for r in q.metrics(engine, kind="resolution",
                                                       dataset="particles").dicts())
        assert values == pytest.approx([0.05, 0.12, 0.12])
    finally:
        engine.dispose()


def test_metrics_datasets_projects(synced, catalog_data):
    engine, ids = synced
    m = q.metrics(engine, project="alpha")
    assert sorted((r["metric"], r["kind"], r["value"]) for r in m.dicts()) == sorted([
        ("resolution", "resolution", RECON_RESOLUTIONS[0]),
        ("resolution", "resolution", RECON_RESOLUTIONS[1]),
        ("ssim", "ssim", 0.83), ("psnr_db", "psnr", 21.5)])
    assert [r["value"] for r in q.metrics(engine, kind="ssim").dicts()] == [0.83] * 3
    with pytest.raises(ValueError, match="--kind 'sharpness'"):
        q.metrics(engine, kind="sharpness")
    d = {r["name"]: r for r in q.datasets(engine).dicts()}
    assert set(d) == {catalog_data["fov"], catalog_data["fov2"], catalog_data["particles"]}
    assert d[catalog_data["fov"]]["projects"] == 3 and d[catalog_data["fov"]]["runs"] == 9
    assert d[catalog_data["fov"]]["files"] == 2
    p = q.projects(engine)
    assert [r["project"] for r in p.dicts()] == ["alpha", "beta", "gamma"]
    assert all(r["runs"] == 10 and r["read_error"] is None for r in p.dicts())


def test_formats(synced):
    engine, ids = synced
    table = q.runs(engine, status="failed", project="alpha")
    text = q.format_table(table, "table")
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["project", "run", "label", "protocol", "status"]
    assert set(lines[1].replace(" ", "")) == {"-"} and len(lines) == 4
    assert "No file matches" in text
    rows = list(csv.reader(io.StringIO(q.format_table(table, "csv"))))
    assert rows[0] == list(table.columns) and len(rows) == 3
    parsed = {int(r[1]): r for r in rows[1:]}
    assert set(parsed) == {ids["typo"], ids["no_psf"]}
    assert parsed[ids["typo"]][table.columns.index("error")].startswith("Protocol has validation")
    assert "(no match)" in q.format_table(q.runs(engine, status="nothing"), "table")
    with pytest.raises(ValueError, match="--format 'json'"):
        q.format_table(table, "json")


def test_bad_filters_and_catalogs(synced, tmp_path):
    engine, _ = synced
    for bad, match in (("voxelSizeZ", "write NAME=VALUE"), ("=3", "write NAME=VALUE"),
                       ("boxSize<big", "compares numbers")):
        with pytest.raises(ValueError, match=match):
            q.runs(engine, params=[bad])
    with pytest.raises(CatalogError, match="is empty"):
        open_catalog(f"sqlite:///{tmp_path / 'empty.sqlite'}", migrate=False, write=False)
    with pytest.raises(CatalogError, match="supports SQLite and PostgreSQL"):
        open_catalog("mysql://u@h/db")
    with pytest.raises(CatalogError, match="in-memory"):
        open_catalog("sqlite://")


def test_a_run_without_input_is_no_reconstruction(root, sqlite_url, catalog_data):
    """Like a simulation: it reads the PSF file and outputs a (ground truth) Volume."""
    from ._fixtures import volume_output
    from .test_sync import _add_run

    sim = _add_run(root, "alpha", "ProtImportPSF", label="simulate",
                   params={"psfFile": catalog_data["psf"]},
                   outputs={"outputVolume": volume_output("truth", 0.01)})
    sync(root, sqlite_url)
    engine = open_catalog(sqlite_url)
    try:
        recon = q.uses(engine, catalog_data["psf"])
        everything = q.uses(engine, catalog_data["psf"], all_runs=True)
    finally:
        engine.dispose()
    assert ("alpha", sim.getObjId()) not in {(r[0], r[1]) for r in recon.rows}
    assert ("alpha", sim.getObjId()) in {(r[0], r[1]) for r in everything.rows}
    assert len(recon) == 6
