"""The plan at scale: millions of series on thousands of streams, with ``"reset"`` and ``"pack"``.

``python -m benchmarks.plan_scale [--quick]`` runs this section alone.

For each layout and number of series (random lengths of 10 to 1,000 steps, windows of 100
steps): the wall time and the peak memory (numpy's allocations, traced) of building the plan,
and the time to look up one batch: the windows of every stream (``"reset"``), or the pieces of
every stream (``"pack"``), which is what the batcher asks for. A lookup is one binary search per
stream, so its cost should stay flat as the series grow in number. Then the streams are sharded
to many workers: each shares the plan's number of batches, and the real steps each worker gets
show the balance of the deal.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.report import Row, number, run_alone
from benchmarks.sizes import Sizes
from benchmarks.timing import medians
from seqbatch import StreamPlan

LAYOUTS = {"reset": "whole", "pack": "pack"}
WINDOW = 100
BUILD_TARGET_SECONDS = 10.0
BUILD_TARGET_MB = 1000.0
FLAT_TOLERANCE = 0.2
LOOKUPS = 64


def series_lengths(count: int, seed: int = 0) -> np.ndarray:
    """``count`` random lengths of 10 to 1,000 steps."""
    return np.random.default_rng(seed).integers(10, 1001, count)


def build(lengths: np.ndarray, streams: int, layout: str) -> StreamPlan:
    return StreamPlan(
        lengths, batch_size=streams, sequence_length=WINDOW, layout=layout, remainder="pad"
    )


def lookups(plan: StreamPlan, streams: slice = slice(None)) -> Callable[[], None]:
    """A run that looks up ``LOOKUPS`` batches spread over the epoch, as the batcher does."""
    ks = np.linspace(0, len(plan) - 1, LOOKUPS).astype(int).tolist()
    find = plan.pieces if plan.layout == "pack" else plan.window

    def run() -> None:
        for k in ks:
            find(k, streams)

    return run


def run(sizes: Sizes, workdir: Path) -> list[Row]:
    """Build, look up and shard the plans; one row per measurement."""
    B, workers = sizes.plan_streams, sizes.plan_workers
    largest = max(sizes.plan_series)
    rows = []
    for name, layout in LAYOUTS.items():
        lookup_us: dict[int, float] = {}
        for count in sizes.plan_series:
            lengths = series_lengths(count)
            begin = time.perf_counter()
            plan = build(lengths, B, layout)
            seconds = time.perf_counter() - begin
            del plan
            tracemalloc.start()
            plan = build(lengths, B, layout)
            peak_mb = tracemalloc.get_traced_memory()[1] / 1e6
            tracemalloc.stop()
            what = f"{name}, {number(count)} series on {B} streams"
            at_scale = count == largest
            rows.append(
                Row(
                    "plan",
                    f"build the plan, {what} ({len(plan)} batches)",
                    seconds,
                    "s",
                    target=f"< {BUILD_TARGET_SECONDS:g} s" if at_scale else "",
                    met=seconds < BUILD_TARGET_SECONDS if at_scale else None,
                )
            )
            rows.append(
                Row(
                    "plan",
                    f"peak memory of building the plan, {what}",
                    peak_mb,
                    "MB",
                    target=f"< {BUILD_TARGET_MB:g} MB" if at_scale else "",
                    met=peak_mb < BUILD_TARGET_MB if at_scale else None,
                )
            )
            lookup_us[count] = medians({0: lookups(plan)}, sizes.repeats)[0] / LOOKUPS * 1e6
        smallest = min(sizes.plan_series)
        for count, us in lookup_us.items():
            ratio = lookup_us[smallest] / us
            rows.append(
                Row(
                    "plan",
                    f"look up one batch of {B} streams, {name}, {number(count)} series",
                    us,
                    "us/batch",
                    peer=f"{number(smallest)} series",
                    peer_value=lookup_us[smallest],
                    ratio=ratio,
                    target=f"within {FLAT_TOLERANCE:.0%} of {number(smallest)} series",
                    met=abs(us / lookup_us[smallest] - 1) <= FLAT_TOLERANCE,
                )
            )
        rows += shards(plan, workers, sizes.repeats, name)
    return rows


def shards(plan: StreamPlan, workers: int, repeats: int, name: str) -> list[Row]:
    """Worker ``w`` of ``workers`` reads streams ``[w * B / workers, (w + 1) * B / workers)``."""
    B = plan.batch_size
    size = B // workers
    per_worker = plan.stream_steps().reshape(workers, size).sum(axis=1)
    last = slice(B - size, B)
    us = medians({0: lookups(plan, last)}, repeats)[0] / LOOKUPS * 1e6
    what = f"{name}, {number(plan.lengths.size)} series, {workers} workers of {size} streams"
    return [
        Row("plan", f"look up one worker's batch, {what}", us, "us/batch"),
        Row(
            "plan",
            f"real steps of the least over the most loaded worker, every worker "
            f"{len(plan)} batches, {what}",
            per_worker.min() / per_worker.max(),
            "x",
        ),
    ]


if __name__ == "__main__":
    run_alone(run)
