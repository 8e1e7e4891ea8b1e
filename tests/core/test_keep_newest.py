"""``align="end"``: the windows end at the newest step, and the steps left over are the oldest.

The invariant itself is proven for ``align="end"`` by the property tests of
``tests/core/test_invariant.py`` (``Case.align``, checked by ``tests.encoded.check_epoch``); here are
tables to read by eye, the accounting in ``describe()``, and the refusals.
"""

from __future__ import annotations

import numpy as np
import pytest

import seqbatch


def test_one_series_keeps_its_newest_steps() -> None:
    # 15 steps, 14 with a target; 2 streams of 3-step windows hold 12: steps 2 to 13.
    batches = seqbatch.StreamBatcher(np.arange(15), batch_size=2, sequence_length=3, align="end")
    assert [b.x.tolist() for b in batches] == [
        [[2, 3, 4], [8, 9, 10]],
        [[5, 6, 7], [11, 12, 13]],
    ]
    assert batches[1].y.tolist()[1] == [12, 13, 14]  # the last target is the newest step
    a = batches.plan.accounting
    assert (a.used, a.no_target, a.before_offset, a.dropped) == (12, 1, 2, 0)
    start = seqbatch.StreamBatcher(np.arange(15), batch_size=2, sequence_length=3)
    assert start[1].x.tolist()[1] == [9, 10, 11]  # align="start": steps 12 and 13 dropped


def test_many_series_each_keep_their_newest_steps() -> None:
    data = [np.arange(8), 100 + np.arange(5)]
    batches = seqbatch.StreamBatcher(data, None, batch_size=2, sequence_length=3, align="end")
    assert [(b.x.tolist(), b.reset.tolist()) for b in batches] == [
        ([[2, 3, 4], [102, 103, 104]], [True, True]),
        ([[5, 6, 7], [0, 0, 0]], [False, False]),
    ]
    a = batches.plan.accounting
    assert (a.before_offset, a.dropped) == (2 + 2, 0)


def test_a_shuffled_cut_ends_fewer_than_a_window_before_the_end() -> None:
    batches = seqbatch.StreamBatcher(
        np.arange(100), batch_size=2, sequence_length=5, align="end", shuffle=True, seed=3
    )
    ends = set()
    for epoch in range(8):
        batches.set_epoch(epoch)
        last = int(batches[len(batches) - 1].x[-1, -1])
        a = batches.plan.accounting
        assert last == 98 - a.dropped and 0 <= a.dropped < 5
        assert a.before_offset + a.used + a.dropped + a.no_target == 100
        ends.add(a.dropped)
    assert len(ends) > 1


def test_describe_says_where_the_steps_went() -> None:
    batches = seqbatch.StreamBatcher(
        np.zeros((105, 3)), batch_size=4, sequence_length=5, align="end"
    )
    assert batches.describe().splitlines()[3] == (
        "steps: 105 in the data = 100 used + 1 without target + 4 dropped before the first "
        "window (the oldest) + 0 after the last (remainder='drop', align='end')"
    )
    shuffled = seqbatch.StreamBatcher(
        np.zeros((105, 3)), batch_size=4, sequence_length=5, align="end", shuffle=True, seed=0
    )
    assert "varies by epoch: the steps cut off the end, drawn from 0 to 4 (this epoch: " in (
        shuffled.describe()
    )
    assert "align='end'" in repr(batches.plan)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"remainder": "pad"},
            r"`align='end'` needs remainder='drop' and a layout other than packing: the steps "
            r"left over go before the first window, where padding may not go \(it would run "
            r"through the state before the data\), and a packed stream has no series of its "
            r"own to align. Received: align='end' with remainder='pad', layout='split'",
        ),
        (
            {"series_boundary": "pack", "data": [np.arange(9), np.arange(7)]},
            r"Received: align='end' with remainder='drop', layout='pack'",
        ),
        ({"align": "middle"}, r"`align` must be one of 'start', 'end'. Received: align='middle'"),
    ],
)
def test_align_end_is_refused_where_it_cannot_hold(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"align": "end", "batch_size": 2, "sequence_length": 3, **kwargs}
    data = args.pop("data", np.arange(20))
    with pytest.raises(ValueError, match=message):
        seqbatch.StreamBatcher(data, **args)  # type: ignore[arg-type]
