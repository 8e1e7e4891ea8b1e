"""The loss Keras reports on seqbatch data is the mean over real steps; weights fit every target.

Run under each Keras backend (``KERAS_BACKEND=tensorflow``, ``jax``, ``torch``). The models
here hold no recurrent state where only the loss is under test, so that the figure computed
by hand in numpy depends on nothing but the weights, the data and the reduction.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
from keras import ops

import seqbatch
from seqbatch.keras import StreamReset, StreamSequence
from tests.encoded import encoded_series
from tests.weights import element_weight, real_step_weight

pytestmark = pytest.mark.keras

B, W = 3, 5
LENGTHS = [23, 17, 12, 9, 7, 6, 4]


def padded_batches(return_sequences: bool) -> seqbatch.StreamBatcher:
    """Value-encoded series of unequal lengths (scaled to about 1), a fifth or more of padding."""
    data = [encoded_series(s, n, (1,), "float32") / 4000 for s, n in enumerate(LENGTHS)]
    return seqbatch.StreamBatcher(
        data,
        batch_size=B,
        sequence_length=W,
        remainder="pad",
        return_sequences=return_sequences,
    )


def adapted(batches: seqbatch.StreamBatcher, adapter: str) -> Any:
    if adapter == "tf.data":
        pytest.importorskip("tensorflow", reason="the tf.data adapter needs TensorFlow")
        return batches.to_tf_dataset()
    with warnings.catch_warnings():
        # The series change streams mid-epoch; a model without state does not mind.
        warnings.simplefilter("ignore", UserWarning)
        return StreamSequence(batches)


def dense_model(return_sequences: bool) -> keras.Model:
    """Per-step Dense, or Dense on each window's last step: no state, the loss alone."""
    keras.utils.set_random_seed(0)
    x_in = keras.Input(batch_shape=(B, W, 1))
    h = x_in if return_sequences else keras.layers.Lambda(lambda x: x[:, -1])(x_in)
    model = keras.Model(x_in, keras.layers.Dense(1)(h))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    return model


def squared_errors(model: keras.Model, batches: seqbatch.StreamBatcher) -> list[tuple]:
    """Per batch, numpy's squared error of each target and the 0/1 weight of each target."""
    kernel, bias = model.get_weights()
    out = []
    for b in batches:
        x = b.x if batches.return_sequences else b.x[:, -1]
        assert b.y is not None
        out.append((((x @ kernel + bias - b.y) ** 2)[..., 0], b.sample_weight))
    return out


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("adapter", ["sequence", "tf.data"])
def test_reported_loss_is_the_mean_over_real_steps(adapter: str, return_sequences: bool) -> None:
    batches = padded_batches(return_sequences)
    model = dense_model(return_sequences)
    errors = squared_errors(model, batches)
    real = sum(float((e * w).sum()) for e, w in errors) / sum(float(w.sum()) for _, w in errors)
    slots = sum(w.size for _, w in errors)
    diluted = sum(float((e * w).sum()) for e, w in errors) / slots
    batch_means = np.mean([(e * w).sum() / w.sum() for e, w in errors if w.sum()])
    # The layout is padded enough that Keras's default (diluted) and the mean of per-batch
    # means (reduction="mean_with_sample_weight") are both far from the real-step mean.
    assert diluted < 0.85 * real
    assert abs(batch_means - real) > 0.01 * real

    evaluated = model.evaluate(adapted(batches, adapter), verbose=0)
    np.testing.assert_allclose(evaluated, real, rtol=1e-5)
    history = model.fit(
        adapted(batches, adapter),
        validation_data=adapted(padded_batches(return_sequences), adapter),
        shuffle=False,
        verbose=0,
    )
    np.testing.assert_allclose(history.history["val_loss"], [real], rtol=1e-5)
    np.testing.assert_allclose(history.history["loss"], [real], rtol=1e-5)


