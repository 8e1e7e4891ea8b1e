"""Bad input fails at construction with a message naming the argument, the rule and the value."""

from __future__ import annotations

import re
import tracemalloc
from typing import Any

import numpy as np
import pytest

import seqbatch

SERIES = np.arange(100.0).reshape(50, 2)


class NoDtype:
    """A sliceable that does not say its dtype: np.dtype(None) would read it as float64."""

    shape = (50, 2)
    dtype = None

    def __getitem__(self, key: slice) -> np.ndarray:
        return SERIES[key]


CASES: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    (
        "zero batch size",
        {"batch_size": 0},
        ValueError,
        "`batch_size` must be a positive integer. Received: batch_size=0",
    ),
    (
        "negative window",
        {"sequence_length": -3},
        ValueError,
        "`sequence_length` must be a positive integer. Received: sequence_length=-3",
    ),
    (
        "float window",
        {"sequence_length": 2.5},
        TypeError,
        "`sequence_length` must be a positive integer or a callable (epoch, k) -> int. "
        "Received: sequence_length=2.5",
    ),
    (
        "bool batch size",
        {"batch_size": True},
        TypeError,
        "`batch_size` must be a positive integer. Received: batch_size=True",
    ),
    (
        "unknown remainder",
        {"remainder": "truncate"},
        ValueError,
        "`remainder` must be one of 'drop', 'pad'. Received: remainder='truncate'",
    ),
    (
        "unknown series boundary",
        {"series_boundary": "join"},
        ValueError,
        "`series_boundary` must be one of 'reset', 'concat', 'pack'. Received: "
        "series_boundary='join'",
    ),
    (
        "truthy shuffle",
        {"shuffle": 1},
        TypeError,
        "`shuffle` must be True or False. Received: shuffle=1",
    ),
    (
        "negative seed",
        {"seed": -1},
        ValueError,
        "`seed` must be a non-negative integer. Received: seed=-1",
    ),
    (
        "a seed of 2**64",
        {"seed": 2**64},
        ValueError,
        "`seed` must be less than 2**63, so that a checkpoint's int64 holds it. Received: "
        f"seed={2**64}",
    ),
    (
        "a seed of 2**63",
        {"seed": 2**63},
        ValueError,
        f"`seed` must be less than 2**63, so that a checkpoint's int64 holds it. Received: seed={2**63}",
    ),
    (
        "return_sequences not a bool",
        {"return_sequences": "yes"},
        TypeError,
        "`return_sequences` must be True or False. Received: return_sequences='yes'",
    ),
    (
        "unknown targets word",
        {"targets": "previous"},
        ValueError,
        "`targets` must be None, 'next', a positive integer or target arrays (a path to a "
        ".npy file ends in '.npy'). Received: targets='previous'",
    ),
    (
        "zero steps ahead",
        {"targets": 0},
        ValueError,
        "`targets` must be at least 1 when given as steps ahead. Received: targets=0",
    ),
    (
        "bool targets",
        {"targets": True},
        TypeError,
        "`targets` must be None, 'next', a positive integer or target arrays. "
        "Received: targets=True",
    ),
    (
        "more streams than one series can fill",
        {"batch_size": 8, "sequence_length": 7},
        ValueError,
        "`batch_size * sequence_length` must not exceed the usable steps of the series (49) "
        "when remainder='drop'. Received: batch_size=8, sequence_length=7",
    ),
    (
        "more streams than steps with padding",
        {"batch_size": 60, "sequence_length": 1, "remainder": "pad"},
        ValueError,
        "`batch_size` must not exceed the usable steps of the series (49): every stream needs "
        "at least one step. Received: batch_size=60",
    ),
    (
        "more streams than series",
        {"data": [SERIES, SERIES], "batch_size": 3, "sequence_length": 2},
        ValueError,
        "`batch_size` must not exceed the number of series when series_boundary='reset', since "
        "a series never leaves its stream. Received: batch_size=3 for 2 series",
    ),
    (
        "series shorter than one window",
        {"data": [SERIES, SERIES[:5]], "batch_size": 2, "sequence_length": 6},
        ValueError,
        "Every series must have at least `sequence_length` usable steps when remainder='drop'. "
        "Received: sequence_length=6, but series 1 has 4 usable steps",
    ),
    (
        "series with no step that has a target",
        {"data": [SERIES, SERIES[:2]], "targets": 2, "batch_size": 2, "sequence_length": 1},
        ValueError,
        "Every series must be longer than `targets` steps ahead, or no step has a target. "
        "Received: targets=2, but series 1 has 2 steps",
    ),
    (
        "empty list",
        {"data": []},
        ValueError,
        "`data` must hold at least one series. Received: data=[]",
    ),
    (
        "empty series",
        {"data": np.zeros((0, 3))},
        ValueError,
        "`data` must not be empty. Received: data with shape (0, 3)",
    ),
    (
        "scalar",
        {"data": np.float64(3.0)},
        ValueError,
        "`data` must have a time axis: shape (steps, *features). Received: data with shape ()",
    ),
    (
        "ragged features",
        {"data": [np.zeros((10, 3)), np.zeros((10, 4))], "batch_size": 2, "sequence_length": 2},
        ValueError,
        "All series in `data` must have the same feature shape. Received: data[0] with shape "
        "(10, 3) and data[1] with shape (10, 4)",
    ),
    (
        "mixed dtypes",
        {
            "data": [np.zeros((10, 3)), np.zeros((10, 3), np.float32)],
            "batch_size": 2,
            "sequence_length": 2,
        },
        TypeError,
        "All series in `data` must have the same dtype (it is kept, never cast). Received: "
        "data[0] with dtype float64 and data[1] with dtype float32",
    ),
    (
        "strings",
        {"data": np.array(["a", "b", "c"])},
        TypeError,
        "`data` must hold numbers (bool, integer, float or complex; ml_dtypes' bfloat16 and "
        "float8 too). Received: data with dtype <U1",
    ),
    (
        "objects in a list of series",
        {"data": [np.arange(10), np.array([None] * 10)], "batch_size": 2, "sequence_length": 2},
        TypeError,
        "`data[1]` must hold numbers (bool, integer, float or complex; ml_dtypes' bfloat16 and "
        "float8 too). Received: data[1] with dtype object",
    ),
    (
        "targets of another length",
        {"targets": np.zeros(49)},
        ValueError,
        "Every target array must have as many steps as its series. Received: series 0 with 50 "
        "steps and targets 0 with 49 steps",
    ),
    (
        "targets of another structure",
        {"targets": [np.zeros(50), np.zeros(50)]},
        ValueError,
        "`targets` must have the structure of `data`: one array for one series, a list of as "
        "many arrays for a list. Received: one array as data and a list of 2 arrays as targets",
    ),
    (
        "one array as data, a list of one array as targets",
        {"targets": [np.zeros(50)]},
        ValueError,
        "`targets` must have the structure of `data`: one array for one series, a list of as "
        "many arrays for a list. Received: one array as data and a list of 1 array as targets",
    ),
    (
        "float targets",
        {"targets": 1.0},
        TypeError,
        "`targets` must be None, 'next', a positive integer or target arrays. "
        "Received: targets=1.0",
    ),
    (
        "a list of numbers",
        {"data": [1.0, 2.0, 3.0]},
        TypeError,
        "`data` must be one array, or a list of arrays with one series each. Received: a list "
        "of 3 numbers (for one series, pass np.asarray(data))",
    ),
    (
        "a masked array",
        {"data": np.ma.masked_array(SERIES, mask=SERIES > 90)},
        TypeError,
        "`data` must not be a masked array: its mask would be ignored and the masked steps fed "
        "as data. Received: data of type MaskedArray (pass data.filled(value), or the unmasked "
        "stretches as separate series with remainder='pad')",
    ),
    (
        "a sliceable whose dtype is None",
        {"data": NoDtype()},
        TypeError,
        "`data` must have a numpy dtype. Received: data of type NoDtype with dtype None",
    ),
    (
        "a window longer than the series, padded",
        {"sequence_length": 50_000_000, "remainder": "pad"},
        ValueError,
        "`sequence_length` must not exceed the longest series when remainder='pad'. Received: "
        "sequence_length=50000000 for series of at most 49 usable steps: the batches would "
        "hold 49 steps of data and 199999951 slots of padding (over 99.99% padding)",
    ),
    (
        "a window of 10**12 steps, padded",
        {"sequence_length": 10**12, "remainder": "pad"},
        ValueError,
        "Received: sequence_length=1000000000000 for series of at most 49 usable steps: the "
        "batches would hold 49 steps of data and 3999999999951 slots of padding",
    ),
    (
        "a window of 2**63 steps, padded",
        {"sequence_length": 2**63, "remainder": "pad"},
        ValueError,
        f"Received: sequence_length={2**63} for series of at most 49 usable steps",
    ),
    (
        "a window of 2**63 steps",
        {"sequence_length": 2**63},
        ValueError,
        "`batch_size * sequence_length` must not exceed the usable steps of the series (49)",
    ),
    (
        "a window just longer than every series of a list, padded",
        {"data": [SERIES, SERIES[:30]], "batch_size": 2, "sequence_length": 50, "remainder": "pad"},
        ValueError,
        "Received: sequence_length=50 for series of at most 49 usable steps: the batches would "
        "hold 78 steps of data and 22 slots of padding (22.00% padding)",
    ),
    (
        "more streams than a shuffled cut can fill",
        {"batch_size": 4, "sequence_length": 12, "shuffle": True},
        ValueError,
        "`batch_size * sequence_length + sequence_length - 1` must not exceed the usable steps "
        "of the series (49) when remainder='drop' and shuffle=True (a shuffled cut starts up to "
        "sequence_length - 1 steps in). Received: batch_size=4, sequence_length=12",
    ),
    (
        "more streams than steps in a shuffled cut, padded",
        {"batch_size": 46, "sequence_length": 5, "shuffle": True, "remainder": "pad"},
        ValueError,
        "`batch_size + sequence_length - 1` must not exceed the usable steps of the series (49) "
        "when shuffle=True (a shuffled cut starts up to sequence_length - 1 steps in): every "
        "stream needs at least one step. Received: batch_size=46, sequence_length=5",
    ),
    (
        "a generator of series",
        {"data": (SERIES[i::2] for i in range(2)), "batch_size": 2, "sequence_length": 2},
        TypeError,
        "`data` must be an array, or a list or tuple of arrays with one series each. Received: "
        "data of type generator, which is not supported (it is read once, and batches are read "
        "by index: pass list(data))",
    ),
    (
        "a dict of series",
        {"data": {"a": SERIES, "b": SERIES}, "batch_size": 2, "sequence_length": 2},
        TypeError,
        "`data` must be an array, or a list or tuple of arrays with one series each. Received: "
        "data of type dict, which is not supported (pass list(data.values()), its values as "
        "series in the dict's order)",
    ),
    (
        "a dict among the series",
        {"data": [SERIES, {"b": SERIES}], "batch_size": 2, "sequence_length": 2},
        TypeError,
        "`data[1]` must be an array, or a list or tuple of arrays with one series each. "
        "Received: data[1] of type dict, which is not supported (pass list(data[1].values()), "
        "its values as series in the dict's order)",
    ),
    (
        "a set of series",
        {"data": {1.0, 2.0}},
        TypeError,
        "Received: data of type set, which is not supported (it has no order: pass a list)",
    ),
    (
        "targets as a map object",
        {"targets": map(np.negative, [SERIES])},
        TypeError,
        "`targets` must be an array, or a list or tuple of arrays with one series each. "
        "Received: targets of type map, which is not supported (it is read once, and batches "
        "are read by index: pass list(targets))",
    ),
    (
        "a path that is not a .npy file",
        {"data": "/nonexistent/series.npy"},
        ValueError,
        "`data` must be a readable .npy file when given as a path. Received: "
        "data='/nonexistent/series.npy'",
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input_is_named_before_any_work(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    args: dict[str, Any] = {
        "data": SERIES,
        "targets": "next",
        "batch_size": 4,
        "sequence_length": 5,
    }
    args.update(kwargs)
    data = args.pop("data")
    targets = args.pop("targets")
    with pytest.raises(error, match=re.escape(message)):
        seqbatch.StreamBatcher(data, targets, **args)


def test_shard_arguments() -> None:
    batches = seqbatch.StreamBatcher(SERIES, batch_size=4, sequence_length=5)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`count` must divide the batch size, so that every worker gets as many streams. Received: count=3 for batch_size=4"
        ),
    ):
        batches.shard(0, 3)
    with pytest.raises(
        ValueError, match=re.escape("`index` must be less than `count`. Received: index=2, count=2")
    ):
        batches.shard(2, 2)
    with pytest.raises(
        ValueError, match=re.escape("`count` must be a positive integer. Received: count=0")
    ):
        batches.shard(0, 0)
    with pytest.raises(
        ValueError, match=re.escape("`epoch` must be a non-negative integer. Received: epoch=-1")
    ):
        batches.set_epoch(-1)


