"""``StreamBatcher.from_offsets``: many series end to end in one array, cut by offsets.

Every batch must be the batch of the same series given as a list of arrays that only slice
(the lazy reader, which reads window by window), and keep the invariant of
docs/concepts.md, decoded from position-encoded data.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import seqbatch
from tests.encoded import check_epoch, check_packed_epoch, encoded_series
from tests.lazy import SliceOnly
from tests.same import assert_same_batches


@st.composite
def layouts(draw: st.DrawFn) -> dict:
    lengths = draw(st.lists(st.integers(1, 30), min_size=1, max_size=12))
    boundary = draw(st.sampled_from(["reset", "concat", "pack"]))
    targets = draw(st.sampled_from([None, "next", 2, "arrays"]))
    shift = {None: 0, "next": 1, 2: 2, "arrays": 0}[targets]
    # Every series must have a step with a target.
    lengths = [n + shift for n in lengths]
    return {
        "lengths": lengths,
        "features": draw(st.sampled_from([(), (2,)])),
        "targets": targets,
        "shift": shift,
        "kw": {
            "batch_size": draw(st.integers(1, min(4, len(lengths)))),
            # No longer than the shortest series: every layout then fills (none is refused).
            "sequence_length": draw(st.integers(1, min(8, min(lengths) - shift))),
            "remainder": "pad",
            "series_boundary": boundary,
            "return_sequences": draw(st.booleans()),
            "shuffle": draw(st.booleans()),
            "seed": draw(st.integers(0, 3)),
        },
        "epoch": draw(st.integers(0, 2)),
    }


def flat_and_list(case: dict) -> tuple[seqbatch.StreamBatcher, seqbatch.StreamBatcher]:
    series = [
        encoded_series(s, n, case["features"], "int64") for s, n in enumerate(case["lengths"])
    ]
    values = np.concatenate(series)
    targets, listed_targets = case["targets"], case["targets"]
    if targets == "arrays":
        targets, listed_targets = -values, [SliceOnly(-s) for s in series]
    flat = seqbatch.StreamBatcher.from_offsets(
        values, lengths=case["lengths"], targets=targets, **case["kw"]
    )
    listed = seqbatch.StreamBatcher([SliceOnly(s) for s in series], listed_targets, **case["kw"])
    flat.set_epoch(case["epoch"])
    listed.set_epoch(case["epoch"])
    return flat, listed


@given(layouts())
def test_from_offsets_gives_the_batches_of_the_list_and_keeps_the_invariant(case: dict) -> None:
    flat, listed = flat_and_list(case)
    assert_same_batches(flat, listed)
    args = {
        "features": case["features"],
        "shift": case["shift"],
        "target_arrays": case["targets"] == "arrays",
    }
    if case["kw"]["series_boundary"] == "pack":
        check_packed_epoch(flat, case["lengths"], single=False, **args)
    else:
        check_epoch(flat, case["lengths"], concat=case["kw"]["series_boundary"] == "concat", **args)


@given(layouts())
def test_a_list_of_arrays_in_memory_gives_the_batches_of_slice_only_series(case: dict) -> None:
    # In memory, a list is gathered into one array; sliced lazily, it is read window by window.
    series = [
        encoded_series(s, n, case["features"], "int64") for s, n in enumerate(case["lengths"])
    ]
    targets = case["targets"]
    in_memory, lazy = targets, targets
    if targets == "arrays":
        in_memory, lazy = [-s for s in series], [SliceOnly(-s) for s in series]
    assert_same_batches(
        seqbatch.StreamBatcher(series, in_memory, **case["kw"]),
        seqbatch.StreamBatcher([SliceOnly(s) for s in series], lazy, **case["kw"]),
    )


def test_end_of_document_tokens_by_eye() -> None:
    eos = 99
    tokens = np.array([5, 6, eos, 7, 8, 9, eos, 3, eos])
    offsets = np.r_[0, np.flatnonzero(tokens == eos) + 1]
    batches = seqbatch.StreamBatcher.from_offsets(
        tokens, offsets, batch_size=2, sequence_length=2, series_boundary="pack", remainder="pad"
    )
    b = batches[0]
    # Document 1 (3 steps with a next token) on stream 0; documents 0 then 2 (2 + 1) on 1.
    assert b.x.tolist() == [[7, 8], [5, 6]]
    assert b.y.tolist() == [[8, 9], [6, eos]]
    assert b.step_reset.tolist() == [[True, False], [True, False]]
    assert batches[1].x.tolist() == [[9, 0], [3, 0]]
    assert batches[1].y.tolist() == [[eos, 0], [eos, 0]]
    assert batches[1].step_reset.tolist() == [[False, False], [True, False]]


def test_episodes_cut_where_done_is_set() -> None:
    obs = np.arange(10) * 10
    done = np.zeros(10, bool)
    done[[2, 6, 9]] = True
    batches = seqbatch.StreamBatcher.from_offsets(
        obs,
        np.r_[0, np.flatnonzero(done) + 1],
        targets=None,
        batch_size=1,
        sequence_length=4,
        remainder="pad",
    )
    assert [b.x.tolist() for b in batches] == [
        [[0, 10, 20, 0]],
        [[30, 40, 50, 60]],
        [[70, 80, 90, 0]],
    ]
    assert [b.reset.tolist() for b in batches] == [[True], [True], [True]]


def test_a_flat_file_and_an_offsets_file_are_read_in_place(tmp_path: Path) -> None:
    lengths = [5, 9, 3, 7]
    series = [encoded_series(s, n, (), "uint32") for s, n in enumerate(lengths)]
    np.save(tmp_path / "tokens.npy", np.concatenate(series))
    np.save(tmp_path / "offsets.npy", np.r_[0, np.cumsum(lengths)])
    batches = seqbatch.StreamBatcher.from_offsets(
        str(tmp_path / "tokens.npy"),
        np.load(tmp_path / "offsets.npy"),
        batch_size=2,
        sequence_length=3,
        remainder="pad",
    )
    assert isinstance(batches.sources.values, np.memmap)  # type: ignore[attr-defined]
    assert not batches.in_memory
    assert_same_batches(
        batches, seqbatch.StreamBatcher(series, batch_size=2, sequence_length=3, remainder="pad")
    )
    # Pickled as the file's name: a few hundred bytes, and the same batches after.
    again = pickle.loads(pickle.dumps(batches))
    assert len(pickle.dumps(batches)) < 4096
    assert_same_batches(again, batches)


def test_slices_of_one_array_are_not_copied() -> None:
    values = np.arange(40)
    batches = seqbatch.StreamBatcher(np.split(values, [10, 25]), batch_size=2, sequence_length=4)
    assert np.shares_memory(batches.sources.values, values)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"offsets": [0, 3], "lengths": [3]}, "Exactly one of `offsets` and `lengths`"),
        ({}, "Exactly one of `offsets` and `lengths`"),
        ({"offsets": [1, 5, 9]}, "`offsets` must run from 0 to the steps of `values` (9)"),
        ({"offsets": [0, 5]}, "Received: offsets 0 ... 5 (2 values)"),
        ({"offsets": [0, 5, 5, 9]}, "Received: offsets[1]=5 and offsets[2]=5"),
        ({"offsets": [0.0, 9.0]}, "`offsets` must be a 1-D array of integers"),
        ({"lengths": [4, 4]}, "Received: lengths adding up to 8 for values of 9 steps"),
        ({"lengths": [9, 0]}, "Received: lengths[1]=0"),
        ({"lengths": [9], "targets": np.zeros(8)}, "Received: targets of 8 steps for values of 9"),
    ],
)
def test_bad_offsets_are_named_before_any_work(kwargs: dict, message: str) -> None:
    with pytest.raises((ValueError, TypeError)) as info:
        seqbatch.StreamBatcher.from_offsets(np.arange(9), batch_size=1, sequence_length=2, **kwargs)
    assert message in str(info.value)
