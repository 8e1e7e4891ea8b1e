"""Window lengths that vary from batch to batch: schedules for ``sequence_length``.

``sequence_length`` takes an int (every window that long) or a pure callable ``(epoch, k) ->
int``: batch ``k`` of epoch ``epoch`` then holds exactly that many steps, and the windows of
an epoch are cut at the cumulative sums of its lengths. The callable must be pure: the same
``(epoch, k)`` always gives the same length, in any process and after a restart, since a
batch is a pure function of the data, the arguments, the seed, the epoch and ``k``.

Two ready-made schedules:

* :func:`awd`: the random truncation length of AWD-LSTM (Merity, Keskar and Socher,
  "Regularizing and Optimizing LSTM Language Models", 2017): with probability 0.95 a length
  drawn from ``N(bptt, 5)``, else from ``N(bptt / 2, 5)``, rounded and never below 5; the
  paper scales the learning rate by ``length / bptt`` (``batch.lr_scale``).
* :func:`warmup`: windows that grow linearly from ``start`` to ``end`` steps over the first
  ``batches`` batches of epoch 0, then stay at ``end``.

Each has a ``nominal`` length (the ``bptt`` of :func:`awd`, the ``end`` of :func:`warmup`),
which ``batch.lr_scale = batch.length / nominal`` divides by, and a ``repr`` that names every
argument: a checkpoint records it (:mod:`seqbatch.state`).

Examples:
    >>> import numpy as np, seqbatch
    >>> lengths = seqbatch.lengths.awd(bptt=70, seed=0)
    >>> [lengths(0, k) for k in range(6)]
    [72, 71, 71, 63, 68, 65]
    >>> lengths(0, 3) == lengths(0, 3), lengths.nominal
    (True, 70)
    >>> grow = seqbatch.lengths.warmup(2, 8, batches=3)
    >>> [grow(0, k) for k in range(5)], grow(1, 0)
    ([2, 4, 6, 8, 8], 8)
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from seqbatch import _checks

_BLOCK = 1024  # lengths drawn per block of batches: one generator per block, not per batch


class Schedule:
    """A ``sequence_length`` schedule: ``schedule(epoch, k)`` is the length of batch ``k``.

    Subclasses implement :meth:`draw`, the lengths of a run of batches at once.

    Attributes:
        nominal: the length that ``lr_scale`` divides by.
    """

    nominal: int

    def __call__(self, epoch: int, k: int) -> int:
        return int(self.draw(epoch, k, k + 1)[0])

    def draw(self, epoch: int, start: int, stop: int) -> np.ndarray:
        """The lengths of batches ``[start, stop)`` of ``epoch``, int64."""
        raise NotImplementedError


class AWD(Schedule):
    """AWD-LSTM's random truncation length; see :func:`awd`."""

    def __init__(self, bptt: int, seed: int, p: float, std: float, minimum: int) -> None:
        self.bptt = _checks.positive_int("bptt", bptt)
        self.seed = _checks.seed("seed", seed)
        self.p: float
        self.std: float
        self.minimum: int
        if not isinstance(p, numbers.Real) or not 0 <= p <= 1:
            raise ValueError(f"`p` must be a probability in [0, 1]. Received: p={p!r}")
        if not isinstance(std, numbers.Real) or std < 0:
            raise ValueError(f"`std` must be a non-negative number. Received: std={std!r}")
        self.p, self.std = float(p), float(std)
        self.minimum = _checks.positive_int("minimum", minimum)
        self.nominal = self.bptt

    def draw(self, epoch: int, start: int, stop: int) -> np.ndarray:
        out = []
        for block in range(start // _BLOCK, -(-stop // _BLOCK)):
            rng = np.random.default_rng([self.seed, epoch, block])
            full = rng.random(_BLOCK) < self.p
            mean = np.where(full, self.bptt, self.bptt / 2)
            out.append(np.rint(mean + self.std * rng.standard_normal(_BLOCK)))
        drawn = np.maximum(np.concatenate(out), self.minimum).astype(np.int64)
        first = start // _BLOCK * _BLOCK
        return drawn[start - first : stop - first]

    def __repr__(self) -> str:
        return (
            f"seqbatch.lengths.awd(bptt={self.bptt}, seed={self.seed}, p={self.p}, "
            f"std={self.std}, minimum={self.minimum})"
        )


class Warmup(Schedule):
    """Windows growing linearly from ``start`` to ``end`` steps; see :func:`warmup`."""

    def __init__(self, start: int, end: int, batches: int) -> None:
        self.start = _checks.positive_int("start", start)
        self.end = _checks.positive_int("end", end)
        self.batches = _checks.positive_int("batches", batches)
        self.nominal = self.end

    def draw(self, epoch: int, start: int, stop: int) -> np.ndarray:
        k = np.arange(start, stop, dtype=np.int64)
        if epoch > 0:
            return np.full(k.size, self.end, dtype=np.int64)
        grown = self.start + (self.end - self.start) * np.minimum(k, self.batches) / self.batches
        return np.rint(grown).astype(np.int64)

    def __repr__(self) -> str:
        return f"seqbatch.lengths.warmup({self.start}, {self.end}, batches={self.batches})"


def awd(
    bptt: int = 70, *, seed: int = 0, p: float = 0.95, std: float = 5.0, minimum: int = 5
) -> Schedule:
    """AWD-LSTM's random truncation length, deterministic per ``(seed, epoch, k)``.

    With probability ``p`` the length of a batch is drawn from ``N(bptt, std)``, else from
    ``N(bptt / 2, std)``; it is rounded and never below ``minimum`` (the paper's values:
    ``p=0.95``, ``std=5``, at least 5 steps). Every step of the data is then sometimes a
    window's first. Multiply the learning rate of each batch by ``batch.lr_scale`` (``length
    / bptt``), as the paper does.

    Args:
        bptt: the nominal length.
        seed: the seed of the draw, an int in ``[0, 2**63)``: epoch ``e`` draws its lengths
            from ``(seed, e)``, whatever the shuffle's seed.
        p: the probability of a draw around ``bptt`` rather than ``bptt / 2``.
        std: the standard deviation of the draw.
        minimum: the shortest length.

    Examples:
        >>> lengths = awd(bptt=20, seed=1)
        >>> [lengths(2, k) for k in range(5)]
        [15, 34, 24, 23, 21]
    """
    return AWD(bptt, seed, p, std, minimum)


def warmup(start: int, end: int, batches: int) -> Schedule:
    """Windows that grow linearly from ``start`` to ``end`` steps, then stay at ``end``.

    Batch ``k < batches`` of epoch 0 holds ``round(start + (end - start) * k / batches)``
    steps; every later batch, and every batch of a later epoch, ``end``. A curriculum of
    short windows first, for models that learn the long ones more easily after.

    Examples:
        >>> schedule = warmup(4, 16, batches=4)
        >>> [schedule(0, k) for k in range(6)], schedule.nominal
        ([4, 7, 10, 13, 16, 16], 16)
    """
    return Warmup(start, end, batches)


def is_schedule(sequence_length: Any) -> bool:
    """Whether ``sequence_length`` is a callable schedule rather than an int."""
    return callable(sequence_length) and not isinstance(sequence_length, numbers.Integral)


def check(name: str, sequence_length: Any) -> int | Callable[[int, int], int]:
    """``sequence_length`` if it is a positive int or a callable, else raise."""
    if is_schedule(sequence_length):
        return sequence_length
    if isinstance(sequence_length, bool) or not isinstance(sequence_length, numbers.Integral):
        raise TypeError(
            f"`{name}` must be a positive integer or a callable (epoch, k) -> int. "
            f"Received: {name}={sequence_length!r}"
        )
    return _checks.positive_int(name, sequence_length)


def describe(sequence_length: Any) -> str:
    """A schedule in words, for the fingerprint of a checkpoint and for ``describe()``."""
    if isinstance(sequence_length, Schedule):
        return repr(sequence_length)
    name = getattr(sequence_length, "__qualname__", type(sequence_length).__qualname__)
    return f"{getattr(sequence_length, '__module__', '?')}.{name}"


class Drawn:
    """The lengths of one epoch's batches, drawn as far as a plan needs them.

    ``cum[k]`` is the first step of window ``k`` in its stream (``cum[0] == 0``), and window
    ``k`` holds ``lengths[k] = cum[k + 1] - cum[k]`` steps.

    Raises:
        TypeError, ValueError: the schedule gave a length that is not a positive int; the
            message names the batch.
    """

    def __init__(self, schedule: Callable[[int, int], int], epoch: int) -> None:
        self.schedule = schedule
        self.epoch = epoch
        self.lengths = np.zeros(0, dtype=np.int64)
        self.cum = np.zeros(1, dtype=np.int64)

    def _more(self, count: int) -> None:
        start, stop = self.lengths.size, self.lengths.size + count
        if isinstance(self.schedule, Schedule):
            new = self.schedule.draw(self.epoch, start, stop)
        else:
            new = np.array([self._one(k) for k in range(start, stop)], dtype=np.int64)
        self.lengths = np.concatenate((self.lengths, new))
        self.cum = np.concatenate((self.cum, self.cum[-1] + np.cumsum(new)))

    def _one(self, k: int) -> int:
        value = self.schedule(self.epoch, k)
        call = f"sequence_length(epoch={self.epoch}, k={k})"
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(
                f"`sequence_length` must return a positive int for every batch. Received: "
                f"{call} = {value!r}"
            )
        if value < 1:
            raise ValueError(
                f"`sequence_length` must return a positive int for every batch. Received: "
                f"{call} = {value!r}"
            )
        return int(value)

    def count(self, n: int) -> None:
        """Draw the lengths of at least ``n`` batches."""
        if n > self.lengths.size:
            self._more(max(n - self.lengths.size, min(_BLOCK, 2 * self.lengths.size + 16)))

    def reach(self, steps: int) -> None:
        """Draw until the windows cover more than ``steps`` steps of a stream."""
        while self.cum[-1] <= steps:
            self._more(min(_BLOCK * 64, max(16, self.lengths.size)))

    def cut(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The lengths and cumulative sums of the first ``n`` batches, read-only."""
        self.count(n)
        lengths, cum = self.lengths[:n].copy(), self.cum[: n + 1].copy()
        lengths.flags.writeable = cum.flags.writeable = False
        return lengths, cum
