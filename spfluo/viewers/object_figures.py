"""Figures for the foundation objects: images, PSFs, volumes and particle sets."""

from __future__ import annotations

from ..objects import FluoImage, SetOfFluoImages, SetOfParticles, SetOfVolumes
from ..objects.arrays import load_array
from .labels import object_name
from .registry import figure_maker
from .slices import orthoslices_figure, particles_grid_figure

__all__ = ["image_figures", "image_set_figures", "particle_set_figures"]

#: A set of images shows at most this many images (one figure each).
MAX_IMAGES_SHOWN = 4
#: What the slice figures show.
_SLICES = "central slices and maximum projections (µm)"


@figure_maker(FluoImage)
def image_figures(image) -> list:
    """Orthogonal slices of any file-backed volume (image, PSF, particle, reconstruction)."""
    fig = orthoslices_figure(load_array(image), image.getVoxelSize(),
                             title=f"{object_name(image)}: {_SLICES}")
    return [("slices", fig)]


@figure_maker(SetOfFluoImages, SetOfVolumes)
def image_set_figures(images) -> list:
    figures = []
    for k, img in enumerate(images.items()[:MAX_IMAGES_SHOWN]):
        fig = orthoslices_figure(load_array(img), img.getVoxelSize(),
                                 title=f"{object_name(img)}: {_SLICES}")
        figures.append((f"slices_{k}", fig))
    if not figures:
        raise ValueError("the set is empty: nothing to show")
    return figures


@figure_maker(SetOfParticles)
def particle_set_figures(particles) -> list:
    items = particles.items()[:48]
    if not items:
        raise ValueError("the set is empty: nothing to show")
    fig = particles_grid_figure([load_array(p) for p in items], particles.getVoxelSize(),
                                ids=[p.getImageId() for p in items],
                                title=f"{particles.getSize()} particles")
    return [("grid", fig)]
