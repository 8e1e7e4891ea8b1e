"""torchdata's StatefulDataLoader over a StreamDataset: checkpoint mid-epoch, resume exactly.

The real ``torchdata.stateful_dataloader.StatefulDataLoader`` serves a shuffled batcher of
encoded series (resets mid-epoch, padding, a new layout every epoch) with worker processes
and prefetching. A run is stopped at a batch, its ``state_dict()`` saved (through
``torch.save``, as a checkpoint keeps it), and a new loader, over a new dataset on a new
batcher, restores it and goes on; some runs are stopped and resumed two and three times
within one epoch (the second resume is where other loaders lost the position). The batches
served across all the runs must be exactly those of the batcher's epochs in numpy, read by
this test (``tests.carried.assert_served_epoch``, which also checks the invariant on the
values that encode their own position), each once, in order.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
from torchdata.stateful_dataloader import StatefulDataLoader

import seqbatch
from seqbatch.torch import StreamDataset
from tests.carried import assert_served_epoch, at_epoch, many_series

pytestmark = [
    # torchdata 0.11 calls a torch function that torch 2.14 deprecates, at every loader built.
    pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning"),
    # 3 workers on a machine of 2 cores: slower, which the test does not mind.
    pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker:UserWarning"),
]

EPOCHS = 3
WORKER_TIMEOUT = 60  # seconds a loader with workers may wait for one batch

Stop = tuple[int, int]  # (epoch, k): the run saves after serving batch k of that epoch


def as_batch(b: Any) -> seqbatch.Batch:
    """A served TensorBatch as the numpy Batch it came from."""
    fields = {
        name: None if getattr(b, name) is None else getattr(b, name).numpy()
        for name in seqbatch.Batch.__dataclass_fields__
    }
    return seqbatch.Batch(**fields)


def checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` through torch.save and torch.load, as a checkpoint file keeps it."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded: dict[str, Any] = torch.load(buffer, weights_only=True)
    return loaded


def make_loader(dataset: StreamDataset, num_workers: int, **kwargs: Any) -> Any:
    options: dict[str, Any] = {"batch_size": None, "sampler": dataset.sampler, **kwargs}
    if num_workers:
        options.update(num_workers=num_workers, timeout=WORKER_TIMEOUT)
    return StatefulDataLoader(dataset, **options)


def run(
    saved: dict[str, Any] | None, stop: Stop | None, num_workers: int, **kwargs: Any
) -> tuple[list[Any], dict[str, Any] | None]:
    """One run, as a fresh process would make it: the batches it served and its checkpoint.

    It resumes from ``saved`` (the loader's state and the epoch of the last batch served),
    or starts at epoch 0, and stops after serving batch ``stop``, or at the end of training.
    """
    dataset = StreamDataset(many_series())  # a new batcher: the same data, seed and sizes
    loader = make_loader(dataset, num_workers, **kwargs)
    first_epoch = 0
    if saved is not None:
        loader.load_state_dict(saved["loader"])
        first_epoch = saved["epoch"]
    served = []
    for epoch in range(first_epoch, EPOCHS):
        dataset.set_epoch(epoch)
        for b in loader:
            served.append(b)  # one training step
            if (b.epoch, b.index) == stop:
                return served, checkpoint({"loader": loader.state_dict(), "epoch": b.epoch})
    return served, None


def run_with_stops(stops: list[Stop], num_workers: int, **kwargs: Any) -> list[Any]:
    """Every batch served by runs stopped at ``stops`` and resumed, then one to the end."""
    served, saved = [], None
    for stop in [*stops, None]:
        part, saved = run(saved, stop, num_workers, **kwargs)
        served += part
        assert (saved is None) == (stop is None)
    return served


def assert_every_epoch_once_in_order(served: list[Any]) -> None:
    batches = many_series()
    n = len(batches)
    assert [(b.epoch, b.index) for b in served] == [(e, k) for e in range(EPOCHS) for k in range(n)]
    for epoch in range(EPOCHS):
        assert_served_epoch(
            [as_batch(b) for b in served[epoch * n : (epoch + 1) * n]], at_epoch(batches, epoch)
        )


N = len(many_series())  # batches per epoch (12)

# Stops: one mid-epoch; two and three within one epoch, after an odd number of batches too
# (a restored loader with 2 workers goes on dealing from worker 1 then); the last batch of
# an epoch; and an epoch's first batch right after a resume.
STOPS = {
    "once": [(1, 5)],
    "twice in one epoch": [(1, 3), (1, 8)],
    "three times in one epoch": [(0, 2), (0, 5), (0, 9)],
    "at the last batch of an epoch": [(0, N - 1), (1, 0)],
    "every epoch": [(0, 4), (1, 10), (2, 6)],
}


@pytest.mark.parametrize("stops", list(STOPS.values()), ids=list(STOPS))
def test_resumed_runs_serve_exactly_the_uninterrupted_batches_with_workers(
    stops: list[Stop],
) -> None:
    served = run_with_stops(stops, num_workers=2, prefetch_factor=2)
    assert_every_epoch_once_in_order(served)


def test_resumed_runs_serve_exactly_the_uninterrupted_batches_in_one_process() -> None:
    assert_every_epoch_once_in_order(run_with_stops(STOPS["three times in one epoch"], 0))


@pytest.mark.parametrize(
    "options",
    [
        {"persistent_workers": True, "prefetch_factor": 3},
        {"snapshot_every_n_steps": 4},  # restores a snapshot, then replays the steps after it
        {"pin_memory": False, "num_workers": 3},
    ],
    ids=["persistent workers", "snapshot every 4 steps", "3 workers"],
)
def test_resume_is_exact_with_other_loader_options(options: dict[str, Any]) -> None:
    num_workers = options.pop("num_workers", 2)
    served = run_with_stops([(0, 5), (0, 8), (1, 3)], num_workers, **options)
    assert_every_epoch_once_in_order(served)


def test_a_state_taken_after_an_epoch_resumes_at_the_next() -> None:
    # Saved after the loop over the loader ended: the loop goes on at the next epoch.
    dataset = StreamDataset(many_series())
    loader = make_loader(dataset, 2)
    served = list(loader)
    saved = checkpoint({"loader": loader.state_dict(), "epoch": 1})
    resumed_dataset = StreamDataset(many_series())
    resumed = make_loader(resumed_dataset, 2)
    resumed.load_state_dict(saved["loader"])
    for epoch in range(saved["epoch"], EPOCHS):
        resumed_dataset.set_epoch(epoch)
        served += list(resumed)
    assert_every_epoch_once_in_order(served)


def test_a_state_of_another_epoch_than_the_loop_is_refused() -> None:
    _, saved = run(None, (1, 5), 2)
    assert saved is not None
    dataset = StreamDataset(many_series())
    loader = make_loader(dataset, 2)
    loader.load_state_dict(saved["loader"])
    dataset.set_epoch(2)  # the loop lost count: it would train epoch 1's batches as epoch 2
    with pytest.raises(ValueError, match=r"after set_epoch\(2\)") as err:
        next(iter(loader))
    assert "a state at epoch 1, batch 6" in str(err.value)


@pytest.mark.parametrize(
    ("other", "why"),
    [
        ({"seed": 8}, "same seed"),
        ({"sequence_length": 4}, "same data and arguments"),
    ],
    ids=["another seed", "other sizes"],
)
def test_a_state_of_another_batcher_is_refused(other: dict[str, Any], why: str) -> None:
    _, saved = run(None, (0, 5), 0)
    assert saved is not None
    dataset = StreamDataset(many_series(**other))
    loader = make_loader(dataset, 0)
    loader.load_state_dict(saved["loader"])
    with pytest.raises(ValueError, match=why):
        next(iter(loader))


def test_the_sampler_state_is_the_batcher_state_of_the_next_batch() -> None:
    # On every rank: the state of the whole batcher, which a batcher restores itself.
    batches = many_series()
    dataset = StreamDataset(batches, rank=1, world_size=2)
    keys = iter(dataset.sampler)
    for _ in range(4):
        next(keys)
    state = dataset.sampler.state_dict()
    assert state == batches.state_dict(epoch=0, next_batch=4)
    restored = many_series(seed=None)
    restored.load_state_dict(state)
    assert (restored.epoch, restored.resume_batch) == (0, 4)


def test_a_plain_dataloader_resumes_from_the_sampler_state_too() -> None:
    # torch's own DataLoader deals from worker 0 at every pass: the sampler's state alone
    # resumes it, after any number of batches.
    sampler_state = many_series().state_dict(epoch=0, next_batch=5)
    dataset = StreamDataset(many_series())
    dataset.sampler.load_state_dict(sampler_state)
    options = {"num_workers": 2, "timeout": WORKER_TIMEOUT}
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, sampler=dataset.sampler, **options
    )
    served = list(loader)
    assert [(b.epoch, b.index) for b in served] == [(0, k) for k in range(5, N)]
    reference = at_epoch(many_series(), 0)
    for b in served:
        assert torch.equal(b.x, torch.from_numpy(reference[b.index].x))


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (
            {"epoch": 0},
            "`state_dict` must come from StreamSampler.state_dict(), with the keys "
            "epoch, next_batch. Received: ['epoch']",
        ),
        (
            {"epoch": 0, "next_batch": 3},
            "`state_dict['next_batch']` must be less than "
            "`num_batches`. Received: next_batch=3, num_batches=3",
        ),
        (
            {"epoch": -1, "next_batch": 0},
            "`state_dict['epoch']` must be a non-negative "
            "integer. Received: state_dict['epoch']=-1",
        ),
    ],
    ids=["keys", "past the end", "negative epoch"],
)
def test_a_bad_state_is_refused_by_a_sampler_of_its_own(
    state: dict[str, Any], message: str
) -> None:
    sampler = seqbatch.torch.StreamSampler(3)
    with pytest.raises(ValueError) as err:
        sampler.load_state_dict(state)
    assert str(err.value) == message
    assert list(sampler) == [(0, 0), (0, 1), (0, 2)]  # nothing changed
