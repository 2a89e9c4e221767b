"""Between project objects and job files (the convert layer of every protocol).

- :func:`write_particles_for_job`: a SetOfParticles -> particle table CSV
  (``id, path`` + stored poses when known) that a job reads with
  :func:`spfluo.io.read_particle_table`.
- :func:`particles_with_poses`: a job's output poses -> a new SetOfParticles
  (same files, new poses).
- :func:`psf_path`: the PSF file of a PSFModel, checked against the particles.
"""

from __future__ import annotations

import numpy as np

from ..io import read_poses_csv, read_particle_table, write_particle_table
from ..objects import Particle, SetOfParticles

__all__ = ["write_particles_for_job", "particles_with_poses", "check_psf_matches",
           "read_output_poses"]


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
    """Validation shared by reconstructions: PSF voxel size and size against the particles."""
    if psf is None or particles is None:
        return
    pvs = np.asarray(particles.getVoxelSize())
    fvs = np.asarray(psf.getVoxelSize())
    if not np.allclose(pvs, fvs, rtol=1e-3):
        errors.append(f"The PSF voxel size {tuple(fvs)} µm differs from the particles' "
                      f"{tuple(pvs)} µm: import the PSF with the particles' voxel size "
                      "or resample it.")
    box = particles.getBoxShape()
    if box is not None and any(s > b for s, b in zip(psf.getDimensions(), box)):
        errors.append(f"The PSF ({psf.getDimensions()} voxels) is larger than the particle box "
                      f"({tuple(box)}): crop the PSF to the box size.")
    if psf.getNumChannels() not in (1, particles.getNumChannels()):
        errors.append(f"The PSF has {psf.getNumChannels()} channel(s) and the particles "
                      f"{particles.getNumChannels()}: give one PSF per channel (or one for all).")
