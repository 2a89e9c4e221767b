"""Ab initio protocol: a real chain (simulate -> ab initio) in a project, outputs, bad inputs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from spfluo.algorithms.geometry import Poses
from spfluo.io import write_volume
from spfluo.tests._projects import assert_rejected, finished

SIM = dict(boxSize=20, voxelSize=0.05, sigmaXY=0.75, sigmaZ=2.0, noiseStd=0.1, nSpots=10,
           nParticles=6)
FAST = dict(maxEpochs=3, nDirections=12, nPsi=4, finalReconstruction=2)  # 2 = Tikhonov


@pytest.fixture
def simulated(launch):
    from spfluo.protocols import ProtSimulateDataset

    return finished(launch(ProtSimulateDataset, seed=1, **SIM))


def test_abinitio_chain_outputs_and_figures(project, launch, simulated):
    from spfluo.protocols import ProtAbInitio
    from spfluo.viewers import figures_for

    prot = finished(launch(ProtAbInitio, inputParticles=(simulated, "outputParticles"),
                           inputPSF=(simulated, "outputPSF"), seed=2, **FAST))
    volume, particles = prot.outputVolume, prot.outputParticles
    assert volume.getShape() == (1, 20, 20, 20)
    assert volume.getVoxelSize() == pytest.approx((0.05,) * 3)
    assert particles.getSize() == 6 and particles.hasPoses()
    assert particles.getVoxelSize() == pytest.approx((0.05,) * 3)
    inputs = {p.getObjId(): p for p in simulated.outputParticles.items()}
    for p in particles.items():
        assert p.getFileName() == inputs[p.getObjId()].getFileName()
        assert np.isfinite(p.abinitioEnergy.get())
    # estimated poses are valid rotations, not the input (true) poses
    est = Poses.from_stored(np.stack([p.getTransform().getMatrix() for p in particles.items()]),
                            0.05)
    true = Poses.from_stored(np.stack([inputs[p.getObjId()].getTransform().getMatrix()
                                       for p in particles.items()]), 0.05)
    assert not np.allclose(est.rotations, true.rotations)
    # files referenced from the volume, with the run's numbers
    summary = json.load(open(volume.summaryFile.get()))
    assert summary["n_epochs"] == volume.nEpochs.get() == 3
    assert os.path.exists(volume.energiesFile.get()) and os.path.exists(
        volume.marginalsFile.get())
    assert volume.poseErrorMedianDeg.get() == pytest.approx(summary["pose_error_median_deg"])
    # 3 epochs (the cap): the summary says the run did not converge, then the pose error
    assert summary["converged"] is False and volume.converged.get() is False
    assert prot.summary()[1].startswith("NOT converged: the epoch limit")
    assert prot.summary()[2].startswith("Median pose error against the input poses")
    assert "Eloy2023" in prot.methods()[0]
    # provenance: both outputs derive from the particles and the PSF
    parents = {p.getObjId() for p in project.getSourceParents(volume)}
    assert simulated.getObjId() in parents
    # viewers: the ab initio figures are among the volume's figures
    names = [name for name, _ in figures_for(volume)]
    for expected in ("abinitio_energy", "abinitio_psi_marginals", "abinitio_direction_map",
                     "abinitio_orientations", "isosurface"):
        assert expected in names
    # a fresh process reads the same outputs back
    code = f"""
import json
from spfluo.environment import bootstrap
bootstrap({os.environ['SPFLUO_HOME']!r})
from spfluo.workflow import open_project
proj = open_project({project.getPath()!r})
prot = proj.getProtocol({prot.getObjId()})
print(json.dumps([prot.outputVolume.nEpochs.get(), prot.outputParticles.getSize(),
                  prot.outputVolume.energiesFile.get()]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    n_epochs, n_particles, energies = json.loads(out.stdout.strip().splitlines()[-1])
    assert (n_epochs, n_particles) == (3, 6) and energies == volume.energiesFile.get()


def test_bad_inputs_are_rejected(project, launch, simulated, data_dir):
    from spfluo.protocols import ProtAbInitio, ProtImportPSF

    parts = (simulated, "outputParticles")
    psf = (simulated, "outputPSF")
    assert_rejected(project, ProtAbInitio, "Choose the PSF", inputParticles=parts)
    assert_rejected(project, ProtAbInitio, "Symmetry order must be", inputParticles=parts,
                    inputPSF=psf, symmetry=0)
    assert_rejected(project, ProtAbInitio, "Decay of the uniform share must be > 1",
                    inputParticles=parts, inputPSF=psf, alphaR=1.0)
    assert_rejected(project, ProtAbInitio, "N_d must be", inputParticles=parts,
                    inputPSF=psf, nDirections=0)
    assert_rejected(project, ProtAbInitio, "Downsampling must be >= 1",
                    inputParticles=parts, inputPSF=psf, downsampling=0.5)
    assert_rejected(project, ProtAbInitio, "Number of classes must be between 1 and",
                    inputParticles=parts, inputPSF=psf, method=1, nClasses=7)
    # a PSF with more channels than the particles
    z, y, x = np.indices((9, 9, 9)) - 4
    blob = np.exp(-(z**2 + y**2 + x**2) / 4.0).astype(np.float32)
    write_volume(data_dir / "psf.tif", np.stack([blob] * 3), (0.1, 0.1, 0.1))
    other = finished(launch(ProtImportPSF, psfFile=str(data_dir / "psf.tif")))
    assert_rejected(project, ProtAbInitio, "The PSF has 3 channel", inputParticles=parts,
                    inputPSF=(other, "outputPSF"))
