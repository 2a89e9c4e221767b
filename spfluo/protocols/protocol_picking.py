"""Picking protocols: find particles from a few examples, extract them, select a subset.

- ``ProtPickParticles`` runs the job ``pick`` (:mod:`spfluo.jobs.pick`,
  :func:`spfluo.algorithms.picking.pick_particles`): blob candidates on the maximum
  projection along z and in the planes, about 90 features each, a classifier trained from
  the user's examples (Fortun et al. 2018 sec. II-B), non-maximum suppression.  Detection runs in
  one channel; the coordinates apply to every channel.  Each field is read through a memory
  map in lateral tiles that fit ``Memory (GB)`` (validation estimates the peak from the
  image sizes); the picks do not depend on the tiles.  Output: coordinates with a score.
- ``ProtExtractParticles`` runs the job ``extract`` (:mod:`spfluo.jobs.extract`,
  :func:`spfluo.algorithms.extraction.extract_particles`): a cubic box of a given size
  around each coordinate, every channel, resampled to isotropic voxels (cubic
  interpolation), each box read with its interpolation halo from a memory map of the field.
  Output: particles that record their coordinate and source image.
- Both run field after field, or one field per task on a Dask cluster (``Dask scheduler``).
- ``ProtSelectParticles`` keeps the coordinates or particles whose score passes a
  threshold and that are not in an exclusion list of ids.
"""

from __future__ import annotations

import re

import numpy as np
import pyworkflow.object as pwobj
import pyworkflow.protocol.params as params

from ..io import (
    CoordinateTable,
    ImageEntry,
    read_coordinates_csv,
    read_particle_table,
    write_coordinates_csv,
    write_image_list,
)
from ..algorithms.extraction import EXTRACTION_BATCH, extraction_peak_bytes
from ..algorithms.picking import DEFAULT_MEMORY_BYTES, plan_tiles
from ..algorithms.limits import MAX_BOX_SIZE, MAX_CHANNELS
from ..constants import DASK_ADDRESS
from ..objects import Coordinate3D, Particle, SetOfCoordinates3D, SetOfParticles
from .base import ProtFluo, ProtFluoJob, add_count_param, add_seed_param, memory_errors, pointed
from .convert import image_from_file

__all__ = ["ProtPickParticles", "ProtExtractParticles", "ProtSelectParticles"]

#: Classifier choices of the picking form, in the order of :data:`_CLASSIFIER_KEYS`.
_CLASSIFIER_LABELS = ["random forest", "support vector machine (Fortun et al. 2018)", "gradient boosting"]
_CLASSIFIER_KEYS = ["forest", "svm", "boosting"]
BORDER_PAD, BORDER_SKIP = 0, 1
_BORDER_KEYS = ["pad", "skip"]
_NORMALIZE_LABELS = ["none", "zero mean, unit variance (box)",
                     "zero mean, unit variance (background)"]
_NORMALIZE_KEYS = ["none", "zscore", "background"]
#: Fewest examples the picker accepts.
MIN_EXAMPLES = 3


# ----------------------------------------------------------------------------- helpers
def _write_images(images, path: str) -> str:
    """The image list of a SetOfFluoImages for a job (ids, files, voxel sizes)."""
    write_image_list(path, [ImageEntry(img.getImageId(), img.getFileName(), img.getVoxelSize())
                            for img in images.items()])
    return path


def _coordinate_table(coords, *, with_ids: bool) -> CoordinateTable:
    items = coords.items()
    return CoordinateTable(
        image_ids=np.array([c.getImageId() for c in items], dtype=str),
        positions_zyx_um=np.array([c.getPositionZYX() for c in items]).reshape(-1, 3),
        particle_id=np.array([c.getObjId() for c in items]) if with_ids else None)


def _check_coordinates_in_images(coords, images, errors: list, *, what: str) -> None:
    """Every coordinate names an image of the set and lies inside it (µm from voxel 0)."""
    extents = {img.getImageId(): (np.array(img.getDimensions()) - 1)
               * np.array(img.getVoxelSize()) for img in images.items()}
    for c in coords.items():
        key = c.getImageId()
        if key not in extents:
            errors.append(f"{what}: coordinate {c.getObjId()} refers to image {key!r}, which is "
                          f"not in the images ({', '.join(sorted(extents)[:5])}); pick in the "
                          "same images or import the coordinates for them.")
            return
        pos = c.getPositionZYX()
        if np.any(pos < -1e-9) or np.any(pos > extents[key] + 1e-9):
            errors.append(f"{what}: coordinate {c.getObjId()} at (x, y, z) = "
                          f"{tuple(np.round(pos[::-1], 4))} µm is outside image {key} (size "
                          f"{tuple(np.round(extents[key][::-1], 4))} µm); fix the coordinates.")
            return


