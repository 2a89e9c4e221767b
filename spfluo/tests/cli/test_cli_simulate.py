"""`spfluo run` simulate dataset -> compare volumes, `project show` and `show --save` (headless)."""

import re

import pytest

from spfluo.tests.cli.test_cli import spfluo

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


def _run_id(stdout: str) -> int:
    return int(re.search(r"run #(\d+)", stdout).group(1))


def test_simulate_compare_show(home, tmp_path):
    assert spfluo(home, "project", "create", "sim").returncode == 0
    out = spfluo(home, "run", "sim", "ProtSimulateDataset", "boxSize=20", "nParticles=4",
                 "sigmaXY=1", "sigmaZ=2.5", "noiseStd=0.1", "nSpots=5", "phantom=asymmetric",
                 "--label", "truth")
    assert out.returncode == 0, out.stderr + out.stdout
    sim = _run_id(out.stdout)
    assert "outputParticles" in out.stdout and "outputVolume" in out.stdout

    out = spfluo(home, "run", "sim", "ProtCompareVolumes", f"inputVolume={sim}.outputVolume",
                 f"referenceVolume={sim}.outputVolume", f"inputParticles={sim}.outputParticles",
                 f"referenceParticles={sim}.outputParticles", "doRegister=true")
    assert out.returncode == 0, out.stderr + out.stdout
    cmp_id = _run_id(out.stdout)

    show = spfluo(home, "project", "show", "sim")
    assert show.returncode == 0, show.stderr
    text = show.stdout
    assert "2 run(s)" in text
    line = next(s for s in text.splitlines() if "outputComparison (VolumeComparison)" in s)
    ssim = float(re.search(r"SSIM ([0-9.]+)", line).group(1))
    assert ssim > 0.99
    assert "pose error median 0.00 deg" in line and "4 particles" in line
    assert f"<- inputVolume: run #{sim}.outputVolume" in text

    expected = {
        f"{cmp_id}.outputComparison": ["cmp.png", "cmp_conical_fsc.png", "cmp_pose_errors.png"],
        f"{sim}.outputVolume": ["vol.png", "vol_isosurface.png"],
        f"{sim}.outputParticles": ["parts.png", "parts_orientations.png"],
    }
    for ref, files in expected.items():
        out = spfluo(home, "show", "sim", ref, "--save", files[0], "--dpi", "40", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        for name in files:
            assert (tmp_path / name).read_bytes()[:8] == PNG, name
