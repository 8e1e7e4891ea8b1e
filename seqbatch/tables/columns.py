"""The columns of a long table: which ones, their checks, and what the time column says.

A long table has one row per (series, time): a series-id column, an optional time column and
value columns. These helpers take Arrow arrays (:mod:`pyarrow`, imported by the caller) and
return numpy arrays; they are shared by :func:`seqbatch.tables.from_frame` and
:func:`seqbatch.tables.from_parquet`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Ahead:
    """Target columns read ``steps`` rows ahead of the inputs, in the same series.

    Made by :func:`ahead`; see there.
    """

    columns: str | tuple[str, ...]
    steps: int = 1


def ahead(columns: str | Sequence[str], steps: int = 1) -> Ahead:
    """``targets=ahead("y")``: the target of a step is column ``y`` at the **next** step.

    ``targets="y"`` is column ``y`` at the same step (aligned targets); ``targets="next"`` is
    the next step of the feature columns themselves. ``ahead`` is the third case: other
    columns than the features, ``steps`` rows later in the same series, so that the last
    ``steps`` rows of every series have no target (as with ``targets="next"``).

    Args:
        columns: one column name (``y`` has no feature axis) or a list of them (``(T, n)``).
        steps: how many rows ahead, at least 1.

    Returns:
        An ``Ahead``, to pass as ``targets``.

    Examples:
        >>> ahead("y")
        Ahead(columns='y', steps=1)
        >>> ahead(["y", "z"], steps=3)
        Ahead(columns=('y', 'z'), steps=3)
    """
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"`steps` must be a positive integer. Received: steps={steps!r}")
    return Ahead(names("columns", columns), int(steps))


def names(argument: str, given: Any) -> str | tuple[str, ...]:
    """A column name, or a non-empty tuple of distinct names, or an error naming ``argument``."""
    if isinstance(given, str):
        return given
    if isinstance(given, Sequence) and given and all(isinstance(c, str) for c in given):
        if len(set(given)) != len(given):
            raise ValueError(
                f"`{argument}` must name each column once. Received: {argument}={list(given)!r}"
            )
        return tuple(given)
    raise TypeError(
        f"`{argument}` must be a column name or a non-empty list of column names. "
        f"Received: {argument}={given!r}"
    )


def listed(spec: str | tuple[str, ...]) -> list[str]:
    """The names of a column spec, as a list."""
    return [spec] if isinstance(spec, str) else list(spec)


@dataclass(frozen=True)
class Columns:
    """The checked column choice of a long table.

    Attributes:
        series: the series-id column.
        time: the time column, or None (rows keep their order within a series).
        features: the input columns: one name (no feature axis) or a tuple (``(T, n)``).
        target_columns: target columns, or None for steps-ahead targets of the features.
        shift: how many rows ahead the targets are read (0: aligned target columns).
    """

    series: str
    time: str | None
    features: str | tuple[str, ...]
    target_columns: str | tuple[str, ...] | None
    shift: int

    def needed(self) -> list[str]:
        """Every column read, each once: ids, time, features, targets."""
        out = [self.series, *([] if self.time is None else [self.time])]
        for c in listed(self.features) + listed(self.target_columns or ()):
            if c not in out:
                out.append(c)
        return out

    def core_targets(self) -> Any:
        """What the batcher's ``targets`` becomes without target columns: None or steps."""
        return None if self.shift == 0 else self.shift

    def dtypes(self, schema: Any, what: str) -> tuple[np.dtype, np.dtype | None]:
        """The numpy dtypes of the features and of the target columns (None without), from
        an Arrow ``schema``; an error naming the first column that holds no numbers."""
        x = numeric(schema, listed(self.features), what)
        if self.target_columns is None:
            return x, None
        return x, numeric(schema, listed(self.target_columns), what)


