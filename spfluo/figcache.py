"""Figures of outputs rendered once: PNG files kept in an output folder, by output.

Drawing every figure of a project takes most of a report's time.  An output of a
finished run does not change until the run runs again, so its PNG files are kept
(beside the report, in an :class:`spfluo.outfolder.OutputFolder`) with a key made of
what they depend on: the run (id, end time), the output (name, class, its files' sizes
and modification times), the resolution and the figure code (the ``spfluo.viewers``
sources).  A later report with the same key reuses the files, if nobody changed them.
The index (``figures.json``) is itself a file of the folder's manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from . import __version__
from .outfolder import OutputFolder

__all__ = ["FigureCache", "cached_figures", "output_key", "INDEX"]

#: The index of the cached figures, in the output folder.
INDEX = "figures.json"


def _code_digest() -> str:
    """What the figure code is: the viewers' sources (names, sizes, modification times)."""
    folder = Path(__file__).parent / "viewers"
    stats = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.glob("*.py"))
    return hashlib.sha1(json.dumps([__version__, stats]).encode()).hexdigest()


def output_key(prot, out_name: str, obj, dpi: int) -> str:
    """The key of the figures of output ``out_name`` of run ``prot`` at ``dpi``."""
    files = []
    try:
        paths = sorted(str(f) for f in (obj.getFiles() or []) if f) \
            if hasattr(obj, "getFiles") else []
    except Exception:  # an object whose files cannot be listed: no reuse by files
        paths = []
    for path in paths:
        try:
            st = os.stat(path)
            files.append([path, st.st_size, st.st_mtime_ns])
        except OSError:
            files.append([path, None, None])
    what = [prot.getObjId(), str(prot.endTime.get()), prot.getStatus(), out_name,
            type(obj).__name__, files, int(dpi), _code_digest()]
    return hashlib.sha1(json.dumps(what, default=str).encode()).hexdigest()


def cached_figures(folder: OutputFolder, stem: str) -> list[tuple[str, str]]:
    """``(file name, figure name)`` of the figures of the output ``stem`` that the folder's
    index lists and that are still as spfluo wrote them (empty when there are none)."""
    cache = FigureCache(folder, by="")
    entries = [tuple(f) for f in cache._old.get(stem, {}).get("figures", [])]
    return entries if entries and all(folder.intact(f) for f, _ in entries) else []


class FigureCache:
    """The figures written in ``folder`` by ``by`` (``report``), reused while their key holds.

    Parameters
    ----------
    folder : OutputFolder
    by : str
        The writer's name in the folder's manifest.

    Attributes
    ----------
    written : set of str
        Names of the figure files used by this writer this time (rendered or reused).
    rendered, reused : int
        How many figure files were drawn, and how many were taken from an earlier run.
    """

    def __init__(self, folder: OutputFolder, *, by: str):
        self.folder, self.by = folder, by
        self._old = {}
        if folder.intact(INDEX):
            try:
                data = json.loads((folder.path / INDEX).read_text(encoding="utf-8"))
                self._old = {str(k): v for k, v in data["outputs"].items()}
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                self._old = {}
        self._new = {}
        self.written: set[str] = set()
        self.rendered = self.reused = 0

    def lookup(self, stem: str) -> list[tuple[str, str]]:
        """``(file name, figure name)`` of the figures stored under ``stem`` this time."""
        return [tuple(f) for f in self._new.get(stem, {}).get("figures", [])]

    def figures(self, obj, stem: str, key: str, dpi: int) -> list[tuple[str, str]]:
        """The figures of ``obj`` as files ``<stem>_<figure>.png``: reused or drawn.

        Returns ``(file name, figure name)`` pairs; an object without a viewer (or with
        nothing to show) has none.
        """
        old = self._old.get(stem)
        if old and old.get("key") == key and all(self.folder.intact(f)
                                                 for f, _ in old["figures"]):
            entries = [tuple(f) for f in old["figures"]]
            self.reused += len(entries)
        else:
            entries = self._render(obj, stem, dpi)
        self._new[stem] = {"key": key, "figures": [list(e) for e in entries]}
        self.written.update(f for f, _ in entries)
        return entries

    def _render(self, obj, stem: str, dpi: int) -> list[tuple[str, str]]:
        from .viewers import figures_for

        try:
            figures = figures_for(obj)
        except ValueError:  # no viewer for this class, or nothing to show
            return []
        entries = []
        for fig_name, fig in figures:
            fname = f"{stem}_{_safe(fig_name)}.png"
            self.folder.write(fname, lambda tmp, fig=fig: fig.savefig(tmp, format="png",
                                                                       dpi=dpi), by=self.by)
            fig.clear()
            entries.append((fname, fig_name))
            self.rendered += 1
        return entries

    def save(self) -> str:
        """Write the index (the figures used this time); returns its file name."""
        self.folder.write_text(INDEX, json.dumps({"outputs": self._new}, indent=1), by=self.by)
        return INDEX


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)
