"""fit() on seqbatch data, on every Keras backend: the order of the batches, the epoch each
Keras epoch lays out, and every fit() argument or model that would misalign the streams,
refused before the first step.

The model records the first step of every row of each batch it trains on (``SeenBatches``),
and the data encodes its position (``tests.encoded``), so a batch out of order or from the
wrong epoch's layout shows up as a wrong number. Learning rates are 0: only the order counts.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest

import seqbatch
from seqbatch.keras import StatefulTraining, StreamSequence
from tests.encoded import encoded_series
from tests.keras_models import first_steps, order_model, quiet_sequence
from tests.keras_runs import shuffled

pytestmark = pytest.mark.keras


def test_the_layouts_of_the_epochs_differ() -> None:
    layouts = [first_steps(shuffled(), range(e, e + 1)) for e in range(4)]
    assert all(a != b for i, a in enumerate(layouts) for b in layouts[i + 1 :])


def sequence_data(batches: seqbatch.StreamBatcher) -> Any:
    return quiet_sequence(batches)


def dataset_data(batches: seqbatch.StreamBatcher) -> Any:
    return batches.to_tf_dataset()


# The two adapters; the tf.data one needs TensorFlow (on any Keras backend) and
# StatefulTraining, which is where seqbatch code runs during fit() on that path.
ADAPTERS = [
    pytest.param(sequence_data, id="sequence"),
    pytest.param(dataset_data, id="tf.data", marks=pytest.mark.needs_tensorflow),
]


# --- Order ---------------------------------------------------------------------------------


@pytest.mark.parametrize("use_multiprocessing", [False, True], ids=["threads", "processes"])
@pytest.mark.parametrize("workers", [1, 2, 4])
def test_fit_feeds_the_batches_in_order_with_workers(
    workers: int, use_multiprocessing: bool
) -> None:
    # The first fit() after compile() is the one where JAX and torch probe a batch first.
    batches = shuffled()
    model, seen = order_model(2, 4)
    seq = quiet_sequence(batches, workers=workers, use_multiprocessing=use_multiprocessing)
    model.fit(seq, shuffle=False, epochs=2, verbose=0, callbacks=[seen, StatefulTraining()])
    assert seen.seen == first_steps(shuffled(), range(2))
    assert batches.epoch == 2


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


# --- Epochs: Keras epoch e lays out epoch e of the batcher (issue 8, item 4) ---------------


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_initial_epoch_resumes_with_the_layout_of_that_epoch(adapter: Callable) -> None:
    batches = shuffled()
    model, seen = order_model(2, 4)
    model.fit(
        adapter(batches),
        shuffle=False,
        initial_epoch=2,
        epochs=4,
        verbose=0,
        callbacks=[seen, StatefulTraining()],
    )
    assert seen.seen == first_steps(shuffled(), range(2, 4))


class LateHook(StreamSequence):
    """A sequence whose epoch hook runs late: Keras's workers have read ahead by then."""

    def on_epoch_begin(self) -> None:
        time.sleep(0.3)
        super().on_epoch_begin()


