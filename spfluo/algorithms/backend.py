"""Array backend: NumPy/SciPy on the CPU, CuPy on a GPU.

Algorithm code is written once against a :class:`Backend`, which hands out
the array namespace (``xp``), the FFT module and the ndimage module of the
chosen device.  CuPy is optional: it is imported only when a GPU backend is
asked for, so importing spfluo never requires it.

FFTs go through the backend's methods (``rfftn``, ``irfftn``, ``fftn``,
``ifftn``) so that the CPU path uses every core (``workers=-1``) and keeps the
input precision (complex64 for float32 input).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import scipy.fft
import scipy.ndimage

__all__ = ["AXES3", "Backend", "get_backend", "backend_of", "resolve_backend", "to_numpy",
           "gpu_available"]

#: The three spatial axes ``(Z, Y, X)`` of volumes, behind any leading batch/channel axes.
AXES3 = (-3, -2, -1)


@dataclass(frozen=True)
class Backend:
    """The modules of one device.

    Attributes
    ----------
    name : {"numpy", "cupy"}
        Which library backs the arrays.
    xp : module
        ``numpy`` or ``cupy``.
    fft : module
        ``scipy.fft`` or ``cupyx.scipy.fft``.
    ndimage : module
        ``scipy.ndimage`` or ``cupyx.scipy.ndimage``.
    """

    name: str
    xp: ModuleType
    fft: ModuleType
    ndimage: ModuleType

    @property
    def is_gpu(self) -> bool:
        return self.name == "cupy"

    def _fft_kwargs(self) -> dict:
        return {} if self.is_gpu else {"workers": -1}

    def asarray(self, a: Any, dtype: Any = None):
        """Move ``a`` to this backend's device (no copy when already there)."""
        return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a: Any) -> np.ndarray:
        """Bring ``a`` back to host memory as a NumPy array."""
        return to_numpy(a)

    def rfftn(self, a, axes=None, s=None):
        return self.fft.rfftn(a, s=s, axes=axes, **self._fft_kwargs())

    def irfftn(self, a, s=None, axes=None):
        return self.fft.irfftn(a, s=s, axes=axes, **self._fft_kwargs())

    def fftn(self, a, axes=None, s=None):
        return self.fft.fftn(a, s=s, axes=axes, **self._fft_kwargs())

    def ifftn(self, a, axes=None, s=None):
        return self.fft.ifftn(a, s=s, axes=axes, **self._fft_kwargs())

    def scatter_add(self, index, values, size: int):
        """Sum of ``values`` at flat ``index`` into a zero vector of length ``size``.

        On the CPU ``numpy.bincount`` (float64 result, real values); on the GPU
        ``cupyx.scatter_add`` into a vector of the values' dtype.
        """
        if self.is_gpu:  # pragma: no cover - needs a GPU
            import cupyx

            out = self.xp.zeros(size, dtype=values.dtype)
            cupyx.scatter_add(out, index.ravel(), values.ravel())
            return out
        return np.bincount(index.ravel(), weights=values.ravel(), minlength=size)


_NUMPY = Backend(name="numpy", xp=np, fft=scipy.fft, ndimage=scipy.ndimage)


@functools.lru_cache(maxsize=None)
def _cupy_backend() -> Backend:
    try:
        import cupy
        import cupyx.scipy.fft
        import cupyx.scipy.ndimage
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise RuntimeError(
            "a GPU was requested but CuPy is not installed: "
            "install it with `pip install scipion-fluo-spfluo[gpu]` or run on the CPU"
        ) from exc
    if cupy.cuda.runtime.getDeviceCount() < 1:  # pragma: no cover
        raise RuntimeError("a GPU was requested but CuPy sees no CUDA device")
    return Backend(name="cupy", xp=cupy, fft=cupyx.scipy.fft, ndimage=cupyx.scipy.ndimage)


def get_backend(device: str = "cpu") -> Backend:
    """Return the backend for ``device``.

    Parameters
    ----------
    device : {"cpu", "gpu"}
        ``"gpu"`` uses CuPy on the current CUDA device (select it with
        ``CUDA_VISIBLE_DEVICES``).
    """
    if device in ("cpu", "numpy", None):
        return _NUMPY
    if device in ("gpu", "cuda", "cupy"):
        return _cupy_backend()
    raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")


def backend_of(array: Any) -> Backend:
    """Return the backend that owns ``array`` (CuPy arrays -> GPU backend; an array type may
    also name its backend in ``_spfluo_backend``, as the tests' emulated device does)."""
    if type(array).__module__.startswith("cupy"):
        return _cupy_backend()
    return getattr(type(array), "_spfluo_backend", None) or _NUMPY


def resolve_backend(backend: Any, *arrays: Any) -> Backend:
    """Resolve a ``backend`` keyword: a Backend, a device name, or None (from the arrays:
    the backend of the first one that is not None, else the CPU)."""
    if backend is None:
        for a in arrays:
            if a is not None:
                return backend_of(a)
        return get_backend("cpu")
    if isinstance(backend, Backend):
        return backend
    if isinstance(backend, str):
        return get_backend(backend)
    raise ValueError(
        f"backend must be None, a Backend or 'cpu'/'gpu', got {type(backend).__name__}"
    )


def to_numpy(a: Any) -> np.ndarray:
    """Host copy of a NumPy or CuPy array (no copy for NumPy input)."""
    if type(a).__module__.startswith("cupy") or getattr(type(a), "_spfluo_device", False):
        return a.get()
    return np.asarray(a)


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        _cupy_backend()
    except Exception:
        return False
    return True
