"""Small helpers shared by spfluo protocols: job files, GPU parameters, resume keys.

``ProtFluo`` adds no behaviour driven by flags: it gives every protocol the
same way to write its job file, run ``python -m spfluo.jobs STEP`` (on the
CPU or on the GPUs pyworkflow assigned), and make resume safe.

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
from ..jobs.jobfile import write_job

__all__ = ["ProtFluo", "add_gpu_params", "add_seed_param"]


def add_gpu_params(form, *, default_use_gpu: bool = False) -> None:
    """Optional GPU use: a 'Use GPU' switch and the GPU ids (pyworkflow's GPU params)."""
    form.addHidden(params.USE_GPU, params.BooleanParam, default=default_use_gpu,
                   label="Use GPU",
                   help="Run the computation on a CUDA GPU with CuPy "
                        "(install with `pip install scipion-fluo-spfluo[gpu]`).")
    form.addHidden(params.GPU_LIST, params.StringParam, default="0",
                   label="GPU ids", help="GPU ids to use, e.g. '0' or '0 1'.")


def add_seed_param(form) -> None:
    form.addParam("seed", params.IntParam, default=0, expertLevel=params.LEVEL_ADVANCED,
                  label="Random seed",
                  help="The same seed gives the same result on the CPU.")


class ProtFluo(pwprot.Protocol):
    """Base of spfluo protocols (not shown in the GUI)."""

    _label = None

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
