"""`spfluo demo --quick` in a fresh spfluo home: the whole chain, its printout, figures, report,
and a project that a fresh engine process (as the Scipion GUI does) loads with every run
finished and its outputs."""

import io
import json
import os
import re
import subprocess
import sys

import pytest

LABELS = ["import fields of view", "import PSF", "example particles", "pick particles",
          "extract particles", "ab initio", "align C9 axis", "refine C9",
          "import ground truth", "compare with ground truth"]
CLASSES = ["ProtImportFluoImages", "ProtImportPSF", "ProtImportCoordinates", "ProtPickParticles",
           "ProtExtractParticles", "ProtAbInitio", "ProtAlignSymmetryAxis", "ProtRefine",
           "ProtImportFluoImages", "ProtCompareVolumes"]


def spfluo(home, *args, cwd=None, timeout=240):
    env = dict(os.environ, SPFLUO_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "spfluo.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    """One `spfluo demo --quick` for the module: (home, figures folder, completed process).

    Run from an empty folder, without --out: the figures go to the project's report folder.
    """
    root = tmp_path_factory.mktemp("demo")
    home, cwd = root / "home", root / "cwd"
    cwd.mkdir()
    res = spfluo(home, "demo", "--quick", "--project", "quick", cwd=cwd)
    assert not list(cwd.iterdir())  # nothing written where the user stands
    return home, home / "projects" / "quick" / "report", res


def test_quick_demo_runs_the_chain_and_prints_the_table(quick_demo):
    _, _, res = quick_demo
    assert res.returncode == 0, res.stdout + res.stderr
    text = res.stdout
    header = re.search(r"^\s*run\s+label\s+protocol\s+status\s+duration$", text, re.M)
    assert header, text
    rows = re.findall(r"^\s*#(\d+)\s+(.+?)\s+(Prot\w+)\s+(\w+)\s+([\d.]+) s$",
                      text[header.end():], re.M)
    assert [r[1] for r in rows] == LABELS
    assert [r[2] for r in rows] == CLASSES
    assert all(r[3] == "finished" for r in rows)
    assert len({r[0] for r in rows}) == len(LABELS)
    # the progress line and the table give the same duration for each run
    progress = re.findall(r"^\[\s*\d+/10\] (.+?) \.\.\. finished in ([\d.]+) s \(([\d.]+) s with "
                          r"the engine's start-up\)$", text, re.M)
    assert [p[0] for p in progress] == LABELS
    assert [p[1] for p in progress] == [r[4] for r in rows]
    assert all(float(p[2]) >= float(p[1]) for p in progress)
    ssim = float(re.search(r"^  SSIM (\d\.\d{3})$", text, re.M).group(1))
    assert 0.5 < ssim <= 1.0  # the quick sizes; the default run reaches 0.9
    # a resolution is printed only when measured; else the verdict says why
    line = re.search(r"^  FSC resolution \(0\.143\): (.+)$", text, re.M).group(1)
    measured = re.fullmatch(r"([\d.]+) µm \(FSC 0\.143, ([\d.]+) 1/voxel\)", line)
    if measured:
        um, per_voxel = float(measured.group(1)), float(measured.group(2))
        assert 0 < per_voxel < 0.5 and um == pytest.approx(0.06 / per_voxel, rel=0.02)
    else:
        assert line == "not reached below Nyquist (0.12 µm): sample finer", line
    assert re.search(r"^  half-map FSC resolution \(0\.143, masked, corrected\): .+; optical "
                     r"cutoff of the PSF [\d.]+ µm$", text, re.M), text
    assert re.search(r"^\d+ particles picked and extracted \(of 16 simulated\)$", text, re.M)
    assert "noise 0.2 (Eloy et al. 2023's level)" in text
    assert re.search(r"demo finished in \d+ s wall, \d+ s CPU", text)


def test_quick_demo_writes_figures_and_report(quick_demo):
    _, out, res = quick_demo
    assert res.returncode == 0, res.stdout + res.stderr
    for name in ("final_fsc.png", "final_volume_vs_ground_truth.png", "final_volume_slices.png",
                 "index.html"):
        path = out / name
        assert path.is_file() and path.stat().st_size > 1000, name
        assert name in res.stdout
    with open(out / "final_fsc.png", "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "Project quick" in page
    for label in LABELS:
        assert label in page
    assert "ssim" in page.lower()


def test_demo_project_loads_in_a_fresh_engine_process(quick_demo):
    """What the Scipion GUI does: Project.load, then every run with its outputs."""
    home, _, res = quick_demo
    assert res.returncode == 0, res.stdout + res.stderr
    code = f"""
import json
from spfluo.environment import bootstrap
bootstrap({str(home)!r})
import pyworkflow as pw
from pyworkflow.project import Manager, Project
project = Project(pw.Config.getDomain(), Manager().getProjectPath("quick"))
project.load()
runs = []
for prot in sorted(project.getRuns(), key=lambda p: p.getObjId()):
    outputs = {{}}
    for name, out in prot.iterOutputAttributes():
        outputs[name] = out.getSize() if hasattr(out, "getSize") else -1
    runs.append([prot.getObjLabel(), prot.getClassName(), prot.getStatus(), outputs])
print(json.dumps(runs))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    runs = json.loads(out.stdout.strip().splitlines()[-1])
    assert [r[0] for r in runs] == LABELS and [r[1] for r in runs] == CLASSES
    assert all(r[2] == "finished" for r in runs)
    outputs = [r[3] for r in runs]
    assert outputs[0] == {"outputImages": 2} and "outputPSF" in outputs[1]
    assert outputs[2] == {"outputCoordinates": 4}
    n = outputs[3]["outputCoordinates"]
    assert n >= 4 and outputs[4] == {"outputParticles": n}
    for k in (5, 6, 7):  # ab initio, axis, refinement: a volume and the particles with poses
        # and, where a PSF was used, the PSF at the particles' sampling
        psf = {"outputPSF"} if k in (5, 7) else set()
        assert set(outputs[k]) == {"outputVolume", "outputParticles"} | psf
        assert outputs[k]["outputParticles"] == n
    assert outputs[8] == {"outputImages": 1} and set(outputs[9]) == {"outputComparison"}


def test_project_show_lists_the_demo_runs(quick_demo):
    home, _, res = quick_demo
    assert res.returncode == 0, res.stdout + res.stderr
    show = spfluo(home, "project", "show", "quick", timeout=120)
    assert show.returncode == 0, show.stderr
    assert "10 run(s)" in show.stdout
    for label, cls in zip(LABELS, CLASSES):
        assert re.search(rf"{re.escape(label)}\s+{cls}\s+finished", show.stdout), label
    assert "outputComparison (VolumeComparison)" in show.stdout
    assert re.search(r"<- inputVolume: run #\d+\.outputVolume", show.stdout)


def test_a_failed_run_stops_the_demo_with_status_1(monkeypatch, tmp_path):
    """A run that fails (here: the fields become unreadable before picking) is reported."""
    import spfluo.workflow as workflow
    from spfluo.demo import demo_settings, run_demo

    real_launch = workflow.launch

    def launch(project, prot, **kwargs):
        if prot.getClassName() == "ProtPickParticles":
            for img in prot.inputImages.get().items():
                with open(img.getFileName(), "wb") as fh:
                    fh.write(b"not an image any more")
        return real_launch(project, prot, **kwargs)

    monkeypatch.setattr(workflow, "launch", launch)
    settings = demo_settings(quick=True, field_shape=(16, 64, 64), phantom_box=16,
                             particles_per_field=3, n_debris=0, touching_pairs=0, n_examples=3,
                             particle_voxel_size=0.08)
    stream = io.StringIO()
    cwd = os.getcwd()
    try:
        status = run_demo(name="demo-fails", settings=settings, out=str(tmp_path / "fig"),
                          stream=stream)
    finally:
        os.chdir(cwd)
    text = stream.getvalue()
    assert status == 1, text
    assert re.search(r"#\d+\s+pick particles\s+ProtPickParticles\s+failed", text)
    assert re.search(r"#\d+\s+example particles\s+ProtImportCoordinates\s+finished", text)
    assert "ab initio" not in text  # nothing after the failed run
    assert re.search(r"^pick particles failed: .+", text, re.M)
    assert re.search(r"^log: .+run\.stderr$", text, re.M)


def _tiny(**changes):
    from spfluo.demo import demo_settings

    base = dict(field_shape=(16, 64, 64), phantom_box=16, particles_per_field=3, n_debris=0,
                touching_pairs=0, n_examples=3, particle_voxel_size=0.08)
    return demo_settings(quick=True, **{**base, **changes})


def test_simulated_demo_data(tmp_path):
    """The files the "microscope" writes: what the protocols and `spfluo batch` read."""
    import numpy as np

    from spfluo.algorithms.phantoms import c9_barrel
    from spfluo.batch.dataset import read_dataset
    from spfluo.demo import simulate_demo_data
    from spfluo.io import read_coordinates_csv, read_volume

    s = _tiny(field_shape=(24, 96, 96), phantom_box=32, particle_voxel_size=0.064,
              psf_sigma_um=(0.2, 0.05))
    data = simulate_demo_data(tmp_path / "data", s)
    assert [f.name for f in data.fields] == ["field_0.ome.tif", "field_1.ome.tif"]
    field = read_volume(data.fields[0])
    assert field.data.shape == (2, 24, 96, 96)
    assert np.allclose(field.voxel_size, s.field_voxel_size)
    # the reconstruction's PSF: isotropic voxels of the particles, sigma z / sigma xy = 4
    psf = read_volume(data.psf)
    assert np.allclose(psf.voxel_size, (0.064,) * 3) and psf.data.shape == (1, 19, 19, 19)
    h = psf.data[0].astype(float)
    c = np.array(h.shape) // 2
    var = [np.sum(h.sum(axis=tuple(a for a in range(3) if a != ax))
                  * (np.arange(h.shape[ax]) - c[ax]) ** 2) for ax in range(3)]
    # std of the written profiles (voxel-integrated, cut at 2.9 sigma along z): within 10 %
    assert np.sqrt(var[0]) * 0.064 == pytest.approx(0.2, rel=0.1)
    assert np.sqrt(var[1]) * 0.064 == pytest.approx(0.05, rel=0.1)
    assert np.sqrt(var[2]) * 0.064 == pytest.approx(0.05, rel=0.1)
    # the ground truth: the phantom on the particles' grid (1.28 µm box / 0.064 µm voxels)
    truth = read_volume(data.reference)
    assert truth.data.shape == (2, 20, 20, 20) and np.allclose(truth.voxel_size, (0.064,) * 3)
    assert np.array_equal(truth.data, c9_barrel((20,) * 3, second_channel=True))
    # the examples: 3 positions inside the fields, split between them
    table = read_coordinates_csv(data.examples)
    assert sorted(table.image_ids) == ["field_0", "field_0", "field_1"]
    extent = (np.array(s.field_shape) - 1) * np.array(s.field_voxel_size)
    assert np.all(table.positions_zyx_um >= 0) and np.all(table.positions_zyx_um <= extent)
    values = read_dataset(data.folder).values
    assert values["symmetry"] == "9" and float(values["box_size"]) == pytest.approx(1.28)
    assert float(values["particle_voxel_size"]) == 0.064 and values["examples"].endswith(".csv")


def test_demo_settings_errors(tmp_path):
    from spfluo.demo import simulate_demo_data

    with pytest.raises(ValueError, match=r"particle_voxel_size=0.05 µm must divide the particle "
                                         r"box of 0.64 µm \(16 field voxels\)"):
        simulate_demo_data(tmp_path / "a", _tiny(particle_voxel_size=0.05))
    with pytest.raises(ValueError, match="n_examples=7 needs 4 isolated particle"):
        simulate_demo_data(tmp_path / "b", _tiny(n_examples=7))
    with pytest.raises(ValueError, match=r"of which 2 touch"):
        simulate_demo_data(tmp_path / "c", _tiny(touching_pairs=1, n_examples=4))
