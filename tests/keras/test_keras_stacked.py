"""Stacked StreamReset layers with per-step flags ``(B, W)``: they train, and stay exact.

Run under each Keras backend. On torch, a second ``StreamReset`` over the first one's output
once failed in backward ("modified by an inplace operation"): its flags ride on an input that
requires a gradient, and the state it started from was overwritten in place. Each stack here
trains for a few steps with ``fit()``, then its packed outputs are compared with a stateless
copy of the same stack run on every series alone from zero state (no seqbatch code on that
side), and with the numpy LSTM of ``tests/replay.py`` for the first LSTM layer.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import pytest
from keras import ops

import seqbatch
from seqbatch.keras import StreamReset
from tests.keras_runs import PACKED_LENGTHS, PACKED_WIDTH, decode, packed_windows
from tests.replay import from_keras, lstm_replay

pytestmark = pytest.mark.keras

LAYERS: dict[str, Callable[..., keras.layers.Layer]] = {
    "LSTM": keras.layers.LSTM,
    "GRU": keras.layers.GRU,
}


def stack(kind: str) -> tuple[keras.Model, list[keras.layers.Layer]]:
    """Two stateful RNNs behind StreamReset with (B, W) flags, and a Dense head."""
    keras.utils.set_random_seed(1)
    B, W = len(PACKED_LENGTHS), PACKED_WIDTH
    x_in = keras.Input(batch_shape=(B, W, 1))
    reset_in = keras.Input(batch_shape=(B, W))
    rnns = [LAYERS[kind](units, stateful=True, return_sequences=True) for units in (4, 3)]
    h = x_in
    for rnn in rnns:
        h = StreamReset(rnn)([h, reset_in])
    head = keras.layers.Dense(1)
    return keras.Model([x_in, reset_in], head(h)), [*rnns, head]


def stateless_copy(layers: list[keras.layers.Layer]) -> keras.Sequential:
    """The same stack without state, with the same weights."""
    copies = []
    for layer in layers:
        config = layer.get_config()
        if isinstance(layer, keras.layers.RNN):
            config.update(stateful=False, name=None)
        else:
            config.update(name=None)
        copies.append(layer.__class__.from_config(config))
    model = keras.Sequential([keras.Input((None, 1)), *copies])
    for copy, layer in zip(copies, layers, strict=True):
        copy.set_weights(layer.get_weights())
    return model


@pytest.mark.parametrize("kind", list(LAYERS))
def test_two_stacked_step_reset_layers_train_and_run_each_series_as_if_alone(kind: str) -> None:
    series, batches = packed_windows()
    B = len(PACKED_LENGTHS)
    model, layers = stack(kind)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
    x = np.concatenate([x for x, _ in batches])
    reset = np.concatenate([r for _, r in batches])
    # Each step learns its own series' index, which only the states can carry.
    target = np.maximum(decode(x)[..., :1], 0).astype("float32") / len(series)
    before = [ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
    history = model.fit([x, reset], target, batch_size=B, epochs=4, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    for w, w0 in zip(model.trainable_weights, before, strict=True):
        assert not np.allclose(ops.convert_to_numpy(w), w0), f"{w.path} did not move"

    seqbatch.keras.reset_states(model)
    got: dict[int, dict[int, np.ndarray]] = {}
    for bx, br in batches:
        out = ops.convert_to_numpy(model([bx, br]))
        where = decode(bx)
        for i, t in zip(*np.nonzero(where[..., 0] >= 0), strict=True):
            s, step = where[i, t].tolist()
            got.setdefault(s, {})[step] = out[i, t]
    alone = stateless_copy(layers)
    assert sorted(got) == list(range(len(series)))
    for s, data in enumerate(series):
        packed = np.stack([got[s][t] for t in range(len(data))])
        expected = ops.convert_to_numpy(alone(data[None]))[0]
        np.testing.assert_allclose(packed, expected, rtol=1e-5, atol=1e-5)


def test_the_first_layer_of_a_trained_lstm_stack_matches_the_numpy_replay() -> None:
    _, batches = packed_windows()
    model, (first, _, _) = stack("LSTM")
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
    x = np.concatenate([x for x, _ in batches])
    reset = np.concatenate([r for _, r in batches])
    model.fit([x, reset], x, batch_size=len(PACKED_LENGTHS), epochs=2, shuffle=False, verbose=0)
    seqbatch.keras.reset_states(model)
    hidden = keras.Model(model.inputs, model.layers[2].output)  # the first StreamReset's
    outputs = [ops.convert_to_numpy(hidden([bx, br])) for bx, br in batches]
    expected, _ = lstm_replay(from_keras(*first.cell.get_weights()), batches)
    for out, exp in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(out, exp, rtol=1e-5, atol=1e-5)
