"""The external-process boundary: ``python -m spfluo.jobs STEP job.json``.

Each step is a module ``spfluo.jobs.<step>`` with a ``run(job)`` function.
The job file lists every input path, every parameter and every output path;
nothing else passes.  A job loads its inputs, calls ``spfluo.algorithms``,
writes its outputs atomically, logs progress to stdout and exits non-zero
with a one-line reason on failure.  The same command runs without
pyworkflow, so every heavy step can be tested, profiled and benchmarked alone.
"""

from .jobfile import Job, JobError, Progress, load_job, write_job

__all__ = ["Job", "JobError", "Progress", "load_job", "write_job"]