def _add_scheduler_param(form) -> None:
    form.addParam("scheduler", params.StringParam, default="",
                  expertLevel=params.LEVEL_ADVANCED, label="Dask scheduler",
                  help="Address of a running Dask scheduler (e.g. tcp://node:8786, the one "
                       "'spfluo batch --scheduler' uses): each field of view is one task of "
                       "that cluster, whose workers must see the same files. Empty: the "
                       "fields run one after the other in the run's own process.")


def _scheduler(prot) -> str | None:
    return (prot.scheduler.get() or "").strip() or None


def _scheduler_errors(prot) -> list[str]:
    value = _scheduler(prot)
    if value is None or re.fullmatch(DASK_ADDRESS, value):
        return []
    return [f"Dask scheduler {value!r} is not the address of a Dask scheduler such as "
            "tcp://node:8786: correct it, or leave it empty to run here."]


def _parse_ids(text: str | None) -> list[int]:
    """'3 5, 10-12' -> [3, 5, 10, 11, 12]; ValueError naming the bad token."""
    ids = []
    for token in re.split(r"[\s,;]+", (text or "").strip()):
        if not token:
            continue
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", token)
        if match is None:
            raise ValueError(f"Excluded ids: {token!r} is not an id or a range (write e.g. "
                             "'3 5 10-12').")
        lo, hi = int(match.group(1)), int(match.group(2) or match.group(1))
        if hi < lo:
            raise ValueError(f"Excluded ids: the range {token!r} ends before it starts.")
        ids.extend(range(lo, hi + 1))
    return ids


