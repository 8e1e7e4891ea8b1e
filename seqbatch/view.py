"""The epoch view: batch ``k`` of epoch ``e`` as a pure function of the data and the layout.

An :class:`EpochView` holds the data sources, the arguments of the layout, the seed and the
streams it yields, and nothing that moves: ``view.batch(e, k)`` is the same batch wherever,
whenever and in whatever order it is asked for, in any thread or worker process. Where a
loop stands (the epoch, the next batch) belongs to a :class:`seqbatch.cursor.Cursor`;
:class:`seqbatch.StreamBatcher` is the two together. Adapters read ``(epoch, k)`` keys from
the view and never copy or move a batcher to reach an epoch.
"""

from __future__ import annotations

import copy
import dataclasses
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from seqbatch import lengths as _lengths
from seqbatch.batch import Batch
from seqbatch.plan import Align, Layout, StreamPlan, Window
from seqbatch.reader import WindowReader
from seqbatch.source import portable_list, strided_windows

_KEPT = 2  # epochs whose plans are kept: an epoch and the next, all that readers in order need


@dataclass(frozen=True)
class LayoutSpec:
    """The arguments of a layout that every epoch shares."""

    lengths: np.ndarray  # usable steps of each series (those with a target)
    layout: Layout
    streams_total: int
    sequence_length: Any  # an int, or a callable (epoch, k) -> int: seqbatch.lengths
    remainder: str
    align: Align
    shift: int
    shuffle: bool
    return_sequences: bool
    has_targets: bool
    packed: bool  # series_boundary="pack": batches carry per-step flags (also one series)
    burn_in: int = 0  # steps before each window, without loss: seqbatch.burn_in