@pytest.mark.parametrize(
    ("workers", "use_multiprocessing"),
    [(1, False), (2, False), (2, True)],
    ids=["1", "2-threads", "2-processes"],
)
def test_a_run_resumed_in_two_fits_sees_the_batches_of_one_run(
    workers: int, use_multiprocessing: bool
) -> None:
    # The third fit() starts at epoch 0 while the batcher is at epoch 3: the sequence must
    # restart the workers that Keras started on the old layout before its hook ran.
    model, seen = order_model(2, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        seq = LateHook(shuffled(), workers=workers, use_multiprocessing=use_multiprocessing)
    model.fit(seq, shuffle=False, epochs=2, verbose=0, callbacks=[seen, StatefulTraining()])
    model.fit(
        seq,
        shuffle=False,
        initial_epoch=2,
        epochs=3,
        verbose=0,
        callbacks=[seen, StatefulTraining()],
    )
    # A fit() without initial_epoch starts at Keras epoch 0, and so at layout 0, again.
    model.fit(seq, shuffle=False, epochs=1, verbose=0, callbacks=[seen, StatefulTraining()])
    assert seen.seen == first_steps(shuffled(), range(3)) + first_steps(shuffled(), range(1))


def test_evaluate_and_predict_read_the_current_epoch_and_leave_it() -> None:
    batches = shuffled()
    batches.set_epoch(5)
    model, _ = order_model(2, 4)
    seq = quiet_sequence(batches)
    model.evaluate(seq, verbose=0)
    model.predict(seq, verbose=0)
    assert batches.epoch == 5


# --- steps_per_epoch other than the number of batches (issue 8, item 5) --------------------


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_steps_per_epoch_other_than_the_batches_is_refused(adapter: Callable) -> None:
    batches = shuffled()
    model, seen = order_model(2, 4)
    for steps in (len(batches) - 1, len(batches) + 1):
        with pytest.raises(
            ValueError,
            match=rf"`steps_per_epoch` must be None \(or {len(batches)}, the number of batches "
            rf"per epoch\) for seqbatch batches: .* Received: steps_per_epoch={steps}",
        ):
            model.fit(
                adapter(batches),
                shuffle=False,
                steps_per_epoch=steps,
                epochs=2,
                verbose=0,
                callbacks=[seen, StatefulTraining()],
            )
        assert seen.seen == []
    model.fit(
        adapter(batches),
        shuffle=False,
        steps_per_epoch=len(batches),
        epochs=2,
        verbose=0,
        callbacks=[seen, StatefulTraining()],
    )
    assert seen.seen == first_steps(shuffled(), range(2))


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_validation_steps_other_than_the_batches_is_refused(adapter: Callable) -> None:
    model, seen = order_model(2, 4)
    steps = len(shuffled())
    with pytest.raises(ValueError, match=rf"`validation_steps` must be None \(or {steps}, "):
        model.fit(
            adapter(shuffled()),
            validation_data=adapter(shuffled()),
            validation_steps=3,
            shuffle=False,
            verbose=0,
            callbacks=[seen, StatefulTraining()],
        )
    if adapter is sequence_data:
        # The sequence checks when validation starts, after training: the tf.data path, from
        # StatefulTraining.on_train_begin, before the first step.
        assert len(seen.seen) == steps
    else:
        assert seen.seen == []


# --- The model against the data (issue 8, item 7) ------------------------------------------


def sequence_model(batch_size: int, return_sequences: bool, steps: int | None = 4) -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input(batch_shape=(batch_size, steps, 1)),
            keras.layers.LSTM(3, stateful=True, return_sequences=return_sequences),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    return model


def one_series(return_sequences: bool, batch_size: int = 2) -> seqbatch.StreamBatcher:
    return seqbatch.StreamBatcher(
        encoded_series(0, 81, (1,), "float32") / 1000,
        batch_size=batch_size,
        sequence_length=4,
        return_sequences=return_sequences,
    )


def refused(adapter: Callable, message: str) -> Any:
    """The error that a refused call raises before its first step.

    On the tf.data path under JAX and torch, Keras builds the model on one batch before
    training and before any callback runs: where that build fails (Keras's own stateful
    batch size check, a loss that cannot broadcast), Keras's error comes first, still before
    the first step. Everywhere else, seqbatch's ``message``.
    """
    if adapter is dataset_data and keras.backend.backend() != "tensorflow":
        return pytest.raises((ValueError, RuntimeError))
    return pytest.raises(ValueError, match=message)


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("steps", [4, None], ids=["time-4", "time-open"])
@pytest.mark.parametrize("model_returns_sequences", [True, False])
def test_targets_with_a_time_axis_on_one_side_only_are_refused(
    adapter: Callable, model_returns_sequences: bool, steps: int | None
) -> None:
    # With the time axis left open (None), the output's shape is the one for 4-step windows.
    model = sequence_model(2, model_returns_sequences, steps)
    batches = one_series(return_sequences=not model_returns_sequences)
    y_shape, out_shape = ((2, 1), (2, 4, 1)) if model_returns_sequences else ((2, 4, 1), (2, 1))
    before = [w.copy() for w in model.get_weights()]
    message = r"`y` of the batches must have the shape of the model's output, .* Received: y " + (
        re.escape(
            f"of shape {y_shape} for a model output of shape {out_shape}: build the "
            f"StreamBatcher with return_sequences={model_returns_sequences}"
        )
    )
    if model_returns_sequences:
        # (2, 1) broadcasts against (2, 4, 1) on every backend: only seqbatch can refuse it.
        context = pytest.raises(ValueError, match=message)
    else:
        context = refused(adapter, message)
    with context:
        model.fit(adapter(batches), shuffle=False, verbose=0, callbacks=[StatefulTraining()])
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)
    # Matching sides train.
    model.fit(
        adapter(one_series(model_returns_sequences)),
        shuffle=False,
        verbose=0,
        callbacks=[StatefulTraining()],
    )


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("method", ["fit", "evaluate", "predict"])
def test_a_batch_size_other_than_the_model_is_refused(adapter: Callable, method: str) -> None:
    model = sequence_model(2, True)
    data = adapter(one_series(True, batch_size=4))
    message = (
        r"`batch_size` of the batches must be the batch size that the model's stateful "
        r"RNNs were built for, .* Received: batch_size=4 for layer 'lstm.*', built for batch "
        r"size 2: build the model with keras.Input\(batch_shape=\(4, \.\.\.\)\) or the "
        r"StreamBatcher with batch_size=2"
    )
    # predict() builds nothing first on a built model: seqbatch refuses on every backend.
    with (
        refused(adapter, message)
        if method != "predict"
        else pytest.raises(ValueError, match=message)
    ):
        if method == "fit":
            model.fit(data, shuffle=False, verbose=0, callbacks=[StatefulTraining()])
        else:
            getattr(model, method)(data, verbose=0, callbacks=[StatefulTraining()])


