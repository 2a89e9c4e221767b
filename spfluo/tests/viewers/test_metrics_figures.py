"""Metric figures render headless (PNG) and show the right numbers at the right places."""

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from mpl_toolkits.mplot3d.art3d import Poly3DCollection

from spfluo.algorithms.geometry import matrix_from_axis_angle, random_rotations
from spfluo.algorithms.metrics import FSCCurve, fsc_resolution
from spfluo.viewers.isosurface import default_level, isosurface_figure, isosurface_mesh
from spfluo.viewers.metrics import (
    conical_fsc_figure,
    fsc_figure,
    orientation_sphere_figure,
    pose_error_histogram,
    rotation_axis_directions,
)

from ._figures import gid_artists, render_png

# ------------------------------------------------------------------------ FSC
def _linear_curve(cross_at):
    """FSC falling linearly from 1 at f=0 to 0 at f=2*cross_at (crosses 0.5 at cross_at)."""
    f = np.arange(17) / 32
    return f, np.clip(1 - f / (2 * cross_at), -0.2, 1)


def test_fsc_figure_marks_resolutions_at_the_crossings():
    f, v = _linear_curve(0.2)
    g, w = _linear_curve(0.1)
    fig = fsc_figure([(f, v), (g, w)], voxel_size=0.05, labels=["good", "bad"])
    render_png(fig)
    # analytic crossings of 1 - f / (2 a) = t  ->  f = 2 a (1 - t)
    for k, a in enumerate((0.2, 0.1)):
        for t in (0.143, 0.5):
            (line,) = gid_artists(fig, f"resolution:{k}:{t:g}")
            assert line.get_xdata()[0] == pytest.approx(2 * a * (1 - t), abs=1e-9)
            assert line.get_ydata()[1] == pytest.approx(t)
    # the legend gives the resolution in micrometres: 0.05 / (2 * 0.2 * 0.5) = 0.25 µm
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("good at 0.5: 0.200 1/voxel (0.25 µm)" in t for t in texts)
    # a top axis in µm^-1 exists for isotropic voxels, not for anisotropic ones
    assert any("µm⁻¹" in ax.get_xlabel() for ax in fig.axes[0].child_axes)
    fig2 = fsc_figure(FSCCurve(f, v, np.zeros(17, int)), voxel_size=(0.1, 0.05, 0.05))
    assert not fig2.axes[0].child_axes


def test_fsc_figure_agrees_with_fsc_resolution_and_handles_no_crossing():
    rng = np.random.default_rng(0)
    f = np.arange(13) / 24
    v = np.clip(np.cos(f * 5) + 0.05 * rng.standard_normal(13), -1, 1)
    curve = FSCCurve(f, v, np.zeros(13, int))
    fig = fsc_figure({"noisy": curve}, thresholds=(0.3,))
    (line,) = gid_artists(fig, "resolution:0:0.3")
    assert line.get_xdata()[0] == pytest.approx(fsc_resolution(curve, threshold=0.3))
    flat = fsc_figure((f, np.ones(13)), voxel_size=0.05)  # never below: no mark, a verdict
    assert not gid_artists(flat, "resolution:0:0.143")
    legend = flat.axes[0].get_legend()
    texts = [t.get_text() for t in legend.get_texts()]
    assert any("not reached below Nyquist (0.1 µm): sample finer" in t for t in texts)
    # a threshold without a crossing is named in the legend without a line sample
    handles = dict(zip(texts, legend.legend_handles))
    (entry,) = [h for t, h in handles.items() if "not reached" in t and "0.143" in t]
    assert entry.get_linestyle() in ("None", "none", "")
    (nyquist,) = gid_artists(flat, "nyquist")
    assert nyquist.get_xdata()[0] == pytest.approx(0.5)
    render_png(flat)
    # the legend sits beside the axes, never over the curves
    renderer = FigureCanvasAgg(flat).get_renderer()
    flat.draw(renderer)
    box = legend.get_window_extent(renderer)
    assert box.x0 >= flat.axes[0].get_window_extent(renderer).x1
    # with the optical cutoff below Nyquist the same curve is not a measurement either,
    # and the cutoff is drawn
    cut = fsc_figure((f, np.ones(13)), voxel_size=0.05, cutoff=0.3)
    (line,) = gid_artists(cut, "cutoff")
    assert line.get_xdata()[0] == pytest.approx(0.3)
    texts = [t.get_text() for t in cut.axes[0].get_legend().get_texts()]
    assert any("past the optical cutoff of the PSF (0.167 µm)" in t for t in texts)
    assert any("optical cutoff of the PSF (0.167 µm)" in t for t in texts)
    # a crossing beyond the cutoff is not marked
    beyond = fsc_figure((f, np.clip(1.5 - 2 * f, 0, 1)), cutoff=0.3)  # crosses 0.143 at 0.68
    assert not gid_artists(beyond, "resolution:0:0.143")


