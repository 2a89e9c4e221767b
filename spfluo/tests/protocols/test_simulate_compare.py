"""Simulate a dataset, then compare volumes: real runs in a project, values and bad inputs."""

import functools
import json
import os

import numpy as np
import pytest
import scipy.signal

from spfluo.algorithms.geometry import Poses, matrix_from_axis_angle
from spfluo.algorithms.transform import rotate
from spfluo.io import write_poses_csv, write_volume
from spfluo.tests._projects import assert_rejected, finished, launch_protocol, new_project

VOXEL = 0.05
SIM = dict(boxSize=24, voxelSize=VOXEL, sigmaXY=1.0, sigmaZ=2.5, noiseStd=0.05, nSpots=10)


def _truth_variants(truth):
    """The ground truth rotated by 35 deg and shifted, the same with noise, a smaller box."""
    R = matrix_from_axis_angle([0.2, -0.6, 0.77], np.radians(35.0))
    moved = rotate(truth, R, translations=[0.5, -1.0, 1.5], order=3)
    noisy = moved + np.random.default_rng(0).normal(0, 0.15, moved.shape).astype(np.float32)
    return R, {"a_rotated": moved, "b_noisy": noisy, "c_small": truth[2:-2]}


@pytest.fixture(scope="module")
def sim_project(tmp_path_factory):
    """One project for the module: a simulated dataset and variants of its ground truth."""
    from spfluo.objects.arrays import load_array
    from spfluo.protocols import ProtImportFluoImages, ProtSimulateDataset

    root = tmp_path_factory.mktemp("simulate_compare")
    with new_project(root / "project") as project:
        sim = finished(launch_protocol(project, ProtSimulateDataset, nParticles=6, seed=1, **SIM))
        truth = load_array(sim.outputVolume)[0]
        R, variants = _truth_variants(truth)
        (root / "variants").mkdir()
        for name, vol in variants.items():
            write_volume(root / "variants" / f"{name}.ome.tif", vol, (VOXEL,) * 3)
        imp = finished(launch_protocol(project, ProtImportFluoImages,
                                       filesPattern=str(root / "variants" / "*.ome.tif")))
        items = {img.getImageId(): (imp, f"outputImages.{img.getObjId()}")
                 for img in imp.outputImages.items()}
        yield {"project": project, "sim": sim, "variants": items, "rotation": R,
               "import": imp}


@pytest.fixture
def shared(sim_project):
    """The module's project, with the working directory in it (pyworkflow's rule)."""
    cwd = os.getcwd()
    os.chdir(sim_project["project"].getPath())
    try:
        yield sim_project
    finally:
        os.chdir(cwd)


def test_simulated_particles_follow_their_true_poses(shared):
    from spfluo.objects.arrays import load_array

    simulated = shared["sim"]
    vol, psf, parts = simulated.outputVolume, simulated.outputPSF, simulated.outputParticles
    assert vol.getShape() == (1, 24, 24, 24) and vol.getVoxelSize() == pytest.approx((VOXEL,) * 3)
    assert psf.getVoxelSize() == pytest.approx((VOXEL,) * 3)
    assert load_array(psf).sum() == pytest.approx(1.0, rel=1e-4)
    truth = load_array(vol)[0]
    assert truth.min() >= 0 and truth.max() == pytest.approx(1.0, abs=1e-3)
    assert parts.getSize() == 6 and parts.hasPoses()
    assert parts.getVoxelSize() == pytest.approx((VOXEL,) * 3)
    items = parts.items()
    assert [p.getImageId() for p in items] == [f"particle_{k:06d}" for k in range(1, 7)]
    assert all(p.getFileName().endswith(".ome.tif") and "extra/particles/" in p.getFileName()
               for p in items)
    # the stored poses (xyz, µm) are the ones the particles were made with: the forward model
    # h * T_t(R f) of particle k correlates best with particle k
    poses = Poses.from_stored(np.stack([p.getTransform().getMatrix() for p in items]), VOXEL)
    assert np.abs(poses.translations).max() <= 2.0 + 1e-9  # maxShift 2 voxels
    h = load_array(psf)[0]
    models = [scipy.signal.fftconvolve(rotate(truth, R, translations=t, order=1), h, mode="same")
              for R, t in zip(poses.rotations, poses.translations)]
    data = [load_array(p)[0] for p in items]

    def ncc(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))

    scores = np.array([[ncc(m, d) for d in data] for m in models])
    assert np.all(np.argmax(scores, axis=1) == np.arange(6))
    assert np.diag(scores).min() > 0.8


