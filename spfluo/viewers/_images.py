"""Private helpers shared by the figure modules: volumes to show, grey levels, grids."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

__all__ = ["as_channel_volume", "display_limits", "projection_mosaic"]


def as_channel_volume(volume) -> np.ndarray:
    """A volume ``(Z, Y, X)`` or ``(C, Z, Y, X)`` as a non-empty float32 ``(C, Z, Y, X)``."""
    v = np.asarray(volume, dtype=np.float32)
    if v.ndim == 3:
        v = v[None]
    if v.ndim != 4:
        raise ValueError(f"volume must have shape (Z, Y, X) or (C, Z, Y, X), got {v.shape}")
    if v.size == 0:
        raise ValueError("cannot show an empty volume")
    return v


def display_limits(img) -> tuple[float, float]:
    """Grey-level range of an image: its 0.5 and 99.8 percentiles over the finite values
    (``(0, 1)`` when there are none), widened when they are equal."""
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [0.5, 99.8])
    return float(lo), float(hi if hi > lo else lo + 1e-6)


def projection_mosaic(volumes, labels, *, width: float = 1.5, max_columns: int = 8,
                      title: str | None = None) -> Figure:
    """Particles as one image: each one's XY maximum projection above its XZ projection.

    One axes and one image for the whole grid (fast to draw, whatever the number of
    particles), each projection scaled to its own grey range; the gaps are white.

    Parameters
    ----------
    volumes : list of ndarray, each (Z, Y, X)
        Particles (one channel), all of the same shape.
    labels : list of str
        Written above each particle (``gid="particle_label"``).
    width : float
        Width of a particle's column, inches.
    max_columns : int
        Particles per row at most.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        One axes (switched off) holding one image (``gid="mosaic"``) whose tile ``k`` (row
        ``r, c = divmod(k, ncol)``) starts at pixel ``(r (Y + Z + 3 g), c (X + g))`` with
        ``g`` the gap (2 pixels): the XY projection, a gap, then the XZ projection.
    """
    shapes = {np.shape(v) for v in volumes}
    if not volumes or len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"particles must be non-empty (Z, Y, X) volumes of one shape, got "
                         f"shapes {sorted(shapes)}")
    Z, Y, X = next(iter(shapes))
    gap = 2
    ncol = int(min(max_columns, len(volumes)))
    nrow = int(np.ceil(len(volumes) / ncol))
    tile_h, tile_w = Y + Z + 3 * gap, X + gap
    mosaic = np.full((nrow * tile_h, ncol * tile_w), np.nan, np.float32)
    fig = Figure(figsize=(width * ncol, width * nrow * tile_h / tile_w + 0.6),
                 layout="constrained")
    ax = fig.add_subplot()
    for k, (vol, label) in enumerate(zip(volumes, labels)):
        r, c = divmod(k, ncol)
        y0, x0 = r * tile_h + 2 * gap, c * tile_w
        for img, top in ((vol.max(axis=0), y0), (vol.max(axis=1), y0 + Y + gap)):
            lo, hi = display_limits(img)
            mosaic[top:top + img.shape[0], x0:x0 + X] = np.clip((img - lo) / (hi - lo), 0, 1)
        ax.text(x0, y0 - 0.5, label, fontsize=7, va="bottom", ha="left", gid="particle_label")
    cmap = fig.colormaps["gray"].with_extremes(bad="white") if hasattr(fig, "colormaps") \
        else "gray"
    ax.imshow(mosaic, cmap=cmap, vmin=0, vmax=1, interpolation="nearest", gid="mosaic")
    ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
