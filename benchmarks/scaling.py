"""Cost per batch as one memory-mapped series grows: it must not depend on the length.

Each series has one float32 feature. The same number of full batches (no padding), spread
evenly over the epoch, is read at every length: once as zero-copy views (``remainder="drop"``:
nothing is read until the consumer reads it) and once gathered (``remainder="pad"`` with
streams of unequal length: every window is copied out of the file). The shortest series fit
in the CPU caches and the longest do not, so the gathered copies also show what reading
colder memory costs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.data import npy_file
from benchmarks.report import Row, number
from benchmarks.sizes import Sizes
from benchmarks.timing import medians
from seqbatch import StreamBatcher

FLAT_TOLERANCE = 0.2
REMAINDERS = {"zero-copy views": "drop", "gathered copies": "pad"}


def read_spread(batches: StreamBatcher, count: int) -> Callable[[], None]:
    """A run that reads ``count`` full batches spread evenly over the epoch (with repeats
    when the epoch has fewer)."""
    W = batches.sequence_length
    full = [k for k in range(len(batches)) if (batches.plan.window(k).length == W).all()]
    ks = [full[i] for i in np.linspace(0, len(full) - 1, count).astype(int)]

    def run() -> None:
        for k in ks:
            batches[k]

    return run


def measure(sizes: Sizes, workdir: Path) -> dict[str, dict[int, float]]:
    """µs per batch, by path (``"zero-copy views"``, ``"gathered copies"``) and length."""
    shape = dict(batch_size=sizes.batch_size, sequence_length=sizes.sequence_length)
    # Half a batch of extra steps: with remainder="pad" the streams then differ by a step,
    # so that no batch is a view and every one is gathered.
    extra = sizes.batch_size // 2 + 1
    paths = {n: npy_file(workdir / f"scaling_{n}.npy", n + extra, 1) for n in sizes.series_lengths}
    runs = {}
    for label, remainder in REMAINDERS.items():
        for n, path in paths.items():
            batches = StreamBatcher(path, remainder=remainder, **shape)
            runs[label, n] = read_spread(batches, sizes.scaling_batches)
    seconds = medians(runs, sizes.repeats)
    return {
        label: {n: seconds[label, n] / sizes.scaling_batches * 1e6 for n in paths}
        for label in REMAINDERS
    }


def rows(times: dict[str, dict[int, float]]) -> list[Row]:
    """One row per (path, length): µs per batch and its ratio to the shortest series."""
    out = []
    for label, by_length in times.items():
        shortest, base = next(iter(by_length.items()))
        for n, us in by_length.items():
            out.append(
                Row(
                    "scaling",
                    f"{label}, memmapped series of {number(n)} steps",
                    us,
                    "us/batch",
                    peer=f"{number(shortest)} steps",
                    peer_value=base,
                    ratio=base / us,
                    target=f"within {FLAT_TOLERANCE:.0%} of {number(shortest)} steps",
                    met=abs(us / base - 1) <= FLAT_TOLERANCE,
                )
            )
    return out
