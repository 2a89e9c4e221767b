"""Fields read part by part (spfluo.io.fields) against the whole-file reader."""

import pickle

import numpy as np
import pytest
import tifffile

from spfluo.io import read_volume, write_volume
from spfluo.io.fields import open_field

VS = (0.3, 0.1, 0.1)


@pytest.fixture(scope="module")
def volume():
    return np.random.default_rng(0).integers(0, 60000, (2, 7, 33, 29)).astype(np.uint16)


REGIONS = [(slice(None), slice(3, 20), slice(0, 29)), (slice(2, 5), slice(30, 33), slice(5, 6)),
           (slice(None), slice(None), slice(None))]


def _check(reader, whole):
    assert reader.shape == whole.shape and reader.dtype == np.float32
    for key in REGIONS:
        part = reader[key]
        assert part.dtype == np.float32
        np.testing.assert_array_equal(part, whole[key])


@pytest.mark.parametrize("name", ["f.ome.tif", "f.tif"])
def test_contiguous_tiff_is_memory_mapped(tmp_path, volume, name):
    path = write_volume(tmp_path / name, volume, VS)
    whole = read_volume(path).data
    for c in range(2):
        reader = open_field(path, c)
        assert reader.mode == "mmap" and reader.stored_dtype == np.uint16
        _check(reader, whole[c])
    again = pickle.loads(pickle.dumps(reader))  # holds no open file: goes to a worker
    np.testing.assert_array_equal(again[:, 4:9, 2:3], whole[1][:, 4:9, 2:3])


def test_compressed_tiff_is_read_plane_by_plane(tmp_path, volume):
    path = tmp_path / "z.tif"
    # ImageJ order (Z, C, Y, X), compressed: no contiguous block to map
    tifffile.imwrite(path, volume.transpose(1, 0, 2, 3), imagej=True, compression="zlib",
                     metadata={"axes": "ZCYX"})
    whole = read_volume(path, voxel_size=VS).data
    np.testing.assert_array_equal(whole, volume)
    for c in range(2):
        reader = open_field(path, c)
        assert reader.mode == "planes"
        _check(reader, whole[c])


def test_mrc_is_memory_mapped(tmp_path, volume):
    path = write_volume(tmp_path / "f.mrc", volume[0].astype(np.float32), VS)
    reader = open_field(path)
    assert reader.mode == "mmap"
    _check(reader, read_volume(path).data[0])


def test_missing_channel_is_refused(tmp_path, volume):
    path = write_volume(tmp_path / "f.ome.tif", volume, VS)
    with pytest.raises(Exception, match="2 channel\\(s\\); channel 2 does not exist"):
        open_field(path, 2)
    with pytest.raises(TypeError, match="read by slices"):
        open_field(path, 0)[0]
