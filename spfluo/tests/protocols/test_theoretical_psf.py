"""Theoretical PSF protocol: widths against the textbook formulas, aberration, confocal,
expansion factor, bad parameters."""

import functools
import os

import numpy as np
import pytest

from spfluo.algorithms.psf import psf_fwhm
from spfluo.io import read_volume
from spfluo.tests._projects import assert_rejected, finished

OIL = dict(numericalAperture=1.2, emissionWavelength=0.52, immersionIndex=1.518,
           voxelSizeXY=0.04, voxelSizeZ=0.1, sizeXY=33, sizeZ=31)


def _fwhm(project, prot):
    psf = prot.outputPSF
    data = read_volume(os.path.join(project.getPath(), psf.getFileName())).data[0]
    assert data.min() >= 0 and float(data.sum(dtype=np.float64)) == pytest.approx(1, abs=1e-5)
    return psf_fwhm(data, voxel_size=psf.getVoxelSize())


def test_widefield_widths_match_the_textbook(project, launch):
    from spfluo.protocols import ProtTheoreticalPSF

    # no index mismatch: the aberration-free widefield PSF (Born & Wolf)
    prot = finished(launch(ProtTheoreticalPSF, sampleIndex=1.518, **OIL))
    fz, fy, fx = _fwhm(project, prot)
    na, lam, n = 1.2, 0.52, 1.518
    assert fx == pytest.approx(0.51 * lam / na, rel=0.1)  # lateral: 0.51 lambda / NA
    assert fy == pytest.approx(fx, rel=0.02)
    axial = 0.88 * lam / (n - np.sqrt(n ** 2 - na ** 2))  # axial FWHM of a widefield PSF
    assert fz == pytest.approx(axial, rel=0.15)
    assert prot.outputPSF.getVoxelSize() == pytest.approx((0.1, 0.04, 0.04))
    assert prot.outputPSF.getDimensions() == (31, 33, 33)
    assert "widefield scalar PSF" in open(prot.getLogPaths()[0]).read()


def test_depth_in_water_lengthens_the_psf_and_expansion_divides_sizes(project, launch):
    from spfluo.protocols import ProtTheoreticalPSF

    shallow = finished(launch(ProtTheoreticalPSF, sampleIndex=1.33, depth=0.0, **OIL))
    deep = finished(launch(ProtTheoreticalPSF, sampleIndex=1.33, depth=15.0,
                           expansionFactor=4.0, **OIL))
    # stored in the units of the sample before expansion: the sizes divided by 4
    assert deep.outputPSF.getVoxelSize() == pytest.approx((0.025, 0.01, 0.01))
    z_shallow = _fwhm(project, shallow)[0]
    z_deep = _fwhm(project, deep)[0] * 4  # back to the microscope's micrometres
    assert z_deep > 1.2 * z_shallow  # spherical aberration of an oil objective in water


def test_confocal_is_narrower_than_widefield(project, launch):
    from spfluo.protocols import ProtTheoreticalPSF

    wide = finished(launch(ProtTheoreticalPSF, sampleIndex=1.518, **OIL))
    conf = finished(launch(ProtTheoreticalPSF, sampleIndex=1.518, microscope=1,
                           excitationWavelength=0.488, pinhole=0.0, **OIL))
    ratio = _fwhm(project, conf)[2] / _fwhm(project, wide)[2]
    assert 0.6 < ratio < 0.85  # about 1 / sqrt(2) for a point detector


def test_automatic_box_and_vectorial_model(project, launch):
    from spfluo.protocols import ProtTheoreticalPSF
    from spfluo.protocols.protocol_psf import automatic_psf_shape

    params = {k: v for k, v in OIL.items() if k not in ("sizeXY", "sizeZ")}
    prot = finished(launch(ProtTheoreticalPSF, method=1, **params))
    expected = automatic_psf_shape(numerical_aperture=1.2, wavelength=0.52,
                                   immersion_index=1.518, voxel_size=(0.1, 0.04, 0.04))
    assert prot.outputPSF.getDimensions() == expected
    assert all(n % 2 == 1 for n in expected)
    assert expected[2] * 0.04 >= 8 * 0.61 * 0.52 / 1.2  # 4 Airy radii on each side


def test_bad_optics_are_rejected(project):
    rejected = functools.partial(assert_rejected, project, "ProtTheoreticalPSF")
    rejected("must be smaller than the immersion refractive index", numericalAperture=1.6)
    rejected("in micrometres: 0.52 for 520 nm", emissionWavelength=520.0)
    rejected("Excitation wavelength must be between", microscope=1, excitationWavelength=0.0)
    rejected("Expansion factor must be >= 1", expansionFactor=0.5)
    rejected("Depth below the coverslip must be >= 0", depth=-1.0)
    rejected("Box z must be 0 \\(automatic\\) or at least 3", sizeZ=2)
