"""StreamSequence: its items are exactly the numpy batches, pure under probes and threads, and
its arguments are checked.

Data encodes its own position (``tests.encoded``: step ``t`` of series ``s`` holds
``1000 * (s + 1) + t``), so a batch out of order, or a row in the wrong stream, shows up as a
wrong number.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import keras
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import seqbatch
from seqbatch.keras import StreamSequence
from tests.encoded import encoded_series
from tests.keras_models import quiet_sequence
from tests.weights import element_weight, real_step_weight

pytestmark = pytest.mark.keras


def expected_element(
    b: seqbatch.Batch, reset_input: bool, sample_weight: bool, step_weight: float
) -> tuple:
    inputs = (b.x, b.reset.astype(np.float32)) if reset_input else b.x
    if b.y is None:
        return (inputs,)
    return (inputs, b.y, element_weight(b, step_weight)) if sample_weight else (inputs, b.y)


def assert_same(actual: Any, expected: Any) -> None:
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert_same(a, e)
    else:
        assert actual.dtype == expected.dtype and actual.shape == expected.shape
        np.testing.assert_array_equal(actual, expected)


# --- The sequence serves exactly the numpy batches ----------------------------------------


@given(
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=6),
    single=st.booleans(),
    features=st.sampled_from([(), (2,)]),
    batch_size=st.integers(1, 4),
    sequence_length=st.integers(1, 6),
    targets=st.sampled_from([None, "next", 2]),
    return_sequences=st.booleans(),
    remainder=st.sampled_from(["drop", "pad"]),
    shuffle=st.booleans(),
    epoch=st.integers(0, 3),
    reset_input=st.booleans(),
    sample_weight=st.booleans(),
    order=st.randoms(use_true_random=False),
)
def test_sequence_items_equal_numpy_batches(
    lengths: list[int],
    single: bool,
    features: tuple[int, ...],
    batch_size: int,
    sequence_length: int,
    targets: str | int | None,
    return_sequences: bool,
    remainder: str,
    shuffle: bool,
    epoch: int,
    reset_input: bool,
    sample_weight: bool,
    order: Any,
) -> None:
    series = [encoded_series(s, n, features, "float32") for s, n in enumerate(lengths)]
    kwargs = dict(
        batch_size=batch_size,
        sequence_length=sequence_length,
        return_sequences=return_sequences,
        remainder=remainder,
        shuffle=shuffle,
        seed=7,
    )
    try:
        batches = seqbatch.StreamBatcher(series[0] if single else series, targets, **kwargs)
        reference = seqbatch.StreamBatcher(series[0] if single else series, targets, **kwargs)
    except ValueError:
        assume(False)
    batches.set_epoch(epoch)
    reference.set_epoch(epoch)
    seq = quiet_sequence(batches, reset_input=reset_input, sample_weight=sample_weight)
    assert len(seq) == len(reference)
    # Any order, twice over (as Keras probes items and workers race): the same items.
    indices = list(range(len(seq))) * 2
    order.shuffle(indices)
    step_weight = real_step_weight(reference)
    for k in indices:
        assert_same(seq[k], expected_element(reference[k], reset_input, sample_weight, step_weight))
    assert batches.epoch == reference.epoch


@pytest.mark.needs_tensorflow
@pytest.mark.parametrize(
    ("targets", "reset_input", "sample_weight"),
    [("next", False, True), ("next", True, True), ("next", True, False), (None, True, True)],
)
def test_sequence_items_equal_the_tf_dataset_elements(
    targets: str | None, reset_input: bool, sample_weight: bool
) -> None:
    data = [encoded_series(s, n, (2,), "float32") for s, n in enumerate([14, 9, 8, 5])]
    batches = seqbatch.StreamBatcher(
        data, targets, batch_size=2, sequence_length=3, remainder="pad"
    )
    seq = quiet_sequence(batches, reset_input=reset_input, sample_weight=sample_weight)
    dataset = batches.to_tf_dataset(reset_input=reset_input, sample_weight=sample_weight)
    elements = [keras.tree.map_structure(lambda t: t.numpy(), e) for e in dataset]
    assert len(elements) == len(seq)
    for k, element in enumerate(elements):
        assert_same(seq[k], element)


def test_sequence_items_are_pure_under_probing_and_threads() -> None:
    data = encoded_series(0, 400, (2,), "float32")
    batches = seqbatch.StreamBatcher(data, batch_size=4, sequence_length=5, shuffle=True, seed=1)
    seq = StreamSequence(batches, reset_input=True)
    sequential = [seq[k] for k in range(len(seq))]
    # The probes Keras makes before training.
    seq[1], seq[0], seq[1]
    rng = np.random.default_rng(0)
    indices = rng.permutation(np.tile(np.arange(len(seq)), 8)).tolist()
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(seq.__getitem__, indices))
    for k, item in zip(indices, concurrent, strict=True):
        assert_same(item, sequential[k])
    assert batches.epoch == 0


def test_sequence_checks_its_arguments() -> None:
    batches = seqbatch.StreamBatcher(np.arange(20.0), batch_size=2, sequence_length=3)
    with pytest.raises(TypeError, match=r"`batches` must be a seqbatch.StreamBatcher"):
        StreamSequence(np.arange(10))  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"`reset_input` must be True or False. Received: reset_input=1"
    ):
        StreamSequence(batches, reset_input=1)  # type: ignore[arg-type]
    # The arguments of keras.utils.PyDataset, which Keras takes as they come.
    for name, value, error in [
        ("workers", -1, ValueError),
        ("workers", 0, ValueError),
        ("workers", "4", TypeError),
        ("max_queue_size", 0, ValueError),
    ]:
        with pytest.raises(
            error, match=rf"`{name}` must be a positive integer. Received: {name}={value!r}"
        ):
            StreamSequence(batches, **{name: value})
    with pytest.raises(
        TypeError,
        match=r"`use_multiprocessing` must be True or False. Received: use_multiprocessing=1",
    ):
        StreamSequence(batches, use_multiprocessing=1)  # type: ignore[arg-type]


def test_sequence_warns_when_a_stream_starts_a_new_series_unseen() -> None:
    many = [encoded_series(s, n, (), "float32") for s, n in enumerate([9, 6, 6])]
    batches = seqbatch.StreamBatcher(many, batch_size=2, sequence_length=3)
    with pytest.warns(
        UserWarning, match=r"reset_input=True and wrap the RNN in seqbatch.keras.StreamReset"
    ):
        StreamSequence(batches)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        StreamSequence(batches, reset_input=True)
        one_per_stream = seqbatch.StreamBatcher(many[:2], batch_size=2, sequence_length=3)
        StreamSequence(one_per_stream)
