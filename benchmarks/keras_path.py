"""Keras: what ``StreamSequence[k]`` adds to ``batches[k]``, and its share of a training step.

The first row compares the sequence's items with the numpy batches, on the zero-copy views of
one in-memory series, where the batch itself costs least and the adapter's share is largest.
Then, on each Keras backend (TensorFlow, JAX, torch), one row gives the input pipeline's share
of one training step of a small stateful LSTM fed by that sequence in ``fit()``: the time to
read item ``k`` over the time of one step, the target being under 5 % (``docs/benchmarks.md``,
"Targets"). Each backend runs in its own process (``python -m benchmarks.keras_path BACKEND
SIZE``), since Keras picks its backend once per process.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.data import series
from benchmarks.numpy_path import epoch
from benchmarks.report import Row, figure, on_backend, speed_ratio
from benchmarks.sizes import FULL, QUICK, Sizes
from benchmarks.timing import medians
from seqbatch import StreamBatcher

BACKENDS = ("tensorflow", "jax", "torch")
UNITS = 32
TARGET_SHARE = 5.0  # percent


def items(sequence: Any, count: int) -> Callable[[], None]:
    """A run that reads items ``0`` to ``count - 1`` of ``sequence``, as Keras does."""

    def run() -> None:
        for k in range(count):
            sequence[k]

    return run


def headline(sizes: Sizes) -> StreamBatcher:
    B, W, F, n = sizes.batch_size, sizes.sequence_length, sizes.features, sizes.batches
    return StreamBatcher(series(n * B * W + 1, F), batch_size=B, sequence_length=W)


def step_share(sizes: Sizes) -> dict[str, float]:
    """On this process's Keras backend: seconds per step, per item, and steps per second.

    A stateful ``LSTM(32)`` and a ``Dense`` layer train with ``fit()`` on the headline
    sequence. One untimed epoch compiles; then each of ``sizes.repeats`` epochs is timed
    whole (a backend may dispatch steps asynchronously: only the epoch's end is a sync
    point) and the median epoch gives the time per step.
    """
    import keras

    from seqbatch.keras import StatefulTraining

    batches = headline(sizes)
    sequence = batches.to_keras_sequence()
    B, W, F = batches.batch_size, batches.sequence_length, sizes.features
    model = keras.Sequential(
        [
            keras.Input(batch_shape=(B, W, F)),
            keras.layers.LSTM(UNITS, stateful=True, return_sequences=True),
            keras.layers.Dense(F),
        ]
    )
    model.compile(optimizer="adam", loss="mse")

    def fit() -> float:
        begin = time.perf_counter()
        model.fit(sequence, shuffle=False, verbose=0, callbacks=[StatefulTraining()])
        return time.perf_counter() - begin

    fit()
    epochs = sorted(fit() for _ in range(sizes.repeats))
    step = epochs[len(epochs) // 2] / len(batches)
    item = medians({"items": items(sequence, len(batches))}, sizes.repeats)["items"]
    item /= len(batches)
    return {"step": step, "item": item, "steps_per_second": 1 / step}


def backend_rows(size_name: str) -> list[Row]:
    """One row per Keras backend, each measured in a process of its own."""
    rows = []
    for backend in BACKENDS:
        got = on_backend("benchmarks.keras_path", backend, size_name)
        share = 100 * got["item"] / got["step"]
        rows.append(
            Row(
                "keras",
                f"input share of one fit() step, stateful LSTM({UNITS}), {backend} "
                f"({figure(got['steps_per_second'], 'steps/s')})",
                share,
                "%",
                peer="one step",
                peer_value=100.0,
                target=f"under {TARGET_SHARE:g} % on each backend",
                met=share < TARGET_SHARE,
            )
        )
    return rows


def run(sizes: Sizes, workdir: Path) -> list[Row]:
    """``StreamSequence[k]`` against ``batches[k]``, then the share of a step per backend.

    ``workdir`` is unused: every section is called the same way.
    """
    n = sizes.batches
    batches = headline(sizes)
    sequence = batches.to_keras_sequence()
    seconds = medians({"numpy": epoch(batches), "keras": items(sequence, n)}, sizes.repeats)
    ours, peer = seconds["keras"] / n * 1e6, seconds["numpy"] / n * 1e6
    overhead = Row(
        "keras",
        f"StreamSequence[k] (overhead {ours - peer:+.2g} us/batch)",
        ours,
        "us/batch",
        peer="batches[k]",
        peer_value=peer,
        ratio=speed_ratio(seconds["keras"], seconds["numpy"]),
    )
    return [overhead, *backend_rows("quick" if sizes == QUICK else "full")]


if __name__ == "__main__":
    backend, size_name = sys.argv[1:]
    assert os.environ.get("KERAS_BACKEND") == backend
    print(json.dumps(step_share(QUICK if size_name == "quick" else FULL)))
