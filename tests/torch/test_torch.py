"""seqbatch.torch: the DataLoader path and the helpers of a truncated-BPTT loop.

Data encodes its own position (``tests.encoded``), and every loader test compares what the
``DataLoader`` served, through real worker processes, with the batches that a batcher set to
the same epoch gives in this process. Shuffled batchers are checked over several epochs whose
layouts differ, so that a worker stuck on an old epoch cannot pass. The model test replays
the training through ``tests.replay``, a numpy LSTM that carries state row by row.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import socket
from collections import namedtuple
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

import seqbatch
from seqbatch.torch import (
    StreamDataset,
    StreamSampler,
    TensorBatch,
    detach,
    reset_rows,
    weighted_mean,
)
from tests.carried import (
    Served,
    assert_served,
    assert_served_epoch,
    assert_trained_states_replay,
    at_epoch,
    distinct_layouts,
    many_series,
)
from tests.encoded import check_epoch, encoded_series
from tests.replay import from_torch


@pytest.fixture(autouse=True)
def no_tensor_from_read_only_arrays(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail where a tensor would alias a read-only array (torch warns about it only once)."""
    from_numpy = torch.from_numpy

    def checked(array: np.ndarray) -> torch.Tensor:
        assert array.flags.writeable, "a tensor made from a read-only array"
        return from_numpy(array)

    monkeypatch.setattr(torch, "from_numpy", checked)


def fields_of(obj: Any) -> list[Any]:
    """The array fields of a batch, themselves (``dataclasses.astuple`` copies them).

    A TensorBatch has the fields of a numpy Batch, then its ``epoch`` and ``index``.
    """
    return [getattr(obj, f.name) for f in dataclasses.fields(seqbatch.Batch)]


def as_numpy(item: TensorBatch) -> seqbatch.Batch:
    """The numpy batch of a served item, after checking that it is a TensorBatch."""
    assert isinstance(item, TensorBatch)
    return seqbatch.Batch(
        *(None if t is None else t.numpy() for t in fields_of(item))  # type: ignore[arg-type]
    )


def served(items: list[TensorBatch]) -> list[seqbatch.Batch]:
    return [as_numpy(item) for item in items]


# --- The loader serves exactly the batches of every epoch ------------------------------------


@pytest.mark.parametrize(
    ("num_workers", "persistent"), [(0, False), (2, False), (2, True)], ids=str
)
def test_loader_serves_each_epoch_of_a_shuffled_batcher_in_order(
    num_workers: int, persistent: bool
) -> None:
    batches = many_series()
    epochs = range(4)
    # The layouts differ from epoch to epoch: a worker that kept epoch 0 would be caught.
    assert distinct_layouts(batches, epochs) == len(epochs)
    dataset = StreamDataset(batches)
    loader = DataLoader(
        dataset,
        batch_size=None,
        sampler=dataset.sampler,
        num_workers=num_workers,
        persistent_workers=persistent,
        timeout=120 if num_workers else 0,
    )
    for epoch in epochs:
        dataset.set_epoch(epoch)
        assert_served_epoch(served(list(loader)), at_epoch(batches, epoch))
    assert batches.epoch == 0  # the user's batcher is never changed


def test_loader_keeps_the_order_of_one_series_cut_into_streams() -> None:
    data = encoded_series(0, 400, (), "int64")
    batches = seqbatch.StreamBatcher(data, batch_size=4, sequence_length=6, shuffle=True, seed=2)
    epochs = (0, 1)
    assert at_epoch(batches, 0).plan.offset != at_epoch(batches, 1).plan.offset
    dataset = StreamDataset(batches)
    loader = DataLoader(dataset, batch_size=None, sampler=dataset.sampler, num_workers=2)
    for epoch in epochs:
        loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        reference = at_epoch(batches, epoch)
        items = served(list(loader))
        assert_served(items, reference)
        check_epoch(
            Served(reference, items),  # type: ignore[arg-type]
            [400],
            features=(),
            shift=1,
            target_arrays=False,
            concat=False,
        )


