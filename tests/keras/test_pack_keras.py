"""Keras models fed packed batches through StreamSequence and tf.data, on every Keras backend.

A stateful LSTM wrapped in ``StreamReset`` takes the per-step flags ``(B, W)`` of packed
batches. ``predict()`` must give, for every series, the outputs of that series run alone
from zero state; ``fit()`` and ``evaluate()`` (learning rate 0) must report the loss of
``tests/replay.py``, a numpy LSTM that zeroes each row's state at its flagged steps, and
leave its final states. The data encodes its position (``tests.encoded``, scaled by 1/4000).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest

import seqbatch
from seqbatch.keras import StatefulTraining, StreamReset, StreamSequence
from tests.encoded import encoded_series
from tests.keras_models import numpy_weights, state_values, to_numpy
from tests.replay import LSTMWeights, from_keras, lstm_replay

pytestmark = pytest.mark.keras

SCALE = 4000
B, W, UNITS = 3, 4, 4
# Series 4 is one step long; series 1, 3 and 7 start inside windows, two in one window.
LENGTHS = [9, 2, 7, 3, 2, 6, 12, 4, 5]


def series() -> list[np.ndarray]:
    return [encoded_series(s, n, (1,), "float32") / SCALE for s, n in enumerate(LENGTHS)]


def batcher(boundary: str) -> seqbatch.StreamBatcher:
    return seqbatch.StreamBatcher(
        series(),
        batch_size=B,
        sequence_length=W,
        remainder="pad",
        series_boundary=boundary,  # type: ignore[arg-type]
    )


def sequence(batches: seqbatch.StreamBatcher) -> Any:
    return StreamSequence(batches, reset_input=True)


def dataset(batches: seqbatch.StreamBatcher) -> Any:
    return batches.to_tf_dataset(reset_input=True)


ADAPTERS = [
    pytest.param(sequence, id="sequence"),
    pytest.param(dataset, id="tf.data", marks=pytest.mark.needs_tensorflow),
]


def model(flags: tuple[int, ...]) -> keras.Model:
    """LSTM in StreamReset, a Dense head; weights from numpy, learning rate 0."""
    x_in = keras.Input(batch_shape=(B, W, 1))
    reset_in = keras.Input(batch_shape=flags)
    lstm = keras.layers.LSTM(UNITS, stateful=True, return_sequences=True)
    out = keras.layers.Dense(1, name="head")(StreamReset(lstm)([x_in, reset_in]))
    m = keras.Model([x_in, reset_in], out)
    numpy_weights(m, seed=7)
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    return m


def weights_of(m: keras.Model) -> tuple[LSTMWeights, np.ndarray, np.ndarray]:
    kernel, bias = (to_numpy(w) for w in m.get_layer("head").weights)
    (wrapper,) = [layer for layer in m.layers if isinstance(layer, StreamReset)]
    return from_keras(*wrapper.layer.cell.get_weights()), kernel, bias


def alone(m: keras.Model) -> list[np.ndarray]:
    """The output of every step of every series run alone from zero state (numpy)."""
    lstm, kernel, bias = weights_of(m)
    out = []
    for data in series():
        (h,), _ = lstm_replay(lstm, [(data[None], np.ones(1, bool))])
        out.append(h[0] @ kernel + bias)
    return out


def replayed_loss(m: keras.Model, batches: seqbatch.StreamBatcher) -> tuple[float, Any]:
    """The mean squared error over the real steps of one epoch, and the final (h, c)."""
    lstm, kernel, bias = weights_of(m)
    flags = [b.reset if b.step_reset is None else b.step_reset for b in batches]
    outputs, state = lstm_replay(lstm, [(b.x, f) for b, f in zip(batches, flags, strict=True)])
    errors = [
        ((h @ kernel + bias - b.y) ** 2)[b.sample_weight > 0]
        for h, b in zip(outputs, batches, strict=True)
    ]
    return float(np.concatenate(errors).mean()), state


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_predict_runs_every_packed_series_as_if_alone(adapter: Callable) -> None:
    batches = batcher("pack")
    assert sum(int(b.step_reset[:, 1:].sum()) for b in batches) >= 3
    m = model((B, W))
    out = m.predict(adapter(batches), verbose=0).reshape(len(batches), B, W)
    expected = alone(m)
    seen = np.zeros(len(LENGTHS), int)
    for k, b in enumerate(batches):
        for i, t in zip(*np.nonzero(b.step_series >= 0), strict=True):
            s, step = int(b.step_series[i, t]), int(b.step_position[i, t])
            np.testing.assert_allclose(out[k, i, t], expected[s][step, 0], rtol=1e-5, atol=1e-5)
            seen[s] += 1
    assert seen.tolist() == [n - 1 for n in LENGTHS]  # every step with a target, once


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_fit_and_evaluate_report_the_replayed_loss_and_keep_its_states(
    adapter: Callable,
) -> None:
    batches = batcher("pack")
    m = model((B, W))
    history = m.fit(
        adapter(batches), epochs=2, shuffle=False, verbose=0, callbacks=[StatefulTraining()]
    )
    loss, (h, c) = replayed_loss(m, batches)
    np.testing.assert_allclose(history.history["loss"], [loss, loss], rtol=1e-5)
    # StatefulTraining zeroed the states when epoch 2 began: they hold one epoch's end.
    got_h, got_c = state_values(m)
    np.testing.assert_allclose(got_h, h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_c, c, rtol=1e-5, atol=1e-6)
    evaluated = m.evaluate(adapter(batches), verbose=0, callbacks=[StatefulTraining()])
    np.testing.assert_allclose(evaluated, loss, rtol=1e-5)


def test_packing_leaves_the_loss_of_a_model_unchanged() -> None:
    # The same weights score the same on packed and on "reset" batches: exact resets make
    # each step's output depend on its own series alone, whatever the layout.
    packed, per_stream = model((B, W)), model((B,))
    per_stream.set_weights(packed.get_weights())
    on_packed = packed.evaluate(sequence(batcher("pack")), verbose=0)
    on_reset = per_stream.evaluate(sequence(batcher("reset")), verbose=0)
    expected, _ = replayed_loss(packed, batcher("reset"))
    np.testing.assert_allclose([on_packed, on_reset], [expected, expected], rtol=1e-5)
    assert len(batcher("pack")) < len(batcher("reset"))


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_model_of_per_stream_flags_is_refused_packed_batches(adapter: Callable) -> None:
    m = model((B,))
    message = (
        r"`reset` of the batches must have the shape of the model's reset input\. Received: "
        r"reset of shape \(3, 4\) for a model input of shape \(3,\) \(packed batches, "
        r"series_boundary='pack', give a flag per step: keras\.Input\(batch_shape=\(3, 4\)\); "
        r"other batches a flag per stream: keras\.Input\(batch_shape=\(3,\)\)\)"
    )
    # On the tf.data path, JAX's and torch's fit() first build the model's metrics on one
    # batch, before any callback: Keras's own shape error comes first, still before a step.
    keras_first = adapter is dataset and keras.backend.backend() != "tensorflow"
    with pytest.raises(ValueError, match="Invalid input shape" if keras_first else message):
        m.fit(adapter(batcher("pack")), shuffle=False, verbose=0, callbacks=[StatefulTraining()])
    with pytest.raises(ValueError, match=message):
        m.predict(adapter(batcher("pack")), verbose=0, callbacks=[StatefulTraining()])
