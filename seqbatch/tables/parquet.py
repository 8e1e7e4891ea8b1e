"""``StreamBatcher.from_parquet``: a long table in Parquet files, read row group by row group.

The layout it needs: **the rows of each series lie together, in time order**, in the files
taken in the dataset's order (a file may hold many series, and a series may run on from one
file into the next). Then series ``s`` is one range of rows ``[offsets[s], offsets[s + 1])``
of the files end to end, and a window is a range inside it: the batcher reads the row groups
that cover it and nothing else. Building the batcher reads only the series and time columns,
one row group at a time, to find where each series starts and to check the layout; memory is
then a few integers per series plus the row groups kept (:class:`RowGroups`). A table in
another order is refused, naming :func:`sort_parquet`, which writes it in this order once.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

import numpy as np

from seqbatch.tables.batcher import TableBatcher, TableInfo, table_batcher
from seqbatch.tables.columns import (
    Columns,
    as_ticks,
    choose,
    listed,
    refuse_missing,
    shown,
    step_text,
    time_values,
)
from seqbatch.tables.grid import GridCheck


def open_dataset(source: Any) -> Any:
    """``source`` as a ``pyarrow.dataset.Dataset`` of Parquet files (hive partitions read)."""
    import pyarrow.dataset as ds

    if isinstance(source, ds.FileSystemDataset):
        return source
    if isinstance(source, ds.Dataset):
        raise TypeError(
            "`source` must be Parquet files: a path, a directory or a dataset of files, whose "
            f"row groups can be read alone. Received: a {type(source).__name__}"
        )
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "`source` must be a path to a Parquet file or directory, or a "
            f"pyarrow.dataset.Dataset. Received: source of type {type(source).__name__}"
        )
    path = os.fspath(source)
    if not os.path.exists(path):
        raise ValueError(f"`source` must exist. Received: source={path!r}")
    return ds.dataset(path, format="parquet", partitioning="hive")


class RowGroups:
    """The row groups of a dataset's files end to end, read on demand; the last few kept.

    Each set of columns read together (the features, the targets) is kept as one block of
    ``(rows, columns)`` per row group, so that a window is one copy out of it.

    Args:
        dataset: a ``pyarrow.dataset.FileSystemDataset`` of Parquet files.
        columns: the columns that may be read from every row group.
        keep: how many decoded row groups to keep per set of columns (least recently used
            out first). A batch of ``B`` streams reads windows from up to ``2 * B`` row
            groups, which the next batch mostly reads again: keep at least that many.

    Attributes:
        starts: ``(G + 1,)`` the first row of each row group, then the number of rows.
        reads: how many row groups have been read and decoded so far (a measure of cost).
    """

    def __init__(self, dataset: Any, columns: list[str], keep: int) -> None:
        self.dataset = dataset
        self.columns = columns
        self.keep = keep
        where = []
        sizes = []
        for f, fragment in enumerate(dataset.get_fragments()):
            for g, group in enumerate(fragment.row_groups):
                where.append((f, g))
                sizes.append(group.num_rows)
        self.where = np.array(where, dtype=np.int64).reshape(-1, 2)
        self.starts = np.concatenate(([0], np.cumsum(sizes, dtype=np.int64)))
        self.reads = 0
        self._sets: set[tuple[tuple[str, ...], str]] = set()
        self._open()

    def _open(self) -> None:
        self._fragments = list(self.dataset.get_fragments())
        self._cache: OrderedDict[tuple[int, tuple[str, ...], str], np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_fragments", "_cache")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()

    def block(self, g: int, columns: tuple[str, ...], dtype: np.dtype) -> np.ndarray:
        """Row group ``g``'s ``columns`` as one read-only ``(rows, len(columns))`` array of
        ``dtype``, from the cache or the file."""
        key = (g, columns, np.dtype(dtype).str)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        f, i = self.where[g].tolist()
        fragment = self._fragments[f]
        # One row group is decoded fastest on this thread.
        table = fragment.subset(row_group_ids=[i]).to_table(
            schema=self.dataset.schema,
            columns=list(columns),
            use_threads=False,
            memory_pool=_pool(),
        )
        self.reads += 1
        refuse_missing(
            {c: table.column(c) for c in columns}, "source", f" in row group {i} of {fragment.path}"
        )
        out = np.empty((table.num_rows, len(columns)), dtype)
        for j, c in enumerate(columns):
            out[:, j] = table.column(c).to_numpy()
        out.flags.writeable = False
        self._sets.add(key[1:])
        self._cache[key] = out
        while len(self._cache) > self.keep * len(self._sets):
            self._cache.popitem(last=False)
        return out

    def read(self, columns: tuple[str, ...], dtype: np.dtype, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` of ``columns``, ``(stop - start, len(columns))``: a read-only
        view of the cache when they lie in one row group, else a new array."""
        g = int(np.searchsorted(self.starts, start, side="right")) - 1
        begin, end = int(self.starts[g]), int(self.starts[g + 1])
        if stop <= end:
            return self.block(g, columns, dtype)[start - begin : stop - begin]
        out = np.empty((stop - start, len(columns)), dtype)
        at = start
        while at < stop:
            begin, end = int(self.starts[g]), int(self.starts[g + 1])
            upto = min(stop, end)
            out[at - start : upto - start] = self.block(g, columns, dtype)[
                at - begin : upto - begin
            ]
            at = upto
            g += 1
        return out


