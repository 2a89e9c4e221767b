"""Result files of the jobs (spfluo.io.results): round trips and bad files."""

from types import SimpleNamespace

import numpy as np
import pytest

from spfluo.io import (
    REFINE_LOG_COLUMNS,
    read_conical_csv,
    read_energies_csv,
    read_fsc_csv,
    read_marginals_npz,
    read_pose_errors_csv,
    read_refine_log,
    read_summary,
    write_conical_csv,
    write_energies_csv,
    write_fsc_csv,
    write_json_atomic,
    write_marginals_npz,
    write_pose_errors_csv,
    write_refine_log,
)


def test_fsc_round_trip_with_a_channel_without_curve(tmp_path):
    freqs = np.linspace(0, 0.5, 7)
    curve = SimpleNamespace(frequencies=freqs, values=np.cos(freqs))
    write_fsc_csv(tmp_path / "fsc.csv", [curve, None])
    back_freqs, curves = read_fsc_csv(tmp_path / "fsc.csv")
    np.testing.assert_allclose(back_freqs, freqs, rtol=1e-9)
    assert list(curves) == ["channel 0", "channel 1"]
    np.testing.assert_allclose(curves["channel 0"], np.cos(freqs), rtol=1e-9)
    np.testing.assert_array_equal(curves["channel 1"], 0.0)


def test_conical_round_trip_keeps_the_grid_and_phi1_major_order(tmp_path):
    phi1, phi2 = np.radians([0.0, 90.0, 180.0]), np.radians([10.0, 50.0])
    rng = np.random.default_rng(0)
    maps = [SimpleNamespace(phi1=phi1, phi2=phi2, resolution=rng.random((3, 2)))
            for _ in range(2)]
    write_conical_csv(tmp_path / "c.csv", maps)
    p1, p2, back = read_conical_csv(tmp_path / "c.csv")
    np.testing.assert_allclose(p1, phi1, rtol=1e-9)
    np.testing.assert_allclose(p2, phi2, rtol=1e-9)
    for k, m in enumerate(maps):
        np.testing.assert_allclose(back[f"channel {k}"], m.resolution, rtol=1e-9)


def test_pose_errors_round_trip(tmp_path):
    write_pose_errors_csv(tmp_path / "e.csv", [3, 1, 2], [0.5, 12.25, 179.0])
    ids, errors = read_pose_errors_csv(tmp_path / "e.csv")
    assert ids.dtype == np.int64 and ids.tolist() == [3, 1, 2]
    np.testing.assert_allclose(errors, [0.5, 12.25, 179.0])


class _History(SimpleNamespace):
    """The per-iteration arrays of a refinement (what write_refine_log reads)."""

    def __len__(self):
        return len(self.iteration)


def _history(n: int, channels: int = 2) -> _History:
    names = ("iteration", "phase", "step_deg", "range_deg", "energy", "pose_energy",
             "median_change_deg", "mean_change_deg", "median_shift_change", "seconds")
    cols = {name: np.arange(n, dtype=float) + k for k, name in enumerate(names)}
    cols["range_deg"] = np.full(n, np.inf)
    return _History(resolution_per_voxel=np.full((n, channels), 0.25), **cols)


@pytest.mark.filterwarnings("ignore:loadtxt. input contained no data")
@pytest.mark.parametrize("n", [0, 3])
def test_refine_log_round_trip_and_empty_log(tmp_path, n):
    history = _history(n)
    write_refine_log(tmp_path / "log.csv", history)
    log = read_refine_log(tmp_path / "log.csv")
    assert set(log) == set(REFINE_LOG_COLUMNS) | {"resolution"}
    assert log["resolution"].shape == (n, 2)
    np.testing.assert_allclose(log["energy"], history.energy)
    np.testing.assert_allclose(log["median_shift_change_voxels"], history.median_shift_change)
    assert np.all(np.isinf(log["range_deg"]))


def test_energies_round_trip(tmp_path):
    write_energies_csv(tmp_path / "e.csv", [1.5, 0.75], [8, 12], [0.1, 0.2])
    data = read_energies_csv(tmp_path / "e.csv")
    assert data["epoch"].tolist() == [1, 2] and data["band"].tolist() == [8, 12]
    np.testing.assert_allclose(data["energy"], [1.5, 0.75])
    np.testing.assert_allclose(data["seconds"], [0.1, 0.2])


def test_marginals_round_trip(tmp_path):
    arrays = {"ids": np.arange(1, 4), "psi": np.linspace(0, 1, 5), "symmetry": np.asarray(9),
              "psi_marginals": np.full((3, 5), 0.2)}
    write_marginals_npz(tmp_path / "m.npz", arrays)
    back = read_marginals_npz(tmp_path / "m.npz")
    assert list(back) == list(arrays)
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[k], v)


def test_summary_round_trip_and_not_an_object(tmp_path):
    write_json_atomic(tmp_path / "s.json", {"method": "sgd", "wall_s": 1.5})
    assert read_summary(tmp_path / "s.json") == {"method": "sgd", "wall_s": 1.5}
    write_json_atomic(tmp_path / "l.json", [1, 2])
    with pytest.raises(ValueError, match="JSON object"):
        read_summary(tmp_path / "l.json")
    with pytest.raises(FileNotFoundError):
        read_summary(tmp_path / "missing.json")


def test_readers_name_the_wrong_file(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a FSC file"):
        read_fsc_csv(tmp_path / "x.csv")
    with pytest.raises(ValueError, match="not a refinement log"):
        read_refine_log(tmp_path / "x.csv")
    with pytest.raises(ValueError, match="not an ab initio energies CSV"):
        read_energies_csv(tmp_path / "x.csv")
    with pytest.raises(ValueError, match="does not exist"):
        read_pose_errors_csv(tmp_path / "missing.csv")
