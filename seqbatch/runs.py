"""The runs of one series along each row of a batch, in the formats that kernels take.

A **run** is a maximal stretch of a row's steps that one series fills, or the padding that
ends a row. Runs never cross rows. Kernels of state-space and linear-attention models name
them in one of three ways: ``seq_idx`` (one value per run, Mamba's), ``cu_seqlens`` (the
boundaries of the runs over the flattened batch, flash-linear-attention's and
flash-attention's varlen kernels') or ``position_ids`` (each step's place in its series).
See docs/concepts.md, "Kernel formats", for how each maps onto a carried state.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Runs(NamedTuple):
    """The runs of a batch: ``seq_idx`` ``(B, W)``, ``cu_seqlens`` ``(R + 1,)``, ``position_ids``."""

    seq_idx: np.ndarray
    cu_seqlens: np.ndarray
    position_ids: np.ndarray


def runs(
    position: np.ndarray,
    sample_weight: np.ndarray,
    step_reset: np.ndarray | None = None,
    step_position: np.ndarray | None = None,
) -> Runs:
    """The runs of one batch, from its fields, in a few vectorised steps.

    A row's first run starts at its first step whether or not the row is reset: ``reset``
    says whether that run continues the row's carried state, and the runs do not change.

    Runs are numbered 0 to ``R - 1`` in row-major order over the whole batch, so that
    ``seq_idx`` differs across rows too, as a kernel over the flattened batch needs. A run
    starts at every row's first step, at every step of a packed row that starts a series
    (``step_reset``), and at the first padding step of a row: padding is a run of its own,
    never part of a series' run. ``position_ids`` is the step of the series on real steps
    (for one series cut into streams, or ``series_boundary="concat"``, the step of the one
    joined series), and counts ``0, 1, ...`` again over a row's padding.

    Args:
        position: ``(B,)`` int, the batch's ``position``.
        sample_weight: ``(B, W)``, 0 on padding. A ``(B,)`` weight (``return_sequences=False``)
            tells no padding apart, and is refused unless the batch is packed.
        step_reset: ``(B, W)`` bool for packed batches, else None.
        step_position: ``(B, W)`` int for packed batches, else None.

    Returns:
        :class:`Runs`: ``seq_idx`` ``(B, W)`` int32, ``cu_seqlens`` ``(R + 1,)`` int32 from
        0 to ``B * W``, ``position_ids`` ``(B, W)`` int64.

    Raises:
        ValueError: ``sample_weight`` is ``(B,)`` and the batch is not packed.

    Examples:
        Row 0 holds a series from step 5 on; row 1 ends one series at step 1 and starts
        the next; row 2 holds 2 real steps, then padding:

        >>> w = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]])
        >>> r = runs(np.array([5, 3, 0]), w,
        ...          np.array([[0, 0, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]], bool),
        ...          np.array([[5, 6, 7, 8], [3, 4, 0, 1], [0, 1, -1, -1]]))
        >>> r.seq_idx
        array([[0, 0, 0, 0],
               [1, 1, 2, 2],
               [3, 3, 4, 4]], dtype=int32)
        >>> r.cu_seqlens
        array([ 0,  4,  6,  8, 10, 12], dtype=int32)
        >>> r.position_ids
        array([[5, 6, 7, 8],
               [3, 4, 0, 1],
               [0, 1, 0, 1]])
    """
    packed = step_position is not None
    if packed:
        real = np.asarray(step_position) >= 0
    elif np.ndim(sample_weight) == 2:
        real = np.asarray(sample_weight) > 0
    else:
        raise ValueError(
            "`sample_weight` must hold one weight per step, shape (B, W), for seq_idx, "
            "cu_seqlens and position_ids to tell each row's real steps from its padding: "
            "build the batcher with return_sequences=True (or series_boundary='pack'). "
            f"Received: sample_weight of shape {np.shape(sample_weight)}"
        )
    B, W = real.shape
    begins = np.zeros((B, W), dtype=bool)
    begins[:, 0] = True
    begins[:, 1:] = real[:, :-1] & ~real[:, 1:]  # the padding that ends a row
    if step_reset is not None:
        begins[:, 1:] |= np.asarray(step_reset)[:, 1:]
    flat = begins.ravel()
    seq_idx = (np.cumsum(flat, dtype=np.int32) - 1).reshape(B, W)
    cu_seqlens = np.append(np.flatnonzero(flat), B * W).astype(np.int32)
    steps = np.arange(W)
    if packed:
        position_ids = np.array(step_position, dtype=np.int64)
    else:
        position_ids = np.asarray(position, dtype=np.int64)[:, None] + steps
    pad = ~real
    if pad.any():
        n_real = real.sum(axis=1)  # padding only follows a row's real steps
        position_ids[pad] = (steps - n_real[:, None])[pad]
    return Runs(seq_idx, cu_seqlens, position_ids)
