"""Window lengths that vary through tf.data (``to_tf_dataset``): an open time axis.

Every element is the batcher's batch of that pass's epoch, the epochs have their own number
of elements, and the weights make a loss that Keras averages batch by batch the mean over
the epoch's real steps.
"""

from __future__ import annotations

import numpy as np
import pytest

import seqbatch
from tests.encoded import encoded_series
from tests.lazy import SliceOnly

tf = pytest.importorskip("tensorflow")

LENGTHS = [50, 37, 30, 22, 13, 9, 4]


@pytest.mark.parametrize("boundary", ["reset", "pack", "concat"])
@pytest.mark.parametrize("lazy", [False, True])
def test_each_pass_is_an_epoch_of_varying_batches(boundary: str, lazy: bool) -> None:
    series = [encoded_series(s, n, (2,), "float32") for s, n in enumerate(LENGTHS)]
    data = [SliceOnly(s) for s in series] if lazy else series
    schedule = seqbatch.lengths.awd(bptt=5, seed=1, minimum=1)
    batches = seqbatch.StreamBatcher(
        data,
        batch_size=3,
        sequence_length=schedule,
        remainder="pad",
        series_boundary=boundary,
        shuffle=True,
        seed=2,
    )
    dataset = batches.to_tf_dataset(reset_input=True)
    spec = dataset.element_spec
    assert spec[0][0].shape.as_list() == [3, None, 2]
    counts = []
    for epoch in range(2):
        elements = list(dataset)
        counts.append(len(elements))
        assert len(elements) == batches.view.n_batches(epoch)
        mean = 0.0
        for k, ((x, reset), y, weight) in enumerate(elements):
            b = batches.batch_at(epoch, k)
            assert x.shape[1] == b.length == schedule(epoch, k)
            np.testing.assert_array_equal(x.numpy(), b.x)
            np.testing.assert_array_equal(y.numpy(), b.y)
            flags = b.step_reset if b.step_reset is not None else b.reset
            np.testing.assert_array_equal(reset.numpy(), flags.astype(np.float32))
            w = weight.numpy()
            assert ((w > 0) == (b.sample_weight > 0)).all()
            # Keras divides each batch's weighted loss by its slots, then averages batches.
            mean += w.sum() / w.size
        # A loss of 1 on every real step reports 1: the mean over the epoch's real steps.
        assert mean / len(elements) == pytest.approx(1.0, rel=1e-5)
    assert len(set(counts)) > 1


def test_input_pipelines_each_serve_their_streams_of_every_varying_epoch() -> None:
    series = [encoded_series(s, n, (2,), "float32") for s, n in enumerate(LENGTHS)]
    batches = seqbatch.StreamBatcher(
        series,
        batch_size=4,
        sequence_length=seqbatch.lengths.awd(bptt=4, seed=3, minimum=1),
        remainder="pad",
        shuffle=True,
        seed=1,
    )
    datasets = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=4
        )
        datasets.append(batches.to_tf_dataset(input_context=context, reset_input=True))
    counts = []
    for epoch in range(2):
        n = batches.view.n_batches(epoch)
        counts.append(n)
        for pipeline, dataset in enumerate(datasets):
            elements = list(dataset)  # each pass is the next epoch
            assert len(elements) == 2 * n  # two replicas per pipeline
            for j, ((x, _), y, _) in enumerate(elements):
                k, replica = divmod(j, 2)
                row = 2 * pipeline + replica
                want = batches.batch_at(epoch, k)
                np.testing.assert_array_equal(x.numpy(), want.x[row : row + 1])
                np.testing.assert_array_equal(y.numpy(), want.y[row : row + 1])
    assert counts[0] != counts[1], "the epochs should differ in length"


def test_keras_fit_on_the_dataset_carries_the_replays_states_over_varying_windows() -> None:
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the tf.data path of fit() is tested on the TensorFlow backend")
    from seqbatch.keras import StatefulTraining, stateful_rnns
    from tests.keras_models import lstm_model, state_values, to_numpy
    from tests.replay import from_keras, lstm_replay
    from tests.varying import Table

    B, F = 2, 3
    data = np.random.default_rng(7).normal(size=(2 * 20 + 1, F)).astype("float32")
    batches = seqbatch.StreamBatcher(data, batch_size=B, sequence_length=Table((3, 1)))
    model = lstm_model(B, None, F, F, reset_input=True)  # type: ignore[arg-type]
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    (lstm,) = stateful_rnns(model)
    weights = from_keras(*(to_numpy(w) for w in lstm.cell.weights))
    dataset = batches.to_tf_dataset(reset_input=True)
    seen: list[list[np.ndarray]] = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(state_values(model))
    )
    for epoch in range(2):
        seen.clear()
        count = batches.view.n_batches(epoch)
        model.fit(
            dataset,
            epochs=epoch + 1,
            initial_epoch=epoch,
            verbose=0,
            callbacks=[StatefulTraining(), record],
        )
        assert len(seen) == count
        state = None  # StatefulTraining starts every epoch from zero states
        for k in range(count):
            b = batches.batch_at(epoch, k)
            _, state = lstm_replay(weights, [(b.x, b.reset)], state)
            np.testing.assert_allclose(seen[k][0], state[0], atol=1e-5)
            np.testing.assert_allclose(seen[k][1], state[1], atol=1e-5)
    assert state is not None and np.abs(state[0]).max() > 0.05
