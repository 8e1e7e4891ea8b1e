"""Keras 3 adapter and stateful helpers: every trap of DESIGN.md's "Keras 3 facts" has a test here.

Data encodes its own position (``tests.encoded``: step ``t`` of series ``s`` holds
``1000 * (s + 1) + t``), so a batch that arrives out of order, or a row that lands in the
wrong stream, shows up as a wrong number. Models are tiny; learning rates are 0 where only
the order of the data matters.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from keras import ops

import seqbatch
from seqbatch.keras import (
    StatefulTraining,
    StreamReset,
    StreamSequence,
    reset_states,
    stateful_rnns,
    with_batch_size,
)
from tests.encoded import encoded_series
from tests.weights import element_weight, real_step_weight


def expected_element(
    b: seqbatch.Batch, reset_input: bool, sample_weight: bool, step_weight: float
) -> tuple:
    inputs = (b.x, b.reset.astype(np.float32)) if reset_input else b.x
    if b.y is None:
        return (inputs,)
    return (inputs, b.y, element_weight(b, step_weight)) if sample_weight else (inputs, b.y)


def assert_same(actual: Any, expected: Any) -> None:
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert_same(a, e)
    else:
        assert actual.dtype == expected.dtype and actual.shape == expected.shape
        np.testing.assert_array_equal(actual, expected)


def quiet_sequence(batches: seqbatch.StreamBatcher, **kwargs: Any) -> StreamSequence:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return StreamSequence(batches, **kwargs)


# --- The sequence serves exactly the numpy batches ----------------------------------------


@given(
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=6),
    single=st.booleans(),
    features=st.sampled_from([(), (2,)]),
    batch_size=st.integers(1, 4),
    sequence_length=st.integers(1, 6),
    targets=st.sampled_from([None, "next", 2]),
    return_sequences=st.booleans(),
    remainder=st.sampled_from(["drop", "pad"]),
    shuffle=st.booleans(),
    epoch=st.integers(0, 3),
    reset_input=st.booleans(),
    sample_weight=st.booleans(),
    order=st.randoms(use_true_random=False),
)
def test_sequence_items_equal_numpy_batches(
    lengths: list[int],
    single: bool,
    features: tuple[int, ...],
    batch_size: int,
    sequence_length: int,
    targets: str | int | None,
    return_sequences: bool,
    remainder: str,
    shuffle: bool,
    epoch: int,
    reset_input: bool,
    sample_weight: bool,
    order: Any,
) -> None:
    series = [encoded_series(s, n, features, "float32") for s, n in enumerate(lengths)]
    kwargs = dict(
        batch_size=batch_size,
        sequence_length=sequence_length,
        return_sequences=return_sequences,
        remainder=remainder,
        shuffle=shuffle,
        seed=7,
    )
    try:
        batches = seqbatch.StreamBatcher(series[0] if single else series, targets, **kwargs)
        reference = seqbatch.StreamBatcher(series[0] if single else series, targets, **kwargs)
    except ValueError:
        assume(False)
    batches.set_epoch(epoch)
    reference.set_epoch(epoch)
    seq = quiet_sequence(batches, reset_input=reset_input, sample_weight=sample_weight)
    assert len(seq) == len(reference)
    # Any order, twice over (as Keras probes items and workers race): the same items.
    indices = list(range(len(seq))) * 2
    order.shuffle(indices)
    step_weight = real_step_weight(reference)
    for k in indices:
        assert_same(seq[k], expected_element(reference[k], reset_input, sample_weight, step_weight))
    assert batches.epoch == reference.epoch


@pytest.mark.parametrize(
    ("targets", "reset_input", "sample_weight"),
    [("next", False, True), ("next", True, True), ("next", True, False), (None, True, True)],
)
def test_sequence_items_equal_the_tf_dataset_elements(
    targets: str | None, reset_input: bool, sample_weight: bool
) -> None:
    data = [encoded_series(s, n, (2,), "float32") for s, n in enumerate([14, 9, 8, 5])]
    batches = seqbatch.StreamBatcher(
        data, targets, batch_size=2, sequence_length=3, remainder="pad"
    )
    seq = quiet_sequence(batches, reset_input=reset_input, sample_weight=sample_weight)
    dataset = batches.to_tf_dataset(reset_input=reset_input, sample_weight=sample_weight)
    elements = [keras.tree.map_structure(ops.convert_to_numpy, e) for e in dataset]
    assert len(elements) == len(seq)
    for k, element in enumerate(elements):
        assert_same(seq[k], element)


def test_sequence_items_are_pure_under_probing_and_threads() -> None:
    data = encoded_series(0, 400, (2,), "float32")
    batches = seqbatch.StreamBatcher(data, batch_size=4, sequence_length=5, shuffle=True, seed=1)
    seq = StreamSequence(batches, reset_input=True)
    sequential = [seq[k] for k in range(len(seq))]
    # The probes Keras makes before training.
    seq[1], seq[0], seq[1]
    rng = np.random.default_rng(0)
    indices = rng.permutation(np.tile(np.arange(len(seq)), 8)).tolist()
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(seq.__getitem__, indices))
    for k, item in zip(indices, concurrent, strict=True):
        assert_same(item, sequential[k])
    assert batches.epoch == 0


def test_sequence_checks_its_arguments() -> None:
    batches = seqbatch.StreamBatcher(np.arange(20.0), batch_size=2, sequence_length=3)
    with pytest.raises(TypeError, match=r"`batches` must be a seqbatch.StreamBatcher"):
        StreamSequence(np.arange(10))  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"`reset_input` must be True or False. Received: reset_input=1"
    ):
        StreamSequence(batches, reset_input=1)  # type: ignore[arg-type]


def test_sequence_warns_when_a_stream_starts_a_new_series_unseen() -> None:
    many = [encoded_series(s, n, (), "float32") for s, n in enumerate([9, 6, 6])]
    batches = seqbatch.StreamBatcher(many, batch_size=2, sequence_length=3)
    with pytest.warns(
        UserWarning, match=r"reset_input=True and wrap the RNN in seqbatch.keras.StreamReset"
    ):
        StreamSequence(batches)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        StreamSequence(batches, reset_input=True)
        one_per_stream = seqbatch.StreamBatcher(many[:2], batch_size=2, sequence_length=3)
        StreamSequence(one_per_stream)


# --- fit() and the order of the batches ---------------------------------------------------


class FirstStep(keras.layers.Layer):
    """Passes ``x`` through and keeps ``x[:, 0, 0]`` of the last batch in a variable."""

    def build(self, input_shape: Any) -> None:
        self.seen = self.add_weight(
            shape=(input_shape[0],), initializer="zeros", trainable=False, name="seen"
        )

    def call(self, x: Any) -> Any:
        self.seen.assign(ops.cast(x[:, 0, 0], self.seen.dtype))
        return x


class SeenBatches(keras.callbacks.Callback):
    """Records, after every training step, the first step of every row of the batch trained on."""

    def __init__(self, layer: FirstStep) -> None:
        super().__init__()
        self.layer = layer
        self.seen: list[list[float]] = []

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.seen.append(self.layer.seen.numpy().tolist())


def order_model(batch_size: int, sequence_length: int) -> tuple[keras.Model, SeenBatches]:
    first = FirstStep()
    model = keras.Sequential(
        [
            keras.Input(batch_shape=(batch_size, sequence_length, 1)),
            first,
            keras.layers.SimpleRNN(2, stateful=True, return_sequences=True),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    return model, SeenBatches(first)


def first_steps(batches: seqbatch.StreamBatcher) -> list[list[float]]:
    return [b.x[:, 0, 0].astype(float).tolist() for b in batches]


@pytest.mark.parametrize("workers", [1, 2])
def test_fit_default_shuffle_stops_before_the_first_step(workers: int) -> None:
    batches = seqbatch.StreamBatcher(
        encoded_series(0, 200, (1,), "float32"), batch_size=4, sequence_length=5
    )
    model, seen = order_model(4, 5)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=r"Call fit\(\.\.\., shuffle=False\)"):
        model.fit(StreamSequence(batches, workers=workers), epochs=2, verbose=0, callbacks=[seen])
    assert seen.seen == []
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)
    # The same sequence trains in order once shuffle=False is passed.
    model.fit(StreamSequence(batches, workers=workers), shuffle=False, verbose=0, callbacks=[seen])
    assert seen.seen == first_steps(batches)


@pytest.mark.parametrize("workers", [1, 2])
def test_fit_feeds_the_batches_in_order(workers: int) -> None:
    batches = seqbatch.StreamBatcher(
        encoded_series(0, 300, (1,), "float32"), batch_size=3, sequence_length=4
    )
    model, seen = order_model(3, 4)
    seq = StreamSequence(batches, workers=workers)
    model.fit(seq, shuffle=False, epochs=2, verbose=0, callbacks=[seen, StatefulTraining()])
    assert seen.seen == first_steps(batches) * 2


def test_a_shuffled_batcher_moves_one_epoch_per_fit_epoch() -> None:
    data = [encoded_series(s, n, (1,), "float32") for s, n in enumerate([20, 16, 12, 12, 8])]
    batches = seqbatch.StreamBatcher(data, batch_size=2, sequence_length=4, shuffle=True, seed=3)
    twin = seqbatch.StreamBatcher(data, batch_size=2, sequence_length=4, shuffle=True, seed=3)
    expected = []
    for epoch in range(3):
        twin.set_epoch(epoch)
        expected += first_steps(twin)
    assert first_steps(twin) != expected[: len(twin)], "the layouts must differ for this test"
    model, seen = order_model(2, 4)
    seq = quiet_sequence(batches)
    # Keras also calls on_epoch_end when it resets its iterator; that must not count.
    model.fit(seq, shuffle=False, epochs=3, verbose=0, callbacks=[seen])
    assert seen.seen == expected
    assert batches.epoch == 3


# --- The Keras FAQ example, in Keras 3, through seqbatch -----------------------------------


def faq_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input(batch_shape=(32, 10, 16)),
            keras.layers.LSTM(32, stateful=True),
            keras.layers.Dense(16, activation="softmax"),
        ]
    )
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
    by_hand.train_on_batch(x[:, :10], x[:, 10])
    by_hand.train_on_batch(x[:, 10:20], x[:, 20])

    model = faq_model()
    history = model.fit(
        StreamSequence(batches), shuffle=False, verbose=0, callbacks=[StatefulTraining()]
    )
    assert np.isfinite(history.history["loss"][0])
    for a, b in zip(model.get_weights(), by_hand.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(stateful_rnns(model)[0].states, stateful_rnns(by_hand)[0].states, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


# --- reset_states ---------------------------------------------------------------------------


def test_reset_states_zeroes_nested_and_bidirectional_rnns() -> None:
    inner = keras.Sequential(
        [
            keras.Input(batch_shape=(2, 3, 1)),
            keras.layers.LSTM(3, stateful=True, return_sequences=True),
        ]
    )
    x_in = keras.Input(batch_shape=(2, 3, 1))
    reset_in = keras.Input(batch_shape=(2,))
    h = inner(x_in)
    h = keras.layers.Bidirectional(keras.layers.GRU(3, stateful=True, return_sequences=True))(h)
    h = StreamReset(keras.layers.SimpleRNN(3, stateful=True))([h, reset_in])
    model = keras.Model([x_in, reset_in], h)
    rnns = stateful_rnns(model)
    assert len(rnns) == 4  # LSTM, forward and backward GRU, SimpleRNN
    model.predict([np.ones((2, 3, 1)), np.zeros(2)], verbose=0)
    states = [s for layer in rnns for s in keras.tree.flatten(layer.states)]
    assert len(states) == 5 and all(s.numpy().any() for s in states)
    reset_states(model)
    assert all(not s.numpy().any() for s in states)


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


def test_stream_reset_around_a_bidirectional_layer() -> None:
    B, W, F = 3, 4, 2

    def bidirectional() -> keras.layers.Layer:
        return keras.layers.Bidirectional(
            keras.layers.LSTM(3, stateful=True, return_sequences=True)
        )

    layer = bidirectional()
    model = reset_model(B, W, F, layer)
    # The reference: the same layer without StreamReset, whose rows never reset.
    x_in = keras.Input(batch_shape=(B, W, F))
    plain = keras.Model(x_in, bidirectional()(x_in))
    plain.set_weights(model.get_weights())
    rng = np.random.default_rng(1)
    x1, x2 = rng.normal(size=(2, B, W, F)).astype("float32")
    flags = np.array([False, True, False])
    model.predict([x1, np.ones(B)], verbose=0)
    out = model.predict([x2, flags], verbose=0)
    plain.predict(x1, verbose=0)
    continued = plain.predict(x2, verbose=0)
    reset_states(plain)
    fresh = plain.predict(x2, verbose=0)
    np.testing.assert_allclose(out, np.where(flags[:, None, None], fresh, continued), atol=1e-5)


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


# --- StatefulTraining ------------------------------------------------------------------------


def small_model(batch_size: int, sequence_length: int, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(batch_shape=(batch_size, sequence_length, 1)),
            keras.layers.LSTM(4, stateful=True, return_sequences=True),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def state_values(model: keras.Model) -> list[np.ndarray]:
    return [s.numpy() for layer in stateful_rnns(model) for s in layer.states]


def wave(n: int, phase: float) -> np.ndarray:
    return np.sin(0.3 * np.arange(n) + phase).astype("float32")[:, None]


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
        model.fit(
            StreamSequence(batches), shuffle=False, epochs=epochs, verbose=0, callbacks=callbacks
        )
        return state_values(model)

    one = final_states(1, [StatefulTraining()])
    for a, b in zip(final_states(2, [StatefulTraining()]), one, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # The trap: without the reset, epoch 2 starts from where epoch 1 ended.
    assert not all(np.allclose(a, b) for a, b in zip(final_states(2, []), one, strict=True))


# --- with_batch_size -------------------------------------------------------------------------


def test_with_batch_size_runs_each_stream_like_the_big_model() -> None:
    B, W = 3, 4
    x_in = keras.Input(batch_shape=(B, W, 1))
    inner = keras.Sequential(
        [
            keras.Input(batch_shape=(B, W, 1)),
            keras.layers.LSTM(4, stateful=True, return_sequences=True),
        ]
    )
    h = inner(x_in)
    h = keras.layers.Bidirectional(keras.layers.GRU(3, stateful=True, return_sequences=True))(h)
    model = keras.Model(x_in, keras.layers.Dense(2)(h))
    batches = seqbatch.StreamBatcher(wave(100, 0.5), batch_size=B, sequence_length=W)
    big = model.predict(StreamSequence(batches), verbose=0).reshape(len(batches), B, W, 2)

    one = with_batch_size(model, 1)
    assert one.input_shape == (1, W, 1)
    assert len(one.weights) == len(model.weights)
    assert all(a is b for a, b in zip(one.weights, model.weights, strict=True))
    for i in range(B):
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
    B, W = 2, 3
    rnn = keras.layers.GRU(4, stateful=True, return_sequences=True)
    model = reset_model(B, W, 1, rnn)
    data = [encoded_series(s, n, (1,), "float32") / 4000 for s, n in enumerate([10, 7, 4])]
    batches = seqbatch.StreamBatcher(data, batch_size=B, sequence_length=W)
    big = model.predict(StreamSequence(batches, reset_input=True), verbose=0)
    big = big.reshape(len(batches), B, W, 4)
    one = with_batch_size(model, 1)
    for i in range(B):
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
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse", steps_per_execution=2)
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
