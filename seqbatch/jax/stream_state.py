"""The carried state of every stream between jitted steps, saved per global stream.

The JAX counterpart of :class:`seqbatch.torch.StreamState`: a Python object that holds the
state outside the jitted step (which stays a pure function of its inputs), hands each record
the state of its rows with resets applied, keeps the state the step returns, and saves it
under each stream's global index.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqbatch import _carried
from seqbatch.jax.source import StreamSource

_AXIS = "axis"


class StreamState:
    """The carried state of the streams of a batcher (or of one host's shard of it).

    Each step, :meth:`state_for` hands the record the state of its rows, with the rows of
    the streams that start a new series (``record["reset"]``) set to zero, and
    :meth:`update` keeps the state the step returned. :meth:`run` does both around any
    function ``fn(record, state) -> (outputs, new_state)``, such as a jitted step.

    Padding is kept out of the state: a row whose window is all padding (an idle stream)
    keeps the state it had, whatever the step returned for it. A row whose window ends in
    padding must come back with its state after its last real step, and that is the step's
    part: :func:`seqbatch.jax.hold` inside the scan, or the final state of the row's last
    real run for a kernel that takes ``seq_idx`` or ``cu_seqlens``. In a packed record a
    row may hold several series: ``reset`` concerns its first step only, and the step resets
    inside the window where ``step_reset`` says.

    The state is created from the first state the step returns (:meth:`state_for` gives None
    until then), or from ``zeros``. Saving: :meth:`state_dict` holds each stream's state
    under its global index (``batches.streams``); :meth:`load_state_dict` takes one such
    dict, or the dicts of every host of a run on any number of hosts, and keeps the streams
    it holds. Save it with the batcher's state at the same point of the loop.

    Order: a record says which batch it is (``"epoch"`` and ``"batch"``); it must be the
    batch after the last one :meth:`update` took (or after the saved one, once loaded), or
    batch 0 of an epoch, where every stream that holds data is reset. Anything else is
    refused before the state is handed over.

    Args:
        batches: the :class:`~seqbatch.StreamBatcher` (or its shard) whose streams the state
            follows, or a :class:`~seqbatch.jax.StreamSource` over one.
        axis: the stream axis of every leaf of the state (0 for ``(B, units)`` carries).
        zeros: the state to start every stream from, a pytree of arrays with
            ``batches.batch_size`` rows along ``axis``; None to start from the first state
            the step returns.

    Raises:
        TypeError: ``batches`` is neither a ``StreamBatcher`` nor a ``StreamSource``.
        ValueError: ``zeros`` has not one row per stream along ``axis``.

    Examples:
        >>> import jax.numpy as jnp, numpy as np, seqbatch
        >>> batches = seqbatch.StreamBatcher(
        ...     [np.arange(n) for n in (5, 3, 2)], targets=None, batch_size=2,
        ...     sequence_length=2, remainder="pad",
        ... )
        >>> source = seqbatch.jax.StreamSource(batches)
        >>> carried = StreamState(source, zeros=jnp.zeros((2, 1)))
        >>> def count(r, state):
        ...     return None, state + r["sample_weight"].sum(1, keepdims=True)
        >>> for r in source.in_order(source[k] for k in range(len(source))):
        ...     _ = carried.run(count, r)
        ...     print(r["series"].tolist(), r["reset"].tolist(), carried.state.ravel().tolist())
        [0, 1] [True, True] [2.0, 2.0]
        [0, 1] [False, False] [4.0, 3.0]
        [0, 2] [False, True] [5.0, 2.0]
        >>> host_1 = StreamState(batches.shard(1, 2))
        >>> host_1.load_state_dict(carried.state_dict())
        >>> host_1.state.tolist()
        [[2.0]]
    """

    def __init__(self, batches: Any, *, axis: int = 0, zeros: Any = None) -> None:
        if isinstance(batches, StreamSource):
            batches = batches.batches
        self.streams = _carried.streams_of(batches, "seqbatch.jax.StreamSource")
        self.axis = _carried.stream_dim(axis, _AXIS)
        self._order = _carried.Order()
        self._state: Any = None
        if zeros is not None:
            self._state = jax.tree.map(lambda a: self._rows(a, "zeros"), zeros)

    @property
    def state(self) -> Any:
        """The state each stream ended its last window with (None before the first)."""
        return self._state

    @property
    def batch_size(self) -> int:
        """The streams this state holds: the rows of every record."""
        return len(self.streams)

    def state_for(self, record: Any) -> Any:
        """The state of ``record``'s rows, zero in the rows whose stream starts a new series.

        Args:
            record: the next record of a :class:`~seqbatch.jax.StreamSource` (or a
                :class:`seqbatch.Batch`).

        Returns:
            A new pytree; None before the first :meth:`update` without ``zeros``.

        Raises:
            ValueError: ``record`` has not one row per stream, or is not the batch due.
        """
        reset = _carried.check_rows(record, self.batch_size)
        self._order.check(record)
        if self._state is None:
            return None
        return jax.tree.map(
            lambda a: jnp.where(self._along(reset, a), jnp.zeros((), a.dtype), a), self._state
        )

    def update(self, record: Any, new_state: Any) -> None:
        """Keep ``new_state`` as the state after ``record``; idle rows keep theirs.

        Args:
            record: the record the step just ran.
            new_state: the state it returned, a pytree of the structure :meth:`state_for`
                gave (or of ``zeros``), each stream's state after its last real step.

        Raises:
            ValueError: ``new_state`` has not one row per stream along ``axis``, or another
                structure or shapes than the state held.
        """
        _carried.check_rows(record, self.batch_size)
        held = np.asarray(_carried.field(record, "series")) >= 0
        new = jax.tree.map(lambda a: self._rows(a, "new_state"), new_state)
        old = self._state if self._state is not None else jax.tree.map(jnp.zeros_like, new)
        structures: list[Any] = [jax.tree.structure(new), jax.tree.structure(old)]
        if structures[0] != structures[1]:
            raise ValueError(
                "`new_state` must have the structure of the state held. Received: "
                f"{structures[0]} for {structures[1]}"
            )

        def keep_idle(n: jax.Array, o: jax.Array) -> jax.Array:
            if n.shape != o.shape:
                raise ValueError(
                    "`new_state` must have the shapes of the state held. Received: a leaf of "
                    f"shape {n.shape} for one of shape {o.shape}"
                )
            return jnp.where(self._along(held, n), n, o)

        self._state = jax.tree.map(keep_idle, new, old)
        self._order.took(record)

    def run(self, fn: Callable[[Any, Any], tuple[Any, Any]], record: Any) -> Any:
        """``outputs, new = fn(record, self.state_for(record))``; keep ``new``, return ``outputs``."""
        outputs, new_state = fn(record, self.state_for(record))
        self.update(record, new_state)
        return outputs

    def state_dict(self) -> dict[str, Any]:
        """The state of each stream under its global index, as numpy arrays.

        Returns:
            A new dict: ``"streams"``, int64 ``(b,)``, the global stream of each row;
            ``"state"``, the state as numpy arrays (``b`` rows along ``axis``), None before
            the first window; ``"axis"``; ``"epoch"`` and ``"next_batch"``, the batch that
            comes next (None where the records did not say).
        """
        state = self._state
        if state is not None:
            state = jax.tree.map(lambda a: np.array(a), state)
        epoch, next_batch = self._order.next or (None, None)
        return {
            "streams": np.arange(self.streams.start, self.streams.stop, dtype=np.int64),
            "state": state,
            _AXIS: self.axis,
            "epoch": epoch,
            "next_batch": next_batch,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        """Take the state of this batcher's streams from a checkpoint of any number of hosts.

        Args:
            state_dict: a dict from :meth:`state_dict`, or a list of them (one per host or
                rank of the run that saved them) that together hold every stream of this
                batcher.

        Raises:
            ValueError: a dict is not one of :meth:`state_dict`, the dicts disagree (their
                ``axis``, the batch due, their structure), a stream is held twice, or a
                stream of this batcher is missing.
        """
        states, counts, rows, due = _carried.saved_rows(state_dict, self.axis, self.streams, _AXIS)
        state = None
        if states[0] is not None:
            structures = {jax.tree.structure(s) for s in states}
            if len(structures) > 1:
                raise ValueError(
                    "`state_dict` must come from one point of one run: the dicts hold states "
                    f"of different structures. Received: {sorted(map(str, structures))}"
                )

            def gather(*parts: Any) -> jax.Array:
                arrays = [np.asarray(p) for p in parts]
                for part, n in zip(arrays, counts, strict=True):
                    _carried.check_saved_leaf(part.shape, self.axis, n, _AXIS)
                whole = np.concatenate(arrays, axis=self.axis)
                return jnp.asarray(np.take(whole, rows, axis=self.axis))

            state = jax.tree.map(gather, *states)
        self._state = state
        self._order.next = due

    def _rows(self, leaf: Any, name: str) -> jax.Array:
        leaf = jnp.asarray(leaf)
        _carried.check_leaf(leaf.shape, self.axis, self.batch_size, name, _AXIS)
        return leaf

    def _along(self, flags: np.ndarray, leaf: jax.Array) -> jax.Array:
        shape = [1] * leaf.ndim
        shape[self.axis] = -1
        return jnp.asarray(flags).reshape(shape)
