"""STAR files (RELION 3.1 style) and poses in them.

The reader and writer handle the subset of STAR that RELION writes: ``data_NAME`` blocks
holding either a ``loop_`` table (``_rlnLabel #k`` headers, then one row per line, or rows
split over lines) or ``_rlnLabel value`` pairs; ``#`` comments; values quoted with ``'``
or ``"`` when they contain spaces. In memory a file is a dict of block name (the text
after ``data_``, e.g. ``"optics"``, ``"particles"``, ``""`` for a bare ``data_``) to a dict
of label (without the leading underscore, e.g. ``"rlnAngleRot"``) to a 1-D array: int64
when every value is an integer, float64 when every value is a number, str otherwise. A
block of ``_label value`` pairs reads as a one-row table.

Poses (:func:`write_poses_star`, :func:`read_poses_star`) use RELION's convention, the one
:mod:`spfluo.algorithms.geometry` defines: ``rlnAngleRot/Tilt/Psi`` are ZYZ Euler angles in
degrees of the stored (xyz-frame) rotation, and ``rlnOriginX/Y/ZAngst = -t_x, -t_y, -t_z``
in Angstrom (RELION re-centres a particle with ``coordinate - origin``; 1 um = 1e4 A).
Particle ids go to ``rlnImageId``; the voxel size to ``rlnImagePixelSize`` (Angstrom) of
the optics block.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spfluo.algorithms.geometry import euler_from_matrix, matrix_from_euler
from spfluo.io._text import format_number, read_text_file
from spfluo.io.atomic import atomic_write_path
from spfluo.io.poses import PoseTable

__all__ = ["read_star", "write_star", "read_poses_star", "write_poses_star"]

_UM_TO_ANGSTROM = 1e4
_INT_RE = re.compile(r"^[+-]?\d+$")
_ANGLES = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
_ORIGINS_A = ("rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst")
_ORIGINS_PX = ("rlnOriginX", "rlnOriginY", "rlnOriginZ")
_RESERVED_WORDS = ("loop_", "stop_", "global_")


@dataclass(frozen=True)
class _Token:
    text: str
    line: int
    quoted: bool

    def is_keyword(self) -> bool:
        low = self.text.lower()
        return not self.quoted and (low.startswith(("data_", "save_")) or low in _RESERVED_WORDS)

    def is_label(self) -> bool:
        return not self.quoted and self.text.startswith("_")


@dataclass
class _Block:
    labels: list[str]
    values: dict[str, list[_Token]]
    row_lines: list[int]


def _tokenize(text: str, path: Path):
    for lineno, line in enumerate(text.splitlines(), start=1):
        i, n = 0, len(line)
        while i < n:
            ch = line[i]
            if ch.isspace():
                i += 1
            elif ch == "#":
                break
            elif ch in "'\"":
                # A STAR quote closes at the same quote character followed by a blank or the
                # end of the line, so "it's" needs no escaping inside double quotes.
                j = i + 1
                while True:
                    k = line.find(ch, j)
                    if k == -1:
                        raise ValueError(f"{str(path)!r}, line {lineno}: unterminated quoted "
                                         f"value starting with {line[i:i + 20]!r}; close the quote")
                    if k + 1 == n or line[k + 1].isspace():
                        break
                    j = k + 1
                yield _Token(line[i + 1:k], lineno, True)
                i = k + 1
            else:
                j = i
                while j < n and not line[j].isspace():
                    j += 1
                yield _Token(line[i:j], lineno, False)
                i = j


def _parse(path: Path) -> dict[str, _Block]:
    text = read_text_file(path, what="STAR", kind="STAR")
    tokens = list(_tokenize(text, path))
    where = repr(str(path))
    blocks: dict[str, _Block] = {}
    block: _Block | None = None
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        low = tok.text.lower()
        if tok.is_keyword() and low.startswith("data_"):
            name = tok.text[5:]
            if name in blocks:
                raise ValueError(f"{where}, line {tok.line}: block data_{name} appears twice; "
                                 "merge or rename one of them")
            block = blocks[name] = _Block([], {}, [])
            i += 1
            continue
        if block is None:
            raise ValueError(f"{where}, line {tok.line}: {tok.text!r} before any data_ block; "
                             "a STAR file starts its content with data_NAME")
        if tok.is_keyword() and low == "stop_":
            i += 1
            continue
        if tok.is_keyword() and low == "loop_":
            if block.values:
                raise ValueError(f"{where}, line {tok.line}: a second table (or a table after "
                                 "_label value pairs) in the same block; put each loop_ in its "
                                 "own data_ block")
            i += 1
            labels: list[str] = []
            while i < len(tokens) and tokens[i].is_label():
                labels.append(tokens[i].text[1:])
                i += 1
            if not labels:
                raise ValueError(f"{where}, line {tok.line}: loop_ without _labels; list the "
                                 "column labels after loop_")
            if len(set(labels)) != len(labels):
                dup = next(lab for lab in labels if labels.count(lab) > 1)
                raise ValueError(f"{where}, line {tok.line}: the label _{dup} appears twice in "
                                 "one loop; keep one")
            cells: list[_Token] = []
            while i < len(tokens) and not (tokens[i].is_keyword() or tokens[i].is_label()):
                cells.append(tokens[i])
                i += 1
            if len(cells) % len(labels):
                last = cells[-1].line
                raise ValueError(f"{where}, line {last}: the table ends with an incomplete row "
                                 f"({len(cells)} values for {len(labels)} columns); every row "
                                 "needs one value per label")
            block.labels = labels
            block.values = {lab: cells[k::len(labels)] for k, lab in enumerate(labels)}
            block.row_lines = [cells[r].line for r in range(0, len(cells), len(labels))]
            continue
        if tok.is_label():
            if i + 1 >= len(tokens) or tokens[i + 1].is_keyword() or tokens[i + 1].is_label():
                raise ValueError(f"{where}, line {tok.line}: {tok.text} has no value; write "
                                 f"'{tok.text} VALUE'")
            if block.labels:
                raise ValueError(f"{where}, line {tok.line}: {tok.text} mixes a single value "
                                 "with a table in one block; put it in its own data_ block")
            label = tok.text[1:]
            if label in block.values:
                raise ValueError(f"{where}, line {tok.line}: {tok.text} given twice; keep one")
            block.values[label] = [tokens[i + 1]]
            block.row_lines = [tok.line]
            i += 2
            continue
        raise ValueError(f"{where}, line {tok.line}: unexpected value {tok.text!r} outside a "
                         "table; values follow a loop_ header or a _label")
    return blocks


def _column(tokens: Sequence[_Token]) -> np.ndarray:
    texts = [t.text for t in tokens]
    if texts and not any(t.quoted for t in tokens):
        if all(_INT_RE.match(s) for s in texts):
            return np.array([int(s) for s in texts], dtype=np.int64)
        try:
            return np.array([float(s) for s in texts], dtype=np.float64)
        except ValueError:
            pass
    return np.array(texts, dtype=str)


def read_star(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """Read a STAR file.

    Parameters
    ----------
    path : str or path-like
        The ``.star`` file.

    Returns
    -------
    dict of str to dict of str to ndarray
        Block name (after ``data_``) -> label (without ``_``) -> column of shape
        ``(n_rows,)``: int64, float64 or str. Blocks and labels keep their file order.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not valid STAR (the message names the file and the line).
    """
    blocks = _parse(Path(path))
    return {name: {lab: _column(toks) for lab, toks in block.values.items()}
            for name, block in blocks.items()}


def _format_cell(value: Any, where: str) -> str:
    number = format_number(value)
    if number is not None:
        return number
    text = str(value)
    if "\n" in text or "\r" in text:
        raise ValueError(f"{where}: value {text!r} contains a line break; STAR values are on "
                         "one line")
    low = text.lower()
    needs_quotes = (not text or any(c.isspace() for c in text) or text[0] in "_#'\""
                    or low.startswith(("data_", "save_")) or low in _RESERVED_WORDS)
    if not needs_quotes:
        return text
    for quote in ('"', "'"):
        # the closing quote must be the only one followed by a blank
        if not any(text[k] == quote and (k + 1 == len(text) or text[k + 1].isspace())
                   for k in range(len(text))):
            return f"{quote}{text}{quote}"
    raise ValueError(f"{where}: value {text!r} cannot be quoted in STAR (it contains both "
                     "quote characters before blanks); change the value")


def write_star(path: str | os.PathLike, blocks: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write tables to a STAR file (RELION 3.1 layout), atomically.

    Parameters
    ----------
    path : str or path-like
        Destination ``.star`` file; its folder must exist.
    blocks : dict of str to dict of str to array_like
        Block name (written as ``data_NAME``) -> label (``_`` is added if missing) ->
        column values, all columns of a block of the same length. Each block is written
        as a ``loop_`` table; floats with their shortest exact text, strings quoted where
        needed.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If a block name or label contains blanks, a block has no column or columns of
        different lengths, or a value cannot be written on one line.
    """
    path = Path(path)
    if not isinstance(blocks, Mapping):
        raise ValueError(f"blocks must be a dict of block name -> dict of label -> values, got "
                         f"{type(blocks).__name__}")
    parts = ["", "# version 30001", ""]
    for name, columns in blocks.items():
        name = str(name)
        if any(c.isspace() for c in name):
            raise ValueError(f"block name {name!r} contains blanks; use a name without spaces")
        if not isinstance(columns, Mapping) or not columns:
            raise ValueError(f"block {name!r} must be a non-empty dict of label -> values")
        labels = []
        cols = []
        for label, values in columns.items():
            label = str(label).lstrip("_")
            if not label or any(c.isspace() for c in label):
                raise ValueError(f"block {name!r}: label {label!r} is empty or contains blanks")
            array = np.asarray(values)
            if array.ndim == 0:
                array = array.reshape(1)
            if array.ndim != 1:
                raise ValueError(f"block {name!r}, label {label!r}: values must be 1-D, got "
                                 f"shape {array.shape}")
            labels.append(label)
            cols.append([_format_cell(v, f"block {name!r}, label {label!r}")
                         for v in array.tolist()])
        lengths = {len(c) for c in cols}
        if len(lengths) != 1:
            raise ValueError(f"block {name!r}: columns have different lengths "
                             f"{dict(zip(labels, map(len, cols)))}; give every label one value "
                             "per row")
        parts += [f"data_{name}", "", "loop_"]
        parts += [f"_{label} #{k}" for k, label in enumerate(labels, start=1)]
        widths = [max((len(v) for v in col), default=0) for col in cols]
        for r in range(lengths.pop()):
            parts.append(" ".join(col[r].rjust(w) for col, w in zip(cols, widths)))
        parts.append("")
    with atomic_write_path(path) as tmp:
        tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


