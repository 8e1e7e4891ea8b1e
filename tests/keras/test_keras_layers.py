"""StreamReset: per-stream resets around every kind of RNN, and per-step resets (packed windows).

Run under each Keras backend (``KERAS_BACKEND=tensorflow``, ``jax``, ``torch``). Models are
called directly, batch after batch, where a test reads the outputs of each call; ``fit`` and
``predict`` carry the states on every backend too (on JAX through ``carry_states``, see
docs/backends.md). References never share code with the layer under test: a stateless
copy of the RNN run on each series alone from zero state, or the numpy LSTM of
``tests/replay.py``. Inputs are value-encoded (``tests/encoded.py``, scaled by 1/4000), so the
series and step behind every output are read back from the input itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
from keras import ops

import seqbatch
from seqbatch.keras import StreamReset, StreamSequence
from tests.encoded import encoded_series
from tests.keras_runs import PACKED_LENGTHS, PACKED_WIDTH, SCALE, decode, packed_windows
from tests.replay import from_keras, lstm_replay

pytestmark = pytest.mark.keras


RNNS: dict[str, Callable[[], keras.layers.Layer]] = {
    "LSTM": lambda: keras.layers.LSTM(4, stateful=True, return_sequences=True),
    "GRU": lambda: keras.layers.GRU(4, stateful=True, return_sequences=True),
    "SimpleRNN": lambda: keras.layers.SimpleRNN(4, stateful=True, return_sequences=True),
    "RNN of a cell": lambda: keras.layers.RNN(
        keras.layers.GRUCell(3), stateful=True, return_sequences=True
    ),
    "RNN of a list of cells": lambda: keras.layers.RNN(
        [keras.layers.LSTMCell(4), keras.layers.GRUCell(3)], stateful=True, return_sequences=True
    ),
}


def wrapped(rnn: keras.layers.Layer, batch_size: int, width: int, reset_shape: tuple) -> Any:
    keras.utils.set_random_seed(0)
    x_in = keras.Input(batch_shape=(batch_size, width, 1))
    reset_in = keras.Input(batch_shape=reset_shape)
    return keras.Model([x_in, reset_in], StreamReset(rnn)([x_in, reset_in]))


def stateless_twin(rnn: keras.layers.Layer) -> keras.layers.Layer:
    """The same RNN without state and with the same weights."""
    config = rnn.get_config()
    config.update(stateful=False, return_sequences=True, return_state=False, name=None)
    twin = rnn.__class__.from_config(config)
    twin.build((None, None, 1))
    twin.set_weights(rnn.get_weights())
    return twin


def alone(twin: keras.layers.Layer, series: np.ndarray) -> np.ndarray:
    """The outputs of ``series`` run alone from zero state."""
    return ops.convert_to_numpy(twin(series[None]))[0]


# --- Per-stream flags (B,) around RNNs of nested states -------------------------------------


@pytest.mark.parametrize("kind", ["RNN of a list of cells", "RNN of a cell"])
def test_stream_flags_around_rnns_of_cells_run_each_series_from_zero(kind: str) -> None:
    B, W = 2, 3
    data = [encoded_series(s, n, (1,), "float32") / SCALE for s, n in enumerate([9, 4, 7, 5, 3])]
    batches = seqbatch.StreamBatcher(data, None, batch_size=B, sequence_length=W)
    assert any(b.reset.any() for b in batches[1:]), "streams must start new series mid-epoch"
    rnn = RNNS[kind]()
    model = wrapped(rnn, B, W, (B,))
    twin = stateless_twin(rnn)
    for b in batches:
        out = ops.convert_to_numpy(model([b.x, b.reset.astype("float32")]))
        for i in range(B):
            if b.series[i] < 0:
                continue
            s, p = int(b.series[i]), int(b.position[i])
            expected = alone(twin, data[s][: p + W])[p : p + W]
            np.testing.assert_allclose(out[i], expected, rtol=1e-5, atol=1e-5)


# --- Per-step flags (B, W): packed windows ----------------------------------------------------


def run_packed(model: keras.Model) -> list[np.ndarray]:
    return [ops.convert_to_numpy(model([x, reset])) for x, reset in packed_windows()[1]]


@pytest.mark.parametrize("kind", list(RNNS))
def test_step_flags_run_every_packed_series_as_if_alone(kind: str) -> None:
    series, batches = packed_windows()
    B, W = len(PACKED_LENGTHS), PACKED_WIDTH
    # The layout holds what the test is about: resets inside windows, two in one window.
    inside = np.concatenate([r[:, 1:] for _, r in batches])
    assert inside.sum() >= 4 and (inside.sum(axis=1) >= 2).any()
    rnn = RNNS[kind]()
    model = wrapped(rnn, B, W, (B, W))
    outputs = run_packed(model)
    got: dict[int, dict[int, np.ndarray]] = {}
    for (x, _), out in zip(batches, outputs, strict=True):
        where = decode(x)
        for i, t in zip(*np.nonzero(where[..., 0] >= 0), strict=True):
            s, step = where[i, t].tolist()
            got.setdefault(s, {})[step] = out[i, t]
    twin = stateless_twin(rnn)
    assert sorted(got) == list(range(len(series)))
    for s, data in enumerate(series):
        assert sorted(got[s]) == list(range(len(data))), f"series {s} is not whole"
        packed = np.stack([got[s][t] for t in range(len(data))])
        np.testing.assert_allclose(packed, alone(twin, data), rtol=1e-5, atol=1e-5)


def test_step_flags_lstm_matches_the_numpy_replay() -> None:
    """Outputs and final states against tests/replay.py, which zeroes the state step by step."""
    _, batches = packed_windows()
    B, W = len(PACKED_LENGTHS), PACKED_WIDTH
    rnn = keras.layers.LSTM(4, stateful=True, return_sequences=True, return_state=True)
    model = wrapped(rnn, B, W, (B, W))
    # The state before the first batch is not zero: a flag at step 0 must still clear it.
    for v in rnn.states:
        v.assign(np.full((B, 4), 0.5, "float32"))
    outputs = [[ops.convert_to_numpy(t) for t in model([x, r])] for x, r in batches]
    expected, (h, c) = lstm_replay(
        from_keras(*rnn.cell.get_weights()), batches, state=(np.full((B, 4), 0.5),) * 2
    )
    for (out, out_h, _), exp in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(out, exp, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out_h, exp[:, -1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outputs[-1][2], c, rtol=1e-5, atol=1e-5)
    for v, ref in zip(rnn.states, (h, c), strict=True):
        np.testing.assert_allclose(ops.convert_to_numpy(v), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["LSTM with dropout", "RNN of a list of cells", "SimpleRNN"])
def test_step_flags_train(kind: str) -> None:
    """fit() on packed windows: the loss goes down and every weight moves (gradients flow)."""
    series, batches = packed_windows()
    B, W = len(PACKED_LENGTHS), PACKED_WIDTH
    if kind == "LSTM with dropout":
        rnn = keras.layers.LSTM(
            4, stateful=True, return_sequences=True, dropout=0.1, recurrent_dropout=0.1
        )
    else:
        rnn = RNNS[kind]()
    model = wrapped(rnn, B, W, (B, W))
    head = keras.Model(model.inputs, keras.layers.Dense(1)(model.outputs[0]))
    head.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
    x = np.concatenate([x for x, _ in batches])
    reset = np.concatenate([r for _, r in batches])
    # Each step learns to predict its own series' index, which only the state can carry
    # from the series' first step.
    target = np.maximum(decode(x)[..., :1], 0).astype("float32") / len(series)
    before = [ops.convert_to_numpy(w).copy() for w in head.trainable_weights]
    history = head.fit([x, reset], target, batch_size=B, epochs=30, shuffle=False, verbose=0)
    loss = history.history["loss"]
    assert np.isfinite(loss).all() and np.mean(loss[-5:]) < 0.6 * loss[0], loss
    for w, w0 in zip(head.trainable_weights, before, strict=True):
        assert not np.allclose(ops.convert_to_numpy(w), w0), f"{w.path} did not move"


def test_step_flags_round_trip_through_a_saved_model(tmp_path: Any) -> None:
    B, W = len(PACKED_LENGTHS), PACKED_WIDTH
    model = wrapped(RNNS["RNN of a list of cells"](), B, W, (B, W))
    expected = run_packed(model)
    path = str(tmp_path / "packed.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored.layers[-1], StreamReset)
    for got, exp in zip(run_packed(restored), expected, strict=True):
        np.testing.assert_allclose(got, exp, rtol=1e-6, atol=1e-6)


def test_step_flags_are_refused_for_layers_that_run_backwards() -> None:
    for rnn in (
        keras.layers.Bidirectional(keras.layers.LSTM(3, stateful=True, return_sequences=True)),
        keras.layers.GRU(3, stateful=True, return_sequences=True, go_backwards=True),
    ):
        with pytest.raises(ValueError, match=r"`layer` must run forwards in time to take per-step"):
            wrapped(rnn, 2, 3, (2, 3))


def test_reset_of_another_shape_is_refused() -> None:
    rnn = keras.layers.LSTM(3, stateful=True, return_sequences=True)
    with pytest.raises(
        ValueError,
        match=r"`reset` must have shape \(batch_size,\), one flag per stream, or "
        r"\(batch_size, sequence_length\), one flag per step, for x of shape \(2, 3, 1\)\. "
        r"Received: reset of shape \(2, 4\)",
    ):
        wrapped(rnn, 2, 3, (2, 4))


def test_step_flags_at_window_starts_equal_stream_flags() -> None:
    """A (B, W) reset input built from the (B,) flags of StreamSequence: the same outputs."""
    B, W = 2, 3
    data = [encoded_series(s, n, (1,), "float32") / SCALE for s, n in enumerate([7, 5, 6, 4])]
    batches = seqbatch.StreamBatcher(data, batch_size=B, sequence_length=W)
    seq = StreamSequence(batches, reset_input=True)
    rnn = RNNS["GRU"]()
    per_stream = wrapped(rnn, B, W, (B,))
    step_rnn = RNNS["GRU"]()
    per_step = wrapped(step_rnn, B, W, (B, W))
    per_step.set_weights(per_stream.get_weights())
    for k in range(len(seq)):
        (x, reset), _, _ = seq[k]
        flags = np.zeros((B, W), "float32")
        flags[:, 0] = reset
        np.testing.assert_allclose(
            ops.convert_to_numpy(per_step([x, flags])),
            ops.convert_to_numpy(per_stream([x, reset])),
            rtol=1e-5,
            atol=1e-5,
        )


@pytest.mark.parametrize("per_step", [True, False])
def test_one_stream_copy_of_a_packed_model_runs_like_its_row(per_step: bool) -> None:
    """with_batch_size rebuilds StreamReset for one stream, sharing the weights."""
    _, batches = packed_windows()
    B, W = len(PACKED_LENGTHS), PACKED_WIDTH
    model = wrapped(RNNS["RNN of a list of cells"](), B, W, (B, W) if per_step else (B,))
    one = seqbatch.keras.with_batch_size(model, 1)
    i = 1  # the stream with two series in one window
    for x, reset in batches:
        flags = reset if per_step else reset[:, 0]
        big = ops.convert_to_numpy(model([x, flags]))
        small = ops.convert_to_numpy(one([x[i : i + 1], flags[i : i + 1]]))
        np.testing.assert_allclose(small[0], big[i], rtol=1e-5, atol=1e-5)