class ParquetColumns:
    """Some columns of a Parquet dataset as one array ``(N, *features)`` that reads lazily.

    A slice reads the row groups under it alone. Series ``s`` of a
    :class:`~seqbatch.ragged.Ragged` over these columns is a range of rows not read yet (as
    for an h5py dataset), and a window of it reads the rows of the window.
    """

    def __init__(self, groups: RowGroups, spec: str | tuple[str, ...], dtype: np.dtype) -> None:
        self.groups = groups
        self.columns = tuple(listed(spec))
        self.flat = isinstance(spec, str)
        self.dtype = np.dtype(dtype)
        n = int(groups.starts[-1])
        self.shape: tuple[int, ...] = (n,) if self.flat else (n, len(self.columns))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> np.ndarray:
        """Rows ``key`` (a contiguous slice), read from their row groups (read-only)."""
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError(f"Parquet columns are read by contiguous slices. Received: {key!r}")
        start, stop, _ = key.indices(self.shape[0])
        if stop <= start:
            return np.empty((0, *self.shape[1:]), self.dtype)
        out = self.groups.read(self.columns, self.dtype, start, stop)
        return out[:, 0] if self.flat else out


class Times:
    """The time column of a dataset, read when asked for (by ``by_series_frame``)."""

    def __init__(self, dataset: Any, column: str) -> None:
        self.dataset, self.column = dataset, column

    def __call__(self) -> np.ndarray:
        table = self.dataset.to_table(columns=[self.column])
        return time_values(table.column(self.column), self.column, "source")


def _not_sorted(c: Columns, detail: str) -> ValueError:
    time = "" if c.time is None else f", time={c.time!r}"
    return ValueError(
        "`source` must hold the rows of each series together and in time order, so that a "
        f"window is a range of rows. Received: {detail} (write the table in that order once "
        f"with seqbatch.tables.sort_parquet(source, destination, series={c.series!r}{time}), "
        "then read the destination)"
    )


def index(dataset: Any, c: Columns) -> tuple[np.ndarray, np.ndarray, GridCheck | None]:
    """``(offsets, ids, grid)`` of the series, from the series and time columns alone."""
    import pyarrow as pa
    import pyarrow.compute as pc

    keys = [c.series, *([] if c.time is None else [c.time])]
    starts: list[np.ndarray] = []
    run_ids: list[Any] = []
    grid = None if c.time is None else GridCheck()
    last_id: Any = None
    last_tick = 0
    row = 0
    for fragment in dataset.get_fragments():
        # One batch at a time: read ahead, the scan would hold many of them at once.
        scan = fragment.to_batches(
            schema=dataset.schema,
            columns=keys,
            batch_readahead=0,
            use_threads=False,
            memory_pool=_pool(),
        )
        for batch in scan:
            if batch.num_rows == 0:
                continue
            refuse_missing({k: batch.column(k) for k in keys}, "source", f" in {fragment.path}")
            ids = batch.column(c.series)
            if pa.types.is_dictionary(ids.type):
                ids = ids.dictionary_decode()
            differ = pc.not_equal(ids[1:], ids[:-1]).to_numpy(zero_copy_only=False)
            first_new = last_id is None or ids[0].as_py() != last_id
            new = np.flatnonzero(np.concatenate(([first_new], differ)))
            base = sum(len(a) for a in starts)
            starts.append(new + row)
            run_ids.append(ids.take(pa.array(new)))
            if c.time is not None:
                assert grid is not None
                times = time_values(batch.column(c.time), c.time, "source")
                ticks = as_ticks(times)
                diff = np.diff(ticks, prepend=last_tick)
                same = np.ones(len(ticks), bool)
                same[new] = False
                bad = np.flatnonzero(same & (diff <= 0))
                if len(bad):
                    i = int(bad[0])
                    which = "repeats" if diff[i] == 0 else "goes back in"
                    raise _not_sorted(
                        c,
                        f"series {ids[i].as_py()!r} {which} time at {c.time}={shown(times, i)} "
                        f"(row {row + i} of the files end to end)",
                    )
                grid.add(
                    diff,
                    same,
                    row,
                    lambda at, b=base, n=new: b + np.searchsorted(n, at, "right") - 1,
                )
                last_tick = int(ticks[-1])
            last_id = ids[-1].as_py()
            row += batch.num_rows
    if row == 0:
        raise ValueError("`source` must hold at least one row. Received: no rows")
    all_ids = pa.concat_arrays([a.cast(run_ids[0].type) for a in run_ids])
    firsts = np.concatenate(starts)
    if len(pc.unique(all_ids)) != len(all_ids):
        encoded = pc.dictionary_encode(all_ids).indices.to_numpy()
        seen, first = np.unique(encoded, return_index=True)
        again = np.setdiff1d(np.arange(len(encoded)), first)[0]
        before = int(first[np.searchsorted(seen, encoded[again])])
        raise _not_sorted(
            c,
            f"the rows of series {all_ids[again].as_py()!r} start at row {int(firsts[before])} "
            f"and again at row {int(firsts[again])} of the files end to end",
        )
    offsets = np.concatenate((firsts, [row])).astype(np.int64)
    # Arrow's allocator keeps what the scan freed, which would grow with the files.
    pa.default_memory_pool().release_unused()
    return offsets, all_ids.to_numpy(zero_copy_only=False), grid


