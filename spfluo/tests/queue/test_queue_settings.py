"""Queue settings cannot add lines to the SLURM job script, wherever they come from."""

import json
import subprocess
import sys

import pytest

from spfluo.queue_settings import check_queue_settings, queue_settings_error

from .test_queue import fake_slurm


def _bad_settings(marker):
    """Queue settings that would write ``touch MARKER`` into the job script or the submit."""
    line = f"touch {marker}"
    return [
        ("gpu", {"JOB_TIME": f"00:20:00\n{line}"}),
        ("gpu", {"JOB_MEMORY": f"8000\n{line}"}),
        ("gpu", {"JOB_GPUS": f"1; {line}"}),
        ("gpu", {"JOB_GPUS": "-1"}),
        ("gpu", {"JOB_MEMORY": "0"}),
        ("gpu", {"JOB_TIME": "2h"}),
        ("gpu", {"JOB_SCRIPT": f"x; {line}"}),
        ("gpu", {"JOB_COMMAND": line}),
        ("gpu", {"MY_VAR": f"$({line})"}),
        ("gpu", {"MY_VAR": f"a`{line}`"}),
        ("gpu", {"lower": "1"}),
        ("gpu", {"QUEUE_FOR_JOBS": "Y"}),
        (f"gpu\n{line}", {}),
        ("gpu;x", {}),
        ("gpu", ["JOB_TIME", "00:20:00"]),
    ]


def test_every_queue_setting_is_checked(tmp_path):
    check_queue_settings("gpu", {"JOB_TIME": "1-04:00:00", "JOB_MEMORY": "8000", "JOB_GPUS": 2,
                                 "QUEUE_FOR_JOBS": "N", "MY_QOS": "high,fast"})
    messages = []
    for queue, values in _bad_settings(tmp_path / "PWNED"):
        with pytest.raises(ValueError) as info:
            check_queue_settings(queue, values)
        messages.append(str(info.value))
    assert "JOB_TIME (time limit) must be HH:MM:SS or D-HH:MM:SS" in messages[0]
    assert "JOB_MEMORY (memory, MB) must be an integer >= 1" in messages[1]
    assert "JOB_GPUS (GPUs) must be an integer >= 0" in messages[2]
    assert "JOB_SCRIPT is set by the engine" in messages[6]
    assert "MY_VAR must be one word" in messages[8]
    assert "the queue must be a SLURM partition name" in messages[12]


def test_stored_queue_settings_are_refused_at_launch(project, tmp_path):
    """A run whose _queueParams carry a second line (a loaded or edited run) is not launched."""
    from spfluo.tests._projects import run_statuses
    from spfluo.workflow import ProjectError, launch, new_protocol

    marker = tmp_path / "PWNED"
    before = run_statuses(project)
    for queue, values in _bad_settings(marker):
        prot = new_protocol(project, "ProtSimulateDataset", {"boxSize": "12"})
        prot._useQueue.set(True)
        prot.setQueueParams([queue, values])
        with pytest.raises(ProjectError, match="Queue settings"):
            launch(project, prot)
    prot._queueParams.set("not json")
    with pytest.raises(ProjectError, match="Queue settings"):
        launch(project, prot)
    assert run_statuses(project) == before
    assert not marker.exists()


def test_workflow_json_with_bad_queue_settings_is_not_loaded(project, tmp_path):
    from spfluo.tests._projects import run_statuses
    from spfluo.workflow import ProjectError, load_workflow_file

    marker = tmp_path / "PWNED"
    entry = {"object.className": "ProtSimulateDataset", "object.id": "2",
             "object.label": "sim", "boxSize": 12, "_useQueue": True,
             "_queueParams": json.dumps(["gpu", {"JOB_TIME": f"00:20:00\ntouch {marker}"}])}
    path = tmp_path / "wf.json"
    path.write_text(json.dumps([entry]))
    before = run_statuses(project)
    with pytest.raises(ProjectError, match=r"workflow protocol 2 \(ProtSimulateDataset\): "
                                           r"Queue settings .*JOB_TIME"):
        load_workflow_file(project, str(path))
    assert run_statuses(project) == before
    # the same protocol with sane settings loads
    entry["_queueParams"] = json.dumps(["gpu", {"JOB_TIME": "00:20:00"}])
    path.write_text(json.dumps([entry]))
    assert [p.getClassName() for p in load_workflow_file(project, str(path))] == \
        ["ProtSimulateDataset"]
    assert queue_settings_error({"_queueParams": ["gpu", {"JOB_TIME": "00:20:00"}]}) is None
    assert not marker.exists()


def test_queue_run_refuses_a_time_with_a_second_line(tmp_path):
    """The probe's command: `spfluo queue run ... --time $'00:20:00\\ntouch x'`."""
    log, env = fake_slurm(tmp_path)

    def spfluo(*args):
        return subprocess.run([sys.executable, "-m", "spfluo.cli", *map(str, args)],
                              capture_output=True, text=True, env=env, timeout=250)

    out = spfluo("queue", "write-hosts", "--partition", "gpu", "--submit-command",
                 tmp_path / "sbatch", "--check-command", tmp_path / "squeue")
    assert out.returncode == 0, out.stderr
    assert spfluo("project", "create", "q").returncode == 0
    marker = tmp_path / "PWNED"
    out = spfluo("queue", "run", "q", "ProtSimulateDataset", "boxSize=12", "nParticles=2",
                 "--queue", "gpu", "--time", f"00:20:00\ntouch {marker}", "--poll", "0.2",
                 "--timeout", "20")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "JOB_TIME (time limit) must be HH:MM:SS" in out.stderr
    assert not (log / "job_script").exists() and not marker.exists()
    assert "0 run(s)" in spfluo("project", "show", "q").stdout


def test_the_label_of_a_queued_run_cannot_hold_shell_characters(project):
    from spfluo.tests._projects import run_statuses
    from spfluo.workflow import ProjectError, launch, new_protocol

    before = run_statuses(project)
    prot = new_protocol(project, "ProtSimulateDataset", {"boxSize": "12"},
                        label="sim\ntouch x")
    prot._useQueue.set(True)
    prot.setQueueParams(["gpu", {"JOB_TIME": "00:20:00"}])
    with pytest.raises(ProjectError, match=r"The label 'sim\\ntouch x' of a run sent to a "
                                           r"queue cannot hold '\\n'"):
        launch(project, prot)
    assert run_statuses(project) == before
