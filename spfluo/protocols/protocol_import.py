"""Import protocols: fields of view, PSF, particles (with optional poses), coordinates.

Each import checks everything it can before running (files readable, voxel
sizes present and consistent, channel counts, coordinates inside their image,
poses matching the particles) so that a bad input fails at once with a
message naming the file and the fix, and nothing is added to the project.
"""

from __future__ import annotations

import glob
import os
import shutil

import numpy as np
import pyworkflow.protocol.params as params

from ..algorithms.geometry import vectors_voxels_to_um
from ..algorithms.limits import psf_size_error
from ..algorithms.psf_preparation import average_beads, prepare_psf
from ..io import (
    read_coordinates_csv,
    read_poses_csv,
    read_poses_star,
    read_shape,
    read_volume,
    read_voxel_size,
)
from ..io.scan import scan_volume, volume_problems
from ..objects import (
    Coordinate3D,
    FluoImage,
    Particle,
    PSFModel,
    SetOfCoordinates3D,
    SetOfFluoImages,
    SetOfParticles,
)
from ..objects.arrays import image_from_array
from .base import ProtFluo
from .convert import image_id_from_path

__all__ = [
    "ProtImportFluoImages",
    "ProtImportPSF",
    "ProtImportParticles",
    "ProtImportCoordinates",
]

VOXEL_FROM_FILE, VOXEL_GIVEN = 0, 1


# ----------------------------- shared helpers ---------------------------------
def _add_voxel_size_params(form, *, what: str) -> None:
    form.addParam("voxelSizeSource", params.EnumParam, default=VOXEL_FROM_FILE,
                  choices=["from the files' metadata", "given below"],
                  display=params.EnumParam.DISPLAY_HLIST, label="Voxel size",
                  help=f"Read the voxel size of the {what} from their metadata (OME physical "
                       "sizes, ImageJ spacing/resolution, MRC header), or give it here.")
    line = form.addLine("Voxel size (µm)", condition=f"voxelSizeSource=={VOXEL_GIVEN}",
                        help="Voxel size in micrometres: lateral (x = y) and axial (z).")
    line.addParam("voxelSizeXY", params.FloatParam, default=0.1, label="x, y (µm)")
    line.addParam("voxelSizeZ", params.FloatParam, default=0.1, label="z (µm)")


def _given_voxel_size(prot) -> tuple[float, float, float] | None:
    if prot.voxelSizeSource.get() != VOXEL_GIVEN:
        return None
    return (prot.voxelSizeZ.get(), prot.voxelSizeXY.get(), prot.voxelSizeXY.get())


def _check_given_voxel_size(prot, errors: list) -> None:
    vs = _given_voxel_size(prot)
    if vs is not None and (not all(v and v > 0 for v in vs)):
        errors.append(f"Voxel size must be > 0 µm, got z={prot.voxelSizeZ.get()}, "
                      f"xy={prot.voxelSizeXY.get()}.")


def _inspect_files(files, given_vs, errors, *, what, pixels: bool = True):
    """Read shape and voxel size of every file; append problems to errors.

    With ``pixels`` every plane is read once (:func:`spfluo.io.scan.scan_volume`, memory of
    one plane): 2D images, NaN/Inf values (file and plane) and constant or all-zero
    channels are refused.  Returns a list of (path, shape (C, Z, Y, X), voxel size) for the
    readable files.
    """
    found = []
    for f in files:
        try:
            shape = read_shape(f)
            vs = given_vs if given_vs is not None else read_voxel_size(f)
            problems = volume_problems(scan_volume(f), what=what) if pixels else []
        except Exception as exc:  # the reader names the file and the reason
            errors.append(f"Cannot read {what} file {f}: {exc}")
            continue
        if problems:
            errors.extend(problems)
            continue
        if vs is None:
            errors.append(f"{f} has no voxel size in its metadata: choose 'Voxel size: given "
                          f"below' and enter it in micrometres.")
            continue
        found.append((f, tuple(shape), tuple(float(v) for v in vs)))
    if found:
        vs0 = found[0][2]
        for f, _, vs in found[1:]:
            if not np.allclose(vs, vs0, rtol=1e-4):
                errors.append(f"Voxel sizes differ: {found[0][0]} has {vs0} µm but {f} has {vs} µm "
                              f"(z, y, x); import them separately or resample them.")
                break
        c0 = found[0][1][0]
        for f, shape, _ in found[1:]:
            if shape[0] != c0:
                errors.append(f"Channel counts differ: {found[0][0]} has {c0} channel(s) but {f} "
                              f"has {shape[0]}; every {what} of a set needs the same channels.")
                break
    return found