def test_an_archive_is_not_a_series(tmp_path: Any) -> None:
    path = tmp_path / "two.npz"
    np.savez(path, a=np.arange(3))
    with pytest.raises(
        ValueError, match=re.escape("`data` must be a .npy file holding one array, not an archive.")
    ):
        seqbatch.StreamBatcher(str(path))


class OtherTensor:
    """A tensor of a framework that seqbatch does not know: its own dtype, and .numpy()."""

    shape = (50, 2)
    dtype = "other.float64"

    def __getitem__(self, key: slice) -> np.ndarray:
        return SERIES[key]

    def numpy(self) -> np.ndarray:
        return SERIES


def test_a_tensor_of_another_framework_is_refused_with_its_numpy_method() -> None:
    # torch and TensorFlow tensors are read in place (tests/core/test_tensors.py); others are not.
    message = (
        "`data` must have a numpy dtype. Received: data of type OtherTensor with dtype "
        "'other.float64' (pass data.numpy())"
    )
    with pytest.raises(TypeError, match=re.escape(message)):
        seqbatch.StreamBatcher(OtherTensor(), batch_size=4, sequence_length=5)
    with pytest.raises(TypeError, match=re.escape(message.replace("data", "data[1]"))):
        seqbatch.StreamBatcher([SERIES, OtherTensor()], batch_size=2, sequence_length=5)


