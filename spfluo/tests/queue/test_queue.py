"""Queue submission: the SLURM hosts.conf as the engine reads it; a protocol via a fake sbatch."""

import os
import subprocess
import sys
import textwrap

import pytest

from spfluo.queue import SlurmQueue, slurm_hosts_conf, use_queue


def _load_hosts(text, tmp_path):
    from pyworkflow.protocol.hosts import HostConfig

    path = tmp_path / "hosts.conf"
    path.write_text(text)
    return HostConfig.load(str(path))


def _submit_dict(**extra):
    d = {"JOB_NAME": "12", "JOB_QUEUE": "gpu", "JOB_NODES": 1, "JOB_THREADS": 4,
         "JOB_TIME": "04:00:00", "JOB_MEMORY": "8000", "JOB_GPUS": "2",
         "JOB_LOGS": "Runs/000012_P/logs/spfluo12", "JOB_COMMAND": "python run.py 12",
         "SCIPION_PROJECT": "proj"}
    d.update(extra)
    return d


def test_hosts_conf_as_the_engine_reads_it(tmp_path):
    text = slurm_hosts_conf(
        [SlurmQueue("gpu", time="04:00:00", gpus=1, memory_mb=32000), SlurmQueue("cpu")],
        account="lab-42", setup=["module load cuda/12", "echo 100%"],
        environment={"SPFLUO_HOME": "/shared/my home"})
    host = _load_hosts(text, tmp_path)["localhost"]
    system = host.getQueueSystem()
    assert system.getName() == "SLURM" and int(system.getMandatory()) == 0
    assert list(system.getQueues()) == ["gpu", "cpu"]
    gpu = {v[0]: v[1] for v in system.getQueues()["gpu"]}
    assert gpu == {"JOB_TIME": "04:00:00", "JOB_MEMORY": "32000", "JOB_GPUS": "1",
                   "QUEUE_FOR_JOBS": "N"}
    assert {v[0]: v[1] for v in system.getQueues()["cpu"]}["JOB_GPUS"] == "0"
    assert host.getSubmitCommand() % {"JOB_SCRIPT": "a.job"} == "sbatch a.job"
    assert host.getCheckCommand() % {"JOB_ID": 7} == "squeue -h -j 7"
    assert host.getCancelCommand() % {"JOB_ID": 7} == "scancel 7"
    script = host.getSubmitTemplate() % _submit_dict()
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=lab-42",
                 "#SBATCH --time=04:00:00", "#SBATCH --cpus-per-task=4", "#SBATCH --mem=8000M",
                 "#SBATCH --gres=gpu:2", "#SBATCH --output=Runs/000012_P/logs/spfluo12.out",
                 "#SBATCH --export=ALL", "export SPFLUO_HOME='/shared/my home'",
                 "module load cuda/12", "echo 100%", "python run.py 12"):
        assert line in lines, line
    assert lines[-1] == "python run.py 12"
    # no GPU partition: no GPU line
    cpu_only = _load_hosts(slurm_hosts_conf(SlurmQueue("cpu")), tmp_path)["localhost"]
    assert "--gres" not in cpu_only.getSubmitTemplate()


def test_hosts_conf_errors():
    with pytest.raises(ValueError, match="partition must be a SLURM partition name"):
        SlurmQueue("gpu queue")
    with pytest.raises(ValueError, match="time must be HH:MM:SS or D-HH:MM:SS, got '2h'"):
        SlurmQueue("gpu", time="2h")
    with pytest.raises(ValueError, match="gpus must be an integer >= 0, got -1"):
        SlurmQueue("gpu", gpus=-1)
    with pytest.raises(ValueError, match="memory_mb must be an integer >= 1, got 0"):
        SlurmQueue("gpu", memory_mb=0)
    with pytest.raises(ValueError, match="partitions must differ"):
        slurm_hosts_conf([SlurmQueue("a"), SlurmQueue("a")])
    with pytest.raises(ValueError, match="queues must be one or more SlurmQueue"):
        slurm_hosts_conf([])
    with pytest.raises(ValueError, match="account must be a SLURM account name"):
        slurm_hosts_conf(SlurmQueue("a"), account="a b")
    with pytest.raises(ValueError, match="cannot hold a line break"):
        slurm_hosts_conf(SlurmQueue("a"), setup=["a\nb"])
    with pytest.raises(ValueError, match="submit_command must be a program"):
        slurm_hosts_conf(SlurmQueue("a"), submit_command=" ")


