"""Tests of spfluo.algorithms.geometry.units: micrometres <-> voxels.

Oracle: the inline arithmetic the conversions replace (``length_um / voxel_size``,
``positions * voxel_size``), which they must reproduce bit for bit.
"""

import json

import numpy as np
import pytest

from spfluo.algorithms.geometry import (
    um_to_voxels,
    vectors_um_to_voxels,
    vectors_voxels_to_um,
    voxels_to_um,
)

VOXEL_SIZES = (0.02, 0.04, 0.05, 0.06, 0.064, 0.1, 0.12, 0.33)


def test_lengths_equal_the_inline_quotient_and_product():
    for v in VOXEL_SIZES:
        for length in (0.0, 0.05, 0.3, 1.7, 12.5):
            assert um_to_voxels(length, v) == length / v
            assert voxels_to_um(length, v) == length * v
    assert isinstance(um_to_voxels(np.float32(0.5), np.float64(0.1)), float)


def test_lengths_round_trip_through_a_job_file_within_one_ulp():
    # a form value in voxels, written in micrometres to the job JSON, read back in voxels
    for v in VOXEL_SIZES:
        for voxels in np.arange(0.0, 10.0, 0.25):
            um = json.loads(json.dumps(voxels_to_um(float(voxels), v)))
            back = um_to_voxels(um, v)
            assert back == pytest.approx(voxels, rel=2.3e-16, abs=0.0)


def test_vectors_convert_per_axis_and_keep_shape():
    rng = np.random.default_rng(0)
    pos = rng.uniform(0.0, 100.0, (7, 3))
    vs = (0.12, 0.06, 0.05)
    um = vectors_voxels_to_um(pos, vs)
    np.testing.assert_array_equal(um, pos * np.asarray(vs))
    np.testing.assert_array_equal(vectors_um_to_voxels(um, vs), um / np.asarray(vs))
    np.testing.assert_allclose(vectors_um_to_voxels(um, vs), pos, rtol=1e-15)
    assert vectors_voxels_to_um(np.zeros((0, 3)), vs).shape == (0, 3)
    assert vectors_voxels_to_um([1.0, 2.0, 3.0], 0.5).tolist() == [0.5, 1.0, 1.5]
    assert vectors_um_to_voxels(pos.astype(np.float32), vs).dtype == np.float64


@pytest.mark.parametrize("call, match", [
    (lambda: um_to_voxels(1.0, 0.0), "voxel_size must be finite and > 0"),
    (lambda: um_to_voxels(1.0, (0.1, 0.1, 0.1)), "voxel_size must be one number"),
    (lambda: voxels_to_um(float("nan"), 0.1), "length_voxels must be finite"),
    (lambda: um_to_voxels("a", 0.1), "length_um must be a number"),
    (lambda: vectors_um_to_voxels([1.0, 2.0], 0.1), r"shape \(\.\.\., 3\)"),
    (lambda: vectors_voxels_to_um([1.0, 2.0, 3.0], (0.1, -0.1, 0.1)), "voxel_size must be"),
])
def test_bad_input_is_rejected_with_a_reason(call, match):
    with pytest.raises(ValueError, match=match):
        call()
