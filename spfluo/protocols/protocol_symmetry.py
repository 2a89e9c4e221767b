"""Symmetry tools: align the Cn axis of a volume with z, symmetrise a volume.

Both run the job ``symmetry`` (:mod:`spfluo.jobs.symmetry`, :mod:`spfluo.algorithms.symmetry`):

- ``ProtAlignSymmetryAxis`` finds the symmetry axis of a volume (centre of mass on the
  axis, then the direction whose rotation by 2 pi / n best maps the volume onto itself),
  shifts and rotates the volume so that the axis is z through the box centre, and
  realigns the poses of the particles the volume came from (optional input), so that a
  refinement with the Cn symmetry constraint can follow.  With order 0 it first estimates
  the order from the volume (each order n scored by the correlation of the volume with
  its copies rotated by 2 pi k / n) and reports it (the protocol's ``estimatedOrder`` and
  ``estimateCylindrical``, the order table in the summary file).
- ``ProtSymmetrize`` averages a volume over the rotations of Cn about z.

Outputs: ``outputVolume`` (a :class:`~spfluo.objects.Volume`; ``symmetryOrder`` and
``summaryFile`` attributes) and, for the alignment with input particles,
``outputParticles`` (same particles, realigned poses).
"""

from __future__ import annotations

import numpy as np
import pyworkflow.object as pwobj
import pyworkflow.protocol.params as params

from ..algorithms.limits import MAX_SYMMETRY_ORDER
from ..objects import SetOfParticles, Volume
from .base import ProtFluoJob, add_count_param, pointed
from .convert import (
    image_from_file,
    particles_with_poses,
    read_output_poses,
    write_particles_for_job,
)

__all__ = ["ProtAlignSymmetryAxis", "ProtSymmetrize"]

_STEP = "symmetry"


def _validate_volume(volume, errors: list) -> None:
    if volume is None:
        errors.append("Choose the volume.")
        return
    dims = tuple(volume.getDimensions())
    if len(set(dims)) != 1:
        errors.append(f"The volume must be a cubic box, got {dims} voxels (z, y, x).")
    vs = np.asarray(volume.getVoxelSize())
    if not np.allclose(vs, vs[0], rtol=1e-4):
        errors.append(f"The volume has anisotropic voxels {tuple(vs)} µm (z, y, x): resample "
                      "it to isotropic voxels first.")


def _validate_order(order, max_order, errors: list, *, allow_identity: bool = False) -> None:
    """The symmetry order, and the largest order tried when it is estimated (order 0)."""
    if order is None or order < 0 or (order == 1 and not allow_identity):
        errors.append("Symmetry order must be n >= 2 (or 0 to estimate it"
                      + ("; 1 passes the volume on unchanged" if allow_identity else "")
                      + f"), got {order}.")
    if order == 0 and (max_order is None or max_order < 2):
        errors.append(f"Largest order tried must be >= 2, got {max_order}.")


class _SymmetryJob(ProtFluoJob):
    """Shared steps of the symmetry protocols (not shown in the GUI)."""

    _label = None
    _jobStep = _STEP
    _operation = None

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # the order estimate (order 0), stored by the output step
        self.estimatedOrder = pwobj.Integer()
        self.estimateCylindrical = pwobj.Boolean()

    def _jobInputs(self) -> tuple[dict, dict]:
        volume = self.inputVolume.get()
        inputs = {"volume": volume.getFileName()}
        outputs = {"volume": self._getExtraPath(f"{self._operation}.ome.tif"),
                   "summary": self._getExtraPath("symmetry.json")}
        return inputs, outputs

    def _jobParams(self) -> dict:
        volume = self.inputVolume.get()
        return {"operation": self._operation, "order": self.symmetryOrder.get(),
                "max_order": self.maxOrder.get(),
                "voxel_size": list(volume.getVoxelSize())}

    def _summaryData(self) -> dict:
        return self._readJobJson("symmetry.json")

    def _outputVolume(self, summary) -> Volume:
        volume = image_from_file(
            Volume, self._getExtraPath(f"{self._operation}.ome.tif"), summary["voxel_size"],
            image_id=f"{self.inputVolume.get().getImageId() or 'volume'}_"
                     f"{'aligned' if self._operation == 'align' else 'sym'}"
                     f"_C{summary['order']}")
        volume.symmetryOrder = pwobj.Integer(summary["order"])
        volume.summaryFile = pwobj.String(self._getExtraPath("symmetry.json"))
        return volume

    def _storeEstimate(self, summary) -> None:
        if "estimated_order" in summary:
            self.estimatedOrder.set(summary["estimated_order"])
            self.estimateCylindrical.set(summary["cylindrical"])
            self._store(self.estimatedOrder, self.estimateCylindrical)

    def _estimateLine(self) -> list[str]:
        if not self.estimatedOrder.hasValue():
            return []
        if self.estimateCylindrical.get():
            return ["The volume looks cylindrical (the same at every angle about its axis): "
                    "its order cannot be read from it."]
        return [f"Estimated symmetry order: C{self.estimatedOrder.get()}."]


