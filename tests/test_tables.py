"""Small tables of exact expected batches that a reader can check by eye.

Values are positions: series ``s`` holds ``100 * s + step`` (series 0 is ``np.arange``).
"""

from __future__ import annotations

import numpy as np
import pytest

import seqbatch


def rows(batches: seqbatch.StreamBatcher, field: str = "x") -> list[list]:
    return [getattr(b, field).tolist() for b in batches]


def test_one_series_cut_into_contiguous_streams() -> None:
    batches = seqbatch.StreamBatcher(np.arange(13), "next", batch_size=2, sequence_length=3)
    assert rows(batches) == [
        [[0, 1, 2], [6, 7, 8]],
        [[3, 4, 5], [9, 10, 11]],
    ]
    assert rows(batches, "y") == [
        [[1, 2, 3], [7, 8, 9]],
        [[4, 5, 6], [10, 11, 12]],
    ]
    assert rows(batches, "reset") == [[True, True], [False, False]]
    assert rows(batches, "position") == [[0, 6], [3, 9]]
    assert rows(batches, "series") == [[0, 0], [0, 0]]


def test_drop_reports_the_tail() -> None:
    batches = seqbatch.StreamBatcher(np.arange(17), None, batch_size=2, sequence_length=3)
    assert rows(batches) == [
        [[0, 1, 2], [6, 7, 8]],
        [[3, 4, 5], [9, 10, 11]],
    ]
    a = batches.plan.accounting
    assert (a.total, a.used, a.dropped, a.no_target, a.padded) == (17, 12, 5, 0, 0)


def test_pad_keeps_the_tail_behind_weight_zero() -> None:
    batches = seqbatch.StreamBatcher(
        np.arange(1, 12), None, batch_size=2, sequence_length=3, remainder="pad"
    )
    # 11 steps: stream 0 holds 6 of them, stream 1 the other 5, then one padded step.
    assert rows(batches) == [
        [[1, 2, 3], [7, 8, 9]],
        [[4, 5, 6], [10, 11, 0]],
    ]
    assert rows(batches, "sample_weight") == [
        [[1, 1, 1], [1, 1, 1]],
        [[1, 1, 1], [1, 1, 0]],
    ]
    assert batches.plan.accounting.padded == 1


def test_unequal_series_dealt_longest_first_onto_the_least_loaded_stream() -> None:
    data = [np.arange(5), 100 + np.arange(2), 200 + np.arange(4)]
    batches = seqbatch.StreamBatcher(data, None, batch_size=2, sequence_length=2, remainder="pad")
    # Windows: series 0 needs 3, series 2 needs 2, series 1 needs 1.
    # Series 0 -> stream 0; series 2 -> stream 1; series 1 -> stream 1 (load 2 < 3).
    assert batches.plan.assignment() == [[0], [1, 2]]
    assert rows(batches) == [
        [[0, 1], [100, 101]],
        [[2, 3], [200, 201]],
        [[4, 0], [202, 203]],
    ]
    assert rows(batches, "reset") == [[True, True], [False, True], [False, False]]
    assert rows(batches, "series") == [[0, 1], [0, 2], [0, 2]]
    assert rows(batches, "position") == [[0, 0], [2, 0], [4, 2]]
    assert rows(batches, "sample_weight") == [
        [[1, 1], [1, 1]],
        [[1, 1], [1, 1]],
        [[1, 0], [1, 1]],
    ]


def test_an_idle_stream_is_padding_with_provenance_minus_one() -> None:
    data = [np.arange(1, 7), 100 + np.arange(2)]
    batches = seqbatch.StreamBatcher(data, None, batch_size=2, sequence_length=2)
    assert rows(batches) == [
        [[1, 2], [100, 101]],
        [[3, 4], [0, 0]],
        [[5, 6], [0, 0]],
    ]
    assert rows(batches, "series") == [[0, 1], [0, -1], [0, -1]]
    assert rows(batches, "position") == [[0, 0], [2, -1], [4, -1]]
    assert rows(batches, "reset") == [[True, True], [False, False], [False, False]]


