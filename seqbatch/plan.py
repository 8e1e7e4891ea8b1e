"""The plan: for every batch and stream, which series and which steps. Integers only.

A plan never touches data. It is built from the number of usable steps of each series
(steps that have a target) and decides the layout of one epoch:

* ``layout="split"``: one series is cut into ``batch_size`` contiguous segments, one per
  stream (one long series, or several series joined end to end).
* ``layout="whole"``: every series is one segment that stays whole in one stream; series are
  dealt onto the streams longest first, each onto the least loaded stream, and every series
  starts on a window boundary.
* ``layout="pack"``: series are dealt as for ``"whole"`` (by steps rather than windows), and
  each stream holds its series end to end with no gap: a series starts at any step of a
  window. A window then holds several runs of steps (:meth:`StreamPlan.pieces`).

A stream is a sequence of segments. Window ``w`` of a segment that starts at step ``s`` holds
steps ``[s + w * W, s + w * W + length)``, with ``length <= W`` real steps followed by padding.
A window that starts a segment is a reset; windows that hold no segment are idle.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np

from seqbatch import _checks
from seqbatch import lengths as _lengths
from seqbatch.deal import deal
from seqbatch.packing import Packed, Pieces, Steps
from seqbatch.segments import SegmentIndex

Layout = Literal["split", "whole", "pack"]
# Windows looked up at once: at most about this many (batch, stream) entries per run of
# batches, a first run of this many batches, and this many runs kept (one per set of streams
# read, and the one before).
_LOOKUP_ENTRIES = 1 << 14
_LOOKUP_FIRST_RUN = 1
_LOOKUP_RUNS_KEPT = 4
Remainder = Literal["drop", "pad"]
Align = Literal["start", "end"]


def _ceil_div(a: Any, b: int) -> Any:
    """``ceil(a / b)`` for non-negative integers or integer arrays ``a``."""
    return (a + b - 1) // b


class Window(NamedTuple):
    """The windows of one batch, one entry per stream.

    Attributes:
        series: ``(B,)`` int64, the series each window reads, ``-1`` for an idle stream.
        start: ``(B,)`` int64, the first step of each window, ``-1`` for an idle stream.
        length: ``(B,)`` int64, real steps in each window (``0`` to ``sequence_length``);
            the rest of the window is padding.
        reset: ``(B,)`` bool, the window starts a new segment: zero that stream's state first.
    """

    series: np.ndarray
    start: np.ndarray
    length: np.ndarray
    reset: np.ndarray


class Segments(NamedTuple):
    """The segments of one epoch, stream by stream, each stream's in the order it holds them.

    Attributes:
        stream: ``(S,)`` int64, the stream that holds each segment (never decreasing).
        series: ``(S,)`` int64, the series each segment reads.
        start: ``(S,)`` int64, the first step of each segment in its series.
        length: ``(S,)`` int64, the steps of each segment that the batches hold.
    """

    stream: np.ndarray
    series: np.ndarray
    start: np.ndarray
    length: np.ndarray


@dataclass(frozen=True)
class Accounting:
    """Where every step of the data went in one epoch.

    ``total == used + no_target + before_offset + dropped`` always holds.

    Attributes:
        total: steps in the data, all series together.
        used: steps fed to the model as inputs, each with its target.
        no_target: steps at the end of each series that have no target (``targets=k`` leaves
            ``k`` per series, or per joined stream with ``series_boundary="concat"``).
        before_offset: steps before the first window: before this epoch's cut offset
            (``shuffle=True``, one long series), and with ``align="end"`` the steps left over
            before the first full window (the oldest steps of each series).
        dropped: steps after the last window: left over after the last full window
            (``remainder="drop"``), and, in a shuffled epoch of one long series, the
            ``sequence_length - 1 - offset`` steps after its cut (a shuffled cut always holds
            ``sequence_length - 1`` steps fewer than the series, so that every epoch has as
            many batches). With ``align="end"`` only those of a shuffled cut: the newest step
            of every series is used.
        padded: batch slots that hold padding instead of data (weight 0); not steps of the data.
    """

    total: int
    used: int
    no_target: int
    before_offset: int
    dropped: int
    padded: int


class StreamPlan:
    """The layout of one epoch: for batch ``k`` and stream ``i``, which series and steps.

    Args:
        lengths: usable steps of each series (steps that have a target), in series order.
        batch_size: number of streams.
        sequence_length: steps per window: an int, or a pure callable ``(epoch, k) -> int``
            (a schedule of :mod:`seqbatch.lengths`), the steps of window ``k`` of this epoch.
            The windows of a stream are then cut at the cumulative sums of the lengths: window
            ``k`` of a stream holds its steps ``[cum[k], cum[k] + length(k))``, a series of
            ``layout="whole"`` starts on such a boundary, and the epoch has as many batches as
            its longest stream needs. With ``remainder="drop"`` and ``layout="whole"``, a
            series shorter than the window it would start in is left out whole (counted in
            ``accounting.dropped``).
        layout: ``"split"`` cuts the only series into ``batch_size`` contiguous segments;
            ``"whole"`` keeps every series whole in one stream; ``"pack"`` keeps every series
            whole in one stream and packs each stream's series end to end.
        remainder: ``"drop"`` leaves out the steps after the last full window of each segment
            (with ``layout="pack"``: of each stream, so that every window is full or idle);
            ``"pad"`` keeps them in a last window completed with padding.
        align: ``"start"``: the windows of a series start at its first step, and
            ``remainder="drop"`` leaves out its newest steps; ``"end"``: the last window ends at
            its last usable step, and the steps left over are its oldest ones (counted in
            ``before_offset``). ``"end"`` needs ``remainder="drop"`` (padding never precedes
            data) and a layout other than ``"pack"``.
        no_target: steps per series that follow its usable ones and have no target (for the
            accounting only).
        shuffle: draw a new layout for every epoch from ``(seed, epoch)``: with
            ``layout="split"``, the cut offset, uniform in ``[0, sequence_length)``; with
            ``layout="whole"``, which stream holds which series and in what order.
        seed: the seed of the shuffle, an int in ``[0, 2**63)``.
        epoch: the epoch this plan lays out.

    Attributes:
        accounting: where every step of the data went in this epoch (:class:`Accounting`).
        offset: the step at which this epoch's cut starts (``layout="split"``), else 0.
        stride: with ``layout="split"`` and every stream holding as many steps, the steps
            between the starts of neighbouring streams (window ``k`` of stream ``i`` then
            starts at ``offset + i * stride + k * sequence_length``); else None.
        full_batches: with ``layout="split"``, batches ``k < full_batches`` have every window
            full, in series 0; else 0 (also when the lengths vary).
        schedule: the callable ``sequence_length``, or None for an int.
        window_lengths: ``(len(plan),)`` int64, the steps of each batch's windows.
        nominal: the length that ``lr_scale`` divides by: the int ``sequence_length``, a
            schedule's ``nominal``, or else the mean window length of this epoch.

    Raises:
        TypeError: ``lengths`` are not integers, or an argument has the wrong type.
        ValueError: when the series cannot fill ``batch_size`` streams with at least one
            window, or with ``remainder="pad"``, when ``sequence_length`` exceeds the longest
            series (every batch would be mostly padding); ``align="end"`` with
            ``remainder="pad"`` or ``layout="pack"``.

    Examples:
        One series of 10 usable steps, 2 streams, windows of 2 steps: stream 0 holds steps
        0 to 3, stream 1 holds steps 4 to 7, and steps 8 and 9 are dropped.

        >>> plan = StreamPlan([10], batch_size=2, sequence_length=2, layout="split")
        >>> len(plan)
        2
        >>> plan.window(1).start.tolist()
        [2, 6]
        >>> plan.accounting.dropped
        2

        Three series dealt onto two streams, longest first:

        >>> plan = StreamPlan([4, 2, 2], batch_size=2, sequence_length=2, layout="whole")
        >>> plan.assignment()
        [[0], [1, 2]]
        >>> plan.window(1).series.tolist(), plan.window(1).reset.tolist()
        ([0, 2], [False, True])

        The same series packed: stream 1 holds series 1 then series 2 with no gap, and the
        second piece of its batch 0 starts series 2 mid-window.

        >>> plan = StreamPlan([4, 2, 2], batch_size=2, sequence_length=3, layout="pack",
        ...                   remainder="pad")
        >>> plan.assignment(), len(plan)
        ([[0], [1, 2]], 2)
        >>> plan.pieces(0)
        Pieces(row=array([0, 1, 1]), column=array([0, 0, 2]), series=array([0, 1, 2]), start=array([0, 0, 0]), length=array([3, 2, 1]), reset=array([ True,  True,  True]))
    """

    def __init__(
        self,
        lengths: list[int] | np.ndarray,
        *,
        batch_size: int,
        sequence_length: int,
        layout: Layout,
        remainder: Remainder = "drop",
        align: Align = "start",
        no_target: int = 0,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
    ) -> None:
        self.batch_size = _checks.positive_int("batch_size", batch_size)
        self.epoch = _checks.non_negative_int("epoch", epoch)
        length = _lengths.check("sequence_length", sequence_length)
        self.schedule = length if _lengths.is_schedule(length) else None
        self._drawn: _lengths.Drawn | None = None
        if self.schedule is not None:
            self._drawn = _lengths.Drawn(length, self.epoch)  # type: ignore[arg-type]
            self._drawn.count(1)
            self.sequence_length = int(self._drawn.lengths[0])  # until the epoch is laid out
        else:
            self.sequence_length = int(length)  # type: ignore[arg-type]
        self.layout = _checks.one_of("layout", layout, ("split", "whole", "pack"))
        self.remainder = _checks.one_of("remainder", remainder, ("drop", "pad"))
        self.align = _checks.one_of("align", align, ("start", "end"))
        if self.align == "end" and (self.remainder == "pad" or self.layout == "pack"):
            raise ValueError(
                "`align='end'` needs remainder='drop' and a layout other than packing: the "
                "steps left over go before the first window, where padding may not go (it "
                "would run through the state before the data), and a packed stream has no "
                "series of its own to align. Received: align='end' with "
                f"remainder={self.remainder!r}, layout={self.layout!r}"
            )
        self.shuffle = _checks.boolean("shuffle", shuffle)
        self.seed = _checks.seed("seed", seed)
        self.no_target = _checks.non_negative_int("no_target", no_target)
        given = np.asarray(lengths)
        if given.size and given.dtype.kind not in "iu":
            raise TypeError(
                f"`lengths` must be a non-empty list of positive integers. Received: lengths={lengths!r}"
            )
        if given.ndim != 1 or given.size == 0 or given.min() < 1:
            raise ValueError(
                f"`lengths` must be a non-empty list of positive integers. Received: lengths={lengths!r}"
            )
        self.lengths = given.astype(np.int64)
        if layout == "split" and self.lengths.size != 1:
            raise ValueError(
                f"`layout='split'` takes exactly one series. Received: {self.lengths.size} series"
            )
        if self.remainder == "pad" and layout != "pack" and self._drawn is None:
            self._refuse_windows_longer_than(int(self.lengths.max()), "series", "series")
        rng = np.random.default_rng([self.seed, self.epoch]) if shuffle else None
        if layout == "split":
            self._split(rng)
        else:
            self._deal(rng)
        if self._drawn is None:
            # A read-only view of one int: no memory per batch.
            self.window_lengths = np.broadcast_to(
                np.int64(self.sequence_length), (self._n_batches,)
            )
            self._C: np.ndarray | None = None
            self.nominal = float(self.sequence_length)
            slots_total = self._n_batches * self.batch_size * self.sequence_length
        else:
            self.window_lengths, self._C = self._drawn.cut(self._n_batches)
            self.sequence_length = int(self.window_lengths.max())  # the longest window
            nominal = getattr(self.schedule, "nominal", None)
            if not isinstance(nominal, numbers.Real) or isinstance(nominal, bool) or nominal <= 0:
                nominal = float(self.window_lengths.mean())
            self.nominal = float(nominal)
            slots_total = self.batch_size * int(self._C[-1])
        W = self.sequence_length
        B = self.batch_size
        # Shared, read-only fields of the full batches of a split layout.
        self._zeros = np.zeros(B, dtype=np.int64)
        self._full = np.full(B, W, dtype=np.int64)
        self._all = np.ones(B, dtype=bool)
        self._none = np.zeros(B, dtype=bool)
        for array in (self._zeros, self._full, self._all, self._none):
            array.flags.writeable = False
        used = int(self._seg_len.sum())
        self.accounting = Accounting(
            total=int(self.lengths.sum()) + self.no_target * int(self.lengths.size),
            used=used,
            no_target=self.no_target * int(self.lengths.size),
            before_offset=self._before,
            dropped=int(self.lengths.sum()) - used - self._before,
            padded=slots_total - used,
        )

    def _refuse_windows_longer_than(self, longest: int, what: str, whats: str) -> None:
        """With padding, a window longer than every series (packed: every stream's series
        together) would be mostly padding: refuse it.

        Only integer arithmetic: nothing of size ``sequence_length`` is allocated.
        """
        W = self.sequence_length
        if longest >= W:
            return
        # Every series (or stream) then fills one window; the streams hold ceil(S / B)
        # windows each, or one when packed or cut from one series.
        n = int(self.lengths.size)
        batches = _ceil_div(n, self.batch_size) if self.layout == "whole" else 1
        slots = batches * self.batch_size * W
        data = int(self.lengths.sum())
        share = 100 * (slots - data) / slots
        raise ValueError(
            f"`sequence_length` must not exceed the longest {what} when remainder='pad'. "
            f"Received: sequence_length={W} for {whats} of at most {longest} usable steps: the "
            f"batches would hold {data} steps of data and {slots - data} slots of padding "
            f"({f'{share:.2f}%' if share < 99.99 else 'over 99.99%'} padding)"
        )

    def _split(self, rng: np.random.Generator | None) -> None:
        if self._drawn is not None:
            self._split_varying(rng, self._drawn)
            return
        n = int(self.lengths[0])
        B, W = self.batch_size, self.sequence_length
        # A shuffled epoch lays out the steps [offset, offset + cut) for an offset drawn from
        # [0, W): as many steps, hence as many batches, in every epoch, whatever the offset.
        cut = n - (W - 1) if self.shuffle else n
        # The errors name the extra W - 1 steps that a shuffled cut needs, when it needs them.
        more, when = "", ""
        if self.shuffle:
            more = " + sequence_length - 1"
            when = "shuffle=True (a shuffled cut starts up to sequence_length - 1 steps in)"
        if self.remainder == "drop":
            n_batches = max(cut, 0) // (B * W)
            if n_batches == 0:
                raise ValueError(
                    f"`batch_size * sequence_length{more}` must not exceed the usable steps of "
                    f"the series ({n}) when remainder='drop'{' and ' + when if when else ''}. "
                    f"Received: batch_size={B}, sequence_length={W}"
                )
        else:
            if cut < B:
                raise ValueError(
                    f"`batch_size{more}` must not exceed the usable steps of the series "
                    f"({n}){' when ' + when if when else ''}: every stream needs at least one "
                    f"step. Received: batch_size={B}" + (f", sequence_length={W}" if more else "")
                )
            n_batches = _ceil_div(_ceil_div(cut, B), W)
        drawn = int(rng.integers(0, W)) if rng is not None else 0
        # Aligned to the end, the cut ends `drawn` steps before the series does, and the
        # steps left over go before it.
        self.offset = drawn if self.align == "start" else n - drawn - n_batches * B * W
        self._before = self.offset
        if self.remainder == "drop":
            seg_len = np.full(B, n_batches * W, dtype=np.int64)
        else:
            q, r = divmod(cut, B)
            seg_len = q + (np.arange(B) < r).astype(np.int64)
        self._n_batches = n_batches
        self._seg_stream = np.arange(B, dtype=np.int64)
        self._seg_series = np.zeros(B, dtype=np.int64)
        self._seg_first = np.zeros(B, dtype=np.int64)
        self._seg_len = seg_len
        self._seg_windows = _ceil_div(seg_len, W)
        self._seg_start = self.offset + np.concatenate(([0], np.cumsum(seg_len)[:-1]))
        self.stride = int(seg_len[0]) if (seg_len == seg_len[0]).all() else None
        self.full_batches = int(seg_len.min()) // W

    def _split_varying(self, rng: np.random.Generator | None, drawn: _lengths.Drawn) -> None:
        """``_split`` for window lengths that vary: the streams hold as many steps as for an
        int, and their windows are cut at the cumulative sums of the lengths."""
        n, B = int(self.lengths[0]), self.batch_size
        first = int(drawn.lengths[0])
        cut = n - (first - 1) if self.shuffle else n
        more = " + sequence_length(epoch, 0) - 1" if self.shuffle else ""
        if self.remainder == "drop":
            per = max(cut, 0) // B
            drawn.reach(per)
            n_batches = int(np.searchsorted(drawn.cum, per, side="right")) - 1
            if n_batches == 0:
                raise ValueError(
                    f"`batch_size * sequence_length(epoch, 0){more}` must not exceed the "
                    f"usable steps of the series ({n}) when remainder='drop'. Received: "
                    f"batch_size={B}, sequence_length(epoch={self.epoch}, k=0) = {first}"
                )
            seg_len = np.full(B, drawn.cum[n_batches], dtype=np.int64)
        else:
            if cut < B:
                raise ValueError(
                    f"`batch_size{more}` must not exceed the usable steps of the series ({n}): "
                    f"every stream needs at least one step. Received: batch_size={B}"
                    + (f", sequence_length(epoch={self.epoch}, k=0) = {first}" if more else "")
                )
            q, r = divmod(cut, B)
            seg_len = q + (np.arange(B) < r).astype(np.int64)
            drawn.reach(int(seg_len.max()) - 1)
            n_batches = int(np.searchsorted(drawn.cum, seg_len.max(), side="left"))
        drawn_offset = int(rng.integers(0, first)) if rng is not None else 0
        if self.align == "start":
            self.offset = drawn_offset
        else:
            self.offset = n - drawn_offset - B * int(drawn.cum[n_batches])
        self._before = self.offset
        self._n_batches = n_batches
        self._seg_stream = np.arange(B, dtype=np.int64)
        self._seg_series = np.zeros(B, dtype=np.int64)
        self._seg_first = np.zeros(B, dtype=np.int64)
        self._seg_len = seg_len
        self._seg_windows = np.searchsorted(drawn.cum, seg_len, side="left").astype(np.int64)
        self._seg_start = self.offset + np.concatenate(([0], np.cumsum(seg_len)[:-1]))
        self.stride = None
        self.full_batches = 0

    def _deal_varying(
        self, order: np.ndarray, seg_stream: np.ndarray, drawn: _lengths.Drawn
    ) -> None:
        """Lay out the series of each stream (``layout="whole"``) on windows that vary.

        Each series starts on a window boundary of its stream, where the one before it ended,
        and takes windows until it is covered (``remainder="pad"``) or until the next window
        would not be full (``"drop"``; a series that fills no window is left out whole).
        Done rank by rank: the ``r``-th series of every stream at once.
        """
        B, S = self.batch_size, order.size
        m = self.lengths[order]
        starts = np.searchsorted(seg_stream, np.arange(B))
        rank = np.arange(S) - starts[seg_stream]
        by_rank = np.argsort(rank, kind="stable")
        bounds = np.concatenate(([0], np.cumsum(np.bincount(rank))))
        first = np.zeros(S, dtype=np.int64)
        windows = np.zeros(S, dtype=np.int64)
        used = np.zeros(S, dtype=np.int64)
        cur = np.zeros(B, dtype=np.int64)
        pad = self.remainder == "pad"
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            j = by_rank[lo:hi]
            st = seg_stream[j]
            k0 = cur[st]
            target = drawn.cum[k0] + m[j]
            drawn.reach(int(target.max()))
            if pad:
                k1 = np.searchsorted(drawn.cum, target, side="left")
                used[j] = m[j]
            else:
                k1 = np.searchsorted(drawn.cum, target, side="right") - 1
                used[j] = drawn.cum[k1] - drawn.cum[k0]
            first[j], windows[j] = k0, k1 - k0
            cur[st] = k1
        if cur.min() == 0:
            i = int(np.argmin(cur))
            raise ValueError(
                "Every stream must hold at least one full window when remainder='drop'. "
                f"Received: stream {i} of {B} holds series "
                f"{order[seg_stream == i].tolist()} of {m[seg_stream == i].tolist()} usable "
                f"steps, and sequence_length(epoch={self.epoch}, k=0) = "
                f"{int(drawn.lengths[0])} (use remainder='pad', or a smaller batch_size)"
            )
        live = np.flatnonzero(windows)
        self._seg_stream = seg_stream[live]
        self._seg_series = order[live]
        self._seg_first = first[live]
        self._seg_windows = windows[live]
        self._seg_len = used[live]
        if self.align == "end":
            self._seg_start = m[live] - used[live]
            self._before = int(self._seg_start.sum())
        else:
            self._seg_start = np.zeros(live.size, dtype=np.int64)
        self._n_batches = int(cur.max())
        self._index = SegmentIndex(
            self._seg_first, np.zeros(B, np.int64), self._seg_stream, self._n_batches
        )

    def _deal(self, rng: np.random.Generator | None) -> None:
        lengths = self.lengths
        B, W = self.batch_size, self.sequence_length
        S = lengths.size
        if S < B:
            boundary = "pack" if self.layout == "pack" else "reset"
            raise ValueError(
                "`batch_size` must not exceed the number of series when "
                f"series_boundary='{boundary}', since a series never leaves its stream. "
                f"Received: batch_size={B} for {S} series (pass one array to cut it into "
                "streams, or series_boundary='concat')"
            )
        if self.layout == "pack" or self._drawn is not None:
            # Windows that vary have no fixed number per series: deal by steps.
            seg_len = units = lengths
        elif self.remainder == "drop":
            short = np.flatnonzero(lengths < W)
            if short.size:
                i = int(short[0])
                raise ValueError(
                    "Every series must have at least `sequence_length` usable steps when "
                    f"remainder='drop'. Received: sequence_length={W}, but series {i} has "
                    f"{int(lengths[i])} usable steps (use remainder='pad' to keep it)"
                )
            seg_len = lengths // W * W
            units = seg_len // W
        else:
            seg_len = lengths
            units = _ceil_div(seg_len, W)
        # Longest first onto the least loaded stream (ties: lowest stream), by windows, or by
        # steps when packed. Equal sizes are interchangeable, so shuffling only their order
        # keeps the loads, hence len(), fixed.
        order, seg_stream, loads = deal(units, B, rng)
        self.offset = 0
        self.stride = None
        self.full_batches = 0
        self._before = 0
        if self.layout == "pack":
            if self.remainder == "pad" and self._drawn is None:
                self._refuse_windows_longer_than(int(loads.max()), "stream", "streams")
            drop = self.remainder == "drop"
            packed = Packed(
                lengths,
                order,
                seg_stream,
                batch_size=B,
                sequence_length=W,
                drop=drop,
                drawn=self._drawn,
            )
            self._packed = packed
            self._n_batches = packed.n_batches
            self._seg_stream = packed.seg_stream
            self._seg_series = packed.seg_series
            self._seg_len = packed.seg_len
            return
        if self._drawn is not None:
            self._deal_varying(order, seg_stream, self._drawn)
            return
        # One row per segment, so that looking a window up reads one cache line, not one per
        # field: with millions of series, the fields no longer fit in the caches.
        rows = np.empty((S, 5), dtype=np.int64)
        self._seg_stream, self._seg_series, self._seg_first, self._seg_windows, self._seg_len = (
            rows.T
        )
        self._seg_stream[:] = seg_stream
        self._seg_series[:] = order
        np.take(units, order, out=self._seg_windows, mode="clip")
        np.take(seg_len, order, out=self._seg_len, mode="clip")
        starts = np.searchsorted(seg_stream, np.arange(B))
        del order, seg_stream, units
        np.cumsum(self._seg_windows, out=self._seg_first)
        self._seg_first -= self._seg_windows
        self._seg_first -= self._seg_first[starts][self._seg_stream]
        if self.align == "end":
            # Each series' first window starts at the steps left over, so that its last
            # window ends at its last usable step.
            self._seg_start = np.take(lengths - seg_len, self._seg_series)
            self._before = int(self._seg_start.sum())
        else:
            self._seg_start = np.broadcast_to(np.int64(0), (S,))
        self._n_batches = int(loads.max())
        self._index = SegmentIndex(
            self._seg_first, np.zeros(B, np.int64), self._seg_stream, self._n_batches
        )

    def __len__(self) -> int:
        return self._n_batches

    def length(self, k: int) -> int:
        """The steps of the windows of batch ``k``.

        Examples:
            >>> plan = StreamPlan([20], batch_size=2, sequence_length=lambda e, k: k + 1,
            ...                   layout="split")
            >>> len(plan), [plan.length(k) for k in range(len(plan))]
            (4, [1, 2, 3, 4])
            >>> plan.window(2).start.tolist(), plan.window(2).length.tolist()
            ([3, 13], [3, 3])
        """
        self._check_batch(k)
        return int(self.window_lengths[k])

    @property
    def cum_steps(self) -> int:
        """The steps of every window of a stream together: ``sum(window_lengths)``."""
        if self._C is None:
            return self._n_batches * self.sequence_length
        return int(self._C[-1])

    def lr_scale(self, k: int) -> float:
        """``length(k) / nominal``: what to multiply the learning rate of batch ``k`` by."""
        return self.length(k) / self.nominal

    def window(self, k: int, streams: slice = slice(None)) -> Window:
        """The windows of batch ``k`` (``0 <= k < len(plan)``), for the streams asked for.

        Args:
            k: the batch index.
            streams: the streams to return, a slice of ``range(batch_size)``.

        Returns:
            A :class:`Window` whose arrays have one entry per stream in ``streams``.
        """
        self._check_batch(k)
        if self._C is None and k < self.full_batches:
            # Every window full, one segment per stream: no lookup needed.
            start = self._seg_start[streams] + k * self.sequence_length
            reset = self._all if k == 0 else self._none
            return Window(self._zeros[streams], start, self._full[streams], reset[streams])
        lo, hi, step = streams.indices(self.batch_size)
        if self.layout == "pack":
            return Window(*self._lookup(np.int64(k), np.arange(lo, hi, step, dtype=np.int64)))
        # The windows of a run of batches are looked up at once and kept (see _Runs).
        streams_ = np.arange(lo, hi, step, dtype=np.int64)
        chunk, row = self._runs.get(
            (lo, hi, step), k, streams_.size, lambda ks: self._lookup(ks[:, None], streams_)
        )
        return Window(*(a[row] for a in chunk))

    def _packed_pieces(self, k: int, streams: slice) -> Pieces:
        """:meth:`pieces` of a packed plan: the pieces of a run of batches looked up at once."""
        lo, hi, step = streams.indices(self.batch_size)
        streams_ = np.arange(lo, hi, step, dtype=np.int64)
        (pieces, bounds), i = self._runs.get(
            ("pieces", lo, hi, step),
            k,
            streams_.size,
            lambda ks: self._packed.pieces_run(ks, streams_),
        )
        return Pieces(*(a[bounds[i] : bounds[i + 1]] for a in pieces))

    @property
    def _runs(self) -> _Runs:
        runs = self.__dict__.get("_run_cache")
        if runs is None:
            runs = self.__dict__["_run_cache"] = _Runs(self._n_batches)
        return runs

    def __getstate__(self) -> dict[str, Any]:
        # The looked-up runs are a cache: a pickled plan (a worker's) leaves them behind.
        state = dict(self.__dict__)
        state.pop("_run_cache", None)
        return state

    def _check_batch(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise TypeError(f"`k` must be an integer. Received: k={k!r}")
        if not 0 <= k < self._n_batches:
            raise IndexError(
                f"batch index out of range. Received: k={k} for {self._n_batches} batches"
            )

    def table(self) -> Window:
        """Every window of the epoch at once: arrays of shape ``(len(plan), batch_size)``.

        Costs memory proportional to ``len(plan) * batch_size``.

        Raises:
            ValueError: with ``layout="pack"``, whose windows hold several runs of steps that
                one window per (batch, stream) cannot describe: read :meth:`pieces` instead.
        """
        if self.layout == "pack":
            raise ValueError(
                "`table()` gives one run of steps per window, and a packed window holds "
                "several. Received: a plan with layout='pack' (read pieces(k) or steps(k) "
                "batch by batch)"
            )
        ks = np.arange(self._n_batches, dtype=np.int64)[:, None]
        return Window(*self._lookup(ks, np.arange(self.batch_size, dtype=np.int64)))

    def _lookup(
        self, k: np.ndarray | np.int64, streams: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        W = self.sequence_length
        if self.layout == "pack":
            return self._packed.window(k, streams)[:4]
        j = streams if self.layout == "split" else self._index.find(streams, k)
        if self._C is not None:
            # Window k of a segment that starts at window f holds its steps from C[k] - C[f].
            C = self._C
            f = self._seg_first[j]
            held = (self._seg_stream[j] == streams) & (k - f < self._seg_windows[j])
            into = C[k] - C[f]
            length = np.where(held, np.minimum(self._seg_len[j] - into, self.window_lengths[k]), 0)
            start = np.where(held, self._seg_start[j] + into, -1)
            series = np.where(held, self._seg_series[j], -1)
            return series, start, length, held & (k == f)
        w = k - self._seg_first[j]
        held = (self._seg_stream[j] == streams) & (w < self._seg_windows[j])
        length = np.where(held, np.minimum(self._seg_len[j] - w * W, W), 0)
        start = np.where(held, self._seg_start[j] + w * W, -1)
        series = np.where(held, self._seg_series[j], -1)
        return series, start, length, held & (w == 0)

    def pieces(self, k: int, streams: slice = slice(None)) -> Pieces:
        """The runs of steps that batch ``k`` holds, for the streams asked for.

        With ``layout="pack"`` a window holds one piece per series it reaches; otherwise one
        piece per window that holds data. Rows count from the first stream asked for.

        Args:
            k: the batch index, ``0 <= k < len(plan)``.
            streams: the streams to return, a slice of ``range(batch_size)``.

        Returns:
            A :class:`Pieces`, ordered by row then column.
        """
        if self.layout == "pack":
            self._check_batch(k)
            return self._packed_pieces(k, streams)
        w = self.window(k, streams)
        row = np.flatnonzero(w.length)
        zeros = np.zeros(row.size, dtype=np.int64)
        return Pieces(row, zeros, w.series[row], w.start[row], w.length[row], w.reset[row])

    def steps(self, k: int, streams: slice = slice(None)) -> Steps:
        """Where every step of batch ``k`` comes from: :meth:`pieces`, step by step.

        Examples:
            >>> plan = StreamPlan([4, 2, 2], batch_size=2, sequence_length=3, layout="pack",
            ...                   remainder="pad")
            >>> plan.steps(1).series.tolist(), plan.steps(1).reset.tolist()
            ([[0, -1, -1], [2, -1, -1]], [[False, False, False], [False, False, False]])
        """
        lo, hi, step = streams.indices(self.batch_size)
        return self.pieces(k, streams).steps(len(range(lo, hi, step)), self.length(k))

    def stream_steps(self) -> np.ndarray:
        """``(batch_size,)`` int64: the steps of data each stream holds in this epoch.

        Examples:
            >>> StreamPlan([4, 2, 2], batch_size=2, sequence_length=3, layout="pack",
            ...            remainder="pad").stream_steps().tolist()
            [4, 4]
        """
        steps = np.bincount(self._seg_stream, weights=self._seg_len, minlength=self.batch_size)
        return steps.astype(np.int64)

    def real_slots(self, last_step_only: bool = False) -> int:
        """The batch slots of this epoch that hold a real step.

        Args:
            last_step_only: count only the last slot of each window, the step whose target
                ``return_sequences=False`` gives.

        Examples:
            >>> plan = StreamPlan([5, 2], batch_size=2, sequence_length=2, layout="whole",
            ...                   remainder="pad")
            >>> plan.real_slots(), plan.real_slots(last_step_only=True)
            (7, 3)
        """
        if not last_step_only:
            return self.accounting.used
        if self._C is not None:
            C = self._C
            if self.layout == "pack":
                loads = np.bincount(self._seg_stream, weights=self._seg_len).astype(np.int64)
                return int((np.searchsorted(C, loads, side="right") - 1).sum())
            end = C[self._seg_first] + self._seg_len
            return int((np.searchsorted(C, end, side="right") - 1 - self._seg_first).sum())
        W = self.sequence_length
        if self.layout == "pack":
            # Each stream is one run of steps from step 0: its windows end on a real step
            # until its data runs out.
            loads = np.zeros(self.batch_size, dtype=np.int64)
            np.add.at(loads, self._seg_stream, self._seg_len)
            return int((loads // W).sum())
        return int((self._seg_len // W).sum())

    def segments(self) -> Segments:
        """Every segment of this epoch: which stream holds which steps of which series.

        With ``layout="pack"`` the segments of a stream lie end to end in its windows: its
        ``n``-th step of data is step ``n - before`` of the segment that has ``before`` steps
        of the stream before it. With ``"split"`` each stream holds one segment; with
        ``"whole"`` each segment starts on a window boundary.

        Examples:
            >>> plan = StreamPlan([4, 2, 2], batch_size=2, sequence_length=3, layout="pack",
            ...                   remainder="pad")
            >>> plan.segments()
            Segments(stream=array([0, 1, 1]), series=array([0, 1, 2]), start=array([0, 0, 0]), length=array([4, 2, 2]))
        """
        start = np.zeros_like(self._seg_len) if self.layout == "pack" else self._seg_start
        return Segments(
            *(np.array(a) for a in (self._seg_stream, self._seg_series, start, self._seg_len))
        )

    def assignment(self) -> list[list[int]]:
        """The series each stream holds, in the order it holds them."""
        out: list[list[int]] = [[] for _ in range(self.batch_size)]
        for s, series in zip(self._seg_stream.tolist(), self._seg_series.tolist(), strict=True):
            out[s].append(series)
        return out

    def varies(self) -> str:
        """What ``shuffle=True`` draws anew for every epoch of this layout, in words."""
        if not self.shuffle:
            return "nothing: shuffle=False"
        if self.layout == "split" and self._C is not None:
            return (
                "the cut offset, drawn from 0 to the first window's length - 1 "
                f"(this epoch: {self.offset})"
            )
        if self.layout == "split":
            if self.sequence_length == 1:
                return "nothing: windows of one step allow a single cut"
            if self.align == "end":
                return (
                    f"the steps cut off the end, drawn from 0 to {self.sequence_length - 1} "
                    f"(this epoch: {self.accounting.dropped})"
                )
            return (
                f"the cut offset, drawn from 0 to {self.sequence_length - 1} "
                f"(this epoch: {self.offset})"
            )
        if self.batch_size == 1 and self.lengths.size == 1:
            return "nothing: one series on one stream"
        return "which stream holds which series, and in what order"

    def describe(self) -> str:
        """A few lines that say how the data is laid out and where every step went."""
        a = self.accounting
        slots = a.used + a.padded
        steps = f"{self.sequence_length} steps"
        if self._C is not None:
            L = self.window_lengths
            steps = (
                f"{int(L.min())} to {int(L.max())} steps (mean {float(L.mean()):.1f}, nominal "
                f"{self.nominal:g}: {_lengths.describe(self.schedule)})"
            )
        how = {
            "split": "one series cut into contiguous streams",
            "whole": f"{self.lengths.size} series dealt whole onto the streams",
            "pack": f"{self.lengths.size} series packed end to end in the streams",
        }[self.layout]
        epoch = f"epoch {self.epoch}"
        if self.shuffle:
            epoch += f", shuffled; varies by epoch: {self.varies()}"
        resets = f"{self._seg_len.size}"
        if self.layout == "pack":
            resets += f", {self._packed.resets_inside_windows()} of them inside a window"
        return "\n".join(
            [
                f"layout: {how} ({epoch})",
                f"batches: {len(self)} of {self.batch_size} streams x {steps}; resets: {resets}",
                f"steps: {a.total} in the data = {a.used} used + {a.no_target} without target"
                + (
                    f" + {a.before_offset} before the offset + {a.dropped} dropped "
                    f"(remainder={self.remainder!r})"
                    if self.align == "start"
                    else f" + {a.before_offset} dropped before the first window (the oldest) + "
                    f"{a.dropped} after the last (remainder={self.remainder!r}, align='end')"
                ),
                f"padding: {a.padded} of {slots} batch slots ({100 * a.padded / slots:.1f}%)",
            ]
        )

    def __repr__(self) -> str:
        return (
            f"StreamPlan({self.lengths.size} series, layout={self.layout!r}, "
            f"batch_size={self.batch_size}, sequence_length="
            f"{self.sequence_length if self._C is None else _lengths.describe(self.schedule)}, "
            f"remainder={self.remainder!r}, "
            + (f"align={self.align!r}, " if self.align == "end" else "")
            + f"shuffle={self.shuffle}, epoch={self.epoch}): "
            f"{len(self)} batches"
        )


class _Runs:
    """Lookups of runs of batches, read ahead as the batches are read in order.

    A lookup costs a few numpy calls whatever the number of batches it covers, so it is made
    for a run of batches at once and kept. The first run is short, so that random access
    costs little more than one batch; each run that starts where the last one of the same
    streams ended doubles, up to about :data:`_LOOKUP_ENTRIES` entries. The answers are those
    of one batch at a time: the arrays kept are read-only.

    Args:
        n_batches: batches of the epoch; a run ends at the last.
    """

    def __init__(self, n_batches: int) -> None:
        self.n_batches = n_batches
        self.kept: list[tuple[Any, int, int, Any]] = []

    def get(self, key: Any, k: int, per_batch: int, lookup: Any) -> tuple[Any, int]:
        """The lookup of the run holding batch ``k`` of ``key``, and ``k``'s place in it.

        Args:
            key: what the lookup depends on besides the batches (the streams read).
            k: the batch.
            per_batch: entries of one batch's lookup.
            lookup: called with the ``(C,)`` int64 batches of a run: arrays, or tuples of
                arrays (nested once), made read-only here.
        """
        k = int(k)
        for held, k0, k1, value in self.kept:
            if held == key and k0 <= k < k1:
                return value, k - k0
        most = max(1, _LOOKUP_ENTRIES // max(per_batch, 1))
        size = min(most, _LOOKUP_FIRST_RUN)
        for held, k0, k1, _ in self.kept:
            if held == key and k1 == k:  # read in order: read further ahead
                size = min(most, 2 * (k1 - k0))
        ks = np.arange(k, min(k + size, self.n_batches), dtype=np.int64)
        value = lookup(ks)
        for part in value:
            for a in part if isinstance(part, tuple) else (part,):
                a.flags.writeable = False
        if len(self.kept) >= _LOOKUP_RUNS_KEPT:
            self.kept.pop(0)
        self.kept.append((key, int(ks[0]), int(ks[-1]) + 1, value))
        return value, 0
