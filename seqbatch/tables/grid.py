"""Gaps in a regular time grid: what a model fed consecutive rows would not know.

A stateful model takes row ``t + 1`` of a series as the step right after row ``t``. When the
times of a series skip a point of its grid (a day without a reading), the model sees two
days as one step: nothing in the batches says so. The gaps are found here, from the
differences of consecutive times within each series, and reported by ``describe()`` and
:attr:`seqbatch.tables.TableBatcher.gaps`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Distinct time differences kept; more means times that are on no grid at all.
_MOST_DIFFERENCES = 10_000


@dataclass(frozen=True)
class Gaps:
    """The time grid of a table and the points of it that are missing.

    Attributes:
        step: the grid step, the smallest difference between consecutive times of a series
            (in the time column's units: an int, or ``numpy.timedelta64``); None when no
            series has two rows.
        missing: grid points missing inside series (a difference of ``3 * step`` misses 2).
        series: how many series miss at least one point (or are off the grid); counted
            from the chunk where the step was first seen, when the data is read in chunks.
        off_grid: differences that are not a multiple of ``step``: times on no regular grid.
        first: where the first gap is, in words, or ``""``.
    """

    step: object
    missing: int
    series: int
    off_grid: int
    first: str

    def __str__(self) -> str:
        if self.step is None:
            return "no series has two rows"
        if not (self.missing or self.off_grid):
            return f"on a regular grid of step {self.step}, with no gap"
        off = f", {self.off_grid} differences off the grid" if self.off_grid else ""
        return (
            f"grid step {self.step}: {self.missing} points missing in {self.series} series"
            f"{off} (first: {self.first}); the model takes consecutive rows for consecutive "
            "steps"
        )


class GridCheck:
    """Counts of the differences between consecutive times within series, added by chunks."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.first_row: dict[int, int] = {}  # the first row that follows a difference
        self.series_with: dict[int, set[int]] = {}
        self.too_many = False

    def add(self, diff: np.ndarray, same: np.ndarray, first_row: int, series_of: object) -> None:
        """Differences ``diff[i]`` between row ``i`` and the row before it, where ``same[i]``
        says they are of one series (the others are ignored); the chunk starts at global row
        ``first_row``, and ``series_of(indices)`` gives the series of rows of the chunk."""
        assert callable(series_of)
        if self.too_many or not same.any():
            return
        # Most differences are the step: only the others are looked at one by one.
        smallest = int(np.min(diff, where=same, initial=np.iinfo(np.int64).max))
        odd = np.flatnonzero(same & (diff != smallest))
        self.counts[smallest] = self.counts.get(smallest, 0) + int(same.sum()) - len(odd)
        self.first_row.setdefault(smallest, first_row + int(np.argmax(same & (diff == smallest))))
        values, first, counts = np.unique(diff[odd], return_index=True, return_counts=True)
        series = np.asarray(series_of(odd))
        for v, i, n in zip(values.tolist(), first.tolist(), counts.tolist(), strict=True):
            self.counts[v] = self.counts.get(v, 0) + n
            self.first_row.setdefault(v, first_row + int(odd[i]))
            self.series_with.setdefault(v, set()).update(np.unique(series[diff[odd] == v]).tolist())
        if len(self.counts) > _MOST_DIFFERENCES:
            self.too_many = True

    def gaps(self, describe_row: object, unit: object) -> Gaps:
        """The summary; ``describe_row(row)`` says where a row is, ``unit(ticks)`` the step."""
        assert callable(describe_row) and callable(unit)
        if not self.counts:
            return Gaps(None, 0, 0, 0, "")
        step = min(self.counts)
        if self.too_many:
            return Gaps(unit(step), 0, 0, sum(self.counts.values()), "times on no grid")
        missing = off = 0
        series: set[int] = set()
        first = None
        for v, n in self.counts.items():
            if v == step:
                continue
            if v % step:
                off += n
            else:
                missing += n * (v // step - 1)
            series |= self.series_with.get(v, set())
            row = self.first_row[v]
            first = row if first is None else min(first, row)
        return Gaps(
            unit(step), missing, len(series), off, "" if first is None else describe_row(first)
        )
