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
        packing_series: series of random lengths in the packing section.
        packing_lengths: the shortest and the longest of them, in steps.
        packing_batch_size, packing_window: streams and window of the packing section.
        plan_series: numbers of series of the plan section; the largest meets the targets.
        plan_streams: streams of the plan section.
        plan_workers: workers that the plan section shards its streams to.
        documents: documents of the many-series section (token streams).
        documents_batch: streams and window of its token batches.
        build_documents: documents whose batcher the many-series section builds.
        table_rows, table_series: rows and series of the long table of the tables section.
        parquet_rows: rows of its Parquet file (8 float32 values a row).
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
    packing_series: int
    packing_lengths: tuple[int, int]
    packing_batch_size: int
    packing_window: int
    plan_series: tuple[int, ...]
    plan_streams: int
    plan_workers: int
    documents: int
    documents_batch: tuple[int, int]
    build_documents: int
    table_rows: int
    table_series: int
    parquet_rows: int


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
    packing_series=10_000,
    packing_lengths=(10, 1000),
    packing_batch_size=64,
    packing_window=100,
    plan_series=(10**5, 10**6, 10**7),
    plan_streams=8192,
    plan_workers=1024,
    documents=100_000,
    documents_batch=(64, 256),
    build_documents=1_000_000,
    table_rows=10_000_000,
    table_series=100_000,
    parquet_rows=5_000_000,  # 160 MB of float32 values
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
    packing_series=300,
    packing_lengths=(5, 100),
    packing_batch_size=8,
    packing_window=20,
    plan_series=(10**3, 10**4),
    plan_streams=64,
    plan_workers=8,
    documents=1_000,
    documents_batch=(8, 32),
    build_documents=10_000,
    table_rows=20_000,
    table_series=200,
    parquet_rows=40_000,
)
