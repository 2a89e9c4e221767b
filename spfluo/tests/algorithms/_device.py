"""An emulated GPU for tests on machines without one: NumPy arrays behind a device boundary.

:func:`emulated_backend` returns a :class:`~spfluo.algorithms.backend.Backend` whose
arrays (:class:`DeviceArray`) behave like CuPy's where it matters for the algorithms:

- every device -> host transfer is counted (``to_numpy``/``.get()``, ``float()``,
  ``int()``, ``bool()``, ``.item()``, ``.tolist()``), so that a test can assert that a loop
  is device-resident;
- implicit conversions raise as in CuPy (``numpy.asarray(device_array)``), and so does an
  operation that mixes a device array with a host array of one or more dimensions;
- host -> device copies (``xp.asarray(host)``) are allowed and counted apart.

The arithmetic is NumPy's, so results equal the CPU backend's.
"""

from __future__ import annotations

import collections
import functools
import operator
import traceback

import numpy as np
import scipy.fft
import scipy.ndimage

from spfluo.algorithms.backend import Backend

COUNTS = {"d2h": 0, "h2d": 0}
#: where the device -> host transfers happen: "file:line" -> count (the algorithms' frames)
SITES: collections.Counter = collections.Counter()


def reset() -> None:
    COUNTS["d2h"] = COUNTS["h2d"] = 0
    SITES.clear()


def _transfer() -> None:
    COUNTS["d2h"] += 1
    for frame in traceback.extract_stack()[-2::-1]:
        if "spfluo/algorithms" in frame.filename and not frame.filename.endswith("backend.py"):
            SITES[f"{frame.filename.split('spfluo/algorithms/')[-1]}:{frame.lineno}"] += 1
            break


def _is_host_array(x) -> bool:
    return isinstance(x, np.ndarray) and x.ndim > 0


def _unwrap(x, *, allow_host: bool):
    if isinstance(x, DeviceArray):
        return x._a
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v, allow_host=allow_host) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v, allow_host=allow_host) for k, v in x.items()}
    if not allow_host and _is_host_array(x):
        raise TypeError("a host (NumPy) array in a device operation: move it with xp.asarray "
                        "first (CuPy refuses this)")
    return x


def _wrap(x):
    if isinstance(x, np.ndarray):
        return DeviceArray(x)
    if isinstance(x, np.generic):  # reductions give 0-d device arrays, as in CuPy
        return DeviceArray(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


class DeviceArray:
    """A NumPy array that stands for device memory."""

    __slots__ = ("_a",)
    _spfluo_device = True

    def __init__(self, a: np.ndarray):
        self._a = a

    # -- transfers
    def get(self) -> np.ndarray:
        _transfer()
        return self._a.copy()

    def __array__(self, dtype=None, copy=None):
        raise TypeError("implicit conversion of a device array to a NumPy array: use "
                        "spfluo.algorithms.backend.to_numpy (CuPy refuses this)")

    def _scalar(self, kind):
        _transfer()
        return kind(self._a)

    def __float__(self):
        return self._scalar(float)

    def __int__(self):
        return self._scalar(int)

    def __index__(self):
        return self._scalar(operator.index)

    def __bool__(self):
        return self._scalar(bool)

    def __complex__(self):
        return self._scalar(complex)

    def item(self):
        _transfer()
        return self._a.item()

    def tolist(self):
        _transfer()
        return self._a.tolist()

    # -- NumPy protocols (the arithmetic)
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        args = [_unwrap(x, allow_host=False) for x in inputs]
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(_unwrap(o, allow_host=False) for o in out)
        result = getattr(ufunc, method)(*args, **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        return _wrap(func(*_unwrap(args, allow_host=False), **_unwrap(kwargs, allow_host=False)))

    # -- the ndarray interface
    def __getattr__(self, name):
        if name.startswith("__"):  # no buffer or array interface: device memory
            raise AttributeError(name)
        value = getattr(self._a, name)
        if callable(value):
            @functools.wraps(value)
            def method(*args, **kwargs):
                return _wrap(value(*_unwrap(args, allow_host=True),
                                   **_unwrap(kwargs, allow_host=True)))
            return method
        return _wrap(value)

    def __getitem__(self, key):
        return _wrap(self._a[_unwrap(key, allow_host=True)])

    def __setitem__(self, key, value):
        self._a[_unwrap(key, allow_host=True)] = _unwrap(value, allow_host=True)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (DeviceArray(v) if isinstance(v, np.ndarray) else DeviceArray(np.asarray(v))
                for v in self._a)

    def __repr__(self):
        return f"DeviceArray({self._a!r})"


def _binary(ufunc, reflected=False):
    if reflected:
        return lambda self, other: ufunc(other, self)
    return lambda self, other: ufunc(self, other)


def _inplace(ufunc):
    def op(self, other):
        ufunc(self, other, out=(self,))
        return self
    return op


for _name, _ufunc in (("add", np.add), ("sub", np.subtract), ("mul", np.multiply),
                      ("truediv", np.true_divide), ("floordiv", np.floor_divide),
                      ("mod", np.remainder), ("pow", np.power), ("matmul", np.matmul),
                      ("and", np.bitwise_and), ("or", np.bitwise_or), ("xor", np.bitwise_xor)):
    setattr(DeviceArray, f"__{_name}__", _binary(_ufunc))
    setattr(DeviceArray, f"__r{_name}__", _binary(_ufunc, reflected=True))
    setattr(DeviceArray, f"__i{_name}__", _inplace(_ufunc))
for _name, _ufunc in (("lt", np.less), ("le", np.less_equal), ("gt", np.greater),
                      ("ge", np.greater_equal), ("eq", np.equal), ("ne", np.not_equal)):
    setattr(DeviceArray, f"__{_name}__", _binary(_ufunc))
DeviceArray.__neg__ = lambda self: np.negative(self)
DeviceArray.__pos__ = lambda self: self
DeviceArray.__abs__ = lambda self: np.absolute(self)
DeviceArray.__invert__ = lambda self: np.invert(self)
DeviceArray.__hash__ = None

_CREATE = {"asarray", "array", "asanyarray", "ascontiguousarray"}


class _Namespace:
    """A module whose functions take and return device arrays."""

    def __init__(self, module, *, creation: bool = False):
        self._module = module
        self._creation = creation

    def __getattr__(self, name):
        value = getattr(self._module, name)
        if isinstance(value, type) or not callable(value):
            if hasattr(value, "__name__") and type(value).__name__ == "module":
                return _Namespace(value)
            return value
        allow_host = self._creation and name in _CREATE

        @functools.wraps(value)
        def function(*args, **kwargs):
            if allow_host and args and not isinstance(args[0], DeviceArray) and \
                    isinstance(args[0], (np.ndarray, list, tuple, np.generic, float, int)):
                COUNTS["h2d"] += 1
            return _wrap(value(*_unwrap(args, allow_host=allow_host),
                               **_unwrap(kwargs, allow_host=allow_host)))
        return function


def emulated_backend() -> Backend:
    """The emulated device (reset the counts with :func:`reset`)."""
    xp = _Namespace(np, creation=True)
    xp.fft = _Namespace(np.fft)
    xp.linalg = _Namespace(np.linalg)
    xp.random = _Namespace(np.random)
    bk = Backend(name="emulated", xp=xp, fft=_Namespace(scipy.fft),
                 ndimage=_Namespace(scipy.ndimage))
    DeviceArray._spfluo_backend = bk
    return bk
