"""Window lengths that vary through the torch and JAX adapters: every served batch is the
batcher's batch of that epoch and index, each epoch has its own number of batches, worker
processes and a restored position stay exact.
"""

from __future__ import annotations

import numpy as np
import pytest

import seqbatch
from tests.encoded import encoded_series

LENGTHS = [70, 41, 33, 29, 18, 12, 9, 5]


def varying(**kwargs: object) -> seqbatch.StreamBatcher:
    data = [encoded_series(s, n, (2,), "float32") for s, n in enumerate(LENGTHS)]
    args: dict[str, object] = {
        "batch_size": 4,
        "sequence_length": seqbatch.lengths.awd(bptt=6, seed=2, minimum=1),
        "remainder": "pad",
        "shuffle": True,
        "seed": 4,
    }
    args.update(kwargs)
    return seqbatch.StreamBatcher(data, **args)  # type: ignore[arg-type]


def same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return (a is None and b is None) or (
        a is not None and b is not None and a.shape == b.shape and np.array_equal(a, b)
    )


@pytest.mark.parametrize("boundary", ["reset", "pack"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_the_torch_loader_serves_each_epochs_varying_batches(
    boundary: str, num_workers: int
) -> None:
    torch = pytest.importorskip("torch")
    from seqbatch.torch import StreamDataset

    batches = varying(series_boundary=boundary)
    dataset = StreamDataset(batches)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        sampler=dataset.sampler,
        num_workers=num_workers,
        timeout=120 if num_workers else 0,
    )
    counts = []
    for epoch in range(3):
        dataset.set_epoch(epoch)
        n = len(dataset)
        served = list(loader)
        assert len(served) == n == batches.view.n_batches(epoch)
        counts.append(n)
        for k, item in enumerate(served):
            want = batches.batch_at(epoch, k)
            assert (item.epoch, item.index) == (epoch, k)
            assert item.length == want.length == item.x.shape[1]
            assert same(item.x.numpy(), want.x) and same(item.y.numpy(), want.y)
            assert same(item.sample_weight.numpy(), want.sample_weight)
            assert same(item.reset.numpy(), want.reset)
            assert float(item.lr_scale) == want.length / 6
    assert len(set(counts)) > 1, "the epochs should differ in length"


def test_a_restored_torch_dataset_starts_at_the_saved_batch_of_a_varying_epoch() -> None:
    pytest.importorskip("torch")
    from seqbatch.torch import StreamDataset

    batches = varying()
    saved = batches.state_dict(epoch=2, next_batch=3)
    restored = varying()
    restored.load_state_dict(saved)
    dataset = StreamDataset(restored)
    keys = list(dataset.sampler)
    n = batches.view.n_batches(2)
    assert keys == [(2, k) for k in range(3, n)]
    item = dataset[keys[0]]
    assert np.array_equal(item.x.numpy(), batches.batch_at(2, 3).x)


def test_the_jax_source_counts_each_epochs_batches_and_keeps_them_in_order() -> None:
    from seqbatch.jax.source import StreamSource

    batches = varying(series_boundary="pack")
    source = StreamSource(batches, epochs=3)
    counts = [batches.view.n_batches(e) for e in range(3)]
    assert len(source) == sum(counts)
    records = list(source.in_order(source[i] for i in range(len(source))))
    i = 0
    for epoch, n in enumerate(counts):
        for k in range(n):
            r, want = records[i], batches.batch_at(epoch, k)
            assert (int(r["epoch"]), int(r["batch"])) == (epoch, k)
            assert same(r["x"], want.x) and same(r["step_reset"], want.step_reset)
            assert float(r["lr_scale"]) == want.length / 6
            i += 1
    with pytest.raises(ValueError, match="Records must come in the order of the source"):
        list(source.in_order([source[0], source[2]]))
    # Restored mid-epoch, record 0 is the saved batch.
    restored = varying(series_boundary="pack")
    restored.load_state_dict(batches.state_dict(epoch=1, next_batch=2))
    resumed = StreamSource(restored, epochs=2)
    assert len(resumed) == counts[1] - 2 + counts[2]
    assert (int(resumed[0]["epoch"]), int(resumed[0]["batch"])) == (1, 2)
    last = resumed[len(resumed) - 1]
    assert (int(last["epoch"]), int(last["batch"])) == (2, counts[2] - 1)
