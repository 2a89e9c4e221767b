"""Private argument checks shared by the modules of :mod:`spfluo.algorithms`.

Each check returns the value converted to its plain Python type, or raises a
``ValueError`` that names the parameter and shows the value received.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check_int", "check_symmetry", "check_box_shape"]


def check_int(value: Any, name: str, *, minimum: int) -> int:
    """An integer (not a bool) ``>= minimum``, as an ``int``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_symmetry(symmetry: Any) -> int:
    """The order ``n >= 1`` of a cyclic symmetry Cn about z (1 = none), as an ``int``."""
    if isinstance(symmetry, bool) or not isinstance(symmetry, (int, np.integer)) or symmetry < 1:
        raise ValueError(
            f"symmetry must be the order n >= 1 of the cyclic group Cn (1 = no symmetry), "
            f"got {symmetry!r}"
        )
    return int(symmetry)


def check_box_shape(shape: Any, name: str = "shape") -> tuple[int, int, int]:
    """A box ``(Z, Y, X)`` of 3 positive ints in voxels; an int gives a cube."""
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),) * 3
    try:
        out = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(
            f"{name} must be a (Z, Y, X) tuple of 3 positive ints, got {shape!r}"
        ) from None
    if len(out) != 3 or any(s < 1 for s in out) or any(int(s) != s for s in shape):
        raise ValueError(f"{name} must be a (Z, Y, X) tuple of 3 positive ints, got {shape!r}")
    return out
