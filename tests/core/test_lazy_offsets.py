"""``from_offsets`` over a lazy array (an h5py or zarr dataset): read window by window.

A lazy array reads what a slice asks for. Series ``s`` of ``values`` cut by offsets must stay
unread until a window of it is sliced, so that an epoch reads about its steps once (x, and y
when the targets are read apart), not each series once per window of it.
"""

from __future__ import annotations

import numpy as np
import pytest

import seqbatch
from tests.encoded import check_epoch, check_packed_epoch, encoded_series
from tests.same import assert_same_batches

LENGTHS = [300, 41, 257, 120, 99, 233]  # long against the window: many windows per series
KW = {"batch_size": 3, "sequence_length": 7, "remainder": "pad"}


class Counting:
    """A slice-only array, as an h5py dataset is, that records every row it is asked for."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array
        self.shape = array.shape
        self.dtype = array.dtype
        self.slices: list[tuple[int, int]] = []

    def __getitem__(self, key: slice) -> np.ndarray:
        assert isinstance(key, slice) and key.step is None, key
        start, stop, _ = key.indices(self.shape[0])
        self.slices.append((start, stop))
        return self._array[key].copy()

    @property
    def rows(self) -> int:
        return sum(max(0, b - a) for a, b in self.slices)


def values() -> np.ndarray:
    return np.concatenate([encoded_series(s, n, (), "int64") for s, n in enumerate(LENGTHS)])


@pytest.mark.parametrize("boundary", ["reset", "pack", "concat"])
@pytest.mark.parametrize("targets", [None, "next", "arrays"])
def test_an_epoch_reads_each_step_about_once(boundary: str, targets: str | None) -> None:
    flat = values()
    lazy = Counting(flat)
    lazy_targets = Counting(-flat) if targets == "arrays" else targets
    kw = {**KW, "series_boundary": boundary}
    batches = seqbatch.StreamBatcher.from_offsets(lazy, lengths=LENGTHS, targets=lazy_targets, **kw)
    assert lazy.slices == []  # building reads nothing
    in_memory = seqbatch.StreamBatcher.from_offsets(
        flat, lengths=LENGTHS, targets=-flat if targets == "arrays" else targets, **kw
    )
    assert_same_batches(batches, in_memory)
    steps = len(flat)
    # x once; y, `shift` steps on in the same array, once more ("next"), or from its own.
    reads = 2 if targets == "next" else 1
    windows = sum(-(-n // KW["sequence_length"]) for n in LENGTHS)
    assert lazy.rows <= reads * steps + windows, (lazy.rows, steps)
    if targets == "arrays":
        assert isinstance(lazy_targets, Counting)
        assert lazy_targets.rows <= steps + windows
    # Every slice is of one window's rows (plus a packed run's step ahead), never a series.
    widest = max(b - a for a, b in lazy.slices)
    assert widest <= KW["sequence_length"] + 1, widest


@pytest.mark.parametrize("boundary", ["reset", "pack", "concat"])
def test_batches_over_a_lazy_array_keep_the_invariant(boundary: str) -> None:
    lazy = Counting(values())
    batches = seqbatch.StreamBatcher.from_offsets(
        lazy, lengths=LENGTHS, **{**KW, "series_boundary": boundary}
    )
    args = {"features": (), "shift": 1, "target_arrays": False}
    if boundary == "pack":
        check_packed_epoch(batches, LENGTHS, single=False, **args)
    else:
        check_epoch(batches, LENGTHS, concat=boundary == "concat", **args)


def test_a_series_reads_nothing_until_a_window_of_it_is_sliced() -> None:
    lazy = Counting(values())
    batches = seqbatch.StreamBatcher.from_offsets(lazy, lengths=LENGTHS, targets=None, **KW)
    series = batches.sources[2]
    assert series.shape == (LENGTHS[2],) and lazy.slices == []
    start = LENGTHS[0] + LENGTHS[1]
    np.testing.assert_array_equal(series[5:9], values()[start + 5 : start + 9])
    assert lazy.slices == [(start + 5, start + 9)]
    np.testing.assert_array_equal(np.asarray(series), values()[start : start + LENGTHS[2]])
    with pytest.raises(TypeError, match="contiguous slices"):
        series[::2]
