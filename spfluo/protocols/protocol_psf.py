"""Theoretical PSF protocol: a PSF computed from the optics, for users without a bead image.

``ProtTheoreticalPSF`` computes a widefield PSF (Gibson & Lanni's scalar model, or the
vectorial model of Aguet et al. 2009) or a confocal one (the product of the excitation and
emission PSFs, the emission one seen through the pinhole) with ``psfmodels``
(:func:`spfluo.algorithms.psf.gibson_lanni_psf`), centred on its centre of mass and
normalised (:func:`spfluo.algorithms.psf_preparation.prepare_psf`).  Like an imported
PSF it keeps its sampling: the protocols that use it resample it to the particles.

Expansion microscopy: the PSF is computed at the microscope's voxel sizes (the expanded
sample) and stored with these divided by the expansion factor, in the units of the
sample before expansion, the units of fields imported with their voxel sizes divided by
the same factor.
"""

from __future__ import annotations

import math

import pyworkflow.protocol.params as params

from ..algorithms.limits import MAX_BOX_SIZE
from ..algorithms.psf import gibson_lanni_psf
from ..algorithms.psf_preparation import prepare_psf
from ..objects import PSFModel
from ..objects.arrays import image_from_array
from .base import ProtFluo, add_count_param

__all__ = ["ProtTheoreticalPSF", "automatic_psf_shape"]

WIDEFIELD, CONFOCAL = 0, 1
_MICROSCOPE_KEYS = ["widefield", "confocal"]
SCALAR, VECTORIAL = 0, 1
_METHOD_KEYS = ["scalar", "vectorial"]
_METHOD_LABELS = ["scalar (Gibson & Lanni)", "vectorial (Aguet et al. 2009)"]
#: Half extents of the automatic box: lateral Airy radii, axial widths 2 n lambda / NA^2.
AIRY_RADII, AXIAL_WIDTHS = 4, 2


def automatic_psf_shape(*, numerical_aperture: float, wavelength: float, immersion_index: float,
                        voxel_size) -> tuple[int, int, int]:
    """Odd box ``(Z, Y, X)`` in voxels that holds the central part of a PSF.

    Laterally ``AIRY_RADII`` Airy radii (``0.61 lambda / NA``) on each side of the centre,
    axially ``AXIAL_WIDTHS`` times ``2 n lambda / NA^2`` (the axial extent of the main
    lobe), at ``voxel_size`` ``(z, y, x)`` in micrometres; at most ``MAX_BOX_SIZE``.
    """
    lateral = AIRY_RADII * 0.61 * wavelength / numerical_aperture
    axial = AXIAL_WIDTHS * 2.0 * immersion_index * wavelength / numerical_aperture ** 2
    half = (axial / voxel_size[0], lateral / voxel_size[1], lateral / voxel_size[2])
    return tuple(min(MAX_BOX_SIZE - (MAX_BOX_SIZE + 1) % 2, 2 * max(1, math.ceil(h)) + 1)
                 for h in half)