def _isotropic_size(voxel_size_um: Any) -> float:
    try:
        values = [float(v) for v in np.atleast_1d(np.asarray(voxel_size_um, dtype=float))]
    except (TypeError, ValueError):
        values = []
    if len(values) not in (1, 3) or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError("voxel_size_um must be a positive number or a (z, y, x) tuple of "
                         f"positive numbers in micrometres, got {voxel_size_um!r}")
    if max(values) - min(values) > 1e-6 * max(values):
        raise ValueError(f"voxel_size_um {tuple(values)} is anisotropic; RELION STAR files hold "
                         "one pixel size: resample the particles to isotropic voxels first")
    return values[0]


def write_poses_star(path: str | os.PathLike, ids: Sequence[int] | np.ndarray,
                     matrices: np.ndarray, *, voxel_size_um: float | Sequence[float],
                     image_names: Sequence[str] | None = None, image_size: int | None = None,
                     extra: Mapping[str, Sequence[Any]] | None = None) -> Path:
    """Write stored poses to a RELION 3.1 particles STAR file, atomically.

    Parameters
    ----------
    path : str or path-like
        Destination ``.star`` file; its folder must exist.
    ids : array_like of int, shape (N,)
        Unique particle identifiers (written as ``rlnImageId``).
    matrices : ndarray, shape (N, 4, 4)
        Stored poses: xyz order, translations in micrometres.
    voxel_size_um : float or tuple of 3 floats
        Isotropic voxel size of the particles in micrometres (``rlnImagePixelSize`` in
        Angstrom in the optics block).
    image_names : sequence of str, shape (N,), optional
        Particle image files (``rlnImageName``).
    image_size : int, optional
        Side of the particle boxes in voxels (``rlnImageSize`` of the optics block).
    extra : dict of str to array_like, shape (N,), optional
        More particle columns by RELION label (e.g. ``rlnMicrographName``,
        ``rlnCoordinateX``).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If the poses are invalid (see :class:`~spfluo.io.poses.PoseTable`), the voxel size
        is anisotropic or not positive, or ``image_names`` has the wrong length.
    """
    pixel_um = _isotropic_size(voxel_size_um)
    table = PoseTable(ids=np.asarray(ids), matrices=matrices)
    n = len(table)
    particles: dict[str, Any] = {}
    if image_names is not None:
        if isinstance(image_names, str):
            raise ValueError("image_names must be a sequence of file names, one per pose, got a "
                             "single string")
        names = [str(s) for s in image_names]
        if len(names) != n:
            raise ValueError(f"image_names has {len(names)} names for {n} poses; give one per pose")
        particles["rlnImageName"] = names
    angles = (euler_from_matrix(table.rotations, degrees=True, frame="xyz") if n
              else np.zeros((0, 3)))
    particles["rlnImageId"] = table.ids
    for k, label in enumerate(_ANGLES):
        particles[label] = angles[:, k]
    origins = -table.translations_um * _UM_TO_ANGSTROM
    for k, label in enumerate(_ORIGINS_A):
        particles[label] = origins[:, k]
    particles["rlnOpticsGroup"] = np.ones(n, dtype=np.int64)
    for label, values in (extra or {}).items():
        if label in particles or len(values) != n:
            raise ValueError(f"extra column {label!r} is already written or has {len(values)} "
                             f"values for {n} poses")
        particles[label] = values
    optics = {
        "rlnOpticsGroup": [1],
        "rlnOpticsGroupName": ["opticsGroup1"],
        "rlnImagePixelSize": [pixel_um * _UM_TO_ANGSTROM],
        "rlnImageDimensionality": [3],
    }
    if image_size is not None:
        if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) \
                or image_size < 1:
            raise ValueError(f"image_size must be a positive number of voxels, got "
                             f"{image_size!r}")
        optics["rlnImageSize"] = [int(image_size)]
    return write_star(path, {"optics": optics, "particles": particles})


