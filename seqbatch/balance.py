"""The work of each rank: the real steps of its streams, as ``shard`` deals them.

Every rank of a distributed job has the plan's number of batches (``shard`` gives each the
same), so no rank waits at the last batch for want of batches; what can differ is the work in
them, the real steps (the rest is padding). The plan balances the streams as it lays out the
series (with ``series_boundary="pack"``, every stream is filled to about the same length),
and rank ``r`` of ``n`` holds streams ``[r * B / n, (r + 1) * B / n)``: this module adds up
each rank's real steps from the plan alone, without reading any data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from seqbatch import _checks


@dataclass(frozen=True)
class RankBalance:
    """The real steps of each rank's streams over one epoch.

    Attributes:
        steps: ``(ranks,)`` int64, the real steps of each rank.
        streams_per_rank: the streams each rank holds, ``batch_size // ranks``.
    """

    steps: np.ndarray
    streams_per_rank: int

    @property
    def ranks(self) -> int:
        """The number of ranks."""
        return int(self.steps.size)

    @property
    def most(self) -> int:
        """The real steps of the most loaded rank."""
        return int(self.steps.max())

    @property
    def least(self) -> int:
        """The real steps of the least loaded rank."""
        return int(self.steps.min())

    @property
    def imbalance(self) -> float:
        """``most / least``: 1.0 when every rank does the same work (inf if one has none)."""
        return float(self.most / self.least) if self.least else float("inf")

    def describe(self) -> str:
        """One line: the ranks, their streams, and the most and least loaded rank's steps.

        Examples:
            >>> import seqbatch
            >>> plan = seqbatch.StreamPlan([9, 7, 6], batch_size=3, sequence_length=4,
            ...                            layout="whole", remainder="pad")
            >>> print(rank_balance(plan, 3).describe())
            ranks: 3 of 1 stream each; real steps per rank: most 9, least 6 (most / least 1.500000)
        """
        streams = f"{self.streams_per_rank} stream{'' if self.streams_per_rank == 1 else 's'}"
        return (
            f"ranks: {self.ranks} of {streams} each; real steps per rank: "
            f"most {self.most:,}, least {self.least:,} (most / least {self.imbalance:.6f})"
        )


def rank_balance(plan: Any, ranks: int) -> RankBalance:
    """The real steps of each of ``ranks`` ranks in ``plan``'s epoch, as ``shard`` deals them.

    Args:
        plan: a :class:`~seqbatch.StreamPlan` (a batcher's ``plan``: its whole batch, also for
            a shard), or anything with ``stream_steps()`` and ``batch_size``.
        ranks: the number of ranks; it must divide the batch size.

    Raises:
        TypeError, ValueError: ``ranks`` is not a positive integer that divides the batch size.

    Examples:
        >>> import numpy as np, seqbatch
        >>> plan = seqbatch.StreamPlan([9, 7, 6, 5, 3, 2], batch_size=4, sequence_length=4,
        ...                            layout="pack", remainder="pad")
        >>> plan.stream_steps().tolist()
        [9, 7, 8, 8]
        >>> rank_balance(plan, 2).steps.tolist()
        [16, 16]
        >>> balance = rank_balance(plan, 4)
        >>> balance.most, balance.least, round(balance.imbalance, 3)
        (9, 7, 1.286)
        >>> rank_balance(plan, 3)
        Traceback (most recent call last):
        ...
        ValueError: `ranks` must divide the batch size, as shard deals the streams. Received: ranks=3 for batch_size=4
    """
    ranks = _checks.positive_int("ranks", ranks)
    batch_size = int(plan.batch_size)
    if batch_size % ranks:
        raise ValueError(
            "`ranks` must divide the batch size, as shard deals the streams. Received: "
            f"ranks={ranks} for batch_size={batch_size}"
        )
    per_stream = np.asarray(plan.stream_steps(), dtype=np.int64)
    steps = per_stream.reshape(ranks, batch_size // ranks).sum(axis=1)
    return RankBalance(steps=steps, streams_per_rank=batch_size // ranks)
