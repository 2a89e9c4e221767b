"""Small helpers shared by spfluo protocols: job files, GPU parameters, resume keys.

``ProtFluo`` adds no behaviour driven by flags: it gives every protocol the
same way to write its job file, run ``python -m spfluo.jobs STEP`` (on the
CPU or on the GPUs pyworkflow assigned), read the job's JSON results back,
and make resume safe.  ``ProtFluoJob`` is the protocol that runs one job:
``convertInputStep`` -> ``computeStep`` -> ``createOutputStep``.

Resume safety: pyworkflow's "continue" mode re-runs a step only when that
step's own arguments changed.  Every spfluo step therefore receives
``self._paramsKey()``, a digest of all form values, so changing any parameter
re-runs every step instead of leaving stale outputs.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys

import pyworkflow.object as pwobj
import pyworkflow.protocol as pwprot
import pyworkflow.protocol.params as params

from ..constants import (
    DEVICE_CPU,
    DEVICE_GPU,
    JOB_ERROR_FILE,
    JOB_FILE,
    JOB_MODULE,
    WORKER_LOCK,
)
from ..errors import ProjectError
from ..io import (
    LockHeld,
    hold_lock,
    lock_holder,
    read_job_error,
    read_summary,
    remove_temporaries,
    write_job,
)
from ..algorithms.limits import MAX_GPU_ID, MAX_SEED, memory_error
from ..queue_settings import queue_settings_error
from ..safepaths import check_project_folder, unsafe_characters

__all__ = ["ProtFluo", "ProtFluoJob", "IntRange", "JobFailed", "add_count_param",
           "add_gpu_params", "add_seed_param", "gpu_list_error", "gpu_errors", "job_failure",
           "machine_memory_bytes", "memory_errors", "MEMORY_VAR", "pointed", "run_worker"]

#: prctl(2) option: the signal a process gets when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


def gpu_list_error(text) -> str | None:
    """Why ``text`` is not a list of GPU ids, or None when it is one.

    GPU ids are numbers separated by spaces or commas, or ranges ``a-b`` (``"0"``,
    ``"0 1"``, ``"0,2"``, ``"0-3"``), each at most :data:`spfluo.algorithms.limits.MAX_GPU_ID`: what
    the engine's parser reads without failing.
    """
    tokens = re.split(r"[,\s]+", text.strip()) if isinstance(text, str) else []
    ranges = [re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", t, re.ASCII) for t in tokens if t]
    if ranges and all(ranges):
        bounds = [(int(m.group(1)), int(m.group(2) or m.group(1))) for m in ranges]
        if all(a <= b <= MAX_GPU_ID for a, b in bounds):
            return None
    return (f"GPU ids {text!r} are not a list of GPU ids: give numbers separated by spaces "
            f"or commas, or ranges such as 0-3 (e.g. '0' or '0 1'), each at most "
            f"{MAX_GPU_ID}.")


def gpu_errors(gpu_ids) -> list[str]:
    """Why the GPUs ``gpu_ids`` cannot be used here: CuPy must import and CUDA must show
    every listed id (after ``CUDA_VISIBLE_DEVICES``); empty when they can."""
    off = "or turn Use GPU off (useGpu=false)"
    try:
        import cupy
    except Exception as exc:  # not installed, or its CUDA libraries fail to load
        return [f"Use GPU is on but CuPy cannot be imported ({type(exc).__name__}: {exc}): "
                f"install it (`pip install 'scipion-fluo-spfluo[gpu]'`, CUDA 12) {off}."]
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # no driver, no device
        return [f"Use GPU is on but CUDA finds no GPU ({type(exc).__name__}: {exc}): check "
                f"the driver (`nvidia-smi`) {off}."]
    missing = sorted({int(g) for g in gpu_ids if int(g) >= count})
    if not missing:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    shown = f"ids 0 to {count - 1}" if count else "none"
    return [f"GPU id(s) {', '.join(map(str, missing))} are not visible: this machine shows "
            f"{count} GPU(s) ({shown}"
            + (f", CUDA_VISIBLE_DEVICES={visible}" if visible is not None else "")
            + f"): change the GPU ids (gpuList) {off}."]


#: Environment variable: the memory a run may use, in GB (default: the machine's).
MEMORY_VAR = "SPFLUO_MEMORY_GB"


def machine_memory_bytes() -> float | None:
    """Memory a run may use on this machine, bytes: ``$SPFLUO_MEMORY_GB`` when set (e.g. the
    memory of the nodes of a queue), else the smaller of the RAM and the cgroup limit (a
    container's, a batch job's); None when unknown.

    Raises ``ValueError`` when ``$SPFLUO_MEMORY_GB`` is not a positive number.
    """
    given = os.environ.get(MEMORY_VAR)
    if given:
        try:
            value = float(given)
        except ValueError:
            value = float("nan")
        if not value > 0:
            raise ValueError(f"{MEMORY_VAR}={given!r} is not a positive number of GB: fix or "
                             "unset it.")
        return value * 1e9
    sizes = []
    try:
        import psutil

        sizes.append(float(psutil.virtual_memory().total))
    except Exception:  # psutil missing or unsupported platform
        pass
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(limit).read().strip()
        except OSError:
            continue
        if text.isdigit():
            sizes.append(float(text))
    return min(sizes) if sizes else None


def memory_errors(estimate_bytes: float, *, what: str, fix: str) -> list[str]:
    """A refusal when ``estimate_bytes`` exceeds :func:`machine_memory_bytes` (else [])."""
    try:
        available = machine_memory_bytes()
    except ValueError as exc:
        return [str(exc)]
    error = memory_error(estimate_bytes, available, what=what, fix=fix)
    return [error] if error else []


def add_gpu_params(form, *, default_use_gpu: bool = False) -> None:
    """Optional GPU use: a 'Use GPU' switch and the GPU ids (pyworkflow's GPU params)."""
    form.addHidden(params.USE_GPU, params.BooleanParam, default=default_use_gpu,
                   label="Use GPU",
                   help="Run the computation on a CUDA GPU with CuPy "
                        "(install with `pip install scipion-fluo-spfluo[gpu]`).")
    form.addHidden(params.GPU_LIST, params.StringParam, default="0",
                   label="GPU ids", help="GPU ids to use, e.g. '0' or '0 1'.")


class IntRange:
    """Form validator of a count parameter: at most ``maximum`` (and at least ``minimum``).

    pyworkflow calls it on the value when the parameter applies and prefixes the label
    to the message.  The maxima live in :mod:`spfluo.algorithms.limits`; a minimum that needs a
    more specific message stays in the protocol's ``_validate``.
    """

    def __init__(self, maximum: int, minimum: int | None = None):
        self.maximum, self.minimum = int(maximum), minimum

    def __call__(self, value) -> list[str]:
        if value is None:
            return []
        if value > self.maximum:
            return [f"must be at most {self.maximum:,}, got {value:,}: lower it (the work "
                    "grows with it; spfluo.algorithms.limits lists the maxima)."]
        if self.minimum is not None and value < self.minimum:
            return [f"must be at least {self.minimum}, got {value}."]
        return []


def add_count_param(parent, name: str, *, maximum: int, minimum: int | None = None,
                    help: str = "", **kwargs):
    """Add the IntParam ``name`` to ``parent`` (a form or a line) with its maximum.

    The maximum is checked by an :class:`IntRange` validator and written in the help.
    """
    text = f"{help} At most {maximum:,}." if help else f"At most {maximum:,}."
    return parent.addParam(name, params.IntParam, validators=[IntRange(maximum, minimum)],
                           help=text, **kwargs)


def add_seed_param(form) -> None:
    add_count_param(form, "seed", minimum=0, maximum=MAX_SEED, default=0,
                    expertLevel=params.LEVEL_ADVANCED, label="Random seed",
                    help="The same seed gives the same result on the CPU.")


def _dies_with_parent():
    """A ``preexec_fn`` that makes the child get SIGKILL when this process dies (Linux).

    None elsewhere.  libc is loaded here, in the parent, so the child only calls prctl.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec():
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: do not outlive it
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def run_worker(argv: list[str], *, env: dict | None = None) -> None:
    """Run ``argv`` (no shell) as a child that dies with this process; wait for it.

    The child stays in this process's group (a stop of the run kills both) and, on Linux,
    gets SIGKILL as soon as this process dies, kill -9 included, so that no worker keeps
    running without its runner.  Its output goes to this process's stdout and stderr (the
    run's logs).  A non-zero exit raises :class:`subprocess.CalledProcessError`.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    proc = subprocess.Popen(argv, shell=False, env=env, stdout=sys.stdout, stderr=sys.stderr,
                            start_new_session=False, preexec_fn=_dies_with_parent())
    try:
        returncode = proc.wait()
    except BaseException:  # interrupted: the worker does not outlive the step
        proc.kill()
        proc.wait()
        raise
    if returncode != 0:
        raise subprocess.CalledProcessError(returncode, shlex.join(argv))


