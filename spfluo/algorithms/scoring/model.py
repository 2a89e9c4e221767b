"""TODO docstring spfluo/algorithms/scoring/model.py."""

from __future__ import annotations

import math

import numpy as np

from spfluo.algorithms.backend import AXES3, Backend, to_numpy
from spfluo.algorithms.fourier import _fit_to, resize_fourier
from spfluo.algorithms.geometry import (
    swap_xyz_zyx,
)
from spfluo.algorithms.transform import _padded_shape, rotate_fourier
from spfluo.algorithms.scoring.spectra import (
    ParticleSpectra,
    SpectralParticles,
)


def _as_reference(xp, volume, data: "SpectralParticles"):
    """A volume to compare with the particles of ``data``: (C, D, D, D) float32."""
    box = data.box
    vol = xp.asarray(volume, dtype=xp.float32)
    if vol.ndim == 3:
        vol = vol[None]
    if tuple(vol.shape) != (data.n_channels, box, box, box):
        raise ValueError(f"volume must have shape ({box}, {box}, {box}) (or with "
                         f"{data.n_channels} channels first) like the particles, got "
                         f"{tuple(xp.asarray(volume).shape)}")
    return vol


class _FourierVolume:
    """The volume on ``L^3`` voxels (of ``D / L`` particle voxels) and its oversampled spectrum.

    ``real`` (C, L, L, L) float32 is the parameter: the volume downsampled to
    ``L^3`` (intensities as in the particles), non-negative.  ``spectrum``
    (C, G+3, G+3, G+3) complex64, ``G = 2 L``, is ``(D/L)^3`` times the centred
    FFT of ``real`` zero-padded to ``G^3``, stored inside a zero border as the
    trilinear gathers of :mod:`transform` expect: its sample ``q`` is the
    spectrum of the particle-sized volume at ``q / (2 D)`` cycles per voxel.
    ``curvature`` (same layout, float32) is the running preconditioner ``B``.
    """

    def __init__(self, bk: Backend, box: int, real, curvature=None):
        xp = bk.xp
        self.bk = bk
        self.box = int(box)
        self.real = real
        self.band = int(real.shape[-1])
        self.size = 2 * self.band
        c = int(real.shape[0])
        padded = _padded_shape(self.shape3)
        if curvature is None:
            curvature = xp.zeros((c,) + padded, dtype=xp.float32)
        self.curvature = curvature
        self.spectrum = xp.zeros((c,) + padded, dtype=xp.complex64)
        self.refresh()

    @property
    def shape3(self) -> tuple[int, int, int]:
        return (self.size,) * 3

    def _inner(self, a):
        g = self.size
        return a[..., 1:g + 1, 1:g + 1, 1:g + 1]

    def refresh(self) -> None:
        """Recompute ``spectrum`` from ``real``."""
        bk = self.bk
        xp = bk.xp
        g = self.size
        padded = _fit_to(xp, self.real, (g, g, g))
        spec = bk.fftn(xp.fft.ifftshift(padded, axes=AXES3), axes=AXES3)
        spec = xp.fft.fftshift(spec, axes=AXES3)
        scale = np.float32((self.box / self.band) ** 3)
        self._inner(self.spectrum)[...] = (spec * scale).astype(xp.complex64)

    @classmethod
    def initial(cls, bk: Backend, volume, band: int) -> "_FourierVolume":
        """From volumes (C, D, D, D) in particle voxels, resampled to ``band^3``."""
        xp = bk.xp
        box = int(volume.shape[-1])
        real = resize_fourier(xp.asarray(volume, dtype=xp.float32), (band,) * 3, backend=bk)
        return cls(bk, box, xp.maximum(real, 0.0).astype(xp.float32))

    def resized(self, band: int) -> "_FourierVolume":
        """The same volume resampled to another band (Fourier padding/cropping)."""
        xp = self.bk.xp
        real = resize_fourier(self.real, (band,) * 3, backend=self.bk)
        g = 2 * int(band)
        curv = xp.zeros((self.real.shape[0],) + _padded_shape((g, g, g)), dtype=xp.float32)
        curv[:, 1:g + 1, 1:g + 1, 1:g + 1] = _fit_to(xp, self._inner(self.curvature), (g, g, g))
        return _FourierVolume(self.bk, self.box, xp.maximum(real, 0.0).astype(xp.float32), curv)

    def _to_real(self, spec):
        """crop(IFFT(spec)) on the L^3 box, real part, float32 (spec: (C, G, G, G))."""
        bk = self.bk
        xp = bk.xp
        v = bk.ifftn(xp.fft.ifftshift(spec, axes=AXES3), axes=AXES3)
        v = xp.fft.fftshift(v.real, axes=AXES3)
        return _fit_to(xp, v, (self.band,) * 3).astype(xp.float32)

    def _to_spectrum(self, v):
        bk = self.bk
        xp = bk.xp
        g = self.size
        spec = bk.fftn(xp.fft.ifftshift(_fit_to(xp, v, (g, g, g)), axes=AXES3), axes=AXES3)
        return xp.fft.fftshift(spec, axes=AXES3)

    def apply_gradient(self, grad_padded, curvature_padded, damping, lr: float) -> None:
        """Preconditioned projected step on ``real`` from a gradient on the padded grid.

        The gradient w.r.t. the box-supported volume is ``P g`` (``P``: crop to
        the box in real space); the Jacobi preconditioner of ``P A^T A P`` is
        about ``(L/G)^3 B``; ``real -= lr * P D^-1 P g``, then non-negativity.
        """
        xp = self.bk.xp
        frac = np.float32((self.band / self.size) ** 3)
        g_real = self._to_real(self._inner(grad_padded))
        g_proj = self._to_spectrum(g_real)
        denom = self._inner(curvature_padded) * frac + xp.asarray(
            np.asarray(damping, dtype=np.float32))[:, None, None, None]
        delta = self._to_real(g_proj / denom)
        scale = np.float32((self.band / self.box) ** 3 * lr)
        self.real = xp.maximum(self.real - delta * scale, 0.0).astype(xp.float32)
        self.refresh()

    def centre_of_mass(self) -> np.ndarray:
        """Intensity-weighted centre, in particle voxels from the box centre, ``(z, y, x)``."""
        v = to_numpy(self.real).astype(np.float64).sum(axis=0)
        total = v.sum()
        if total <= 0:
            return np.zeros(3)
        idx = np.indices(v.shape).reshape(3, -1).astype(np.float64) - self.band // 2
        return (idx @ v.ravel()) / total * (self.box / self.band)

    def to_volume(self, box: int, *, apodization: bool = True):
        """The volume ``(C, D, D, D)`` float32 at the particle sampling.

        Band-limited upsampling of ``real``; ``apodization`` multiplies by the
        attenuation ``prod sinc^2(x / 2D)`` that trilinear interpolation of the
        spectrum applies in the model, so that the result is the volume whose
        particles the iterate predicts.
        """
        xp = self.bk.xp
        v = resize_fourier(self.real, (box,) * 3, backend=self.bk)
        if apodization:
            x = (xp.arange(box, dtype=xp.float64) - box // 2) / (2 * box)
            s = (xp.sinc(x) ** 2).astype(xp.float32)
            v = v * s[:, None, None] * s[None, :, None] * s[None, None, :]
        return v.astype(xp.float32)


def _rotated_coordinates(xp, rotations, points, centre: float):
    """Grid coordinates ``2 R^T p + centre`` of the points for every rotation: (B, 3, Ms)."""
    rt = xp.asarray(rotations, dtype=xp.float32).transpose(0, 2, 1) * np.float32(2.0)
    coords = xp.matmul(rt, points.T[None])
    coords += np.float32(centre)
    return coords


def _setup(xp, coords, size: int):
    """Trilinear set-up on the padded grid (1 zero voxel before, 2 after each axis).

    ``coords`` (B, 3, M) float32 grid coordinates (clipped in place to
    ``[0, size]``: points outside read the zero border).  Returns the flat
    index of the lower corner (B, M) int64 and the fractions (fz, fy, fx).
    """
    xp.clip(coords, 0.0, float(size), out=coords)
    _, sy, sx = _padded_shape((size,) * 3)
    cz, cy, cx = coords[:, 0], coords[:, 1], coords[:, 2]
    lz, ly, lx = xp.floor(cz), xp.floor(cy), xp.floor(cx)
    # flat index in float32 arithmetic (exact: the padded grid has < 2^24 voxels)
    flat = lz * np.float32(sy * sx) + ly * np.float32(sx) + lx
    flat += np.float32(sy * sx + sx + 1)
    base = flat.astype(xp.int64)
    return base, (cz - lz, cy - ly, cx - lx)


def _corners(size: int):
    _, sy, sx = _padded_shape((size,) * 3)
    sz = sy * sx
    return [(dz, dy, dx, dz * sz + dy * sx + dx) for dz in (0, 1) for dy in (0, 1)
            for dx in (0, 1)]


def _gather(xp, flat, base, frac, size: int):
    """Trilinear samples of the padded flat grid ``flat`` (V,) at (base, frac)."""
    fz, fy, fx = frac
    _, sy, sx = _padded_shape((size,) * 3)
    sz = sy * sx

    def lerp_x(o):
        a = xp.take(flat, base + o)
        b = xp.take(flat, base + (o + 1))
        b -= a
        b *= fx
        a += b
        return a

    c0 = lerp_x(0)
    t = lerp_x(sx)
    t -= c0
    t *= fy
    c0 += t
    c1 = lerp_x(sz)
    t = lerp_x(sz + sx)
    t -= c1
    t *= fy
    c1 += t
    c1 -= c0
    c1 *= fz
    c0 += c1
    return c0


def _scatter(bk: Backend, size: int, base, frac, grid_size: int, values):
    """Adjoint of :func:`_gather`: add ``values`` (shape of ``base``) into a vector (size,).

    Complex values are scattered as two real bincounts; returns complex64 or
    float32 like ``values``.
    """
    xp = bk.xp
    fz, fy, fx = frac
    wz = (1 - fz, fz)
    wy = (1 - fy, fy)
    wx = (1 - fx, fx)
    corners = _corners(grid_size)
    idx = xp.concatenate([(base + off).ravel() for _, _, _, off in corners])
    wts = xp.concatenate([(wz[dz] * wy[dy] * wx[dx]).ravel() for dz, dy, dx, _ in corners])
    vals = xp.concatenate([values.ravel()] * len(corners))

    def add(weights):
        return bk.scatter_add(idx, weights.astype(xp.float32, copy=False), size).astype(
            xp.float32, copy=False)

    if xp.iscomplexobj(vals):
        return (add(vals.real * wts) + 1j * add(vals.imag * wts)).astype(xp.complex64)
    return add(vals * wts)

#: Oversampling of the centred model spectrum interpolated at rotated frequencies.
_OVERSAMPLING = 3


def _generators() -> np.ndarray:
    """``G_j`` (3, 3, 3), zyx frame: ``matrix_from_rotvec(eps e_j) = I + eps G_j + O(eps^2)``
    for the rotation vector ``e_j`` of the xyz frame (x, y, z)."""
    gens = np.zeros((3, 3, 3))
    for j in range(3):
        e = np.zeros(3)
        e[j] = 1.0
        skew = np.array([[0.0, -e[2], e[1]], [e[2], 0.0, -e[0]], [-e[1], e[0], 0.0]])
        gens[j] = swap_xyz_zyx(skew)
    return gens


def _band_spectra(bk: Backend, volumes, half_width: int, size: int):
    """Band ``|p| <= half_width`` of the centred, oversampled spectra of volumes.

    Equals ``centred_spectrum(v, oversampling=size / D, gridding_correction=True)`` cropped
    to the ``2 half_width + 1`` central samples per axis (the spectrum of the volume
    zero-padded to ``size`` and divided by the trilinear apodisation ``sinc^2(x / size)``),
    computed by three separable DFT matrix products instead of the padded FFT: only the
    band that the rotated support frequencies reach is needed.

    ``volumes`` (B, D, D, D) real; returns (B, n, n, n) complex64, ``n = 2 half_width + 1``,
    zero frequency at index ``half_width``.
    """
    xp = bk.xp
    b, d = int(volumes.shape[0]), int(volumes.shape[-1])
    x = np.arange(d, dtype=np.float64) - d // 2
    apod = 1.0 / np.sinc(x / size) ** 2
    corr = xp.asarray(apod, dtype=xp.float32)
    v = volumes.astype(xp.float32) * corr[:, None, None] * corr[None, :, None] * corr[None, None, :]
    p = np.arange(-half_width, half_width + 1, dtype=np.float64)
    e = xp.asarray(np.exp(-2j * np.pi * np.outer(p, x) / size), dtype=xp.complex64)  # (n, D)
    n = e.shape[0]
    out = (v.reshape(b * d * d, d).astype(xp.complex64) @ e.T).reshape(b, d, d, n)  # x
    out = xp.matmul(e, out)  # y: (n, D) @ (D, n) per (b, z) -> (b, D, n, n)
    out = xp.matmul(e, out.reshape(b, d, n * n)).reshape(b, n, n, n)  # z
    return xp.ascontiguousarray(out)


class _Model:
    """The volume's centred spectra (and first moments) on the band the support reaches."""

    def __init__(self, bk: Backend, volume, spectra: ParticleSpectra, channels, *,
                 gradient: bool):
        xp = bk.xp
        self.bk = bk
        self.spectra = spectra
        self.channels = channels
        d = spectra.box
        vol = xp.asarray(volume, dtype=xp.float32)
        if vol.ndim == 3:
            vol = vol[None]
        if tuple(vol.shape) != (spectra.n_channels, d, d, d):
            raise ValueError(
                f"volume must have shape ({spectra.n_channels}, {d}, {d}, {d}) (channels, "
                f"like the particles), got {tuple(xp.asarray(volume).shape)}"
            )
        if not bool(xp.isfinite(vol).all()):
            raise ValueError("volume contains NaN or infinite values")
        # frequency q / P cycles per voxel is index _OVERSAMPLING * D * q / P of the spectrum
        q = spectra.frequencies.astype(np.float64) * (d / spectra.grid)
        self.points = xp.asarray(_OVERSAMPLING * q)
        big = int(round(_OVERSAMPLING * d))
        reach = float(np.sqrt((q**2).sum(axis=1)).max()) * _OVERSAMPLING
        hw = min(int(math.ceil(reach)) + 2, big // 2 - 1)
        vols = [vol[c] for c in channels]
        if gradient:
            axes = [xp.arange(d, dtype=xp.float32) - d // 2 for _ in range(3)]
            coords = [axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]]
            vols += [vol[c] * coords[a] for a in range(3) for c in channels]
        spectra_ = _band_spectra(bk, xp.stack(vols), hw, big)
        cs = len(channels)
        self.spec = [spectra_[k] for k in range(cs)]
        self.moments = None
        if gradient:
            self.moments = [[spectra_[cs * (1 + a) + k] for k in range(cs)] for a in range(3)]
        self.otf = spectra.otf[list(channels)]  # (Cs, M)

    def at(self, rotations, subset=None):
        """Rotated, blurred model spectra ``(B, Cs, M)`` for rotations ``(B, 3, 3)``
        (``M`` the support, or its ``subset``)."""
        xp = self.bk.xp
        points = self.points if subset is None else self.points[xp.asarray(subset)]
        otf = self.otf if subset is None else self.otf[:, xp.asarray(subset)]
        out = xp.stack([rotate_fourier(s, rotations, points=points, backend=self.bk)
                        for s in self.spec], axis=1)
        return out * otf[None]

    def with_derivatives(self, rotations):
        """``m^`` (B, Cs, M) and ``d m^ / d w_j`` (3, B, Cs, M) at ``w = 0``."""
        xp = self.bk.xp
        m = self.at(rotations)
        rot = np.asarray(rotations, dtype=np.float64)
        k = self.spectra.frequencies.astype(np.float64) / self.spectra.grid  # (M, 3)
        u = np.einsum("bji,mj->bmi", rot, k)  # R^T k, (B, M, 3)
        gens = _generators()
        # G_j^T u for each j: (3, B, M, 3)
        gu = np.stack([u @ g for g in gens])  # (u^T G_j)_b = (G_j^T u)_b, (3, B, M, 3)
        grads = []  # grad F{f}(u) = -2 i pi S_a(u), (3 axes a) x (B, Cs, M)
        for a in range(3):
            s_a = xp.stack([rotate_fourier(s, rotations, points=self.points, backend=self.bk)
                            for s in self.moments[a]], axis=1)
            grads.append(s_a * np.complex64(-2j * np.pi))
        dm = []
        for j in range(3):
            coef = [xp.asarray(gu[j, :, :, a], dtype=xp.float32)[:, None, :] for a in range(3)]
            dm.append((grads[0] * coef[0] + grads[1] * coef[1] + grads[2] * coef[2])
                      * self.otf[None])
        return m, xp.stack(dm)
