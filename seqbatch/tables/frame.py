"""``StreamBatcher.from_frame``: a long pandas, polars or Arrow table, sorted into series.

The table is brought to Arrow (pandas and polars columns mostly without a copy), its ids are
dictionary-encoded and ranked, and one vectorised sort orders the rows by (series, time);
the value columns are then gathered once into one flat array in that order, cut by integer
offsets (:meth:`seqbatch.StreamBatcher.from_offsets`' form). No Python runs per series.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from seqbatch.tables.batcher import TableBatcher, TableInfo, table_batcher
from seqbatch.tables.columns import (
    Columns,
    as_ticks,
    choose,
    refuse_missing,
    shown,
    stacked,
    step_text,
    time_values,
)
from seqbatch.tables.grid import GridCheck


def arrow_source(frame: Any, what: str) -> tuple[str, list[str], Callable[[list[str]], Any]]:
    """``(kind, names, select)``: the frame's kind, its column names, and a function that
    gives some of its columns as a ``pyarrow.Table`` (pandas and polars convert only those)."""
    import pyarrow as pa

    module = type(frame).__module__.split(".")[0]
    if module == "pandas" and hasattr(frame, "columns"):
        return (
            "pandas",
            [str(c) for c in frame.columns],
            lambda cols: pa.Table.from_pandas(frame[cols], preserve_index=False),
        )
    if module == "polars" and hasattr(frame, "to_arrow"):
        return "polars", list(frame.columns), lambda cols: frame.select(cols).to_arrow()
    if isinstance(frame, (pa.Table, pa.RecordBatch)) or hasattr(frame, "__arrow_c_stream__"):
        table = frame if isinstance(frame, pa.Table) else pa.table(frame)
        return "arrow", list(table.column_names), table.select
    raise TypeError(
        f"`{what}` must be a pandas or polars DataFrame, a pyarrow Table, or an object with "
        f"__arrow_c_stream__. Received: {what} of type {type(frame).__name__}"
    )


def series_codes(column: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, ids)``: each row's series number (ids in sorted order) and the ids."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(array.type):
        indices, dictionary = array.indices, array.dictionary
    else:
        if pa.types.is_string_view(array.type):
            array = array.cast(pa.large_string())
        encoded = pc.dictionary_encode(array)
        indices, dictionary = encoded.indices, encoded.dictionary
    order = pc.sort_indices(dictionary).to_numpy()
    rank = np.empty(len(order), np.int32 if len(order) < 2**31 else np.int64)
    rank[order] = np.arange(len(order))
    codes = rank[indices.to_numpy()]
    # Categories that no row has (a pandas categorical keeps them) are no series.
    used = np.bincount(codes, minlength=len(order)) > 0
    if not used.all():
        codes = (np.cumsum(used) - 1)[codes]
        order = order[used[rank[order]]]
    ids = dictionary.take(pa.array(order)).to_numpy(zero_copy_only=False)
    # Arrow's allocator keeps what the encoding freed; it is a table's worth of memory.
    pa.default_memory_pool().release_unused()
    return codes, ids


def table_order(codes: np.ndarray, ticks: np.ndarray | None) -> np.ndarray | None:
    """The row order by (series, time); None when the rows are in it already.

    Without times the sort is stable: rows keep their order within a series.
    """
    if ticks is None:
        if (codes[1:] >= codes[:-1]).all():
            return None
        return np.argsort(codes, kind="stable")
    low = int(ticks.min())
    span = int(ticks.max()) - low + 1
    if span * (int(codes.max()) + 1) >= 2**62:
        order = np.lexsort((ticks, codes))
        return None if (np.diff(order) == 1).all() else order
    # One int64 key per row, made in place: (series, time) as one number.
    key = codes.astype(np.int64)
    key *= span
    key += ticks
    key -= low
    if (key[1:] >= key[:-1]).all():
        return None
    return np.argsort(key)  # a repeated key is refused after the sort, in whichever order


def check_times(
    codes: np.ndarray, times: np.ndarray, ids: np.ndarray, c: Columns, what: str
) -> GridCheck:
    """Refuse a repeated (series, time); return the grid's differences. Rows are sorted."""
    ticks = as_ticks(times)
    diff = np.diff(ticks, prepend=ticks[:1])
    same = np.diff(codes, prepend=-1) == 0
    again = same & (diff == 0)
    if again.any():
        i = int(np.argmax(again))
        rows = int(np.argmin(np.append(again[i:], False))) + 1
        raise ValueError(
            f"`{what}` must have one row per series and time: column {c.time!r} repeats a time "
            f"within a series. Received: {rows} rows with {c.series}={ids[codes[i]]!r} and "
            f"{c.time}={shown(times, i)}, {int(again.sum())} repeated rows in all (drop or "
            "aggregate the repeated rows first)"
        )
    del again
    grid = GridCheck()
    grid.add(diff, same, 0, lambda rows: codes[rows])
    return grid


def from_frame(
    frame: Any,
    *,
    series: str,
    time: str | None = None,
    features: Any,
    targets: Any = "next",
    **kwargs: Any,
) -> TableBatcher:
    """The batcher of a long table; see :meth:`seqbatch.StreamBatcher.from_frame`."""
    kind, names, select = arrow_source(frame, "frame")
    c = choose(series, time, features, targets, names, "frame")
    table = select(c.needed())
    dtypes = c.dtypes(table.schema, "frame")
    refuse_missing({name: table.column(name) for name in c.needed()}, "frame")
    codes, ids = series_codes(table.column(c.series))
    times = None if c.time is None else time_values(table.column(c.time), c.time, "frame")
    order = table_order(codes, None if times is None else as_ticks(times))

    def column(name: str) -> np.ndarray:
        values = table.column(name).to_numpy()
        return values if order is None else values[order]

    if order is not None:
        codes = codes[order]
    gaps = None
    if times is not None:
        times = times if order is None else times[order]
        grid = check_times(codes, times, ids, c, "frame")
        where = lambda row: f"series {ids[codes[row]]!r} at {c.time}={shown(times, row)}"  # noqa: E731
        gaps = grid.gaps(where, lambda step: step_text(step, times.dtype))
    offsets = np.concatenate(([0], np.cumsum(np.bincount(codes, minlength=len(ids)))))
    return table_batcher(
        c,
        dtypes,
        offsets,
        lambda spec, dtype: stacked(column, spec, len(codes), dtype),
        TableInfo(kind, c, ids, times, gaps),
        kwargs,
    )
