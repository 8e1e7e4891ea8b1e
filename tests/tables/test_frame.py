"""``StreamBatcher.from_frame``: a long table, rows in any order, as the batches of its series."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

import seqbatch
from seqbatch.tables import ahead
from tests.long_tables import (
    FEATURES,
    as_kind,
    ids_of,
    long_table,
    reference,
    value,
)
from tests.same import assert_same_batches

KW = {"batch_size": 3, "sequence_length": 4}


@given(
    lengths=st.lists(st.integers(5, 30), min_size=3, max_size=12),
    id_kind=st.sampled_from(["str", "int", "category"]),
    time_kind=st.sampled_from(["int", "datetime"]),
    frame_kind=st.sampled_from(["pandas", "polars", "arrow"]),
    boundary=st.sampled_from(["reset", "pack", "concat"]),
    seed=st.integers(0, 2**16),
)
def test_shuffled_rows_give_the_batches_of_the_sorted_series(
    lengths: list[int], id_kind: str, time_kind: str, frame_kind: str, boundary: str, seed: int
) -> None:
    table = long_table(lengths, id_kind=id_kind, time_kind=time_kind, shuffle_seed=seed)
    kw = {**KW, "remainder": "pad", "series_boundary": boundary}
    batches = seqbatch.StreamBatcher.from_frame(
        as_kind(table, frame_kind), series="id", time="t", features=FEATURES, **kw
    )
    assert_same_batches(batches, seqbatch.StreamBatcher(reference(lengths), **kw))
    ids = ids_of(id_kind, len(lengths))
    assert [str(i) for i in batches.series_ids] == [str(i) for i in ids]
    if boundary != "concat":
        for b in batches:
            held = b.series >= 0
            # The ids named by batch.series are those the values encode.
            s = b.x[held, 0, 0] // 10_000
            assert [str(i) for i in batches.series_ids[b.series[held]]] == [
                str(ids[int(k)]) for k in s
            ]


class ArrowStream:
    """A table of another library: it speaks only the Arrow C stream interface."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    def __arrow_c_stream__(self, requested_schema: object = None) -> object:
        return self._table.__arrow_c_stream__(requested_schema)


def test_any_table_that_speaks_the_arrow_c_stream_interface() -> None:
    lengths = [7, 12, 5]
    table = long_table(lengths, shuffle_seed=4)
    batches = seqbatch.StreamBatcher.from_frame(
        ArrowStream(table), series="id", time="t", features=FEATURES, **KW
    )
    assert_same_batches(batches, seqbatch.StreamBatcher(reference(lengths), **KW))
    assert batches.series_ids.tolist() == ids_of("str", 3)
    out = batches.by_series_frame(np.concatenate([b.x for b in batches]))
    assert isinstance(out, pa.Table)  # an Arrow table back
    with pytest.raises(TypeError) as err:
        seqbatch.StreamBatcher.from_frame([1, 2], series="id", features="f0", **KW)
    assert str(err.value) == (
        "`frame` must be a pandas or polars DataFrame, a pyarrow Table, or an object with "
        "__arrow_c_stream__. Received: frame of type list"
    )


def test_rows_keep_their_order_within_a_series_without_time() -> None:
    table = long_table([5, 3, 4], shuffle_seed=None)
    # Series interleaved, each in its own order: only the order of the series changes.
    step = np.concatenate([np.arange(5), np.arange(3), np.arange(4)])
    order = np.argsort(step, kind="stable")
    frame = table.take(order).drop_columns(["t"]).to_pandas()
    batches = seqbatch.StreamBatcher.from_frame(
        frame, series="id", features=FEATURES, targets=None, batch_size=3, sequence_length=3
    )
    assert_same_batches(
        batches,
        seqbatch.StreamBatcher(reference([5, 3, 4]), None, batch_size=3, sequence_length=3),
    )


def test_one_column_by_name_has_no_feature_axis() -> None:
    frame = long_table([6, 7]).to_pandas()
    batches = seqbatch.StreamBatcher.from_frame(
        frame, series="id", time="t", features="f1", batch_size=2, sequence_length=3
    )
    assert batches.feature_shape == ()
    expected = [s[:, 1] for s in reference([6, 7])]
    assert_same_batches(batches, seqbatch.StreamBatcher(expected, batch_size=2, sequence_length=3))


