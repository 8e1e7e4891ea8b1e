"""Window lengths that vary (``sequence_length`` a callable): the invariant, the schedules,
``len()``, ``lr_scale``, resume and the refusals.

The property draws the schedule (lengths of 1, and longer than some series, among them) and
data whose values encode their positions, and walks whole epochs through the invariant's
checker with the schedule's own widths (``tests/varying.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

import seqbatch
from tests.encoded import SERIES_STRIDE, decode, encoded_series
from tests.varying import Table, VaryingCase, varying_cases


@settings(max_examples=80)
@given(varying_cases())
def test_every_epoch_keeps_the_invariant_when_the_window_lengths_vary(case: VaryingCase) -> None:
    note(repr(case))
    batches = case.build()
    batches.set_epoch(case.epoch)
    n = len(batches)  # said before any batch of the epoch is read
    counts = case.check(batches, case.epoch)
    assert counts["batches"] == n
    note(repr(counts))


@settings(max_examples=25)
@given(varying_cases(), st.data())
def test_shards_of_varying_windows_keep_the_invariant_and_make_up_the_batch(
    case: VaryingCase, data: st.DataObject
) -> None:
    batches = case.build()
    batches.set_epoch(case.epoch)
    count = data.draw(st.sampled_from([c for c in (1, 2, 4) if case.batch_size % c == 0]))
    shards = [batches.shard(i, count) for i in range(count)]
    for shard in shards:
        assert len(shard) == len(batches)
        case.check(shard, case.epoch)
    for k in range(len(batches)):
        whole = batches[k]
        assert np.array_equal(whole.x, np.concatenate([s[k].x for s in shards]))
        assert np.array_equal(whole.reset, np.concatenate([s[k].reset for s in shards]))


def test_batch_k_holds_the_steps_at_the_cumulative_sums_of_the_lengths() -> None:
    lengths = [1, 4, 2, 7, 3]
    batches = seqbatch.StreamBatcher(
        np.arange(60), batch_size=2, sequence_length=lambda e, k: lengths[k % 5]
    )
    # 59 steps with a target, 29 per stream: windows of 1, 4, 2, 7, 3, 1, 4, 2, 7 (31 steps)
    # would not be full; the eighth window ends at step 24 of each stream.
    assert len(batches) == 8
    starts = np.cumsum([0] + [lengths[k % 5] for k in range(8)])
    stride = int(starts[-1])  # each stream holds the 24 steps of its full windows
    for k, b in enumerate(batches):
        assert b.length == lengths[k % 5]
        assert b.x.tolist() == [
            list(range(starts[k], starts[k + 1])),
            list(range(stride + starts[k], stride + starts[k + 1])),
        ]
        assert np.array_equal(b.y, b.x + 1)
    assert batches.plan.accounting.dropped == 59 - 2 * stride


def test_a_series_starts_on_a_window_boundary_and_pads_the_window_it_ends_in() -> None:
    # Series of 5 and 3 steps on one stream, windows of 2 then 3 then 2 ...: series 0 takes
    # windows 0 and 1 (5 steps), series 1 starts at window 2 (2 steps) and ends in window 3.
    data = [encoded_series(0, 5, (), "int64"), encoded_series(1, 3, (), "int64")]
    batches = seqbatch.StreamBatcher(
        data, None, batch_size=1, sequence_length=lambda e, k: (2, 3)[k % 2], remainder="pad"
    )
    got = [(b.x.tolist(), b.reset.tolist()) for b in batches]
    assert got == [
        ([[1000, 1001]], [True]),
        ([[1002, 1003, 1004]], [False]),
        ([[2000, 2001]], [True]),
        ([[2002, 0, 0]], [False]),
    ]


def test_len_follows_each_epochs_lengths_and_every_epoch_is_exact() -> None:
    schedule = seqbatch.lengths.awd(bptt=6, seed=3, minimum=1)
    batches = seqbatch.StreamBatcher(
        [encoded_series(s, n, (), "int64") for s, n in enumerate([40, 33, 29, 12, 8])],
        batch_size=2,
        sequence_length=schedule,
        series_boundary="pack",
        remainder="pad",
    )
    counts = set()
    for epoch in range(4):
        batches.set_epoch(epoch)
        counts.add(len(batches))
        case = VaryingCase(
            "pack", [40, 33, 29, 12, 8], Table((1,)), 2, "next", "pad", True, False, 0, epoch
        )
        widths = [b.length for b in batches]
        assert widths == [schedule(epoch, k) for k in range(len(batches))]
        assert sum(widths[:-1]) < 61 <= sum(widths)  # the longest stream holds 61 steps
        case.table = _Fixed(schedule, epoch)  # type: ignore[assignment]
        case.check(batches, epoch)
    assert len(counts) > 1  # the number of batches follows the lengths


class _Fixed:
    def __init__(self, schedule: seqbatch.lengths.Schedule, epoch: int) -> None:
        self.schedule, self.epoch = schedule, epoch

    def __call__(self, epoch: int, k: int) -> int:
        return self.schedule(epoch, k)


def test_lr_scale_is_length_over_nominal() -> None:
    data = np.arange(2000.0)
    batches = seqbatch.StreamBatcher(
        data, batch_size=3, sequence_length=seqbatch.lengths.awd(bptt=20, seed=1)
    )
    for b in batches:
        assert float(b.lr_scale) == b.length / 20
    # A plain callable has no nominal: the mean length of the epoch's windows.
    lengths = [3, 5, 10]
    plain = seqbatch.StreamBatcher(data, batch_size=3, sequence_length=lambda e, k: lengths[k % 3])
    widths = [b.length for b in plain]
    assert [float(b.lr_scale) for b in plain] == [w / np.mean(widths) for w in widths]
    assert seqbatch.StreamBatcher(data, batch_size=3, sequence_length=7)[0].lr_scale == 1.0


def test_awd_draws_the_papers_lengths_deterministically() -> None:
    schedule = seqbatch.lengths.awd(bptt=70, seed=5)
    drawn = schedule.draw(0, 0, 20000)
    assert drawn.min() >= 5 and drawn.dtype == np.int64
    half = drawn < 52  # N(35, 5) rarely reaches 52, N(70, 5) rarely falls below it
    assert 0.04 < half.mean() < 0.06
    assert abs(drawn[~half].mean() - 70) < 0.2 and abs(drawn[~half].std() - 5) < 0.2
    assert abs(drawn[half].mean() - 35) < 0.6
    # Per (seed, epoch, k): the same whatever run of batches it is drawn in.
    assert [schedule(0, k) for k in range(1020, 1030)] == drawn[1020:1030].tolist()
    assert schedule.draw(0, 1500, 1510).tolist() == drawn[1500:1510].tolist()
    assert schedule.draw(1, 0, 50).tolist() != drawn[:50].tolist()
    assert seqbatch.lengths.awd(bptt=70, seed=6).draw(0, 0, 50).tolist() != drawn[:50].tolist()


def test_warmup_grows_linearly_then_stays() -> None:
    schedule = seqbatch.lengths.warmup(10, 50, batches=4)
    assert [schedule(0, k) for k in range(7)] == [10, 20, 30, 40, 50, 50, 50]
    assert schedule(3, 0) == 50 and schedule.nominal == 50
    batches = seqbatch.StreamBatcher(np.arange(1000), batch_size=2, sequence_length=schedule)
    assert [b.length for b in batches[:6]] == [10, 20, 30, 40, 50, 50]


@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError), (None, TypeError)],
)
def test_a_bad_length_is_refused_naming_the_batch(value: object, error: type) -> None:
    def schedule(epoch: int, k: int) -> object:
        return value if k == 3 else 2

    with pytest.raises(error) as err:
        seqbatch.StreamBatcher(np.arange(100), batch_size=2, sequence_length=schedule)
    assert str(err.value) == (
        "`sequence_length` must return a positive int for every batch. Received: "
        f"sequence_length(epoch=0, k=3) = {value!r}"
    )


def test_sequence_length_must_be_an_int_or_a_callable() -> None:
    with pytest.raises(TypeError, match=r"a positive integer or a callable \(epoch, k\) -> int"):
        seqbatch.StreamBatcher(np.arange(100), batch_size=2, sequence_length="70")


def test_a_stream_without_a_full_window_is_refused() -> None:
    with pytest.raises(ValueError, match="stream 1 of 2 holds series"):
        seqbatch.StreamBatcher(
            [np.arange(30), np.arange(4)], None, batch_size=2, sequence_length=lambda e, k: 6
        )
    with pytest.raises(ValueError, match=r"sequence_length\(epoch=0, k=0\) = 6, but stream 1"):
        seqbatch.StreamBatcher(
            [np.arange(30), np.arange(4)],
            None,
            batch_size=2,
            sequence_length=lambda e, k: 6,
            series_boundary="pack",
        )


def test_a_series_shorter_than_its_window_is_dropped_whole_and_counted() -> None:
    data = [encoded_series(0, 12, (), "int64"), encoded_series(1, 3, (), "int64")]
    batches = seqbatch.StreamBatcher(data, None, batch_size=1, sequence_length=lambda e, k: 4)
    assert [b.x.tolist() for b in batches] == [
        [[1000, 1001, 1002, 1003]],
        [[1004, 1005, 1006, 1007]],
        [[1008, 1009, 1010, 1011]],
    ]
    assert batches.plan.accounting.dropped == 3


def test_resume_is_exact_and_a_state_of_another_schedule_is_refused() -> None:
    def build(seed: int) -> seqbatch.StreamBatcher:
        return seqbatch.StreamBatcher(
            np.arange(3000),
            batch_size=4,
            sequence_length=seqbatch.lengths.awd(bptt=12, seed=seed),
            shuffle=True,
            seed=9,
        )

    batches = build(1)
    batches.set_epoch(2)
    expected = [b.x for b in batches]
    saved = batches.state_dict(next_batch=5)
    again = build(1)
    again.load_state_dict(saved)
    assert again.epoch == 2
    got = [b.x for b in again]
    assert len(got) == len(expected) - 5
    assert all(np.array_equal(a, b) for a, b in zip(got, expected[5:], strict=True))
    with pytest.raises(ValueError, match="differs in sequence_length"):
        build(2).load_state_dict(saved)


def test_describe_says_the_lengths() -> None:
    batches = seqbatch.StreamBatcher(
        np.arange(500), batch_size=2, sequence_length=seqbatch.lengths.warmup(2, 10, batches=4)
    )
    text = batches.describe()
    assert "batches: 26 of 2 streams x 2 to 10 steps (mean 9.2, nominal 10: " in text
    assert "seqbatch.lengths.warmup(2, 10, batches=4)" in text


def _series_of(case: VaryingCase) -> list[np.ndarray]:
    return [encoded_series(s, n, case.features, "int64") for s, n in enumerate(case.lengths)]


@settings(max_examples=30)
@given(varying_cases())
def test_by_series_puts_varying_outputs_back_at_their_steps(case: VaryingCase) -> None:
    note(repr(case))
    batches = case.build()
    batches.set_epoch(case.epoch)
    served = list(batches)
    if case.return_sequences:
        outputs: object = [b.x for b in served]  # an output per step: the input itself
        real = sum(int(b.sample_weight.sum()) for b in served)  # (B, W) weights
    else:
        outputs = np.concatenate([b.x[:, -1] for b in served])  # the window's last step
        real = sum(
            int((b.sample_weight if b.sample_weight.ndim == 1 else b.sample_weight[:, -1]).sum())
            for b in served
        )
    back = batches.by_series(outputs)
    series = _series_of(case)
    assert len(back) == len(series)
    shown = 0
    for s, (out, want) in enumerate(zip(back, series, strict=True)):
        assert out.shape == want.shape, s
        held = ~np.ma.getmaskarray(out)
        np.testing.assert_array_equal(out.data[held], want[held])  # each at its own step
        shown += int(held.reshape(len(want), -1)[:, 0].sum())
    assert shown == real  # every real step (or window's last step) came back, once


@settings(max_examples=30)
@given(varying_cases())
def test_series_end_names_the_last_step_of_each_series_when_the_lengths_vary(
    case: VaryingCase,
) -> None:
    note(repr(case))
    batches = case.build()
    batches.set_epoch(case.epoch)
    served = list(batches)
    last: dict[int, int] = {}  # series -> its last input step, decoded from the batches
    for b in served:
        codes = decode(b.x, case.features)
        held = codes > 0 if b.sample_weight.ndim == 1 else b.sample_weight > 0
        for code in codes[held & (codes > 0)].tolist():
            s, t = divmod(code, SERIES_STRIDE)
            last[s - 1] = max(last.get(s - 1, -1), t)
    for s in range(len(case.lengths)):
        if s not in last:
            with pytest.raises(ValueError, match="`series` must have steps in the batches"):
                batches.series_end(s)
            continue
        end = batches.series_end(s)
        code = decode(served[end.batch].x[end.stream, end.step], case.features)
        assert int(code) == SERIES_STRIDE * (s + 1) + last[s] and end.position == last[s]
        first = served[end.first_batch]
        if first.step_reset is not None:
            assert first.step_reset[end.stream, end.first_step]
        else:
            assert first.reset[end.stream] and end.first_step == 0


def test_the_plan_command_takes_a_schedule_and_burn_in(capsys: pytest.CaptureFixture) -> None:
    from seqbatch.__main__ import main

    args = ["plan", "--series", "50", "40", "33", "21", "--batch-size", "2", "--remainder"]
    assert main([*args, "pad", "--sequence-length", "warmup:2:10:5", "--burn-in", "3"]) == 0
    text = capsys.readouterr().out
    want = seqbatch.StreamBatcher(
        [np.zeros(n, "float32") for n in (50, 40, 33, 21)],
        batch_size=2,
        sequence_length=seqbatch.lengths.warmup(2, 10, 5),
        remainder="pad",
        burn_in=3,
    )
    assert text.strip() == want.describe()
    assert "x (2, 3 + 2 to 10) float32" in text
    assert main([*args, "pad", "--sequence-length", "awd:20:4"]) == 0
    assert "seqbatch.lengths.awd(bptt=20, seed=4," in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*args, "pad", "--sequence-length", "awd:0"])
    assert "`bptt` must be a positive" in capsys.readouterr().err
