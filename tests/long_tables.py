"""Long tables whose values encode their own series and step, and their reference series.

Series ``s`` (the ``s``-th id in sorted order) at step ``t`` holds, in feature column ``f{j}``,
``10_000 * s + 10 * t + j``: a wrong row, series or column cannot pass unnoticed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

FEATURES = ["f0", "f1", "f2"]


def ids_of(kind: str, count: int) -> list[Any]:
    """``count`` ids of ``kind``, listed in sorted order."""
    if kind == "int":
        return [-50 + 7 * s for s in range(count)]
    return [f"id-{s:04d}" for s in range(count)]  # "str" and "category"


def value(s: Any, t: Any, j: Any = 0) -> Any:
    """The encoded value of series ``s`` (sorted order), step ``t``, feature ``j``."""
    return 10_000 * np.asarray(s) + 10 * np.asarray(t) + np.asarray(j)


def reference(lengths: list[int], columns: int = len(FEATURES)) -> list[np.ndarray]:
    """The series as arrays ``(T_s, columns)`` float64, from the encoding alone."""
    return [
        value(s, np.arange(n)[:, None], np.arange(columns)[None]).astype(np.float64)
        for s, n in enumerate(lengths)
    ]


def long_table(
    lengths: list[int],
    *,
    id_kind: str = "str",
    time_kind: str = "int",
    shuffle_seed: int | None = 0,
) -> pa.Table:
    """The long table of series of ``lengths``: columns ``id``, ``t``, the features and
    ``target`` (``-value``), rows shuffled with ``shuffle_seed`` (None: in order)."""
    ids = ids_of(id_kind, len(lengths))
    s = np.repeat(np.arange(len(lengths)), lengths)
    t = np.concatenate([np.arange(n) for n in lengths])
    if time_kind == "datetime":
        times: Any = np.datetime64("2024-01-01T00:00:00", "s") + (900 * t).astype("timedelta64[s]")
    else:
        times = 3 * t + 100  # a grid of step 3 that starts at 100
    columns: dict[str, Any] = {"id": pa.array([ids[i] for i in s]), "t": pa.array(times)}
    if id_kind == "category":
        columns["id"] = columns["id"].dictionary_encode()
    for j, name in enumerate(FEATURES):
        columns[name] = pa.array(value(s, t, j).astype(np.float64))
    columns["target"] = pa.array(-value(s, t).astype(np.float64))
    table = pa.table(columns)
    if shuffle_seed is not None:
        table = table.take(np.random.default_rng(shuffle_seed).permutation(len(s)))
    return table


def as_kind(table: pa.Table, kind: str) -> Any:
    """``table`` as a pandas or polars DataFrame, or as it is (``"arrow"``)."""
    if kind == "pandas":
        return table.to_pandas()
    if kind == "polars":
        import polars as pl

        return pl.from_arrow(table)
    return table
