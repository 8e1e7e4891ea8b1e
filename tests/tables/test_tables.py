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


def test_batches_compare_and_hash_by_identity() -> None:
    batches = seqbatch.StreamBatcher(np.arange(12), None, batch_size=2, sequence_length=3)
    b = batches[0]
    assert b == b and b != batches[0]  # no elementwise comparison, no ambiguous truth value
    assert len({b, b, batches[0]}) == 2
    assert hash(b) == hash(b)


def test_reprs_give_sizes_and_epoch_not_data() -> None:
    batches = seqbatch.StreamBatcher(
        np.zeros((10_000, 3), np.float32), batch_size=16, sequence_length=20, shuffle=True, seed=0
    )
    batches.set_epoch(2)
    assert repr(batches) == (
        "StreamBatcher(1 series, 31 batches of x (16, 20, 3) float32, y (16, 20, 3) float32, "
        "epoch 2, shuffled)"
    )
    assert repr(batches.shard(1, 4)) == (
        "StreamBatcher(1 series, 31 batches of x (4, 20, 3) float32, y (4, 20, 3) float32, "
        "epoch 2, shuffled, streams [4, 8) of 16)"
    )
    assert repr(batches.plan) == (
        "StreamPlan(1 series, layout='split', batch_size=16, sequence_length=20, "
        "remainder='drop', shuffle=True, epoch=2): 31 batches"
    )
    assert repr(batches[0]) == (
        "Batch(x (16, 20, 3) float32, y (16, 20, 3) float32, sample_weight (16, 20) float32, "
        "reset 16 of 16 streams)"
    )
    few = seqbatch.StreamBatcher(
        [np.arange(2), np.arange(6), np.arange(3)],
        None,
        batch_size=2,
        sequence_length=3,
        remainder="pad",
    )
    assert repr(few[1]) == (
        "Batch(x (2, 3) int64, y None, sample_weight (2, 3) float32, reset 1 of 2 streams, "
        "series [1 2], position [3 0])"
    )


def test_sample_weight_shape_follows_the_targets() -> None:
    # Per step, except with targets and return_sequences=False: one target, one weight a row.
    for targets, return_sequences, shape in [
        (None, True, (2, 3)),
        (None, False, (2, 3)),
        ("next", True, (2, 3)),
        ("next", False, (2,)),
    ]:
        b = seqbatch.StreamBatcher(
            np.arange(20.0),
            targets,
            batch_size=2,
            sequence_length=3,
            return_sequences=return_sequences,
            remainder="pad",
        )[-1]
        assert b.sample_weight.shape == shape, (targets, return_sequences)
    assert "Without targets it is always ``(B, W)``" in (seqbatch.Batch.__doc__ or "")


@pytest.mark.parametrize("name", ["bfloat16", "float8_e4m3fn", "float8_e5m2", "int4"])
def test_ml_dtypes_are_numbers(name: str) -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="installed with TensorFlow and JAX")
    dtype = np.dtype(getattr(ml_dtypes, name))
    data = np.arange(8).astype(dtype)  # small integers: exact in every one of them
    batches = seqbatch.StreamBatcher(data, batch_size=2, sequence_length=3, remainder="pad")
    first, last = batches
    assert first.x.dtype == first.y.dtype == last.x.dtype == dtype
    assert first.x.astype(np.int64).tolist() == [[0, 1, 2], [4, 5, 6]]
    assert first.y.astype(np.int64).tolist() == [[1, 2, 3], [5, 6, 7]]
    assert last.x.astype(np.int64).tolist() == [[3, 0, 0], [0, 0, 0]]
    assert last.y.astype(np.int64).tolist() == [[4, 0, 0], [0, 0, 0]]
    assert last.sample_weight.tolist() == [[1, 0, 0], [0, 0, 0]]
    assert str(dtype) in batches.describe()


@pytest.mark.parametrize("order", [">", "<"])
def test_byte_order_of_the_data_is_kept(order: str) -> None:
    data = np.arange(40).astype(np.dtype("i8").newbyteorder(order))
    b = seqbatch.StreamBatcher(data, batch_size=2, sequence_length=4)[1]
    assert b.x.dtype == data.dtype
    assert b.x.tolist() == [[4, 5, 6, 7], [20, 21, 22, 23]]


def test_shuffled_cut_of_one_series_takes_every_offset_of_a_window() -> None:
    # 4040 usable steps fill 101 batches of 4 x 10 exactly: the old shuffle had no room left
    # and cut every epoch at offset 0.
    batches = seqbatch.StreamBatcher(
        np.arange(4041), batch_size=4, sequence_length=10, shuffle=True, seed=0
    )
    offsets, sizes = set(), set()
    for epoch in range(60):
        batches.set_epoch(epoch)
        b = batches[0]
        offsets.add(int(b.position[0]))
        sizes.add(len(batches))
        assert b.x[0, 0] == b.position[0]
        a = batches.plan.accounting
        # One batch fewer than unshuffled (one window per stream), counted as dropped.
        assert (a.used, a.before_offset + a.dropped) == (4000, 40)
    assert offsets == set(range(10))
    assert sizes == {100}
    first = batches.describe().splitlines()[1]
    assert first.startswith(
        "layout: one series cut into contiguous streams (epoch 59, shuffled; varies by epoch: "
        "the cut offset, drawn from 0 to 9 (this epoch: "
    )


def test_a_shuffled_padded_cut_keeps_len_and_leaves_out_under_one_window() -> None:
    for epoch in range(20):
        batches = seqbatch.StreamBatcher(
            np.arange(101),
            None,
            batch_size=4,
            sequence_length=10,
            shuffle=True,
            seed=1,
            remainder="pad",
        )
        batches.set_epoch(epoch)
        a = batches.plan.accounting
        assert (len(batches), a.used, a.before_offset + a.dropped) == (3, 92, 9)
        assert batches[0].x[:, 0].tolist() == [a.before_offset + 23 * i for i in range(4)]


def test_describe_says_what_a_shuffle_varies() -> None:
    def first_line(data: object, **kwargs: object) -> str:
        batches = seqbatch.StreamBatcher(data, None, shuffle=True, seed=0, **kwargs)
        return batches.describe().splitlines()[1]

    assert first_line(np.arange(50), batch_size=2, sequence_length=1) == (
        "layout: one series cut into contiguous streams (epoch 0, shuffled; varies by epoch: "
        "nothing: windows of one step allow a single cut)"
    )
    assert first_line([np.arange(5), np.arange(7)], batch_size=2, sequence_length=2) == (
        "layout: 2 series dealt whole onto the streams (epoch 0, shuffled; varies by epoch: "
        "which stream holds which series, and in what order)"
    )
    assert first_line([np.arange(5)], batch_size=1, sequence_length=2) == (
        "layout: 1 series dealt whole onto the streams (epoch 0, shuffled; varies by epoch: "
        "nothing: one series on one stream)"
    )