# ----------------------------------------------------------------------------- pick
class ProtPickParticles(ProtFluoJob):
    """Pick particles like a few examples (about 10-20) in a set of fields of view.

    Candidates are blobs of the maximum projection along z (extended along z) and of the
    planes; each gets about 90 features; a classifier learns from the examples and from
    the candidates unlike every example, then relabels the candidates by its own votes.
    Detection runs in one channel and the coordinates apply to every channel.
    """

    _label = "pick particles"
    _possibleOutputs = {"outputCoordinates": SetOfCoordinates3D}
    _references = ["Fortun2018"]
    _jobStep = "pick"

    # --------------------------- DEFINE param functions -----------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputImages", params.PointerParam, pointerClass="SetOfFluoImages",
                      important=True, label="Images",
                      help="The fields of view to pick in.")
        form.addParam("inputExamples", params.PointerParam, pointerClass="SetOfCoordinates3D",
                      important=True, label="Example particles",
                      help="At least 3 (about 10-20 work well) particle positions picked by "
                           "hand in these images: an import of coordinates, or the output of "
                           "an earlier picking run (e.g. after 'select particles').")
        add_count_param(form, "channel", maximum=MAX_CHANNELS - 1,
                        default=0, label="Detection channel",
                        help="Channel the detection runs in (numbered from 0); the coordinates "
                             "apply to every channel.")
        form.addParam("diameter", params.FloatParam, default=0.5,
                      label="Particle diameter (µm)",
                      help="Diameter of the visible particle, in micrometres: it sets every "
                           "scale of the detection and the minimum distance between picks "
                           "(half a diameter).")
        form.addParam("threshold", params.FloatParam, default=0.5,
                      label="Score threshold (0-1)",
                      help="Keep the candidates whose estimated probability of being a "
                           "particle is at least this. The examples are always kept.")
        form.addParam("boxSize", params.FloatParam, default=0.0, label="Box size (µm)",
                      help="Side of the box around each particle, recorded with the "
                           "coordinates for the extraction. 0: the box size of the examples, "
                           "or 1.5 diameters when they have none.")
        form.addParam("classifier", params.EnumParam, default=0, choices=_CLASSIFIER_LABELS,
                      expertLevel=params.LEVEL_ADVANCED, label="Classifier",
                      help="Random forest (default, best in benchmarks/picking.py), RBF "
                           "support vector machine (Fortun et al. 2018 uses SVMs) or gradient boosting.")
        form.addParam("candidateThreshold", params.FloatParam, default=3.0,
                      expertLevel=params.LEVEL_ADVANCED,
                      label="Candidate threshold (robust std)",
                      help="Blob detection threshold in robust standard deviations of the blob "
                           "response; lower finds fainter particles and more candidates.")
        form.addParam("novelty", params.FloatParam, default=2.5,
                      expertLevel=params.LEVEL_ADVANCED, label="Background novelty ratio",
                      help="Candidates farther from the examples than this many times the "
                           "typical distance between examples (in feature space) start as "
                           "background for the classifier.")
        form.addParam("memoryGb", params.FloatParam, default=DEFAULT_MEMORY_BYTES / 1e9,
                      expertLevel=params.LEVEL_ADVANCED, label="Memory (GB)",
                      help="Peak memory of the picking of one field, GB (10^9 bytes). Each "
                           "field is read in lateral tiles that fit (a memory map of the "
                           "file, never a whole copy); the picks do not depend on the tiles. "
                           "Validation refuses a value too small for the particle diameter, "
                           "or larger than the machine's memory.")
        _add_scheduler_param(form)
        add_seed_param(form)

    # --------------------------- STEPS functions ------------------------------
    def convertInputStep(self, key):
        images = self.inputImages.get()
        examples = self.inputExamples.get()
        inputs = {"images": _write_images(images, self._getExtraPath("images.json")),
                  "examples": self._getExtraPath("examples.csv")}
        write_coordinates_csv(inputs["examples"], _coordinate_table(examples, with_ids=False))
        job_params = {"channel": self.channel.get(), "diameter_um": self.diameter.get(),
                      "threshold": self.threshold.get(), "box_size_um": self._boxSize(),
                      "classifier": _CLASSIFIER_KEYS[self.classifier.get()],
                      "candidate_threshold": self.candidateThreshold.get(),
                      "novelty": self.novelty.get(), "memory_gb": self.memoryGb.get(),
                      "scheduler": _scheduler(self)}
        self._writeJob(self._jobStep, inputs=inputs, params=job_params,
                       outputs={"coordinates": self._getExtraPath("coordinates.csv"),
                                "report": self._getExtraPath("pick_report.json")},
                       seed=self.seed.get())

    def createOutputStep(self, key):
        table = read_coordinates_csv(self._getExtraPath("coordinates.csv"))
        box, reason = self._boxChoice()
        coords = SetOfCoordinates3D(filename=self._getPath("coordinates.sqlite"))
        coords.setImages(self.inputImages)
        coords.setBoxSize(box, reason)
        for pid, image_id, pos, score in zip(table.particle_id, table.image_ids,
                                             table.positions_zyx_um, table.score):
            c = Coordinate3D()
            c.setObjId(int(pid))
            c.setPosition(*pos[::-1])
            c.setImageId(str(image_id))
            c.setBoxSize(box)
            c.setScore(float(score))
            coords.append(c)
        coords.write()
        report = self._readJobJson("pick_report.json")
        self.info(f"{coords.getSize()} particle(s) picked; candidates per image: "
                  f"{dict(zip(report['images'], report['n_candidates']))}; box {box:g} µm: "
                  f"{reason}")
        self._defineOutputs(outputCoordinates=coords)
        self._defineSources([coords], self.inputImages, self.inputExamples)

    # --------------------------- INFO functions -------------------------------
    def _validate(self):
        errors = []
        images = pointed(self.inputImages)
        examples = pointed(self.inputExamples)
        if images is None:
            errors.append("Choose the images to pick in.")
        if examples is None:
            errors.append("Choose the example particles (import coordinates picked by hand).")
        if errors:
            return errors
        if images.getSize() == 0:
            return ["The image set is empty: import images first."]
        n = examples.getSize()
        if n < MIN_EXAMPLES:
            errors.append(f"Only {n} example particle(s): pick at least {MIN_EXAMPLES} "
                          "(about 10-20 work well) and import them as coordinates.")
        _check_coordinates_in_images(examples, images, errors, what="Example particles")
        d = self.diameter.get()
        vs = np.array(images.getVoxelSize())
        lateral = min(min(img.getPhysicalSize()[1:]) for img in images.items())
        if d is None or not d > 0:
            errors.append(f"Particle diameter must be > 0 µm, got {d}.")
        elif d > lateral:
            errors.append(f"Particle diameter {d:g} µm is larger than the images ({lateral:g} µm "
                          "laterally): give the diameter in micrometres.")
        elif d / 2 < 1.5 * max(vs[1:]):
            errors.append(f"Particle diameter {d:g} µm spans fewer than 3 voxels of {vs[2]:g} "
                          "µm: give the diameter in micrometres (not voxels).")
        channel = self.channel.get()
        if channel is None or not 0 <= channel < images.getNumChannels():
            errors.append(f"Detection channel {channel} does not exist: the images have "
                          f"{images.getNumChannels()} channel(s), numbered from 0.")
        t = self.threshold.get()
        if t is None or not 0 <= t <= 1:
            errors.append(f"Score threshold must be in [0, 1], got {t}.")
        box = self.boxSize.get()
        if box is None or box < 0:
            errors.append(f"Box size must be >= 0 µm (0: automatic), got {box}.")
        novelty = self.novelty.get()
        if novelty is None or not novelty > 1:
            errors.append(f"Background novelty ratio must be > 1, got {novelty}.")
        errors.extend(_scheduler_errors(self))
        if not errors:
            errors.extend(self._memoryErrors(images, d, vs))
        return errors

    def _memoryErrors(self, images, diameter: float, vs) -> list[str]:
        """The tiles of every field within Memory (GB), and that memory against the machine
        (header sizes only)."""
        gb = self.memoryGb.get()
        if gb is None or not gb > 0:
            return [f"Memory (GB) must be > 0, got {gb}."]
        peak, worst = 0, None
        for img in images.items():
            shape = tuple(img.getShape()[1:])
            try:
                plan = plan_tiles(shape, vs, diameter, memory_bytes=gb * 1e9)
            except ValueError as exc:
                return [f"Image {img.getImageId()}: {exc}: raise Memory (GB) (memoryGb)."]
            if plan.peak_bytes > peak:
                peak, worst = plan.peak_bytes, (img.getImageId(), shape, len(plan))
        return memory_errors(
            peak, what=f"Picking image {worst[0]} ({' x '.join(map(str, worst[1]))} voxels, "
                       f"z, y, x) in {worst[2]} tile(s)",
            fix="lower Memory (GB) (memoryGb); the tiles get smaller")

    def _summary(self):
        if not hasattr(self, "outputCoordinates"):
            return ["Not picked yet."]
        coords = self.outputCoordinates
        reason = coords.getBoxSizeReason()
        return [f"{coords.getSize()} particle(s) picked from "
                f"{self.inputExamples.get().getSize()} example(s), diameter "
                f"{self.diameter.get():g} µm, score >= {self.threshold.get():g}, box "
                f"{coords.getBoxSize():g} µm" + (f" ({reason})" if reason else "") + "."]

    def _methods(self):
        return [f"Particles were picked semi-automatically (Fortun et al. 2018) from "
                f"{self.inputExamples.get().getSize()} examples with a "
                f"{_CLASSIFIER_LABELS[self.classifier.get()]} on about 90 features, "
                f"particle diameter {self.diameter.get():g} µm."]

    # --------------------------- UTILS functions ------------------------------
    def _boxSize(self) -> float:
        return self._boxChoice()[0]

    def _boxChoice(self) -> tuple[float, str]:
        """The box size (µm) recorded with the coordinates, and why."""
        box = self.boxSize.get()
        if box:
            return float(box), "given (Box size)"
        examples = pointed(self.inputExamples)
        given = examples.getBoxSize() if examples is not None else None
        if given:
            why = examples.getBoxSizeReason()
            return float(given), "the box of the example particles" + (f", {why}" if why
                                                                       else "")
        d = float(self.diameter.get())
        return 1.5 * d, f"1.5 x the particle diameter ({d:g} µm)"


