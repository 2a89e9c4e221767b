"""Reconstruct with known poses: real runs in a project, outputs, provenance, bad inputs."""

import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from spfluo.io import read_volume, write_volume
from spfluo.tests._projects import assert_rejected, finished, launch_protocol, new_project
from spfluo.tests._psf import analytic_gaussian

VOXEL = 0.05
SIM = dict(boxSize=20, voxelSize=VOXEL, sigmaXY=1.0, sigmaZ=2.5, noiseStd=0.05, nSpots=0,
           nParticles=8, seed=2)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A project with a simulated dataset and a Hessian reconstruction of it."""
    from spfluo.protocols import ProtReconstructKnownPoses, ProtSimulateDataset

    root = tmp_path_factory.mktemp("reconstruct")
    with new_project(root / "project") as project:
        sim = finished(launch_protocol(project, ProtSimulateDataset, **SIM))
        rec = finished(launch_protocol(
            project, ProtReconstructKnownPoses, inputParticles=(sim, "outputParticles"),
            inputPSF=(sim, "outputPSF"), method=0, weightMode=1, weight=1e-3, iterations=30))
        yield project, sim, rec, root


def test_reconstruction_output_and_provenance(chain):
    from spfluo.objects import Volume
    from spfluo.objects.arrays import load_array
    from spfluo.viewers import figures_for

    project, sim, rec, _ = chain
    vol = rec.outputVolume
    assert isinstance(vol, Volume)
    assert vol.getShape() == (1, 20, 20, 20)
    assert vol.getVoxelSize() == pytest.approx((VOXEL,) * 3)
    assert vol.hasHalfMaps() and all(os.path.exists(p) for p in vol.getHalfMaps())
    summary = json.loads(open(rec._getExtraPath("reconstruction.json")).read())
    assert summary["method"] == "hessian" and summary["weight"] == [pytest.approx(1e-3)]
    # the half-map resolution is a number only when measured; the verdict is always there
    status, res = summary["resolution_status"][0], summary["resolution_per_voxel"][0]
    assert status in ("measured", "not reached", "beyond cutoff")
    if status == "measured":
        assert vol.getResolution() == pytest.approx(VOXEL / res)  # µm at 0.143
    else:
        assert res is None and vol.getResolution() is None
    assert vol.getResolutionText() == summary["resolution_text"][0]
    assert vol.getOpticalCutoff() == pytest.approx(summary["cutoff_um"])
    assert summary["nyquist_um"] == pytest.approx(2 * VOXEL)
    data = load_array(vol)
    assert data.min() >= 0 and data.max() > 0  # positivity
    truth = load_array(sim.outputVolume)[0]
    corr = np.corrcoef(data[0].ravel(), truth.ravel())[0, 1]
    assert corr > 0.8, corr  # the right object, in the frame of the true poses
    parents = {p.getObjId() for p in project.getSourceParents(vol)}
    assert parents == {sim.getObjId()}
    names = [name for name, _ in figures_for(vol)]
    assert {"slices", "isosurface", "half_map_fsc", "fourier_coverage"} <= set(names)
    assert "weight" in rec.summary()[0]


def test_reopened_project_reads_the_same_volume(chain):
    project, _, rec, _ = chain
    code = f"""
