"""One process of a Keras 3 ``keras.distribution.DataParallel`` run on JAX: ``fit`` every way.

Run by ``tests/keras/test_keras_distribution.py`` as ``python -m tests.workers.keras_jax`` with
``KERAS_BACKEND=jax`` and ``SEQBATCH_OUT``, the JSON file to write. Either one process over
two CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=2``), or, with
``SEQBATCH_COORDINATOR`` (``127.0.0.1:port``), ``SEQBATCH_PROCESS`` and
``SEQBATCH_PROCESSES``, one of several processes of one CPU device each, which
``jax.distributed`` joins (its coordinator bound to 127.0.0.1, gloo between the processes).

A stateful LSTM (``StreamReset`` around ``LSTM``, the reset flags as a second input) with
weights drawn by numpy is trained with ``Model.fit`` and :class:`StatefulTraining` on
``tests.carried.many_series`` (series of unequal lengths, resets mid-epoch, padding, a new
layout each epoch), once per way of feeding seqbatch's batches to the distribution. After
every step the process records the weights, the LSTM state it holds and the first step of
each row of the global batch that the model saw. It records the layout of the state and of
the data, what Keras and seqbatch say to the ways that would misalign, and (in process 0)
the same model trained on one device.
"""

from __future__ import annotations

import json
import os
from typing import Any

EPOCHS = 2
UNITS = 3
SCALE = 1e-5  # the codes of tests.encoded reach 110,000: keep the gates unsaturated
LEARNING_RATE = 0.5


