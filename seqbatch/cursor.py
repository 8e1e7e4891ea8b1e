"""The cursor: where a loop over a batcher stands, apart from the batches themselves.

A :class:`Cursor` is three integers: the epoch, the batch that comes next (the one after the
last batch handed over), and the batch that every pass over the epoch starts at (0, or a
restored position until a pass hands over the epoch's last batch). It is all that
``state_dict`` saves of a loop besides the seed and the fingerprint, and all that iteration,
:meth:`~seqbatch.StreamBatcher.set_epoch` and ``load_state_dict`` change.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class Cursor:
    """The position of a loop: ``epoch``, ``next_batch`` and ``resume_at``.

    Examples:
        >>> c = Cursor()
        >>> c.restore(2, 3)
        >>> list(c.walk(5)), c.epoch, c.next_batch, c.resume_at
        ([3, 4], 2, 5, 0)
        >>> c.set_epoch(3)
        >>> c.epoch, c.next_batch, c.resume_at
        (3, 0, 0)
    """

    epoch: int = 0
    next_batch: int = 0
    resume_at: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch``; the same epoch keeps its position (a restored one too)."""
        if epoch != self.epoch:
            self.epoch, self.next_batch, self.resume_at = epoch, 0, 0

    def restore(self, epoch: int, next_batch: int) -> None:
        """Stand at ``next_batch`` of ``epoch``: every pass over it starts there, until one
        hands over the epoch's last batch."""
        self.set_epoch(epoch)
        self.next_batch = self.resume_at = next_batch

    def walk(self, n: int) -> Iterator[int]:
        """The batches of one pass over an epoch of ``n`` batches, counted as handed over.

        The pass starts at once: ``next_batch`` is its first batch before any is handed over.
        """
        self.next_batch = self.resume_at
        return self._from(self.resume_at, n)

    def _from(self, first: int, n: int) -> Iterator[int]:
        for k in range(first, n):
            # Counted as the batch is handed over: a checkpoint taken while the loop holds
            # batch k goes on at k + 1.
            self.next_batch = k + 1
            if k == n - 1:
                # The restored position has been served to the end of its epoch. Not
                # before: a pass left early (a peek at the first batch, a loop that breaks)
                # leaves the next pass to start there again, as the torch sampler does.
                self.resume_at = 0
            yield k
