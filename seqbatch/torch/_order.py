"""Keys that know their place in a pass: how a StreamDataset refuses a reordering DataLoader.

torch's ``DataLoader`` tells a dataset neither its options nor who reads an item. The checks
here recognise the two of its functions that call into seqbatch by their code objects: the
loader iterator's ``_next_index``, which asks the sampler for a key (and holds the loader's
``in_order``), and the map-style fetcher's ``fetch``, which reads an item in the training
process or in a worker. tests/torch/test_torch_order.py fails if a torch release renames them.
"""

from __future__ import annotations

import itertools
from types import FrameType
from typing import Any

import torch

_FETCH = torch.utils.data._utils.fetch._MapDatasetFetcher.fetch.__code__
_NEXT_INDEX = torch.utils.data.dataloader._BaseDataLoaderIter._next_index.__code__
_PASSES = itertools.count()  # one id per pass of any StreamSampler of this process


def new_pass() -> int:
    """A new pass id, greater than every id before it in this process."""
    return next(_PASSES)


class Key(tuple):
    """A key ``(epoch, k)`` as a StreamSampler yields it, with its place in the pass.

    It is the plain pair to anything that reads it; the dataset reads the place as well, to
    refuse keys that reach it in another order than the sampler yielded them.
    """

    pass_id: int
    place: int
    first_worker: int

    def __new__(cls, epoch: int, k: int, pass_id: int, place: int, first_worker: int = 0) -> Key:
        key = super().__new__(cls, (epoch, k))
        key.pass_id, key.place, key.first_worker = pass_id, place, first_worker
        return key

    def __reduce__(self) -> tuple[type[Key], tuple[int, int, int, int, int]]:
        return Key, (self[0], self[1], self.pass_id, self.place, self.first_worker)


def refuse_unordered_loader(frame: FrameType | None) -> int:
    """Refuse a DataLoader with ``in_order=False``, found among the callers from ``frame``.

    ``frame`` is the one that asks the sampler's generator for its first key: the loader's
    ``_next_index``, or a sampler that wraps this one (``BatchSampler``) a frame below it.
    A loop over the sampler itself has no loader above it, and nothing to refuse.

    Returns the worker that the loader deals the pass's first key to: worker 0, except in
    a torchdata ``StatefulDataLoader`` restored mid-epoch, which goes on dealing from the
    worker after the one that read the last batch served (its ``_last_yielded_worker_id``).
    """
    for _ in range(4):
        if frame is None:
            return 0
        if frame.f_code is _NEXT_INDEX:
            loader = frame.f_locals.get("self")
            if getattr(loader, "_in_order", True) is False:
                raise ValueError(
                    "A DataLoader over a StreamDataset must serve the batches in the order of "
                    "its sampler, so that row i of each batch continues row i of the batch "
                    "before: with in_order=False it yields each batch as soon as a worker has "
                    "read it. Build the loader with in_order=True, its default. Received: "
                    "in_order=False"
                )
            workers = getattr(loader, "_num_workers", 0)
            last = getattr(loader, "_last_yielded_worker_id", None)
            return 0 if not workers or last is None else (last + 1) % workers
        frame = frame.f_back
    return 0


def read_by_loader(frame: FrameType | None) -> bool:
    """Whether ``frame``, the caller of ``__getitem__``, is a DataLoader's fetch."""
    return frame is not None and frame.f_code is _FETCH


class KeyOrder:
    """The pass whose keys one copy of a dataset reads, and the place of the next key due.

    Each worker process holds its own copy: worker ``w`` of ``n`` reads keys ``w, w + n,
    ...`` of each pass, as a ``DataLoader`` that keeps the order deals them round-robin from
    worker 0 at every pass (from the key's ``first_worker``, where a restored torchdata
    loader goes on dealing); the training process reading alone reads them all.
    """

    def __init__(self) -> None:
        self.pass_id, self.due = -1, 0

    def check(self, key: tuple[int, int], worker: Any) -> None:
        """Refuse ``key`` unless it is the one due; ``worker`` is torch's worker info or None."""
        if not isinstance(key, Key):
            raise TypeError(
                "`sampler` must be the StreamDataset's own sampler: build the loader as "
                "DataLoader(dataset, batch_size=None, sampler=dataset.sampler). Another "
                "sampler's keys may come in any order, and the dataset cannot check that row "
                f"i of each batch continues row i of the batch before. Received: key={key!r} "
                "from another sampler"
            )
        first, step = (0, 1) if worker is None else (worker.id, worker.num_workers)
        first = (first - key.first_worker) % step
        if key.pass_id > self.pass_id:
            self.pass_id, self.due = key.pass_id, first
        if key.pass_id != self.pass_id or key.place != self.due:
            raise ValueError(
                "Keys must reach a StreamDataset in the order its sampler yields them, each "
                "once, so that row i of each batch continues row i of the batch before: pass "
                "sampler=dataset.sampler itself to the DataLoader, never its keys reordered or "
                f"kept for another pass. Received: key {tuple(key)} out of order"
            )
        self.due += step
