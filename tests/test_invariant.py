"""Property-based proof of the alignment invariant (docs/concepts.md, "The invariant"), clause by clause.

Each example draws a dataset (one series, or many series of unequal lengths, reset or
concat), the batch size, window, targets, remainder, return_sequences, shuffle seed and epoch.
The properties of the batches draw data that fills the streams (``cases(fill=True)``, its
lengths drawn from the rules, never from the code) and walk whole epochs through
``check_epoch``; one property draws data that cannot fill them and expects the documented
error, decided from the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

import seqbatch
from tests.encoded import check_epoch, encoded_series
from tests.lazy import SliceOnly

FEATURES = [(), (1,), (3,), (2, 2)]
DTYPES = ["int64", "float32", "float64", "int32"]


@dataclass
class Case:
    lengths: list[int]
    single: bool
    concat: bool
    features: tuple[int, ...]
    dtype: str
    batch_size: int
    sequence_length: int
    targets: str | int | None  # "arrays" stands for target arrays
    remainder: str
    return_sequences: bool
    shuffle: bool
    seed: int
    epoch: int
    lazy: bool = False  # series behind a slice-only object, as h5py and zarr datasets are
    align: str = "start"  # "end": windows end at each series' newest step (remainder="drop")
    byte_order: str = "="  # "<" or ">": the data's dtype in that byte order

    @property
    def shift(self) -> int:
        if self.targets == "next":
            return 1
        return self.targets if isinstance(self.targets, int) else 0

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype).newbyteorder(self.byte_order)

    def data(self) -> Any:
        series: list[Any] = [
            encoded_series(s, n, self.features, self.dtype).astype(self.np_dtype)
            for s, n in enumerate(self.lengths)
        ]
        if self.lazy:
            series = [SliceOnly(s) for s in series]
        return series[0] if self.single else series

    def target_arg(self) -> Any:
        if self.targets != "arrays":
            return self.targets
        arrays = [
            (-encoded_series(s, n, self.features, self.dtype)).astype(self.np_dtype)
            for s, n in enumerate(self.lengths)
        ]
        return arrays[0] if self.single else arrays

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the batcher, after the data and the targets."""
        return {
            "batch_size": self.batch_size,
            "sequence_length": self.sequence_length,
            "return_sequences": self.return_sequences,
            "remainder": self.remainder,
            "align": self.align,
            "series_boundary": "concat" if self.concat else "reset",
            "shuffle": self.shuffle,
            "seed": self.seed,
        }

    def build(self) -> seqbatch.StreamBatcher:
        return seqbatch.StreamBatcher(self.data(), self.target_arg(), **self.kwargs())

    def fillable(self) -> bool:
        """Whether the data can fill the streams: decided from the rules, not the code."""
        B, W = self.batch_size, self.sequence_length
        if self.align == "end" and self.remainder == "pad":
            return False  # padding would precede the data: refused
        usable = [n - self.shift for n in self.lengths]
        if self.single or self.concat:
            n = sum(self.lengths) - self.shift
            # A shuffled cut starts up to W - 1 steps in, and always holds n - (W - 1) steps.
            cut = n - (W - 1) if self.shuffle else n
            if self.remainder == "pad":
                return n >= W and cut >= B
            return cut >= B * W
        if min(usable) < 1 or len(usable) < B:
            return False
        if self.remainder == "pad":
            return max(usable) >= W  # a window longer than every series is refused
        return min(usable) >= W

    def refusal(self) -> str:
        """The start of the error that data which cannot fill the streams is refused with.

        Decided from the rules, in the order the batcher checks them.
        """
        B, W = self.batch_size, self.sequence_length
        one = self.single or self.concat
        usable = [sum(self.lengths) - self.shift] if one else [n - self.shift for n in self.lengths]
        if min(usable) < 1:
            return (
                "Every series must be longer than `targets` steps ahead, or no step has a "
                f"target. Received: targets={self.shift}, but series "
            )
        if self.align == "end" and self.remainder == "pad":
            return "`align='end'` needs remainder='drop' and a layout other than packing"
        if self.remainder == "pad" and max(usable) < W:
            return (
                "`sequence_length` must not exceed the longest series when remainder='pad'. "
                f"Received: sequence_length={W} for series of at most {max(usable)} usable steps"
            )
        if one:
            more = " + sequence_length - 1" if self.shuffle else ""
            if self.remainder == "drop":
                return (
                    f"`batch_size * sequence_length{more}` must not exceed the usable steps of "
                    f"the series ({usable[0]}) when remainder='drop'"
                )
            return (
                f"`batch_size{more}` must not exceed the usable steps of the series ({usable[0]})"
            )
        if len(usable) < B:
            return (
                "`batch_size` must not exceed the number of series when series_boundary='reset', "
                f"since a series never leaves its stream. Received: batch_size={B} for "
                f"{len(usable)} series"
            )
        short = next(i for i, n in enumerate(usable) if n < W)
        return (
            "Every series must have at least `sequence_length` usable steps when "
            f"remainder='drop'. Received: sequence_length={W}, but series {short} has "
            f"{usable[short]} usable steps"
        )

    def check(self, batches: seqbatch.StreamBatcher) -> dict[str, int]:
        return check_epoch(
            batches,
            self.lengths,
            features=self.features,
            shift=self.shift,
            target_arrays=self.targets == "arrays",
            concat=self.concat and not self.single,
        )


