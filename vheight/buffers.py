"""Memory for the large arrays of a film, recycled between films.

A 3000 x 3000 film needs an 18 MB array of stored values and a 36 MB float32
display array, and every re-windowing makes another display array.  glibc
serves allocations above 32 MiB with fresh ``mmap`` pages and hands them back
to the kernel when they are freed, so each new display array first has its
pages zeroed by the kernel: at 3000 x 3000 that costs about as much as
computing the display values themselves.

:func:`empty` returns arrays whose memory comes back to a small pool when the
last reference to the array (and to every view of it) is gone; the next array
of the same size takes it from there.  Nothing is shared while it is still
referenced: an array returns its memory only when Python frees it.  The pool
holds at most :data:`KEEP_BUFFERS` buffers and :data:`KEEP_BYTES` bytes (the
arrays of two 3000 x 3000 films are 108 MB) once their arrays are dropped.

Arrays smaller than :data:`MIN_BYTES` come from numpy as usual (glibc already
reuses such memory).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

MIN_BYTES = 8 << 20
"""Arrays below this size are ordinary numpy arrays."""

KEEP_BUFFERS = 4
"""Most buffers the pool holds once their arrays are gone."""

KEEP_BYTES = 256 << 20
"""Most bytes the pool holds once their arrays are gone."""

_free: list[np.ndarray] = []  # raw uint8 buffers, most recently returned last
_lock = threading.RLock()  # re-entrant: a release may run inside a take (garbage collection)


class _Owner:
    """Keeps a pooled buffer in use while any array on it is alive.

    numpy keeps a reference to the object whose ``__array_interface__`` it
    wrapped (as the array's ``base``); the buffer goes back to the pool when
    that object is freed, which happens after the last array and view on it.
    """

    __slots__ = ("__array_interface__", "_raw")

    def __init__(self, raw: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._raw = raw
        self.__array_interface__ = {
            "shape": shape,
            "typestr": dtype.str,
            "data": (raw.ctypes.data, False),
            "version": 3,
        }

    def __del__(self) -> None:
        try:
            _release(self._raw)
        except Exception:  # noqa: BLE001 - interpreter shutdown: the memory is freed anyway
            pass


def _release(raw: np.ndarray) -> None:
    with _lock:
        _free.append(raw)
        while len(_free) > KEEP_BUFFERS or sum(b.nbytes for b in _free) > KEEP_BYTES:
            del _free[0]  # the oldest goes back to the system


def _take(nbytes: int) -> np.ndarray | None:
    with _lock:
        for index in range(len(_free) - 1, -1, -1):
            if _free[index].nbytes == nbytes:
                return _free.pop(index)
    return None


def empty(shape: int | Sequence[int], dtype: np.typing.DTypeLike = np.float32) -> np.ndarray:
    """An uninitialised C-contiguous array, its memory recycled when large.

    Behaves as :func:`numpy.empty` (the result is writeable and owns no other
    array's data); only where its memory comes from differs.
    """
    dtype = np.dtype(dtype)
    shape = (int(shape),) if isinstance(shape, int | np.integer) else tuple(int(n) for n in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes < MIN_BYTES or dtype.hasobject:
        return np.empty(shape, dtype=dtype)
    raw = _take(nbytes)
    if raw is None:
        raw = np.empty(nbytes, dtype=np.uint8)  # numpy asks the kernel for huge pages
    return np.asarray(_Owner(raw, shape, dtype))


def pooled_bytes() -> int:
    """Bytes held by the pool right now (for tests and diagnostics)."""
    with _lock:
        return sum(b.nbytes for b in _free)


def clear() -> None:
    """Give every pooled buffer back to the system."""
    with _lock:
        _free.clear()
