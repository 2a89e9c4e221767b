"""Run a job file in a fresh Python process, as a protocol runs it, and check its imports.

The process calls ``spfluo.jobs.__main__.main([step, job])`` and then prints, on its last
stdout line, whether pyworkflow and matplotlib were imported (``"False False"`` when
neither was: a job must run without the plugin layer).
"""

import subprocess
import sys

__all__ = ["run_job_in_subprocess", "assert_ran_without_pyworkflow"]

_CODE = ("import sys; from spfluo.jobs.__main__ import main; rc = main(sys.argv[1:]); "
         "print('pyworkflow' in sys.modules, 'matplotlib' in sys.modules); sys.exit(rc)")


def run_job_in_subprocess(step, job, cwd) -> subprocess.CompletedProcess:
    """Run the job file ``job`` of ``step`` in a new process started in ``cwd``.

    Returns the finished process, stdout and stderr captured as text.
    """
    return subprocess.run([sys.executable, "-c", _CODE, step, str(job)], cwd=cwd,
                          capture_output=True, text=True)


def assert_ran_without_pyworkflow(out: subprocess.CompletedProcess):
    """The job exited 0 (its stderr otherwise) without importing pyworkflow or matplotlib."""
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False False"