def main(process: int, processes: int) -> dict[str, Any]:
    import jax
    import keras
    import numpy as np
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    from seqbatch.keras import StatefulTraining, StreamReset, StreamSequence
    from seqbatch.tf import to_dataset
    from tests.carried import many_series
    from tests.keras_models import FirstStep, numpy_weights, sync

    # Keras draws the seeds of its layers' generators: the same in every process.
    keras.utils.set_random_seed(0)
    batches = many_series()
    B, W, F = batches.batch_size, batches.sequence_length, batches.feature_shape[0]
    layouts: dict[str, Any] = {}

    class DataLayout(keras.layers.Layer):
        """Passes ``x`` through; records, when traced, which rows of it each device holds."""

        def call(self, x: Any) -> Any:
            jax.debug.inspect_array_sharding(
                x, callback=lambda s: layouts.update(data=rows_of_devices(s, x.shape))
            )
            return x

    def rows_of_devices(sharding: Any, shape: tuple[int, ...]) -> dict[str, list[int]]:
        """``[start, stop)`` of the rows that each device holds, by device id."""
        return {
            str(device.id): list(index[0].indices(shape[0])[:2])
            for device, index in sharding.devices_indices_map(tuple(shape)).items()
        }

    def scaled_error(y: Any, prediction: Any) -> Any:
        return keras.ops.mean(keras.ops.square(prediction - y * SCALE), axis=-1)

    def build() -> keras.Model:
        x_in = keras.Input(batch_shape=(B, W, F))
        reset_in = keras.Input(batch_shape=(B,))
        first = FirstStep(name="first")
        x = keras.layers.Rescaling(SCALE)(first(DataLayout()(x_in)))
        lstm = keras.layers.LSTM(UNITS, stateful=True, return_sequences=True, name="lstm")
        h = StreamReset(lstm, name="reset")([x, reset_in])
        model = keras.Model([x_in, reset_in], keras.layers.Dense(F)(h))
        numpy_weights(model, seed=0)
        model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss=scaled_error)
        return model

    def local(variable: Any) -> Any:
        """This process's first device's copy of a variable (replicated: the whole value)."""
        return np.asarray(variable.value.addressable_shards[0].data)

    class Record(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.out: dict[str, list[Any]] = {"weights": [], "states": [], "firsts": []}

        def weights(self) -> None:
            cell = self.model.get_layer("reset").layer.cell
            self.out["weights"].append([local(v).tolist() for v in cell.weights])

        def on_train_begin(self, logs: Any = None) -> None:
            self.weights()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            # Not at the batch's begin: over a dataset of unknown length (a tf.data dataset
            # that Keras shards), Keras begins one batch more per epoch and finds no data.
            sync(self.model)
            self.weights()
            state = self.model.get_layer("reset").layer.states[0]
            self.out["states"].append(local(state).tolist())
            seen = local(self.model.get_layer("first").seen)
            self.out["firsts"].append(np.rint(seen).astype(int).tolist())

    started: list[Record] = []

    def train(data: Any, distribution: Any) -> dict[str, Any]:
        keras.distribution.set_distribution(distribution)
        layouts.clear()
        model = build()
        record = Record()
        started.append(record)
        model.fit(
            data,
            epochs=EPOCHS,
            shuffle=False,
            verbose=0,
            callbacks=[StatefulTraining(), record],
        )
        record.out["weights"].pop()  # those after the last step: each step's are kept
        sync(model)
        state = model.get_layer("reset").layer.states[0].value
        # Every copy of the final state that this process holds, by device.
        record.out["final"] = {
            str(shard.device.id): np.asarray(shard.data).tolist()
            for shard in state.addressable_shards
        }
        record.out["state_layout"] = rows_of_devices(state.sharding, state.shape)
        record.out["data_layout"] = layouts.get("data")
        return record.out

    def refusal(data: Any, distribution: Any) -> dict[str, Any]:
        """The message of the ``ValueError`` that ``fit`` raised, and the steps it trained."""
        try:
            train(data, distribution)
            message = "trained"
        except ValueError as err:
            message = str(err)
        return {"message": message, "steps": len(started[-1].out["states"])}

    result: dict[str, Any] = {
        "process": jax.process_index(),
        "devices": [d.id for d in jax.devices()],
        "local_devices": [d.id for d in jax.local_devices()],
    }
    if processes == 1:
        result["sequence"] = train(
            StreamSequence(batches, reset_input=True), keras.distribution.DataParallel()
        )
        result["dataset"] = train(
            to_dataset(batches, reset_input=True), keras.distribution.DataParallel()
        )
    else:
        mine = batches.shard(process, processes)
        result["dataset"] = train(
            to_dataset(batches, reset_input=True), keras.distribution.DataParallel()
        )
        result["dataset_shard"] = train(
            to_dataset(mine, reset_input=True),
            keras.distribution.DataParallel(auto_shard_dataset=False),
        )
        result["sequence_shard"] = train(
            StreamSequence(mine, reset_input=True),
            keras.distribution.DataParallel(auto_shard_dataset=False),
        )
        result["sequence_auto_shard"] = refusal(
            StreamSequence(batches, reset_input=True), keras.distribution.DataParallel()
        )
        # Keras after 3.15.1 takes a PyDataset here and deals its batches by index. Its data
        # adapter, given ready-made, passes Keras 3.15.1's refusal: seqbatch's is seen.
        result["sequence_adapter_auto_shard"] = refusal(
            PyDatasetAdapter(StreamSequence(batches, reset_input=True), shuffle=False),
            keras.distribution.DataParallel(),
        )
        result["sequence_unsharded"] = refusal(
            StreamSequence(batches, reset_input=True),
            keras.distribution.DataParallel(auto_shard_dataset=False),
        )
    if process == 0:
        with jax.default_device(jax.local_devices()[0]):
            result["single"] = train(StreamSequence(batches, reset_input=True), None)
    return result


if __name__ == "__main__":
    processes = int(os.environ.get("SEQBATCH_PROCESSES", "1"))
    process = int(os.environ.get("SEQBATCH_PROCESS", "0"))
    if processes > 1:
        import jax

        coordinator = os.environ["SEQBATCH_COORDINATOR"]
        jax.distributed.initialize(
            coordinator,
            num_processes=processes,
            process_id=process,
            coordinator_bind_address=coordinator,  # not every interface, as by default
            initialization_timeout=60,
        )
    result = main(process, processes)
    with open(os.environ["SEQBATCH_OUT"], "w", encoding="utf-8") as f:
        json.dump(result, f)