class EpochView:
    """Batch ``k`` of any epoch, read from the data; changes nothing when asked.

    Args:
        sources: the series ``x`` is read from.
        target_sources: the series ``y`` is read from (``sources`` for steps-ahead targets).
        layout: the arguments of the layout.
        seed: the seed of the shuffle.
        streams: the streams of the plan that this view yields.

    Examples:
        >>> import numpy as np, seqbatch
        >>> batches = seqbatch.StreamBatcher(np.arange(50), batch_size=2, sequence_length=4,
        ...                                  shuffle=True, seed=1)
        >>> view = batches.view
        >>> view.batch(3, 0).position.tolist() == view.batch(3, 0).position.tolist()
        True
        >>> batches.epoch  # reading epoch 3 moved nothing
        0
    """

    def __init__(
        self,
        sources: Sequence[Any],
        target_sources: Sequence[Any],
        layout: LayoutSpec,
        seed: int,
        streams: slice,
    ) -> None:
        self.sources = sources
        self.target_sources = target_sources
        self.layout = layout
        self.seed = seed
        self.streams = streams
        self._start_caches()

    def _start_caches(self) -> None:
        """Empty the caches derived from the data: built on first use, never pickled."""
        self._varying = _lengths.is_schedule(self.layout.sequence_length)
        self._plans: dict[int, tuple[StreamPlan, Any]] = {}
        self._ones_cache: np.ndarray | None = None
        W, same = self.layout.sequence_length, self.target_sources is self.sources
        if self.varying:
            W = 1  # every read names its width
        self._x_reader = WindowReader(self.sources, W)
        self._y_reader = (
            self._x_reader
            if self.layout.return_sequences and same
            else WindowReader(self.target_sources, W if self.layout.return_sequences else 1)
        )

    def __getstate__(self) -> dict[str, Any]:
        # Pickled for worker processes: the data once, memory maps as a reference to their
        # file. Not the caches: the window views alone would pickle as sequence_length
        # copies of the data.
        sources = portable_list(self.sources)
        targets = sources if self.target_sources is self.sources else None
        return {
            "sources": sources,
            "target_sources": portable_list(self.target_sources) if targets is None else targets,
            "layout": self.layout,
            "seed": self.seed,
            "streams": self.streams,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._start_caches()

    def __copy__(self) -> EpochView:
        # The same data and readers, in one process: not the pickled state.
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        return other

    @property
    def batch_size(self) -> int:
        """The streams this view yields: the rows of every batch."""
        return self.streams.stop - self.streams.start

    @property
    def packed(self) -> bool:
        """Whether series lie end to end in each stream (``series_boundary="pack"``)."""
        return self.layout.packed

    @property
    def varying(self) -> bool:
        """Whether the window lengths vary: ``sequence_length`` is a callable."""
        return self._varying

    def __len__(self) -> int:
        return len(self.plan(0))

    def n_batches(self, epoch: int) -> int:
        """The batches of ``epoch``: the same in every epoch unless the lengths vary."""
        return len(self.plan(epoch))

    def plan(self, epoch: int) -> StreamPlan:
        """The layout of ``epoch`` (every epoch's is epoch 0's without ``shuffle``, unless
        the window lengths vary)."""
        return self._epoch(epoch)[0]

    def _epoch(self, epoch: int) -> tuple[StreamPlan, Any]:
        """The plan of ``epoch`` and its zero-copy window views, made once and kept a while."""
        epoch = epoch if self.layout.shuffle or self.varying else 0
        made = self._plans.get(epoch)
        if made is None:
            lay = self.layout
            plan = StreamPlan(
                lay.lengths,
                batch_size=lay.streams_total,
                sequence_length=lay.sequence_length,
                layout=lay.layout,
                remainder=lay.remainder,  # type: ignore[arg-type]
                align=lay.align,
                no_target=lay.shift,
                shuffle=lay.shuffle,
                seed=self.seed,
                epoch=epoch,
            )
            made = (plan, self._views(plan))
            # One new dict, bound in one step: a thread reading the old one is not disturbed.
            kept = list(self._plans.items())[-(_KEPT - 1) :]
            self._plans = {**dict(kept), epoch: made}
        return made

    def shard(self, index: int, count: int) -> EpochView:
        """The view of streams ``[index * B / count, (index + 1) * B / count)`` of this one."""
        size = self.batch_size // count
        lo = self.streams.start + index * size
        return self._with(streams=slice(lo, lo + size))

    def with_seed(self, seed: int) -> EpochView:
        """The same view with another seed (the same batches unless ``shuffle``)."""
        return self._with(seed=seed)

    def _with(self, **changes: Any) -> EpochView:
        other = copy.copy(self)
        other.__dict__.update(changes)
        other._plans, other._ones_cache = {}, None
        return other

    @property
    def _ones(self) -> np.ndarray:
        """The ``(B, W)`` weights of a full batch, shared read-only; made at the first batch."""
        if self._ones_cache is None:
            ones = np.ones((self.batch_size, self.layout.sequence_length), dtype=np.float32)
            ones.flags.writeable = False
            self._ones_cache = ones
        return self._ones_cache

    def batch(self, epoch: int, k: int) -> Batch:
        """Batch ``k`` of ``epoch``: ``-len(self) <= k < len(self)``.

        Raises:
            TypeError: ``k`` is not an integer.
            IndexError: ``k`` is out of range.
        """
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise TypeError(f"batch indices must be integers or slices. Received: {k!r}")
        plan, views = self._epoch(epoch)
        n = len(plan)
        if not -n <= k < n:
            raise IndexError(f"batch index out of range. Received: {k} for {n} batches")
        k = int(k) % n
        if self.layout.burn_in:
            from seqbatch.burn_in import prefixed

            return prefixed(self, self._batch(plan, views, k))
        return self._batch(plan, views, k)

    def _batch(self, plan: StreamPlan, views: Any, k: int) -> Batch:
        """Batch ``k`` (in range) of the epoch that ``plan`` and ``views`` lay out."""
        if self.packed:
            return self._packed(plan, k)
        if plan.schedule is not None:
            batch = self.read(plan.window(k, self.streams), plan.length(k))
            return dataclasses.replace(batch, lr_scale=np.float64(plan.lr_scale(k)))
        if views is not None and k < len(views[0]):
            full = self._ones
            weight = full if self.layout.return_sequences or views[1] is None else full[:, 0]
            w = plan.window(k, self.streams)
            y = None if views[1] is None else views[1][k]
            return Batch(views[0][k], y, weight, w.reset, w.series, w.start)
        if self._x_reader.windows is not None:
            gathered = self._gathered(plan, k)
            if gathered is not None:
                return gathered
        return self.read(plan.window(k, self.streams))

    def _gathered(self, plan: StreamPlan, k: int) -> Batch | None:
        """Batch ``k`` read by one gather from the one array every series lies in, where its
        windows are all full and ``y`` (if any) is ``x`` shifted: ``None`` otherwise.

        The rows to gather are computed for a run of batches at once and kept with the
        plan's lookups, so that a batch costs its gather and little more: what :meth:`read`
        computes batch by batch from the same windows.
        """
        lay = self.layout
        both = lay.has_targets
        if both and not (lay.return_sequences and self._y_reader is self._x_reader):
            return None
        lo, hi, step = self.streams.indices(lay.streams_total)
        streams = np.arange(lo, hi, step, dtype=np.int64)
        W, shift, reader = lay.sequence_length, lay.shift, self._x_reader

        def rows(ks: np.ndarray) -> tuple[np.ndarray, ...]:
            series, start, length, reset = plan._lookup(ks[:, None], streams)
            first = reader.offsets[np.maximum(series, 0)] + start  # type: ignore[index]
            at = np.concatenate((first, first + shift), axis=1) if both else first
            return at, series, start, reset, (length == W).all(axis=1)

        (at, series, start, reset, full), i = plan._runs.get(
            ("gather", lo, hi, step), k, streams.size, rows
        )
        if not full[i]:
            return None
        assert reader.windows is not None
        read = reader.windows[at[i]]
        B = streams.size
        y = read[B:] if both else None
        return Batch(read[:B], y, self._ones, reset[i], series[i], start[i])

    def _views(self, plan: StreamPlan) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Zero-copy views of the full batches of one numpy series cut into streams."""
        x_src, y_src = self.sources[0], self.target_sources[0]
        if (
            plan.schedule is not None
            or plan.stride is None
            or not (isinstance(x_src, np.ndarray) and isinstance(y_src, np.ndarray))
        ):
            return None
        lay = self.layout
        B, W, nb, stride = self.batch_size, lay.sequence_length, plan.full_batches, plan.stride
        first = plan.offset + self.streams.start * stride
        x = strided_windows(x_src, first, (nb, B, W), stride, W)
        y = None
        if lay.has_targets and lay.return_sequences:
            y = strided_windows(y_src, first + lay.shift, (nb, B, W), stride, W)
        elif lay.has_targets:
            y = strided_windows(y_src, first + lay.shift + W - 1, (nb, B, 1), stride, W)[:, :, 0]
        return x, y

    def read(self, window: Window, width: int | None = None) -> Batch:
        """Read the batch that ``window`` (one batch of a plan that is not packed) describes.

        Args:
            window: the windows of one batch.
            width: the steps of its windows, when the window lengths vary.
        """
        lay = self.layout
        series, start, length = window.series, window.start, window.length
        if width is None and self.varying:
            width = int(length.max())
        if width is None:
            W = lay.sequence_length
            full = bool(length.min() == W)
            weight = self._ones if full else (np.arange(W) < length[:, None]).astype(np.float32)
        else:
            W = width
            full = False
            weight = (np.arange(W) < length[:, None]).astype(np.float32)
        if lay.has_targets and lay.return_sequences and self._y_reader is self._x_reader:
            # x and y are windows of the same series `shift` steps apart: one gather into one
            # new array reads both (one allocation, not two, is also kinder to malloc).
            both = self._x_reader.read(
                np.concatenate((series, series)),
                np.concatenate((start, start + lay.shift)),
                np.concatenate((length, length)),
                full,
                width,
            )
            B = len(start)
            return Batch(both[:B], both[B:], weight, window.reset, series, start)
        x = self._x_reader.read(series, start, length, full, width)
        y = None
        if lay.has_targets and lay.return_sequences:
            y = self._y_reader.read(series, start + lay.shift, length, full, width)
        elif lay.has_targets:
            # The target of the window's last step, where that step is real.
            last = start + (lay.shift + W - 1)
            y = self._y_reader.read(series, last, (length == W).astype(np.int64), full)[:, 0]
            weight = weight[:, -1]
        return Batch(x, y, weight, window.reset, series, start)

    def _packed(self, plan: StreamPlan, k: int) -> Batch:
        """Batch ``k`` of a packed plan, with the per-step provenance and resets."""
        lay = self.layout
        pieces = plan.pieces(k, self.streams)
        steps = pieces.steps(self.batch_size, plan.length(k))
        full = bool(steps.series[:, -1].min() >= 0) and plan.schedule is None
        weight = self._ones if full else (steps.series >= 0).astype(np.float32)
        y = None
        if lay.has_targets and lay.return_sequences and self._y_reader is self._x_reader:
            x, y = self._x_reader.read_packed(pieces, steps, (0, lay.shift))
        else:
            (x,) = self._x_reader.read_packed(pieces, steps)
        if lay.has_targets and lay.return_sequences and y is None:
            (y,) = self._y_reader.read_packed(pieces, steps, (lay.shift,))
        elif lay.has_targets and not lay.return_sequences:
            last = steps.position[:, -1]
            held = (last >= 0).astype(np.int64)
            y = self._y_reader.read(steps.series[:, -1], last + lay.shift, held, False)[:, 0]
            weight = weight[:, -1]
        first = (steps.reset[:, 0], steps.series[:, 0], steps.position[:, 0])
        steps_of = (steps.reset, steps.series, steps.position)
        if plan.schedule is None:
            return Batch(x, y, weight, *first, *steps_of)
        return Batch(x, y, weight, *first, *steps_of, np.float64(plan.lr_scale(k)))
