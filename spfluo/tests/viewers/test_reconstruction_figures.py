"""Reconstruction figures render headless and show the Fourier coverage of the poses."""

import numpy as np
import pytest

from spfluo.algorithms.geometry import Poses, random_rotations
from spfluo.algorithms.psf import gaussian_psf
from spfluo.algorithms.reconstruct import precompute_sums
from spfluo.viewers.reconstruction import directional_coverage, fourier_coverage_figure

from ._figures import gid_artists, render_png

SIGMA_Z, SIGMA_XY = 2.0, 1.0


@pytest.fixture(scope="module")
def coverages():
    """K of one particle seen along z, and of 40 particles at random orientations."""
    p = 24
    psf = gaussian_psf((15, 15, 15), (SIGMA_Z, SIGMA_XY))
    y = np.zeros((40, 1, p, p, p), np.float32)
    one = precompute_sums(y[:1], Poses.identity(1), psf, pad=1.0).coverage()
    many = precompute_sums(y, Poses(random_rotations(40, seed=0), np.zeros((40, 3))), psf,
                           pad=1.0).coverage()
    return one[0], many[0]


def test_single_view_leaves_the_axial_direction_poorly_measured(coverages):
    one, many = coverages
    radius = 3 / 24  # on the grid along the axes: no interpolation between samples of K
    phi1, phi2, values = directional_coverage(one, radius=radius, n_directions=(36, 10))
    assert values.shape == (36, 10) and phi2[0] == 0 and phi2[-1] == pytest.approx(np.pi / 2)
    # Gaussian OTF: |H(k)|^2 = exp(-4 pi^2 (sz^2 kz^2 + sxy^2 kxy^2)) (the voxel
    # integration adds 1/12 to both variances), so along z (phi2 = 0) against x (phi1 = 0,
    # phi2 = pi/2) the ratio is exp(-4 pi^2 r^2 (sz^2 - sxy^2))
    expected = np.exp(-4 * np.pi**2 * radius**2 * (SIGMA_Z**2 - SIGMA_XY**2))
    ratio = values[0, 0] / values[0, -1]
    assert ratio == pytest.approx(expected, rel=0.03)
    assert np.ptp(values[:, 0]) < 1e-6 * values[0, 0]  # the pole, whatever the azimuth
    assert np.ptp(values[:, -1]) < 0.05 * values[:, -1].mean()  # symmetric about z
    _, _, spread = directional_coverage(many, radius=radius, n_directions=(36, 10))
    assert spread.min() / spread.max() > 3 * values.min() / values.max()  # 0.74 vs 0.16


def test_coverage_figure(coverages):
    one, many = coverages
    fig = fourier_coverage_figure(np.stack([one, many]), voxel_size=0.05, radius=0.15,
                                  channel_names=["one view", "40 views"], title="coverage")
    render_png(fig)
    for c in (0, 1):
        assert len(gid_artists(fig, f"coverage_map:{c}", "images")) == 1
        for plane in ("kx=0", "ky=0", "kz=0"):
            assert len(gid_artists(fig, f"coverage_section:{c}:{plane}", "images")) == 1
    section = gid_artists(fig, "coverage_section:0:kx=0", "images")[0].get_array()
    assert section.shape == (24, 24)
    # log10 K: the single view is wide in ky (columns) and narrow in kz (rows)
    peak = section.max()
    assert (section[12, :] > peak - 2).sum() > (section[:, 12] > peak - 2).sum()
    titles = " ".join(ax.get_title() for ax in fig.axes)
    assert "0.15 cycles/voxel = 3 µm⁻¹" in titles


def test_coverage_inputs_are_checked(coverages):
    one, _ = coverages
    with pytest.raises(ValueError, match="centred cubic spectrum"):
        fourier_coverage_figure(one[:, :, :5])
    with pytest.raises(ValueError, match=">= 0"):
        fourier_coverage_figure(-one)
    with pytest.raises(ValueError, match="radius must be in"):
        directional_coverage(one, radius=0.7)
    with pytest.raises(ValueError, match="one channel"):
        directional_coverage(np.stack([one, one]))
    with pytest.raises(ValueError, match="n_directions"):
        directional_coverage(one, n_directions=(1, 5))


