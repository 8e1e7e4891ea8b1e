"""A series that only slices, as h5py and zarr datasets do: the lazy path of every reader."""

from __future__ import annotations

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
