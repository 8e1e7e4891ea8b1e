"""The vectorised longest-first deal gives exactly the streams of dealing one item at a time,
and the segment index finds exactly the segments a binary search finds."""

from __future__ import annotations

import heapq

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from seqbatch.deal import longest_first
from seqbatch.segments import SegmentIndex


def one_by_one(sizes: list[int], count: int) -> tuple[list[int], list[int]]:
    """Each item in turn onto the least loaded stream, the lowest on a tie: a heap."""
    heap = [(0, s) for s in range(count)]
    stream = []
    for size in sizes:
        load, s = heapq.heappop(heap)
        stream.append(s)
        heapq.heappush(heap, (load + size, s))
    loads = [0] * count
    for load, s in heap:
        loads[s] = load
    return stream, loads


sizes_lists = st.one_of(
    st.lists(st.integers(1, 4), min_size=1, max_size=300),  # long runs of equal sizes
    st.lists(st.integers(1, 10**6), min_size=1, max_size=300),  # nearly all distinct
    st.lists(st.sampled_from([1, 2, 3, 500, 10**4]), min_size=1, max_size=300),  # far apart
)


@given(sizes_lists, st.integers(1, 40))
def test_longest_first_matches_dealing_one_item_at_a_time(sizes: list[int], count: int) -> None:
    sizes = sorted(sizes, reverse=True)
    stream, loads = longest_first(np.array(sizes), count)
    assert (stream.tolist(), loads.tolist()) == one_by_one(sizes, count)


def test_longest_first_deals_a_million_items_onto_thousands_of_streams() -> None:
    rng = np.random.default_rng(0)
    sizes = np.sort(rng.integers(10, 1001, 10**6))[::-1]
    stream, loads = longest_first(sizes, 4096)
    assert np.array_equal(np.bincount(stream, weights=sizes, minlength=4096), loads)
    # The proven bound: the most loaded stream is at most one item above the mean.
    assert loads.max() <= sizes.sum() / 4096 + sizes.max()


@given(
    st.lists(st.lists(st.integers(1, 30), min_size=1, max_size=20), min_size=1, max_size=8),
    st.integers(0, 3),
)
def test_the_segment_index_finds_what_a_binary_search_finds(
    streams: list[list[int]], offset_scale: int
) -> None:
    """Stream i holds segments of the given sizes one after another."""
    B = len(streams)
    stream = np.repeat(np.arange(B), [len(s) for s in streams])
    local = np.concatenate([np.cumsum([0, *s[:-1]]) for s in streams])
    span = max(sum(s) for s in streams)
    offset = np.arange(B, dtype=np.int64) * offset_scale * span
    index = SegmentIndex(local + offset[stream], offset, stream, span)
    for i, sizes in enumerate(streams):
        positions = np.arange(sum(sizes))
        expected = np.searchsorted(np.cumsum(sizes), positions, side="right")
        found = index.find(np.full(positions.size, i), positions)
        assert (found - np.flatnonzero(stream == i)[0]).tolist() == expected.tolist()
