"""Tests of spfluo.io.volumes: round trips, hand-made files, metadata units, errors."""

import re
import subprocess
import sys

import mrcfile
import numpy as np
import pytest
import tifffile

from spfluo.io import volumes
from spfluo.io.volumes import VolumeData, read_shape, read_volume, read_voxel_size, write_volume

VOXEL = (0.3, 0.11, 0.065)  # anisotropic (z, y, x), micrometres


def _random(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _assert_voxel_size(found, expected, rtol=1e-6):
    assert found is not None
    np.testing.assert_allclose(found, expected, rtol=rtol)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", ["v.ome.tif", "v.ome.tiff", "v.tif", "v.tiff"])
@pytest.mark.parametrize("n_channels", [1, 3])
def test_tiff_round_trip(tmp_path, name, n_channels):
    data = _random((n_channels, 5, 7, 6), seed=n_channels)
    names = [f"ch{k}" for k in range(n_channels)]
    path = write_volume(tmp_path / name, data, VOXEL, channel_names=names)
    vol = read_volume(path)
    assert isinstance(vol, VolumeData)
    assert vol.data.dtype == np.float32 and vol.data.shape == (n_channels, 5, 7, 6)
    np.testing.assert_array_equal(vol.data, data)
    _assert_voxel_size(vol.voxel_size, VOXEL)
    assert vol.channel_names == tuple(names)
    assert read_shape(path) == (n_channels, 5, 7, 6)
    _assert_voxel_size(read_voxel_size(path), VOXEL)
    # the files are what they claim to be
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome == (".ome." in name)
        assert tif.is_imagej == (".ome." not in name)


def test_three_dimensional_input_gives_one_channel(tmp_path):
    data = _random((4, 5, 6))
    vol = read_volume(write_volume(tmp_path / "v.tif", data, VOXEL))
    assert vol.data.shape == (1, 4, 5, 6) and vol.n_channels == 1
    assert vol.shape_zyx == (4, 5, 6)
    np.testing.assert_array_equal(vol.data[0], data)
    assert vol.channel_names is None


@pytest.mark.parametrize("name", ["v.mrc", "v.map"])
def test_mrc_round_trip(tmp_path, name):
    data = _random((6, 5, 7), seed=3)
    path = write_volume(tmp_path / name, data, VOXEL)
    vol = read_volume(path)
    np.testing.assert_array_equal(vol.data, data[None])
    _assert_voxel_size(vol.voxel_size, VOXEL)  # header holds float32 Angstrom
    assert read_shape(path) == (1, 6, 5, 7)
    # independent check of the header: mrcfile voxel size (x, y, z) in Angstrom
    with mrcfile.open(path, header_only=True) as mrc:
        vs = mrc.voxel_size
        np.testing.assert_allclose([vs.x, vs.y, vs.z], [650.0, 1100.0, 3000.0], rtol=1e-6)


def test_mrc_refuses_several_channels(tmp_path):
    with pytest.raises(ValueError, match=r"MRC holds one channel.*\.tif"):
        write_volume(tmp_path / "v.mrc", _random((2, 4, 4, 4)), VOXEL)
    assert list(tmp_path.iterdir()) == []


def test_integer_data_kept_and_read_as_float(tmp_path):
    data = np.random.default_rng(1).integers(0, 60000, (3, 4, 5)).astype(np.uint16)
    path = write_volume(tmp_path / "v.tif", data, VOXEL)
    assert tifffile.imread(path).dtype == np.uint16
    vol = read_volume(path, dtype=np.float64)
    assert vol.data.dtype == np.float64
    np.testing.assert_array_equal(vol.data[0], data.astype(np.float64))


def test_write_replaces_existing_file(tmp_path):
    path = tmp_path / "v.ome.tif"
    write_volume(path, np.zeros((3, 4, 5), np.float32), VOXEL)
    write_volume(path, np.ones((2, 4, 5), np.float32), (1.0, 1.0, 1.0))
    vol = read_volume(path)
    assert vol.data.shape == (1, 2, 4, 5) and vol.data.min() == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["v.ome.tif"]


# --------------------------------------------------------------------------- hand-made files


def test_imagej_nanometres_and_zcyx_order(tmp_path):
    # ImageJ hyperstack written by tifffile directly: ZCYX planes, sizes in nanometres
    zcyx = _random((4, 2, 5, 6), seed=5)
    path = tmp_path / "ij_nm.tif"
    tifffile.imwrite(path, zcyx, imagej=True, resolution=(1 / 65.0, 1 / 80.0),
                     metadata={"axes": "ZCYX", "spacing": 250.0, "unit": "nm"})
    vol = read_volume(path)
    np.testing.assert_array_equal(vol.data, zcyx.transpose(1, 0, 2, 3))
    _assert_voxel_size(vol.voxel_size, (0.25, 0.080, 0.065))
    assert read_shape(path) == (2, 4, 5, 6)


@pytest.mark.parametrize("unit, scale", [("\\u00B5m", 1.0), ("um", 1.0), ("micron", 1.0),
                                         ("mm", 1e3), ("cm", 1e4)])
def test_imagej_units(tmp_path, unit, scale):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, _random((3, 4, 5)), imagej=True, resolution=(1 / 0.002, 1 / 0.002),
                     metadata={"spacing": 0.005, "unit": unit})
    _assert_voxel_size(read_voxel_size(path), (0.005 * scale, 0.002 * scale, 0.002 * scale))