@pytest.mark.parametrize("next_batch", [13, 14, 10**6])
def test_a_position_past_the_end_of_the_epoch_is_refused(next_batch: int) -> None:
    batches = seqbatch.StreamBatcher(SERIES, batch_size=4, sequence_length=1)
    assert len(batches) == 12
    with pytest.raises(ValueError) as err:
        batches.state_dict(next_batch=next_batch)
    assert str(err.value) == (
        "`next_batch` must be at most the number of batches per epoch (that number itself "
        f"means the epoch is over). Received: next_batch={next_batch} for 12 batches"
    )
    # The number of batches itself is the end of the epoch: the next one starts at 0.
    at_end = batches.state_dict(epoch=2, next_batch=12)
    assert (at_end["epoch"], at_end["next_batch"]) == (3, 0)


def test_the_largest_seed_is_kept_and_a_saved_seed_past_it_is_refused() -> None:
    batches = seqbatch.StreamBatcher(SERIES, batch_size=4, sequence_length=5, seed=2**63 - 1)
    state = batches.state_dict()
    assert state["seed"] == 2**63 - 1
    with pytest.raises(ValueError) as err:
        batches.load_state_dict({**state, "seed": 2**64})
    assert str(err.value) == (
        "`state['seed']` must be less than 2**63, so that a checkpoint's int64 holds it. "
        f"Received: state['seed']={2**64}"
    )


