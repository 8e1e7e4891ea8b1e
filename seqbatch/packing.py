"""Packed streams: each stream holds its series end to end, and a series starts at any step.

A batch of a packed plan is described piece by piece (:class:`Pieces`: a run of consecutive
steps of one series in one row) and step by step (:class:`Steps`: the series, the step and the
reset flag of every slot). :class:`Packed` is the layout itself, built from the series already
dealt onto the streams; :class:`seqbatch.StreamPlan` builds one for ``layout="pack"``.

The streams are laid one after another on one line of steps: stream ``i`` holds the line's
steps ``[base[i], base[i] + held[i])``, and the series of each stream follow one another on it.
Window ``k`` of stream ``i`` is the line's steps ``[base[i] + k * W, base[i] + (k + 1) * W)``,
cut at the stream's end; :class:`seqbatch.segments.SegmentIndex` finds the series it reaches in
a time flat in the number of series.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from seqbatch.segments import SegmentIndex

if TYPE_CHECKING:
    from seqbatch.lengths import Drawn


class Steps(NamedTuple):
    """Where every step of one batch comes from, one entry per (stream, step).

    Attributes:
        series: ``(B, W)`` int64, the series of each step, ``-1`` on padding.
        position: ``(B, W)`` int64, the step of that series, ``-1`` on padding.
        reset: ``(B, W)`` bool, the step starts a new segment (packed: a new series; at batch
            0, also a stream's first step): zero that stream's state right before it.
    """

    series: np.ndarray
    position: np.ndarray
    reset: np.ndarray


class Pieces(NamedTuple):
    """The runs of consecutive steps of one series that make up one batch.

    Piece ``p`` puts steps ``[start[p], start[p] + length[p])`` of series ``series[p]`` in
    row ``row[p]`` of the batch, at columns ``[column[p], column[p] + length[p])``. Pieces are
    ordered by row, then column, and fill each row's first columns with no gap: the rest of
    the row is padding.

    Attributes:
        row, column, series, start, length: ``(P,)`` int64 each, as above.
        reset: ``(P,)`` bool, the piece starts a new segment: zero the state before it.
    """

    row: np.ndarray
    column: np.ndarray
    series: np.ndarray
    start: np.ndarray
    length: np.ndarray
    reset: np.ndarray

    def steps(self, rows: int, width: int) -> Steps:
        """The per-step provenance of a batch of ``rows`` rows and ``width`` steps.

        Examples:
            Row 0 holds steps 3 and 4 of series 4, then starts series 7; row 1 holds step 9
            of series 5 and then padding:

            >>> columns = ([0, 0, 1], [0, 2, 0], [4, 7, 5], [3, 0, 9], [2, 1, 1])
            >>> p = Pieces(*(np.array(c) for c in columns), np.array([False, True, False]))
            >>> s = p.steps(2, 3)
            >>> s.series.tolist(), s.position.tolist()
            ([[4, 4, 7], [5, -1, -1]], [[3, 4, 0], [9, -1, -1]])
            >>> s.reset.tolist()
            [[False, False, True], [False, False, False]]
        """
        # The pieces fill each row's first columns in order: in row-major order, the real
        # steps of the batch are the pieces' steps one after another.
        real = np.bincount(self.row, weights=self.length, minlength=rows).astype(np.int64)
        before = np.cumsum(self.length) - self.length
        run_series = np.repeat(self.series, self.length)
        run_position = np.repeat(self.start - before, self.length)
        run_position += np.arange(run_position.size)
        if run_series.size == rows * width:
            series, position = run_series.reshape(rows, width), run_position.reshape(rows, width)
        else:
            held = np.arange(width) < real[:, None]
            series = np.full((rows, width), -1, dtype=np.int64)
            position = np.full((rows, width), -1, dtype=np.int64)
            series[held], position[held] = run_series, run_position
        reset = np.zeros((rows, width), dtype=bool)
        reset.ravel()[(self.row * width + self.column)[self.reset]] = True
        return Steps(series, position, reset)


class Packed:
    """The series of each stream end to end, cut into windows of ``sequence_length`` steps.

    Args:
        lengths: usable steps of each series.
        order: the series, sorted by stream and in the order each stream holds them.
        stream: ``(S,)`` the stream of each series of ``order`` (non-decreasing).
        batch_size: number of streams; each holds at least one series.
        sequence_length: steps per window.
        drop: leave out each stream's steps after its last full window (every window is then
            full or idle) instead of padding its last window.
        drawn: window lengths that vary (:class:`seqbatch.lengths.Drawn`): window ``k`` of a
            stream is then its steps ``[cum[k], cum[k + 1])`` instead of ``sequence_length``
            steps from ``k * sequence_length``.

    Attributes:
        n_batches: windows of the longest stream.
        seg_stream, seg_series, seg_len: the stream, the series and the steps used of each
            segment (a series that ``drop`` leaves out entirely has none), in stream order.
        seg_line: ``(segments + 1,)`` where each segment starts on the line, then the line's
            end.
        base, held: ``(B,)`` where each stream starts on the line, and its steps used.

    Raises:
        ValueError: with ``drop``, when a stream holds fewer than ``sequence_length`` steps.
    """

    def __init__(
        self,
        lengths: np.ndarray,
        order: np.ndarray,
        stream: np.ndarray,
        *,
        batch_size: int,
        sequence_length: int,
        drop: bool,
        drawn: Drawn | None = None,
    ) -> None:
        B, W = batch_size, sequence_length
        self.width = W
        self.cum: np.ndarray | None = None
        # One row per segment (line, stream, series, steps), so that a lookup reads one
        # cache line; a last row holds the end of the line.
        rows = np.empty((order.size + 1, 4), dtype=np.int64)
        rows[-1] = (0, B, -1, 0)
        line, _, _, seg_len = rows.T
        rows[:-1, 1] = stream
        rows[:-1, 2] = order
        np.take(lengths, order, out=seg_len[:-1], mode="clip")
        line[0] = 0
        np.cumsum(seg_len[:-1], out=line[1:])
        base = line[np.searchsorted(stream, np.arange(B + 1))]
        steps = np.diff(base)
        if drawn is not None:
            drawn.reach(int(steps.max()))
            cum = drawn.cum
            held = cum[np.searchsorted(cum, steps, side="right") - 1] if drop else steps
        else:
            held = steps // W * W if drop else steps
        if held.min() == 0 and drawn is not None:
            i = int(np.argmin(held))
            raise ValueError(
                "Every stream must hold at least the steps of its first window when "
                "series_boundary='pack' and remainder='drop'. Received: sequence_length("
                f"epoch={drawn.epoch}, k=0) = {int(drawn.lengths[0])}, but stream {i} of {B} "
                f"holds {int(steps[i])} usable steps (use remainder='pad' or a smaller "
                "batch_size)"
            )
        if held.min() == 0:
            i = int(np.argmin(held))
            raise ValueError(
                "Every stream must hold at least `sequence_length` usable steps when "
                "series_boundary='pack' and remainder='drop'. Received: sequence_length="
                f"{W}, but stream {i} of {B} holds {int(steps[i])} usable steps (use "
                "remainder='pad', a smaller batch_size or a shorter sequence_length)"
            )
        if drop:
            used = np.clip(base[stream] + held[stream] - line[:-1], 0, seg_len[:-1])
            live = np.flatnonzero(used)  # series that drop leaves out entirely
            rows[live, 3] = used[live]
            rows = rows[np.append(live, order.size)]
        if drawn is not None:
            self.n_batches = int(np.searchsorted(drawn.cum, held.max(), side="left"))
            self.cum = drawn.cum[: self.n_batches + 1]
        else:
            self.n_batches = int(-(-held.max() // W))
        self.seg_line = rows[:, 0]
        self.seg_stream, self.seg_series, self.seg_len = rows[:-1, 1:].T
        self.base = base[:-1]
        self.held = held
        self.index = SegmentIndex(self.seg_line[:-1], self.base, self.seg_stream, int(held.max()))

    def window(
        self, k: np.ndarray | np.int64, streams: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Window ``k`` of ``streams`` (broadcast together).

        Returns:
            The series and the step of each window's first step (``-1`` when idle), its real
            steps, its reset flag, where its first step lies on the line, and the segment
            holding that step.
        """
        at, W = self._at(k)
        length = np.clip(self.held[streams] - at, 0, W)
        first = self.base[streams] + at
        j = self.index.find(streams, at)
        held = length > 0
        start = np.where(held, first - self.seg_line[j], -1)
        series = np.where(held, self.seg_series[j], -1)
        return series, start, length, held & (start == 0), first, j

    def pieces(self, k: int, streams: np.ndarray) -> Pieces:
        """The pieces of window ``k`` of ``streams``; rows count from 0 in ``streams``."""
        run, _ = self.pieces_run(np.array([k], dtype=np.int64), streams)
        return run

    def pieces_run(self, ks: np.ndarray, streams: np.ndarray) -> tuple[Pieces, np.ndarray]:
        """The pieces of windows ``ks`` of ``streams``, looked up at once, batch after batch.

        Returns:
            The pieces of every batch of ``ks`` one after another (rows count from 0 in
            ``streams`` within each batch), and ``(len(ks) + 1,)`` where each batch's pieces
            begin: batch ``ks[i]`` holds pieces ``[bounds[i], bounds[i + 1])``.
        """
        at, W = self._at(ks[:, None])
        length = np.clip(self.held[streams] - at, 0, W)
        first = self.base[streams] + at
        j = self.index.find(streams, at)
        end = first + length
        last = self.index.find(streams, end - 1 - self.base[streams])
        count = np.where(length > 0, last - j + 1, 0).ravel()
        # Piece p belongs to window `of[p]` of the flattened (batch, stream) grid.
        of = np.repeat(np.arange(count.size), count)
        seg = j.ravel()[of] + np.arange(of.size) - (np.cumsum(count) - count)[of]
        first_p = first.ravel()[of]
        begin = np.maximum(self.seg_line[seg], first_p)
        # The next segment on the line starts where this one ends, or later when `drop` left
        # out the rest of this stream; the window ends at the stream's end either way.
        stop = np.minimum(self.seg_line[seg + 1], end.ravel()[of])
        start = begin - self.seg_line[seg]
        pieces = Pieces(
            of % streams.size,
            begin - first_p,
            self.seg_series[seg],
            start,
            stop - begin,
            start == 0,
        )
        bounds = np.zeros(ks.size + 1, dtype=np.int64)
        np.cumsum(count.reshape(ks.size, -1).sum(axis=1), out=bounds[1:])
        return pieces, bounds

    def _at(self, k: np.ndarray | np.int64) -> tuple[np.ndarray | np.int64, np.ndarray | int]:
        """The first step of window ``k`` in its stream, and its width."""
        if self.cum is None:
            return k * self.width, self.width
        return self.cum[k], self.cum[k + 1] - self.cum[k]

    def resets_inside_windows(self) -> int:
        """How many series start at a step other than the first of a window."""
        offset = self.seg_line[:-1] - self.base[self.seg_stream]
        if self.cum is not None:
            return int(np.count_nonzero(~np.isin(offset, self.cum)))
        return int(np.count_nonzero(offset % self.width))
