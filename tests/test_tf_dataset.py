"""tf.data adapter: the dataset yields exactly the numpy batches, with static shapes, in order.

The data encodes its own position (``tests.encoded``), so a wrong slice, series, shift or row
order shows up as a wrong number. Each property-based example builds a small dataset; the
``max_examples`` overrides keep these TensorFlow tests to a few seconds each.
"""

from __future__ import annotations

import dataclasses
import pathlib
from contextlib import nullcontext
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import assume, event, given, note, settings
from hypothesis import strategies as st

import seqbatch
from seqbatch.tf import to_dataset
from tests.encoded import encoded_series
from tests.test_invariant import Case, cases
from tests.test_sources import CountingSource
from tests.weights import element_weight, real_step_weight


def expected_element(
    b: seqbatch.Batch, *, reset_input: bool, sample_weight: bool, step_weight: float = 1.0
) -> tuple:
    """The element the docstring of ``to_dataset`` promises for the numpy batch ``b``."""
    inputs = (b.x, b.reset.astype(np.float32)) if reset_input else b.x
    if b.y is None:
        return (inputs,)
    return (inputs, b.y, element_weight(b, step_weight)) if sample_weight else (inputs, b.y)


def assert_static_spec(ds: tf.data.Dataset, element: tuple) -> None:
    """Every component has a fully defined shape, batch dimension included, and its dtype."""
    specs = tf.nest.flatten(ds.element_spec)
    values = tf.nest.flatten(element)
    tf.nest.assert_same_structure(ds.element_spec, element)
    for spec, value in zip(specs, values, strict=True):
        assert spec.shape.is_fully_defined(), spec
        assert tuple(spec.shape) == value.shape, (spec, value.shape)
        assert spec.dtype == tf.as_dtype(value.dtype), (spec, value.dtype)


def assert_yields(ds: tf.data.Dataset, expected: list[tuple]) -> None:
    """One pass over ``ds`` gives exactly ``expected``: structure, dtypes and values."""
    got = list(ds.as_numpy_iterator())
    assert len(got) == len(expected)
    for k, (g, e) in enumerate(zip(got, expected, strict=True)):
        tf.nest.assert_same_structure(g, e)
        for i, (a, b) in enumerate(zip(tf.nest.flatten(g), tf.nest.flatten(e), strict=True)):
            assert a.dtype == b.dtype, (k, i, a.dtype, b.dtype)
            np.testing.assert_array_equal(a, b, err_msg=f"element {k}, component {i}")


def rows_of(b: seqbatch.Batch, rows: slice) -> seqbatch.Batch:
    """The rows ``rows`` of the numpy batch ``b``."""
    fields: dict[str, Any] = {f.name: getattr(b, f.name) for f in dataclasses.fields(b)}
    return dataclasses.replace(b, **{k: None if v is None else v[rows] for k, v in fields.items()})


def elements(batches: Any, whole: Any = None, **flags: bool) -> list[tuple]:
    """The elements of ``batches``, a shard of ``whole`` if given (weights count every stream)."""
    step_weight = real_step_weight(batches if whole is None else whole)
    return [expected_element(b, **flags, step_weight=step_weight) for b in batches]


@dataclasses.dataclass
class OnDiskCase(Case):
    """A case whose series and target arrays are ``.npy`` files, read as memmaps."""

    directory: str = ""

    def _save(self, arrays: Any, name: str) -> Any:
        if self.single:
            return self._one(arrays, name)
        return [self._one(a, f"{name}{i}") for i, a in enumerate(arrays)]

    def _one(self, array: np.ndarray, name: str) -> pathlib.Path:
        # A Path, not a str: a str for `targets` reads as a keyword ("next").
        path = pathlib.Path(self.directory, f"{name}.npy")
        np.save(path, array)
        return path

    def data(self) -> Any:
        return self._save(super().data(), "x")

    def target_arg(self) -> Any:
        targets = super().target_arg()
        return self._save(targets, "y") if self.targets == "arrays" else targets