def test_every_shuffled_epoch_weighs_its_real_steps_alike() -> None:
    """One series, remainder='pad': each shuffled epoch cuts at its own offset, and as many
    steps, so the weight of a real step is the same in every epoch."""
    data = encoded_series(0, 175, (1,), "float32")
    batches = seqbatch.StreamBatcher(
        data, batch_size=4, sequence_length=10, remainder="pad", shuffle=True, seed=3
    )
    seq = StreamSequence(batches)
    weights = []
    for epoch in range(4):
        batches.set_epoch(epoch)
        reference = seqbatch.StreamBatcher(
            data, batch_size=4, sequence_length=10, remainder="pad", shuffle=True, seed=3
        )
        reference.set_epoch(epoch)
        step_weight = real_step_weight(reference)
        for k in range(len(seq)):
            np.testing.assert_array_equal(seq[k][2], element_weight(reference[k], step_weight))
        weights.append(step_weight)
    assert len(set(weights)) == 1 and weights[0] > 1, weights


def test_gradients_are_those_of_the_mean_over_real_steps() -> None:
    """One SGD step on a padded batch moves the weights by the real-step mean's gradient."""
    batches = padded_batches(True)
    k = max(range(len(batches)), key=lambda k: int((batches[k].sample_weight == 0).sum()))
    b = batches[k]
    assert 0 < b.sample_weight.sum() < b.sample_weight.size
    model = dense_model(True)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    kernel, bias = model.get_weights()
    step_weight = real_step_weight(batches)
    # d/dk of sum(w * (x k + c - y)^2) / (B * W), with w the step weight on real steps.
    residual = (b.x @ kernel + bias - b.y)[..., 0] * b.sample_weight * step_weight
    grad_k = 2 * (residual[..., None] * b.x).sum(axis=(0, 1)) / b.sample_weight.size
    grad_c = 2 * residual.sum() / b.sample_weight.size
    x, y, w = adapted(batches, "sequence")[k]
    model.train_on_batch(x, y, sample_weight=w)
    new_kernel, new_bias = model.get_weights()
    np.testing.assert_allclose((new_kernel - kernel)[:, 0], -0.1 * grad_k, rtol=1e-4)
    np.testing.assert_allclose(new_bias - bias, -0.1 * np.atleast_1d(grad_c), rtol=1e-4)


# --- Targets with more axes than one: ConvLSTM1D ----------------------------------------------


@pytest.mark.parametrize("adapter", ["sequence", "tf.data"])
def test_conv_lstm_fits_with_the_default_sample_weight(adapter: str) -> None:
    """Targets (rows, channels): the weight of each step covers every row of its loss."""
    rows, channels = 4, 2
    rng = np.random.default_rng(0)
    # Each series fits in one window, so every window starts from zero state: the loss by
    # hand needs no state carried through fit() (which the JAX trainer does not carry).
    data = [rng.normal(size=(n, rows, channels)).astype("float32") for n in (4, 3, 2, 4, 3, 2)]
    batches = seqbatch.StreamBatcher(data, batch_size=2, sequence_length=3, remainder="pad")
    assert all(b.reset.all() for b in batches)
    keras.utils.set_random_seed(0)
    x_in = keras.Input(batch_shape=(2, 3, rows, channels))
    reset_in = keras.Input(batch_shape=(2,))
    conv = keras.layers.ConvLSTM1D(
        channels, 3, padding="same", stateful=True, return_sequences=True
    )
    model = keras.Model([x_in, reset_in], StreamReset(conv)([x_in, reset_in]))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    if adapter == "tf.data":
        pytest.importorskip("tensorflow", reason="the tf.data adapter needs TensorFlow")
        feed = batches.to_tf_dataset(reset_input=True)
    else:
        feed = StreamSequence(batches, reset_input=True)
    history = model.fit(feed, shuffle=False, verbose=0)
    total, count = 0.0, 0.0
    for b in batches:
        pred = ops.convert_to_numpy(model([b.x, b.reset.astype("float32")]))
        assert b.y is not None
        total += float((((pred - b.y) ** 2).mean(axis=-1) * b.sample_weight[..., None]).sum())
        count += float(b.sample_weight.sum()) * rows
    assert count < sum(b.sample_weight.size for b in batches) * rows, "the layout must pad"
    np.testing.assert_allclose(history.history["loss"], [total / count], rtol=1e-5)
