"""Keras 3 on JAX, ``keras.distribution.DataParallel``: stopped on 2 devices, resumed on 1.

Run by ``tests/torch/test_elastic.py`` as ``python -m tests.workers.elastic_keras`` with
``KERAS_BACKEND=jax``, ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` and
``SEQBATCH_OUT``, the ``.npz`` file to write, and ``SEQBATCH_PHASES``: the runs to make one
after the other, ``"devices:steps,devices:steps,..."``, each stopped (by an exception, as a
preemption) after that many steps, the last one trained to the end (``steps`` 0). Each run
builds its model anew, on a ``DataParallel`` over that many of the process's devices (the
global batch is the same on any number), and resumes from the ``seqbatch.keras
.BackupAndRestore`` checkpoint of the run before: the weights, the optimizer, the state of
the stateful LSTM (the state of every global stream) and the batch that comes next.

It records, for the uninterrupted run on 2 devices and for the stopped and resumed ones: the
weights and the LSTM state after every step, the first step of every row the model saw, and
the weights and the state at the end.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

EPOCHS = 2
UNITS = 3
SCALE = 1e-5  # the codes of tests.encoded reach 110,000: keep the gates unsaturated
LEARNING_RATE = 0.5


def main() -> dict[str, Any]:
    import jax
    import keras
    import numpy as np

    from seqbatch.keras import BackupAndRestore, StatefulTraining, StreamReset, StreamSequence
    from tests.carried import many_series
    from tests.keras_models import FirstStep, numpy_weights, sync

    batches = many_series()
    B, W, F = batches.batch_size, batches.sequence_length, batches.feature_shape[0]

    def scaled_error(y: Any, prediction: Any) -> Any:
        return keras.ops.mean(keras.ops.square(prediction - y * SCALE), axis=-1)

    def build(devices: int) -> keras.Model:
        keras.utils.set_random_seed(0)  # what every run of the script does first
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=jax.devices()[:devices])
        )
        x_in = keras.Input(batch_shape=(B, W, F))
        reset_in = keras.Input(batch_shape=(B,))
        x = keras.layers.Rescaling(SCALE)(FirstStep(name="first")(x_in))
        lstm = keras.layers.LSTM(UNITS, stateful=True, return_sequences=True, name="lstm")
        h = StreamReset(lstm, name="reset")([x, reset_in])
        model = keras.Model([x_in, reset_in], keras.layers.Dense(F)(h))
        numpy_weights(model, seed=0)
        model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss=scaled_error)
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
            self.out["firsts"].append(np.asarray(self.model.get_layer("first").seen))

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

    def lstm_state(model: keras.Model) -> Any:
        return np.asarray(model.get_layer("reset").layer.states[0].value)

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

    def record() -> dict[str, list[Any]]:
        names = ("initial", "weights", "states", "firsts", "final_weights", "final_state")
        return {k: [] for k in names}

    result: dict[str, Any] = {"devices": len(jax.devices())}
    uninterrupted = record()
    train(2, 0, tempfile.mkdtemp(), uninterrupted)
    resumed = record()
    backup = tempfile.mkdtemp()
    for phase in os.environ["SEQBATCH_PHASES"].split(","):
        devices, steps = (int(v) for v in phase.split(":"))
        train(devices, steps, backup, resumed)
    for name, out in (("uninterrupted", uninterrupted), ("resumed", resumed)):
        result.update({f"{name}_{k}": np.stack(v) for k, v in out.items()})
    return result


if __name__ == "__main__":
    import numpy as np

    np.savez(os.environ["SEQBATCH_OUT"], **main())
