"""Ab initio reconstruction protocol: a volume and the particles' poses, without a template.

``ProtAbInitio`` runs the job ``abinitio`` (:mod:`spfluo.jobs.abinitio`) with one of two
methods:

- **SGD with importance sampling** (default, Eloy et al. 2023,
  :func:`spfluo.algorithms.abinitio.sgd_reconstruction`): stochastic gradient descent on
  the Fourier volume; per particle, candidate orientations drawn from per-particle
  distributions on a Fibonacci x in-plane grid of SO(3), translations by correlation,
  kernel-smoothed importance-weighted marginal likelihoods; coarse-to-fine; stops on an
  energy plateau.  The job checkpoints every epoch: a run that is stopped or killed
  continues from its last epoch when it is restarted ("continue").
- **Simulated annealing** (Fortun et al. 2018, :func:`spfluo.algorithms.abinitio.annealing.annealing_reconstruction`):
  k-means class representatives of downsampled particles, closed-form quadratic volume,
  Metropolis-Hastings with incremental block coordinates; then every particle's pose by
  a search against that volume.

The result volume is, by default, the known-pose reconstruction from the estimated poses
(sharper than the iterate of either method).

Outputs: ``outputVolume`` (a :class:`~spfluo.objects.Volume`; its ``energiesFile``,
``marginalsFile`` and ``summaryFile`` attributes are the energy per epoch (CSV), the final
marginal likelihoods (``.npz``) and the run summary (JSON)) and ``outputParticles`` (the
particles with their estimated poses), both derived from the particles and the PSF, and
``outputPSF``, the PSF at the particles' voxel size and box that the run used.
"""

from __future__ import annotations

import pyworkflow.object as pwobj
import pyworkflow.protocol.params as params

from ..algorithms.abinitio.options import FINAL_METHODS, AnnealingOptions, SGDOptions
from ..algorithms.limits import (
    MAX_BOX_SIZE,
    MAX_CLASSES,
    MAX_DIRECTIONS,
    MAX_EPOCHS,
    MAX_IN_PLANE_ANGLES,
    MAX_SYMMETRY_ORDER,
    orientations_error,
    particles_bytes,
)
from ..objects import PSFModel, SetOfParticles, Volume
from .base import (
    ProtFluoJob,
    add_count_param,
    add_gpu_params,
    add_seed_param,
    memory_errors,
    pointed,
)
from .convert import (
    PREPARED_PSF,
    PSF_HELP,
    check_psf_matches,
    check_symmetry_order,
    image_from_file,
    particles_with_poses,
    prepared_psf,
    read_output_poses,
    write_particles_for_job,
)

__all__ = ["ProtAbInitio"]

_STEP = "abinitio"
SGD, ANNEALING = 0, 1
_METHOD_KEYS = ["sgd", "annealing"]
_METHOD_LABELS = ["SGD with importance sampling (Eloy et al.)",
                  "Simulated annealing (Fortun et al. 2018)"]
#: The defaults of the algorithms (each defined once, in their options).
_SGD = SGDOptions()
_ANNEALING = AnnealingOptions()
FINAL_HESSIAN, FINAL_TV, FINAL_TIKHONOV, FINAL_NONE = range(4)
_FINAL_KEYS = list(FINAL_METHODS) + [None]
_FINAL_LABELS = ["Hessian (Schatten norm)", "Total variation", "Tikhonov (closed form)",
                 "none (keep the ab initio iterate)"]


