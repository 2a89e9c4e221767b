"""Input files must be regular files: a FIFO or a device would block or never end a read."""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["regular_file"]

_SPECIAL = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def regular_file(path: str | os.PathLike, *, what: str, kind: str) -> Path:
    """``path`` as a Path, after checking that it is a regular file (links followed).

    Parameters
    ----------
    what : str
        What the file holds, in the not-found message (``"volume"``, ``"poses"``).
    kind : str
        The format, in the other messages (``"volume"``, ``"poses CSV"``).

    Raises
    ------
    FileNotFoundError
        When nothing is there.
    ValueError
        For a folder, a FIFO, a device or a socket (opening one may block forever).
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} file not found: {str(path)!r}") from None
    if stat.S_ISDIR(mode):
        raise ValueError(f"{str(path)!r} is a folder, not a {kind} file")
    if not stat.S_ISREG(mode):
        desc = next((d for test, d in _SPECIAL if test(mode)), "not a regular file")
        raise ValueError(f"{str(path)!r} is {desc}, not a regular {kind} file: give the path "
                         "of a file")
    return path
