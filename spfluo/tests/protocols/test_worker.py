"""The worker process of a run: it dies with its runner, one per run, leftovers cleaned.

Measured with kill -9, as the probe did: a runner killed leaves no worker behind, a
"continue" is refused while a worker holds the run's lock, and the temporary files of an
interrupted write are removed when the run continues.
"""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from spfluo.constants import EXIT_JOB_ERROR, WORKER_LOCK
from spfluo.io import hold_lock, lock_holder, remove_temporaries
from spfluo.protocols import ProtReconstructKnownPoses, ProtSimulateDataset
from spfluo.tests._projects import finished, run_statuses

_RUNNER = """
import sys
from spfluo.protocols.base import run_worker
code = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(300)"
run_worker([sys.executable, "-c", code, sys.argv[1]])
"""


def _wait_for(condition, timeout=60.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _gone(pid) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_worker_dies_with_its_runner(tmp_path):
    pid_file = tmp_path / "worker.pid"
    runner = subprocess.Popen([sys.executable, "-c", _RUNNER, str(pid_file)])
    try:
        worker = int(_wait_for(lambda: pid_file.exists() and pid_file.read_text(),
                               what="the worker"))
        assert psutil.Process(worker).ppid() == runner.pid
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
        _wait_for(lambda: _gone(worker), timeout=10, what="the worker's death")
    finally:
        runner.kill()
        if pid_file.exists() and not _gone(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_temporaries_of_atomic_writes_only_are_removed(tmp_path):
    (tmp_path / "sub").mkdir()
    left = [tmp_path / ".volume.ome.tif.0123456789ab.tmp",
            tmp_path / "sub" / ".a.csv.abcdef012345.tmp"]
    kept = [tmp_path / "volume.ome.tif", tmp_path / ".notes.tmp",
            tmp_path / "x.0123456789ab.tmp"]
    for path in left + kept:
        path.write_text("x")
    assert sorted(remove_temporaries(tmp_path)) == sorted(left)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in left)


@pytest.mark.slow
def test_kill_9_of_the_runner_then_continue(project, launch):
    """The probe's sequence on a real run: kill -9 the runner during the job, continue."""
    sim = finished(launch(ProtSimulateDataset, boxSize=16, nParticles=4, nSpots=0))
    prot = project.newProtocol(ProtReconstructKnownPoses, method=1, weightMode=1, weight=1e-3,
                               iterations=10_000, doHalfMaps=False)
    for key, output in (("inputParticles", "outputParticles"), ("inputPSF", "outputPSF")):
        getattr(prot, key).set(sim)
        getattr(prot, key).setExtended(output)
    project.launchProtocol(prot, wait=False)
    lock = os.path.join(project.getPath(), prot._getExtraPath(WORKER_LOCK))
    worker = _wait_for(lambda: os.path.exists(lock) and lock_holder(lock), what="the worker")
    runner = psutil.Process(worker).ppid()
    assert "pw_protocol_run" in " ".join(psutil.Process(runner).cmdline())
    os.kill(runner, signal.SIGKILL)
    _wait_for(lambda: _gone(worker), timeout=10, what="the worker's death")
    assert lock_holder(lock) is None

    # what the kill left: a temporary file of an interrupted write, and the user's file
    extra = os.path.join(project.getPath(), prot._getExtraPath())
    leftover = os.path.join(extra, ".volume.ome.tif.0123456789ab.tmp")
    mine = os.path.join(extra, "notes.txt")
    for path in (leftover, mine):
        with open(path, "w") as fh:
            fh.write("x")
    prot = project.getProtocol(prot.getObjId())
    prot.iterations.set(20)
    project.launchProtocol(prot, wait=True)
    prot = finished(project.getProtocol(prot.getObjId()))
    assert prot.outputVolume.getDimensions() == (16, 16, 16)
    assert not os.path.exists(leftover) and os.path.exists(mine)


def test_continue_is_refused_while_a_worker_holds_the_lock(project, launch):
    from spfluo.workflow import ProjectError
    from spfluo.workflow import launch as launch_checked

    sim = finished(launch(ProtSimulateDataset, boxSize=12, nParticles=2, nSpots=0))
    before = run_statuses(project)
    job = sim._getExtraPath("simulate_job.json")
    with hold_lock(sim._getExtraPath(WORKER_LOCK)):  # as a worker still running would
        with pytest.raises(ProjectError, match=rf"Run {sim.getObjId()} still has a worker "
                                               rf"running \(process {os.getpid()}"):
            launch_checked(project, sim)
        out = subprocess.run([sys.executable, "-m", "spfluo.jobs", "simulate", job],
                             capture_output=True, text=True, cwd=project.getPath())
        assert out.returncode == EXIT_JOB_ERROR
        assert f"another worker is running in this run folder (process {os.getpid()}" in \
            out.stderr
    assert run_statuses(project) == before


def test_the_job_gets_the_gpus_in_its_environment_and_no_shell(project, monkeypatch):
    """On a GPU the ids go to CUDA_VISIBLE_DEVICES; the command is an argument list."""
    from spfluo.protocols import base

    calls = []
    monkeypatch.setattr(base, "run_worker", lambda argv, env: calls.append((argv, env)))
    prot = project.newProtocol(ProtReconstructKnownPoses, useGpu=True, gpuList="1 2")
    prot._runSpfluoJob("reconstruct")
    prot = project.newProtocol(ProtReconstructKnownPoses, useGpu=False)
    prot._runSpfluoJob("reconstruct")
    (argv, env), (_, cpu_env) = calls
    assert argv[:4] == [sys.executable, "-m", "spfluo.jobs", "reconstruct"]
    assert argv[4].endswith("reconstruct_job.json")
    assert env["CUDA_VISIBLE_DEVICES"] == "1,2"
    assert cpu_env.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")
