"""tf.distribute: every replica's stateful RNN continues its own streams, both ways.

Under ``MirroredStrategy`` with two logical CPUs, a tiny stateful LSTM is trained with
``fit`` (a) on the global dataset, which Keras hands to ``experimental_distribute_dataset``,
and (b) on ``distribute_datasets_from_function(lambda ctx: to_dataset(..., input_context=ctx))``.
Each replica's final state must equal the matching rows of the same model trained on one
device over the global batch. The rows each replica is dealt are decoded step by step, and
the naive order (a per-replica batcher, batch-major) is shown to trade streams.

The work runs in a subprocess (this file as a script): the logical devices must be set
before TensorFlow initialises its devices, which other tests in the session may have done.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from tests.workers import run_script

pytestmark = [pytest.mark.needs_tensorflow, pytest.mark.tensorflow_backend]

B, W, F, UNITS, BATCHES, EPOCHS = 4, 3, 1, 4, 5, 2
REPLICAS = 2
PER_REPLICA = B // REPLICAS
SEGMENT = BATCHES * W  # steps of the one series each of the B streams holds


def data() -> np.ndarray:
    """One series whose step t holds t / 100: a first step decodes to its position."""
    return (np.arange(B * SEGMENT + 1, dtype=np.float32) / 100)[:, None]


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    return run_script(__file__, timeout=300)


@pytest.mark.parametrize("way", ["experimental_distribute_dataset", "from_function"])
def test_each_replica_state_equals_its_rows_on_one_device(run: dict[str, Any], way: str) -> None:
    for single, replicas in zip(run["single"], run[way], strict=True):
        single = np.asarray(single)
        assert single.shape == (B, UNITS)
        assert len(replicas) == REPLICAS
        for r, state in enumerate(replicas):
            rows = single[r * PER_REPLICA : (r + 1) * PER_REPLICA]
            np.testing.assert_allclose(state, rows, rtol=1e-5, atol=1e-6, err_msg=f"replica {r}")
        # The replicas hold different streams, so swapping them could not pass.
        assert not np.allclose(replicas[0], replicas[1], atol=1e-3)


def expected_first_steps() -> list[list[list[int]]]:
    """Per step, per replica, the first step of each of its rows: replica r holds streams
    ``[r * PER_REPLICA, (r + 1) * PER_REPLICA)`` and stream i starts at ``SEGMENT * i``."""
    return [
        [
            [SEGMENT * i + W * k for i in range(r * PER_REPLICA, (r + 1) * PER_REPLICA)]
            for r in range(REPLICAS)
        ]
        for k in range(BATCHES)
    ]


@pytest.mark.parametrize("way", ["experimental_distribute_dataset", "from_function"])
def test_each_replica_is_dealt_its_own_streams(run: dict[str, Any], way: str) -> None:
    assert run["dealt"][way] == expected_first_steps()


def continues(dealt: list[list[list[int]]]) -> bool:
    """Whether every row of every replica starts right after its previous window."""
    steps = np.asarray(dealt)
    return bool((np.diff(steps, axis=0) == W).all())


def test_batch_major_order_trades_streams_between_replicas(run: dict[str, Any]) -> None:
    assert continues(expected_first_steps())
    for way in ("experimental_distribute_dataset", "from_function"):
        assert continues(run["dealt"][way])
    # A per-replica batcher read batch after batch: replica 0 is dealt batches 0, 2, 4 and
    # replica 1 batches 1, 3, 5, so every row skips a window from one step to the next.
    wrong = run["dealt"]["batch_major"]
    assert len(wrong) == BATCHES
    assert not continues(wrong)
    assert wrong[1][0] == [s + 2 * W for s in wrong[0][0]]


def test_a_batch_size_the_replicas_do_not_divide_is_refused(run: dict[str, Any]) -> None:
    refused = run["refused"]
    assert refused["sequence"] == (
        "`batch_size` of the batches must be a multiple of the number of replicas of the "
        "model's tf.distribute strategy, so that every replica holds whole streams. "
        f"Received: batch_size={B - 1} for num_replicas_in_sync={REPLICAS}"
    )
    # On the tf.data path Keras builds the model on one distributed batch before any
    # callback runs, and fails there first: still before the first step (docs/backends.md).
    assert "AddN" in refused["tf.data"]
    assert refused["steps"] == {"sequence": 0, "tf.data": 0}


def test_a_batch_size_other_than_the_model_per_replica_is_refused(run: dict[str, Any]) -> None:
    assert run["refused"]["per_replica"].startswith(
        "`batch_size` of the batches must be the batch size that the model's stateful RNNs "
        f"were built for, since each row is one stream with its own state. Received: "
        f"batch_size={B} ({PER_REPLICA} per replica) for layer 'lstm', built for batch size 1"
    )


def main() -> dict[str, Any]:
    """Train and deal on two logical CPUs; return states and dealt first steps as lists."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * REPLICAS
    )
    import keras

    import seqbatch
    from seqbatch.tf import to_dataset

    batches = seqbatch.StreamBatcher(data(), batch_size=B, sequence_length=W)
    assert len(batches) == BATCHES

    def model(batch_size: int) -> keras.Model:
        x = keras.Input(batch_shape=(batch_size, W, F))
        h = keras.layers.LSTM(UNITS, stateful=True, return_sequences=True, name="lstm")(x)
        return keras.Model(x, keras.layers.Dense(F)(h))

    def train(m: keras.Model, dataset: Any) -> None:
        m.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        m.fit(dataset, epochs=EPOCHS, shuffle=False, verbose=0)

    keras.utils.set_random_seed(0)
    single = model(B)
    weights = single.get_weights()
    train(single, to_dataset(batches))
    out: dict[str, Any] = {"single": [s.numpy().tolist() for s in single.get_layer("lstm").states]}

    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(REPLICAS)])
    datasets = {
        "experimental_distribute_dataset": lambda: to_dataset(batches),
        "from_function": lambda: strategy.distribute_datasets_from_function(
            lambda ctx: to_dataset(batches, input_context=ctx)
        ),
    }
    for way, dataset in datasets.items():
        with strategy.scope():
            m = model(PER_REPLICA)
            m.set_weights(weights)
        train(m, dataset())
        out[way] = [
            [np.asarray(v).tolist() for v in strategy.experimental_local_results(s.value)]
            for s in m.get_layer("lstm").states
        ]

    out["refused"] = refused(strategy, model)

    def per_replica_batcher(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        size = ctx.get_per_replica_batch_size(B)
        return to_dataset(seqbatch.StreamBatcher(data(), batch_size=size, sequence_length=W))

    distributed = {
        "experimental_distribute_dataset": strategy.experimental_distribute_dataset(
            to_dataset(batches)
        ),
        "from_function": datasets["from_function"](),
        "batch_major": strategy.distribute_datasets_from_function(per_replica_batcher),
    }
    out["dealt"] = {
        way: [
            [
                np.rint(np.asarray(x)[:, 0, 0] * 100).astype(int).tolist()
                for x in strategy.experimental_local_results(element[0])
            ]
            for element in dataset
        ]
        for way, dataset in distributed.items()
    }
    return out


def refused(strategy: Any, model: Any) -> dict[str, Any]:
    """The errors of fit() on batch sizes that do not fit the replicas, and the steps run."""
    import keras

    import seqbatch
    from seqbatch.keras import StatefulTraining, StreamSequence

    class Steps(keras.callbacks.Callback):
        count = 0

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            Steps.count += 1

    def fit(data: Any, per_replica: int) -> str:
        with strategy.scope():
            m = model(per_replica)
            m.compile(optimizer="sgd", loss="mse")
        try:
            m.fit(data, shuffle=False, verbose=0, callbacks=[StatefulTraining(), Steps()])
        except Exception as err:
            return str(err)
        return ""

    out: dict[str, Any] = {}
    odd = seqbatch.StreamBatcher(data(), batch_size=B - 1, sequence_length=W)
    steps = {}
    for name, dataset in [("sequence", StreamSequence(odd)), ("tf.data", odd.to_tf_dataset())]:
        Steps.count = 0
        out[name] = fit(dataset, PER_REPLICA)
        steps[name] = Steps.count
    out["steps"] = steps
    batches = seqbatch.StreamBatcher(data(), batch_size=B, sequence_length=W)
    out["per_replica"] = fit(StreamSequence(batches), 1)
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