def _place_file(src: str, dst: str, copy: bool) -> None:
    if copy:
        shutil.copy2(src, dst)
    else:
        os.symlink(os.path.abspath(src), dst)


class _ProtImportFiles(ProtFluo):
    """Shared parameters of the imports that read a file pattern."""

    _label = None
    _what = "image"

    def _defineFilesParams(self, form):
        form.addParam("filesPattern", params.StringParam, important=True,
                      label="Files (pattern)",
                      help="Path of the files with shell wildcards, e.g. /data/fov_*.tif "
                           "(TIFF, OME-TIFF or MRC).")
        _add_voxel_size_params(form, what=self._what + "s")
        form.addParam("copyFiles", params.BooleanParam, default=False,
                      expertLevel=params.LEVEL_ADVANCED, label="Copy files into the project?",
                      help="Copy the files instead of linking them (safer if the originals move, "
                           "uses more disk).")

    def _matchingFiles(self) -> list[str]:
        pattern = (self.filesPattern.get() or "").strip()
        return sorted(glob.glob(os.path.expanduser(pattern))) if pattern else []

    def _validateFiles(self, errors: list, *, pixels: bool = True):
        pattern = (self.filesPattern.get() or "").strip()
        if not pattern:
            errors.append("Files (pattern) is empty: give a path such as /data/*.tif.")
            return []
        files = self._matchingFiles()
        if not files:
            errors.append(f"No file matches {pattern}: check the folder and the wildcard.")
            return []
        ids = [image_id_from_path(f) for f in files]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            errors.append(f"Several files share the name {dup[0]!r}: file names (without "
                          f"extension) identify the {self._what}s and must be unique.")
        _check_given_voxel_size(self, errors)
        if errors:
            return []
        return _inspect_files(files, _given_voxel_size(self), errors, what=self._what,
                              pixels=pixels)

    def _placeFiles(self) -> list[tuple[str, str]]:
        """Link or copy the input files into extra/; returns (source, placed) pairs."""
        placed = []
        for f in self._matchingFiles():
            dst = self._getExtraPath(os.path.basename(f))
            if os.path.lexists(dst):
                os.remove(dst)
            _place_file(f, dst, self.copyFiles.get())
            placed.append((f, dst))
        return placed


# ------------------------------- images ---------------------------------------
class ProtImportFluoImages(_ProtImportFiles):
    """Import fields of view (3D, one or several channels) with their voxel size."""

    _label = "import images"
    _possibleOutputs = {"outputImages": SetOfFluoImages}
    _what = "image"

    # --------------------------- DEFINE param functions -----------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        self._defineFilesParams(form)

    # --------------------------- INSERT steps functions -----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.importStep, self._paramsKey())

    # --------------------------- STEPS functions ------------------------------
    def importStep(self, key):
        errors = []  # the pixels were checked by the validation before the launch
        found = {f: (shape, vs) for f, shape, vs in self._validateFiles(errors, pixels=False)}
        if errors:
            raise ValueError("\n".join(errors))
        images = SetOfFluoImages(filename=self._getPath("images.sqlite"))
        for src, dst in self._placeFiles():
            shape, vs = found[src]
            images.append(FluoImage(filename=dst, voxelSize=vs, shape=shape,
                                    imageId=image_id_from_path(src)))
            self.info(f"imported {src}: {shape[0]} channel(s), {shape[1:]} voxels (z, y, x), "
                      f"voxel {vs} µm")
        images.write()
        self._defineOutputs(outputImages=images)

    # --------------------------- INFO functions -------------------------------
    def _validate(self):
        errors = []
        self._validateFiles(errors)
        return errors

    def _summary(self):
        if not hasattr(self, "outputImages"):
            return ["Not imported yet."]
        imgs = self.outputImages
        return [f"{imgs.getSize()} image(s), {imgs.getNumChannels()} channel(s), "
                f"voxel size {imgs.getVoxelSize()} µm (z, y, x)."]


