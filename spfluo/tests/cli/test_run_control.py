"""The command line drives runs: protocols described in full, outputs named by run label,
workflows loaded with their labels and launched in order, runs stopped and continued."""

import json
import os

import numpy as np
import psutil
import pytest

from spfluo.cli import main
from spfluo.constants import WORKER_LOCK
from spfluo.io import lock_holder, write_volume
from spfluo.tests._projects import finished, new_project


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    """``cli(*args) -> (status, stdout, stderr)``: the command in this process."""
    monkeypatch.chdir(tmp_path)

    def run(*args):
        cwd = os.getcwd()
        try:
            status = main([str(a) for a in args])
        finally:
            os.chdir(cwd)  # commands move into the project folder
        out = capsys.readouterr()
        return status, out.out, out.err

    return run


def test_protocols_prints_help_choices_units_defaults_expert_and_gpu(cli):
    status, text, _ = cli("protocols", "ProtPickParticles")
    assert status == 0
    assert text.startswith("ProtPickParticles: pick particles")
    # a parameter: its label with the unit, its kind and default, then its help
    block = text[text.index("  diameter"):]
    assert block.splitlines()[0].split() == ["diameter", "Particle", "diameter", "(µm)"]
    assert "[number; default 0.5]" in block.splitlines()[1]
    assert "sets every" in " ".join(block.splitlines()[2:5])
    # a choice: its number and label
    assert "  0 = random forest" in text and "  1 = support vector machine" in text
    assert "[choice; default 0 (random forest)" in text
    # expert parameters are marked; counts give their maximum
    seed = text[text.index("  seed"):].splitlines()[1]
    assert "expert" in seed and "at most" in seed
    # the GPU parameters, hidden in the form's sections, are listed with their help
    assert "GPU" not in text  # picking runs on the CPU
    status, text, _ = cli("protocols", "ProtRefine")
    gpu = text[text.index("GPU (optional"):]
    assert "useGpu" in gpu and "gpuList" in gpu and "CuPy" in gpu and "default no" in gpu
    status, text, _ = cli("protocols", "ProtImportFluoImages")
    assert "applies when voxelSizeSource" in text  # conditions are said


def _fields(folder):
    vol = np.zeros((6, 16, 16), np.float32)
    vol[3, 8, 8] = 1.0
    for name in ("fov_a", "fov_b"):
        write_volume(folder / f"{name}.tif", vol, (0.25, 0.1, 0.1))
    (folder / "c.csv").write_text("image_id,x,y,z\nfov_a,0.8,0.8,0.75\n")


