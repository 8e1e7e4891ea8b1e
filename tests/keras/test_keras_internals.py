"""The Keras 3 internals that seqbatch.keras relies on, one test each, on every backend.

The list of them, and the test of each, is in the docstring of ``seqbatch/keras/run.py``.

``seqbatch.keras.run`` reads the running ``fit()``'s arguments from its frame,
``StreamSequence`` reaches into the data adapter's worker queue, and ``carry_states`` lists
state variables beside the layer's seeds and wraps an RNN's inner loop. None of that is
public Keras API: when a Keras release changes one of them, the test here that names it
fails, rather than a model training on misaligned streams.
"""

from __future__ import annotations

import inspect
import re
import time
from typing import Any

import keras
import numpy as np
import pytest
from keras.src.backend.common.variables import AutocastScope
from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

from seqbatch.keras import StreamReset, run
from seqbatch.keras.run import _PROBES, KerasCall, running_call
from seqbatch.keras.states import _CarriedState
from tests.keras_models import to_numpy

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
        assert c.arguments["x"] is train
        assert c.arguments["initial_epoch"] == 1 and c.arguments["epochs"] == 3
        assert c.arguments["steps_per_epoch"] is None
        assert c.arguments["validation_steps"] is None
        assert c.arguments["validation_data"] is validation
        assert c.arguments["validation_split"] == 0.0
        assert c.arguments["epoch_iterator"].data_adapter is c.adapter
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


def test_the_probe_runs_in_symbolic_build() -> None:
    """run._PROBES: the one-batch build before training is told by its function's name."""
    names: list[set[str]] = []

    class Frames(Recorder):
        def on_epoch_begin(self) -> None:
            frame, seen = inspect.currentframe(), set()
            while frame is not None:
                seen.add(frame.f_code.co_name)
                frame = frame.f_back
            names.append(seen)

    m = model()
    m.fit(Frames(), shuffle=False, verbose=0)
    probes = [bool(seen & set(_PROBES)) for seen in names]
    assert probes == ([True, False] if PROBING else [False])
    trainer = (
        "_maybe_symbolic_build" if keras.backend.backend() == "tensorflow" else "_symbolic_build"
    )
    assert callable(getattr(m, trainer))


