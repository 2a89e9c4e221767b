"""Refinement protocol: high-accuracy poses and volume from approximate poses.

``ProtRefine`` runs the job ``refine`` (:mod:`spfluo.jobs.refine`,
:func:`spfluo.algorithms.refine.refine`): it alternates a regularised known-pose
reconstruction (TV or Hessian ADMM, warm-started; Fortun et al. 2018 sec. IV-A) with a pose update
of every particle against the current volume, until the poses stop changing:

- exhaustive search (Fortun et al. 2018 eq. 8), coarse to fine: the whole rotation space at 20
  degrees, then +-10 degrees at 5, then +-5 at 1 (the schedule is a parameter);
- continuous refinement (Zehni et al. 2020): a few gradient steps on each particle's rotation and
  translation with backtracking, alternated with a few ADMM iterations.

Cn symmetry, several channels with shared poses (pose search on chosen channels) and the
gold standard (two half sets refined independently, half-map FSC each iteration) are
supported.  The job checkpoints every outer iteration: a run that is stopped or killed
continues from its last iteration when it is restarted ("continue").

Outputs: ``outputVolume`` (a :class:`~spfluo.objects.Volume` with its half maps, the
half-map FSC and resolution; its ``refinementLog`` attribute is the per-iteration log
(CSV: energy, pose change, half-map resolution), ``refinedParticlesFile`` the particle
table with the pose changes and ``summaryFile`` the run summary) and
``outputParticles`` (the particles with the refined poses; each carries ``refineEnergy``,
``poseChangeDeg`` (from the input poses) and ``halfSet``).
"""

from __future__ import annotations

import numpy as np
import pyworkflow.object as pwobj
import pyworkflow.protocol.params as params

from ..io import read_particle_table
from ..algorithms.limits import (
    MAX_GRADIENT_STEPS,
    MAX_OUTER_ITERATIONS,
    MAX_SOLVER_ITERATIONS,
    MAX_SYMMETRY_ORDER,
    search_size_error,
)
from ..algorithms.refine.options import RefineOptions
from ..objects import PSFModel, SetOfParticles, Volume
from .base import ProtFluoJob, add_count_param, add_gpu_params, add_seed_param, pointed
from .convert import (
    PREPARED_PSF,
    PSF_HELP,
    add_support_params,
    check_support_radius,
    support_job_params,
    check_channel_list,
    check_particles_with_poses,
    check_psf_matches,
    check_symmetry_order,
    image_from_file,
    parse_channel_list,
    particles_with_poses,
    prepared_psf,
    read_output_poses,
    write_particles_for_job,
)

__all__ = ["ProtRefine", "parse_schedule", "parse_channels"]

_STEP = "refine"
TV, HESSIAN = 0, 1
_REGULARIZER_KEYS = ["tv", "hessian"]
_REGULARIZER_LABELS = ["Total variation", "Hessian (Schatten norm)"]
#: The defaults of the refinement (each defined once, in its options).
_DEFAULTS = RefineOptions()
WEIGHT_GIVEN, WEIGHT_AUTO = 0, 1
#: The default schedule as the form writes it (Fortun et al. 2018 sec. V-A-4: whole space at
#: 20 degrees, then +-10 at 5, then +-5 at 1).
DEFAULT_SCHEDULE_TEXT = ", ".join(
    f"{s.step_deg:g}:{'all' if s.is_global else format(s.range_deg, 'g')}"
    for s in _DEFAULTS.schedule)
#: Name of one channel in the messages about the 'Pose search channels' parameter.
_CHANNEL_LABEL = "Pose search channel"


