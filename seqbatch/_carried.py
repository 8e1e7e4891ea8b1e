"""What the torch and JAX ``StreamState`` share: the order of the batches, the saved streams.

Numpy only: the frameworks' own parts (moving rows of tensors or arrays) stay in their
adapters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from seqbatch.batcher import StreamBatcher


def field(batch: Any, name: str) -> Any:
    """A field of a batch object, or the entry of a record dict."""
    return batch[name] if isinstance(batch, Mapping) else getattr(batch, name)


def batch_key(batch: Any) -> tuple[int, int] | None:
    """``(epoch, k)`` of a batch that says which it is (a TensorBatch, a record), else None."""
    if isinstance(batch, Mapping):
        epoch, index = batch.get("epoch"), batch.get("batch")
    else:
        epoch, index = getattr(batch, "epoch", None), getattr(batch, "index", None)
    return None if epoch is None or index is None else (int(epoch), int(index))


def stream_dim(dim: Any, name: str = "dim") -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int. Received: {name}={dim!r}")
    return int(dim)


def streams_of(batches: Any, adapter: str) -> range:
    """The global streams of a batcher (or shard)."""
    if not isinstance(batches, StreamBatcher):
        raise TypeError(
            f"`batches` must be a seqbatch.StreamBatcher (or its shard) or a {adapter}. "
            f"Received: batches of type {type(batches).__name__}"
        )
    if batches.burn_in:
        raise ValueError(
            "`batches` must have burn_in=0 for a state carried from batch to batch: with "
            "burn-in nothing is carried, each row starts afresh at its first real step. "
            f"Received: batches with burn_in={batches.burn_in} (start each row from zeros or "
            "a stored state there instead)"
        )
    return batches.streams


class Order:
    """The batch that a carried state may go on to: the one after the last it took.

    Batch 0 of an epoch is always accepted: every stream that holds data is reset there.
    """

    def __init__(self) -> None:
        self.next: tuple[int, int] | None = None

    def check(self, batch: Any) -> None:
        key = batch_key(batch)
        if key is None or self.next is None or key[1] == 0 or key == self.next:
            return
        raise ValueError(
            "`batch` must be the batch after the last one this state took (or batch 0 of an "
            "epoch): row i of a batch continues row i of the batch before only. Received: "
            f"epoch {key[0]} batch {key[1]} where epoch {self.next[0]} batch {self.next[1]} "
            "was due"
        )

    def took(self, batch: Any) -> None:
        key = batch_key(batch)
        if key is not None:
            self.next = (key[0], key[1] + 1)


def check_rows(batch: Any, rows: int) -> np.ndarray:
    """``batch``'s ``reset`` as numpy, checked to have one flag per stream."""
    reset = np.asarray(field(batch, "reset"))
    if reset.dtype != np.bool_ or reset.shape != (rows,):
        raise ValueError(
            f"`batch` must have one row per stream of this state, {rows}: a batch of the "
            f"same batcher (or shard). Received: reset of shape {reset.shape} and dtype "
            f"{reset.dtype}"
        )
    return reset


def saved_rows(
    state_dict: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    dim: int,
    streams: range,
    axis_key: str = "dim",
) -> tuple[list[Any], list[int], np.ndarray, tuple[int, int] | None]:
    """Where the rows of ``streams`` lie in one checkpoint's dicts, checked.

    ``axis_key`` names the stream axis in the dicts: ``"dim"`` in torch's, ``"axis"`` in JAX's.

    Returns:
        The saved states (all None, or none), the rows of each, the row of each stream of
        ``streams`` in the states joined along the stream axis, and the batch due next.
    """
    dicts = [state_dict] if isinstance(state_dict, Mapping) else list(state_dict)
    if not dicts:
        raise ValueError("`state_dict` must hold at least one dict. Received: an empty list")
    keys = ("streams", "state", axis_key, "epoch", "next_batch")
    for d in dicts:
        if not isinstance(d, Mapping) or set(d) != set(keys):
            got = sorted(d) if isinstance(d, Mapping) else type(d).__name__
            raise ValueError(
                f"`state_dict` must be dicts of StreamState.state_dict(), with keys "
                f"{sorted(keys)}. Received: {got}"
            )
    for name in (axis_key, "epoch", "next_batch"):
        values = {d[name] for d in dicts}
        if len(values) > 1:
            raise ValueError(
                "`state_dict` must come from one point of one run: the dicts disagree on "
                f"{name!r}. Received: {sorted(values, key=str)}"
            )
    if dicts[0][axis_key] != dim:
        raise ValueError(
            "`state_dict` must have been saved with the stream axis of this state. Received: "
            f"{axis_key}={dicts[0][axis_key]} for a StreamState of {axis_key}={dim}"
        )
    held = [np.asarray(d["streams"], dtype=np.int64).reshape(-1) for d in dicts]
    saved = np.concatenate(held)
    if len(np.unique(saved)) != len(saved):
        raise ValueError(
            "`state_dict` must hold each stream once. Received: dicts that share streams "
            f"(streams {saved.tolist()[:20]})"
        )
    wanted = np.arange(streams.start, streams.stop)
    order = np.argsort(saved, kind="stable")
    at = np.searchsorted(saved[order], wanted)
    found = (at < len(saved)) & (saved[order][np.minimum(at, len(saved) - 1)] == wanted)
    if not found.all():
        raise ValueError(
            "`state_dict` must hold every stream of this state: pass the dicts of every rank "
            f"that saved them. Received: dicts without streams {wanted[~found].tolist()[:20]}"
        )
    states = [d["state"] for d in dicts]
    if any(s is None for s in states) and not all(s is None for s in states):
        raise ValueError(
            "`state_dict` must come from one point of one run: some dicts hold a state and "
            "some none"
        )
    epoch, next_batch = dicts[0]["epoch"], dicts[0]["next_batch"]
    due = None if epoch is None else (int(epoch), int(next_batch))
    return states, [len(h) for h in held], order[at], due


def check_saved_leaf(shape: tuple[int, ...], dim: int, rows: int, axis_key: str = "dim") -> None:
    if not -len(shape) <= dim < len(shape) or shape[dim] != rows:
        raise ValueError(
            f"`state_dict` must hold one row per stream along {axis_key}={dim}. Received: a "
            f"state of shape {shape} for {rows} streams"
        )


def check_leaf(
    shape: tuple[int, ...], dim: int, rows: int, name: str, axis_key: str = "dim"
) -> None:
    if not -len(shape) <= dim < len(shape) or shape[dim] != rows:
        raise ValueError(
            f"`{name}` must have one row per stream along {axis_key}={dim}: {rows} rows. "
            f"Received: a leaf of shape {shape}"
        )