def test_spawned_workers_serve_the_same_batches() -> None:
    # Spawned workers get the dataset pickled, not forked: what macOS and Windows do.
    batches = many_series()
    dataset = StreamDataset(batches)
    loader = DataLoader(
        dataset,
        batch_size=None,
        sampler=dataset.sampler,
        num_workers=2,
        persistent_workers=True,
        multiprocessing_context="spawn",
        timeout=120,
    )
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        assert_served(served(list(loader)), at_epoch(batches, epoch))


def test_a_worker_copies_each_batch_into_one_block_of_shared_memory() -> None:
    batches = many_series()
    # In a worker, StreamDataset asks for shared=True: one block, one tensor view per field.
    views = seqbatch.StreamBatcher(np.arange(60.0), batch_size=2, sequence_length=5)
    TensorBatch.from_batch(views[0], shared=True)
    item = TensorBatch.from_batch(batches[1], shared=True)
    tensors = [t for t in fields_of(item) if t is not None]  # the step fields: packed only
    assert all(t.is_shared() for t in tensors)
    assert len({t.untyped_storage().data_ptr() for t in tensors}) == 1
    served, expected = fields_of(as_numpy(item)), fields_of(batches[1])
    for got, want in zip(served, expected, strict=True):
        if want is None:
            assert got is None
            continue
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    # In the training process, a batch made for itself is shared, not copied.
    assert not any(t.is_shared() for t in fields_of(StreamDataset(batches)[0, 1]) if t is not None)


def test_the_sampler_reads_the_epoch_when_a_pass_starts() -> None:
    sampler = StreamSampler(3, epoch=1)
    keys = iter(sampler)
    sampler.set_epoch(2)
    assert list(keys) == [(1, 0), (1, 1), (1, 2)]
    assert list(sampler) == [(2, 0), (2, 1), (2, 2)]
    assert len(sampler) == 3


def test_the_first_epoch_is_the_batchers() -> None:
    batches = many_series()
    batches.set_epoch(2)
    dataset = StreamDataset(batches)
    assert dataset.epoch == 2 and next(iter(dataset.sampler)) == (2, 0)
    assert_served(served([dataset[2, k] for k in range(len(dataset))]), at_epoch(batches, 2))


# --- Shuffling samplers and batching are refused --------------------------------------------


@pytest.mark.parametrize(
    "make_loader",
    [
        lambda d: DataLoader(d, batch_size=None, shuffle=True),
        # In a worker too. (torch then takes 5 s per worker to shut down: one worker here.)
        lambda d: DataLoader(d, batch_size=None, shuffle=True, num_workers=1),
        lambda d: DataLoader(d, batch_size=None, sampler=RandomSampler(d)),
        lambda d: DataLoader(d, batch_size=None, sampler=DistributedSampler(d, 2, 0)),
        lambda d: DataLoader(d, batch_size=None),
    ],
    ids=["shuffle=True", "in a worker", "RandomSampler", "DistributedSampler", "default sampler"],
)
def test_a_loader_without_the_stream_sampler_is_refused_at_the_first_batch(
    make_loader: Any,
) -> None:
    loader = make_loader(StreamDataset(many_series()))
    with pytest.raises(TypeError, match=r"`key` must be a pair \(epoch, k\).*shuffle=True"):
        next(iter(loader))


def test_batching_the_batches_is_refused_by_torch() -> None:
    dataset = StreamDataset(many_series())
    loader = DataLoader(dataset, batch_size=2, sampler=dataset.sampler)
    with pytest.raises(TypeError, match="TensorBatch"):
        next(iter(loader))


# --- Tensors: writable, never aliasing the data, without warnings ----------------------------