# --------------------------------- PSF ----------------------------------------
class ProtImportPSF(ProtFluo):
    """Import a measured PSF (one bead image, or several registered and averaged) or a
    computed one: background subtracted, centred on its centre of mass, unit sum.

    The PSF keeps its own voxel size and box; the protocols that use it resample it to the
    particles' voxel size and fit it to their box.
    """

    _label = "import PSF"
    _possibleOutputs = {"outputPSF": PSFModel}

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("psfFile", params.FileParam, important=True, label="PSF or bead file(s)",
                      help="A 3D PSF (TIFF, OME-TIFF or MRC), one channel per imaging channel, "
                           "at any voxel size (e.g. the fields'). Several bead images: a "
                           "pattern with wildcards, e.g. /data/bead_*.tif; they are registered "
                           "and averaged.")
        _add_voxel_size_params(form, what="PSF")
        form.addParam("subtractBackground", params.BooleanParam, default=True,
                      label="Subtract the background?",
                      help="For bead images: subtract the background found on the faces of "
                           "the box (their 5th percentile plus 1.645 noise standard "
                           "deviations, robust to a widefield halo) and set the voxels below "
                           "3 noise standard deviations to 0 (else the noise adds a pedestal "
                           "to the PSF). No for a computed PSF. Several beads always get it.")

    def _insertAllSteps(self):
        self._insertFunctionStep(self.importStep, self._paramsKey())

    def importStep(self, key):
        files = self._psfFiles()
        volumes = [self._readPSF(f) for f in files]
        vs = volumes[0].voxel_size
        if len(volumes) == 1:
            prepared = prepare_psf(volumes[0].data, vs,
                                   subtract_background=bool(self.subtractBackground.get()))
            self.info(f"{files[0]}: {prepared.describe()}")
            data = prepared.psf
        else:
            average = average_beads([v.data for v in volumes], vs)
            for f, offset, corr, bg in zip(files, average.offsets, average.correlations,
                                           average.background):
                self.info(f"bead {f}: centre at " + ", ".join(
                    f"({', '.join(f'{o:+.2f}' for o in off)})" for off in offset)
                    + " voxels (z, y, x) from its box centre, background "
                    + ", ".join(f"{b:.4g}" for b in bg) + ", correlation with the average "
                    + ", ".join(f"{c:.3f}" for c in corr))
            data = average.psf
            self.info(f"{len(files)} beads registered and averaged: {data.shape[1:]} voxels "
                      f"(z, y, x) of {vs} µm")
        out = image_from_array(PSFModel, data, vs, self._getExtraPath("psf.ome.tif"),
                               image_id="psf")
        self._defineOutputs(outputPSF=out)

    def _psfFiles(self) -> list[str]:
        pattern = os.path.expanduser((self.psfFile.get() or "").strip())
        if glob.has_magic(pattern):
            return sorted(glob.glob(pattern))
        return [pattern] if pattern else []

    def _readPSF(self, path):
        return read_volume(path, voxel_size=_given_voxel_size(self))

    def _validate(self):
        errors = []
        pattern = (self.psfFile.get() or "").strip()
        if not pattern:
            return ["PSF file is empty: choose the PSF file to import."]
        files = self._psfFiles()
        if not files:
            return [f"No file matches {pattern}: check the folder and the wildcard."]
        if not os.path.exists(files[0]):
            return [f"PSF file {files[0]} does not exist: check the path."]
        _check_given_voxel_size(self, errors)
        if errors:
            return errors
        for f in files:  # header only: a field given as a PSF is refused before any pixel
            try:
                error = psf_size_error(read_shape(f)[1:], what=f"PSF file {f}")
            except Exception:  # unreadable: _inspect_files names the reason
                continue
            if error:
                errors.append(error)
        if errors:
            return errors
        found = _inspect_files(files, _given_voxel_size(self), errors, what="PSF")
        if errors:
            return errors
        for f, shape, _ in found:
            if min(shape[1:]) < 3:
                errors.append(f"PSF {f} has shape {shape[1:]} (z, y, x): a 3D PSF needs at "
                              "least 3 voxels along each axis.")
        if errors:
            return errors
        for f in files:  # a PSF whose signal is all below its background is of no use
            try:
                prepare_psf(self._readPSF(f).data, found[0][2], centre=False,
                            subtract_background=bool(self.subtractBackground.get())
                            or len(files) > 1)
            except ValueError as exc:
                errors.append(f"PSF {f}: {exc}")
        return errors

    def _summary(self):
        if not hasattr(self, "outputPSF"):
            return ["Not imported yet."]
        psf = self.outputPSF
        return [f"PSF {psf.getShape()} (C, Z, Y, X), voxel size {psf.getVoxelSize()} µm "
                f"(z, y, x), from {len(self._psfFiles())} file(s)."]


