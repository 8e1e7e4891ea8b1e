"""``with_batch_size(model, b, streams=...)``: trained streams carried into inference.

Checked on every Keras backend against the numpy LSTM of ``tests.replay``, which carries each
row's state by hand: the new model's rows must go on exactly where the chosen streams of the
big model stopped.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import seqbatch
from seqbatch.keras import (
    StreamReset,
    StreamSequence,
    reset_states,
    stateful_rnns,
    with_batch_size,
)
from tests.keras_models import lstm_model, state_values, to_numpy
from tests.replay import from_keras, lstm_replay

pytestmark = pytest.mark.keras

B, W, F, U = 4, 3, 2, 5


def data() -> np.ndarray:
    return np.random.default_rng(3).normal(size=(B * 6 * W + 1, F)).astype("float32")


def test_new_rows_go_on_from_the_chosen_streams() -> None:
    model = lstm_model(B, W, F, U, reset_input=False)
    batches = seqbatch.StreamBatcher(data(), None, batch_size=B, sequence_length=W)
    reset_states(model)
    half = len(batches) // 2
    model.predict(
        np.stack([b.x for b in batches[:half]]).reshape(-1, W, F), batch_size=B, verbose=0
    )
    streams = [3, 1, 3]
    go_on = with_batch_size(model, len(streams), streams=streams)
    before = state_values(model)
    assert [s.tolist() for s in state_values(go_on)] == [s[streams].tolist() for s in before]
    rest = [b.x[streams] for b in batches[half:]]
    out = go_on.predict(np.concatenate(rest), batch_size=len(streams), verbose=0)
    (lstm,) = stateful_rnns(model)
    weights = from_keras(*(to_numpy(w) for w in lstm.cell.weights))
    # The reference runs the whole epoch from zero states, every row by hand.
    full, _ = lstm_replay(weights, [(b.x, b.reset) for b in batches])
    expected = np.concatenate([o[streams] for o in full[half:]])
    np.testing.assert_allclose(out, expected, atol=2e-5)
    assert np.abs(expected).max() > 0.05
    # The big model's states are its own: the copy changed nothing there.
    for a, b in zip(state_values(model), before, strict=True):
        assert np.array_equal(a, b)


def test_streams_reach_rnns_inside_wrappers_and_nested_models() -> None:
    inner = keras.Sequential(
        [
            keras.Input(batch_shape=(B, W, F)),
            keras.layers.GRU(3, stateful=True, return_sequences=True),
        ]
    )
    x_in = keras.Input(batch_shape=(B, W, F))
    reset_in = keras.Input(batch_shape=(B,))
    lstm = keras.layers.LSTM(2, stateful=True, return_sequences=True)
    model = keras.Model([x_in, reset_in], StreamReset(lstm)([inner(x_in), reset_in]))
    batches = seqbatch.StreamBatcher(data(), None, batch_size=B, sequence_length=W)
    model.predict(StreamSequence(batches, reset_input=True), verbose=0)
    one = with_batch_size(model, 1, streams=[2])
    for new, old in zip(state_values(one), state_values(model), strict=True):
        assert np.array_equal(new, old[2:3])
    assert len(state_values(one)) == 3  # GRU h; LSTM h and c


@pytest.mark.parametrize(
    ("streams", "error", "message"),
    [
        (
            [0],
            ValueError,
            r"`streams` must hold batch_size=2 rows of the model's batch of 4 streams, one per "
            r"row of the new model. Received: streams=\[0\]",
        ),
        ([0, 4], ValueError, r"Received: streams=\[0, 4\]"),
        ([0, -1], ValueError, r"Received: streams=\[0, -1\]"),
        (
            [0, 1.0],
            TypeError,
            r"`streams` must be a sequence of integers, the rows of the model's batch whose "
            r"states the new rows start from. Received: streams=\[0, 1.0\]",
        ),
        (3, TypeError, r"Received: streams=3"),
    ],
)
def test_streams_are_checked(streams: object, error: type, message: str) -> None:
    model = lstm_model(B, W, F, U, reset_input=False)
    with pytest.raises(error, match=message):
        with_batch_size(model, 2, streams=streams)  # type: ignore[arg-type]