def test_outputs_with_a_time_axis_are_refused_for_last_step_batches() -> None:
    batches = seqbatch.StreamBatcher(
        np.arange(30.0)[:, None], batch_size=2, sequence_length=3, return_sequences=False
    )
    n = len(batches) * 2
    with pytest.raises(ValueError) as err:
        batches.by_series(np.zeros((n, 3, 1)))  # a model with return_sequences=True
    assert str(err.value) == (
        "`outputs` must have one output per window, without a time axis, as the batches have "
        "return_sequences=False. Received: outputs of shape (2, 3, 1) per batch, whose axis 1 "
        "has sequence_length=3 steps (pass outputs[:, -1], the output at each window's last "
        "step, or build the batcher with return_sequences=True)"
    )
    # The fix it names: the output of each window's last step goes to that step.
    steps = np.arange(n * 3, dtype=float).reshape(n, 3, 1)
    out = batches.by_series(steps[:, -1])[0]
    assert out.shape == (30, 1) and int((~out.mask).sum()) == n
    # Outputs shaped as the targets are kept, even when their first axis has W entries.
    wide = seqbatch.StreamBatcher(
        np.zeros((30, 3, 1)), batch_size=2, sequence_length=3, return_sequences=False
    )
    assert wide.by_series(np.zeros((len(wide) * 2, 3, 1)))[0].shape == (30, 3, 1)


