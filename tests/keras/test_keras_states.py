"""The states of stateful RNNs on every Keras backend: carried, reset, kept from validation,
and checked against a numpy LSTM that carries each row's state by hand (``tests.replay``).

A backend that drops the state (JAX did, silently) or cannot train it (torch did) fails the
replay tests: the reference carries every row's state from batch to batch, so outputs and
final states agree only if the backend carried them too.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

import seqbatch
from seqbatch.keras import (
    StatefulTraining,
    StreamReset,
    StreamSequence,
    carry_states,
    reset_states,
    stateful_rnns,
    with_batch_size,
)
from tests.encoded import encoded_series
from tests.keras_models import (
    lstm_model,
    quiet_sequence,
    small_model,
    state_values,
    to_numpy,
    wave,
)
from tests.replay import from_keras, lstm_replay

pytestmark = pytest.mark.keras

B, W, F, U = 3, 4, 2, 5


# --- The numpy replay against the backend --------------------------------------------------


def many_series() -> seqbatch.StreamBatcher:
    """Series of unequal lengths: streams start new series mid-epoch, some end in padding."""
    rng = np.random.default_rng(1)
    series = [rng.normal(size=(int(n), F)).astype("float32") for n in [19, 11, 9, 14, 6, 8]]
    # Targets as wide as the LSTM's output; their values play no part (learning rate 0).
    targets = [np.zeros((len(s), U), "float32") for s in series]
    return seqbatch.StreamBatcher(series, targets, batch_size=B, sequence_length=W, remainder="pad")


def one_series() -> seqbatch.StreamBatcher:
    data = np.random.default_rng(2).normal(size=(B * 5 * W, F)).astype("float32")
    targets = np.zeros((len(data), U), "float32")
    return seqbatch.StreamBatcher(data, targets, batch_size=B, sequence_length=W)


CASES = [
    pytest.param(one_series, False, id="one-series"),
    pytest.param(many_series, True, id="resets"),
]


def replay(model: keras.Model, batches: seqbatch.StreamBatcher) -> tuple[list[np.ndarray], Any]:
    """The outputs and final ``(h, c)`` of the model's LSTM over one epoch, from zero states."""
    (lstm,) = stateful_rnns(model)
    weights = from_keras(*(to_numpy(w) for w in lstm.cell.weights))
    return lstm_replay(weights, [(b.x, b.reset) for b in batches])


def assert_states(model: keras.Model, expected: tuple[np.ndarray, np.ndarray]) -> None:
    h, c = state_values(model)
    np.testing.assert_allclose(h, expected[0], atol=1e-5)
    np.testing.assert_allclose(c, expected[1], atol=1e-5)
    assert np.abs(h).max() > 0.05, "the test needs states far from zero"


@pytest.mark.parametrize(("batcher", "reset_input"), CASES)
def test_predict_equals_the_replay(batcher: Any, reset_input: bool) -> None:
    batches = batcher()
    model = lstm_model(B, W, F, U, reset_input=reset_input)
    outputs, final = replay(model, batches)
    reset_states(model)
    predicted = model.predict(quiet_sequence(batches, reset_input=reset_input), verbose=0)
    np.testing.assert_allclose(predicted, np.concatenate(outputs), atol=1e-5)
    assert_states(model, final)


@pytest.mark.parametrize(("batcher", "reset_input"), CASES)
def test_fit_and_evaluate_carry_the_states_of_the_replay(batcher: Any, reset_input: bool) -> None:
    batches = batcher()
    model = lstm_model(B, W, F, U, reset_input=reset_input)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    _, final = replay(model, batches)
    seq = quiet_sequence(batches, reset_input=reset_input)
    model.fit(seq, shuffle=False, epochs=2, verbose=0, callbacks=[StatefulTraining()])
    assert_states(model, final)
    reset_states(model)
    model.evaluate(seq, verbose=0)
    assert_states(model, final)


def test_train_on_batch_carries_the_states_of_the_replay() -> None:
    batches = many_series()
    model = lstm_model(B, W, F, U, reset_input=True)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    _, final = replay(model, batches)
    reset_states(model)  # as a loop of train_on_batch starts: also makes the states carried
    for b in batches:
        model.train_on_batch([b.x, b.reset.astype("float32")], b.y, sample_weight=b.sample_weight)
    assert_states(model, final)


