"""The batcher's own state: a loop stopped anywhere goes on with the batches it would have read.

Each property test stops a loop over a drawn dataset at a drawn batch, takes
``state_dict()`` through JSON into a second batcher built on the same data (with another
seed: the saved one must win), and compares what the second one yields with the rest of
the first one's epoch. Restoring into a batcher of other data or arguments must fail,
naming what differs.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

import seqbatch
from tests.encoded import encoded_series
from tests.lazy import CountingSource
from tests.strategies import Case, cases

FIELDS = ("x", "y", "sample_weight", "reset", "series", "position")


def same(a: seqbatch.Batch, b: seqbatch.Batch) -> bool:
    return all(
        (getattr(a, f) is None and getattr(b, f) is None)
        or np.array_equal(getattr(a, f), getattr(b, f))
        for f in FIELDS
    )


def through_json(state: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(state))
    return loaded


@given(cases(fill=True), st.data())
def test_a_loop_resumed_from_its_state_reads_the_rest_of_the_epoch(
    case: Case, data: st.DataObject
) -> None:
    first = case.build()
    first.set_epoch(case.epoch)
    n = len(first)
    stop = data.draw(st.integers(0, n - 1), label="stop after batch")
    expected = [first[k] for k in range(n)]
    for k, b in enumerate(first):
        assert same(b, expected[k])
        if k == stop:
            state = through_json(first.state_dict())
            break
    note(repr(state))
    if stop == n - 1:
        assert (state["epoch"], state["next_batch"]) == (case.epoch + 1, 0)
    else:
        assert (state["epoch"], state["next_batch"]) == (case.epoch, stop + 1)
    case.seed = (case.seed + 1) % 2**32  # built with another seed: the saved one is taken
    second = case.build()
    second.load_state_dict(state)
    assert second.seed == first.seed and second.epoch == state["epoch"]
    second.set_epoch(state["epoch"])  # what a loop does first: keeps the saved position
    rest = list(second)
    if stop < n - 1:
        assert len(rest) == n - stop - 1
        assert all(same(a, b) for a, b in zip(rest, expected[stop + 1 :], strict=True))
    else:
        first.set_epoch(case.epoch + 1)
        assert all(same(a, b) for a, b in zip(rest, first, strict=True))
    # The restored position serves one pass: the next starts at batch 0.
    assert len(list(second)) == len(second)


def test_the_position_is_counted_as_batches_are_handed_over() -> None:
    batches = seqbatch.StreamBatcher(np.arange(40), batch_size=2, sequence_length=4)
    assert (batches.state_dict()["epoch"], batches.state_dict()["next_batch"]) == (0, 0)
    it = iter(batches)
    next(it)
    assert batches.state_dict()["next_batch"] == 1
    next(it)
    assert batches.state_dict()["next_batch"] == 2
    # A new pass starts at batch 0 again; a pass run to its end points at the next epoch.
    assert len(list(batches)) == len(batches) == 4
    assert (batches.state_dict()["epoch"], batches.state_dict()["next_batch"]) == (1, 0)
    batches.set_epoch(1)
    assert batches.state_dict()["next_batch"] == 0
    # An explicit position, for loops that read through an adapter.
    assert batches.state_dict(epoch=7, next_batch=2)["epoch"] == 7
    assert batches.state_dict(epoch=7, next_batch=4)["epoch"] == 8


def test_the_epoch_counts_without_shuffle_too() -> None:
    batches = seqbatch.StreamBatcher(np.arange(40), batch_size=2, sequence_length=4)
    batches.set_epoch(3)
    assert batches.epoch == 3 and batches.plan.epoch == 0
    assert batches.state_dict()["epoch"] == 3
    assert repr(batches).endswith("epoch 3)")


def test_set_epoch_keeps_a_restored_position_only_for_its_epoch() -> None:
    make = lambda: seqbatch.StreamBatcher(  # noqa: E731
        np.arange(80), batch_size=2, sequence_length=4, shuffle=True, seed=5
    )
    saved = make().state_dict(epoch=2, next_batch=3)
    batches = make()
    batches.load_state_dict(saved)
    assert batches.resume_batch == 3
    batches.set_epoch(2)
    assert batches.resume_batch == 3
    batches.set_epoch(4)
    assert batches.resume_batch == 0
    batches.load_state_dict(saved)
    resumed = [b.position[0] for b in batches]
    assert resumed == [batches[k].position[0] for k in range(3, len(batches))]
    assert batches.resume_batch == 0


def restored(m: int, **kwargs: Any) -> seqbatch.StreamBatcher:
    """A batcher of 80 steps (9 batches of 2 streams x 4 steps) restored at batch ``m``."""
    make = lambda: seqbatch.StreamBatcher(  # noqa: E731
        encoded_series(0, 80, (), "int64"), batch_size=2, sequence_length=4, **kwargs
    )
    batches = make()
    batches.load_state_dict(through_json(make().state_dict(next_batch=m)))
    return batches


def firsts(batches: Any) -> list[int]:
    """The first step of stream 0 in each batch of a pass: batch k starts at step 4 * k."""
    return [int(b.position[0]) for b in batches]


def test_a_peek_at_a_restored_batcher_keeps_its_position() -> None:
    batches = restored(6)
    peeked = next(iter(batches))
    assert int(peeked.position[0]) == 24
    assert batches.resume_batch == 6
    # A loop that breaks keeps it too: passes start at the saved batch until one ends.
    for _ in batches:
        break
    assert batches.resume_batch == 6
    assert firsts(batches) == [24, 28, 32]
    assert batches.resume_batch == 0
    assert firsts(batches) == [4 * k for k in range(9)]


def test_the_position_holds_until_a_pass_hands_over_the_last_batch() -> None:
    batches = restored(6, shuffle=True, seed=3)
    it = iter(batches)
    next(it), next(it)
    assert batches.resume_batch == 6  # batches 6 and 7 handed over, not the last one
    assert batches.state_dict()["next_batch"] == 8  # where that pass stands
    next(it)
    assert batches.resume_batch == 0
    assert (batches.state_dict()["epoch"], batches.state_dict()["next_batch"]) == (1, 0)
    batches.set_epoch(0)
    assert len(list(batches)) == 9


@given(cases(fill=True), st.data())
def test_passes_left_early_start_again_at_the_restored_batch(
    case: Case, data: st.DataObject
) -> None:
    first = case.build()
    first.set_epoch(case.epoch)
    n = len(first)
    expected = [first[k] for k in range(n)]
    m = data.draw(st.integers(0, n - 1), label="restored at")
    second = case.build()
    second.load_state_dict(first.state_dict(next_batch=m))
    for _ in range(data.draw(st.integers(0, 3), label="passes left early")):
        taken = data.draw(st.integers(0, n - m - 1), label="batches taken")
        it = iter(second)
        for k in range(taken):
            assert same(next(it), expected[m + k])
        assert second.resume_batch == m
    rest = list(second)
    assert len(rest) == n - m
    assert all(same(a, b) for a, b in zip(rest, expected[m:], strict=True))
    assert second.resume_batch == 0 and len(list(second)) == n


def test_the_torch_sampler_and_the_batcher_keep_a_position_alike() -> None:
    pytest.importorskip("torch", reason="the torch adapter needs torch")
    from seqbatch.torch import StreamDataset

    batches = restored(6)
    next(iter(batches))  # a peek, before the loader is built
    dataset = StreamDataset(batches)
    sampler = dataset.sampler
    assert next(iter(sampler)) == (0, 6)  # the sampler's own peek keeps its position too
    assert [int(dataset[key].position[0]) for key in sampler] == firsts(batches) == [24, 28, 32]
    assert len(list(sampler)) == len(firsts(batches)) == 9  # the next passes are whole


def test_a_jax_source_built_after_a_peek_starts_at_the_restored_batch() -> None:
    pytest.importorskip("jax", reason="the JAX adapter needs JAX")
    from seqbatch.jax import StreamSource

    batches = restored(6)
    next(iter(batches))
    source = StreamSource(batches, epochs=2)
    assert len(source) == 18 - 6
    assert [int(source[i]["position"][0]) for i in range(4)] == [24, 28, 32, 0]
    assert [int(source[i]["batch"]) for i in range(4)] == [6, 7, 8, 0]


def table_of_changes() -> list[tuple[str, dict[str, Any], str]]:
    """(what, arguments that differ from the base, the fingerprint key named)."""
    return [
        ("a longer series", {"data": np.arange(121.0)}, "lengths"),
        ("another dtype", {"data": np.arange(120.0, dtype=np.float32)}, "x"),
        ("features", {"data": np.arange(240.0).reshape(120, 2)}, "x"),
        ("other values at the end", {"data": np.r_[np.arange(119.0), -1.0]}, "data"),
        ("targets two steps ahead", {"targets": 2}, "targets"),
        ("target arrays", {"targets": -np.arange(120.0)}, "target_arrays"),
        ("batch_size", {"batch_size": 3}, "batch_size"),
        ("sequence_length", {"sequence_length": 5}, "sequence_length"),
        ("return_sequences", {"return_sequences": False}, "return_sequences"),
        ("remainder", {"remainder": "pad"}, "remainder"),
        ("align", {"align": "end"}, "align"),
        ("shuffle", {"shuffle": False}, "shuffle"),
    ]


def base(**changes: Any) -> seqbatch.StreamBatcher:
    kwargs: dict[str, Any] = dict(
        data=np.arange(120.0),
        targets="next",
        batch_size=2,
        sequence_length=4,
        shuffle=True,
        seed=0,
    )
    kwargs.update(changes)
    return seqbatch.StreamBatcher(kwargs.pop("data"), kwargs.pop("targets"), **kwargs)


@pytest.mark.parametrize(("what", "changes", "key"), table_of_changes())
def test_a_state_of_other_data_or_arguments_is_refused(
    what: str, changes: dict[str, Any], key: str
) -> None:
    saved = base().state_dict()
    with pytest.raises(ValueError, match=rf"differs in .*\b{key}: saved"):
        base(**changes).load_state_dict(saved)


def test_the_refusal_names_every_difference() -> None:
    saved = base().state_dict()
    with pytest.raises(ValueError) as err:
        base(sequence_length=5, batch_size=3).load_state_dict(saved)
    assert str(err.value) == (
        "`state` must come from a batcher of the same data and arguments: restored here, its "
        "position would name other batches, and the streams would no longer line up. "
        "Received: a state that differs in batch_size: saved 2, here 3; streams: saved "
        "'[0, 2)', here '[0, 3)'; sequence_length: saved 4, here 5"
    )


def test_shards_and_series_are_fingerprinted() -> None:
    series = [encoded_series(s, 30 + s, (), "float32") for s in range(6)]
    whole = seqbatch.StreamBatcher(series, batch_size=4, sequence_length=3)
    with pytest.raises(ValueError, match=r"differs in streams: saved '\[0, 2\)', here '\[2, 4\)'"):
        whole.shard(1, 2).load_state_dict(whole.shard(0, 2).state_dict())
    other = seqbatch.StreamBatcher(series[::-1], batch_size=4, sequence_length=3)
    with pytest.raises(ValueError, match=r"differs in lengths: saved"):
        other.load_state_dict(whole.state_dict())
    joined = seqbatch.StreamBatcher(
        series, batch_size=4, sequence_length=3, series_boundary="concat"
    )
    regrouped = seqbatch.StreamBatcher(
        [np.concatenate(series[:2]), *series[2:]],
        batch_size=4,
        sequence_length=3,
        series_boundary="concat",
    )
    with pytest.raises(ValueError, match=r"differs in series: saved 6, here 5; lengths"):
        regrouped.load_state_dict(joined.state_dict())


def sampled(total: int) -> list[int]:
    """The steps the fingerprint reads, as its documentation says: ``i * (T - 1) // 63``."""
    return sorted({i * (total - 1) // 63 for i in range(64)})


@pytest.mark.parametrize("split", [None, 3000])
def test_a_change_in_the_middle_of_the_data_is_caught_at_a_sampled_step(split: int | None) -> None:
    data = encoded_series(0, 6301, (2,), "float32")  # sampled: steps 0, 100, ..., 6300

    def batcher(values: np.ndarray) -> seqbatch.StreamBatcher:
        series = values if split is None else [values[:split], values[split:]]
        return seqbatch.StreamBatcher(series, -values if split is None else None, batch_size=2)

    assert sampled(6301) == list(range(0, 6301, 100))
    saved = batcher(data).state_dict()
    changed = data.copy()
    changed[3100, 1] += 1  # a sampled step, in the middle (series 1, step 100, when split)
    with pytest.raises(ValueError, match=r"differs in data: saved '\w+', here '\w+'$"):
        batcher(changed).load_state_dict(saved)
    # What it does not catch: a change between the sampled steps, lengths unchanged.
    between = data.copy()
    between[3150] = 0
    batcher(between).load_state_dict(saved)


def test_a_change_in_the_middle_of_target_arrays_is_caught() -> None:
    data = encoded_series(0, 6301, (), "float32")
    targets = -data
    saved = seqbatch.StreamBatcher(data, targets, batch_size=2).state_dict()
    targets[6300 // 63 * 20] += 1
    with pytest.raises(ValueError, match=r"differs in data: saved"):
        seqbatch.StreamBatcher(data, targets, batch_size=2).load_state_dict(saved)


def test_the_fingerprint_of_a_1_gb_memmap_reads_only_the_sampled_steps(tmp_path: Any) -> None:
    steps = 2**28  # float32: 1 GiB, a sparse file that is never written
    path = tmp_path / "big.npy"
    np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(steps,)).flush()
    source = CountingSource(np.load(path, mmap_mode="r"))
    batches = seqbatch.StreamBatcher(source, batch_size=64, sequence_length=100)
    assert source.reads == []
    state = batches.state_dict()
    assert source.reads == [(t, t + 1) for t in sampled(steps)]
    source.reads.clear()
    batches.load_state_dict(state)
    assert source.reads == [(t, t + 1) for t in sampled(steps)]


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (
            [0, 1],
            r"`state` must be a dict from StreamBatcher.state_dict\(\), with the keys epoch, "
            r"next_batch, seed, fingerprint. Received: state with list",
        ),
        (
            {"epoch": 0},
            r"`state` must be a dict .* Received: state with \['epoch'\]",
        ),
        (
            "next_batch",
            r"`state\['next_batch'\]` must be less than the number of batches per epoch. "
            r"Received: state\['next_batch'\]=14 for 14 batches",
        ),
        (
            "epoch",
            r"`state\['epoch'\]` must be a non-negative integer. Received: state\['epoch'\]=-1",
        ),
    ],
)
def test_a_malformed_state_is_refused(state: Any, message: str) -> None:
    batches = base()
    if state == "next_batch":
        state = {**batches.state_dict(), "next_batch": len(batches)}
    elif state == "epoch":
        state = {**batches.state_dict(), "epoch": -1}
    with pytest.raises(ValueError, match=message):
        batches.load_state_dict(state)


