"""Refine, align symmetry axis, symmetrize: real runs in a project, outputs, provenance,
figures, a fresh process reading them back, bad inputs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from spfluo.io import read_particle_table, read_volume, write_volume
from spfluo.tests._projects import assert_rejected, finished, launch_protocol, new_project

VOXEL = 0.05
SIM = dict(phantom=1, nChannels=2, boxSize=20, voxelSize=VOXEL, sigmaXY=1.0, sigmaZ=2.0,
           noiseStd=0.03, nSpots=0, nParticles=8, seed=3)  # the C9 barrel and its torus


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A simulated C9 dataset (2 channels), refined with C9 symmetry from its poses."""
    from spfluo.protocols import ProtRefine, ProtSimulateDataset

    root = tmp_path_factory.mktemp("refine")
    with new_project(root / "project") as project:
        sim = finished(launch_protocol(project, ProtSimulateDataset, **SIM))
        ref = finished(launch_protocol(
            project, ProtRefine, inputParticles=(sim, "outputParticles"),
            inputPSF=(sim, "outputPSF"), symmetry=9, schedule="4:8", exhaustiveIterations=1,
            continuousIterations=1, initialIterations=30, admmIterations=10,
            finalIterations=20, searchChannels="0"))
        yield project, sim, ref, root


def test_refine_outputs_values_and_provenance(chain):
    from spfluo.objects import SetOfParticles, Volume
    from spfluo.objects.arrays import load_array
    from spfluo.viewers import figures_for

    project, sim, ref, _ = chain
    vol, parts = ref.outputVolume, ref.outputParticles
    assert isinstance(vol, Volume) and isinstance(parts, SetOfParticles)
    assert vol.getShape() == (2, 20, 20, 20)
    assert vol.getVoxelSize() == pytest.approx((VOXEL,) * 3)
    assert vol.hasHalfMaps() and all(os.path.exists(p) for p in vol.getHalfMaps())
    summary = json.loads(open(ref._getExtraPath("refine.json")).read())
    assert summary["symmetry"] == 9 and summary["search_channels"] == [0]
    assert summary["iterations"] == 2 and vol.nIterations.get() == 2
    res = summary["resolution_per_voxel"][0]
    if summary["resolution_status"][0] == "measured":
        assert vol.getResolution() == pytest.approx(VOXEL / res)
    else:  # the verdict says why no number
        assert res is None and vol.getResolution() is None
    assert vol.getResolutionText() == summary["resolution_text"][0]
    # the particles keep their ids and files, get refined poses and per-particle values
    assert parts.getSize() == 8 and parts.hasPoses()
    items = {p.getObjId(): p for p in parts.items()}
    src = {p.getObjId(): p for p in sim.outputParticles.items()}
    assert set(items) == set(src)
    for pid, p in items.items():
        assert p.getFileName() == src[pid].getFileName()
        assert 0 <= p.refineEnergy.get() <= 1 and p.halfSet.get() in (0.0, 1.0)
    # started from the true poses, the refined ones stay close (modulo C9)
    from spfluo.algorithms.geometry import geodesic_distance_sym, swap_xyz_zyx

    est = swap_xyz_zyx(np.stack([items[i].getTransform().getMatrix() for i in sorted(items)]))
    true = swap_xyz_zyx(np.stack([src[i].getTransform().getMatrix() for i in sorted(items)]))
    changes = np.degrees(geodesic_distance_sym(est[:, :3, :3], true[:, :3, :3], symmetry=9))
    assert np.median(changes) < 4.0
    np.testing.assert_allclose(sorted(p.poseChangeDeg.get() for p in items.values()),
                               sorted(changes), atol=1e-4)
    # the refined volume is the barrel (and the torus), in the frame of the poses
    data, truth = load_array(vol), load_array(sim.outputVolume)
    for c in range(2):
        assert np.corrcoef(data[c].ravel(), truth[c].ravel())[0, 1] > 0.8
    parents = {p.getObjId() for p in project.getSourceParents(vol)}
    assert parents == {sim.getObjId()}
    names = [name for name, _ in figures_for(vol)]
    assert {"slices", "isosurface", "half_map_fsc", "refine_convergence",
            "refine_pose_changes"} <= set(names)
    assert "refine_pose_changes" in [name for name, _ in figures_for(parts)]
    assert "C9" in ref.summary()[0] and "Zehni2020" in ref.methods()[0]


