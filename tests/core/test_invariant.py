"""Property-based proof of the alignment invariant (docs/concepts.md, "The invariant"), clause by clause.

Each example draws a dataset (one series, or many series of unequal lengths, reset or
concat), the batch size, window, targets, remainder, return_sequences, shuffle seed and epoch.
The properties of the batches draw data that fills the streams (``cases(fill=True)``, its
lengths drawn from the rules, never from the code) and walk whole epochs through
``check_epoch``; one property draws data that cannot fill them and expects the documented
error, decided from the same rules.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

import seqbatch
from tests.encoded import encoded_series
from tests.same import assert_shards_join
from tests.strategies import Case, cases


@given(cases(fill=True))
def test_every_epoch_keeps_the_invariant(case: Case) -> None:
    note(repr(case))
    batches = case.build()
    batches.set_epoch(case.epoch)
    assert batches.epoch == case.epoch
    assert batches.plan.epoch == (case.epoch if case.shuffle else 0)
    counts = case.check(batches)
    if not case.shuffle:
        # Unshuffled, the steps left over are the newest (align="start") or the oldest.
        a = batches.plan.accounting
        assert (a.dropped if case.align == "end" else a.before_offset) == 0
    note(repr(counts))


@given(cases().filter(lambda case: not case.fillable()))
def test_data_that_cannot_fill_the_streams_is_refused_with_the_documented_error(
    case: Case,
) -> None:
    note(repr(case))
    with pytest.raises(ValueError) as err:
        case.build()
    assert str(err.value).startswith(case.refusal()), str(err.value)
    assert "Received: " in str(err.value)


@given(cases(("reset",), fill=True))
def test_a_series_never_leaves_its_stream_and_streams_are_balanced(case: Case) -> None:
    batches = case.build()
    batches.set_epoch(case.epoch)
    stream_of: dict[int, set[int]] = {}
    for b in batches:
        for i, s in enumerate(b.series.tolist()):
            if s >= 0:
                stream_of.setdefault(s, set()).add(i)
        # Each series starts on a window boundary, at its step 0 (aligned to its end: at the
        # steps left over), with a reset.
        first = np.zeros(len(case.lengths), dtype=np.int64)
        if case.align == "end":
            first = (np.array(case.lengths) - case.shift) % case.sequence_length
        starts = (b.series >= 0) & (b.position == first[b.series])
        assert np.array_equal(starts, b.reset)
    assert sorted(stream_of) == list(range(len(case.lengths)))
    assert all(len(streams) == 1 for streams in stream_of.values())
    # Longest first onto the least loaded stream: at most one series' windows above the mean.
    W = case.sequence_length
    usable = np.array(case.lengths) - case.shift
    windows = -(-usable // W) if case.remainder == "pad" else usable // W
    assert len(batches) <= -(-windows.sum() // case.batch_size) + windows.max()
    assert len(batches) >= max(windows.max(), -(-windows.sum() // case.batch_size))


@given(cases(fill=True), st.data())
def test_shards_are_disjoint_and_their_union_is_the_batch(case: Case, data: st.DataObject) -> None:
    batches = case.build()
    divisors = [c for c in range(1, case.batch_size + 1) if case.batch_size % c == 0]
    count = data.draw(st.sampled_from(divisors))
    shards = [batches.shard(i, count) for i in range(count)]
    for s in shards:
        s.set_epoch(case.epoch)
    batches.set_epoch(case.epoch)
    assert all(len(s) == len(batches) for s in shards)
    assert [s.streams for s in shards] == [
        range(i * case.batch_size // count, (i + 1) * case.batch_size // count)
        for i in range(count)
    ]
    assert_shards_join(batches, shards)
    for s in shards:
        case.check(s)


@given(cases(fill=True), st.data())
def test_a_batch_is_a_pure_function_of_its_index(case: Case, data: st.DataObject) -> None:
    """7. Determinism: random access, a second batcher and a resumed run see the same batch."""
    first = case.build()
    first.set_epoch(case.epoch)
    n = len(first)
    in_order = [first[k] for k in range(n)]
    second = case.build()
    second.set_epoch(case.epoch + 1)
    second.set_epoch(case.epoch)  # a resumed run: back to the same epoch
    order = data.draw(st.permutations(range(n)))
    for k in order:
        for a, b in ((in_order[k], second[k]), (in_order[k], first[k - n])):
            for field in ("x", "y", "sample_weight", "reset", "series", "position"):
                va, vb = getattr(a, field), getattr(b, field)
                assert (va is None and vb is None) or np.array_equal(va, vb), field
    assert first[-1].position.tolist() == in_order[-1].position.tolist()


@given(cases(("single", "reset"), fill=True, shuffle=True), st.integers(0, 50))
def test_shuffle_keeps_the_number_of_batches_and_changes_the_layout(case: Case, other: int) -> None:
    batches = case.build()
    sizes = set()
    for epoch in (0, 1, other):
        batches.set_epoch(epoch)
        sizes.add(len(batches))
        case.check(batches)
    assert len(sizes) == 1


def test_shuffle_changes_the_layout_from_epoch_to_epoch() -> None:
    series = [encoded_series(s, 20 + s, (), "int64") for s in range(12)]
    batches = seqbatch.StreamBatcher(
        series, None, batch_size=4, sequence_length=5, shuffle=True, seed=7
    )
    layouts = set()
    for epoch in range(5):
        batches.set_epoch(epoch)
        layouts.add(tuple(tuple(s) for s in batches.plan.assignment()))
    assert len(layouts) > 1
    one = seqbatch.StreamBatcher(
        encoded_series(0, 500, (), "int64"),
        None,
        batch_size=4,
        sequence_length=10,
        shuffle=True,
        seed=3,
    )
    offsets = set()
    for epoch in range(10):
        one.set_epoch(epoch)
        offsets.add(one.plan.accounting.before_offset)
        assert one[0].position[0] == one.plan.accounting.before_offset
    assert len(offsets) > 1
