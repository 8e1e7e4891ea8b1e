"""Timing: medians of repeats, with the candidates of one comparison interleaved.

Interleaving runs every candidate once per round, so that a burst of load from other processes
slows all of them alike and their ratio stays fair. A run too short to time well is called
several times in a row, as ``timeit`` does, so that one timing lasts at least 20 ms.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Callable, Mapping

MIN_SECONDS = 0.02


def _seconds(run: Callable[[], object], number: int) -> float:
    begin = time.perf_counter()
    for _ in range(number):
        run()
    return time.perf_counter() - begin


def median_rounds(measures: Mapping[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """The median of what each measure returns, after one untimed warm-up call of each.

    Args:
        measures: the candidates, by name; each call measures once and returns seconds.
        repeats: rounds; each round calls every candidate once, in order.

    Returns:
        The median of the returned seconds, by name.
    """
    for measure in measures.values():
        measure()
    times: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(repeats):
        for name, measure in measures.items():
            times[name].append(measure())
    return {name: statistics.median(t) for name, t in times.items()}


def medians(runs: Mapping[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """The median wall time in seconds of one call of each run.

    Each run is first called once to choose how many calls make one timing of at least
    20 ms, then timed as :func:`median_rounds` does.

    Args:
        runs: the candidates, by name; each call does the whole timed work once.
        repeats: timed rounds; each round times every candidate once, in order.

    Returns:
        The median seconds of one call, by name.
    """
    measures = {}
    for name, run in runs.items():
        number = max(1, math.ceil(MIN_SECONDS / max(_seconds(run, 1), 1e-9)))
        measures[name] = functools.partial(_per_call, run, number)
    return median_rounds(measures, repeats)


def _per_call(run: Callable[[], object], number: int) -> float:
    return _seconds(run, number) / number