def test_reopened_project_reads_the_refinement(chain):
    project, _, ref, _ = chain
    code = f"""
import json
from spfluo.environment import bootstrap
bootstrap({os.environ['SPFLUO_HOME']!r})
from spfluo.workflow import open_project
proj = open_project({project.getPath()!r})
prot = proj.getProtocol({ref.getObjId()})
vol, parts = prot.outputVolume, prot.outputParticles
print(json.dumps({{"log": vol.refinementLog.get(), "iterations": vol.nIterations.get(),
                  "n": parts.getSize(), "change": parts.items()[0].poseChangeDeg.get()}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["log"] == ref.outputVolume.refinementLog.get() and data["iterations"] == 2
    assert data["n"] == 8
    assert data["change"] == pytest.approx(ref.outputParticles.items()[0].poseChangeDeg.get())


def test_align_symmetry_axis_estimates_the_order_and_symmetrize(chain):
    from spfluo.objects.arrays import load_array
    from spfluo.protocols import ProtAlignSymmetryAxis, ProtSymmetrize

    project, sim, ref, _ = chain
    # the ground truth's axis is z already: found there, order 9 estimated and reported
    align = finished(launch_protocol(project, ProtAlignSymmetryAxis,
                                     inputVolume=(sim, "outputVolume"), symmetryOrder=0,
                                     inputParticles=(sim, "outputParticles")))
    vol = align.outputVolume
    assert align.estimatedOrder.get() == 9 and vol.symmetryOrder.get() == 9
    assert vol.axisAngleDeg.get() < 2.0 and vol.axisScore.get() > 0.9
    assert "Estimated symmetry order: C9" in align.summary()[0]
    assert vol.getShape() == (2, 20, 20, 20)
    parts = align.outputParticles
    assert parts.getSize() == 8 and parts.hasPoses()
    summary = json.loads(open(align._getExtraPath("symmetry.json")).read())
    assert summary["contrasts"][summary["orders"].index(9)] > 0.6
    rot = np.asarray(summary["rotation_zyx"])
    from spfluo.algorithms.geometry import swap_xyz_zyx

    before = swap_xyz_zyx(np.stack([p.getTransform().getMatrix()
                                    for p in sim.outputParticles.items()]))[:, :3, :3]
    after = swap_xyz_zyx(np.stack([p.getTransform().getMatrix()
                                   for p in parts.items()]))[:, :3, :3]
    np.testing.assert_allclose(after, np.matmul(before, rot.T), atol=1e-6)
    # symmetrise the refined volume with C9: little changes (it was refined with C9)
    sym = finished(launch_protocol(project, ProtSymmetrize, inputVolume=(ref, "outputVolume"),
                                   symmetryOrder=9))
    out = sym.outputVolume
    assert out.symmetryOrder.get() == 9 and 0 <= out.relativeChange.get() < 0.2
    assert load_array(out).shape == (2, 20, 20, 20)
    assert {p.getObjId() for p in project.getSourceParents(out)} == {ref.getObjId()}


def test_invalid_inputs_are_rejected(chain):
    from spfluo.protocols import ProtImportPSF

    project, sim, ref, root = chain
    psf = read_volume(os.path.join(project.getPath(), sim.outputPSF.getFileName())).data
    write_volume(root / "psf_3.tif", np.concatenate([psf] * 3), (VOXEL,) * 3)
    psf_3 = finished(launch_protocol(project, ProtImportPSF, psfFile=str(root / "psf_3.tif"),
                                     subtractBackground=False))
    good = dict(inputParticles=(sim, "outputParticles"), inputPSF=(sim, "outputPSF"))
    for match, values in [
        ("Symmetry order must be an integer >= 1", dict(symmetry=0)),
        ("Search schedule stage '20'", dict(schedule="20")),
        ("the range must be in", dict(schedule="5:200")),
        ("at least the number of schedule stages", dict(schedule="20:all, 5:10",
                                                        exhaustiveIterations=1)),
        ("Nothing to refine", dict(schedule="", continuousIterations=0)),
        ("Pose search channel 2 does not exist", dict(searchChannels="0 2")),
        ("Weight must be >= 0", dict(weight=-1.0)),
        ("Gradient steps per continuous iteration must be >= 1", dict(gdSteps=0)),
        ("automatic weight is chosen on the half sets", dict(weightMode=1, doHalfMaps=False)),
        ("Support radius must be between", dict(maskRadius=50.0)),
        ("Low-pass must be >= 0", dict(lowPass=-1.0)),
    ]:
        assert_rejected(project, "ProtRefine", match, **good, **values)
    assert_rejected(project, "ProtRefine", r"The PSF has 6 channel\(s\) and the particles 2",
                    inputParticles=(sim, "outputParticles"), inputPSF=(psf_3, "outputPSF"))
    assert_rejected(project, "ProtRefine", "Choose the PSF",
                    inputParticles=(sim, "outputParticles"))
    assert_rejected(project, "ProtAlignSymmetryAxis", "Symmetry order must be n >= 2",
                    inputVolume=(sim, "outputVolume"), symmetryOrder=-1)
    assert_rejected(project, "ProtSymmetrize", "Symmetry order must be n >= 2",
                    inputVolume=(sim, "outputVolume"), symmetryOrder=1)
    assert_rejected(project, "ProtAlignSymmetryAxis", "Choose the volume", symmetryOrder=9)
    assert_rejected(project, "ProtSymmetrize", "Symmetry order must be n >= 2",
                    inputVolume=(sim, "outputVolume"), symmetryOrder=-3)
    assert ref.outputVolume.getResolutionText()  # a measurement or the reason for none
    table = read_particle_table(ref._getExtraPath("particles_refined.csv"))
    assert len(table) == 8
