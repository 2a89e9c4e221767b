"""Tests of spfluo.io.coordinates: CSV round trips, axis order on disk, errors."""

import csv

import numpy as np
import pytest

from spfluo.io.coordinates import CoordinateTable, read_coordinates_csv, write_coordinates_csv


def _table(n=6, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    return CoordinateTable(image_ids=rng.integers(0, 3, n),
                           positions_zyx_um=rng.uniform(0, 20, (n, 3)), **kwargs)


def test_round_trip_with_all_columns(tmp_path):
    n = 6
    rng = np.random.default_rng(1)
    table = _table(n, score=rng.random(n), box_size_um=np.full(n, 1.5),
                   particle_id=np.arange(10, 10 + n))
    back = read_coordinates_csv(write_coordinates_csv(tmp_path / "c.csv", table))
    np.testing.assert_array_equal(back.image_ids, table.image_ids)
    assert back.image_ids.dtype == np.int64
    np.testing.assert_array_equal(back.positions_zyx_um, table.positions_zyx_um)
    np.testing.assert_array_equal(back.score, table.score)
    np.testing.assert_array_equal(back.box_size_um, table.box_size_um)
    np.testing.assert_array_equal(back.particle_id, table.particle_id)


def test_round_trip_minimal_and_disk_order(tmp_path):
    table = _table(4, seed=2)
    path = write_coordinates_csv(tmp_path / "c.csv", table)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["image_id", "x", "y", "z"]
    # on disk x, y, z; in memory (z, y, x)
    assert [float(rows[1][k]) for k in "xyz"] == table.positions_zyx_um[1, ::-1].tolist()
    back = read_coordinates_csv(path)
    assert back.score is None and back.box_size_um is None and back.particle_id is None
    np.testing.assert_array_equal(back.positions_zyx_um, table.positions_zyx_um)
    assert len(back) == 4


def test_string_image_ids_and_extra_columns(tmp_path):
    path = tmp_path / "hand.csv"
    path.write_text("# picked by hand\n"
                    "image_id,x,y,z,comment\n"
                    "fov 1.tif,1.0,2.0,3.0,good\n"
                    "\n"
                    "fov2.tif,0,0.5,0,\"ok, maybe\"\n")
    table = read_coordinates_csv(path)
    assert table.image_ids.tolist() == ["fov 1.tif", "fov2.tif"]
    np.testing.assert_array_equal(table.positions_zyx_um, [[3.0, 2.0, 1.0], [0.0, 0.5, 0.0]])
    back = read_coordinates_csv(write_coordinates_csv(tmp_path / "c.csv", table))
    assert back.image_ids.tolist() == ["fov 1.tif", "fov2.tif"]


def test_empty_table(tmp_path):
    table = CoordinateTable(image_ids=[], positions_zyx_um=np.zeros((0, 3)))
    back = read_coordinates_csv(write_coordinates_csv(tmp_path / "c.csv", table))
    assert len(back) == 0 and back.positions_zyx_um.shape == (0, 3)


@pytest.mark.parametrize("text, match", [
    ("image_id,x,y\n1,2,3\n", r"c\.csv': missing column\(s\) z; a coordinates CSV needs the header"),
    ("image_id,x,y,z\n1,1,1,1\n1,nan,1,1\n", r"c\.csv', line 3, column 'x'.*finite number"),
    ("image_id,x,y,z\n1,1,1,abc\n", r"line 2, column 'z': 'abc' is not a number"),
    ("image_id,x,y,z\n1,1,-0.5,1\n", r"line 2, column 'y': negative coordinate -0.5"),
    ("image_id,x,y,z\n,1,1,1\n", r"line 2: empty image_id"),
    ("image_id,x,y,z,particle_id\n1,1,1,1,4\n1,1,1,1,4\n", r"line 3: particle_id 4 already used on line 2"),
    ("image_id,x,y,z,box_size_um\n1,1,1,1,0\n", r"line 2, column 'box_size_um': 0.0 is not a positive size"),
    ("image_id,x,y,z,score\n1,1,1,1,inf\n", r"line 2, column 'score'.*finite number"),
    ("", r"c\.csv' is empty"),
])
def test_reader_errors(tmp_path, text, match):
    path = tmp_path / "c.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_coordinates_csv(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"coordinates file not found: '.*nope\.csv'"):
        read_coordinates_csv(tmp_path / "nope.csv")


@pytest.mark.parametrize("kwargs, match", [
    ({"image_ids": [1, 2], "positions_zyx_um": np.zeros((3, 3))}, r"shape \(N, 3\) = \(2, 3\)"),
    ({"image_ids": [1], "positions_zyx_um": [[0, -1, 0]]}, "negative at row 0"),
    ({"image_ids": [1], "positions_zyx_um": [[0, np.nan, 0]]}, "NaN or infinite at row 0"),
    ({"image_ids": [1.5], "positions_zyx_um": [[0, 0, 0]]}, "integers or strings"),
    ({"image_ids": [1], "positions_zyx_um": [[0, 0, 0]], "score": [1, 2]}, r"score must have shape \(1,\)"),
    ({"image_ids": [1], "positions_zyx_um": [[0, 0, 0]], "box_size_um": [-1]}, "box_size_um must be > 0"),
    ({"image_ids": [1, 1], "positions_zyx_um": np.zeros((2, 3)), "particle_id": [3, 3]}, "repeats the id 3"),
])
def test_table_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CoordinateTable(**kwargs)


def test_writer_needs_a_table(tmp_path):
    with pytest.raises(ValueError, match="table must be a CoordinateTable"):
        write_coordinates_csv(tmp_path / "c.csv", {"x": [1]})
