"""Queue submission of a heavy protocol through the engine's own queue mode (SLURM).

The engine (pyworkflow) can send a whole protocol run to a queue system: the
host's section of ``hosts.conf`` names the system (``NAME``), how to submit
(``SUBMIT_COMMAND``, with the job script written from ``SUBMIT_TEMPLATE``), how
to check and cancel a job (``CHECK_COMMAND``, ``CANCEL_COMMAND``), and the
queues with the values a user may set for each (``QUEUES``, JSON).  A protocol
with ``_useQueue`` set is then submitted instead of started, with its
``_queueParams`` (``[queue name, {VARIABLE: value}]``) filled into the template;
the job runs the engine's ``pw_protocol_run.py`` on the node, which writes the
run's status back to the project.

This module writes such a ``hosts.conf`` for a facility's SLURM partitions
(:func:`slurm_hosts_conf`, :func:`write_hosts_conf`), turns the queue on for a
protocol (:func:`use_queue`) and launches it and waits for the job
(:func:`launch_queued`).  ``spfluo queue write-hosts`` and ``spfluo queue run``
are the command-line side.  The job script exports the spfluo environment
(``SCIPION_*``, ``SPFLUO_HOME``), so the nodes need the same file system paths
(home folder, projects, the Python environment) as the submitting machine.

Template variables filled by the engine: ``JOB_NAME`` (run id), ``JOB_QUEUE``
(partition), ``JOB_NODES`` (MPI processes), ``JOB_THREADS`` (the protocol's
threads), ``JOB_SCRIPT``, ``JOB_LOGS`` and ``JOB_COMMAND``; per queue, spfluo
adds ``JOB_TIME`` (HH:MM:SS), ``JOB_MEMORY`` (MB) and ``JOB_GPUS``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time

from .queue_settings import NAME_RE, QUEUE_FOR_JOBS, SlurmQueue, check_queue_settings

__all__ = [
    "SlurmQueue",
    "slurm_hosts_conf",
    "write_hosts_conf",
    "use_queue",
    "launch_queued",
    "add_parser",
]

#: Environment variables the job script exports (set by spfluo.environment.bootstrap).
_ENV_VARS = ("SPFLUO_HOME", "SCIPION_HOME", "SCIPION_USER_DATA", "SCIPION_HOSTS",
             "SCIPION_CONFIG", "SCIPION_DOMAIN", "SCIPION_PYTHON", "SCIPION_TEST_NOSYNC",
             "SCIPION_NOTIFY", "NO_COLOR", "MPLCONFIGDIR", "MPLBACKEND")



def _literal(text: str) -> str:
    """Text placed as is in the submit template: ``%`` doubled for the engine's formatting."""
    if "\n" in text or "\r" in text:
        raise ValueError(f"a line of the job script cannot hold a line break: {text!r}")
    return text.replace("%", "%%")


