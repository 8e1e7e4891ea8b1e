"""Batchers, callbacks and packed windows shared by the Keras tests."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

import seqbatch
from tests.encoded import SERIES_STRIDE, encoded_series


class Interrupt(Exception):
    pass


class StopAt(keras.callbacks.Callback):
    """Raises after the ``at``-th training step of this fit()."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.steps = at, 0

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.steps += 1
        if self.steps == self.at:
            raise Interrupt


def batcher(seed: int | None) -> seqbatch.StreamBatcher:
    series = [encoded_series(s, 9 + 4 * s, (1,), "float32") for s in range(7)]
    return seqbatch.StreamBatcher(
        series, batch_size=2, sequence_length=3, remainder="pad", shuffle=True, seed=seed
    )


LENGTHS = [20, 16, 12, 12, 8, 9, 13]


def shuffled() -> seqbatch.StreamBatcher:
    """Many series dealt anew each epoch: every epoch has its own layout."""
    data = [encoded_series(s, n, (1,), "float32") for s, n in enumerate(LENGTHS)]
    return seqbatch.StreamBatcher(data, batch_size=2, sequence_length=4, shuffle=True, seed=3)


SCALE = 4000


def decode(x: np.ndarray) -> np.ndarray:
    """(series, step) of every step of ``x`` ``(B, W, 1)``; series -1 on padding."""
    code = np.rint(x[..., 0] * SCALE).astype(np.int64)
    series, step = np.divmod(code, SERIES_STRIDE)
    return np.stack([series - 1, step], axis=-1)


# Series laid end to end in each stream: series 0 spans two windows, series 1 is one step
# long and starts mid-window, series 3 and 4 share a window and series 5 starts on a window
# boundary, series 7 runs through every window of stream 2 with no reset after its first.
PACKED_LENGTHS = [[5, 1, 6], [2, 2, 3, 4], [12]]


PACKED_WIDTH = 4


def packed_windows() -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """The series, and the batches ``(x, reset)`` of them packed end to end per stream."""
    series, streams, flags = [], [], []
    for lengths in PACKED_LENGTHS:
        parts = [
            encoded_series(len(series) + j, n, (1,), "float32") / SCALE
            for j, n in enumerate(lengths)
        ]
        series += parts
        starts = np.cumsum([0, *lengths[:-1]])
        streams.append(np.concatenate(parts))
        flags.append(np.isin(np.arange(sum(lengths)), starts))
    steps = -(-max(len(s) for s in streams) // PACKED_WIDTH) * PACKED_WIDTH
    x = np.stack([np.pad(s, ((0, steps - len(s)), (0, 0))) for s in streams])
    reset = np.stack([np.pad(f, (0, steps - len(f))) for f in flags]).astype("float32")
    W = PACKED_WIDTH
    return series, [(x[:, k : k + W], reset[:, k : k + W]) for k in range(0, steps, W)]
