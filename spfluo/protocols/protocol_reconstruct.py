"""Reconstruction protocol: a volume from particles whose poses are known.

``ProtReconstructKnownPoses`` runs the job ``reconstruct`` (:mod:`spfluo.jobs.reconstruct`,
:func:`spfluo.algorithms.reconstruct.reconstruct`): joint deconvolution and multi-view
reconstruction with a Hessian-Schatten or total-variation regulariser and positivity
(ADMM, Fortun et al. 2017), the closed-form Tikhonov solution (Fortun et al. 2018 eq. 6), or the baselines of
Fortun et al. 2017 (align and average; deconvolve each particle, then average).  The sums over
particles are computed once, so an iteration costs the same for 10 or 10,000
particles.  Cn symmetry and several channels (shared poses, one PSF each) are folded in.
With half maps, the particles are split into two random halves whose reconstructions give
the gold-standard FSC (masked, corrected by noise substitution); the automatic weight is
chosen on them.  The solution is confined to a sphere (the support, on by default).

Output: a :class:`~spfluo.objects.Volume` with its half maps, the half-map FSC (CSV), its
resolution (µm, first channel reconstructed; set only when measured) with the verdict a
user reads, and the optical cutoff of the PSF.
The Fourier coverage (summed rotated |OTF|^2) is kept as the volume's ``coverageFile``.
"""

from __future__ import annotations

import os

import pyworkflow.object as pwobj
import pyworkflow.protocol.params as params

from ..algorithms.limits import MAX_BATCH_SIZE, MAX_SOLVER_ITERATIONS, MAX_SYMMETRY_ORDER
from ..algorithms.reconstruct.weight import DEFAULT_WEIGHT
from ..objects import PSFModel, Volume
from .base import ProtFluoJob, add_count_param, add_gpu_params, add_seed_param, pointed
from .convert import (
    PREPARED_PSF,
    add_support_params,
    check_support_radius,
    support_job_params,
    PSF_HELP,
    check_channel_list,
    check_particles_with_poses,
    check_psf_matches,
    check_symmetry_order,
    image_from_file,
    parse_channel_list,
    prepared_psf,
    write_particles_for_job,
)

__all__ = ["ProtReconstructKnownPoses"]

_STEP = "reconstruct"
#: Method choices in the form, in the order of :data:`_METHOD_KEYS`.
# enum indices are stored in projects: new methods go at the end
_METHOD_LABELS = ["Hessian (Schatten norm)", "Total variation", "Tikhonov (closed form)",
                  "Average (baseline)", "Deconvolve, then average (baseline)",
                  "Single view (baseline)"]
_METHOD_KEYS = ["hessian", "tv", "tikhonov", "average", "deconv-average", "single-view"]
HESSIAN, TV, TIKHONOV, AVERAGE, DECONV_AVERAGE, SINGLE_VIEW = range(6)
WEIGHT_AUTO, WEIGHT_GIVEN = 0, 1
#: Name of one channel in the messages about the 'Channels' parameter.
_CHANNEL_LABEL = "Channel"


