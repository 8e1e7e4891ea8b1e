"""A recurrent state carried through ``jax.lax.scan``, window after window: resets, padding, loss.

A state is any pytree of arrays (an LSTM's ``(h, c)``, a dict, a Flax carry). The helpers
are pure and trace under ``jax.jit``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def reset_rows(state: Any, reset: Any, *, axis: int) -> Any:
    """The state with the rows of the streams flagged in ``reset`` set to zero.

    Apply it to the carry before scanning a window, with that window's flags: a stream
    that starts a new series starts from zeros, the others keep the state they ended the last
    window with. ``axis`` is the batch axis of every leaf: 0 for the ``(B, units)`` carries of
    a hand-written cell or of Flax's recurrent cells.

    Args:
        state: a pytree of arrays; ``None`` leaves stay ``None``.
        reset: ``(B,)`` bool flags, the ``"reset"`` of a record.
        axis: the batch axis of each leaf; negative counts from the end.

    Returns:
        A pytree of the same structure.

    Raises:
        ValueError: ``reset`` is not one-dimensional bool, or a leaf has no axis ``axis`` or
            not one row per flag along it.

    Examples:
        >>> import jax.numpy as jnp
        >>> h = jnp.ones((3, 2))
        >>> h, c = reset_rows((h, 2 * h), jnp.array([False, True, False]), axis=0)
        >>> c.tolist()
        [[2.0, 2.0], [0.0, 0.0], [2.0, 2.0]]
    """
    flags = jnp.asarray(reset)
    if flags.dtype != jnp.bool_ or flags.ndim != 1:
        raise ValueError(
            "`reset` must hold one bool flag per stream, shape (B,). Received: reset of dtype "
            f"{flags.dtype} and shape {tuple(flags.shape)}"
        )

    def zero_flagged(leaf: Any) -> Any:
        leaf = jnp.asarray(leaf)
        if not -leaf.ndim <= axis < leaf.ndim:
            raise ValueError(
                f"`axis` must be an axis of every state leaf. Received: axis={axis} for a state "
                f"of shape {tuple(leaf.shape)}"
            )
        if leaf.shape[axis] != flags.shape[0]:
            raise ValueError(
                f"`state` must have one row per stream along axis={axis}. Received: a state of "
                f"shape {tuple(leaf.shape)} and {flags.shape[0]} reset flags"
            )
        shape = [1] * leaf.ndim
        shape[axis] = -1
        return jnp.where(flags.reshape(shape), jnp.zeros((), leaf.dtype), leaf)

    return jax.tree.map(zero_flagged, state)


def hold(new_state: Any, old_state: Any, real: Any, *, axis: int) -> Any:
    """The new state in the rows whose step is real, the old state in the others.

    Apply it inside the scan's step, after the cell, with that step's column of
    ``sample_weight > 0``: a row then keeps the state of its last real step through the
    padding after it, and the state after the window is each row's after its last real
    step, never a state that ran through padding (padding only follows real steps).

    Args:
        new_state: the state after the step, a pytree of arrays.
        old_state: the state before it, the same pytree.
        real: ``(B,)`` bool, the step is real.
        axis: the batch axis of each leaf; negative counts from the end.

    Returns:
        A pytree of the structure of ``new_state``.

    Raises:
        ValueError: ``real`` is not ``(B,)`` bool, the states differ in structure, or a leaf
            has not one row per flag along ``axis``.

    Examples:
        >>> import jax.numpy as jnp
        >>> old, new = jnp.zeros((2, 3)), jnp.ones((2, 3))
        >>> hold(new, old, jnp.array([True, False]), axis=0).tolist()
        [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    """
    flags = jnp.asarray(real)
    if flags.dtype != jnp.bool_ or flags.ndim != 1:
        raise ValueError(
            "`real` must hold one bool flag per stream, shape (B,). Received: real of dtype "
            f"{flags.dtype} and shape {tuple(flags.shape)}"
        )
    structures: list[Any] = [jax.tree.structure(new_state), jax.tree.structure(old_state)]
    if structures[0] != structures[1]:
        raise ValueError(
            "`new_state` and `old_state` must be pytrees of the same structure. Received: "
            f"{structures[0]} and {structures[1]}"
        )

    def keep_padded(new: Any, old: Any) -> Any:
        new, old = jnp.asarray(new), jnp.asarray(old)
        if new.shape != old.shape or not -new.ndim <= axis < new.ndim:
            raise ValueError(
                f"`new_state` and `old_state` must have the same shapes, with an axis {axis}. "
                f"Received: leaves of shapes {new.shape} and {old.shape}"
            )
        if new.shape[axis] != flags.shape[0]:
            raise ValueError(
                f"`state` must have one row per stream along axis={axis}. Received: a state of "
                f"shape {new.shape} and {flags.shape[0]} flags"
            )
        shape = [1] * new.ndim
        shape[axis] = -1
        return jnp.where(flags.reshape(shape), new, old)

    return jax.tree.map(keep_padded, new_state, old_state)


def weighted_mean(values: Any, sample_weight: Any) -> jax.Array:
    """The mean of ``values`` over real steps: ``sum(values * w) / sum(w)``.

    Padding (weight 0) counts neither in the sum nor in the count; a value on padding that
    is not finite is left out too. A batch of padding alone gives 0.

    Args:
        values: per-step values, such as a per-step loss; the shape of ``sample_weight``:
            reduce any other axes first.
        sample_weight: the ``"sample_weight"`` of a record, ``(B, W)`` or ``(B,)``.

    Returns:
        A scalar of the dtype of ``values``.

    Raises:
        ValueError: the shapes differ.

    Examples:
        >>> import jax.numpy as jnp
        >>> loss = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, jnp.inf]])
        >>> float(weighted_mean(loss, jnp.array([[1, 1, 1], [1, 1, 0]])))
        3.0
    """
    values = jnp.asarray(values)
    weight = jnp.asarray(sample_weight)
    if values.shape != weight.shape:
        raise ValueError(
            "`values` must have the shape of `sample_weight`, one value per step: reduce other "
            f"axes first. Received: values of shape {values.shape} and sample_weight of shape "
            f"{weight.shape}"
        )
    weight = weight.astype(values.dtype)
    total = jnp.sum(jnp.where(weight > 0, values, 0) * weight)
    return total / jnp.maximum(jnp.sum(weight), jnp.finfo(values.dtype).tiny)
