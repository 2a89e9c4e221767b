"""Pixel scans of volume files: every format, the plane of a NaN, bounded memory."""

import tracemalloc
import warnings

import mrcfile
import numpy as np
import pytest
import tifffile

from spfluo.io import write_volume
from spfluo.io.scan import scan_volume, volume_problems


def _stack(rng, shape=(2, 6, 10, 12)):
    return rng.random(shape, dtype=np.float32) + 1.0


def _write(kind, path, data):
    """Write (C, Z, Y, X) ``data`` holding NaN/Inf, which write_volume refuses."""
    if kind == "imagej":
        tifffile.imwrite(path, np.ascontiguousarray(data.transpose(1, 0, 2, 3)), imagej=True,
                         metadata={"axes": "ZCYX"})
    elif kind == "ome":
        tifffile.imwrite(path, data, ome=True, metadata={"axes": "CZYX"})
    else:
        with warnings.catch_warnings(), mrcfile.new(path, overwrite=True) as mrc:
            warnings.simplefilter("ignore", RuntimeWarning)  # mrcfile warns of the NaN
            mrc.set_data(data[0])


@pytest.mark.parametrize("kind, name", [("imagej", "f.tif"), ("ome", "f.ome.tif"),
                                        ("mrc", "f.mrc")])
def test_the_first_non_finite_plane_is_found(tmp_path, kind, name):
    data = _stack(np.random.default_rng(0))
    channel = 0 if kind == "mrc" else 1
    data[channel, 3, 4, 5] = np.nan
    data[channel, 4, :2, :] = np.inf
    _write(kind, tmp_path / name, data)
    scan = scan_volume(tmp_path / name)
    assert scan.nonfinite == (channel, 3, 1) and scan.n_nonfinite == 1 + 2 * 12
    problems = volume_problems(scan)
    assert len(problems) == 1
    assert f"{tmp_path / name} holds 25 NaN or infinite value(s), the first 1 in plane z=3 of " \
           f"channel {channel}" in problems[0]
    finite = np.isfinite(data)
    assert scan.minimum[channel] == pytest.approx(data[channel][finite[channel]].min())
    assert scan.maximum[0] == pytest.approx(data[0][finite[0]].max())


def test_2d_constant_and_zero_images_are_named(tmp_path):
    rng = np.random.default_rng(1)
    tifffile.imwrite(tmp_path / "plane.tif", rng.random((16, 16), dtype=np.float32))
    (problem,) = volume_problems(scan_volume(tmp_path / "plane.tif"))
    assert "plane.tif is a 2D image (one plane of 16 x 16 pixels)" in problem
    data = _stack(rng)
    data[1] = 7.0
    write_volume(tmp_path / "const.tif", data, (0.2, 0.1, 0.1))
    (problem,) = volume_problems(scan_volume(tmp_path / "const.tif"))
    assert "const.tif channel 1 is constant (7)" in problem
    write_volume(tmp_path / "zero.ome.tif", np.zeros((4, 8, 8), np.uint16), (0.2, 0.1, 0.1))
    (problem,) = volume_problems(scan_volume(tmp_path / "zero.ome.tif"), what="PSF")
    assert "zero.ome.tif is all zero" in problem
    write_volume(tmp_path / "thin.tif", rng.random((2, 8, 8), dtype=np.float32), (0.2, 0.1, 0.1))
    (problem,) = volume_problems(scan_volume(tmp_path / "thin.tif"))
    assert "has 2 x 8 x 8 voxels" in problem


def test_rgb_samples_are_channels(tmp_path):
    rgb = (np.random.default_rng(2).random((5, 8, 9, 3)) * 255).astype(np.uint8)
    rgb[..., 2] = 0
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    scan = scan_volume(tmp_path / "rgb.tif")
    assert scan.shape == (3, 5, 8, 9)
    assert scan.maximum.tolist() == [rgb[..., 0].max(), rgb[..., 1].max(), 0]
    assert volume_problems(scan) == [f"{tmp_path / 'rgb.tif'} channel 2 is all zero: it holds "
                                     "no signal; check the export (channel, bit depth) of this "
                                     "file."]


def test_memory_is_one_plane_whatever_the_file_size(tmp_path):
    plane = 256 * 256 * 4
    data = np.random.default_rng(3).random((1, 64, 256, 256), dtype=np.float32)
    write_volume(tmp_path / "big.ome.tif", data, (0.2, 0.1, 0.1))
    del data
    tracemalloc.start()
    try:
        scan_volume(tmp_path / "big.ome.tif")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * plane  # the file is 64 planes
