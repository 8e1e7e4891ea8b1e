"""Batch: what a :class:`~seqbatch.StreamBatcher` yields, one window per stream."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from seqbatch.runs import Runs, runs

_ONE = np.float64(1.0)  # the lr_scale of windows of one length


@dataclass(frozen=True, eq=False, repr=False)
class Batch:
    """One batch: ``batch_size`` streams, one window each.

    Batches compare and hash by identity, like the arrays they hold have no single truth
    value: compare their fields with numpy (``np.array_equal(a.x, b.x)``).

    Memory: a full batch of one in-memory or memory-mapped series, cut with
    ``remainder="drop"`` (or into streams of equal length), is a read-only view of that
    array, with nothing copied: it changes if the array is changed later, and
    ``b.x.copy()`` keeps it. Every other batch (windows that end in padding, many series,
    ``series_boundary="concat"``, h5py and other sources) is a new writable array of its
    own. The tf.data adapter copies in-memory data into TensorFlow once, when
    ``to_tf_dataset()`` is called: later changes to the arrays do not reach the dataset,
    while files and other lazy sources (and in-memory data of a dtype TensorFlow cannot
    gather, such as int4) are read as each batch is made.

    Attributes:
        x: ``(B, W, *features)`` inputs, dtype of the data; zeros on padding. A 1-D series
            gives ``(B, W)``; Keras RNN layers want a feature axis, ``(B, W, 1)``: pass
            ``series[:, None]``.
        y: ``(B, W, *target_features)`` targets (``return_sequences=True``), ``(B,
            *target_features)`` the target of each window's last step (``False``), or None
            without targets; zeros on padding.
        sample_weight: float32, 1 on real steps and 0 on padding: ``(B, W)``, or ``(B,)`` with
            targets and ``return_sequences=False`` (the weight of the step whose target
            ``y`` holds). Without targets it is always ``(B, W)``: there is no ``y`` to weight,
            only steps.
        reset: ``(B,)`` bool, the stream starts a new series or segment: zero its state first.
        series: ``(B,)`` int64, the series each window reads (packed: the series of its first
            step), ``-1`` for an idle stream.
        position: ``(B,)`` int64, the step of that series at which the window starts, or ``-1``.
        step_reset: ``(B, W)`` bool with ``series_boundary="pack"``, else None: the step
            starts a segment (a new series, or a stream at batch 0): zero that stream's state
            right before it. Column 0 is ``reset``.
        step_series: ``(B, W)`` int64 with ``series_boundary="pack"``, else None: the series
            of every step, ``-1`` on padding. Column 0 is ``series``.
        step_position: ``(B, W)`` int64 with ``series_boundary="pack"``, else None: the step
            of that series, ``-1`` on padding. Column 0 is ``position``.
        lr_scale: a float64 numpy scalar, ``length / nominal``: what to multiply the learning
            rate of this batch by when the window lengths vary (``sequence_length`` a schedule:
            see :mod:`seqbatch.lengths`); 1.0 for an int ``sequence_length``. A numpy scalar,
            with a dtype and a shape ``()`` as the other fields have.
        burn_in: ``(B, b)`` bool with ``burn_in=b`` (see :mod:`seqbatch.burn_in`), else None:
            the step in column ``j < b`` of the row is a burn-in step, one of the steps right
            before the window in its series, carrying no loss. ``x`` and ``y`` then have ``b``
            more columns in front of the window, and ``x[:, b:]`` is the batch without burn-in.

    The reset flags in the formats of state-space and linear-attention kernels are
    properties, computed on first use: :attr:`seq_idx`, :attr:`cu_seqlens` and
    :attr:`position_ids` (see [Kernel formats](../concepts.md#kernel-formats)).

    Examples:
        >>> import numpy as np, seqbatch
        >>> batches = seqbatch.StreamBatcher(
        ...     np.arange(12.0), None, batch_size=2, sequence_length=3, return_sequences=False
        ... )
        >>> b = batches[0]
        >>> b
        Batch(x (2, 3) float64, y None, sample_weight (2, 3) float32, reset 2 of 2 streams, series [0 0], position [0 6])
        >>> b == batches[0], b == b, len({b, b})
        (False, True, 1)
    """

    x: np.ndarray
    y: np.ndarray | None
    sample_weight: np.ndarray
    reset: np.ndarray
    series: np.ndarray
    position: np.ndarray
    step_reset: np.ndarray | None = None
    step_series: np.ndarray | None = None
    step_position: np.ndarray | None = None
    lr_scale: np.float64 = _ONE
    burn_in: np.ndarray | None = None

    @property
    def length(self) -> int:
        """The steps of this batch's windows, ``W``: ``x.shape[1]`` (less the burn-in columns)."""
        b = 0 if self.burn_in is None else self.burn_in.shape[1]
        return int(self.x.shape[1]) - b

    @functools.cached_property
    def _runs(self) -> Runs:
        if self.burn_in is not None:
            raise ValueError(
                "`burn_in` must be 0 for the kernel formats (seq_idx, cu_seqlens, "
                "position_ids): a burn-in row may start with padding, which no run format "
                f"here describes. Received: a batch with burn_in={self.burn_in.shape[1]}"
            )
        return runs(self.position, self.sample_weight, self.step_reset, self.step_position)

    @property
    def seq_idx(self) -> np.ndarray:
        """``(B, W)`` int32: the run of one series (or of a row's padding) each step is in.

        Runs are numbered ``0, 1, ...`` in row-major order over the batch, so values differ
        across rows too; along a row, the value changes exactly where a new series starts
        and where the padding begins. A row's first run continues the row's carried state
        unless ``reset``; every other run starts from zeros.

        Raises:
            ValueError: a batch that is not packed, with ``sample_weight`` ``(B,)``
                (``return_sequences=False``): its padding cannot be told apart.

        Examples:
            >>> import numpy as np, seqbatch
            >>> b = seqbatch.StreamBatcher([np.arange(5), np.arange(3)], targets=None,
            ...     batch_size=2, sequence_length=4, remainder="pad")[1]
            >>> b.sample_weight
            array([[1., 0., 0., 0.],
                   [0., 0., 0., 0.]], dtype=float32)
            >>> b.seq_idx
            array([[0, 1, 1, 1],
                   [2, 2, 2, 2]], dtype=int32)
        """
        return self._runs.seq_idx

    @property
    def cu_seqlens(self) -> np.ndarray:
        """``(R + 1,)`` int32: where each run of :attr:`seq_idx` starts in the flattened batch.

        The boundaries over the row-major flattening of ``(B, W)``, from 0 to ``B * W``: run
        ``r`` is steps ``[cu_seqlens[r], cu_seqlens[r + 1])``, always within one row.

        Examples:
            >>> import numpy as np, seqbatch
            >>> b = seqbatch.StreamBatcher([np.arange(5), np.arange(3)], targets=None,
            ...     batch_size=2, sequence_length=4, remainder="pad")[1]
            >>> b.cu_seqlens
            array([0, 1, 4, 8], dtype=int32)
        """
        return self._runs.cu_seqlens

    @property
    def position_ids(self) -> np.ndarray:
        """``(B, W)`` int64: each step's step within its series; over padding ``0, 1, ...``.

        With one series cut into streams, or ``series_boundary="concat"``, the series is
        the one joined series.

        Examples:
            >>> import numpy as np, seqbatch
            >>> b = seqbatch.StreamBatcher([np.arange(5), np.arange(3)], targets=None,
            ...     batch_size=2, sequence_length=4, remainder="pad")[1]
            >>> b.position_ids
            array([[4, 0, 1, 2],
                   [0, 1, 2, 3]])
        """
        return self._runs.position_ids

    def __repr__(self) -> str:
        def shape(a: np.ndarray | None) -> str:
            return "None" if a is None else f"{tuple(a.shape)} {a.dtype}"

        # Per-stream provenance is B numbers; print it only while it stays short.
        where = ""
        if len(self.reset) <= 8:
            where = f", series {self.series}, position {self.position}"
        return (
            f"Batch(x {shape(self.x)}, y {shape(self.y)}, sample_weight "
            f"{shape(self.sample_weight)}, reset {int(self.reset.sum())} of {len(self.reset)} "
            f"streams{where})"
        )


def reset_flags(batch: Batch) -> np.ndarray:
    """The reset flags that the adapters give a model, float32 1.0 or 0.0.

    Packed batches give ``step_reset`` ``(B, W)``, a flag at every step where a series starts
    (:class:`seqbatch.keras.StreamReset` then resets inside the recurrence); the others give
    ``reset`` ``(B,)`` (it resets before the window, and keeps the fused RNN kernels).
    float32 is the default dtype of a ``keras.Input``. Batches with burn-in give ``(B, b +
    W)`` flags, 1.0 at each row's first real step: the state starts there
    (:mod:`seqbatch.burn_in`).
    """
    if batch.burn_in is not None:
        # Burn-in (seqbatch.burn_in): the state starts right before each row's first real
        # step, whatever padding precedes it: (B, b + W), 1.0 there.
        b = batch.burn_in.shape[1]
        first = b - batch.burn_in.sum(axis=1)
        flags = np.zeros((len(first), batch.x.shape[1]), dtype=np.float32)
        held = np.flatnonzero(batch.series >= 0)
        flags[held, first[held]] = 1.0
        return flags
    flags = batch.reset if batch.step_reset is None else batch.step_reset
    return flags.astype(np.float32)
