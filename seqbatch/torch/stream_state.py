"""The carried state of every stream, kept between windows and saved per global stream.

A truncated-BPTT loop hands each window the state its rows ended the window before with,
zeroed for the streams that start a new series, and keeps the state the model returns,
detached, for the next window. :class:`StreamState` does that bookkeeping for any state (a
tensor, tuples, lists or dicts of tensors) and any model function, and saves the state of
each stream under its **global** stream index, so that a run checkpointed on some number of
ranks resumes on another.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from seqbatch import _carried

#: A tensor, or a tuple, list (namedtuples included) or dict of states.
State = Any


def _map(fn: Callable[..., torch.Tensor], state: State, *others: State) -> State:
    """``fn`` over the tensors of ``state`` and of ``others`` (each of the same structure)."""
    if isinstance(state, torch.Tensor):
        if not all(isinstance(o, torch.Tensor) for o in others):
            raise ValueError("`state` must keep its structure: a tensor became something else")
        return fn(state, *others)
    if isinstance(state, (tuple, list)):
        if not all(type(o) is type(state) and len(o) == len(state) for o in others):
            raise ValueError(
                f"`state` must keep its structure: a {type(state).__name__} of {len(state)} "
                "became something else"
            )
        parts = [_map(fn, *group) for group in zip(state, *others, strict=True)]
        return type(state)(*parts) if hasattr(state, "_fields") else type(state)(parts)
    if isinstance(state, Mapping):
        if not all(isinstance(o, Mapping) and o.keys() == state.keys() for o in others):
            raise ValueError(
                f"`state` must keep its structure: a dict of keys {sorted(state)} became "
                "something else"
            )
        return {k: _map(fn, v, *(o[k] for o in others)) for k, v in state.items()}
    raise TypeError(
        "`state` must be a tensor, or a tuple, list or dict of them. Received: a part of type "
        f"{type(state).__name__}"
    )


class StreamState:
    """The carried state of the streams of a batcher (or of one rank's shard of it).

    Each window, :meth:`state_for` hands the batch the state of its rows, with the rows of
    the streams that start a new series (``batch.reset``) set to zero, and :meth:`update`
    keeps the state the model returned, detached from its graph. :meth:`run` does both
    around any function ``fn(batch, state) -> (outputs, new_state)``.

    Padding is kept out of the state: a row whose window is all padding (an idle stream)
    keeps the state it had, whatever the model returned for it. A row whose window ends in
    padding must come back with its state after its last real step, and that is the model's
    part: run it over the real steps only (:func:`seqbatch.torch.run_rnn` for
    ``torch.nn.LSTM``, ``GRU`` and ``RNN``; :func:`seqbatch.torch.hold` inside a cell's
    loop; the final state of the row's last real run for a kernel that takes ``seq_idx`` or
    ``cu_seqlens``). In a packed batch a row may hold several series: ``reset`` concerns
    its first step only, and the model resets inside the window where ``step_reset`` says.

    The state is created from the first state the model returns (:meth:`state_for` gives
    None until then, which ``torch.nn.LSTM`` takes for zeros), or from ``zeros``.

    Saving: :meth:`state_dict` holds the state of each stream of this batcher under its
    global index (``batches.streams``: rank ``r`` of ``n`` holds streams ``[r * B / n, (r +
    1) * B / n)`` of ``B``). :meth:`load_state_dict` takes one such dict, or the dicts of
    every rank of a run on any number of ranks, and keeps the streams it holds. Save it with
    the batcher's ``state_dict`` at the same point of the loop: after training on batch ``k``
    of epoch ``e``, ``batches.state_dict(epoch=e, next_batch=k + 1)``.

    Order: a batch that says which it is (``TensorBatch.epoch`` and ``index``) must be the
    batch after the last one :meth:`update` took (or after the saved one, once loaded), or
    batch 0 of an epoch, where every stream that holds data is reset. Anything else is
    refused, before the state is handed over.

    Args:
        batches: the :class:`~seqbatch.StreamBatcher` (or its shard) whose streams the state
            follows, or a :class:`~seqbatch.torch.StreamDataset` (its rank's streams).
        dim: the stream axis of every tensor of the state: 0 for a cell's ``(B, H)`` state,
            1 for ``torch.nn.LSTM``'s ``(h, c)``, each ``(num_layers, B, H)``.
        zeros: the state to start every stream from, with ``batches.batch_size`` rows along
            ``dim``; None to start from the first state the model returns.

    Raises:
        TypeError: ``batches`` is neither a ``StreamBatcher`` nor a ``StreamDataset``, or
            ``zeros`` holds something other than tensors, tuples, lists and dicts.
        ValueError: ``zeros`` has not one row per stream along ``dim``.

    Examples:
        Two streams, a state ``(B, 1)`` that counts the real steps of each series:

        >>> import numpy as np, seqbatch, torch
        >>> batches = seqbatch.StreamBatcher(
        ...     [np.arange(n) for n in (5, 3, 2)], targets=None, batch_size=2,
        ...     sequence_length=2, remainder="pad",
        ... )
        >>> dataset = seqbatch.torch.StreamDataset(batches)
        >>> carried = StreamState(dataset, zeros=torch.zeros(2, 1))
        >>> def count(b, state):
        ...     return None, state + b.sample_weight.sum(1, keepdim=True)
        >>> loader = torch.utils.data.DataLoader(dataset, batch_size=None, sampler=dataset.sampler)
        >>> for b in loader:
        ...     _ = carried.run(count, b)
        ...     print(b.series.tolist(), b.reset.tolist(), carried.state.flatten().tolist())
        [0, 1] [True, True] [2.0, 2.0]
        [0, 1] [False, False] [4.0, 3.0]
        [0, 2] [False, True] [5.0, 2.0]
        >>> saved = carried.state_dict()
        >>> saved["streams"], saved["epoch"], saved["next_batch"]
        (tensor([0, 1]), 0, 3)

        Rank 1 of 2 resumes stream 1 alone from that checkpoint:

        >>> rank_1 = StreamState(batches.shard(1, 2))
        >>> rank_1.load_state_dict(saved)
        >>> rank_1.state
        tensor([[2.]])
    """

    def __init__(
        self,
        batches: Any,
        *,
        dim: int = 0,
        zeros: State | None = None,
    ) -> None:
        from seqbatch.torch.data import StreamDataset

        if isinstance(batches, StreamDataset):
            batches = batches.batches
        self.streams = _carried.streams_of(batches, "seqbatch.torch.StreamDataset")
        self.dim = _carried.stream_dim(dim)
        self._order = _carried.Order()
        self._state: State | None = None
        if zeros is not None:
            self._state = _map(lambda t: self._rows(t, "zeros").detach(), zeros)

    @property
    def state(self) -> State | None:
        """The state each stream ended its last window with (None before the first)."""
        return self._state

    @property
    def batch_size(self) -> int:
        """The streams this state holds: the rows of every batch."""
        return len(self.streams)

    def state_for(self, batch: Any) -> State | None:
        """The state of ``batch``'s rows, zero in the rows whose stream starts a new series.

        Args:
            batch: the next batch, a :class:`~seqbatch.torch.TensorBatch` (or anything with
                ``x``, ``reset`` and ``series`` of one entry per stream).

        Returns:
            A new state (the held one is never changed in place), on the device of
            ``batch.x``; None before the first :meth:`update` without ``zeros``.

        Raises:
            ValueError: ``batch`` has not one row per stream, or is not the batch due.
        """
        reset = self._flags(batch, "reset")
        self._order.check(batch)
        if self._state is None:
            return None
        x = batch.x
        device = x.device if isinstance(x, torch.Tensor) else None

        def zero_reset(t: torch.Tensor) -> torch.Tensor:
            t = t if device is None else t.to(device)
            return t.masked_fill(self._along(reset.to(t.device), t), 0)

        return _map(zero_reset, self._state)

    def update(self, batch: Any, new_state: State) -> None:
        """Keep ``new_state``, detached, as the state after ``batch``; idle rows keep theirs.

        Args:
            batch: the batch the model just ran.
            new_state: the state it returned, of the structure :meth:`state_for` gave (or
                of ``zeros``), each stream's state after its last real step.

        Raises:
            TypeError: ``new_state`` holds something other than tensors, tuples, lists and
                dicts.
            ValueError: ``new_state`` has not one row per stream along ``dim``, or another
                structure or shapes than the state held.
        """
        self._flags(batch, "reset")
        held = self._flags(batch, "series") >= 0
        new = _map(lambda t: self._rows(t, "new_state").detach(), new_state)
        old = self._state if self._state is not None else _map(torch.zeros_like, new)

        def keep_idle(n: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
            if n.shape != o.shape:
                raise ValueError(
                    "`new_state` must have the shapes of the state held. Received: a tensor "
                    f"of shape {tuple(n.shape)} for one of shape {tuple(o.shape)}"
                )
            return torch.where(self._along(held.to(n.device), n), n, o.to(n.device))

        self._state = _map(keep_idle, new, old)
        self._order.took(batch)

    def run(self, fn: Callable[[Any, State | None], tuple[Any, State]], batch: Any) -> Any:
        """``outputs, new = fn(batch, self.state_for(batch))``; keep ``new``, return ``outputs``.

        ``fn`` is any model step, such as ``lambda b, s: run_rnn(lstm, b.x, s,
        b.sample_weight)``.
        """
        outputs, new_state = fn(batch, self.state_for(batch))
        self.update(batch, new_state)
        return outputs

    def state_dict(self) -> dict[str, Any]:
        """The state of each stream under its global index, on the CPU, for a checkpoint.

        Returns:
            A new dict: ``"streams"``, int64 ``(b,)``, the global stream of each row;
            ``"state"``, the state (``b`` rows along ``dim``), None before the first window;
            ``"dim"``; ``"epoch"`` and ``"next_batch"``, the batch that comes next (None
            where the batches did not say which they were). ``torch.save`` keeps it, also
            for ``torch.load(weights_only=True)`` unless the state holds namedtuples.
        """
        state = self._state
        if state is not None:
            state = _map(lambda t: t.detach().cpu().clone(), state)
        epoch, next_batch = self._order.next or (None, None)
        return {
            "streams": torch.arange(self.streams.start, self.streams.stop, dtype=torch.int64),
            "state": state,
            "dim": self.dim,
            "epoch": epoch,
            "next_batch": next_batch,
        }

    def load_state_dict(
        self,
        state_dict: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        device: torch.device | str | None = None,
    ) -> None:
        """Take the state of this batcher's streams from a checkpoint of any number of ranks.

        Args:
            state_dict: a dict from :meth:`state_dict`, or a list of them (one per rank of the
                run that saved them) that together hold every stream of this batcher.
            device: where to put the state; None keeps it on the CPU until
                :meth:`state_for` moves it to the batch's device.

        Raises:
            ValueError: a dict is not one of :meth:`state_dict`, the dicts disagree (their
                ``dim``, the batch due, their structure), a stream is held twice, or a
                stream of this batcher is missing.
        """
        states, counts, rows, due = _carried.saved_rows(state_dict, self.dim, self.streams)
        state = None
        if states[0] is not None:
            index = torch.from_numpy(rows)

            def gather(*parts: torch.Tensor) -> torch.Tensor:
                for part, n in zip(parts, counts, strict=True):
                    _carried.check_saved_leaf(tuple(part.shape), self.dim, n)
                whole = torch.cat([p.cpu() for p in parts], dim=self.dim)
                picked = whole.index_select(self.dim, index)
                return picked if device is None else picked.to(device)

            state = _map(gather, *states)
        self._state = state
        self._order.next = due

    def _rows(self, t: torch.Tensor, name: str) -> torch.Tensor:
        _carried.check_leaf(tuple(t.shape), self.dim, self.batch_size, name)
        return t

    def _along(self, flags: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``(B,)`` flags shaped to broadcast along the stream axis of ``t``."""
        shape = [1] * t.ndim
        shape[self.dim] = -1
        return flags.view(shape)

    def _flags(self, batch: Any, name: str) -> torch.Tensor:
        flags = torch.as_tensor(getattr(batch, name))
        if tuple(flags.shape) != (self.batch_size,) or (
            name == "reset" and flags.dtype != torch.bool
        ):
            raise ValueError(
                f"`batch` must have one row per stream of this state, {self.batch_size}: a "
                f"batch of the same batcher (or shard). Received: {name} of shape "
                f"{tuple(flags.shape)} and dtype {flags.dtype}"
            )
        return flags
