"""Ab initio figures render headless and put the numbers where they belong."""

import json

import numpy as np
import pytest

from spfluo.algorithms.geometry import direction_angles, so3_grid
from spfluo.viewers.abinitio import direction_map_figure, energy_figure, psi_marginals_figure

from ._figures import gid_artists, render_png

def test_energy_figure_marks_the_band_switch_and_times():
    energies = [0.9, 0.4, 0.2, 0.3, 0.25]
    fig = energy_figure(energies, bands=[14, 14, 14, 28, 28], seconds=[1, 1, 1, 4, 4])
    (line,) = gid_artists(fig, "energy")
    np.testing.assert_allclose(line.get_xdata(), [1, 2, 3, 4, 5])
    np.testing.assert_allclose(line.get_ydata(), energies)
    (switch,) = gid_artists(fig, "band_switch")
    assert switch.get_xdata()[0] == pytest.approx(3.5)  # between epochs 3 and 4
    bars = gid_artists(fig, "epoch_seconds", kind="patches")
    assert [b.get_height() for b in bars] == [1, 1, 1, 4, 4]
    assert fig.axes[0].get_xlabel() == "epoch"
    render_png(fig)
    fig = energy_figure([3.0, 2.0], method="annealing")
    assert "chain" in fig.axes[0].get_xlabel() and not gid_artists(fig, "band_switch")
    with pytest.raises(ValueError, match="seconds has 1 values for 2"):
        energy_figure([1.0, 2.0], seconds=[1.0])
    with pytest.raises(ValueError, match="non-empty 1D"):
        energy_figure([])


def test_psi_marginals_draw_one_curve_per_particle_and_the_true_values():
    psi = 2 * np.pi * np.arange(36) / 36
    rng = np.random.default_rng(0)
    marg = rng.uniform(size=(5, 36))
    marg /= marg.sum(axis=1, keepdims=True)
    fig = psi_marginals_figure(psi, marg, true_index=[0, 9, 18, 27, 35], split=2)
    curves = gid_artists(fig, "psi_marginal")
    assert len(curves) == 5 and len(fig.axes) == 2
    np.testing.assert_allclose(sorted(np.concatenate([c.get_ydata() for c in curves])),
                               sorted(marg.ravel()))
    bars = gid_artists(fig, "true_psi")
    assert sorted(b.get_xdata()[0] for b in bars) == pytest.approx([0, 90, 180, 270, 350])
    # a bar has the colour of its particle's curve
    assert bars[0].get_color() == curves[0].get_color()
    render_png(fig)
    fig = psi_marginals_figure(psi[:8], marg[:, :8], symmetry=9)
    assert fig.axes[-1].get_xlim() == pytest.approx((0, 40))
    with pytest.raises(ValueError, match="marginals must have shape"):
        psi_marginals_figure(psi, marg[:, :10])
    with pytest.raises(ValueError, match="true_index"):
        psi_marginals_figure(psi, marg, true_index=[0, 1])


def test_direction_map_puts_the_likelihood_at_its_direction():
    grid = so3_grid(300, 1)
    like = np.zeros((2, 300))
    like[0, 17] = 1.0
    like[1, 17] = 0.5
    fig = direction_map_figure(grid.directions, like, true_directions=grid.directions[[17]],
                               resolution=2)
    (image,) = gid_artists(fig, "direction_map", kind="images")
    data = np.asarray(image.get_array())
    assert data.max() == pytest.approx(1.5)  # summed over particles
    phi1, phi2 = direction_angles(grid.directions[17])
    rows, cols = np.nonzero(data == data.max())
    # the bright pixels are around (phi1, phi2) of direction 17 (2-degree pixels)
    assert np.degrees(phi2) == pytest.approx(rows.mean() * 2 + 1, abs=8)
    assert np.degrees(phi1) == pytest.approx(cols.mean() * 2 + 1, abs=8)
    (cross,) = gid_artists(fig, "true_directions")
    assert cross.get_xdata()[0] == pytest.approx(np.degrees(phi1))
    assert cross.get_ydata()[0] == pytest.approx(np.degrees(phi2))
    render_png(fig)
    with pytest.raises(ValueError, match="likelihood must have shape"):
        direction_map_figure(grid.directions, like[:, :10])


def test_volume_maker_reads_the_job_files(tmp_path):
    from spfluo.objects import Volume
    from spfluo.viewers import figures_for
    from spfluo.viewers.abinitio_figures import abinitio_figures

    (tmp_path / "energies.csv").write_text(
        "epoch,energy,band,seconds\n1,0.5,14,1.0\n2,0.3,28,2.0\n")
    grid = so3_grid(50, 8)
    rng = np.random.default_rng(1)
    marg_psi = rng.uniform(size=(3, 8))
    marg_d = rng.uniform(size=(3, 50))
    rotations = grid.matrices()[[1, 2, 3], [0, 1, 2]]
    np.savez(tmp_path / "marginals.npz", ids=np.arange(1, 4), psi=grid.psi,
             directions=grid.directions, symmetry=np.asarray(1),
             psi_marginals=marg_psi / marg_psi.sum(1, keepdims=True),
             direction_marginals=marg_d / marg_d.sum(1, keepdims=True), rotations=rotations,
             true_rotations=rotations, true_psi_index=np.array([0, 1, 2]),
             true_direction_index=np.array([1, 2, 3]), pose_errors_deg=np.zeros(3))
    (tmp_path / "abinitio.json").write_text(json.dumps({"method": "sgd"}))
    import pyworkflow.object as pwobj

    from spfluo.io import write_volume

    blob = np.exp(-((np.indices((8, 8, 8)) - 4.0) ** 2).sum(0) / 4.0).astype(np.float32)
    write_volume(tmp_path / "v.ome.tif", blob[None], (0.1,) * 3)
    volume = Volume(filename=str(tmp_path / "v.ome.tif"), voxelSize=(0.1,) * 3,
                    shape=(1, 8, 8, 8), imageId="abinitio")
    assert abinitio_figures(volume) == []  # a plain volume: no ab initio figure
    volume.energiesFile = pwobj.String(str(tmp_path / "energies.csv"))
    volume.marginalsFile = pwobj.String(str(tmp_path / "marginals.npz"))
    volume.summaryFile = pwobj.String(str(tmp_path / "abinitio.json"))
    figures = dict(abinitio_figures(volume))
    assert list(figures) == ["abinitio_energy", "abinitio_psi_marginals",
                             "abinitio_direction_map", "abinitio_orientations"]
    assert len(gid_artists(figures["abinitio_psi_marginals"], "true_psi")) == 3
    assert gid_artists(figures["abinitio_orientations"], "true_orientations", kind="collections")
    for fig in figures.values():
        render_png(fig)
    assert "abinitio_energy" in [name for name, _ in figures_for(volume)]