def test_imagej_unknown_unit_is_an_error(tmp_path):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, _random((3, 4, 5)), imagej=True, resolution=(2.0, 2.0),
                     metadata={"spacing": 1.0, "unit": "furlong"})
    with pytest.raises(ValueError, match=r"unknown length unit 'furlong'.*ij\.tif"):
        read_voxel_size(path)


def test_imagej_single_plane_gets_x_as_z(tmp_path):
    path = tmp_path / "plane.tif"
    tifffile.imwrite(path, _random((5, 6)), imagej=True, resolution=(10.0, 10.0),
                     metadata={"unit": "um"})
    vol = read_volume(path)
    assert vol.data.shape == (1, 1, 5, 6)
    _assert_voxel_size(vol.voxel_size, (0.1, 0.1, 0.1))


def test_ome_units_and_tzcyx_with_one_time_point(tmp_path):
    tzcyx = _random((1, 3, 2, 4, 5), seed=7)
    path = tmp_path / "hand.ome.tif"
    tifffile.imwrite(path, tzcyx, ome=True, photometric="minisblack",
                     metadata={"axes": "TZCYX", "PhysicalSizeX": 0.0001, "PhysicalSizeXUnit": "mm",
                               "PhysicalSizeY": 120.0, "PhysicalSizeYUnit": "nm",
                               "PhysicalSizeZ": 0.5})  # Z unit defaults to micrometre
    vol = read_volume(path)
    np.testing.assert_array_equal(vol.data, tzcyx[0].transpose(1, 0, 2, 3))
    _assert_voxel_size(vol.voxel_size, (0.5, 0.12, 0.1))
    assert read_shape(path) == (2, 3, 4, 5)


def test_time_series_is_refused(tmp_path):
    path = tmp_path / "t.ome.tif"
    tifffile.imwrite(path, _random((2, 3, 4, 5)), ome=True, photometric="minisblack",
                     metadata={"axes": "TZYX"})
    with pytest.raises(ValueError, match=r"t\.ome\.tif' is a time series with 2 time points"):
        read_shape(path)


def test_plain_tiff_needs_voxel_size(tmp_path):
    data = _random((3, 4, 5))
    path = tmp_path / "plain.tif"
    for z in range(3):  # a plain multi-page TIFF, no metadata
        tifffile.imwrite(path, data[z], append=True, metadata=None, photometric="minisblack")
    assert read_voxel_size(path) is None
    assert read_shape(path) == (1, 3, 4, 5)
    with pytest.raises(ValueError, match=r"no voxel size found in '.*plain\.tif'.*pass "
                                         r"voxel_size=\(z, y, x\) in micrometres or set it in "
                                         r"the import protocol"):
        read_volume(path)
    vol = read_volume(path, voxel_size=(0.2, 0.1, 0.1))
    assert vol.voxel_size == (0.2, 0.1, 0.1)
    np.testing.assert_array_equal(vol.data[0], data)


def test_uncalibrated_imagej_file_has_no_voxel_size(tmp_path):
    path = tmp_path / "raw.tif"
    tifffile.imwrite(path, _random((3, 4, 5)), imagej=True)  # no unit, no resolution
    assert read_voxel_size(path) is None
    tifffile.imwrite(path, _random((3, 4, 5)), imagej=True, resolution=(2.0, 2.0),
                     metadata={"spacing": 1.0, "unit": "pixel"})
    assert read_voxel_size(path) is None


def test_given_voxel_size_overrides_metadata(tmp_path):
    path = write_volume(tmp_path / "v.tif", _random((3, 4, 5)), VOXEL)
    assert read_volume(path, voxel_size=(1.0, 2.0, 3.0)).voxel_size == (1.0, 2.0, 3.0)


def test_mrc_without_voxel_size(tmp_path):
    path = tmp_path / "nv.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(_random((3, 4, 5)))  # voxel size left at 0
    assert read_voxel_size(path) is None
    with pytest.raises(ValueError, match=r"no voxel size found in '.*nv\.mrc'"):
        read_volume(path)


def test_mrc_non_standard_axis_order(tmp_path):
    # columns along z, rows along y, sections along x: the data block is stored (X, Y, Z)
    zyx = _random((3, 4, 5), seed=9)
    path = tmp_path / "swapped.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.ascontiguousarray(zyx.transpose(2, 1, 0)))
        mrc.header.mapc, mrc.header.mapr, mrc.header.maps = 3, 2, 1
    vol = read_volume(path, voxel_size=VOXEL)
    np.testing.assert_array_equal(vol.data[0], zyx)
    assert read_shape(path) == (1, 3, 4, 5)


