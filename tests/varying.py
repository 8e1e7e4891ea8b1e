"""Window lengths that vary: a drawn schedule, and data that fills the streams under it.

The schedule is the test's own: a table of lengths read in turn, shifted by the epoch, so
that the expected length of batch ``k`` of epoch ``e`` is known without the code under test.
The data encodes its positions (``tests/encoded.py``) and is checked by ``check_epoch`` and
``check_packed_epoch`` with the schedule's widths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

import seqbatch
from tests.encoded import check_epoch, check_packed_epoch, encoded_series
from tests.lazy import SliceOnly


@dataclass(frozen=True)
class Table:
    """``(epoch, k) -> table[(k + epoch) % len(table)]``: a pure schedule."""

    table: tuple[int, ...]

    def __call__(self, epoch: int, k: int) -> int:
        return self.table[(k + epoch) % len(self.table)]


@dataclass
class VaryingCase:
    layout: str  # "single", "reset", "concat", "pack", or "pack1" (one array, packed)
    lengths: list[int]
    table: Table
    batch_size: int
    targets: Any  # None, "next", an int, or "arrays"
    remainder: str
    return_sequences: bool
    shuffle: bool
    seed: int
    epoch: int
    features: tuple[int, ...] = ()
    lazy: bool = False
    align: str = "start"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def shift(self) -> int:
        if self.targets == "next":
            return 1
        return self.targets if isinstance(self.targets, int) else 0

    def build(self) -> seqbatch.StreamBatcher:
        series: list[Any] = [
            encoded_series(s, n, self.features, "int64") for s, n in enumerate(self.lengths)
        ]
        targets: Any = self.targets
        if targets == "arrays":
            targets = [-s for s in series]
            targets = targets[0] if self.layout in ("single", "pack1") else targets
        if self.lazy:
            series = [SliceOnly(s) for s in series]
        data = series[0] if self.layout in ("single", "pack1") else series
        boundary = {"single": "reset", "reset": "reset", "concat": "concat", "pack": "pack"}
        boundary["pack1"] = "pack"
        return seqbatch.StreamBatcher(
            data,
            targets,
            batch_size=self.batch_size,
            sequence_length=self.table,
            return_sequences=self.return_sequences,
            remainder=self.remainder,
            align=self.align,
            series_boundary=boundary[self.layout],
            shuffle=self.shuffle,
            seed=self.seed,
            **self.extra,
        )

    def check(self, batches: seqbatch.StreamBatcher, epoch: int) -> dict[str, int]:
        """Walk epoch ``epoch`` of ``batches`` through the invariant's checker."""
        args: dict[str, Any] = {
            "features": self.features,
            "shift": self.shift,
            "target_arrays": self.targets == "arrays",
            "window": lambda k: self.table(epoch, k),
        }
        if self.layout in ("pack", "pack1"):
            single = self.layout == "pack1"
            return check_packed_epoch(batches, self.lengths, single=single, **args)
        return check_epoch(batches, self.lengths, concat=self.layout == "concat", **args)


@st.composite
def varying_cases(
    draw: st.DrawFn,
    layouts: tuple[str, ...] = ("single", "reset", "concat", "pack", "pack1"),
) -> VaryingCase:
    """A drawn schedule (lengths of 1 among them, and longer than some series) and data that
    fills the streams under every epoch's first window, decided from the rules."""
    layout = draw(st.sampled_from(layouts))
    table = Table(tuple(draw(st.lists(st.integers(1, 12), min_size=1, max_size=6))))
    B = draw(st.integers(1, 4))
    targets = draw(st.sampled_from([None, "next", 2, "arrays"]))
    shift = {"next": 1, 2: 2}.get(targets, 0)
    remainder = draw(st.sampled_from(["drop", "pad"]))
    shuffle = draw(st.booleans())
    longest = max(table.table)
    if layout in ("single", "concat", "pack1"):
        # The first window of an epoch is at most `longest` steps, and a shuffled cut starts
        # up to its length - 1 steps in.
        slack = longest - 1 if shuffle else 0
        need = shift + (B * longest + slack if remainder == "drop" else B + slack)
        total = draw(st.integers(need, need + 150))
        if layout != "concat":
            lengths = [total]
        else:
            lengths = draw(st.lists(st.integers(1, 40), min_size=1, max_size=6))
            lengths[-1] += max(0, total - sum(lengths))
    else:
        # The B longest series, dealt first, one per stream, each fill a first window; the
        # others are any length (shorter than some windows too).
        long = draw(
            st.lists(st.integers(longest + shift, longest + shift + 30), min_size=B, max_size=B)
        )
        short = draw(st.lists(st.integers(shift + 1, shift + 20), max_size=6))
        lengths = draw(st.permutations(long + short))
    align = "start"
    if remainder == "drop" and layout != "pack":
        align = draw(st.sampled_from(["start", "end"]))
    return VaryingCase(
        layout=layout,
        lengths=list(lengths),
        table=table,
        batch_size=B,
        targets=targets,
        remainder=remainder,
        return_sequences=draw(st.booleans()),
        shuffle=shuffle,
        seed=draw(st.integers(0, 2**32 - 1)),
        epoch=draw(st.integers(0, 4)),
        features=draw(st.sampled_from([(), (2,)])),
        lazy=draw(st.booleans()),
        align=align,
    )