# ----------------------------------------------------------------------------- extract
class ProtExtractParticles(ProtFluoJob):
    """Extract a cubic box around each coordinate, every channel, on isotropic voxels.

    The fields of view usually have coarser voxels along z; each box is resampled (cubic
    interpolation) to isotropic voxels of the chosen size, centred on the coordinate.
    Boxes that cross the image border are padded or left out.
    """

    _label = "extract particles"
    _possibleOutputs = {"outputParticles": SetOfParticles}
    _references = ["Fortun2018"]
    _jobStep = "extract"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        #: particles whose box crossed the image border (set by createOutputStep)
        self.crossingBorder = pwobj.Integer()
        #: the voxel size and box used, with why (set by convertInputStep)
        self.extractionChoices = pwobj.String()

    # --------------------------- DEFINE param functions -----------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputCoordinates", params.PointerParam,
                      pointerClass="SetOfCoordinates3D", important=True, label="Coordinates",
                      help="Particle positions (picked or imported); the particles are cut "
                           "from the images these coordinates refer to.")
        form.addParam("boxSize", params.FloatParam, default=0.0, label="Box size (µm)",
                      help="Side of the cubic box, micrometres. 0: the coordinates' box size.")
        form.addParam("voxelSize", params.FloatParam, default=0.0,
                      label="Voxel size (µm)",
                      help="Isotropic voxel size of the particles, micrometres. 0: the voxel "
                           "size of the finest axis of the images (usually x). The log and "
                           "the summary give the values chosen and why.")
        form.addParam("border", params.EnumParam, default=BORDER_PAD, choices=_BORDER_KEYS,
                      display=params.EnumParam.DISPLAY_HLIST, label="Boxes across the border",
                      help="pad: fill the part outside the image with the median of the "
                           "inside; skip: leave the particle out. The log lists them.")
        form.addParam("normalize", params.EnumParam, default=0, choices=_NORMALIZE_LABELS,
                      label="Intensity normalisation",
                      help="None; zero mean and unit variance over each box; or over the "
                           "background around each particle (outside the inscribed sphere).")
        _add_scheduler_param(form)

    # --------------------------- STEPS functions ------------------------------
    def convertInputStep(self, key):
        coords = self.inputCoordinates.get()
        inputs = {"images": _write_images(coords.getImages(), self._getExtraPath("images.json")),
                  "coordinates": self._getExtraPath("coordinates.csv")}
        write_coordinates_csv(inputs["coordinates"], _coordinate_table(coords, with_ids=True))
        job_params = {"box_size_um": self._boxSize(), "voxel_size_um": self._voxelSize(),
                      "border": _BORDER_KEYS[self.border.get()],
                      "normalize": _NORMALIZE_KEYS[self.normalize.get()],
                      "scheduler": _scheduler(self)}
        self.extractionChoices.set(self._choices())
        self._store(self.extractionChoices)
        self.info(f"particles: {self.extractionChoices.get()}")
        self._writeJob(self._jobStep, inputs=inputs, params=job_params,
                       outputs={"particles": self._getExtraPath("particles.csv"),
                                "particles_dir": self._getExtraPath("particles"),
                                "report": self._getExtraPath("extract_report.json")})

    def createOutputStep(self, key):
        coords = {c.getObjId(): c for c in self.inputCoordinates.get().items()}
        table = read_particle_table(self._getExtraPath("particles.csv"))
        vs = (self._voxelSize(),) * 3
        parts = SetOfParticles(filename=self._getPath("particles.sqlite"))
        for pid, path, image_id in zip(table.ids, table.paths, table.extra["image_id"]):
            p = image_from_file(Particle, path, vs, image_id=f"{image_id}_{int(pid)}")
            p.setObjId(int(pid))
            p.setCoordinate(coords[int(pid)])
            p.setSourceImageId(str(image_id))
            parts.append(p)
        parts.setHasPoses(False)
        parts.write()
        report = self._readJobJson("extract_report.json")
        action = "padded" if report["border"] == "pad" else "skipped"
        self.info(f"{parts.getSize()} particle(s) of {report['box_voxels']}^3 voxels of "
                  f"{vs[0]:g} µm; {report['n_crossing_border']} crossed the border ({action})")
        self.crossingBorder.set(report["n_crossing_border"])
        self._store(self.crossingBorder)
        self._defineOutputs(outputParticles=parts)
        self._defineSources([parts], self.inputCoordinates)

    # --------------------------- INFO functions -------------------------------
    def _validate(self):
        coords = pointed(self.inputCoordinates)
        if coords is None:
            return ["Choose the coordinates to extract."]
        if coords.getSize() == 0:
            return ["The coordinate set is empty: pick or import coordinates first."]
        images = coords.getImages()
        if images is None or images.getSize() == 0:
            return ["The coordinates are not linked to images: import them for an image set."]
        errors = _scheduler_errors(self)
        _check_coordinates_in_images(coords, images, errors, what="Coordinates")
        box = self.boxSize.get()
        if box is None or box < 0:
            errors.append(f"Box size must be >= 0 µm (0: the coordinates' box size), got {box}.")
        elif not self._boxSize():
            errors.append("The coordinates have no box size: give the box size in µm.")
        v = self.voxelSize.get()
        if v is None or v < 0:
            errors.append(f"Voxel size must be >= 0 µm (0: the images' lateral voxel size), "
                          f"got {v}.")
        if errors:
            return errors
        n = int(round(self._boxSize() / self._voxelSize()))
        if n < 4:
            errors.append(f"The box of {self._boxSize():g} µm holds {n} voxel(s) of "
                          f"{self._voxelSize():g} µm per side: use a larger box or smaller "
                          "voxels (at least 4).")
        elif n > MAX_BOX_SIZE:
            errors.append(f"The box of {self._boxSize():g} µm holds {n} voxels of "
                          f"{self._voxelSize():g} µm per side, more than {MAX_BOX_SIZE}: use "
                          "larger voxels or a smaller box.")
        lateral = min(min(img.getPhysicalSize()[1:]) for img in images.items())
        if self._boxSize() > lateral:
            errors.append(f"Box size {self._boxSize():g} µm is larger than the images "
                          f"({lateral:g} µm laterally).")
        if not errors:
            errors.extend(self._memoryErrors(coords, images, n))
        return errors

    def _memoryErrors(self, coords, images, box: int) -> list[str]:
        """The extraction's peak (the image with the most particles) against the machine."""
        counts = {}
        for c in coords.items():
            counts[c.getImageId()] = counts.get(c.getImageId(), 0) + 1
        shapes = {img.getImageId(): img.getShape() for img in images.items()}
        ratio = self._voxelSize() / np.asarray(images.getVoxelSize(), dtype=np.float64)
        # the job reads each box from a memory map and writes the particles by batches
        peak, worst = max((extraction_peak_bytes(shapes[i], min(k, EXTRACTION_BATCH), box,
                                                 ratio), i)
                          for i, k in counts.items() if i in shapes)
        return memory_errors(
            peak, what=f"Extracting the {counts[worst]} particle(s) of image {worst} in boxes "
                       f"of {box}^3 voxels ({self._boxSize():g} µm at {self._voxelSize():g} µm)",
            fix="choose a larger Voxel size (voxelSize) or a smaller Box size (boxSize)")

    def _summary(self):
        if not hasattr(self, "outputParticles"):
            return ["Not extracted yet."]
        p = self.outputParticles
        action = "padded" if self.border.get() == BORDER_PAD else "skipped"
        lines = [f"{p.getSize()} particle(s), box {p.getBoxShape()} voxels of "
                 f"{p.getVoxelSize()[0]:g} µm; {self.crossingBorder.get()} crossed the image "
                 f"border ({action})."]
        if self.extractionChoices.get():
            lines.append(f"Chosen: {self.extractionChoices.get()}.")
        return lines

    def _methods(self):
        return [f"Particles were extracted in boxes of {self._boxSize():g} µm resampled to "
                f"isotropic voxels of {self._voxelSize():g} µm (cubic interpolation)."]

    # --------------------------- UTILS functions ------------------------------
    def _boxSize(self) -> float:
        return self._boxChoice()[0]

    def _boxChoice(self) -> tuple[float, str]:
        """The box size (µm; 0 when unknown) and why."""
        box = self.boxSize.get()
        if box:
            return float(box), "given (Box size)"
        coords = pointed(self.inputCoordinates)
        given = coords.getBoxSize() if coords is not None else None
        if not given:
            return 0.0, "unknown"
        why = coords.getBoxSizeReason()
        return float(given), "the box of the coordinates" + (f", {why}" if why else "")

    def _voxelSize(self) -> float:
        return self._voxelChoice()[0]

    def _voxelChoice(self) -> tuple[float, str]:
        """The particles' isotropic voxel size (µm) and why."""
        v = self.voxelSize.get()
        if v:
            return float(v), "given (Voxel size)"
        vs = self.inputCoordinates.get().getImages().getVoxelSize()
        axis = int(np.argmin(vs[::-1]))  # x first when axes tie
        return float(min(vs)), (f"the finest axis ({'xyz'[axis]}) of the fields, whose voxels "
                                f"are {' x '.join(f'{v:g}' for v in vs)} µm (z, y, x)")

    def _choices(self) -> str:
        """The voxel size and box of the particles with the reasons, one line."""
        (v, why_v), (b, why_b) = self._voxelChoice(), self._boxChoice()
        return (f"voxel {v:g} µm: {why_v}; box {b:g} µm = {int(round(b / v))}^3 voxels: "
                f"{why_b}")


