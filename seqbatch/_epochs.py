"""A batcher at any epoch, for adapters whose reads say which epoch they belong to.

The torch and grain adapters read batch ``k`` of epoch ``e`` from keys that carry ``e``, in
worker processes and threads that share no state with the training loop. Each epoch gets its
own copy of the batcher, set to that epoch once and never changed afterwards, so that a read
of epoch ``e`` can run beside a read of epoch ``e + 1`` (prefetching threads do that at an
epoch's end) and still see its own layout.
"""

from __future__ import annotations

import copy
from typing import Any

from seqbatch.batcher import StreamBatcher

_KEPT = 2  # an epoch and the next: all that readers in order ever need at once


class EpochBatchers:
    """Copies of one batcher, one per epoch read, the last two kept.

    Args:
        batches: the batcher; it is never changed.

    Examples:
        >>> import numpy as np, seqbatch
        >>> batches = seqbatch.StreamBatcher(np.arange(50), batch_size=2, sequence_length=4,
        ...                                  shuffle=True, seed=1)
        >>> epochs = EpochBatchers(batches)
        >>> epochs[3].epoch, batches.epoch
        (3, 0)
    """

    def __init__(self, batches: StreamBatcher) -> None:
        self.batches = batches
        self._recent: dict[int, StreamBatcher] = {}

    def __getitem__(self, epoch: int) -> StreamBatcher:
        if not self.batches.shuffle:
            return self.batches  # every epoch is laid out alike
        at = self._recent.get(epoch)
        if at is None:
            at = copy.copy(self.batches)
            at.set_epoch(epoch)
            # One new dict, bound in one step: a thread reading the old one is not disturbed.
            kept = list(self._recent.items())[-(_KEPT - 1) :]
            self._recent = {**dict(kept), epoch: at}
        return at

    def __getstate__(self) -> dict[str, Any]:
        # A worker process gets the batcher alone and lays out the epochs it is asked for.
        return {"batches": self.batches, "_recent": {}}
