"""Queue settings of a protocol (SLURM through the engine's queue mode), checked wherever
they enter: a value that could add a line to the job script or an argument to the submit
command is refused with the setting's name and the fix."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

__all__ = ["SlurmQueue", "NAME_RE", "QUEUE_FOR_JOBS", "check_queue_settings",
           "queue_settings_error"]

#: The engine's queue-for-jobs variable (pyworkflow.constants.QUEUE_FOR_JOBS; "N": the whole
#: protocol as one job).
QUEUE_FOR_JOBS = "QUEUE_FOR_JOBS"
#: A partition, account or host name.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", re.ASCII)
_TIME_RE = re.compile(r"([0-9]+-)?[0-9]{1,3}:[0-9]{2}:[0-9]{2}", re.ASCII)
#: A queue variable's name, and the value of a variable spfluo does not know: one word
#: without a character that the job script's shell or the submit command would interpret.
_VARIABLE_RE = re.compile(r"[A-Z][A-Z0-9_]*", re.ASCII)
_WORD_RE = re.compile(r"[A-Za-z0-9_.:,+=@/-]*", re.ASCII)
#: Variables the engine fills from the protocol and the project: a protocol's queue
#: settings may not replace them (JOB_SCRIPT, for one, is passed unquoted to sbatch).
_ENGINE_VARIABLES = frozenset({
    "JOB_NAME", "JOB_QUEUE", "JOB_NODES", "JOB_THREADS", "JOB_CORES", "JOB_HOURS", "GPU_COUNT",
    "JOB_SCRIPT", "JOB_LOGS", "JOB_NODEFILE", "JOB_COMMAND", "JOB_ID", "SCIPION_PROJECT",
    "SCIPION_PROTOCOL", "PLUGIN_MODULE"})
@dataclass(frozen=True)
class SlurmQueue:
    """A SLURM partition offered to protocols, with the defaults of its job settings.

    Attributes
    ----------
    partition : str
        The SLURM partition (``#SBATCH --partition``), also the queue's name.
    time : str, default "02:00:00"
        Wall-time limit, ``HH:MM:SS`` or ``D-HH:MM:SS``.
    gpus : int, default 0
        GPUs per job (``#SBATCH --gres=gpu:N``).
    memory_mb : int, default 16000
        Memory per job, megabytes.
    """

    partition: str
    time: str = "02:00:00"
    gpus: int = 0
    memory_mb: int = 16000

    def __post_init__(self):
        _check_partition(self.partition, "partition")
        where = f" (partition {self.partition})"
        _check_time(self.time, "time", where)
        _check_count(self.gpus, "gpus", 0, where)
        _check_count(self.memory_mb, "memory_mb", 1, where)


def _check_partition(name, what: str) -> None:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValueError(f"{what} must be a SLURM partition name (letters, digits, "
                         f"'_', '-', '.', '+'), got {name!r}.")


def _check_time(value, what: str, where: str = "") -> None:
    if not isinstance(value, str) or not _TIME_RE.fullmatch(value):
        raise ValueError(f"{what} must be HH:MM:SS or D-HH:MM:SS, got {value!r}{where}.")


def _check_count(value, what: str, low: int, where: str = "") -> int:
    """An integer >= ``low``, given as an int or as decimal digits (the queue's text form)."""
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
    if number is None or number < low:
        raise ValueError(f"{what} must be an integer >= {low}, got {value!r}{where}.")
    return number


def check_queue_settings(queue, values) -> None:
    """Check a protocol's queue settings (``_queueParams``): ``queue`` and ``{VARIABLE: value}``.

    ``JOB_TIME`` is ``HH:MM:SS`` or ``D-HH:MM:SS``, ``JOB_MEMORY`` (MB) and ``JOB_GPUS``
    integers, ``QUEUE_FOR_JOBS`` ``N`` (the whole protocol is one job); another variable
    holds one word of letters, digits and ``_ . : , + = @ / -``; the variables the engine
    fills itself (``JOB_SCRIPT``, ``JOB_COMMAND``...) cannot be set.  Every value is written
    into the job script or the submit command, which a shell runs.

    Raises
    ------
    ValueError
        Naming the setting, its value and the accepted form.
    """
    _check_partition(queue, "the queue")
    if not isinstance(values, dict):
        raise ValueError(f"the queue settings must be a JSON object of VARIABLE: value, got "
                         f"{values!r}.")
    for key, value in values.items():
        if not isinstance(key, str) or not _VARIABLE_RE.fullmatch(key):
            raise ValueError(f"queue variable names are upper-case words such as JOB_TIME, got "
                             f"{key!r}.")
        if key in _ENGINE_VARIABLES:
            raise ValueError(f"queue variable {key} is set by the engine, not by a protocol: "
                             "remove it from the queue settings.")
        if key == "JOB_TIME":
            _check_time(value, "JOB_TIME (time limit)")
        elif key == "JOB_MEMORY":
            _check_count(value, "JOB_MEMORY (memory, MB)", 1)
        elif key == "JOB_GPUS":
            _check_count(value, "JOB_GPUS (GPUs)", 0)
        elif key == QUEUE_FOR_JOBS:
            if value != "N":
                raise ValueError(f"{QUEUE_FOR_JOBS} must be 'N' (spfluo sends the whole "
                                 f"protocol as one job), got {value!r}.")
        elif isinstance(value, bool) or not isinstance(value, (str, int)) \
                or not _WORD_RE.fullmatch(str(value)):
            raise ValueError(f"queue variable {key} must be one word of letters, digits and "
                             f"'_ . : , + = @ / -', got {value!r}.")


def queue_settings_error(definition) -> str | None:
    """Why the queue settings of a protocol are refused, or None when they are fine.

    ``definition`` is a protocol (its ``_queueParams``) or one protocol of a workflow
    JSON (a dict whose ``_queueParams`` is the JSON text or the list ``[queue, {...}]``).
    """
    if isinstance(definition, dict):
        raw = definition.get("_queueParams")
    else:
        raw = definition._queueParams.get() if definition._queueParams.hasValue() else None
    if raw in (None, ""):
        return None
    try:
        settings = json.loads(raw) if isinstance(raw, str) else raw
        if not isinstance(settings, (list, tuple)) or len(settings) != 2:
            raise ValueError(f"they must be [queue, {{VARIABLE: value}}], got {raw!r}.")
        check_queue_settings(*settings)
    except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
        return (f"Queue settings (_queueParams): {exc} Fix them with `spfluo queue run ... "
                "--time HH:MM:SS --mem MB --gpus N`, or edit the workflow file.")
    return None
