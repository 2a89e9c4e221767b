"""Which figures show which object: the table used by the GUI viewer and ``spfluo show``.

A figure maker is a function ``maker(obj) -> list[(name, Figure)]`` registered
for one or more object classes with :func:`figure_maker`.  Makers only read
the object (its files and stored numbers) and call the plain plotting
functions of the ``viewers`` modules.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["figure_maker", "figures_for", "viewable_classes"]

_MAKERS: list[tuple[tuple[type, ...], Callable]] = []


def figure_maker(*classes: type):
    """Register the decorated function as a figure maker for ``classes``."""

    def register(func):
        _MAKERS.append((classes, func))
        return func

    return register


def figures_for(obj) -> list:
    """Every registered figure for ``obj``: a list of ``(name, matplotlib Figure)``."""
    figures = []
    for classes, func in _MAKERS:
        if isinstance(obj, classes):
            figures.extend(func(obj))
    if not figures:
        raise ValueError(f"no viewer for {type(obj).__name__} objects")
    return figures


def viewable_classes() -> list[type]:
    seen = []
    for classes, _ in _MAKERS:
        for c in classes:
            if c not in seen:
                seen.append(c)
    return seen
