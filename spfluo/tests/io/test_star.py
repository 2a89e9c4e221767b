"""Tests of spfluo.io.star: parsing, round trips, RELION pose convention checked by hand."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from spfluo.io.star import read_poses_star, read_star, write_poses_star, write_star
from spfluo.tests._relion import relion_matrix

# A RELION 3.1 particles file typed by hand: comments, "#k" label numbers, quoted names.
HAND_STAR = """
# version 30001

data_optics

loop_
_rlnOpticsGroup #1
_rlnOpticsGroupName #2
_rlnImagePixelSize #3
1 opticsGroup1 650.000000   # 65 nm pixels

data_particles

loop_
_rlnImageName #1
_rlnAngleRot #2
_rlnAngleTilt #3
_rlnAnglePsi #4
_rlnOriginXAngst #5
_rlnOriginYAngst #6
_rlnOriginZAngst #7
_rlnOpticsGroup #8
"particles/part 1.tif"   90.000000   0.000000   0.000000  1000.0     0.0      0.0 1
particles/part2.tif       0.000000  90.000000   0.000000     0.0  -2500.0      0.0 1
'particles/it"s.tif'      0.000000   0.000000  90.000000     0.0      0.0  650.0 1
particles/part4.tif      30.000000  60.000000 -45.000000     1.5     -2.5    3.25 1
"""


def test_read_star_hand_snippet(tmp_path):
    path = tmp_path / "hand.star"
    path.write_text(HAND_STAR)
    blocks = read_star(path)
    assert list(blocks) == ["optics", "particles"]
    assert blocks["optics"]["rlnOpticsGroup"].dtype == np.int64
    assert blocks["optics"]["rlnImagePixelSize"].tolist() == [650.0]
    particles = blocks["particles"]
    assert list(particles)[0] == "rlnImageName"
    assert particles["rlnImageName"].tolist() == ["particles/part 1.tif", "particles/part2.tif",
                                                  'particles/it"s.tif', "particles/part4.tif"]
    np.testing.assert_array_equal(particles["rlnAngleTilt"], [0.0, 90.0, 0.0, 60.0])


def test_read_poses_star_hand_snippet(tmp_path):
    path = tmp_path / "hand.star"
    path.write_text(HAND_STAR)
    table = read_poses_star(path)
    np.testing.assert_array_equal(table.ids, [1, 2, 3, 4])  # no rlnImageId: 1..N
    # Converted by hand: rot = 90 and psi = 90 give the passive Rz(90); tilt = 90 the passive Ry(90).
    np.testing.assert_allclose(table.rotations[0], [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], atol=1e-15)
    np.testing.assert_allclose(table.rotations[1], [[0, 0, -1], [0, 1, 0], [1, 0, 0]], atol=1e-15)
    np.testing.assert_allclose(table.rotations[2], [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], atol=1e-15)
    np.testing.assert_allclose(table.rotations[3], relion_matrix(30, 60, -45), atol=1e-14)
    # t = -origin, Angstrom -> micrometres (1 um = 1e4 A)
    np.testing.assert_allclose(table.translations_um,
                               [[-0.1, 0, 0], [0, 0.25, 0], [0, 0, -0.065],
                                [-1.5e-4, 2.5e-4, -3.25e-4]], atol=1e-15)
    assert table.extra["rlnImageName"][0] == "particles/part 1.tif"
    assert table.extra["rlnOpticsGroup"].tolist() == [1, 1, 1, 1]


def test_relion_formula_matches_convention():
    # the hand-typed RELION formula is the transpose of scipy's intrinsic ZYZ matrix
    angles = np.array([[30, 60, -45], [-120, 15, 170], [5, 175, 95]], float)
    for a in angles:
        np.testing.assert_allclose(relion_matrix(*a),
                                   Rotation.from_euler("ZYZ", a, degrees=True).as_matrix().T,
                                   atol=1e-14)


def test_poses_star_round_trip(tmp_path):
    n = 12
    rng = np.random.default_rng(0)
    M = np.tile(np.eye(4), (n, 1, 1))
    M[:, :3, :3] = Rotation.random(n, random_state=1).as_matrix()
    M[:, :3, 3] = rng.normal(scale=0.4, size=(n, 3))
    ids = rng.permutation(100)[:n]
    names = [f"particles/p{i:03d}.tif" for i in range(n)]
    path = write_poses_star(tmp_path / "p.star", ids, M, voxel_size_um=(0.05, 0.05, 0.05),
                            image_names=names)
    table = read_poses_star(path)
    np.testing.assert_array_equal(table.ids, ids)
    np.testing.assert_allclose(table.matrices, M, atol=1e-12)
    assert table.extra["rlnImageName"].tolist() == names
    blocks = read_star(path)
    np.testing.assert_allclose(blocks["optics"]["rlnImagePixelSize"], [500.0])  # Angstrom
    np.testing.assert_allclose(blocks["particles"]["rlnOriginXAngst"], -M[:, 0, 3] * 1e4)
    np.testing.assert_allclose(blocks["particles"]["rlnOriginZAngst"], -M[:, 2, 3] * 1e4)
    expected = Rotation.from_matrix(M[:, :3, :3].transpose(0, 2, 1)).as_euler("ZYZ", degrees=True)
    got = np.stack([blocks["particles"][k] for k in ("rlnAngleRot", "rlnAngleTilt",
                                                     "rlnAnglePsi")], axis=1)
    np.testing.assert_allclose(got, expected, atol=1e-9)


def test_generic_star_round_trip(tmp_path):
    blocks = {
        "general": {"rlnFinalResolution": [4.5]},
        "model": {"_rlnName": ["", "a b", "_x", "it's", 'say "hi"', "loop_", "#tag", "plain"],
                  "rlnValue": np.arange(8) * 0.1,
                  "rlnCount": np.arange(8)},
        "": {"rlnX": [1e-9, -2.5e30]},
    }
    path = write_star(tmp_path / "g.star", blocks)
    back = read_star(path)
    assert list(back) == ["general", "model", ""]
    assert back["model"]["rlnName"].tolist() == blocks["model"]["_rlnName"]
    np.testing.assert_array_equal(back["model"]["rlnValue"], blocks["model"]["rlnValue"])
    assert back["model"]["rlnCount"].dtype == np.int64
    assert back[""]["rlnX"].tolist() == [1e-9, -2.5e30]
    assert back["general"]["rlnFinalResolution"].tolist() == [4.5]


def test_key_value_block_and_multiline_rows(tmp_path):
    path = tmp_path / "kv.star"
    path.write_text("data_general\n_rlnFinalResolution 4.5\n_rlnName 'model one'\n\n"
                    "data_t\nloop_\n_rlnA\n_rlnB\n_rlnC\n1 2\n3\n4 5 6\n")
    blocks = read_star(path)
    assert blocks["general"]["rlnFinalResolution"].tolist() == [4.5]
    assert blocks["general"]["rlnName"].tolist() == ["model one"]
    assert blocks["t"]["rlnA"].tolist() == [1, 4] and blocks["t"]["rlnC"].tolist() == [3, 6]


def test_relion30_origins_in_pixels(tmp_path):
    path = tmp_path / "old.star"
    path.write_text("data_optics\nloop_\n_rlnOpticsGroup\n_rlnImagePixelSize\n1 500\n2 1000\n\n"
                    "data_particles\nloop_\n_rlnAngleRot\n_rlnAngleTilt\n_rlnAnglePsi\n"
                    "_rlnOriginX\n_rlnOriginY\n_rlnOpticsGroup\n0 0 0 2 -1 1\n0 0 0 2 -1 2\n")
    table = read_poses_star(path)
    np.testing.assert_allclose(table.translations_um, [[-0.1, 0.05, 0], [-0.2, 0.1, 0]])


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("text, match", [
    ("data_\nloop_\n_rlnA\n_rlnB\n1 2\n3\n", r"line 6: the table ends with an incomplete row"),
    ("data_\nloop_\n_rlnA\n'open\n", r"line 4: unterminated quoted value"),
    ("1 2 3\n", r"line 1: '1' before any data_ block"),
    ("data_a\n_rlnA\n", r"line 2: _rlnA has no value"),
    ("data_a\nloop_\n_rlnA\n_rlnA\n1 2\n", r"line 2: the label _rlnA appears twice"),
    ("data_a\ndata_a\n", r"line 2: block data_a appears twice"),
    ("data_a\n_rlnA 1\nstray\n", r"line 3: unexpected value 'stray'"),
])
def test_read_star_errors(tmp_path, text, match):
    path = tmp_path / "bad.star"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"bad\.star', " + match):
        read_star(path)


@pytest.mark.parametrize("text, match", [
    ("data_optics\nloop_\n_rlnOpticsGroup\n1\n", r"has no data_particles block \(blocks: data_optics\)"),
    ("data_particles\nloop_\n_rlnAngleRot\n_rlnAngleTilt\n1 2\n", r"no _rlnAnglePsi"),
    ("data_particles\nloop_\n_rlnAngleRot\n_rlnAngleTilt\n_rlnAnglePsi\n0 0 0\n1 nan 2\n",
     r"line 7: _rlnAngleTilt is 'nan'; it must be a finite number"),
    ("data_particles\nloop_\n_rlnAngleRot\n_rlnAngleTilt\n_rlnAnglePsi\n_rlnImageId\n0 0 0 4\n"
     "0 0 0 4\n", r"line 8: _rlnImageId 4 already used on line 7"),
    ("data_particles\nloop_\n_rlnAngleRot\n_rlnAngleTilt\n_rlnAnglePsi\n_rlnOriginX\n0 0 0 1\n",
     r"no rlnImagePixelSize is found"),
])
def test_read_poses_star_errors(tmp_path, text, match):
    path = tmp_path / "bad.star"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_poses_star(path)


def test_missing_star_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"STAR file not found: '.*nope\.star'"):
        read_star(tmp_path / "nope.star")


def test_write_errors(tmp_path):
    M = np.eye(4)[None]
    with pytest.raises(ValueError, match="anisotropic; RELION STAR files hold one pixel size"):
        write_poses_star(tmp_path / "p.star", [1], M, voxel_size_um=(0.2, 0.1, 0.1))
    with pytest.raises(ValueError, match="voxel_size_um must be a positive number"):
        write_poses_star(tmp_path / "p.star", [1], M, voxel_size_um=-1.0)
    with pytest.raises(ValueError, match="image_names has 2 names for 1 poses"):
        write_poses_star(tmp_path / "p.star", [1], M, voxel_size_um=0.1, image_names=["a", "b"])
    with pytest.raises(ValueError, match="not a rotation"):
        write_poses_star(tmp_path / "p.star", [1], np.diag([1.0, 1, -1, 1])[None],
                         voxel_size_um=0.1)
    with pytest.raises(ValueError, match=r"columns have different lengths"):
        write_star(tmp_path / "g.star", {"a": {"rlnA": [1, 2], "rlnB": [1]}})
    with pytest.raises(ValueError, match="contains a line break"):
        write_star(tmp_path / "g.star", {"a": {"rlnA": ["x\ny"]}})
    with pytest.raises(ValueError, match="contains blanks"):
        write_star(tmp_path / "g.star", {"my block": {"rlnA": [1]}})
    assert list(tmp_path.iterdir()) == []
