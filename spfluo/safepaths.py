"""Paths that the engine hands to a shell: refused where they enter spfluo.

pyworkflow starts every run with ``Popen(command, shell=True)``, the project
folder written between double quotes (``pw_protocol_run.py "<project>" ...``),
and a queue submits its job script with the path unquoted
(``sbatch <project>/Runs/.../job``).  A project folder whose path holds a
character that a shell interprets would therefore run a command at every
launch.  spfluo refuses such paths, with a message naming the path and the fix,
wherever one can enter: the spfluo home (``--home``, ``$SPFLUO_HOME``) and the
Python interpreter (:func:`spfluo.environment.bootstrap`), a project's name and
location (:func:`spfluo.workflow.create_project`), a project opened by name or
path (:func:`spfluo.workflow.open_project`, also under its real path, symbolic
links resolved), and every launch (:meth:`spfluo.protocols.base.ProtFluo.validate`,
which the GUI, the command line, batches and queues all go through).

Refused characters (:data:`UNSAFE_CHARACTERS`): white space and control
characters (newline, tab...), and ``` ` $ \\ " ' ; & | < > ( ) { } [ ] * ? ! # % ```.
Letters (any script), digits and ``/ . _ - + , = @ : ~ ^`` are accepted.
"""

from __future__ import annotations

import os
import unicodedata

from .errors import ProjectError

__all__ = ["UNSAFE_CHARACTERS", "unsafe_characters", "check_path", "check_project_folder"]

#: Characters a shell interprets inside double quotes, or in an unquoted word.
UNSAFE_CHARACTERS = frozenset("`$\\\"';&|<>(){}[]*?!#%")

#: The characters accepted besides letters and digits (for the messages).
_ACCEPTED = "/ . _ - + , = @ : ~ ^"


def _describe(char: str) -> str:
    if char == "\n":
        return "a newline"
    if char.isspace():
        return f"white space ({char!r})"
    if unicodedata.category(char).startswith("C"):
        return f"a control character ({char!r})"
    return repr(char)


def unsafe_characters(path: str | os.PathLike) -> list[str]:
    """The distinct characters of ``path`` that a shell would interpret, in order."""
    found = []
    for char in os.fspath(path):
        bad = (char in UNSAFE_CHARACTERS or char.isspace()
               or unicodedata.category(char).startswith("C"))
        if bad and char not in found:
            found.append(char)
    return found


def check_path(path: str | os.PathLike, *, what: str, fix: str) -> None:
    """Raise :class:`~spfluo.errors.ProjectError` if ``path`` (or its real path) is unsafe.

    Parameters
    ----------
    path : str or path-like
        The path to check; when it exists, its real path (symbolic links resolved)
        is checked too, since the engine works in the resolved folder.
    what : str
        What the path is, for the message ("the spfluo home folder").
    fix : str
        What the user should do, for the message.
    """
    text = os.fspath(path)
    candidates = [text]
    if os.path.lexists(text):
        candidates.append(os.path.realpath(text))
    for candidate in candidates:
        bad = unsafe_characters(candidate)
        if bad:
            shown = ", ".join(_describe(c) for c in bad)
            raise ProjectError(
                f"{what} {candidate!r} contains {shown}: the engine runs commands through a "
                f"shell, which would interpret it. {fix} (a path of letters, digits and "
                f"{_ACCEPTED}).")


def check_project_folder(path: str | os.PathLike) -> None:
    """:func:`check_path` for a project folder (the message says how to fix it)."""
    check_path(path, what="the project folder",
               fix="Create the project in another location, or move it and open it there")