def parse_schedule(text: str | None, *, symmetry: int = 1) -> list[list]:
    """``"20:all, 5:10, 1:5"`` -> ``[[20.0, None], [5.0, 10.0], [1.0, 5.0]]``.

    Each stage is ``step:range`` in degrees, ``range`` ``all`` for the whole rotation space;
    stages are separated by commas; an empty text is no exhaustive search.  A stage that
    tries more rotations per particle than :data:`spfluo.algorithms.limits.MAX_SEARCH_ROTATIONS`
    (for the Cn ``symmetry``) is refused.  Raises ValueError with a message for the form.
    """
    text = (text or "").strip()
    if not text:
        return []
    stages = []
    for item in text.split(","):
        parts = [p.strip() for p in item.split(":")]
        if len(parts) != 2:
            raise ValueError(f"Search schedule stage {item.strip()!r} must be 'step:range' in "
                             "degrees (range 'all' for the whole rotation space), e.g. "
                             f"'{DEFAULT_SCHEDULE_TEXT}'.")
        try:
            step = float(parts[0])
            rng = None if parts[1].lower() == "all" else float(parts[1])
        except ValueError:
            raise ValueError(f"Search schedule stage {item.strip()!r}: step and range must be "
                             "numbers of degrees (range 'all' for the whole space).") from None
        if not 0 < step <= 90:
            raise ValueError(f"Search schedule stage {item.strip()!r}: the step must be in "
                             f"(0, 90] degrees, got {step:g}.")
        if rng is not None and not 0 < rng <= 180:
            raise ValueError(f"Search schedule stage {item.strip()!r}: the range must be in "
                             f"(0, 180] degrees or 'all', got {rng:g}.")
        error = search_size_error(step, rng, symmetry,
                                  what=f"Search schedule stage {item.strip()!r}")
        if error:
            raise ValueError(error)
        stages.append([step, rng])
    return stages


def parse_channels(text: str | None) -> list[int] | None:
    """'' -> None (all); '0 2' or '0,2' -> [0, 2]; ValueError on anything else."""
    return parse_channel_list(text, label=_CHANNEL_LABEL)


