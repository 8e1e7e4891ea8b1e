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