# ------------------------------ particles -------------------------------------
class ProtImportParticles(_ProtImportFiles):
    """Import extracted particles (cubic boxes, isotropic voxels), optionally with poses.

    Poses come from a CSV (4x4 matrices or ZYZ Euler angles + translations in
    µm, see ``spfluo.io.poses``) or a RELION STAR file.  Rows are matched to
    files by the file name when the table has a path/image name column, else
    by order (files sorted by name).
    """

    _label = "import particles"
    _possibleOutputs = {"outputParticles": SetOfParticles}
    _what = "particle"

    def _defineParams(self, form):
        form.addSection(label="Input")
        self._defineFilesParams(form)
        form.addParam("posesFile", params.FileParam, allowsNull=True, label="Poses file (optional)",
                      help="CSV (id + m00..m23, or id + rot, tilt, psi (deg) + tx, ty, tz (µm)) or "
                           "RELION STAR. Leave empty if the poses are unknown.")

    def _insertAllSteps(self):
        self._insertFunctionStep(self.importStep, self._paramsKey())

    def _readPoses(self):
        path = self.posesFile.get()
        if path.lower().endswith(".star"):
            return read_poses_star(path)
        return read_poses_csv(path)

    def _matchPoses(self, files, errors):
        """One 4x4 pose (xyz, µm) per file, or None when no poses file is given."""
        path = self.posesFile.get()
        if not path:
            return None
        if not os.path.exists(path):
            errors.append(f"Poses file {path} does not exist: check the path or leave it empty.")
            return None
        try:
            table = self._readPoses()
        except Exception as exc:
            errors.append(f"Cannot read poses file {path}: {exc}")
            return None
        if len(table.ids) == 0:
            errors.append(f"Poses file {path} holds no pose (only its header): give one row "
                          "per particle, or leave the poses file empty.")
            return None
        names = None
        for column in ("path", "image_name", "rlnImageName"):
            if column in table.extra:
                names = [image_id_from_path(str(v).split("@")[-1]) for v in table.extra[column]]
                break
        if names is None:
            if len(table.ids) != len(files):
                errors.append(f"Poses file {path} has {len(table.ids)} pose(s) but the pattern "
                              f"matches {len(files)} particle file(s): they must correspond one "
                              "to one (rows in the order of the sorted file names).")
                return None
            return list(table.matrices)
        by_name = dict(zip(names, table.matrices))
        missing = [f for f in files if image_id_from_path(f) not in by_name]
        if missing:
            errors.append(f"Poses file {path} has no pose for {missing[0]} "
                          f"({len(missing)} file(s) without pose): every particle needs one.")
            return None
        return [by_name[image_id_from_path(f)] for f in files]

    def _validateParticles(self, errors, *, pixels: bool = True):
        found = self._validateFiles(errors, pixels=pixels)
        if not found:
            return found, None
        shape0 = found[0][1]
        for f, shape, _ in found:
            if len(set(shape[1:])) != 1:
                errors.append(f"Particle {f} has shape {shape[1:]} (z, y, x): particles must be "
                              "cubic boxes; extract them with 'extract particles'.")
                break
            if shape != shape0:
                errors.append(f"Particle {f} has shape {shape} but {found[0][0]} has {shape0}: "
                              "every particle must have the same box.")
                break
        vs = found[0][2]
        if not np.allclose(vs, vs[0], rtol=1e-4):
            errors.append(f"Particles have anisotropic voxels {vs} µm (z, y, x): resample them to "
                          "isotropic voxels (the extract protocol does it).")
        poses = self._matchPoses([f for f, _, _ in found], errors)
        return found, poses

    def importStep(self, key):
        errors = []  # the pixels were checked by the validation before the launch
        found, poses = self._validateParticles(errors, pixels=False)
        if errors:
            raise ValueError("\n".join(errors))
        info = {f: (shape, vs) for f, shape, vs in found}
        parts = SetOfParticles(filename=self._getPath("particles.sqlite"))
        for k, (src, dst) in enumerate(self._placeFiles()):
            shape, vs = info[src]
            p = Particle(filename=dst, voxelSize=vs, shape=shape,
                         imageId=image_id_from_path(src))
            if poses is not None:
                p.setTransform(poses[k])
            parts.append(p)
        parts.setHasPoses(poses is not None)
        parts.write()
        self.info(f"imported {parts.getSize()} particle(s) of {found[0][1]} (C, Z, Y, X), "
                  f"{'with' if poses is not None else 'without'} poses")
        self._defineOutputs(outputParticles=parts)

    def _validate(self):
        errors = []
        self._validateParticles(errors)
        return errors

    def _summary(self):
        if not hasattr(self, "outputParticles"):
            return ["Not imported yet."]
        p = self.outputParticles
        return [f"{p.getSize()} particle(s), box {p.getBoxShape()} voxels, voxel size "
                f"{p.getVoxelSize()} µm, {'with' if p.hasPoses() else 'without'} poses."]


