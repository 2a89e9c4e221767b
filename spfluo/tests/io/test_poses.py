"""Tests of spfluo.io.poses: CSV round trips, Euler convention against scipy, errors."""

import csv

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from spfluo.algorithms.geometry import Poses
from spfluo.io.poses import PoseTable, read_poses_csv, write_poses_csv


def _stored_poses(n, seed=0):
    rng = np.random.default_rng(seed)
    M = np.zeros((n, 4, 4))
    M[:, :3, :3] = Rotation.random(n, random_state=seed).as_matrix()
    M[:, :3, 3] = rng.normal(scale=0.5, size=(n, 3))  # micrometres
    M[:, 3, 3] = 1.0
    return M


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_matrix_round_trip_is_exact(tmp_path):
    M = _stored_poses(7)
    ids = np.array([5, 3, 11, 0, 8, 2, 40])
    path = write_poses_csv(tmp_path / "poses.csv", ids, M)
    table = read_poses_csv(path)
    np.testing.assert_array_equal(table.ids, ids)
    np.testing.assert_array_equal(table.matrices, M)
    assert table.extra == {}
    rows = _rows(path)
    assert list(rows[0]) == ["id"] + [f"m{r}{c}" for r in range(3) for c in range(4)]
    assert float(rows[2]["m13"]) == M[2, 1, 3]  # translation t_y of the third pose, um


def test_euler_round_trip(tmp_path):
    M = _stored_poses(20, seed=1)
    path = write_poses_csv(tmp_path / "poses.csv", np.arange(20), M, format="euler")
    assert list(_rows(path)[0]) == ["id", "rot", "tilt", "psi", "tx", "ty", "tz"]
    table = read_poses_csv(path)
    np.testing.assert_allclose(table.matrices, M, atol=1e-12)


def test_euler_columns_follow_relion_convention(tmp_path):
    # Oracle: A(rot, tilt, psi) = Rotation.from_euler("ZYZ", angles).as_matrix().T (xyz frame)
    rng = np.random.default_rng(2)
    angles = np.stack([rng.uniform(-170, 170, 6), rng.uniform(10, 170, 6),
                       rng.uniform(-170, 170, 6)], axis=1)
    M = np.tile(np.eye(4), (6, 1, 1))
    M[:, :3, :3] = Rotation.from_euler("ZYZ", angles, degrees=True).as_matrix().transpose(0, 2, 1)
    M[:, :3, 3] = [[0.1, -0.2, 0.3]] * 6
    rows = _rows(write_poses_csv(tmp_path / "e.csv", range(6), M, format="euler"))
    got = np.array([[float(r["rot"]), float(r["tilt"]), float(r["psi"])] for r in rows])
    np.testing.assert_allclose(got, angles, atol=1e-9)
    assert [float(rows[0][k]) for k in ("tx", "ty", "tz")] == [0.1, -0.2, 0.3]


def test_hand_written_euler_file(tmp_path):
    path = tmp_path / "hand.csv"
    path.write_text("# poses typed by hand\n"
                    "id,rot,tilt,psi,tx,ty,tz,path\n"
                    "\n"
                    "1,90,0,0,0.5,0,-1,\"particles/p 1.tif\"\n"
                    "2,0,90,0,0,0,0,\"particles/p,2.tif\"\n")
    table = read_poses_csv(path)
    # RELION's A for (90, 0, 0) is the passive rotation Rz(90): [[0, 1, 0], [-1, 0, 0], [0, 0, 1]];
    # for (0, 90, 0) it is Ry(90) passive: [[0, 0, -1], [0, 1, 0], [1, 0, 0]].
    np.testing.assert_allclose(table.rotations[0], [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], atol=1e-15)
    np.testing.assert_allclose(table.rotations[1], [[0, 0, -1], [0, 1, 0], [1, 0, 0]], atol=1e-15)
    np.testing.assert_array_equal(table.translations_um, [[0.5, 0, -1], [0, 0, 0]])
    assert table.extra["path"].tolist() == ["particles/p 1.tif", "particles/p,2.tif"]


def test_extra_columns_pass_through(tmp_path):
    M = _stored_poses(3, seed=4)
    extra = {"path": ["a b.tif", 'q"uote.tif', "c,d.tif"], "score": [0.5, 1.25, -3.0],
             "class_id": [1, 2, 2]}
    for fmt in ("matrix", "euler"):
        table = read_poses_csv(write_poses_csv(tmp_path / f"{fmt}.csv", [1, 2, 3], M,
                                               format=fmt, extra=extra))
        assert table.extra["path"].tolist() == extra["path"]
        np.testing.assert_array_equal(table.extra["score"], extra["score"])
        assert table.extra["class_id"].dtype == np.int64
        np.testing.assert_array_equal(table.extra["class_id"], extra["class_id"])


