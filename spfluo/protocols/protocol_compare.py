"""Evaluation protocol: compare a volume with a reference (usually the ground truth).

``ProtCompareVolumes`` runs the job ``compare`` (:mod:`spfluo.jobs.compare`): rigid
registration of the volume onto the reference (optional, symmetry aware), then FSC
(0.143 and 0.5), conical FSC, SSIM and PSNR, and, when two particle sets with poses are
given, the angular pose errors after the best global rotation.  The numbers land in a
:class:`~spfluo.objects.VolumeComparison` (``spfluo project show`` prints them) and the
curves in CSV files that its viewer draws.

Particles are matched by their image id (the particle file name without extension):
a set derived from another one (poses estimated by ab initio or refinement) keeps the
image ids of its source, and re-imported files keep their names.
"""

from __future__ import annotations

import numpy as np
import pyworkflow.protocol.params as params

from ..io import write_particle_table
from ..algorithms.limits import MAX_SYMMETRY_ORDER, search_size_error
from ..objects import PSFModel, VolumeComparison
from .base import ProtFluoJob, add_count_param, pointed

__all__ = ["ProtCompareVolumes"]

_STEP = "compare"


class ProtCompareVolumes(ProtFluoJob):
    """Compare a volume with a reference: FSC, conical FSC, SSIM, PSNR, pose errors.

    The volume is first registered onto the reference (rotation + translation, modulo
    the Cn symmetry), since a reconstruction's frame is arbitrary.  With two particle
    sets (estimated and true poses, matched by file name), the pose errors are the
    geodesic angles after the best global rotation, modulo the symmetry.
    """

    _label = "compare volumes"
    _possibleOutputs = {"outputComparison": VolumeComparison}
    _references = ["Eloy2023", "Fortun2018"]
    _jobStep = _STEP

    # --------------------------- DEFINE param functions -----------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputVolume", params.PointerParam, pointerClass="Volume,FluoImage",
                      important=True, label="Volume",
                      help="The volume to assess (a reconstruction, or any image; not a PSF).")
        form.addParam("referenceVolume", params.PointerParam, pointerClass="Volume,FluoImage",
                      important=True, label="Reference volume",
                      help="The reference, usually the ground truth of a simulation: same "
                           "shape, voxel size and channels as the volume.")
        form.addParam("doRegister", params.BooleanParam, default=True,
                      label="Register the volume onto the reference?",
                      help="Find the rotation and translation that best superimpose the "
                           "volume on the reference before measuring (a reconstruction's "
                           "frame is arbitrary). No: the volumes are compared as they are.")
        add_count_param(form, "symmetry", maximum=MAX_SYMMETRY_ORDER, default=1,
                        label="Symmetry order (Cn about z)",
                        help="Order n of the cyclic symmetry of the reference about the z axis "
                             "(1 = none): registration and pose errors are taken modulo Cn.")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles",
                      allowsNull=True, label="Particles with estimated poses (optional)",
                      help="Particles whose poses were estimated (e.g. by ab initio).")
        form.addParam("referenceParticles", params.PointerParam,
                      pointerClass="SetOfParticles", allowsNull=True,
                      label="Particles with true poses (optional)",
                      help="The same particles with their true poses (e.g. from 'simulate "
                           "dataset'); matched to the estimated ones by file name.")
        form.addParam("coneAngle", params.FloatParam, default=20.0,
                      expertLevel=params.LEVEL_ADVANCED,
                      label="Conical FSC cone half-angle (deg)",
                      help="Half opening angle of the cones of the conical FSC.")
        form.addParam("coarseStep", params.FloatParam, default=20.0,
                      expertLevel=params.LEVEL_ADVANCED,
                      label="Registration angular step (deg)",
                      help="Spacing of the global rotation search of the registration.")

    # --------------------------- STEPS functions ------------------------------
    def convertInputStep(self, key):
        volume = self.inputVolume.get()
        inputs = {"volume": volume.getFileName(),
                  "reference": self.referenceVolume.get().getFileName()}
        outputs = {"metrics": self._getExtraPath("metrics.json"),
                   "fsc": self._getExtraPath("fsc.csv"),
                   "conical_fsc": self._getExtraPath("conical_fsc.csv"),
                   "aligned": self._getExtraPath("aligned.ome.tif")}
        if self._hasParticles():
            errors = []
            pairs = self._matchParticles(errors)
            if errors:
                raise ValueError("\n".join(errors))
            est_path = self._getExtraPath("particles_estimated.csv")
            ref_path = self._getExtraPath("particles_reference.csv")
            ids = [est.getObjId() for est, _ in pairs]
            write_particle_table(est_path, ids, [e.getFileName() for e, _ in pairs],
                                 np.stack([e.getTransform().getMatrix() for e, _ in pairs]))
            write_particle_table(ref_path, ids, [r.getFileName() for _, r in pairs],
                                 np.stack([r.getTransform().getMatrix() for _, r in pairs]))
            inputs.update(particles=est_path, reference_particles=ref_path)
            outputs["pose_errors"] = self._getExtraPath("pose_errors.csv")
        job_params = {"voxel_size": list(volume.getVoxelSize()),
                      "symmetry": self.symmetry.get(),
                      "register": bool(self.doRegister.get()),
                      "cone_half_angle_deg": self.coneAngle.get(),
                      "coarse_step_deg": self.coarseStep.get()}
        self._writeJob(_STEP, inputs=inputs, params=job_params, outputs=outputs)

    def createOutputStep(self, key):
        data = self._readJobJson("metrics.json")
        comparison = VolumeComparison()
        comparison.setMetrics(data["metrics"])
        texts = data.get("resolution_text") or [{}]
        comparison.setResolutionText(texts[0].get("fsc_0143"))
        comparison.setVoxelSize(data["voxel_size"])
        comparison.setRegistration(data["registration"]["matrix_xyz_um"])
        comparison.setFscFile(self._getExtraPath("fsc.csv"))
        comparison.setConicalFscFile(self._getExtraPath("conical_fsc.csv"))
        comparison.setAlignedFile(self._getExtraPath("aligned.ome.tif"))
        comparison.setMetricsFile(self._getExtraPath("metrics.json"))
        if self._hasParticles():
            comparison.setPoseErrorsFile(self._getExtraPath("pose_errors.csv"))
        self.info(str(comparison))
        self._defineOutputs(outputComparison=comparison)
        self._defineSources([comparison], self.inputVolume, self.referenceVolume,
                            self.inputParticles, self.referenceParticles)

    # --------------------------- INFO functions -------------------------------
    def _validate(self):
        errors = []
        volume, reference = pointed(self.inputVolume), pointed(self.referenceVolume)
        if volume is None:
            errors.append("Choose the volume to assess.")
        if reference is None:
            errors.append("Choose the reference volume.")
        if errors:
            return errors
        for what, obj in (("volume", volume), ("reference", reference)):
            if isinstance(obj, PSFModel):
                errors.append(f"The {what} is a PSF: compare volumes (reconstructions, ground "
                              "truths), not PSFs.")
        if errors:
            return errors
        vs, rvs = np.asarray(volume.getVoxelSize()), np.asarray(reference.getVoxelSize())
        if not np.allclose(vs, rvs, rtol=1e-3):
            errors.append(f"Voxel sizes differ: the volume has {tuple(vs)} µm, the reference "
                          f"{tuple(rvs)} µm (z, y, x); resample one of them first.")
        elif not np.allclose(vs, vs[0], rtol=1e-3):
            errors.append(f"The voxels are anisotropic {tuple(vs)} µm (z, y, x): FSC "
                          "resolutions need isotropic voxels; resample the volumes first.")
        if volume.getDimensions() != reference.getDimensions():
            errors.append(f"Shapes differ: the volume is {volume.getDimensions()} voxels, the "
                          f"reference {reference.getDimensions()} (z, y, x); crop or pad one "
                          "of them to the other's box (no resampling is done here).")
        if volume.getNumChannels() != reference.getNumChannels():
            errors.append(f"Channel counts differ: the volume has {volume.getNumChannels()} "
                          f"channel(s), the reference {reference.getNumChannels()}.")
        sym = self.symmetry.get()
        if sym is None or sym < 1:
            errors.append(f"Symmetry order must be >= 1 (1 = no symmetry), got {sym}.")
        cone = self.coneAngle.get()
        if cone is None or not 0 < cone <= 90:
            errors.append(f"Conical FSC cone half-angle must be in (0, 90] degrees, got {cone}.")
        step = self.coarseStep.get()
        if step is None or not 0 < step <= 90:
            errors.append(f"Registration angular step must be in (0, 90] degrees, got {step}.")
        elif self.doRegister.get() and sym is not None and 1 <= sym:
            error = search_size_error(step, None, sym, what="Registration angular step")
            if error:
                errors.append(error)
        est, ref = pointed(self.inputParticles), pointed(self.referenceParticles)
        if (est is None) != (ref is None):
            errors.append("Give both particle sets (estimated and true poses) to measure pose "
                          "errors, or neither.")
        elif est is not None:
            self._matchParticles(errors)
        return errors

    def _summary(self):
        if not hasattr(self, "outputComparison"):
            return ["Not compared yet."]
        return [str(self.outputComparison)]

    def _methods(self):
        if not hasattr(self, "outputComparison"):
            return []
        return ["The volume was registered onto the reference and compared by FSC (0.143 and "
                "0.5 thresholds), conical FSC, SSIM and PSNR, following [Eloy2023]."]

    # --------------------------- UTILS functions ------------------------------
    def _hasParticles(self) -> bool:
        return pointed(self.inputParticles) is not None and \
            pointed(self.referenceParticles) is not None

    def _matchParticles(self, errors: list) -> list:
        """Pairs (estimated, true) matched by image id; problems go to ``errors``."""
        sets = {"estimated": pointed(self.inputParticles),
                "true": pointed(self.referenceParticles)}
        items = {}
        for what, particles in sets.items():
            its = particles.items()
            if not its:
                errors.append(f"The particle set with {what} poses is empty.")
                return []
            if not particles.hasPoses() or not all(p.hasPose() for p in its):
                missing = sum(not p.hasPose() for p in its)
                errors.append(f"The particle set with {what} poses has no poses "
                              f"({missing or len(its)} particle(s) without one): give a set "
                              "with poses (ab initio, refinement, simulation or an import "
                              "with a poses file).")
                return []
            names = [p.getImageId() for p in its]
            if len(set(names)) != len(names):
                dup = next(n for n in names if names.count(n) > 1)
                errors.append(f"The particle set with {what} poses has several particles named "
                              f"{dup!r}: particles are matched by file name, which must be "
                              "unique.")
                return []
            items[what] = dict(zip(names, its))
        est, true = items["estimated"], items["true"]
        if len(est) != len(true):
            errors.append(f"The particle sets have different sizes: {len(est)} with estimated "
                          f"poses, {len(true)} with true poses; give the same particles.")
            return []
        missing = [n for n in est if n not in true]
        if missing:
            errors.append(f"Particle {missing[0]!r} ({len(missing)} in all) of the estimated set "
                          "has no particle of the same file name in the true set: give the "
                          "same particles.")
            return []
        return [(est[n], true[n]) for n in est]