class ProtAbInitio(ProtFluoJob):
    """Reconstruct a volume and estimate the particles' poses without a template.

    The particles (cubic boxes, isotropic voxels) are seen through the PSF at unknown
    orientations and small shifts; the protocol finds a volume and one pose per particle
    that explain them (maximum likelihood under Gaussian noise).  Use its volume to start
    a refinement, and its particles (with poses) for a known-pose reconstruction.
    """

    _label = "ab initio reconstruction"
    _possibleOutputs = {"outputVolume": Volume, "outputParticles": SetOfParticles,
                        "outputPSF": PSFModel}
    _references = ["Eloy2023", "Fortun2018"]
    _jobStep = _STEP

    # --------------------------- DEFINE param functions -----------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles",
                      important=True, label="Particles",
                      help="Extracted (or simulated, or imported) particles: cubic boxes "
                           "with isotropic voxels. Poses they may carry (e.g. the ground "
                           "truth of a simulation) are ignored by the reconstruction and "
                           "only drawn on the figures.")
        form.addParam("inputPSF", params.PointerParam, pointerClass="PSFModel",
                      important=True, label="PSF",
                      help=PSF_HELP)
        form.addParam("method", params.EnumParam, default=SGD, choices=_METHOD_LABELS,
                      label="Method",
                      help="SGD with importance sampling (Eloy et al. 2023): all particles at once, "
                           "robust to a low degree of labelling, fast. Simulated annealing "
                           "(Fortun et al. 2018): a few class representatives are aligned by a "
                           "stochastic search, then every particle against their volume.")
        add_count_param(form, "symmetry", maximum=MAX_SYMMETRY_ORDER, default=1,
                        label="Symmetry order (Cn about z)",
                        help="Order n of the cyclic symmetry of the particle about its z axis "
                             "(1 = none; 9 for a centriole). The in-plane search then covers one "
                             "asymmetric unit and the volume is symmetric.")
        form.addParam("finalReconstruction", params.EnumParam, default=FINAL_HESSIAN,
                      choices=_FINAL_LABELS, label="Final volume",
                      help="Reconstruct the result volume from the estimated poses with the "
                           "known-pose solver (weight chosen on half maps; sharper than the "
                           "ab initio iterate), or keep the iterate.")
        form.addSection(label="SGD")
        add_count_param(form, "maxEpochs", maximum=MAX_EPOCHS, default=_SGD.max_epochs,
                        condition=f"method == {SGD}", label="Maximum number of epochs",
                        help="An epoch visits every particle once. The run stops earlier when "
                             "the mean energy reaches a plateau.")
        line = form.addLine("Orientations drawn per particle", condition=f"method == {SGD}",
                            help="N_d directions and N_psi in-plane angles are drawn per "
                                 "particle and epoch (64 and 8 in Eloy et al.); the "
                                 "N_d x N_psi pairs are evaluated. Time per epoch is "
                                 "proportional to their product.")
        add_count_param(line, "nDirections", maximum=MAX_DIRECTIONS, default=_SGD.n_directions,
                        label="N_d")
        add_count_param(line, "nPsi", maximum=MAX_IN_PLANE_ANGLES, default=_SGD.n_psi,
                        label="N_psi")
        form.addParam("alphaR", params.FloatParam, default=_SGD.alpha_r,
                      condition=f"method == {SGD}",
                      expertLevel=params.LEVEL_ADVANCED, label="Decay of the uniform share",
                      help="alpha_r > 1: the uniform share of the sampling distributions is "
                           "divided by it after each epoch (stable from 1.15 to 2).")
        line = form.addLine("Kernel concentrations", condition=f"method == {SGD}",
                            expertLevel=params.LEVEL_ADVANCED,
                            help="beta_d (directions) and beta_psi (in-plane angles) of the "
                                 "smoothing kernels exp(beta cos angle) (Eloy et al. 2023, "
                                 "eq. 20-21): their width is about 1/sqrt(beta) radians "
                                 "(8 deg at 50).")
        line.addParam("betaD", params.FloatParam, default=_SGD.beta_d, label="beta_d")
        line.addParam("betaPsi", params.FloatParam, default=_SGD.beta_psi, label="beta_psi")
        form.addParam("downsampling", params.FloatParam, default=_SGD.downsampling,
                      condition=f"method == {SGD}", expertLevel=params.LEVEL_ADVANCED,
                      label="Downsampling of the first epochs",
                      help="The first epochs run on the particles downsampled by this factor "
                           "(1 = none), then the run continues at full size.")
        form.addSection(label="Annealing")
        add_count_param(form, "nClasses", maximum=MAX_CLASSES, default=_ANNEALING.n_classes,
                        condition=f"method == {ANNEALING}", label="Number of classes",
                        help="k-means classes of the particles; the particle closest to each "
                             "class centre is annealed (5 to 10 in Fortun et al. 2018).")
        add_count_param(form, "workingSize", maximum=MAX_BOX_SIZE,
                        default=_ANNEALING.working_size,
                        condition=f"method == {ANNEALING}", expertLevel=params.LEVEL_ADVANCED,
                        label="Working box size (voxels)",
                        help="The annealing runs on particles downsampled to this box side.")
        add_seed_param(form)
        add_gpu_params(form)

    # --------------------------- STEPS functions ------------------------------
    def convertInputStep(self, key):
        particles = self.inputParticles.get()
        psf = self.inputPSF.get()
        table = write_particles_for_job(particles, self._getExtraPath("particles.csv"))
        job_params = {
            "method": self._methodKey(),
            "symmetry": self.symmetry.get(),
            "final_reconstruction": _FINAL_KEYS[self.finalReconstruction.get()],
            "voxel_size": list(particles.getVoxelSize()),
            "psf_voxel_size": list(psf.getVoxelSize()),
        }
        if self._methodKey() == "sgd":
            job_params.update(max_epochs=self.maxEpochs.get(), n_directions=self.nDirections.get(),
                              n_psi=self.nPsi.get(), alpha_r=self.alphaR.get(),
                              beta_d=self.betaD.get(), beta_psi=self.betaPsi.get(),
                              downsampling=self.downsampling.get())
        else:
            job_params.update(n_classes=self.nClasses.get(), working_size=self.workingSize.get())
        outputs = {"volume": self._getExtraPath("volume.ome.tif"),
                   "particles": self._getExtraPath("particles_abinitio.csv"),
                   "energies": self._getExtraPath("energies.csv"),
                   "marginals": self._getExtraPath("marginals.npz"),
                   "summary": self._getExtraPath("abinitio.json"),
                   "checkpoint": self._getExtraPath("checkpoint.npz"),
                   "psf_prepared": self._getExtraPath(PREPARED_PSF)}
        self._writeJob(_STEP, inputs={"particles": table, "psf": psf.getFileName()},
                       params=job_params, outputs=outputs, seed=self.seed.get())

    def createOutputStep(self, key):
        summary = self._readJobJson("abinitio.json")
        volume = image_from_file(Volume, self._getExtraPath("volume.ome.tif"),
                                 summary["voxel_size"], image_id="abinitio")
        volume.energiesFile = pwobj.String(self._getExtraPath("energies.csv"))
        volume.marginalsFile = pwobj.String(self._getExtraPath("marginals.npz"))
        volume.summaryFile = pwobj.String(self._getExtraPath("abinitio.json"))
        volume.nEpochs = pwobj.Integer(summary["n_epochs"])
        volume.converged = pwobj.Boolean(summary["converged"])
        if "pose_error_median_deg" in summary:
            volume.poseErrorMedianDeg = pwobj.Float(summary["pose_error_median_deg"])
        table_path = self._getExtraPath("particles_abinitio.csv")
        poses = read_output_poses(table_path)
        energies = _particle_energies(table_path)
        particles = particles_with_poses(
            self.inputParticles.get(), poses, self._getPath("particles_abinitio.sqlite"),
            extra_attributes={pid: {"abinitioEnergy": e} for pid, e in energies.items()})
        self.info(f"{summary['method']} ab initio: {summary['n_epochs']} epoch(s) in "
                  f"{summary['wall_s']:.1f} s"
                  + (f", median pose error against the input poses "
                     f"{summary['pose_error_median_deg']:.2f} deg"
                     if "pose_error_median_deg" in summary else ""))
        psf = prepared_psf(self, summary["voxel_size"])
        self._defineOutputs(outputVolume=volume, outputParticles=particles, outputPSF=psf)
        self._defineSources([volume, particles, psf], self.inputParticles, self.inputPSF)

    # --------------------------- INFO functions -------------------------------
    def _validate(self):
        errors = []
        particles = pointed(self.inputParticles)
        psf = pointed(self.inputPSF)
        if particles is None:
            errors.append("Choose the particles to reconstruct.")
        if psf is None:
            errors.append("Choose the PSF.")
        if errors:
            return errors
        n = particles.getSize()
        if n < 2:
            errors.append(f"The particle set has {n} particle(s): ab initio needs at least 2 "
                          "(about 20 for the Eloy et al. 2023 setting).")
        box = particles.getBoxShape()
        if box is not None and len(set(box)) != 1:
            errors.append(f"Particles must be cubic boxes, got {tuple(box)} voxels: extract "
                          "them as cubes.")
        vs = particles.getVoxelSize()
        if vs is not None and max(vs) > 1.0001 * min(vs):
            errors.append(f"Particles must have isotropic voxels, got {tuple(vs)} µm (z, y, x): "
                          "extract them with isotropic resampling.")
        check_psf_matches(psf, particles, errors)
        if box is not None and n:
            errors.extend(memory_errors(
                particles_bytes(n, particles.getNumChannels(), box[0]),
                what=f"Holding the {n} particles of {particles.getNumChannels()} x "
                     f"{box[0]}^3 voxels (Particles, inputParticles) in memory",
                fix="extract them on coarser voxels or in a smaller box, or select fewer"))
        check_symmetry_order(self.symmetry.get(), errors)
        if self._methodKey() == "sgd":
            for label, value, low in (("Maximum number of epochs", self.maxEpochs.get(), 1),
                                      ("N_d", self.nDirections.get(), 1),
                                      ("N_psi", self.nPsi.get(), 1)):
                if value is None or value < low:
                    errors.append(f"{label} must be an integer >= {low}, got {value}.")
            if self.nDirections.get() and self.nPsi.get():
                error = orientations_error(self.nDirections.get(), self.nPsi.get())
                if error:
                    errors.append(error)
            alpha_r = self.alphaR.get()
            if alpha_r is None or not alpha_r > 1:
                errors.append(f"Decay of the uniform share must be > 1, got {alpha_r}.")
            for name, value in (("beta_d", self.betaD.get()), ("beta_psi", self.betaPsi.get())):
                if value is None or not value >= 0:
                    errors.append(f"Kernel concentration {name} must be >= 0, got {value}.")
            down = self.downsampling.get()
            if down is None or not down >= 1:
                errors.append(f"Downsampling must be >= 1 (1 = none), got {down}.")
        else:
            k = self.nClasses.get()
            if k is None or k < 1 or k > n:
                errors.append(f"Number of classes must be between 1 and the number of "
                              f"particles ({n}), got {k}.")
            ws = self.workingSize.get()
            if ws is None or ws < 8:
                errors.append(f"Working box size must be >= 8 voxels, got {ws}.")
        return errors

    def _summary(self):
        if not hasattr(self, "outputVolume"):
            return ["Not reconstructed yet."]
        vol = self.outputVolume
        lines = [f"{_METHOD_LABELS[self.method.get()]}: {self.inputParticles.get().getSize()} "
                 f"particles, {vol.nEpochs.get()} epoch(s)"
                 + (f", symmetry C{self.symmetry.get()}" if self.symmetry.get() > 1 else "")
                 + "."]
        converged = getattr(vol, "converged", None)
        if self._methodKey() == "sgd" and converged is not None and converged.get() is not None:
            lines.append("Converged: the energy and the poses settled." if converged.get() else
                         "NOT converged: the epoch limit stopped the run before the energy "
                         "and the poses settled (raise the maximum number of epochs).")
        error = getattr(vol, "poseErrorMedianDeg", None)
        if error is not None and error.get() is not None:
            lines.append(f"Median pose error against the input poses: {error.get():.2f} deg.")
        return lines

    def _methods(self):
        if not hasattr(self, "outputVolume"):
            return []
        n = self.inputParticles.get().getSize()
        if self._methodKey() == "sgd":
            text = (f"The volume and the poses of {n} particles were estimated without a "
                    "template by stochastic gradient descent on the Fourier volume with "
                    "importance sampling of the orientations [Eloy2023] "
                    f"(N_d = {self.nDirections.get()}, N_psi = {self.nPsi.get()}, "
                    f"alpha_r = {self.alphaR.get():g}, beta_d = {self.betaD.get():g}, "
                    f"beta_psi = {self.betaPsi.get():g}).")
        else:
            text = (f"The volume and the poses of {n} particles were estimated without a "
                    f"template by simulated annealing on {self.nClasses.get()} k-means class "
                    "representatives with incremental block coordinates, followed by a pose "
                    "search of every particle [Fortun2018].")
        final = _FINAL_KEYS[self.finalReconstruction.get()]
        if final is not None:
            text += (" The final volume was reconstructed from the estimated poses with the "
                     f"{_FINAL_LABELS[self.finalReconstruction.get()]} regulariser.")
        return [text]

    # --------------------------- UTILS functions ------------------------------
    def _methodKey(self) -> str:
        return _METHOD_KEYS[self.method.get()]


def _particle_energies(path) -> dict:
    """``{id: relative energy}`` from the job's particle table."""
    from ..io import read_particle_table

    table = read_particle_table(path)
    values = table.extra.get("abinitio_energy")
    if values is None:
        return {}
    return {int(i): float(v) for i, v in zip(table.ids, values)}
