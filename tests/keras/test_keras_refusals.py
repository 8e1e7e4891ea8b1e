"""What seqbatch.keras refuses before the first step, on every Keras backend.

A stateful RNN that runs backwards (``go_backwards=True``, or the backward layer of a
``Bidirectional``) starts window ``k + 1``'s last step from window ``k``'s first step: its
state never continues a stream. ``fit(validation_split=...)`` cannot give validation streams
of their own. Each is refused on every path where seqbatch meets the model, and a refused
call must leave the model untouched: no step ran.
"""

from __future__ import annotations

from collections.abc import Callable
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
    with_batch_size,
)
from tests.keras_models import numpy_weights, to_numpy

pytestmark = pytest.mark.keras

B, W = 2, 3
BACKWARDS = (
    r"A stateful RNN must run forwards in time on seqbatch batches: the layer '{layer}'"
    r"{where} runs backwards, so it would start the last step of each window from the state "
    r"that the window before left at its first step, never a continuation of the stream\. "
)


def needs_tf_data() -> None:
    pytest.importorskip("tensorflow", reason="the tf.data adapter needs TensorFlow")
    if keras.backend.backend() == "torch":
        pytest.skip(
            "torch.optim crashes a process that imported TensorFlow (tests/torch/test_torch.py)"
        )


def batches() -> seqbatch.StreamBatcher:
    data = (np.arange(40, dtype="float32") / 40)[:, None]
    return seqbatch.StreamBatcher(data, batch_size=B, sequence_length=W)


def bidirectional() -> keras.layers.Layer:
    return keras.layers.Bidirectional(
        keras.layers.LSTM(3, stateful=True, return_sequences=True, name="lstm"), name="both"
    )


def backwards() -> keras.layers.Layer:
    return keras.layers.GRU(3, stateful=True, return_sequences=True, go_backwards=True, name="gru")


BIDIRECTIONAL = BACKWARDS.format(layer="backward_lstm", where=" of Bidirectional 'both'") + (
    r"Wrap a stateless RNN, Bidirectional\(LSTM\(\.\.\., stateful=False\)\), which reads each "
    r"window both ways on its own, or use a forward-only stateful RNN\. Received: "
    r"Bidirectional 'both' of LSTM\(stateful=True\)"
)
GO_BACKWARDS = BACKWARDS.format(layer="gru", where="") + (
    r"Use go_backwards=False, or stateful=False to read each window backwards on its own\. "
    r"Received: GRU 'gru' with stateful=True, go_backwards=True"
)
LAYERS = {
    "Bidirectional": (bidirectional, BIDIRECTIONAL),
    "go_backwards": (backwards, GO_BACKWARDS),
}


def plain(layer: keras.layers.Layer) -> keras.Model:
    """A stateful model whose RNN is ``layer``, its weights drawn by numpy."""
    model = keras.Sequential([keras.Input(batch_shape=(B, W, 1)), layer, keras.layers.Dense(1)])
    numpy_weights(model, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    return model


def untouched(model: keras.Model, before: list[np.ndarray]) -> bool:
    return all(np.array_equal(to_numpy(a), b) for a, b in zip(model.weights, before, strict=True))


def weights(model: keras.Model) -> list[np.ndarray]:
    return [to_numpy(w) for w in model.weights]


# --- stateful RNNs that run backwards --------------------------------------------------------

CALLS: dict[str, Callable[[keras.Model], Any]] = {
    "fit": lambda m: m.fit(StreamSequence(batches()), shuffle=False, verbose=0),
    "evaluate": lambda m: m.evaluate(StreamSequence(batches()), verbose=0),
    "predict": lambda m: m.predict(StreamSequence(batches()), verbose=0),
    "fit on tf.data": lambda m: m.fit(
        batches().to_tf_dataset(), verbose=0, callbacks=[StatefulTraining()]
    ),
    "reset_states": reset_states,
    "carry_states": carry_states,
    "with_batch_size": lambda m: with_batch_size(m, 1),
}


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_stateful_rnn_that_runs_backwards_is_refused_before_the_first_step(
    kind: str, call: str
) -> None:
    if call == "fit on tf.data":
        needs_tf_data()
    make, message = LAYERS[kind]
    model = plain(make())
    before = weights(model)
    with pytest.raises(ValueError, match=message):
        CALLS[call](model)
    assert untouched(model, before)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_stream_reset_with_stream_flags_refuses_an_rnn_that_runs_backwards(kind: str) -> None:
    make, message = LAYERS[kind]
    x_in, reset_in = keras.Input(batch_shape=(B, W, 1)), keras.Input(batch_shape=(B,))
    with pytest.raises(ValueError, match=message):
        StreamReset(make())([x_in, reset_in])


def test_a_stateless_bidirectional_beside_a_stateful_rnn_is_accepted() -> None:
    """The fix the refusal names: the stateful RNN goes forwards, Bidirectional has no state."""
    model = plain(keras.layers.GRU(3, stateful=True, return_sequences=True))
    stateless = keras.layers.Bidirectional(keras.layers.LSTM(2, return_sequences=True))
    x_in = keras.Input(batch_shape=(B, W, 1))
    both = keras.Model(x_in, model(stateless(x_in)[..., :1]))
    both.compile(optimizer="sgd", loss="mse")
    history = both.fit(
        StreamSequence(batches()), shuffle=False, verbose=0, callbacks=[StatefulTraining()]
    )
    assert np.isfinite(history.history["loss"]).all()


# --- validation_split -------------------------------------------------------------------------

SPLIT = (
    r"`validation_split` must be 0 \(its default\) on seqbatch batches: Keras can only split "
    r"arrays, by rows, and validation needs streams of its own, batched like the training "
    r"streams\. Hold some series out and pass them in a batcher of their own: "
    r"fit\(\.\.\., validation_data=seqbatch\.keras\.StreamSequence\(seqbatch\.StreamBatcher\("
    rf"held_out, batch_size={B}, sequence_length={W}\)\)\), or seqbatch\.tf\.to_dataset of "
    r"that batcher on the tf\.data path\. Received: validation_split=0\.25"
)


@pytest.mark.parametrize("validation", [False, True])
def test_validation_split_is_refused_with_the_fix(validation: bool) -> None:
    """Keras refuses a split of a dataset without a fix, or ignores it beside validation_data."""
    model = plain(keras.layers.LSTM(3, stateful=True, return_sequences=True))
    before = weights(model)
    kwargs = {"validation_data": StreamSequence(batches())} if validation else {}
    with pytest.raises(ValueError, match=SPLIT):
        model.fit(
            StreamSequence(batches()),
            shuffle=False,
            verbose=0,
            validation_split=0.25,
            callbacks=[StatefulTraining()],
            **kwargs,
        )
    assert untouched(model, before)


def test_validation_split_is_refused_on_the_tf_data_path_beside_validation_data() -> None:
    needs_tf_data()
    model = plain(keras.layers.LSTM(3, stateful=True, return_sequences=True))
    before = weights(model)
    with pytest.raises(ValueError, match=SPLIT):
        model.fit(
            batches().to_tf_dataset(),
            validation_data=batches().to_tf_dataset(),
            validation_split=0.25,
            verbose=0,
            callbacks=[StatefulTraining()],
        )
    assert untouched(model, before)


def test_a_sequence_has_no_array_interface_outside_a_split() -> None:
    seq = StreamSequence(batches())
    assert not hasattr(seq, "__array__")
    model = plain(keras.layers.LSTM(3, stateful=True, return_sequences=True))
    assert model.predict(seq, verbose=0).shape == (len(seq) * B, W, 1)