def choose(
    series: Any, time: Any, features: Any, targets: Any, available: Sequence[str], what: str
) -> Columns:
    """Check the column arguments against the ``available`` columns of ``what``."""
    if not isinstance(series, str):
        raise TypeError(f"`series` must be a column name. Received: series={series!r}")
    if time is not None and not isinstance(time, str):
        raise TypeError(f"`time` must be a column name or None. Received: time={time!r}")
    feats = names("features", features)
    target_columns: str | tuple[str, ...] | None = None
    if targets is None:
        shift = 0
    elif isinstance(targets, Ahead):
        target_columns, shift = targets.columns, targets.steps
    elif isinstance(targets, str) and targets != "next":
        target_columns, shift = targets, 0
    elif isinstance(targets, (list, tuple)):
        target_columns, shift = names("targets", targets), 0
    elif targets == "next":
        shift = 1
    elif (
        isinstance(targets, numbers.Integral) and not isinstance(targets, bool) and int(targets) > 0
    ):
        shift = int(targets)
    else:
        raise ValueError(
            "`targets` must be None, 'next', a positive integer (steps ahead of the features), "
            "target column names, or seqbatch.tables.ahead(columns, steps). "
            f"Received: targets={targets!r}"
        )
    chosen = Columns(series, time, feats, target_columns, shift)
    for c in chosen.needed():
        if c not in available:
            raise ValueError(
                f"`{what}` must have every column named in `series`, `time`, `features` and "
                f"`targets`. Received: no column {c!r} among {list(available)!r}"
            )
    keys = [series, *([] if time is None else [time])]
    for c in listed(feats) + listed(target_columns or ()):
        if c in keys:
            raise ValueError(
                "`features` and `targets` must not name the series or time column. "
                f"Received: {c!r} among them"
            )
    if time == series:
        raise ValueError(f"`time` must be another column than `series`. Received: {time!r}")
    return chosen


def missing(column: Any) -> int:
    """Null or NaN entries of an Arrow array or chunked array."""
    import pyarrow as pa
    import pyarrow.compute as pc

    count = int(column.null_count)
    if pa.types.is_floating(column.type):
        count += int(pc.sum(pc.is_nan(column)).as_py() or 0)
    return count


def refuse_missing(columns: dict[str, Any], what: str, where: str = "") -> None:
    """Raise if any of ``columns`` (name -> Arrow array) holds a null or a NaN."""
    for name, column in columns.items():
        count = missing(column)
        if count:
            raise ValueError(
                f"`{what}` must have no missing values: the model would train on them. "
                f"Received: column {name!r} with {count} missing (null or NaN) values{where} "
                "(fill them, or drop those rows)"
            )


def numeric(schema: Any, cols: list[str], what: str) -> np.dtype:
    """The common numpy dtype of numeric columns ``cols`` of an Arrow ``schema``, or an error
    naming the first other."""
    import pyarrow as pa

    types = []
    for c in cols:
        t = schema.field(c).type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
            raise TypeError(
                f"`{what}` must hold numbers in the feature and target columns. Received: "
                f"column {c!r} of type {t}"
            )
        types.append(np.dtype(t.to_pandas_dtype()))
    return np.result_type(*types)


def stacked(
    read: Callable[[str], np.ndarray], spec: str | tuple[str, ...], rows: int, dtype: np.dtype
) -> np.ndarray:
    """Columns side by side, ``(N, n)``; one column given by name alone stays ``(N,)``.

    ``read(name)`` gives one column: they are read one at a time, so that no more than one
    is held beside the result.
    """
    if isinstance(spec, str):
        return np.ascontiguousarray(read(spec), dtype=dtype)
    out = np.empty((rows, len(spec)), dtype)
    for j, name in enumerate(spec):
        out[:, j] = read(name)
    return out


def time_values(column: Any, name: str, what: str) -> np.ndarray:
    """A time column as numpy: int64 or datetime64; other types refused."""
    import pyarrow as pa

    t = column.type
    if not (pa.types.is_integer(t) or pa.types.is_timestamp(t) or pa.types.is_date(t)):
        raise TypeError(
            f"`{what}` must have integer, date or datetime times. Received: column {name!r} "
            f"of type {t}"
        )
    if pa.types.is_timestamp(t) and t.tz is not None:
        column = column.cast(pa.timestamp(t.unit))  # UTC instants, compared as such
    values = column.to_numpy()
    return values if values.dtype.kind == "M" else values.astype(np.int64, copy=False)


def as_ticks(times: np.ndarray) -> np.ndarray:
    """int64 ticks of int or datetime64 times, for differences."""
    return times.view(np.int64) if times.dtype.kind == "M" else times


def shown(times: np.ndarray, i: int) -> str:
    """Element ``i`` of ``times`` as users wrote it: an int or an ISO datetime."""
    value = times[i]
    return str(value) if times.dtype.kind == "M" else str(int(value))


def step_text(step: int, dtype: np.dtype) -> str:
    """A time step in words: ``1 day``, ``15 minutes``, or ``3`` for integer times."""
    if dtype.kind != "M":
        return str(step)
    unit, count = np.datetime_data(dtype)
    span = np.array(step * count, dtype=f"timedelta64[{unit}]")
    ns = int(span.astype("timedelta64[ns]").astype(np.int64))
    for name, size in (("day", 86_400 * 10**9), ("hour", 3_600 * 10**9), ("minute", 60 * 10**9)):
        if ns % size == 0:
            n = ns // size
            return f"{n} {name}{'s' if n != 1 else ''}"
    return f"{ns / 1e9:g} s"
