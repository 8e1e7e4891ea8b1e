"""tf.data: the seqbatch adapter against two peers, each consumed inside a ``tf.function``.

As ``fit()`` does, the dataset's iterator is created eagerly and a ``tf.function`` pulls the
batches with ``next(iterator)`` and reduces every tensor of each, so that every batch is
produced and read with no Python between batches (``fit()`` with ``steps_per_execution``
equal to the steps timed). The cost per batch is the steady one: each measurement starts a
new iterator over the dataset repeated, pulls a quarter of the steps untimed (the start of
the epoch, and the pipeline's buffers filling), then times the steps. The time to start an
epoch (a new iterator, its threads and its first batch) is given apart.

All three read the same windows of the same in-memory series: ``x`` of shape ``(B, W, F)``
and ``y``, the step after each window, of shape ``(B, F)``
(``keras.utils.timeseries_dataset_from_array`` gives one target per window, so seqbatch runs
with ``return_sequences=False`` and no sample weights). The peers group the windows in
another order, which costs them nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from benchmarks.data import series
from benchmarks.report import Row, speed_ratio
from benchmarks.sizes import Sizes
from benchmarks.timing import median_rounds, medians
from seqbatch import StreamBatcher

SEQBATCH = "seqbatch"
TIMESERIES = "timeseries_dataset_from_array"
RANGE_MAP = "Dataset.range().map(slice)"
MEMMAP = "seqbatch, memmap"
FLOOR = "floor"
TARGETS = {TIMESERIES: 30.0, RANGE_MAP: 2.0}


def reducer(steps: int) -> Callable[[tf.data.Iterator], tf.Tensor]:
    """A ``tf.function`` that pulls ``steps`` batches from an iterator and reduces each."""

    @tf.function
    def run_steps(iterator: tf.data.Iterator) -> tf.Tensor:
        total = tf.constant(0.0)
        for _ in tf.range(steps):
            for tensor in tf.nest.flatten(next(iterator)):
                total += tf.reduce_sum(tensor)
        return total

    return run_steps


def consume(dataset: tf.data.Dataset, steps: int) -> Callable[[], None]:
    """A run that reads the first ``steps`` batches of a new epoch of ``dataset``, as ``fit()``."""
    run_steps = reducer(steps)

    def run() -> None:
        run_steps(iter(dataset)).numpy()

    return run


def steady(dataset: tf.data.Dataset, steps: int) -> Callable[[], float]:
    """A measure of the seconds that ``steps`` batches take once the epoch is under way."""
    warm, timed = reducer(max(1, steps // 4)), reducer(steps)

    def measure() -> float:
        iterator = iter(dataset.repeat())
        warm(iterator).numpy()
        begin = time.perf_counter()
        timed(iterator).numpy()
        return time.perf_counter() - begin

    return measure


def per_batch(
    datasets: dict[str, tf.data.Dataset], steps: int, repeats: int
) -> dict[str, tuple[float, float]]:
    """Seconds per batch (steady) and seconds to start an epoch, by pipeline.

    The start is the time to the first batch of a new iterator, less one steady batch.
    """
    batch = {
        name: t / steps
        for name, t in median_rounds(
            {name: steady(ds, steps) for name, ds in datasets.items()}, repeats
        ).items()
    }
    first = medians({name: consume(ds, 1) for name, ds in datasets.items()}, repeats)
    # A nanosecond at least, so that a ratio stays finite when noise hides the start.
    return {name: (batch[name], max(first[name] - batch[name], 1e-9)) for name in datasets}


def range_map(data: np.ndarray, batch_size: int, width: int, windows: int) -> tf.data.Dataset:
    """The plain pipeline: one ``map`` call slices each window and its target, then ``batch``."""
    tensor = tf.constant(data)

    def window(i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        first = i * width
        return tensor[first : first + width], tensor[first + width]

    return (
        tf.data.Dataset.range(windows)
        .map(window, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def floor(data: np.ndarray, batch_size: int, width: int, batches: int) -> tf.data.Dataset:
    """The floor: ``batches`` elements that are one precomputed batch, of the same shapes.

    Making its elements costs nothing, so its time is what pulling a batch through the
    iterator and reducing it costs: no pipeline can be faster, and the peers' time over
    this one is the highest ratio that any pipeline can show on this machine.
    """
    x = tf.constant(data[: batch_size * width].reshape(batch_size, width, -1))
    y = tf.constant(data[width : batch_size * width + 1 : width])
    return tf.data.Dataset.from_tensors((x, y)).repeat(batches)


def pipelines(
    data: np.ndarray, batch_size: int, width: int, batches: int
) -> dict[str, tf.data.Dataset]:
    """The three pipelines over the first ``batches * batch_size * width + 1`` steps of ``data``."""
    steps = batches * batch_size * width
    seqbatch = StreamBatcher(
        data[: steps + 1], batch_size=batch_size, sequence_length=width, return_sequences=False
    )
    return {
        SEQBATCH: seqbatch.to_tf_dataset(sample_weight=False),
        TIMESERIES: keras.utils.timeseries_dataset_from_array(
            data[:steps],
            data[width : steps + 1],
            sequence_length=width,
            sequence_stride=width,
            batch_size=batch_size,
        ),
        RANGE_MAP: range_map(data[: steps + 1], batch_size, width, batches * batch_size),
    }


def run(sizes: Sizes, workdir: Path) -> list[Row]:
    """Time the pipelines in the headline case, and seqbatch on a memmap of the same data."""
    B, W, F, n = sizes.batch_size, sizes.sequence_length, sizes.features, sizes.batches
    data = series(n * B * W + 1, F)
    path = workdir / "tf_path.npy"
    np.save(path, data)
    lazy = StreamBatcher(path, batch_size=B, sequence_length=W, return_sequences=False)
    datasets = pipelines(data, B, W, n)
    datasets[MEMMAP] = lazy.to_tf_dataset(sample_weight=False)
    datasets[FLOOR] = floor(data, B, W, n)
    times = per_batch(datasets, n, sizes.repeats)
    ours = times[SEQBATCH][0]
    rows = []
    for peer, target in TARGETS.items():
        ratio = speed_ratio(ours, times[peer][0])
        rows.append(
            Row(
                "tf.data",
                f"in-memory series, {B}x{W}x{F} float32, vs {peer}",
                ours * 1e6,
                "us/batch",
                peer=peer,
                peer_value=times[peer][0] * 1e6,
                ratio=ratio,
                target=f">= {target:g}x",
                met=ratio >= target,
            )
        )
    for name, case in (
        (MEMMAP, f"memmapped series (one numpy_function per batch), vs {TIMESERIES} in memory"),
        (FLOOR, "floor: one precomputed batch, pulled and reduced (no pipeline is faster)"),
    ):
        rows.append(
            Row(
                "tf.data",
                case,
                times[name][0] * 1e6,
                "us/batch",
                peer=TIMESERIES,
                peer_value=times[TIMESERIES][0] * 1e6,
                ratio=speed_ratio(times[name][0], times[TIMESERIES][0]),
            )
        )
    rows.append(
        Row(
            "tf.data",
            f"time to start an epoch, in-memory series, vs {RANGE_MAP}",
            times[SEQBATCH][1] * 1e3,
            "ms",
            peer=RANGE_MAP,
            peer_value=times[RANGE_MAP][1] * 1e3,
            ratio=speed_ratio(times[SEQBATCH][1], times[RANGE_MAP][1]),
        )
    )
    return rows
