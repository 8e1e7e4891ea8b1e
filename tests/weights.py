"""The sample weights that the adapters must yield, computed from the numpy batches alone.

A real step weighs the number of weighted slots of the epoch over the number of real ones,
over every stream (so that Keras's mean over slots is the mean over real steps); padding 0.
The weight of a step repeats over every axis of its target but the last (the axis a Keras
loss reduces).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

import seqbatch


def real_step_weight(batches: Iterable[seqbatch.Batch]) -> float:
    """Slots over real slots in one epoch of the batches of every stream (not of a shard)."""
    weights = np.stack([b.sample_weight for b in batches])
    real = float(weights.sum())
    return weights.size / real if real else 1.0


def element_weight(b: seqbatch.Batch, step_weight: float) -> np.ndarray:
    """The weight of the element of batch ``b``."""
    assert b.y is not None
    w = b.sample_weight * np.float32(step_weight)
    extra = b.y.shape[w.ndim : -1]
    return np.broadcast_to(w.reshape(w.shape + (1,) * len(extra)), w.shape + extra)
