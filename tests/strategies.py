"""Hypothesis strategies of datasets and batcher arguments, shared by the property tests.

Each case draws its lengths from the rules of docs/concepts.md, never from the code under test.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

import seqbatch
from tests.encoded import check_epoch, check_packed_epoch, encoded_series
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


def one_by_one_loads(sizes: list[int], streams: int) -> list[int]:
    """The loads of the streams, each item in turn onto the least loaded one (a heap)."""
    heap = [(0, s) for s in range(streams)]
    for size in sorted(sizes, reverse=True):
        load, s = heapq.heappop(heap)
        heapq.heappush(heap, (load + size, s))
    return sorted(load for load, _ in heap)


@dataclass
class PackCase(Case):
    def build(self) -> seqbatch.StreamBatcher:
        return seqbatch.StreamBatcher(
            self.data(),
            self.target_arg(),
            batch_size=self.batch_size,
            sequence_length=self.sequence_length,
            return_sequences=self.return_sequences,
            remainder=self.remainder,  # type: ignore[arg-type]
            series_boundary="pack",
            shuffle=self.shuffle,
            seed=self.seed,
        )

    @property
    def usable(self) -> list[int]:
        return [n - self.shift for n in self.lengths]

    def fillable(self) -> bool:
        """Whether the data can fill the streams: decided from the rules, not the code."""
        B, W = self.batch_size, self.sequence_length
        if self.single:
            n = self.usable[0]
            # A shuffled cut starts up to W - 1 steps in, and always holds n - (W - 1) steps.
            cut = n - (W - 1) if self.shuffle else n
            if self.remainder == "pad":
                return n >= W and cut >= B
            return cut >= B * W
        if min(self.usable) < 1 or len(self.lengths) < B:
            return False
        loads = one_by_one_loads(self.usable, B)
        # Padded: a window longer than every stream is refused; dropped: every stream fills one.
        return max(loads) >= W if self.remainder == "pad" else min(loads) >= W

    def refusal(self) -> str:
        """The start of the error that data which cannot fill the streams is refused with."""
        if self.single or min(self.usable) < 1:
            return super().refusal()  # one array is cut into streams as without packing
        B, W = self.batch_size, self.sequence_length
        if len(self.lengths) < B:
            return (
                "`batch_size` must not exceed the number of series when series_boundary='pack', "
                f"since a series never leaves its stream. Received: batch_size={B} for "
                f"{len(self.lengths)} series"
            )
        loads = one_by_one_loads(self.usable, B)
        if self.remainder == "pad":
            return (
                "`sequence_length` must not exceed the longest stream when remainder='pad'. "
                f"Received: sequence_length={W} for streams of at most {max(loads)} usable steps"
            )
        return (
            "Every stream must hold at least `sequence_length` usable steps when "
            f"series_boundary='pack' and remainder='drop'. Received: sequence_length={W}, but "
            f"stream "
        )

    def check(self, batches: seqbatch.StreamBatcher) -> dict[str, int]:
        return check_packed_epoch(
            batches,
            self.lengths,
            features=self.features,
            shift=self.shift,
            target_arrays=self.targets == "arrays",
            single=self.single,
        )


@st.composite
def packed_cases(
    draw: st.DrawFn,
    single: bool | None = None,
    *,
    fill: bool = False,
    remainder: str | None = None,
    shuffle: bool | None = None,
) -> PackCase:
    """A dataset and the arguments of packed batches; with ``fill``, data that fills the streams."""
    if single is None:
        single = draw(st.integers(0, 4)) == 0
    lengths: list[int] = []  # with fill, drawn below from the sizes
    if not fill and single:
        lengths = [draw(st.integers(1, 300))]
    elif not fill:
        lengths = draw(st.lists(st.integers(1, 40), min_size=1, max_size=14))
    case = PackCase(
        lengths=lengths,
        single=single,
        concat=False,
        features=draw(st.sampled_from(FEATURES)),
        dtype=draw(st.sampled_from(DTYPES)),
        batch_size=draw(st.integers(1, 6)),
        sequence_length=draw(st.integers(1, 12)),
        targets=draw(st.sampled_from([None, "next", 1, 2, 3, "arrays"])),
        remainder=draw(st.sampled_from(["drop", "pad"])) if remainder is None else remainder,
        return_sequences=draw(st.booleans()),
        shuffle=draw(st.booleans()) if shuffle is None else shuffle,
        seed=draw(st.integers(0, 2**32 - 1)),
        epoch=draw(st.integers(0, 5)),
        lazy=draw(st.booleans()),
    )
    if fill:
        B, W, shift = case.batch_size, case.sequence_length, case.shift
        if single:
            lengths = filling_lengths(
                draw, "single", B, W, shift, case.remainder, case.shuffle, 300
            )
            case.lengths = lengths
        else:
            # A series per stream, each with a usable step. Whether the streams then fill
            # depends on the deal (short series share a stream): the few that do not are
            # drawn again.
            case.lengths = draw(
                st.lists(st.integers(shift + 1, shift + 40), min_size=B, max_size=max(B, 14))
            )
            assume(case.fillable())
    return case