@pytest.mark.parametrize(
    "batches",
    [
        # One in-memory series: numpy batches are read-only views of the data.
        seqbatch.StreamBatcher(np.arange(60.0), batch_size=2, sequence_length=5),
        # Many series: numpy batches are new arrays.
        many_series(shuffle=False),
        seqbatch.StreamBatcher(
            np.arange(60.0), batch_size=2, sequence_length=5, return_sequences=False
        ),
        seqbatch.StreamBatcher(np.arange(60.0), None, batch_size=2, sequence_length=5),
    ],
    ids=["views", "copies", "last step", "no targets"],
)
def test_tensors_are_writable_and_writing_them_changes_nothing_else(
    batches: seqbatch.StreamBatcher,
) -> None:
    before = [copy.deepcopy(b) for b in batches]
    dataset = StreamDataset(batches)
    items = [dataset[0, k] for k in range(len(dataset))]
    for item in items:
        for field in dataclasses.fields(seqbatch.Batch):
            tensor = getattr(item, field.name)
            if tensor is not None:
                tensor.fill_(True if tensor.dtype == torch.bool else 99)
    for k, b in enumerate(batches):
        for field in dataclasses.fields(seqbatch.Batch):
            want = getattr(before[k], field.name)
            if want is not None:
                np.testing.assert_array_equal(getattr(b, field.name), want)
    assert_served(served([dataset[0, k] for k in range(len(dataset))]), batches)
    assert items[0].y is None if batches.target_shape is None else items[0].y is not None


def test_to_and_pin_memory_move_every_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    item = StreamDataset(
        seqbatch.StreamBatcher(np.arange(60.0), None, batch_size=2, sequence_length=5)
    )[0, 1]
    moved = item.to("cpu", non_blocking=True)
    for field in dataclasses.fields(seqbatch.Batch):
        got, want = getattr(moved, field.name), getattr(item, field.name)
        assert got is None if want is None else torch.equal(got, want)
    assert (moved.epoch, moved.index) == (0, 1)
    # Pinning needs an accelerator; what DataLoader(pin_memory=True) calls is checked here.
    pinned: list[torch.Tensor] = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t: pinned.append(t) or t + 0)
    out = torch.utils.data._utils.pin_memory.pin_memory(item)
    assert isinstance(out, TensorBatch) and out.y is None
    # x, sample_weight, reset, series, position and lr_scale
    assert len(pinned) == 6 and torch.equal(out.x, item.x)
    assert (out.epoch, out.index) == (0, 1)


# --- Sharding by rank ------------------------------------------------------------------------


def test_each_rank_serves_its_own_streams_and_as_many_batches() -> None:
    batches = many_series()
    world = 2
    for epoch in (0, 1):
        rows = []
        for rank in range(world):
            dataset = StreamDataset(batches, rank=rank, world_size=world)
            dataset.set_epoch(epoch)
            loader = DataLoader(dataset, batch_size=None, sampler=dataset.sampler, num_workers=2)
            items = served(list(loader))
            assert len(items) == len(batches)
            assert_served(items, at_epoch(batches.shard(rank, world), epoch))
            rows.append(np.stack([item.x for item in items]))
        # The ranks together hold every stream of the global batch, each once.
        full = np.stack([b.x for b in at_epoch(batches, epoch)])
        np.testing.assert_array_equal(np.concatenate(rows, axis=1), full)


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        dataset = StreamDataset(many_series())
        xs = [dataset[0, k].x.numpy() for k in range(len(dataset))]
        np.save(Path(out) / f"rank{rank}.npy", np.stack(xs))
    finally:
        torch.distributed.destroy_process_group()


