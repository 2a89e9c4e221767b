"""Result objects: numbers measured by evaluation protocols, with the files of their curves.

:class:`VolumeComparison` is a volume compared with a reference (usually a ground
truth): FSC, conical FSC, SSIM, PSNR, the registration found, and pose errors when
both particle sets carry poses.  Its numbers are pyworkflow scalars (``Float`` and
``Integer``) named after the metric and its unit, so ``spfluo project show`` prints
them (through ``str``) and the catalog can pick them up; the curves live in files
(CSV) next to the run.
"""

from __future__ import annotations

import math

import pyworkflow.object as pwobj

from .data import FluoObject, Transform, _as_voxel_size

__all__ = ["VolumeComparison"]


class VolumeComparison(FluoObject):
    """A volume compared with a reference: quality numbers and the files of the curves.

    Numbers (``None`` when not measured), those of the first channel when the volumes
    have several (every channel's numbers are in the metrics JSON):

    - ``ssim``, ``psnr_db`` (after the intensity fit of the volume to the reference);
    - ``fsc_resolution_0143_per_voxel``, ``fsc_resolution_05_per_voxel``: FSC resolution at
      the 0.143 and 0.5 thresholds in cycles per voxel (higher is better; 0.5 = Nyquist),
      and ``fsc_resolution_0143_um``, ``fsc_resolution_05_um`` the same in micrometres;
    - ``conical_resolution_best_per_voxel``, ``conical_resolution_worst_per_voxel``: the
      best and worst direction of the conical FSC (0.143);
    - ``registration_angle_deg``, ``registration_shift_um``: size of the rigid transform
      that registered the volume onto the reference (its 4x4 stored matrix, xyz and
      micrometres, is :meth:`getRegistration`);
    - ``pose_error_median_deg``, ``pose_error_mean_deg``, ``pose_error_max_deg`` over
      ``n_matched_particles`` particles (geodesic angle after the best global rotation,
      modulo the symmetry); ``axis_error_median_deg`` (the symmetry axes) and
      ``in_plane_error_median_deg`` (the rotation about them, modulo 360/n: about 90/n at
      chance), ``in_plane_resultant`` (n-fold mean resultant length of the in-plane
      errors: 1 recovered, near 0 at chance);
    - ``symmetry`` (order n of Cn used), ``n_channels``.

    Files: FSC curves (CSV ``frequency_per_voxel, fsc_channel_0[, fsc_channel_1...]``),
    conical FSC maps (CSV ``phi1_deg, phi2_deg, resolution_per_voxel_channel_0[, ...]``,
    one row per direction, phi1 major), pose errors (CSV ``id, error_deg, axis_error_deg,
    in_plane_error_deg``), the
    registered volume (OME-TIFF) and the metrics (JSON).
    """

    #: Float metrics, in the order ``__str__`` and :meth:`getMetrics` use.
    FLOAT_METRICS = (
        "ssim",
        "psnr_db",
        "fsc_resolution_0143_per_voxel",
        "fsc_resolution_05_per_voxel",
        "fsc_resolution_0143_um",
        "fsc_resolution_05_um",
        "conical_resolution_best_per_voxel",
        "conical_resolution_worst_per_voxel",
        "registration_angle_deg",
        "registration_shift_um",
        "pose_error_median_deg",
        "pose_error_mean_deg",
        "pose_error_max_deg",
        "axis_error_median_deg",
        "in_plane_error_median_deg",
        "in_plane_resultant",
    )
    #: Integer numbers.
    INTEGER_METRICS = ("n_matched_particles", "symmetry", "n_channels")
    _FILES = ("fsc", "conicalFsc", "poseErrors", "aligned", "metrics")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in self.FLOAT_METRICS:
            setattr(self, name, pwobj.Float())
        for name in self.INTEGER_METRICS:
            setattr(self, name, pwobj.Integer())
        self._registration = Transform()
        self._voxelSize = pwobj.CsvList(pType=float)
        self._resolutionText = pwobj.String()
        for key in self._FILES:
            setattr(self, f"_{key}File", pwobj.String())

    # -- numbers ------------------------------------------------------------
    def getMetrics(self) -> dict:
        """``{name: value}`` of every number (None when not measured)."""
        names = self.FLOAT_METRICS + self.INTEGER_METRICS
        return {name: getattr(self, name).get() for name in names}

    def setMetrics(self, values: dict) -> None:
        """Set numbers by name; unknown names raise ValueError, non-finite floats become None."""
        for name, value in values.items():
            if name in self.FLOAT_METRICS:
                ok = value is not None and math.isfinite(float(value))
                getattr(self, name).set(float(value) if ok else None)
            elif name in self.INTEGER_METRICS:
                getattr(self, name).set(None if value is None else int(value))
            else:
                raise ValueError(f"VolumeComparison has no metric {name!r}; known: "
                                 f"{', '.join(self.FLOAT_METRICS + self.INTEGER_METRICS)}")

    def getResolutionText(self) -> str | None:
        """The verdict of the FSC at 0.143 of channel 0 as a user reads it: the resolution,
        or why there is none ("not reached below Nyquist (X µm): sample finer")."""
        return self._resolutionText.get()

    def setResolutionText(self, text: str | None) -> None:
        self._resolutionText.set(text)

    def getVoxelSize(self):
        """(z, y, x) voxel size in micrometres of the compared volumes, or None."""
        return tuple(self._voxelSize) if len(self._voxelSize) == 3 else None

    def setVoxelSize(self, voxelSize) -> None:
        self._voxelSize.set(list(_as_voxel_size(voxelSize)))

    def getRegistration(self) -> Transform:
        """The rigid transform (stored 4x4: xyz, µm) that maps the volume onto the reference."""
        return self._registration

    def setRegistration(self, matrix) -> None:
        self._registration.setMatrix(matrix)

    # -- files ----------------------------------------------------------------
    def _file(self, key):
        return getattr(self, f"_{key}File").get()

    def _setFile(self, key, path):
        getattr(self, f"_{key}File").set(None if path is None else str(path))

    def getFscFile(self):
        """CSV ``frequency_per_voxel, fsc_channel_0[, ...]``, or None."""
        return self._file("fsc")

    def setFscFile(self, path) -> None:
        self._setFile("fsc", path)

    def getConicalFscFile(self):
        """CSV ``phi1_deg, phi2_deg, resolution_per_voxel_channel_0[, ...]``, or None."""
        return self._file("conicalFsc")

    def setConicalFscFile(self, path) -> None:
        self._setFile("conicalFsc", path)

    def getPoseErrorsFile(self):
        """CSV ``id, error_deg``, or None when no particle poses were compared."""
        return self._file("poseErrors")

    def setPoseErrorsFile(self, path) -> None:
        self._setFile("poseErrors", path)

    def getAlignedFile(self):
        """The volume registered onto the reference (OME-TIFF), or None."""
        return self._file("aligned")

    def setAlignedFile(self, path) -> None:
        self._setFile("aligned", path)

    def getMetricsFile(self):
        """JSON with every number, per channel."""
        return self._file("metrics")

    def setMetricsFile(self, path) -> None:
        self._setFile("metrics", path)

    def getFiles(self) -> set:
        return {f for f in (self._file(k) for k in self._FILES) if f}

    # -- text -----------------------------------------------------------------
    def __str__(self):
        m = self.getMetrics()

        def num(name, fmt, unit=""):
            value = m[name]
            return "n/a" if value is None else f"{value:{fmt}}{unit}"

        parts = [f"SSIM {num('ssim', '.4f')}", f"PSNR {num('psnr_db', '.2f', ' dB')}"]
        for key, label in (("0143", "0.143"), ("05", "0.5")):
            per_voxel = m[f"fsc_resolution_{key}_per_voxel"]
            if per_voxel is not None:
                um = m[f"fsc_resolution_{key}_um"]
                parts.append(f"FSC {label}: {per_voxel:.3f} 1/voxel"
                             + (f" ({um:.3g} µm)" if um is not None else ""))
            elif key == "0143" and self.getResolutionText():
                parts.append(f"FSC {label}: {self.getResolutionText()}")
        if m["conical_resolution_worst_per_voxel"] is not None:
            parts.append(f"conical FSC {num('conical_resolution_worst_per_voxel', '.3f')}"
                         f"-{num('conical_resolution_best_per_voxel', '.3f')} 1/voxel")
        if m["registration_angle_deg"] is not None:
            parts.append(f"registered by {num('registration_angle_deg', '.1f', ' deg')}, "
                         f"{num('registration_shift_um', '.3g', ' µm')}")
        if m["pose_error_median_deg"] is not None:
            parts.append(f"pose error median {num('pose_error_median_deg', '.2f', ' deg')} "
                         f"(max {num('pose_error_max_deg', '.1f', ' deg')}, "
                         f"{m['n_matched_particles']} particles)")
        if m["in_plane_resultant"] is not None and m["symmetry"] and m["symmetry"] > 1:
            parts.append(f"axis error median {num('axis_error_median_deg', '.2f', ' deg')}, "
                         f"in-plane {num('in_plane_error_median_deg', '.2f', ' deg')} "
                         f"(resultant {num('in_plane_resultant', '.2f')})")
        if m["symmetry"] and m["symmetry"] > 1:
            parts.append(f"C{m['symmetry']}")
        return f"{self.getClassName()}: " + ", ".join(parts)
