"""The batcher of a long table: a :class:`~seqbatch.StreamBatcher` that knows its ids and times."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from seqbatch.batcher import StreamBatcher
from seqbatch.ragged import Ragged
from seqbatch.source import ShiftedTargets
from seqbatch.tables.columns import Columns, listed
from seqbatch.tables.grid import Gaps


@dataclass
class TableInfo:
    """What a table batcher keeps of its table besides the values.

    Attributes:
        kind: ``"pandas"``, ``"polars"`` or ``"arrow"``: what :meth:`TableBatcher.by_series_frame`
            returns.
        columns: the column choice.
        ids: ``(S,)`` the id of each series, in the order of the series.
        times: ``(N,)`` the time of every row, series after series (None without a time
            column), or a function that reads them (from Parquet files, where they are not
            kept in memory).
        gaps: the time grid's gaps, None without a time column.
    """

    kind: str
    columns: Columns
    ids: np.ndarray
    times: np.ndarray | Callable[[], np.ndarray] | None
    gaps: Gaps | None


class TableBatcher(StreamBatcher):
    """A :class:`~seqbatch.StreamBatcher` over a long table, made by ``from_frame`` or
    ``from_parquet``: the same batches, with the table's ids and times.

    ``batch.series`` indexes :attr:`series_ids`: ``batches.series_ids[batch.series]`` are the
    ids of the rows of a batch (an idle row has series -1: mask it with ``batch.series >= 0``).
    """

    _table: TableInfo

    @property
    def series_ids(self) -> np.ndarray:
        """``(S,)`` the id of series ``s`` at ``[s]``: strings, integers or categories."""
        return self._table.ids

    @property
    def gaps(self) -> Gaps | None:
        """The points missing from the time grid inside series (None without ``time``)."""
        return self._table.gaps

    def times(self) -> np.ndarray | None:
        """``(N,)`` the time of every row, series after series; None without ``time``."""
        times = self._table.times
        return times() if callable(times) else times

    def describe(self, *, ranks: int | None = None) -> str:
        """:meth:`seqbatch.StreamBatcher.describe`, with the table's ids and time grid.

        Examples:
            >>> import warnings, pandas as pd, seqbatch
            >>> frame = pd.DataFrame({"id": ["b"] * 4 + ["a"] * 5, "t": [0, 1, 2, 4] + list(range(5)),
            ...                       "y": range(9)})
            >>> with warnings.catch_warnings(record=True) as caught:  # it warns of the gap
            ...     batches = seqbatch.StreamBatcher.from_frame(
            ...         frame, series="id", time="t", features="y", batch_size=2, sequence_length=2)
            >>> len(caught)
            1
            >>> print(batches.describe().splitlines()[-1])
            time: column 't', grid step 1: 1 points missing in 1 series (first: series 'b' at t=4); the model takes consecutive rows for consecutive steps
        """
        info = self._table
        c = info.columns
        dtype = info.ids.dtype if info.ids.dtype != object else type(info.ids[0]).__name__
        lines = [
            super().describe(ranks=ranks),
            f"table: {len(info.ids)} series ids ({dtype}) from column {c.series!r}; "
            f"features {listed(c.features)}",
        ]
        if c.time is not None:
            lines.append(f"time: column {c.time!r}, {info.gaps}")
        return "\n".join(lines)

    def by_series_frame(self, outputs: Any, names: Any = None) -> Any:
        """Model outputs over this epoch's batches as a table keyed by series id and time.

        :meth:`seqbatch.StreamBatcher.by_series`, one row per input step that has an output (steps no
        window fed are left out), in the order of the series and of time. The row of time
        ``t`` holds the model's output at that input step: with ``targets="next"``, its
        prediction of the step after ``t``.

        Args:
            outputs: as for :func:`seqbatch.outputs.by_series`.
            names: the names of the output columns: one name per output value. Default:
                the target columns' names when the outputs have their shape, else
                ``output``, ``output_1``, ...

        Returns:
            A frame of the kind the batcher was built from (pandas, polars; a
            ``pyarrow.Table`` from Arrow or Parquet), with the series column, the time
            column (when there is one) and the output columns.
        """
        import pyarrow as pa

        parts = self.by_series(outputs)
        data = np.ma.concatenate(parts) if len(parts) > 1 else parts[0]
        flat = np.asarray(data.data).reshape(len(data), -1)
        held = ~np.asarray(np.ma.getmaskarray(data)).reshape(len(data), -1).any(axis=1)
        c = self._table.columns
        lengths = [len(p) for p in parts]
        codes = np.repeat(np.arange(len(lengths)), lengths)[held]
        columns: dict[str, Any] = {c.series: pa.array(self._table.ids[codes])}
        times = self.times()
        if times is not None and c.time is not None:
            columns[c.time] = pa.array(times[held])
        for name, values in zip(
            _output_names(self, names, flat.shape[1]), flat[held].T, strict=True
        ):
            columns[name] = values
        table = pa.table(columns)
        if self._table.kind == "pandas":
            return table.to_pandas()
        if self._table.kind == "polars":
            import polars as pl

            return pl.from_arrow(table)
        return table


def _output_names(batches: TableBatcher, names: Any, count: int) -> list[str]:
    """The output columns' names: ``names``, the targets' when they fit, or numbered."""
    if names is not None:
        given = [names] if isinstance(names, str) else list(names)
        if len(given) != count:
            raise ValueError(
                f"`names` must give one name per output value. Received: {len(given)} names "
                f"for outputs of {count} values per step"
            )
        return given
    c = batches._table.columns
    target = listed(c.target_columns if c.target_columns is not None else c.features)
    if len(target) == count:
        return target
    return ["output"] + [f"output_{i}" for i in range(1, count)]


def table_batcher(
    c: Columns,
    dtypes: tuple[np.dtype, np.dtype | None],
    offsets: np.ndarray,
    values: Callable[[str | tuple[str, ...], np.dtype], Any],
    info: TableInfo,
    kwargs: dict[str, Any],
) -> TableBatcher:
    """The batcher of a long table, for ``from_frame`` and ``from_parquet`` alike.

    ``values(columns, dtype)`` gives those columns of every row, series after series, as an
    array ``(N, *features)`` (in memory, or read lazily); ``offsets`` cut it into series.
    Warns of gaps in the time grid.
    """
    x_dtype, y_dtype = dtypes
    core: Any = c.core_targets()
    if c.target_columns is not None:
        assert y_dtype is not None
        y = Ragged(values(c.target_columns, y_dtype), offsets)
        core = y if c.shift == 0 else ShiftedTargets(c.shift, y)
    batches = TableBatcher(Ragged(values(c.features, x_dtype), offsets), core, **kwargs)
    batches._table = info
    gaps = info.gaps
    if gaps is not None and (gaps.missing or gaps.off_grid):
        warnings.warn(
            f"The times of column {info.columns.time!r} are not all consecutive points of "
            f"one grid: {gaps}. Fill the missing points (reindex "
            "each series on its grid and interpolate), or cut the series at its gaps (one id "
            "per stretch) if they should not be joined.",
            UserWarning,
            stacklevel=4,  # the caller of StreamBatcher.from_frame or from_parquet
        )
    return batches
