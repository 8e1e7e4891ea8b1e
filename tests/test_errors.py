"""Bad input fails at construction with a message naming the argument, the rule and the value."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

import seqbatch

SERIES = np.arange(100.0).reshape(50, 2)

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
        "`sequence_length` must be a positive integer. Received: sequence_length=2.5",
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
        "`data` must hold numbers (bool, integer, float or complex). Received: data with dtype <U1",
    ),
    (
        "objects in a list of series",
        {"data": [np.arange(10), np.array([None] * 10)], "batch_size": 2, "sequence_length": 2},
        TypeError,
        "`data[1]` must hold numbers (bool, integer, float or complex). Received: data[1] with "
        "dtype object",
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
        "many arrays for a list. Received: 1 series in data and 2 in targets",
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
