"""Picking figures render headless: boxes where the picks are, coloured by score."""

import numpy as np
import pytest
from matplotlib import colormaps

from spfluo.viewers.picking import (
    SCORE_CMAP,
    particle_gallery_figure,
    picks_figure,
    score_histogram_figure,
)

from ._figures import gid_artists, render_png

def _picks(fig):
    return gid_artists(fig, "pick", "patches")



def _labels(fig) -> list[str]:
    """The particle labels of a gallery, in order."""
    return [t.get_text() for ax in fig.axes for t in ax.texts
            if t.get_gid() == "particle_label"]


def test_picks_figure_boxes_and_colours():
    mip = np.random.default_rng(0).random((60, 80)).astype(np.float32)
    pos = np.array([[1.0, 2.0], [3.0, 4.5], [5.0, 1.5]])  # (y, x) µm
    scores = np.array([0.9, 0.2, 0.6])
    fig = picks_figure(mip, (0.3, 0.1, 0.1), pos, scores=scores, box_size_um=0.8,
                       threshold=0.5, ids=[7, 8, 9])
    render_png(fig)
    boxes = _picks(fig)
    assert len(boxes) == 3
    for box, (y, x), s in zip(boxes, pos, scores):
        assert box.get_width() == pytest.approx(0.8) and box.get_height() == pytest.approx(0.8)
        assert box.get_x() + 0.4 == pytest.approx(x) and box.get_y() + 0.4 == pytest.approx(y)
        assert np.allclose(box.get_edgecolor(), colormaps[SCORE_CMAP](s))
    assert [b.get_linestyle() for b in boxes] == ["-", "--", "-"]  # below the threshold
    image_ax = fig.axes[0]
    assert image_ax.get_xlabel() == "x (µm)" and image_ax.get_ylabel() == "y (µm)"
    assert image_ax.get_xlim() == pytest.approx((-0.05, 7.95))  # 80 pixels of 0.1 µm
    # the colour bar says what the score is, marks each pick's score and the threshold
    (bar,) = [ax for ax in fig.axes[1:] if ax.get_ylabel().startswith("score")]
    assert "probability of a particle" in bar.get_ylabel()
    (marks,) = gid_artists(fig, "pick_scores", "collections")
    assert sorted(seg[0][1] for seg in marks.get_segments()) == pytest.approx([0.2, 0.6, 0.9])
    (line,) = gid_artists(fig, "score_threshold")
    assert line.get_ydata()[0] == pytest.approx(0.5)
    # the ids are readable: 9 pt at least, on a dark background
    ids = [t for t in image_ax.texts if t.get_gid() == "pick_id"]
    assert [t.get_text() for t in ids] == ["7", "8", "9"]
    assert all(t.get_fontsize() >= 9 and t.get_bbox_patch() is not None for t in ids)
    plain = picks_figure(mip, (0.1, 0.1), pos)
    assert len(_picks(plain)) == 3 and len(plain.axes) == 1


def test_picks_figure_rejects_bad_input():
    mip = np.zeros((10, 10))
    with pytest.raises(ValueError, match=r"\(Y, X\)"):
        picks_figure(np.zeros((2, 10, 10)), (0.1, 0.1), [[1, 1]])
    with pytest.raises(ValueError, match="one value per pick"):
        picks_figure(mip, (0.1, 0.1), [[1, 1], [2, 2]], scores=[0.5])
    with pytest.raises(ValueError, match="voxel_size"):
        picks_figure(mip, (0.1, -0.1), [[1, 1]])
    with pytest.raises(ValueError, match="one label per pick"):
        picks_figure(mip, (0.1, 0.1), [[1, 1]], ids=[1, 2])


