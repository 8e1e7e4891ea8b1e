"""``StreamBatcher.from_parquet``: Parquet files read lazily, row group by row group."""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import seqbatch
from seqbatch.tables import ahead, sort_parquet
from tests.long_tables import FEATURES, ids_of, long_table, reference, value
from tests.same import assert_same_batches

LENGTHS = [40, 17, 63, 25, 31, 52]
KW = {"batch_size": 3, "sequence_length": 5}


def sorted_files(folder: Path, table: pa.Table, files: int = 3, rows: int = 8) -> Path:
    """``table`` sorted by (id, t), cut into ``files`` files of row groups of ``rows`` rows:
    series run on from one file into the next."""
    folder.mkdir()
    ids = table["id"]
    if pa.types.is_dictionary(ids.type):  # Arrow sorts no dictionary: by the ids it holds
        ids = ids.cast(ids.type.value_type)
    keys = pa.table({"id": ids, "t": table["t"]})
    table = table.take(pc.sort_indices(keys, [("id", "ascending"), ("t", "ascending")]))
    cuts = np.linspace(0, len(table), files + 1).astype(int)
    for i in range(files):
        part = table.slice(cuts[i], cuts[i + 1] - cuts[i])
        pq.write_table(part, folder / f"part-{i}.parquet", row_group_size=rows)
    return folder


