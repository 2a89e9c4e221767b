"""Point spread functions: analytic Gaussian and optical (Born & Wolf, Gibson & Lanni).

A PSF here is a float32 array of shape ``(Z, Y, X)`` (z the optical axis), centred on the
voxel ``(Z//2, Y//2, X//2)`` and normalised to unit sum, so that convolving with it
preserves the total intensity.

- :func:`gaussian_psf` is the simulation PSF of the papers (Eloy et al. 2023 eq. 26: a Gaussian
  with covariance ``diag(sigma_xy^2, sigma_xy^2, sigma_z^2)``; Fortun et al. 2018 sec. V-A-1). It is
  integrated over each voxel (differences of ``erf``) instead of point-sampled, so that it
  is exact, symmetric and of unit sum down to sigma of half a voxel.
- :func:`born_wolf_psf` and :func:`gibson_lanni_psf` are optical models computed by the
  ``psfmodels`` library (Gibson & Lanni scalar model; the vectorial model of Aguet et al.
  2009 for ``method="vectorial"``). Born & Wolf is the aberration-free special case of
  Gibson & Lanni (point source on the coverslip, all refractive indices at their design
  values), as used by Fortun et al. 2017.
- :func:`center_psf`, :func:`normalize_psf` centre and normalise a PSF at its own sampling;
  :func:`psf_fwhm` reports its widths, hence its anisotropy.  A bead image is made ready
  for the particles (background, resampling, box) by
  :func:`spfluo.algorithms.psf_preparation.prepare_psf`.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.signal
import scipy.special

from spfluo.algorithms._validation import check_box_shape
from spfluo.algorithms.fourier import shift_volume

__all__ = [
    "gaussian_psf",
    "born_wolf_psf",
    "gibson_lanni_psf",
    "center_psf",
    "normalize_psf",
    "psf_fwhm",
]



# ----------------------------------------------------------------------------- validation


def _check_voxel_size(voxel_size) -> np.ndarray:
    vs = np.atleast_1d(np.asarray(voxel_size, dtype=np.float64))
    if vs.size == 1:
        vs = np.repeat(vs, 3)
    if vs.shape != (3,) or not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise ValueError(
            "voxel_size must be a positive number or a (z, y, x) tuple of 3 positive numbers "
            f"in micrometres, got {voxel_size!r}"
        )
    return vs


def _check_volume(psf, name: str = "psf") -> np.ndarray:
    arr = np.asarray(psf)
    if arr.ndim != 3:
        raise ValueError(f"{name} must be a 3D array of shape (Z, Y, X), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}): give a non-empty (Z, Y, X) array")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be a real-valued array, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"{name} contains NaN or infinite values: replace them (e.g. np.nan_to_num) first"
        )
    return arr


# ----------------------------------------------------------------------------- Gaussian


def _gaussian_profile(n: int, sigma: float) -> np.ndarray:
    """Voxel-integrated 1D Gaussian of width ``sigma`` (voxels) centred on ``n // 2``.

    Voxel ``i`` covers ``[i - c - 1/2, i - c + 1/2]``; its value is the Gaussian mass
    there, from ``erfc`` of the edge farther from the centre minus ``erfc`` of the nearer
    one (no cancellation in the tails, exactly mirror-symmetric).
    """
    offsets = np.arange(n, dtype=np.float64) - n // 2
    if sigma == 0:
        return (offsets == 0).astype(np.float64)
    a = np.abs(offsets)
    scale = 1.0 / (math.sqrt(2.0) * sigma)
    near = np.maximum(a - 0.5, 0.0) * scale
    far = (a + 0.5) * scale
    # mass in [|o| - 1/2, |o| + 1/2]; the centre voxel straddles 0 and gets erf(far).
    prof = np.where(
        a == 0, scipy.special.erf(far), 0.5 * (scipy.special.erfc(near) - scipy.special.erfc(far))
    )
    return prof / prof.sum()


def gaussian_psf(shape, sigma, *, voxel_size=None) -> np.ndarray:
    """Anisotropic Gaussian PSF integrated over each voxel.

    Parameters
    ----------
    shape : int or tuple of 3 int
        ``(Z, Y, X)`` box size in voxels (an int gives a cube).
    sigma : float or sequence of float
        Standard deviations: one value (isotropic), ``(sigma_z, sigma_xy)`` or
        ``(sigma_z, sigma_y, sigma_x)``. In voxels when ``voxel_size`` is None, in
        micrometres when ``voxel_size`` is given. Zero gives a Dirac along that axis.
    voxel_size : float or tuple of 3 float, optional
        ``(z, y, x)`` voxel size in micrometres; when given, ``sigma`` is read in
        micrometres and divided by it.

    Returns
    -------
    psf : ndarray, shape (Z, Y, X), float32
        Non-negative, unit sum, centred on ``(Z//2, Y//2, X//2)``, mirror-symmetric about
        the centre along each axis of odd length.

    Notes
    -----
    Eloy et al. 2023 eq. 26 (covariance ``diag(sigma_xy^2, sigma_xy^2, sigma_z^2)``); the papers use
    ``sigma_xy = 1.5, sigma_z = 5`` (Eloy et al. 2023) and ``4, 16`` voxels (Fortun et al.
    2018). Each voxel holds the
    Gaussian mass over its extent (products of ``erf`` differences along each axis), then
    each axis profile is renormalised to unit sum so that the truncation by the box does
    not change the total. The variance of the sampled profile is ``sigma^2 + 1/12`` voxel^2
    (the voxel box adds its own), which matters only for sigma below about one voxel.
    """
    shape = check_box_shape(shape)
    s = np.atleast_1d(np.asarray(sigma, dtype=np.float64))
    if s.ndim != 1 or s.size not in (1, 2, 3):
        raise ValueError(
            "sigma must be one number, (sigma_z, sigma_xy) or (sigma_z, sigma_y, sigma_x), "
            f"got {sigma!r}"
        )
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError(f"sigma must be finite and >= 0, got {sigma!r}")
    if s.size == 1:
        s = np.repeat(s, 3)
    elif s.size == 2:
        s = np.array([s[0], s[1], s[1]])
    if voxel_size is not None:
        s = s / _check_voxel_size(voxel_size)
    pz, py, px = (_gaussian_profile(n, float(sg)) for n, sg in zip(shape, s))
    psf = pz[:, None, None] * py[None, :, None] * px[None, None, :]
    return psf.astype(np.float32)


# ----------------------------------------------------------------------------- optical models


def _check_optics(numerical_aperture, wavelength, immersion_index, name_index: str) -> None:
    for name, value in (
        ("numerical_aperture", numerical_aperture),
        ("wavelength", wavelength),
        (name_index, immersion_index),
    ):
        if not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if numerical_aperture <= 0:
        raise ValueError(f"numerical_aperture must be > 0, got {numerical_aperture}")
    if immersion_index < 1:
        raise ValueError(f"{name_index} must be >= 1 (vacuum), got {immersion_index}")
    if numerical_aperture >= immersion_index:
        raise ValueError(
            f"numerical_aperture ({numerical_aperture}) must be smaller than the immersion "
            f"refractive index {name_index} ({immersion_index}): NA = n sin(theta) <= n"
        )
    if wavelength <= 0:
        raise ValueError(f"wavelength must be > 0 micrometres, got {wavelength}")
    if wavelength > 10:
        raise ValueError(
            f"wavelength is in micrometres, got {wavelength}: did you give nanometres? "
            f"(use {wavelength / 1000:g})"
        )


def _odd_box_psf(shape, vs, *, wavelength, method, params) -> np.ndarray:
    """psfmodels PSF computed on an odd box (exact centre) then cropped to ``shape``.

    psfmodels puts the point source at the centre of odd boxes, at ``(n - 1) / 2``; an odd
    box of size ``2 (N // 2) + 1`` cropped to its first ``N`` samples puts it at ``N // 2``.
    """
    import psfmodels  # imported here: only the optical models need it

    z_size, y_size, x_size = shape
    nz = 2 * (z_size // 2) + 1
    nxy = 2 * (max(y_size, x_size) // 2) + 1
    vol = psfmodels.make_psf(
        nz,
        nxy,
        dxy=float(vs[1]),
        dz=float(vs[0]),
        wvl=float(wavelength),
        model=method,
        normalize=False,
        **params,
    )
    c = nxy // 2
    vol = vol[
        :z_size,
        c - y_size // 2 : c - y_size // 2 + y_size,
        c - x_size // 2 : c - x_size // 2 + x_size,
    ]
    return np.clip(vol, 0.0, None)


def _pinhole_kernel(radius_px: float) -> np.ndarray:
    """Disk of radius ``radius_px`` pixels, pixel coverage by 8x8 sub-samples, unit sum."""
    r = int(math.ceil(radius_px))
    sub = (np.arange(8) + 0.5) / 8 - 0.5
    grid = np.arange(-r, r + 1, dtype=np.float64)
    fine = (grid[:, None] + sub[None, :]).ravel()
    inside = (fine[:, None] ** 2 + fine[None, :] ** 2) <= radius_px**2
    k = inside.reshape(2 * r + 1, 8, 2 * r + 1, 8).mean(axis=(1, 3))
    return k / k.sum()


def _optical_psf(
    shape,
    *,
    voxel_size,
    numerical_aperture,
    wavelength,
    model,
    excitation_wavelength,
    pinhole_diameter,
    method,
    params,
) -> np.ndarray:
    shape = check_box_shape(shape)
    vs = _check_voxel_size(voxel_size)
    if not np.isclose(vs[1], vs[2], rtol=1e-6):
        raise ValueError(
            f"voxel_size must have equal y and x sizes for an optical PSF, got {tuple(vs)}: "
            "resample the data to square pixels first"
        )
    if model not in ("widefield", "confocal"):
        raise ValueError(f"model must be 'widefield' or 'confocal', got {model!r}")
    if method not in ("scalar", "vectorial"):
        raise ValueError(f"method must be 'scalar' or 'vectorial', got {method!r}")
    if (
        not (
            isinstance(pinhole_diameter, (int, float, np.integer, np.floating))
            and math.isfinite(pinhole_diameter)
        )
        or pinhole_diameter < 0
    ):
        raise ValueError(f"pinhole_diameter must be >= 0 Airy units, got {pinhole_diameter!r}")
    if model == "widefield":
        psf = _odd_box_psf(shape, vs, wavelength=wavelength, method=method, params=params)
        return normalize_psf(psf)

    if excitation_wavelength is None:
        raise ValueError(
            "model='confocal' needs excitation_wavelength (micrometres), the laser line, "
            "e.g. 0.488"
        )
    _check_optics(numerical_aperture, excitation_wavelength, params["ni"], "immersion index")
    if pinhole_diameter > 0:
        airy_unit = 1.22 * wavelength / numerical_aperture  # micrometres, sample space
        radius_px = 0.5 * pinhole_diameter * airy_unit / vs[1]
        pad = int(math.ceil(radius_px))
        big = (shape[0], shape[1] + 2 * pad, shape[2] + 2 * pad)
        em = _odd_box_psf(big, vs, wavelength=wavelength, method=method, params=params)
        kernel = _pinhole_kernel(radius_px)[None]
        em = scipy.signal.fftconvolve(em, kernel, mode="same", axes=(1, 2))
        em = np.clip(em[:, pad : pad + shape[1], pad : pad + shape[2]], 0.0, None)
    else:
        em = _odd_box_psf(shape, vs, wavelength=wavelength, method=method, params=params)
    ex = _odd_box_psf(shape, vs, wavelength=excitation_wavelength, method=method, params=params)
    return normalize_psf(ex * em)


def born_wolf_psf(
    shape,
    *,
    voxel_size,
    numerical_aperture: float,
    wavelength: float,
    refractive_index: float = 1.518,
    model: str = "widefield",
    excitation_wavelength: float | None = None,
    pinhole_diameter: float = 0.0,
) -> np.ndarray:
    """Aberration-free (Born & Wolf) PSF of a widefield or confocal microscope.

    Parameters
    ----------
    shape : int or tuple of 3 int
        ``(Z, Y, X)`` box size in voxels.
    voxel_size : float or tuple of 3 float
        ``(z, y, x)`` voxel size in micrometres (y and x must be equal).
    numerical_aperture : float
        Objective NA, ``0 < NA < refractive_index``.
    wavelength : float
        Emission wavelength in micrometres (e.g. 0.52).
    refractive_index : float, default 1.518
        Refractive index of the immersion medium, also taken for the sample and the
        coverslip (no mismatch, hence no aberration): 1.518 oil, 1.33 water.
    model : {"widefield", "confocal"}
    excitation_wavelength : float, optional
        Excitation wavelength in micrometres; required for ``model="confocal"``.
    pinhole_diameter : float, default 0
        Confocal pinhole diameter in Airy units (0: point detector).

    Returns
    -------
    psf : ndarray, shape (Z, Y, X), float32
        Unit sum, source at ``(Z//2, Y//2, X//2)``.

    Notes
    -----
    Gibson & Lanni's scalar model with the point source on the coverslip and every
    refractive index and thickness at its design value reduces to the Born & Wolf
    defocus integral (the PSF of Fortun et al. 2017, symmetric about the focal plane).

    Confocal model: ``h = h_ex * (h_em conv_xy P)``, the product of the excitation PSF
    (at ``excitation_wavelength``) and the emission PSF (at ``wavelength``) convolved in
    each z plane with the pinhole disk ``P`` back-projected to the sample (diameter in Airy
    units, 1 AU = 1.22 wavelength / NA). It assumes incoherent detection, a pinhole on axis,
    the same objective and aberrations for both paths, no Stokes-shift chromatic focal
    shift; ``pinhole_diameter = 0`` is the ideal point detector ``h_ex h_em``.

    The PSF is computed by ``psfmodels.make_psf`` on an odd box (its point source is at the
    exact centre there) with 3x lateral oversampling for pixel integration, cropped to
    ``shape`` so that the source sits on ``(Z//2, Y//2, X//2)``, clipped at 0 and
    normalised to unit sum. Lateral and axial extents of the box should cover a few
    FWHM (about ``2 wavelength / NA^2`` axially) or the truncated part is lost.
    """
    _check_optics(numerical_aperture, wavelength, refractive_index, "refractive_index")
    n = float(refractive_index)
    params = {
        "NA": float(numerical_aperture),
        "ni": n,
        "ni0": n,
        "ns": n,
        "ng": n,
        "ng0": n,
        "pz": 0.0,
    }
    return _optical_psf(
        shape,
        voxel_size=voxel_size,
        numerical_aperture=numerical_aperture,
        wavelength=wavelength,
        model=model,
        excitation_wavelength=excitation_wavelength,
        pinhole_diameter=pinhole_diameter,
        method="scalar",
        params=params,
    )


def gibson_lanni_psf(
    shape,
    *,
    voxel_size,
    numerical_aperture: float,
    wavelength: float,
    immersion_index: float = 1.518,
    sample_index: float = 1.47,
    depth: float = 0.0,
    coverslip_index: float = 1.515,
    coverslip_thickness: float = 170.0,
    immersion_index_design: float | None = None,
    coverslip_index_design: float | None = None,
    coverslip_thickness_design: float | None = None,
    working_distance: float = 150.0,
    model: str = "widefield",
    excitation_wavelength: float | None = None,
    pinhole_diameter: float = 0.0,
    method: str = "scalar",
) -> np.ndarray:
    """PSF with the refractive-index mismatch aberrations of Gibson & Lanni.

    Parameters
    ----------
    shape : int or tuple of 3 int
        ``(Z, Y, X)`` box size in voxels.
    voxel_size : float or tuple of 3 float
        ``(z, y, x)`` voxel size in micrometres (y and x must be equal).
    numerical_aperture : float
        Objective NA, ``0 < NA < immersion_index``.
    wavelength : float
        Emission wavelength in micrometres.
    immersion_index, sample_index, coverslip_index : float
        Refractive indices (experimental values) of the immersion medium, the sample and
        the coverslip.
    depth : float, default 0
        Depth of the point source below the coverslip, micrometres (>= 0). With a sample
        index that differs from the immersion index the PSF grows asymmetric along z and
        its maximum moves away from the centre (focal shift): use :func:`center_psf` when a
        centred kernel is needed.
    coverslip_thickness : float, default 170
        Micrometres.
    immersion_index_design, coverslip_index_design, coverslip_thickness_design : float, optional
        Design values of the objective (default: the experimental values).
    working_distance : float, default 150
        Design working distance (immersion thickness), micrometres.
    model : {"widefield", "confocal"}
    excitation_wavelength : float, optional
        Excitation wavelength in micrometres; required for ``model="confocal"``.
    pinhole_diameter : float, default 0
        Confocal pinhole diameter in Airy units.
    method : {"scalar", "vectorial"}
        Gibson & Lanni scalar model, or the vectorial model of Aguet et al. (2009).

    Returns
    -------
    psf : ndarray, shape (Z, Y, X), float32
        Unit sum; the focal plane of the source is at ``z = Z//2``.

    Notes
    -----
    Computed by ``psfmodels.make_psf`` (model "scalar" or "vectorial") with the same
    sampling, cropping and confocal approximation as :func:`born_wolf_psf` (see its
    Notes).
    """
    _check_optics(numerical_aperture, wavelength, immersion_index, "immersion_index")
    values = {
        "sample_index": sample_index,
        "coverslip_index": coverslip_index,
        "coverslip_thickness": coverslip_thickness,
        "working_distance": working_distance,
        "depth": depth,
    }
    for key, val in list(values.items()) + [
        ("immersion_index_design", immersion_index_design),
        ("coverslip_index_design", coverslip_index_design),
        ("coverslip_thickness_design", coverslip_thickness_design),
    ]:
        if val is None:
            continue
        if not isinstance(val, (int, float, np.integer, np.floating)) or not math.isfinite(val):
            raise ValueError(f"{key} must be a finite number, got {val!r}")
        if key.endswith("index") or key.endswith("index_design"):
            if val < 1:
                raise ValueError(f"{key} must be >= 1, got {val}")
        elif key == "depth":
            if val < 0:
                raise ValueError(f"depth must be >= 0 micrometres below the coverslip, got {val}")
        elif val <= 0:
            raise ValueError(f"{key} must be > 0 micrometres, got {val}")
    params = {
        "NA": float(numerical_aperture),
        "ni": float(immersion_index),
        "ni0": float(immersion_index if immersion_index_design is None else immersion_index_design),
        "ns": float(sample_index),
        "ng": float(coverslip_index),
        "ng0": float(coverslip_index if coverslip_index_design is None else coverslip_index_design),
        "tg": float(coverslip_thickness),
        "tg0": float(
            coverslip_thickness
            if coverslip_thickness_design is None
            else coverslip_thickness_design
        ),
        "ti0": float(working_distance),
        "pz": float(depth),
    }
    if numerical_aperture >= params["ni0"]:
        raise ValueError(
            f"numerical_aperture ({numerical_aperture}) must be smaller than "
            f"immersion_index_design ({params['ni0']})"
        )
    return _optical_psf(
        shape,
        voxel_size=voxel_size,
        numerical_aperture=numerical_aperture,
        wavelength=wavelength,
        model=model,
        excitation_wavelength=excitation_wavelength,
        pinhole_diameter=pinhole_diameter,
        method=method,
        params=params,
    )


# ----------------------------------------------------------------------------- preparation


def normalize_psf(psf) -> np.ndarray:
    """Make a PSF non-negative with unit sum.

    Parameters
    ----------
    psf : array_like, shape (Z, Y, X)
        Any real PSF (a bead image, a model). Negative values (noise after background
        subtraction, ringing) are set to 0.

    Returns
    -------
    psf : ndarray, shape (Z, Y, X), float32
        Non-negative, sums to 1.

    Raises
    ------
    ValueError
        If the array is not 3D, is empty, holds NaN/inf, or has no positive value.
    """
    arr = _check_volume(psf).astype(np.float64)
    arr = np.clip(arr, 0.0, None)
    total = arr.sum()
    if not total > 0:
        raise ValueError(
            "psf has no positive value (all zeros or negative): check the bead image or the "
            "background subtraction"
        )
    return (arr / total).astype(np.float32)


def _center_of_mass(arr: np.ndarray) -> np.ndarray:
    total = arr.sum()
    return np.array(
        [
            (arr.sum(axis=tuple(j for j in range(3) if j != ax)) * np.arange(arr.shape[ax])).sum()
            / total
            for ax in range(3)
        ]
    )


def center_psf(psf, *, tolerance: float = 1e-3, max_iterations: int = 5) -> np.ndarray:
    """Move the centre of mass of a PSF to the box centre ``(Z//2, Y//2, X//2)``.

    Parameters
    ----------
    psf : array_like, shape (Z, Y, X)
        A PSF (e.g. an averaged bead image) whose mass lies well inside the box.
    tolerance : float, default 1e-3
        Stop when the centre of mass is within this distance of the centre, voxels.
    max_iterations : int, default 5
        Shift/clip passes at most (clipping the ringing of a sub-voxel shift moves the
        centre of mass slightly, so a second pass is sometimes needed).

    Returns
    -------
    psf : ndarray, shape (Z, Y, X), float32
        Shifted (periodic sub-voxel Fourier shift), negatives clipped to 0, rescaled to
        the sum of the non-negative part of the input.

    Raises
    ------
    ValueError
        If the array is not 3D, is empty, holds NaN/inf, or has no positive value.
    """
    arr = np.clip(_check_volume(psf).astype(np.float64), 0.0, None)
    total = arr.sum()
    if not total > 0:
        raise ValueError("psf has no positive value (all zeros or negative): nothing to centre")
    if not isinstance(max_iterations, (int, np.integer)) or max_iterations < 1:
        raise ValueError(f"max_iterations must be an int >= 1, got {max_iterations!r}")
    if not tolerance > 0:
        raise ValueError(f"tolerance must be > 0 voxels, got {tolerance!r}")
    centre = np.array([n // 2 for n in arr.shape], dtype=np.float64)
    for _ in range(max_iterations):
        delta = centre - _center_of_mass(arr)
        if np.max(np.abs(delta)) < tolerance:
            break
        arr = np.clip(shift_volume(arr, delta), 0.0, None)
        arr *= total / arr.sum()
    return arr.astype(np.float32)


def _half_crossing(prof: np.ndarray, i: int, half: float) -> float:
    """Position in ``[i, i + 1]`` where ``prof`` crosses ``half`` (``prof`` on either side)."""
    a, b = prof[i], prof[i + 1]
    linear = i + (half - a) / (b - a)
    k = i if i + 2 < prof.size else i - 1  # three samples k, k + 1, k + 2 around the crossing
    if k < 0:
        return float(linear)
    y = prof[k : k + 3]
    if np.any(y <= 0):
        return float(linear)
    ly = np.log(y) - np.log(half)
    # parabola through (0, ly0), (1, ly1), (2, ly2): c2 t^2 + c1 t + c0
    c0 = ly[0]
    c2 = 0.5 * (ly[2] - 2.0 * ly[1] + ly[0])
    c1 = ly[1] - ly[0] - c2
    lo, hi = i - k, i - k + 1
    if abs(c2) < 1e-12:
        roots = np.array([-c0 / c1]) if c1 != 0 else np.array([])
    else:
        disc = c1 * c1 - 4.0 * c2 * c0
        if disc < 0:
            return float(linear)
        sq = np.sqrt(disc)
        roots = np.array([(-c1 - sq) / (2.0 * c2), (-c1 + sq) / (2.0 * c2)])
    roots = roots[(roots >= lo - 1e-9) & (roots <= hi + 1e-9)]
    if roots.size != 1:
        return float(linear)
    return float(k + roots[0])


def psf_fwhm(psf, *, voxel_size=None) -> np.ndarray:
    """Full widths at half maximum of a PSF along z, y and x.

    Parameters
    ----------
    psf : array_like, shape (Z, Y, X)
        A PSF with a single main lobe.
    voxel_size : float or tuple of 3 float, optional
        ``(z, y, x)`` voxel size in micrometres; when given the widths are in micrometres.

    Returns
    -------
    fwhm : ndarray, shape (3,), float64
        ``(fwhm_z, fwhm_y, fwhm_x)`` in voxels (or micrometres), measured on the profiles
        through the brightest voxel, half-maximum crossings located by linear
        interpolation between samples: a parabola through the logarithm of three samples
        (exact for a sampled Gaussian), or a straight line when that fails. ``fwhm[0] /
        fwhm[2]`` is the axial anisotropy. A voxel-integrated Gaussian (e.g.
        :func:`gaussian_psf`) has the FWHM ``2.3548 sqrt(sigma^2 + 1/12)``.

    Raises
    ------
    ValueError
        If the profile does not drop below half its maximum inside the box on both sides
        along some axis (the box is too small for the PSF), or the PSF is invalid.
    """
    arr = _check_volume(psf).astype(np.float64)
    if not arr.max() > 0:
        raise ValueError("psf has no positive value (all zeros or negative)")
    scale = np.ones(3) if voxel_size is None else _check_voxel_size(voxel_size)
    peak = np.unravel_index(np.argmax(arr), arr.shape)
    half = arr[peak] / 2.0
    widths = np.empty(3)
    for ax, name in enumerate("zyx"):
        index = list(peak)
        index[ax] = slice(None)
        prof = arr[tuple(index)]
        p = peak[ax]
        below_left = np.nonzero(prof[:p] < half)[0]
        below_right = np.nonzero(prof[p + 1 :] < half)[0]
        if below_left.size == 0 or below_right.size == 0:
            raise ValueError(
                f"the PSF does not fall below half its maximum along {name} inside the box "
                f"(shape {arr.shape}): use a larger box"
            )
        i = below_left[-1]  # prof[i] < half <= prof[i + 1]
        left = _half_crossing(prof, i, half)
        j = p + below_right[0]  # prof[j] >= half > prof[j + 1]
        right = _half_crossing(prof, j, half)
        widths[ax] = (right - left) * scale[ax]
    return widths
