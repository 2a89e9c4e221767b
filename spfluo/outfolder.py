"""A folder of files that spfluo writes for the user (report pages, demo figures).

spfluo never deletes or overwrites a file it did not write.  An
:class:`OutputFolder` keeps a manifest (``.spfluo-files.json``) of the files it
wrote, with their SHA-256 and the writer (``report``, ``demo``):

- a new or empty folder becomes spfluo's; a folder with a manifest is spfluo's;
  any other folder (it holds files spfluo did not write) is refused;
- a file is written only under a free name, or over a file of the manifest whose
  content is still what spfluo wrote (atomically: :func:`spfluo.io.atomic_write_path`);
- :meth:`OutputFolder.remove_stale` deletes only the files of the manifest, unchanged
  since spfluo wrote them, that a writer did not write again.

A file is entered in the manifest before it is written, so a crash in between leaves
a name spfluo may overwrite later, never an unknown file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

from .errors import ProjectError
from .io import atomic_write_path, regular_file, write_json_atomic

__all__ = ["MANIFEST", "OutputFolder"]

#: The manifest of the files spfluo wrote in an output folder.
MANIFEST = ".spfluo-files.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class OutputFolder:
    """The files spfluo wrote in ``path`` (created when missing).

    Raises
    ------
    ProjectError
        When ``path`` is not a folder, or holds files that spfluo did not write (no
        manifest), or its manifest is unreadable.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().resolve()
        self._manifest = self.path / MANIFEST
        if self.path.exists() and not self.path.is_dir():
            raise ProjectError(f"{self.path} is a file, not a folder: give a folder for the "
                               "output (a new one is created).")
        self.path.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(self._manifest):
            self._load()
        else:
            others = sorted(p.name for p in self.path.iterdir())
            if others:
                raise ProjectError(
                    f"{self.path} is not empty and spfluo did not create it (it holds "
                    f"{', '.join(others[:3])}{'...' if len(others) > 3 else ''}): spfluo never "
                    "overwrites or deletes files it did not write; give a new or empty folder.")
            self._files = {}
            self._save()

    def _load(self) -> None:
        """Read the manifest (another OutputFolder of the same folder may have written it)."""
        try:
            data = json.loads(regular_file(self._manifest, what="manifest", kind="JSON")
                              .read_text(encoding="utf-8"))
            self._files = {str(k): dict(v) for k, v in data["files"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ProjectError(f"the manifest {self._manifest} of spfluo's files is "
                               f"unreadable ({exc}): choose another output folder.") from exc

    def _save(self) -> None:
        write_json_atomic(self._manifest, {"files": self._files})

    def _check_ours(self, name: str) -> Path:
        """The path of ``name``, after checking that spfluo may replace what is there."""
        if not name or os.path.basename(name) != name or name in (MANIFEST, ".", ".."):
            raise ValueError(f"an output file name is a plain file name, got {name!r}")
        target = self.path / name
        if not os.path.lexists(target):
            return target
        entry = self._files.get(name)
        if entry is None:
            raise ProjectError(f"{target} exists and spfluo did not write it: move it away or "
                               "give another output folder.")
        if not target.is_file() or (entry.get("sha256") is not None
                                    and _sha256(target) != entry["sha256"]):
            raise ProjectError(f"{target} was changed after spfluo wrote it: move it away or "
                               "give another output folder.")
        return target

    def write(self, name: str, writer: Callable[[Path], object], *, by: str) -> Path:
        """Write the file ``name`` with ``writer(temporary_path)``; return its path.

        ``by`` names the writer (``report``...), for :meth:`remove_stale`.
        """
        self._load()  # the entries that other writers added meanwhile are kept
        target = self._check_ours(name)
        self._files[name] = {"sha256": None, "by": by}
        self._save()
        with atomic_write_path(target) as tmp:
            writer(tmp)
        self._files[name]["sha256"] = _sha256(target)
        self._save()
        return target

    def write_text(self, name: str, text: str, *, by: str) -> Path:
        """Write the UTF-8 text file ``name`` (see :meth:`write`)."""
        return self.write(name, lambda tmp: tmp.write_text(text, encoding="utf-8"), by=by)

    def intact(self, name: str) -> bool:
        """True when ``name`` is a file spfluo wrote here and nobody changed since."""
        self._load()
        entry = self._files.get(name)
        target = self.path / name
        return bool(entry and entry.get("sha256") and target.is_file()
                    and not target.is_symlink() and _sha256(target) == entry["sha256"])

    def files(self, *, by: str | None = None) -> list[str]:
        """Names of the files spfluo wrote here (by ``by`` only, when given), sorted."""
        self._load()
        return sorted(n for n, e in self._files.items() if by is None or e.get("by") == by)

    def remove_stale(self, *, by: str, keep) -> list[str]:
        """Delete the files written by ``by`` that are not in ``keep``; return their names.

        A file changed since spfluo wrote it is left in place (it is the user's now) and
        leaves the manifest.
        """
        self._load()
        keep = set(keep)
        removed = []
        for name in self.files(by=by):
            if name in keep:
                continue
            target = self.path / name
            entry = self._files.pop(name)
            if target.is_file() and (entry.get("sha256") is None
                                     or _sha256(target) == entry["sha256"]):
                target.unlink()
                removed.append(name)
        self._save()
        return removed
