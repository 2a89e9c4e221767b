"""Failures carry their reason: the job's error file, the run's error message, the CLI, the
report; memory and disk errors; a killed job; GPUs checked before the launch."""

import errno
import json
import os
import signal
import subprocess
import sys
import types

import numpy as np
import pytest

from spfluo.constants import EXIT_JOB_CRASH, EXIT_JOB_ERROR, JOB_ERROR_FILE
from spfluo.io import read_job_error, write_volume
from spfluo.jobs import __main__ as jobs_main
from spfluo.jobs.jobfile import write_job
from spfluo.tests._projects import assert_rejected, finished, run_statuses


def _particles(folder, n=4, size=12):
    rng = np.random.default_rng(0)
    for k in range(n):
        write_volume(folder / f"p{k}.ome.tif", rng.random((size,) * 3, dtype=np.float32),
                     (0.05,) * 3)
    rows = ["id,rot,tilt,psi,tx,ty,tz"] + [f"{k + 1},0,0,0,0,0,0" for k in range(n)]
    (folder / "poses.csv").write_text("\n".join(rows) + "\n")


# ----------------------------------------------------------------------------- the job side
def _fake_step(monkeypatch, exc):
    """Make ``python -m spfluo.jobs compare`` raise ``exc`` after a progress line."""
    from spfluo.jobs.jobfile import Progress

    def run(job):
        Progress("compare").log("reading the volumes")
        raise exc

    real = jobs_main.importlib.import_module
    monkeypatch.setattr(jobs_main.importlib, "import_module",
                        lambda name: types.SimpleNamespace(run=run)
                        if name == "spfluo.jobs.compare" else real(name))


def _job_file(folder):
    return write_job(folder / "extra" / "compare_job.json", step="compare", inputs={},
                     params={}, outputs={})


@pytest.mark.parametrize("exc, code, reason", [
    (ValueError("the volumes differ in shape"), EXIT_JOB_ERROR, "the volumes differ in shape"),
    (MemoryError("Unable to allocate 12.0 GiB for an array"), EXIT_JOB_CRASH,
     r"MemoryError in job compare \(spfluo/tests/protocols/test_failures.py:\d+ in run; after: "
     r"\[compare [0-9.]+ s\] reading the volumes\): out of memory on this machine \(.* GB of "
     r"RAM\): Unable to allocate 12.0 GiB for an array; use fewer or smaller particles"),
    (OSError(errno.ENOSPC, "No space left on device", "volume.ome.tif"), EXIT_JOB_CRASH,
     r"OSError in job compare .*: the disk is full writing volume.ome.tif \([0-9.]+ GB free\): "
     "free space there or move the project"),
    (ZeroDivisionError("float division by zero"), EXIT_JOB_CRASH,
     r"ZeroDivisionError in job compare \(spfluo/tests/protocols/test_failures.py:\d+ in run; "
     r"after: .*\): float division by zero"),
])
def test_a_failed_job_writes_its_reason(tmp_path, monkeypatch, capsys, exc, code, reason):
    job = _job_file(tmp_path)
    _fake_step(monkeypatch, exc)
    assert jobs_main.main(["compare", str(job)]) == code
    text = read_job_error(job.parent / JOB_ERROR_FILE)
    assert text is not None and __import__("re").fullmatch(reason + ".*", text), text
    data = json.loads((job.parent / JOB_ERROR_FILE).read_text())
    assert data["step"] == "compare" and data["type"] == type(exc).__name__
    assert "reading the volumes" in data["stage"]
    if code == EXIT_JOB_CRASH:
        assert "Traceback" in capsys.readouterr().err  # the trace stays in the log


def test_a_job_that_succeeds_removes_an_earlier_error(tmp_path, monkeypatch):
    job = _job_file(tmp_path)
    (job.parent / JOB_ERROR_FILE).write_text('{"message": "old"}')
    monkeypatch.setattr(jobs_main.importlib, "import_module",
                        lambda name: types.SimpleNamespace(run=lambda job: None))
    assert jobs_main.main(["compare", str(job)]) == 0
    assert not (job.parent / JOB_ERROR_FILE).exists()


