"""StreamReset on every Keras backend: per-stream resets inside the graph, and a stateful
model trained end to end on many series.

Data encodes its own position (``tests.encoded``); the reference of a row is the same RNN
without state run over its series from step 0.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

import seqbatch
from seqbatch.keras import StatefulTraining, StreamReset, StreamSequence, reset_states
from tests.encoded import encoded_series
from tests.keras_models import wave

pytestmark = pytest.mark.keras


# --- StreamReset ----------------------------------------------------------------------------


def reset_model(
    batch_size: int, sequence_length: int, features: int, rnn: keras.layers.Layer
) -> keras.Model:
    x_in = keras.Input(batch_shape=(batch_size, sequence_length, features))
    reset_in = keras.Input(batch_shape=(batch_size,))
    return keras.Model([x_in, reset_in], StreamReset(rnn)([x_in, reset_in]))


def stateless_twin(rnn: keras.layers.Layer, features: int) -> keras.layers.Layer:
    """The same RNN without state, with the same weights: the reference of a row run by hand."""
    config = rnn.get_config()
    config.update(stateful=False, return_sequences=True, name=None)
    twin = rnn.__class__.from_config(config)
    twin.build((None, None, features))
    twin.set_weights(rnn.get_weights())
    return twin


@pytest.mark.parametrize("rnn_class", [keras.layers.LSTM, keras.layers.GRU])
def test_stream_reset_zeroes_exactly_the_flagged_streams(rnn_class: type) -> None:
    B, W, F = 4, 3, 2
    rnn = rnn_class(5, stateful=True, return_sequences=True)
    model = reset_model(B, W, F, rnn)
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(2, B, W, F)).astype("float32")
    model.predict([x1, np.ones(B, bool)], verbose=0)
    flags = np.array([True, False, False, True])
    out = model.predict([x2, flags], verbose=0)

    twin = stateless_twin(rnn, F)
    for i in range(B):
        # A flagged row starts from zero; the others continue from their first window.
        row = x2[i : i + 1] if flags[i] else np.concatenate([x1[i : i + 1], x2[i : i + 1]], axis=1)
        expected = ops.convert_to_numpy(twin(row))[0, -W:]
        np.testing.assert_allclose(out[i], expected, rtol=1e-5, atol=1e-5)


def test_stream_reset_refuses_a_stateful_bidirectional_layer() -> None:
    """Per-stream flags cannot help a backward direction: its state never continues a stream."""
    layer = keras.layers.Bidirectional(
        keras.layers.LSTM(3, stateful=True, return_sequences=True), name="both_ways"
    )
    with pytest.raises(
        ValueError,
        match=r"A stateful RNN must run forwards in time on seqbatch batches: the layer "
        r"'backward_lstm\w*' of Bidirectional 'both_ways' runs backwards.*Received: "
        r"Bidirectional 'both_ways' of LSTM\(stateful=True\)",
    ):
        reset_model(3, 4, 2, layer)


def per_series_reference(
    twin: keras.layers.Layer, data: list[np.ndarray], b: seqbatch.Batch, W: int
) -> np.ndarray:
    """What each row of batch ``b`` must hold: the RNN run over its series from step 0."""
    out = []
    for s, p in zip(b.series.tolist(), b.position.tolist(), strict=True):
        run = ops.convert_to_numpy(twin(data[s][None, : p + W]))[0]
        out.append(run[p : p + W])
    return np.stack(out)


def test_stream_reset_holds_with_steps_per_execution() -> None:
    B, W = 2, 3
    data = [encoded_series(s, n, (1,), "float32") / 4000 for s, n in enumerate([13, 7, 7, 10, 4])]
    batches = seqbatch.StreamBatcher(data, batch_size=B, sequence_length=W)
    assert any(b.reset.any() for b in batches[1:]), "streams must start new series mid-epoch"
    assert all((b.series >= 0).all() for b in batches), "no idle stream in this layout"
    rnn = keras.layers.GRU(4, stateful=True, return_sequences=True)
    model = reset_model(B, W, 1, rnn)
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=2)
    seq = StreamSequence(batches, reset_input=True)
    if keras.backend.backend() == "torch":
        # Keras refuses several steps per execution on torch (docs/backends.md).
        with pytest.raises(
            ValueError, match=r"`steps_per_execution` must be 1 with the PyTorch backend"
        ):
            model.predict(seq, verbose=0)
        model.compile(optimizer="sgd", loss="mse")
    reset_states(model)
    out = model.predict(seq, verbose=0)
    twin = stateless_twin(rnn, 1)
    expected = np.concatenate([per_series_reference(twin, data, b, W) for b in batches])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # And it trains under fit() with several steps per execution.
    history = model.fit(seq, shuffle=False, epochs=2, verbose=0, callbacks=[StatefulTraining()])
    assert np.isfinite(history.history["loss"]).all()


def test_stream_reset_round_trips_through_its_config() -> None:
    rnn = keras.layers.LSTM(3, stateful=True, return_sequences=True)
    model = reset_model(2, 4, 1, rnn)
    restored = keras.Model.from_config(model.get_config())
    restored.set_weights(model.get_weights())
    x, flags = np.ones((2, 4, 1)), np.array([True, True])
    np.testing.assert_allclose(
        restored.predict([x, flags], verbose=0), model.predict([x, flags], verbose=0), rtol=1e-6
    )
    assert isinstance(restored.layers[-1], StreamReset)


def test_stream_reset_refuses_a_stateless_layer() -> None:
    with pytest.raises(ValueError, match=r"`layer` must be a stateful RNN layer"):
        StreamReset(keras.layers.LSTM(3))
    with pytest.raises(ValueError, match=r"`layer` must be a stateful RNN layer"):
        StreamReset(keras.layers.Dense(3))


# --- End to end -------------------------------------------------------------------------------


def test_end_to_end_fit_of_a_stateful_model_on_many_series() -> None:
    """Many series with resets and padding, a shuffled layout, validation: the loss goes down."""
    rng = np.random.default_rng(0)
    series = [
        wave(int(n), float(p))
        for n, p in zip(rng.integers(20, 60, 8), rng.uniform(0, 6, 8), strict=True)
    ]
    train = seqbatch.StreamBatcher(
        series[:6], batch_size=2, sequence_length=5, remainder="pad", shuffle=True, seed=0
    )
    validation = seqbatch.StreamBatcher(
        series[6:], batch_size=2, sequence_length=5, remainder="pad"
    )
    keras.utils.set_random_seed(0)
    x_in = keras.Input(batch_shape=(2, 5, 1))
    reset_in = keras.Input(batch_shape=(2,))
    h = StreamReset(keras.layers.LSTM(8, stateful=True, return_sequences=True))([x_in, reset_in])
    model = keras.Model([x_in, reset_in], keras.layers.Dense(1)(h))
    # Keras refuses several steps per execution on torch.
    steps = 1 if keras.backend.backend() == "torch" else 2
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse", steps_per_execution=steps)
    history = model.fit(
        StreamSequence(train, reset_input=True),
        validation_data=StreamSequence(validation, reset_input=True),
        shuffle=False,
        epochs=8,
        verbose=0,
        callbacks=[StatefulTraining()],
    )
    loss = history.history["val_loss"]
    assert np.isfinite(loss).all()
    assert loss[-1] < 0.5 * loss[0]
    assert train.epoch == 8
