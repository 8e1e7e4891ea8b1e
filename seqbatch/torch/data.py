"""The batches of a StreamBatcher as a map-style ``torch.utils.data.Dataset`` of tensors.

A ``DataLoader`` keeps the order of its sampler, whatever its number of workers, but its
workers hold copies of the dataset that the training loop cannot reach once they run
(``persistent_workers=True``): a dataset that kept the epoch itself would serve stale
layouts. Here the epoch travels with every key instead: the sampler yields ``(epoch, k)``
and each worker lays out whatever epoch a key names. Reading is a pure function of the key.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import numbers
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from seqbatch import _checks
from seqbatch import state as _state
from seqbatch.batcher import Batch, StreamBatcher
from seqbatch.runs import runs
from seqbatch.torch import _order

_ALIGN = 16  # bytes: every dtype's tensor view of a shared block starts on a multiple of it


@functools.cache
def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    """torch's dtype for a numpy dtype; TypeError where torch has none."""
    return torch.from_numpy(np.empty(0, dtype)).dtype


def _tensor(array: np.ndarray) -> torch.Tensor:
    # A writable array was made for this batch alone: the tensor shares it. A read-only one is
    # a view of the data, or an array every batch shares (and torch warns on it): copied, so
    # that writing to the tensor never reaches the data or another batch.
    return torch.from_numpy(array if array.flags.writeable else np.array(array))