def test_a_torch_loader_resumes_from_a_restored_batcher() -> None:
    torch = pytest.importorskip("torch", reason="the torch adapter needs torch")
    from seqbatch.torch import StreamDataset

    def batcher() -> seqbatch.StreamBatcher:
        return seqbatch.StreamBatcher(
            encoded_series(0, 200, (), "float32"),
            batch_size=4,
            sequence_length=5,
            shuffle=True,
            seed=None,
        )

    first = batcher()
    dataset = StreamDataset(first)
    dataset.set_epoch(1)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, sampler=dataset.sampler)
    seen = [b.x.numpy().copy() for b in loader]
    saved = through_json(first.state_dict(epoch=1, next_batch=4))
    restored = batcher()
    restored.load_state_dict(saved)
    dataset = StreamDataset(restored, rank=1, world_size=2)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, sampler=dataset.sampler, num_workers=1
    )
    assert len(loader) == len(seen) - 4
    rest = [b.x.numpy() for b in loader]
    assert all(np.array_equal(a, b[2:]) for a, b in zip(rest, seen[4:], strict=True))
    dataset.set_epoch(1)
    assert len(list(loader)) == len(seen)  # the next pass is whole


def test_a_jax_source_resumes_from_a_restored_batcher() -> None:
    pytest.importorskip("jax", reason="the JAX adapter needs JAX")
    from seqbatch.jax import StreamSource

    series = [encoded_series(s, 20 + 3 * s, (), "float32") for s in range(7)]

    def batcher() -> seqbatch.StreamBatcher:
        return seqbatch.StreamBatcher(series, batch_size=3, sequence_length=4, shuffle=True)

    first = batcher()
    first.set_epoch(2)
    source = StreamSource(first, epochs=2)
    n = source.batches_per_epoch
    record = source[n - 2]  # the last-but-one batch of epoch 2
    saved = first.state_dict(epoch=int(record["epoch"]), next_batch=int(record["batch"]) + 1)
    restored = batcher()
    restored.load_state_dict(through_json(saved))
    resumed = StreamSource(restored, epochs=2)
    assert len(resumed) == len(source) - (n - 1)
    records = list(resumed.in_order(resumed[i] for i in range(len(resumed))))
    for i, r in enumerate(records):
        expected = source[n - 1 + i]
        assert (r["epoch"], r["batch"]) == (expected["epoch"], expected["batch"])
        assert np.array_equal(r["x"], expected["x"])


def test_a_tf_dataset_of_files_reads_a_restored_seed(tmp_path: Any) -> None:
    pytest.importorskip("tensorflow", reason="the tf.data adapter needs TensorFlow")
    path = tmp_path / "series.npy"
    np.save(path, encoded_series(0, 300, (2,), "float32"))

    def batcher(seed: int) -> seqbatch.StreamBatcher:
        return seqbatch.StreamBatcher(
            str(path), batch_size=4, sequence_length=5, shuffle=True, seed=seed
        )

    batches = batcher(seed=1)
    dataset = batches.to_tf_dataset()
    next(iter(dataset))  # a first pass (Keras's probe, say) reads epoch 0 with seed 1
    batches.load_state_dict(batcher(seed=2).state_dict())
    dataset.seqbatch_epochs.next = 0  # as StatefulTraining sets it for epoch 0
    x = next(iter(dataset))[0].numpy()
    assert np.array_equal(x, batcher(seed=2)[0].x)
