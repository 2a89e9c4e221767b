"""Validated values read from a job file: parameters, the particle files, a volume input.

Every check raises :class:`~spfluo.jobs.jobfile.JobError` with the one-line reason
``job <step>: <message>`` (``<step>`` is ``job.step``, the module of the step: the CLI
refuses a job file whose step is another).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from ..algorithms.backend import Backend, get_backend
from ..algorithms.geometry import um_to_voxels, voxels_to_um
from ..algorithms.limits import psf_size_error
from ..algorithms.psf_preparation import prepare_psf
from ..io import (
    ParticleTable,
    particle_stack_info,
    read_particle_stack,
    read_particle_table,
    read_shape,
    read_volume,
    read_voxel_size,
    write_volume,
)
from .jobfile import Job, JobError

__all__ = [
    "fail", "reject_renamed_params", "choice_param", "int_param", "float_param", "is_weight",
    "bool_param",
    "channels_param", "seed_param", "job_backend", "ParticleFiles", "read_particle_files",
    "read_particle_data", "particle_voxel_size", "read_volume_input", "read_psf_input",
    "mask_radius_param",
]


def fail(job: Job, message: str) -> NoReturn:
    """Raise the JobError ``job <step>: <message>``."""
    raise JobError(f"job {job.step}: {message}")


# ----------------------------------------------------------------------------- parameters
def reject_renamed_params(job: Job, renamed: dict[str, str], *,
                          why: str = "micrometres") -> None:
    """Fail on a parameter of an older job file (``renamed``: old name -> new name), e.g. a
    length in voxels that job files now carry in micrometres (``why``)."""
    for old, new in renamed.items():
        if job.param(old, None) is not None:
            fail(job, f"parameter '{old}' is now '{new}' ({why}); write the job file again")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def choice_param(job: Job, name: str, default: Any, choices) -> Any:
    """Parameter ``name``, one of ``choices`` (the allowed values, listed in the message)."""
    value = job.param(name, default)
    if value not in choices:
        fail(job, f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def int_param(job: Job, name: str, default: Any = ..., *, minimum: int,
              maximum: int | None = None, allow_none: bool = False) -> int | None:
    """Integer parameter ``name`` in ``[minimum, maximum]`` (an integral float is accepted).

    ``maximum`` is the parameter's bound of :mod:`spfluo.algorithms.limits` (None: none, for values
    that set no amount of work).  ``default`` ``...`` makes the parameter required; with
    ``allow_none`` a null value (given or default) is returned as None.
    """
    value = job.param(name, default)
    if value is None and allow_none:
        return None
    if (not _is_number(value) or not math.isfinite(value) or int(value) != value
            or value < minimum or (maximum is not None and value > maximum)):
        bound = f" and <= {maximum}" if maximum is not None else ""
        fail(job, f"parameter '{name}' must be an integer >= {minimum}{bound}, got {value!r}")
    return int(value)


def float_param(job: Job, name: str, default: Any = ..., *, low: float, strict: bool = False,
                high: float | None = None, allow_none: bool = False) -> float | None:
    """Finite number parameter ``name`` >= ``low`` (> ``low`` when ``strict``), at most
    ``high`` when given.

    ``default`` ``...`` makes the parameter required; with ``allow_none`` a null value
    (given or default) is returned as None.
    """
    value = job.param(name, default)
    if value is None and allow_none:
        return None
    if not (_is_number(value) and math.isfinite(value)
            and (value > low if strict else value >= low)
            and (high is None or value <= high)):
        bound = "" if high is None else f" and <= {high:g}"
        fail(job, f"parameter '{name}' must be a number {'>' if strict else '>='} {low:g}"
                  f"{bound}, got {value!r}")
    return float(value)


def mask_radius_param(job: Job, voxel: float, box: int):
    """Parameter ``mask_radius_um``: the radius of the spherical support in voxels
    (``"default"`` when absent, None when null), between 2 voxels and the box corner."""
    if "mask_radius_um" not in job.params:
        return "default"
    value = job.param("mask_radius_um")
    if value is None:
        return None
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        fail(job, f"parameter 'mask_radius_um' must be a radius > 0 in micrometres or null "
                  f"(no support), got {value!r}")
    radius = um_to_voxels(float(value), voxel)
    corner = math.sqrt(3.0) * box / 2
    if not 2.0 <= radius <= corner:
        fail(job, f"parameter 'mask_radius_um' {value:g} µm is {radius:.1f} voxels: give a "
                  f"radius between {voxels_to_um(2.0, voxel):.3g} and "
                  f"{voxels_to_um(corner, voxel):.3g} µm (2 voxels to the box corner) or null")
    return radius


def is_weight(value: Any) -> bool:
    """Whether ``value`` is a regularisation weight: a finite number >= 0, or a non-empty
    list of them (one per channel)."""
    values = value if isinstance(value, list) else [value]
    return bool(values) and all(_is_number(v) and math.isfinite(v) and v >= 0 for v in values)


def bool_param(job: Job, name: str, default: bool) -> bool:
    """Boolean parameter ``name`` (JSON true or false, nothing else)."""
    value = job.param(name, default)
    if not isinstance(value, bool):
        fail(job, f"{name} must be true or false, got {value!r}")
    return value


def channels_param(job: Job) -> list[int] | None:
    """Parameter ``channels``: null (all channels) or a non-empty list of integer indices.

    The indices are not checked against the number of channels here.
    """
    value = job.param("channels", None)
    if value is not None and (not isinstance(value, list) or not value or not all(
            isinstance(c, int) and not isinstance(c, bool) for c in value)):
        fail(job, f"parameter 'channels' must be null or a non-empty list of channel indices, "
                  f"got {value!r}")
    return value


def seed_param(job: Job) -> int:
    """The job's seed (0 when the job file gives none); it must be an integer."""
    seed = job.seed if job.seed is not None else 0
    if isinstance(seed, bool) or not isinstance(seed, int):
        fail(job, f"seed must be an integer, got {seed!r}")
    return seed


