"""Work arrays kept between the batches of a weight-free extractor.

A per-frame computation on a few frames at a time makes temporaries of a few hundred KB each.
Allocated afresh, such an array is mapped in from the OS page by page (the C library hands
blocks this large back to it when they are freed): about a fifth of colorgrad's and of the
motion descriptors' CPU time went to page faults and the zeroing of fresh pages. Computing
into the same arrays every time (``out=``) keeps them mapped and in the CPU caches.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["Scratch"]


class Scratch:
    """Named work arrays: ``get(name, shape, dtype)`` is an uninitialised array of that shape
    in memory kept for ``name`` and ``dtype`` (grown when a larger one is asked for), so that
    the same name gives the same memory call after call. What one call computes into it is
    overwritten by the next call of that name: hand out copies, never these arrays."""

    def __init__(self) -> None:
        self._memory: dict[tuple[str, np.dtype], np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        size = math.prod(shape)
        memory = self._memory.get((name, dtype))
        if memory is None or memory.size < size:
            memory = self._memory[(name, dtype)] = np.empty(max(1, size), dtype)
        return memory[:size].reshape(shape)
