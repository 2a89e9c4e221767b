"""Refinement figures: convergence plot, pose-change histogram, the makers on job files."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from spfluo.algorithms.refine import RefineHistory
from spfluo.io import write_particle_table
from spfluo.io.results import read_refine_log
from spfluo.io.results import write_refine_log as _write_log
from spfluo.viewers.refine import convergence_figure, pose_change_histogram


def _history(n_channels=2, half_maps=True):
    h = RefineHistory.empty(n_channels)
    rows = [(0, 20.0, np.inf, 9.0), (0, 5.0, 10.0, 3.0), (0, 1.0, 5.0, 0.0),
            (1, np.nan, np.nan, 0.2)]
    for k, (phase, step, rng, change) in enumerate(rows):
        res = np.array([0.2 + 0.02 * k, 0.1 + 0.01 * k][:n_channels]) if half_maps else \
            np.full(n_channels, np.nan)
        h = h.appended(iteration=k, phase=phase, step_deg=step, range_deg=rng,
                       energy=-100.0 - k, pose_energy=0.5 - 0.01 * k,
                       median_change_deg=change, mean_change_deg=change + 1,
                       median_shift_change=0.1, resolution_per_voxel=res, seconds=1.0 + k)
    return h


def _gids(fig):
    return {a.get_gid() for ax in fig.axes for a in ax.get_children() if a.get_gid()}


def test_convergence_figure_from_a_written_log(tmp_path):
    _write_log(tmp_path / "log.csv", _history())
    log = read_refine_log(tmp_path / "log.csv")
    assert log["range_deg"][0] == np.inf and np.isnan(log["step_deg"][3])
    fig = convergence_figure(log, voxel_size=(0.05, 0.05, 0.05), title="t")
    assert isinstance(fig, Figure) and len(fig.axes) >= 3
    gids = _gids(fig)
    assert {"energy", "change", "resolution:0", "resolution:1", "phase:continuous"} <= gids
    energy = next(a for a in fig.axes[0].get_lines() if a.get_gid() == "energy")
    np.testing.assert_allclose(energy.get_ydata(), [-100, -101, -102, -103])
    change = next(a for a in fig.axes[1].get_lines() if a.get_gid() == "change")
    np.testing.assert_allclose(change.get_ydata(), [9.0, 3.0, 0.0, 0.2])  # 0 drawn at 0
    assert fig.axes[1].get_yscale() == "symlog" and fig.axes[1].get_ylim()[0] == 0
    # the search steps are drawn and named in the legend, not bare labels
    step = next(a for a in fig.axes[1].get_lines() if a.get_gid() == "search_step")
    np.testing.assert_allclose(step.get_ydata(), [20.0, 5.0, 1.0])
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert any("angular step" in t for t in legend) and not fig.axes[1].texts
    # the resolution in µm (0.05 µm voxels): 0.05 / f; Nyquist at 2 voxels
    res = next(a for a in fig.axes[2].get_lines() if a.get_gid() == "resolution:1")
    np.testing.assert_allclose(res.get_ydata(), 0.05 / np.array([0.1, 0.11, 0.12, 0.13]))
    nyquist = next(a for a in fig.axes[2].get_lines() if a.get_gid() == "nyquist")
    assert nyquist.get_ydata()[0] == pytest.approx(0.1)
    assert "µm" in fig.axes[2].get_ylabel()
    fig.canvas.draw()  # renders headless
    # every tick label written out: no offset ("1e7") and no squashed scientific ticks
    right = fig.axes[2].child_axes[0]
    for axis in (fig.axes[2].yaxis, right.yaxis):
        assert axis.get_offset_text().get_text() == ""
        labels = [t.get_text() for t in axis.get_ticklabels() if t.get_text()]
        assert labels and all("e" not in t.lower() for t in labels)
    # the panel spans the data, from just below Nyquist (0.1 µm) to the coarsest value
    lo, hi = fig.axes[2].get_ylim()
    assert 0.09 <= lo <= 0.1 and 0.5 < hi < 0.6


def test_convergence_figure_without_half_maps_says_so():
    h = _history(n_channels=1, half_maps=False)
    log = {"iteration": h.iteration, "phase": h.phase, "step_deg": h.step_deg,
           "energy": h.energy, "median_change_deg": h.median_change_deg,
           "resolution": h.resolution_per_voxel}
    fig = convergence_figure(log)
    assert not any(g.startswith("resolution:") for g in _gids(fig))
    texts = [t.get_text() for t in fig.axes[2].texts]
    assert any("no half maps" in t for t in texts)


def test_convergence_figure_rejects_bad_logs():
    good = {"iteration": [0, 1], "phase": [0, 0], "step_deg": [5, 1], "energy": [1, 0.5],
            "median_change_deg": [2.0, 0.5], "resolution": [[0.2], [0.3]]}
    with pytest.raises(ValueError, match="'energy' entry"):
        convergence_figure({k: v for k, v in good.items() if k != "energy"})
    with pytest.raises(ValueError, match="log is empty"):
        convergence_figure({**good, "iteration": [], "phase": [], "step_deg": [],
                            "energy": [], "median_change_deg": [], "resolution": []})
    with pytest.raises(ValueError, match="1D array of 2 values"):
        convergence_figure({**good, "energy": [1.0]})
    with pytest.raises(ValueError, match=">= 0 degrees"):
        convergence_figure({**good, "median_change_deg": [-1.0, 0.5]})
    with pytest.raises(ValueError, match="2 rows"):
        convergence_figure({**good, "resolution": [[0.2]]})
    with pytest.raises(ValueError, match="voxel_size"):
        convergence_figure(good, voxel_size=-1.0)
    with pytest.raises(ValueError, match="mapping"):
        convergence_figure([1, 2])


def test_pose_change_histogram_marks_medians():
    a = np.array([0.5, 1.0, 2.0, 8.0])
    fig = pose_change_histogram({"from the input poses": a, "last iteration": a / 10})
    med = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid() == "median:0"]
    assert med and med[0].get_xdata()[0] == pytest.approx(1.5)
    assert fig.axes[0].get_xlabel() == "rotation change (deg)"
    with pytest.raises(ValueError, match=">= 0 degrees"):
        pose_change_histogram([-1.0, 2.0])


def test_volume_maker_reads_the_job_files(tmp_path):
    import pyworkflow.object as pwobj

    from spfluo.objects import Volume
    from spfluo.viewers.refine_figures import refinement_figures

    _write_log(tmp_path / "log.csv", _history())
    write_particle_table(tmp_path / "parts.csv", [1, 2, 3], ["a", "b", "c"],
                         np.tile(np.eye(4), (3, 1, 1)),
                         extra={"pose_change_deg": [1.0, 2.0, 3.0],
                                "last_change_deg": [0.1, 0.2, 0.3]})
    vol = Volume(filename=str(tmp_path / "v.ome.tif"), voxelSize=(0.05,) * 3,
                 shape=(2, 8, 8, 8))
    assert refinement_figures(vol) == []  # not a refinement
    vol.refinementLog = pwobj.String(str(tmp_path / "log.csv"))
    vol.refinedParticlesFile = pwobj.String(str(tmp_path / "parts.csv"))
    figures = dict(refinement_figures(vol))
    assert set(figures) == {"refine_convergence", "refine_pose_changes"}
    medians = [ln.get_xdata()[0] for ax in figures["refine_pose_changes"].axes
               for ln in ax.get_lines() if (ln.get_gid() or "").startswith("median:")]
    assert sorted(medians) == pytest.approx([0.2, 2.0])


def test_in_plane_margin_histogram_counts_the_undetermined():
    from spfluo.viewers.refine import in_plane_margin_histogram

    margins = np.array([0.1, 0.5, 1.5, 3.0, 12.0, 40.0, 250.0, np.nan])
    fig = in_plane_margin_histogram(margins, threshold=2.0)
    ax = fig.axes[0]
    assert "3 of 7 particle(s) not determined" in ax.get_title()
    assert sum(p.get_height() for p in ax.patches) == 7  # the NaN left out
    line = next(a for a in ax.get_lines() if a.get_gid() == "threshold")
    assert line.get_xdata()[0] == pytest.approx(2.0)
    assert "nats" in ax.get_xlabel()
    with pytest.raises(ValueError, match="no finite margin"):
        in_plane_margin_histogram([np.nan], threshold=2.0)