def test_ranks_come_from_torch_distributed_when_it_is_initialized(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_rank_main, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    batches = many_series()
    for rank in range(2):
        expected = np.stack([b.x for b in batches.shard(rank, 2)])
        np.testing.assert_array_equal(np.load(tmp_path / f"rank{rank}.npy"), expected)


def test_without_torch_distributed_one_rank_serves_every_stream() -> None:
    assert not torch.distributed.is_initialized()
    dataset = StreamDataset(many_series())
    assert (dataset.rank, dataset.world_size, dataset.batches.batch_size) == (0, 1, 4)


# --- Errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"rank": 0}, ValueError, "`rank` and `world_size` must be given together"),
        ({"world_size": 2}, ValueError, "`rank` and `world_size` must be given together"),
        ({"rank": 2, "world_size": 2}, ValueError, "`rank` must be less than `world_size`"),
        ({"rank": 0, "world_size": 3}, ValueError, "`world_size` must divide the batch size"),
        ({"rank": -1, "world_size": 2}, ValueError, "`rank` must be a non-negative integer"),
        ({"rank": 0, "world_size": 0}, ValueError, "`world_size` must be a positive integer"),
    ],
)
def test_dataset_checks_the_ranks(kwargs: dict[str, int], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        StreamDataset(many_series(), **kwargs)


def test_dataset_checks_its_batcher() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape(
            "`batches` must be a seqbatch.StreamBatcher. Received: batches of type list"
        ),
    ):
        StreamDataset([1, 2, 3])  # type: ignore[arg-type]
    odd = seqbatch.StreamBatcher(np.zeros(40, np.longdouble), batch_size=2, sequence_length=4)
    with pytest.raises(
        TypeError,
        match=re.escape(
            "`batches` must hold x of a dtype torch has. Received: x of dtype float128"
        ),
    ):
        StreamDataset(odd)


def test_dataset_checks_its_keys() -> None:
    dataset = StreamDataset(many_series())
    for key in [3, (0,), (0, 1, 2), (0.0, 1), (True, 1), "0, 1"]:
        with pytest.raises(TypeError, match=r"`key` must be a pair \(epoch, k\)"):
            dataset[key]  # type: ignore[index]
    with pytest.raises(ValueError, match="`epoch` must be a non-negative integer"):
        dataset[-1, 0]
    with pytest.raises(IndexError, match="batch index out of range"):
        dataset[0, len(dataset)]
    with pytest.raises(ValueError, match="`epoch` must be a non-negative integer"):
        dataset.set_epoch(-2)


# --- State helpers ---------------------------------------------------------------------------


def test_reset_rows_zeroes_the_flagged_streams_of_an_lstm_state() -> None:
    lstm = torch.nn.LSTM(2, 3, num_layers=2, batch_first=True)
    _, (h, c) = lstm(torch.randn(4, 5, 2))
    assert h.shape == (2, 4, 3)  # (layers, B, H), whatever batch_first says
    flags = torch.tensor([False, True, False, True])
    h2, c2 = reset_rows((h, c), flags, dim=1)
    for new, old in ((h2, h), (c2, c)):
        assert not new[:, flags].any()
        assert torch.equal(new[:, ~flags], old[:, ~flags]) and old[:, flags].abs().min() > 0
    # Out of place, so autograd flows into the kept rows and stops at the reset ones.
    (h2.sum() + c2.sum()).backward()
    grad = lstm.weight_hh_l0.grad
    assert grad is not None and grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("state", "dim"),
    [
        (torch.ones(4, 3), 0),
        (torch.ones(3, 4), -1),
        ([torch.ones(4, 3), (torch.ones(4, 2), None)], 0),
        (namedtuple("Carry", "h c")(torch.ones(4, 3), torch.ones(4, 3)), 0),
    ],
    ids=["(B, H)", "negative dim", "nested", "namedtuple"],
)
def test_reset_rows_keeps_the_structure(state: Any, dim: int) -> None:
    flags = np.array([True, False, False, True])
    out = reset_rows(state, flags, dim=dim)
    assert type(out) is type(state)
    leaves_in = torch.utils._pytree.tree_leaves(state)
    leaves_out = torch.utils._pytree.tree_leaves(out)
    assert [t is None for t in leaves_in] == [t is None for t in leaves_out]
    for t in (t for t in leaves_out if t is not None):
        rows = t.movedim(dim, 0)
        assert rows[[1, 2]].eq(1).all() and rows[[0, 3]].eq(0).all()
    assert reset_rows(None, flags, dim=1) is None


