"""Burn-in (``StreamBatcher(..., burn_in=b)``): every burn-in step is one of the steps right
before its window in the same series, weight 0, and the window is the batch without burn-in.

The properties draw the data (values that encode series and step: ``tests/encoded.py``), the
layout, shuffle, shards, lazy sources and window lengths that vary (``tests/varying.py``),
and check each batch by decoding it (``tests/burn_in.py``).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

import seqbatch
from tests.burn_in import check_burn_in_batch
from tests.strategies import Case, cases
from tests.varying import VaryingCase, varying_cases


def _with_burn_in(case: Case, b: int) -> seqbatch.StreamBatcher:
    return seqbatch.StreamBatcher(case.data(), case.target_arg(), **case.kwargs(), burn_in=b)


@settings(max_examples=60)
@given(cases(("single", "reset"), fill=True), st.integers(1, 14), st.data())
def test_every_burn_in_step_precedes_its_window_in_the_same_series(
    case: Case, b: int, data: st.DataObject
) -> None:
    note(repr(case))
    plain = case.build()
    burned = _with_burn_in(case, b)
    for batcher in (plain, burned):
        batcher.set_epoch(case.epoch)
    assert len(burned) == len(plain)
    count = data.draw(st.sampled_from([c for c in (1, 2, 3) if case.batch_size % c == 0]))
    index = data.draw(st.integers(0, count - 1))
    steps = 0
    for k in range(len(plain)):
        whole = burned[k]
        steps += check_burn_in_batch(
            whole,
            plain[k],
            b,
            features=case.features,
            shift=case.shift,
            target_arrays=case.targets == "arrays",
        )
        # A shard's batch is its rows of the whole batch, field by field.
        rows = slice(index * case.batch_size // count, (index + 1) * case.batch_size // count)
        part = burned.shard(index, count)[k]
        for field in ("x", "y", "sample_weight", "reset", "burn_in", "series", "position"):
            mine, theirs = getattr(part, field), getattr(whole, field)
            if theirs is not None:
                np.testing.assert_array_equal(mine, theirs[rows])
    note(f"burn-in steps: {steps}")


@settings(max_examples=30)
@given(varying_cases(("single", "reset")), st.integers(1, 9))
def test_burn_in_holds_when_the_window_lengths_vary(case: VaryingCase, b: int) -> None:
    note(repr(case))
    plain = case.build()
    burned = dataclasses.replace(case, extra={"burn_in": b}).build()
    for batcher in (plain, burned):
        batcher.set_epoch(case.epoch)
    assert len(burned) == len(plain)
    for k in range(len(plain)):
        bb = burned[k]
        assert bb.length == case.table(case.epoch, k)
        check_burn_in_batch(
            bb,
            plain[k],
            b,
            features=case.features,
            shift=case.shift,
            target_arrays=case.targets == "arrays",
        )


def test_a_window_near_its_series_start_has_a_shorter_prefix_after_padding() -> None:
    series = [np.arange(7) + 100, np.arange(5) + 200]
    batches = seqbatch.StreamBatcher(
        series, targets="next", batch_size=2, sequence_length=2, burn_in=3
    )
    first, second, third = batches[0], batches[1], batches[2]
    assert first.x.tolist() == [[0, 0, 0, 100, 101], [0, 0, 0, 200, 201]]
    assert second.x.tolist() == [[0, 100, 101, 102, 103], [0, 200, 201, 202, 203]]
    assert third.x.tolist() == [[101, 102, 103, 104, 105], [0, 0, 0, 0, 0]]
    assert second.y.tolist() == [[0, 101, 102, 103, 104], [0, 201, 202, 203, 204]]
    assert second.burn_in.tolist() == [[False, True, True], [False, True, True]]
    assert second.sample_weight.tolist() == [[0, 0, 0, 1, 1], [0, 0, 0, 1, 1]]
    # The first real step of rows 0 and 1 of batch 1 is step 0 of the series: reset there.
    assert second.reset.tolist() == [True, True]
    assert third.reset.tolist() == [False, False]  # row 0 starts mid-series, row 1 is idle
    flags = seqbatch.batch.reset_flags(second)
    assert flags.tolist() == [[0, 1, 0, 0, 0], [0, 1, 0, 0, 0]]
    assert seqbatch.batch.reset_flags(third)[0].tolist() == [1, 0, 0, 0, 0]
    assert not seqbatch.batch.reset_flags(third)[1].any()


def test_without_burn_in_nothing_changes() -> None:
    plain = seqbatch.StreamBatcher(np.arange(40), batch_size=2, sequence_length=4)
    zero = seqbatch.StreamBatcher(np.arange(40), batch_size=2, sequence_length=4, burn_in=0)
    assert zero[1].burn_in is None and zero[1].x.tolist() == plain[1].x.tolist()
    assert zero.state_dict()["fingerprint"] == plain.state_dict()["fingerprint"]


def test_the_checkpoint_names_the_burn_in() -> None:
    with_b = seqbatch.StreamBatcher(np.arange(40), batch_size=2, sequence_length=4, burn_in=2)
    saved = json.loads(json.dumps(with_b.state_dict(next_batch=2)))
    without = seqbatch.StreamBatcher(np.arange(40), batch_size=2, sequence_length=4)
    with pytest.raises(ValueError, match="burn_in"):
        without.load_state_dict(saved)
    again = seqbatch.StreamBatcher(np.arange(40), batch_size=2, sequence_length=4, burn_in=2)
    again.load_state_dict(saved)
    assert [b.position.tolist() for b in again] == [[8, 24], [12, 28]]


def test_a_window_read_from_the_plan_has_its_burn_in() -> None:
    batches = seqbatch.StreamBatcher(np.arange(40), batch_size=2, sequence_length=4, burn_in=2)
    b = batches.batch(batches.plan.window(1))
    assert b.x.tolist() == batches[1].x.tolist() == [[2, 3, 4, 5, 6, 7], [18, 19, 20, 21, 22, 23]]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"burn_in": -1}, r"`burn_in` must be a non-negative integer .*burn_in=-1"),
        ({"burn_in": 2.0}, r"`burn_in` must be a non-negative integer .*burn_in=2.0"),
        ({"burn_in": True}, r"`burn_in` must be a non-negative integer .*burn_in=True"),
        (
            {"burn_in": 3, "series_boundary": "pack"},
            r"`burn_in` must be 0 with series_boundary='pack'.*burn_in=3",
        ),
        (
            {"burn_in": 3, "series_boundary": "concat"},
            r"`burn_in` must be 0 with series_boundary='concat' of several series.*burn_in=3"
            r" with series_boundary='concat' of 3 series",
        ),
    ],
)
def test_bad_burn_in_is_refused_naming_the_rule(kwargs: dict, match: str) -> None:
    series = [np.arange(n) for n in (20, 15, 12)]
    with pytest.raises((TypeError, ValueError), match=match):
        seqbatch.StreamBatcher(series, batch_size=2, sequence_length=4, **kwargs)


def test_one_series_joined_by_concat_takes_burn_in() -> None:
    batches = seqbatch.StreamBatcher(
        [np.arange(30)], batch_size=2, sequence_length=3, series_boundary="concat", burn_in=2
    )
    assert batches[1].x[1].tolist() == [13, 14, 15, 16, 17]


def test_the_kernel_formats_of_a_burn_in_batch_are_refused() -> None:
    batches = seqbatch.StreamBatcher(np.arange(40), batch_size=2, sequence_length=4, burn_in=2)
    with pytest.raises(ValueError, match=r"`burn_in` must be 0 for the kernel formats"):
        _ = batches[0].seq_idx


def test_burn_in_batches_read_in_any_order_are_the_same() -> None:
    batches = seqbatch.StreamBatcher(
        [np.arange(n) + 1000 * s for s, n in enumerate([31, 22, 17, 40])],
        batch_size=2,
        sequence_length=3,
        shuffle=True,
        seed=5,
        burn_in=4,
    )
    in_order = [b.x for b in batches]
    order = np.random.default_rng(0).permutation(len(batches))
    for k in order:
        np.testing.assert_array_equal(batches[int(k)].x, in_order[k])
    assert len(order) > 3


@pytest.mark.parametrize("schedule", [3, seqbatch.lengths.warmup(1, 5, 4)])
def test_by_series_leaves_the_burn_in_columns_out(schedule: object) -> None:
    series = [np.arange(n) + 1000 * (s + 1) for s, n in enumerate([30, 21, 14, 9])]
    burned = seqbatch.StreamBatcher(
        series, batch_size=2, sequence_length=schedule, remainder="pad", burn_in=4
    )
    back = burned.by_series([b.x for b in burned])  # an output per column: the input
    for s, out in enumerate(back):
        held = ~np.ma.getmaskarray(out)
        assert held[: len(series[s]) - 1].all() and not held[-1]  # the last has no target
        np.testing.assert_array_equal(out.data[held], series[s][held])
    with pytest.raises(ValueError, match=r"`outputs` must be \d+ arrays of 2 rows"):
        burned.by_series([b.x[:, 4:] for b in burned])  # without the burn-in columns
    with pytest.raises(ValueError, match=r"`burn_in` must be 0 to find where a series ends"):
        burned.series_end(0)
