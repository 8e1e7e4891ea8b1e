"""tf.data adapter: the dataset yields exactly the numpy batches, with static shapes, in order.

The data encodes its own position (``tests.encoded``), so a wrong slice, series, shift or row
order shows up as a wrong number. Each property-based example builds a small dataset; the
``max_examples`` overrides keep these TensorFlow tests to a few seconds each.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import re
import tracemalloc
import warnings
from collections.abc import Iterator
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
from tests.lazy import CountingSource, SliceOnly
from tests.strategies import Case, cases
from tests.tf_checks import assert_static_spec, assert_yields, rows_of
from tests.weights import element_weight, real_step_weight


def expected_element(
    b: seqbatch.Batch, *, reset_input: bool, sample_weight: bool, step_weight: float = 1.0
) -> tuple:
    """The element the docstring of ``to_dataset`` promises for the numpy batch ``b``."""
    inputs = (b.x, b.reset.astype(np.float32)) if reset_input else b.x
    if b.y is None:
        return (inputs,)
    return (inputs, b.y, element_weight(b, step_weight)) if sample_weight else (inputs, b.y)


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
    # Some stream holds two series exactly when more series than streams are dealt whole.
    hidden_resets = not (reset_input or case.single or case.concat) and (
        len(case.lengths) > case.batch_size
    )
    with warns_of_hidden_resets(hidden_resets):
        ds = to_dataset(shard, **flags)
    assert_static_spec(ds, expected[0])
    assert ds.cardinality() == len(shard)
    assert_yields(ds, expected)


@contextlib.contextmanager
def warns_of_hidden_resets(expected: bool) -> Iterator[Any]:
    """Expect the warning of resets that the model will not see, or fail on it."""
    message = "Some streams of these batches start a new series after the first batch"
    if expected:
        with pytest.warns(UserWarning, match=message) as caught:
            yield caught
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=message)
            yield None


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


@pytest.mark.filterwarnings("ignore:Some streams of these batches:UserWarning")
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


@pytest.mark.filterwarnings("ignore:Some streams of these batches:UserWarning")
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


def test_auto_shard_policy_is_data_and_order_deterministic() -> None:
    # DATA keeps each worker's row blocks under MultiWorkerMirroredStrategy (OFF would give
    # every worker every block): tests/keras/test_multiworker.py shows both with two workers.
    batches = seqbatch.StreamBatcher(np.arange(40), batch_size=2, sequence_length=4)
    for ds in (
        to_dataset(batches),
        to_dataset(batches, input_context=tf.distribute.InputContext(2, 1, 2)),
    ):
        options = ds.options()
        assert (
            options.experimental_distribute.auto_shard_policy
            == tf.data.experimental.AutoShardPolicy.DATA
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
    # Every batch that is not a zero-copy view is read by the view's read(window); the
    # views of each replica's rows are copies of it, and keep the counting read.
    calls: list[int] = []
    read = batches.view.read

    def counted(window: Any) -> seqbatch.Batch:
        calls.append(1)
        return read(window)

    batches.view.read = counted  # type: ignore[method-assign]
    return calls


@pytest.mark.filterwarnings("ignore:Some streams of these batches:UserWarning")
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


def accepted_dtypes() -> list[np.dtype]:
    """Every dtype the numpy path accepts: numpy's numbers and the types of ml_dtypes."""
    numpy_types = "bool int8 uint8 int16 uint16 int32 uint32 int64 uint64 float16 float32 "
    numpy_types += "float64 longdouble complex64 complex128 clongdouble"
    dtypes = [np.dtype(name) for name in numpy_types.split()]
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="installed with TensorFlow and JAX")
    for name in ml_dtypes.__all__:
        kind = getattr(ml_dtypes, name)
        if isinstance(kind, type) and issubclass(kind, np.generic):
            dtypes.append(np.dtype(kind))
    return dtypes


ACCEPTED_DTYPES = accepted_dtypes()


def exact_range(dtype: np.dtype) -> int:
    """The m for which 0, 1, ..., m - 1 are exact in ``dtype`` (2 at least: bool)."""
    m = 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", np.exceptions.ComplexWarning)  # 0j parts, dropped
        while m < 1000 and np.arange(m + 1).astype(dtype).astype(np.int64).tolist() == list(
            range(m + 1)
        ):
            m += 1
    return m


def refusal(dtype: np.dtype) -> str | None:
    """The start of the error for data of ``dtype``, if TensorFlow or tf.data cannot take it:
    found by asking TensorFlow, not seqbatch."""
    try:
        tf_dtype = tf.as_dtype(dtype.newbyteorder("="))
    except TypeError:
        return "`batches` must hold x of a dtype TensorFlow has"
    values = np.zeros(2, dtype.newbyteorder("="))
    ds = tf.data.Dataset.range(1).map(lambda i: tf.numpy_function(lambda _: values, [i], tf_dtype))
    try:
        next(iter(ds))
    except tf.errors.OpError:
        return "`batches` must hold x of a dtype that tf.data can carry"
    return None


