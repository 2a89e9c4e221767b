"""Neutral test objects (not the project's phantoms), drawn analytically at any sampling."""

import numpy as np

__all__ = ["blobs"]


def blobs(size: int, factor: int = 1) -> np.ndarray:
    """A neutral test object: Gaussian blobs and a rod, drawn ``factor`` times finer."""
    n = size * factor
    c = (np.arange(n) - n // 2) / factor
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    s = size / 24
    f = np.zeros(z.shape)
    for cz, cy, cx, sig, amp in ((-3, 2, 4, 1.6, 1.0), (4, -3, -2, 2.2, 0.8),
                                 (1, 5, -4, 1.3, 0.9), (-4, -4, 1, 1.8, 0.7)):
        f += amp * np.exp(-0.5 * ((z - cz * s) ** 2 + (y - cy * s) ** 2 + (x - cx * s) ** 2)
                          / (sig * s) ** 2)
    t = np.clip(((z + 6 * s) * 0.6 + (y + 2 * s) * 0.8) / (10 * s), 0, 1)
    d = np.sqrt((z - (-6 * s + 6 * s * t)) ** 2 + (y - (-2 * s + 8 * s * t)) ** 2
                + (x - 3 * s) ** 2)
    f += 0.8 * 0.5 * (1 - np.tanh((d - 1.0 * s) / 0.5))
    return (f / f.max()).astype(np.float32)
