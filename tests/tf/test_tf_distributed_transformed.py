"""tf.distribute on a seqbatch dataset extended by the user: epochs and checks are kept.

Under ``MirroredStrategy`` on two logical CPUs, a shuffled batcher's dataset is extended
(``prefetch``, ``map``) and handed to ``fit()`` three ways: as it is under the strategy's
scope, through ``strategy.experimental_distribute_dataset``, and through
``strategy.distribute_datasets_from_function``. ``fit(initial_epoch=2)`` must train epochs 2
and 3's layouts, each replica its own streams; ``steps_per_epoch=3`` must be refused, as
must a pipeline made without ``input_context``, which deals whole batches to the replicas.
The model records the first step of every row each replica trains on; the data encodes its
position. The work runs in a subprocess (this file as a script): the logical devices must
be set before TensorFlow initialises its devices.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from tests.workers import run_script

pytestmark = [pytest.mark.needs_tensorflow, pytest.mark.tensorflow_backend]

B, W, REPLICAS = 4, 3, 2
LENGTHS = [14, 11, 9, 9, 7, 12, 6, 10]
WAYS = ["scope", "experimental_distribute_dataset", "distribute_datasets_from_function"]


def shuffled() -> Any:
    import seqbatch
    from tests.encoded import encoded_series

    data = [encoded_series(s, n, (1,), "float32") for s, n in enumerate(LENGTHS)]
    return seqbatch.StreamBatcher(data, batch_size=B, sequence_length=W, shuffle=True, seed=5)


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    return run_script(__file__, timeout=600)


def expected(epochs: range) -> list[list[list[float]]]:
    """Per step, per replica, the first step of each of its rows: replica r holds streams
    ``[r * B / R, (r + 1) * B / R)`` of the global batch of that epoch's layout."""
    batches, per = shuffled(), B // REPLICAS
    out = []
    for epoch in epochs:
        batches.set_epoch(epoch)
        for b in batches:
            first = b.x[:, 0, 0].astype(float)
            out.append([first[r * per : (r + 1) * per].tolist() for r in range(REPLICAS)])
    return out


@pytest.mark.parametrize("way", WAYS)
def test_initial_epoch_trains_that_epochs_layout_on_every_replica(
    run: dict[str, Any], way: str
) -> None:
    assert expected(range(2, 3)) != expected(range(0, 1))  # epoch 0's layout would show
    assert run["seen"][way] == expected(range(2, 4))


@pytest.mark.parametrize("way", WAYS)
def test_steps_per_epoch_other_than_the_batches_is_refused(run: dict[str, Any], way: str) -> None:
    n = len(shuffled())
    assert n > 3
    assert run["steps"][way].startswith(
        f"`steps_per_epoch` must be None (or {n}, the number of batches per epoch) for "
        "seqbatch batches: "
    ), run["steps"][way]
    assert run["steps_seen"][way] == 0


def test_a_pipeline_made_without_input_context_is_refused(run: dict[str, Any]) -> None:
    assert run["whole_batches"] == (
        "`x` made by strategy.distribute_datasets_from_function must make each pipeline's "
        "dataset with to_dataset(batches, input_context=input_context): the strategy deals a "
        f"pipeline's consecutive elements to its {REPLICAS} replicas in turn, so that whole "
        "batches would go to one replica each, and every replica would skip batches of its "
        "streams. Received: a dataset of to_dataset that yields 1 element(s) per batch"
    )
    assert run["steps_seen"]["whole_batches"] == 0


def main() -> dict[str, Any]:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * REPLICAS
    )
    import keras

    import seqbatch
    from seqbatch.keras import StatefulTraining
    from seqbatch.tf import to_dataset
    from tests.keras_models import FirstStep

    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(REPLICAS)])

    @tf.autograph.experimental.do_not_convert
    def scaled(x: Any, y: Any, w: Any) -> tuple[Any, Any, Any]:
        return x, y, w * 0.5

    def extended(ds: tf.data.Dataset) -> tf.data.Dataset:
        return ds.map(scaled).prefetch(2)

    datasets = {
        "scope": lambda: extended(shuffled().to_tf_dataset()),
        "experimental_distribute_dataset": lambda: strategy.experimental_distribute_dataset(
            extended(shuffled().to_tf_dataset())
        ),
        "distribute_datasets_from_function": lambda: strategy.distribute_datasets_from_function(
            lambda ctx: extended(to_dataset(shuffled(), input_context=ctx))
        ),
        "whole_batches": lambda: strategy.distribute_datasets_from_function(
            lambda ctx: extended(
                seqbatch.StreamBatcher(
                    shuffled().sources, batch_size=B // REPLICAS, sequence_length=W
                ).to_tf_dataset()
            )
        ),
    }

    class Seen(keras.callbacks.Callback):
        def __init__(self, layer: FirstStep) -> None:
            super().__init__()
            self.layer, self.seen = layer, []

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            values = strategy.experimental_local_results(self.layer.seen.value)
            self.seen.append([np.asarray(v).astype(float).tolist() for v in values])

    def fit(way: str, **kwargs: Any) -> tuple[str, list[Any]]:
        with strategy.scope():
            first = FirstStep()
            model = keras.Sequential(
                [
                    keras.Input(batch_shape=(B // REPLICAS, W, 1)),
                    first,
                    keras.layers.SimpleRNN(2, stateful=True, return_sequences=True),
                    keras.layers.Dense(1),
                ]
            )
            model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
        seen = Seen(first)
        try:
            model.fit(
                datasets[way](),
                shuffle=False,
                verbose=0,
                callbacks=[seen, StatefulTraining()],
                **kwargs,
            )
        except ValueError as err:
            return str(err), seen.seen
        return "", seen.seen

    out: dict[str, Any] = {"seen": {}, "steps": {}, "steps_seen": {}}
    for way in WAYS:
        error, out["seen"][way] = fit(way, initial_epoch=2, epochs=4)
        assert not error, error
        out["steps"][way], seen = fit(way, steps_per_epoch=3, epochs=2)
        out["steps_seen"][way] = len(seen)
    out["whole_batches"], seen = fit("whole_batches")
    out["steps_seen"]["whole_batches"] = len(seen)
    return out


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore", UserWarning)
    print(json.dumps(main()))
