"""Padding kept out of a carried state: each row's state is its state after its last real step.

Padding only ever follows the real steps of a window (docs/concepts.md), so a row's real steps
are a prefix of its window, as long as :func:`real_lengths` says. A model that ran through the
padding would end the window with a state no series ever had: harmless to training (a padded
row is reset or idle from then on), wrong for whoever reads the state afterwards, such as a
forecast started from it. :func:`run_rnn` runs ``torch.nn.LSTM``, ``GRU`` and ``RNN`` over
the real steps only (``pack_padded_sequence``, fused kernels kept), and :func:`hold` does it
step by step for a cell of one's own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqbatch.torch.state import State, _map_state


def real_lengths(sample_weight: torch.Tensor) -> torch.Tensor:
    """The number of real steps of each row: ``(B,)`` int64 on the CPU, ``0`` for an idle row.

    Args:
        sample_weight: ``TensorBatch.sample_weight`` of shape ``(B, W)``, 0 on padding.

    Returns:
        The lengths, on the CPU where ``pack_padded_sequence`` wants them.

    Raises:
        ValueError: ``sample_weight`` is not ``(B, W)`` (a batcher built with
            ``return_sequences=False`` weights only each window's last step), or a real
            step follows padding in some row.

    Examples:
        >>> import torch
        >>> real_lengths(torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
        tensor([3, 1, 0])
    """
    weight = torch.as_tensor(sample_weight)
    if weight.ndim != 2:
        raise ValueError(
            "`sample_weight` must hold one weight per step, shape (B, W), to tell each row's "
            "real steps from its padding: build the batcher with return_sequences=True (with "
            "return_sequences=False only the last step of each window is weighted). Received: "
            f"sample_weight of shape {tuple(weight.shape)}"
        )
    real = (weight.detach() > 0).cpu().numpy()  # numpy: cheaper for arrays this small
    lengths = real.sum(axis=1)
    prefix = np.arange(real.shape[1]) < lengths[:, None]
    if not np.array_equal(real, prefix):
        row = int(np.flatnonzero((real != prefix).any(axis=1))[0])
        raise ValueError(
            "`sample_weight` must have padding only after the real steps of each row, as "
            "seqbatch batches have. Received: row "
            f"{row} weighted {weight[row].tolist()}"
        )
    return torch.from_numpy(lengths.astype(np.int64))


def hold(new_state: State, old_state: State, real: Any, *, dim: int) -> State:
    """The new state in the rows whose step is real, the old state in the others.

    Call it after each step of a cell, with that step's column of ``sample_weight > 0``: a
    row keeps the state of its last real step through the padding after it.

    Args:
        new_state: the state after the step; a tensor, or a tuple or list of them.
        old_state: the state before it, of the same structure.
        real: ``(B,)`` bool, the step is real.
        dim: the batch axis of every tensor of the state.

    Returns:
        A state of the structure of ``new_state``, made out of place.

    Raises:
        ValueError: ``real`` is not ``(B,)`` bool, or the states differ in structure or shape.

    Examples:
        >>> import torch
        >>> old, new = torch.zeros(2, 3), torch.ones(2, 3)
        >>> hold(new, old, torch.tensor([True, False]), dim=0).tolist()
        [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    """
    flags = torch.as_tensor(real)
    if flags.dtype != torch.bool or flags.ndim != 1:
        raise ValueError(
            "`real` must hold one bool flag per stream, shape (B,). Received: real of dtype "
            f"{flags.dtype} and shape {tuple(flags.shape)}"
        )
    olds = iter(_leaves(old_state))

    def keep_padded(new: torch.Tensor) -> torch.Tensor:
        old = next(olds, None)
        if old is None or old.shape != new.shape or new.shape[dim] != flags.numel():
            raise ValueError(
                "`new_state` and `old_state` must be states of the same structure and shapes, "
                f"with one row per flag along dim={dim}. Received: a new state of shape "
                f"{tuple(new.shape)}, an old one of shape "
                f"{None if old is None else tuple(old.shape)}, {flags.numel()} flags"
            )
        shape = [1] * new.ndim
        shape[dim] = -1
        return torch.where(flags.to(new.device).view(shape), new, old)

    held = _map_state(keep_padded, new_state)
    if next(olds, None) is not None:
        raise ValueError(
            "`new_state` and `old_state` must be states of the same structure. Received: an "
            "old state with more tensors"
        )
    return held


def _leaves(state: State) -> list[torch.Tensor]:
    leaves: list[torch.Tensor] = []

    def collect(t: torch.Tensor) -> torch.Tensor:
        leaves.append(t)
        return t

    _map_state(collect, state)
    return leaves


def run_rnn(
    rnn: torch.nn.RNNBase, x: torch.Tensor, state: State, sample_weight: torch.Tensor
) -> tuple[torch.Tensor, State]:
    """Run ``rnn`` over the real steps of each row only; the state is each row's after its last.

    ``rnn`` is a ``torch.nn.LSTM``, ``GRU`` or ``RNN``, run forward as one packed sequence
    (``pack_padded_sequence``, so that fused and cuDNN kernels still run), with the rows that
    hold no real step left out: their state is passed through unchanged. Call it in place of
    ``rnn(x, state)``, after :func:`~seqbatch.torch.reset_rows`.

    Args:
        rnn: the recurrent module, unidirectional (a backward direction would run each window
            from its end, never continuing the window before).
        x: the window, ``(B, W, features)`` with ``batch_first=True``, else ``(W, B, features)``.
        state: what ``rnn`` takes as its state: ``None`` (zeros), a tensor, or an LSTM's
            ``(h, c)``, each ``(num_layers, B, units)``.
        sample_weight: ``TensorBatch.sample_weight``, ``(B, W)``.

    Returns:
        The outputs, shaped like ``rnn``'s, zero at padding, and the new state: each row's
        state after its last real step, or the state it came with if it has none.

    Raises:
        TypeError: ``rnn`` is not a ``torch.nn.RNNBase``.
        ValueError: ``rnn`` is bidirectional, ``sample_weight`` is not ``(B, W)`` for the
            batch and window of ``x``, or a real step follows padding.

    Examples:
        Row 1 holds 1 real step of 3; its state is the state after that step:

        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> gru = torch.nn.GRU(1, 2, batch_first=True)
        >>> x = torch.tensor([[[1.0], [2.0], [3.0]], [[1.0], [0.0], [0.0]]])
        >>> w = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
        >>> out, h = run_rnn(gru, x, None, w)
        >>> torch.allclose(h[0, 1], gru(x[1:, :1])[1][0, 0])
        True
        >>> out[1, 1:].abs().sum().item()
        0.0
    """
    if not isinstance(rnn, torch.nn.RNNBase):
        raise TypeError(
            f"`rnn` must be a torch.nn.LSTM, GRU or RNN. Received: rnn of type {type(rnn).__name__}"
        )
    if rnn.bidirectional:
        raise ValueError(
            "`rnn` must run forward only: a bidirectional RNN runs each window backwards from "
            "its last step too, which no carried state continues. Received: bidirectional=True"
        )
    lengths = real_lengths(sample_weight)
    B, W = (x.shape[0], x.shape[1]) if rnn.batch_first else (x.shape[1], x.shape[0])
    if tuple(lengths.shape) != (B,) or sample_weight.shape[1] != W:
        raise ValueError(
            "`sample_weight` must have the batch and window of `x`, (B, W) = "
            f"({B}, {W}). Received: sample_weight of shape {tuple(sample_weight.shape)}"
        )
    rows = torch.nonzero(lengths).flatten()
    if len(rows) == 0:
        return x.new_zeros(*x.shape[:2], rnn.proj_size or rnn.hidden_size), state
    batch_dim = 0 if rnn.batch_first else 1
    if len(rows) == B:
        return _run_packed(rnn, x, state, lengths, W)
    on_device = rows.to(x.device)
    sub_state = None if state is None else _map_state(lambda t: t.index_select(1, on_device), state)
    out, sub_new = _run_packed(
        rnn, x.index_select(batch_dim, on_device), sub_state, lengths[rows], W
    )
    shape = list(out.shape)
    shape[batch_dim] = B
    out = out.new_zeros(shape).index_copy(batch_dim, on_device, out)
    if state is None:  # zeros in the rows left out, as rnn takes None
        state = _map_state(lambda t: t.new_zeros(t.shape[0], B, *t.shape[2:]), sub_new)
    news = iter(_leaves(sub_new))
    return out, _map_state(lambda old: old.index_copy(1, on_device, next(news)), state)


def _run_packed(
    rnn: torch.nn.RNNBase, x: torch.Tensor, state: State, lengths: torch.Tensor, width: int
) -> tuple[torch.Tensor, State]:
    """``rnn`` over rows that each hold at least one real step, padding left out."""
    packed = pack_padded_sequence(x, lengths, batch_first=rnn.batch_first, enforce_sorted=False)
    out, new_state = rnn(packed, state)
    out, _ = pad_packed_sequence(out, batch_first=rnn.batch_first, total_length=width)
    return out, new_state
