"""A FIFO (or another special file) given as an input is refused, never opened.

Opening a FIFO for reading blocks until a writer comes: validation would hang forever.
A watcher opens each FIFO for writing without blocking, which succeeds only while a
reader has it open; the test fails if any reader ever did.
"""

import contextlib
import os
import threading

import numpy as np
import pytest

from spfluo.io import write_volume
from spfluo.protocols import ProtImportFluoImages
from spfluo.tests._projects import assert_rejected, finished


@contextlib.contextmanager
def _never_opened(*fifos):
    """Watch ``fifos`` during the block; release and report any reader that opened one."""
    opened, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            for fifo in fifos:
                try:
                    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:  # ENXIO: nobody reads it
                    continue
                opened.append(str(fifo))
                os.close(fd)  # the reader gets end-of-file and goes on
            stop.wait(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    assert not opened, f"a reader opened {opened}"


@pytest.fixture
def files(data_dir):
    vol = np.zeros((6, 16, 16), np.float32)
    vol[3, 8, 8] = 1.0
    write_volume(data_dir / "fov_a.tif", vol, (0.25, 0.1, 0.1))
    fifos = {}
    for name in ("fov_b.tif", "psf.tif", "poses.csv", "coords.csv", "wf.json"):
        os.mkfifo(data_dir / name)
        fifos[name] = data_dir / name
    return data_dir, fifos


def test_imports_refuse_a_fifo(project, launch, files):
    data, fifos = files
    with _never_opened(*fifos.values()):
        assert_rejected(project, "ProtImportFluoImages",
                        r"fov_b.tif' is a FIFO \(named pipe\), not a regular volume file",
                        filesPattern=str(data / "fov_*.tif"))
        assert_rejected(project, "ProtImportParticles", r"is a FIFO \(named pipe\)",
                        filesPattern=str(data / "fov_b.tif"))
        assert_rejected(project, "ProtImportParticles",
                        r"poses.csv' is a FIFO \(named pipe\), not a regular poses CSV file",
                        filesPattern=str(data / "fov_a.tif"), posesFile=str(fifos["poses.csv"]))
        assert_rejected(project, "ProtImportPSF",
                        r"psf.tif' is a FIFO \(named pipe\), not a regular volume file",
                        psfFile=str(fifos["psf.tif"]))
        images = finished(launch(ProtImportFluoImages, filesPattern=str(data / "fov_a.tif")))
        assert_rejected(project, "ProtImportCoordinates",
                        r"coords.csv' is a FIFO \(named pipe\), not a regular coordinates",
                        coordinatesFile=str(fifos["coords.csv"]),
                        inputImages=(images, "outputImages"))


def test_a_workflow_file_that_is_a_fifo_is_refused(project, files):
    from spfluo.workflow import ProjectError, load_workflow_file

    _, fifos = files
    with _never_opened(fifos["wf.json"]):
        with pytest.raises(ProjectError, match=r"wf.json' is a FIFO \(named pipe\)"):
            load_workflow_file(project, str(fifos["wf.json"]))


def test_a_folder_or_missing_file_keeps_its_message(tmp_path):
    from spfluo.io import read_shape, regular_file

    with pytest.raises(ValueError, match="is a folder, not a volume file"):
        read_shape(tmp_path)
    with pytest.raises(FileNotFoundError, match="volume file not found"):
        read_shape(tmp_path / "none.tif")
    assert regular_file(__file__, what="x", kind="x").name == "test_special_files.py"