def slurm_hosts_conf(queues, *, account: str | None = None, setup=(),
                     environment: dict | None = None, host: str = "localhost",
                     submit_command: str = "sbatch", check_command: str = "squeue",
                     cancel_command: str = "scancel") -> str:
    """The text of a ``hosts.conf`` whose host submits protocols to SLURM.

    Parameters
    ----------
    queues : SlurmQueue or sequence of SlurmQueue
        The partitions offered (the first one is the default in the GUI).
    account : str, optional
        SLURM account charged (``#SBATCH --account``).
    setup : sequence of str
        Shell lines run before the protocol (e.g. ``module load cuda/12``).
    environment : dict of str to str, optional
        Variables exported by the job script; default: the spfluo/engine variables
        of this process (``SPFLUO_HOME``, ``SCIPION_*``...).
    host : str, default "localhost"
        The host section (protocols use ``localhost`` unless told otherwise).
    submit_command, check_command, cancel_command : str
        The programs ``sbatch``, ``squeue`` and ``scancel`` (paths or wrappers).

    Returns
    -------
    str
        The file's text (``%_(VAR)s`` are the engine's template variables).
    """
    if isinstance(queues, SlurmQueue):
        queues = [queues]
    queues = list(queues)
    if not queues or not all(isinstance(q, SlurmQueue) for q in queues):
        raise ValueError(f"queues must be one or more SlurmQueue, got {queues!r}.")
    names = [q.partition for q in queues]
    if len(set(names)) != len(names):
        raise ValueError(f"partitions must differ, got {names}.")
    if account is not None and not NAME_RE.fullmatch(str(account)):
        raise ValueError(f"account must be a SLURM account name, got {account!r}.")
    if not NAME_RE.fullmatch(host or ""):
        raise ValueError(f"host must be a section name such as 'localhost', got {host!r}.")
    for name, command in (("submit_command", submit_command), ("check_command", check_command),
                          ("cancel_command", cancel_command)):
        if not isinstance(command, str) or not command.strip():
            raise ValueError(f"{name} must be a program name or path, got {command!r}.")
    if isinstance(setup, str):
        setup = [setup]
    if environment is None:
        environment = {k: os.environ[k] for k in _ENV_VARS if k in os.environ}
    for key in environment:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(key)):
            raise ValueError(f"environment variable names must be shell names, got {key!r}.")

    lines = ["#!/bin/bash",
             "#SBATCH --job-name=spfluo-%_(SCIPION_PROJECT)s-%_(JOB_NAME)s",
             "#SBATCH --partition=%_(JOB_QUEUE)s"]
    if account:
        lines.append(f"#SBATCH --account={_literal(account)}")
    lines += ["#SBATCH --time=%_(JOB_TIME)s",
              "#SBATCH --nodes=1",
              "#SBATCH --ntasks=%_(JOB_NODES)d",
              "#SBATCH --cpus-per-task=%_(JOB_THREADS)d",
              "#SBATCH --mem=%_(JOB_MEMORY)sM"]
    if any(q.gpus for q in queues):
        lines.append("#SBATCH --gres=gpu:%_(JOB_GPUS)s")
    lines += ["#SBATCH --output=%_(JOB_LOGS)s.out",
              "#SBATCH --error=%_(JOB_LOGS)s.err",
              "#SBATCH --export=ALL"]
    lines += [f"export {key}={_literal(shlex.quote(str(value)))}"
              for key, value in environment.items()]
    lines += [_literal(line) for line in setup if line.strip()]
    lines += ['echo "spfluo: SLURM job ${SLURM_JOB_ID:-?} on $(hostname) in $(pwd)"',
              "%_(JOB_COMMAND)s"]

    def variables(q: SlurmQueue):
        return [["JOB_TIME", q.time, "Time limit (HH:MM:SS)", "Wall-time limit of the job."],
                ["JOB_MEMORY", str(q.memory_mb), "Memory (MB)", "Memory of the job, MB."],
                ["JOB_GPUS", str(q.gpus), "GPUs", "Number of GPUs of the job."],
                [QUEUE_FOR_JOBS, "N", "Use queue for steps",
                 "N: the whole protocol is one job (spfluo's way)."]]

    queues_json = json.dumps({q.partition: variables(q) for q in queues})
    defaults_json = json.dumps({"JOB_TIME": queues[0].time,
                                "JOB_MEMORY": str(queues[0].memory_mb), "JOB_GPUS": "0"})
    template = "\n".join(lines[:1] + ["    " + line for line in lines[1:]])
    return "\n".join([
        f"[{host}]",
        "PARALLEL_COMMAND = mpirun -np %_(JOB_NODES)d %_(COMMAND)s",
        "NAME = SLURM",
        "MANDATORY = 0",
        "SUBMIT_PREFIX = spfluo",
        f"SUBMIT_COMMAND = {_literal(submit_command)} %_(JOB_SCRIPT)s",
        f"CANCEL_COMMAND = {_literal(cancel_command)} %_(JOB_ID)s",
        f"CHECK_COMMAND = {_literal(check_command)} -h -j %_(JOB_ID)s",
        f"SUBMIT_TEMPLATE = {template}",
        f"QUEUES = {queues_json}",
        f"QUEUES_DEFAULT = {defaults_json}",
        "",
    ])


