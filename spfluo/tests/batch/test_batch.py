"""`spfluo batch`: datasets in parallel on Dask, a failing dataset alone, re-runs, a scheduler."""

import csv
import json
import os
import subprocess
import sys

import pytest

from spfluo.batch import SUMMARY_COLUMNS, read_summary, run_batch
from spfluo.batch.runner import STATE_FILE, write_summary
from spfluo.batch.simulated import write_fields_dataset
from spfluo.batch.templates import TemplateError


def spfluo(home, *args, cwd=None):
    env = dict(os.environ, SPFLUO_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "spfluo.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=280)


def _imports_template(folder):
    """The import stage of spr_fields_of_view (3 cheap runs) as a template file of that name."""
    from spfluo.batch.templates import find_template

    text = open(find_template("spr_fields_of_view").templatePath, encoding="utf-8").read()
    description, _, body = text.partition("\n")
    path = folder / "spr_fields_of_view.json.template"
    path.write_text(description + "\n" + json.dumps(json.loads(body)[:3], ensure_ascii=False),
                    encoding="utf-8")
    return path


def _rows(path):
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == SUMMARY_COLUMNS
        return {r["project"]: r for r in reader}


def _run_states(home, project):
    """{label: (status, end time)} of the runs the template made, read in a fresh process."""
    code = f"""
import json, sys
from spfluo.environment import bootstrap
bootstrap({str(home)!r})
from spfluo.workflow import open_project
p = open_project({project!r})
state = json.load(open({STATE_FILE!r}))
out = {{}}
for i in state["runs"]:
    r = p.getProtocol(i)
    out[r.getObjLabel()] = [i, r.getStatus(), str(r.endTime.get())]
print(json.dumps(out))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_batch_parallel_failure_alone_and_rerun(tmp_path):
    home, out = tmp_path / "home", tmp_path / "out"
    good = write_fields_dataset(tmp_path / "good", n_fields=1, n_examples=2)
    bad = write_fields_dataset(tmp_path / "bad", n_fields=1, n_examples=1, seed=5)
    psf = (bad / "psf.tif").read_bytes()
    (bad / "psf.tif").write_bytes(b"this is not a TIFF file")  # corrupted
    missing = tmp_path / "missing"
    template = _imports_template(tmp_path)

    res = spfluo(home, "batch", template, good, bad, missing, "--workers", "2", "--out", out)
    assert res.returncode == 1, res.stderr + res.stdout
    rows = _rows(out / "summary.csv")
    assert set(rows) == {"spr_fields_of_view-good", "spr_fields_of_view-bad",
                         "spr_fields_of_view-missing"}
    g, b, m = (rows[f"spr_fields_of_view-{n}"] for n in ("good", "bad", "missing"))
    assert g["status"] == "finished" and g["error"] == "" and float(g["runtime_s"]) > 0
    assert g["dataset"] == str(good.resolve())
    assert b["status"] == "failed"
    assert b["error"].startswith("import PSF: Cannot read PSF file") and "psf.tif" in b["error"]
    assert m["status"] == "failed" and "is not a folder" in m["error"]
    assert "error: import PSF: Cannot read PSF file" in res.stdout

    good_runs = _run_states(home, "spr_fields_of_view-good")
    assert [s for _, s, _ in good_runs.values()] == ["finished"] * 3
    bad_runs = _run_states(home, "spr_fields_of_view-bad")
    assert bad_runs["import fields of view"][1] == "finished"
    assert bad_runs["import PSF"][1] == "saved" and bad_runs["example particles"][1] == "saved"

    # fix the file and run again: the finished dataset is skipped, the failed one continues
    (bad / "psf.tif").write_bytes(psf)
    res = spfluo(home, "batch", template, good, bad, "--workers", "2", "--out", out)
    assert res.returncode == 0, res.stderr + res.stdout
    assert "spr_fields_of_view-good: finished before, skipped" in res.stdout
    rows2 = _rows(out / "summary.csv")
    assert rows2["spr_fields_of_view-good"] == g  # untouched
    assert rows2["spr_fields_of_view-bad"]["status"] == "finished"
    assert rows2["spr_fields_of_view-missing"] == m  # kept from the first batch
    assert _run_states(home, "spr_fields_of_view-good") == good_runs
    bad_runs2 = _run_states(home, "spr_fields_of_view-bad")
    assert bad_runs2["import fields of view"] == bad_runs["import fields of view"]  # kept
    assert [v[0] for v in bad_runs2.values()] == [v[0] for v in bad_runs.values()]  # same runs
    assert [v[1] for v in bad_runs2.values()] == ["finished"] * 3


@pytest.mark.slow
def test_batch_on_an_existing_dask_cluster(tmp_path, spfluo_home):
    from dask.distributed import LocalCluster

    ds = write_fields_dataset(tmp_path / "one", n_fields=1, n_examples=1)
    lines = []
    cwd = os.getcwd()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        result = run_batch(str(_imports_template(tmp_path)), [ds], out=tmp_path / "out",
                           scheduler=cluster.scheduler_address, prefix="sched", log=lines.append)
    assert os.getcwd() == cwd
    (row,) = result.rows
    assert row["project"] == "sched-one" and row["status"] == "finished", row["error"]
    assert result.summary_path == (tmp_path / "out" / "summary.csv").resolve()
    assert read_summary(result.summary_path)["sched-one"] == row
    assert lines == [f"[1/1] sched-one: finished in {row['runtime_s']} s"]
    with open(os.path.join(spfluo_home, "projects", "sched-one", STATE_FILE)) as fh:
        state = json.load(fh)
    assert state["template"] == "local-spr_fields_of_view" and len(state["runs"]) == 3
    assert state["dataset"] == str(ds.resolve())


def test_run_batch_rejects_bad_requests(tmp_path):
    ds = write_fields_dataset(tmp_path / "a" / "same", n_fields=1, n_examples=1)
    ds2 = write_fields_dataset(tmp_path / "b" / "same", n_fields=1, n_examples=1)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="workers must be an integer >= 1 and <= 256, got 0"):
        run_batch("spr_fields_of_view", [ds], out=out, workers=0)
    with pytest.raises(ValueError, match="No dataset given"):
        run_batch("spr_fields_of_view", [], out=out)
    with pytest.raises(ValueError, match="both give project spr_fields_of_view-same"):
        run_batch("spr_fields_of_view", [ds, ds2], out=out)
    with pytest.raises(TemplateError, match="No template 'nope'"):
        run_batch("nope", [ds], out=out)
    assert not (out / "summary.csv").exists()


def test_summary_round_trip(tmp_path):
    rows = [{"dataset": "/d/a", "project": "p-a", "status": "failed", "runtime_s": "1.0",
             "error": 'bad, "quoted"\nline'},
            {"dataset": "/d/b", "project": "p-b", "status": "finished", "ssim": "0.9"}]
    path = write_summary(tmp_path / "s.csv", rows)
    back = read_summary(path)
    assert back["p-a"]["error"] == 'bad, "quoted"\nline' and back["p-a"]["ssim"] == ""
    assert back["p-b"]["ssim"] == "0.9" and list(back) == ["p-a", "p-b"]
    assert read_summary(tmp_path / "none.csv") == {}


def test_batch_command_help_and_templates(tmp_path):
    res = spfluo(tmp_path / "home", "batch", "--list-templates")
    assert res.returncode == 0, res.stderr
    assert "spr_fields_of_view\n  SPR from fields of view" in res.stdout
    assert "fields (aliases): particles, voxel_source" in res.stdout
    res = spfluo(tmp_path / "home", "--help")
    for command in ("batch", "report", "queue"):
        assert command in res.stdout
    res = spfluo(tmp_path / "home", "batch", "spr_particles")
    assert res.returncode == 2 and "give one or more dataset folders" in res.stderr


class _StubRun:
    """What project_metrics and _failure read of a run."""

    def __init__(self, outputs=(), status="finished", error="", stderr=None):
        self.outputs, self.status, self.error, self.stderr = list(outputs), status, error, stderr

    def isFinished(self):
        return self.status == "finished"

    def iterOutputAttributes(self):
        return iter(self.outputs)

    def getErrorMessage(self):
        return self.error

    def getStatus(self):
        return self.status

    def getLogPaths(self):
        return ["stdout", str(self.stderr)]


class _StubProject:
    def __init__(self, runs):
        self.runs = runs

    def getProtocol(self, run_id):
        return self.runs.get(run_id)


def test_metrics_from_the_last_comparison_or_volume():
    from spfluo.batch.runner import project_metrics
    from spfluo.objects import Volume, VolumeComparison

    vol = Volume(filename="v.tif", voxelSize=(0.08, 0.08, 0.08), shape=(1, 8, 8, 8))
    vol.setResolution(0.32)
    old, new = VolumeComparison(), VolumeComparison()
    old.setMetrics({"ssim": 0.5, "fsc_resolution_0143_um": 0.4,
                    "fsc_resolution_0143_per_voxel": 0.2})
    new.setMetrics({"ssim": 0.91234, "fsc_resolution_0143_um": 0.25,
                    "fsc_resolution_0143_per_voxel": 0.32})
    new.setResolutionText("0.25 µm (FSC 0.143, 0.32 1/voxel)")
    project = _StubProject({1: _StubRun([("outputVolume", vol)]),
                            2: _StubRun([("outputComparison", old)]),
                            3: _StubRun([("outputComparison", new)]),
                            4: _StubRun([("outputComparison", old)], status="failed")})
    assert project_metrics(project, [1, 2, 3, 4]) == {
        "resolution_um": "0.25", "resolution_per_voxel": "0.32",
        "resolution_text": "0.25 µm (FSC 0.143, 0.32 1/voxel)", "ssim": "0.9123"}
    # a comparison whose FSC never crossed 0.143: no number, its verdict
    never = VolumeComparison()
    never.setMetrics({"ssim": 0.8, "fsc_resolution_0143_um": None,
                      "fsc_resolution_0143_per_voxel": None})
    never.setResolutionText("not reached below Nyquist (0.16 µm): sample finer")
    project.runs[5] = _StubRun([("outputComparison", never)])
    assert project_metrics(project, [5]) == {
        "resolution_um": "", "resolution_per_voxel": "",
        "resolution_text": "not reached below Nyquist (0.16 µm): sample finer", "ssim": "0.8"}
    # no comparison: the half-map resolution of the last volume, 0.08 / 0.32 = 0.25 per voxel
    assert project_metrics(project, [1]) == {
        "resolution_um": "0.32", "resolution_per_voxel": "0.25", "resolution_text": "",
        "ssim": ""}
    assert project_metrics(project, [4]) == {
        "resolution_um": "", "resolution_per_voxel": "", "resolution_text": "", "ssim": ""}


def test_failure_message_has_the_job_reason(tmp_path):
    from spfluo.batch.runner import _failure

    log = tmp_path / "run.stderr"
    log.write_text("Traceback (most recent call last):\n  ...\n"
                   "spfluo.jobs: abinitio: particles.csv row 3: file missing\n\n")
    run = _StubRun(status="failed", error="Protocol failed: Command 'python -m spfluo.jobs "
                                         "abinitio' returned non-zero exit status 2.",
                   stderr=log)
    assert _failure(run) == ("Protocol failed: Command 'python -m spfluo.jobs abinitio' returned "
                             "non-zero exit status 2. (spfluo.jobs: abinitio: particles.csv row "
                             "3: file missing)")
    assert _failure(_StubRun(status="aborted", stderr=tmp_path / "none")) == "status aborted"
