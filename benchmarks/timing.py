"""Timing: medians of repeats, with the candidates of one comparison interleaved.

Interleaving runs every candidate once per round, so that a burst of load from other processes
slows all of them alike and their ratio stays fair. A run too short to time well is called
several times in a row, as ``timeit`` does, so that one timing lasts at least 20 ms.
"""

from __future__ import annotations

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


def medians(runs: Mapping[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """The median wall time in seconds of one call of each run.

    Each run is first called once untimed (a warm-up, which also traces a ``tf.function``)
    and once timed to choose how many calls make one timing of at least 20 ms.

    Args:
        runs: the candidates, by name; each call does the whole timed work once.
        repeats: timed rounds; each round times every candidate once, in order.

    Returns:
        The median seconds of one call, by name.
    """
    numbers = {}
    for name, run in runs.items():
        run()
        numbers[name] = max(1, math.ceil(MIN_SECONDS / max(_seconds(run, 1), 1e-9)))
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(_seconds(run, numbers[name]) / numbers[name])
    return {name: statistics.median(t) for name, t in times.items()}
