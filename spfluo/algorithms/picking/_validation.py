"""Private argument checks shared by the modules of :mod:`spfluo.algorithms.picking`.

Each check raises a ``ValueError`` that names the argument and says what to pass.
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_image", "check_positive", "check_diameter", "check_positions", "check_seed"]


def check_image(image, name: str = "image") -> np.ndarray:
    """One channel ``(Z, Y, X)`` as float32: real, non-empty and finite."""
    a = np.asarray(image)
    if a.ndim != 3:
        raise ValueError(f"{name} must be one channel of shape (Z, Y, X), got shape {a.shape}; "
                         "pick the detection channel first")
    if a.size == 0 or min(a.shape) < 1:
        raise ValueError(f"{name} is empty (shape {a.shape}); give a non-empty volume")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name} must be a real array, got dtype {a.dtype}")
    a = a.astype(np.float32, copy=False)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite voxels; fix or mask them first")
    return a


def check_positive(value, name: str, unit: str) -> float:
    """A finite number > 0 (``unit`` names its unit in the message)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number ({unit}), got {value!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive number ({unit}), got {value!r}")
    return v


def check_diameter(diameter, shape, vs) -> float:
    """The particle diameter (micrometres): more than 3 voxels, within the image."""
    d = check_positive(diameter, "diameter", "micrometres")
    lateral = min(shape[1] * vs[1], shape[2] * vs[2])
    if d > lateral:
        raise ValueError(f"diameter {d:g} µm is larger than the image ({shape[2] * vs[2]:g} x "
                         f"{shape[1] * vs[1]:g} µm in x, y); give the particle diameter in "
                         "micrometres")
    if d / 2 < 1.5 * max(vs[1], vs[2]):
        raise ValueError(f"diameter {d:g} µm spans fewer than 3 voxels of {vs[2]:g} µm; give the "
                         "particle diameter in micrometres (not voxels) or use finer images")
    return d


def check_positions(positions, name: str, shape=None) -> np.ndarray:
    """Positions ``(N, 3)`` in voxels ``(z, y, x)``: finite, inside ``shape`` if given."""
    p = np.asarray(positions, dtype=np.float64)
    if p.ndim == 1 and p.size == 0:
        p = p.reshape(0, 3)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3) in voxels (z, y, x), got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} contains NaN or infinite values; give finite positions")
    if shape is not None and p.size:
        upper = np.asarray(shape, dtype=np.float64) - 0.5
        bad = np.flatnonzero(((p < -0.5) | (p > upper)).any(axis=1))
        if bad.size:
            raise ValueError(f"{name} row {int(bad[0])} at (z, y, x) = {p[bad[0]].tolist()} voxels "
                             f"is outside the image of shape {tuple(shape)}; give positions in "
                             "voxels inside the image")
    return p


def check_seed(seed):
    """A ``numpy.random.Generator`` from an int, None or a Generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)):
        return np.random.default_rng(seed)
    raise ValueError(f"seed must be an int, None or a numpy Generator, got {seed!r}")