@pytest.mark.parametrize("boundary", ["reset", "pack", "concat"])
def test_targets_columns_aligned_and_ahead(boundary: str) -> None:
    lengths = [9, 5, 7, 12]
    frame = long_table(lengths, shuffle_seed=3).to_pandas()
    kw = {**KW, "series_boundary": boundary, "remainder": "pad"}
    aligned = seqbatch.StreamBatcher.from_frame(
        frame, series="id", time="t", features=FEATURES, targets="target", **kw
    )
    later = seqbatch.StreamBatcher.from_frame(
        frame, series="id", time="t", features=FEATURES, targets=ahead("target", 2), **kw
    )
    for batches, shift in ((aligned, 0), (later, 2)):
        assert batches.target_shape == ()
        for b in batches:
            real = b.sample_weight > 0
            series = b.step_series if boundary == "pack" else np.repeat(b.series[:, None], 4, 1)
            position = b.step_position if boundary == "pack" else b.position[:, None] + np.arange(4)
            if boundary == "concat":
                # One series joined end to end: a target `shift` steps on may be in the next.
                joined = np.concatenate([-value(s, np.arange(n)) for s, n in enumerate(lengths)])
                expected = joined[np.where(real, position + shift, 0)]
            else:  # -value of its own series, `shift` steps on
                expected = -value(series, position + shift)
            np.testing.assert_array_equal(b.y[real], expected[real])
    # Steps ahead keep the last `shift` steps of each series out (of the joined one for
    # "concat"), as targets="next" does.
    series = 1 if boundary == "concat" else len(lengths)
    assert later.plan.accounting.no_target == 2 * series


def test_next_step_of_the_features() -> None:
    frame = long_table([8, 6]).to_pandas()
    batches = seqbatch.StreamBatcher.from_frame(
        frame, series="id", time="t", features=FEATURES, targets=3, batch_size=2, sequence_length=2
    )
    listed = seqbatch.StreamBatcher(reference([8, 6]), 3, batch_size=2, sequence_length=2)
    assert_same_batches(batches, listed)


def missing_frames() -> dict[str, object]:
    table = long_table([4, 4])
    nan = table.to_pandas()
    nan.loc[[2, 5], "f1"] = np.nan
    null = table.set_column(
        table.column_names.index("f2"), "f2", pa.array([None, *table["f2"].to_pylist()[1:]])
    )
    polars_nan = pl.from_arrow(table).with_columns(
        pl.when(pl.col("t") == 103).then(float("nan")).otherwise(pl.col("f0")).alias("f0")
    )
    return {"pandas NaN": nan, "arrow null": null, "polars NaN": polars_nan}


@pytest.mark.parametrize("case", ["pandas NaN", "arrow null", "polars NaN"])
def test_missing_values_are_refused_naming_the_column(case: str) -> None:
    frame = missing_frames()[case]
    column, count = {"pandas NaN": ("f1", 2), "arrow null": ("f2", 1), "polars NaN": ("f0", 2)}[
        case
    ]
    with pytest.raises(ValueError) as err:
        seqbatch.StreamBatcher.from_frame(frame, series="id", time="t", features=FEATURES, **KW)
    assert str(err.value) == (
        "`frame` must have no missing values: the model would train on them. Received: "
        f"column {column!r} with {count} missing (null or NaN) values (fill them, or drop "
        "those rows)"
    )


def test_a_repeated_time_is_refused_naming_the_time_column() -> None:
    frame = long_table([4, 5], time_kind="datetime", shuffle_seed=None).to_pandas()
    frame = pd.concat([frame, frame.iloc[[3]]]).sample(frac=1, random_state=0)
    with pytest.raises(ValueError) as err:
        seqbatch.StreamBatcher.from_frame(frame, series="id", time="t", features=FEATURES, **KW)
    assert str(err.value) == (
        "`frame` must have one row per series and time: column 't' repeats a time within a "
        "series. Received: 2 rows with id='id-0000' and t=2024-01-01T00:45:00, 1 repeated "
        "rows in all (drop or aggregate the repeated rows first)"
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"features": ["f0", "nope"]},
            ValueError,
            "`frame` must have every column named in `series`, `time`, `features` and "
            "`targets`. Received: no column 'nope' among ['id', 't', 'f0', 'f1', 'f2', 'target']",
        ),
        (
            {"features": ["id"]},
            ValueError,
            "`features` and `targets` must not name the series or time column. Received: 'id' "
            "among them",
        ),
        (
            {"targets": 0},
            ValueError,
            "`targets` must be None, 'next', a positive integer (steps ahead of the features), "
            "target column names, or seqbatch.tables.ahead(columns, steps). Received: targets=0",
        ),
        (
            {"features": []},
            TypeError,
            "`features` must be a column name or a non-empty list of column names. Received: "
            "features=[]",
        ),
    ],
)
def test_column_arguments_are_checked(kwargs: dict, error: type, message: str) -> None:
    frame = long_table([4, 4]).to_pandas()
    args = {"series": "id", "time": "t", "features": FEATURES, **kwargs}
    with pytest.raises(error) as err:
        seqbatch.StreamBatcher.from_frame(frame, **args, **KW)
    assert str(err.value) == message