def test_empty_table_round_trip(tmp_path):
    for fmt in ("matrix", "euler"):
        table = read_poses_csv(write_poses_csv(tmp_path / "e.csv", [], np.zeros((0, 4, 4)),
                                               format=fmt))
        assert len(table) == 0 and table.matrices.shape == (0, 4, 4)


def test_rounded_rotations_are_accepted_and_made_orthonormal(tmp_path):
    M = _stored_poses(4, seed=5)
    rounded = np.round(M, 4)  # as another tool might write them
    table = read_poses_csv(write_poses_csv(tmp_path / "r.csv", range(4), rounded))
    R = table.rotations
    np.testing.assert_allclose(R.transpose(0, 2, 1) @ R, np.broadcast_to(np.eye(3), R.shape),
                               atol=1e-12)
    np.testing.assert_allclose(R, M[:, :3, :3], atol=1e-4)
    # and geometry accepts them (voxel size (z, y, x) = (0.2, 0.1, 0.1) um)
    poses = Poses.from_stored(table.matrices, (0.2, 0.1, 0.1))
    np.testing.assert_allclose(poses.translations[0], rounded[0, [2, 1, 0], 3] / [0.2, 0.1, 0.1])


# --------------------------------------------------------------------------- reader errors


def _write(tmp_path, text):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return path


MATRIX_HEADER = "id," + ",".join(f"m{r}{c}" for r in range(3) for c in range(4))
IDENTITY_ROW = "1,1,0,0,0,0,1,0,0,0,0,1,0"


@pytest.mark.parametrize("text, match", [
    ("id,a,b\n1,2,3\n", r"bad\.csv': the header \(id, a, b\) has neither the matrix columns"),
    ("", r"bad\.csv' is empty; a poses CSV file starts with a header"),
    ("id,rot,tilt,psi,tx,ty,tz\n1,0,nan,0,0,0,0\n", r"line 2, column 'tilt'.*finite number"),
    ("id,rot,tilt,psi,tx,ty,tz\n1,0,0,0,0,0,0\n2,0,,0,0,0,0\n", r"line 3, column 'tilt': '' is not a number"),
    ("id,rot,tilt,psi,tx,ty,tz\n1,0,0,0,0,0,0\n\n1,0,0,0,0,0,0\n", r"line 4: id 1 already used on line 2"),
    ("id,rot,tilt,psi,tx,ty,tz\n1.5,0,0,0,0,0,0\n", r"line 2, column 'id': '1.5' is not an integer"),
    ("id,rot,tilt,psi,tx,ty,tz\n1,0,0,0,0,0\n", r"line 2: 6 values for 7 columns"),
    (f"{MATRIX_HEADER}\n{IDENTITY_ROW}\n2,1,0,0,0,0,1.01,0,0,0,0,1,0\n",
     r"line 3: the rotation m00..m22 is not orthonormal.*more decimals or fix the matrix"),
    (f"{MATRIX_HEADER}\n2,-1,0,0,0,0,1,0,0,0,0,1,0\n", r"line 2: the rotation.*det = -1"),
])
def test_reader_errors_name_file_and_line(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        read_poses_csv(_write(tmp_path, text))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"poses file not found: '.*nope\.csv'"):
        read_poses_csv(tmp_path / "nope.csv")


# --------------------------------------------------------------------------- writer errors


@pytest.mark.parametrize("ids, M, kwargs, match", [
    ([1, 2], np.tile(np.eye(4), (2, 1, 1)), {"format": "quaternion"}, "format must be"),
    ([1, 2], np.tile(np.eye(4), (3, 1, 1)), {}, r"shape \(N, 4, 4\) = \(2, 4, 4\)"),
    ([1, 1], np.tile(np.eye(4), (2, 1, 1)), {}, "repeat the id 1"),
    ([1.5], np.eye(4)[None], {}, "ids must be a"),
    ([1], np.diag([1.0, 1.0, -1.0, 1.0])[None], {}, "not a rotation"),
    ([1], np.diag([1.0, 1.0, 1.0, 2.0])[None], {}, "last row"),
    ([1], np.full((1, 4, 4), np.nan), {}, "NaN"),
    ([1], np.eye(4)[None], {"extra": {"score": [1, 2]}}, r"'score' must have shape \(1,\)"),
    ([1], np.eye(4)[None], {"extra": {"tx": [1]}}, "clashes with a pose column"),
])
def test_writer_validation(tmp_path, ids, M, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_poses_csv(tmp_path / "p.csv", ids, M, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_pose_table_is_frozen():
    table = PoseTable(ids=[1], matrices=np.eye(4)[None])
    with pytest.raises(AttributeError):
        table.ids = np.array([2])