# ----------------------------- coordinates ------------------------------------
class ProtImportCoordinates(ProtFluo):
    """Import particle coordinates (CSV: image_id, x, y, z in µm) for an imported image set."""

    _label = "import coordinates"
    _possibleOutputs = {"outputCoordinates": SetOfCoordinates3D}

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputImages", params.PointerParam, pointerClass="SetOfFluoImages",
                      important=True, label="Images",
                      help="The imported images the coordinates refer to.")
        form.addParam("coordinatesFile", params.FileParam, important=True,
                      label="Coordinates file (CSV)",
                      help="Columns image_id, x, y, z (µm from the centre of the first voxel); "
                           "optional score.")
        form.addParam("boxSize", params.FloatParam, default=1.0, label="Box size (µm)",
                      help="Side of the cubic box around each particle, in micrometres.")

    def _insertAllSteps(self):
        self._insertFunctionStep(self.importStep, self._paramsKey())

    def _checkCoordinates(self, errors):
        path = self.coordinatesFile.get()
        if not path:
            errors.append("Coordinates file is empty: choose a CSV file.")
            return None
        if not os.path.exists(path):
            errors.append(f"Coordinates file {path} does not exist: check the path.")
            return None
        if not self.boxSize.get() or self.boxSize.get() <= 0:
            errors.append(f"Box size must be > 0 µm, got {self.boxSize.get()}.")
        images = self.inputImages.get()
        if images is None:
            errors.append("Choose the images the coordinates refer to.")
            return None
        try:
            table = read_coordinates_csv(path)
        except Exception as exc:
            errors.append(f"Cannot read coordinates file {path}: {exc}")
            return None
        if len(table) == 0:
            errors.append(f"Coordinates file {path} lists no coordinate (only its header): add "
                          "one row per particle, image_id,x,y,z in µm.")
            return None
        extents = {}
        for img in images.iterItems():
            extents[img.getImageId()] = np.array(img.getDimensions()) - 1
            vs = np.array(img.getVoxelSize())
        for row, (image_id, pos) in enumerate(zip(table.image_ids, table.positions_zyx_um)):
            key = str(image_id)
            if key not in extents:
                errors.append(f"{path} row {row + 1}: image id {key!r} is not in the image set "
                              f"(known: {', '.join(sorted(extents)[:5])}); fix the image_id column.")
                return None
            limit = vectors_voxels_to_um(extents[key], vs)
            if np.any(pos < 0) or np.any(pos > limit + 1e-9):
                errors.append(f"{path} row {row + 1}: position (x, y, z) = {tuple(pos[::-1])} µm is "
                              f"outside image {key} (size {tuple(limit[::-1])} µm); fix the "
                              "coordinates or their unit (micrometres).")
                return None
        return table

    def importStep(self, key):
        errors = []
        table = self._checkCoordinates(errors)
        if errors:
            raise ValueError("\n".join(errors))
        coords = SetOfCoordinates3D(filename=self._getPath("coordinates.sqlite"))
        coords.setImages(self.inputImages)
        coords.setBoxSize(self.boxSize.get(), "given at the import (Box size)")
        scores = table.score if table.score is not None else [None] * len(table.image_ids)
        for image_id, pos, score in zip(table.image_ids, table.positions_zyx_um, scores):
            c = Coordinate3D()
            z, y, x = pos
            c.setPosition(x, y, z)
            c.setImageId(str(image_id))
            c.setBoxSize(self.boxSize.get())
            c.setScore(score)
            coords.append(c)
        coords.write()
        self._defineOutputs(outputCoordinates=coords)
        self._defineSources([coords], self.inputImages)

    def _validate(self):
        errors = []
        self._checkCoordinates(errors)
        return errors

    def _summary(self):
        if not hasattr(self, "outputCoordinates"):
            return ["Not imported yet."]
        c = self.outputCoordinates
        return [f"{c.getSize()} coordinate(s), box {c.getBoxSize()} µm."]
