"""A recurrent cell scanned over a batch of any layout, resets and padding honoured.

``jax.lax.scan`` runs a cell one step at a time, so a reset inside the window costs nothing
more than a ``jnp.where``: :func:`unroll` zeroes each row's carry right before each step
that starts a series (``step_reset`` of packed batches, ``reset`` at step 0 for the others),
keeps it through padded steps, and gives zeros as the output of a padded step. The carry
after the window is each row's after its last real step, the state its series would have
if run alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from seqbatch.jax.state import hold, reset_rows


def unroll(
    cell: Callable[[Any, Any], tuple[Any, Any]], batch: Any, state: Any, *, inputs: Any = None
) -> tuple[Any, Any]:
    """Scan ``cell`` over one batch, resetting each row where a series starts.

    Exact on every layout, and traceable under ``jax.jit`` and ``jax.grad``: each real
    step's output is the cell's output at that step of its series run alone (from the carry
    the row brings, when the series began in an earlier window), and the carry returned is
    each row's after its last real step. Apply it in place of a scan, with no
    :func:`~seqbatch.jax.reset_rows` before it.

    Args:
        cell: ``cell(carry, x_t) -> (carry, y_t)``, one step for every row: ``x_t`` is
            ``(B, *features)``, the carry a pytree of ``(B, ...)`` arrays, ``y_t`` a pytree
            of ``(B, ...)`` arrays.
        batch: a :class:`seqbatch.Batch`, or a record of :class:`~seqbatch.jax.StreamSource`
            (a mapping with ``"x"``, ``"sample_weight"``, ``"reset"`` and, for packed batches,
            ``"step_reset"``). ``sample_weight`` must be ``(B, W)``.
        state: the carry each row brings in, a pytree of ``(B, ...)`` arrays (zeros before
            the first batch: batch 0 resets every stream anyway).
        inputs: the cell's input in place of ``x``, ``(B, W, ...)``: an embedding of it, say.

    With burn-in (``burn_in=b``, :mod:`seqbatch.burn_in`) nothing is carried: each row runs
    from zeros from its first real step (its first burn-in step) over its burn-in steps and
    its window, whatever ``state`` it brings; outputs are given at the burn-in steps too.

    Returns:
        ``(outputs, state)``: the cell's outputs stacked along axis 1, ``(B, W, ...)``, zero
        at padding, and the carry after each row's last real step (the carry it came with,
        if the window holds none).

    Raises:
        ValueError: ``sample_weight`` is not ``(B, W)``, ``reset`` is not ``(B,)`` bool,
            ``step_reset`` is not ``(B, W)`` bool, or the input is not ``(B, W, ...)``.

    Examples:
        A running sum as the cell; row 1 starts a new series at its step 2, and its last
        step is padding:

        >>> import jax.numpy as jnp
        >>> def running_sum(total, x_t):
        ...     total = total + x_t
        ...     return total, total
        >>> batch = {
        ...     "x": jnp.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 0.0]]),
        ...     "sample_weight": jnp.array([[1.0, 1, 1, 1], [1, 1, 1, 0]]),
        ...     "reset": jnp.array([True, False]),
        ...     "step_reset": jnp.array([[True, False, False, False], [False, False, True, False]]),
        ... }
        >>> out, total = unroll(running_sum, batch, jnp.array([100.0, 100.0]))
        >>> out.tolist(), total.tolist()
        ([[1.0, 3.0, 6.0, 10.0], [105.0, 111.0, 7.0, 0.0]], [10.0, 7.0])
    """
    x = jnp.asarray(_field(batch, "x") if inputs is None else inputs)
    weight = jnp.asarray(_field(batch, "sample_weight"))
    if weight.ndim != 2:
        raise ValueError(
            "`sample_weight` must hold one weight per step, shape (B, W), to tell each row's "
            "real steps from its padding: build the batcher with return_sequences=True. "
            f"Received: sample_weight of shape {weight.shape}"
        )
    B, W = weight.shape
    if x.ndim < 2 or x.shape[:2] != (B, W):
        raise ValueError(
            f"`{'x' if inputs is None else 'inputs'}` must be (B, W, ...) with the batch and "
            f"window of `sample_weight`, (B, W) = ({B}, {W}). Received: shape {x.shape}"
        )
    reset = jnp.asarray(_field(batch, "reset"))
    if reset.dtype != jnp.bool_ or reset.shape != (B,):
        raise ValueError(
            f"`reset` must hold one bool flag per stream, shape ({B},). Received: reset of "
            f"dtype {reset.dtype} and shape {reset.shape}"
        )
    step_reset = _field(batch, "step_reset", None)
    if step_reset is None:
        flags = jnp.zeros((B, W), bool).at[:, 0].set(reset)
    else:
        flags = jnp.asarray(step_reset)
        if flags.dtype != jnp.bool_ or flags.shape != (B, W):
            raise ValueError(
                f"`step_reset` must hold one bool flag per step, shape ({B}, {W}). Received: "
                f"step_reset of dtype {flags.dtype} and shape {flags.shape}"
            )

    real = weight > 0
    burn_in = _field(batch, "burn_in", None)
    if burn_in is not None:
        # Burn-in (seqbatch.burn_in): the burn-in steps are real steps without loss, and each
        # row starts from zeros right before its first real step, after any padding.
        burn_in = jnp.asarray(burn_in)
        b = burn_in.shape[1]
        real = jnp.concatenate((burn_in, real[:, b:]), axis=1)
        first = b - burn_in.sum(axis=1)
        flags = jnp.zeros((B, W), bool).at[jnp.arange(B), first].set(real.any(axis=1))

    def step(carry: Any, at: tuple[Any, Any, Any]) -> tuple[Any, Any]:
        x_t, flag_t, real_t = at
        carry = reset_rows(carry, flag_t, axis=0)
        new, y_t = cell(carry, x_t)
        y_t = jax.tree.map(
            lambda y: jnp.where(real_t.reshape(-1, *[1] * (jnp.ndim(y) - 1)), y, 0), y_t
        )
        return hold(new, carry, real_t, axis=0), y_t

    time_major = (jnp.moveaxis(x, 1, 0), flags.T, real.T)
    state, ys = jax.lax.scan(step, state, time_major)
    return jax.tree.map(lambda y: jnp.moveaxis(y, 0, 1), ys), state


_MISSING = object()


def _field(batch: Any, name: str, default: Any = _MISSING) -> Any:
    """A field of a :class:`seqbatch.Batch` or of a record (a mapping)."""
    if isinstance(batch, Mapping):
        if name in batch:
            return batch[name]
    elif hasattr(batch, name):
        return getattr(batch, name)
    if default is _MISSING:
        raise ValueError(
            f"`batch` must hold {name!r}, as a seqbatch.Batch or a StreamSource record does. "
            f"Received: a batch of type {type(batch).__name__} without it"
        )
    return default
