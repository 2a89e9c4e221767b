"""`spfluo report`: the static HTML page (runs in provenance order, parameters, figures)."""

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from spfluo.protocols import ProtCompareVolumes, ProtImportPSF, ProtSimulateDataset
from spfluo.report import provenance_order, run_parameters, write_report
from spfluo.workflow import RunInfo

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.sections, self.body = [], [], {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "section":
            self.sections.append(int(attrs["id"].split("-")[1]))
        elif tag == "body":
            self.body = attrs


def _parse(text):
    page = _Page()
    page.feed(text)
    return page


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """A small project (simulation, a comparison, a failed import) and its report."""
    import pyworkflow as pw
    from pyworkflow.project import Project

    base = tmp_path_factory.mktemp("report")
    cwd = os.getcwd()
    project = Project(pw.Config.getDomain(), str(base / "proj"))
    project.create()
    try:
        failed = project.newProtocol(ProtImportPSF, psfFile=str(base / "none.tif"))
        failed.setObjLabel("psf that fails")
        project.launchProtocol(failed, wait=True)
        sim = project.newProtocol(ProtSimulateDataset, phantom=1, boxSize=12, nParticles=3,
                                  nSpots=0, voxelSize=0.05)
        project.launchProtocol(sim, wait=True)
        comp = project.newProtocol(ProtCompareVolumes, doRegister=False, symmetry=9)
        comp.inputVolume.set(sim)
        comp.inputVolume.setExtended("outputVolume")
        comp.referenceVolume.set(sim)
        comp.referenceVolume.setExtended("outputVolume")
        project.launchProtocol(comp, wait=True)
        assert sim.isFinished() and comp.isFinished() and failed.isFailed()
        index = write_report(project, base / "site", dpi=40)
        yield {"project": project, "index": index, "sim": sim, "comp": comp, "failed": failed}
    finally:
        os.chdir(cwd)


def test_page_content(reported):
    index, sim, comp, failed = (reported[k] for k in ("index", "sim", "comp", "failed"))
    text = index.read_text(encoding="utf-8")
    page = _parse(text)
    # provenance order: the comparison after the simulation it uses; ties by id
    assert page.sections == [failed.getObjId(), sim.getObjId(), comp.getObjId()]
    assert f'href="#run-{sim.getObjId()}"' in text  # the comparison's inputs link to it
    # parameters with labels; those whose condition is false are left out
    assert "<td>Box size (voxels)</td><td><code>boxSize</code></td><td>12</td>" in text
    assert "<td>Phantom</td><td><code>phantom</code></td><td>c9</td>" in text
    assert "<code>fieldX</code>" not in text  # only for fields of view
    assert "<td>Register the volume onto the reference?</td><td><code>doRegister</code></td>" \
           "<td>no</td>" in text
    # the failure and its reason
    assert 'class="status status-failed">failed' in text
    assert "does not exist: check the path" in text
    # metrics: the comparison's numbers (a volume against itself: SSIM 1)
    ssim = comp.outputComparison.getMetrics()["ssim"]
    assert ssim == pytest.approx(1.0, abs=1e-4)
    assert '<td>SSIM (0 to 1)</td><td class="num">1.000</td><td class="why">Structural ' \
        'similarity' in text
    assert "fsc_resolution_0143" not in text  # no raw keys: labels with units
    # a volume against itself: the FSC never falls below 0.143, so no number, the verdict
    assert re.search(r"<td>FSC resolution at 0\.143</td><td class=\"num\">not reached below "
                     r"Nyquist \([\d.]+ µm\): sample finer</td>", text)
    assert "FSC resolution at 0.143 (1/voxel)" not in text
    # every figure of every output, written beside the page
    from spfluo.viewers import figures_for

    expected = sum(len(figures_for(out)) for prot in (sim, comp)
                   for _, out in prot.iterOutputAttributes())
    assert len(page.images) == expected == len(list(index.parent.glob("run*.png")))
    for src in page.images:
        assert (index.parent / src).stat().st_size > 1000


def test_run_parameters_follow_conditions(reported):
    names = [name for _, name, _ in run_parameters(reported["sim"])]
    assert names[:3] == ["phantom", "nChannels", "boxSize"]
    assert "nParticles" in names and "nFields" not in names and "runName" not in names
    labels = dict((name, label) for label, name, _ in run_parameters(reported["sim"]))
    assert labels["sigmaZ"] == "PSF sigma (voxels): z"  # a line's label prefixes its fields


def test_provenance_order():
    def info(run_id, *sources):
        return RunInfo(run_id=run_id, label=f"r{run_id}", class_name="P", status="finished",
                       duration_s=1.0, error="", inputs=[("x", s, "out") for s in sources])

    runs = [info(9, 12), info(12), info(3), info(20, 3, 9), info(5, 99)]
    order = [r.run_id for r in provenance_order(runs)]
    assert order == [3, 5, 12, 9, 20]
    position = {r: k for k, r in enumerate(order)}
    for r in runs:  # every run after the runs it uses
        assert all(position[s] < position[r.run_id] for _, s, _ in r.inputs if s in position)


def _chromium():
    return next((shutil.which(n) for n in CHROMIUM_NAMES if shutil.which(n)), None)


def _rendered_body(index, tmp_path):
    exe = _chromium()
    res = subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=10000",
         "--dump-dom", index.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return _parse(res.stdout).body


def test_page_renders_in_headless_chromium(reported, tmp_path):
    if _chromium() is None:
        pytest.skip("no chromium binary on PATH (install Debian's `chromium` package)")
    index = reported["index"]
    n_images = len(_parse(index.read_text(encoding="utf-8")).images)
    body = _rendered_body(index, tmp_path)
    assert body.get("data-images-loaded") == str(n_images)
    assert body.get("data-images-broken") == ""
    # the check sees a broken image
    copy = tmp_path / "copy"
    shutil.copytree(index.parent, copy)
    victim = sorted(copy.glob("run*.png"))[0]
    victim.unlink()
    body = _rendered_body(copy / "index.html", tmp_path)
    assert body.get("data-images-loaded") == str(n_images - 1)
    assert body.get("data-images-broken") == victim.name


def test_report_command(reported, tmp_path, spfluo_home):
    path = reported["project"].getPath()
    env = dict(os.environ, SPFLUO_HOME=str(spfluo_home))
    res = subprocess.run([sys.executable, "-m", "spfluo.cli", "report", path, "--out", "page",
                          "--no-figures"], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=200)
    assert res.returncode == 0, res.stderr
    index = tmp_path / "page" / "index.html"
    assert f"wrote {index} (0 figure(s))" in res.stdout
    text = index.read_text(encoding="utf-8")
    assert len(re.findall(r'<section class="run', text)) == 3 and "<img" not in text
    with pytest.raises(ValueError, match="dpi must be an integer >= 10 and <= 600, got 0"):
        write_report(reported["project"], tmp_path / "x", dpi=0)


def test_report_never_deletes_or_overwrites_the_users_files(reported, tmp_path, spfluo_home):
    """The probe's case: `spfluo report --out DIR` on a folder of the user's files."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "run0001_plot.png").write_bytes(b"the user's figure")
    (mine / "index.html").write_text("the user's page")
    env = dict(os.environ, SPFLUO_HOME=str(spfluo_home))
    res = subprocess.run([sys.executable, "-m", "spfluo.cli", "report",
                          reported["project"].getPath(), "--out", mine, "--no-figures"],
                         capture_output=True, text=True, env=env, timeout=200)
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"{mine} is not empty and spfluo did not create it" in res.stderr
    assert sorted(p.name for p in mine.iterdir()) == ["index.html", "run0001_plot.png"]
    assert (mine / "run0001_plot.png").read_bytes() == b"the user's figure"
    assert (mine / "index.html").read_text() == "the user's page"

    # a report's own folder (a copy): written again in place, the user's later file kept
    site = tmp_path / "site"
    shutil.copytree(reported["index"].parent, site)
    (site / "notes.txt").write_text("kept")
    assert list(site.glob("run*.png"))
    index = write_report(reported["project"], site, figures=False)
    assert index == site / "index.html" and not list(site.glob("run*.png"))
    assert (site / "notes.txt").read_text() == "kept"


def test_figures_are_drawn_once_per_output(reported, tmp_path):
    """A second report reuses every figure; a changed output's figures alone are redrawn."""
    project, sim = reported["project"], reported["sim"]
    site = tmp_path / "cached"
    write_report(project, site, dpi=40)

    def stamps():
        return {p.name: p.stat().st_mtime_ns for p in site.glob("run*.png")}

    first = stamps()
    assert first
    write_report(project, site, dpi=40)
    assert stamps() == first  # nothing drawn again
    volume = os.path.join(project.getPath(), sim.outputVolume.getFileName())
    st = os.stat(volume)
    os.utime(volume, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        write_report(project, site, dpi=40)
    finally:
        os.utime(volume, ns=(st.st_atime_ns, st.st_mtime_ns))
    third = stamps()
    assert set(third) == set(first)
    redrawn = {name for name in first if third[name] != first[name]}
    assert redrawn and all(n.startswith(f"run{sim.getObjId():04d}_outputVolume_")
                           for n in redrawn)
    # a figure changed by hand is not taken for spfluo's: refused, never overwritten
    victim = sorted(site.glob("run*.png"))[0]
    victim.write_bytes(b"the user's edit")
    with pytest.raises(Exception, match="changed after spfluo wrote it"):
        write_report(project, site, dpi=40)
    assert victim.read_bytes() == b"the user's edit"