@pytest.mark.parametrize("dtype", ACCEPTED_DTYPES, ids=str)
@settings(max_examples=8)
@given(
    case=cases(),
    order=st.sampled_from(["=", "<", ">"]),
    source=st.sampled_from(["memory", "npy", "memmap", "sliceable"]),
    reset_input=st.booleans(),
)
def test_every_dtype_and_byte_order_reaches_tensorflow_unchanged(
    tmp_path_factory: pytest.TempPathFactory,
    dtype: np.dtype,
    case: Case,
    order: str,
    source: str,
    reset_input: bool,
) -> None:
    """The dataset of data in any accepted dtype and byte order, in memory or lazy, equals
    the numpy batches of the same values in native order: TensorFlow reads the bytes of
    what it gets in the machine's order."""
    note(repr(case))
    assume(case.fillable())
    if dtype.itemsize > 1 and dtype.type.__module__ == "numpy":
        dtype = dtype.newbyteorder(order)
    if source == "npy" and dtype.type.__module__ != "numpy":
        source = "memmap"  # np.save writes ml_dtypes' types as raw bytes ('|V2'), not as them
    event(f"{dtype.newbyteorder('=')} {'native' if dtype.isnative else 'swapped'}, {source}")
    m = exact_range(dtype)
    native = dtype.newbyteorder("=")
    codes = [encoded_series(s, n, case.features, "int64") for s, n in enumerate(case.lengths)]
    values = [c % m for c in codes]
    target_values = [(3 * c + 1) % m for c in codes]
    directory = tmp_path_factory.mktemp("dtypes")

    def series(arrays: list[np.ndarray], as_dtype: np.dtype, kind: str, name: str) -> Any:
        out: list[Any] = []
        for i, a in enumerate(arrays):
            a = a.astype(as_dtype)
            path = directory / f"{name}{i}.{'npy' if kind == 'npy' else 'raw'}"
            if kind == "npy":
                np.save(path, a)
                out.append(path)
            elif kind == "memmap":
                a.tofile(path)
                out.append(np.memmap(path, dtype=as_dtype, mode="r", shape=a.shape))
            else:
                out.append(a if kind == "memory" else SliceOnly(a))
        return out[0] if case.single else out

    def build(as_dtype: np.dtype, kind: str) -> seqbatch.StreamBatcher:
        targets = case.targets
        if targets == "arrays":
            targets = series(target_values, as_dtype, kind, "y")
        batches = seqbatch.StreamBatcher(
            series(values, as_dtype, kind, "x"), targets, **case.kwargs()
        )
        batches.set_epoch(case.epoch)
        return batches

    reference = build(native, "memory")
    subject = build(dtype, source)
    assert subject.dtype == dtype
    flags = {"reset_input": reset_input, "sample_weight": True}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Some streams of these batches")
        message = refusal(dtype)
        if message is not None:
            with pytest.raises(TypeError, match=re.escape(message)):
                to_dataset(subject, **flags)
            return
        ds = to_dataset(subject, **flags)
    expected = elements(reference, **flags)
    assert_static_spec(ds, expected[0])
    assert_yields(ds, expected)


@pytest.mark.parametrize("source", ["memory", "npy"])
def test_big_endian_data_by_eye(tmp_path: Any, source: str) -> None:
    data: Any = np.arange(40, dtype=">f4")
    if source == "npy":
        np.save(tmp_path / "x.npy", data)
        data = tmp_path / "x.npy"
    batches = seqbatch.StreamBatcher(data, batch_size=2, sequence_length=4)
    x, y, _ = next(iter(to_dataset(batches)))
    assert x.dtype == tf.float32
    assert x.numpy().tolist() == [[0, 1, 2, 3], [16, 17, 18, 19]]
    assert y.numpy().tolist() == [[1, 2, 3, 4], [17, 18, 19, 20]]
    big = seqbatch.StreamBatcher(
        [np.arange(9, dtype=">i8"), np.arange(9, dtype=">i8")],
        None,
        batch_size=2,
        sequence_length=3,
        series_boundary="concat",
    )
    ((x,),) = list(to_dataset(big).take(1).as_numpy_iterator())
    assert x.tolist() == [[0, 1, 2], [0, 1, 2]]


def test_streams_that_start_series_unseen_warn() -> None:
    data = [np.arange(6.0), np.arange(3.0), np.arange(3.0)]
    batches = seqbatch.StreamBatcher(data, None, batch_size=2, sequence_length=3)
    with warns_of_hidden_resets(True) as caught:
        batches.to_tf_dataset()
    assert [w.filename for w in caught] == [__file__]  # the user's line, not seqbatch's
    with warns_of_hidden_resets(True):
        to_dataset(batches, reset_input=False, input_context=tf.distribute.InputContext(2, 0, 2))
    with warns_of_hidden_resets(False):
        to_dataset(batches, reset_input=True)
        to_dataset(seqbatch.StreamBatcher(data, None, batch_size=3, sequence_length=3))
        to_dataset(
            seqbatch.StreamBatcher(
                data, None, batch_size=2, sequence_length=3, series_boundary="concat"
            )
        )


class Positions:
    """A lazy series of ``n`` steps whose value is their step, made only when sliced."""

    def __init__(self, n: int) -> None:
        self.shape = (n, 1)
        self.dtype = np.dtype(np.float64)

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, _ = key.indices(self.shape[0])
        return np.arange(start, stop, dtype=np.float64)[:, None]


def test_a_lazy_dataset_holds_no_table_of_the_epoch() -> None:
    # Windows of one step on 4 streams of 2.5 million steps: a table of the epoch's windows
    # would be 10 million rows (330 MB); the dataset must not hold one.
    batches = seqbatch.StreamBatcher(Positions(10**7), batch_size=4, sequence_length=1)
    tracemalloc.start()
    try:
        ds = to_dataset(batches, reset_input=True)
        got = list(ds.take(3).as_numpy_iterator())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, f"{peak / 1e6:.0f} MB traced while making the dataset"
    assert ds.cardinality() == len(batches) == 2_499_999
    stride = 2_499_999
    for k, ((x, reset), y, w) in enumerate(got):
        assert x[:, 0, 0].tolist() == [k + i * stride for i in range(4)]
        assert y[:, 0, 0].tolist() == [k + 1 + i * stride for i in range(4)]
        assert reset.tolist() == [float(k == 0)] * 4 and w.tolist() == [[1.0]] * 4
