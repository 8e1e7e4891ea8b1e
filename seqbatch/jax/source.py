"""Epochs of a StreamBatcher's batches as a random-access source, the protocol grain reads.

Record ``i`` is a pure function of ``i``: batch ``j % n`` of epoch ``first_epoch + j // n``
for ``j = i + first_batch`` (0 unless the batcher was restored mid-epoch), so any reader that keeps the order of the indices (grain's threads, its ``mp_prefetch``
worker processes, a plain loop) serves every epoch's layout with no state to pass around.
Readers that do not keep the order (a shuffle, a slice with a step) are caught where the
records are used, by :meth:`seqbatch.jax.StreamSource.in_order`. Nothing here imports JAX or grain.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from seqbatch import _checks
from seqbatch.batcher import StreamBatcher


class StreamSource:
    """The batches of ``epochs`` epochs of a batcher, one record per batch, in training order.

    A grain ``RandomAccessDataSource`` (``__len__`` and ``__getitem__``): pass it to
    ``grain.MapDataset.source`` and keep the order of the records. Each record is a dict of
    numpy arrays, the fields of :class:`seqbatch.Batch` (``"x"``, ``"y"`` when there are
    targets, ``"sample_weight"``, ``"reset"``, ``"series"``, ``"position"``, and for packed
    batches ``"step_reset"``, ``"step_series"``, ``"step_position"``) and two int64 scalars
    that say which batch it is, ``"epoch"`` and ``"batch"``. When the window lengths vary
    (``sequence_length`` a callable), the records' time axes differ (a jitted step traces
    once per distinct length: prefer a schedule of few lengths, or pad), each epoch has its
    own number of records, and each record also holds ``"lr_scale"``, a float64 scalar.
    With ``burn_in=b`` (:mod:`seqbatch.burn_in`) each record also holds ``"burn_in"``, the
    ``(B, b)`` bool flags of the burn-in steps in front of each window.
    Feed the records to the model through :meth:`in_order`, which refuses any other order
    before it is used. A packed record must reset the state at each step that
    ``"step_reset"`` flags, inside the scan.

    Each epoch of a shuffled batcher has its own layout. ``grain``'s ``repeat()`` starts
    the same epochs again: give ``epochs`` the number of epochs to train instead. Shard by
    stream, never by record: on host ``p`` of ``P``, pass ``batches.shard(p, P)``.

    Resuming: build the source on a batcher restored with
    :meth:`~seqbatch.StreamBatcher.load_state_dict`: record 0 is then the saved batch of the
    saved epoch, and ``epochs`` counts from that epoch. Save with
    ``batches.state_dict(epoch=int(r["epoch"]), next_batch=int(r["batch"]) + 1)`` after
    training on record ``r``.

    With ``kernel_formats=True`` every record also holds the reset flags in the formats of
    state-space and linear-attention kernels, those of :class:`seqbatch.Batch`:
    ``"seq_idx"`` ``(B, W)`` int32, ``"cu_seqlens"`` ``(R + 1,)`` int32 and
    ``"position_ids"`` ``(B, W)``. ``R`` varies from batch to batch, and a jitted step
    compiles once per shape it sees: under ``jax.jit``, prefer ``"seq_idx"``, whose shape
    is fixed.

    Args:
        batches: the batcher. It is never changed; its current epoch is the first one, from
            :attr:`~seqbatch.StreamBatcher.resume_batch` on.
        epochs: the number of epochs, a positive int.
        kernel_formats: add ``"seq_idx"``, ``"cu_seqlens"`` and ``"position_ids"`` to every
            record.

    Raises:
        TypeError: ``batches`` is not a ``StreamBatcher``, or ``epochs`` not an int.
        ValueError: ``epochs`` is not positive, or ``kernel_formats`` with ``burn_in``.

    Examples:
        >>> import numpy as np, seqbatch
        >>> batches = seqbatch.StreamBatcher(np.arange(26), batch_size=2, sequence_length=3)
        >>> source = StreamSource(batches, epochs=2)
        >>> len(source)
        8
        >>> r = source[5]
        >>> int(r["epoch"]), int(r["batch"]), r["x"].tolist(), r["reset"].tolist()
        (1, 1, [[3, 4, 5], [15, 16, 17]], [False, False])
    """

    def __init__(
        self, batches: StreamBatcher, *, epochs: int = 1, kernel_formats: bool = False
    ) -> None:
        if not isinstance(batches, StreamBatcher):
            raise TypeError(
                f"`batches` must be a seqbatch.StreamBatcher. Received: batches of type "
                f"{type(batches).__name__}"
            )
        self.batches = batches
        self.epochs = _checks.positive_int("epochs", epochs)
        if not isinstance(kernel_formats, bool):
            raise TypeError(
                f"`kernel_formats` must be a bool. Received: kernel_formats={kernel_formats!r}"
            )
        if kernel_formats and batches.burn_in:
            raise ValueError(
                "`kernel_formats` must be False for batches with burn-in: a burn-in row may "
                "start with padding, which the kernel formats do not describe. Received: "
                f"kernel_formats=True with burn_in={batches.burn_in}"
            )
        self.kernel_formats = kernel_formats
        self.first_epoch = batches.epoch
        self.first_batch = batches.resume_batch
        self.batches_per_epoch = len(batches)
        # Where each epoch's records start, counted from batch 0 of the first epoch: the
        # epochs have as many batches unless the window lengths vary.
        counts = [self.batches_per_epoch] * self.epochs
        if batches.varying:
            counts = [batches.view.n_batches(self.first_epoch + e) for e in range(self.epochs)]
        self._starts = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)

    def __len__(self) -> int:
        return int(self._starts[-1]) - self.first_batch

    def _key(self, index: int) -> tuple[int, int]:
        """The epoch (counted from the first) and batch of record ``index``."""
        j = index + self.first_batch
        epoch = int(np.searchsorted(self._starts, j, side="right")) - 1
        return epoch, j - int(self._starts[epoch])

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(f"record indices must be integers. Received: {index!r}")
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"record index out of range. Received: {index} for {n} records")
        epoch, k = self._key(int(index) % n)
        b = self.batches.batch_at(self.first_epoch + epoch, k)
        record = {"x": b.x}
        if b.y is not None:
            record["y"] = b.y
        record.update(
            sample_weight=b.sample_weight,
            reset=b.reset,
            series=b.series,
            position=b.position,
            epoch=np.int64(self.first_epoch + epoch),
            batch=np.int64(k),
        )
        if b.step_reset is not None:
            record.update(
                step_reset=b.step_reset, step_series=b.step_series, step_position=b.step_position
            )
        if self.kernel_formats:
            record.update(seq_idx=b.seq_idx, cu_seqlens=b.cu_seqlens, position_ids=b.position_ids)
        if self.batches.varying:
            record["lr_scale"] = b.lr_scale
        if b.burn_in is not None:
            record["burn_in"] = b.burn_in
        return record

    def in_order(
        self, records: Iterable[Mapping[str, Any]], *, start: int = 0
    ) -> Iterator[Mapping[str, Any]]:
        """Yield ``records``, each checked to be the next record of this source.

        The first must be record ``start``, and each next one the record after it: batch
        ``k + 1`` of the same epoch, or batch 0 of the next epoch after the last batch.
        Anything else (a shuffled pipeline, one sharded by record, a record left out) raises
        before that record is yielded, so before a model trains on it.

        Args:
            records: the records, as a pipeline over this source yields them.
            start: the index of the first record: 0, or where a resumed pipeline starts.

        Yields:
            The records, unchanged.

        Raises:
            ValueError: a record out of order, or one that is not a single record of a
                ``StreamSource`` (a batch of them, say).

        Examples:
            >>> import numpy as np, seqbatch
            >>> source = StreamSource(seqbatch.StreamBatcher(np.arange(26), batch_size=2,
            ...                                              sequence_length=3))
            >>> [int(r["batch"]) for r in source.in_order(source[k] for k in range(4))]
            [0, 1, 2, 3]
            >>> list(source.in_order([source[0], source[2]]))  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            ValueError: Records must come in the order of the source, ...
        """
        start = _checks.non_negative_int("start", start)
        for i, record in enumerate(records, start):
            epoch_mark, batch_mark = record.get("epoch"), record.get("batch")
            if (
                epoch_mark is None
                or batch_mark is None
                or np.ndim(epoch_mark)
                or np.ndim(batch_mark)
            ):
                raise ValueError(
                    "Every record must be one record of a StreamSource, with a scalar 'epoch' and "
                    "'batch': records are whole batches, never batched again. Received: a "
                    f"record with epoch={epoch_mark!r}, batch={batch_mark!r}"
                )
            got = (int(epoch_mark), int(batch_mark))
            epoch, k = self._key(i) if i < len(self) else (self.epochs, i - len(self))
            expected = (self.first_epoch + epoch, k)
            if got != expected:
                raise ValueError(
                    "Records must come in the order of the source, so that row i of each batch "
                    "continues row i of the batch before: keep the order of the pipeline (no "
                    "shuffle; shard by stream with StreamBatcher.shard, not by record). "
                    f"Received: epoch {got[0]} batch {got[1]} where epoch {expected[0]} batch "
                    f"{expected[1]} was due"
                )
            yield record