def build(case: Case, source: str, directory: Any) -> seqbatch.StreamBatcher:
    """The batcher of ``case`` at its epoch, its series in memory (numpy arrays or, with
    ``case.lazy``, slice-only objects) or in ``.npy`` files (``source="npy"``)."""
    if source == "npy":
        fields = dataclasses.asdict(dataclasses.replace(case, lazy=False))
        case = OnDiskCase(**fields, directory=str(directory))
    batches = case.build()
    event("in memory" if batches.in_memory else "lazy")
    batches.set_epoch(case.epoch)
    return batches


@settings(max_examples=60)
@given(
    cases(),
    st.sampled_from(["memory", "npy"]),
    st.data(),
    st.booleans(),
    st.booleans(),
)
def test_dataset_equals_numpy_batches(
    tmp_path_factory: pytest.TempPathFactory,
    case: Case,
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
    flags = {"reset_input": reset_input, "sample_weight": sample_weight}
    expected = elements(shard, batches, **flags)
    ds = to_dataset(shard, **flags)
    assert_static_spec(ds, expected[0])
    assert ds.cardinality() == len(shard)
    assert_yields(ds, expected)


@settings(max_examples=40)
@given(
    cases(),
    st.sampled_from(["memory", "npy"]),
    st.sampled_from([(1, 2), (2, 1), (2, 2), (1, 3)]),
    st.integers(1, 2),
    st.data(),
)
def test_input_pipeline_yields_its_replicas_batches_in_batch_replica_order(
    tmp_path_factory: pytest.TempPathFactory,
    case: Case,
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
    # Replica r of pipeline p is replica p * R + r of the strategy: a contiguous row block.
    blocks = [
        slice(g * per_replica, (g + 1) * per_replica)
        for g in range(pipeline * replicas, (pipeline + 1) * replicas)
    ]
    step_weight = real_step_weight(batches)
    expected = [
        expected_element(
            rows_of(b, rows), reset_input=True, sample_weight=True, step_weight=step_weight
        )
        for b in batches
        for rows in blocks
    ]
    assert_static_spec(ds, expected[0])
    assert ds.cardinality() == len(batches) * replicas
    assert_yields(ds, expected)


def x_bytes(expected: list[tuple]) -> bytes:
    """The x of every element, as bytes: equal for two passes only if they are equal."""
    return b"".join(tf.nest.flatten(e)[0].tobytes() for e in expected)


def shuffled(data: Any, **kwargs: Any) -> seqbatch.StreamBatcher:
    return seqbatch.StreamBatcher(
        data, batch_size=2, sequence_length=3, shuffle=True, seed=4, remainder="pad", **kwargs
    )


@pytest.mark.parametrize("source", ["memory", "npy"])
@pytest.mark.parametrize("layout", ["one series", "series"])
def test_shuffled_passes_follow_the_epochs(tmp_path: Any, source: str, layout: str) -> None:
    arrays = [encoded_series(s, 10 + 3 * s, (), "float32") for s in range(5)]
    data: Any = arrays[0] if layout == "one series" else arrays
    if source == "npy":
        paths = [str(tmp_path / f"{i}.npy") for i in range(len(arrays))]
        for path, a in zip(paths, arrays, strict=True):
            np.save(path, a)
        data = paths[0] if layout == "one series" else paths
    batches = shuffled(data)
    batches.set_epoch(3)
    ds = to_dataset(batches, reset_input=True)
    epochs = []
    for epoch in (3, 4, 5):
        numpy_batches = shuffled(data)
        numpy_batches.set_epoch(epoch)
        epochs.append(elements(numpy_batches, reset_input=True, sample_weight=True))
    # Each epoch differs from the one before, so a dataset stuck on one epoch cannot pass.
    assert x_bytes(epochs[0]) != x_bytes(epochs[1]) != x_bytes(epochs[2])
    for expected in epochs:
        assert_yields(ds, expected)
    assert batches.epoch == 3


def test_shuffled_input_pipeline_follows_the_epochs() -> None:
    data = [encoded_series(s, 10 + 3 * s, (), "float32") for s in range(6)]
    batches = seqbatch.StreamBatcher(data, batch_size=4, sequence_length=3, shuffle=True, seed=1)
    context = tf.distribute.InputContext(1, 0, 2)
    ds = to_dataset(batches, input_context=context, sample_weight=False)
    for epoch in (0, 1):
        numpy_batches = seqbatch.StreamBatcher(
            data, batch_size=4, sequence_length=3, shuffle=True, seed=1
        )
        numpy_batches.set_epoch(epoch)
        expected = [
            expected_element(rows_of(b, rows), reset_input=False, sample_weight=False)
            for b in numpy_batches
            for rows in (slice(0, 2), slice(2, 4))
        ]
        assert_yields(ds, expected)


@pytest.mark.parametrize("strategy", [None, "mirrored"])
def test_each_keras_epoch_is_one_pass(strategy: str | None) -> None:
    keras = pytest.importorskip("keras")
    data = [encoded_series(s, 9 + 3 * s, (1,), "float32") for s in range(6)]
    batches = shuffled(data)
    ds = to_dataset(batches)
    scope = tf.distribute.MirroredStrategy(["/cpu:0"]).scope() if strategy else nullcontext()
    with scope:
        x = keras.Input(batch_shape=(2, 3, 1))
        model = keras.Model(x, keras.layers.Dense(1)(x))
        model.compile(optimizer="sgd", loss="mse")
    model.fit(ds, epochs=2, shuffle=False, verbose=0)
    # Two epochs are two passes; under a strategy Keras first reads one batch of a pass of its
    # own, as the docstring of to_dataset says.
    passes = 2 if strategy is None else 3
    epochs = []
    for epoch in range(5):
        numpy_batches = shuffled(data)
        numpy_batches.set_epoch(epoch)
        epochs.append(elements(numpy_batches, reset_input=False, sample_weight=True))
    assert len({x_bytes(e) for e in epochs}) == 5, "the count of passes would not show"
    assert_yields(ds, epochs[passes])


def test_unshuffled_passes_are_identical() -> None:
    batches = seqbatch.StreamBatcher(
        encoded_series(0, 50, (2,), "int64"), batch_size=3, sequence_length=4
    )
    ds = to_dataset(batches)
    expected = elements(batches, reset_input=False, sample_weight=True)
    assert_yields(ds, expected)
    assert_yields(ds, expected)


def test_elements_by_eye() -> None:
    # Series of 6, 3 and 3 steps on 2 streams: the second short series starts stream 1 again.
    data = [np.arange(6), 100 + np.arange(3), 200 + np.arange(3)]
    batches = seqbatch.StreamBatcher(data, targets=None, batch_size=2, sequence_length=3)
    got = [
        (x.tolist(), reset.tolist())
        for ((x, reset),) in to_dataset(batches, reset_input=True).as_numpy_iterator()
    ]
    assert got == [
        ([[0, 1, 2], [100, 101, 102]], [1.0, 1.0]),
        ([[3, 4, 5], [200, 201, 202]], [0.0, 1.0]),
    ]
    # 10 steps with a target cut into 2 streams of 5: the second batch ends in padding, and
    # return_sequences=False gives the target of each window's last step, weight 0 if padded;
    # 2 of the epoch's 4 targets are real, so a real one weighs 4 / 2.
    batches = seqbatch.StreamBatcher(
        np.arange(11), batch_size=2, sequence_length=3, remainder="pad", return_sequences=False
    )
    padded = [
        (x.tolist(), y.tolist(), w.tolist()) for x, y, w in to_dataset(batches).as_numpy_iterator()
    ]
    assert padded == [
        ([[0, 1, 2], [5, 6, 7]], [3, 8], [2.0, 2.0]),
        ([[3, 4, 0], [8, 9, 0]], [0, 0], [0.0, 0.0]),
    ]


def test_auto_sharding_is_off_and_order_deterministic() -> None:
    batches = seqbatch.StreamBatcher(np.arange(40), batch_size=2, sequence_length=4)
    for ds in (
        to_dataset(batches),
        to_dataset(batches, input_context=tf.distribute.InputContext(2, 1, 2)),
    ):
        options = ds.options()
        assert (
            options.experimental_distribute.auto_shard_policy
            == tf.data.experimental.AutoShardPolicy.OFF
        )
        assert options.deterministic is True


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int16", "float16", "complex64"])
@pytest.mark.parametrize("source", ["memory", "npy"])
def test_dtype_of_the_data_is_kept(tmp_path: Any, dtype: str, source: str) -> None:
    data: Any = (np.arange(30) % 7).astype(dtype)
    if source == "npy":
        np.save(tmp_path / "x.npy", data)
        data = str(tmp_path / "x.npy")
    batches = seqbatch.StreamBatcher(data, batch_size=2, sequence_length=4, remainder="pad")
    ds = to_dataset(batches)
    assert ds.element_spec[0].dtype == tf.as_dtype(np.dtype(dtype))
    assert_yields(ds, elements(batches, reset_input=False, sample_weight=True))


def test_dtype_tensorflow_lacks_is_refused() -> None:
    batches = seqbatch.StreamBatcher(np.zeros(20, np.longdouble), batch_size=2, sequence_length=2)
    with pytest.raises(
        TypeError,
        match=r"`batches` must hold x of a dtype TensorFlow has\. Received: x of dtype float128",
    ):
        to_dataset(batches)


def counting_batch_calls(batches: seqbatch.StreamBatcher) -> list[int]:
    calls: list[int] = []
    read = batches.batch

    def batch(window: Any) -> seqbatch.Batch:
        calls.append(1)
        return read(window)

    batches.batch = batch  # type: ignore[method-assign]
    return calls


def test_in_memory_data_is_sliced_in_the_graph() -> None:
    batches = seqbatch.StreamBatcher(
        [encoded_series(s, 9 + s, (2,), "float32") for s in range(4)],
        batch_size=2,
        sequence_length=3,
        remainder="pad",
    )
    expected = elements(batches, reset_input=False, sample_weight=True)
    calls = counting_batch_calls(batches)
    assert_yields(to_dataset(batches), expected)
    assert calls == []


def test_lazy_source_reads_only_the_windows_of_each_batch() -> None:
    arrays = [encoded_series(s, 20 + 5 * s, (2,), "float32") for s in range(3)]
    sources = [CountingSource(a) for a in arrays]
    batches = seqbatch.StreamBatcher(
        sources, batch_size=3, sequence_length=4, remainder="pad", series_boundary="concat"
    )
    assert not batches.in_memory
    expected = elements(batches, reset_input=False, sample_weight=True)
    for s in sources:
        s.reads.clear()
    calls = counting_batch_calls(batches)
    assert_yields(to_dataset(batches), expected)
    assert len(calls) == len(batches)
    reads = [stop - start for s in sources for start, stop in s.reads]
    assert reads and max(reads) <= 4, "a read longer than a window"
    assert sum(reads) < 2 * sum(len(a) for a in arrays)


def test_reset_is_a_keras_model_input() -> None:
    keras = pytest.importorskip("keras")
    data = [encoded_series(s, 6 + 3 * s, (1,), "float32") for s in range(4)]
    batches = seqbatch.StreamBatcher(data, targets=None, batch_size=2, sequence_length=3)
    x_in = keras.Input(batch_shape=(2, 3, 1))
    reset_in = keras.Input(batch_shape=(2,))
    # Keeps only the rows whose stream starts a new series in this batch.
    out = x_in * keras.ops.reshape(reset_in, (2, 1, 1))
    model = keras.Model([x_in, reset_in], out)
    got = model.predict(to_dataset(batches, reset_input=True), verbose=0)
    want = np.concatenate([b.x * b.reset[:, None, None] for b in batches])
    np.testing.assert_array_equal(got, want)
    assert want.any() and not want.all()


def test_errors_name_the_argument_and_the_value() -> None:
    batches = seqbatch.StreamBatcher(np.arange(40), batch_size=6, sequence_length=2)
    with pytest.raises(
        TypeError, match=r"`batches` must be a seqbatch.StreamBatcher\. Received: batches=\[1, 2\]"
    ):
        to_dataset([1, 2])  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"`reset_input` must be True or False\. Received: reset_input=1"
    ):
        to_dataset(batches, reset_input=1)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"`sample_weight` must be True or False\. Received: sample_weight=None"
    ):
        to_dataset(batches, sample_weight=None)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match=r"`input_context` must be a tf.distribute.InputContext or None\. Received: input_context=2",
    ):
        to_dataset(batches, input_context=2)
    with pytest.raises(
        ValueError,
        match=r"`input_context` must have a number of replicas that divides the batch size, .*"
        r"Received: input_context with num_replicas_in_sync=4 for batch_size=6",
    ):
        to_dataset(batches, input_context=tf.distribute.InputContext(2, 0, 4))
