"""Dealing series onto streams: longest first, each onto the least loaded stream.

The rule is the classic greedy of scheduling (LPT): take the items in order of non-increasing
size and put each onto the stream whose load is the smallest so far, the lowest stream on a
tie. Its balance is proven: the most loaded stream ends at most one item above the mean
(the stream that got the last item of the most loaded stream was the least loaded then, so
at most the mean). Placing one item at a time costs a heap operation per item in Python,
about a second per million series; :func:`longest_first` gives the very same streams in a few
vectorised steps, each of which places many items at once:

* a *band* step: while the items are larger than the spread of the least loaded streams'
  loads, the greedy rule gives the ``j``-th item to the ``j``-th least loaded stream, so a
  whole band is dealt with one sort of the loads;
* a *level* step: a run of equal items is a merge of arithmetic sequences (stream ``s`` can
  take its next item at load ``load[s] + c * size``, ``c = 0, 1, ...``), and the run takes
  the smallest of those loads, in order, which integer arithmetic finds without a loop.
"""

from __future__ import annotations

import numpy as np


def deal(
    sizes: np.ndarray, count: int, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deal series onto ``count`` streams, longest first, and order each stream's series.

    Args:
        sizes: ``(S,)`` positive integers, the load each series puts on its stream.
        count: the number of streams.
        rng: when given, shuffle: equal sizes are dealt in a random order, the streams are
            renumbered at random, and each stream holds its series in a random order. The loads
            stay those of the unshuffled deal, renumbered.

    Returns:
        ``(order, stream, loads)``: ``(S,)`` the series sorted by stream, each stream's in the
        order it holds them (by index, unless shuffled); ``(S,)`` the stream of each series of
        ``order``; ``(count,)`` the load of each stream.

    Examples:
        Sizes 5, 3, 3, 2 in turn: 5 and the first 3 start the streams, the second 3 joins
        the lighter stream 1, and 2 then joins stream 0:

        >>> order, stream, loads = deal(np.array([2, 5, 3, 3]), 2)
        >>> order.tolist(), stream.tolist(), loads.tolist()
        ([0, 1, 2, 3], [0, 0, 1, 1], [7, 6])
    """
    S = sizes.size
    tie = rng.permutation(S) if rng is not None else None
    dealt = _sort_by(sizes.max() - sizes, tie)
    stream_of = np.empty(S, dtype=np.int64)
    stream_of[dealt], loads = longest_first(sizes[dealt], count)
    del dealt, tie
    within = None
    if rng is not None:
        renumber = rng.permutation(count)
        stream_of = renumber[stream_of]
        loads[renumber] = loads.copy()
        within = rng.permutation(S)
    order = _sort_by(stream_of, within)
    return order, stream_of[order], loads


def _sort_by(key: np.ndarray, tie: np.ndarray | None) -> np.ndarray:
    """``np.lexsort((tie, key))`` for non-negative integer keys and a permutation ``tie``
    (None: by index), in a third of the time: one stable sort, a radix sort for small keys."""
    small = key.astype(np.min_scalar_type(int(key.max())))
    if tie is None:
        return np.argsort(small, kind="stable")
    by_tie = np.empty_like(tie)
    by_tie[tie] = np.arange(tie.size)
    return by_tie[np.argsort(small[by_tie], kind="stable")]


def longest_first(sizes: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Deal items onto ``count`` streams, each onto the least loaded stream so far.

    Args:
        sizes: ``(n,)`` positive integers in dealing order, which must be non-increasing.
        count: the number of streams.

    Returns:
        ``(stream, loads)``: ``(n,)`` int64, the stream of each item, and ``(count,)`` int64,
        the sum of the sizes each stream received. Ties go to the lowest stream: exactly the
        streams of placing the items one by one with a heap of ``(load, stream)``.

    Examples:
        >>> stream, loads = longest_first(np.array([5, 4, 3, 3, 2]), 2)
        >>> stream.tolist(), loads.tolist()
        ([0, 1, 1, 0, 1], [8, 9])
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    n = sizes.size
    stream = np.empty(n, dtype=np.int64)
    loads = np.zeros(count, dtype=np.int64)
    # Runs of equal sizes: run r is [bounds[r], bounds[r + 1]).
    bounds = np.concatenate(([0], np.flatnonzero(sizes[1:] != sizes[:-1]) + 1, [n]))
    run = 0
    i = 0
    while i < n:
        while bounds[run + 1] <= i:
            run += 1
        order = np.argsort(loads, kind="stable")  # by (load, stream)
        ahead = sizes[i : i + count]
        least = loads[order[: ahead.size]]
        # Item i + j goes to the j-th least loaded stream while that stream is below every
        # stream already given an item of the band: least[j] < least[0] + ahead[j] suffices,
        # and both sides are monotone in j, so the band is a prefix.
        band = int(np.count_nonzero(least - least[0] < ahead))
        end = int(bounds[run + 1])
        if end - i > band:
            _level(sizes[i], i, end, loads, stream)
            i = end
        else:
            stream[i : i + band] = order[:band]
            loads[order[:band]] += ahead[:band]
            i += band
    return stream, loads


def _level(size: np.int64, begin: int, end: int, loads: np.ndarray, stream: np.ndarray) -> None:
    """Deal the run ``[begin, end)`` of items of one ``size``; update ``loads`` and ``stream``.

    Stream ``s`` offers the loads ``load[s] + c * size``; with ``load[s] = q[s] * size +
    rem[s]``, the offers sort by (level ``q[s] + c``, ``rem[s]``, ``s``). The run takes every
    offer of the levels below the last level it reaches, and the first of that level.
    """
    r = end - begin
    q, rem = np.divmod(loads, size)
    lo, hi = int(q.min()), int(q.min()) + r + 1  # offers below level lo: 0; below hi: > r

    def below(level: int) -> int:
        return int(np.maximum(level - q, 0).sum())

    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if below(mid) <= r else (lo, mid)
    taken = np.maximum(lo - q, 0)
    candidates = np.flatnonzero(q <= lo)
    first = candidates[np.lexsort((candidates, rem[candidates]))][: r - int(taken.sum())]
    taken[first] += 1
    # The load at which each stream takes each of its items; streams are in order, so a
    # stable sort puts equal loads in stream order, as the heap does.
    who = np.repeat(np.arange(loads.size), taken)
    offered = loads[who] + size * (np.arange(r) - np.repeat(np.cumsum(taken) - taken, taken))
    stream[begin:end] = who[np.argsort(offered, kind="stable")]
    loads += taken * size