def build(source: object, **kwargs: object) -> seqbatch.tables.TableBatcher:
    args = {"series": "id", "time": "t", "features": FEATURES, **KW, **kwargs}
    return seqbatch.StreamBatcher.from_parquet(source, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize("boundary", ["reset", "pack", "concat"])
@pytest.mark.parametrize("targets", ["next", "target", "ahead"])
def test_batches_are_those_of_the_series_in_memory(
    tmp_path: Path, boundary: str, targets: str
) -> None:
    folder = sorted_files(tmp_path / "data", long_table(LENGTHS, id_kind="int"))
    given = ahead("target") if targets == "ahead" else targets
    kw = {"series_boundary": boundary, "remainder": "pad"}
    batches = build(folder, targets=given, **kw)
    frame = seqbatch.StreamBatcher.from_frame(
        long_table(LENGTHS, id_kind="int"),
        series="id",
        time="t",
        features=FEATURES,
        targets=given,
        **KW,
        **kw,
    )
    assert_same_batches(batches, frame)
    if targets == "next":
        listed = seqbatch.StreamBatcher(reference(LENGTHS), **KW, **kw)  # type: ignore[arg-type]
        assert_same_batches(batches, listed)
    assert batches.series_ids.tolist() == frame.series_ids.tolist()


@settings(max_examples=12)
@given(
    lengths=st.lists(st.integers(6, 30), min_size=3, max_size=8),
    id_kind=st.sampled_from(["str", "int", "category"]),
    time_kind=st.sampled_from(["int", "datetime"]),
    files=st.integers(1, 3),
    rows=st.integers(3, 40),
    boundary=st.sampled_from(["reset", "pack", "concat"]),
)
def test_files_of_any_cut_give_the_batches_of_the_series(
    lengths: list[int], id_kind: str, time_kind: str, files: int, rows: int, boundary: str
) -> None:
    # Series run across row groups and files wherever the cuts fall.
    table = long_table(lengths, id_kind=id_kind, time_kind=time_kind, shuffle_seed=1)
    kw = {"remainder": "pad", "series_boundary": boundary}
    with tempfile.TemporaryDirectory() as tmp:
        batches = build(sorted_files(Path(tmp) / "data", table, files, rows), **kw)
        assert_same_batches(batches, seqbatch.StreamBatcher(reference(lengths), **KW, **kw))
        ids = ids_of(id_kind, len(lengths))
        assert [str(i) for i in batches.series_ids] == [str(i) for i in ids]
        if boundary != "concat":
            for b in batches:
                held = b.series >= 0
                s = b.x[held, 0, 0] // 10_000  # the series the values encode
                named = batches.series_ids[b.series[held]]
                assert [str(i) for i in named] == [str(ids[int(k)]) for k in s]


def groups_under(batches: seqbatch.tables.TableBatcher, k: int, starts: np.ndarray) -> set[int]:
    """The row groups that the windows of batch ``k`` (x and y, one step on) lie in."""
    w = batches.plan.window(k)
    offsets = batches.sources.offsets  # type: ignore[attr-defined]
    out: set[int] = set()
    for s, a, n in zip(w.series.tolist(), w.start.tolist(), w.length.tolist(), strict=True):
        if n:
            first, last = offsets[s] + a, offsets[s] + a + n  # the last y step included
            g0 = np.searchsorted(starts, first, side="right") - 1
            g1 = np.searchsorted(starts, last, side="right") - 1
            out |= set(range(int(g0), int(g1) + 1))
    return out


def test_a_batch_reads_only_the_row_groups_under_its_windows(tmp_path: Path) -> None:
    folder = sorted_files(tmp_path / "data", long_table(LENGTHS), files=2, rows=4)
    batches = build(folder, row_groups_kept=1)
    groups = batches.sources.values.groups  # type: ignore[attr-defined]
    assert groups.reads == 0  # building read the id and time columns only
    starts = groups.starts
    assert len(starts) - 1 == len(list(range(0, 114, 4))) + len(list(range(0, 114, 4)))
    for k in (0, 3, len(batches) - 1):
        before = groups.reads
        batches[k]
        # One row group kept: each window of x and of y (B each) reads the (at most two)
        # row groups under it, whatever the size of the files.
        assert 0 < groups.reads - before <= 2 * 3 * 2
    # With the default (two row groups per stream kept), an epoch reads each group about once.
    batches = build(folder)
    groups = batches.sources.values.groups  # type: ignore[attr-defined]
    for k in range(len(batches)):
        before = groups.reads
        batches[k]
        assert groups.reads - before <= len(groups_under(batches, k, starts))
    assert groups.reads <= len(starts) - 1


def test_row_groups_kept_bound_the_memory(tmp_path: Path) -> None:
    folder = sorted_files(tmp_path / "data", long_table(LENGTHS), rows=4)
    batches = build(folder, row_groups_kept=4)
    for b in batches:
        del b
        assert len(batches.sources.values.groups._cache) <= 4  # type: ignore[attr-defined]


def test_pickles_as_the_paths_and_resumes(tmp_path: Path) -> None:
    folder = sorted_files(tmp_path / "data", long_table(LENGTHS, time_kind="datetime"))
    batches = build(folder)
    batches[0], batches[5]  # fill the cache: it is not pickled
    blob = pickle.dumps(batches)
    assert len(blob) < 16 * 1024 and b"part-0.parquet" in blob
    again = pickle.loads(blob)
    assert_same_batches(batches, again)
    for k, _ in enumerate(batches):
        if k == 6:
            saved = batches.state_dict()
    other = build(ds.dataset(folder, format="parquet"))
    groups = other.sources.values.groups  # type: ignore[attr-defined]
    other.load_state_dict(saved)
    assert groups.reads <= 64  # the fingerprint reads sampled steps, not the files
    assert [b.position.tolist() for b in other] == [
        batches[k].position.tolist() for k in range(7, len(batches))
    ]


def test_a_partition_column_names_the_series(tmp_path: Path) -> None:
    table = long_table(LENGTHS, shuffle_seed=None)
    ds.write_dataset(
        table, tmp_path / "hive", format="parquet", partitioning=["id"], partitioning_flavor="hive"
    )
    batches = build(tmp_path / "hive")
    assert_same_batches(batches, seqbatch.StreamBatcher(reference(LENGTHS), **KW))


def test_series_out_of_place_are_refused_naming_sort_parquet(tmp_path: Path) -> None:
    table = long_table(LENGTHS, shuffle_seed=None)
    split = pa.concat_tables([table.slice(0, 20), table.slice(40, 17), table.slice(20, 20)])
    pq.write_table(split, tmp_path / "split.parquet")
    with pytest.raises(ValueError) as err:
        build(tmp_path / "split.parquet")
    assert str(err.value) == (
        "`source` must hold the rows of each series together and in time order, so that a "
        "window is a range of rows. Received: the rows of series 'id-0000' start at row 0 and "
        "again at row 37 of the files end to end (write the table in that order once with "
        "seqbatch.tables.sort_parquet(source, destination, series='id', time='t'), then read "
        "the destination)"
    )
    backwards = table.take(np.r_[0, 2, 1, np.arange(3, len(table))])
    pq.write_table(backwards, tmp_path / "backwards.parquet")
    with pytest.raises(ValueError, match=r"series 'id-0000' goes back in time at t=103 \(row 2"):
        build(tmp_path / "backwards.parquet")
    repeated = pa.concat_tables([table.slice(0, 3), table.slice(2)])
    pq.write_table(repeated, tmp_path / "repeated.parquet")
    with pytest.raises(ValueError, match=r"series 'id-0000' repeats time at t=106 \(row 3"):
        build(tmp_path / "repeated.parquet")


@pytest.mark.parametrize("id_kind", ["str", "int", "category"])
def test_sort_parquet_writes_the_layout(tmp_path: Path, id_kind: str) -> None:
    table = long_table(LENGTHS, id_kind=id_kind, shuffle_seed=5)
    pq.write_table(table, tmp_path / "raw.parquet")
    sort_parquet(tmp_path / "raw.parquet", tmp_path / "sorted.parquet", series="id", time="t")
    batches = build(tmp_path / "sorted.parquet")
    assert_same_batches(batches, seqbatch.StreamBatcher(reference(LENGTHS), **KW))
    assert [str(i) for i in batches.series_ids] == [str(i) for i in ids_of(id_kind, 6)]


def test_a_missing_value_is_refused_when_its_row_group_is_read(tmp_path: Path) -> None:
    table = long_table(LENGTHS, shuffle_seed=None)
    f1 = table["f1"].to_numpy().copy()
    f1[50] = np.nan
    table = table.set_column(table.column_names.index("f1"), "f1", pa.array(f1))
    pq.write_table(table, tmp_path / "nan.parquet", row_group_size=10)
    batches = build(tmp_path / "nan.parquet")
    with pytest.raises(ValueError) as err:
        list(batches)
    assert str(err.value) == (
        "`source` must have no missing values: the model would train on them. Received: "
        "column 'f1' with 1 missing (null or NaN) values in row group 5 of "
        f"{tmp_path / 'nan.parquet'} (fill them, or drop those rows)"
    )


def test_gaps_are_reported(tmp_path: Path) -> None:
    table = long_table(LENGTHS, shuffle_seed=None)
    keep = np.ones(len(table), bool)
    keep[[45, 46, 47]] = False  # three points of series 1 (rows 40 to 56)
    pq.write_table(table.filter(pa.array(keep)), tmp_path / "gaps.parquet", row_group_size=9)
    with pytest.warns(UserWarning, match="3 points missing in 1 series"):
        batches = build(tmp_path / "gaps.parquet")
    assert (batches.gaps.step, batches.gaps.missing) == ("3", 3)  # type: ignore[union-attr]


def test_outputs_come_back_as_an_arrow_table(tmp_path: Path) -> None:
    folder = sorted_files(tmp_path / "data", long_table(LENGTHS, id_kind="int"))
    batches = build(folder)
    out = batches.by_series_frame(np.concatenate([b.x for b in batches]))
    assert isinstance(out, pa.Table) and out.column_names == ["id", "t", *FEATURES]
    s = (np.asarray(out["f0"]) // 10_000).astype(int)
    t = (np.asarray(out["t"]) - 100) // 3
    np.testing.assert_array_equal(np.asarray(out["f2"]), value(s, t, 2))
    assert out["id"].to_pylist() == [batches.series_ids[i] for i in s]


def test_paths_that_are_not_parquet_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as err:
        build(tmp_path / "none.parquet")
    assert (
        str(err.value)
        == f"`source` must exist. Received: source={str(tmp_path / 'none.parquet')!r}"
    )
    with pytest.raises(TypeError, match="Received: source of type int"):
        build(3)


def test_torch_loader_workers_serve_the_batches(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="torch is in the test extra")
    from torch.utils.data import DataLoader

    from seqbatch.torch import StreamDataset

    folder = sorted_files(tmp_path / "data", long_table(LENGTHS, id_kind="int"))
    batches = build(folder, shuffle=True, seed=3)
    dataset = StreamDataset(batches)
    loader = DataLoader(
        dataset, batch_size=None, sampler=dataset.sampler, num_workers=2, timeout=120
    )
    served = list(loader)
    assert len(served) == len(batches)
    for k, item in enumerate(served):
        want = batches[k]
        for field in ("x", "y", "sample_weight", "reset", "series", "position"):
            got = getattr(item, field)
            assert isinstance(got, torch.Tensor), field
            np.testing.assert_array_equal(got.numpy(), getattr(want, field), err_msg=f"{k} {field}")


@pytest.mark.needs_tensorflow
def test_tf_data_gives_the_batches(tmp_path: Path) -> None:
    folder = sorted_files(tmp_path / "data", long_table(LENGTHS, id_kind="int"))
    batches = build(folder, remainder="pad")
    elements = list(batches.to_tf_dataset(reset_input=True).as_numpy_iterator())
    assert len(elements) == len(batches)
    for k, ((x, reset), y, weight) in enumerate(elements):
        want = batches[k]
        np.testing.assert_array_equal(x, want.x, err_msg=f"batch {k} x")
        np.testing.assert_array_equal(y, want.y, err_msg=f"batch {k} y")
        np.testing.assert_array_equal(reset, want.reset.astype(np.float32))
        np.testing.assert_array_equal(weight > 0, want.sample_weight > 0)


def test_columns_and_sources_are_checked(tmp_path: Path) -> None:
    table = long_table(LENGTHS, shuffle_seed=None)
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(TypeError) as err:
        build(ds.dataset(table))
    assert str(err.value) == (
        "`source` must be Parquet files: a path, a directory or a dataset of files, whose row "
        "groups can be read alone. Received: a InMemoryDataset"
    )
    with pytest.raises(ValueError) as err:
        build(tmp_path / "t.parquet", features=["f0", "nope"])
    assert str(err.value) == (
        "`source` must have every column named in `series`, `time`, `features` and `targets`. "
        "Received: no column 'nope' among ['id', 't', 'f0', 'f1', 'f2', 'target']"
    )
    texts = table.append_column("name", pa.array(["x"] * len(table)))
    pq.write_table(texts, tmp_path / "texts.parquet")
    with pytest.raises(TypeError) as err:
        build(tmp_path / "texts.parquet", features=["name"])
    assert str(err.value) == (
        "`source` must hold numbers in the feature and target columns. Received: column "
        "'name' of type string"
    )
    floats = table.set_column(1, "t", pa.array(np.asarray(table["t"]) + 0.5))
    pq.write_table(floats, tmp_path / "floats.parquet")
    with pytest.raises(TypeError) as err:
        build(tmp_path / "floats.parquet")
    assert str(err.value) == (
        "`source` must have integer, date or datetime times. Received: column 't' of type double"
    )
    backwards = table.take(np.r_[0, 2, 1, np.arange(3, len(table))])
    pq.write_table(backwards, tmp_path / "backwards.parquet")
    with pytest.raises(ValueError) as err:
        build(tmp_path / "backwards.parquet")
    assert str(err.value) == (
        "`source` must hold the rows of each series together and in time order, so that a "
        "window is a range of rows. Received: series 'id-0000' goes back in time at t=103 "
        "(row 2 of the files end to end) (write the table in that order once with "
        "seqbatch.tables.sort_parquet(source, destination, series='id', time='t'), then read "
        "the destination)"
    )