def test_fsc_figure_rejects_bad_input():
    f = np.arange(5) / 10
    with pytest.raises(ValueError, match="same length"):
        fsc_figure((f, np.ones(4)))
    with pytest.raises(ValueError, match="labels has 1 entries for 2"):
        fsc_figure([(f, f), (f, f)], labels=["a"])
    with pytest.raises(ValueError, match="thresholds"):
        fsc_figure((f, f), thresholds=(1.5,))
    with pytest.raises(ValueError, match="NaN"):
        fsc_figure((f, np.full(5, np.nan)))
    with pytest.raises(ValueError, match="voxel_size"):
        fsc_figure((f, f), voxel_size=-1)
    with pytest.raises(ValueError, match="at least one"):
        fsc_figure([])


# ------------------------------------------------------------------ conical FSC
def test_conical_fsc_figure_map_and_profile():
    phi1 = 2 * np.pi * np.arange(8) / 8
    phi2 = np.linspace(0, np.pi / 2, 4)
    res = 0.1 + 0.2 * np.sin(phi2)[None, :] + 0.01 * np.arange(8)[:, None]  # axial worst
    fig = conical_fsc_figure(res, phi1, phi2, voxel_size=0.04, threshold=0.143)
    render_png(fig)
    (mesh,) = gid_artists(fig, "conical_map", "collections")
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(4, 8), res.T)
    (profile,) = gid_artists(fig, "conical_profile")
    np.testing.assert_allclose(profile.get_xdata(), np.degrees(phi2))
    np.testing.assert_allclose(profile.get_ydata(), 0.04 / res.mean(axis=0))  # µm
    with pytest.raises(ValueError, match="shapes"):
        conical_fsc_figure(res, phi1[:3], phi2)
    with pytest.raises(ValueError, match="increasing"):
        conical_fsc_figure(res, phi1[::-1], phi2)
    with pytest.raises(ValueError, match=r"\(n_phi1, n_phi2\)"):
        conical_fsc_figure(res[0], phi1, phi2)


# ------------------------------------------------------------------ pose errors
def test_pose_error_histogram_counts_and_median():
    errors = np.array([0.5, 1.5, 1.6, 2.5, 9.9, 3.0, 0.1])
    fig = pose_error_histogram(errors, bins=10, max_angle=10)
    render_png(fig)
    bars = gid_artists(fig, "hist:0", "patches")
    assert len(bars) == 10
    heights = [b.get_height() for b in bars]
    np.testing.assert_array_equal(heights, np.histogram(errors, bins=10, range=(0, 10))[0])
    assert sum(heights) == errors.size
    (median,) = gid_artists(fig, "median:0")
    assert median.get_xdata()[0] == pytest.approx(1.6)
    two = pose_error_histogram({"a": errors, "b": errors[:3] * 2}, bins=5)
    assert len(gid_artists(two, "hist:1", "patches")) == 5
    assert sum(b.get_height() for b in gid_artists(two, "hist:1", "patches")) == 3
    with pytest.raises(ValueError, match=">= 0 degrees"):
        pose_error_histogram([-1.0, 2.0])
    with pytest.raises(ValueError, match="non-empty"):
        pose_error_histogram(np.array([]))


# ------------------------------------------------------------------ orientations
def test_orientation_sphere_positions_match_analytic_directions():
    # identity: the z axis stays on +z (latitude 90); 90 deg about x (xyz) sends z to -y;
    # 90 deg about y sends z to +x (longitude 0, latitude 0)
    R = np.stack([np.eye(3),
                  matrix_from_axis_angle([1.0, 0.0, 0.0], np.pi / 2),
                  matrix_from_axis_angle([0.0, 1.0, 0.0], np.pi / 2)])
    d = rotation_axis_directions(R)
    np.testing.assert_allclose(d, [[0, 0, 1], [0, -1, 0], [1, 0, 0]], atol=1e-12)
    fig = orientation_sphere_figure(R, true=R[:1])
    render_png(fig)
    (pts,) = gid_artists(fig, "orientations", "collections")
    lonlat = np.asarray(pts.get_offsets())
    np.testing.assert_allclose(lonlat, [[0, np.pi / 2], [-np.pi / 2, 0], [0, 0]], atol=1e-9)
    (true,) = gid_artists(fig, "true_orientations", "collections")
    assert len(true.get_offsets()) == 1


