"""seqbatch.torch: a DataLoader that would serve the batches out of order is refused.

Each refusal happens before the first batch reaches the loop, with a message that names the
DataLoader argument and the fix. Every item says which batch it is, ``(epoch, index)``, and
those are checked here against the order of the epochs and batches that the test itself
asked for. Loaders with workers carry a ``timeout``, so that a hang fails instead of waiting.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import seqbatch
from seqbatch.torch import StreamDataset, TensorBatch
from tests.carried import at_epoch, many_series

WORKER_TIMEOUT = 60  # seconds a DataLoader with workers may wait for one batch


def loader(dataset: StreamDataset, num_workers: int = 0, **kwargs: Any) -> DataLoader:
    options: dict[str, Any] = {"batch_size": None, "sampler": dataset.sampler, **kwargs}
    if num_workers:
        options.update(num_workers=num_workers, timeout=WORKER_TIMEOUT)
    return DataLoader(dataset, **options)


# --- in_order=False ---------------------------------------------------------------------------

IN_ORDER = re.escape(
    "A DataLoader over a StreamDataset must serve the batches in the order of its sampler, so "
    "that row i of each batch continues row i of the batch before: with in_order=False it "
    "yields each batch as soon as a worker has read it. Build the loader with in_order=True, "
    "its default. Received: in_order=False"
)


@pytest.mark.parametrize("persistent", [False, True], ids=["workers", "persistent workers"])
def test_a_loader_that_does_not_keep_the_order_is_refused_before_the_first_batch(
    persistent: bool,
) -> None:
    dataset = StreamDataset(many_series())
    unordered = loader(dataset, 2, in_order=False, persistent_workers=persistent)
    with pytest.raises(ValueError, match=IN_ORDER):
        next(iter(unordered))


def test_in_order_false_without_workers_is_exact_and_accepted() -> None:
    # torch reads in the training process then, in the sampler's order: nothing to refuse.
    batches = many_series()
    dataset = StreamDataset(batches)
    served = list(loader(dataset, in_order=False))
    assert [(b.epoch, b.index) for b in served] == [(0, k) for k in range(len(batches))]


# --- Samplers that yield the keys in another order --------------------------------------------

ORDER = "Keys must reach a StreamDataset in the order its sampler yields them, each once"
FOREIGN = re.escape("`sampler` must be the StreamDataset's own sampler")


@pytest.mark.parametrize("num_workers", [0, 2], ids=["in process", "workers"])
@pytest.mark.parametrize(
    "reorder",
    [
        lambda keys: keys[::-1],
        lambda keys: [keys[i] for i in np.random.default_rng(0).permutation(len(keys))],
        lambda keys: [keys[1], keys[0], *keys[2:]],
    ],
    ids=["reversed", "shuffled", "two swapped"],
)
def test_the_samplers_keys_in_another_order_are_refused(num_workers: int, reorder: Any) -> None:
    dataset = StreamDataset(many_series())
    reordered = loader(dataset, num_workers, sampler=reorder(list(dataset.sampler)))
    with pytest.raises(ValueError, match=ORDER):
        list(reordered)


def test_the_samplers_keys_kept_for_another_pass_are_refused() -> None:
    # A list of the keys of epoch 0 would serve epoch 0 again, whatever set_epoch says.
    dataset = StreamDataset(many_series())
    kept = loader(dataset, sampler=list(dataset.sampler))
    assert len(list(kept)) == len(dataset)
    dataset.set_epoch(1)
    with pytest.raises(ValueError, match=re.escape("Received: key (0, 0) out of order")):
        next(iter(kept))


@pytest.mark.parametrize("num_workers", [0, 2], ids=["in process", "workers"])
def test_pairs_from_another_sampler_are_refused(num_workers: int) -> None:
    batches = many_series()
    dataset = StreamDataset(batches)
    pairs = [(0, k) for k in reversed(range(len(batches)))]
    own = loader(dataset, num_workers, sampler=pairs)
    with pytest.raises(TypeError, match=FOREIGN + ".*Received: key=" + re.escape(repr(pairs[0]))):
        next(iter(own))


def test_reading_the_dataset_by_hand_stays_free() -> None:
    # Only a DataLoader's reads are checked: a loop may index any batch of any epoch.
    batches = many_series()
    dataset = StreamDataset(batches)
    for epoch, k in [(2, 3), (0, 1), (2, 3), (1, -1)]:
        item = dataset[epoch, k]
        assert (item.epoch, item.index) == (epoch, k % len(batches))
        np.testing.assert_array_equal(item.x.numpy(), at_epoch(batches, epoch)[k].x)


# --- batch_size left at its default -----------------------------------------------------------

BATCH_SIZE = re.escape(
    "`batch_size` must be None in a DataLoader over a StreamDataset: every item is a whole "
    "batch already (a TensorBatch), and the DataLoader's default batch_size=1 would stack "
    "items into batches of batches. Build the loader as DataLoader(dataset, batch_size=None, "
    "sampler=dataset.sampler)."
)


@pytest.mark.parametrize(
    "make_loader",
    [
        lambda d: DataLoader(d, sampler=d.sampler),
        lambda d: DataLoader(d, sampler=d.sampler, num_workers=1, timeout=WORKER_TIMEOUT),
        lambda d: DataLoader(d, batch_size=3, sampler=d.sampler),
        lambda d: DataLoader(d),
    ],
    ids=["batch_size default", "in a worker", "batch_size=3", "no arguments"],
)
def test_a_batch_size_is_refused_with_the_fix(make_loader: Any) -> None:
    with pytest.raises(TypeError, match=BATCH_SIZE):
        next(iter(make_loader(StreamDataset(many_series()))))


# --- Every item says which batch it is --------------------------------------------------------


@pytest.mark.parametrize(
    ("num_workers", "persistent"), [(0, False), (2, False), (2, True)], ids=str
)
def test_each_item_names_its_epoch_and_batch(num_workers: int, persistent: bool) -> None:
    batches = many_series()
    batches.set_epoch(1)
    saved = batches.state_dict(epoch=1, next_batch=4)
    restored = many_series()
    restored.load_state_dict(saved)
    dataset = StreamDataset(restored)
    served = loader(dataset, num_workers, persistent_workers=persistent)
    seen = []
    for epoch in (1, 2, 3):
        dataset.set_epoch(epoch)
        first = dataset.sampler.first_batch
        for k, b in enumerate(served, start=first):
            assert isinstance(b, TensorBatch)
            assert (b.epoch, b.index) == (epoch, k)
            np.testing.assert_array_equal(b.x.numpy(), at_epoch(batches, epoch)[k].x)
            seen.append((b.epoch, b.index))
    n = len(batches)
    expected = [(1, k) for k in range(4, n)] + [(e, k) for e in (2, 3) for k in range(n)]
    assert seen == expected


def test_a_batch_made_by_hand_names_what_it_is_given() -> None:
    b = seqbatch.StreamBatcher(np.arange(13.0), batch_size=2, sequence_length=3)[1]
    assert (TensorBatch.from_batch(b).epoch, TensorBatch.from_batch(b).index) == (None, None)
    item = TensorBatch.from_batch(b, shared=True, epoch=3, index=1)
    assert (item.epoch, item.index) == (3, 1)
    assert torch.equal(item.to("cpu").x, torch.tensor([[3.0, 4.0, 5.0], [9.0, 10.0, 11.0]]))
    assert (item.to("cpu").epoch, item.to("cpu").index) == (3, 1)