def test_concat_joins_the_series_into_one_stream_of_data() -> None:
    data = [np.arange(1, 4), 100 + np.arange(6)]
    batches = seqbatch.StreamBatcher(
        data, "next", batch_size=2, sequence_length=2, series_boundary="concat"
    )
    # Joined: 1 2 3 100 101 102 103 104 105; 8 steps have a next step: 2 streams of 4.
    assert rows(batches) == [
        [[1, 2], [101, 102]],
        [[3, 100], [103, 104]],
    ]
    assert rows(batches, "y") == [
        [[2, 3], [102, 103]],
        [[100, 101], [104, 105]],
    ]
    assert rows(batches, "reset") == [[True, True], [False, False]]
    assert rows(batches, "series") == [[0, 0], [0, 0]]
    assert rows(batches, "position") == [[0, 4], [2, 6]]
    a = batches.plan.accounting
    assert (a.total, a.used, a.no_target, a.dropped) == (9, 8, 1, 0)


def test_target_arrays_and_last_step_targets() -> None:
    x = np.arange(8)
    labels = 1000 + np.arange(8)
    batches = seqbatch.StreamBatcher(
        x, labels, batch_size=2, sequence_length=2, return_sequences=False
    )
    assert rows(batches) == [[[0, 1], [4, 5]], [[2, 3], [6, 7]]]
    assert rows(batches, "y") == [[1001, 1005], [1003, 1007]]
    assert rows(batches, "sample_weight") == [[1, 1], [1, 1]]


def test_k_steps_ahead() -> None:
    batches = seqbatch.StreamBatcher(np.arange(10), 3, batch_size=1, sequence_length=3)
    assert rows(batches) == [[[0, 1, 2]], [[3, 4, 5]]]
    assert rows(batches, "y") == [[[3, 4, 5]], [[6, 7, 8]]]
    assert batches.plan.accounting.no_target == 3
    assert batches.plan.accounting.dropped == 1


def test_the_keras_faq_batches() -> None:
    """The FAQ feeds (x[:, :10], x[:, 10]) then (x[:, 10:20], x[:, 20]) to 32 streams."""
    x = np.random.default_rng(0).random((32, 21, 16))
    batches = seqbatch.StreamBatcher(
        list(x), targets="next", return_sequences=False, batch_size=32, sequence_length=10
    )
    assert len(batches) == 2
    first, second = batches
    np.testing.assert_array_equal(first.x, x[:, :10])
    np.testing.assert_array_equal(first.y, x[:, 10])
    np.testing.assert_array_equal(second.x, x[:, 10:20])
    np.testing.assert_array_equal(second.y, x[:, 20])
    assert first.reset.all() and not second.reset.any()


def test_features_and_dtype_are_kept() -> None:
    data = np.arange(2 * 3 * 8, dtype=np.int16).reshape(8, 2, 3)
    b = seqbatch.StreamBatcher(data, None, batch_size=2, sequence_length=2)[1]
    assert b.x.dtype == np.int16
    assert b.x.shape == (2, 2, 2, 3)
    np.testing.assert_array_equal(b.x[1], data[6:8])


def test_a_zero_copy_batch_is_read_only_and_aliases_the_data() -> None:
    data = np.arange(40.0).reshape(20, 2)
    b = seqbatch.StreamBatcher(data, "next", batch_size=2, sequence_length=3)[2]
    assert np.shares_memory(b.x, data)
    assert not b.x.flags.writeable
    np.testing.assert_array_equal(b.x, np.stack([data[6:9], data[15:18]]))
    np.testing.assert_array_equal(b.y, np.stack([data[7:10], data[16:19]]))


def test_sequence_protocol() -> None:
    batches = seqbatch.StreamBatcher(np.arange(12), None, batch_size=2, sequence_length=2)
    assert len(batches) == 3
    assert batches[-1].position.tolist() == batches[2].position.tolist() == [4, 10]
    assert [b.position.tolist() for b in batches[1:]] == [[2, 8], [4, 10]]
    for bad in (3, -4):
        with pytest.raises(IndexError, match=f"batch index out of range. Received: {bad} for 3"):
            batches[bad]
    with pytest.raises(TypeError, match="batch indices must be integers"):
        batches[1.0]  # type: ignore[call-overload]
    assert [b.position.tolist() for b in batches] == [[0, 6], [2, 8], [4, 10]]