def test_reset_rows_checks_its_arguments() -> None:
    h = torch.ones(1, 4, 3)
    flags = torch.zeros(4, dtype=torch.bool)
    with pytest.raises(
        ValueError,
        match=r"`reset` must hold one bool flag per stream, shape "
        r"\(B,\). Received: reset of dtype torch.float32 and shape \(4,\)",
    ):
        reset_rows(h, torch.zeros(4), dim=1)
    with pytest.raises(
        ValueError,
        match=r"`state` must have one row per stream along dim=0. "
        r"Received: a state of shape \(1, 4, 3\) and 4 reset flags",
    ):
        reset_rows(h, flags, dim=0)
    with pytest.raises(
        ValueError,
        match=r"`dim` must be an axis of every state tensor. "
        r"Received: dim=3 for a state of shape \(1, 4, 3\)",
    ):
        reset_rows(h, flags, dim=3)
    with pytest.raises(
        TypeError,
        match=re.escape(
            "`state` must be a tensor, None, or a tuple or list of them. Received: state of type dict"
        ),
    ):
        reset_rows({"h": h}, flags, dim=1)


def test_detach_cuts_every_tensor_from_the_graph() -> None:
    w = torch.ones(3, requires_grad=True)
    state = (w * 2, [w * 3, None])
    out = detach(state)
    assert not out[0].requires_grad and not out[1][0].requires_grad and out[1][1] is None
    assert torch.equal(out[1][0], torch.full((3,), 3.0))


def test_weighted_mean_counts_real_steps_only() -> None:
    loss = torch.tensor([[1.0, 2.0, float("inf")], [4.0, float("nan"), 0.0]], requires_grad=True)
    w = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    mean = weighted_mean(loss, w)
    assert mean.item() == pytest.approx(7 / 3)
    mean.backward()
    assert loss.grad is not None
    np.testing.assert_allclose(loss.grad.numpy(), w.numpy() / 3)
    assert weighted_mean(loss.detach(), torch.zeros(2, 3)).item() == 0.0
    with pytest.raises(
        ValueError,
        match=r"`values` must have the shape of `sample_weight`, one "
        r"value per step: reduce other axes first. Received: values of shape "
        r"\(2, 3, 1\) and sample_weight of shape \(2, 3\)",
    ):
        weighted_mean(torch.ones(2, 3, 1), w)


# --- Proof: an nn.LSTM trained through two workers carries each row's state -----------------


def test_an_lstm_trained_through_two_workers_carries_each_rows_state() -> None:
    torch.manual_seed(0)
    batches = many_series()
    data_scale = 1e-4  # the codes are in the thousands: keep the gates out of saturation
    lstm = torch.nn.LSTM(2, 3, batch_first=True)
    head = torch.nn.Linear(3, 2)
    parameters = [*lstm.parameters(), *head.parameters()]
    dataset = StreamDataset(batches)
    loader = DataLoader(
        dataset,
        batch_size=None,
        sampler=dataset.sampler,
        num_workers=2,
        persistent_workers=True,
        timeout=120,
    )
    weights, states, expected = [], [], []
    state = None
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for b in loader:
            state = reset_rows(state, b.reset, dim=1)
            weights.append(from_torch(*(p.detach().numpy().copy() for p in lstm.parameters())))
            out, state = lstm(b.x * data_scale, state)
            loss = weighted_mean(((head(out) - b.y * data_scale) ** 2).mean(-1), b.sample_weight)
            loss.backward()
            # Plain SGD by hand: torch.optim imports triton, which crashes a process that
            # imported TensorFlow first (TF 2.21, torch 2.14), as the whole test suite does.
            with torch.no_grad():
                for p in parameters:
                    assert p.grad is not None
                    p -= 0.5 * p.grad
                    p.grad = None
            state = detach(state)
            states.append(state[0][0].numpy().copy())
        expected += [dataclasses.replace(b, x=b.x * data_scale) for b in at_epoch(batches, epoch)]
    assert len(states) == 3 * len(batches)
    assert_trained_states_replay(states, weights, expected)