def write_hosts_conf(text: str, *, home: str | os.PathLike | None = None):
    """Install ``text`` as the engine's ``hosts.conf`` of the spfluo home folder.

    Every project of that home reads it (the engine keeps one hosts file per
    installation).  A different previous file is kept as ``hosts.conf.bak``.
    Returns the path written.
    """
    import shutil

    from .environment import bootstrap, spfluo_home

    if not isinstance(text, str) or not text.lstrip().startswith("["):
        raise ValueError("text must be the content of a hosts.conf (starting with a "
                         "[host] section), e.g. from slurm_hosts_conf().")
    path = spfluo_home(home) / "scipion" / "config" / "hosts.conf"
    if path.exists() and path.read_text() != text:
        shutil.copyfile(path, path.with_name("hosts.conf.bak"))
    bootstrap(home, hosts_conf=text)
    return path


def use_queue(prot, queue: str, **values) -> None:
    """Send ``prot`` to ``queue`` when launched, with job settings (``JOB_TIME="04:00:00"``...).

    ``queue`` must be one of the queues of the host's ``hosts.conf``; values not
    given keep the queue's defaults.
    """
    project = prot.getProject()
    host = project.getHostConfig(prot.getHostName()) if project is not None else None
    if host is not None:
        system = host.getQueueSystem()
        known = list(system.getQueues() or {}) if system.hasName() else []
        if queue not in known:
            raise ValueError(f"queue {queue!r} is not in hosts.conf (queues: "
                             f"{', '.join(known) or 'none'}): write one with `spfluo queue "
                             "write-hosts`.")
        defaults = {var[0]: var[1] for var in system.getQueues()[queue]}
    else:
        defaults = {}
    settings = {**defaults, **{k: str(v) for k, v in values.items()}, QUEUE_FOR_JOBS: "N"}
    check_queue_settings(queue, settings)
    prot._useQueue.set(True)
    prot.setQueueParams([queue, settings])


def launch_queued(project, prot, *, wait: bool = True, timeout_s: float | None = None,
                  poll_s: float = 5.0) -> str:
    """Submit ``prot`` (after :func:`use_queue`) and wait for its job; return its status.

    The protocol is validated first (a :class:`spfluo.workflow.ProjectError` leaves
    the project unchanged).  Without ``wait``, or when ``timeout_s`` passes, the
    status returned is the current one (``launched``/``running``): the job goes on
    and ``spfluo project show`` follows it.
    """
    from .errors import ProjectError

    if poll_s <= 0:
        raise ValueError(f"poll_s must be > 0 s, got {poll_s!r}.")
    errors = prot.validate()
    if errors:
        raise ProjectError("\n".join(errors))
    project.launchProtocol(prot, wait=False)
    run_id = prot.getObjId()
    start = time.monotonic()
    while True:
        runs = {r.getObjId(): r for r in project.getRuns(refresh=True)}
        current = runs.get(run_id, prot)
        if not wait or not current.isActive():
            return current.getStatus()
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            return current.getStatus()
        time.sleep(poll_s)


# ------------------------------------------------------------------------ CLI
def _cmd_write_hosts(args) -> int:
    queues = [SlurmQueue(p, time=args.time, gpus=args.gpus, memory_mb=args.mem)
              for p in args.partition]
    text = slurm_hosts_conf(queues, account=args.account, setup=args.setup or (),
                            submit_command=args.submit_command,
                            check_command=args.check_command,
                            cancel_command=args.cancel_command)
    if args.print:
        sys.stdout.write(text)
        return 0
    path = write_hosts_conf(text, home=args.home)
    print(f"wrote {path}: SLURM partition(s) {', '.join(args.partition)}; launch a protocol "
          "on it with `spfluo queue run PROJECT PROTOCOL ... --queue PARTITION` or tick "
          "'Use a queue engine' in the GUI")
    return 0