def test_plan_arguments_are_integers() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape(
            "`lengths` must be a non-empty list of positive integers. Received: lengths=[10.7]"
        ),
    ):
        seqbatch.StreamPlan([10.7], batch_size=1, sequence_length=2, layout="split")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`lengths` must be a non-empty list of positive integers. Received: lengths=[]"
        ),
    ):
        seqbatch.StreamPlan([], batch_size=1, sequence_length=2, layout="whole")
    plan = seqbatch.StreamPlan([10], batch_size=1, sequence_length=2, layout="split")
    for k in (1.5, 1.0, True):
        with pytest.raises(
            TypeError, match=re.escape(f"`k` must be an integer. Received: k={k!r}")
        ):
            plan.window(k)  # type: ignore[arg-type]
    assert plan.window(np.int64(1)).start.tolist() == [2]


class Huge:
    """A series of 10**9 steps that is never read: slicing it fails the test."""

    shape = (10**9,)
    dtype = np.dtype(np.float32)

    def __getitem__(self, key: slice) -> np.ndarray:
        raise AssertionError(f"read {key!r} before any batch was asked for")


def test_nothing_the_size_of_a_window_is_allocated_before_the_first_batch() -> None:
    # 4 streams of windows of 10**7 steps: a batch is 160 MB; building the batcher (and a
    # shard, and its description) allocates nothing of that size.
    tracemalloc.start()
    try:
        batches = seqbatch.StreamBatcher(
            Huge(), None, batch_size=4, sequence_length=10**7, remainder="pad"
        )
        batches.shard(1, 2).describe()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(batches) == 25
    assert peak < 1_000_000, f"{peak} bytes allocated at construction"


def test_an_input_context_with_more_pipelines_than_replicas() -> None:
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is in the test extra")
    from seqbatch.tf import to_dataset

    batches = seqbatch.StreamBatcher(SERIES, batch_size=4, sequence_length=5)
    for pipelines, replicas in ((4, 2), (2, 3)):
        context = tf.distribute.InputContext(pipelines, 0, replicas)
        with pytest.raises(
            ValueError,
            match=re.escape(
                "`input_context` must have a number of replicas that is a multiple of its "
                "number of input pipelines, so that each pipeline feeds whole replicas. "
                f"Received: input_context with num_input_pipelines={pipelines} and "
                f"num_replicas_in_sync={replicas}"
            ),
        ):
            to_dataset(batches, input_context=context)
