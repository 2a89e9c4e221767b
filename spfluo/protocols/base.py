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

import hashlib
import json
import shlex
import sys

import pyworkflow.object as pwobj
import pyworkflow.protocol as pwprot
import pyworkflow.protocol.params as params

from ..constants import DEVICE_CPU, DEVICE_GPU, JOB_FILE, JOB_MODULE
from ..errors import ProjectError
from ..jobs.jobfile import write_job
from ..limits import MAX_SEED
from ..queue import queue_settings_error
from ..safepaths import check_project_folder

__all__ = ["ProtFluo", "ProtFluoJob", "IntRange", "add_count_param", "add_gpu_params",
           "add_seed_param", "pointed"]


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
    to the message.  The maxima live in :mod:`spfluo.limits`; a minimum that needs a
    more specific message stays in the protocol's ``_validate``.
    """

    def __init__(self, maximum: int, minimum: int | None = None):
        self.maximum, self.minimum = int(maximum), minimum

    def __call__(self, value) -> list[str]:
        if value is None:
            return []
        if value > self.maximum:
            return [f"must be at most {self.maximum:,}, got {value:,}: lower it (the work "
                    "grows with it; spfluo.limits lists the maxima)."]
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


def pointed(pointer):
    """The object ``pointer`` points to, or None when the pointer is missing or unset."""
    return pointer.get() if pointer is not None and pointer.hasValue() else None


class ProtFluo(pwprot.Protocol):
    """Base of spfluo protocols (not shown in the GUI).

    :meth:`validate` adds the checks every run needs before pyworkflow's own
    validation and the protocol's ``_validate``: a project folder that a shell
    would not interpret (the engine launches runs through one), and queue settings
    that cannot add a line to the job script (:func:`spfluo.queue.check_queue_settings`).
    """

    _label = None

    # --------------------------- INFO functions -------------------------------
    def validate(self):
        """Errors of the run (empty when it may be launched): spfluo's checks, then pyworkflow's."""
        return self._launchErrors() + super().validate()

    def _launchErrors(self) -> list[str]:
        """What makes launching this run unsafe, whatever its protocol."""
        errors = []
        project = self.getProject()
        if project is not None:
            try:
                check_project_folder(project.getPath())
            except ProjectError as exc:
                errors.append(str(exc))
        queue_error = queue_settings_error(self)
        if queue_error:
            errors.append(queue_error)
        return errors

    # --------------------------- UTILS functions ------------------------------
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
        with open(self._getExtraPath(name)) as fh:
            return json.load(fh)

    def _runSpfluoJob(self, step: str) -> None:
        """Run ``python -m spfluo.jobs STEP extra/<step>_job.json`` as an external process."""
        program = shlex.quote(sys.executable)
        if self._device() == DEVICE_GPU:
            # pyworkflow substitutes %(GPU)s with the comma-separated ids it assigned
            program = f"CUDA_VISIBLE_DEVICES=%(GPU)s {program}"
        args = f"-m {JOB_MODULE} {step} {shlex.quote(self._jobPath(step))}"
        self.runJob(program, args, numberOfMpi=1)

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
        """Attach the half maps, FSC file and resolution (µm, first channel) to ``volume``.

        Nothing is attached when the job's ``summary`` says it made no half maps; the
        resolution is left unset when the FSC never fell below the threshold.
        """
        if not summary.get("half_maps"):
            return
        files = self._halfMapOutputs()
        volume.setHalfMaps(files["half1"], files["half2"])
        volume.setFscFile(files["fsc"])
        res = summary["resolution_um"][0]
        if res is not None:
            volume.setResolution(res)