def test_orientation_histogram_follows_the_uniform_expectation():
    R = random_rotations(3000, seed=1)
    fig = orientation_sphere_figure(R, bins=6)
    bars = gid_artists(fig, "inclination_hist", "patches")
    counts = np.array([b.get_height() for b in bars])
    (expected,) = gid_artists(fig, "uniform_expectation")
    assert counts.sum() == 3000
    # uniform rotations: counts within 5 sigma of N (cos a - cos b) / 2
    exp = expected.get_ydata()
    assert np.all(np.abs(counts - exp) < 5 * np.sqrt(exp))
    with pytest.raises(ValueError, match=r"\(N, 3, 3\) or directions \(N, 3\)"):
        orientation_sphere_figure(np.zeros((3, 2)))


# ------------------------------------------------------------------ isosurface
def _ball(shape, centre, radius):
    z, y, x = np.indices(shape)
    r = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
    return np.clip(radius + 0.5 - r, 0, 1).astype(np.float32)  # 0.5 at r = radius


def test_isosurface_mesh_is_in_micrometres():
    vs = (0.1, 0.05, 0.05)
    vol = _ball((16, 24, 20), (8, 10, 9), 5.0)
    verts, faces, level = isosurface_mesh(vol, vs, level=0.5)
    assert level == 0.5 and len(faces) > 100
    # vertices (x, y, z) in µm; the sphere of radius 5 voxels is anisotropic in µm
    centre_um = np.array([9 * 0.05, 10 * 0.05, 8 * 0.1])
    scaled = (verts - centre_um) / np.array([0.05, 0.05, 0.1])
    r = np.linalg.norm(scaled, axis=1)
    assert np.abs(r - 5.0).max() < 0.2
    small, sfaces, _ = isosurface_mesh(vol, vs, level=0.5, max_faces=300)
    assert len(sfaces) <= 300


def test_isosurface_figure_has_faces_and_contours_per_channel():
    vol = np.stack([_ball((16, 16, 16), (8, 8, 8), 4.0), _ball((16, 16, 16), (6, 8, 9), 3.0)])
    fig = isosurface_figure(vol, 0.1, title="two channels")
    render_png(fig)
    for c in range(2):
        (coll,) = gid_artists(fig, f"isosurface:{c}", "collections")
        assert isinstance(coll, Poly3DCollection)
        assert len(coll.get_facecolor()) > 50
        assert gid_artists(fig, f"level_contour:{c}:XY slice", "collections")
    assert 0 < default_level(vol[0]) < 1
    with pytest.raises(ValueError, match="constant"):
        isosurface_figure(np.ones((8, 8, 8)), 0.1)
    with pytest.raises(ValueError, match="outside the intensity range"):
        isosurface_figure(vol[0], 0.1, level=3.0)
    with pytest.raises(ValueError, match="NaN"):
        isosurface_figure(np.full((8, 8, 8), np.nan), 0.1)