def job_backend(job: Job) -> Backend:
    """The array backend of ``job.device`` (a GPU without CuPy is a JobError)."""
    try:
        return get_backend(job.device)
    except RuntimeError as exc:
        fail(job, str(exc))


# ----------------------------------------------------------------------------- particles
@dataclass(frozen=True)
class ParticleFiles:
    """The particle table of a job and what the headers of its files say.

    Attributes
    ----------
    table : ParticleTable
        The input ``particles`` table.
    paths : list of str
        One particle file per row (every one exists).
    n_channels : int
        Channels ``C`` of every particle.
    box : list of 3 int
        ``(z, y, x)`` box of every particle, in voxels (a cube).
    file_voxel_size : tuple of 3 float or None
        ``(z, y, x)`` in micrometres from the first file's metadata, if it records one.
    """

    table: ParticleTable
    paths: list
    n_channels: int
    box: list
    file_voxel_size: tuple | None


def read_particle_files(job: Job, *, need_poses: bool = False) -> ParticleFiles:
    """Read input ``particles`` and check its files: they exist and hold cubic boxes.

    With ``need_poses`` a table without poses is rejected.
    """
    table = read_particle_table(job.existing_input("particles"))
    if need_poses and not table.has_poses:
        fail(job, f"the particles of {job.input('particles')} have no poses: estimate them (ab "
                  "initio) or import them first")
    paths = [str(p) for p in table.paths]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        fail(job, f"{len(missing)} particle file(s) are missing, first {missing[0]}")
    (n_channels, *box), file_vs = particle_stack_info(paths)
    if len(set(box)) != 1:
        fail(job, f"particles must be cubic boxes, got (z, y, x) = {tuple(box)}")
    return ParticleFiles(table, paths, n_channels, box, file_vs)


def read_particle_data(job: Job, files: ParticleFiles) -> np.ndarray:
    """Every particle, float32 ``(N, C, D, D, D)``; NaN or infinite values are a JobError."""
    particles = read_particle_stack(files.paths)
    if not np.all(np.isfinite(particles)):
        fail(job, "the particles contain NaN or infinite values: fix the files")
    return particles


def particle_voxel_size(job: Job, file_vs, *,
                        resample_hint: str = "resample them") -> tuple[float, float, float]:
    """The particles' isotropic voxel size ``(z, y, x)`` in µm.

    ``params.voxel_size`` (three numbers or one) wins over ``file_vs``, the files'
    metadata.  ``resample_hint`` ends the message for anisotropic voxels.
    """
    given = job.param("voxel_size", None)
    vs = given if given is not None else file_vs
    if vs is None:
        fail(job, "the particle files carry no voxel size: give params.voxel_size [z, y, x] in µm")
    arr = np.atleast_1d(np.asarray(vs, dtype=float))
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        fail(job, f"voxel_size must be three positive numbers (z, y, x) in µm, got {vs!r}")
    out = tuple(float(v) for v in arr)
    if not np.allclose(arr, arr[0], rtol=1e-4):
        fail(job, f"particles must have isotropic voxels, got {out} µm (z, y, x): "
                  f"{resample_hint}")
    return out