def test_a_killed_job_or_one_without_error_file(tmp_path):
    from spfluo.protocols.base import job_failure

    missing = str(tmp_path / JOB_ERROR_FILE)
    assert "killed (SIGKILL), most often by the system when memory runs out" in \
        job_failure("abinitio", -signal.SIGKILL, missing)
    assert job_failure("abinitio", -signal.SIGTERM, missing) == \
        "job abinitio was stopped by SIGTERM"
    assert "exited with status 1 without saying why (no job_error.json)" in \
        job_failure("abinitio", 1, missing)


# ----------------------------------------------------------------------------- runs
def test_the_run_error_is_the_job_reason_everywhere(project, launch, data_dir, spfluo_home):
    from spfluo.protocols import ProtImportParticles, ProtReconstructKnownPoses
    from spfluo.workflow import describe_runs

    _particles(data_dir)
    parts = finished(launch(ProtImportParticles, filesPattern=str(data_dir / "p*.ome.tif"),
                            posesFile=str(data_dir / "poses.csv")))
    # a particle file damaged after the import: only the job can see it
    (data_dir / "p2.ome.tif").write_bytes(b"II*\x00not a tiff any more")
    before = run_statuses(project)
    rec = launch(ProtReconstructKnownPoses, inputParticles=(parts, "outputParticles"),
                 method=3)
    assert rec.getStatus() == "failed"
    error = rec.getErrorMessage()
    assert "p2.ome.tif" in error and "non-zero exit status" not in error, error
    assert read_job_error(rec._getExtraPath(JOB_ERROR_FILE)) in error
    info = {r.run_id: r for r in describe_runs(project)}[rec.getObjId()]
    assert "p2.ome.tif" in info.error.strip().splitlines()[-1]  # `spfluo project show`
    assert any("p2.ome.tif" in line for line in rec.summary())  # the GUI's summary
    assert not list(rec.iterOutputAttributes())
    after = run_statuses(project)
    assert {k: after[k] for k in before} == before  # the earlier runs are untouched
    # `spfluo project show` in a fresh process prints the reason
    env = dict(os.environ, SPFLUO_HOME=spfluo_home)
    out = subprocess.run([sys.executable, "-m", "spfluo.cli", "project", "show",
                          project.getPath()], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "error:" in out.stdout and "p2.ome.tif" in out.stdout


# ----------------------------------------------------------------------------- GPUs
def _gpu_params(launch, data_dir):
    from spfluo.protocols import ProtImportParticles

    _particles(data_dir)
    parts = finished(launch(ProtImportParticles, filesPattern=str(data_dir / "p*.ome.tif"),
                            posesFile=str(data_dir / "poses.csv")))
    return dict(inputParticles=(parts, "outputParticles"), method=3, useGpu=True)


def test_a_gpu_without_cupy_is_refused_before_the_launch(project, launch, data_dir,
                                                         monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    values = _gpu_params(launch, data_dir)
    assert_rejected(project, "ProtReconstructKnownPoses",
                    r"Use GPU is on but CuPy cannot be imported .*install it .* or turn Use GPU "
                    r"off \(useGpu=false\)", gpuList="0", **values)


def test_gpus_that_cuda_does_not_show_are_refused(project, launch, data_dir, monkeypatch):
    runtime = types.SimpleNamespace(getDeviceCount=lambda: 2)
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    values = _gpu_params(launch, data_dir)
    assert_rejected(project, "ProtReconstructKnownPoses",
                    r"GPU id\(s\) 3 are not visible: this machine shows 2 GPU\(s\) \(ids 0 to "
                    r"1\): change the GPU ids \(gpuList\)", gpuList="1 3", **values)
    from spfluo.protocols.base import gpu_errors

    assert gpu_errors([0, 1]) == []