# ------------------------------------------------------------------ figure makers
def test_figure_makers_for_comparison_volume_and_posed_particles(tmp_path, monkeypatch):
    from spfluo.io import write_particle_table, write_volume
    from spfluo.jobs.__main__ import main
    from spfluo.jobs.jobfile import write_job
    from spfluo.objects import Particle, SetOfParticles, Volume, VolumeComparison
    from spfluo.viewers import figures_for

    monkeypatch.chdir(tmp_path)
    vol = _ball((16, 16, 16), (8, 8, 8), 4.0)
    write_volume(tmp_path / "v.ome.tif", vol, (0.1,) * 3)
    R = random_rotations(3, seed=0)
    stored = np.tile(np.eye(4), (3, 1, 1))
    stored[:, :3, :3] = R[:, ::-1, ::-1]  # zyx -> xyz
    write_particle_table(tmp_path / "p.csv", [1, 2, 3], ["a", "b", "c"], stored)
    outputs = {"metrics": "m.json", "fsc": "fsc.csv", "conical_fsc": "c.csv",
               "aligned": "al.ome.tif", "pose_errors": "pe.csv"}
    job = write_job(tmp_path / "job.json", step="compare", outputs=outputs,
                    inputs={"volume": "v.ome.tif", "reference": "v.ome.tif",
                            "particles": "p.csv", "reference_particles": "p.csv"},
                    params={"voxel_size": [0.1] * 3, "symmetry": 1, "register": False})
    assert main(["compare", str(job)]) == 0

    comparison = VolumeComparison()
    comparison.setVoxelSize(0.1)
    comparison.setFscFile("fsc.csv")
    comparison.setConicalFscFile("c.csv")
    comparison.setPoseErrorsFile("pe.csv")
    names = [name for name, fig in figures_for(comparison)]
    assert names == ["fsc", "conical_fsc", "pose_errors"]

    volume = Volume(filename="v.ome.tif", voxelSize=(0.1,) * 3, shape=(1, 16, 16, 16))
    figures = dict(figures_for(volume))
    assert "isosurface" in figures and "slices" in figures
    render_png(figures["isosurface"])

    parts = SetOfParticles(filename=str(tmp_path / "parts.sqlite"))
    for k, m in enumerate(stored):
        p = Particle(filename="v.ome.tif", voxelSize=(0.1,) * 3, shape=(1, 16, 16, 16),
                     imageId=f"p{k}")
        p.setTransform(m)
        parts.append(p)
    parts.setHasPoses(True)
    parts.write()
    figures = dict(figures_for(parts))
    (pts,) = gid_artists(figures["orientations"], "orientations", "collections")
    d = rotation_axis_directions(R)
    assert len(pts.get_offsets()) == 3
    np.testing.assert_allclose(np.asarray(pts.get_offsets())[:, 1],
                               np.pi / 2 - np.arccos(np.clip(d[:, 2], -1, 1)), atol=1e-9)
    parts.setHasPoses(False)
    assert "orientations" not in dict(figures_for(parts))


def test_orthoslices_put_voxel_centres_where_the_isosurface_puts_them():
    from spfluo.viewers.slices import orthoslices_figure

    # one bright voxel at (z, y, x) = (3, 5, 7) in a volume of 0.1 x 0.05 x 0.05 µm voxels
    vol = np.zeros((8, 10, 12), dtype=np.float32)
    vol[3, 5, 7] = 1.0
    fig = orthoslices_figure(vol, (0.1, 0.05, 0.05))
    xy_max = fig.axes[3].images[0]  # "XY max": the bright voxel shows in the projection
    left, right, bottom, top = xy_max.get_extent()
    assert (left, right) == pytest.approx((-0.025, 11.5 * 0.05))
    assert (top, bottom) == pytest.approx((-0.025, 9.5 * 0.05))
    # the pixel centre of index (5, 7) is at (x, y) = (7, 5) * 0.05 µm, as the mesh vertices
    # of isosurface_mesh (marching cubes with the voxel size as spacing) put voxel centres
    col = (7 * 0.05 - left) / (right - left) * vol.shape[2]
    row = (5 * 0.05 - top) / (bottom - top) * vol.shape[1]
    assert (int(row), int(col)) == (5, 7) and (row % 1, col % 1) == pytest.approx((0.5, 0.5))
    verts, _, _ = isosurface_mesh(vol, (0.1, 0.05, 0.05), level=0.5)
    assert verts.mean(axis=0) == pytest.approx([0.35, 0.25, 0.3], abs=1e-6)  # (x, y, z)


def test_in_plane_error_figure_shows_the_resultant_and_chance():
    from spfluo.viewers.metrics import in_plane_error_figure

    rng = np.random.default_rng(0)
    recovered = in_plane_error_figure(np.abs(rng.normal(0, 1, 50)), rng.normal(0, 1.0, 50), 9)
    chance = in_plane_error_figure(np.abs(rng.normal(0, 1, 50)), rng.uniform(-20, 20, 50), 9)
    r_good = float(recovered.axes[1].get_title().split()[-1])
    r_bad = float(chance.axes[1].get_title().split()[-1])
    assert r_good > 0.95 and r_bad < 0.4
    assert recovered.axes[1].get_xlim() == pytest.approx((-20.0, 20.0))
    level = next(a for a in recovered.axes[1].get_lines() if a.get_gid() == "chance")
    assert level.get_ydata()[0] == pytest.approx(50 / 24)
    with pytest.raises(ValueError, match="same length"):
        in_plane_error_figure([1.0, 2.0], [1.0], 9)