def _cmd_run(args) -> int:
    from .params import parse_key_values
    from .workflow import new_protocol, open_project

    project = open_project(args.name)
    prot = new_protocol(project, args.protocol, parse_key_values(args.params), label=args.label)
    values = {}
    if args.time:
        values["JOB_TIME"] = args.time
    if args.gpus is not None:
        values["JOB_GPUS"] = args.gpus
    if args.mem is not None:
        values["JOB_MEMORY"] = args.mem
    try:
        use_queue(prot, args.queue, **values)
    except ValueError as exc:
        print(f"spfluo: {exc}", file=sys.stderr)
        return 2
    status = launch_queued(project, prot, wait=not args.no_wait, timeout_s=args.timeout,
                           poll_s=args.poll)
    jobs = ", ".join(str(j) for j in prot.getJobIds()) or "?"
    print(f"run #{prot.getObjId()} {prot.getRunName()}: {status} (queue {args.queue}, job {jobs})")
    if status == "failed":
        print(f"  error: {prot.getErrorMessage()}", file=sys.stderr)
        return 1
    return 0


def add_parser(sub) -> None:
    """Register ``spfluo queue`` on the ``spfluo`` command's sub-parsers."""
    queue = sub.add_parser("queue", help="submit protocols to a SLURM queue (engine's queue mode)")
    qsub = queue.add_subparsers(dest="queue_command", required=True, metavar="ACTION")

    p = qsub.add_parser("write-hosts", help="write the engine's hosts.conf for SLURM partitions",
                        description="Write <home>/scipion/config/hosts.conf so that protocols "
                                    "can be submitted with sbatch to the given partitions.")
    p.add_argument("--partition", action="append", required=True,
                   help="SLURM partition (repeat for several)")
    p.add_argument("--account", help="SLURM account (#SBATCH --account)")
    p.add_argument("--time", default="02:00:00", help="default time limit, HH:MM:SS")
    p.add_argument("--gpus", type=int, default=0, help="default GPUs per job")
    p.add_argument("--mem", type=int, default=16000, help="default memory per job, MB")
    p.add_argument("--setup", action="append",
                   help="shell line run before the protocol, e.g. 'module load cuda' (repeat)")
    p.add_argument("--submit-command", default="sbatch")
    p.add_argument("--check-command", default="squeue")
    p.add_argument("--cancel-command", default="scancel")
    p.add_argument("--print", action="store_true", help="print the file instead of writing it")
    p.set_defaults(func=_cmd_write_hosts)

    p = qsub.add_parser("run", help="submit one protocol to the queue and wait for its job",
                        description="Like `spfluo run`, through the queue of hosts.conf.")
    p.add_argument("name", help="project name")
    p.add_argument("protocol", help="protocol class, e.g. ProtAbInitio")
    p.add_argument("params", nargs="*", metavar="key=value")
    p.add_argument("--queue", required=True, help="queue (partition) of hosts.conf")
    p.add_argument("--time", help="time limit, HH:MM:SS (default: the queue's)")
    p.add_argument("--gpus", type=int, help="GPUs (default: the queue's)")
    p.add_argument("--mem", type=int, help="memory, MB (default: the queue's)")
    p.add_argument("--label", help="run label")
    p.add_argument("--no-wait", action="store_true", help="return once submitted")
    p.add_argument("--timeout", type=float, default=None, help="stop waiting after S seconds")
    p.add_argument("--poll", type=float, default=5.0, help="seconds between job checks")
    p.set_defaults(func=_cmd_run)