def test_score_histogram_and_gallery():
    scores = np.array([0.1, 0.55, 0.6, 0.95, 0.97])
    fig = score_histogram_figure(scores, threshold=0.5)
    render_png(fig)
    ax = fig.axes[0]
    assert sum(p.get_height() for p in ax.patches) == 5
    assert [ln.get_gid() for ln in ax.lines] == ["threshold"]
    with pytest.raises(ValueError, match="empty"):
        score_histogram_figure([])
    rng = np.random.default_rng(1)
    parts = [rng.random((2, 10, 10, 10)) for _ in range(5)]
    fig = particle_gallery_figure(parts, 0.1, scores=scores, ids=[11, 12, 13, 14, 15],
                                  max_particles=3)
    render_png(fig)
    assert _labels(fig) == ["15  0.97", "14  0.95", "13  0.60"]  # best first, at most 3
    # one image: each particle's XY projection above its XZ projection, grey range [0, 1]
    (mosaic,) = gid_artists(fig, "mosaic", "images")
    tiles = mosaic.get_array()
    gap, best = 2, parts[4][0]
    xy = tiles[2 * gap:2 * gap + 10, :10]
    xz = tiles[3 * gap + 10:3 * gap + 20, :10]
    for tile, proj in ((xy, best.max(axis=0)), (xz, best.max(axis=1))):
        lo, hi = np.percentile(proj, [0.5, 99.8])
        np.testing.assert_allclose(tile, np.clip((proj - lo) / (hi - lo), 0, 1), atol=1e-6)
    with pytest.raises(ValueError, match="no particle"):
        particle_gallery_figure([], 0.1)


def test_figure_makers_for_picking_results(tmp_path):
    from spfluo.io import write_volume
    from spfluo.objects import (
        Coordinate3D,
        FluoImage,
        Particle,
        SetOfCoordinates3D,
        SetOfFluoImages,
        SetOfParticles,
    )
    from spfluo.viewers import figures_for
    from spfluo.viewers.picking_figures import coordinates_figures, scored_particles_figures

    images = SetOfFluoImages(filename=str(tmp_path / "images.sqlite"))
    for k in range(2):
        path = tmp_path / f"fov{k}.ome.tif"
        write_volume(path, np.random.default_rng(k).random((2, 6, 30, 40), np.float32),
                     (0.3, 0.1, 0.1))
        images.append(FluoImage(filename=str(path), voxelSize=(0.3, 0.1, 0.1),
                                shape=(2, 6, 30, 40), imageId=f"fov{k}"))
    images.write()
    coords = SetOfCoordinates3D(filename=str(tmp_path / "coords.sqlite"))
    coords.setImages(images)
    coords.setBoxSize(0.8)
    parts = SetOfParticles(filename=str(tmp_path / "parts.sqlite"))
    for k, (image_id, score) in enumerate([("fov0", 0.9), ("fov0", 0.3), ("fov1", 0.7)]):
        c = Coordinate3D()
        c.setPosition(1.0 + k, 1.5, 0.6)
        c.setImageId(image_id)
        c.setScore(score)
        coords.append(c)
        path = tmp_path / f"p{k}.ome.tif"
        write_volume(path, np.random.default_rng(k).random((2, 8, 8, 8), np.float32),
                     (0.1,) * 3)
        p = Particle(filename=str(path), voxelSize=(0.1,) * 3, shape=(2, 8, 8, 8))
        p.setCoordinate(c)
        parts.append(p)
    coords.write()
    parts.write()
    figures = dict(coordinates_figures(coords))
    assert set(figures) == {"picks_fov0", "picks_fov1", "scores"}
    assert len(_picks(figures["picks_fov0"])) == 2 and len(_picks(figures["picks_fov1"])) == 1
    for fig in figures.values():
        render_png(fig)
    assert [name for name, _ in figures_for(coords)] == ["picks_fov0", "picks_fov1", "scores"]
    gallery = dict(scored_particles_figures(parts))
    assert list(gallery) == ["by_score"]
    assert _labels(gallery["by_score"]) == ["1  0.90", "3  0.70", "2  0.30"]
    unscored = SetOfParticles(filename=str(tmp_path / "unscored.sqlite"))
    p = Particle(filename=str(tmp_path / "p0.ome.tif"), voxelSize=(0.1,) * 3, shape=(2, 8, 8, 8))
    unscored.append(p)
    unscored.write()
    assert scored_particles_figures(unscored) == []
    empty = SetOfCoordinates3D(filename=str(tmp_path / "empty.sqlite"))
    with pytest.raises(ValueError, match="empty"):
        coordinates_figures(empty)
