"""The Keras 3 internals that seqbatch.keras relies on, one test each, on every backend.

``seqbatch.keras.run`` reads the running ``fit()``'s arguments from its frame,
``StreamSequence`` reaches into the data adapter's worker queue, and ``carry_states`` lists
state variables beside the layer's seeds and wraps an RNN's inner loop. None of that is
public Keras API: when a Keras release changes one of them, the test here that names it
fails, rather than a model training on misaligned streams.
"""

from __future__ import annotations

import time
from typing import Any

import keras
import numpy as np
import pytest
from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

from seqbatch.keras.run import KerasCall, running_call
from seqbatch.keras.states import _CarriedState

pytestmark = pytest.mark.keras

PROBING = keras.backend.backend() in ("jax", "torch")


class Recorder(keras.utils.PyDataset):
    """Three batches; records the Keras call that each epoch hook runs in."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[tuple[str, KerasCall | None]] = []

    def __len__(self) -> int:
        return 3

    def __getitem__(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        return np.full((2, 3, 1), k, "float32"), np.zeros((2, 3, 1), "float32")

    def on_epoch_begin(self) -> None:
        self.calls.append(("begin", running_call(self)))

    def on_epoch_end(self) -> None:
        self.calls.append(("end", running_call(self)))


class CallbackRecorder(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, KerasCall | None]] = []

    def on_train_begin(self, logs: Any = None) -> None:
        self.calls.append(("train", running_call()))

    def on_test_begin(self, logs: Any = None) -> None:
        self.calls.append(("test", running_call()))

    def on_predict_begin(self, logs: Any = None) -> None:
        self.calls.append(("predict", running_call()))


def model() -> keras.Model:
    m = keras.Sequential(
        [
            keras.Input(batch_shape=(2, 3, 1)),
            keras.layers.SimpleRNN(2, stateful=True, return_sequences=True),
        ]
    )
    m.compile(optimizer="sgd", loss="mse")
    return m


def begins(recorder: Recorder) -> list[KerasCall]:
    calls = [call for hook, call in recorder.calls if hook == "begin"]
    assert all(call is not None for call in calls)
    return calls  # type: ignore[return-value]


def test_dataset_hooks_run_inside_fit_with_its_arguments() -> None:
    m = model()
    train, validation, callback = Recorder(), Recorder(), CallbackRecorder()
    m.fit(
        train,
        validation_data=validation,
        initial_epoch=1,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[callback],
    )
    calls = begins(train)
    # JAX and torch build the model on one batch first, in a whole begin/end cycle.
    assert [c.probe for c in calls] == [True, False, False] if PROBING else [False, False]
    training = calls[-2:]
    assert [c.method for c in training] == ["fit", "fit"]
    assert [c.epoch for c in training] == [1, 2]
    assert all(c.model is m and c.adapter.py_dataset is train for c in calls)
    assert all(c.adapter.shuffle is False for c in calls)
    for c in calls:
        assert c.arguments["initial_epoch"] == 1 and c.arguments["epochs"] == 3
        assert c.arguments["steps_per_epoch"] is None
        assert c.arguments["validation_steps"] is None
        assert c.arguments["validation_data"] is validation
        assert c.callbacks == [callback] or callback in c.callbacks
    assert training[0].first_epoch and not training[1].first_epoch
    checks = begins(validation)
    assert [(c.method, c.epoch, c.outer is not None) for c in checks] == [
        ("evaluate", 1, True),
        ("evaluate", 2, True),
    ]
    # Every end hook runs inside the call too, so that the adapter can be reached.
    assert all(call is not None and call.adapter is not None for _, call in train.calls)
    hooks = [(hook, call.method) for hook, call in callback.calls if call is not None]
    assert hooks == [("train", "fit"), ("test", "evaluate"), ("test", "evaluate")]


def test_dataset_hooks_run_inside_evaluate_and_predict() -> None:
    m = model()
    for method in ("evaluate", "predict"):
        data, callback = Recorder(), CallbackRecorder()
        getattr(m, method)(data, verbose=0, callbacks=[callback])
        calls = begins(data)
        assert {(c.method, c.epoch, c.outer) for c in calls} == {(method, None, None)}
        assert [(h, c.method if c else None) for h, c in callback.calls] == [
            ("test" if method == "evaluate" else "predict", method)
        ]


def test_the_adapter_stops_its_workers_before_the_end_hook() -> None:
    """What the workers read ahead is in ``ready_queue`` when the dataset's end hook runs."""
    seen: list[tuple[bool, int]] = []

    class Leftovers(Recorder):
        def on_epoch_end(self) -> None:
            seen.append((enqueuer.is_running(), enqueuer.ready_queue.qsize()))

    data = Leftovers(workers=2)
    adapter = PyDatasetAdapter(data)
    enqueuer = adapter.enqueuer
    assert {"start", "stop", "is_running"} <= set(dir(enqueuer))
    adapter.on_epoch_begin()
    first = next(iter(adapter.get_numpy_iterator()))
    assert float(first[0][0, 0, 0]) == 0.0
    # Let the workers read the rest ahead, as they do while JAX and torch probe batch 0.
    deadline = time.monotonic() + 10
    while enqueuer.future_queue.qsize() < len(data) - 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    adapter.on_epoch_end()
    assert seen == [(False, len(data) - 1)]


def test_layer_variables_list_the_state_of_seed_entries_and_weights_do_not() -> None:
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    extra = keras.Variable(np.zeros(2), trainable=False)
    layer._seed_generators.append(_CarriedState(extra))
    assert any(v is extra for v in layer.variables)
    assert any(v is extra for v in layer.non_trainable_variables)
    assert not any(v is extra for v in layer.weights)
    assert len(layer.get_weights()) == 2


def test_rnn_call_hands_its_initial_state_to_inner_loop() -> None:
    rnn = keras.layers.GRU(2, stateful=True, return_sequences=True)
    rnn.build((2, 3, 1))
    got: list[Any] = []
    inner_loop = rnn.inner_loop

    def spy(sequences: Any, initial_state: Any, mask: Any, training: bool = False) -> Any:
        got.append(initial_state)
        return inner_loop(sequences, initial_state, mask, training=training)

    rnn.inner_loop = spy
    rnn(np.ones((2, 3, 1), "float32"))
    assert len(got) == 1
    assert [tuple(s.shape) for s in keras.tree.flatten(got[0])] == [(2, 2)]


def test_compiled_loss_and_outputs_are_attributes() -> None:
    m = model()
    assert m.loss == "mse"
    assert [tuple(t.shape) for t in m.outputs] == [(2, 3, 2)]
