"""``StreamBatcher.series_end(j)``: where series j's last input step sits, read back from x.

The data encodes its own position (``tests.encoded``), so the batch, stream and step that
``series_end`` names must hold exactly series j's last step, and no later slot of the epoch
may hold a later step of it. The run it names must start at a reset flag of that stream and
continue, flag-free, up to that step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import seqbatch
from tests.encoded import SERIES_STRIDE, encoded_series

W = 4


def codes(b: seqbatch.Batch) -> np.ndarray:
    return np.rint(b.x[..., 0]).astype(np.int64)


def step_flags(b: seqbatch.Batch) -> np.ndarray:
    if b.step_reset is not None:
        return b.step_reset
    flags = np.zeros(b.x.shape[:2], dtype=bool)
    flags[:, 0] = b.reset
    return flags


CASES: dict[str, dict[str, Any]] = {
    "whole, padded": dict(lengths=[13, 9, 6, 11, 5, 7], remainder="pad"),
    "whole, dropped": dict(lengths=[13, 9, 6, 11, 5, 7]),
    "whole, shuffled epoch 1": dict(lengths=[13, 9, 6, 11, 5, 7], shuffle=True, epoch=1),
    "packed": dict(lengths=[13, 9, 6, 11, 5, 7], series_boundary="pack", remainder="pad"),
    "packed, dropped": dict(lengths=[13, 9, 6, 11, 5, 7], series_boundary="pack"),
    "joined end to end": dict(lengths=[13, 9, 6], series_boundary="concat", remainder="pad"),
    "one series, padded": dict(lengths=[61], remainder="pad"),
    "one series, aligned at the end": dict(lengths=[61], align="end"),
    "a shard": dict(lengths=[13, 9, 6, 11, 5, 7, 8, 4], remainder="pad", batch_size=4, shard=1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_series_end_names_the_last_step_of_every_series(case: str) -> None:
    options = dict(CASES[case])
    lengths = options.pop("lengths")
    epoch, shard = options.pop("epoch", 0), options.pop("shard", None)
    options.setdefault("batch_size", 3)
    data = [encoded_series(s, n, (1,), "float64") for s, n in enumerate(lengths)]
    batches = seqbatch.StreamBatcher(
        data if len(data) > 1 else data[0], None, sequence_length=W, **options
    )
    if shard is not None:
        batches = batches.shard(shard, 2)
    batches.set_epoch(epoch)
    all_codes = np.stack([codes(b) for b in batches])  # (n, B, W)
    flags = np.stack([step_flags(b) for b in batches])
    checked = 0
    for j in range(len(lengths)):
        mine = (all_codes // SERIES_STRIDE == j + 1) & (all_codes > 0)
        if not mine.any():
            with pytest.raises(ValueError, match=r"`series` must have steps in the batches"):
                batches.series_end(j)
            continue
        end = batches.series_end(j)
        last = int(all_codes[mine].max())
        assert all_codes[end.batch, end.stream, end.step] == last
        assert end.position == last - SERIES_STRIDE * (j + 1)
        # The run: a flag at its first step, none after it up to the end, every step real.
        run = [
            (k, t)
            for k in range(end.first_batch, end.batch + 1)
            for t in range(W)
            if (k, t) >= (end.first_batch, end.first_step) and (k, t) <= (end.batch, end.step)
        ]
        row_flags = [bool(flags[k, end.stream, t]) for k, t in run]
        assert row_flags[0] and not any(row_flags[1:]), row_flags
        assert all(all_codes[k, end.stream, t] > 0 for k, t in run)
        checked += 1
    assert checked >= 1


def test_series_end_checks_its_argument() -> None:
    batches = seqbatch.StreamBatcher(
        [np.ones(5), np.ones(6)], None, batch_size=2, sequence_length=2
    )
    with pytest.raises(TypeError, match=r"`series` must be an integer. Received: series=1.0"):
        batches.series_end(1.0)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError,
        match=r"`series` must be the index of one of the 2 series of the data. Received: series=2",
    ):
        batches.series_end(2)