@pytest.mark.parametrize("rnn_class", [keras.layers.LSTM, keras.layers.GRU])
def test_a_plain_stateful_rnn_trains(rnn_class: type) -> None:
    """On torch, a stateful LSTM or GRU failed in backward (in-place state update)."""
    model = keras.Sequential(
        [
            keras.Input(batch_shape=(2, 5, 1)),
            rnn_class(4, stateful=True, return_sequences=True),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    batches = seqbatch.StreamBatcher(wave(401, 0.0), batch_size=2, sequence_length=5)
    history = model.fit(
        StreamSequence(batches), shuffle=False, epochs=3, verbose=0, callbacks=[StatefulTraining()]
    )
    assert history.history["loss"][-1] < history.history["loss"][0]


# --- carry_states keeps the states out of the weights --------------------------------------


def test_carried_states_stay_out_of_the_weights(tmp_path: Path) -> None:
    model = lstm_model(B, W, F, U, reset_input=False)
    weights = [w.copy() for w in model.get_weights()]
    carry_states(model)
    carry_states(model)  # a second call adds nothing
    states = [id(s) for s in stateful_rnns(model)[0].states]
    assert len(model.get_weights()) == len(weights) == 3
    assert not {id(w) for w in model.weights} & set(states)
    carried = [id(v) for v in model.non_trainable_variables]
    # JAX carries exactly what non_trainable_variables lists: the states must be there, once.
    expected = 1 if keras.backend.backend() == "jax" else 0
    assert [carried.count(s) for s in states] == [expected, expected]
    model.predict(np.ones((B, W, F)), verbose=0)
    model.save_weights(tmp_path / "model.weights.h5")
    fresh = lstm_model(B, W, F, U, reset_input=False)
    fresh.set_weights([np.zeros_like(w) for w in weights])
    fresh.load_weights(tmp_path / "model.weights.h5")
    for a, b in zip(fresh.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not any(s.any() for s in state_values(fresh)), "saved weights hold no state"


# --- reset_states ---------------------------------------------------------------------------


def test_reset_states_zeroes_nested_and_wrapped_rnns() -> None:
    inner = keras.Sequential(
        [
            keras.Input(batch_shape=(2, 3, 1)),
            keras.layers.LSTM(3, stateful=True, return_sequences=True),
        ]
    )
    x_in = keras.Input(batch_shape=(2, 3, 1))
    reset_in = keras.Input(batch_shape=(2,))
    h = inner(x_in)
    # A stateless Bidirectional holds no state: reset_states passes it by.
    h = keras.layers.Bidirectional(keras.layers.GRU(3, return_sequences=True))(h)
    h = keras.layers.GRU(3, stateful=True, return_sequences=True)(h)
    h = StreamReset(keras.layers.SimpleRNN(3, stateful=True))([h, reset_in])
    model = keras.Model([x_in, reset_in], h)
    rnns = stateful_rnns(model)
    assert len(rnns) == 3  # LSTM, GRU, SimpleRNN
    reset_states(model)
    model.predict([np.ones((2, 3, 1)), np.zeros(2)], verbose=0)
    states = state_values(model)
    assert len(states) == 4 and all(s.any() for s in states)
    reset_states(model)
    assert not any(s.any() for s in state_values(model))


def test_reset_states_zeroes_an_rnn_of_a_list_of_cells() -> None:
    # Keras's own RNN.reset_state() fails on these nested states.
    cells = [keras.layers.LSTMCell(4), keras.layers.GRUCell(3)]
    rnn = keras.layers.RNN(cells, stateful=True, return_sequences=True)
    x_in, reset_in = keras.Input(batch_shape=(2, 3, 1)), keras.Input(batch_shape=(2,))
    model = keras.Model([x_in, reset_in], StreamReset(rnn)([x_in, reset_in]))
    reset_states(model)
    model.predict([np.ones((2, 3, 1)), np.ones(2)], verbose=0)
    states = [keras.ops.convert_to_numpy(s) for s in keras.tree.flatten(rnn.states)]
    assert len(states) == 3 and all(s.any() for s in states)  # LSTM h and c, GRU h
    reset_states(model)
    assert not any(keras.ops.convert_to_numpy(s).any() for s in keras.tree.flatten(rnn.states))


def test_reset_states_checks_its_argument() -> None:
    for bad in (None, "model"):
        with pytest.raises(
            TypeError,
            match=r"`model` must be a keras.Model or keras.layers.Layer. Received: model of "
            rf"type {type(bad).__name__}",
        ):
            reset_states(bad)  # type: ignore[arg-type]


# --- StatefulTraining ------------------------------------------------------------------------


def test_validation_leaves_the_training_states_alone() -> None:
    train = seqbatch.StreamBatcher(wave(200, 0.0), batch_size=2, sequence_length=5)
    validation = seqbatch.StreamBatcher(wave(60, 1.0), batch_size=2, sequence_length=5)

    def fit(validate: bool, callbacks: list[keras.callbacks.Callback]) -> keras.Model:
        model = small_model(2, 5)
        model.fit(
            StreamSequence(train),
            validation_data=StreamSequence(validation) if validate else None,
            shuffle=False,
            verbose=0,
            callbacks=callbacks,
        )
        return model

    without = fit(False, [StatefulTraining()])
    with_validation = fit(True, [StatefulTraining()])
    for a, b in zip(state_values(with_validation), state_values(without), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # The trap: without the callback, validation leaves its own states behind.
    with pytest.warns(UserWarning, match="without seqbatch.keras.StatefulTraining"):
        bare = fit(True, [])
    assert not all(
        np.allclose(a, b) for a, b in zip(state_values(bare), state_values(without), strict=True)
    )


def test_validation_starts_from_zero_states() -> None:
    train = seqbatch.StreamBatcher(wave(200, 0.0), batch_size=2, sequence_length=5)
    validation = seqbatch.StreamBatcher(wave(60, 1.0), batch_size=2, sequence_length=5)
    model = small_model(2, 5)
    history = model.fit(
        StreamSequence(train),
        validation_data=StreamSequence(validation),
        shuffle=False,
        verbose=0,
        callbacks=[StatefulTraining()],
    )
    reset_states(model)
    from_zero = model.evaluate(StreamSequence(validation), verbose=0)
    assert history.history["val_loss"][0] == pytest.approx(from_zero, rel=1e-5)


def test_every_epoch_starts_from_zero_states() -> None:
    batches = seqbatch.StreamBatcher(wave(100, 0.0), batch_size=2, sequence_length=5)

    def final_states(epochs: int, callbacks: list[keras.callbacks.Callback]) -> list[np.ndarray]:
        model = small_model(2, 5)
        model.optimizer.learning_rate.assign(0.0)
        expect = pytest.warns(UserWarning, match="without seqbatch.keras.StatefulTraining")
        with expect if not callbacks and epochs > 1 else contextlib.nullcontext():
            model.fit(
                StreamSequence(batches),
                shuffle=False,
                epochs=epochs,
                verbose=0,
                callbacks=callbacks,
            )
        return state_values(model)

    one = final_states(1, [StatefulTraining()])
    for a, b in zip(final_states(2, [StatefulTraining()]), one, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # The trap: without the reset, epoch 2 starts from where epoch 1 ended.
    assert not all(np.allclose(a, b) for a, b in zip(final_states(2, []), one, strict=True))


# --- with_batch_size -------------------------------------------------------------------------


def test_with_batch_size_runs_each_stream_like_the_big_model() -> None:
    B3, W4 = 3, 4
    x_in = keras.Input(batch_shape=(B3, W4, 1))
    inner = keras.Sequential(
        [
            keras.Input(batch_shape=(B3, W4, 1)),
            keras.layers.LSTM(4, stateful=True, return_sequences=True),
        ]
    )
    h = inner(x_in)
    h = keras.layers.GRU(3, stateful=True, return_sequences=True)(h)
    model = keras.Model(x_in, keras.layers.Dense(2)(h))
    batches = seqbatch.StreamBatcher(wave(100, 0.5), batch_size=B3, sequence_length=W4)
    reset_states(model)
    big = model.predict(StreamSequence(batches), verbose=0).reshape(len(batches), B3, W4, 2)

    one = with_batch_size(model, 1)
    assert one.input_shape == (1, W4, 1)
    assert len(one.weights) == len(model.weights)
    assert all(a is b for a, b in zip(one.weights, model.weights, strict=True))
    for i in range(B3):
        reset_states(one)
        alone = np.stack([one.predict(b.x[i : i + 1], verbose=0)[0] for b in batches])
        np.testing.assert_allclose(alone, big[:, i], rtol=1e-5, atol=1e-5)

    # Shared, not copied: a change to the big model's weights shows in the small one.
    before = one.predict(batches[0].x[:1], verbose=0)
    model.layers[-1].kernel.assign(2 * model.layers[-1].kernel)
    reset_states(one)
    after = one.predict(batches[0].x[:1], verbose=0)
    assert not np.allclose(before, after)


def test_with_batch_size_keeps_the_reset_input() -> None:
    B2, W3 = 2, 3
    x_in = keras.Input(batch_shape=(B2, W3, 1))
    reset_in = keras.Input(batch_shape=(B2,))
    rnn = keras.layers.GRU(4, stateful=True, return_sequences=True)
    model = keras.Model([x_in, reset_in], StreamReset(rnn)([x_in, reset_in]))
    data = [encoded_series(s, n, (1,), "float32") / 4000 for s, n in enumerate([10, 7, 4])]
    batches = seqbatch.StreamBatcher(data, batch_size=B2, sequence_length=W3)
    big = model.predict(StreamSequence(batches, reset_input=True), verbose=0)
    big = big.reshape(len(batches), B2, W3, 4)
    one = with_batch_size(model, 1)
    for i in range(B2):
        reset_states(one)
        alone = np.stack(
            [one.predict([b.x[i : i + 1], b.reset[i : i + 1]], verbose=0)[0] for b in batches]
        )
        np.testing.assert_allclose(alone, big[:, i], rtol=1e-5, atol=1e-5)


def test_with_batch_size_checks_its_arguments() -> None:
    model = small_model(2, 3)
    with pytest.raises(
        ValueError, match=r"`batch_size` must be a positive integer. Received: batch_size=0"
    ):
        with_batch_size(model, 0)

    class Subclassed(keras.Model):
        def call(self, x: Any) -> Any:
            return x

    with pytest.raises(ValueError, match=r"`model` must be a Functional or Sequential keras.Model"):
        with_batch_size(Subclassed(), 1)


# --- The Keras FAQ example, in Keras 3, through seqbatch -----------------------------------


def faq_model() -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input(batch_shape=(32, 10, 16)),
            keras.layers.LSTM(32, stateful=True),
            keras.layers.Dense(16, activation="softmax"),
        ]
    )
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(-0.2, 0.2, w.shape).astype("float32") for w in model.weights])
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy")
    return model


def test_keras_faq_example_through_seqbatch() -> None:
    x = np.random.default_rng(0).random((32, 21, 16)).astype("float32")
    batches = seqbatch.StreamBatcher(
        list(x), targets="next", return_sequences=False, batch_size=32, sequence_length=10
    )
    assert len(batches) == 2
    for b, (inputs, target) in zip(
        batches, [(x[:, :10], x[:, 10]), (x[:, 10:20], x[:, 20])], strict=True
    ):
        np.testing.assert_array_equal(b.x, inputs)
        np.testing.assert_array_equal(b.y, target)
        np.testing.assert_array_equal(b.sample_weight, np.ones(32, "float32"))
    assert batches[0].reset.all() and not batches[1].reset.any()

    by_hand = faq_model()
    reset_states(by_hand)  # carries the states on JAX and torch too
    by_hand.train_on_batch(x[:, :10], x[:, 10])
    by_hand.train_on_batch(x[:, 10:20], x[:, 20])

    model = faq_model()
    history = model.fit(
        StreamSequence(batches), shuffle=False, verbose=0, callbacks=[StatefulTraining()]
    )
    assert np.isfinite(history.history["loss"][0])
    for a, b in zip(model.get_weights(), by_hand.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(state_values(model), state_values(by_hand), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
