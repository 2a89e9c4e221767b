"""A user's path through the `spfluo` command, from an acquisition's files to a result.

:func:`run_user_path` runs, each as a fresh ``python -m spfluo.cli`` process as a user
types it: create a project, import the fields, the bead and the picks, pick, extract with
the automatic voxel size and box, ab initio with the bead as the PSF (no resampling by
hand), show the project, export the particles and the volume.  Shared by
``spfluo/tests/cli/test_user_path.py`` and ``benchmarks/user_path.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field

__all__ = ["UserPath", "run_user_path"]


@dataclass
class UserPath:
    """What the commands printed and how long each took.

    Attributes
    ----------
    runs : dict
        Step name -> run id (the number ``spfluo run`` printed).
    outputs : dict
        Step name -> stdout of its command.
    seconds : dict
        Step name -> wall time of its command, seconds.
    failed : str or None
        The first step whose command exited non-zero, with its stderr.
    """

    runs: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    failed: str | None = None


def _spfluo(home, *args):
    env = dict(os.environ, SPFLUO_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "spfluo.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=3600)


def run_user_path(acquisition, *, home, project: str, export: str,
                  abinitio: dict | None = None) -> UserPath:
    """Run the commands on ``acquisition`` (:func:`spfluo.batch.simulated.write_acquisition`).

    ``abinitio`` holds more ab initio parameters (form names), e.g. a short run.  Stops at
    the first command that fails (``UserPath.failed``).
    """
    folder = os.path.dirname(str(acquisition.bead))
    path = UserPath()

    def step(name, *args):
        if path.failed:
            return None
        start = time.perf_counter()
        out = _spfluo(home, *args)
        path.seconds[name] = round(time.perf_counter() - start, 2)
        path.outputs[name] = out.stdout
        if out.returncode != 0:
            path.failed = f"{name}: exit {out.returncode}: {out.stderr.strip()}"
            return None
        found = re.search(r"^run #(\d+) ", out.stdout, re.MULTILINE)
        if found:
            path.runs[name] = found.group(1)
        return path.runs.get(name)

    step("create", "project", "create", project)
    images = step("images", "run", project, "ProtImportFluoImages",
                  f"filesPattern={os.path.join(folder, 'fov_*.tif')}")
    psf = step("psf", "run", project, "ProtImportPSF", f"psfFile={acquisition.bead}")
    picks = step("picks", "run", project, "ProtImportCoordinates",
                 f"inputImages={images}.outputImages", f"coordinatesFile={acquisition.picks}",
                 f"boxSize={1.25 * acquisition.diameter_um:g}")
    picked = step("pick", "run", project, "ProtPickParticles",
                  f"inputImages={images}.outputImages", f"inputExamples={picks}.outputCoordinates",
                  f"diameter={acquisition.diameter_um:g}")
    particles = step("extract", "run", project, "ProtExtractParticles",
                     f"inputCoordinates={picked}.outputCoordinates")
    params = [f"{k}={v}" for k, v in (abinitio or {}).items()]
    volume = step("abinitio", "run", project, "ProtAbInitio",
                  f"inputParticles={particles}.outputParticles", f"inputPSF={psf}.outputPSF",
                  *params)
    step("show", "project", "show", project)
    step("export", "export-particles", project, f"{volume}.outputParticles", export,
         "--volume", f"{volume}.outputVolume")
    return path
