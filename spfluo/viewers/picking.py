"""Figures of particle picking: projections with the picked boxes, scores, particle gallery.

Pure matplotlib functions (arrays in, :class:`matplotlib.figure.Figure` out, no pyplot),
axes in micrometres.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..algorithms.geometry import voxels_to_um
from ._images import display_limits, projection_mosaic

__all__ = ["picks_figure", "score_histogram_figure", "particle_gallery_figure"]

#: Colour map of the scores (0 = dark purple, 1 = yellow).
SCORE_CMAP = "viridis"


def _check_scores(scores, n: int, name: str = "scores"):
    if scores is None:
        return None
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"{name} must have one value per pick, shape ({n},), got {s.shape}")
    return s


def picks_figure(projection, voxel_size, positions_yx_um, *, scores=None, box_size_um=None,
                 threshold=None, ids=None, title=None) -> Figure:
    """A maximum projection with a square box drawn around each pick, coloured by score.

    Parameters
    ----------
    projection : ndarray, shape (Y, X)
        Maximum-intensity projection of the image along z (or any 2D view).
    voxel_size : tuple of float
        ``(y, x)`` or ``(z, y, x)`` pixel size in micrometres.
    positions_yx_um : ndarray, shape (N, 2)
        Pick centres ``(y, x)`` in micrometres from the centre of pixel 0.
    scores : ndarray, shape (N,), optional
        Score of each pick in [0, 1]; boxes are coloured by it (colour bar), else drawn
        in one colour.
    box_size_um : float, optional
        Side of the boxes, micrometres (default: a tenth of the image width).
    threshold : float, optional
        Picks below it are dashed (e.g. the threshold of a later selection).
    ids : sequence, optional
        Labels written next to the boxes.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        One image axes (x and y in µm) with one rectangle patch per pick (gid
        ``"pick"``), its id (``"pick_id"``) and, with scores, a colour bar with a mark at
        each pick's score (``"pick_scores"``) and at the threshold (``"score_threshold"``).
    """
    img = np.asarray(projection, dtype=np.float32)
    if img.ndim != 2 or img.size == 0:
        raise ValueError(f"projection must be a non-empty (Y, X) image, got shape {img.shape}")
    vs = np.asarray(voxel_size, dtype=np.float64).ravel()[-2:]
    if vs.shape != (2,) or np.any(vs <= 0):
        raise ValueError(f"voxel_size must be (y, x) or (z, y, x) in µm, > 0, got {voxel_size!r}")
    pos = np.asarray(positions_yx_um, dtype=np.float64).reshape(-1, 2)
    s = _check_scores(scores, len(pos))
    if ids is not None and len(ids) != len(pos):
        raise ValueError(f"ids must have one label per pick ({len(pos)}), got {len(ids)}")
    height, width = voxels_to_um(img.shape[0], vs[0]), voxels_to_um(img.shape[1], vs[1])
    box = float(box_size_um) if box_size_um else 0.1 * width
    fig = Figure(figsize=(7.5, 6.5 * height / max(width, 1e-9) + 0.8), layout="constrained")
    ax = fig.add_subplot()
    lo, hi = display_limits(img)
    # pixel k covers [k - 1/2, k + 1/2] voxels around its centre k * vs
    extent = (-vs[1] / 2, width - vs[1] / 2, height - vs[0] / 2, -vs[0] / 2)
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, extent=extent, interpolation="nearest")
    norm = Normalize(0.0, 1.0)
    cmap = colormaps[SCORE_CMAP]
    for k, (y, x) in enumerate(pos):
        colour = cmap(norm(s[k])) if s is not None else "tab:orange"
        dashed = threshold is not None and s is not None and s[k] < threshold
        rect = Rectangle((x - box / 2, y - box / 2), box, box, fill=False, edgecolor=colour,
                         linewidth=1.2, linestyle="--" if dashed else "-")
        rect.set_gid("pick")
        ax.add_patch(rect)
        if ids is not None:
            ax.text(x + box / 2, y - box / 2, str(ids[k]), color=colour, fontsize=9,
                    fontweight="bold", va="bottom", ha="left", gid="pick_id",
                    bbox={"boxstyle": "round,pad=0.1", "facecolor": "black", "alpha": 0.55,
                          "edgecolor": "none"})
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    if s is not None:
        from matplotlib.cm import ScalarMappable

        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.8)
        bar.set_label("score: estimated probability of a particle\n(white marks: the picks "
                      "shown)")
        # one mark per pick on the bar: where the scores of this image lie
        bar.ax.hlines(s, 0, 1, colors="white", lw=1.2, gid="pick_scores")
        if threshold is not None:
            bar.ax.axhline(threshold, color="tab:red", lw=2, gid="score_threshold")
    ax.set_title(title or f"{len(pos)} pick(s)", fontsize=10)
    return fig


def score_histogram_figure(scores, *, threshold=None, title=None) -> Figure:
    """Histogram of the pick scores, with the threshold marked.

    Parameters
    ----------
    scores : ndarray, shape (N,)
        Scores in [0, 1].
    threshold : float, optional
        Drawn as a vertical line (gid ``"threshold"``).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError("scores is empty: nothing to show")
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.add_subplot()
    ax.hist(s, bins=np.linspace(0, 1, 21), color="tab:blue", edgecolor="white")
    if threshold is not None:
        ax.axvline(threshold, color="tab:red", linestyle="--", gid="threshold",
                   label=f"threshold {threshold:g}")
        ax.legend(fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("score (estimated probability of a particle)")
    ax.set_ylabel("picks")
    ax.set_title(title or f"{s.size} pick(s), median score {np.median(s):.2f}", fontsize=10)
    return fig


def particle_gallery_figure(particles, voxel_size, *, scores=None, ids=None, max_particles=40,
                            title=None) -> Figure:
    """Extracted particles as a grid (XY and XZ maximum projections), best scores first.

    Parameters
    ----------
    particles : sequence of ndarray, each (D, D, D) or (C, D, D, D)
        The first channel is shown.
    voxel_size : float or tuple of 3 float
        Isotropic voxel size of the particles, micrometres.
    scores : sequence of float, optional
        Particles are sorted by decreasing score and labelled with it.
    ids : sequence, optional
        Labels (e.g. the particle ids, for an exclusion list).
    max_particles : int, default 40
        Show at most this many (the best scoring ones).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Per particle, an XY projection above an XZ projection, labelled with its id
        and score (:func:`spfluo.viewers._images.projection_mosaic`).
    """
    parts = [np.asarray(p, dtype=np.float32) for p in particles]
    if not parts:
        raise ValueError("no particle to show")
    parts = [p[0] if p.ndim == 4 else p for p in parts]
    if any(p.ndim != 3 for p in parts):
        raise ValueError("particles must be (D, D, D) or (C, D, D, D) arrays")
    s = _check_scores(scores, len(parts))
    order = np.arange(len(parts)) if s is None else np.argsort(-s, kind="stable")
    order = order[:max_particles]
    v = float(np.asarray(voxel_size, dtype=np.float64).ravel()[-1])
    labels = [(str(ids[k]) if ids is not None else f"#{k + 1}")
              + (f"  {s[k]:.2f}" if s is not None else "") for k in order]
    return projection_mosaic([parts[k] for k in order], labels, width=1.5,
                             title=title or f"{len(parts)} particles (XY above XZ max "
                                            f"projections, box {parts[0].shape[2] * v:.2f} µm)")