def test_figure_maker_for_reconstructions(tmp_path, coverages):
    import pyworkflow.object as pwobj

    from spfluo.io import write_volume
    from spfluo.objects import Volume
    from spfluo.viewers.reconstruction_figures import reconstruction_figures

    one, _ = coverages
    vol_path = tmp_path / "volume.ome.tif"
    write_volume(vol_path, np.random.default_rng(0).random((1, 12, 12, 12), np.float32),
                 (0.05,) * 3)
    plain = Volume(filename=str(vol_path), voxelSize=(0.05,) * 3, shape=(1, 12, 12, 12))
    assert reconstruction_figures(plain) == []
    freqs = np.arange(7) / 12
    (tmp_path / "fsc.csv").write_text("frequency_per_voxel,fsc_channel_0\n" + "".join(
        f"{f:.6g},{v:.6g}\n" for f, v in zip(freqs, np.linspace(1, 0, 7))))
    write_volume(tmp_path / "coverage.ome.tif", one[None], (0.05,) * 3)
    vol = Volume(filename=str(vol_path), voxelSize=(0.05,) * 3, shape=(1, 12, 12, 12))
    vol.setFscFile(str(tmp_path / "fsc.csv"))
    vol.setCoverageFile(str(tmp_path / "coverage.ome.tif"))
    assert vol.getFiles() == {str(vol_path), str(tmp_path / "fsc.csv"),
                              str(tmp_path / "coverage.ome.tif")}
    figures = dict(reconstruction_figures(vol))
    assert set(figures) == {"half_map_fsc", "fourier_coverage"}
    for fig in figures.values():
        render_png(fig)
    marks = [ln for ax in figures["half_map_fsc"].axes for ln in ax.lines
             if ln.get_gid() == "resolution:0:0.143"]
    assert len(marks) == 1 and marks[0].get_xdata()[0] == pytest.approx(
        (1 - 0.143) * 6 / 12, abs=1e-3)  # linear FSC 1 -> 0 over 6 shells of 1/12
    # a project made before Volume had the field: the dynamic attribute is still read
    legacy = Volume(filename=str(vol_path), voxelSize=(0.05,) * 3, shape=(1, 12, 12, 12))
    legacy.coverageFile = pwobj.String(str(tmp_path / "coverage.ome.tif"))
    assert legacy.getCoverageFile() == str(tmp_path / "coverage.ome.tif")
    assert [name for name, _ in reconstruction_figures(legacy)] == ["fourier_coverage"]


def test_volumes_without_reconstruction_files_get_no_reconstruction_figure(tmp_path):
    """A simulated ground truth, files recorded but deleted, no voxel size: [] each time
    from this maker, and the other makers of volumes do not raise either."""
    from spfluo.algorithms.phantoms import c9_barrel
    from spfluo.io import write_volume
    from spfluo.objects import Volume
    from spfluo.viewers import figures_for
    from spfluo.viewers.reconstruction_figures import reconstruction_figures

    path = tmp_path / "truth.ome.tif"
    write_volume(path, c9_barrel(16)[None], (0.05,) * 3)
    truth = Volume(filename=str(path), voxelSize=(0.05,) * 3, shape=(1, 16, 16, 16),
                   imageId="ground truth")
    assert reconstruction_figures(truth) == []
    assert truth.getCoverageFile() is None and truth.getFiles() == {str(path)}
    names = [name for name, _ in figures_for(truth)]
    assert "slices" in names and not {"half_map_fsc", "fourier_coverage"} & set(names)
    gone = Volume(filename=str(path), voxelSize=(0.05,) * 3, shape=(1, 16, 16, 16))
    gone.setHalfMaps(tmp_path / "h1.ome.tif", tmp_path / "h2.ome.tif")
    gone.setFscFile(tmp_path / "fsc.csv")
    gone.setCoverageFile(tmp_path / "coverage.ome.tif")
    assert reconstruction_figures(gone) == []
    bare = Volume(filename=str(path), shape=(1, 16, 16, 16))  # no voxel size recorded
    assert not bare.hasVoxelSize() and reconstruction_figures(bare) == []
