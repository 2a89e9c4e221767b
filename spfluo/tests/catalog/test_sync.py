"""catalog sync: what it records, idempotence, incrementality, unchanged projects, bad projects."""

import hashlib
import os

import pytest
from sqlalchemy import func, select

from spfluo.catalog import sync as sync_mod
from spfluo.catalog.db import open_catalog
from spfluo.catalog.schema import (
    DataObject,
    Dataset,
    File,
    Metric,
    ObjectEdge,
    Parameter,
    Project,
    Run,
    RunDataset,
    RunEdge,
    RunInput,
    RunLineage,
)
from spfluo.catalog.sync import find_projects, sync, verify

from ._fixtures import N_RUNS, RECON_RESOLUTIONS, store_run


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _tree(folder):
    """Every entry under folder: relative path -> bytes digest (links: their target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, folder)
            if os.path.islink(full):
                out[rel] = "link:" + os.readlink(full)
            elif os.path.isfile(full):
                out[rel] = _sha(full)
            else:
                out[rel] = "dir"
    return out


def _dump(engine):
    """Catalog content without ids and sync times (to compare two catalogs)."""
    with engine.connect() as conn:
        proj = {pid: path for pid, path in conn.execute(select(Project.id, Project.path))}
        runs = {rid: (proj[p], prot) for rid, p, prot in
                conn.execute(select(Run.id, Run.project_id, Run.prot_id))}
        objs = {oid: (proj[p], o) for oid, p, o in
                conn.execute(select(DataObject.id, DataObject.project_id, DataObject.obj_id))}
        return {
            "projects": sorted(conn.execute(select(Project.path, Project.n_runs, Project.db_sha256,
                                                   Project.read_error)).all()),
            "runs": sorted((proj[r.project_id], r.prot_id, r.protocol_class, r.label, r.status,
                            r.duration_s, r.error_message) for r in conn.execute(select(Run))),
            "params": sorted((runs[r], n, v, num, t) for r, n, v, num, t in conn.execute(
                select(Parameter.run_id, Parameter.name, Parameter.value, Parameter.value_num,
                       Parameter.type))),
            "objects": sorted((runs[o.run_id], o.obj_id, o.name, o.object_class, o.n_items,
                               o.n_files, o.size_bytes) for o in conn.execute(select(DataObject))),
            "files": sorted((runs[f.run_id], f.role, f.ref, f.path, f.real_path, f.size, f.sha256)
                            for f in conn.execute(select(File))),
            "metrics": sorted((objs[m.object_id], m.name, m.kind, m.value, m.unit)
                              for m in conn.execute(select(Metric))),
            "inputs": sorted((runs[i.run_id], i.param, i.position, i.source_prot_id, i.extended,
                              i.object_class, objs[i.object_id] if i.object_id else None)
                             for i in conn.execute(select(RunInput))),
            "run_edges": sorted((runs[e.parent_id], runs[e.child_id])
                                for e in conn.execute(select(RunEdge))),
            "object_edges": sorted((objs[e.parent_id], objs[e.child_id], e.relation)
                                   for e in conn.execute(select(ObjectEdge))),
            "lineage": sorted((runs[a], runs[d], dist) for a, d, dist in conn.execute(
                select(RunLineage.ancestor_id, RunLineage.descendant_id, RunLineage.distance))),
            "datasets": sorted(conn.execute(select(Dataset.key, Dataset.name, Dataset.n_files,
                                                   Dataset.size_bytes)).all()),
            "run_datasets": sorted((runs[r], k, s) for r, k, s in conn.execute(
                select(RunDataset.run_id, Dataset.key, RunDataset.is_source)
                .join(Dataset, Dataset.id == RunDataset.dataset_id))),
        }


def test_find_projects_nested_and_linked(root, tmp_path):
    os.symlink(os.path.join(root, "alpha"), tmp_path / "projects" / "alias")  # same project twice
    (tmp_path / "projects" / "empty").mkdir()
    found = find_projects(root)
    assert [os.path.relpath(p, root) for p in found] == ["alpha", "beta", "group/gamma"]
    with pytest.raises(Exception, match="no folder"):
        find_projects(str(tmp_path / "nowhere"))


def test_sync_records_runs_parameters_outputs_metrics_and_provenance(root, template, catalog_data,
                                                                     db_url):
    ids = template[1]
    report = sync(root, db_url)
    assert report.ok and report.found == 3 and len(report.read) == 3 and report.unchanged == 0
    engine = open_catalog(db_url)
    try:
        assert verify(engine) == []
        with engine.connect() as conn:
            alpha = conn.execute(select(Project).where(Project.name == "alpha")).one()
            assert alpha.n_runs == N_RUNS and alpha.read_error is None
            assert alpha.db_sha256 == _sha(os.path.join(root, "alpha", "project.sqlite"))
            runs = {r.prot_id: r for r in conn.execute(
                select(Run).where(Run.project_id == alpha.id))}
            assert set(runs) == set(ids.values())
            assert {k for k, v in ids.items() if runs[v].status == "failed"} == {"typo", "no_psf"}
            assert "No file matches" in runs[ids["typo"]].error_message
            assert runs[ids["fields"]].protocol_class == "ProtImportFluoImages"
            assert runs[ids["fields"]].label == "fields" and runs[ids["fields"]].host == "localhost"
            assert runs[ids["recon"]].duration_s == pytest.approx(330.0)
            assert runs[ids["fields"]].uses_gpu is False and runs[ids["fields"]].gpu is None

            def params(key):
                return {n: (v, num, t) for n, v, num, t in conn.execute(
                    select(Parameter.name, Parameter.value, Parameter.value_num, Parameter.type)
                    .where(Parameter.run_id == runs[ids[key]].id))}

            cells = params("cells")
            assert cells["filesPattern"] == (catalog_data["fov2"], None, "StringParam")
            assert cells["voxelSizeZ"] == ("0.25", 0.25, "FloatParam")
            assert cells["voxelSizeSource"] == ("given below", 1.0, "EnumParam")
            assert params("particles")["copyFiles"] == ("true", 1.0, "BooleanParam")
            assert params("picks")["inputImages"][0] == f"{ids['fields']}.outputImages"

            def files(key, role):
                return {(f.ref, f.real_path): f for f in conn.execute(
                    select(File).where(File.run_id == runs[ids[key]].id, File.role == role))}

            # the fields' set file and its two (linked) data files, with checksums of the data
            out = files("fields", "output")
            data = sorted(os.path.join(os.path.dirname(catalog_data["fov"]), f"fov_{k}.tif")
                          for k in range(2))
            assert sorted(p for _, p in out if p.endswith(".tif")) == data
            for p in data:
                assert out[("outputImages", p)].sha256 == _sha(p)
                assert out[("outputImages", p)].size == os.path.getsize(p)
            assert any(p.endswith("images.sqlite") for _, p in out)
            # the PSF file named by a parameter, and the copied particles (inside the project)
            psf_param = files("psf", "param")
            assert list(psf_param) == [("psfFile", catalog_data["psf"])]
            assert psf_param[("psfFile", catalog_data["psf"])].sha256 == _sha(catalog_data["psf"])
            copied = [p for _, p in files("particles", "output") if p.endswith(".tif")]
            assert len(copied) == 3
            assert all(p.startswith(os.path.join(root, "alpha")) for p in copied)
            recon_files = files("recon", "output")
            assert len(recon_files) == 4  # volume, two half maps, FSC curve

            objects = {(o.run_id, o.name): o for o in conn.execute(
                select(DataObject).where(DataObject.project_id == alpha.id))}
            images = objects[(runs[ids["fields"]].id, "outputImages")]
            assert images.object_class == "SetOfFluoImages" and images.n_items == 2
            assert images.n_files == 3
            own = [r.id for r in runs.values()]
            metric_rows = {(run_id, name): (kind, value, unit) for run_id, name, kind, value, unit
                           in conn.execute(select(Metric.run_id, Metric.name, Metric.kind,
                                                  Metric.value, Metric.unit)
                                           .where(Metric.run_id.in_(own)))}
            assert metric_rows == {
                (runs[ids["recon"]].id, "resolution"): ("resolution", RECON_RESOLUTIONS[0], "µm"),
                (runs[ids["recon2"]].id, "resolution"): ("resolution", RECON_RESOLUTIONS[1], "µm"),
                (runs[ids["compare"]].id, "ssim"): ("ssim", 0.83, None),
                (runs[ids["compare"]].id, "psnr_db"): ("psnr", 21.5, "dB"),
            }

            rid = {r.id: k for k, v in ids.items() for r in [runs[v]]}
            edges = {(rid[p], rid[c]) for p, c in conn.execute(
                select(RunEdge.parent_id, RunEdge.child_id).where(RunEdge.project_id == alpha.id))}
            assert edges == {("fields", "picks"), ("particles", "recon"), ("psf", "recon"),
                             ("fields", "recon2"), ("psf", "recon2"), ("recon", "compare")}
            lineage = {(rid[a], rid[d]): dist for a, d, dist in conn.execute(
                select(RunLineage.ancestor_id, RunLineage.descendant_id, RunLineage.distance)
                .where(RunLineage.ancestor_id.in_(list(rid))))}
            assert lineage[("particles", "compare")] == 2 and lineage[("compare", "compare")] == 0
            assert ("compare", "particles") not in lineage
            oname = {o.id: (rid[o.run_id], o.name) for o in objects.values()}
            oedges = {(oname[p], oname[c]) for p, c in conn.execute(
                select(ObjectEdge.parent_id, ObjectEdge.child_id)
                .where(ObjectEdge.project_id == alpha.id))}
            assert (("particles", "outputParticles"), ("recon", "outputVolume")) in oedges
            assert (("psf", "outputPSF"), ("recon", "outputVolume")) in oedges
            assert (("fields", "outputImages"), ("picks", "outputCoordinates")) in oedges
            inputs = {(rid[i.run_id], i.param): i for i in conn.execute(
                select(RunInput).where(RunInput.run_id.in_(list(rid))))}
            psf_in = inputs[("recon", "inputPSF")]
            assert psf_in.source_prot_id == ids["psf"] and psf_in.object_class == "PSFModel"
            assert oname[psf_in.object_id] == ("psf", "outputPSF")

            # datasets: fields, particles and cells, shared by the 3 copies (same data files)
            assert conn.execute(select(func.count()).select_from(Dataset)).scalar_one() == 3
            joined = "\n".join(sorted(_sha(p) for p in data))
            fields_key = hashlib.sha256(joined.encode()).hexdigest()
            ds = conn.execute(select(Dataset).where(Dataset.key == fields_key)).one()
            assert ds.name == catalog_data["fov"] and ds.n_files == 2
            linked = {rid[r] for (r,) in conn.execute(
                select(RunDataset.run_id).where(RunDataset.dataset_id == ds.id,
                                                RunDataset.run_id.in_(list(rid))))}
            assert linked == {"fields", "picks", "recon2"}
    finally:
        engine.dispose()


def test_project_files_are_byte_identical_after_sync(root, sqlite_url):
    before = {name: _tree(os.path.join(root, name)) for name in ("alpha", "beta")}
    mtimes = os.stat(os.path.join(root, "alpha", "project.sqlite")).st_mtime_ns
    cwd = os.getcwd()
    assert sync(root, sqlite_url, jobs=2).ok
    assert os.getcwd() == cwd
    after = {name: _tree(os.path.join(root, name)) for name in ("alpha", "beta")}
    assert after == before
    assert os.stat(os.path.join(root, "alpha", "project.sqlite")).st_mtime_ns == mtimes


def test_second_sync_opens_nothing_and_is_identical(root, sqlite_url, monkeypatch):
    first = sync(root, sqlite_url)
    engine = open_catalog(sqlite_url)
    try:
        reference = _dump(engine)
        with engine.connect() as conn:
            run_ids = dict(conn.execute(select(Run.prot_id, Run.id).join(Project).where(
                Project.name == "beta")).all())

        def no_read(*args, **kwargs):
            raise AssertionError("a project was opened although nothing changed")

        monkeypatch.setattr(sync_mod, "read_project", no_read)
        second = sync(root, sqlite_url)
        assert second.read == [] and second.unchanged == 3 and second.ok
        # only the modification time moves: the checksum says unchanged, nothing is read
        db = os.path.join(root, "beta", "project.sqlite")
        st = os.stat(db)
        os.utime(db, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        third = sync(root, sqlite_url)
        assert third.read == [] and third.unchanged == 3
        monkeypatch.undo()
        assert _dump(engine) == reference and first.found == 3

        # a changed project is re-read, alone; its unchanged runs keep their catalog ids
        added = _add_run(root, "beta", "ProtImportPSF", label="added later", status="failed",
                         error="Protocol failed: stopped by a test")
        fourth = sync(root, sqlite_url)
        assert [os.path.basename(p) for p in fourth.read] == ["beta"] and fourth.unchanged == 2
        with engine.connect() as conn:
            now = dict(conn.execute(select(Run.prot_id, Run.id).join(Project).where(
                Project.name == "beta")).all())
            n_runs = conn.execute(select(Project.n_runs).where(Project.name == "beta")).scalar_one()
        assert n_runs == N_RUNS + 1 and now.pop(added.getObjId()) is not None
        assert now == run_ids
        assert verify(engine) == []
    finally:
        engine.dispose()


def test_unreadable_project_is_reported_and_skipped(root, sqlite_url, tmp_path):
    broken = tmp_path / "projects" / "broken"
    broken.mkdir()
    (broken / "project.sqlite").write_bytes(b"this is not an SQLite database" * 100)
    events = []
    report = sync(root, sqlite_url, progress=lambda *e: events.append(e))
    assert not report.ok and len(report.read) == 3
    assert [p for p, _ in report.failed] == [str(broken)]
    assert "broken" in report.failed[0][1]
    assert ("failed", str(broken), report.failed[0][1]) in events
    engine = open_catalog(sqlite_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(select(Project).where(Project.path == str(broken))).one()
            assert row.read_error and row.n_runs == 0 and row.db_sha256 is None
        assert verify(engine) == []
        # it is tried again next time (and fails again); the others are not re-read
        again = sync(root, sqlite_url)
        assert again.unchanged == 3 and [p for p, _ in again.failed] == [str(broken)]
    finally:
        engine.dispose()


def _store_in(path, cls, **kwargs):
    """A run stored with ``store_run`` in the project at ``path`` (closed; cwd restored)."""
    import pyworkflow as pw
    from pyworkflow.project import Project as PwProject

    cwd = os.getcwd()
    proj = PwProject(pw.Config.getDomain(), path)
    proj.load()
    try:
        run = store_run(proj, cls, **kwargs)
        proj.closeMapper()
    finally:
        os.chdir(cwd)
    return run


def test_active_run_is_read_from_its_run_db(root, sqlite_url):
    """A run still 'running' in project.sqlite is catalogued as its run.db has it."""
    import shutil

    import pyworkflow as pw
    from pyworkflow.project import Project as PwProject

    from spfluo.protocols import ProtImportPSF

    path = os.path.join(root, "alpha")
    cwd = os.getcwd()
    run = _store_in(path, ProtImportPSF, label="long job", status="running",
                    times=("2026-11-20 10:00:00.000000", ""))
    run_db = os.path.join(path, run.getDbPath())
    os.makedirs(os.path.dirname(run_db), exist_ok=True)
    # the run's own copy, as pyworkflow makes it
    shutil.copyfile(os.path.join(path, "project.sqlite"), run_db)
    try:
        rundb = PwProject(pw.Config.getDomain(), path)
        rundb.load(dbPath=run_db, loadAllConfig=False)
        prot = rundb.getProtocol(run.getObjId())
        prot.setStatus("finished")
        prot.endTime.set("2026-11-20 11:00:00.000000")
        rundb.mapper.store(prot)
        rundb.mapper.commit()
        rundb.closeMapper()
    finally:
        os.chdir(cwd)
    sync(root, sqlite_url)
    engine = open_catalog(sqlite_url)

    def status():
        with engine.connect() as conn:
            return conn.execute(select(Run.status, Run.duration_s).join(Project).where(
                Project.name == "alpha", Run.prot_id == run.getObjId())).one()

    try:
        assert status() == ("finished", pytest.approx(3600.0))
        # a later change of the run.db alone (project.sqlite untouched) is picked up
        rundb = PwProject(pw.Config.getDomain(), path)
        try:
            rundb.load(dbPath=os.path.join(path, run_db), loadAllConfig=False)
            prot = rundb.getProtocol(run.getObjId())
            prot.setStatus("failed")
            rundb.mapper.store(prot)
            rundb.mapper.commit()
            rundb.closeMapper()
        finally:
            os.chdir(cwd)
        st = os.stat(os.path.join(path, run_db))
        os.utime(os.path.join(path, run_db), ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        again = sync(root, sqlite_url)
        assert [os.path.basename(p) for p in again.read] == ["alpha"]
        assert status()[0] == "failed"
    finally:
        engine.dispose()


def test_missing_projects_are_reported_then_pruned(root, sqlite_url):
    import shutil

    sync(root, sqlite_url)
    shutil.rmtree(os.path.join(root, "beta"))
    report = sync(root, sqlite_url)
    assert [os.path.basename(p) for p in report.missing] == ["beta"] and report.removed == []
    pruned = sync(root, sqlite_url, prune=True)
    assert [os.path.basename(p) for p in pruned.removed] == ["beta"]
    engine = open_catalog(sqlite_url)
    try:
        with engine.connect() as conn:
            names = sorted(conn.execute(select(Project.name)).scalars())
            n_runs = conn.execute(select(func.count()).select_from(Run)).scalar_one()
        assert names == ["alpha", "gamma"] and n_runs == 2 * N_RUNS
        assert verify(engine) == []
    finally:
        engine.dispose()


def test_bad_arguments(root, sqlite_url):
    with pytest.raises(ValueError, match="jobs must be >= 1 and <= 256, got 0"):
        sync(root, sqlite_url, jobs=0)
    with pytest.raises(ValueError, match="throttle_s must be >= 0"):
        sync(root, sqlite_url, throttle_s=-1)


def _add_run(root, name, cls_name, *, pointer_ids=(), **kwargs):
    """Store a run in project ``name``; ``pointer_ids``: (attribute, source run id, output)."""
    import pyworkflow as pw
    from pyworkflow.project import Project as PwProject

    import spfluo.protocols as protocols

    cwd = os.getcwd()
    proj = PwProject(pw.Config.getDomain(), os.path.join(root, name))
    proj.load()
    try:
        pointers = [(attr, proj.getProtocol(pid), out) for attr, pid, out in pointer_ids]
        prot = store_run(proj, getattr(protocols, cls_name), pointers=pointers, **kwargs)
        proj.closeMapper()
    finally:
        os.chdir(cwd)
    return prot


def test_metrics_are_found_by_attribute_name(root, sqlite_url, template):
    """Float/Integer attributes of any output whose names say they are metrics (rules.py)."""
    import pyworkflow.object as pwobj

    from spfluo.objects import Volume

    def output(prot):
        vol = Volume(filename=prot._getExtraPath("x.tif"), voxelSize=(0.1,) * 3, shape=(4, 4, 4))
        vol.fsc_resolution_0143_um = pwobj.Float(0.31)
        vol.fsc_resolution_0143_per_voxel = pwobj.Float(0.16)
        vol.pose_error_median_deg = pwobj.Float(4.5)
        vol.n_matched_particles = pwobj.Integer(12)   # a count, no metric
        vol._ssimMean = pwobj.Float(0.7)
        return vol

    added = _add_run(root, "alpha", "ProtImportCoordinates", label="evaluate",
                     pointer_ids=[("inputVolume", template[1]["recon"], "outputVolume")],
                     outputs={"outputEval": output})
    sync(root, sqlite_url)
    engine = open_catalog(sqlite_url)
    try:
        with engine.connect() as conn:
            rows = sorted(conn.execute(
                select(Metric.name, Metric.kind, Metric.value, Metric.unit).join(Run)
                .join(Project).where(Project.name == "alpha", Run.prot_id == added.getObjId())))
    finally:
        engine.dispose()
    assert rows == sorted([("fsc_resolution_0143_um", "resolution", 0.31, "µm"),
                           ("fsc_resolution_0143_per_voxel", "resolution_frequency", 0.16,
                            "1/voxel"),
                           ("pose_error_median_deg", "pose_error", 4.5, "deg"),
                           ("ssimMean", "ssim", 0.7, None)])



def test_runs_of_plugins_not_installed_keep_their_class(root, sqlite_url, template):
    """A project made with another plugin (its classes unknown here) is still catalogued."""
    import sqlite3

    recon = template[1]["recon"]
    con = sqlite3.connect(os.path.join(root, "group", "gamma", "project.sqlite"))  # the fixture
    with con:
        con.execute("UPDATE Objects SET classname='XmippProtReconstructFourier' WHERE id=?",
                    (recon,))
        con.execute("UPDATE Objects SET classname='XmippVolume' WHERE parent_id=? AND "
                    "classname='Volume'", (recon,))
    con.close()
    report = sync(root, sqlite_url)
    assert report.ok and len(report.read) == 3
    assert any("XmippProtReconstructFourier is unknown here" in w for _, w in report.warnings)
    engine = open_catalog(sqlite_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(select(Run.protocol_class, Run.status, DataObject.object_class)
                               .select_from(Run)
                               .join(Project, Project.id == Run.project_id)
                               .join(DataObject, DataObject.run_id == Run.id)
                               .where(Project.name == "gamma", Run.prot_id == recon)).one()
        assert tuple(row) == ("XmippProtReconstructFourier", "finished", "XmippVolume")
        assert verify(engine) == []
    finally:
        engine.dispose()


def test_a_run_with_a_bad_gpu_list_is_recorded_and_the_field_reported(root, sqlite_url):
    """The probe's project: gpuList='0;touch x' stored in a run (an older or edited project)."""
    from spfluo.protocols import ProtReconstructKnownPoses

    path = os.path.join(root, "beta")
    run = _store_in(path, ProtReconstructKnownPoses, label="bad gpus", status="failed",
                    params={"useGpu": True, "gpuList": "0;touch x", "iterations": 7})
    report = sync(root, sqlite_url)
    assert report.ok and len(report.read) == 3 and not report.failed
    warnings = [w for p, w in report.warnings if p == path]
    assert any(f"run {run.getObjId()}: field gpuList cannot be read" in w
               and "recorded as '0;touch x'" in w for w in warnings), warnings
    engine = open_catalog(sqlite_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(select(Run.id, Run.label, Run.uses_gpu, Run.gpu).join(Project)
                               .where(Project.name == "beta",
                                      Run.prot_id == run.getObjId())).one()
            assert tuple(row)[1:] == ("bad gpus", True, "0;touch x")
            iterations = conn.execute(select(Parameter.value).where(
                Parameter.run_id == row.id, Parameter.name == "iterations")).scalar_one()
            assert iterations == "7"
        assert verify(engine) == []
    finally:
        engine.dispose()
