"""One worker of ``tf.distribute.MultiWorkerMirroredStrategy``: train, deal, try ``fit``.

Run by ``tests/keras/test_multiworker.py`` as ``python -m tests.workers.mwms``, once per worker,
with ``TF_CONFIG`` naming two workers on 127.0.0.1 and ``SEQBATCH_OUT`` the JSON file to
write. Each worker holds one replica (one CPU).

A stateful LSTM (``StreamReset`` around ``LSTM``, the reset flags as a second input) is
trained on ``tests.carried.many_series`` (series of unequal lengths, resets mid-epoch,
padding, a new layout each epoch) by a loop of ``strategy.run``, once per way of handing
the data to the strategy. After every step the worker records the weights, the state of its
replica and the first step of each row it was dealt. Then it records what a user sees when
the auto-shard policy is overridden, and what ``Model.fit`` does. Worker 0 also trains the
same model on one device, over the global batch, from the same weights.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

EPOCHS = 2
UNITS = 3
SCALE = 1e-5  # the codes of tests.encoded reach 110,000: keep the gates unsaturated
LEARNING_RATE = 0.5


def main() -> dict[str, Any]:
    import tensorflow as tf

    # MultiWorkerMirroredStrategy must exist before TensorFlow starts its runtime.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras
    import numpy as np

    from seqbatch.keras import StreamReset
    from seqbatch.tf import to_dataset
    from tests.carried import many_series

    batches = many_series()
    B, W, F = batches.batch_size, batches.sequence_length, batches.feature_shape[0]
    rows = B // strategy.num_replicas_in_sync

    def build(batch_size: int) -> keras.Model:
        x_in = keras.Input(batch_shape=(batch_size, W, F))
        reset_in = keras.Input(batch_shape=(batch_size,))
        lstm = keras.layers.LSTM(UNITS, stateful=True, return_sequences=True)
        h = StreamReset(lstm, name="lstm")([keras.layers.Rescaling(SCALE)(x_in), reset_in])
        return keras.Model([x_in, reset_in], keras.layers.Dense(F)(h))

    def local(value: Any) -> np.ndarray:
        """This worker's replica's value of a tensor, variable or per-replica value."""
        return np.asarray(strategy.experimental_local_results(value)[0])

    def train(model: keras.Model, data: Any, run: Callable[..., Any]) -> dict[str, Any]:
        """A loop of ``run`` over ``data`` for EPOCHS passes; what each step saw and left."""
        optimizer = keras.optimizers.SGD(LEARNING_RATE)
        lstm = model.get_layer("lstm").layer

        def step(inputs: Any, y: Any, weight: Any) -> None:
            with tf.GradientTape() as tape:
                error = tf.reduce_mean(tf.square(model(inputs, training=True) - y * SCALE), -1)
                # Summed over replicas by the optimizer: the mean over the global batch.
                loss = tf.reduce_sum(error * weight) / (B * W)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))

        train_step = tf.function(lambda *element: run(step, args=element))
        out: dict[str, list[Any]] = {"weights": [], "states": [], "firsts": []}
        for _ in range(EPOCHS):
            for (x, reset), y, weight in data:
                out["weights"].append([local(v).tolist() for v in lstm.cell.weights])
                out["firsts"].append(np.rint(local(x)[:, 0, 0]).astype(int).tolist())
                train_step((x, reset), y, weight)
                out["states"].append(local(lstm.states[0].value).tolist())
        return out

    keras.utils.set_random_seed(0)
    with strategy.scope():
        first = build(rows)
    initial = first.get_weights()
    models = {"from_function": first}
    with strategy.scope():
        models["plain"] = build(rows)
        models["plain"].set_weights(initial)
    data = {
        "from_function": strategy.distribute_datasets_from_function(
            lambda context: to_dataset(batches, reset_input=True, input_context=context)
        ),
        "plain": strategy.experimental_distribute_dataset(to_dataset(batches, reset_input=True)),
    }
    result: dict[str, Any] = {
        way: train(models[way], data[way], strategy.run) for way in ("from_function", "plain")
    }

    # What a user sees who overrides the auto-shard policy of seqbatch's dataset.
    for name, policy in (("OFF", "OFF"), ("FILE", "FILE")):
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = getattr(
            tf.data.experimental.AutoShardPolicy, policy
        )
        overridden = to_dataset(batches, reset_input=True).with_options(options)
        try:
            distributed = strategy.experimental_distribute_dataset(overridden)
            result[name] = [
                np.rint(local(x)[:, 0, 0]).astype(int).tolist() for (x, _), _, _ in distributed
            ]
        except Exception as err:  # any error: the test reads what the user would see
            result[name] = f"{type(err).__name__}: {err}".splitlines()[0]

    # Model.fit, both ways (keras-team/keras#20585): the test expects the error it raises.
    result["fit"] = {}
    for way, dataset in data.items():
        with strategy.scope():
            model = build(rows)
            model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss="mse")
        try:
            model.fit(dataset, epochs=1, verbose=0)
            result["fit"][way] = "trained"
        except Exception as err:  # any error: the test reads what the user would see
            result["fit"][way] = f"{type(err).__name__}: {err}".splitlines()[0]

    if strategy.cluster_resolver.task_id == 0:
        single = build(B)
        single.set_weights(initial)
        result["single"] = train(
            single, to_dataset(batches, reset_input=True), lambda fn, args: fn(*args)
        )
    result["worker"] = strategy.cluster_resolver.task_id
    return result


if __name__ == "__main__":
    out = main()
    with open(os.environ["SEQBATCH_OUT"], "w", encoding="utf-8") as f:
        json.dump(out, f)
