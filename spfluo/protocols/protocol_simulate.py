"""Simulation protocol: a dataset with its ground truth (volume, PSF, poses, positions).

``ProtSimulateDataset`` runs the job ``simulate`` (:mod:`spfluo.jobs.simulate`, which
calls :mod:`spfluo.algorithms.simulate`, the setting of Eloy et al. 2023 sec. 4.1) and
registers its files as objects: the ground-truth volume, the PSF, and either particles
with their true poses or fields of view with the true particle positions and
orientations.  It is the start of every quality test of the pipeline: reconstruct from
its particles, then compare with ``outputVolume`` (protocol "compare volumes").
"""

from __future__ import annotations

import numpy as np
import pyworkflow.object as pwobj
import pyworkflow.protocol.params as params

from ..algorithms.geometry import voxels_to_um
from ..io import read_coordinates_csv, read_particle_table, read_poses_csv, read_shape
from ..algorithms.limits import (
    MAX_BOX_SIZE,
    MAX_FIELDS,
    MAX_FIELD_SIZE,
    MAX_OBJECTS_PER_FIELD,
    MAX_PARTICLES,
    MAX_SPOTS,
    simulated_voxels_error,
)
from ..objects import (
    Coordinate3D,
    FluoImage,
    Particle,
    PSFModel,
    SetOfCoordinates3D,
    SetOfFluoImages,
    SetOfParticles,
    Volume,
)
from .base import ProtFluoJob, add_count_param, add_seed_param
from .convert import image_from_file, image_id_from_path

__all__ = ["ProtSimulateDataset"]

# enum indices are stored in projects: new choices go at the end
PHANTOMS = ["asymmetric", "c9", "shell", "tube", "npc"]
PSF_GAUSSIAN, PSF_SCALAR, PSF_VECTORIAL = 0, 1, 2
_PSF_JOB = {PSF_GAUSSIAN: "gaussian", PSF_SCALAR: "widefield-scalar",
            PSF_VECTORIAL: "widefield-vectorial"}
NOISE_GAUSSIAN, NOISE_POISSON = 0, 1
KIND_PARTICLES, KIND_FIELDS = 0, 1
_JOB_KINDS = {KIND_PARTICLES: "particles", KIND_FIELDS: "fields"}
_STEP = "simulate"