class ProtReconstructKnownPoses(ProtFluoJob):
    """Reconstruct a volume from particles with known poses (and a PSF).

    Solves ``min_x>=0 sum_i ||y_i - H_i x||^2 / 2N + w phi(x)`` where ``H_i`` blurs by the
    PSF rotated by the inverse pose of particle ``i``, and ``phi`` is the Hessian
    Schatten-1 norm (piecewise smooth, no staircase), the total variation (piecewise
    constant) or a quadratic gradient penalty (closed form).
    """

    _label = "reconstruct with known poses"
    _possibleOutputs = {"outputVolume": Volume, "outputPSF": PSFModel}
    _references = ["Fortun2017", "Fortun2018", "Donati2020", "Chen2013"]
    _jobStep = _STEP

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        #: the weight(s) used, one per channel reconstructed (set by createOutputStep)
        self.weightUsed = pwobj.String()

    # --------------------------- DEFINE param functions -----------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles",
                      important=True, label="Particles (with poses)",
                      help="Particles whose poses are known: from ab initio, refinement, a "
                           "simulation, or an import with a poses file.")
        form.addParam("inputPSF", params.PointerParam, pointerClass="PSFModel",
                      allowsNull=True, label="PSF",
                      help=PSF_HELP + " Not used by 'Average'.")
        form.addParam("method", params.EnumParam, default=HESSIAN, choices=_METHOD_LABELS,
                      label="Method",
                      help="Hessian: Schatten-1 norm of the Hessian with positivity (ADMM), "
                           "piecewise-smooth results without staircase (Fortun et al. 2017). Total "
                           "variation: piecewise constant (Fortun et al. 2018). Tikhonov: quadratic "
                           "gradient penalty, closed form, instant. Average and deconvolve-"
                           "then-average: the baselines of Fortun et al. 2017. Single view: "
                           "the particle of best signal-to-noise ratio deconvolved alone, the "
                           "reference point of Fortun et al. 2018.")
        form.addParam("weightMode", params.EnumParam, default=WEIGHT_AUTO,
                      choices=["automatic (half maps)", "given"],
                      display=params.EnumParam.DISPLAY_HLIST,
                      condition=f"method in [{HESSIAN}, {TV}, {TIKHONOV}]",
                      label="Regularisation weight",
                      help="Automatic: reconstruct each half of the particles for a range "
                           "of weights, keep the one whose half maps best predict the other "
                           "half's data on the measured frequencies (the range is widened "
                           "until that optimum is inside it; the log shows the curve), halved "
                           "for the whole set. Given: the value below.")
        defaults = ", ".join(f"{_METHOD_LABELS[_METHOD_KEYS.index(m)].split(' (')[0]} {w:g}"
                             for m, w in DEFAULT_WEIGHT.items())
        form.addParam("weight", params.FloatParam, default=None, allowsNull=True,
                      condition=f"method in [{DECONV_AVERAGE}, {SINGLE_VIEW}] or (method in "
                                f"[{HESSIAN}, {TV}, "
                                f"{TIKHONOV}] and weightMode == {WEIGHT_GIVEN})",
                      label="Weight (empty: the method's default)",
                      help="Regularisation weight per mean particle, >= 0. For Hessian and "
                           "TV the data are normalised to a back-projection of maximum 1. "
                           f"Empty: the method's default ({defaults}).")
        add_support_params(form, condition=f"method in [{HESSIAN}, {TV}, {TIKHONOV}]")
        add_count_param(form, "iterations", maximum=MAX_SOLVER_ITERATIONS, default=100,
                        condition=f"method in [{HESSIAN}, {TV}, {DECONV_AVERAGE}, "
                                  f"{SINGLE_VIEW}]",
                        label="Iterations",
                        help="ADMM iterations; each costs two FFTs whatever the number of "
                             "particles (deconvolve-then-average: half of them per particle).")
        add_count_param(form, "symmetry", maximum=MAX_SYMMETRY_ORDER, default=1,
                        label="Symmetry order (Cn about z)",
                        help="Order n of the cyclic symmetry of the particle about the z axis "
                             "of the reference (1 = none; 9 for a centriole). Every particle "
                             "counts n times at no cost per iteration.")
        form.addParam("channels", params.StringParam, default="",
                      label="Channels (empty = all)",
                      help="Channels to reconstruct, e.g. '0' or '0 1' (numbered from 0). "
                           "They share the poses; each uses its PSF channel.")
        form.addParam("doHalfMaps", params.BooleanParam, default=True,
                      label="Half maps and FSC?",
                      help="Split the particles into two random halves, reconstruct both and "
                           "compute their FSC (gold standard). Costs two more solves.")
        form.addParam("interpolation", params.EnumParam, default=0,
                      choices=["trilinear", "cubic"], expertLevel=params.LEVEL_ADVANCED,
                      label="Interpolation",
                      help="Resampling of the particles brought back to the reference frame. "
                           "Cubic is about 3x slower to precompute and gains little: the "
                           "blur of trilinear resampling is already modelled in the kernel.")
        form.addParam("padding", params.FloatParam, default=1.125,
                      expertLevel=params.LEVEL_ADVANCED, label="Padding factor",
                      help="Computation grid side over box side, in [1, 3]. The default "
                           "margin (2 voxels a side for 32-voxel boxes) keeps the periodic "
                           "blur model from joining opposite faces of the box; 1 is 1.4x "
                           "faster per iteration and fine when the boxes have empty margins.")
        add_count_param(form, "batchSize", maximum=MAX_BATCH_SIZE, default=16,
                        expertLevel=params.LEVEL_ADVANCED, label="Particles per batch",
                        help="Particles read and processed together (memory ~ this many boxes).")
        add_seed_param(form)
        add_gpu_params(form)

    # --------------------------- STEPS functions ------------------------------
    def convertInputStep(self, key):
        particles = self.inputParticles.get()
        table = write_particles_for_job(particles, self._getExtraPath("particles.csv"),
                                        with_poses=True)
        inputs = {"particles": table}
        job_params = {
            "method": self._methodKey(),
            "weight": self._weightValue(),
            "iterations": self.iterations.get(),
            "symmetry": self.symmetry.get(),
            "channels": parse_channel_list(self.channels.get(), label=_CHANNEL_LABEL),
            "half_maps": bool(self.doHalfMaps.get()),
            "voxel_size": list(particles.getVoxelSize()),
            "order": 1 if self.interpolation.get() == 0 else 3,
            "pad": self.padding.get(),
            "batch_size": self.batchSize.get(),
        }
        if self._methodKey() in ("hessian", "tv", "tikhonov"):
            job_params.update(support_job_params(self))
        psf = pointed(self.inputPSF)
        if psf is not None:
            inputs["psf"] = psf.getFileName()
            job_params["psf_voxel_size"] = list(psf.getVoxelSize())
        outputs = {"volume": self._getExtraPath("volume.ome.tif"),
                   "summary": self._getExtraPath("reconstruction.json"),
                   "coverage": self._getExtraPath("coverage.ome.tif")}
        if psf is not None:
            outputs["psf_prepared"] = self._getExtraPath(PREPARED_PSF)
        if self.doHalfMaps.get():
            outputs.update(self._halfMapOutputs())
        self._writeJob(_STEP, inputs=inputs, params=job_params, outputs=outputs,
                       seed=self.seed.get())

    def createOutputStep(self, key):
        summary = self._readJobJson("reconstruction.json")
        volume = image_from_file(Volume, self._getExtraPath("volume.ome.tif"),
                                 summary["voxel_size"], image_id="reconstruction")
        self._setHalfMaps(volume, summary)
        coverage = self._getExtraPath("coverage.ome.tif")
        if os.path.exists(coverage):
            volume.setCoverageFile(coverage)
        self.weightUsed.set(", ".join("n/a" if w is None else f"{w:.3g}"
                                      for w in summary["weight"]))
        self._store(self.weightUsed)
        self.info(f"{summary['method']} reconstruction of {summary['n_particles']} particles, "
                  f"weight {self.weightUsed.get()}")
        outputs = {"outputVolume": volume}
        if os.path.exists(self._getExtraPath(PREPARED_PSF)):
            outputs["outputPSF"] = prepared_psf(self, summary["voxel_size"])
        self._defineOutputs(**outputs)
        self._defineSources(list(outputs.values()), self.inputParticles, self.inputPSF)

    # --------------------------- INFO functions -------------------------------
    def _validate(self):
        errors = []
        particles = pointed(self.inputParticles)
        if particles is None:
            return ["Choose the particles (with poses) to reconstruct."]
        items = check_particles_with_poses(particles, errors)
        if not items:
            return errors
        method = self._methodKey()
        psf = pointed(self.inputPSF)
        if psf is None and method != "average":
            errors.append("Choose the PSF (only the 'Average' method works without one).")
        check_psf_matches(psf, particles, errors)
        check_symmetry_order(self.symmetry.get(), errors)
        iterations = self.iterations.get()
        if method in ("hessian", "tv", "deconv-average", "single-view") and (
                iterations is None or iterations < 1):
            errors.append(f"Iterations must be >= 1, got {iterations}.")
        weight = self._weightValue()
        if weight != "auto" and weight is not None and not weight >= 0:
            errors.append(f"Weight must be >= 0, got {weight}.")
        if weight == "auto" and not self.doHalfMaps.get():
            errors.append("The automatic weight is chosen on half maps: set 'Half maps and "
                          "FSC?' to Yes, or give the weight.")
        if self.doHalfMaps.get() and len(items) < 2:
            errors.append(f"Half maps need at least 2 particles, the set has {len(items)}: "
                          "set 'Half maps and FSC?' to No.")
        check_channel_list(self.channels.get(), particles, errors, label=_CHANNEL_LABEL)
        if method in ("hessian", "tv", "tikhonov"):
            check_support_radius(self, particles, errors)
        pad = self.padding.get()
        if pad is None or not 1 <= pad <= 3:
            errors.append(f"Padding factor must be in [1, 3], got {pad}.")
        batch = self.batchSize.get()
        if batch is None or batch < 1:
            errors.append(f"Particles per batch must be >= 1, got {batch}.")
        return errors

    def _summary(self):
        if not hasattr(self, "outputVolume"):
            return ["Not reconstructed yet."]
        vol = self.outputVolume
        lines = [f"{_METHOD_LABELS[self.method.get()]} reconstruction of "
                 f"{self.inputParticles.get().getSize()} particles, weight "
                 f"{self.weightUsed.get() or '?'}"
                 + (f", symmetry C{self.symmetry.get()}" if self.symmetry.get() > 1 else "")
                 + "."]
        if vol.getResolutionText():
            lines.append(f"Half-map FSC resolution (0.143, masked, corrected): "
                         f"{vol.getResolutionText()}.")
        return lines

    def _methods(self):
        if not hasattr(self, "outputVolume"):
            return []
        method = self._methodKey()
        text = {
            "hessian": "by joint deconvolution and multi-view reconstruction with a Hessian "
                       "Schatten-norm regulariser and positivity, solved by ADMM [Fortun2017]",
            "tv": "by joint deconvolution and multi-view reconstruction with total-variation "
                  "regularisation and positivity, solved by ADMM [Fortun2017, Fortun2018]",
            "tikhonov": "in closed form with a quadratic gradient penalty [Fortun2018]",
            "average": "by aligning and averaging the particles (baseline of [Fortun2017])",
            "deconv-average": "by deconvolving each particle with total variation, then "
                              "aligning and averaging (baseline of [Fortun2017])",
            "single-view": "by deconvolving, with total variation, the one particle of best "
                           "signal-to-noise ratio (single-view baseline of [Fortun2018])",
        }[method]
        sentence = (f"The volume was reconstructed from {self.inputParticles.get().getSize()} "
                    f"particles with known poses {text}; the sums over particles were "
                    "computed once as a convolution kernel [Donati2020].")
        if self.symmetry.get() > 1:
            sentence += f" C{self.symmetry.get()} symmetry was imposed [Fortun2018]."
        return [sentence]

    # --------------------------- UTILS functions ------------------------------
    def _methodKey(self) -> str:
        return _METHOD_KEYS[self.method.get()]

    def _weightValue(self):
        """'auto', a number, or None (the method's default / no weight)."""
        method = self._methodKey()
        if method == "average":
            return None
        if method in ("deconv-average", "single-view") or \
                self.weightMode.get() == WEIGHT_GIVEN:
            return self.weight.get()
        return "auto"