class ProtAlignSymmetryAxis(_SymmetryJob):
    """Find the Cn symmetry axis of a volume and turn volume and poses so that it is z.

    With order 0, the order is estimated from the volume first and reported.
    """

    _label = "align symmetry axis"
    _operation = "align"
    _possibleOutputs = {"outputVolume": Volume, "outputParticles": SetOfParticles}
    _references = ["Fortun2018"]

    # --------------------------- DEFINE param functions -----------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputVolume", params.PointerParam, pointerClass="Volume",
                      important=True, label="Volume",
                      help="A reconstruction (e.g. ab initio without symmetry) whose cyclic "
                           "symmetry axis is to be found.")
        add_count_param(form, "symmetryOrder", maximum=MAX_SYMMETRY_ORDER, default=0,
                        label="Symmetry order (0 = estimate)",
                        help="Order n >= 2 of the cyclic symmetry; 0 estimates it from the volume "
                             "(reported in the summary) and uses it; 1 (no symmetry) passes the "
                             "volume and poses on unchanged, so a workflow can keep this step.")
        add_count_param(form, "maxOrder", maximum=MAX_SYMMETRY_ORDER,
                        default=12, condition="symmetryOrder == 0",
                        label="Largest order tried",
                        help="Orders 2 to this are scored when the order is estimated.")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles",
                      allowsNull=True, label="Particles to realign (optional)",
                      help="The particles (with poses) the volume was reconstructed from: "
                           "their poses are turned with the volume.")

    # --------------------------- STEPS functions ------------------------------
    def convertInputStep(self, key):
        inputs, outputs = self._jobInputs()
        particles = pointed(self.inputParticles)
        if particles is not None:
            inputs["particles"] = write_particles_for_job(
                particles, self._getExtraPath("particles.csv"), with_poses=True)
            outputs["particles"] = self._getExtraPath("particles_aligned.csv")
        self._writeJob(_STEP, inputs=inputs, params=self._jobParams(), outputs=outputs)

    def createOutputStep(self, key):
        summary = self._summaryData()
        self._storeEstimate(summary)
        volume = self._outputVolume(summary)
        volume.axisAngleDeg = pwobj.Float(summary["axis_angle_from_z_deg"])
        volume.axisScore = pwobj.Float(summary["axis_score"])
        outputs = {"outputVolume": volume}
        particles = pointed(self.inputParticles)
        if particles is not None:
            poses = read_output_poses(self._getExtraPath("particles_aligned.csv"))
            outputs["outputParticles"] = particles_with_poses(
                particles, poses, self._getPath("particles_aligned.sqlite"))
        self.info(f"C{summary['order']} axis {np.round(summary['axis_xyz'], 4).tolist()} "
                  f"(x, y, z), {summary['axis_angle_from_z_deg']:.2f} deg from z, score "
                  f"{summary['axis_score']:.4f}")
        self._defineOutputs(**outputs)
        self._defineSources(list(outputs.values()), self.inputVolume, self.inputParticles)

    # --------------------------- INFO functions -------------------------------
    def _validate(self):
        errors = []
        volume = pointed(self.inputVolume)
        _validate_volume(volume, errors)
        _validate_order(self.symmetryOrder.get(), self.maxOrder.get(), errors,
                        allow_identity=True)
        particles = pointed(self.inputParticles)
        if particles is not None and volume is not None:
            items = particles.items()
            if not items:
                errors.append("The particle set is empty.")
            elif not particles.hasPoses() or any(not p.hasPose() for p in items):
                errors.append("The particles to realign have no poses: give the particles the "
                              "volume was reconstructed from (with poses).")
            if not np.allclose(np.asarray(particles.getVoxelSize()),
                               np.asarray(volume.getVoxelSize()), rtol=1e-3):
                errors.append(f"The particles' voxel size {tuple(particles.getVoxelSize())} µm "
                              f"differs from the volume's {tuple(volume.getVoxelSize())} µm.")
        return errors

    def _summary(self):
        if not hasattr(self, "outputVolume"):
            return ["Not aligned yet."]
        vol = self.outputVolume
        return self._estimateLine() + [
            f"C{vol.symmetryOrder.get()} axis turned to z (it was "
            f"{vol.axisAngleDeg.get():.2f} deg away; self-correlation {vol.axisScore.get():.3f})."]

    def _methods(self):
        if not hasattr(self, "outputVolume"):
            return []
        return [f"The C{self.outputVolume.symmetryOrder.get()} symmetry axis of the volume was "
                "found by maximising the correlation of the volume with its rotated copy and "
                "aligned with z, as needed by the symmetry constraint of [Fortun2018]."]