def _shared_tensors(arrays: list[np.ndarray]) -> list[torch.Tensor]:
    """Copies of ``arrays`` in one block of shared memory, one tensor view of it each.

    A DataLoader worker passes every tensor to the training process in shared memory: one
    block per batch, as torch's own ``default_collate`` builds in workers, costs one
    allocation where a tensor each would cost six.
    """
    starts, end = [], 0
    for array in arrays:
        start = -(-end // _ALIGN) * _ALIGN
        starts.append(start)
        end = start + array.nbytes
    block = torch.empty(end, dtype=torch.uint8).share_memory_()
    tensors = []
    for array, start in zip(arrays, starts, strict=True):
        tensor = block[start : start + array.nbytes].view(_torch_dtype(array.dtype))
        tensor = tensor.view(array.shape)
        np.copyto(tensor.numpy(), array)
        tensors.append(tensor)
    return tensors


@dataclasses.dataclass(frozen=True)
class TensorBatch:
    """One batch as torch tensors: the fields of :class:`seqbatch.Batch`, same shapes and dtypes.

    Every tensor may be written: none shares memory with the data or with another batch.
    ``DataLoader(pin_memory=True)`` pins every tensor (it calls :meth:`pin_memory`).

    Attributes:
        x: ``(B, W, *features)``, the dtype of the data.
        y: ``(B, W, *target_features)`` or ``(B, *target_features)``, or None without targets.
        sample_weight: ``(B, W)`` or ``(B,)`` float32, 1 on real steps and 0 on padding.
        reset: ``(B,)`` bool, the stream starts a new series: zero its state first.
        series: ``(B,)`` int64, the series each window reads, ``-1`` for an idle stream.
        position: ``(B,)`` int64, the step at which each window starts, ``-1`` if idle.
        step_reset: ``(B, W)`` bool for packed batches (``series_boundary="pack"``), else
            None: zero the stream's state right before each flagged step.
        step_series: ``(B, W)`` int64 for packed batches, else None: the series of each step.
        step_position: ``(B, W)`` int64 for packed batches, else None: the step of that series.
        lr_scale: a ``()`` float64 tensor, ``length / nominal`` when the window lengths vary, else 1.0:
            what to multiply this batch's learning rate by (see :mod:`seqbatch.lengths`).
        burn_in: ``(B, b)`` bool with ``burn_in=b``, else None: the real burn-in steps in
            front of each window (see :mod:`seqbatch.burn_in`).
        epoch: the epoch of the batch, an int, as :class:`StreamDataset` serves it (None from
            :meth:`from_batch` without ``epoch``).
        index: the batch's index ``k`` in its epoch, an int (None likewise). A loop checks
            what it was served with ``(b.epoch, b.index)``, and saves
            ``batches.state_dict(epoch=b.epoch, next_batch=b.index + 1)`` after training on it.

    The reset flags in the formats of state-space and linear-attention kernels,
    :attr:`seq_idx`, :attr:`cu_seqlens` and :attr:`position_ids`, are those of
    :class:`seqbatch.Batch`, as tensors on the device of ``x``, computed on first use.

    Examples:
        >>> import numpy as np, seqbatch
        >>> batches = seqbatch.StreamBatcher(np.arange(12.0), batch_size=2, sequence_length=3)
        >>> b = TensorBatch.from_batch(batches[0], epoch=0, index=0)
        >>> b.x
        tensor([[0., 1., 2.],
                [3., 4., 5.]], dtype=torch.float64)
        >>> b.reset, b.epoch, b.index
        (tensor([True, True]), 0, 0)
    """

    x: torch.Tensor
    y: torch.Tensor | None
    sample_weight: torch.Tensor
    reset: torch.Tensor
    series: torch.Tensor
    position: torch.Tensor
    step_reset: torch.Tensor | None = None
    step_series: torch.Tensor | None = None
    step_position: torch.Tensor | None = None
    lr_scale: torch.Tensor | None = None
    burn_in: torch.Tensor | None = None
    epoch: int | None = None
    index: int | None = None

    @property
    def length(self) -> int:
        """The steps of this batch's windows: ``x.shape[1]`` (less the burn-in columns)."""
        b = 0 if self.burn_in is None else self.burn_in.shape[1]
        return int(self.x.shape[1]) - b

    @classmethod
    def from_batch(
        cls,
        batch: Batch,
        *,
        shared: bool = False,
        epoch: int | None = None,
        index: int | None = None,
    ) -> TensorBatch:
        """The tensors of a numpy :class:`~seqbatch.Batch`, sharing only memory made for it.

        Args:
            batch: the numpy batch.
            shared: copy every field into one block of shared memory, ready to pass to
                another process (what :class:`StreamDataset` does in ``DataLoader``
                workers). Otherwise a field that the batch made for itself is shared, not
                copied.
            epoch: the batch's epoch, kept as ``TensorBatch.epoch``.
            index: the batch's index in its epoch, kept as ``TensorBatch.index``.
        """
        arrays = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
        present = {k: a for k, a in arrays.items() if a is not None}
        tensors = (
            _shared_tensors(list(present.values()))
            if shared
            else [_tensor(a) for a in present.values()]
        )
        made: dict[str, Any] = {"y": None}  # y and the step fields may be absent
        made.update(zip(present, tensors, strict=True))
        return cls(**made, epoch=epoch, index=index)

    @functools.cached_property
    def _runs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        def numpy(t: torch.Tensor | None) -> Any:
            return None if t is None else t.cpu().numpy()

        if self.burn_in is not None:
            raise ValueError(
                "`burn_in` must be 0 for the kernel formats (seq_idx, cu_seqlens, "
                "position_ids): a burn-in row may start with padding, which no run format "
                f"here describes. Received: a batch with burn_in={self.burn_in.shape[1]}"
            )

        found = runs(
            numpy(self.position),
            numpy(self.sample_weight),
            numpy(self.step_reset),
            numpy(self.step_position),
        )
        return tuple(torch.from_numpy(a).to(self.x.device) for a in found)  # type: ignore[return-value]

    @property
    def seq_idx(self) -> torch.Tensor:
        """``(B, W)`` int32: the run each step is in; see :attr:`seqbatch.Batch.seq_idx`.

        Examples:
            >>> import numpy as np, seqbatch
            >>> batches = seqbatch.StreamBatcher([np.arange(5), np.arange(3)], targets=None,
            ...     batch_size=2, sequence_length=4, remainder="pad")
            >>> TensorBatch.from_batch(batches[1]).seq_idx
            tensor([[0, 1, 1, 1],
                    [2, 2, 2, 2]], dtype=torch.int32)
        """
        return self._runs[0]

    @property
    def cu_seqlens(self) -> torch.Tensor:
        """``(R + 1,)`` int32: the run boundaries; see :attr:`seqbatch.Batch.cu_seqlens`."""
        return self._runs[1]

    @property
    def position_ids(self) -> torch.Tensor:
        """``(B, W)`` int64: the step within its series; see :attr:`seqbatch.Batch.position_ids`."""
        return self._runs[2]

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> TensorBatch:
        """Every tensor moved to ``device``, as ``torch.Tensor.to`` moves one."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> TensorBatch:
        """Every tensor in pinned memory, for fast copies to an accelerator."""
        return self._map(lambda t: t.pin_memory())

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> TensorBatch:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        tensors: dict[str, Any] = {
            k: fn(v) for k, v in values.items() if isinstance(v, torch.Tensor)
        }
        moved = dataclasses.replace(self, **tensors)
        if "_runs" in self.__dict__:  # computed already: moved with the fields
            moved.__dict__["_runs"] = tuple(fn(t) for t in self.__dict__["_runs"])
        return moved


class StreamSampler(torch.utils.data.Sampler[tuple[int, int]]):
    """Yields the keys ``(epoch, 0), (epoch, 1), ...`` of one epoch of a :class:`StreamDataset`.

    Every pass yields the epoch set last by :meth:`set_epoch`, read when the pass starts
    (when the ``DataLoader`` is iterated): call it before each epoch, as with
    ``torch.utils.data.DistributedSampler``. A resumed epoch's first pass starts at
    ``first_batch`` (and is that much shorter); later passes start at batch 0.

    A ``DataLoader`` must keep the order of the keys: one built with ``in_order=False``,
    which yields each batch as soon as some worker has read it, is refused when its pass
    starts, before any batch is read.

    It keeps torchdata's ``state_dict`` protocol, so that a ``StatefulDataLoader`` saves and
    restores where its pass stands, mid-epoch, with workers and prefetching (see
    :meth:`state_dict`).

    Args:
        num_batches: the batches of one epoch, or a callable ``epoch -> int`` when the number
            varies by epoch (window lengths that vary: ``batches.view.n_batches``).
        epoch: the epoch of the next pass.
        first_batch: the batch the next pass starts at, ``0 <= first_batch < num_batches``.

    Examples:
        >>> sampler = StreamSampler(3)
        >>> sampler.set_epoch(5)
        >>> list(sampler)
        [(5, 0), (5, 1), (5, 2)]
        >>> resumed = StreamSampler(3, epoch=5, first_batch=2)
        >>> list(resumed), list(resumed)
        ([(5, 2)], [(5, 0), (5, 1), (5, 2)])
    """

    def __init__(
        self, num_batches: int | Callable[[int], int], epoch: int = 0, first_batch: int = 0
    ) -> None:
        self._per_epoch: Callable[[int], int] | None = None
        if callable(num_batches):
            self._per_epoch = num_batches
        else:
            self._num_batches = _checks.positive_int("num_batches", num_batches)
        self.epoch = _checks.non_negative_int("epoch", epoch)
        self.first_batch = _checks.non_negative_int("first_batch", first_batch)
        if self.first_batch >= self.num_batches:
            raise ValueError(
                "`first_batch` must be less than `num_batches`. Received: "
                f"first_batch={first_batch}, num_batches={num_batches}"
            )
        # The batcher whose state this sampler's state is (StreamDataset's, unsharded).
        self._batches: StreamBatcher | None = None
        self._saved: dict[str, Any] | None = None  # its seed and fingerprint, once taken
        # (epoch, next batch) of the pass that yielded last; None: (epoch, first_batch).
        self._position: tuple[int, int] | None = None
        self._epoch_set: int | None = None  # the last set_epoch since building or loading

    @property
    def num_batches(self) -> int:
        """The batches of the epoch of the next pass."""
        if self._per_epoch is None:
            return self._num_batches
        return self._per_epoch(self.epoch)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass yield the keys of ``epoch``, a non-negative int.

        Another epoch than the current one starts at batch 0; the current one keeps its
        ``first_batch``.
        """
        epoch = _checks.non_negative_int("epoch", epoch)
        self._epoch_set = epoch
        if epoch != self.epoch:
            self.epoch, self.first_batch = epoch, 0
            self._position = None
        elif self._position is not None and self._position[1] == self.num_batches:
            self._position = None  # the epoch again, after a pass that ended it

    def state_dict(self) -> dict[str, Any]:
        """Where the pass stands: the key that comes next, as torchdata's protocol asks.

        ``{"epoch", "next_batch"}``: the epoch and the batch of the next key (after an
        epoch's last key, batch 0 of the next epoch); from the sampler of a
        :class:`StreamDataset`, the state of its batcher at that place,
        :meth:`seqbatch.StreamBatcher.state_dict` (with the seed and the fingerprint, of
        the whole batcher, not of a rank's shard: every rank stands at the same batch).

        A ``torchdata.stateful_dataloader.StatefulDataLoader`` calls it when it dispatches
        a key to a worker and keeps the state beside that key, so that its own
        ``state_dict()`` says where the batches *served* stand, however many it prefetched.

        Examples:
            >>> sampler = StreamSampler(3, epoch=1)
            >>> keys = iter(sampler)
            >>> next(keys), sampler.state_dict()
            ((1, 0), {'epoch': 1, 'next_batch': 1})
            >>> resumed = StreamSampler(3)
            >>> resumed.load_state_dict(sampler.state_dict())
            >>> list(resumed)
            [(1, 1), (1, 2)]
        """
        epoch, next_batch = self._position or (self.epoch, self.first_batch)
        if next_batch >= self.num_batches:
            epoch, next_batch = epoch + 1, 0
        state: dict[str, Any] = {"epoch": epoch, "next_batch": next_batch}
        if self._batches is not None:
            # Called at every key a StatefulDataLoader dispatches: the fingerprint (64 reads
            # of the data) is taken once.
            if self._saved is None:
                self._saved = self._batches.state_dict(epoch=0, next_batch=0)
            state.update(seed=self._saved["seed"], fingerprint=dict(self._saved["fingerprint"]))
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Make the next pass start where :meth:`state_dict` was taken.

        A ``StatefulDataLoader`` calls it when it is iterated after its own
        ``load_state_dict``, so after the loop's :meth:`set_epoch`: the state must be of
        the epoch the loop set, or be the state after that epoch's last batch (batch 0 of
        the next epoch), which makes the loop's pass over its epoch empty. A state of any
        other epoch is refused, rather than train the loop's epoch on another's batches.

        Raises:
            ValueError: a state that is not this sampler's, of other data or arguments, of
                another seed than the dataset's batcher, or of another epoch than the one
                :meth:`set_epoch` set last.
        """
        if self._batches is not None:
            epoch, next_batch, seed = _state.check_state(self._batches, state_dict)
            if seed != self._batches.seed:
                raise ValueError(
                    "`state_dict` must come from a batcher of the same seed: the dataset's "
                    "batches, and its DataLoader workers' copies, are laid out with another. "
                    "Build the batcher with seed=state_dict['seed'] (or restore it with "
                    "load_state_dict) before the dataset. Received: a state of seed "
                    f"{seed}, for a batcher of seed {self._batches.seed}"
                )
        else:
            if not isinstance(state_dict, dict) or set(state_dict) != {"epoch", "next_batch"}:
                keys = sorted(state_dict) if isinstance(state_dict, dict) else state_dict
                raise ValueError(
                    "`state_dict` must come from StreamSampler.state_dict(), with the keys "
                    f"epoch, next_batch. Received: {keys!r}"
                )
            epoch = _checks.non_negative_int("state_dict['epoch']", state_dict["epoch"])
            next_batch = _checks.non_negative_int(
                "state_dict['next_batch']", state_dict["next_batch"]
            )
            if next_batch >= self.num_batches:
                raise ValueError(
                    "`state_dict['next_batch']` must be less than `num_batches`. Received: "
                    f"next_batch={next_batch}, num_batches={self.num_batches}"
                )
        if self._epoch_set is None or self._epoch_set == epoch:
            self.epoch, self.first_batch = epoch, next_batch
        elif self._epoch_set == epoch - 1 and next_batch == 0:
            # Saved after the last batch of the loop's epoch: its pass is empty, and the
            # loop's next set_epoch starts the next epoch at batch 0.
            self.epoch, self.first_batch = self._epoch_set, self.num_batches
        else:
            raise ValueError(
                "`state_dict` must resume the epoch that set_epoch set: the loop would count "
                "the batches of one epoch as another's. Start the loop of epochs at the "
                "epoch of the last batch served before the state was saved. Received: a "
                f"state at epoch {epoch}, batch {next_batch}, after set_epoch({self._epoch_set})"
            )
        self._position, self._epoch_set = None, None

    def __len__(self) -> int:
        return self.num_batches - self.first_batch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # Read now: a pass keeps its epoch whatever set_epoch does meanwhile.
        self._position = None
        return self._keys(self.epoch, self.first_batch)

    def _keys(self, epoch: int, first: int) -> Iterator[tuple[int, int]]:
        first_worker = _order.refuse_unordered_loader(sys._getframe(1))
        pass_id = _order.new_pass()
        n = self.num_batches if self._per_epoch is None else self._per_epoch(epoch)
        for place, k in enumerate(range(first, n)):
            self._position = (epoch, k + 1)  # before the key leaves: torchdata reads it then
            yield _order.Key(epoch, k, pass_id, place, first_worker)
        # The resumed pass is over. Not before: a DataLoader with workers makes an iterator
        # that it drops unread before the one it reads.
        self.first_batch = 0


class StreamDataset(torch.utils.data.Dataset[TensorBatch]):
    """The batches of a :class:`~seqbatch.StreamBatcher` as a map-style torch ``Dataset``.

    Use it with ``DataLoader(dataset, batch_size=None, sampler=dataset.sampler)``: item
    ``(epoch, k)`` is batch ``k`` of epoch ``epoch`` as a :class:`TensorBatch`, and the
    sampler yields the keys of one epoch in order. The order is then exact with any
    ``num_workers``, with ``persistent_workers=True``, and across the epochs of a shuffled
    batcher: call :meth:`set_epoch` (or ``loader.sampler.set_epoch``) before each epoch.

    Items are read only by such keys. Any other sampler yields plain integers (the
    ``DataLoader``'s own, its ``shuffle=True``, a ``RandomSampler`` or a
    ``DistributedSampler``): the first item read then raises ``TypeError``, before the first
    training step, rather than let the loader reorder the batches or lose the epoch. So does
    a sampler of its own that yields pairs, and the dataset's keys reach it in the order the
    sampler yielded them or not at all (``ValueError``): a list of them reordered, or read
    twice. The ``DataLoader`` must keep ``batch_size=None`` (its default, 1, is refused with
    ``TypeError``) and ``in_order=True``, its default (``in_order=False`` is refused with
    ``ValueError``). Each item says which batch it is: its ``epoch`` and ``index``.

    Sharding: under ``torch.distributed`` each rank gets its own streams, as
    :meth:`seqbatch.StreamBatcher.shard` deals them: rank ``r`` of
    ``world_size`` holds streams ``[r * b, (r + 1) * b)`` with ``b = batch_size //
    world_size``, and every rank has the same number of batches. ``batches`` holds the global
    batch; the model of each rank is built for ``b`` rows.

    Resuming: build the dataset on a batcher restored with
    :meth:`~seqbatch.StreamBatcher.load_state_dict`; its first pass starts at the saved
    epoch and batch. Save with ``batches.state_dict(epoch=epoch, next_batch=k + 1)`` after
    training on batch ``k``. Or let torchdata's ``StatefulDataLoader`` keep the position:
    its ``state_dict()`` holds the sampler's
    (:meth:`seqbatch.torch.StreamSampler.state_dict`), and a new loader over a dataset of
    the same batcher resumes from it, workers and all.

    Args:
        batches: the batcher. It is never changed; its current epoch is the first one, from
            :attr:`~seqbatch.StreamBatcher.resume_batch` on.
        rank: this process's rank; with ``world_size``, or neither. If neither is given,
            ``torch.distributed``'s are used when its process group is initialized, else
            the dataset serves every stream.
        world_size: the number of ranks; it must divide the batch size.

    Raises:
        TypeError: ``batches`` is not a ``StreamBatcher``, or holds a dtype torch lacks.
        ValueError: only one of ``rank`` and ``world_size`` given, ``rank >= world_size``,
            or a world size that does not divide the batch size.

    Examples:
        >>> import numpy as np, seqbatch, torch
        >>> batches = seqbatch.StreamBatcher(np.arange(26), batch_size=2, sequence_length=3)
        >>> dataset = StreamDataset(batches)
        >>> loader = torch.utils.data.DataLoader(dataset, batch_size=None, sampler=dataset.sampler)
        >>> [b.x.tolist() for b in loader]
        [[[0, 1, 2], [12, 13, 14]], [[3, 4, 5], [15, 16, 17]], [[6, 7, 8], [18, 19, 20]], [[9, 10, 11], [21, 22, 23]]]

        Rank 1 of 2 keeps stream 1:

        >>> StreamDataset(batches, rank=1, world_size=2)[0, 0].x.tolist()
        [[12, 13, 14]]
    """

    def __init__(
        self,
        batches: StreamBatcher,
        *,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if not isinstance(batches, StreamBatcher):
            raise TypeError(
                f"`batches` must be a seqbatch.StreamBatcher. Received: batches of type "
                f"{type(batches).__name__}"
            )
        for name, dtype in (("x", batches.dtype), ("y", batches.target_dtype)):
            if dtype is not None:
                try:
                    _torch_dtype(dtype)
                except TypeError as err:
                    raise TypeError(
                        f"`batches` must hold {name} of a dtype torch has. Received: {name} of "
                        f"dtype {dtype}"
                    ) from err
        self.rank, self.world_size = _rank_and_world_size(rank, world_size, batches.batch_size)
        self.batches = batches.shard(self.rank, self.world_size)
        count = self.batches.view.n_batches if batches.varying else len(self.batches)
        self.sampler = StreamSampler(count, batches.epoch, batches.resume_batch)
        # Its state is the whole batcher's, the same on every rank; a copy, that a later
        # load_state_dict on the batcher leaves as the dataset's shard is.
        self.sampler._batches = copy.copy(batches)
        self._order = _order.KeyOrder()

    @property
    def epoch(self) -> int:
        """The epoch that the next pass of ``sampler`` reads."""
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass of ``sampler`` read epoch ``epoch``, a non-negative int."""
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        # The batches of the epoch of the next pass (the same in every epoch unless the
        # window lengths vary).
        return self.batches.view.n_batches(self.sampler.epoch)

    def __getitem__(self, key: tuple[int, int]) -> TensorBatch:
        if not (
            isinstance(key, tuple)
            and len(key) == 2
            and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in key)
        ):
            raise TypeError(
                "`key` must be a pair (epoch, k), as StreamDataset.sampler yields them: build "
                "the loader as DataLoader(dataset, batch_size=None, sampler=dataset.sampler). "
                "Another sampler (the DataLoader's own, shuffle=True, RandomSampler, "
                "DistributedSampler) reads the batches in its own order and never the epoch, "
                "so that row i of a batch would no longer continue row i of the batch before. "
                f"Received: key={key!r}"
            )
        epoch = _checks.non_negative_int("epoch", key[0])
        worker = torch.utils.data.get_worker_info()
        if _order.read_by_loader(sys._getframe(1)):
            self._order.check(key, worker)
        batch = self.batches.batch_at(epoch, key[1])
        return TensorBatch.from_batch(
            batch,
            shared=worker is not None,
            epoch=epoch,
            index=int(key[1]) % self.batches.view.n_batches(epoch),
        )

    def __getitems__(self, keys: list[Any]) -> list[TensorBatch]:
        # A DataLoader with a batch size reads a list of keys through this: refused.
        raise TypeError(
            "`batch_size` must be None in a DataLoader over a StreamDataset: every item is a "
            "whole batch already (a TensorBatch), and the DataLoader's default batch_size=1 "
            "would stack items into batches of batches. Build the loader as DataLoader("
            f"dataset, batch_size=None, sampler=dataset.sampler). Received: {len(keys)} keys "
            "read together"
        )


def _rank_and_world_size(
    rank: int | None, world_size: int | None, batch_size: int
) -> tuple[int, int]:
    """The rank and world size given, or torch.distributed's, or ``(0, 1)``; checked."""
    if rank is None and world_size is None:
        dist: Any = torch.distributed
        if dist.is_available() and dist.is_initialized():
            rank, world_size = dist.get_rank(), dist.get_world_size()
        else:
            rank, world_size = 0, 1
    elif rank is None or world_size is None:
        raise ValueError(
            "`rank` and `world_size` must be given together, or neither (then "
            f"torch.distributed's are used). Received: rank={rank!r}, world_size={world_size!r}"
        )
    world_size = _checks.positive_int("world_size", world_size)
    rank = _checks.non_negative_int("rank", rank)
    if rank >= world_size:
        raise ValueError(
            f"`rank` must be less than `world_size`. Received: rank={rank}, world_size={world_size}"
        )
    if batch_size % world_size:
        raise ValueError(
            "`world_size` must divide the batch size, so that every rank gets as many "
            f"streams. Received: world_size={world_size} for batch_size={batch_size}"
        )
    return rank, world_size
