"""Tests of spfluo.io.atomic: complete file or no file, never a leftover temporary."""

import json

import numpy as np
import pytest

from spfluo.io.atomic import atomic_write_path, write_json_atomic


def test_success_renames_temporary(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_write_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_text("done")
        assert not target.exists()  # nothing visible before the block ends
    assert target.read_text() == "done"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_interrupted_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_write_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_keeps_previous_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write_path(target) as tmp:
            tmp.write_text("new, incomplete")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_block_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_write_path(tmp_path / "out.txt"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_and_folder_target(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        with atomic_write_path(tmp_path / "no" / "out.txt"):
            pass
    with pytest.raises(ValueError, match="existing folder"):
        with atomic_write_path(tmp_path):
            pass


def test_write_json_atomic_round_trip(tmp_path):
    obj = {"n": np.int64(3), "x": np.float32(0.5), "a": np.arange(3), "p": tmp_path / "f",
           "ok": np.bool_(True), "nested": [{"v": 1.25}]}
    path = write_json_atomic(tmp_path / "job.json", obj)
    assert json.loads(path.read_text()) == {"n": 3, "x": 0.5, "a": [0, 1, 2],
                                            "p": str(tmp_path / "f"), "ok": True,
                                            "nested": [{"v": 1.25}]}


def test_write_json_atomic_rejects_nan(tmp_path):
    with pytest.raises(ValueError, match=r"'metrics\.fsc\[1\]' is NaN or infinite"):
        write_json_atomic(tmp_path / "m.json", {"metrics": {"fsc": [1.0, float("nan")]}})
    assert list(tmp_path.iterdir()) == []
    path = write_json_atomic(tmp_path / "m.json", {"v": float("inf")}, allow_nan=True)
    assert json.loads(path.read_text()) == {"v": float("inf")}


def test_write_json_atomic_unserialisable_leaves_nothing(tmp_path):
    with pytest.raises(TypeError, match="not JSON serialisable"):
        write_json_atomic(tmp_path / "m.json", {"v": object()})
    assert list(tmp_path.iterdir()) == []
