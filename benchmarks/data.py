"""The data every section measures on: float32 series in memory or in ``.npy`` files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.sizes import Sizes

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


def series_lengths(
    sizes: Sizes, distribution: str, seed: int = 0, count: int | None = None
) -> np.ndarray:
    """``count`` lengths (``sizes.packing_series`` if None) from ``sizes.packing_lengths``,
    both ends included."""
    lo, hi = sizes.packing_lengths
    n = sizes.packing_series if count is None else count
    rng = np.random.default_rng(seed)
    if distribution == "uniform":
        return rng.integers(lo, hi + 1, n)
    drawn = np.exp(rng.uniform(np.log(lo), np.log(hi + 1), n))
    return np.clip(drawn.astype(np.int64), lo, hi)
