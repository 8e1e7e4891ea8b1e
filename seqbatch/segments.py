"""Finding the segment that holds a position of a stream, in a time flat in the number of series.

A stream holds its segments one after another: segment ``j`` covers the stream's positions
(windows, or steps when packed) ``[local[j], local[j + 1])``. A binary search over all
segments costs ``log S`` cache misses per stream, which grows with the data. The index keeps,
for every stream and every ``block``-th position, the segment holding it: the segment of any
position then lies between two neighbours of that table, a few segments apart, and a short
binary search among them finds it. The table has about ``S / 4`` entries, so a block holds
about four segments, whatever the number of series.
"""

from __future__ import annotations

import numpy as np


class SegmentIndex:
    """The segment of each (stream, position), for segments laid one after another per stream.

    Args:
        starts: ``(S,)`` where each segment starts, increasing within each stream: the
            stream's own position plus ``offset[stream]``.
        offset: ``(B,)`` what ``starts`` adds to the positions of each stream.
        stream: ``(S,)`` the stream of each segment, non-decreasing; every stream has one,
            and the first segment of a stream starts at its position 0.
        span: positions per stream: every position looked up is below it.

    Examples:
        Stream 0 holds segments of 3 and 2 positions, stream 1 one of 5:

        >>> index = SegmentIndex(np.array([0, 3, 0]), np.zeros(2, np.int64), np.array([0, 0, 1]), 5)
        >>> index.find(np.array([0, 0, 1]), np.array([2, 3, 4])).tolist()
        [0, 1, 2]
    """

    def __init__(
        self, starts: np.ndarray, offset: np.ndarray, stream: np.ndarray, span: int
    ) -> None:
        S, B = starts.size, offset.size
        self.starts = starts
        self.offset = offset
        self.block = max(1, -(-4 * span * B // S))
        rows = -(-span // self.block) + 1  # one past the last block, for its upper bound
        # The first block point at or after each segment's start; the holder of a point is
        # the last segment of its stream whose first point is not after it.
        first = offset[stream]
        np.subtract(starts, first, out=first)
        np.negative(first, out=first)
        np.floor_divide(first, self.block, out=first)
        np.negative(first, out=first)
        holds = np.append(first[1:] != first[:-1], True) | np.append(
            stream[1:] != stream[:-1], True
        )
        at = np.flatnonzero(holds)
        # Segments are in (stream, position) order, so a running maximum over the table in
        # that order carries each holder forward to the points after it; a stream's first
        # segment starts at 0 and takes over from the stream before.
        table = np.zeros(B * rows, dtype=np.int64)
        table[stream[at] * rows + first[at]] = at
        self.table = np.maximum.accumulate(table).reshape(B, rows)

    def find(self, streams: np.ndarray, positions: np.ndarray | np.integer) -> np.ndarray:
        """The segment holding each position of each stream (broadcast together).

        A position at or past ``span`` gives some segment of its stream, for the caller to
        mask.
        """
        block = np.clip(positions // self.block, 0, self.table.shape[1] - 2)
        lo = self.table[streams, block]
        hi = self.table[streams, block + 1]  # the answer lies in [lo, hi]
        target = self.offset[streams] + positions
        while (hi > lo).any():
            mid = (lo + hi + 1) // 2
            up = self.starts[mid] <= target
            lo = np.where(up, mid, lo)
            hi = np.where(up, hi, mid - 1)
        return lo
