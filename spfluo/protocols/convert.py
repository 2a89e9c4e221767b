"""Between project objects and job files (the convert layer of every protocol).

- :func:`write_particles_for_job`: a SetOfParticles -> particle table CSV
  (``id, path`` + stored poses when known) that a job reads with
  :func:`spfluo.io.read_particle_table`.
- :func:`particles_with_poses`: a job's output poses -> a new SetOfParticles
  (same files, new poses).
- :func:`read_output_poses`: the poses a job wrote, by particle id.
- :func:`image_from_file`: an image object (Volume, PSFModel, Particle...) for a file a
  job wrote; :func:`image_id_from_path` names it after its file.
- :func:`prepared_psf`: the PSF a job prepared for the particles, as an output.
- Validation shared by the forms: :func:`check_psf_matches`,
  :func:`check_particles_with_poses`, :func:`check_symmetry_order`,
  :func:`parse_channel_list` and :func:`check_channel_list`.
"""

from __future__ import annotations

import os

import numpy as np

from ..io import read_poses_csv, read_particle_table, read_shape, write_particle_table
from ..objects import Particle, SetOfParticles

__all__ = ["write_particles_for_job", "particles_with_poses", "check_psf_matches",
           "PREPARED_PSF", "PSF_HELP", "prepared_psf",
           "read_output_poses", "image_from_file", "image_id_from_path",
           "check_particles_with_poses", "check_symmetry_order", "parse_channel_list",
           "check_channel_list"]


def write_particles_for_job(particles: SetOfParticles, path: str, *,
                            with_poses: bool | None = None) -> str:
    """Write the particle table of ``particles`` to ``path``.

    Parameters
    ----------
    with_poses : bool, optional
        True: every particle must have a pose (ValueError otherwise); False:
        poses are left out; None: written when the set has poses.
    """
    items = particles.items()
    if not items:
        raise ValueError("the particle set is empty: extract or import particles first")
    if with_poses is None:
        with_poses = particles.hasPoses()
    matrices = None
    if with_poses:
        missing = [p.getObjId() for p in items if not p.hasPose()]
        if missing:
            raise ValueError(f"{len(missing)} particle(s) have no pose (first id {missing[0]}): "
                             "estimate poses first (ab initio) or import them")
        matrices = np.stack([p.getTransform().getMatrix() for p in items])
    write_particle_table(path, [p.getObjId() for p in items], [p.getFileName() for p in items],
                         matrices)
    return path


def read_output_poses(path: str) -> dict:
    """Poses written by a job (a poses CSV or a particle table): ``{id: 4x4 stored matrix}``."""
    try:
        table = read_particle_table(path)
        if not table.has_poses:
            raise ValueError(f"{path} holds no poses")
        return dict(zip(table.ids.tolist(), table.matrices))
    except ValueError as exc:
        if "'id' and 'path'" not in str(exc):
            raise
    table = read_poses_csv(path)
    return dict(zip(table.ids.tolist(), table.matrices))


def image_from_file(cls, path, voxel_size, *, image_id: str):
    """An image object of class ``cls`` for the file ``path``, its shape read from the file.

    Parameters
    ----------
    cls : type
        A :class:`~spfluo.objects.FluoImage` subclass (Volume, PSFModel, Particle...).
    path : str or path-like
        The image file (OME-TIFF, TIFF or MRC).
    voxel_size : sequence of 3 floats
        Voxel size ``(z, y, x)`` in micrometres.
    image_id : str
        Name of the image in the project.
    """
    return cls(filename=str(path), voxelSize=tuple(voxel_size), shape=read_shape(path),
               imageId=image_id)


def image_id_from_path(path) -> str:
    """File name without its (possibly double, e.g. .ome.tif) extension."""
    name = os.path.basename(str(path))
    for ext in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".mrcs", ".mrc"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return os.path.splitext(name)[0]


def particles_with_poses(template: SetOfParticles, poses: dict, filename: str, *,
                         extra_attributes: dict | None = None) -> SetOfParticles:
    """A new set with the items of ``template`` and the poses ``{id: matrix}``.

    Every particle of the template must have a pose in ``poses``.
    ``extra_attributes`` maps ``{id: {name: value}}`` stored on the items
    (e.g. a per-particle score), as pyworkflow Float attributes.
    """
    import pyworkflow.object as pwobj

    out = SetOfParticles(filename=filename)
    extra_attributes = extra_attributes or {}
    # set items are homogeneous rows: every item gets every extra attribute (None if absent)
    names = sorted({name for values in extra_attributes.values() for name in values})
    for item in template.items():
        pid = item.getObjId()
        if pid not in poses:
            raise ValueError(f"no estimated pose for particle {pid}")
        new = Particle()
        new.copy(item, copyId=True)
        new.setTransform(poses[pid])
        values = extra_attributes.get(pid, {})
        for name in names:
            value = values.get(name)
            setattr(new, name, pwobj.Float(None if value is None else float(value)))
        out.append(new)
    out.setHasPoses(True)
    out.write()
    return out


def check_psf_matches(psf, particles, errors: list) -> None:
    """Validation shared by the protocols that take a PSF: its channels against the particles.

    Its voxel size and box may differ from the particles': the job resamples it and fits
    it to their box (:func:`spfluo.jobs._inputs.read_psf_input`).
    """
    if psf is None or particles is None:
        return
    if psf.getNumChannels() not in (1, particles.getNumChannels()):
        errors.append(f"The PSF has {psf.getNumChannels()} channel(s) and the particles "
                      f"{particles.getNumChannels()}: give one PSF per channel (or one for all).")