class ProtSimulateDataset(ProtFluoJob):
    """Simulate particles (or fields of view) of a phantom with their ground truth.

    Each particle is the phantom at a uniform random orientation and a small shift,
    with a non-uniform degree of labelling (Gaussian spots removed), blurred by a
    Gaussian PSF, scaled to [0, 1] and corrupted by Gaussian noise (Eloy et al. 2023 sec. 4.1);
    or, closer to a real acquisition, blurred by a widefield PSF computed from the optics
    (Gibson & Lanni 1991, scalar, or Aguet et al. 2009, vectorial) and given Poisson noise
    with a read-noise floor.
    Fields of view hold many such particles, debris and touching pairs, for picking.
    """

    _label = "simulate dataset"
    _possibleOutputs = {
        "outputVolume": Volume,
        "outputPSF": PSFModel,
        "outputParticles": SetOfParticles,
        "outputImages": SetOfFluoImages,
        "outputCoordinates": SetOfCoordinates3D,
    }
    _references = ["Eloy2023", "Fortun2018", "Gibson1991", "Aguet2009"]
    _jobStep = _STEP

    # --------------------------- DEFINE param functions -----------------------
    def _defineParams(self, form):
        form.addSection(label="Simulation")
        form.addParam("phantom", params.EnumParam, default=0, choices=PHANTOMS,
                      label="Phantom",
                      help="Ground truth: an asymmetric object, a C9 centriole-like barrel "
                           "(two channels: barrel + torus), a hollow sphere, an open tube, or "
                           "an NPC-like C8 particle (8 pairs of spots on two rings).")
        add_count_param(form, "nChannels", maximum=2, default=1, label="Channels",
                        help="1, or 2 with the c9 phantom (barrel and a torus around it).")
        add_count_param(form, "boxSize", maximum=MAX_BOX_SIZE,
                        default=50, label="Box size (voxels)",
                        help="Side of the cubic particle box (and of the ground truth), voxels.")
        form.addParam("voxelSize", params.FloatParam, default=0.05, label="Voxel size (µm)",
                      help="Isotropic voxel size of the particles and the ground truth.")
        form.addParam("psfModel", params.EnumParam, default=PSF_GAUSSIAN,
                      choices=["Gaussian", "widefield, scalar (Gibson & Lanni)",
                               "widefield, vectorial (Aguet et al. 2009)"],
                      label="PSF",
                      help="A Gaussian PSF (Eloy et al. 2023), or a widefield PSF computed by "
                           "psfmodels from the optics, truncated by the particle box as a "
                           "measured PSF is.")
        line = form.addLine("PSF sigma (voxels)", condition=f"psfModel=={PSF_GAUSSIAN}",
                            help="Standard deviations of the Gaussian PSF in voxels, lateral "
                                 "and axial (Eloy et al. 2023: 1.5 and 5).")
        line.addParam("sigmaXY", params.FloatParam, default=1.5, label="x, y")
        line.addParam("sigmaZ", params.FloatParam, default=5.0, label="z")
        optics = f"psfModel!={PSF_GAUSSIAN}"
        form.addParam("numericalAperture", params.FloatParam, default=1.4, condition=optics,
                      label="Numerical aperture", help="NA of the objective.")
        form.addParam("wavelength", params.FloatParam, default=0.6, condition=optics,
                      label="Emission wavelength (µm)",
                      help="Peak emission wavelength in micrometres.")
        line = form.addLine("Refractive indices", condition=optics,
                            help="Immersion medium (1.518 oil, 1.33 water) and sample around "
                                 "the particles; a mismatch makes the PSF longer along z and "
                                 "asymmetric with depth.")
        line.addParam("immersionIndex", params.FloatParam, default=1.518, label="immersion")
        line.addParam("sampleIndex", params.FloatParam, default=1.518, label="sample")
        form.addParam("depth", params.FloatParam, default=0.0, condition=optics,
                      label="Depth below the coverslip (µm)",
                      help="Depth of the particles below the coverslip, micrometres.")
        form.addParam("noiseModel", params.EnumParam, default=NOISE_GAUSSIAN,
                      choices=["Gaussian", "Poisson + read noise"],
                      display=params.EnumParam.DISPLAY_HLIST, label="Noise",
                      help="Gaussian noise on the signal scaled to [0, 1] (Eloy et al. 2023), "
                           "or photon (Poisson) noise with a Gaussian read-noise floor.")
        form.addParam("noiseStd", params.FloatParam, default=0.2,
                      condition=f"noiseModel=={NOISE_GAUSSIAN}",
                      label="Noise std (fraction of the signal maximum)",
                      help="Standard deviation of the Gaussian noise added to images whose "
                           "noiseless signal is scaled to [0, 1].")
        line = form.addLine("Photons", condition=f"noiseModel=={NOISE_POISSON}",
                            help="Expected photons at the brightest voxel, and the standard "
                                 "deviation of the camera's read noise in photons.")
        line.addParam("photons", params.FloatParam, default=50.0, label="at the peak")
        line.addParam("readNoise", params.FloatParam, default=1.0, label="read noise")
        add_count_param(form, "nSpots", maximum=MAX_SPOTS, default=120,
                        expertLevel=params.LEVEL_ADVANCED,
                        label="Degradation spots per particle",
                        help="Gaussian spots removed from each particle (non-uniform degree of "
                             "labelling); 0 for none.")
        form.addParam("maxShift", params.FloatParam, default=2.0,
                      expertLevel=params.LEVEL_ADVANCED, label="Maximum shift (voxels)",
                      help="Particle shifts are uniform in [-max, max] voxels on each axis.")
        form.addParam("outputKind", params.EnumParam, default=KIND_PARTICLES,
                      choices=["particles", "fields of view"],
                      display=params.EnumParam.DISPLAY_HLIST, label="Output",
                      help="Extracted particles with their true poses, or fields of view with "
                           "the true particle positions (for picking).")
        add_count_param(form, "nParticles", maximum=MAX_PARTICLES, default=20,
                        condition=f"outputKind=={KIND_PARTICLES}", label="Number of particles")
        line = form.addLine("Field size (voxels)", condition=f"outputKind=={KIND_FIELDS}",
                            help="Shape of each field of view: z, y, x in voxels.")
        add_count_param(line, "fieldZ", maximum=MAX_FIELD_SIZE, default=64, label="z")
        add_count_param(line, "fieldY", maximum=MAX_FIELD_SIZE, default=256, label="y")
        add_count_param(line, "fieldX", maximum=MAX_FIELD_SIZE, default=256, label="x")
        form.addParam("fieldVoxelSizeZ", params.FloatParam, default=0.0,
                      condition=f"outputKind=={KIND_FIELDS}",
                      label="Field voxel size z (µm)",
                      help="Axial voxel size of the fields; 0 = the voxel size above "
                           "(isotropic). The lateral voxel size is the voxel size above.")
        add_count_param(form, "nFields", maximum=MAX_FIELDS, default=1,
                        condition=f"outputKind=={KIND_FIELDS}", label="Number of fields")
        add_count_param(form, "particlesPerField", maximum=MAX_OBJECTS_PER_FIELD, default=20,
                        condition=f"outputKind=={KIND_FIELDS}", label="Particles per field")
        add_count_param(form, "nDebris", maximum=MAX_OBJECTS_PER_FIELD, default=5,
                        condition=f"outputKind=={KIND_FIELDS}", label="Debris per field",
                        help="Blobs of another shape that a picker must reject.")
        add_count_param(form, "touchingPairs", maximum=MAX_OBJECTS_PER_FIELD, default=2,
                        condition=f"outputKind=={KIND_FIELDS}",
                        label="Touching pairs per field",
                        help="Pairs of particles placed in contact (hard cases for picking).")
        add_seed_param(form)

    # --------------------------- STEPS functions ------------------------------
    def convertInputStep(self, key):
        kind = self.outputKind.get()
        vs = self.voxelSize.get()
        # the form gives the PSF and the shifts in voxels; job files carry micrometres
        job_params = {
            "kind": _JOB_KINDS[kind],
            "phantom": PHANTOMS[self.phantom.get()],
            "size": self.boxSize.get(),
            "voxel_size": self.voxelSize.get(),
            "n_channels": self.nChannels.get(),
            **self._psfParams(vs), **self._noiseParams(),
            "n_spots": self.nSpots.get(),
            "max_shift_um": voxels_to_um(self.maxShift.get(), vs),
        }
        outputs = {"volume": self._getExtraPath("ground_truth.ome.tif"),
                   "psf": self._getExtraPath("psf.ome.tif"),
                   "summary": self._getExtraPath("simulation.json")}
        if kind == KIND_PARTICLES:
            job_params["n_particles"] = self.nParticles.get()
            outputs.update(particles_dir=self._getExtraPath("particles"),
                           particles=self._getExtraPath("particles.csv"))
        else:
            job_params.update(
                field_shape=[self.fieldZ.get(), self.fieldY.get(), self.fieldX.get()],
                field_voxel_size_z=self._fieldVoxelSizeZ(),
                n_fields=self.nFields.get(),
                particles_per_field=self.particlesPerField.get(),
                n_debris=self.nDebris.get(),
                touching_pairs=self.touchingPairs.get())
            outputs.update(fields_dir=self._getExtraPath("fields"),
                           coordinates=self._getExtraPath("coordinates.csv"),
                           poses=self._getExtraPath("true_poses.csv"),
                           debris=self._getExtraPath("debris.csv"))
        self._writeJob(_STEP, inputs={}, params=job_params, outputs=outputs,
                       seed=self.seed.get())

    def _psfParams(self, vs) -> dict:
        model = self.psfModel.get()
        if model == PSF_GAUSSIAN:
            return {"psf_model": "gaussian",
                    "sigma_xy_um": voxels_to_um(self.sigmaXY.get(), vs),
                    "sigma_z_um": voxels_to_um(self.sigmaZ.get(), vs)}
        return {"psf_model": _PSF_JOB[model],
                "numerical_aperture": self.numericalAperture.get(),
                "wavelength_um": self.wavelength.get(),
                "immersion_index": self.immersionIndex.get(),
                "sample_index": self.sampleIndex.get(), "depth_um": self.depth.get()}

    def _noiseParams(self) -> dict:
        if self.noiseModel.get() == NOISE_GAUSSIAN:
            return {"noise_std": self.noiseStd.get()}
        photons, read = self.photons.get(), self.readNoise.get()
        # the job's Gaussian noise is a fraction of the maximum (photons)
        return {"poisson_photons": photons,
                "noise_std": read / photons if photons and photons > 0 else read}

    def createOutputStep(self, key):
        summary = self._summaryData()
        vs = tuple(summary["voxel_size"])
        outputs = {}
        outputs["outputVolume"] = image_from_file(
            Volume, self._getExtraPath("ground_truth.ome.tif"), vs, image_id="ground_truth")
        # fields: the PSF is sampled on the fields' grid (their voxel size)
        outputs["outputPSF"] = image_from_file(
            PSFModel, self._getExtraPath("psf.ome.tif"), summary["psf_voxel_size"],
            image_id="psf")
        if self.outputKind.get() == KIND_PARTICLES:
            outputs["outputParticles"] = self._particlesFromJob(vs)
            self._defineOutputs(**outputs)
        else:
            images = self._fieldsFromJob()
            self._defineOutputs(outputImages=images, **outputs)
            coords = self._coordinatesFromJob()
            self._defineOutputs(outputCoordinates=coords)
            self._defineSources([coords], pwobj.Pointer(self, extended="outputImages"))

    def _particlesFromJob(self, vs) -> SetOfParticles:
        table = read_particle_table(self._getExtraPath("particles.csv"))
        shape = read_shape(table.paths[0])
        parts = SetOfParticles(filename=self._getPath("particles.sqlite"))
        for pid, path, matrix in zip(table.ids, table.paths, table.matrices):
            p = Particle(filename=str(path), voxelSize=vs, shape=shape,
                         imageId=image_id_from_path(path))
            p.setObjId(int(pid))
            p.setTransform(matrix)
            parts.append(p)
        parts.setHasPoses(True)
        parts.write()
        self.info(f"{parts.getSize()} particle(s) of {shape} (C, D, D, D) with true poses")
        return parts

    def _summaryData(self) -> dict:
        return self._readJobJson("simulation.json")

    def _fieldsFromJob(self) -> SetOfFluoImages:
        images = SetOfFluoImages(filename=self._getPath("images.sqlite"))
        for field in self._summaryData()["fields"]:
            images.append(FluoImage(filename=field["path"], voxelSize=field["voxel_size"],
                                    shape=field["shape"], imageId=field["image_id"]))
        images.write()
        return images

    def _coordinatesFromJob(self) -> SetOfCoordinates3D:
        table = read_coordinates_csv(self._getExtraPath("coordinates.csv"))
        poses = read_poses_csv(self._getExtraPath("true_poses.csv"))
        by_id = dict(zip(poses.ids.tolist(), poses.matrices))
        box_um = voxels_to_um(self.boxSize.get(), self.voxelSize.get())
        coords = SetOfCoordinates3D(filename=self._getPath("coordinates.sqlite"))
        coords.setImages(pwobj.Pointer(self, extended="outputImages"))
        coords.setBoxSize(box_um)
        for image_id, pos, pid in zip(table.image_ids, table.positions_zyx_um,
                                      table.particle_id):
            c = Coordinate3D()
            z, y, x = pos
            c.setPosition(x, y, z)
            c.setImageId(str(image_id))
            c.setBoxSize(box_um)
            c.setTransform(by_id[int(pid)])
            coords.append(c)
        coords.write()
        self.info(f"{coords.getSize()} true particle position(s) in "
                  f"{self.nFields.get()} field(s), box {box_um:g} µm")
        return coords

    # --------------------------- INFO functions -------------------------------
    def _validate(self):
        errors = []
        phantom = PHANTOMS[self.phantom.get() or 0]
        nc = self.nChannels.get()
        if nc not in (1, 2):
            errors.append(f"Channels must be 1 or 2, got {nc}.")
        elif nc == 2 and phantom != "c9":
            errors.append(f"Two channels need the c9 phantom (barrel + torus), not {phantom}: "
                          "choose the c9 phantom or one channel.")
        box = self.boxSize.get()
        if box is None or box < 8:
            errors.append(f"Box size must be >= 8 voxels, got {box}.")
        if not self.voxelSize.get() or self.voxelSize.get() <= 0:
            errors.append(f"Voxel size must be > 0 µm, got {self.voxelSize.get()}.")
        for name, label in (("sigmaXY", "PSF sigma x, y"), ("sigmaZ", "PSF sigma z"),
                            ("noiseStd", "Noise std"), ("maxShift", "Maximum shift")):
            value = getattr(self, name).get()
            if value is None or value < 0:
                errors.append(f"{label} must be >= 0, got {value}.")
        self._validateOptics(errors)
        if self.nSpots.get() is None or self.nSpots.get() < 0:
            errors.append(f"Degradation spots must be >= 0, got {self.nSpots.get()}.")
        if self.outputKind.get() == KIND_PARTICLES:
            if not self.nParticles.get() or self.nParticles.get() < 1:
                errors.append(f"Number of particles must be >= 1, got {self.nParticles.get()}.")
            n_voxels = (self.nParticles.get() or 0) * (box or 0) ** 3
        else:
            self._validateFields(errors)
            n_voxels = (self.nFields.get() or 0) * int(np.prod(
                [max(0, v or 0) for v in (self.fieldZ.get(), self.fieldY.get(),
                                          self.fieldX.get())]))
        error = simulated_voxels_error(n_voxels * (nc or 1))
        if error:
            errors.append(error)
        return errors

    def _validateOptics(self, errors):
        if self.psfModel.get() != PSF_GAUSSIAN:
            na, imm = self.numericalAperture.get(), self.immersionIndex.get()
            if imm is None or not 1.0 <= imm <= 2.5:
                errors.append(f"Immersion refractive index must be in [1, 2.5], got {imm}.")
            elif na is None or not 0 < na < imm:
                errors.append(f"Numerical aperture must be > 0 and below the immersion index "
                              f"{imm:g}, got {na}.")
            sample = self.sampleIndex.get()
            if sample is None or not 1.0 <= sample <= 2.5:
                errors.append(f"Sample refractive index must be in [1, 2.5], got {sample}.")
            wl = self.wavelength.get()
            if wl is None or not 0.2 <= wl <= 2.0:
                errors.append(f"Emission wavelength must be in [0.2, 2] µm, got {wl}.")
            if self.depth.get() is None or not 0 <= self.depth.get() <= 1000:
                errors.append(f"Depth must be in [0, 1000] µm, got {self.depth.get()}.")
        if self.noiseModel.get() == NOISE_POISSON:
            photons, read = self.photons.get(), self.readNoise.get()
            if photons is None or not 0 < photons <= 1e9:
                errors.append(f"Photons at the peak must be in (0, 1e9], got {photons}.")
            if read is None or read < 0:
                errors.append(f"Read noise must be >= 0 photons, got {read}.")

    def _optics(self) -> str:
        """The PSF and the noise in words, for the summary and the methods."""
        if self.psfModel.get() == PSF_GAUSSIAN:
            psf = (f"a Gaussian PSF (sigma {self.sigmaXY.get():g} voxels laterally, "
                   f"{self.sigmaZ.get():g} axially)")
        else:
            kind = "vectorial" if self.psfModel.get() == PSF_VECTORIAL else "scalar"
            psf = (f"a {kind} widefield PSF (NA {self.numericalAperture.get():g}, emission "
                   f"{self.wavelength.get():g} µm, indices {self.immersionIndex.get():g} / "
                   f"{self.sampleIndex.get():g}, depth {self.depth.get():g} µm)")
        if self.noiseModel.get() == NOISE_GAUSSIAN:
            noise = f"Gaussian noise of standard deviation {self.noiseStd.get():g}"
        else:
            noise = (f"Poisson noise ({self.photons.get():g} photons at the peak) and "
                     f"{self.readNoise.get():g} photon(s) of read noise")
        return f"{psf} and {noise}"

    def _fieldVoxelSizeZ(self) -> float:
        vz = self.fieldVoxelSizeZ.get()
        return float(vz) if vz and vz > 0 else float(self.voxelSize.get())

    def _validateFields(self, errors):
        shape = (self.fieldZ.get(), self.fieldY.get(), self.fieldX.get())
        if any(s is None or s < 1 for s in shape):
            errors.append(f"Field size must be positive voxels (z, y, x), got {shape}.")
            return
        if self.fieldVoxelSizeZ.get() is None or self.fieldVoxelSizeZ.get() < 0:
            errors.append(f"Field voxel size z must be >= 0 µm (0 = isotropic), got "
                          f"{self.fieldVoxelSizeZ.get()}.")
            return
        box = self.boxSize.get() or 0
        vs = self.voxelSize.get() or 0
        extent_um = np.array(shape, float) * (self._fieldVoxelSizeZ(), vs, vs)
        if np.any(extent_um < box * vs):
            errors.append(f"Fields of {shape} voxels ({tuple(np.round(extent_um, 3))} µm) are "
                          f"smaller than one particle box ({box * vs:g} µm): enlarge the fields "
                          "or reduce the box size.")
        for name, label, minimum in (("nFields", "Number of fields", 1),
                                     ("particlesPerField", "Particles per field", 1),
                                     ("nDebris", "Debris per field", 0),
                                     ("touchingPairs", "Touching pairs per field", 0)):
            value = getattr(self, name).get()
            if value is None or value < minimum:
                errors.append(f"{label} must be >= {minimum}, got {value}.")
        pairs, per_field = self.touchingPairs.get() or 0, self.particlesPerField.get() or 0
        if 2 * pairs > per_field:
            errors.append(f"{pairs} touching pair(s) need {2 * pairs} particles per field, got "
                          f"{per_field}: raise the particles per field or lower the pairs.")

    def _summary(self):
        if not hasattr(self, "outputVolume"):
            return ["Not simulated yet."]
        lines = [f"Phantom {PHANTOMS[self.phantom.get()]}, box {self.boxSize.get()} voxels of "
                 f"{self.voxelSize.get():g} µm, {self._optics()}."]
        if hasattr(self, "outputParticles"):
            lines.append(f"{self.outputParticles.getSize()} particle(s) with true poses.")
        if hasattr(self, "outputCoordinates"):
            lines.append(f"{self.outputImages.getSize()} field(s) of view, "
                         f"{self.outputCoordinates.getSize()} true particle position(s).")
        return lines

    def _methods(self):
        if not hasattr(self, "outputVolume"):
            return []
        return [f"Simulated data were generated from the {PHANTOMS[self.phantom.get()]} "
                f"phantom with {self._optics()}, following [Eloy2023]."]
