"""Many series held end to end in one array, with integer offsets: no object per series.

A corpus of a million documents is one flat array of ``N`` steps and ``S + 1`` offsets,
series ``s`` being ``values[offsets[s]:offsets[s + 1]]``: the form a tokenizer writes, and
the form in which a batch of any layout is one gather (:class:`seqbatch.reader.WindowReader`).
A list of in-memory arrays is brought into it too, without a copy when the arrays already lie
end to end in one buffer (``np.split`` of an array, say).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np


class Ragged(Sequence[Any]):
    """Series ``s`` is ``values[offsets[s]:offsets[s + 1]]``; reads nothing of ``values``.

    It is a sequence of the series, so that what reads one series reads it here too, but a
    reader that knows it gathers from ``values`` directly.

    Args:
        values: ``(N, *features)``, a numpy array or memory map (or anything that slices).
        offsets: ``(S + 1,)`` non-decreasing integers from 0 to ``N``.

    Examples:
        >>> r = Ragged(np.arange(7), np.array([0, 3, 7]))
        >>> len(r), r.lengths.tolist(), r[1].tolist()
        (2, [3, 4], [3, 4, 5, 6])
    """

    def __init__(self, values: Any, offsets: np.ndarray) -> None:
        self.values = values
        self.offsets = offsets

    @property
    def lengths(self) -> np.ndarray:
        """``(S,)`` int64: the steps of each series."""
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, s: Any) -> Any:
        if not isinstance(s, numbers.Integral):
            raise TypeError(f"series indices must be integers. Received: {s!r}")
        s = int(s) % len(self)
        start, stop = int(self.offsets[s]), int(self.offsets[s + 1])
        if isinstance(self.values, np.ndarray):
            return self.values[start:stop]  # a view (of a memory map too): nothing read
        # An h5py or zarr dataset reads a slice when it is asked for: the series stays
        # unread until a window of it is sliced in turn.
        return Rows(self.values, start, stop)

    def __iter__(self) -> Iterator[Any]:
        return (self[s] for s in range(len(self)))


class Rows:
    """Rows ``[start, stop)`` of a lazy array (h5py, zarr), read only when sliced or converted.

    Series ``s`` of a :class:`Ragged` over such an array: a window of it, ``rows[a:b]``, reads
    ``values[start + a:start + b]`` alone, never the whole series.

    Examples:
        >>> class Loud:  # slices like an h5py dataset, and says what it reads
        ...     shape, dtype = (10,), np.dtype(int)
        ...     def __getitem__(self, key):
        ...         print("read", key)
        ...         return np.arange(10)[key]
        >>> rows = Ragged(Loud(), np.array([0, 4, 10]))[1]
        >>> rows.shape, rows[1:3].tolist()
        read slice(5, 7, None)
        ((6,), [5, 6])
    """

    def __init__(self, values: Any, start: int, stop: int) -> None:
        self.values, self.start, self.stop = values, start, stop
        self.shape = (stop - start, *values.shape[1:])
        self.dtype = np.dtype(values.dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> Any:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError(f"lazy series are read by contiguous slices. Received: {key!r}")
        a, b, _ = key.indices(self.shape[0])
        return self.values[self.start + a : self.start + max(a, b)]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.asarray(self.values[self.start : self.stop])
        return out if dtype is None else out.astype(dtype)


def lengths_of(sources: Sequence[Any]) -> np.ndarray:
    """``(S,)`` int64: the steps of each series, read from the offsets where there are some."""
    if isinstance(sources, Ragged):
        return sources.lengths
    return np.array([s.shape[0] for s in sources], dtype=np.int64)


def _end_to_end(series: Sequence[np.ndarray]) -> np.ndarray | None:
    """The one array that ``series`` are consecutive slices of, if they are; else None."""
    base = series[0]
    while isinstance(base.base, np.ndarray):
        base = base.base
    if not (base.flags.c_contiguous and all(s.flags.c_contiguous for s in series)):
        return None
    at = np.array([s.__array_interface__["data"][0] for s in series], dtype=np.int64)
    size = np.array([s.nbytes for s in series], dtype=np.int64)
    begin = base.__array_interface__["data"][0]
    first, total = int(at[0]) - begin, int(size.sum())
    if first < 0 or first + total > base.nbytes or (at[1:] != at[:-1] + size[:-1]).any():
        return None
    raw = base.reshape(-1).view(np.uint8)[first : first + total]
    return raw.view(series[0].dtype).reshape(-1, *series[0].shape[1:])


def gathered(series: Sequence[Any]) -> Sequence[Any]:
    """``series`` as one :class:`Ragged` when they are all numpy arrays in memory.

    Slices of one array that lie end to end are kept as they are (no copy); other arrays are
    copied once into one array. Memory maps and lazy sources (h5py, zarr) stay a list: they are
    read one window at a time.
    """
    if isinstance(series, Ragged) or len(series) < 2:
        return series
    if not all(type(s) is np.ndarray for s in series):
        return series
    offsets = np.concatenate(([0], np.cumsum([s.shape[0] for s in series]))).astype(np.int64)
    flat = _end_to_end(series)
    if flat is None:
        # Into an array of the series' own dtype: concatenate alone would make the byte
        # order native, and the data's dtype is kept, never cast.
        flat = np.empty((int(offsets[-1]), *series[0].shape[1:]), series[0].dtype)
        np.concatenate(series, out=flat)
    return Ragged(flat, offsets)


def _integers(name: str, given: Any) -> np.ndarray:
    """``given`` as a 1-D int64 array, or an error naming ``name``."""
    array = np.asarray(given)
    if array.ndim != 1 or not (array.dtype.kind in "iu" or array.size == 0):
        raise TypeError(
            f"`{name}` must be a 1-D array of integers. Received: {name} with dtype "
            f"{array.dtype} and shape {array.shape}"
        )
    return array.astype(np.int64)


def open_ragged(values: Any, offsets: Any, lengths: Any, name: str) -> Ragged:
    """``values`` (opened as a series) cut by ``offsets`` or by ``lengths``, checked whole.

    Raises:
        ValueError: neither or both of ``offsets`` and ``lengths``; offsets that do not run
            from 0 to the number of steps, or a series with no step.
    """
    from seqbatch.source import open_series

    values = open_series(values, name)
    n = int(values.shape[0])
    if (offsets is None) == (lengths is None):
        raise ValueError(
            "Exactly one of `offsets` and `lengths` must be given. Received: "
            f"offsets={'None' if offsets is None else '...'}, "
            f"lengths={'None' if lengths is None else '...'}"
        )
    if offsets is None:
        steps = _integers("lengths", lengths)
        if steps.size == 0 or steps.min() < 1:
            where = "no series" if steps.size == 0 else f"lengths[{int(np.argmin(steps))}]"
            raise ValueError(
                "`lengths` must hold at least one series, each of at least one step. "
                f"Received: {where}{'' if steps.size == 0 else f'={int(steps.min())}'}"
            )
        if int(steps.sum()) != n:
            raise ValueError(
                f"`lengths` must add up to the steps of `{name}`, so that no step is left "
                f"out. Received: lengths adding up to {int(steps.sum())} for {name} of {n} "
                "steps"
            )
        cuts = np.concatenate(([0], np.cumsum(steps)))
    else:
        cuts = _integers("offsets", offsets)
        if cuts.size < 2 or cuts[0] != 0 or cuts[-1] != n:
            ends = "[]" if cuts.size == 0 else f"{int(cuts[0])} ... {int(cuts[-1])}"
            raise ValueError(
                f"`offsets` must run from 0 to the steps of `{name}` ({n}), so that no step "
                f"is left out: series s is {name}[offsets[s]:offsets[s + 1]]. Received: "
                f"offsets {ends} ({cuts.size} values)"
            )
        gaps = np.diff(cuts)
        if gaps.min() < 1:
            s = int(np.argmin(gaps))
            raise ValueError(
                "`offsets` must increase strictly: every series holds at least one step. "
                f"Received: offsets[{s}]={int(cuts[s])} and offsets[{s + 1}]={int(cuts[s + 1])}"
            )
    return Ragged(values, cuts)
