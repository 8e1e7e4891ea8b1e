"""Packed batches through the adapters: tf.data, the Keras sequence, torch and JAX loops.

The elements of ``to_dataset`` and the items of ``StreamSequence`` must equal the numpy packed
batches, with the per-step flags ``step_reset`` as the model's reset input, on value-encoded
data (``tests.encoded``), in memory (read in the graph), lazy and in ``.npy`` files (read by
numpy), sharded, per replica and over shuffled epochs. The loops that a user writes for torch
and JAX (docs/guides/packing.md) are replayed through ``tests.replay``, a numpy LSTM that
zeroes each row's state at its flagged steps. The Keras models trained on packed batches are
in ``tests/keras/test_pack_keras.py``, on every backend.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import assume, given, note, settings
from hypothesis import strategies as st

import seqbatch
from seqbatch.keras import StreamSequence
from seqbatch.plan import StreamPlan
from seqbatch.tf import to_dataset
from seqbatch.view import EpochView
from tests.doc_blocks import blocks
from tests.encoded import encoded_series
from tests.lazy import SliceOnly
from tests.replay import from_keras, from_torch, lstm_replay
from tests.strategies import PackCase, packed_cases
from tests.tf_checks import assert_static_spec, assert_yields, rows_of
from tests.weights import element_weight, real_step_weight

ROOT = pathlib.Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guides" / "packing.md"

HIDDEN = (
    "`reset_input` must be True for packed batches whose streams hold several series: "
    "without the per-step flags, the model would start every series from the state that the "
    "series before it in the stream ended with. Received: reset_input=False for "
    "series_boundary='pack' (pass reset_input=True and wrap the RNN in "
    "seqbatch.keras.StreamReset, which resets at the flagged steps)"
)


def expected_element(
    b: seqbatch.Batch, *, reset_input: bool, sample_weight: bool, step_weight: float
) -> tuple:
    """The element a packed batch must give: the per-step flags as the reset input."""
    assert b.step_reset is not None
    inputs = (b.x, b.step_reset.astype(np.float32)) if reset_input else b.x
    if b.y is None:
        return (inputs,)
    return (inputs, b.y, element_weight(b, step_weight)) if sample_weight else (inputs, b.y)


def elements(batches: Any, whole: Any, **flags: bool) -> list[tuple]:
    """The elements of ``batches``, a shard of ``whole`` (weights count every stream)."""
    step_weight = real_step_weight(whole)
    return [expected_element(b, **flags, step_weight=step_weight) for b in batches]


def starts_a_series_mid_stream(batches: seqbatch.StreamBatcher) -> bool:
    """Whether some stream holds a second series: a flag after its first step, read from the
    batches themselves."""
    return any(
        b.step_reset is not None and (b.step_reset[:, 1:].any() or (k > 0 and b.step_reset.any()))
        for k, b in enumerate(batches)
    )


def build(case: PackCase, source: str, directory: pathlib.Path) -> seqbatch.StreamBatcher:
    """The packed batcher of ``case`` at its epoch, its series in memory or in ``.npy`` files."""
    if source == "npy":
        case = dataclasses.replace(case, lazy=False)
    data, targets = case.data(), case.target_arg()
    if source == "npy":

        def saved(arrays: Any, name: str) -> Any:
            if case.single:
                arrays = [arrays]
            paths = [directory / f"{name}{i}.npy" for i in range(len(arrays))]
            for path, a in zip(paths, arrays, strict=True):
                np.save(path, a)
            return paths[0] if case.single else paths

        data = saved(data, "x")
        if case.targets == "arrays":
            targets = saved(targets, "y")
    batches = seqbatch.StreamBatcher(
        data,
        targets,
        batch_size=case.batch_size,
        sequence_length=case.sequence_length,
        return_sequences=case.return_sequences,
        remainder=case.remainder,  # type: ignore[arg-type]
        series_boundary="pack",
        shuffle=case.shuffle,
        seed=case.seed,
    )
    batches.set_epoch(case.epoch)
    return batches


# --- tf.data: the elements are the numpy packed batches ----------------------------------------


@settings(max_examples=40)
@given(packed_cases(), st.sampled_from(["memory", "npy"]), st.data(), st.booleans(), st.booleans())
def test_packed_dataset_equals_numpy_batches(
    tmp_path_factory: pytest.TempPathFactory,
    case: PackCase,
    source: str,
    data: st.DataObject,
    reset_input: bool,
    sample_weight: bool,
) -> None:
    note(repr(case))
    assume(case.fillable())
    batches = build(case, source, tmp_path_factory.mktemp("npy"))
    count = data.draw(st.sampled_from([c for c in (1, 2, 3) if case.batch_size % c == 0]))
    shard = batches.shard(data.draw(st.integers(0, count - 1)), count)
    if not reset_input and starts_a_series_mid_stream(batches):
        with pytest.raises(ValueError) as err:
            to_dataset(shard, reset_input=False)
        assert str(err.value) == HIDDEN
        return
    flags = {"reset_input": reset_input, "sample_weight": sample_weight}
    expected = elements(shard, batches, **flags)
    ds = to_dataset(shard, **flags)
    assert_static_spec(ds, expected[0])
    assert ds.cardinality() == len(shard)
    assert_yields(ds, expected)


@settings(max_examples=25)
@given(
    packed_cases(),
    st.sampled_from(["memory", "npy"]),
    st.sampled_from([(1, 2), (2, 1), (2, 2)]),
    st.integers(1, 2),
    st.data(),
)
def test_packed_input_pipeline_yields_its_replicas_batches_in_batch_replica_order(
    tmp_path_factory: pytest.TempPathFactory,
    case: PackCase,
    source: str,
    pipelines_and_replicas: tuple[int, int],
    per_replica: int,
    data: st.DataObject,
) -> None:
    pipelines, replicas = pipelines_and_replicas
    case = dataclasses.replace(case, batch_size=pipelines * replicas * per_replica)
    note(repr(case))
    assume(case.fillable())
    batches = build(case, source, tmp_path_factory.mktemp("npy"))
    pipeline = data.draw(st.integers(0, pipelines - 1))
    context = tf.distribute.InputContext(pipelines, pipeline, pipelines * replicas)
    ds = to_dataset(batches, reset_input=True, input_context=context)
    blocks_ = [
        slice(g * per_replica, (g + 1) * per_replica)
        for g in range(pipeline * replicas, (pipeline + 1) * replicas)
    ]
    step_weight = real_step_weight(batches)
    expected = [
        expected_element(
            rows_of(b, rows), reset_input=True, sample_weight=True, step_weight=step_weight
        )
        for b in batches
        for rows in blocks_
    ]
    assert_static_spec(ds, expected[0])
    assert ds.cardinality() == len(batches) * replicas
    assert_yields(ds, expected)


def shuffled_packed(data: Any) -> seqbatch.StreamBatcher:
    return seqbatch.StreamBatcher(
        data,
        batch_size=2,
        sequence_length=3,
        shuffle=True,
        seed=4,
        remainder="pad",
        series_boundary="pack",
    )


@pytest.mark.parametrize("source", ["memory", "lazy", "npy"])
def test_shuffled_packed_passes_follow_the_epochs(tmp_path: pathlib.Path, source: str) -> None:
    arrays = [encoded_series(s, 4 + 3 * s, (2,), "float32") for s in range(6)]
    data: list[Any] = list(arrays)
    if source == "lazy":
        data = [SliceOnly(a) for a in arrays]
    elif source == "npy":
        data = [tmp_path / f"{i}.npy" for i in range(len(arrays))]
        for path, a in zip(data, arrays, strict=True):
            np.save(path, a)
    batches = shuffled_packed(data)
    batches.set_epoch(3)
    ds = to_dataset(batches, reset_input=True)
    epochs = []
    for epoch in (3, 4, 5):
        numpy_batches = shuffled_packed(arrays)
        numpy_batches.set_epoch(epoch)
        epochs.append(elements(numpy_batches, numpy_batches, reset_input=True, sample_weight=True))
    # Each epoch differs from the one before, so a dataset stuck on one epoch cannot pass.
    flat = [b"".join(tf.nest.flatten(e)[1].tobytes() for e in epoch) for epoch in epochs]
    assert flat[0] != flat[1] != flat[2]
    for expected in epochs:
        assert_yields(ds, expected)
    assert batches.epoch == 3


def test_in_memory_packed_data_is_read_in_the_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    data = [encoded_series(s, n, (2,), "float32") for s, n in enumerate([9, 4, 7, 5, 3, 6])]
    batches = seqbatch.StreamBatcher(
        data, batch_size=2, sequence_length=4, remainder="pad", series_boundary="pack"
    )
    expected = elements(batches, batches, reset_input=True, sample_weight=True)
    reads: list[int] = []
    packed = EpochView._packed

    def counted(self: EpochView, plan: StreamPlan, k: int) -> seqbatch.Batch:
        reads.append(k)
        return packed(self, plan, k)

    monkeypatch.setattr(EpochView, "_packed", counted)
    assert_yields(to_dataset(batches, reset_input=True), expected)
    assert reads == []
    lazy = seqbatch.StreamBatcher(
        [SliceOnly(a) for a in data],
        batch_size=2,
        sequence_length=4,
        remainder="pad",
        series_boundary="pack",
    )
    assert_yields(to_dataset(lazy, reset_input=True), expected)
    assert sorted(reads) == list(range(len(batches)))  # parallel reads, in any order


def test_packed_elements_by_eye() -> None:
    data = [np.arange(1.0, 6.0), 100 + np.arange(2.0), 200 + np.arange(4.0)]
    batches = seqbatch.StreamBatcher(
        data, batch_size=2, sequence_length=3, remainder="pad", series_boundary="pack"
    )
    got = [
        (x.tolist(), r.tolist(), y.tolist(), w.tolist())
        for (x, r), y, w in to_dataset(batches, reset_input=True).as_numpy_iterator()
    ]
    # Stream 0 holds series 0 (4 steps with a target); stream 1 holds series 1 (1 step), then
    # series 2 (3 steps), which starts at step 1 of its first window.
    w = 12 / 8  # the weighted slots of the epoch over its real steps
    assert got == [
        (
            [[1, 2, 3], [100, 200, 201]],
            [[1, 0, 0], [1, 1, 0]],
            [[2, 3, 4], [101, 201, 202]],
            [[w, w, w], [w, w, w]],
        ),
        (
            [[4, 0, 0], [202, 0, 0]],
            [[0, 0, 0], [0, 0, 0]],
            [[5, 0, 0], [203, 0, 0]],
            [[w, 0, 0], [w, 0, 0]],
        ),
    ]


# --- The Keras sequence: its items are the numpy packed batches -------------------------------


@settings(max_examples=40)
@given(packed_cases(), st.data(), st.booleans())
def test_packed_sequence_items_equal_numpy_batches(
    case: PackCase, data: st.DataObject, sample_weight: bool
) -> None:
    note(repr(case))
    assume(case.fillable())
    batches = case.build()
    batches.set_epoch(case.epoch)
    count = data.draw(st.sampled_from([c for c in (1, 2) if case.batch_size % c == 0]))
    shard = batches.shard(data.draw(st.integers(0, count - 1)), count)
    seq = StreamSequence(shard, reset_input=True, sample_weight=sample_weight)
    expected = elements(shard, batches, reset_input=True, sample_weight=sample_weight)
    assert len(seq) == len(expected)
    for k in range(len(seq)):
        got = seq[k]
        tf.nest.assert_same_structure(got, expected[k])
        for a, e in zip(tf.nest.flatten(got), tf.nest.flatten(expected[k]), strict=True):
            assert a.dtype == e.dtype and a.shape == e.shape
            np.testing.assert_array_equal(a, e)


# --- Without the flags: refused, where a stream holds several series --------------------------


def test_packed_batches_without_their_flags_are_refused() -> None:
    data = [encoded_series(s, n, (1,), "float32") for s, n in enumerate([6, 4, 3])]
    for source in (data, [SliceOnly(a) for a in data]):  # the in-graph and the numpy reader
        batches = seqbatch.StreamBatcher(
            source, batch_size=2, sequence_length=2, series_boundary="pack"
        )
        context = tf.distribute.InputContext(2, 0, 2)
        for call, kwargs in (
            (batches.to_tf_dataset, {}),
            (functools.partial(to_dataset, batches), {"input_context": context}),
            (batches.to_keras_sequence, {}),
            (functools.partial(StreamSequence, batches), {"reset_input": False}),
        ):
            with pytest.raises(ValueError) as err:
                call(**kwargs)
            assert str(err.value) == HIDDEN


def test_packed_streams_of_one_series_need_no_flags() -> None:
    # One array cut into streams, or as many series as streams: no stream starts a second
    # series, and a fresh state at every stream's first step is all a model needs.
    one = seqbatch.StreamBatcher(
        encoded_series(0, 30, (1,), "float32"),
        batch_size=3,
        sequence_length=4,
        series_boundary="pack",
    )
    each = seqbatch.StreamBatcher(
        [encoded_series(s, 9, (1,), "float32") for s in range(3)],
        batch_size=3,
        sequence_length=4,
        series_boundary="pack",
    )
    for batches in (one, each):
        expected = elements(batches, batches, reset_input=False, sample_weight=True)
        assert_yields(to_dataset(batches), expected)
        assert StreamSequence(batches)[0][0].shape == (3, 4, 1)


# --- Loops of your own: torch and JAX, step flags inside the window ---------------------------


def guide_function(name: str) -> Any:
    """The function ``name`` as docs/guides/packing.md defines it, in its own block."""
    (code,) = [b.code for b in blocks(GUIDE.read_text("utf-8")) if f"def {name}(" in b.code]
    namespace: dict[str, Any] = {}
    exec("import jax, jax.numpy as jnp, numpy as np, seqbatch, torch\n" + code, namespace)
    return namespace[name]


def packed_lstm_batches() -> seqbatch.StreamBatcher:
    """Packed windows with series starting mid-window, two in one window, padding at the end."""
    data = [
        encoded_series(s, n, (2,), "float32") / 4000
        for s, n in enumerate([9, 2, 7, 3, 1, 6, 12, 4])
    ]
    batches = seqbatch.StreamBatcher(
        data, None, batch_size=3, sequence_length=4, remainder="pad", series_boundary="pack"
    )
    inside = sum(int(b.step_reset[:, 1:].sum()) for b in batches)
    assert inside >= 3 and any((b.step_reset[:, 1:].sum(axis=1) >= 2).any() for b in batches)
    return batches


def held_replay(weights: Any, batches: seqbatch.StreamBatcher) -> Any:
    """The replay's outputs and final state, the state held through each stream's padding.

    A replay run through the padding ends elsewhere: comparing with this one has power.
    """
    held = lstm_replay(weights, [(b.x, b.step_reset, b.sample_weight) for b in batches])
    _, (h_through, _) = lstm_replay(weights, [(b.x, b.step_reset) for b in batches])
    assert np.abs(held[1][0] - h_through).max() > 1e-2
    return held


def test_the_guides_torch_loop_resets_at_every_flagged_step() -> None:
    import torch

    packed_window = guide_function("torch_packed_window")
    batches = packed_lstm_batches()
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(2, 3, batch_first=True)
    weights = from_torch(*(p.detach().numpy() for p in lstm.parameters()))
    dataset = seqbatch.torch.StreamDataset(batches)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, sampler=dataset.sampler)
    state, outputs = None, []
    with torch.no_grad():
        for b in loader:
            out, state = packed_window(lstm, b.x, b.step_reset, b.sample_weight, state)
            outputs.append(out.numpy())
    expected, (h, c) = held_replay(weights, batches)
    for out, exp, b in zip(outputs, expected, batches, strict=True):
        real = b.sample_weight > 0
        np.testing.assert_allclose(out[real], exp[real], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state[0][0].numpy(), h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state[1][0].numpy(), c, rtol=1e-5, atol=1e-6)


def test_the_guides_jax_scan_resets_at_every_flagged_step() -> None:
    import jax
    import jax.numpy as jnp

    packed_window = jax.jit(guide_function("jax_packed_window"))
    batches = packed_lstm_batches()
    rng = np.random.default_rng(0)
    params = {
        "kernel": rng.uniform(-0.5, 0.5, (2, 12)).astype("float32"),
        "recurrent": rng.uniform(-0.5, 0.5, (3, 12)).astype("float32"),
        "bias": rng.uniform(-0.5, 0.5, 12).astype("float32"),
    }
    source = seqbatch.jax.StreamSource(batches)
    state = (jnp.zeros((3, 3)), jnp.zeros((3, 3)))
    outputs = []
    for record in source.in_order(source):
        window = (record["x"], record["step_reset"], record["sample_weight"])
        out, state = packed_window(params, state, *window)
        outputs.append(np.asarray(out))
    weights = from_keras(params["kernel"], params["recurrent"], params["bias"])
    expected, (h, c) = held_replay(weights, batches)
    for out, exp, b in zip(outputs, expected, batches, strict=True):
        real = b.sample_weight > 0
        np.testing.assert_allclose(out[real], exp[real], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(state[0]), h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(state[1]), c, rtol=1e-5, atol=1e-6)