def test_compare_rotated_and_noisy_ground_truth(shared):
    from spfluo.objects import VolumeComparison
    from spfluo.protocols import ProtCompareVolumes

    project, simulated, variants = shared["project"], shared["sim"], shared["variants"]
    R = shared["rotation"]

    clean = finished(launch_protocol(
        project, ProtCompareVolumes, inputVolume=variants["a_rotated"],
        referenceVolume=(simulated, "outputVolume"), symmetry=1,
        inputParticles=(simulated, "outputParticles"),
        referenceParticles=(simulated, "outputParticles")))
    c = clean.outputComparison
    assert isinstance(c, VolumeComparison)
    m = c.getMetrics()
    assert m["ssim"] > 0.97
    assert m["registration_angle_deg"] == pytest.approx(35.0, abs=2.0)
    assert m["registration_shift_um"] == pytest.approx(np.sqrt(0.5**2 + 1 + 1.5**2) * VOXEL,
                                                       abs=0.5 * VOXEL)
    # a clean rotated copy agrees with the truth up to Nyquist: no resolution is measured
    # at 0.143, the metrics JSON says why
    assert m["fsc_resolution_0143_per_voxel"] is None and m["fsc_resolution_0143_um"] is None
    texts = json.loads(open(c.getMetricsFile()).read())["resolution_text"][0]
    assert texts["fsc_0143"].startswith("not reached below Nyquist")
    assert m["pose_error_max_deg"] < 1e-6 and m["n_matched_particles"] == 6
    assert m["symmetry"] == 1 and m["n_channels"] == 1
    assert c.getVoxelSize() == pytest.approx((VOXEL,) * 3)
    # the registration found undoes the applied motion: its rotation (xyz) is R^T (xyz)
    reg = Poses.from_stored(c.getRegistration().getMatrix()[None], VOXEL)
    err = np.degrees(np.arccos(np.clip((np.trace(reg.rotations[0] @ R) - 1) / 2, -1, 1)))
    assert err < 2.0
    for path in c.getFiles():
        assert os.path.exists(path)
    with open(c.getMetricsFile()) as fh:
        assert json.load(fh)["metrics"]["ssim"] == pytest.approx(m["ssim"])
    text = str(c)
    assert "SSIM" in text and "PSNR" in text and "pose error median" in text

    worse = finished(launch_protocol(
        project, ProtCompareVolumes, inputVolume=variants["b_noisy"],
        referenceVolume=(simulated, "outputVolume"), doRegister=True))
    w = worse.outputComparison.getMetrics()
    assert w["ssim"] < m["ssim"] - 0.05
    assert w["psnr_db"] < m["psnr_db"]
    # the noisy copy's FSC crosses 0.143 below Nyquist (a measurement), the clean one's not
    assert 0 < w["fsc_resolution_0143_per_voxel"] < 0.5
    assert w["pose_error_median_deg"] is None and worse.outputComparison.getPoseErrorsFile() is None
    # provenance: the comparison derives from both volumes
    parents = {p.getObjId() for p in project.getSourceParents(worse.outputComparison)}
    assert {shared["import"].getObjId(), simulated.getObjId()} <= parents


def test_simulate_fields_of_view(launch):
    from spfluo.objects.arrays import load_array
    from spfluo.protocols import ProtSimulateDataset

    # a widefield PSF from the optics and photon noise (Poisson, read-noise floor)
    prot = finished(launch(ProtSimulateDataset, phantom=1, nChannels=2, outputKind=1,
                           fieldZ=20, fieldY=72, fieldX=72, fieldVoxelSizeZ=0.1, nFields=1,
                           particlesPerField=3, nDebris=1, touchingPairs=1, seed=2,
                           psfModel=1, numericalAperture=1.2, wavelength=0.6,
                           noiseModel=1, photons=30.0, readNoise=1.0, **SIM))
    assert not hasattr(prot, "outputParticles")
    images, coords = prot.outputImages, prot.outputCoordinates
    assert images.getSize() == 1 and images.getNumChannels() == 2
    assert images.getVoxelSize() == pytest.approx((0.1, VOXEL, VOXEL))
    field = images.items()[0]
    assert field.getShape() == (2, 20, 72, 72) and field.getImageId() == "field_001"
    assert prot.outputPSF.getVoxelSize() == pytest.approx((0.1, VOXEL, VOXEL))
    assert prot.outputVolume.getShape() == (2, 24, 24, 24)
    assert coords.getSize() == 3 and coords.getBoxSize() == pytest.approx(24 * VOXEL)
    assert coords.getImages().getSize() == 1
    image = load_array(field)
    vs = np.array(field.getVoxelSize())
    extent = (np.array(field.getDimensions()) - 1) * vs
    for c in coords.items():
        assert c.getImageId() == "field_001" and c.getBoxSize() == pytest.approx(24 * VOXEL)
        zyx = c.getPositionZYX()
        assert np.all(zyx >= 0) and np.all(zyx <= extent)
        M = c.getTransform().getMatrix()
        np.testing.assert_allclose(M[:3, :3] @ M[:3, :3].T, np.eye(3), atol=1e-9)
        np.testing.assert_allclose(M[:3, 3], 0)
        # a particle is there: the neighbourhood is brighter than the field on average
        k = np.rint(zyx / vs).astype(int)
        box = image[:, max(k[0] - 3, 0):k[0] + 4, max(k[1] - 8, 0):k[1] + 9,
                    max(k[2] - 8, 0):k[2] + 9]
        assert box.mean() > image.mean() + 0.05
    with open(prot._getExtraPath("simulation.json")) as fh:
        summary = json.load(fh)
    assert summary["fields"][0]["touching_pairs"] == [[0, 1]]
    assert summary["params"]["psf_model"] == "widefield-scalar"
    assert summary["params"]["poisson_photons"] == 30.0
    assert summary["params"]["noise_std"] == pytest.approx(1.0 / 30.0)
    # the PSF on the field grid spans the particle box (1.2 µm): 11 z and 23 lateral voxels
    assert prot.outputPSF.getShape()[-3:] == (11, 23, 23)
    assert "scalar widefield PSF (NA 1.2" in " ".join(prot.summary())


