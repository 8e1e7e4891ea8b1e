"""Reading windows of many streams at once: one gather per batch where the data allows.

A :class:`WindowReader` reads the windows that a batch names (one per stream, or the runs of
steps of a packed batch) from its sources into one new array. Series that lie in one numpy
array (one series, a :class:`~seqbatch.ragged.Ragged`, or a
:class:`~seqbatch.source.Joined` of one) are read by one vectorised gather per batch; other
sources are sliced once per window, so that only what a batch holds is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from seqbatch.ragged import Ragged
from seqbatch.source import Joined, strided_windows

if TYPE_CHECKING:
    from seqbatch.packing import Pieces, Steps


class WindowReader:
    """Reads one window of ``width`` steps per stream from ``sources`` into a new array.

    Series in one array, in memory or memory-mapped (one series, a :class:`Ragged`, or a
    :class:`Joined` of a :class:`Ragged`), are read by one vectorised gather per batch, over
    a view of every window of that array, built once. Other sources (several memory maps,
    h5py, zarr) are sliced once per window or run of steps: only what a batch holds is read.

    Args:
        sources: the series, sharing feature shape and dtype.
        width: steps per window.

    Examples:
        >>> reader = WindowReader([np.arange(10)], 3)
        >>> reader.read(np.array([0, 0]), np.array([1, 8]), np.array([3, 2]), full=False).tolist()
        [[1, 2, 3], [8, 9, 0]]
    """

    def __init__(self, sources: Sequence[Any], width: int) -> None:
        self.sources = sources
        self.width = width
        src = sources[0]
        self.shape = (width, *src.shape[1:])
        self.dtype = np.dtype(src.dtype)
        self.values, self.offsets = _flat(sources)
        self.windows: np.ndarray | None = None
        if self.values is not None and self.values.shape[0] >= width:
            n = self.values.shape[0] - width + 1
            self.windows = strided_windows(self.values, 0, (n, 1, width), 0, 1)[:, 0]

    def read(
        self,
        series: np.ndarray,
        start: np.ndarray,
        length: np.ndarray,
        full: bool,
        width: int | None = None,
    ) -> np.ndarray:
        """The windows ``[start[i], start[i] + length[i])`` of ``series[i]``, zero-padded.

        Args:
            series: ``(B,)`` the series of each window (ignored where ``length`` is 0).
            start: ``(B,)`` the first step of each window.
            length: ``(B,)`` real steps of each window, at most ``width``.
            full: whether every ``length`` is ``width``.
            width: the steps of these windows, when they differ from the reader's (window
                lengths that vary): one gather of every step where the data allows.

        Returns:
            A new array of shape ``(B, width, *features)``.

        Examples:
            >>> reader = WindowReader([np.arange(10)], 1)
            >>> reader.read(np.array([0, 0]), np.array([1, 8]), np.array([4, 2]), False, 4).tolist()
            [[1, 2, 3, 4], [8, 9, 0, 0]]
        """
        if width is not None and width != self.width:
            return self._read_width(series, start, length, width)
        width = self.width
        if self.windows is not None:
            assert self.offsets is not None
            first = self.offsets[np.maximum(series, 0)] + start
            if full:
                return self.windows[first]
            # A window that would run past the end of the array (an idle stream's too) is
            # read from the last window, and its real steps moved into place below.
            last = len(self.windows) - 1
            out = self.windows[np.minimum(first, last)]
            late = np.flatnonzero((first > last) & (length > 0))
            if len(late):
                cols = np.arange(width)
                src = np.minimum(first[late, None] - last + cols, width - 1)
                out[late] = out[late[:, None], src]
            out[np.arange(width) >= length[:, None]] = 0
            return out
        out = (np.empty if full else np.zeros)((len(start), *self.shape), self.dtype)
        for i in np.flatnonzero(length).tolist():
            s, n = int(start[i]), int(length[i])
            out[i, :n] = self.sources[int(series[i])][s : s + n]
        return out

    def _read_width(
        self, series: np.ndarray, start: np.ndarray, length: np.ndarray, width: int
    ) -> np.ndarray:
        """:meth:`read` for windows of ``width`` steps, whatever the reader's own width."""
        held = np.arange(width) < length[:, None]
        if self.values is not None:
            assert self.offsets is not None
            at = (self.offsets[np.maximum(series, 0)] + start)[:, None] + np.arange(width)
            at[~held] = 0
            out = np.take(self.values, at, axis=0)
            out[~held] = 0
            return out
        out = np.zeros((len(start), width, *self.shape[1:]), self.dtype)
        for i in np.flatnonzero(length).tolist():
            s, n = int(start[i]), int(length[i])
            out[i, :n] = self.sources[int(series[i])][s : s + n]
        return out

    def read_packed(
        self, pieces: Pieces, steps: Steps, shifts: tuple[int, ...] = (0,)
    ) -> list[np.ndarray]:
        """The steps of a packed batch, zeros on its padding: once per shift.

        Series in one array are read by one gather of every step for every shift, from
        ``steps``; other sources by one slice per piece that covers every shift, so that a
        lazy source is read once.

        Args:
            pieces: the runs of steps of one batch (:class:`seqbatch.packing.Pieces`).
            steps: the same batch step by step (:meth:`~seqbatch.packing.Pieces.steps`).
            shifts: non-negative; for each ``shift``, read steps ``[start + shift, start +
                shift + length)`` of each piece's series (``shift`` steps ahead: the targets).

        Returns:
            One new array of shape ``(rows, width, *features)`` per shift.

        Examples:
            >>> from seqbatch.packing import Pieces
            >>> p = Pieces(*(np.array(c) for c in ([0, 0], [0, 2], [0, 1], [4, 0], [2, 1])),
            ...            np.array([False, True]))
            >>> for sources in ([np.arange(10), 100 + np.arange(5)], Ragged(
            ...         np.r_[np.arange(10), 100 + np.arange(5)], np.array([0, 10, 15]))):
            ...     reader = WindowReader(sources, 3)
            ...     print([a.tolist() for a in reader.read_packed(p, p.steps(1, 3), (0, 1))])
            [[[4, 5, 100]], [[5, 6, 101]]]
            [[[4, 5, 100]], [[5, 6, 101]]]
        """
        rows, width = steps.series.shape
        shape = (width, *self.shape[1:])
        padding = steps.series < 0
        padded = bool(padding.any())
        if self.values is not None:
            assert self.offsets is not None
            at = self.offsets[steps.series]
            at += steps.position
            if padded:
                at[padding] = 0
            outs = np.empty((len(shifts), rows, *shape), self.dtype)
            done = 0
            for out, shift in zip(outs, shifts, strict=True):
                at += shift - done  # in place: no index array per shift
                done = shift
                np.take(self.values, at, axis=0, out=out)
        else:
            # One allocation for every shift, not one each: freeing two large blocks can make
            # malloc return them to the system, and the next batch then faults its pages in
            # anew.
            outs = np.empty((len(shifts), rows, *shape), self.dtype)
            # Rows of steps, one after another: a piece is one run of them.
            flat = outs.reshape(len(shifts), rows * width, *self.shape[1:])
            extra = max(shifts)
            first = pieces.row * width + pieces.column
            runs = (a.tolist() for a in (first, pieces.series, pieces.start, pieces.length))
            for at_, series, start, length in zip(*runs, strict=True):
                run = self.sources[series][start : start + length + extra]
                for out, shift in zip(flat, shifts, strict=True):
                    out[at_ : at_ + length] = run[shift : shift + length]
        if padded:
            outs[:, padding] = 0
        return list(outs)


def _flat(sources: Sequence[Any]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The one numpy array that every series of ``sources`` lies in, and their offsets.

    ``(None, None)`` where the series lie in several arrays or in a lazy source.
    """
    if isinstance(sources, Ragged) and isinstance(sources.values, np.ndarray):
        return sources.values, sources.offsets
    if len(sources) == 1:
        src = sources[0]
        if isinstance(src, Joined) and isinstance(src.parts, Ragged):
            src = src.parts.values
        if isinstance(src, np.ndarray):
            return src, np.array([0, src.shape[0]], dtype=np.int64)
    return None, None
