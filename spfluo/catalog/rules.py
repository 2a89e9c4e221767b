"""What the catalog recognises in a project: metrics, datasets, reconstructions, data files.

The one place to edit when a new protocol stores a new kind of result:

- :data:`METRIC_KINDS` maps attribute names of output objects to metric kinds
  (any ``Float``/``Integer`` attribute of an output, or a scalar output, whose
  name matches is catalogued; ``Volume.getResolution()`` too);
- :data:`DATASET_CLASSES`: outputs of a run with no input that define a dataset;
- :data:`RECONSTRUCTION_CLASSES`: outputs that make a run with inputs a
  reconstruction (a simulation also outputs its ground-truth Volume, but
  has no input).

Pure Python: no pyworkflow, no SQLAlchemy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "MetricKind",
    "METRIC_KINDS",
    "DATASET_CLASSES",
    "RECONSTRUCTION_CLASSES",
    "metric_kind",
    "metric_unit",
    "is_dataset_class",
    "is_reconstruction_class",
    "GLOB_CHARS",
]


@dataclass(frozen=True)
class MetricKind:
    """A kind of metric: the name pattern that finds it and which way is better.

    Attributes
    ----------
    kind : str
        Canonical name stored in ``metrics.kind`` (``resolution``, ``ssim``...).
    pattern : str
        Regular expression searched (case-insensitively) in the attribute
        name with its leading underscores removed.
    lower_is_better : bool
        True for resolutions (micrometres) and errors.
    unit : str or None
        Unit when the name does not carry one (see :func:`metric_unit`).
    """

    kind: str
    pattern: str
    lower_is_better: bool
    unit: str | None = None


#: Attribute-name patterns of metrics, tried in order (first match wins).
METRIC_KINDS: tuple[MetricKind, ...] = (
    # resolution as a frequency (cycles per voxel or per µm: higher is better), e.g.
    # VolumeComparison.fsc_resolution_0143_per_voxel, conical_resolution_worst_per_voxel
    MetricKind("resolution_frequency", r"resolution.*per_(voxel|um)$", False, "1/voxel"),
    # resolution as a length (µm: lower is better): Volume.resolution, ..._resolution_0143_um
    MetricKind("resolution", r"resolution", True, "µm"),
    MetricKind("ssim", r"ssim", False, None),
    MetricKind("psnr", r"psnr", False, "dB"),
    MetricKind("fsc", r"fsc", False, None),
    MetricKind("pose_error", r"pose_?err|angular_?err|angle_?err", True, "deg"),
    MetricKind("f1", r"(^|_)f1($|_)|f1_?score", False, None),
)

#: Unit suffixes of metric names (``..._deg``, ``psnr_db``...), as the conventions write them.
_UNIT_SUFFIXES = {
    "deg": "deg", "db": "dB", "um": "µm", "nm": "nm", "per_voxel": "1/voxel",
    "per_um": "1/µm", "voxel": "voxel", "voxels": "voxel", "s": "s",
}

#: Output classes of a run without inputs that make that run a dataset (imported or simulated data).
DATASET_CLASSES: frozenset[str] = frozenset({
    "SetOfFluoImages", "SetOfParticles", "FluoImage", "Particle",
})

#: Output classes that make a run a reconstruction (when it has an input run).
RECONSTRUCTION_CLASSES: frozenset[str] = frozenset({"Volume", "SetOfVolumes"})

#: Characters that make a string parameter a file pattern.
GLOB_CHARS = "*?["


def metric_kind(name: str) -> MetricKind | None:
    """The :class:`MetricKind` of an attribute name, or None when it is no metric.

    >>> metric_kind("_resolution").kind
    'resolution'
    >>> metric_kind("voxelSize") is None
    True
    """
    bare = name.lstrip("_")
    for mk in METRIC_KINDS:
        if re.search(mk.pattern, bare, flags=re.IGNORECASE):
            return mk
    return None


def metric_unit(name: str, kind: MetricKind) -> str | None:
    """Unit of a metric: from its name's suffix (``_deg``, ``_db``...), else the kind's."""
    bare = name.lstrip("_").lower()
    for suffix in sorted(_UNIT_SUFFIXES, key=len, reverse=True):
        if bare.endswith("_" + suffix):
            return _UNIT_SUFFIXES[suffix]
    return kind.unit


def is_dataset_class(class_name: str) -> bool:
    return class_name in DATASET_CLASSES


def is_reconstruction_class(class_name: str) -> bool:
    return class_name in RECONSTRUCTION_CLASSES