def test_outputs_by_label_and_workflows_loaded_with_labels_then_launched(cli, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _fields(data)
    with new_project(tmp_path / "p1") as p1:
        path = p1.getPath()
    status, out, err = cli("run", path, "ProtImportFluoImages", f"filesPattern={data}/fov_*.tif",
                           "--label", "my fields")
    assert status == 0, err
    # an input named by the label of its run
    status, out, err = cli("run", path, "ProtImportCoordinates",
                           "inputImages=my fields.outputImages", f"coordinatesFile={data}/c.csv",
                           "boxSize=0.6", "--label", "my.coords")
    assert status == 0, err
    status, _, err = cli("show", path, "my fields.outputImages.1", "--save", tmp_path / "a.png")
    assert status == 0 and (tmp_path / "a.png").exists(), err
    status, _, err = cli("show", path, "my.coords.outputCoordinates", "--save",
                         tmp_path / "c.png")  # a label with a dot
    assert status == 0, err
    status, _, err = cli("show", path, "no such label.outputImages", "--save", tmp_path / "x")
    assert status == 2 and "no run with the id or label 'no such label'" in err

    status, _, err = cli("export", path, tmp_path / "wf.json")
    assert status == 0, err
    labels = [d["object.label"] for d in json.loads((tmp_path / "wf.json").read_text())]
    assert labels == ["my fields", "my.coords"]
    # a label that two runs share names neither: the id is needed
    status, _, err = cli("run", path, "ProtImportFluoImages", f"filesPattern={data}/fov_a.tif",
                         "--label", "my fields")
    assert status == 0, err
    status, _, err = cli("show", path, "my fields.outputImages", "--save", tmp_path / "x.png")
    assert status == 2 and "names runs" in err and "write the run id" in err
    with new_project(tmp_path / "p2") as p2:
        path2 = p2.getPath()
    status, out, err = cli("load", path2, tmp_path / "wf.json")
    assert status == 0, err
    assert "#2 my fields (ProtImportFluoImages)" in out and "my.coords" in out
    assert "spfluo launch" in out
    status, out, _ = cli("project", "show", path2)
    assert out.count("saved") == 2 and "my.coords" in out  # labels kept, nothing run
    status, out, err = cli("launch", path2)
    assert status == 0, err
    ran = [line for line in out.splitlines() if "finished in" in line]
    assert len(ran) == 2 and "my fields" in ran[0] and "my.coords" in ran[1]  # in order
    status, out, _ = cli("project", "show", path2)
    assert out.count("finished") == 2 and "<- inputImages: run #" in out
    status, out, _ = cli("launch", path2)
    assert status == 0 and "no run to launch" in out
    # --run: loaded and run at once
    with new_project(tmp_path / "p3") as p3:
        path3 = p3.getPath()
    status, out, err = cli("load", path3, tmp_path / "wf.json", "--run")
    assert status == 0 and out.count("finished in") == 2, err


def test_a_failed_run_continues_by_label(cli, project, tmp_path):
    from spfluo.protocols import ProtImportPSF

    psf = tmp_path / "psf.tif"
    prot = project.newProtocol(ProtImportPSF, psfFile=str(psf))
    prot.setObjLabel("the psf")
    project.launchProtocol(prot, wait=True)  # no file yet: fails in its step
    assert project.getProtocol(prot.getObjId()).getStatus() == "failed"
    h = np.zeros((5, 5, 5), np.float32)
    h[2, 2, 2] = 1
    write_volume(psf, h, (0.1, 0.1, 0.1))
    status, out, err = cli("continue", project.getPath(), "the psf")
    assert status == 0, err + out
    assert f"run #{prot.getObjId()} the psf: finished in" in out
    project.getRuns(refresh=True)
    assert project.getProtocol(prot.getObjId()).outputPSF.getDimensions() == (5, 5, 5)
    status, _, err = cli("continue", project.getPath(), str(prot.getObjId()))
    assert status == 2 and "is finished: nothing to continue" in err
    status, _, err = cli("stop", project.getPath(), "the psf")
    assert status == 2 and "not running: nothing to stop" in err


@pytest.mark.slow
def test_stop_then_continue_resumes_from_the_checkpoint(cli, project, launch):
    """An ab initio run stopped after its first checkpoint resumes from it."""
    import time

    from spfluo.protocols import ProtAbInitio, ProtSimulateDataset

    sim = finished(launch(ProtSimulateDataset, boxSize=16, voxelSize=0.05, sigmaXY=0.75,
                          sigmaZ=2.0, noiseStd=0.1, nSpots=0, nParticles=6, seed=1))
    prot = project.newProtocol(ProtAbInitio, maxEpochs=12, nDirections=12, nPsi=4,
                               finalReconstruction=2)
    for key, output in (("inputParticles", "outputParticles"), ("inputPSF", "outputPSF")):
        getattr(prot, key).set(sim)
        getattr(prot, key).setExtended(output)
    project.launchProtocol(prot, wait=False)
    checkpoint = os.path.join(project.getPath(), prot._getExtraPath("checkpoint.npz"))
    lock = os.path.join(project.getPath(), prot._getExtraPath(WORKER_LOCK))
    end = time.monotonic() + 120
    while not (os.path.exists(checkpoint) and lock_holder(lock)) and time.monotonic() < end:
        time.sleep(0.02)
    worker = lock_holder(lock)
    assert worker, "the run ended before its first checkpoint"
    status, out, err = cli("stop", project.getPath(), str(prot.getObjId()))
    assert status == 0, err
    assert "aborted" in out and f"spfluo continue {project.getPath()} {prot.getObjId()}" in out
    assert not psutil.pid_exists(worker) or \
        psutil.Process(worker).status() == psutil.STATUS_ZOMBIE
    assert os.path.exists(checkpoint)
    status, out, err = cli("continue", project.getPath(), str(prot.getObjId()))
    assert status == 0, err + out
    project.getRuns(refresh=True)
    done = project.getProtocol(prot.getObjId())
    assert done.getStatus() == "finished" and done.outputVolume.getDimensions() == (16, 16, 16)
    log = open(done.getLogPaths()[0]).read()
    assert "resuming from the checkpoint of epoch" in log
    assert not os.path.exists(checkpoint)  # removed once the outputs are written