class ProtRefine(ProtFluoJob):
    """Refine poses and volume: alternated pose search and regularised reconstruction.

    From particles with approximate poses (ab initio output, or imported), alternate the
    known-pose TV or Hessian reconstruction and a pose update of each particle
    (exhaustive coarse-to-fine search, then continuous gradient refinement), with
    optional Cn symmetry and gold-standard half sets.
    """

    _label = "refine"
    _possibleOutputs = {"outputVolume": Volume, "outputParticles": SetOfParticles,
                        "outputPSF": PSFModel}
    _references = ["Fortun2018", "Zehni2020", "Donati2020"]
    _jobStep = _STEP

    # --------------------------- DEFINE param functions -----------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles",
                      important=True, label="Particles (with poses)",
                      help="Particles with approximate poses: the output of ab initio, or "
                           "particles imported with a poses file.")
        form.addParam("inputPSF", params.PointerParam, pointerClass="PSFModel",
                      important=True, label="PSF",
                      help=PSF_HELP)
        form.addParam("inputVolume", params.PointerParam, pointerClass="Volume",
                      allowsNull=True, label="Initial volume (optional)",
                      help="Reference of the first pose update (e.g. the ab initio volume), "
                           "in the frame of the poses. Empty: the first volume is "
                           "reconstructed from the input poses.")
        add_count_param(form, "symmetry", maximum=MAX_SYMMETRY_ORDER,
                        default=_DEFAULTS.symmetry,
                        label="Symmetry order (Cn about z)",
                        help="Order n of the cyclic symmetry about the z axis of the reference "
                             "(1 = none; 9 for a centriole). The volume's symmetry axis must be "
                             "z: run 'align symmetry axis' first otherwise.")
        form.addParam("keepPolarity", params.BooleanParam, default=_DEFAULTS.keep_polarity,
                      condition="symmetry > 1", expertLevel=params.LEVEL_ADVANCED,
                      label="Keep each particle's polarity?",
                      help="Cn particles: the global searches keep every particle's "
                           "symmetry axis pointing the way the ab initio polarity consensus "
                           "set it. Without it, where both ends of the particle look alike "
                           "under the blur, the search turns particles upside down.")
        form.addParam("searchChannels", params.StringParam, default="",
                      label="Pose search channels (empty = all)",
                      help="Channels compared by the pose updates, e.g. '0' (numbered from "
                           "0); the poses are shared and every channel is reconstructed.")
        form.addParam("doHalfMaps", params.BooleanParam, default=_DEFAULTS.half_maps,
                      label="Gold standard (half sets)?",
                      help="Split the particles into two random halves refined "
                           "independently, each against its own volume, and report their "
                           "FSC at every iteration.")

        form.addSection(label="Reconstruction")
        form.addParam("regularizer", params.EnumParam,
                      default=_REGULARIZER_KEYS.index(_DEFAULTS.regularizer),
                      choices=_REGULARIZER_LABELS, label="Regulariser",
                      help="Total variation (Fortun et al. 2018) or the Hessian Schatten norm "
                           "(Fortun et al. 2017); both with positivity, solved by ADMM.")
        form.addParam("weightMode", params.EnumParam, default=WEIGHT_GIVEN,
                      choices=["given", "automatic (half sets)"],
                      display=params.EnumParam.DISPLAY_HLIST, label="Regularisation weight",
                      help="Given: the value below. Automatic (needs the gold standard): "
                           "chosen once, at the first volume update, on the two half sets: "
                           "the weight whose half maps best predict the other half's data "
                           "on the measured frequencies (the log shows the curve).")
        form.addParam("weight", params.FloatParam, default=_DEFAULTS.weight, label="Weight",
                      condition=f"weightMode == {WEIGHT_GIVEN}",
                      help="Regularisation weight per mean particle, >= 0 (data normalised to "
                           "a back-projection of maximum 1): typically 1e-3 to 1e-2.")
        add_support_params(form)
        form.addParam("lowPass", params.FloatParam, default=None, allowsNull=True,
                      expertLevel=params.LEVEL_ADVANCED,
                      condition="doHalfMaps and inputVolume",
                      label="Low-pass of the initial volume (µm, empty: default)",
                      help="Gold standard: both half sets start from the initial volume "
                           "low-passed to this period, so that they share nothing finer and "
                           "their FSC measures the data. Empty: twice the finest period the "
                           "PSF passes. 0: not low-passed (the half maps' FSC is then not a "
                           "gold standard).")
        add_count_param(form, "initialIterations", maximum=MAX_SOLVER_ITERATIONS,
                        default=_DEFAULTS.initial_admm_iterations,
                        label="ADMM iterations, first volume",
                        help="Iterations of the first reconstruction (from scratch).")
        add_count_param(form, "admmIterations", maximum=MAX_SOLVER_ITERATIONS,
                        default=_DEFAULTS.admm_iterations,
                        label="ADMM iterations per outer iteration",
                        help="Warm-started iterations after each pose update (exhaustive "
                             "phase).")
        add_count_param(form, "finalIterations", maximum=MAX_SOLVER_ITERATIONS,
                        default=_DEFAULTS.final_admm_iterations,
                        expertLevel=params.LEVEL_ADVANCED,
                        label="ADMM iterations, final volume",
                        help="Warm-started iterations of the final reconstructions.")

        form.addSection(label="Pose search")
        form.addParam("schedule", params.StringParam, default=DEFAULT_SCHEDULE_TEXT,
                      label="Search schedule (step:range deg)",
                      help="Exhaustive coarse-to-fine stages, one per outer iteration: "
                           "'step:range' in degrees, range 'all' for the whole rotation space "
                           "(Fortun et al. 2018: '20:all, 5:10, 1:5'). The last stage repeats until the "
                           "poses stop changing. Empty: no exhaustive search.")
        add_count_param(form, "exhaustiveIterations", maximum=MAX_OUTER_ITERATIONS, default=5,
                        label="Most exhaustive iterations",
                        help="At least the number of schedule stages.")
        add_count_param(form, "continuousIterations", maximum=MAX_OUTER_ITERATIONS,
                        default=_DEFAULTS.continuous_iterations,
                        label="Continuous refinement iterations",
                        help="Outer iterations of continuous refinement (Zehni et al. 2020) after the "
                             "exhaustive search; 0 for none.")
        add_count_param(form, "gdSteps", maximum=MAX_GRADIENT_STEPS,
                        default=_DEFAULTS.gd_steps,
                        label="Gradient steps per continuous iteration",
                        help="K_GD of Zehni et al. 2020: gradient steps on each particle's rotation and "
                             "translation, with backtracking.")
        add_count_param(form, "continuousAdmm", maximum=MAX_SOLVER_ITERATIONS,
                        default=_DEFAULTS.continuous_admm_iterations,
                        expertLevel=params.LEVEL_ADVANCED,
                        label="ADMM iterations per continuous iteration",
                        help="K_ADMM of Zehni et al. 2020 (2 to 5).")
        form.addParam("maxShift", params.FloatParam, default=0.0,
                      expertLevel=params.LEVEL_ADVANCED, label="Maximum shift (µm)",
                      help="Largest particle translation searched; 0 = a quarter of the box.")
        add_seed_param(form)
        add_gpu_params(form)

    # --------------------------- STEPS functions ------------------------------
    def convertInputStep(self, key):
        particles = self.inputParticles.get()
        psf = self.inputPSF.get()
        table = write_particles_for_job(particles, self._getExtraPath("particles.csv"),
                                        with_poses=True)
        inputs = {"particles": table, "psf": psf.getFileName()}
        vs = particles.getVoxelSize()
        job_params = {
            "regularizer": _REGULARIZER_KEYS[self.regularizer.get()],
            "weight": "auto" if self.weightMode.get() == WEIGHT_AUTO else self.weight.get(),
            "schedule": parse_schedule(self.schedule.get(), symmetry=self.symmetry.get()),
            "exhaustive_iterations": self.exhaustiveIterations.get(),
            "continuous_iterations": self.continuousIterations.get(),
            "gd_steps": self.gdSteps.get(),
            "initial_admm_iterations": self.initialIterations.get(),
            "admm_iterations": self.admmIterations.get(),
            "continuous_admm_iterations": self.continuousAdmm.get(),
            "final_admm_iterations": self.finalIterations.get(),
            "symmetry": self.symmetry.get(),
            "keep_polarity": bool(self.keepPolarity.get()),
            "channels": parse_channels(self.searchChannels.get()),
            "half_maps": bool(self.doHalfMaps.get()),
            **support_job_params(self), **self._lowPassParams(),
            "max_shift_um": self.maxShift.get() or None,
            "voxel_size": list(vs),
            "psf_voxel_size": list(psf.getVoxelSize()),
        }
        volume = pointed(self.inputVolume)
        if volume is not None:
            inputs["volume"] = volume.getFileName()
            job_params["volume_voxel_size"] = list(volume.getVoxelSize())
        outputs = {"volume": self._getExtraPath("volume.ome.tif"),
                   "particles": self._getExtraPath("particles_refined.csv"),
                   "log": self._getExtraPath("refine_log.csv"),
                   "summary": self._getExtraPath("refine.json"),
                   "checkpoint": self._getExtraPath("checkpoint.npz"),
                   "psf_prepared": self._getExtraPath(PREPARED_PSF)}
        if self.doHalfMaps.get():
            outputs.update(self._halfMapOutputs())
        self._writeJob(_STEP, inputs=inputs, params=job_params, outputs=outputs,
                       seed=self.seed.get())

    def createOutputStep(self, key):
        summary = self._readJobJson("refine.json")
        volume = image_from_file(Volume, self._getExtraPath("volume.ome.tif"),
                                 summary["voxel_size"], image_id="refined")
        self._setHalfMaps(volume, summary)
        volume.refinementLog = pwobj.String(self._getExtraPath("refine_log.csv"))
        volume.summaryFile = pwobj.String(self._getExtraPath("refine.json"))
        volume.nIterations = pwobj.Integer(summary["iterations"])
        volume.converged = pwobj.Boolean(summary["converged"])
        volume.weightUsed = pwobj.String(", ".join(f"{w:.3g}" for w in summary["weight"]))
        table_path = self._getExtraPath("particles_refined.csv")
        volume.refinedParticlesFile = pwobj.String(table_path)
        poses = read_output_poses(table_path)
        table = read_particle_table(table_path)
        margins = table.extra.get("in_plane_margin_nats", [float("nan")] * len(table))
        extra = {int(pid): {"refineEnergy": float(e), "poseChangeDeg": float(c),
                            "halfSet": float(h), "inPlaneMarginNats": float(m)}
                 for pid, e, c, h, m in zip(table.ids, table.extra["refine_energy"],
                                            table.extra["pose_change_deg"],
                                            table.extra["half_set"], margins)}
        particles = particles_with_poses(self.inputParticles.get(), poses,
                                         self._getPath("particles_refined.sqlite"),
                                         extra_attributes=extra)
        self.info(f"refinement of {summary['n_particles']} particles: {summary['iterations']} "
                  f"iteration(s) in {summary['wall_s']:.1f} s, converged "
                  f"{summary['converged']}, median pose change "
                  f"{summary['median_pose_change_deg']:.2f} deg")
        if "in_plane_undetermined" in summary:
            volume.inPlaneUndetermined = pwobj.Integer(summary["in_plane_undetermined"])
            volume.inPlaneMarginMedianNats = pwobj.Float(
                summary["in_plane_margin_median_nats"])
        psf = prepared_psf(self, summary["voxel_size"])
        self._defineOutputs(outputVolume=volume, outputParticles=particles, outputPSF=psf)
        self._defineSources([volume, particles, psf], self.inputParticles, self.inputPSF,
                            self.inputVolume)

    # --------------------------- INFO functions -------------------------------
    def _validate(self):
        errors = []
        particles = pointed(self.inputParticles)
        psf = pointed(self.inputPSF)
        if particles is None:
            errors.append("Choose the particles (with poses) to refine.")
        if psf is None:
            errors.append("Choose the PSF.")
        if errors:
            return errors
        items = check_particles_with_poses(particles, errors)
        if not items:
            return errors
        check_support_radius(self, particles, errors)
        vs = np.asarray(particles.getVoxelSize())
        if not np.allclose(vs, vs[0], rtol=1e-4):
            errors.append(f"The particles have anisotropic voxels {tuple(vs)} µm (z, y, x): "
                          "resample them to isotropic voxels first.")
        box = particles.getBoxShape()
        if box is not None and len(set(box)) != 1:
            errors.append(f"The particles must be cubic boxes, got {tuple(box)} voxels.")
        check_psf_matches(psf, particles, errors)
        volume = pointed(self.inputVolume)
        if volume is not None:
            if not np.allclose(np.asarray(volume.getVoxelSize()), vs, rtol=1e-3):
                errors.append(f"The initial volume's voxel size {tuple(volume.getVoxelSize())} "
                              f"µm differs from the particles' {tuple(vs)} µm.")
            if box is not None and tuple(volume.getDimensions()) != tuple(box):
                errors.append(f"The initial volume is {volume.getDimensions()} voxels, the "
                              f"particles {tuple(box)}: give a volume of the particles' box.")
            if volume.getNumChannels() != particles.getNumChannels():
                errors.append(f"The initial volume has {volume.getNumChannels()} channel(s), "
                              f"the particles {particles.getNumChannels()}.")
        check_symmetry_order(self.symmetry.get(), errors)
        if self.weightMode.get() == WEIGHT_AUTO:
            if not self.doHalfMaps.get():
                errors.append("The automatic weight is chosen on the half sets: set 'Gold "
                              "standard (half sets)?' to Yes, or give the weight.")
        else:
            weight = self.weight.get()
            if weight is None or weight < 0:
                errors.append(f"Weight must be >= 0, got {weight}.")
        low_pass = self.lowPass.get()
        if low_pass is not None and low_pass < 0:
            errors.append(f"Low-pass must be >= 0 µm (0: none), got {low_pass}.")
        for name, label, minimum in (("initialIterations", "ADMM iterations, first volume", 1),
                                     ("admmIterations", "ADMM iterations per outer iteration", 1),
                                     ("finalIterations", "ADMM iterations, final volume", 1),
                                     ("continuousIterations", "Continuous refinement "
                                                              "iterations", 0),
                                     ("gdSteps", "Gradient steps per continuous iteration", 1),
                                     ("continuousAdmm", "ADMM iterations per continuous "
                                                        "iteration", 1)):
            value = getattr(self, name).get()
            if value is None or value < minimum:
                errors.append(f"{label} must be >= {minimum}, got {value}.")
        symmetry = self.symmetry.get()
        try:
            stages = parse_schedule(self.schedule.get(), symmetry=symmetry
                                    if symmetry and 1 <= symmetry <= MAX_SYMMETRY_ORDER else 1)
        except ValueError as exc:
            errors.append(str(exc))
            stages = []
        n_exh = self.exhaustiveIterations.get()
        if n_exh is None or n_exh < len(stages):
            errors.append(f"Most exhaustive iterations ({n_exh}) must be at least the number of "
                          f"schedule stages ({len(stages)}).")
        if not stages and not self.continuousIterations.get():
            errors.append("Nothing to refine: give a search schedule or continuous "
                          "refinement iterations.")
        check_channel_list(self.searchChannels.get(), particles, errors, label=_CHANNEL_LABEL)
        if self.doHalfMaps.get() and len(items) < 2:
            errors.append(f"The gold standard needs at least 2 particles, the set has "
                          f"{len(items)}: set 'Gold standard (half sets)?' to No.")
        shift = self.maxShift.get()
        if shift is None or shift < 0:
            errors.append(f"Maximum shift must be >= 0 µm (0 = a quarter of the box), got "
                          f"{shift}.")
        return errors

    def _lowPassParams(self) -> dict:
        """``low_pass_um`` for the job: absent (the default), null (0: none) or the period."""
        value = self.lowPass.get()
        if value is None:
            return {}
        return {"low_pass_um": None if value == 0 else value}

    def _summary(self):
        if not hasattr(self, "outputVolume"):
            return ["Not refined yet."]
        vol = self.outputVolume
        weight = getattr(vol, "weightUsed", None)
        weight = weight.get() if weight is not None else f"{self.weight.get():g}"
        lines = [f"Refinement of {self.inputParticles.get().getSize()} particles "
                 f"({_REGULARIZER_LABELS[self.regularizer.get()]}, weight {weight}"
                 + (" (automatic)" if self.weightMode.get() == WEIGHT_AUTO else "")
                 + (f", symmetry C{self.symmetry.get()}" if self.symmetry.get() > 1 else "")
                 + f"): {vol.nIterations.get()} iteration(s), "
                 + ("converged." if vol.converged.get() else "iteration limit reached.")]
        if vol.getResolutionText():
            lines.append(f"Half-map FSC resolution (0.143, masked, corrected): "
                         f"{vol.getResolutionText()}.")
        return lines

    def _methods(self):
        if not hasattr(self, "outputVolume"):
            return []
        text = (f"Poses and volume of {self.inputParticles.get().getSize()} particles were "
                "refined by alternating a regularised reconstruction "
                f"({_REGULARIZER_LABELS[self.regularizer.get()].lower()}, ADMM) with an "
                "exhaustive coarse-to-fine pose search [Fortun2018]")
        if self.continuousIterations.get():
            text += " and a continuous gradient-based pose refinement [Zehni2020]"
        text += "; the sums over particles were computed once per iteration [Donati2020]."
        if self.doHalfMaps.get():
            text += " Two half sets were refined independently (gold standard)."
        return [text]
