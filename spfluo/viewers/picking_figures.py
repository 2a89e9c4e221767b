"""Figures of picking results: coordinates over their images, scores, particles by score.

- :class:`~spfluo.objects.SetOfCoordinates3D`: for each image (the first
  :data:`MAX_IMAGES_SHOWN`), the maximum projection along z with a box around every
  coordinate, coloured by score; and the histogram of the scores.
- :class:`~spfluo.objects.SetOfParticles` extracted from scored coordinates: the
  particles sorted by score, labelled with their id (to choose an exclusion list for
  "select particles").  Particles without scores get no extra figure (their grid is in
  ``object_figures``).
"""

from __future__ import annotations

import numpy as np

from ..objects import SetOfCoordinates3D, SetOfParticles
from ..objects.arrays import load_array
from .picking import particle_gallery_figure, picks_figure, score_histogram_figure
from .registry import figure_maker

__all__ = ["coordinates_figures", "scored_particles_figures"]

#: A coordinate set shows at most this many images (one figure each).
MAX_IMAGES_SHOWN = 4
#: Particles shown in the gallery (the best scoring ones).
MAX_PARTICLES_SHOWN = 40


@figure_maker(SetOfCoordinates3D)
def coordinates_figures(coords) -> list:
    """Boxes over the maximum projection of each image (channel 0), and the scores."""
    items = coords.items()
    if not items:
        raise ValueError("the coordinate set is empty: nothing to show")
    images = coords.getImages()
    if images is None:
        raise ValueError("the coordinates are not linked to images: nothing to draw them on")
    scores = [c.getScore() for c in items]
    scores = None if any(s is None for s in scores) else np.array(scores)
    figures = []
    by_image = {}
    for k, c in enumerate(items):
        by_image.setdefault(c.getImageId(), []).append(k)
    for image in images.items():
        rows = by_image.get(image.getImageId())
        if not rows:
            continue
        mip = load_array(image, channel=0).max(axis=0)
        pos = np.array([items[k].getPositionZYX()[1:] for k in rows])
        fig = picks_figure(mip, image.getVoxelSize(), pos,
                           scores=None if scores is None else scores[rows],
                           box_size_um=coords.getBoxSize(),
                           ids=[items[k].getObjId() for k in rows],
                           title=f"image {image.getImageId()}: {len(rows)} particle(s)")
        figures.append((f"picks_{image.getImageId()}", fig))
        if len(figures) == MAX_IMAGES_SHOWN:
            break
    if scores is not None:
        figures.append(("scores", score_histogram_figure(scores)))
    return figures


@figure_maker(SetOfParticles)
def scored_particles_figures(particles) -> list:
    """Particles sorted by the score of their coordinate (none when they have no score)."""
    items = particles.items()
    scores = [p.getCoordinate().getScore() for p in items]
    if not items or any(s is None for s in scores):
        return []
    order = np.argsort(-np.array(scores), kind="stable")[:MAX_PARTICLES_SHOWN]
    fig = particle_gallery_figure([load_array(items[k]) for k in order],
                                  particles.getVoxelSize(), scores=[scores[k] for k in order],
                                  ids=[items[k].getObjId() for k in order],
                                  title=f"{len(items)} picked particles, best scores first "
                                        "(id, score)")
    return [("by_score", fig)]
