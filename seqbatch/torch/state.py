"""What a truncated-BPTT loop does between windows: reset flagged rows, detach, weight the loss.

A state is a tensor, ``None`` (what ``torch.nn.LSTM`` takes for zeros), or a tuple or list of
states, such as an LSTM's ``(h, c)``. Every helper returns a new state and changes none in
place: autograd may still need the old one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

#: A tensor, None, or a tuple or list (namedtuples included) of states.
State = Any


def _map_state(fn: Callable[[torch.Tensor], torch.Tensor], state: State) -> State:
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return fn(state)
    if isinstance(state, (tuple, list)):
        parts = [_map_state(fn, s) for s in state]
        return type(state)(*parts) if hasattr(state, "_fields") else type(state)(parts)
    raise TypeError(
        "`state` must be a tensor, None, or a tuple or list of them. Received: state of type "
        f"{type(state).__name__}"
    )


def reset_rows(state: State, reset: Any, *, dim: int) -> State:
    """The state with the rows of the streams flagged in ``reset`` set to zero.

    Call it before each window, with the window's flags: a stream that starts a new series
    then starts from zeros, and every other stream keeps the state it ended the last window
    with. ``dim`` is the batch axis of every tensor of the state, and it depends on the
    model: ``torch.nn.LSTM``, ``GRU`` and ``RNN`` keep ``(num_layers * directions, B, H)``,
    ``dim=1``, even with ``batch_first=True`` (which concerns their input and output only);
    ``torch.nn.LSTMCell`` and most hand-written cells keep ``(B, H)``, ``dim=0``.

    Args:
        state: the state; ``None`` stays ``None``.
        reset: ``(B,)`` bool flags, such as ``TensorBatch.reset``.
        dim: the batch axis of each tensor of ``state``; negative counts from the end.

    Returns:
        A state of the same structure; rows are zeroed out of place (``masked_fill``), so
        autograd flows through the rows kept and stops at the rows reset.

    Raises:
        TypeError: ``state`` holds something other than tensors, tuples and lists.
        ValueError: ``reset`` is not one-dimensional bool, or a tensor has no axis ``dim`` or
            not one row per flag along it.

    Examples:
        An ``nn.LSTM`` state of 1 layer, 3 streams, 2 units; stream 1 starts a new series:

        >>> import torch
        >>> h = torch.ones(1, 3, 2)
        >>> h, c = reset_rows((h, 2 * h), torch.tensor([False, True, False]), dim=1)
        >>> c[0].tolist()
        [[2.0, 2.0], [0.0, 0.0], [2.0, 2.0]]
    """
    flags = torch.as_tensor(reset)
    if flags.dtype != torch.bool or flags.ndim != 1:
        raise ValueError(
            "`reset` must hold one bool flag per stream, shape (B,). Received: reset of dtype "
            f"{flags.dtype} and shape {tuple(flags.shape)}"
        )

    def zero_flagged(t: torch.Tensor) -> torch.Tensor:
        if not -t.ndim <= dim < t.ndim:
            raise ValueError(
                f"`dim` must be an axis of every state tensor. Received: dim={dim} for a state "
                f"of shape {tuple(t.shape)}"
            )
        if t.shape[dim] != flags.numel():
            raise ValueError(
                f"`state` must have one row per stream along dim={dim}. Received: a state of "
                f"shape {tuple(t.shape)} and {flags.numel()} reset flags"
            )
        shape = [1] * t.ndim
        shape[dim] = -1
        return t.masked_fill(flags.to(t.device).view(shape), 0)

    return _map_state(zero_flagged, state)


def detach(state: State) -> State:
    """The state cut from the graph that made it: the truncation of truncated BPTT.

    Call it after each window's backward pass; the next window then starts from the values
    of the state, and gradients stop at the window's first step.

    Examples:
        >>> import torch
        >>> h = torch.zeros(1, 2, 3, requires_grad=True) * 2
        >>> detach((h, [h]))[1][0].requires_grad
        False
    """
    return _map_state(torch.Tensor.detach, state)


def weighted_mean(values: torch.Tensor, sample_weight: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over real steps: ``sum(values * w) / sum(w)``.

    Padding (weight 0) counts neither in the sum nor in the count, so it neither dilutes the
    loss nor shrinks its gradients; a value on padding that is not finite is left out too.
    A batch of padding alone gives 0.

    Args:
        values: per-step values, such as a loss with ``reduction="none"``; the shape of
            ``sample_weight``: reduce any other axes first.
        sample_weight: ``TensorBatch.sample_weight``, ``(B, W)`` or ``(B,)``.

    Returns:
        A scalar tensor of the dtype of ``values``.

    Raises:
        ValueError: the shapes differ.

    Examples:
        Two streams of 3 steps; the last step of stream 1 is padding:

        >>> import torch
        >>> loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]])
        >>> w = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
        >>> weighted_mean(loss, w)
        tensor(3.)
    """
    if values.shape != sample_weight.shape:
        raise ValueError(
            "`values` must have the shape of `sample_weight`, one value per step: reduce other "
            f"axes first. Received: values of shape {tuple(values.shape)} and sample_weight of "
            f"shape {tuple(sample_weight.shape)}"
        )
    weight = sample_weight.to(device=values.device, dtype=values.dtype)
    total = (torch.where(weight > 0, values, 0) * weight).sum()
    return total / weight.sum().clamp_min(torch.finfo(values.dtype).tiny)
