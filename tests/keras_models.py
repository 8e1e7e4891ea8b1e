"""Small Keras models and callbacks that the Keras tests share, on every Keras backend.

``order_model`` records, after every training step, the first step of each row of the batch
it trained on (the data encodes its position: ``tests.encoded``), so a test sees the order of
the batches exactly as the model saw it. ``lstm_model`` has weights drawn by numpy, the same
on every backend, for comparisons with ``tests.replay`` and between backends.
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np
from keras import ops

import seqbatch
from seqbatch.keras import StreamReset, StreamSequence, stateful_rnns


def to_numpy(value: Any) -> np.ndarray:
    return np.array(ops.convert_to_numpy(value))


def sync(model: keras.Model) -> None:
    """Under JAX, put the trainer's state back into the variables before reading one mid-fit."""
    if keras.backend.backend() == "jax":
        model.jax_state_sync()


def quiet_sequence(batches: seqbatch.StreamBatcher, **kwargs: Any) -> StreamSequence:
    """A sequence, without the warning about streams that start new series unseen."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return StreamSequence(batches, **kwargs)


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
        sync(self.model)
        self.seen.append(to_numpy(self.layer.seen).tolist())


def order_model(batch_size: int, sequence_length: int) -> tuple[keras.Model, SeenBatches]:
    """A stateful model with learning rate 0 that records the batches it trains on."""
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


def first_steps(batches: seqbatch.StreamBatcher, epochs: range = range(1)) -> list[list[float]]:
    """What ``SeenBatches`` must record over ``epochs`` of a fresh twin of ``batches``."""
    out: list[list[float]] = []
    start = batches.epoch
    for epoch in epochs:
        batches.set_epoch(epoch)
        out += [b.x[:, 0, 0].astype(float).tolist() for b in batches]
    batches.set_epoch(start)
    return out


def wave(n: int, phase: float) -> np.ndarray:
    return np.sin(0.3 * np.arange(n) + phase).astype("float32")[:, None]


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
    sync(model)
    return [to_numpy(s) for layer in stateful_rnns(model) for s in layer.states]


def numpy_weights(model: keras.Model, seed: int) -> None:
    """Set every weight of ``model`` from one numpy generator: the same on every backend."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype("float32") for w in model.weights])


def lstm_model(
    batch_size: int, sequence_length: int, features: int, units: int, *, reset_input: bool
) -> keras.Model:
    """A stateful LSTM returning its sequence of ``h``, optionally behind :class:`StreamReset`."""
    x_in = keras.Input(batch_shape=(batch_size, sequence_length, features))
    lstm = keras.layers.LSTM(units, stateful=True, return_sequences=True, name="lstm")
    if reset_input:
        reset_in = keras.Input(batch_shape=(batch_size,))
        model = keras.Model([x_in, reset_in], StreamReset(lstm)([x_in, reset_in]))
    else:
        model = keras.Model(x_in, lstm(x_in))
    numpy_weights(model, seed=units)
    return model
