"""A series that only slices, as h5py and zarr datasets do: the lazy path of every reader."""

from __future__ import annotations

from typing import Any

import numpy as np


class SliceOnly:
    """A series that supports only ``shape``, ``dtype`` and slicing, like an h5py dataset."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array
        self.shape = array.shape
        self.dtype = array.dtype

    def __getitem__(self, key: slice) -> np.ndarray:
        assert isinstance(key, slice) and key.step is None, key
        return self._array[key].copy()


class CountingSource:
    """An h5py-like dataset that records every read and refuses fancy indexing."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array
        self.shape = array.shape
        self.dtype = array.dtype
        self.reads: list[tuple[int, int]] = []

    def __getitem__(self, key: Any) -> np.ndarray:
        assert isinstance(key, slice), f"only slices are supported, got {key!r}"
        start, stop, step = key.indices(self.shape[0])
        assert step == 1
        self.reads.append((start, stop))
        return self._array[key].copy()
