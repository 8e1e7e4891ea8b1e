"""The state of a batcher for checkpoints: where the loop stands, the seed, and what it reads.

A batch is a pure function of (data, arguments, seed, epoch, index), so a loop that stopped
goes on from a small dict: the epoch and the next batch, the seed, and a fingerprint of the
data and the arguments, which refuses a state saved for other data or other sizes instead of
restoring it into batches that would no longer line up. The dict holds only ints, bools and
strings (JSON, ``torch.save`` and orbax all keep it). It follows torchdata's
``state_dict()`` / ``load_state_dict()``; grain's iterators call theirs ``get_state()`` /
``set_state()``.

The fingerprint is cheap: the number of series and a hash of their lengths, the shapes and
dtypes of ``x`` and ``y``, the targets, every argument of the layout, the streams of a shard,
and a hash of 64 steps sampled from the data (``sampled_steps``; of target arrays too),
each read alone, so that it costs 64 small reads whatever the size of a memory map or a file.
What it does not catch: values changed only between the sampled steps, with the lengths,
shapes and dtypes unchanged (a few values corrected, a file rewritten in part). Data
rewritten as a whole (rescaled, filtered, another recording of the same length) changes the
sampled steps too and is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from seqbatch import _checks
from seqbatch import lengths as _lengths
from seqbatch.ragged import lengths_of

if TYPE_CHECKING:
    from seqbatch.batcher import StreamBatcher

_KEYS = ("epoch", "next_batch", "seed", "fingerprint")


def _digest(*arrays: Any) -> str:
    h = hashlib.blake2b(digest_size=12)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


SAMPLED_STEPS = 64


def sampled_steps(lengths: list[int] | np.ndarray) -> list[tuple[int, int]]:
    """The ``(series, step)`` pairs that the fingerprint reads: 64 steps evenly spaced.

    With all series end to end, ``T`` steps in all, they are steps ``i * (T - 1) // 63`` for
    ``i`` in ``[0, 64)``: the first and the last step of the data among them, every step
    when ``T <= 64``.

    Examples:
        >>> sampled_steps([3, 2])
        [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
        >>> pairs = sampled_steps([1000, 261])
        >>> len(pairs), pairs[:3], pairs[-2:]
        (64, [(0, 0), (0, 20), (0, 40)], [(1, 240), (1, 260)])
    """
    sizes = np.asarray(lengths, dtype=np.int64)
    ends = np.cumsum(sizes)
    flat = np.unique(np.arange(SAMPLED_STEPS) * (int(ends[-1]) - 1) // (SAMPLED_STEPS - 1))
    series = np.searchsorted(ends, flat, side="right")
    steps = flat - (ends[series] - sizes[series])
    return list(zip(series.tolist(), steps.tolist(), strict=True))


def _sampled(sources: Sequence[Any]) -> list[np.ndarray]:
    """The sampled steps of ``sources``, each read by a slice of one step."""
    pairs = sampled_steps(lengths_of(sources))
    return [np.asarray(sources[s][t : t + 1]) for s, t in pairs]


def _sequence_length(batches: StreamBatcher, epoch: int, seed: int | None) -> Any:
    """The int ``sequence_length``, or a schedule in words with the lengths of ``epoch``.

    A callable cannot be compared across processes: what a checkpoint checks is its name
    (a schedule of :mod:`seqbatch.lengths` names every argument) and the window lengths it
    gives for the saved epoch. Later epochs are the callable's to keep the same: it must be
    pure.
    """
    length = batches.sequence_length
    if not _lengths.is_schedule(length):
        return length
    view = batches.view if seed is None or seed == batches.seed else batches.view.with_seed(seed)
    plan = view.plan(epoch)
    return f"{_lengths.describe(length)}; epoch {epoch}: {_digest(plan.window_lengths)}"


def fingerprint(
    batches: StreamBatcher, epoch: int | None = None, seed: int | None = None
) -> dict[str, Any]:
    """What a batcher reads and how it lays it out, in a few JSON-friendly values.

    With window lengths that vary, ``epoch`` and ``seed`` name the epoch whose lengths are
    recorded, and the seed of its layout (default: the batcher's).
    """
    sources = batches.sources
    lengths = [lengths_of(sources)]
    parts = getattr(sources[0], "ends", None)  # the series that series_boundary="concat" joined
    if parts is not None:
        lengths.append(np.asarray(parts, dtype=np.int64))
    data = _sampled(sources)
    if batches.target_sources is not sources:
        data += _sampled(batches.target_sources)
    return {
        "series": batches.n_series,
        "lengths": _digest(*lengths),
        "x": f"{batches.feature_shape} {batches.dtype.str}",
        "y": "none"
        if batches.target_dtype is None
        else f"{batches.target_shape} {batches.target_dtype.str}",
        "targets": batches.shift,
        "target_arrays": batches.target_sources is not sources,
        "batch_size": batches.plan.batch_size,
        "streams": f"[{batches.streams.start}, {batches.streams.stop})",
        "sequence_length": _sequence_length(
            batches, batches.epoch if epoch is None else epoch, seed
        ),
        "return_sequences": batches.return_sequences,
        "remainder": batches.remainder,
        "align": batches.align,
        "series_boundary": batches.series_boundary,
        "shuffle": batches.shuffle,
        "data": _digest(*data),
        # Only where it is set: checkpoints of batchers without burn-in keep their fingerprint.
        **({"burn_in": batches.burn_in} if batches.burn_in else {}),
    }


def state_dict(batches: StreamBatcher, epoch: int, next_batch: int) -> dict[str, Any]:
    """The state of ``batches`` when batch ``next_batch`` of ``epoch`` comes next."""
    if next_batch >= batches.view.n_batches(epoch):
        # The epoch is over: what comes next is the first batch of the next one.
        epoch, next_batch = epoch + 1, 0
    return {
        "epoch": epoch,
        "next_batch": next_batch,
        "seed": batches.seed,
        "fingerprint": fingerprint(batches, epoch),
    }


def check_state(batches: StreamBatcher, state: Any) -> tuple[int, int, int]:
    """``(epoch, next_batch, seed)`` of ``state`` if it fits ``batches``, else raise."""
    if not isinstance(state, dict) or set(state) != set(_KEYS):
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            "`state` must be a dict from StreamBatcher.state_dict(), with the keys "
            f"{', '.join(_KEYS)}. Received: state with {keys}"
        )
    epoch = _checks.non_negative_int("state['epoch']", state["epoch"])
    seed = _checks.seed("state['seed']", state["seed"])
    saved, here = state["fingerprint"], fingerprint(batches, epoch, seed)
    if not isinstance(saved, dict):
        saved = {}
    keys = [*here, *(k for k in saved if k not in here)]  # a key only one side has differs too
    differ = [k for k in keys if saved.get(k) != here.get(k)]
    if differ:
        what = "; ".join(f"{k}: saved {saved.get(k)!r}, here {here.get(k)!r}" for k in differ)
        raise ValueError(
            "`state` must come from a batcher of the same data and arguments: restored here, "
            "its position would name other batches, and the streams would no longer line up. "
            f"Received: a state that differs in {what}"
        )
    next_batch = _checks.non_negative_int("state['next_batch']", state["next_batch"])
    n = (batches.view if seed == batches.seed else batches.view.with_seed(seed)).n_batches(epoch)
    if next_batch >= n:
        raise ValueError(
            "`state['next_batch']` must be less than the number of batches per epoch. "
            f"Received: state['next_batch']={next_batch} for {n} batches"
        )
    return epoch, next_batch, seed
