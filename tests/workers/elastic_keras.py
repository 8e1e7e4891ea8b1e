"""Keras 3 on JAX, ``keras.distribution.DataParallel``: resumed on 2, then 1, then 2 devices.

Run by ``tests/torch/test_elastic.py`` as ``python -m tests.workers.elastic_keras`` with
``KERAS_BACKEND=jax``, ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` and
``SEQBATCH_OUT``, the ``.npz`` file to write, and ``SEQBATCH_RUNS``: the runs to make, ``;``
between runs, each ``"devices:steps,devices:steps,..."``: phases made one after the other,
each stopped (by an exception, as a preemption) after that many steps, the last one trained
to the end (``steps`` 0). Each phase builds its model anew, on a ``DataParallel`` over that
many of the process's devices (the global batch is the same on any number), and resumes
from the ``seqbatch.keras.BackupAndRestore`` checkpoint of the phase before: the weights,
the optimizer, the state of the stateful LSTM (the state of every global stream) and the
batch that comes next.

Bit for bit on any number of devices (the recipe of the many-processes guide): the train
step, :func:`grouped_train_step`, cuts the global batch into ``GROUPS`` groups of streams
and computes the gradient of each apart (``jax.vmap`` over a group axis, through
``seqbatch.keras.with_batch_size(model, B // GROUPS)``: the same weights, state variables
for a group's rows; and a copy of the weights per group), then adds up the groups'
gradients in a fixed order. Each group's arithmetic is then the same whatever device holds
it, and ``DataParallel`` still splits the groups over the devices (the compiled step on 2
devices is partitioned in 2, each computing its two groups). With ``GROUPS = 4`` every
device holds at least two groups on 1 or 2 devices; with one group per device
(``GROUPS = 2``) a run on 1 device parted from the run on 2 by up to 6e-8 in the weights
(XLA's CPU dot of one group alone and of a batch of two groups round differently: measured
once, by hand).

It records for every run, after every step: the weights, the LSTM state (``h`` in
``states``, ``c`` in ``cells``) and the first step of every row of the batch that the step
received; and the weights and the state at the end.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

EPOCHS = 2
UNITS = 3
SCALE = 1e-5  # the codes of tests.encoded reach 110,000: keep the gates unsaturated
LEARNING_RATE = 0.5
GROUPS = 4  # groups of streams whose gradients are computed apart: 2 per device on 2 devices


def grouped_train_step(model: Any, group_model: Any, groups: int) -> Any:
    """A JAX ``train_step`` for ``model`` whose arithmetic does not depend on the devices.

    ``group_model`` is ``seqbatch.keras.with_batch_size(model, batch_size // groups)``, made
    before ``model`` is compiled: the same weight variables, its own state variables. The
    global batch is cut into ``groups`` blocks of consecutive streams; ``jax.vmap`` runs each
    block through ``group_model``, with its rows of every stateful RNN's state and a copy of
    the weights of its own, so that its gradient is reduced over its rows and steps alone.
    The groups' gradients are then added pairwise in a fixed order, and the optimizer
    applies their sum. Only the stateful RNNs' states may have a row per stream; every other
    non-trainable variable is read, not updated, by the step.
    """
    import jax
    import jax.numpy as jnp
    import keras

    from seqbatch.keras import stateful_rnns

    def state_variables(m: Any) -> list[Any]:
        return [v for layer in stateful_rnns(m) for v in jax.tree.leaves(layer.states)]

    rows = int(model.inputs[0].shape[0])
    position = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
    main_states = [position[id(v)] for v in state_variables(model)]
    own_states = {id(v): i for i, v in enumerate(state_variables(group_model))}
    # Each non-trainable variable of the group model: its own state i, or model's variable i.
    sources = [
        ("state", own_states[id(v)]) if id(v) in own_states else ("shared", position[id(v)])
        for v in group_model.non_trainable_variables
    ]
    group_metrics = [v.value for v in group_model.metrics_variables]

    def split(t: Any) -> Any:
        return None if t is None else t.reshape((groups, rows // groups, *t.shape[1:]))

    def join(t: Any) -> Any:
        return t.reshape((rows, *t.shape[2:]))

    def step(state: Any, data: Any) -> Any:
        trainable, non_trainable, optimizer_variables, metrics = state
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)

        def group_loss(weights: Any, states: Any, x: Any, y: Any, sample_weight: Any) -> Any:
            values = [states[i] if kind == "state" else non_trainable[i] for kind, i in sources]
            loss, (unscaled, y_pred, new, _) = group_model.compute_loss_and_updates(
                weights,
                values,
                group_metrics,
                x,
                y,
                sample_weight,
                training=True,
                optimizer_variables=optimizer_variables,
            )
            new_states = [v for v, (kind, _) in zip(new, sources, strict=True) if kind == "state"]
            # Its share of the mean over the global batch (exact: a power of two).
            return loss / groups, (unscaled, y_pred, new_states)

        copies = [jnp.broadcast_to(w, (groups, *w.shape)) for w in trainable]
        states = [split(non_trainable[i]) for i in main_states]
        (_, (unscaled, y_pred, new_states)), grads = jax.vmap(
            jax.value_and_grad(group_loss, has_aux=True)
        )(copies, states, jax.tree.map(split, x), split(y), split(sample_weight))
        parts = [[g[k] for g in grads] for k in range(groups)]
        while len(parts) > 1:  # (g0 + g1) + (g2 + g3): the same order on any device
            parts = [
                [a + b for a, b in zip(*parts[i : i + 2], strict=True)]
                for i in range(0, len(parts), 2)
            ]
        non_trainable = list(non_trainable)
        for i, new_state in zip(main_states, new_states, strict=True):
            non_trainable[i] = join(new_state)
        trainable, optimizer_variables = model.optimizer.stateless_apply(
            optimizer_variables, parts[0], trainable
        )
        logs, metrics = model._update_metrics_variables(  # Keras's own, as its step does
            metrics, jnp.mean(unscaled), x, y, join(y_pred), sample_weight
        )
        first = jax.tree.leaves(x)[0]
        logs = {**logs, "firsts": first[:, 0, 0]}  # the rows this step trained on
        return logs, (trainable, non_trainable, optimizer_variables, metrics)

    return step


def main() -> dict[str, Any]:
    import sys

    # Keras asks, while it serializes a layer, whether TensorFlow is installed (to look for
    # a tf.TensorShape); as if it were not, this JAX process never spends seconds importing it.
    sys.modules.setdefault("tensorflow", None)  # type: ignore[arg-type]
    import jax

    # Every phase builds and compiles its model anew: the phases on as many devices compile
    # the same program, which XLA's cache on disk then compiles once.
    cache = tempfile.TemporaryDirectory()  # removed when main returns
    jax.config.update("jax_compilation_cache_dir", cache.name)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    import keras
    import numpy as np

    from seqbatch.keras import (
        BackupAndRestore,
        StatefulTraining,
        StreamReset,
        StreamSequence,
        with_batch_size,
    )
    from tests.carried import many_series
    from tests.keras_models import sync

    batches = many_series()
    B, W, F = batches.batch_size, batches.sequence_length, batches.feature_shape[0]

    def scaled_error(y: Any, prediction: Any) -> Any:
        return keras.ops.mean(keras.ops.square(prediction - y * SCALE), axis=-1)

    class Scale(keras.layers.Layer):
        """``x * SCALE`` (``keras.layers.Rescaling`` would import TensorFlow to check a graph)."""

        def call(self, x: Any) -> Any:
            return x * SCALE

    def build(devices: int) -> keras.Model:
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=jax.devices()[:devices])
        )
        x_in = keras.Input(batch_shape=(B, W, F))
        reset_in = keras.Input(batch_shape=(B,))
        x = Scale()(x_in)
        lstm = keras.layers.LSTM(UNITS, stateful=True, return_sequences=True, name="lstm")
        h = StreamReset(lstm, name="reset")([x, reset_in])
        model = keras.Model([x_in, reset_in], keras.layers.Dense(F)(h))
        # Drawn by numpy (the same weights on every run), after B draws, as for
        # tests.keras_models.numpy_weights with a (B,) variable first: in this start the
        # resets change the states by far more than rounding (the replay test's teeth).
        rng = np.random.default_rng(0)
        rng.uniform(-0.5, 0.5, B)
        model.set_weights(
            [rng.uniform(-0.5, 0.5, w.shape).astype("float32") for w in model.weights]
        )
        group_model = with_batch_size(model, B // GROUPS)  # before compile: it clones model
        model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss=scaled_error)
        group_model.compile(optimizer=model.optimizer, loss=scaled_error)
        model.train_step = grouped_train_step(model, group_model, GROUPS)
        return model

    class Record(keras.callbacks.Callback):
        """After every step: the weights, the LSTM state, the first step of every row."""

        def __init__(self, out: dict[str, list[Any]]) -> None:
            super().__init__()
            self.out = out

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            sync(self.model)
            self.out["weights"].append(flat_weights(self.model))
            self.out["states"].append(lstm_state(self.model))
            self.out["cells"].append(lstm_state(self.model, 1))
            self.out["firsts"].append(np.asarray(logs["firsts"]))

    class Stop(keras.callbacks.Callback):
        """A preemption after ``steps`` steps of this run (after its checkpoint is saved)."""

        def __init__(self, steps: int) -> None:
            super().__init__()
            self.steps = steps

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.steps -= 1
            if self.steps == 0:
                raise KeyboardInterrupt

    def flat_weights(model: keras.Model) -> Any:
        """The LSTM cell's kernel, recurrent kernel and bias, then every other weight."""
        cell = model.get_layer("reset").layer.cell.get_weights()
        return np.concatenate([np.asarray(w).ravel() for w in [*cell, *model.get_weights()]])

    def lstm_state(model: keras.Model, which: int = 0) -> Any:
        """The LSTM's ``h`` (``which=0``) or ``c`` (1) of every global stream."""
        return np.asarray(model.get_layer("reset").layer.states[which].value)

    def train(devices: int, steps: int, backup: str, out: dict[str, list[Any]]) -> None:
        model = build(devices)
        if not out["initial"]:
            out["initial"].append(flat_weights(model))
        callbacks = [BackupAndRestore(backup, save_freq=1), StatefulTraining(), Record(out)]
        try:
            model.fit(
                StreamSequence(many_series(), reset_input=True),
                epochs=EPOCHS,
                shuffle=False,
                verbose=0,
                callbacks=[*callbacks, *([Stop(steps)] if steps else [])],
            )
        except KeyboardInterrupt:
            return
        sync(model)
        out["final_weights"].append(flat_weights(model))
        out["final_state"].append(lstm_state(model))
        out["final_cells"].append(lstm_state(model, 1))

    def record() -> dict[str, list[Any]]:
        names = ("initial", "weights", "states", "cells", "firsts")
        names += ("final_weights", "final_state", "final_cells")
        return {k: [] for k in names}

    result: dict[str, Any] = {"devices": len(jax.devices())}
    for r, run in enumerate(os.environ["SEQBATCH_RUNS"].split(";")):
        out, backup = record(), tempfile.mkdtemp()
        for phase in run.split(","):
            devices, steps = (int(v) for v in phase.split(":"))
            train(devices, steps, backup, out)
        result.update({f"run{r}_{k}": np.stack(v) for k, v in out.items()})
    return result


if __name__ == "__main__":
    import numpy as np

    np.savez(os.environ["SEQBATCH_OUT"], **main())
