"""Particle tables and stacks: round trips, poses optional, batches, clear errors."""

import numpy as np
import pytest

from spfluo.io import (
    iter_particle_batches,
    read_particle_stack,
    read_particle_table,
    write_particle_table,
    write_volume,
)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    paths, data = [], []
    for k in range(5):
        vol = rng.random((2, 6, 6, 6), dtype=np.float32)
        p = tmp_path / f"p{k}.ome.tif"
        write_volume(p, vol, (0.1, 0.1, 0.1))
        paths.append(str(p))
        data.append(vol)
    return paths, np.stack(data)


def test_table_without_poses_round_trip(tmp_path, files):
    paths, _ = files
    write_particle_table(tmp_path / "t.csv", [3, 1, 2, 5, 4], paths, extra={"score": [0.1] * 5})
    table = read_particle_table(tmp_path / "t.csv")
    assert not table.has_poses and table.matrices is None
    assert table.ids.tolist() == [3, 1, 2, 5, 4]
    assert table.paths.tolist() == paths
    assert table.extra["score"] == pytest.approx([0.1] * 5)


def test_table_with_poses_round_trip(tmp_path, files):
    paths, _ = files
    M = np.tile(np.eye(4), (5, 1, 1))
    M[:, :3, 3] = np.arange(15).reshape(5, 3) * 0.01
    M[1, :3, :3] = [[0, 0, 1], [0, 1, 0], [-1, 0, 0]]
    write_particle_table(tmp_path / "t.csv", range(5), paths, M)
    table = read_particle_table(tmp_path / "t.csv")
    assert table.has_poses
    np.testing.assert_allclose(table.matrices, M)
    assert table.paths.tolist() == paths


def test_stack_and_batches(files):
    paths, data = files
    stack = read_particle_stack(paths)
    assert stack.shape == (5, 2, 6, 6, 6) and stack.dtype == np.float32
    np.testing.assert_array_equal(stack, data)
    batches = list(iter_particle_batches(paths, 2))
    assert [b[1].shape[0] for b in batches] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), data)
    with pytest.raises(ValueError, match="batch_size"):
        list(iter_particle_batches(paths, 0))


def test_errors(tmp_path, files):
    paths, _ = files
    with pytest.raises(ValueError, match="one path per particle"):
        write_particle_table(tmp_path / "t.csv", [1, 2], paths)
    (tmp_path / "bad.csv").write_text("id,file\n1,a.tif\n")
    with pytest.raises(ValueError, match="'id' and 'path'"):
        read_particle_table(tmp_path / "bad.csv")
    (tmp_path / "dup.csv").write_text("id,path\n1,a.tif\n1,b.tif\n")
    with pytest.raises(ValueError, match="repeats"):
        read_particle_table(tmp_path / "dup.csv")
    write_volume(tmp_path / "odd.ome.tif", np.zeros((2, 6, 6, 7), np.float32), (0.1, 0.1, 0.1))
    with pytest.raises(ValueError, match="odd.ome.tif"):
        read_particle_stack(paths[:2] + [str(tmp_path / "odd.ome.tif")])
