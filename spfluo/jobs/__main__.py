"""``python -m spfluo.jobs STEP job.json``: run one job, exit non-zero with a reason on failure.

The job holds the worker lock of its folder (:data:`~spfluo.constants.WORKER_LOCK` beside
the job file) while it runs: a second job in the same run folder is refused.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

from ..constants import EXIT_JOB_ERROR, WORKER_LOCK
from ..io import LockHeld, hold_lock
from .jobfile import JobError, load_job

_NOT_STEPS = {"jobfile"}


def available_steps() -> list[str]:
    import spfluo.jobs as pkg

    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)
                  if not m.name.startswith("_") and m.name not in _NOT_STEPS)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spfluo.jobs",
                                     description="Run one spfluo job from its job file.")
    parser.add_argument("step", help="the step to run: " + ", ".join(available_steps()))
    parser.add_argument("job", help="path of the job.json file")
    args = parser.parse_args(argv)
    if args.step not in available_steps():
        print(f"spfluo job: unknown step {args.step!r}; known: {', '.join(available_steps())}",
              file=sys.stderr)
        return EXIT_JOB_ERROR
    try:
        job = load_job(args.job)
        if job.step != args.step:
            raise JobError(f"job file {args.job} is for step {job.step!r}, not {args.step!r}")
        module = importlib.import_module(f"spfluo.jobs.{args.step}")
        with hold_lock(Path(args.job).parent / WORKER_LOCK):
            module.run(job)
    except LockHeld as exc:
        print(f"spfluo job {args.step}: another worker is running in this run folder ({exc}): "
              "wait for it to end, or stop it, before running the job again",
              file=sys.stderr, flush=True)
        return EXIT_JOB_ERROR
    except (JobError, ValueError, FileNotFoundError) as exc:
        print(f"spfluo job {args.step}: {exc}", file=sys.stderr, flush=True)
        return EXIT_JOB_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
