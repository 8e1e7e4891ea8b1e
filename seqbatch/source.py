"""Data sources: the arrays behind a plan, read one window at a time.

A series is anything with ``shape``, ``dtype`` and slicing along its first axis: a numpy array,
an ``np.memmap``, a ``.npy`` path (opened as a memmap), an h5py or zarr dataset. Python lists
and other array-likes are converted with ``np.asarray``. Nothing here reads a whole series.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

_NUMERIC_KINDS = "biufc"


def open_series(obj: Any, name: str) -> Any:
    """Return ``obj`` as a sliceable series, checking its dtype and rank; read nothing."""
    if isinstance(obj, (str, os.PathLike)):
        path = os.fspath(obj)
        try:
            obj = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ValueError(
                f"`{name}` must be a readable .npy file when given as a path. Received: "
                f"{name}={path!r} ({err})"
            ) from err
        if not isinstance(obj, np.ndarray):
            raise ValueError(
                f"`{name}` must be a .npy file holding one array, not an archive. "
                f"Received: {name}={path!r}"
            )
    elif not (hasattr(obj, "shape") and hasattr(obj, "dtype") and hasattr(obj, "__getitem__")):
        obj = np.asarray(obj)
    try:
        dtype = np.dtype(obj.dtype)
    except TypeError as err:
        raise TypeError(
            f"`{name}` must have a numpy dtype. Received: {name} with dtype {obj.dtype!r}"
        ) from err
    if dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(
            f"`{name}` must hold numbers (bool, integer, float or complex). "
            f"Received: {name} with dtype {dtype}"
        )
    if len(obj.shape) == 0:
        raise ValueError(
            f"`{name}` must have a time axis: shape (steps, *features). Received: {name} "
            "with shape ()"
        )
    if obj.shape[0] == 0:
        raise ValueError(
            f"`{name}` must not be empty. Received: {name} with shape {tuple(obj.shape)}"
        )
    return obj


def open_series_list(data: Any, name: str) -> tuple[list[Any], bool]:
    """Open ``data`` as a list of series. Returns the list and whether ``data`` was one series.

    A ``list`` or ``tuple`` is a list of series; anything else is one series.
    """
    if isinstance(data, (list, tuple)):
        if len(data) == 0:
            raise ValueError(f"`{name}` must hold at least one series. Received: {name}=[]")
        series = [open_series(d, f"{name}[{i}]") for i, d in enumerate(data)]
        single = False
    else:
        series = [open_series(data, name)]
        single = True
    first = series[0]
    for i, s in enumerate(series):
        if tuple(s.shape[1:]) != tuple(first.shape[1:]):
            raise ValueError(
                f"All series in `{name}` must have the same feature shape. Received: "
                f"{name}[0] with shape {tuple(first.shape)} and {name}[{i}] with shape "
                f"{tuple(s.shape)}"
            )
        if np.dtype(s.dtype) != np.dtype(first.dtype):
            raise TypeError(
                f"All series in `{name}` must have the same dtype (it is kept, never cast). "
                f"Received: {name}[0] with dtype {first.dtype} and {name}[{i}] with dtype "
                f"{s.dtype}"
            )
    return series, single


class Joined:
    """Several series read as one, end to end, without copying them.

    Args:
        parts: the series, each sliceable along its first axis, sharing feature shape and dtype.

    Examples:
        >>> j = Joined([np.arange(3), np.arange(10, 14)])
        >>> j.shape
        (7,)
        >>> j[2:5].tolist()
        [2, 10, 11]
    """

    def __init__(self, parts: Sequence[Any]) -> None:
        self.parts = list(parts)
        self.ends = np.cumsum([p.shape[0] for p in self.parts])
        self.shape = (int(self.ends[-1]), *self.parts[0].shape[1:])
        self.dtype = np.dtype(self.parts[0].dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, _ = key.indices(self.shape[0])
        first = int(np.searchsorted(self.ends, start, side="right"))
        pieces = []
        while start < stop:
            begin = int(self.ends[first - 1]) if first else 0
            end = min(stop, int(self.ends[first]))
            pieces.append(np.asarray(self.parts[first][start - begin : end - begin]))
            start = end
            first += 1
        if len(pieces) == 1:
            return pieces[0]
        return np.concatenate(pieces) if pieces else np.empty((0, *self.shape[1:]), self.dtype)


def read_windows(
    sources: Sequence[Any],
    series: np.ndarray,
    start: np.ndarray,
    length: np.ndarray,
    width: int,
    stride: int | None,
) -> np.ndarray:
    """Read one window per stream into an array of shape ``(B, width, *features)``.

    Steps past ``length[i]`` are zeros. With a single numpy source, a ``stride`` (every
    window full and evenly spaced) gives a read-only strided view with no copy, and otherwise
    one vectorised gather; other sources are sliced once per stream.
    """
    src = sources[0]
    features = tuple(src.shape[1:])
    if len(sources) == 1 and isinstance(src, np.ndarray):
        if stride is not None:
            first = int(start[0])
            step, *rest = src.strides
            return np.lib.stride_tricks.as_strided(
                src[first:],
                shape=(len(start), width, *features),
                strides=(stride * step, step, *rest),
                writeable=False,
            )
        steps = np.arange(width)
        held = steps < length[:, None]
        out = np.asarray(src[np.where(held, start[:, None] + steps, 0)])
        out[~held] = 0
        return out
    out = np.zeros((len(start), width, *features), dtype=src.dtype)
    for i in np.flatnonzero(length).tolist():
        s, n = int(start[i]), int(length[i])
        out[i, :n] = sources[int(series[i])][s : s + n]
    return out
