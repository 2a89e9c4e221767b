"""A measured or computed PSF made ready for the particles, and bead images averaged.

A bead image comes at the sampling of the fields of view (usually anisotropic, z coarser
than x and y), off centre, over a camera background, in a box that may be larger than the
particles' box.  The reconstruction needs the PSF at the particles' isotropic voxel size,
centred on the box centre ``(Z//2, Y//2, X//2)``, no larger than the box, non-negative and
of unit sum.  :func:`prepare_psf` does every step, per channel, in this order:

1. **background** (optional): the background level found on the six faces of the box
   (:func:`psf_background`) is subtracted, and the voxels below ``3 sigma`` (the noise)
   are set to 0.  Without the threshold the noise left in a large box, clipped at zero,
   would add a pedestal of about ``0.4 sigma`` per voxel to the PSF;
2. **centre** (optional): the centre of mass of what remains, over the whole input box (an
   aberrated PSF's long tail moves it from the peak), to a fraction of a voxel; without
   centring the centre is the box centre of the input;
3. **resampling**: the output grid of the target voxel size is laid with its centre voxel
   on that centre and sampled by band-limited (trigonometric) interpolation of the input
   extended even-symmetrically (no jump at the edges of the box), separably along z, y and
   x, zero outside the input.  A PSF is band-limited by the optics, so this is exact for a
   PSF sampled at or above Nyquist, up to its truncation by the box (a Gaussian of sigma
   one voxel shifted by half a voxel along each axis: 0.2 % of the peak off, 2.5 % with a
   cubic B-spline);
4. **box**: the output grid has the target shape (the PSF is cropped or padded);
5. **unit sum**: negative values (spline ringing) are set to 0 and each channel is scaled
   to sum 1.

:func:`average_beads` registers several bead images (centre of mass, then phase
correlation against their mean, Guizar-Sicairos et al. 2008) and averages them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spfluo.algorithms._validation import check_box_shape
from spfluo.algorithms.correlation import phase_correlation
from spfluo.algorithms.geometry import as_voxel_size

__all__ = ["PreparedPSF", "BeadAverage", "prepare_psf", "average_beads", "psf_background"]

#: Noise standard deviations below which a background-subtracted voxel is set to 0.
NOISE_THRESHOLD = 3.0
#: 1 / Phi^-1(3/4): the standard deviation of Gaussian noise from its median absolute deviation.
_MAD_TO_STD = 1.4826
#: -Phi^-1(0.05): the 5th percentile of Gaussian noise lies this many sigma below its mean.
_P5_TO_MEAN = 1.645


@dataclass(frozen=True)
class PreparedPSF:
    """A PSF made ready for the particles, and what was done to it.

    Attributes
    ----------
    psf : ndarray, shape (C, Z, Y, X), float32
        Non-negative, unit sum per channel, centred on ``(Z//2, Y//2, X//2)``.
    voxel_size : tuple of 3 float
        ``(z, y, x)`` voxel size of ``psf``, micrometres.
    input_shape : tuple of 4 int
        ``(C, Z, Y, X)`` of the input.
    input_voxel_size : tuple of 3 float
        ``(z, y, x)`` voxel size of the input, micrometres.
    offsets : ndarray, shape (C, 3), float64
        Centre of each input channel minus the input's box centre, input voxels ``(z, y, x)``
        (zero when not centred).
    background : ndarray, shape (C,), float64
        Background level subtracted from each channel (0 when not subtracted).
    energy_kept : ndarray, shape (C,), float64
        Fraction of each channel's energy (after background subtraction) that lies inside
        the output box, in ``[0, 1]``.
    """

    psf: np.ndarray
    voxel_size: tuple
    input_shape: tuple
    input_voxel_size: tuple
    offsets: np.ndarray
    background: np.ndarray
    energy_kept: np.ndarray

    @property
    def changed_sampling(self) -> bool:
        """Whether the voxel size or the box differs from the input's."""
        return (not np.allclose(self.voxel_size, self.input_voxel_size, rtol=1e-6)
                or tuple(self.psf.shape) != tuple(self.input_shape))

    def describe(self) -> str:
        """One line for a log: sizes before and after, centring, background, energy kept."""
        fmt = "x".join(str(s) for s in self.input_shape[1:])
        out = "x".join(str(s) for s in self.psf.shape[1:])
        vin = ", ".join(f"{v:g}" for v in self.input_voxel_size)
        vout = ", ".join(f"{v:g}" for v in self.voxel_size)
        parts = [f"PSF {fmt} voxels of ({vin}) µm (z, y, x) -> {out} voxels of ({vout}) µm"]
        if np.any(self.offsets):
            worst = np.abs(self.offsets).max(axis=0)
            parts.append("re-centred (offsets up to " + ", ".join(f"{w:.2f}" for w in worst)
                         + " voxels in z, y, x)")
        if np.any(self.background):
            parts.append("background " + ", ".join(f"{b:.4g}" for b in self.background)
                         + " subtracted")
        kept = ", ".join(f"{100 * e:.1f}%" for e in self.energy_kept)
        parts.append(f"the box holds {kept} of its energy")
        return "; ".join(parts)


@dataclass(frozen=True)
class BeadAverage:
    """Bead images registered and averaged.

    Attributes
    ----------
    psf : ndarray, shape (C, Z, Y, X), float32
        The average, prepared (centred, unit sum per channel).
    offsets : ndarray, shape (B, C, 3), float64
        Centre of each bead and channel found by the registration, minus the box centre,
        voxels ``(z, y, x)``.
    correlations : ndarray, shape (B, C), float64
        Normalised cross-correlation of each registered bead with the average (1 = the same
        shape); a bead well below the others is a doublet, an aggregate or cut by the box.
    background : ndarray, shape (B, C), float64
        Background level subtracted from each bead.
    """

    psf: np.ndarray
    offsets: np.ndarray
    correlations: np.ndarray
    background: np.ndarray


# ----------------------------------------------------------------------------- steps


def _as_channels(psf, name: str) -> np.ndarray:
    arr = np.asarray(psf)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or 0 in arr.shape:
        raise ValueError(f"{name} must have shape (Z, Y, X) or (C, Z, Y, X) with no empty axis, "
                         f"got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real-valued, got dtype {arr.dtype}")
    if min(arr.shape[1:]) < 3:
        raise ValueError(f"{name} of shape {arr.shape[1:]} (z, y, x) is not a 3D PSF: it needs "
                         "at least 3 voxels along each axis")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values: replace them first")
    return arr.astype(np.float64)


def _faces(channel: np.ndarray) -> list:
    """The six faces of the box, as 2D arrays."""
    return [channel[0], channel[-1], channel[:, 0], channel[:, -1], channel[:, :, 0],
            channel[:, :, -1]]


def psf_background(channel) -> tuple[float, float]:
    """Background level and noise of a bead image, from the faces of its box.

    Parameters
    ----------
    channel : ndarray, shape (Z, Y, X)

    Returns
    -------
    level : float
        ``P5 + 1.645 sigma``, ``P5`` the 5th percentile of the voxels on the six faces: the
        background when the faces hold only background and Gaussian noise, and close to it
        when they also hold the out-of-focus light of a widefield PSF, whose halo reaches
        every face of a small box.  On the bead of
        :func:`spfluo.batch.simulated.write_acquisition` (background 100 counts, noise 4,
        peak 5000, 21 x 31 x 31 voxels) the median of the faces is 136 and this level 113;
        the PSF prepared for 16^3 particle voxels is then within 3.4 % of the peak of the
        noise-free PSF, against 27 % with the median.
    sigma : float
        Noise standard deviation, from the differences between neighbouring voxels of the
        faces (insensitive to the smooth halo): 1.4826 times their median absolute
        deviation, divided by sqrt(2).
    """
    faces = _faces(np.asarray(channel, dtype=np.float64))
    values = np.concatenate([f.ravel() for f in faces])
    steps = np.concatenate([np.diff(f, axis=-1).ravel() for f in faces])
    sigma = float(_MAD_TO_STD * np.median(np.abs(steps - np.median(steps))) / np.sqrt(2.0))
    return float(np.percentile(values, 5) + _P5_TO_MEAN * sigma), sigma


def _subtract_background(channel: np.ndarray) -> tuple[np.ndarray, float]:
    level, sigma = psf_background(channel)
    out = channel - level
    out[out < NOISE_THRESHOLD * sigma] = 0.0
    return out, level


def _centre_of_mass(arr: np.ndarray) -> np.ndarray:
    total = arr.sum()
    return np.array([(arr.sum(axis=tuple(b for b in range(3) if b != a))
                      * np.arange(arr.shape[a])).sum() / total for a in range(3)])


def _sample_axes(centre, shape_out, ratio) -> list:
    """Input coordinates (voxels) of the output grid, per axis: output voxel k lies at
    ``centre + (k - n//2) * ratio`` (``ratio`` = output / input voxel size)."""
    return [centre[a] + (np.arange(n) - n // 2) * ratio[a] for a, n in enumerate(shape_out)]


def _periodic_sinc(t: np.ndarray, period: int) -> np.ndarray:
    """Band-limited interpolation kernel of a signal of even ``period`` samples, the Nyquist
    term split evenly: ``sin(pi t) / (N tan(pi t / N))``, 1 at multiples of N."""
    s = np.sin(np.pi * t / period)
    small = np.abs(s) < 1e-12
    value = np.sin(np.pi * t) * np.cos(np.pi * t / period) / (period * np.where(small, 1.0, s))
    return np.where(small, 1.0, value)


def _interpolation_matrix(n: int, positions: np.ndarray) -> np.ndarray:
    """``W (len(positions), n)``: the band-limited interpolant of ``n`` samples, extended
    even-symmetrically to ``2n`` (no jump at the edges), at ``positions`` (voxels); rows of
    positions beyond half a voxel outside the samples are 0."""
    j = np.arange(n)
    t = positions[:, None]
    w = _periodic_sinc(t - j, 2 * n) + _periodic_sinc(t - (2 * n - 1 - j), 2 * n)
    outside = (positions < -0.5) | (positions > n - 0.5)
    w[outside] = 0.0
    return w


def _resample(channel: np.ndarray, axes) -> np.ndarray:
    """``channel`` evaluated on the separable grid ``axes`` (input voxels along z, y, x)."""
    out = channel
    for a, positions in enumerate(axes):
        w = _interpolation_matrix(channel.shape[a], positions)
        out = np.moveaxis(np.tensordot(w, np.moveaxis(out, a, 0), axes=(1, 0)), 0, a)
    return out


def _energy_inside(channel: np.ndarray, centre, vs_in, vs_out, shape_out) -> float:
    """Fraction of ``channel``'s sum on input voxels inside the physical extent of the
    output box centred on ``centre``."""
    total = channel.sum()
    if not total > 0:
        return 0.0
    masks = []
    for a in range(3):
        n = shape_out[a]
        lo = (-(n // 2) - 0.5) * vs_out[a]
        hi = (n - 1 - n // 2 + 0.5) * vs_out[a]
        pos = (np.arange(channel.shape[a]) - centre[a]) * vs_in[a]
        masks.append((pos >= lo - 1e-9) & (pos <= hi + 1e-9))
    inside = channel[np.ix_(*masks)].sum()
    return float(min(1.0, inside / total))


def _prepare_channel(channel, vs_in, vs_out, shape_out, *, centre, start=None):
    """One channel: resampled on ``shape_out`` voxels of ``vs_out`` around its centre.

    ``start``: the input centre (voxels) to use, else the centre of mass of the whole input
    (``centre``) or its box centre.  Returns (samples before the unit sum, input centre).
    """
    if start is not None:
        c = np.asarray(start, dtype=np.float64)
    elif centre:
        c = _centre_of_mass(channel)
    else:
        c = np.array([n // 2 for n in channel.shape], dtype=np.float64)
    axes = _sample_axes(c, shape_out, vs_out / vs_in)
    return np.clip(_resample(channel, axes), 0.0, None), c


def _check_target(voxel_size, target_voxel_size, shape, in_shape):
    vs_in = as_voxel_size(voxel_size)
    vs_out = vs_in if target_voxel_size is None else as_voxel_size(target_voxel_size)
    if shape is None:
        shape_out = tuple(int(n) for n in in_shape) if target_voxel_size is None else tuple(
            max(3, int(round(n * a / b))) for n, a, b in zip(in_shape, vs_in, vs_out))
    else:
        shape_out = check_box_shape(shape)
    return vs_in, vs_out, shape_out


def prepare_psf(psf, voxel_size, *, target_voxel_size=None, shape=None,
                subtract_background: bool = True, centre: bool = True) -> PreparedPSF:
    """Background, centre, resample to the particles' voxels, fit the box, unit sum.

    Parameters
    ----------
    psf : array_like, shape (C, Z, Y, X) or (Z, Y, X)
        A bead image or a PSF model, one per channel.
    voxel_size : float or tuple of 3 float
        ``(z, y, x)`` voxel size of ``psf``, micrometres (anisotropic allowed).
    target_voxel_size : float or tuple of 3 float, optional
        ``(z, y, x)`` voxel size of the result, micrometres (the particles'). Default: the
        input's.
    shape : int or tuple of 3 int, optional
        ``(Z, Y, X)`` of the result (the particle box). Default: the input's box, or the
        same physical extent at ``target_voxel_size``.
    subtract_background : bool, default True
        Subtract the background and zero the noise (step 1 of the module docstring); for
        bead images, not for models.
    centre : bool, default True
        Centre the centre of mass on the output box centre to a fraction of a voxel;
        False keeps the input's box centre ``(Z//2, Y//2, X//2)`` on it.

    Returns
    -------
    PreparedPSF
        The PSF ``(C, Z', Y', X')`` and what was done (offsets, background, energy kept).

    Raises
    ------
    ValueError
        If the PSF is not 3D/4D, has fewer than 3 voxels along an axis, holds NaN/inf, or
        a channel has no signal above the background; or the voxel sizes or shape are
        invalid.
    """
    arr = _as_channels(psf, "psf")
    vs_in, vs_out, shape_out = _check_target(voxel_size, target_voxel_size, shape,
                                             arr.shape[1:])
    box_centre = np.array([n // 2 for n in arr.shape[1:]], dtype=np.float64)
    out = np.empty((arr.shape[0],) + shape_out, dtype=np.float32)
    offsets = np.zeros((arr.shape[0], 3))
    backgrounds = np.zeros(arr.shape[0])
    kept = np.zeros(arr.shape[0])
    for c, channel in enumerate(arr):
        if subtract_background:
            channel, backgrounds[c] = _subtract_background(channel)
        else:
            channel = np.clip(channel, 0.0, None)
        if not channel.sum() > 0:
            raise ValueError(f"psf channel {c} has no positive value"
                             + (" above the background (3 noise standard deviations): "
                                "check the bead image" if subtract_background else
                                ": check the file"))
        samples, found = _prepare_channel(channel, vs_in, vs_out, shape_out, centre=centre)
        total = samples.sum()
        if not total > 0:
            raise ValueError(f"psf channel {c}: nothing of the PSF falls in the {shape_out} box "
                             f"of {tuple(vs_out)} µm voxels: check the voxel sizes")
        out[c] = samples / total
        offsets[c] = found - box_centre
        kept[c] = _energy_inside(channel, found, vs_in, vs_out, shape_out)
    return PreparedPSF(psf=out, voxel_size=tuple(float(v) for v in vs_out),
                       input_shape=tuple(int(s) for s in arr.shape),
                       input_voxel_size=tuple(float(v) for v in vs_in),
                       offsets=offsets, background=backgrounds, energy_kept=kept)


def average_beads(beads, voxel_size) -> BeadAverage:
    """Register several bead images and average them into one PSF.

    Parameters
    ----------
    beads : sequence of array_like, each (C, Z, Y, X) or (Z, Y, X)
        Bead images with the same voxel size and channels (shapes may differ: the average
        has the smallest extent along each axis).
    voxel_size : float or tuple of 3 float
        ``(z, y, x)`` voxel size of the beads, micrometres.

    Returns
    -------
    BeadAverage

    Notes
    -----
    Each bead is background-subtracted and centred on its centre of mass
    (:func:`prepare_psf`), scaled to unit sum; each is then registered to the mean of them
    by phase correlation with sub-voxel refinement
    (:func:`spfluo.algorithms.correlation.phase_correlation`), resampled at the corrected
    centre, and the registered beads are averaged and centred again.
    """
    arrays = [_as_channels(b, f"bead {k}") for k, b in enumerate(beads)]
    if not arrays:
        raise ValueError("beads is empty: give at least one bead image")
    channels = {a.shape[0] for a in arrays}
    if len(channels) != 1:
        raise ValueError(f"the bead images have different channel counts {sorted(channels)}: "
                         "give beads of the same channels")
    vs = as_voxel_size(voxel_size)
    shape = tuple(int(min(a.shape[k] for a in arrays)) for k in (1, 2, 3))
    n_b, n_c = len(arrays), arrays[0].shape[0]
    cleaned = np.empty((n_b, n_c), dtype=object)
    background = np.zeros((n_b, n_c))
    centres = np.zeros((n_b, n_c, 3))
    first = np.zeros((n_b, n_c) + shape)
    for b, arr in enumerate(arrays):
        for c in range(n_c):
            channel, background[b, c] = _subtract_background(arr[c])
            if not channel.sum() > 0:
                raise ValueError(f"bead {b} channel {c} has no signal above the background "
                                 "(3 noise standard deviations): leave this bead out")
            cleaned[b, c] = channel
            samples, centres[b, c] = _prepare_channel(channel, vs, vs, shape, centre=True)
            first[b, c] = samples / samples.sum()
    mean = first.mean(axis=0)
    registered = np.empty_like(first)
    correlations = np.zeros((n_b, n_c))
    for b in range(n_b):
        for c in range(n_c):
            # mean ~ T_t(bead): the bead's centre moves by -t
            shift = phase_correlation(first[b, c].astype(np.float32),
                                      mean[c].astype(np.float32), normalization=None)
            centres[b, c] = centres[b, c] - np.asarray(shift.shifts, dtype=np.float64)
            samples, _ = _prepare_channel(cleaned[b, c], vs, vs, shape, centre=False,
                                          start=centres[b, c])
            registered[b, c] = samples / samples.sum()
    average = registered.mean(axis=0)
    for b in range(n_b):
        for c in range(n_c):
            correlations[b, c] = np.corrcoef(registered[b, c].ravel(), average[c].ravel())[0, 1]
    final = prepare_psf(average, vs, subtract_background=False, centre=True)
    box_centre = np.array([[a.shape[k] // 2 for k in (1, 2, 3)] for a in arrays])
    return BeadAverage(psf=final.psf, offsets=centres - box_centre[:, None, :],
                       correlations=correlations, background=background)