# ----------------------------------------------------------------------------- volumes
def _read_volume(job: Job, name: str, *, what: str, required: bool):
    """Input ``name`` as a VolumeData, its voxel size from ``params.<name>_voxel_size`` or the
    file; None for an absent input that is not ``required``."""
    path = job.existing_input(name, required=required)
    if path is None:
        return None
    try:
        vs = job.param(f"{name}_voxel_size", None) or read_voxel_size(path)
        if vs is None:
            fail(job, f"the {what} {path} records no voxel size: give params.{name}_voxel_size")
        return read_volume(path, voxel_size=vs)
    except ValueError as exc:
        fail(job, f"cannot read the {what} {path}: {exc}")


def read_volume_input(job: Job, name: str, voxel_size, *, what: str, mismatch_fix: str,
                      required: bool = True) -> np.ndarray | None:
    """Read input ``name`` (a volume ``(C, Z, Y, X)``) at the particles' voxel size.

    Its voxel size is ``params.<name>_voxel_size`` or the file's; it must match
    ``voxel_size`` (µm, relative tolerance 1e-3), else the message ends with
    ``mismatch_fix``.  ``what`` names the input in messages ("initial volume").  Returns
    None for an absent input that is not ``required``.
    """
    volume = _read_volume(job, name, what=what, required=required)
    if volume is None:
        return None
    if not np.allclose(volume.voxel_size, voxel_size, rtol=1e-3):
        fail(job, f"the {what} voxel size {tuple(volume.voxel_size)} µm differs from the "
                  f"particles' {tuple(voxel_size)} µm: {mismatch_fix}")
    return volume.data


def read_psf_input(job: Job, voxel_size, *, n_channels: int, box: int, log,
                   required: bool = True) -> np.ndarray | None:
    """Input ``psf`` made ready for the particles: the one place every job reads a PSF.

    The PSF comes at any voxel size (``params.psf_voxel_size`` or the file's), anisotropic
    included, and any box: it is resampled to the particles' ``voxel_size`` and fitted to
    their ``box`` (voxels per side) by
    :func:`spfluo.algorithms.psf_preparation.prepare_psf` (no background subtraction or
    re-centring: the import did those), unless it already has their voxel size and fits
    the box, in which case it is used as it is.  ``log`` (a function of one line) gets the
    sizes before and after.  When the job file names an output ``psf_prepared``, the PSF
    the algorithms receive is written there (OME-TIFF, the particles' voxel size).

    Returns the PSF ``(C', d, d, d)`` with ``C'`` 1 or ``n_channels``, or None for an
    absent input that is not ``required``.
    """
    path = job.existing_input("psf", required=required)
    if path is None:
        return None
    try:  # header only: a field given as a PSF is refused before its pixels are read
        error = psf_size_error(read_shape(path)[1:], what=f"the PSF {path}")
    except ValueError as exc:
        fail(job, f"cannot read the PSF {path}: {exc}")
    if error:
        fail(job, error)
    volume = _read_volume(job, "psf", what="PSF", required=required)
    psf = volume.data
    if psf.shape[0] not in (1, n_channels):
        fail(job, f"the PSF has {psf.shape[0]} channels and the particles {n_channels}: give one "
                  "PSF per channel or one for all")
    fits = (np.allclose(volume.voxel_size, voxel_size, rtol=1e-3)
            and all(s <= box for s in psf.shape[1:]))
    if fits:
        if not np.all(psf.reshape(psf.shape[0], -1).sum(axis=1) > 0):
            fail(job, f"the PSF {job.input('psf')} has a channel with no positive sum")
        log(f"PSF {'x'.join(map(str, psf.shape[1:]))} voxels of {voxel_size[0]:g} µm: at the "
            f"particles' voxel size and within their {box}^3 box, used as it is")
    else:
        try:
            prepared = prepare_psf(psf, volume.voxel_size, target_voxel_size=voxel_size,
                                   shape=(box,) * 3, subtract_background=False, centre=False)
        except ValueError as exc:
            fail(job, f"cannot prepare the PSF {job.input('psf')} for the particles: {exc}")
        psf = prepared.psf
        log(prepared.describe() + " (resampled to the particles' voxel size, fitted to "
            "their box)")
    if "psf_prepared" in job.outputs:
        write_volume(job.output("psf_prepared"), psf, voxel_size)
    return psf
