"""Burn-in: each window preceded by the steps right before it in its series, without loss.

With ``StreamBatcher(..., burn_in=b)`` every batch holds ``b`` more columns in front of its
windows: ``x`` is ``(B, b + W, *features)``, and ``x[:, b:]`` is exactly the batch that the
same batcher without burn-in gives. Row ``i``'s burn-in steps are the ``p_i = min(b,
position_i)`` steps ``[position_i - p_i, position_i)`` of its own series (``series_i``), in
columns ``[b - p_i, b)``: right before the window, never another series'. Where a window
starts fewer than ``b`` steps into its series, the prefix is shorter and columns ``[0, b -
p_i)`` are padding (zeros, weight 0): padding that *precedes* the data, flagged in neither
``burn_in`` nor ``sample_weight``. An idle row is all padding.

The burn-in steps carry no loss: ``sample_weight`` is 0 on the ``b`` first columns (with
``return_sequences=False`` it is the ``(B,)`` weight of the window's last step, as without
burn-in). ``y`` holds their targets, for a model that wants to look at them. The
``(B, b)`` bool field ``batch.burn_in`` is True exactly on the real burn-in steps.

The state: nothing is carried from batch to batch. Each row starts from its own initial
state, right before its first real step (column ``b - p_i``: the first burn-in step, or the
window's first step when there is none), and the burn-in steps warm it up:

* ``reset[i]`` is True where that first real step is its series' first step (step 0): the
  initial state is then exactly zeros.
* Elsewhere the row starts in the middle of its series: from zeros (training without a
  carried state), or from a state stored for step ``position_i - p_i`` of the series (a
  stale stored state, as R2D2 does), which the burn-in refreshes.
* The padding in front must not reach that state. The per-step flags of the adapters
  (``seqbatch.batch.reset_flags``: 1.0 at each row's first real step, ``(B, b + W)``)
  tell a model such as :class:`seqbatch.keras.StreamReset` to zero the state right there.

Batches with burn-in do not depend on each other: read them in any order.

Examples:
    >>> import numpy as np, seqbatch
    >>> batches = seqbatch.StreamBatcher(np.arange(20), None, batch_size=2,
    ...                                  sequence_length=3, burn_in=2)
    >>> b = batches[0]
    >>> b.x
    array([[ 0,  0,  0,  1,  2],
           [ 7,  8,  9, 10, 11]])
    >>> b.burn_in, b.reset
    (array([[False, False],
           [ True,  True]]), array([ True, False]))
    >>> b.sample_weight
    array([[0., 0., 1., 1., 1.],
           [0., 0., 1., 1., 1.]], dtype=float32)
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import TYPE_CHECKING, Any

import numpy as np

from seqbatch.batch import Batch

if TYPE_CHECKING:
    from seqbatch.view import EpochView


def check(burn_in: Any, series_boundary: str, n_series: int) -> int:
    """``burn_in`` as an int if the layout can take it, else raise, naming the rule."""
    if isinstance(burn_in, bool) or not isinstance(burn_in, numbers.Integral):
        raise TypeError(
            f"`burn_in` must be a non-negative integer (steps). Received: burn_in={burn_in!r}"
        )
    if burn_in < 0:
        raise ValueError(
            f"`burn_in` must be a non-negative integer (steps). Received: burn_in={burn_in!r}"
        )
    if burn_in and series_boundary == "pack":
        raise ValueError(
            "`burn_in` must be 0 with series_boundary='pack': a packed window holds several "
            "series, and only its first could have a prefix. Received: "
            f"burn_in={burn_in} with series_boundary='pack' (use series_boundary='reset')"
        )
    if burn_in and series_boundary == "concat" and n_series > 1:
        raise ValueError(
            "`burn_in` must be 0 with series_boundary='concat' of several series: the steps "
            "before a window could belong to another series. Received: "
            f"burn_in={burn_in} with series_boundary='concat' of {n_series} series (use "
            "series_boundary='reset')"
        )
    return int(burn_in)


def prefixed(view: EpochView, batch: Batch) -> Batch:
    """``batch`` with the ``view.layout.burn_in`` steps before each window in front of it."""
    lay = view.layout
    b = lay.burn_in
    series, position = batch.series, batch.position
    held = series >= 0
    p = np.where(held, np.minimum(b, position), 0)
    start = np.where(held, position - p, 0)
    cols = np.arange(b) - (b - p)[:, None]  # column j holds prefix step cols[i, j] of row i
    flags = cols >= 0
    rows, at = np.arange(len(p))[:, None], np.maximum(cols, 0)

    def ahead(read: np.ndarray, window: np.ndarray) -> np.ndarray:
        out = np.empty((len(p), b + window.shape[1], *window.shape[2:]), window.dtype)
        out[:, :b] = read[rows, at]  # right-aligned: the prefix ends where the window starts
        out[:, :b][~flags] = 0
        out[:, b:] = window  # in the data's dtype and byte order, as the window is
        return out

    x = ahead(view._x_reader.read(series, start, p, False, b), batch.x)
    y = batch.y
    if y is not None and lay.return_sequences:
        y = ahead(view._y_reader.read(series, start + lay.shift, p, False, b), y)
    weight = batch.sample_weight
    if weight.ndim == 2:
        weight = np.concatenate((np.zeros((len(p), b), np.float32), weight), axis=1)
    reset = held & (start == 0)
    return dataclasses.replace(batch, x=x, y=y, sample_weight=weight, reset=reset, burn_in=flags)


def first_real_step(batch: Batch) -> np.ndarray:
    """``(B,)`` the column of each row's first real step (the first of its burn-in)."""
    assert batch.burn_in is not None
    b = batch.burn_in.shape[1]
    return b - batch.burn_in.sum(axis=1)