def _numeric(block: _Block, label: str, where: str) -> np.ndarray:
    out = np.empty(len(block.values[label]))
    for r, tok in enumerate(block.values[label]):
        try:
            value = float(tok.text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(f"{where}, line {tok.line}: _{label} is {tok.text!r}; it must be a "
                             "finite number: fix or remove this particle")
        out[r] = value
    return out


def read_poses_star(path: str | os.PathLike) -> PoseTable:
    """Read poses from a RELION particles STAR file.

    Parameters
    ----------
    path : str or path-like
        A STAR file with a ``data_particles`` block (or a single ``data_`` block, RELION
        3.0 style) holding ``rlnAngleRot``, ``rlnAngleTilt``, ``rlnAnglePsi`` (degrees) and
        optionally ``rlnOriginX/Y/ZAngst`` (Angstrom; missing ones are 0). RELION 3.0
        ``rlnOriginX/Y/Z`` (pixels) are converted with the ``rlnImagePixelSize`` of the
        particle's optics group.

    Returns
    -------
    PoseTable
        ``ids`` from ``rlnImageId`` (1..N when absent); ``matrices`` in xyz order with
        translations ``t = -origin`` in micrometres; the other particle columns (e.g.
        ``rlnImageName``) in ``extra`` under their label.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not valid STAR, has no particles block or no angle columns, or holds
        non-numeric/NaN angles or origins or repeated ids (naming the file and the line).
    """
    path = Path(path)
    blocks = _parse(path)
    where = repr(str(path))
    if "particles" in blocks:
        block = blocks["particles"]
    elif "" in blocks:
        block = blocks[""]
    else:
        raise ValueError(f"{where} has no data_particles block (blocks: "
                         f"{', '.join('data_' + b for b in blocks) or 'none'}); give a RELION "
                         "particles STAR file")
    missing = [lab for lab in _ANGLES if lab not in block.values]
    if missing:
        listed = ", ".join("_" + m for m in missing)
        raise ValueError(f"{where}: the particles table has no {listed}; poses need "
                         "rlnAngleRot, rlnAngleTilt and rlnAnglePsi (degrees)")
    n = len(block.row_lines)
    angles = np.stack([_numeric(block, lab, where) for lab in _ANGLES], axis=-1)
    origins_a = np.zeros((n, 3))
    if any(lab in block.values for lab in _ORIGINS_A):
        for k, lab in enumerate(_ORIGINS_A):
            if lab in block.values:
                origins_a[:, k] = _numeric(block, lab, where)
    elif any(lab in block.values for lab in _ORIGINS_PX):
        pixel_a = _pixel_sizes_angstrom(blocks, block, where)
        for k, lab in enumerate(_ORIGINS_PX):
            if lab in block.values:
                origins_a[:, k] = _numeric(block, lab, where) * pixel_a
    if "rlnImageId" in block.values:
        ids = np.empty(n, dtype=np.int64)
        first: dict[int, int] = {}
        for r, tok in enumerate(block.values["rlnImageId"]):
            if not _INT_RE.match(tok.text):
                raise ValueError(f"{where}, line {tok.line}: _rlnImageId {tok.text!r} is not an "
                                 "integer")
            ids[r] = int(tok.text)
            if ids[r] in first:
                raise ValueError(f"{where}, line {tok.line}: _rlnImageId {ids[r]} already used "
                                 f"on line {first[ids[r]]}; particle ids must be unique")
            first[int(ids[r])] = tok.line
    else:
        ids = np.arange(1, n + 1, dtype=np.int64)
    M = np.zeros((n, 4, 4))
    M[:, 3, 3] = 1.0
    if n:
        M[:, :3, :3] = matrix_from_euler(angles, degrees=True, frame="xyz")
    M[:, :3, 3] = -origins_a / _UM_TO_ANGSTROM
    skip = set(_ANGLES + _ORIGINS_A + _ORIGINS_PX + ("rlnImageId",))
    extra = {lab: _column(toks) for lab, toks in block.values.items() if lab not in skip}
    return PoseTable(ids=ids, matrices=M, extra=extra)


def _pixel_sizes_angstrom(blocks: dict[str, _Block], block: _Block, where: str) -> np.ndarray:
    """Per-particle pixel size (Angstrom) from the optics block, for RELION 3.0 origins."""
    optics = blocks.get("optics")
    if optics is None or "rlnImagePixelSize" not in optics.values:
        raise ValueError(f"{where}: origins are given in pixels (rlnOriginX/Y/Z) but no "
                         "rlnImagePixelSize is found in a data_optics block; add it or give "
                         "rlnOriginX/Y/ZAngst")
    sizes = _numeric(optics, "rlnImagePixelSize", where)
    n = len(block.row_lines)
    if "rlnOpticsGroup" not in optics.values or "rlnOpticsGroup" not in block.values:
        if sizes.size != 1:
            raise ValueError(f"{where}: several optics groups but particles carry no "
                             "rlnOpticsGroup; add it")
        return np.full(n, sizes[0])
    groups = {int(float(t.text)): s for t, s in zip(optics.values["rlnOpticsGroup"], sizes)}
    out = np.empty(n)
    for r, tok in enumerate(block.values["rlnOpticsGroup"]):
        try:
            out[r] = groups[int(float(tok.text))]
        except (KeyError, ValueError):
            raise ValueError(f"{where}, line {tok.line}: optics group {tok.text!r} is not in "
                             "data_optics; add it there") from None
    return out
