"""Argument checks shared by the plan, the batcher and the adapters.

Every message names the argument, the rule and the value received, in the form
``` `name` must be <rule>. Received: name=<value> ```.
"""

from __future__ import annotations

import numbers
from typing import Any


def positive_int(name: str, value: Any) -> int:
    """Return ``value`` as an ``int`` if it is an integer >= 1, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    if value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


def non_negative_int(name: str, value: Any) -> int:
    """Return ``value`` as an ``int`` if it is an integer >= 0, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be a non-negative integer. Received: {name}={value!r}")
    if value < 0:
        raise ValueError(f"`{name}` must be a non-negative integer. Received: {name}={value!r}")
    return int(value)


SEED_BOUND = 2**63


def seed(name: str, value: Any) -> int:
    """Return ``value`` as an ``int`` if it is an integer in ``[0, 2**63)``, else raise.

    A seed is saved with the batcher's state: below ``2**63`` it fits the signed 64-bit
    integer that numpy arrays, torch tensors and checkpoint formats store integers in.
    """
    value = non_negative_int(name, value)
    if value >= SEED_BOUND:
        raise ValueError(
            f"`{name}` must be less than 2**63, so that a checkpoint's int64 holds it. "
            f"Received: {name}={value}"
        )
    return value


def one_of(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of the ``allowed`` strings, else raise."""
    if not isinstance(value, str) or value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"`{name}` must be one of {choices}. Received: {name}={value!r}")
    return value


def boolean(name: str, value: Any) -> bool:
    """Return ``value`` if it is a ``bool``, else raise (no truthiness guessing)."""
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return value
