"""Export protocol: particles with poses (and a volume) for other programs.

``ProtExportParticles`` writes, into the run's ``extra/export`` folder and, when one is
given, a folder of the user's (through :class:`spfluo.outfolder.OutputFolder`: a new or
empty folder, or one spfluo exported to before; it never overwrites another file):

- ``particles.star``: RELION 3.1 (``data_optics`` with ``rlnImagePixelSize`` in Angstrom,
  ``rlnImageSize`` in voxels and ``rlnImageDimensionality`` 3; ``data_particles`` with
  ``rlnImageName``, ``rlnAngleRot/Tilt/Psi`` (RELION's ZYZ Euler angles, degrees),
  ``rlnOriginX/Y/ZAngst``, ``rlnOpticsGroup``, and for extracted particles
  ``rlnMicrographName`` (the field) and ``rlnCoordinateX/Y/Z`` (the centre in the field,
  in voxels of the particles' size from the field's first voxel));
- ``poses.csv``: ``id, rot, tilt, psi`` (degrees), ``tx, ty, tz`` (µm), then ``image``
  (the particle file written) and ``field``;
- ``particle_NNNNNN.mrc``: each particle, the chosen channel, voxel size in the header
  (RELION and Dynamo read MRC), when asked;
- ``volume.ome.tif`` (every channel, physical sizes: napari, Fiji) and ``volume.mrc`` (or
  ``volume_cK.mrc`` per channel: ChimeraX, RELION, Dynamo), when a volume is given.

The conventions (``DEVELOPING.md``): a stored pose maps the reference to the particle;
RELION's matrix ``A(rot, tilt, psi)`` is that rotation in the ``(x, y, z)`` frame and
``rlnOriginXAngst = -t_x``.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pyworkflow.protocol.params as params

from ..algorithms.limits import MAX_CHANNELS
from ..io import read_volume, write_poses_csv, write_poses_star, write_volume
from ..objects.arrays import load_array
from .base import ProtFluo, add_count_param, pointed
from .convert import check_particles_with_poses

__all__ = ["ProtExportParticles", "export_folder_error"]

#: The export folder inside the run.
_EXPORT = "export"


def export_folder_error(path: str) -> str | None:
    """Why spfluo may not export into ``path``, or None: it must be new, empty, or a folder
    spfluo wrote (its manifest), never a file."""
    from ..outfolder import MANIFEST

    folder = os.path.abspath(os.path.expanduser(path))
    if os.path.lexists(folder) and not os.path.isdir(folder):
        return f"Export folder {folder} is a file: give a folder (a new one is created)."
    if os.path.isdir(folder) and os.listdir(folder) and not os.path.exists(
            os.path.join(folder, MANIFEST)):
        return (f"Export folder {folder} is not empty and spfluo did not write it: spfluo never "
                "overwrites files it did not write; give a new or empty folder.")
    return None


class ProtExportParticles(ProtFluo):
    """Export particles with their poses (RELION 3.1 STAR, CSV, MRC) and a volume (OME-TIFF,
    MRC), to open the results in RELION, Dynamo, ChimeraX or napari."""

    _label = "export particles"
    _possibleOutputs = {}

    # --------------------------- DEFINE param functions -----------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles",
                      important=True, label="Particles (with poses)",
                      help="Particles whose poses are known: the output of ab initio or a "
                           "refinement.")
        form.addParam("inputVolume", params.PointerParam, pointerClass="Volume",
                      allowsNull=True, label="Volume (optional)",
                      help="A reconstruction to export beside the particles (OME-TIFF and MRC).")
        form.addParam("writeMrc", params.BooleanParam, default=True,
                      label="Write the particles as MRC?",
                      help="One MRC file per particle (the channel below), which the STAR file "
                           "names: RELION and Dynamo read them. No: the STAR file names the "
                           "project's particle files (OME-TIFF).")
        add_count_param(form, "channel", maximum=MAX_CHANNELS - 1, default=0,
                        condition="writeMrc", label="Channel of the MRC particles",
                        help="MRC holds one channel: the one written (numbered from 0).")
        form.addParam("exportFolder", params.StringParam, default="",
                      label="Export folder (optional)",
                      help="Where to write the files: a new or empty folder, or one spfluo "
                           "exported to before (files spfluo did not write are never "
                           "overwritten). Empty: the run's folder only (extra/export).")

    # --------------------------- INSERT steps functions -----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.exportStep, self._paramsKey())

    # --------------------------- STEPS functions ------------------------------
    def exportStep(self, key):
        folder = self._getExtraPath(_EXPORT)
        os.makedirs(folder, exist_ok=True)
        particles = self.inputParticles.get()
        items = particles.items()
        vs = particles.getVoxelSize()
        box = particles.getBoxShape()[0]
        ids = np.array([p.getObjId() for p in items])
        matrices = np.stack([p.getTransform().getMatrix() for p in items])
        names = [self._particleFile(p, folder, vs) for p in items]
        fields, coords = self._sources(items, vs[0])
        extra = {"rlnMicrographName": fields} if fields is not None else {}
        if coords is not None:
            extra.update({"rlnCoordinateX": coords[:, 2], "rlnCoordinateY": coords[:, 1],
                          "rlnCoordinateZ": coords[:, 0]})
        write_poses_star(os.path.join(folder, "particles.star"), ids, matrices,
                         voxel_size_um=vs, image_names=names, image_size=int(box), extra=extra)
        columns = {"image": names}
        if fields is not None:
            columns["field"] = fields
        write_poses_csv(os.path.join(folder, "poses.csv"), ids, matrices, format="euler",
                        extra=columns)
        volume = pointed(self.inputVolume)
        if volume is not None:
            data = load_array(volume)
            write_volume(os.path.join(folder, "volume.ome.tif"), data, volume.getVoxelSize())
            for c, channel in enumerate(data):
                name = "volume.mrc" if len(data) == 1 else f"volume_c{c}.mrc"
                write_volume(os.path.join(folder, name), channel, volume.getVoxelSize())
        written = sorted(os.listdir(folder))
        self.info(f"exported {len(items)} particle(s) of {box}^3 voxels of {vs[0]:g} µm"
                  + (" and a volume" if volume is not None else "") + f" to {folder}: "
                  + ", ".join(written[:6]) + (" ..." if len(written) > 6 else ""))
        target = (self.exportFolder.get() or "").strip()
        if target:
            self._publish(folder, written, target)

    def _particleFile(self, particle, folder, vs) -> str:
        """The file the STAR names for ``particle``: its MRC (written) or its own file."""
        if not self.writeMrc.get():
            return os.path.abspath(particle.getFileName())
        name = f"particle_{particle.getObjId():06d}.mrc"
        data = read_volume(particle.getFileName()).data
        write_volume(os.path.join(folder, name), data[self.channel.get()], vs)
        return name

    @staticmethod
    def _sources(items, voxel):
        """Fields and centres (voxels of ``voxel`` µm, (z, y, x)) of extracted particles,
        None when some particle has none."""
        fields = [p.getSourceImageId() for p in items]
        if not all(fields):
            return None, None
        coords = [p.getCoordinate() for p in items]
        if any(c is None or c.getPosition()[0] is None for c in coords):
            return fields, None
        return fields, np.array([c.getPositionZYX() for c in coords]) / voxel

    def _publish(self, folder: str, names: list, target: str) -> None:
        from ..outfolder import OutputFolder

        out = OutputFolder(target)
        for name in names:
            src = os.path.join(folder, name)
            out.write(name, lambda tmp, src=src: shutil.copyfile(src, tmp), by="export")
        self.info(f"copied the {len(names)} file(s) to {out.path}")

    # --------------------------- INFO functions -------------------------------
    def _validate(self):
        errors = []
        particles = pointed(self.inputParticles)
        if particles is None:
            return ["Choose the particles (with poses) to export."]
        if not check_particles_with_poses(particles, errors):
            return errors
        vs = np.asarray(particles.getVoxelSize())
        if not np.allclose(vs, vs[0], rtol=1e-4):
            errors.append(f"The particles have anisotropic voxels {tuple(vs)} µm (z, y, x): a "
                          "STAR file holds one pixel size; extract them on isotropic voxels.")
        channel = self.channel.get()
        if self.writeMrc.get() and (channel is None
                                    or not 0 <= channel < particles.getNumChannels()):
            errors.append(f"Channel {channel} does not exist: the particles have "
                          f"{particles.getNumChannels()} channel(s), numbered from 0.")
        target = (self.exportFolder.get() or "").strip()
        if target:
            error = export_folder_error(target)
            if error:
                errors.append(error)
        return errors

    def _summary(self):
        folder = self._getExtraPath(_EXPORT)
        if not os.path.isdir(folder):
            return ["Not exported yet."]
        target = (self.exportFolder.get() or "").strip()
        return [f"{len(os.listdir(folder))} file(s) in {folder}"
                + (f", copied to {os.path.abspath(os.path.expanduser(target))}" if target
                   else "") + ": particles.star (RELION 3.1), poses.csv"
                + (", particle MRCs" if self.writeMrc.get() else "")
                + (", the volume (OME-TIFF, MRC)" if pointed(self.inputVolume) else "") + "."]
