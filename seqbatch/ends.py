"""Where a series ends in an epoch's batches, and where the run of steps that leads there begins.

A stateful model's state at the last step of a series is what a forecast goes on from. Read
after a pass over the batches, the state of a stream is not that state as soon as anything
follows the series in its stream: padding and idle windows (zeros that run through the state),
or the next series. The plan knows, for every series, the batch, the stream and the step that
hold its last step, and the window where that stream's state last started from zero before it:
replaying the steps in between from zero state gives the series' state exactly.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from seqbatch.batcher import StreamBatcher
    from seqbatch.plan import StreamPlan


class SeriesEnd(NamedTuple):
    """Where the last step of one series sits in the current epoch of a batcher.

    Attributes:
        batch: the batch ``k`` that holds the series' last step.
        stream: the row of that batch (of this batcher, so of its shard).
        step: the column of that row, ``0`` to the batch's length ``- 1``.
        position: the step of the series that it is: the last one fed as an input.
        first_batch: the batch where the state of ``stream`` last started from zero before
            it: the series' first window, or with one series cut into streams (or series
            joined end to end) the first window of the stream's segment.
        first_step: the column of ``first_batch`` where that run of steps begins (``0`` but
            for packed batches, whose series start at any step).
    """

    batch: int
    stream: int
    step: int
    position: int
    first_batch: int
    first_step: int


def series_end(batches: StreamBatcher, series: int) -> SeriesEnd:
    """Where series ``series`` ends in the current epoch of ``batches``: see :class:`SeriesEnd`.

    Args:
        batches: the batcher, at the epoch (and shard) whose batches the model ran on.
        series: the index of a series in the data, ``0 <= series < batches.n_series``.

    Returns:
        The batch, stream and step of the series' last input step, and where the run of
        steps that leads to it starts from zero state.

    Raises:
        TypeError: ``series`` is not an integer.
        ValueError: ``series`` is out of range, or none of its steps is an input in this
            epoch of ``batches`` (all dropped, or held by another shard's streams).

    Examples:
        Three series on two streams, windows of 3 steps. Series 1 ends at step 0 of batch
        1, two steps of padding after it; series 2 follows it in stream 1, from zero state
        at batch 2:

        >>> import numpy as np, seqbatch
        >>> data = [np.arange(n, dtype="float32") for n in (7, 4, 3)]
        >>> batches = seqbatch.StreamBatcher(data, None, batch_size=2, sequence_length=3,
        ...                                  remainder="pad")
        >>> batches.series_end(1)
        SeriesEnd(batch=1, stream=1, step=0, position=3, first_batch=0, first_step=0)
        >>> batches[1].x[1].tolist(), batches[1].sample_weight[1].tolist()
        ([3.0, 0.0, 0.0], [1.0, 0.0, 0.0])
        >>> batches.series_end(2)
        SeriesEnd(batch=2, stream=1, step=2, position=2, first_batch=2, first_step=0)
    """
    if isinstance(series, bool) or not isinstance(series, numbers.Integral):
        raise TypeError(f"`series` must be an integer. Received: series={series!r}")
    if not 0 <= series < batches.n_series:
        raise ValueError(
            f"`series` must be the index of one of the {batches.n_series} series of the data. "
            f"Received: series={series}"
        )
    _refuse_burn_in(batches)
    plan = batches.plan
    local = batches.streams
    if batches.packed:
        seg = plan.segments()
        # One series cut into streams has a segment in each: the last step is in the one
        # that reaches furthest into the series (of this batcher's streams).
        mine = (seg.series == series) & (seg.length > 0)
        mine &= (seg.stream >= local.start) & (seg.stream < local.stop)
        js = np.flatnonzero(mine)
        if js.size:
            j = int(js[np.argmax(seg.start[js] + seg.length[js])])
            before = int(seg.length[:j][seg.stream[:j] == seg.stream[j]].sum())
            last = before + int(seg.length[j]) - 1
            k, step = _batch_of(plan, last)
            stream = int(seg.stream[j]) - local.start
            position = int(seg.start[j] + seg.length[j]) - 1
            return SeriesEnd(k, stream, step, position, *_batch_of(plan, before))
        raise _not_held(series, batches)
    # Series joined end to end are one series of the plan: series j is a range of its steps.
    joined = getattr(batches.sources[0], "ends", None)
    plan_series, lo, hi = series, 0, None
    if joined is not None:
        plan_series, lo, hi = 0, int(([0, *joined])[series]), int(joined[series])
    t = plan.table()
    cols = slice(local.start, local.stop)
    start, length = t.start[:, cols], t.length[:, cols]
    stop = length + start if hi is None else np.minimum(start + length, hi)
    held = (t.series[:, cols] == plan_series) & (length > 0) & (stop > np.maximum(start, lo))
    if not held.any():
        raise _not_held(series, batches)
    last = np.where(held, stop - 1, -1)
    k, i = np.unravel_index(int(np.argmax(last)), last.shape)
    first = int(np.flatnonzero(t.reset[: k + 1, local.start + i])[-1])
    position = int(last[k, i])
    return SeriesEnd(int(k), int(i), position - int(start[k, i]), position - lo, first, 0)


def stream_end(batches: StreamBatcher, stream: int) -> SeriesEnd:
    """Where the data of ``stream`` (a row of ``batches``) ends in the current epoch.

    The :class:`SeriesEnd` of the last step that the stream holds, of whichever series it
    holds last (``position`` counts the steps of the plan's series: with series joined end
    to end, of the joined one).
    """
    _refuse_burn_in(batches)
    plan = batches.plan
    g = batches.streams.start + stream
    if batches.packed:
        seg = plan.segments()
        mine = np.flatnonzero((seg.stream == g) & (seg.length > 0))
        if mine.size:
            before = int(seg.length[mine[:-1]].sum())
            last = before + int(seg.length[mine[-1]]) - 1
            position = int(seg.length[mine[-1]]) - 1
            k, step = _batch_of(plan, last)
            return SeriesEnd(k, stream, step, position, *_batch_of(plan, before))
    else:
        t = plan.table()
        held = np.flatnonzero(t.length[:, g] > 0)
        if held.size:
            k = int(held[-1])
            first = int(np.flatnonzero(t.reset[: k + 1, g])[-1])
            step = int(t.length[k, g]) - 1
            return SeriesEnd(k, stream, step, int(t.start[k, g]) + step, first, 0)
    raise ValueError(
        f"`streams` must hold data in the batches of this epoch. Received: stream {stream}, "
        f"which holds no step in epoch {batches.epoch}"
    )


def _batch_of(plan: StreamPlan, step: int) -> tuple[int, int]:
    """The batch and the column that hold step ``step`` of a packed stream.

    Windows of one length ``W`` hold steps ``[k * W, (k + 1) * W)``; windows whose lengths
    vary, ``[cum[k], cum[k + 1])`` at the cumulative sums of their lengths.
    """
    if plan.schedule is None:
        return divmod(step, plan.sequence_length)
    cum = np.concatenate(([0], np.cumsum(plan.window_lengths)))
    k = int(np.searchsorted(cum, step, side="right")) - 1
    return k, step - int(cum[k])


def _refuse_burn_in(batches: StreamBatcher) -> None:
    if batches.burn_in:
        raise ValueError(
            "`burn_in` must be 0 to find where a series ends: with burn-in every row starts "
            "its state afresh at its burn-in, so that no run of steps from zero state leads "
            f"to a series' last step. Received: burn_in={batches.burn_in} (the state at the "
            "series' last step is the one of the batch that holds it)"
        )


def _not_held(series: int, batches: StreamBatcher) -> ValueError:
    return ValueError(
        f"`series` must have steps in the batches of this epoch. Received: series={series}, "
        f"none of whose steps is an input in epoch {batches.epoch} of streams "
        f"{batches.streams.start} to {batches.streams.stop - 1} (dropped, or on another shard)"
    )
