"""The data every section measures on: float32 series in memory or in ``.npy`` files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

_CHUNK_BYTES = 64 * 2**20


def series(steps: int, features: int, seed: int = 0) -> np.ndarray:
    """A float32 series of shape ``(steps, features)`` with random values."""
    return np.random.default_rng(seed).random((steps, features), dtype=np.float32)


def npy_file(path: Path, steps: int, features: int, seed: int = 0) -> Path:
    """Write a float32 ``(steps, features)`` series to ``path``, 64 MB at a time.

    The file can be larger than memory: it is written through a memmap, chunk by chunk.
    """
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(steps, features))
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_BYTES // (4 * features))
    for begin in range(0, steps, chunk):
        stop = min(steps, begin + chunk)
        out[begin:stop] = rng.random((stop - begin, features), dtype=np.float32)
    out.flush()
    del out
    return path
