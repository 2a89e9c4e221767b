"""The resolution a reconstruction can claim: gold-standard FSC, optical cutoff, verdict.

- :func:`optical_cutoff`: the highest frequency the PSF passes (its OTF above a
  fraction of its peak in some direction).  Views at many orientations fill every
  direction up to it at best, so no resolution is claimed beyond it.
- :func:`masked_fsc`: the FSC of two half maps under a soft mask, corrected for the
  correlation that the mask creates by phase randomisation (Chen et al. 2013, eq. 1):
  beyond the frequency where the unmasked FSC falls below 0.8, the phases of both half
  maps are randomised, the randomised maps masked and their FSC ``FSC_n`` measured; the
  corrected curve is ``(FSC_t - FSC_n) / (1 - FSC_n)`` there.
- :class:`Resolution` and :func:`read_resolution`: where a curve crosses a threshold,
  with the verdict that a user reads: a measurement, "not reached below Nyquist" (the
  sampling is too coarse to measure it) or "beyond the optical cutoff" (a correlation
  the data cannot hold).
- :func:`half_map_resolution`: the three steps for two half maps (what the jobs call).
- :func:`low_pass_reference`: a reference low-passed well below the resolution to be
  claimed, from which both halves of a refinement can start independently (Scheres and
  Chen 2012).

Frequencies are in cycles per voxel (Nyquist 0.5), lengths in micrometres, voxels
isotropic.  The 0.143 threshold between half maps corresponds to 0.5 between the full
map and the truth (Rosenthal and Henderson 2003, eq. 17: ``C_ref = sqrt(2 FSC / (1 +
FSC))``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spfluo.algorithms.backend import to_numpy
from spfluo.algorithms.fourier import radial_frequency
from spfluo.algorithms.metrics import FSCCurve, fsc

__all__ = [
    "FSC_THRESHOLD",
    "OTF_THRESHOLD",
    "RANDOMIZE_AT_FSC",
    "NYQUIST",
    "MEASURED",
    "NOT_REACHED",
    "BEYOND_CUTOFF",
    "Resolution",
    "MaskedFSC",
    "optical_cutoff",
    "randomize_phases",
    "randomization_frequency",
    "corrected_fsc",
    "masked_fsc",
    "read_resolution",
    "half_map_resolution",
    "low_pass_reference",
]

#: Gold-standard threshold between half maps.
FSC_THRESHOLD = 0.143
#: The optical cutoff is where the OTF falls below this fraction of its peak.
OTF_THRESHOLD = 1e-3
#: Phases are randomised beyond the frequency where the unmasked FSC falls below this.
RANDOMIZE_AT_FSC = 0.8
#: Nyquist frequency, cycles per voxel.
NYQUIST = 0.5
#: Verdicts of a :class:`Resolution`.
MEASURED, NOT_REACHED, BEYOND_CUTOFF = "measured", "not reached", "beyond cutoff"


@dataclass(frozen=True)
class Resolution:
    """A resolution read on an FSC curve, with its verdict.

    Attributes
    ----------
    status : {"measured", "not reached", "beyond cutoff"}
        ``"measured"``: the curve crosses ``threshold`` below Nyquist and within the
        optical cutoff.  ``"not reached"``: it stays above the threshold up to Nyquist
        and the optics pass frequencies up to Nyquist: the voxels are too coarse to
        measure it.  ``"beyond cutoff"``: it stays above the threshold past the
        optical cutoff, where the data hold no signal (a correlation that the mask or
        a non-linear regulariser made): no resolution is claimed.
    frequency_per_voxel : float
        The crossing in cycles per voxel when measured, else NaN.
    threshold : float
    voxel_size_um : float or None
        Isotropic voxel size (µm); None leaves the lengths out.
    cutoff_per_voxel : float or None
        Optical cutoff (:func:`optical_cutoff`), cycles per voxel; None when unknown.
    """

    status: str
    frequency_per_voxel: float
    threshold: float = FSC_THRESHOLD
    voxel_size_um: float | None = None
    cutoff_per_voxel: float | None = None

    @property
    def measured(self) -> bool:
        return self.status == MEASURED

    @property
    def um(self) -> float | None:
        """The resolution in micrometres, None unless measured with a voxel size."""
        if not self.measured or self.voxel_size_um is None:
            return None
        return self.voxel_size_um / self.frequency_per_voxel

    @property
    def nyquist_um(self) -> float | None:
        return None if self.voxel_size_um is None else self.voxel_size_um / NYQUIST

    @property
    def cutoff_um(self) -> float | None:
        if self.voxel_size_um is None or not self.cutoff_per_voxel:
            return None
        return self.voxel_size_um / self.cutoff_per_voxel

    def _length(self, freq: float) -> str:
        if self.voxel_size_um is None:
            return f"{freq:.3f} 1/voxel"
        return f"{self.voxel_size_um / freq:.3g} µm"

    def text(self) -> str:
        """One line for a log, a report or a figure."""
        if self.measured:
            return (f"{self._length(self.frequency_per_voxel)} (FSC {self.threshold:g}"
                    + (f", {self.frequency_per_voxel:.3f} 1/voxel)" if self.voxel_size_um
                       else ")"))
        if self.status == NOT_REACHED:
            return (f"not reached below Nyquist ({self._length(NYQUIST)}): sample finer")
        return (f"not measured: the FSC stays above {self.threshold:g} past the optical "
                f"cutoff of the PSF ({self._length(self.cutoff_per_voxel)}), where the data "
                "hold no signal")

    def as_dict(self) -> dict:
        """JSON-ready fields (lengths in µm, None where not defined)."""
        return {"status": self.status,
                "frequency_per_voxel": self.frequency_per_voxel if self.measured else None,
                "um": self.um, "threshold": self.threshold,
                "nyquist_um": self.nyquist_um,
                "cutoff_per_voxel": self.cutoff_per_voxel, "cutoff_um": self.cutoff_um,
                "text": self.text()}


@dataclass(frozen=True, eq=False)
class MaskedFSC:
    """Output of :func:`masked_fsc`.

    Attributes
    ----------
    corrected : FSCCurve
        The masked FSC corrected by phase randomisation (the curve to read).
    unmasked, masked, randomized : FSCCurve
        FSC of the half maps as they are, under the mask, and of their phase-randomised
        copies under the mask.
    randomize_from_per_voxel : float
        Frequency beyond which the phases were randomised, cycles per voxel.
    """

    corrected: FSCCurve
    unmasked: FSCCurve
    masked: FSCCurve
    randomized: FSCCurve
    randomize_from_per_voxel: float


def optical_cutoff(psf, *, threshold: float = OTF_THRESHOLD, pad: int = 2,
                   n_directions: int = 180) -> float:
    """Highest frequency the PSF passes: its lateral cutoff.

    In the lateral plane ``kz = 0`` of the OTF (the 2D OTF of the PSF summed along z),
    along each direction, the first radius where it falls below ``threshold`` of its peak;
    the largest over the directions.

    Parameters
    ----------
    psf : ndarray, shape (d, d, d) or (C, d, d, d)
        PSF on the voxels of the reconstruction (several channels: the largest cutoff).
    threshold : float, default 1e-3
        Fraction of ``|OTF(0)|``.
    pad : int, default 2
        Zero padding of the PSF box before its FFT (finer frequency sampling).
    n_directions : int, default 180
        Directions sampled on the half circle.

    Returns
    -------
    float
        Cycles per voxel, at most 0.5: 0.5 when the OTF is above the threshold at
        Nyquist (the voxels undersample the optics).

    Notes
    -----
    A single objective passes less along z than laterally, and views at many
    orientations bring the lateral band to every direction at best: no resolution is
    claimed beyond it.  The plane ``kz = 0`` is also where a PSF truncated along z by its
    box (a widefield PSF) adds nothing: out of it, the truncation makes the OTF ring
    above any small threshold far beyond what the optics pass.  Along each direction the
    first fall counts, not the last (sampling ripples).
    """
    h = np.asarray(to_numpy(psf), dtype=np.float64)
    if h.ndim == 3:
        h = h[None]
    if h.ndim != 4 or h.size == 0 or not np.all(np.isfinite(h)):
        raise ValueError(f"psf must be a finite (d, d, d) or (C, d, d, d) array, got shape "
                         f"{h.shape}")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    from scipy.ndimage import map_coordinates

    shape = tuple(max(16, int(pad) * s) for s in h.shape[2:])
    n = min(shape)
    radii = np.arange(0, n // 2 + 1) / n  # cycles per voxel, up to Nyquist
    angles = np.pi * (np.arange(int(n_directions)) + 0.5) / int(n_directions)
    dirs = np.stack([np.sin(angles), np.cos(angles)], axis=1)  # (y, x), half circle
    centre = np.array([s // 2 for s in shape], dtype=np.float64)
    coords = centre[:, None, None] + (dirs.T[:, :, None] * radii[None, None, :]
                                      * np.array(shape, dtype=np.float64)[:, None, None])
    best = 0.0
    for c in range(h.shape[0]):
        otf = np.abs(np.fft.fftshift(np.fft.fft2(h[c].sum(axis=0), s=shape)))
        peak = otf[tuple(int(x) for x in centre)]
        if peak <= 0:
            raise ValueError(f"psf channel {c} sums to {h[c].sum():g}: give a PSF of positive sum")
        rays = map_coordinates(otf, coords.reshape(2, -1), order=1, mode="nearest").reshape(
            dirs.shape[0], radii.size)
        level = threshold * peak
        below = rays < level
        if not below.any(axis=1).all():
            return NYQUIST  # above the threshold up to Nyquist along some direction
        first = np.argmax(below, axis=1)  # >= 1: the peak is above the level
        rows = np.arange(first.size)
        v0, v1 = rays[rows, first - 1], rays[rows, first]
        frac = np.clip((v0 - level) / np.maximum(v0 - v1, 1e-300), 0, 1)
        best = max(best, float((radii[first - 1] + frac * (radii[first] - radii[first - 1])).max()))
    return min(best, NYQUIST)


def _stack_of_volumes(value, name: str) -> np.ndarray:
    """``value`` as float32 NumPy of shape (..., Z, Y, X), or a ValueError naming it."""
    v = np.asarray(to_numpy(value), dtype=np.float32)
    if v.ndim < 3:
        raise ValueError(f"{name} must have shape (..., Z, Y, X), got {v.shape}")
    return v


def randomize_phases(volumes, frequency, *, seed=0) -> np.ndarray:
    """Replace the phases of the Fourier coefficients beyond ``frequency`` by random ones.

    Parameters
    ----------
    volumes : ndarray, shape (..., Z, Y, X)
        Real volumes (half maps, or particles for noise substitution).
    frequency : float or ndarray broadcasting to the leading shape
        Cycles per voxel; coefficients with ``|k| > frequency`` get the phases of the
        spectrum of white noise (Hermitian, so the result stays real), their moduli kept.
    seed : int or numpy.random.Generator

    Returns
    -------
    ndarray, float32, same shape
    """
    v = _stack_of_volumes(volumes, "volumes")
    rng = np.random.default_rng(seed)
    shape = v.shape[-3:]
    axes = (-3, -2, -1)
    spec = np.fft.rfftn(v, axes=axes)
    noise = np.fft.rfftn(rng.standard_normal(v.shape, dtype=np.float32), axes=axes)
    k = np.asarray(radial_frequency(shape, rfft=True, dtype=np.float32))
    f = np.asarray(frequency, dtype=np.float32)[..., None, None, None]
    phase = np.where(k > f, noise / np.maximum(np.abs(noise), 1e-30), 1.0)
    return np.fft.irfftn(spec * phase, s=shape, axes=axes).astype(np.float32)


def randomization_frequency(curve: FSCCurve, *, level: float = RANDOMIZE_AT_FSC,
                            cutoff_per_voxel: float | None = None) -> float:
    """First frequency (shell centre, from shell 1) where ``curve`` falls below ``level``,
    Nyquist when it never does; at most ``cutoff_per_voxel``."""
    below = np.flatnonzero(np.asarray(curve.values)[1:] < level)
    f = float(curve.frequencies[below[0] + 1]) if below.size else NYQUIST
    return f if cutoff_per_voxel is None else min(f, float(cutoff_per_voxel))


def corrected_fsc(masked: FSCCurve, randomized: FSCCurve, frequency: float) -> FSCCurve:
    """Chen et al. 2013 eq. 1: ``(FSC_t - FSC_n) / (1 - FSC_n)`` beyond ``frequency``,
    ``FSC_t`` up to it (``FSC_n = 1``, no information: 0)."""
    f = np.asarray(masked.frequencies)
    t, n = np.asarray(masked.values), np.asarray(randomized.values)
    if t.shape != n.shape:
        raise ValueError(f"the two curves must have the same shells, got {t.shape} and {n.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(n < 1, (t - n) / (1 - n), 0.0)
    values = np.clip(np.where(f > frequency, corr, t), -1.0, 1.0)
    return FSCCurve(frequencies=f, values=values, counts=masked.counts)


def masked_fsc(half1, half2, mask, *, randomize_at: float = RANDOMIZE_AT_FSC,
               seed=0) -> MaskedFSC:
    """FSC of two half maps under a mask, corrected by phase randomisation.

    Parameters
    ----------
    half1, half2 : ndarray, shape (D, D, D)
        Independent half maps in the same frame.
    mask : ndarray, shape (D, D, D)
        Soft mask in [0, 1] (:func:`spfluo.algorithms.reconstruct.mask.spherical_mask`).
    randomize_at : float, default 0.8
        Phases are randomised beyond the first shell where the unmasked FSC falls below
        this (Chen et al. 2013 sec. 2.3).
    seed : int or numpy.random.Generator
        Random phases.

    Returns
    -------
    MaskedFSC

    Notes
    -----
    Chen et al. 2013 eq. 1: ``FSC_true = (FSC_t - FSC_n) / (1 - FSC_n)`` beyond the
    randomisation frequency, ``FSC_t`` below it; ``FSC_n`` is the FSC of the masked
    phase-randomised maps, whose correlation beyond that frequency can only come from
    the mask (it convolves the low frequencies, which the halves share, into the high
    ones).
    """
    a = np.asarray(to_numpy(half1), dtype=np.float32)
    b = np.asarray(to_numpy(half2), dtype=np.float32)
    m = np.asarray(to_numpy(mask), dtype=np.float32)
    if a.ndim != 3 or a.shape != b.shape or m.shape != a.shape:
        raise ValueError(f"half1, half2 and mask must be (D, D, D) volumes of one shape, got "
                         f"{a.shape}, {b.shape}, {m.shape}")
    if not 0 < randomize_at < 1:
        raise ValueError(f"randomize_at must be in (0, 1), got {randomize_at!r}")
    rng = np.random.default_rng(seed)
    unmasked = fsc(a, b)
    masked = fsc(a * m, b * m)
    start = randomization_frequency(unmasked, level=randomize_at)
    rand = randomize_phases(np.stack([a, b]), start, seed=rng)
    randomized = fsc(rand[0] * m, rand[1] * m)
    corrected = corrected_fsc(masked, randomized, start)
    return MaskedFSC(corrected=corrected, unmasked=unmasked, masked=masked,
                     randomized=randomized, randomize_from_per_voxel=start)


def read_resolution(curve: FSCCurve, *, threshold: float = FSC_THRESHOLD,
                    voxel_size_um: float | None = None,
                    cutoff_per_voxel: float | None = None) -> Resolution:
    """Where ``curve`` first falls below ``threshold``, with the verdict.

    The crossing is the first shell ``s >= 1`` below the threshold, linearly
    interpolated with the previous shell.  A crossing more than one shell beyond
    ``cutoff_per_voxel``, or no crossing with a cutoff below Nyquist minus one shell, is
    ``"beyond cutoff"``; a crossing within one shell beyond it reads as the cutoff (no
    resolution is claimed beyond the optics); no crossing otherwise is ``"not reached"``.
    """
    if not isinstance(curve, FSCCurve):
        raise ValueError(f"curve must be an FSCCurve, got {type(curve).__name__}")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    if voxel_size_um is not None and not (math.isfinite(voxel_size_um) and voxel_size_um > 0):
        raise ValueError(f"voxel_size_um must be > 0 micrometres, got {voxel_size_um!r}")
    f = np.asarray(curve.frequencies, dtype=np.float64)
    v = np.asarray(curve.values, dtype=np.float64)
    # shells up to Nyquist only (the corners of the box are incomplete shells)
    keep = f <= NYQUIST + 1e-9
    f, v = f[keep], v[keep]
    step = float(f[1] - f[0]) if f.size > 1 else NYQUIST
    below = np.flatnonzero(v[1:] < threshold)
    common = dict(threshold=float(threshold), voxel_size_um=voxel_size_um,
                  cutoff_per_voxel=None if cutoff_per_voxel is None else float(cutoff_per_voxel))
    if below.size == 0:
        limited = cutoff_per_voxel is not None and cutoff_per_voxel < NYQUIST - step
        return Resolution(BEYOND_CUTOFF if limited else NOT_REACHED, math.nan, **common)
    i = int(below[0]) + 1
    v0, v1 = v[i - 1], v[i]
    frac = (v0 - threshold) / (v0 - v1) if v0 > v1 else 0.0
    freq = float(f[i - 1] + min(max(frac, 0.0), 1.0) * (f[i] - f[i - 1]))
    if freq <= 0:
        freq = float(f[1]) * 0.5
    if cutoff_per_voxel is not None and freq > cutoff_per_voxel:
        if freq > cutoff_per_voxel + step:
            return Resolution(BEYOND_CUTOFF, math.nan, **common)
        freq = float(cutoff_per_voxel)  # within a shell of it: the optics' limit, not more
    return Resolution(MEASURED, freq, **common)


def half_map_resolution(half1, half2, *, mask_radius: float | None = None,
                        voxel_size_um: float | None = None, psf=None,
                        cutoff_per_voxel: float | None = None,
                        threshold: float = FSC_THRESHOLD, seed=0) -> tuple[MaskedFSC, Resolution]:
    """Gold-standard resolution of two half maps: masked, phase-randomised FSC, verdict.

    Parameters
    ----------
    half1, half2 : ndarray, shape (D, D, D)
        Half maps reconstructed from disjoint halves of the particles, each from its own
        half only (or from a common reference low-passed well below the resolution,
        :func:`low_pass_reference`).
    mask_radius : float, optional
        Radius of the soft spherical mask (1 inside, soft edge beyond), voxels (default:
        :func:`spfluo.algorithms.reconstruct.mask.default_mask_radius`).
    voxel_size_um : float, optional
        Isotropic voxel size (µm), for the lengths.
    psf : ndarray, optional
        The PSF of the data, for the optical cutoff (:func:`optical_cutoff`); or give
        ``cutoff_per_voxel``.
    cutoff_per_voxel : float, optional
    threshold : float, default 0.143
    seed : int or numpy.random.Generator
        Random phases of :func:`masked_fsc`.

    Returns
    -------
    MaskedFSC, Resolution
    """
    from spfluo.algorithms.reconstruct.mask import default_mask_radius, spherical_mask

    a = np.asarray(to_numpy(half1), dtype=np.float32)
    if a.ndim != 3:
        raise ValueError(f"half1 must be a (D, D, D) volume, got shape {a.shape}")
    radius = default_mask_radius(a.shape[-1]) if mask_radius is None else float(mask_radius)
    mask = spherical_mask(a.shape, radius, backend="cpu")
    curves = masked_fsc(a, half2, mask, seed=seed)
    if cutoff_per_voxel is None and psf is not None:
        cutoff_per_voxel = optical_cutoff(psf)
    res = read_resolution(curves.corrected, threshold=threshold, voxel_size_um=voxel_size_um,
                          cutoff_per_voxel=cutoff_per_voxel)
    return curves, res


def low_pass_reference(volume, frequency_per_voxel: float, *, edge_per_voxel: float = 0.02):
    """A reference low-passed to ``frequency_per_voxel`` (raised-cosine edge).

    Parameters
    ----------
    volume : ndarray, shape (..., Z, Y, X)
    frequency_per_voxel : float
        Cut-off in cycles per voxel, in (0, 0.5]: 1 up to ``frequency - edge``, a raised
        cosine down to 0 at ``frequency``.  Choose it well below the resolution to be
        claimed (RELION starts at 60 Å for a 3 Å map); convert from micrometres with
        ``voxel_size / length``.
    edge_per_voxel : float, default 0.02
        Width of the edge, cycles per voxel.

    Returns
    -------
    ndarray, float32, same shape
    """
    v = _stack_of_volumes(volume, "volume")
    if not (isinstance(frequency_per_voxel, (int, float, np.floating, np.integer))
            and 0 < frequency_per_voxel <= NYQUIST):
        raise ValueError(f"frequency_per_voxel must be in (0, 0.5] cycles per voxel, got "
                         f"{frequency_per_voxel!r}")
    if not 0 <= edge_per_voxel < frequency_per_voxel:
        raise ValueError(f"edge_per_voxel must be in [0, frequency_per_voxel), got "
                         f"{edge_per_voxel!r}")
    shape = v.shape[-3:]
    k = np.asarray(radial_frequency(shape, rfft=True, dtype=np.float64))
    if edge_per_voxel > 0:
        t = np.clip((k - (frequency_per_voxel - edge_per_voxel)) / edge_per_voxel, 0, 1)
        filt = 0.5 * (1 + np.cos(np.pi * t))
    else:
        filt = (k <= frequency_per_voxel).astype(np.float64)
    out = np.fft.irfftn(np.fft.rfftn(v, axes=(-3, -2, -1)) * filt, s=shape, axes=(-3, -2, -1))
    return out.astype(np.float32)