import json, sys
from spfluo.environment import bootstrap
bootstrap({os.environ['SPFLUO_HOME']!r})
from spfluo.workflow import open_project
proj = open_project({project.getPath()!r})
vol = proj.getProtocol({rec.getObjId()}).outputVolume
print(json.dumps({{"shape": vol.getShape(), "res": vol.getResolution(),
                  "half": vol.getHalfMaps(), "fsc": vol.getFscFile(),
                  "coverage": vol.getCoverageFile(),
                  "files": sorted(vol.getFiles()),
                  "summary": proj.getProtocol({rec.getObjId()}).summary()}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout.strip().splitlines()[-1])
    vol = rec.outputVolume
    assert data["shape"] == [1, 20, 20, 20] and data["res"] == pytest.approx(vol.getResolution())
    assert data["fsc"] == vol.getFscFile()
    assert data["coverage"].endswith("coverage.ome.tif") and data["coverage"] in data["files"]
    assert set(data["files"]) == {vol.getFileName(), *vol.getHalfMaps(), vol.getFscFile(),
                                  data["coverage"]}
    assert "weight 0.001" in data["summary"][0]
    assert read_volume(os.path.join(project.getPath(), data["coverage"])).data.shape == \
        (1, 22, 22, 22)


def test_symmetry_and_automatic_weight(chain):
    from spfluo.protocols import ProtReconstructKnownPoses

    project, sim, _, _ = chain
    rec = finished(launch_protocol(
        project, ProtReconstructKnownPoses, inputParticles=(sim, "outputParticles"),
        inputPSF=(sim, "outputPSF"), method=2, weightMode=0, symmetry=4))
    summary = json.loads(open(rec._getExtraPath("reconstruction.json")).read())
    assert summary["method"] == "tikhonov" and summary["symmetry"] == 4
    assert summary["criterion"] == "cross-validation"
    weights = np.array(summary["sweep"]["weights"])
    misfit = np.array(summary["sweep"]["heldout_misfit"])[:, 0]
    # half the half-set weight, which lies between the misfit minimum and the next
    # stronger weight tried
    i = int(np.argmin(misfit))
    half = summary["sweep"]["half_set_weight"][0]
    assert summary["weight"][0] == pytest.approx(0.5 * half)
    assert weights[i] <= half * (1 + 1e-9) and summary["sweep"]["interior"] == [True]
    assert summary["mask_radius_um"] == pytest.approx(0.9 * 10 * VOXEL)
    assert "C4" in rec.methods()[0] or "C4" in " ".join(rec.summary())


def test_a_bead_at_the_field_sampling_needs_no_resampling_by_hand(chain):
    """The PSF of the simulation measured like a bead: at a coarser z sampling than the
    particles, larger than their box, off centre, on a background; the run prepares it."""
    from spfluo.protocols import ProtImportPSF, ProtReconstructKnownPoses

    project, sim, _, root = chain
    sigma = (2.5 * VOXEL, VOXEL, VOXEL)  # SIM's sigmaZ, sigmaXY in µm
    bead = 1000 * analytic_gaussian((13, 27, 27), (3 * VOXEL, VOXEL, VOXEL), sigma,
                                    centre_um=(0.04, -0.02, 0.03)) + 50
    write_volume(root / "bead.tif", bead.astype(np.float32), (3 * VOXEL, VOXEL, VOXEL))
    psf = finished(launch_protocol(project, ProtImportPSF, psfFile=str(root / "bead.tif")))
    assert psf.outputPSF.getShape() == (1, 13, 27, 27)
    rec = finished(launch_protocol(
        project, ProtReconstructKnownPoses, inputParticles=(sim, "outputParticles"),
        inputPSF=(psf, "outputPSF"), method=0, weightMode=1, weight=1e-3, iterations=5))
    used = rec.outputPSF
    assert used.getShape() == (1, 20, 20, 20)
    assert used.getVoxelSize() == pytest.approx((VOXEL,) * 3)
    expected = analytic_gaussian((20, 20, 20), (VOXEL,) * 3, sigma)
    data = read_volume(os.path.join(project.getPath(), used.getFileName())).data[0]
    assert np.abs(data - expected / expected.sum()).max() < 0.03 * expected.max() / expected.sum()
    log = open(rec.getLogPaths()[0]).read()
    assert "PSF 13x27x27 voxels of (0.15, 0.05, 0.05) µm (z, y, x) -> 20x20x20 voxels" in log
    assert {p.getObjId() for p in project.getSourceParents(used)} >= {psf.getObjId()}


def test_invalid_inputs_are_rejected(chain):
    from spfluo.protocols import ProtImportParticles, ProtImportPSF

    project, sim, _, root = chain
    particles_dir = os.path.join(project.getPath(), sim._getExtraPath("particles"))
    no_poses = finished(launch_protocol(project, ProtImportParticles,
                                        filesPattern=os.path.join(particles_dir, "*.ome.tif")))
    psf = read_volume(os.path.join(project.getPath(), sim.outputPSF.getFileName())).data
    write_volume(root / "psf_3.tif", np.concatenate([psf] * 3), (VOXEL,) * 3)
    psf_3 = finished(launch_protocol(project, ProtImportPSF, psfFile=str(root / "psf_3.tif"),
                                     subtractBackground=False))
    good = dict(inputParticles=(sim, "outputParticles"), inputPSF=(sim, "outputPSF"))
    rejected = functools.partial(assert_rejected, project, "ProtReconstructKnownPoses")
    rejected("have no poses", inputParticles=(no_poses, "outputParticles"),
             inputPSF=(sim, "outputPSF"))
    rejected("The PSF has 3 channel", inputParticles=(sim, "outputParticles"),
             inputPSF=(psf_3, "outputPSF"))
    rejected("Symmetry order must be an integer >= 1", symmetry=0, **good)
    rejected("Support radius must be between", maskRadius=10.0, **good)
    rejected("Choose the PSF", inputParticles=(sim, "outputParticles"))
    rejected("Channel 3 does not exist", channels="0 3", **good)
    rejected("chosen on half maps", doHalfMaps=False, **good)
    rejected("Padding factor", padding=4.0, **good)