class JobFailed(RuntimeError):
    """A job of a run failed; the message is the reason (the run's error message)."""


def job_failure(step: str, returncode: int, error_file: str) -> str:
    """Why the job ``step`` failed: the reason it wrote to ``error_file``
    (:func:`spfluo.io.read_job_error`), else what its exit status says."""
    reason = read_job_error(error_file)
    if reason:
        return reason
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        if -returncode == signal.SIGKILL:
            return (f"job {step} was killed ({name}), most often by the system when memory "
                    "runs out (the out-of-memory killer; `dmesg` tells): use fewer or smaller "
                    "particles, or a machine with more memory, then continue the run")
        return f"job {step} was stopped by {name}"
    return (f"job {step} exited with status {returncode} without saying why (no "
            f"{os.path.basename(error_file)}): see the run's log")


def pointed(pointer):
    """The object ``pointer`` points to, or None when the pointer is missing or unset."""
    return pointer.get() if pointer is not None and pointer.hasValue() else None


class ProtFluo(pwprot.Protocol):
    """Base of spfluo protocols (not shown in the GUI).

    :meth:`validate` adds the checks every run needs before pyworkflow's own
    validation and the protocol's ``_validate``: a project folder that a shell
    would not interpret (the engine launches runs through one), queue settings that
    cannot add a line to the job script (:func:`spfluo.queue_settings.check_queue_settings`), a
    GPU list the engine can read (:func:`gpu_list_error`), and no worker still running in
    the run's folder.
    """

    _label = None

    # --------------------------- INFO functions -------------------------------
    def validate(self):
        """Errors of the run (empty when it may be launched): spfluo's checks, then pyworkflow's.

        Inputs of the wrong type are reported alone: the protocol's own checks assume the
        types its form declares.
        """
        typed = self._inputTypeErrors()
        if typed:
            return self._launchErrors() + typed
        return self._launchErrors() + super().validate()

    def _inputTypeErrors(self) -> list[str]:
        """An error for every input that points to an object of another type than its form's."""
        errors = []
        for name, param in self.getDefinition().iterParams():
            if not isinstance(param, params.PointerParam):
                continue
            attr = getattr(self, name)
            pointers = attr if isinstance(attr, pwobj.PointerList) else [attr]
            expected = [c.strip() for c in (param.pointerClass.get() or "").split(",")
                        if c.strip()]
            for pointer in pointers:
                obj = pointed(pointer)
                if obj is None or not expected or any(
                        cls.__name__ in expected for cls in type(obj).__mro__):
                    continue
                source = pointer.getObjValue()
                where = f"run {source.getObjId()}" if isinstance(source, pwprot.Protocol) \
                    else f"object {obj.getObjId()}"
                ext = pointer.getExtended()
                errors.append(f"{param.label.get() or name} ({name}) must be a "
                              f"{' or '.join(expected)}, but {where}"
                              f"{'.' + ext if ext else ''} is a {type(obj).__name__}: choose "
                              f"an output of type {' or '.join(expected)} (`spfluo project "
                              "show` lists the outputs and their types).")
        return errors

    def _launchErrors(self) -> list[str]:
        """What makes launching this run unsafe, whatever its protocol."""
        errors = []
        lock = self._workerLock()
        holder = lock_holder(lock) if lock is not None else None
        if holder is not None:
            who = f"process {holder}" if holder > 0 else "another process"
            stop = f" or stop it (`kill {holder}`)" if holder > 0 else ""
            errors.append(f"Run {self.getObjId()} still has a worker running ({who}, lock "
                          f"{lock}): wait for it to end{stop} before continuing the run.")
        project = self.getProject()
        if project is not None:
            try:
                check_project_folder(project.getPath())
            except ProjectError as exc:
                errors.append(str(exc))
        queue_error = queue_settings_error(self)
        if queue_error:
            errors.append(queue_error)
        if self.useQueue():  # the run's label can be a variable of the job script
            bad = [c for c in unsafe_characters(self.getRunName()) if c != " "]
            if bad:
                errors.append(f"The label {self.getRunName()!r} of a run sent to a queue "
                              f"cannot hold {', '.join(map(repr, bad))} (the job script is "
                              "run by a shell): change the label.")
        if self.hasAttribute(params.GPU_LIST):
            gpu_error = gpu_list_error(self.gpuList.get())
            if gpu_error:
                errors.append(gpu_error)
            elif self.usesGpu() and not self.useQueue():  # a queue's GPUs are on its nodes
                errors.extend(gpu_errors(self.getGpuList()))
        return errors

    def _run(self):
        """The engine's run, after removing what an interrupted run left (see below)."""
        self._removeTemporaries()
        super()._run()

    # --------------------------- UTILS functions ------------------------------
    def _workerLock(self) -> str | None:
        """The run's worker lock file (beside its job files), None before the run has a folder."""
        return self._getExtraPath(WORKER_LOCK) if self.workingDir.get() else None

    def _removeTemporaries(self) -> None:
        """Delete the temporary files of writes that a kill interrupted (``.NAME.<hex>.tmp``).

        Done under the run's worker lock, so never while a worker writes; when another
        worker holds it, nothing is removed (and validation refuses the run).
        """
        lock = self._workerLock()
        if lock is None or not os.path.isdir(self._getExtraPath()):
            return
        try:
            with hold_lock(lock):
                removed = remove_temporaries(self.getWorkingDir())
        except LockHeld:
            return
        for path in removed:
            self.info(f"removed {path}, left by an interrupted write")

    def _paramsKey(self) -> str:
        """Digest of every form value (pointers by target id + extended name)."""
        values = {}
        for name, attr in self.iterDefinitionAttributes():
            if isinstance(attr, pwobj.Pointer):
                target = attr.getObjValue()
                values[name] = [None if target is None else target.getObjId(), attr.getExtended()]
            else:
                values[name] = attr.getObjValue()
        text = json.dumps(values, sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def _device(self) -> str:
        return DEVICE_GPU if (self.allowsGpu() and self.usesGpu()) else DEVICE_CPU

    def _jobPath(self, step: str) -> str:
        return self._getExtraPath(f"{step}_{JOB_FILE}")

    def _writeJob(self, step: str, *, inputs: dict, params: dict, outputs: dict,
                  seed: int | None = None) -> str:
        """Write ``extra/<step>_job.json`` (paths relative to the project folder)."""
        path = self._jobPath(step)
        write_job(path, step=step, inputs=inputs, params=params, outputs=outputs,
                  device=self._device(), threads=max(1, self.numberOfThreads.get() or 1),
                  seed=seed)
        return path

    def _readJobJson(self, name: str) -> dict:
        """The JSON file ``extra/<name>`` that a job wrote (its summary or report)."""
        return read_summary(self._getExtraPath(name))

    def _runSpfluoJob(self, step: str) -> None:
        """Run ``python -m spfluo.jobs STEP extra/<step>_job.json`` as a worker process.

        No shell is involved (:func:`run_worker`); on a GPU, ``CUDA_VISIBLE_DEVICES``
        holds the ids the engine assigned to this step.
        """
        argv = [sys.executable, "-m", JOB_MODULE, step, self._jobPath(step)]
        env = dict(self._getEnviron() or os.environ)
        devices = ""
        if self._device() == DEVICE_GPU:
            gpus = (self._stepsExecutor.getGpuList() if self._stepsExecutor is not None
                    else None) or self.getGpuList()
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
            devices = f" (CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']})"
        self.info(f"** Running command: ** {shlex.join(argv)}{devices}")
        try:
            run_worker(argv, env=env)
        except subprocess.CalledProcessError as exc:
            raise JobFailed(job_failure(step, exc.returncode,
                                        self._getExtraPath(JOB_ERROR_FILE))) from None

    def _defineSources(self, outputs, *pointers) -> None:
        """Record provenance: every output derives from every given input pointer."""
        for pointer in pointers:
            if pointer is None or not pointer.hasValue():
                continue
            for out in outputs:
                self._defineRelation(pwobj.RELATION_SOURCE, pointer, out)


class ProtFluoJob(ProtFluo):
    """Base of the protocols that run one spfluo job (not shown in the GUI).

    Subclasses set ``_jobStep`` (the job's STEP name) and define
    ``convertInputStep(key)`` (write the inputs and the job file with
    :meth:`_writeJob`) and ``createOutputStep(key)`` (read the job's files back
    into objects); ``computeStep`` runs the job as an external process.
    """

    _label = None
    #: STEP of ``python -m spfluo.jobs STEP``, set by every subclass.
    _jobStep = None

    # --------------------------- INSERT steps functions -----------------------
    def _insertAllSteps(self):
        key = self._paramsKey()
        self._insertFunctionStep(self.convertInputStep, key)
        self._insertFunctionStep(self.computeStep, key)
        self._insertFunctionStep(self.createOutputStep, key)

    # --------------------------- STEPS functions ------------------------------
    def computeStep(self, key):
        self._runSpfluoJob(self._jobStep)

    # --------------------------- UTILS functions ------------------------------
    def _halfMapOutputs(self) -> dict:
        """Job outputs of a gold-standard run: the two half maps and their FSC (CSV)."""
        return {"half1": self._getExtraPath("half1.ome.tif"),
                "half2": self._getExtraPath("half2.ome.tif"),
                "fsc": self._getExtraPath("fsc.csv")}

    def _setHalfMaps(self, volume, summary: dict) -> None:
        """Attach the half maps, FSC file, resolution (µm, first channel), its verdict and
        the optical cutoff (µm) to ``volume``.

        Nothing is attached when the job's ``summary`` says it made no half maps; the
        resolution is left unset unless it was measured (the verdict then says why).
        """
        if not summary.get("half_maps"):
            return
        files = self._halfMapOutputs()
        volume.setHalfMaps(files["half1"], files["half2"])
        volume.setFscFile(files["fsc"])
        res = summary["resolution_um"][0]
        if res is not None:
            volume.setResolution(res)
        texts = summary.get("resolution_text")
        if texts and texts[0]:
            volume.setResolutionText(texts[0])
        if summary.get("cutoff_um"):
            volume.setOpticalCutoff(summary["cutoff_um"])
