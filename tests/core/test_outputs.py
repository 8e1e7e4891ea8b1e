"""Outputs over an epoch go back to their series, in time order: ``StreamBatcher.by_series``.

The "model" here is the identity: its output for a slot is the slot's input (or, with
``return_sequences=False``, the input of the window's last step). The data encodes its own
position (``tests.encoded``), so every output must land on the step it was read from, and
exactly the steps that no window fed as input must be masked.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, note

import seqbatch
from tests.encoded import decode_real, encoded_series, split
from tests.strategies import Case, PackCase, cases, packed_cases


def identity_outputs(batches: seqbatch.StreamBatcher) -> list[np.ndarray]:
    """Per batch, what an identity model returns: ``x``, or its last step per window."""
    return [b.x if batches.return_sequences else b.x[:, -1] for b in batches]


def fed_steps(batches: seqbatch.StreamBatcher, features: tuple[int, ...]) -> set[tuple[int, int]]:
    """(series, step) of every step that has an output, decoded from the inputs alone."""
    fed: set[tuple[int, int]] = set()
    for b in batches:
        real = decode_real(b.x, features)
        if not batches.return_sequences:
            real = real[:, -1:]  # padding only follows data: a real last step, a full window
        fed |= {split(c) for c in real[real >= 0].tolist()}
    return fed


def check(case: Case, batches: seqbatch.StreamBatcher) -> None:
    outputs = identity_outputs(batches)
    by_series = batches.by_series(np.concatenate(outputs))
    as_list = batches.by_series(outputs)
    fed = fed_steps(batches, case.features)
    assert len(by_series) == len(case.lengths)
    for s, (out, other) in enumerate(zip(by_series, as_list, strict=True)):
        data = encoded_series(s, case.lengths[s], case.features, case.dtype)
        assert out.shape == data.shape
        assert out.dtype.newbyteorder("=") == batches.dtype.newbyteorder("=")
        steps = out.mask.reshape(len(data), -1)
        assert (steps.all(axis=1) == steps.any(axis=1)).all(), "a step is half masked"
        expected = np.array([(s, t) not in fed for t in range(len(data))], dtype=bool)
        assert np.array_equal(steps[:, 0], expected), f"series {s}: wrong steps masked"
        assert np.array_equal(out.data[~expected], data[~expected])
        assert np.array_equal(other.mask, out.mask) and np.array_equal(other.data, out.data)


@given(cases(fill=True))
def test_outputs_go_back_to_the_steps_they_came_from(case: Case) -> None:
    note(repr(case))
    batches = case.build()
    batches.set_epoch(case.epoch)
    check(case, batches)


@given(packed_cases(fill=True))
def test_packed_outputs_go_back_to_the_steps_they_came_from(case: PackCase) -> None:
    note(repr(case))
    batches = case.build()
    batches.set_epoch(case.epoch)
    check(case, batches)


def test_a_shard_gives_its_own_streams_back() -> None:
    series = [encoded_series(s, 12 + 5 * s, (), "float32") for s in range(4)]
    batches = seqbatch.StreamBatcher(series, batch_size=4, sequence_length=3, remainder="pad")
    shard = batches.shard(1, 2)  # streams 2 and 3
    out = shard.by_series(np.concatenate([b.x for b in shard]))
    held = {s for b in shard for s in b.series.tolist() if s >= 0}
    for s, o in enumerate(out):
        if s in held:
            usable = len(series[s]) - 1  # the last step has no target
            assert np.array_equal(o[:usable], series[s][:usable]) and o.mask[usable]
        else:
            assert o.mask.all()


def test_a_table_by_eye() -> None:
    # Two series of 7 and 4 steps, 2 streams of 3-step windows, padded; outputs are 10 * x.
    data = [np.arange(7.0), 100 + np.arange(4.0)]
    batches = seqbatch.StreamBatcher(data, batch_size=2, sequence_length=3, remainder="pad")
    outputs = [10 * b.x for b in batches]
    first, second = batches.by_series(outputs)
    assert first.filled(np.nan).tolist()[:6] == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    assert np.isnan(first.filled(np.nan)[6])  # step 6 has no target: never an input
    assert second.filled(-1).tolist() == [1000.0, 1010.0, 1020.0, -1]
    ends = seqbatch.StreamBatcher(
        data, batch_size=2, sequence_length=3, remainder="pad", return_sequences=False
    )
    last = ends.by_series([b.x[:, -1] for b in ends])
    # The last step of each full window: steps 2 and 5 of series 0, step 2 of series 1.
    assert np.flatnonzero(~last[0].mask).tolist() == [2, 5]
    assert np.flatnonzero(~last[1].mask).tolist() == [2]


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        (
            np.zeros((5, 3)),
            r"`outputs` must have 4 rows \(2 batches of 2 streams, as model.predict returns "
            r"them over the epoch\) when given as one array. Received: outputs of shape \(5, 3\)",
        ),
        (
            [np.zeros((2, 3))],
            r"`outputs` must be 2 arrays of 2 rows, one per batch of the epoch, when given as "
            r"a sequence. Received: 1 arrays of \[2\] rows",
        ),
        (
            np.zeros((4, 2)),
            r"`outputs` must have a time axis of `sequence_length` steps after the rows, as "
            r"the batches have return_sequences=True. Received: outputs of shape \(2, 2\) per "
            r"batch for sequence_length=3",
        ),
    ],
)
def test_outputs_of_another_epoch_shape_are_refused(outputs: Any, message: str) -> None:
    batches = seqbatch.StreamBatcher(np.arange(15.0), batch_size=2, sequence_length=3)
    with pytest.raises(ValueError, match=message):
        batches.by_series(outputs)