def test_use_queue_needs_a_known_queue(project):
    from spfluo.protocols import ProtSimulateDataset

    prot = project.newProtocol(ProtSimulateDataset)
    with pytest.raises(ValueError, match="queue 'gpu' is not in hosts.conf"):
        use_queue(prot, "gpu")
    assert not prot.useQueue()


FAKE_SBATCH = """\
#!/bin/bash
# a stand-in for sbatch: records the call and the job script, runs it in the background
LOG={log}
printf '%s\\n' "$@" > "$LOG/sbatch_args"
script="${{@: -1}}"
cp "$script" "$LOG/job_script"
pwd > "$LOG/submit_dir"
( bash "$script" > "$LOG/job.out" 2>&1 < /dev/null; echo $? > "$LOG/job.done" ) > /dev/null 2>&1 &
echo "Submitted batch job 4242"
"""
FAKE_SQUEUE = """\
#!/bin/bash
# a stand-in for squeue: the job runs until the fake sbatch's job has written job.done
echo "$@" >> {log}/squeue_args
[ -f {log}/job.done ] || echo "4242 gpu RUNNING"
"""


def fake_slurm(tmp_path):
    """Fake sbatch and squeue in ``tmp_path``: (their log folder, the env of a home there)."""
    log = tmp_path / "log"
    log.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("squeue", FAKE_SQUEUE)):
        (tmp_path / name).write_text(text.format(log=log))
        (tmp_path / name).chmod(0o755)
    return log, dict(os.environ, SPFLUO_HOME=str(tmp_path / "home"))


@pytest.mark.slow
def test_protocol_through_the_queue(tmp_path):
    log, env = fake_slurm(tmp_path)

    def spfluo(*args):
        res = subprocess.run([sys.executable, "-m", "spfluo.cli", *map(str, args)],
                             capture_output=True, text=True, env=env, timeout=250)
        assert res.returncode == 0, res.stderr + res.stdout
        return res.stdout

    spfluo("queue", "write-hosts", "--partition", "gpu", "--partition", "cpu", "--gpus", "1",
           "--account", "lab", "--time", "01:30:00", "--setup", "echo setting up",
           "--submit-command", tmp_path / "sbatch", "--check-command", tmp_path / "squeue")
    config = tmp_path / "home" / "scipion" / "config"
    assert "NAME = SLURM" in (config / "hosts.conf").read_text()
    assert "NAME = SLURM" not in (config / "hosts.conf.bak").read_text()  # the previous one
    spfluo("project", "create", "q")
    out = spfluo("queue", "run", "q", "ProtSimulateDataset", "boxSize=12", "nParticles=3",
                 "nSpots=0", "--queue", "gpu", "--time", "00:20:00", "--poll", "0.5",
                 "--timeout", "200")
    assert "finished (queue gpu, job 4242)" in out

    project_dir = tmp_path / "home" / "projects" / "q"
    args = (log / "sbatch_args").read_text().split()
    assert len(args) == 1 and args[0].startswith("Runs/") and args[0].endswith("/spfluo2.job")
    assert (log / "submit_dir").read_text().strip() == str(project_dir)
    script = (log / "job_script").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --time=00:20:00",
                 "#SBATCH --gres=gpu:1", "#SBATCH --job-name=spfluo-q-2", "echo setting up",
                 f"export SPFLUO_HOME={tmp_path / 'home'}"):
        assert line in script.splitlines(), line
    command = script.strip().splitlines()[-1]
    assert "pw_protocol_run.py" in command and f'"{project_dir}"' in command
    assert command.startswith(sys.executable)
    assert (log / "job.done").read_text().strip() == "0"
    assert "-h -j 4242" in (log / "squeue_args").read_text()

    show = spfluo("project", "show", "q")
    assert "ProtSimulateDataset          finished" in show
    assert "outputParticles (SetOfParticles): 3 item(s)" in show
    code = textwrap.dedent(f"""
        from spfluo.environment import bootstrap
        bootstrap({str(tmp_path / 'home')!r})
        from spfluo.workflow import open_project
        p = open_project("q")
        r = p.getProtocol(2)
        print(r.useQueue(), list(r.getJobIds()), r.getQueueParams())
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == (
        "True ['4242'] ['gpu', {'JOB_TIME': '00:20:00', 'JOB_MEMORY': '16000', 'JOB_GPUS': '1', "
        "'QUEUE_FOR_JOBS': 'N'}]")