class Steps(keras.callbacks.Callback):
    """Records the epochs run and the steps of each."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: dict[int, int] = {}
        self.epoch = -1

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.epoch = epoch
        self.steps[epoch] = 0

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.steps[self.epoch] += 1


def test_the_epoch_iterator_reads_its_num_batches_every_epoch() -> None:
    """BackupAndRestore shortens the epoch it resumes through ``epoch_iterator._num_batches``."""

    class Shorten(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            iterator = running_call().arguments["epoch_iterator"]  # type: ignore[union-attr]
            assert iterator.steps_per_epoch is None and iterator._num_batches == 3
            if epoch == 0:
                iterator._num_batches = 2

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            running_call().arguments["epoch_iterator"]._num_batches = 3  # type: ignore[union-attr]

    steps = Steps()
    model().fit(Recorder(), epochs=2, shuffle=False, verbose=0, callbacks=[Shorten(), steps])
    assert steps.steps == {0: 2, 1: 3}


def test_initial_epoch_set_on_the_model_in_on_train_begin_starts_fit_there() -> None:
    """BackupAndRestore restores the epoch through ``model._initial_epoch``, as Keras's does."""

    class Restore(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            assert self.model._initial_epoch is None
            self.model._initial_epoch = 2

    steps = Steps()
    m = model()
    m.fit(Recorder(), epochs=3, shuffle=False, verbose=0, callbacks=[Restore(), steps])
    assert steps.steps == {2: 3}
    m._initial_epoch = None


def test_flatten_layers_reaches_nested_models_and_wrappers() -> None:
    inner_rnn = keras.layers.LSTM(2, stateful=True, return_sequences=True)
    inner = keras.Sequential([keras.Input(batch_shape=(2, 3, 1)), inner_rnn])
    wrapped = keras.layers.GRU(2, stateful=True, return_sequences=True)
    both_ways = keras.layers.Bidirectional(keras.layers.SimpleRNN(2, return_sequences=True))
    x_in, reset_in = keras.Input(batch_shape=(2, 3, 1)), keras.Input(batch_shape=(2,))
    h = StreamReset(wrapped)([inner(x_in), reset_in])
    outer = keras.Model([x_in, reset_in], both_ways(h))
    layers = list(outer._flatten_layers(include_self=True, recursive=True))
    assert layers[0] is outer
    for layer in (inner, inner_rnn, wrapped, both_ways.forward_layer, both_ways.backward_layer):
        assert any(found is layer for found in layers), layer.name
    assert not any(found is inner_rnn for found in outer._flatten_layers(recursive=False))


def test_an_untracked_cell_replaced_by_another_leaves_only_that_ones_weights() -> None:
    """with_batch_size puts the trained cell into an RNN rebuilt from its config."""
    trained = keras.layers.GRU(3, stateful=True)
    trained.build((2, 4, 1))
    rebuilt = keras.layers.GRU.from_config(trained.get_config())
    rebuilt._tracker.untrack(rebuilt.cell)
    rebuilt.cell = trained.cell
    rebuilt.build((1, 4, 1))
    assert len(rebuilt.weights) == len(trained.weights) == 3
    assert all(a is b for a, b in zip(rebuilt.weights, trained.weights, strict=True))


def test_rnn_dropout_masks_are_drawn_once_by_its_helpers() -> None:
    """StreamReset's per-step loop draws a call's dropout masks as keras.layers.RNN does."""
    rnn = keras.layers.LSTM(3, stateful=True, dropout=0.5, recurrent_dropout=0.5)
    rnn.build((2, 4, 1))
    step, state = np.ones((2, 1), "float32"), [np.ones((2, 3), "float32")] * 2
    rnn._maybe_config_dropout_masks(rnn.cell, step, state)
    masks = (rnn.cell.get_dropout_mask(step), rnn.cell.get_recurrent_dropout_mask(state[0]))
    assert all(m is not None for m in masks)
    # The same mask at every later step of the call.
    assert rnn.cell.get_dropout_mask(step) is masks[0]
    assert rnn.cell.get_recurrent_dropout_mask(state[0]) is masks[1]
    rnn._maybe_reset_dropout_masks(rnn.cell)
    assert rnn.cell.get_dropout_mask(step) is not masks[0]


def test_a_variable_without_autocast_is_assigned_inside_an_autocast_scope() -> None:
    """carry_states exempts RNN states from autocasting, or torch assigns into a cast copy."""
    variable = keras.Variable(np.zeros(2, "float32"), trainable=False)
    assert variable._autocast is True
    variable._autocast = False
    with AutocastScope("bfloat16"):
        assert variable.dtype == "float32"
        variable.assign(keras.ops.cast(keras.ops.ones(2), "bfloat16"))
    assert to_numpy(variable).tolist() == [1.0, 1.0]


def test_fit_looks_x_up_for_an_array_interface_before_any_hook_for_validation_split() -> None:
    """StreamSequence refuses validation_split there, before Keras's own refusal without a fix."""
    hooks: list[str] = []

    class Marked(Recorder):
        @property
        def __array__(self) -> Any:
            raise LookupError("looked up")

        def on_epoch_begin(self) -> None:
            hooks.append("begin")

    with pytest.raises(LookupError, match="looked up"):
        model().fit(Marked(), validation_split=0.5, shuffle=False, verbose=0)
    assert hooks == []
    # Without one, Keras refuses to split a dataset, naming no fix.
    with pytest.raises(ValueError, match=r"`validation_split` is only supported for tensors"):
        model().fit(Recorder(), validation_split=0.5, shuffle=False, verbose=0)


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="jax_state_sync is the JAX trainer's method"
)
def test_jax_state_sync_puts_the_trainers_values_into_the_variables() -> None:
    """Mid-fit the trainer holds the values, and the variables none, until a sync."""
    m = model()
    m.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    before = to_numpy(m.trainable_variables[0])
    synced: list[np.ndarray] = []

    class Read(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            # `m`, not `self.model`: that property syncs by itself.
            m.jax_state_sync()
            synced.append(to_numpy(m.trainable_variables[0]))

    m.fit(Recorder(), shuffle=False, verbose=0, callbacks=[Read()])
    # Batch 0 is all zeros, with zero targets: the weights move from the second step on.
    assert np.array_equal(synced[0], before) and not np.array_equal(synced[1], before)
    assert np.array_equal(synced[-1], to_numpy(m.trainable_variables[0]))


def test_every_internal_that_run_lists_has_its_test_here() -> None:
    listed = re.findall(r"``(test_\w+)``", run.__doc__ or "")
    assert len(listed) >= 14
    assert [name for name in listed if not callable(globals().get(name))] == []