def filling_lengths(
    draw: st.DrawFn,
    layout: str,
    B: int,
    W: int,
    shift: int,
    remainder: str,
    shuffle: bool,
    longest: int = 400,
) -> list[int]:
    """Lengths of series that fill ``B`` streams of ``W`` steps, drawn from the rules.

    One series is at most ``longest`` steps long, unless the streams need more.
    """
    if layout in ("single", "concat"):
        # A shuffled cut starts up to W - 1 steps in; padded, each stream needs one step.
        slack = W - 1 if shuffle else 0
        need = shift + (B * W + slack if remainder == "drop" else max(W, B + slack))
        if layout == "single":
            return [draw(st.integers(need, max(need, longest)))]
        lengths = draw(st.lists(st.integers(1, 60), min_size=1, max_size=9))
        lengths[-1] += max(0, need - sum(lengths))
        return lengths
    # A series per stream at least, each with a usable step; dropped, each a whole window.
    low = shift + (W if remainder == "drop" else 1)
    lengths = draw(st.lists(st.integers(low, max(low, 60)), min_size=B, max_size=max(B, 9)))
    if remainder == "pad" and max(lengths) - shift < W:
        lengths[draw(st.integers(0, len(lengths) - 1))] = shift + W  # one window fits
    return lengths


@st.composite
def cases(
    draw: st.DrawFn,
    layouts: tuple[str, ...] = ("single", "reset", "concat"),
    *,
    fill: bool = False,
    shuffle: bool | None = None,
) -> Case:
    """A dataset and the batcher's arguments; with ``fill``, data that fills the streams."""
    layout = draw(st.sampled_from(layouts))
    lengths: list[int] = []  # with fill, drawn below from the sizes
    if not fill and layout == "single":
        lengths = [draw(st.integers(1, 400))]
    elif not fill:
        lengths = draw(st.lists(st.integers(1, 60), min_size=1, max_size=9))
    case = Case(
        lengths=lengths,
        single=layout == "single",
        concat=layout == "concat",
        features=draw(st.sampled_from(FEATURES)),
        dtype=draw(st.sampled_from(DTYPES)),
        batch_size=draw(st.integers(1, 6)),
        sequence_length=draw(st.integers(1, 12)),
        targets=draw(st.sampled_from([None, "next", 1, 2, 3, "arrays"])),
        remainder=draw(st.sampled_from(["drop", "pad"])),
        return_sequences=draw(st.booleans()),
        shuffle=draw(st.booleans()) if shuffle is None else shuffle,
        seed=draw(st.integers(0, 2**32 - 1)),
        epoch=draw(st.integers(0, 5)),
        lazy=draw(st.booleans()),
        byte_order=draw(st.sampled_from(["=", "<", ">"])),
        align=draw(st.sampled_from(["start", "end"])),
    )
    if fill:
        if case.remainder == "pad":
            case.align = "start"  # aligned to the end, padding would precede the data
        case.lengths = filling_lengths(
            draw,
            layout,
            case.batch_size,
            case.sequence_length,
            case.shift,
            case.remainder,
            case.shuffle,
        )
        assert case.fillable(), "filling_lengths and fillable() disagree on the rules"
    return case


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
    for k in range(len(batches)):
        whole = batches[k]
        parts = [s[k] for s in shards]
        for field in ("x", "y", "sample_weight", "reset", "series", "position"):
            if getattr(whole, field) is None:
                assert all(getattr(p, field) is None for p in parts)
                continue
            joined = np.concatenate([getattr(p, field) for p in parts])
            assert np.array_equal(joined, getattr(whole, field)), field
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