def test_bad_inputs_are_rejected(shared, tmp_path):
    from spfluo.protocols import (ProtCompareVolumes, ProtImportFluoImages, ProtImportParticles,
                                  ProtSimulateDataset)

    project, simulated = shared["project"], shared["sim"]

    launch = functools.partial(launch_protocol, project)

    # simulation parameters
    assert_rejected(project, ProtSimulateDataset, "Two channels need the c9 phantom",
                    nChannels=2, phantom=0)
    assert_rejected(project, ProtSimulateDataset, "Box size must be >= 8", boxSize=4)
    assert_rejected(project, ProtSimulateDataset, "smaller than one particle box",
                    outputKind=1, boxSize=24, fieldZ=10, fieldY=64, fieldX=64)
    assert_rejected(project, ProtSimulateDataset, "3 touching pair.*6 particles",
                    outputKind=1, touchingPairs=3, particlesPerField=4)
    assert_rejected(project, ProtSimulateDataset, "Noise std must be >= 0", noiseStd=-0.1)
    assert_rejected(project, ProtSimulateDataset, "Numerical aperture must be > 0 and below",
                    psfModel=2, numericalAperture=1.6, immersionIndex=1.518)
    assert_rejected(project, ProtSimulateDataset, "Photons at the peak must be in",
                    noiseModel=1, photons=0.0)

    # volumes that do not match the reference
    rng = np.random.default_rng(3)
    cases = {"ch": ((2, 24, 24, 24), (VOXEL,) * 3), "aniso": ((24, 24, 24), (0.1, 0.05, 0.05))}
    imports = {"shape": shared["variants"]["c_small"]}
    for name, (shape, vs) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        write_volume(folder / f"{name}.ome.tif", rng.random(shape).astype(np.float32), vs)
        imp = finished(launch(ProtImportFluoImages, filesPattern=str(folder / "*.ome.tif")))
        imports[name] = (imp, f"outputImages.{imp.outputImages.getFirstItem().getObjId()}")
    ref = (simulated, "outputVolume")
    assert_rejected(project, ProtCompareVolumes, "Voxel sizes differ",
                    inputVolume=imports["aniso"], referenceVolume=ref)
    assert_rejected(project, ProtCompareVolumes, "Shapes differ.*crop or pad",
                    inputVolume=imports["shape"], referenceVolume=ref)
    assert_rejected(project, ProtCompareVolumes, "Channel counts differ",
                    inputVolume=imports["ch"], referenceVolume=ref)
    assert_rejected(project, ProtCompareVolumes, "anisotropic",
                    inputVolume=imports["aniso"], referenceVolume=imports["aniso"])
    assert_rejected(project, ProtCompareVolumes, "is a PSF",
                    inputVolume=(simulated, "outputPSF"), referenceVolume=ref)
    assert_rejected(project, ProtCompareVolumes, "Choose the volume", referenceVolume=ref)
    assert_rejected(project, ProtCompareVolumes, "Symmetry order must be >= 1",
                    inputVolume=ref, referenceVolume=ref, symmetry=0)

    # particle sets: one missing, without poses, different sizes
    parts = (simulated, "outputParticles")
    assert_rejected(project, ProtCompareVolumes, "Give both particle sets",
                    inputVolume=ref, referenceVolume=ref, inputParticles=parts)
    files = sorted(p.getFileName() for p in simulated.outputParticles.items())
    no_poses = finished(launch(ProtImportParticles,
                               filesPattern=os.path.join(os.path.dirname(files[0]), "*.ome.tif")))
    assert_rejected(project, ProtCompareVolumes, "estimated poses has no poses",
                    inputVolume=ref, referenceVolume=ref,
                    inputParticles=(no_poses, "outputParticles"), referenceParticles=parts)
    subset = tmp_path / "subset"
    subset.mkdir()
    for f in files[:3]:
        os.symlink(os.path.abspath(f), subset / os.path.basename(f))
    write_poses_csv(tmp_path / "three.csv", np.arange(3), np.tile(np.eye(4), (3, 1, 1)))
    three = finished(launch(ProtImportParticles, filesPattern=str(subset / "*.ome.tif"),
                            posesFile=str(tmp_path / "three.csv")))
    assert_rejected(project, ProtCompareVolumes, "different sizes: 3 with estimated poses, 6",
                    inputVolume=ref, referenceVolume=ref,
                    inputParticles=(three, "outputParticles"), referenceParticles=parts)