class ProtTheoreticalPSF(ProtFluo):
    """Compute a widefield or confocal PSF from the optics (no bead image needed).

    Gibson & Lanni's model accounts for the refractive-index mismatch between the immersion
    medium and the sample: a source deep in a watery sample seen through an oil objective
    gives a PSF longer along z and asymmetric.  Give the depth of the particles below the
    coverslip.
    """

    _label = "theoretical PSF"
    _possibleOutputs = {"outputPSF": PSFModel}
    _references = ["Gibson1991", "Aguet2009"]

    # --------------------------- DEFINE param functions -----------------------
    def _defineParams(self, form):
        form.addSection(label="Optics")
        form.addParam("microscope", params.EnumParam, default=WIDEFIELD,
                      choices=_MICROSCOPE_KEYS, display=params.EnumParam.DISPLAY_HLIST,
                      label="Microscope",
                      help="Widefield: the emission PSF. Confocal: the excitation PSF times "
                           "the emission PSF seen through the pinhole.")
        form.addParam("method", params.EnumParam, default=SCALAR, choices=_METHOD_LABELS,
                      label="Model",
                      help="Scalar Gibson & Lanni (fast, accurate below NA 1.2), or the "
                           "vectorial model of Aguet et al. 2009 (high NA).")
        form.addParam("numericalAperture", params.FloatParam, default=1.4,
                      label="Numerical aperture", help="NA of the objective.")
        form.addParam("emissionWavelength", params.FloatParam, default=0.52,
                      label="Emission wavelength (µm)",
                      help="Peak emission wavelength in micrometres (0.52 for GFP).")
        form.addParam("excitationWavelength", params.FloatParam, default=0.488,
                      condition=f"microscope == {CONFOCAL}",
                      label="Excitation wavelength (µm)",
                      help="Laser line in micrometres (0.488 for GFP).")
        form.addParam("pinhole", params.FloatParam, default=1.0,
                      condition=f"microscope == {CONFOCAL}", label="Pinhole (Airy units)",
                      help="Pinhole diameter in Airy units (0: an ideal point detector).")
        form.addParam("immersionIndex", params.FloatParam, default=1.518,
                      label="Immersion refractive index",
                      help="1.518 oil, 1.33 water, 1.406 silicone.")
        form.addParam("sampleIndex", params.FloatParam, default=1.33,
                      label="Sample refractive index",
                      help="Refractive index of the mounting medium around the particles "
                           "(1.33 water, 1.45 glycerol, 1.52 hardening mountants).")
        form.addParam("depth", params.FloatParam, default=0.0,
                      label="Depth below the coverslip (µm)",
                      help="Depth of the particles below the coverslip, micrometres (in the "
                           "expanded sample for expansion microscopy).")
        form.addSection(label="Sampling")
        line = form.addLine("Voxel size (µm)",
                            help="Voxel size of the microscope, micrometres: lateral (x = y) "
                                 "and axial (z) (for expansion microscopy: in the expanded "
                                 "sample, the camera's pixel at the sample).")
        line.addParam("voxelSizeXY", params.FloatParam, default=0.05, label="x, y (µm)")
        line.addParam("voxelSizeZ", params.FloatParam, default=0.15, label="z (µm)")
        line = form.addLine("Box (voxels)",
                            help="PSF box in voxels, laterally (x = y) and axially (z). 0: "
                                 f"automatic, {AIRY_RADII} Airy radii laterally and "
                                 f"{AXIAL_WIDTHS} axial widths (2 n lambda / NA^2) on each "
                                 "side of the centre.")
        add_count_param(line, "sizeXY", maximum=MAX_BOX_SIZE, default=0, label="x, y")
        add_count_param(line, "sizeZ", maximum=MAX_BOX_SIZE, default=0, label="z")
        form.addParam("expansionFactor", params.FloatParam, default=1.0,
                      label="Expansion factor",
                      help="Expansion microscopy: the PSF is computed at the voxel sizes above "
                           "and stored with them divided by this factor (the units of the "
                           "sample before expansion). 1: no expansion.")

    # --------------------------- INSERT steps functions -----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.computeStep, self._paramsKey())

    # --------------------------- STEPS functions ------------------------------
    def computeStep(self, key):
        vs = self._voxelSize()
        shape = self._shape()
        confocal = self.microscope.get() == CONFOCAL
        psf = gibson_lanni_psf(
            shape, voxel_size=vs, numerical_aperture=self.numericalAperture.get(),
            wavelength=self.emissionWavelength.get(),
            immersion_index=self.immersionIndex.get(), sample_index=self.sampleIndex.get(),
            depth=self.depth.get(), model=_MICROSCOPE_KEYS[self.microscope.get()],
            excitation_wavelength=self.excitationWavelength.get() if confocal else None,
            pinhole_diameter=self.pinhole.get() if confocal else 0.0,
            method=_METHOD_KEYS[self.method.get()])
        prepared = prepare_psf(psf, vs, subtract_background=False, centre=True)
        stored = tuple(v / self.expansionFactor.get() for v in vs)
        self.info(f"{_MICROSCOPE_KEYS[self.microscope.get()]} {_METHOD_KEYS[self.method.get()]} "
                  f"PSF, NA {self.numericalAperture.get():g}, emission "
                  f"{self.emissionWavelength.get():g} µm, depth {self.depth.get():g} µm: "
                  f"{prepared.describe()}; stored with voxel size {stored} µm (z, y, x)")
        out = image_from_array(PSFModel, prepared.psf, stored, self._getExtraPath("psf.ome.tif"),
                               image_id="psf")
        self._defineOutputs(outputPSF=out)

    # --------------------------- INFO functions -------------------------------
    def _validate(self):
        errors = []
        na, ni = self.numericalAperture.get(), self.immersionIndex.get()
        ns = self.sampleIndex.get()
        for label, value in (("Immersion refractive index", ni),
                             ("Sample refractive index", ns)):
            if value is None or not 1 <= value <= 3:
                errors.append(f"{label} must be between 1 and 3, got {value}.")
        if na is None or not na > 0:
            errors.append(f"Numerical aperture must be > 0, got {na}.")
        elif ni is not None and na >= ni:
            errors.append(f"Numerical aperture {na:g} must be smaller than the immersion "
                          f"refractive index {ni:g} (NA = n sin(theta)).")
        waves = [("Emission wavelength", self.emissionWavelength.get())]
        if self.microscope.get() == CONFOCAL:
            waves.append(("Excitation wavelength", self.excitationWavelength.get()))
            pinhole = self.pinhole.get()
            if pinhole is None or pinhole < 0:
                errors.append(f"Pinhole must be >= 0 Airy units, got {pinhole}.")
        for label, value in waves:
            if value is None or not 0.2 <= value <= 2.0:
                hint = (f" (in micrometres: {value / 1000:g} for {value:g} nm)"
                        if value is not None and value > 100 else "")
                errors.append(f"{label} must be between 0.2 and 2 µm, got {value}{hint}.")
        depth = self.depth.get()
        if depth is None or depth < 0:
            errors.append(f"Depth below the coverslip must be >= 0 µm, got {depth}.")
        vxy, vz = self.voxelSizeXY.get(), self.voxelSizeZ.get()
        if not (vxy and vxy > 0 and vz and vz > 0):
            errors.append(f"Voxel sizes must be > 0 µm, got x, y = {vxy}, z = {vz}.")
        factor = self.expansionFactor.get()
        if factor is None or not factor >= 1:
            errors.append(f"Expansion factor must be >= 1 (1: no expansion), got {factor}.")
        for label, value in (("Box x, y", self.sizeXY.get()), ("Box z", self.sizeZ.get())):
            if value is None or (value != 0 and value < 3):
                errors.append(f"{label} must be 0 (automatic) or at least 3 voxels, got "
                              f"{value}.")
        return errors

    def _summary(self):
        if not hasattr(self, "outputPSF"):
            return ["Not computed yet."]
        psf = self.outputPSF
        return [f"{_MICROSCOPE_KEYS[self.microscope.get()]} PSF "
                f"({_METHOD_LABELS[self.method.get()]}), NA {self.numericalAperture.get():g}, "
                f"emission {self.emissionWavelength.get():g} µm, depth {self.depth.get():g} "
                f"µm: {psf.getDimensions()} voxels (z, y, x) of {psf.getVoxelSize()} µm."]

    def _methods(self):
        return [f"The PSF was computed with the {_METHOD_LABELS[self.method.get()]} model "
                f"(psfmodels) for a {_MICROSCOPE_KEYS[self.microscope.get()]} microscope, NA "
                f"{self.numericalAperture.get():g}, emission wavelength "
                f"{self.emissionWavelength.get():g} µm, immersion index "
                f"{self.immersionIndex.get():g}, sample index {self.sampleIndex.get():g}, "
                f"depth {self.depth.get():g} µm."]

    # --------------------------- UTILS functions ------------------------------
    def _voxelSize(self) -> tuple[float, float, float]:
        return (self.voxelSizeZ.get(), self.voxelSizeXY.get(), self.voxelSizeXY.get())

    def _shape(self) -> tuple[int, int, int]:
        auto = automatic_psf_shape(numerical_aperture=self.numericalAperture.get(),
                                   wavelength=self.emissionWavelength.get(),
                                   immersion_index=self.immersionIndex.get(),
                                   voxel_size=self._voxelSize())
        z, xy = self.sizeZ.get() or auto[0], self.sizeXY.get() or auto[1]
        return (z, xy, xy)