def from_parquet(
    source: Any,
    *,
    series: str,
    time: str | None = None,
    features: Any,
    targets: Any = "next",
    row_groups_kept: int | None = None,
    **kwargs: Any,
) -> TableBatcher:
    """The batcher of a long table in Parquet files; see
    :meth:`seqbatch.StreamBatcher.from_parquet`.

    Args:
        row_groups_kept: decoded row groups kept in memory; default twice the batch size
            (see :class:`RowGroups`). Memory is about this many row groups of the value
            columns: write files with small row groups (:func:`sort_parquet` writes 16,384
            rows) to keep it small.
        source, series, time, features, targets, kwargs: see ``StreamBatcher.from_parquet``.
    """
    import pyarrow as pa

    dataset = open_dataset(source)
    c = choose(series, time, features, targets, dataset.schema.names, "source")
    dtypes = c.dtypes(dataset.schema, "source")
    offsets, ids, grid = index(dataset, c)
    keep = row_groups_kept if row_groups_kept is not None else 2 * int(kwargs.get("batch_size", 32))
    value_columns = [n for n in c.needed() if n not in (c.series, c.time)]
    groups = RowGroups(dataset, value_columns, keep)
    gaps = None
    times = None
    if grid is not None and c.time is not None:
        # The time column's numpy dtype, from the schema: reading rows would read ahead.
        empty = pa.chunked_array([], type=dataset.schema.field(c.time).type)
        unit = time_values(empty, c.time, "source").dtype
        times = Times(dataset, c.time)
        gaps = grid.gaps(
            lambda row: f"row {row} of the files end to end", lambda s: step_text(s, unit)
        )
    return table_batcher(
        c,
        dtypes,
        offsets,
        lambda spec, dtype: ParquetColumns(groups, spec, dtype),
        TableInfo("arrow", c, ids, times, gaps),
        kwargs,
    )


def sort_parquet(
    source: Any,
    destination: Any,
    *,
    series: str,
    time: str | None = None,
    row_group_size: int = 16_384,
) -> None:
    """Write the table of ``source`` into one Parquet file in the order ``from_parquet`` reads.

    Rows are sorted by (series, time) (or by series alone, keeping their order, when ``time``
    is None) and written in row groups of ``row_group_size`` rows. The sort holds the table
    in memory: for a table larger than memory, split it by series first (each part holding
    whole series: Spark's ``repartition(series)``, or a hive partitioning by a hash of the
    id), sort each part with this function, and read the directory of sorted parts.

    Args:
        source: a Parquet file, a directory or a ``pyarrow.dataset.Dataset``.
        destination: the path of the file to write.
        series: the series-id column.
        time: the time column, or None.
        row_group_size: rows per row group: memory while reading is about
            ``2 * batch_size`` row groups of the value columns.

    Examples:
        >>> import os, tempfile, pyarrow as pa, pyarrow.parquet as pq, seqbatch
        >>> folder = tempfile.mkdtemp()
        >>> pq.write_table(pa.table({"id": [2, 1, 2, 1], "t": [1, 0, 0, 1], "y": [21, 10, 20, 11]}),
        ...                os.path.join(folder, "raw.parquet"))
        >>> seqbatch.tables.sort_parquet(os.path.join(folder, "raw.parquet"),
        ...     os.path.join(folder, "sorted.parquet"), series="id", time="t")
        >>> pq.read_table(os.path.join(folder, "sorted.parquet"))["y"].to_pylist()
        [10, 11, 20, 21]
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = open_dataset(source).to_table()
    names = [series, *([] if time is None else [time])]
    keys = {}
    for name in names:
        column = table.column(name)
        if pa.types.is_dictionary(column.type):  # categories: by the ids they hold
            column = column.cast(column.type.value_type)
        keys[name] = column
    order = pc.sort_indices(pa.table(keys), [(name, "ascending") for name in names])
    pq.write_table(table.take(order), os.fspath(destination), row_group_size=row_group_size)


def _pool() -> Any:
    """The Arrow memory pool of seqbatch's reads: the system allocator's.

    Each row group is decoded, copied into numpy and freed at once. Arrow's default pool
    (mimalloc or jemalloc) keeps much of what was freed, more over a longer epoch, so that an
    epoch's memory grew with the file's size; malloc hands the same blocks back for the next
    row group, and the epoch stays flat (docs/benchmarks.md, "Long tables and Parquet").
    """
    import pyarrow as pa

    return pa.system_memory_pool()