# ----------------------------------------------------------------------------- select
class ProtSelectParticles(ProtFluo):
    """Keep the coordinates or particles with a high enough score, minus excluded ids."""

    _label = "select particles"
    _possibleOutputs = {"outputCoordinates": SetOfCoordinates3D,
                        "outputParticles": SetOfParticles}

    # --------------------------- DEFINE param functions -----------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputSet", params.PointerParam,
                      pointerClass="SetOfCoordinates3D,SetOfParticles", important=True,
                      label="Coordinates or particles",
                      help="Picked coordinates (their score) or extracted particles (the "
                           "score of their coordinate).")
        form.addParam("minScore", params.FloatParam, allowsNull=True,
                      label="Minimum score (empty = any)",
                      help="Keep the items whose score is at least this.")
        form.addParam("excludeIds", params.StringParam, default="", label="Exclude ids",
                      help="Ids to leave out, separated by spaces or commas, with ranges: "
                           "e.g. '3 5 10-12'.")

    # --------------------------- INSERT steps functions -----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.selectStep, self._paramsKey())

    # --------------------------- STEPS functions ------------------------------
    def selectStep(self, key):
        errors = []
        kept = self._selection(errors)
        if errors:
            raise ValueError("\n".join(errors))
        source = self.inputSet.get()
        if isinstance(source, SetOfCoordinates3D):
            out = SetOfCoordinates3D(filename=self._getPath("coordinates.sqlite"))
            out.setImages(source.getImages())
            if source.getBoxSize():
                out.setBoxSize(source.getBoxSize(), source.getBoxSizeReason())
            name = "outputCoordinates"
        else:
            out = SetOfParticles(filename=self._getPath("particles.sqlite"))
            out.setHasPoses(source.hasPoses())
            name = "outputParticles"
        for item in kept:
            out.append(item)
        out.write()
        self.info(f"kept {out.getSize()} of {source.getSize()} item(s)")
        self._defineOutputs(**{name: out})
        self._defineSources([out], self.inputSet)

    # --------------------------- INFO functions -------------------------------
    def _validate(self):
        errors = []
        self._selection(errors)
        return errors

    def _summary(self):
        for name in ("outputCoordinates", "outputParticles"):
            if hasattr(self, name):
                return [f"Kept {getattr(self, name).getSize()} of "
                        f"{self.inputSet.get().getSize()} item(s)."]
        return ["Not selected yet."]

    # --------------------------- UTILS functions ------------------------------
    @staticmethod
    def _score(item):
        coord = item if isinstance(item, Coordinate3D) else item.getCoordinate()
        return coord.getScore()

    def _selection(self, errors: list) -> list:
        """The items kept (clones); problems go to ``errors``."""
        source = pointed(self.inputSet)
        if source is None:
            errors.append("Choose the coordinates or particles to select from.")
            return []
        items = source.items()
        if not items:
            errors.append("The input set is empty: nothing to select.")
            return []
        min_score = self.minScore.get()
        try:
            excluded = set(_parse_ids(self.excludeIds.get()))
        except ValueError as exc:
            errors.append(str(exc))
            return []
        if min_score is None and not excluded:
            errors.append("Give a minimum score, ids to exclude, or both.")
            return []
        ids = {item.getObjId() for item in items}
        unknown = sorted(excluded - ids)
        if unknown:
            errors.append(f"Excluded id(s) {unknown[:5]} are not in the input set (ids "
                          f"{min(ids)}-{max(ids)}).")
            return []
        if min_score is not None:
            missing = [item.getObjId() for item in items if self._score(item) is None]
            if missing:
                errors.append(f"{len(missing)} item(s) have no score (first id {missing[0]}): "
                              "select by score only after picking.")
                return []
        kept = [item for item in items if item.getObjId() not in excluded
                and (min_score is None or self._score(item) >= min_score)]
        if not kept:
            errors.append("The selection keeps no item: lower the minimum score or exclude "
                          "fewer ids.")
        return kept
