"""Packed layouts (``series_boundary="pack"``): the invariant of packed batches, in docs/concepts.md, "The invariant".

Property tests draw a dataset, the arguments, a seed and an epoch that fill the streams (decided
from the rules alone) and walk whole epochs through ``check_packed_epoch``, which decodes every
step from what a user sees; one draws data that cannot fill them and expects the documented
error. Tables of exact batches follow, to check by eye: series ``s`` holds
``1000 * (s + 1) + step``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

import seqbatch
from tests.encoded import encoded_series
from tests.lazy import CountingSource
from tests.same import FIELDS, assert_shards_join
from tests.strategies import (
    PackCase,
    one_by_one_loads,
    packed_cases,
)


def same(a: seqbatch.Batch, b: seqbatch.Batch) -> None:
    for field in FIELDS:
        va, vb = getattr(a, field), getattr(b, field)
        assert (va is None and vb is None) or np.array_equal(va, vb), field


@given(packed_cases(fill=True))
def test_every_packed_epoch_keeps_the_invariant(case: PackCase) -> None:
    note(repr(case))
    batches = case.build()
    batches.set_epoch(case.epoch)
    note(repr(case.check(batches)))


@given(packed_cases().filter(lambda case: not case.fillable()))
def test_packed_data_that_cannot_fill_the_streams_is_refused_with_the_documented_error(
    case: PackCase,
) -> None:
    note(repr(case))
    with pytest.raises(ValueError) as err:
        case.build()
    assert str(err.value).startswith(case.refusal()), str(err.value)
    assert "Received: " in str(err.value)


@given(packed_cases(single=False, fill=True, remainder="pad"))
def test_a_series_never_leaves_its_stream_and_the_deal_is_longest_first(case: PackCase) -> None:
    batches = case.build()
    batches.set_epoch(case.epoch)
    stream_of: dict[int, set[int]] = {}
    steps = np.zeros(case.batch_size, dtype=np.int64)
    for b in batches:
        assert b.step_series is not None
        for i, row in enumerate(b.step_series.tolist()):
            for s in set(row) - {-1}:
                stream_of.setdefault(s, set()).add(i)
        steps += (b.step_series >= 0).sum(axis=1)
    assert sorted(stream_of) == list(range(len(case.lengths)))
    assert all(len(streams) == 1 for streams in stream_of.values())
    # By steps, exactly the loads of dealing one series at a time, longest first onto the
    # least loaded stream: the most loaded stream at most one series above the mean.
    assert sorted(steps.tolist()) == one_by_one_loads(case.usable, case.batch_size)
    W, total = case.sequence_length, sum(case.usable)
    assert len(batches) == -(-int(steps.max()) // W)
    assert steps.max() <= total / case.batch_size + max(case.usable)


@given(packed_cases(fill=True), st.data())
def test_packed_shards_are_disjoint_and_their_union_is_the_batch(
    case: PackCase, data: st.DataObject
) -> None:
    batches = case.build()
    divisors = [c for c in range(1, case.batch_size + 1) if case.batch_size % c == 0]
    count = data.draw(st.sampled_from(divisors))
    shards = [batches.shard(i, count) for i in range(count)]
    for s in [*shards, batches]:
        s.set_epoch(case.epoch)
    assert all(len(s) == len(batches) for s in shards)
    assert_shards_join(batches, shards)
    for s in shards:
        case.check(s)


@given(packed_cases(fill=True), st.data())
def test_a_packed_batch_is_a_pure_function_of_seed_epoch_and_index(
    case: PackCase, data: st.DataObject
) -> None:
    first = case.build()
    first.set_epoch(case.epoch)
    in_order = [first[k] for k in range(len(first))]
    second = case.build()
    second.set_epoch(case.epoch + 1)
    second.set_epoch(case.epoch)  # a resumed run: back to the same epoch
    for k in data.draw(st.permutations(range(len(first)))):
        same(in_order[k], second[k])
        same(in_order[k], first[k - len(first)])


@pytest.mark.parametrize("layout", ["pack", "reset"])
def test_batches_read_in_order_past_the_longest_lookahead_are_those_read_one_by_one(
    layout: str,
) -> None:
    """The plan looks runs of batches up ahead while they are read in order (up to 16k
    (batch, stream) entries a run, 256 batches at 64 streams): every batch of a long epoch
    read in order, forwards or backwards, is the batch a fresh batcher reads alone."""
    rng = np.random.default_rng(3)
    series = [
        encoded_series(s, int(n), (), "int64") for s, n in enumerate(rng.integers(2, 40, 6000))
    ]

    def build() -> seqbatch.StreamBatcher:
        return seqbatch.StreamBatcher(
            series, batch_size=64, sequence_length=3, remainder="pad", series_boundary=layout
        )

    batches = build()
    assert len(batches) > 2 * 256
    forwards = [batches[k] for k in range(len(batches))]
    backwards = [batches[k] for k in reversed(range(len(batches)))][::-1]
    for k in (0, 1, 255, 256, 257, 511, 512, len(batches) - 1):
        alone = build()[k]
        same(forwards[k], alone)
        same(backwards[k], alone)
    for a, b in zip(forwards, backwards, strict=True):
        same(a, b)


@given(packed_cases(single=False, fill=True, shuffle=True))
def test_shuffle_keeps_the_number_of_batches(case: PackCase) -> None:
    batches = case.build()
    sizes = set()
    for epoch in (0, 1, case.epoch + 2):
        batches.set_epoch(epoch)
        sizes.add(len(batches))
        case.check(batches)
    assert len(sizes) == 1


def test_shuffle_changes_the_deal_and_the_order_from_epoch_to_epoch() -> None:
    series = [encoded_series(s, 5 + s % 4, (), "int64") for s in range(12)]
    batches = seqbatch.StreamBatcher(
        series, None, batch_size=3, sequence_length=4, series_boundary="pack", shuffle=True, seed=7
    )
    layouts = set()
    for epoch in range(6):
        batches.set_epoch(epoch)
        layouts.add(tuple(tuple(s) for s in batches.plan.assignment()))
    assert len(layouts) > 1


# Tables to check by eye. Series s holds 1000 * (s + 1) + step.


def packed(lengths: list[int], targets: Any = None, **kwargs: Any) -> seqbatch.StreamBatcher:
    data = [encoded_series(s, n, (), "int64") for s, n in enumerate(lengths)]
    return seqbatch.StreamBatcher(data, targets, series_boundary="pack", **kwargs)


def test_series_end_to_end_with_a_flag_at_each_start() -> None:
    batches = packed([5, 2, 4], batch_size=2, sequence_length=3, remainder="pad")
    # Longest first by steps: series 0 (5) -> stream 0, series 2 (4) -> stream 1, series 1
    # (2) -> stream 1 (4 < 5). Each stream holds its series in series order.
    assert batches.plan.assignment() == [[0], [1, 2]]
    assert [b.x.tolist() for b in batches] == [
        [[1000, 1001, 1002], [2000, 2001, 3000]],
        [[1003, 1004, 0], [3001, 3002, 3003]],
    ]
    assert [b.step_reset.astype(int).tolist() for b in batches] == [
        [[1, 0, 0], [1, 0, 1]],
        [[0, 0, 0], [0, 0, 0]],
    ]
    assert [b.step_series.tolist() for b in batches] == [
        [[0, 0, 0], [1, 1, 2]],
        [[0, 0, -1], [2, 2, 2]],
    ]
    assert [b.step_position.tolist() for b in batches] == [
        [[0, 1, 2], [0, 1, 0]],
        [[3, 4, -1], [1, 2, 3]],
    ]
    assert [b.reset.tolist() for b in batches] == [[True, True], [False, False]]
    assert [b.series.tolist() for b in batches] == [[0, 1], [0, 2]]
    assert [b.position.tolist() for b in batches] == [[0, 0], [3, 1]]
    assert [b.sample_weight.tolist() for b in batches] == [
        [[1, 1, 1], [1, 1, 1]],
        [[1, 1, 0], [1, 1, 1]],
    ]
    a = batches.plan.accounting
    assert (a.total, a.used, a.dropped, a.padded) == (11, 11, 0, 1)
    with pytest.raises(IndexError, match=r"batch index out of range\. Received: k=2 for 2"):
        batches.plan.pieces(2)


def test_a_target_never_crosses_into_the_next_series() -> None:
    batches = packed([4, 3, 3], "next", batch_size=2, sequence_length=3, remainder="pad")
    # Usable steps: 3, 2, 2. Series 0 -> stream 0, series 1 and then 2 -> stream 1. The last
    # step of series 1 (2001) predicts 2002, never the 3000 that follows it in the stream.
    assert batches.plan.assignment() == [[0], [1, 2]]
    assert [b.x.tolist() for b in batches] == [
        [[1000, 1001, 1002], [2000, 2001, 3000]],
        [[0, 0, 0], [3001, 0, 0]],
    ]
    assert [b.y.tolist() for b in batches] == [
        [[1001, 1002, 1003], [2001, 2002, 3001]],
        [[0, 0, 0], [3002, 0, 0]],
    ]
    assert [b.series.tolist() for b in batches] == [[0, 1], [-1, 2]]
    assert [b.reset.tolist() for b in batches] == [[True, True], [False, False]]
    assert batches.plan.accounting.no_target == 3


def test_last_step_targets_and_k_steps_ahead() -> None:
    batches = packed(
        [5, 4], 2, batch_size=1, sequence_length=2, remainder="pad", return_sequences=False
    )
    # One stream: series 0 (3 usable steps) then series 1 (2 usable steps).
    assert [b.x.tolist() for b in batches] == [[[1000, 1001]], [[1002, 2000]], [[2001, 0]]]
    assert [b.y.tolist() for b in batches] == [[1003], [2002], [0]]
    assert [b.sample_weight.tolist() for b in batches] == [[1], [1], [0]]
    assert [b.step_reset.astype(int).tolist() for b in batches] == [[[1, 0]], [[0, 1]], [[0, 0]]]


def test_drop_keeps_whole_windows_of_each_stream() -> None:
    batches = packed([10, 7, 6, 5, 3, 2], batch_size=3, sequence_length=3)
    # Steps per stream, longest first: [10, 2], [7, 3], [6, 5] = 12, 10, 11 steps; each
    # stream keeps its whole windows (12, 9, 9) and the rest is dropped.
    assert batches.plan.assignment() == [[0, 5], [1, 4], [2, 3]]
    assert [b.x.tolist() for b in batches][2:] == [
        [[1006, 1007, 1008], [2006, 5000, 5001], [4000, 4001, 4002]],
        [[1009, 6000, 6001], [0, 0, 0], [0, 0, 0]],
    ]
    a = batches.plan.accounting
    assert (a.total, a.used, a.dropped, a.padded) == (33, 30, 3, 6)


def test_packing_pads_far_less_than_reset() -> None:
    lengths = [10, 7, 6, 5, 3, 2]
    kwargs: dict[str, Any] = {"batch_size": 3, "sequence_length": 3, "remainder": "pad"}
    data = [encoded_series(s, n, (), "int64") for s, n in enumerate(lengths)]
    reset = seqbatch.StreamBatcher(data, None, **kwargs).plan.accounting
    pack = packed(lengths, **kwargs).plan.accounting
    assert (reset.padded, pack.padded) == (12, 3)


def test_a_packed_batch_reads_only_its_pieces() -> None:
    sources = [
        CountingSource(encoded_series(s, n, (2,), "float32")) for s, n in enumerate([9, 4, 6])
    ]
    batches = seqbatch.StreamBatcher(
        sources, "next", batch_size=2, sequence_length=4, series_boundary="pack", remainder="pad"
    )
    for s in sources:
        s.reads.clear()
    b = batches[0]
    # Stream 0: series 0 (8 usable steps); stream 1: series 1 (3) then series 2 (5).
    assert b.step_series is not None and b.step_series.tolist() == [[0, 0, 0, 0], [1, 1, 1, 2]]
    # One slice per piece, with the step after it for the last target, and nothing else.
    assert sources[0].reads == [(0, 5)]
    assert sources[1].reads == [(0, 4)]
    assert sources[2].reads == [(0, 2)]


def test_memmaps_and_npy_paths_give_the_same_packed_batches(tmp_path: Any) -> None:
    lengths = [30, 7, 12, 5, 19]
    data = [encoded_series(s, n, (3,), "float32") for s, n in enumerate(lengths)]
    paths = []
    for s, d in enumerate(data):
        paths.append(tmp_path / f"{s}.npy")
        np.save(paths[-1], d)
    kwargs: dict[str, Any] = {"batch_size": 2, "sequence_length": 4, "series_boundary": "pack"}
    in_memory = seqbatch.StreamBatcher(data, "next", remainder="pad", **kwargs)
    for source in ([np.load(p, mmap_mode="r") for p in paths], [str(p) for p in paths]):
        lazy = seqbatch.StreamBatcher(source, "next", remainder="pad", **kwargs)
        assert not lazy.in_memory
        assert len(lazy) == len(in_memory)
        for a, b in zip(in_memory, lazy, strict=True):
            same(a, b)


def test_outside_pack_batches_carry_no_per_step_fields() -> None:
    b = seqbatch.StreamBatcher(np.arange(20), batch_size=2, sequence_length=3)[0]
    assert (b.step_reset, b.step_series, b.step_position) == (None, None, None)


def test_one_array_packed_is_cut_into_streams_with_per_step_fields() -> None:
    batches = seqbatch.StreamBatcher(
        np.arange(1, 11), None, batch_size=2, sequence_length=3, series_boundary="pack"
    )
    b = batches[0]
    assert b.x.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert b.step_reset is not None
    assert b.step_reset.astype(int).tolist() == [[1, 0, 0], [1, 0, 0]]
    assert b.step_position is not None and b.step_position.tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize(
    ("lengths", "kwargs", "message"),
    [
        (
            [9, 2, 2],
            {"batch_size": 2, "sequence_length": 5},
            "Every stream must hold at least `sequence_length` usable steps when "
            "series_boundary='pack' and remainder='drop'. Received: sequence_length=5, but "
            "stream 1 of 2 holds 4 usable steps (use remainder='pad', a smaller batch_size or "
            "a shorter sequence_length)",
        ),
        (
            [9, 2],
            {"batch_size": 3, "sequence_length": 2},
            "`batch_size` must not exceed the number of series when series_boundary='pack', "
            "since a series never leaves its stream. Received: batch_size=3 for 2 series (pass "
            "one array to cut it into streams, or series_boundary='concat')",
        ),
    ],
)
def test_packed_data_that_cannot_fill_the_streams_is_refused(
    lengths: list[int], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError) as err:
        packed(lengths, **kwargs)
    assert str(err.value) == message


def test_readers_of_one_run_per_window_refuse_packed_plans() -> None:
    batches = packed([6, 4, 3], batch_size=2, sequence_length=2)
    with pytest.raises(ValueError) as err:
        batches.plan.table()
    assert str(err.value) == (
        "`table()` gives one run of steps per window, and a packed window holds several. "
        "Received: a plan with layout='pack' (read pieces(k) or steps(k) batch by batch)"
    )
    with pytest.raises(ValueError) as err:
        batches.batch(batches.plan.window(0))
    assert str(err.value) == (
        "`window` must belong to a plan that is not packed: a packed window holds several "
        "runs of steps. Received: a window of series_boundary='pack' batches (read "
        "batches[k] instead)"
    )
