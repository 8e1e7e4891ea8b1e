"""StreamBatcher: numpy batches in which row ``i`` of batch ``k + 1`` continues row ``i`` of batch ``k``."""

from __future__ import annotations

import copy
import numbers
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from seqbatch import _checks
from seqbatch import burn_in as _burn_in
from seqbatch import lengths as _lengths
from seqbatch import state as _state
from seqbatch.batch import Batch
from seqbatch.cursor import Cursor
from seqbatch.ends import SeriesEnd, series_end
from seqbatch.outputs import by_series
from seqbatch.plan import Align, Layout, StreamPlan, Window
from seqbatch.ragged import Ragged, gathered, lengths_of, open_ragged
from seqbatch.source import (
    Joined,
    open_series,
    open_series_list,
    open_targets,
    parse_targets,
)
from seqbatch.view import EpochView, LayoutSpec

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    import seqbatch.tables


class StreamBatcher:
    """Batches for stateful RNNs: row ``i`` of batch ``k + 1`` continues row ``i`` of batch ``k``.

    One series is cut into ``batch_size`` contiguous streams. A list of series is dealt onto
    the streams whole, longest first onto the least loaded stream, each series starting on a
    window boundary with its stream's ``reset`` flag set (``series_boundary="reset"``), or
    dealt the same way by steps and packed end to end in each stream, a series starting at
    any step of a window with a per-step flag (``series_boundary="pack"``), or joined end to
    end into one series that is then cut into streams (``series_boundary="concat"``). Batch
    ``k`` is a pure function of the data, the arguments, the seed, the epoch and ``k``; only
    the windows it holds are read.

    Args:
        data: one series ``(T, *features)`` or a list or tuple of series with the same feature
            shape and dtype. A series is a numpy array, an ``np.memmap``, a path to a ``.npy``
            file (opened as a memmap), a torch or TensorFlow tensor in host memory (read in
            place) or anything with ``shape``, ``dtype`` and slicing (h5py, zarr); other
            array-likes go through ``np.asarray``. A list of arrays in memory is held as one
            array, so that every batch is one gather: in place when they are slices of one
            array that lie end to end (``np.split`` makes them so), else copied once into
            one. Many series already end to end: :meth:`from_offsets`.
        targets: ``None`` (no ``y``), ``"next"`` (the next step: the same as ``1``), an int
            ``k >= 1`` (the step ``k`` ahead; the last ``k`` steps of each series have no target),
            or target arrays with the structure of ``data`` and the same number of steps.
        batch_size: number of parallel streams, the rows of every batch.
        sequence_length: steps per window (the truncated-BPTT length): an int, or a pure
            callable ``(epoch, k) -> int`` giving the steps of batch ``k`` of each epoch, such
            as the schedules of :mod:`seqbatch.lengths` (``seqbatch.lengths.awd(bptt=70)``).
            The windows of a stream are then cut at the cumulative sums of the lengths, an
            epoch has as many batches as its streams need (``len()`` says it for the current
            epoch), and each batch carries its ``lr_scale``. See the guide "Window lengths".
        return_sequences: ``True``: ``y`` holds the target of every step, ``(B, W, *t)``.
            ``False``: the target of each window's last step, ``(B, *t)``.
        remainder: ``"drop"`` (default): steps after the last full window are left out and
            counted in ``plan.accounting.dropped`` (packed: after each stream's last full
            window, so that every window is full or idle). ``"pad"``: they fill a last window
            that ends in padding of weight 0.
        align: ``"start"`` (default): each series' windows start at its first step, so that
            ``remainder="drop"`` leaves out its newest steps. ``"end"``: the last window ends
            at the last step that has a target, and the steps left over are the oldest ones
            (counted in ``plan.accounting.before_offset``): what a forecaster wants, to end
            training on the most recent data. Needs ``remainder="drop"``; not with
            ``series_boundary="pack"``.
        series_boundary: ``"reset"`` (default), ``"pack"`` or ``"concat"``; see above. Packed
            batches also carry ``step_reset``, ``step_series`` and ``step_position``.
        shuffle: draw a new layout for every epoch (``set_epoch``): which stream holds which
            series and in what order, and for one series the offset at which it is cut into
            windows, from 0 to ``sequence_length - 1``. To give every offset the same number
            of batches, a shuffled epoch of one series lays out ``sequence_length - 1`` steps
            fewer than the series holds, and may then have one batch fewer than an
            unshuffled one (the steps left out are counted in ``plan.accounting``).
            ``describe()`` says what varies. Windows are never shuffled: continuity holds
            within every epoch.
        seed: seed of the shuffle, an int in ``[0, 2**63)``; None draws one at construction.
        burn_in: ``b >= 0`` steps in front of every window: the steps right before it in its
            series, weight 0, flagged in ``batch.burn_in`` (fewer, after padding, where the
            window starts fewer than ``b`` steps into its series). For training without a
            carried state, or from a stale stored one; each row's state starts at its first
            real step. See :mod:`seqbatch.burn_in`. Not with ``series_boundary="pack"``, nor
            ``"concat"`` of several series.

    Raises:
        TypeError: an argument of the wrong type, or data that is not numeric.
        ValueError: a value out of range, ragged or empty data, targets that do not match the
            data, or data too short to fill ``batch_size`` streams.

    Examples:
        One series of 12 steps whose value is its step, 2 streams, windows of 3 steps:

        >>> import numpy as np, seqbatch
        >>> batches = seqbatch.StreamBatcher(
        ...     np.arange(12), targets="next", batch_size=2, sequence_length=3
        ... )
        >>> len(batches)
        1
        >>> b = batches[0]
        >>> b.x.tolist(), b.y.tolist(), b.reset.tolist()
        ([[0, 1, 2], [3, 4, 5]], [[1, 2, 3], [4, 5, 6]], [True, True])

        Stream 1 continues in the next batch where it stopped:

        >>> batches = seqbatch.StreamBatcher(
        ...     np.arange(13), targets="next", batch_size=2, sequence_length=3
        ... )
        >>> [b.x.tolist() for b in batches]
        [[[0, 1, 2], [6, 7, 8]], [[3, 4, 5], [9, 10, 11]]]

        Series of unequal lengths, each starting a stream with a reset:

        >>> data = [np.arange(6), 100 + np.arange(3), 200 + np.arange(3)]
        >>> batches = seqbatch.StreamBatcher(
        ...     data, targets=None, batch_size=2, sequence_length=3
        ... )
        >>> [(b.x.tolist(), b.reset.tolist()) for b in batches]
        [([[0, 1, 2], [100, 101, 102]], [True, True]), ([[3, 4, 5], [200, 201, 202]], [False, True])]

        The same series packed: series 2 follows series 1 in stream 1 with no gap, flagged
        at the step where it starts:

        >>> data = [np.arange(6), 100 + np.arange(2), 200 + np.arange(4)]
        >>> batches = seqbatch.StreamBatcher(
        ...     data, targets=None, batch_size=2, sequence_length=3, series_boundary="pack"
        ... )
        >>> [(b.x.tolist(), b.step_reset.astype(int).tolist()) for b in batches]
        [([[0, 1, 2], [100, 101, 200]], [[1, 0, 0], [1, 0, 1]]), ([[3, 4, 5], [201, 202, 203]], [[0, 0, 0], [0, 0, 0]])]
    """

    def __init__(
        self,
        data: Any,
        targets: Any = "next",
        *,
        batch_size: int = 32,
        sequence_length: int = 100,
        return_sequences: bool = True,
        remainder: Literal["drop", "pad"] = "drop",
        align: Align = "start",
        series_boundary: Literal["reset", "concat", "pack"] = "reset",
        shuffle: bool = False,
        seed: int | None = None,
        burn_in: int = 0,
    ) -> None:
        batch_size = _checks.positive_int("batch_size", batch_size)
        self.sequence_length = _lengths.check("sequence_length", sequence_length)
        self.return_sequences = _checks.boolean("return_sequences", return_sequences)
        _checks.one_of("remainder", remainder, ("drop", "pad"))
        _checks.one_of("series_boundary", series_boundary, ("reset", "concat", "pack"))
        self.remainder = remainder
        _checks.one_of("align", align, ("start", "end"))
        self.align = align
        self.series_boundary = series_boundary
        self.shuffle = _checks.boolean("shuffle", shuffle)
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        seed = _checks.seed("seed", seed)
        self.shift, target_data = parse_targets(targets)

        series: Sequence[Any]
        target_series: Sequence[Any] | None = None
        if isinstance(data, Ragged):  # from_offsets: opened and checked there
            series, single = data, False
            if isinstance(target_data, Ragged):
                target_series, target_data = target_data, None
        else:
            series, single = open_series_list(data, "data")
        if target_data is not None:
            target_series = gathered(open_targets(target_data, list(series), single))
        series = gathered(series)
        self.n_series = len(series)
        self.burn_in = _burn_in.check(burn_in, series_boundary, len(series))
        if series_boundary == "concat" and len(series) > 1:
            series = [Joined(series)]
            if target_series is not None:
                target_series = [Joined(target_series)]
        lengths = lengths_of(series) - self.shift
        if lengths.min() < 1:
            i = int(np.argmin(lengths))
            raise ValueError(
                f"Every series must be longer than `targets` steps ahead, or no step has a "
                f"target. Received: targets={self.shift}, but series {i} has "
                f"{int(series[i].shape[0])} steps"
            )
        layout: Layout = (
            "split"
            if len(series) == 1 and (single or series_boundary == "concat")
            else ("pack" if series_boundary == "pack" else "whole")
        )
        spec = LayoutSpec(
            lengths=lengths,
            layout=layout,
            streams_total=batch_size,
            sequence_length=self.sequence_length,
            remainder=remainder,
            align=align,
            shift=self.shift,
            shuffle=self.shuffle,
            return_sequences=self.return_sequences,
            has_targets=self.shift > 0 or target_series is not None,
            packed=series_boundary == "pack",
            burn_in=self.burn_in,
        )
        targets_from = series if target_series is None else target_series
        self._view = EpochView(series, targets_from, spec, seed, slice(0, batch_size))
        self._view.plan(0)  # laid out now: data that cannot fill the streams is refused here
        self._cursor = Cursor()

    @classmethod
    def from_offsets(
        cls,
        values: Any,
        offsets: Any = None,
        targets: Any = "next",
        *,
        lengths: Any = None,
        **kwargs: Any,
    ) -> StreamBatcher:
        """The batcher of many series held end to end in one array, cut by integer offsets.

        Series ``s`` is ``values[offsets[s]:offsets[s + 1]]``: a tokenized corpus, a log of
        episodes, a long table sorted by series. Nothing is copied and no object is made per
        series, so a million documents build in a fraction of a second; every batch is one
        gather from ``values`` (a memory map is read only where the batch lies). The batches
        are those of the list of the same series: ``StreamBatcher(list_of_series, ...)``.

        Args:
            values: ``(N, *features)``: an array, an ``np.memmap``, a ``.npy`` path (opened as
                a memory map) or anything with ``shape``, ``dtype`` and slicing.
            offsets: ``(S + 1,)`` integers from 0 to ``N``, strictly increasing.
            targets: as for :class:`StreamBatcher` (``None``, ``"next"``, steps ahead), or a
                second flat array ``(N, *target_features)`` on the same offsets.
            lengths: ``(S,)`` positive integers adding up to ``N``, instead of ``offsets``.
            **kwargs: the keyword arguments of :class:`StreamBatcher`.

        Raises:
            ValueError: neither or both of ``offsets`` and ``lengths``, offsets that leave
                steps out or make an empty series, target arrays of another length, and the
                errors of :class:`StreamBatcher`.

        Examples:
            Documents that end with an end-of-document token (99 here), end to end:

            >>> import numpy as np, seqbatch
            >>> tokens = np.array([5, 6, 99, 7, 8, 9, 99, 3, 99])
            >>> offsets = np.r_[0, np.flatnonzero(tokens == 99) + 1]
            >>> offsets.tolist()
            [0, 3, 7, 9]
            >>> batches = seqbatch.StreamBatcher.from_offsets(
            ...     tokens, offsets, targets=None, batch_size=2, sequence_length=2,
            ...     remainder="pad")
            >>> [(b.x.tolist(), b.reset.tolist()) for b in batches]
            [([[5, 6], [7, 8]], [True, True]), ([[99, 0], [9, 99]], [False, False]), ([[3, 99], [0, 0]], [True, False])]

            Episodes given by their lengths, with a target array on the same steps:

            >>> obs, reward = np.arange(6), np.arange(6) * 10
            >>> batches = seqbatch.StreamBatcher.from_offsets(
            ...     obs, targets=reward, lengths=[2, 4], batch_size=2, sequence_length=2)
            >>> b = batches[0]
            >>> b.x.tolist(), b.y.tolist()
            ([[2, 3], [0, 1]], [[20, 30], [0, 10]])
        """
        series = open_ragged(values, offsets, lengths, "values")
        if not (targets is None or isinstance(targets, (str, numbers.Number))):
            steps = open_series(targets, "targets")
            if steps.shape[0] != series.values.shape[0]:
                raise ValueError(
                    "`targets` must have as many steps as `values` when given as an array: "
                    f"it is cut by the same offsets. Received: targets of {steps.shape[0]} "
                    f"steps for values of {series.values.shape[0]}"
                )
            targets = Ragged(steps, series.offsets)
        return cls(series, targets, **kwargs)

    @classmethod
    def from_frame(
        cls,
        frame: Any,
        *,
        series: str,
        time: str | None = None,
        features: Any,
        targets: Any = "next",
        **kwargs: Any,
    ) -> seqbatch.tables.TableBatcher:
        """The batcher of a long table: one row per (series, time), rows in any order.

        A pandas or polars DataFrame, a pyarrow Table, or anything with
        ``__arrow_c_stream__``. The rows are ordered by (series, time) with one vectorised
        sort (or kept in their order within a series when ``time`` is None), the value
        columns gathered once into one flat array, and the batches are those of
        :meth:`from_offsets` on it. Needs ``pip install "seqbatch[tables]"``. See the guide
        "Tables and Parquet".

        Args:
            frame: the table.
            series: the series-id column: strings, integers or categories. Series are
                numbered in the sorted order of their ids; ``batch.series`` indexes
                ``batches.series_ids``.
            time: the time column (integers, dates or datetimes), or None.
            features: the input columns: one name (no feature axis) or a list (``(T, n)``).
            targets: ``None``, ``"next"`` or ``k`` (steps ahead of the features), target
                column names (aligned: the value at the same row), or
                ``seqbatch.tables.ahead(columns, steps=1)`` (those columns ``steps`` rows
                later).
            **kwargs: the keyword arguments of :class:`StreamBatcher`.

        Returns:
            A :class:`seqbatch.tables.TableBatcher`.

        Raises:
            ValueError: a column that is missing, a missing value (null or NaN) in a column
                used, a time repeated within a series, and the errors of
                :class:`StreamBatcher`.
            TypeError: a non-numeric value column, or times that are not integers or dates.

        Examples:
            >>> import pandas as pd, seqbatch
            >>> frame = pd.DataFrame({"id": ["b", "a", "b", "a", "a", "b"],
            ...                       "t": [1, 1, 0, 0, 2, 2], "y": [11, 1, 10, 0, 2, 12]})
            >>> batches = seqbatch.StreamBatcher.from_frame(
            ...     frame, series="id", time="t", features="y", targets=None,
            ...     batch_size=2, sequence_length=3)
            >>> b = batches[0]
            >>> b.x.tolist(), batches.series_ids[b.series].tolist()
            ([[0, 1, 2], [10, 11, 12]], ['a', 'b'])
        """
        from seqbatch.tables import from_frame

        return from_frame(
            frame, series=series, time=time, features=features, targets=targets, **kwargs
        )

    @classmethod
    def from_parquet(
        cls,
        source: Any,
        *,
        series: str,
        time: str | None = None,
        features: Any,
        targets: Any = "next",
        **kwargs: Any,
    ) -> seqbatch.tables.TableBatcher:
        """The batcher of a long table in Parquet files, read lazily, row group by row group.

        A file, a directory of files or a ``pyarrow.dataset.Dataset``. Only the series and
        time columns are read at construction, to index the series; a batch then reads the
        row groups its windows cover, keeping the last few. The rows of a series must lie
        together and in time order (``seqbatch.tables.sort_parquet`` writes such a file).
        The arguments are those of :meth:`from_frame`, and ``row_groups_kept``: how many
        decoded row groups to keep (default ``2 * batch_size``, see
        :class:`seqbatch.tables.parquet.RowGroups`).

        Returns:
            A :class:`seqbatch.tables.TableBatcher` that pickles as the files' paths.
        """
        from seqbatch.tables import from_parquet

        return from_parquet(
            source, series=series, time=time, features=features, targets=targets, **kwargs
        )

    def __copy__(self) -> StreamBatcher:
        # The same view (data, readers, plans), and a cursor of its own.
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other._cursor = copy.copy(self._cursor)
        return other

    @property
    def view(self) -> EpochView:
        """The pure part of this batcher: batch ``k`` of any epoch, reading moves nothing.

        What adapters read, with ``(epoch, k)`` keys; see :mod:`seqbatch.view`.
        """
        return self._view

    @property
    def batch_size(self) -> int:
        """The number of streams, the rows of every batch (of this shard, on a shard)."""
        return self._view.batch_size

    @property
    def seed(self) -> int:
        """The seed of the shuffle (the one of a restored state after ``load_state_dict``)."""
        return self._view.seed

    @property
    def packed(self) -> bool:
        """Whether series lie end to end in each stream (``series_boundary="pack"``)."""
        return self._view.packed

    @property
    def plan(self) -> StreamPlan:
        """The layout of the current epoch (all streams, also on a shard)."""
        return self._view.plan(self._cursor.epoch)

    def plan_at(self, epoch: int) -> StreamPlan:
        """The layout of ``epoch``, whatever epoch this batcher stands at; moves nothing."""
        return self._view.plan(_checks.non_negative_int("epoch", epoch))

    def batch_at(self, epoch: int, k: int) -> Batch:
        """Batch ``k`` of ``epoch``, whatever epoch this batcher stands at; moves nothing.

        A pure function of the data, the arguments, the seed, ``epoch`` and ``k``: what the
        torch, grain and tf.data adapters read.

        Examples:
            >>> import numpy as np, seqbatch
            >>> batches = seqbatch.StreamBatcher(np.arange(50), batch_size=2, sequence_length=4,
            ...                                  shuffle=True, seed=1)
            >>> ahead = batches.batch_at(2, 0)
            >>> batches.set_epoch(2)
            >>> (batches[0].x == ahead.x).all(), batches.batch_at(0, 0).position.tolist()
            (np.True_, [1, 21])
        """
        return self._view.batch(_checks.non_negative_int("epoch", epoch), k)

    @property
    def epoch(self) -> int:
        """The epoch set last by :meth:`set_epoch` (or :meth:`load_state_dict`); 0 at first.

        With ``shuffle=True`` the batches follow its layout; otherwise every epoch has the
        same batches, and the number only counts epochs (``plan.epoch`` stays 0).
        """
        return self._cursor.epoch

    @property
    def streams(self) -> range:
        """The streams of :attr:`plan` that this batcher yields (all but on a shard)."""
        return range(self._view.streams.start, self._view.streams.stop)

    @property
    def sources(self) -> Sequence[Any]:
        """The series the windows are read from: one per series of :attr:`plan`.

        With ``series_boundary="concat"`` that is one :class:`seqbatch.source.Joined`.
        """
        return self._view.sources

    @property
    def target_sources(self) -> Sequence[Any]:
        """The series ``y`` is read from: :attr:`sources` itself for steps-ahead targets."""
        return self._view.target_sources

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """The shape of one step of ``x``."""
        return tuple(self.sources[0].shape[1:])

    @property
    def target_shape(self) -> tuple[int, ...] | None:
        """The shape of one step of ``y``, or None without targets."""
        has = self._view.layout.has_targets
        return tuple(self.target_sources[0].shape[1:]) if has else None

    @property
    def dtype(self) -> np.dtype:
        """The dtype of ``x`` (the data's, never cast)."""
        return np.dtype(self.sources[0].dtype)

    @property
    def target_dtype(self) -> np.dtype | None:
        """The dtype of ``y``, or None without targets."""
        has = self._view.layout.has_targets
        return np.dtype(self.target_sources[0].dtype) if has else None

    @property
    def in_memory(self) -> bool:
        """True when all data is in numpy arrays that are not memory-mapped files."""
        sources = [*_arrays_of(self.sources), *_arrays_of(self.target_sources)]
        return all(type(s) is np.ndarray for s in sources)

    def set_epoch(self, epoch: int) -> None:
        """Lay out the batches of ``epoch``; changes them only when ``shuffle=True``.

        Another epoch than the current one starts iteration over at batch 0; the current
        one keeps the position that :meth:`load_state_dict` restored.

        Args:
            epoch: a non-negative int. The same epoch always gives the same batches.
        """
        self._cursor.set_epoch(_checks.non_negative_int("epoch", epoch))

    def shard(self, index: int, count: int) -> StreamBatcher:
        """The batcher of worker ``index`` of ``count``: streams ``[index*B/count, (index+1)*B/count)``.

        Shards of one batcher are disjoint, their union is the whole batch, and they share
        the number of batches. The shard keeps this batcher's epoch; call ``set_epoch`` on it.

        Args:
            index: this worker, ``0 <= index < count``.
            count: the number of workers; it must divide the batch size.

        Returns:
            A :class:`StreamBatcher` of batch size ``batch_size // count``.

        Examples:
            >>> import numpy as np, seqbatch
            >>> batches = seqbatch.StreamBatcher(np.arange(16), None, batch_size=4, sequence_length=2)
            >>> batches[0].x.tolist()
            [[0, 1], [4, 5], [8, 9], [12, 13]]
            >>> batches.shard(1, 2)[0].x.tolist()
            [[8, 9], [12, 13]]
        """
        count = _checks.positive_int("count", count)
        index = _checks.non_negative_int("index", index)
        if index >= count:
            raise ValueError(
                f"`index` must be less than `count`. Received: index={index}, count={count}"
            )
        if self.batch_size % count:
            raise ValueError(
                "`count` must divide the batch size, so that every worker gets as many "
                f"streams. Received: count={count} for batch_size={self.batch_size}"
            )
        shard = copy.copy(self)
        shard._view = self._view.shard(index, count)
        return shard

    def __len__(self) -> int:
        # The batches of the current epoch: the same in every epoch unless the lengths vary.
        return self._view.n_batches(self._cursor.epoch)

    @property
    def varying(self) -> bool:
        """Whether the window lengths vary (``sequence_length`` is a callable)."""
        return self._view.varying

    def fixed_length(self, use: str) -> int:
        """The int ``sequence_length``, for ``use``, which needs one window length; else raise.

        Raises:
            ValueError: the window lengths vary (``sequence_length`` is a callable).

        Examples:
            >>> import numpy as np, seqbatch
            >>> seqbatch.StreamBatcher(np.arange(20), batch_size=2, sequence_length=3).fixed_length("x")
            3
        """
        if not _lengths.is_schedule(self.sequence_length):
            return int(self.sequence_length)  # type: ignore[arg-type]
        raise ValueError(
            f"`sequence_length` must be an int for {use}, which needs every window of one "
            "length. Received: sequence_length="
            f"{_lengths.describe(self.sequence_length)}, whose window lengths vary"
        )

    @overload
    def __getitem__(self, k: int) -> Batch: ...

    @overload
    def __getitem__(self, k: slice) -> list[Batch]: ...

    def __getitem__(self, k: int | slice) -> Batch | list[Batch]:
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        return self._view.batch(self._cursor.epoch, k)

    def __iter__(self) -> Iterator[Batch]:
        epoch = self._cursor.epoch
        return (self._view.batch(epoch, k) for k in self._cursor.walk(len(self)))

    @property
    def resume_batch(self) -> int:
        """The batch that every pass over this epoch starts at: 0 unless restored.

        After :meth:`load_state_dict`, the saved batch, until a pass hands over the epoch's
        last batch or :meth:`set_epoch` moves to another epoch. A pass left before its end (a
        peek with ``next(iter(batches))``, a loop that breaks) keeps it: the next pass starts
        at the saved batch again. The torch sampler follows the same rule, and the torch and
        JAX adapters built on a restored batcher start there.

        Examples:
            >>> import numpy as np, seqbatch
            >>> batches = seqbatch.StreamBatcher(np.arange(80), batch_size=2, sequence_length=4)
            >>> len(batches)
            9
            >>> batches.load_state_dict(batches.state_dict(next_batch=6))
            >>> int(next(iter(batches)).position[0]), batches.resume_batch  # a peek
            (24, 6)
            >>> [int(b.position[0]) for b in batches], batches.resume_batch
            ([24, 28, 32], 0)
        """
        return self._cursor.resume_at

    def state_dict(
        self, *, epoch: int | None = None, next_batch: int | None = None
    ) -> dict[str, Any]:
        """Where a loop over this batcher stands, for a checkpoint: see :mod:`seqbatch.state`.

        ``{"epoch", "next_batch", "seed", "fingerprint"}``: the batch that comes next (the one
        after the last batch that iteration handed over; after an epoch's last batch, batch
        0 of the next epoch), the seed of the shuffle, and a fingerprint of the data and
        the arguments. Plain ints, bools and strings: JSON keeps it.

        Args:
            epoch: the epoch to record instead of :attr:`epoch`.
            next_batch: the batch that comes next in that epoch, instead of where iteration
                over this batcher stands: for loops that read the batches through an
                adapter (a torch ``DataLoader``, a grain pipeline), which know it. At most
                ``len(self)``, which means the epoch is over.

        Returns:
            A new dict.

        Raises:
            ValueError: ``next_batch`` is greater than ``len(self)``.

        Examples:
            >>> import numpy as np, seqbatch
            >>> batches = seqbatch.StreamBatcher(np.arange(40), batch_size=2, sequence_length=4)
            >>> for b in batches:
            ...     if b.position[0] == 4:  # batch 1 trained on: save
            ...         saved = batches.state_dict()
            >>> saved["epoch"], saved["next_batch"]
            (0, 2)
            >>> other = seqbatch.StreamBatcher(np.arange(40), batch_size=2, sequence_length=4)
            >>> other.load_state_dict(saved)
            >>> [b.position.tolist() for b in other]
            [[8, 24], [12, 28]]
        """
        if epoch is not None:
            epoch = _checks.non_negative_int("epoch", epoch)
        if next_batch is not None:
            next_batch = _checks.non_negative_int("next_batch", next_batch)
            n = self._view.n_batches(self._cursor.epoch if epoch is None else epoch)
            if next_batch > n:
                # Past the end is never the next epoch's batch: a wrong count of the loop's.
                raise ValueError(
                    "`next_batch` must be at most the number of batches per epoch (that "
                    "number itself means the epoch is over). Received: "
                    f"next_batch={next_batch} for {n} batches"
                )
        return _state.state_dict(
            self,
            self._cursor.epoch if epoch is None else epoch,
            self._cursor.next_batch if next_batch is None else next_batch,
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Go on where :meth:`state_dict` was taken: its epoch, seed, and next batch.

        Every pass over the saved epoch starts at the saved batch (:attr:`resume_batch`)
        until one hands over the epoch's last batch; later passes start at batch 0, as after
        any epoch. :meth:`set_epoch` with the saved epoch keeps that position, so a loop of
        ``set_epoch(e)`` then ``for b in batches`` resumes as it is, also after a peek at
        the first batch. Random access (``batches[k]``) is not affected.

        Args:
            state_dict: a dict from :meth:`state_dict` of a batcher built on the same data
                with the same arguments (the seed may differ: the saved one is taken).

        Raises:
            ValueError: ``state_dict`` is not such a dict, or its fingerprint differs from
                this batcher's (other data, sizes or arguments); the differences are named.
        """
        epoch, next_batch, seed = _state.check_state(self, state_dict)
        if seed != self.seed:
            self._view = self._view.with_seed(seed)
        self._cursor.restore(epoch, next_batch)

    def by_series(self, outputs: Any) -> list[np.ma.MaskedArray]:
        """Model outputs over this epoch's batches, back in per-series arrays in time order.

        See :func:`seqbatch.outputs.by_series`.
        """
        return by_series(self, outputs)

    def series_end(self, series: int) -> SeriesEnd:
        """Where series ``series`` ends in this epoch's batches: the batch, stream and step.

        See :func:`seqbatch.ends.series_end`.
        """
        return series_end(self, series)

    def batch(self, window: Window) -> Batch:
        """Read the batch that ``window`` (one batch of :attr:`plan`) describes.

        Raises:
            ValueError: with ``series_boundary="pack"``, whose windows hold several pieces:
                read ``batches[k]`` instead.
        """
        if self.packed:
            raise ValueError(
                "`window` must belong to a plan that is not packed: a packed window holds "
                "several runs of steps. Received: a window of series_boundary='pack' batches "
                "(read batches[k] instead)"
            )
        batch = self._view.read(window)
        return _burn_in.prefixed(self._view, batch) if self.burn_in else batch

    def describe(self, *, ranks: int | None = None) -> str:
        """Say how the data is laid out in streams and where every step went.

        Args:
            ranks: a number of ranks (it must divide the plan's batch size) to add a line on
                how evenly they share the work: the real steps of the most and the least
                loaded rank's streams, as :meth:`shard` deals them (see
                :func:`seqbatch.balance.rank_balance`).

        Examples:
            >>> import numpy as np, seqbatch
            >>> print(seqbatch.StreamBatcher(np.zeros((105, 3)), batch_size=4, sequence_length=5).describe())
            data: 1 series, x (4, 5, 3) float64, y (4, 5, 3) float64
            layout: one series cut into contiguous streams (epoch 0)
            batches: 5 of 4 streams x 5 steps; resets: 4
            steps: 105 in the data = 100 used + 1 without target + 0 before the offset + 4 dropped (remainder='drop')
            padding: 0 of 100 batch slots (0.0%)
            >>> print(seqbatch.StreamBatcher([np.zeros(n) for n in (30, 20, 13, 10, 9, 3)],
            ...       batch_size=4, sequence_length=5, series_boundary="pack",
            ...       remainder="pad").describe(ranks=2).splitlines()[-1])
            ranks: 2 of 2 streams each; real steps per rank: most 48, least 31 (most / least 1.548387)
        """
        head = f"data: {self.n_series} series, {self._arrays()}"
        plan, streams = self.plan, self.streams
        if self.batch_size != plan.batch_size:
            head += f"\nshard: streams {streams.start} to {streams.stop - 1} of {plan.batch_size}"
        text = head + "\n" + plan.describe()
        if ranks is not None:
            from seqbatch.balance import rank_balance

            text += "\n" + rank_balance(plan, ranks).describe()
        return text

    def __repr__(self) -> str:
        shard = ""
        total = self._view.layout.streams_total
        if self.batch_size != total:
            shard = f", streams [{self.streams.start}, {self.streams.stop}) of {total}"
        return (
            f"StreamBatcher({self.n_series} series, {len(self)} batches of {self._arrays()}, "
            f"epoch {self.epoch}{', shuffled' if self.shuffle else ''}{shard})"
        )

    def _arrays(self) -> str:
        """The shapes and dtypes of ``x`` and ``y`` in every batch, in words."""
        B, W = self.batch_size, self.plan.sequence_length
        steps: Any = W
        if self.varying:  # windows of every length of the epoch's
            L = self.plan.window_lengths
            steps = f"{int(L.min())} to {int(L.max())}"
        if self.burn_in:  # the burn-in columns, then the window's
            steps = f"{self.burn_in} + {steps}"

        def shape(*dims: Any) -> str:
            return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"

        y = "none"
        if self._view.layout.has_targets:
            t_shape = (B, steps) if self.return_sequences else (B,)
            y = f"{shape(*t_shape, *(self.target_shape or ()))} {self.target_dtype}"
        return f"x {shape(B, steps, *self.feature_shape)} {self.dtype}, y {y}"

    def to_tf_dataset(self, **kwargs: Any) -> tf.data.Dataset:
        """A ``tf.data.Dataset`` of these batches, in the same order; see :func:`seqbatch.tf.to_dataset`."""
        from seqbatch.tf import to_dataset

        return to_dataset(self, **kwargs)

    def to_keras_sequence(self, **kwargs: Any) -> keras.utils.PyDataset:
        """A ``keras.utils.PyDataset`` of these batches; see :class:`seqbatch.keras.StreamSequence`."""
        from seqbatch.keras import StreamSequence

        return StreamSequence(self, **kwargs)


def _arrays_of(sources: Any) -> list[Any]:
    """The arrays that hold ``sources``: a :class:`Ragged`'s one, or each series."""
    return [sources.values] if isinstance(sources, Ragged) else list(sources)
