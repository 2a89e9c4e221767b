"""``python -m spfluo.jobs STEP job.json``: run one job, exit non-zero with a reason on failure.

The job holds the worker lock of its folder (:data:`~spfluo.constants.WORKER_LOCK` beside
the job file) while it runs: a second job in the same run folder is refused.

A failed job writes why to :data:`~spfluo.constants.JOB_ERROR_FILE` beside its job file
(:func:`spfluo.io.write_job_error`: the exception's type, its message, the step, the last
progress line and, for an unexpected error, where it was raised), which the protocol makes
the run's error message; an earlier run's error file is removed when the job starts.
Rejected input exits with :data:`~spfluo.constants.EXIT_JOB_ERROR`, anything else (out of
memory, a full disk, a bug: the traceback goes to stderr) with
:data:`~spfluo.constants.EXIT_JOB_CRASH`.  A job that succeeds ends its log with its peak
resident memory.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import shutil
import sys
import traceback
from pathlib import Path

from ..constants import EXIT_JOB_CRASH, EXIT_JOB_ERROR, JOB_ERROR_FILE, WORKER_LOCK
from ..io import LockHeld, hold_lock, write_job_error
from .jobfile import JobError, Progress, load_job

_NOT_STEPS = {"jobfile"}


def available_steps() -> list[str]:
    import spfluo.jobs as pkg

    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)
                  if not m.name.startswith("_") and m.name not in _NOT_STEPS)


def _gigabytes(n_bytes: float) -> str:
    return f"{n_bytes / 1024 ** 3:.1f} GB"


def _peak_memory_mb() -> float:
    """The largest resident memory of this process so far, MB (Linux: ru_maxrss in kB)."""
    import resource

    scale = 1024 if sys.platform.startswith("linux") else 1
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e6


def _memory_total() -> float | None:
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _reason(exc: BaseException, folder: Path) -> str:
    """The message of an unexpected error, with what to do for memory and disk errors."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        where = "GPU" if type(exc).__name__ == "OutOfMemoryError" else "machine"
        total = _memory_total() if where == "machine" else None
        size = f" ({_gigabytes(total)} of RAM)" if total else ""
        return (f"out of memory on this {where}{size}: {text}; use fewer or smaller particles "
                "(a coarser voxel size or a smaller box), a smaller batch, or a machine with "
                "more memory")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = f" ({_gigabytes(shutil.disk_usage(folder).free)} free)"
        except OSError:
            free = ""
        full = "the disk is full" if exc.errno == errno.ENOSPC else "the disk quota is exceeded"
        return (f"{full} writing {exc.filename or folder}{free}: free space there or move the "
                "project to a larger disk, then continue the run")
    return text


def _where(exc: BaseException) -> str | None:
    """``file:line in function`` of the innermost spfluo frame of the traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f"{os.sep}spfluo{os.sep}" in f.filename] or frames
    if not ours:
        return None
    f = ours[-1]
    name = f.filename.split(f"{os.sep}spfluo{os.sep}")[-1]
    return f"spfluo/{name}:{f.lineno} in {f.name}"


def _record(folder: Path, step: str, exc: BaseException, *, expected: bool) -> str:
    """Write the job's error file (best effort: a full disk may refuse it too); returns the
    message."""
    message = str(exc) if expected else _reason(exc, folder)
    try:
        write_job_error(folder / JOB_ERROR_FILE, step=step, error_type=type(exc).__name__,
                        message=message, stage=Progress.last_line,
                        where=None if expected else _where(exc))
    except OSError:
        pass
    return message


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
    folder = Path(args.job).parent
    try:
        job = load_job(args.job)
        if job.step != args.step:
            raise JobError(f"job file {args.job} is for step {job.step!r}, not {args.step!r}")
        module = importlib.import_module(f"spfluo.jobs.{args.step}")
        with hold_lock(folder / WORKER_LOCK):
            (folder / JOB_ERROR_FILE).unlink(missing_ok=True)  # an earlier run's
            module.run(job)
        print(f"spfluo job {args.step}: peak resident memory {_peak_memory_mb():.0f} MB",
              flush=True)
    except LockHeld as exc:
        print(f"spfluo job {args.step}: another worker is running in this run folder ({exc}): "
              "wait for it to end, or stop it, before running the job again",
              file=sys.stderr, flush=True)
        return EXIT_JOB_ERROR
    except (JobError, ValueError, FileNotFoundError) as exc:
        _record(folder, args.step, exc, expected=True)
        print(f"spfluo job {args.step}: {exc}", file=sys.stderr, flush=True)
        return EXIT_JOB_ERROR
    except Exception as exc:  # out of memory, a full disk, a bug: the reason, then the trace
        message = _record(folder, args.step, exc, expected=False)
        traceback.print_exc()
        print(f"spfluo job {args.step}: {type(exc).__name__}: {message}", file=sys.stderr,
              flush=True)
        return EXIT_JOB_CRASH
    return 0


if __name__ == "__main__":
    sys.exit(main())
