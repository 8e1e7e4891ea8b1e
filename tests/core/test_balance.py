"""The work of each rank (seqbatch.balance, ``describe(ranks=...)``): what each shard serves.

Each rank's real steps are counted here from the batches its shard serves (the weights of
every real step a loss would count), never from the plan, and compared with what
``rank_balance`` and ``describe`` report.
"""

from __future__ import annotations

import numpy as np
import pytest

import seqbatch
from seqbatch.balance import rank_balance
from tests.encoded import encoded_series

LENGTHS = [41, 37, 30, 26, 22, 19, 15, 12, 9, 7, 33, 5, 28, 17]


def packed(**kwargs: object) -> seqbatch.StreamBatcher:
    data = [encoded_series(s, n, (1,), "float32") for s, n in enumerate(LENGTHS)]
    options = {"batch_size": 8, "sequence_length": 6, "remainder": "pad", "seed": 3, **kwargs}
    return seqbatch.StreamBatcher(data, series_boundary="pack", **options)  # type: ignore[arg-type]


def served_steps(batches: seqbatch.StreamBatcher, ranks: int) -> list[int]:
    """The real steps each rank's shard serves over the epoch, from its batches' weights."""
    steps = []
    for r in range(ranks):
        shard = batches.shard(r, ranks)
        steps.append(int(sum((b.sample_weight > 0).sum() for b in shard)))
    return steps


@pytest.mark.parametrize("ranks", [1, 2, 4, 8])
@pytest.mark.parametrize("epoch", [0, 1])
def test_each_rank_steps_are_those_its_shard_serves(ranks: int, epoch: int) -> None:
    batches = packed(shuffle=True)
    batches.set_epoch(epoch)
    served = served_steps(batches, ranks)
    balance = rank_balance(batches.plan, ranks)
    assert balance.steps.tolist() == served
    assert sum(served) == sum(n - 1 for n in LENGTHS)  # every step with a target, once
    assert (balance.most, balance.least) == (max(served), min(served))
    assert balance.imbalance == max(served) / min(served)


def test_describe_reports_the_most_and_least_loaded_rank() -> None:
    batches = packed()
    served = served_steps(batches, 4)
    line = batches.describe(ranks=4).splitlines()[-1]
    assert line == (
        f"ranks: 4 of 2 streams each; real steps per rank: most {max(served):,}, least "
        f"{min(served):,} (most / least {max(served) / min(served):.6f})"
    )
    assert "ranks" not in batches.describe()
    # A shard reports on the whole plan's ranks, as every rank computes it.
    assert batches.shard(1, 2).describe(ranks=4).splitlines()[-1] == line


def test_a_rank_without_real_steps_is_an_infinite_imbalance() -> None:
    # A plan always gives every stream a series; a plan-like object may not.
    class Plan:
        batch_size = 4

        def stream_steps(self) -> np.ndarray:
            return np.array([5, 0, 0, 0])

    balance = rank_balance(Plan(), 2)
    assert balance.steps.tolist() == [5, 0]
    assert balance.imbalance == float("inf")


@pytest.mark.parametrize(
    ("ranks", "error", "message"),
    [
        (
            3,
            ValueError,
            "`ranks` must divide the batch size, as shard deals the streams. "
            "Received: ranks=3 for batch_size=8",
        ),
        (0, ValueError, "`ranks` must be a positive integer. Received: ranks=0"),
        (2.0, TypeError, "`ranks` must be a positive integer. Received: ranks=2.0"),
    ],
)
def test_ranks_that_shard_cannot_deal_are_refused(
    ranks: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as err:
        packed().describe(ranks=ranks)  # type: ignore[arg-type]
    assert str(err.value) == message
