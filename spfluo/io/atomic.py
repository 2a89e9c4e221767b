"""Atomic writes: a file appears complete under its final name, or not at all.

Every writer in :mod:`spfluo.io` writes to a temporary name in the destination folder
and renames it with :func:`os.replace` once the data is on disk. A reader (another
process, a viewer, a resumed protocol) therefore never sees a half-written file, and an
exception or a crash during the write leaves the previous file, if any, untouched.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_write_path", "write_json_atomic", "remove_temporaries"]

#: The temporary names of :func:`atomic_write_path`: ``.NAME.<12 hex digits>.tmp``.
_TEMPORARY_RE = re.compile(r"\..+\.[0-9a-f]{12}\.tmp")


def _temporary_name(path: Path) -> Path:
    # Hidden, in the same folder (so os.replace stays on one file system), unique per call,
    # and recognisable: ".NAME.RANDOM.tmp".
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that interrupted atomic writes left under ``folder``.

    Only regular files named like :func:`atomic_write_path`'s temporaries
    (``.NAME.<12 hex digits>.tmp``) are removed, in ``folder`` and its sub-folders. Call
    it only while no process writes there (a run's worker lock held). Returns the paths
    removed.
    """
    removed = []
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root) / name
            if _TEMPORARY_RE.fullmatch(name) and path.is_file() and not path.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_write_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; rename it to ``path`` when the block succeeds.

    Parameters
    ----------
    path : str or path-like
        Final destination. Its folder must exist. An existing file of that name is
        replaced only when the block completes without an exception.

    Yields
    ------
    Path
        A temporary file name in the same folder as ``path`` (``.NAME.RANDOM.tmp``). The
        block writes the complete file there. The name has no meaningful extension, so
        writers that choose a format from the extension must be told the format.

    Raises
    ------
    FileNotFoundError
        If the destination folder does not exist.
    ValueError
        If ``path`` names an existing folder.

    Notes
    -----
    On success the temporary file is flushed to disk (``fsync``) and moved over ``path``
    with :func:`os.replace`, which is atomic on POSIX and Windows when both names are on
    the same file system. On an exception inside the block the temporary file is removed
    (if it was created) and the exception propagates; ``path`` is left as it was.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"cannot write a file at {str(path)!r}: it is an existing folder; "
                         "give a file name")
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {str(path)!r}: the folder {str(folder)!r} does not "
                                "exist; create it first")
    tmp = _temporary_name(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file for {str(path)!r}")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def _first_non_finite(obj: Any, where: str = "") -> str | None:
    """Return the location of the first NaN/Inf float in ``obj`` (JSON-like), or None."""
    if isinstance(obj, (float, np.floating)):
        return None if math.isfinite(obj) else (where or "<root>")
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "fc" and not np.isfinite(obj).all():
            return where or "<root>"
        return None
    if isinstance(obj, dict):
        for key, value in obj.items():
            found = _first_non_finite(value, f"{where}.{key}" if where else str(key))
            if found:
                return found
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            found = _first_non_finite(value, f"{where}[{i}]")
            if found:
                return found
    return None


def write_json_atomic(path: str | os.PathLike, obj: Any, *, allow_nan: bool = False,
                      indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically.

    Parameters
    ----------
    path : str or path-like
        Destination file; its folder must exist.
    obj : JSON-like
        Dicts, lists, strings, numbers, booleans and None; NumPy scalars and arrays and
        path-like objects are converted (arrays to nested lists, paths to strings).
    allow_nan : bool, default False
        Whether NaN and infinite floats may be written (as the non-standard tokens
        ``NaN``/``Infinity``). By default they raise, because strict JSON readers reject them.
    indent : int, default 2
        Indentation of the written file.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If ``obj`` holds NaN/Inf and ``allow_nan`` is False (the message names the key).
    TypeError
        If ``obj`` holds something JSON cannot represent.
    """
    path = Path(path)
    if not allow_nan:
        where = _first_non_finite(obj)
        if where is not None:
            raise ValueError(f"cannot write {str(path)!r}: the value at {where!r} is NaN or "
                             "infinite; replace it (e.g. with None) or pass allow_nan=True")
    text = json.dumps(obj, indent=indent, allow_nan=allow_nan, default=_json_default)
    with atomic_write_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return path
