"""Private helpers shared by the text formats of :mod:`spfluo.io` (CSV tables, STAR files).

Errors name the file as ``repr(str(path))``, as the readers do everywhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from spfluo.io._files import regular_file

__all__ = ["read_text_file", "format_number"]


def read_text_file(path: Path, *, what: str, kind: str, encoding: str = "utf-8",
                   fix: str = "") -> str:
    """The whole text of a file, with errors for a missing file, a folder, or non-UTF-8 bytes.

    Parameters
    ----------
    path : Path
        The file.
    what : str
        What the file holds, in the not-found message (``"poses"``, ``"STAR"``).
    kind : str
        The format, in the other messages (``"poses CSV"``, ``"STAR"``).
    encoding : str, default "utf-8"
        ``"utf-8-sig"`` also drops a byte-order mark.
    fix : str, optional
        Appended to the message for non-UTF-8 bytes (e.g. ``"; save ... as UTF-8"``).
    """
    regular_file(path, what=what, kind=kind)
    try:
        return path.read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{str(path)!r} is not a UTF-8 text {kind} file ({exc}){fix}") from None


def format_number(value: Any) -> str | None:
    """Text of a bool or number (``0``/``1`` for bools, shortest exact form for floats),
    or None when ``value`` is not one."""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return None
