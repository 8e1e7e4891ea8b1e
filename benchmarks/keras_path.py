"""Keras: the per-batch cost of ``StreamSequence[k]`` over the numpy batch ``batches[k]``.

Both serve the zero-copy views of one in-memory series, where the batch itself costs least
and the adapter's share is largest.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.data import series
from benchmarks.numpy_path import epoch
from benchmarks.report import Row, speed_ratio
from benchmarks.sizes import Sizes
from benchmarks.timing import medians
from seqbatch import StreamBatcher


def items(sequence: Any, count: int) -> Callable[[], None]:
    """A run that reads items ``0`` to ``count - 1`` of ``sequence``, as Keras does."""

    def run() -> None:
        for k in range(count):
            sequence[k]

    return run


def run(sizes: Sizes, workdir: Path) -> list[Row]:
    """One row: ``StreamSequence[k]`` against ``batches[k]``, with the overhead in µs.

    ``workdir`` is unused: every section is called the same way.
    """
    B, W, F, n = sizes.batch_size, sizes.sequence_length, sizes.features, sizes.batches
    batches = StreamBatcher(series(n * B * W + 1, F), batch_size=B, sequence_length=W)
    sequence = batches.to_keras_sequence()
    seconds = medians({"numpy": epoch(batches), "keras": items(sequence, n)}, sizes.repeats)
    ours, peer = seconds["keras"] / n * 1e6, seconds["numpy"] / n * 1e6
    return [
        Row(
            "keras",
            f"StreamSequence[k] (overhead {ours - peer:+.2g} us/batch)",
            ours,
            "us/batch",
            peer="batches[k]",
            peer_value=peer,
            ratio=speed_ratio(seconds["keras"], seconds["numpy"]),
        )
    ]