def test_text_values_and_float_times_are_refused() -> None:
    frame = long_table([4, 4]).to_pandas()
    frame["name"] = "x"
    with pytest.raises(TypeError, match=r"column 'name' of type (large_)?string"):
        seqbatch.StreamBatcher.from_frame(frame, series="id", features=["name"], **KW)
    frame["t"] = frame["t"] + 0.5
    with pytest.raises(TypeError, match=r"integer, date or datetime times\. Received: column 't'"):
        seqbatch.StreamBatcher.from_frame(frame, series="id", time="t", features=FEATURES, **KW)


def test_gaps_in_the_time_grid_are_reported() -> None:
    frame = long_table([10, 10, 10], time_kind="datetime", shuffle_seed=None).to_pandas()
    # Series 1 misses 2 points of its 15-minute grid after its third row, series 2 one.
    frame = frame.drop(index=[13, 14, 25]).sample(frac=1, random_state=1)
    with pytest.warns(UserWarning, match="3 points missing in 2 series"):
        batches = seqbatch.StreamBatcher.from_frame(
            frame, series="id", time="t", features=FEATURES, **KW
        )
    gaps = batches.gaps
    assert (gaps.step, gaps.missing, gaps.series, gaps.off_grid) == ("15 minutes", 3, 2, 0)
    assert batches.describe().splitlines()[-1] == (
        "time: column 't', grid step 15 minutes: 3 points missing in 2 series (first: series "
        "'id-0001' at t=2024-01-01T01:15:00); the model takes consecutive rows for "
        "consecutive steps"
    )


def test_no_gap_no_warning() -> None:
    frame = long_table([10, 12]).to_pandas()
    batches = seqbatch.StreamBatcher.from_frame(
        frame, series="id", time="t", features=FEATURES, batch_size=2, sequence_length=3
    )
    assert str(batches.gaps) == "on a regular grid of step 3, with no gap"


@pytest.mark.parametrize("frame_kind", ["pandas", "polars", "arrow"])
def test_outputs_come_back_keyed_by_id_and_time(frame_kind: str) -> None:
    lengths = [9, 5, 7]
    table = long_table(lengths, id_kind="int")
    batches = seqbatch.StreamBatcher.from_frame(
        as_kind(table, frame_kind), series="id", time="t", features=FEATURES, **KW
    )
    outputs = np.concatenate([b.x for b in batches])  # the inputs as outputs
    out = batches.by_series_frame(outputs)
    assert type(out).__module__.split(".")[0] == {"arrow": "pyarrow"}.get(frame_kind, frame_kind)
    got = pa.table(out) if frame_kind != "polars" else out.to_arrow()
    assert got.column_names == ["id", "t", *FEATURES]
    ids = ids_of("int", 3)
    s = np.array([ids.index(i) for i in got["id"].to_pylist()])
    t = (np.asarray(got["t"]) - 100) // 3
    for j, name in enumerate(FEATURES):
        np.testing.assert_array_equal(np.asarray(got[name]), value(s, t, j))
    # Every step that was an input is there once; the rest is not.
    used = batches.plan.accounting.used
    assert len(got) == used and len(set(zip(s.tolist(), t.tolist(), strict=True))) == used


def test_pickles_and_resumes_on_a_new_shuffle_of_the_same_table() -> None:
    frame = long_table([30, 14, 22, 9], id_kind="category").to_pandas()
    build = lambda f: seqbatch.StreamBatcher.from_frame(  # noqa: E731
        f, series="id", time="t", features=FEATURES, batch_size=2, sequence_length=3
    )
    batches = build(frame)
    again = pickle.loads(pickle.dumps(batches))
    assert_same_batches(batches, again)
    assert list(again.series_ids) == list(batches.series_ids)
    for k, _ in enumerate(batches):
        if k == 4:
            saved = batches.state_dict()
    other = build(frame.sample(frac=1, random_state=7))
    other.load_state_dict(saved)
    assert [b.position.tolist() for b in other] == [
        batches[k].position.tolist() for k in range(5, len(batches))
    ]


def test_import_seqbatch_loads_no_table_library() -> None:
    code = (
        "import sys, numpy as np, seqbatch\n"
        "seqbatch.StreamBatcher(np.arange(20.0), batch_size=2, sequence_length=3)[0]\n"
        "seqbatch.tables.ahead('y')  # loaded on first use, without its libraries\n"
        "print([m for m in ('pandas', 'polars', 'pyarrow') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