class ProtSymmetrize(_SymmetryJob):
    """Average a volume over the rotations of Cn about z (the axis must be z already)."""

    _label = "symmetrize"
    _operation = "symmetrize"
    _possibleOutputs = {"outputVolume": Volume}
    _references = ["Fortun2018"]

    # --------------------------- DEFINE param functions -----------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputVolume", params.PointerParam, pointerClass="Volume",
                      important=True, label="Volume",
                      help="A volume whose symmetry axis is z through the box centre (run "
                           "'align symmetry axis' first otherwise).")
        add_count_param(form, "symmetryOrder", maximum=MAX_SYMMETRY_ORDER, default=9,
                        label="Symmetry order (0 = estimate)",
                        help="Order n >= 2 of the cyclic symmetry about z; 0 estimates it from "
                             "the volume.")
        add_count_param(form, "maxOrder", maximum=MAX_SYMMETRY_ORDER,
                        default=12, condition="symmetryOrder == 0",
                        label="Largest order tried",
                        help="Orders 2 to this are scored when the order is estimated.")

    # --------------------------- STEPS functions ------------------------------
    def convertInputStep(self, key):
        inputs, outputs = self._jobInputs()
        self._writeJob(_STEP, inputs=inputs, params=self._jobParams(), outputs=outputs)

    def createOutputStep(self, key):
        summary = self._summaryData()
        self._storeEstimate(summary)
        volume = self._outputVolume(summary)
        volume.relativeChange = pwobj.Float(summary["relative_change"])
        self.info(f"symmetrised with C{summary['order']} about z: relative change "
                  f"{summary['relative_change']:.4f}")
        self._defineOutputs(outputVolume=volume)
        self._defineSources([volume], self.inputVolume)

    # --------------------------- INFO functions -------------------------------
    def _validate(self):
        errors = []
        _validate_volume(pointed(self.inputVolume), errors)
        _validate_order(self.symmetryOrder.get(), self.maxOrder.get(), errors)
        return errors

    def _summary(self):
        if not hasattr(self, "outputVolume"):
            return ["Not symmetrised yet."]
        vol = self.outputVolume
        return self._estimateLine() + [
            f"Symmetrised with C{vol.symmetryOrder.get()} about z (relative change "
            f"{vol.relativeChange.get():.3f})."]

    def _methods(self):
        if not hasattr(self, "outputVolume"):
            return []
        return [f"The volume was averaged over the rotations of "
                f"C{self.outputVolume.symmetryOrder.get()} about its z axis [Fortun2018]."]
