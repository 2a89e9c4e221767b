"""Dataset folders for ``spfluo batch``: the files a dataset holds, the template values they give.

A dataset is one folder; ``spfluo batch`` makes one project of it by filling a
workflow template's fields (``~Title|default|type|alias~``) from the folder.
Files found by name give the values of these aliases (every one is optional;
a template uses those it has fields for)::

    DATASET/
      fields/*         -> fields      fields of view (3D TIFF, OME-TIFF, MRC; only images)
      particles/*      -> particles   extracted particles (cubic boxes, isotropic voxels)
      poses.csv|.star  -> poses       poses of the particles (optional)
      psf.tif          -> psf         the PSF (also psf.ome.tif, psf.tiff, psf.mrc)
      examples.csv     -> examples    a few example coordinates: image_id, x, y, z in µm
      reference.tif    -> reference   a reference volume, e.g. the ground truth (optional)
      dataset.json                    values of any other field, by alias (optional)

The folder itself gives ``dataset`` (its absolute path) and ``name`` (its name).
``dataset.json`` is a JSON object whose keys are template aliases and whose
values are numbers, booleans or strings, e.g.::

    {"voxel_size_xy": 0.04, "voxel_size_z": 0.12, "diameter": 0.8, "symmetry": 9}

Its file-valued keys (those above) may be relative to the dataset folder. Giving
``voxel_size_xy`` / ``voxel_size_z`` sets the voxel size of every imported file
(``voxel_source`` = 1, "given") and, unless they are given too, the same values
for the PSF (``psf_voxel_*``) and the reference (``reference_voxel_*``).

This module reads files only; it never imports pyworkflow.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DATASET_FILE",
    "FILE_ALIASES",
    "Dataset",
    "read_dataset",
    "project_name",
]

#: Optional file of a dataset folder with the values of template fields, by alias.
DATASET_FILE = "dataset.json"

_VOLUME_EXTS = (".ome.tif", ".ome.tiff", ".tif", ".tiff", ".mrc")

#: Aliases whose values are files or file patterns (relative paths in dataset.json are
#: resolved against the dataset folder).
FILE_ALIASES = ("fields", "particles", "poses", "psf", "examples", "reference")

#: Prefixes of the aliases that receive ``voxel_size_xy`` / ``voxel_size_z`` by default.
_VOXEL_PREFIXES = ("", "psf_", "reference_")


@dataclass(frozen=True)
class Dataset:
    """A dataset folder and the template values it gives.

    Attributes
    ----------
    name : str
        The folder name.
    path : Path
        Absolute path of the folder.
    values : dict of str to str
        Template values by alias (text, as the engine's template fields take them).
    files : dict of str to str
        The subset of ``values`` found as files in the folder, by alias.
    """

    name: str
    path: Path
    values: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)


def _first_existing(folder: Path, stem: str, exts) -> Path | None:
    for ext in exts:
        candidate = folder / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_file() and not p.name.startswith(".")
                                   for p in folder.iterdir())


def _as_text(key: str, value, path: Path) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path}: value of {key!r} is {value}; give a finite number.")
        return repr(value)
    if isinstance(value, str):
        return value
    raise ValueError(f"{path}: value of {key!r} is {type(value).__name__} {value!r}; give a "
                     "number, a boolean or a string (one value per template field alias).")


def _read_overrides(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"Cannot read {path}: {exc}; it must be a JSON object such as "
                         '{"voxel_size_xy": 0.1, "symmetry": 9}.') from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}; it must be a JSON object "
                         'of template values by alias, such as {"symmetry": 9}.')
    return {str(k): _as_text(str(k), v, path) for k, v in data.items()}


def read_dataset(path: str | os.PathLike) -> Dataset:
    """Read a dataset folder: the files found by name and ``dataset.json``.

    Parameters
    ----------
    path : str or path-like
        The dataset folder.

    Returns
    -------
    Dataset
        Its name, absolute path and template values by alias.

    Raises
    ------
    ValueError
        When ``path`` is not a folder, or ``dataset.json`` is not a JSON object of
        scalar values.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ValueError(f"Dataset {str(path)!r} is not a folder: give the folder that holds "
                         "fields/ or particles/, psf.tif, ... (see `spfluo batch --help`).")
    folder = folder.resolve()
    files: dict[str, str] = {}
    for alias in ("fields", "particles"):
        if _has_files(folder / alias):
            files[alias] = str(folder / alias / "*")
    for alias, exts in (("psf", _VOLUME_EXTS), ("reference", _VOLUME_EXTS),
                        ("examples", (".csv",)), ("poses", (".csv", ".star"))):
        found = _first_existing(folder, alias, exts)
        if found is not None:
            files[alias] = str(found)

    values = {"dataset": str(folder), "name": folder.name, **files}
    overrides_path = folder / DATASET_FILE
    overrides = _read_overrides(overrides_path) if overrides_path.is_file() else {}
    for alias in FILE_ALIASES:
        text = overrides.get(alias)
        if text and not os.path.isabs(os.path.expanduser(text)):
            overrides[alias] = str(folder / text)
    given = set(overrides)
    values.update(overrides)
    if given & {"voxel_size_xy", "voxel_size_z"}:
        for prefix in _VOXEL_PREFIXES:
            if f"{prefix}voxel_source" not in given:
                values[f"{prefix}voxel_source"] = "1"
            for axis in ("xy", "z"):
                key = f"{prefix}voxel_size_{axis}"
                if key not in given and f"voxel_size_{axis}" in given:
                    values[key] = overrides[f"voxel_size_{axis}"]
    return Dataset(name=folder.name, path=folder, values=values, files=files)


def project_name(prefix: str, dataset_name: str) -> str:
    """The project name of a dataset: ``PREFIX-NAME`` with characters outside
    ``[A-Za-z0-9_.-]`` replaced by ``_``."""
    name = f"{prefix}-{dataset_name}" if prefix else dataset_name
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    if not re.match(r"[A-Za-z0-9]", name):
        name = "d" + name
    return name
