"""How big each measurement is: the full size for people, the quick size for CI."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    """The sizes of one benchmark run.

    Attributes:
        batch_size, sequence_length, features: the headline case that the numpy, Keras and
            tf.data sections share (float32 data).
        batches: batches per epoch in the headline case.
        series: series in the many-series case of the numpy section.
        repeats: timed repeats of each measurement; the table gives their median.
        memory_bytes: size of the ``.npy`` file whose epoch the memory section streams.
        series_lengths: steps of the memory-mapped series of the scaling section.
        scaling_batches: batch reads timed per series length (spread over the epoch).
        grid_batch_sizes, grid_windows, grid_features: the axes of the grid.
        grid_cap_bytes: grid cells whose ``x`` batch is larger than this are skipped.
        grid_batches: batches per epoch in each grid cell.
    """

    batch_size: int
    sequence_length: int
    features: int
    batches: int
    series: int
    repeats: int
    memory_bytes: int
    series_lengths: tuple[int, ...]
    scaling_batches: int
    grid_batch_sizes: tuple[int, ...]
    grid_windows: tuple[int, ...]
    grid_features: tuple[int, ...]
    grid_cap_bytes: int
    grid_batches: int


FULL = Sizes(
    batch_size=32,
    sequence_length=100,
    features=16,
    batches=200,
    series=256,
    repeats=9,
    memory_bytes=2**30,
    series_lengths=(10**5, 10**6, 10**7, 10**8),
    scaling_batches=4000,
    grid_batch_sizes=(32, 256),
    grid_windows=(10, 100, 1000),
    grid_features=(1, 16, 256),
    grid_cap_bytes=32 * 2**20,
    grid_batches=64,
)

QUICK = Sizes(
    batch_size=8,
    sequence_length=20,
    features=4,
    batches=10,
    series=16,
    repeats=2,
    memory_bytes=4 * 2**20,
    series_lengths=(10**4, 10**5),
    scaling_batches=8,
    grid_batch_sizes=(8,),
    grid_windows=(10, 100),
    grid_features=(1, 16),
    grid_cap_bytes=32 * 2**10,
    grid_batches=4,
)
