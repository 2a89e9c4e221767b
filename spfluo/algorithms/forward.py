"""The forward operator of single particle fluorescence imaging and its exact adjoint.

Particle ``i`` is the reference ``f`` rotated, translated and blurred by the PSF
``h`` (Eloy et al. 2023 sec. 2.2 eq. 4-6 and eq. 9; Fortun et al. 2018 sec. II-C):

    y_i = A_i f = h * T_{t_i}( R_i f ),
    Fourier:  y^_i = h^ . exp(-2 i pi k . t_i) . F{R_i f}

with ``R_i f(x) = f(R_i^T (x - c) + c)`` about the box centre ``c`` and
``T_t g(x) = g(x - t)``.  Here the rotation is the trilinear
:class:`~spfluo.algorithms.transform.RotationOperator` (a gather), the
translation is a Fourier phase ramp (periodic, sub-voxel) and the convolution
is a product with the OTF (periodic); so the adjoint

    A^T y = sum_i R_i^T T_{-t_i} (h^T * y_i)
          = sum_i R_i^T irfftn( conj(h^) . exp(+2 i pi k . t_i) . rfftn(y_i) )

is exact (``R_i^T`` is trilinear splatting, the transpose of the gather), which
the dot-product test checks to float32 precision.  Gradient-based solvers need
exactly this pair.

Poses are streamed in batches of ``batch_size``: the work memory does not grow
with the number of particles.  The interpolation indices and weights of each
batch are computed once and kept while they fit in ``cache_bytes``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from spfluo.algorithms.backend import AXES3, Backend, resolve_backend
from spfluo.algorithms.fourier import (
    _check_shape3,
    _check_volume,
    _phase_ramp_factors,
    otf_from_psf,
)
from spfluo.algorithms.transform import (
    RotationOperator,
    _as_rotations,
    _as_translations,
)

__all__ = ["ForwardModel"]



class ForwardModel:
    """Linear operator ``f -> (h * T_{t_i}(R_i f))_i`` for a set of poses, with its adjoint.

    Parameters
    ----------
    shape : tuple of int
        Volume and particle shape ``(Z, Y, X)``.
    rotations : array_like, shape (N, 3, 3)
        Rotation matrices ``R_i`` in the zyx frame (a single (3, 3) is N = 1).
    translations : array_like, shape (N, 3), optional
        Translations ``t_i`` in voxels ``(z, y, x)`` (default zero).
    psf : ndarray, shape (Zp, Yp, Xp), optional
        Real PSF centred at ``(Zp//2, Yp//2, Xp//2)``; padded or cropped to
        ``shape`` (:func:`~spfluo.algorithms.fourier.otf_from_psf`).  Not
        normalised here.
    otf : ndarray, complex, shape (Z, Y, X//2 + 1), optional
        The OTF directly (``rfftn`` of the ifftshifted PSF), instead of ``psf``.
        With neither ``psf`` nor ``otf`` there is no blur.
    batch_size : int, optional
        Poses processed together (work memory ~ ``batch_size`` volumes plus
        16 bytes per voxel and pose of interpolation tables).
    cache_bytes : int, optional
        Memory allowed to keep the interpolation tables of all batches between
        calls (default 1 GiB); batches beyond it recompute their tables at
        each call.
    backend : Backend or {"cpu", "gpu"}, optional
        Default: the backend of ``rotations`` (or of ``otf``/``psf``).
    """

    def __init__(
        self,
        shape: Sequence[int],
        rotations: Any,
        translations: Any = None,
        *,
        psf: Any = None,
        otf: Any = None,
        batch_size: int = 16,
        cache_bytes: int = 1 << 30,
        backend: Any = None,
    ) -> None:
        bk = resolve_backend(backend, rotations, otf, psf)
        xp = bk.xp
        shape = _check_shape3(shape)
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(cache_bytes, (int, np.integer)) or cache_bytes < 0:
            raise ValueError(f"cache_bytes must be an integer >= 0, got {cache_bytes!r}")
        rotations, _ = _as_rotations(xp, rotations)
        n = rotations.shape[0]
        translations = _as_translations(xp, translations, n)
        if psf is not None and otf is not None:
            raise ValueError("give either psf or otf, not both")
        if psf is not None:
            otf = otf_from_psf(xp.asarray(psf), shape, rfft=True, backend=bk)
        elif otf is not None:
            otf = xp.asarray(otf)
            expected = (shape[0], shape[1], shape[2] // 2 + 1)
            if tuple(otf.shape) != expected:
                raise ValueError(
                    f"otf must be the rfftn half spectrum of shape {expected} for volumes of "
                    f"shape {shape}, got shape {tuple(otf.shape)}: build it with otf_from_psf"
                )
            _check_volume(xp, otf, "otf", ndims=(3,), expected=str(expected))
            otf = otf.astype(xp.complex64)
        self._backend = bk
        self._shape = shape
        self._n = n
        self._rotations = rotations
        self._translations = translations
        self._otf = otf
        self._otf_conj = None if otf is None else xp.conj(otf)
        self._batch_size = int(batch_size)
        self._cache_bytes = int(cache_bytes)
        self._cache: dict[int, RotationOperator] = {}
        self._cached_bytes = 0
        self._shifted = [
            bool(xp.any(translations[s] != 0)) for s in self._batches()
        ]

    @classmethod
    def from_poses(cls, shape: Sequence[int], poses: Any, **kwargs: Any) -> "ForwardModel":
        """Build from a :class:`spfluo.algorithms.geometry.Poses` (or any object with
        ``rotations`` (N, 3, 3) and ``translations`` (N, 3) in voxels); ``kwargs`` as in
        the constructor (``psf``, ``otf``, ``batch_size``, ...)."""
        return cls(shape, poses.rotations, poses.translations, **kwargs)

    # -- properties ---------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int, int]:
        """Volume and particle shape ``(Z, Y, X)``."""
        return self._shape

    @property
    def n_poses(self) -> int:
        """Number of poses (particles) ``N``."""
        return self._n

    @property
    def rotations(self):
        """Rotation matrices, float64, shape (N, 3, 3) (a copy)."""
        return self._rotations.copy()

    @property
    def translations(self):
        """Translations in voxels, float64, shape (N, 3) (a copy)."""
        return self._translations.copy()

    @property
    def otf(self):
        """The OTF, complex64, shape (Z, Y, X//2 + 1), or None (no blur)."""
        return None if self._otf is None else self._otf.copy()

    @property
    def backend(self) -> Backend:
        return self._backend

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return (
            f"ForwardModel(shape={self._shape}, n_poses={self._n}, "
            f"blur={self._otf is not None}, batch_size={self._batch_size}, "
            f"backend={self._backend.name!r})"
        )

    # -- internals ------------------------------------------------------------

    def _batches(self):
        for start in range(0, self._n, self._batch_size):
            yield slice(start, min(self._n, start + self._batch_size))

    def _operator(self, b: int, sl: slice) -> RotationOperator:
        op = self._cache.get(b)
        if op is None:
            op = RotationOperator(
                self._shape, self._rotations[sl], None,
                backend=self._backend,
            )
            if self._cached_bytes + op.nbytes <= self._cache_bytes:
                self._cache[b] = op
                self._cached_bytes += op.nbytes
        return op

    def _filter(self, stack, sl: slice, b: int, *, adjoint: bool):
        """Apply the OTF and phase ramp (or their conjugates) to a batch of real volumes."""
        if self._otf is None and not self._shifted[b]:
            return stack
        bk = self._backend
        spec = bk.rfftn(stack, axes=AXES3)
        if self._otf is not None:
            spec *= self._otf_conj if adjoint else self._otf
        if self._shifted[b]:
            t = self._translations[sl]
            for factor in _phase_ramp_factors(
                bk.xp, self._shape, -t if adjoint else t, rfft=True, dtype=spec.dtype
            ):
                spec *= factor
        return bk.irfftn(spec, s=self._shape, axes=AXES3).astype(stack.dtype, copy=False)

    def _check_real(self, array, name: str, shape: tuple, axes: str):
        """``array`` as float32 on the backend, real, finite and of exactly ``shape``."""
        xp = self._backend.xp
        array = xp.asarray(array)
        _check_volume(xp, array, name, ndims=(len(shape),), expected=f"{axes} = {shape}",
                      real=True)
        if tuple(array.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(array.shape)}")
        return array.astype(xp.float32, copy=False)

    def _check_volume(self, volume):
        return self._check_real(volume, "volume", self._shape, "(Z, Y, X)")

    def _check_particles(self, particles):
        return self._check_real(particles, "particles", (self._n,) + self._shape, "(N, Z, Y, X)")

    # -- the operator ---------------------------------------------------------

    def apply(self, volume: Any):
        """Simulate the noiseless particles ``y_i = h * T_{t_i}(R_i f)``.

        Parameters
        ----------
        volume : ndarray, shape (Z, Y, X)
            Reference volume ``f``.

        Returns
        -------
        ndarray, float32, shape (N, Z, Y, X)
        """
        xp = self._backend.xp
        volume = self._check_volume(volume)
        out = xp.empty((self._n,) + self._shape, dtype=xp.float32)
        for b, sl in enumerate(self._batches()):
            rotated = self._operator(b, sl).apply(volume)
            out[sl] = self._filter(rotated, sl, b, adjoint=False)
        return out

    def adjoint(self, particles: Any):
        """Exact adjoint: ``sum_i R_i^T T_{-t_i}(h^T * y_i)``.

        Parameters
        ----------
        particles : ndarray, shape (N, Z, Y, X)
            One volume per pose.

        Returns
        -------
        ndarray, float32, shape (Z, Y, X)
        """
        xp = self._backend.xp
        particles = self._check_particles(particles)
        acc = xp.zeros(self._shape, dtype=xp.float32)
        for b, sl in enumerate(self._batches()):
            back = self._filter(particles[sl], sl, b, adjoint=True)
            acc += self._operator(b, sl).adjoint(back)
        return acc

    def normal(self, volume: Any):
        """``A^T A f = sum_i A_i^T A_i f``, streamed (the N particles are never all in memory).

        Parameters
        ----------
        volume : ndarray, shape (Z, Y, X)

        Returns
        -------
        ndarray, float32, shape (Z, Y, X)
        """
        xp = self._backend.xp
        volume = self._check_volume(volume)
        acc = xp.zeros(self._shape, dtype=xp.float32)
        for b, sl in enumerate(self._batches()):
            op = self._operator(b, sl)
            y = self._filter(op.apply(volume), sl, b, adjoint=False)
            acc += op.adjoint(self._filter(y, sl, b, adjoint=True))
        return acc