#: The PSF a job used, at the particles' voxel size and box (job output ``psf_prepared``).
PREPARED_PSF = "psf_prepared.ome.tif"
#: Help of the PSF input of the protocols that take one.
PSF_HELP = ("The PSF (imported, computed or simulated), one channel for all or one per "
            "channel, at any voxel size and box: the run resamples it to the particles' "
            "voxel size and fits it to their box (the log gives the sizes before and after; "
            "the output outputPSF is the PSF used).")


def prepared_psf(prot, voxel_size):
    """The PSF the job of ``prot`` used (``extra/psf_prepared.ome.tif``), as a PSFModel."""
    from ..objects import PSFModel

    return image_from_file(PSFModel, prot._getExtraPath(PREPARED_PSF), voxel_size,
                           image_id="psf_prepared")


def check_particles_with_poses(particles, errors: list) -> list:
    """Validation shared by known-pose protocols: a non-empty set, one pose per particle.

    Returns the particles of the set; an empty list (the reason in ``errors``) when the
    set is empty.
    """
    items = particles.items()
    if not items:
        errors.append("The particle set is empty: extract, simulate or import particles first.")
        return items
    missing = sum(not p.hasPose() for p in items)
    if not particles.hasPoses() or missing:
        errors.append(f"The particles have no poses ({missing or len(items)} particle(s) "
                      "without one): estimate them first (ab initio), or import them with "
                      "a poses file.")
    return items


def check_symmetry_order(order, errors: list) -> None:
    """Validation of a 'Symmetry order (Cn about z)' parameter: an integer n >= 1."""
    if order is None or order < 1:
        errors.append(f"Symmetry order must be an integer >= 1 (1 = no symmetry), got {order}.")


def parse_channel_list(text: str | None, *, label: str) -> list[int] | None:
    """'' -> None (all); '0 2' or '0,2' -> [0, 2]; ValueError on anything else.

    ``label`` is the form's name of one channel (e.g. 'Channel'), used in the messages.
    """
    text = (text or "").replace(",", " ").strip()
    if not text:
        return None
    try:
        values = [int(v) for v in text.split()]
    except ValueError:
        raise ValueError(f"{label}s must be channel numbers separated by spaces "
                         f"(e.g. '0 1'), got {text!r}.") from None
    if len(set(values)) != len(values):
        raise ValueError(f"{label}s {text!r} lists a channel twice.")
    return values


def check_channel_list(text: str | None, particles, errors: list, *, label: str) -> None:
    """Validation of a channel list parameter: parsable, every channel in the particles."""
    try:
        channels = parse_channel_list(text, label=label)
    except ValueError as exc:
        errors.append(str(exc))
        return
    if channels is not None:
        n_ch = particles.getNumChannels()
        bad = [c for c in channels if not 0 <= c < n_ch]
        if bad:
            errors.append(f"{label} {bad[0]} does not exist: the particles have {n_ch} "
                          f"channel(s), numbered 0 to {n_ch - 1}.")


# ----------------------------------------------------------------------------- support
def add_support_params(form, *, condition: str | None = None) -> None:
    """The form's spherical support: ``doMask`` (on by default) and ``maskRadius`` (µm,
    empty: 0.9 x half the box side), shown under ``condition``."""
    from pyworkflow.protocol import params

    from ..algorithms.reconstruct.mask import DEFAULT_MASK_FRACTION

    form.addParam("doMask", params.BooleanParam, default=True, condition=condition,
                  label="Spherical support?",
                  help="Confine the volume to a sphere about the box centre (TV and Hessian: "
                       "a constraint; Tikhonov: a soft mask), so that noise cannot pile up in "
                       "the corners of the box. The half-map FSC is taken under the same "
                       "(soft) mask.")
    form.addParam("maskRadius", params.FloatParam, default=None, allowsNull=True,
                  condition=f"({condition}) and doMask" if condition else "doMask",
                  label="Support radius (µm, empty: default)",
                  help="Radius of the sphere, micrometres; empty: "
                       f"{DEFAULT_MASK_FRACTION:g} x half the box side. The particle, "
                       "blurred by the PSF, must fit inside.")


def support_job_params(prot) -> dict:
    """``mask_radius_um`` for the job: absent (the default radius), null (no support) or
    the radius given in the form."""
    if not prot.doMask.get():
        return {"mask_radius_um": None}
    if prot.maskRadius.get() is not None:
        return {"mask_radius_um": prot.maskRadius.get()}
    return {}


def check_support_radius(prot, particles, errors: list) -> None:
    """The form's support radius lies between 2 voxels and the corner of the box."""
    radius = prot.maskRadius.get() if prot.doMask.get() else None
    if radius is None:
        return
    vs = particles.getVoxelSize()
    first = particles.getFirstItem()
    box = first.getDimensions()[-1] if first is not None else None
    if vs is None or box is None:
        return
    corner = 3 ** 0.5 * box * vs[-1] / 2
    if not 2 * vs[-1] <= radius <= corner:
        errors.append(f"Support radius must be between {2 * vs[-1]:.3g} µm (2 voxels) and "
                      f"{corner:.3g} µm (the box corner), got {radius:g} µm; leave it empty "
                      "for the default.")
