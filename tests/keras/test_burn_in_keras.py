"""Burn-in through Keras (``to_keras_sequence(reset_input=True)``), on every backend.

A stateful LSTM behind :class:`seqbatch.keras.StreamReset` gets the per-step flags of burn-in
batches (1.0 at each row's first real step): whatever state the row carried in, and
whatever padding precedes its burn-in, each row then runs from zeros from the first step of
its burn-in. The reference is the numpy LSTM of ``tests.replay``, run on each row's steps of
its series alone, from zeros at the first burn-in step: after every batch of ``fit()``
(learning rate 0) the model's states must be its final states, and the outputs of batches
read in any order must be its outputs.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest

import seqbatch
from seqbatch.keras import StatefulTraining, StreamReset, stateful_rnns
from tests.keras_models import numpy_weights, quiet_sequence, state_values, to_numpy
from tests.replay import LSTMWeights, from_keras, lstm_step

pytestmark = pytest.mark.keras

B, F, U, W, BURN = 2, 3, 3, 3, 4  # U == F: the targets are the next step


def data() -> np.ndarray:
    return np.random.default_rng(3).normal(size=(41, F)).astype("float32")


def model() -> keras.Model:
    x_in = keras.Input(batch_shape=(B, BURN + W, F))
    flags_in = keras.Input(batch_shape=(B, BURN + W))
    lstm = keras.layers.LSTM(U, stateful=True, return_sequences=True)
    m = keras.Model([x_in, flags_in], StreamReset(lstm)([x_in, flags_in]))
    numpy_weights(m, seed=5)
    m.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    return m


def alone(weights: LSTMWeights, series: np.ndarray, first: int, stop: int) -> np.ndarray:
    """The outputs ``h`` over steps ``[first, stop)`` of ``series`` alone, from zeros."""
    h, c = np.zeros(U), np.zeros(U)
    out = []
    for t in range(first, stop):
        h, c = lstm_step(weights, series[t].astype(np.float64), h, c)
        out.append(h)
    return np.array(out)


class States(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[list[np.ndarray]] = []

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.seen.append(state_values(self.model))


def test_each_row_runs_from_zeros_at_its_first_burn_in_step() -> None:
    series = data()
    batches = seqbatch.StreamBatcher(
        series, batch_size=B, sequence_length=W, shuffle=True, seed=2, burn_in=BURN
    )
    batches.set_epoch(1)
    # Row 0 starts at the series' start: its first windows have no or a shorter prefix.
    assert batches[0].burn_in[0].sum() < BURN and batches[1].burn_in[0].sum() < BURN
    m = model()
    (lstm,) = stateful_rnns(m)
    weights = from_keras(*(to_numpy(w) for w in lstm.cell.weights))
    seen = States()
    sequence = quiet_sequence(batches, reset_input=True)
    m.fit(
        sequence,
        epochs=2,
        initial_epoch=1,
        shuffle=False,
        verbose=0,
        callbacks=[StatefulTraining(), seen],
    )
    assert len(seen.seen) == len(batches)
    batches.set_epoch(1)
    expected = []
    for k in range(len(batches)):
        b = batches[k]
        rows = []
        for i in range(B):
            p = min(BURN, int(b.position[i]))  # the rule: up to BURN steps, same series
            rows.append(alone(weights, series, int(b.position[i]) - p, int(b.position[i]) + W))
        expected.append(rows)
        h, _ = seen.seen[k]
        np.testing.assert_allclose(h, [r[-1] for r in rows], atol=1e-5)
    # Batches are independent: read in any order, each row's window is its run from zeros.
    for k in np.random.default_rng(0).permutation(len(batches)):
        (x, flags), _, _ = sequence[int(k)]
        out = to_numpy(m.predict_on_batch([x, flags]))
        for i in range(B):
            np.testing.assert_allclose(out[i, BURN:], expected[k][i][-W:], atol=1e-5)
    assert np.abs(expected[-1][0][-1]).max() > 0.05, "the test needs states far from zero"


def test_a_sequence_without_the_flags_is_refused() -> None:
    batches = seqbatch.StreamBatcher(data(), batch_size=B, sequence_length=W, burn_in=BURN)
    with pytest.raises(ValueError, match=r"`reset_input` must be True .*burn_in=4"):
        batches.to_keras_sequence()