# --------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    for func in (read_volume, read_shape, read_voxel_size):
        with pytest.raises(FileNotFoundError, match=r"nope\.tif"):
            func(tmp_path / "nope.tif")


@pytest.mark.parametrize("name", ["v.tif", "v.ome.tif", "v.mrc"])
def test_truncated_file(tmp_path, name):
    path = write_volume(tmp_path / name, _random((4, 8, 8)), VOXEL)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) * 3 // 4])
    with pytest.raises(ValueError, match=rf"'.*{re.escape(name)}'.*(truncated|corrupt)"):
        read_volume(path)
    if name.endswith(".mrc") or name == "v.tif":  # contiguous data: cheap size check
        with pytest.raises(ValueError, match="truncated"):
            read_shape(path)


@pytest.mark.parametrize("name", ["junk.tif", "junk.mrc"])
def test_not_a_volume_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not an image" * 100)
    for func in (read_volume, read_shape, read_voxel_size):
        with pytest.raises(ValueError, match=rf"cannot read volume file '.*{re.escape(name)}' \(corrupt"):
            func(path)


def test_nan_voxels_rejected(tmp_path):
    data = _random((3, 4, 5))
    data[1, 2, 3] = np.nan
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, data, imagej=True, resolution=(10.0, 10.0),
                     metadata={"spacing": 0.1, "unit": "um"})
    with pytest.raises(ValueError, match=r"'.*nan\.tif' contains 1 NaN or infinite"):
        read_volume(path)


def test_unsupported_extension(tmp_path):
    (tmp_path / "v.png").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unsupported volume file extension.*\.ome\.tif"):
        read_volume(tmp_path / "v.png")
    with pytest.raises(ValueError, match="unsupported volume file extension"):
        write_volume(tmp_path / "v.h5", _random((2, 2, 2)), VOXEL)


@pytest.mark.parametrize("data, voxel_size, names, match", [
    (np.zeros((2, 2)), VOXEL, None, r"shape \(Z, Y, X\) or \(C, Z, Y, X\)"),
    (np.zeros((1, 2, 2, 2, 2)), VOXEL, None, r"shape \(Z, Y, X\) or \(C, Z, Y, X\)"),
    (np.full((2, 2, 2), np.nan), VOXEL, None, "NaN"),
    (np.zeros((2, 2, 2), complex), VOXEL, None, "real-valued"),
    (np.zeros((2, 2, 2)), (0.1, 0.1), None, "voxel_size must be"),
    (np.zeros((2, 2, 2)), (0.1, -0.1, 0.1), None, "voxel_size must be"),
    (np.zeros((2, 2, 2, 2)), VOXEL, ["a"], "1 names for 2 channels"),
    (np.zeros((2, 2, 2, 2)), VOXEL, "ab", "wrap it in a list"),
])
def test_write_volume_validation(tmp_path, data, voxel_size, names, match):
    with pytest.raises(ValueError, match=match):
        write_volume(tmp_path / "v.tif", data, voxel_size, channel_names=names)
    assert list(tmp_path.iterdir()) == []


def test_read_volume_validation(tmp_path):
    path = write_volume(tmp_path / "v.tif", _random((2, 3, 4)), VOXEL)
    with pytest.raises(ValueError, match="voxel_size must be"):
        read_volume(path, voxel_size=(0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="floating point dtype"):
        read_volume(path, dtype=np.int32)


def test_volume_data_validation():
    with pytest.raises(ValueError, match=r"shape \(C, Z, Y, X\)"):
        VolumeData(np.zeros((2, 3, 4)), VOXEL)
    with pytest.raises(ValueError, match="one name per channel"):
        VolumeData(np.zeros((2, 1, 3, 4)), VOXEL, ("a",))


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    path = tmp_path / "v.ome.tif"
    write_volume(path, np.zeros((2, 3, 4), np.float32), VOXEL)
    before = path.read_bytes()

    def broken_imwrite(name, *args, **kwargs):
        with open(name, "wb") as fh:
            fh.write(b"II*\x00partial")
        raise OSError("disk full")

    monkeypatch.setattr(volumes.tifffile, "imwrite", broken_imwrite)
    with pytest.raises(OSError, match="disk full"):
        write_volume(path, np.ones((2, 3, 4), np.float32), VOXEL)
    with pytest.raises(OSError, match="disk full"):
        write_volume(tmp_path / "new.tif", np.ones((2, 3, 4), np.float32), VOXEL)
    assert [p.name for p in tmp_path.iterdir()] == ["v.ome.tif"]
    assert path.read_bytes() == before


def test_io_does_not_import_pyworkflow():
    code = ("import sys, spfluo.io; "
            "bad = [m for m in ('pyworkflow', 'matplotlib') if m in sys.modules]; "
            "sys.exit(str(bad) if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + result.stdout
