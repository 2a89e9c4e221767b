"""Human names of what spfluo shows: metrics (with units and a one-line explanation),
objects and figures.

The one table that the report, the viewers' titles and the command line read, so a
metric is named and explained the same way everywhere.  Keys are the names the
objects store (:attr:`spfluo.objects.VolumeComparison.FLOAT_METRICS`...).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MetricLabel", "METRICS", "metric_label", "format_metric", "object_name",
           "figure_label", "FIGURE_LABELS", "OBJECT_NAMES"]


@dataclass(frozen=True)
class MetricLabel:
    """How a stored number is shown.

    Attributes
    ----------
    label : str
        Name with its unit, e.g. ``"FSC resolution at 0.143 (µm)"``.
    explanation : str
        One sentence for a biologist: what it measures and which way is better.
    fmt : str
        Format of the value (``format(value, fmt)``).
    """

    label: str
    explanation: str
    fmt: str = ".4g"


_FSC = ("Fourier shell correlation between the volume and the reference: the finest detail "
        "at which they still agree")
_NYQUIST = "0.5 1/voxel is the finest a grid can hold (Nyquist)"

#: Every number that spfluo stores and reports, by its stored name.
METRICS: dict[str, MetricLabel] = {
    "ssim": MetricLabel(
        "SSIM (0 to 1)",
        "Structural similarity with the reference (local means, contrasts and structures "
        "compared, Wang et al. 2004): 1 is identical, above 0.9 is very close.", ".3f"),
    "psnr_db": MetricLabel(
        "PSNR (dB)",
        "Peak signal-to-noise ratio of the volume against the reference, after fitting its "
        "intensities: higher is better; +6 dB halves the error.", ".1f"),
    "fsc_resolution_0143_um": MetricLabel(
        "FSC resolution at 0.143 (µm)",
        f"{_FSC}, where the FSC falls below 0.143 (Rosenthal and Henderson 2003): smaller "
        "is better.", ".3g"),
    "fsc_resolution_0143_per_voxel": MetricLabel(
        "FSC resolution at 0.143 (1/voxel)",
        f"The same resolution as a spatial frequency: higher is better; {_NYQUIST}.", ".3f"),
    "fsc_resolution_05_um": MetricLabel(
        "FSC resolution at 0.5 (µm)",
        f"{_FSC}, where the FSC falls below 0.5 (a stricter threshold): smaller is better.",
        ".3g"),
    "fsc_resolution_05_per_voxel": MetricLabel(
        "FSC resolution at 0.5 (1/voxel)",
        f"The same as a spatial frequency: higher is better; {_NYQUIST}.", ".3f"),
    "conical_resolution_best_per_voxel": MetricLabel(
        "conical FSC, best direction (1/voxel)",
        "Resolution (0.143) in the best resolved direction, usually lateral (x, y): "
        f"higher is better; {_NYQUIST}.", ".3f"),
    "conical_resolution_worst_per_voxel": MetricLabel(
        "conical FSC, worst direction (1/voxel)",
        "Resolution (0.143) in the worst resolved direction, usually along the optical axis "
        "z: close to the best direction means an isotropic volume.", ".3f"),
    "registration_angle_deg": MetricLabel(
        "registration rotation (deg)",
        "Rotation that superimposes the volume on the reference before the comparison "
        "(modulo the symmetry). Not a quality measure: a reconstruction without a template "
        "has an arbitrary orientation, and about 180° means it came out upside down.", ".1f"),
    "registration_shift_um": MetricLabel(
        "registration shift (µm)",
        "Shift that superimposes the volume on the reference; not a quality measure.", ".3g"),
    "pose_error_median_deg": MetricLabel(
        "pose error, median (deg)",
        "Median angle between each particle's estimated orientation and its true one, after "
        "the one global rotation that best aligns them (modulo the symmetry): smaller is "
        "better; 0 is perfect.", ".2f"),
    "pose_error_mean_deg": MetricLabel(
        "pose error, mean (deg)",
        "Mean of the same angles; a mean far above the median means a few particles are "
        "badly oriented.", ".2f"),
    "pose_error_max_deg": MetricLabel(
        "pose error, worst particle (deg)",
        "The largest of the same angles.", ".1f"),
    "axis_error_median_deg": MetricLabel(
        "symmetry axis error, median (deg)",
        "Cn particles: median angle between each particle's estimated symmetry axis and its "
        "true one, after the same global rotation; above 90 means upside down.", ".2f"),
    "in_plane_error_median_deg": MetricLabel(
        "in-plane error, median (deg)",
        "Cn particles: median error of the rotation about the symmetry axis, modulo 360/n "
        "(chance is about 90/n); a volume folded by Cn can look right while it is at chance.",
        ".2f"),
    "in_plane_resultant": MetricLabel(
        "in-plane coherence (0 to 1)",
        "Cn particles: n-fold mean resultant length of the in-plane residuals: 1 when the "
        "rotations about the axis agree with the truth up to one common offset, near 0 when "
        "they are at chance.", ".3f"),
    "n_matched_particles": MetricLabel(
        "particles compared", "Particles whose estimated and true poses were compared.", "d"),
    "symmetry": MetricLabel(
        "symmetry order n (Cn)",
        "Orientations that differ by a turn of 360°/n about the symmetry axis count as "
        "equal.", "d"),
    "n_channels": MetricLabel("channels", "Channels compared (the numbers are channel 0's).",
                              "d"),
    "half_map_resolution_um": MetricLabel(
        "half-map FSC resolution at 0.143 (µm)",
        "Gold-standard resolution: the particles are split in two halves reconstructed "
        "separately, and their FSC falls below 0.143 at this size; smaller is better. It "
        "needs no reference.", ".3g"),
    "fsc_resolution_text": MetricLabel(
        "FSC resolution at 0.143",
        f"{_FSC}: the FSC never falls below 0.143 inside the box, so no resolution is "
        "measured; the text says what to do.", "s"),
    "half_map_resolution_text": MetricLabel(
        "half-map FSC at 0.143 (masked, corrected)",
        "The verdict of the gold-standard FSC: a resolution only where the masked, "
        "noise-substitution corrected FSC crosses 0.143 below Nyquist and the optical "
        "cutoff; otherwise why there is none.", "s"),
    "optical_cutoff_um": MetricLabel(
        "optical cutoff of the PSF (µm)",
        "The finest period the PSF passes in the lateral plane; no resolution is claimed "
        "beyond it.", ".3g"),
}


def metric_label(key: str) -> MetricLabel:
    """The label of the stored number ``key``; an unknown key is shown as it is."""
    return METRICS.get(key) or MetricLabel(key, "", ".4g")


def format_metric(key: str, value) -> str:
    """``value`` formatted as the metric ``key`` is (``"-"`` for None)."""
    if value is None:
        return "-"
    fmt = metric_label(key).fmt
    try:
        return format(int(value) if fmt == "d" else float(value), fmt)
    except (TypeError, ValueError):
        return str(value)


#: What an object of each class is called in titles.
OBJECT_NAMES = {
    "PSFModel": "PSF",
    "Volume": "volume",
    "Particle": "particle",
    "FluoImage": "image",
    "SetOfFluoImages": "images",
    "SetOfVolumes": "volumes",
    "SetOfParticles": "particles",
    "SetOfCoordinates3D": "coordinates",
    "VolumeComparison": "comparison with a reference",
}


def object_name(obj) -> str:
    """``"PSF psf.ome.tif"``, ``"volume"``...: the kind of ``obj`` and its image id if any."""
    cls = type(obj).__name__
    kind = OBJECT_NAMES.get(cls, cls)
    image_id = obj.getImageId() if hasattr(obj, "getImageId") else None
    return f"{kind} {image_id}" if image_id else kind


#: Tab and caption labels of the figures, by the name their maker gives them (a name
#: that ends with ``_<suffix>`` takes the label of its stem followed by the suffix).
FIGURE_LABELS = {
    "slices": "slices and projections",
    "isosurface": "isosurface",
    "grid": "particles",
    "half_map_fsc": "half-map FSC",
    "fourier_coverage": "Fourier coverage",
    "fsc": "FSC against the reference",
    "conical_fsc": "conical FSC",
    "pose_errors": "pose errors",
    "orientations": "orientations",
    "picks": "picks in",
    "scores": "pick scores",
    "by_score": "particles by score",
    "refine_convergence": "refinement convergence",
    "refine_pose_changes": "pose changes",
    "abinitio_energy": "ab initio energy",
    "abinitio_psi_marginals": "in-plane angle likelihoods",
    "abinitio_direction_map": "direction likelihoods",
    "abinitio_orientations": "orientations",
}


def figure_label(name: str) -> str:
    """The human label of a figure from its maker's name (``"picks_field_0"`` ->
    ``"picks in field_0"``, ``"slices_1"`` -> ``"slices and projections 1"``)."""
    if name in FIGURE_LABELS:
        return FIGURE_LABELS[name]
    for stem in sorted(FIGURE_LABELS, key=len, reverse=True):
        if name.startswith(stem + "_"):
            return f"{FIGURE_LABELS[stem]} {name[len(stem) + 1:]}"
    return name.replace("_", " ")