def test_sparse_labels_without_the_last_axis_are_accepted() -> None:
    data = encoded_series(0, 81, (1,), "float32") / 1000
    labels = (np.arange(81) % 3).astype("int32")
    batches = seqbatch.StreamBatcher(data, labels, batch_size=2, sequence_length=4)
    model = keras.Sequential(
        [
            keras.Input(batch_shape=(2, 4, 1)),
            keras.layers.GRU(3, stateful=True, return_sequences=True),
            keras.layers.Dense(3),
        ]
    )
    model.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    history = model.fit(StreamSequence(batches), shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


# --- Forgetting StatefulTraining (issue 8, item 9) -----------------------------------------


def fit_warnings(callbacks: list[Any], **fit_kwargs: Any) -> list[str]:
    model = sequence_model(2, True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(
            StreamSequence(one_series(True)),
            shuffle=False,
            verbose=0,
            callbacks=callbacks,
            **fit_kwargs,
        )
    return [str(w.message) for w in caught if "StatefulTraining" in str(w.message)]


def test_fitting_without_stateful_training_warns_once() -> None:
    assert fit_warnings([], epochs=3) == [
        "A stateful model is fitted for 3 epochs without seqbatch.keras.StatefulTraining: "
        "each epoch would start from the states that the last one left, and validation would "
        "run through the training states and leave its own behind. Pass "
        "callbacks=[seqbatch.keras.StatefulTraining()]."
    ]
    (message,) = fit_warnings([], validation_data=StreamSequence(one_series(True)))
    assert message.startswith("A stateful model is fitted for 1 epochs with validation data")
    (message,) = fit_warnings([], initial_epoch=1, epochs=3)
    assert message.startswith("A stateful model is fitted for 2 epochs without")


def test_no_warning_with_stateful_training_or_one_epoch() -> None:
    assert fit_warnings([StatefulTraining()], epochs=3) == []
    assert (
        fit_warnings([StatefulTraining()], validation_data=StreamSequence(one_series(True))) == []
    )
    assert fit_warnings([]) == []
