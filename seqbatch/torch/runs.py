"""A torch RNN over a batch of any layout, in its fused kernel, resets and padding honoured.

A packed batch (``series_boundary="pack"``) starts a new series wherever ``step_reset`` says,
inside the window: stepping the layer one timestep at a time to zero those rows gives up the
fused kernel, and costs much more than packing saves. :func:`unroll` takes one of two ways.

**Closing steps** (an LSTM, a GRU, a ReLU RNN, in float32 or float64): the layer runs each
row of the window whole, in one call of its fused kernel per layer, with two flag features
added to its input and two columns to its input weights (:func:`flag_columns`). Before each
step where a series starts inside the window, the row takes a *closing step*: its inputs are
0 and its first flag 1, which drives the gates' pre-activations to -1e30, so that an LSTM's
input, forget and output gates give exactly 0 (its cell and output are then 0), a GRU's
reset and update gates 0 (and its candidate reads exactly ``-b_in + b_in = 0``), a ReLU
RNN's output 0: the state after it is zero, as the reset demands, and no gradient passes
through it. Rows are as wide as the one with the most steps and closing steps (about 103
steps for windows of 100 on 32 streams); a row that ends earlier (in padding) ends on
*holding steps*, whose second flag shuts an LSTM's input gate and opens its forget gate
fully, so that its cell keeps its value exactly, and each row's final output is read where
its last real step ran (an LSTM's, GRU's and RNN's output is its state ``h``). The call has
the same few shapes from batch to batch (torch's CPU kernel prepares each new shape anew),
and the outputs go back to their steps in one gather.

**Runs** (a tanh RNN, which no gate can zero; half precision): each row of the window is cut
into its runs, the stretches of real steps of one series: a row's first run starts from the
state the row carries (zeros if the row resets at step 0), every later run from zeros, and
padding is no run at all. Every run is an independent sequence, run whole from its initial
state to its exact end, in few calls of the kernel, each of which has a fixed cost. Either
the window is cut at every column where a run begins or ends (one call for a window in
which no series starts after step 0 and no row ends early), or, when that makes more calls,
by the bits of the run lengths: call ``j`` runs, at width ``2 ** j`` from the widest down,
the piece of every run whose length has bit ``j`` set, from where its wider pieces ended, at
most 7 calls for a window of 100 steps however many series start in it.

Why not one ``PackedSequence`` of the runs: its lengths differ, and torch's CPU kernel for
packed sequences of unequal lengths leaves oneDNN, with a backward pass that measured 5 to 8
times slower than the whole padded window's.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import torch

from seqbatch.torch.padding import _leaves, real_lengths
from seqbatch.torch.state import State, _map_state


def unroll(
    rnn: torch.nn.RNNBase, batch: Any, state: State = None, *, inputs: torch.Tensor | None = None
) -> tuple[torch.Tensor, State]:
    """Run ``rnn`` over one batch, resetting each row where a series starts, padding left out.

    Exact on every layout: each real step's output is the layer's output at that step of its
    series run alone (from the state the row carries, when the series began in an earlier
    window), and the state returned is each row's after its last real step. Gradients flow
    as through the plain layer: to the inputs, the weights and the incoming state (through
    the rows that do not reset). Call it in place of ``rnn(x, state)``, with no
    :func:`~seqbatch.torch.reset_rows` before it: it applies ``reset`` and ``step_reset``.

    Args:
        rnn: a ``torch.nn.LSTM``, ``GRU`` or ``RNN`` with ``batch_first=True``, forward only;
            any ``num_layers``, and ``proj_size`` for an LSTM.
        batch: a :class:`~seqbatch.torch.TensorBatch` or a numpy :class:`seqbatch.Batch`
            with a ``(B, W)`` ``sample_weight`` (``return_sequences=True``, or no targets).
            Its ``reset`` and, for packed batches, ``step_reset`` say where series start.
        state: the state each row carries in, what ``rnn`` takes: ``None`` (zeros), a tensor,
            or an LSTM's ``(h, c)``, each ``(num_layers, B, units)``.
        inputs: the layer's input in place of ``batch.x``, ``(B, W, input_size)``: the
            output of an embedding or of an earlier layer, for example. Its padding need not
            be zero: padded steps are never read.

    Returns:
        ``(outputs, state)``: ``outputs`` is ``(B, W, H)`` (``H`` is ``proj_size`` or
        ``hidden_size``), zero at padding; ``state`` has the structure and shapes ``rnn``
        returns, each row's state after its last real step, or the state the row came with
        (zeros for ``None``) if the window holds none.

    Raises:
        TypeError: ``rnn`` is not a ``torch.nn.RNNBase``.
        ValueError: ``rnn`` is bidirectional or not ``batch_first``; the input is not
            ``(B, W, input_size)``; ``sample_weight`` is not ``(B, W)`` or has a real step
            after padding; ``reset`` or ``step_reset`` do not fit the batch.

    Examples:
        Row 0 holds series 1 from step 0 on; row 1 ends a series after 2 steps, then
        another starts (``step_reset``), then padding:

        >>> import numpy as np, torch, seqbatch
        >>> from seqbatch.torch import TensorBatch
        >>> _ = torch.manual_seed(0)
        >>> gru = torch.nn.GRU(1, 2, batch_first=True)
        >>> x = torch.tensor([[[1.0], [2.0], [3.0], [4.0]], [[5.0], [6.0], [7.0], [0.0]]])
        >>> batch = TensorBatch(
        ...     x=x,
        ...     y=None,
        ...     sample_weight=torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 0]]),
        ...     reset=torch.tensor([True, False]),
        ...     series=torch.tensor([1, 0]),
        ...     position=torch.tensor([0, 8]),
        ...     step_reset=torch.tensor([[True, False, False, False], [False, False, True, False]]),
        ... )
        >>> carried = torch.randn(1, 2, 2)
        >>> out, h = unroll(gru, batch, carried)
        >>> out.shape, h.shape
        (torch.Size([2, 4, 2]), torch.Size([1, 2, 2]))

        Row 1's third step starts a series: its output is that of the layer run on it alone,
        from zeros, and the row ends with that state; padding gives zeros.

        >>> alone, h_alone = gru(x[1:, 2:3])
        >>> torch.allclose(out[1, 2], alone[0, 0]), torch.allclose(h[0, 1], h_alone[0, 0])
        (True, True)
        >>> out[1, 3].abs().sum().item()
        0.0

        Its first two steps continue the state it carried in:

        >>> torch.allclose(out[1, :2], gru(x[1:, :2], carried[:, 1:])[0][0])
        True
    """
    _check_rnn(rnn)
    burn_in = getattr(batch, "burn_in", None)
    if burn_in is not None:
        raise ValueError(
            "`batch` must have no burn-in columns for unroll: it carries each row's state "
            "from the batch before, and a burn-in batch starts every row afresh before its "
            "window (padding in front where the series began later). Build the batcher with "
            "burn_in=0, or run the rows of a burn-in batch from zeros yourself. Received: a "
            f"batch with burn_in={tuple(burn_in.shape)[1]}"
        )
    x = _tensor(batch.x if inputs is None else inputs)
    weight = _tensor(batch.sample_weight)
    if x.ndim != 3 or x.shape[2] != rnn.input_size:
        raise ValueError(
            f"`{'batch.x' if inputs is None else 'inputs'}` must be (B, W, input_size) with "
            f"input_size={rnn.input_size}, the input of `rnn` (a 1-D series gives batches of "
            "(B, W): build the batcher with a feature axis, series[:, None]). Received: shape "
            f"{tuple(x.shape)}"
        )
    B, W = x.shape[0], x.shape[1]
    if tuple(weight.shape) != (B, W):
        raise ValueError(
            "`batch.sample_weight` must hold one weight per step of the window, (B, W) = "
            f"({B}, {W}), to tell each row's real steps from its padding: build the batcher "
            "with return_sequences=True. Received: sample_weight of shape "
            f"{tuple(weight.shape)}"
        )
    lengths = real_lengths(weight)
    starts = _series_starts(batch, B, W)
    state = _checked_state(rnn, state, B)
    units = rnn.proj_size or rnn.hidden_size
    kind = _closing_kind(rnn, x)
    if kind is None:
        return run_window(rnn, x, starts, lengths, state, units)
    weights: list[torch.Tensor] = rnn._flat_weights  # type: ignore[assignment]
    per_layer = len(weights) // rnn.num_layers
    layers = [weights[i : i + per_layer] for i in range(0, len(weights), per_layer)]
    return run_window_closing(
        kind,
        layers,
        x,
        starts,
        lengths,
        state,
        units,
        has_biases=rnn.bias,
        dropout=rnn.dropout,
        train=rnn.training,
    )


def _closing_kind(rnn: torch.nn.RNNBase, x: torch.Tensor) -> str | None:
    """The kernel of ``rnn`` for :func:`run_window_closing`, or None where a closing step
    would not zero its state exactly (a tanh RNN: no gate shuts it; half precision)."""
    weight = next(rnn.parameters())
    if x.dtype not in (torch.float32, torch.float64) or x.dtype != weight.dtype:
        return None
    if isinstance(rnn, torch.nn.LSTM):
        return "lstm"
    if isinstance(rnn, torch.nn.GRU):
        return "gru"
    return "rnn_relu" if getattr(rnn, "nonlinearity", None) == "relu" else None


Call = Callable[[torch.Tensor, State], tuple[torch.Tensor, State]]


def run_window(
    call: Call,
    x: torch.Tensor,
    starts: torch.Tensor,
    lengths: torch.Tensor,
    state: State,
    units: int,
) -> tuple[torch.Tensor, State]:
    """The window ``x`` ``(B, W, F)`` cut into its runs, each run whole through ``call``.

    The decomposition of :func:`unroll`, for any fused recurrence ``call(inputs, state) ->
    (outputs, state)`` of ``inputs`` ``(n, w, F)`` and a state ``(layers, n, units)`` (a
    tensor, or a tuple of them as an LSTM's ``(h, c)``), such as a ``torch.nn.LSTM`` or
    ``torch.lstm`` on given weights (``seqbatch.keras.StreamReset`` runs Keras's weights
    through it on the torch backend).

    Args:
        call: the recurrence, run from each run's initial state to its end.
        x: the window's inputs, ``(B, W, F)``.
        starts: ``(B, W)`` bool, on the CPU: a series starts at the step (the state is
            zero before it).
        lengths: ``(B,)`` int, on the CPU: each row's real steps, from step 0.
        state: what each row carries in, ``(layers, B, units)`` each.
        units: the size of an output step.

    Returns:
        ``(outputs, state)`` as :func:`unroll` returns them.
    """
    B, W = x.shape[0], x.shape[1]
    runs = _runs(starts, lengths, W)
    if runs is None:
        return x.new_zeros(B, W, units), state
    rows, cols, run_lengths, carried, last = runs
    on = x.device
    runs_state = _map_state(
        lambda t: torch.where(carried.to(on).view(1, -1, 1), t.index_select(1, rows.to(on)), 0),
        state,
    )
    flat = x.reshape(B * W, -1)
    pieces, places = [], []
    for part, start, width in _pieces(rows, cols, run_lengths, W):
        part, place = part.to(on), (start[:, None] + torch.arange(width)).to(on)
        out, new = call(flat[place], _map_state(partial(_rows_of, part), runs_state))
        runs_state = _map_state(partial(_put_rows, part, iter(_leaves(new))), runs_state)
        pieces.append(out.reshape(-1, units))
        places.append(place.flatten())
    outputs = flat.new_zeros(B * W, units).index_copy(0, torch.cat(places), torch.cat(pieces))
    ends = iter(_leaves(runs_state))
    ends_rows, last = rows[last].to(on), last.to(on)
    new_state = _map_state(
        lambda t: t.index_copy(1, ends_rows, next(ends).index_select(1, last)), state
    )
    return outputs.view(B, W, units), new_state


def _rows_of(rows: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return t.index_select(1, rows)


def _put_rows(rows: torch.Tensor, values: Iterator[torch.Tensor], t: torch.Tensor) -> torch.Tensor:
    return t.index_copy(1, rows, next(values))


Pieces = list[tuple[torch.Tensor, torch.Tensor, int]]


def _pieces(rows: torch.Tensor, cols: torch.Tensor, lengths: torch.Tensor, W: int) -> Pieces:
    """The calls of the layer that run every run exactly: ``(runs, flat starts, width)`` each.

    A call of the fused kernel runs sequences of one width, each from an initial state to a
    final one; each run must be run whole, in order, from its initial state to its exact
    end, with no step of padding. Of two ways, the one with fewer calls (each call has a
    fixed cost): by columns (:func:`_column_pieces`), as many calls as the window has
    columns where a run begins or ends, plus one, a single call for a window in which no
    series starts after step 0 and no row ends early; or by bits (:func:`_bit_pieces`), at
    most as many calls as the window's width has bits (7 for 100 steps), however many series
    start in it.
    """
    by_bits = _bit_pieces(rows * W + cols, lengths)
    if len(torch.unique(torch.cat([cols, cols + lengths]))) - 1 > len(by_bits):
        return by_bits
    return _column_pieces(rows, cols, lengths, W)


def _bit_pieces(starts: torch.Tensor, lengths: torch.Tensor) -> Pieces:
    """Call ``j`` runs, at width ``2 ** j`` from the widest down, the piece of every run whose
    length has bit ``j`` set, from where the run's wider pieces ended."""
    calls = []
    for j in reversed(range(int(lengths.max()).bit_length())):
        part = torch.nonzero(lengths & (1 << j)).flatten()
        if len(part):
            done = (lengths[part] >> (j + 1)) << (j + 1)
            calls.append((part, starts[part] + done, 1 << j))
    return calls


def _column_pieces(rows: torch.Tensor, cols: torch.Tensor, lengths: torch.Tensor, W: int) -> Pieces:
    """The window cut at every column where a run begins or ends: a call per stretch between
    two cuts, over the runs that span it."""
    ends = cols + lengths
    cuts = torch.unique(torch.cat([cols, ends])).tolist()
    calls = []
    for a, e in itertools.pairwise(cuts):
        part = torch.nonzero((cols <= a) & (ends >= e)).flatten()
        if len(part):
            calls.append((part, rows[part] * W + a, e - a))
    return calls


def _tensor(a: Any) -> torch.Tensor:
    """A tensor as it is; a numpy field of a :class:`seqbatch.Batch` as a tensor, copied if
    read-only (a view of the data: torch cannot share it)."""
    if isinstance(a, torch.Tensor):
        return a
    a = np.asarray(a)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def _check_rnn(rnn: Any) -> None:
    if not isinstance(rnn, torch.nn.RNNBase):
        raise TypeError(
            f"`rnn` must be a torch.nn.LSTM, GRU or RNN. Received: rnn of type {type(rnn).__name__}"
        )
    if rnn.bidirectional:
        raise ValueError(
            "`rnn` must run forward only: a bidirectional RNN runs each window backwards from "
            "its last step too, which no carried state continues. Received: bidirectional=True"
        )
    if not rnn.batch_first:
        raise ValueError(
            "`rnn` must take (B, W, features) inputs, as seqbatch batches are laid out: build "
            "it with batch_first=True. Received: batch_first=False"
        )


def _series_starts(batch: Any, B: int, W: int) -> torch.Tensor:
    """``(B, W)`` bool on the CPU: a series starts at the step (zero the state before it)."""
    reset = _tensor(batch.reset).cpu()
    if reset.dtype != torch.bool or tuple(reset.shape) != (B,):
        raise ValueError(
            f"`batch.reset` must hold one bool flag per stream, shape ({B},). Received: reset "
            f"of dtype {reset.dtype} and shape {tuple(reset.shape)}"
        )
    step_reset = getattr(batch, "step_reset", None)
    if step_reset is None:
        starts = torch.zeros(B, W, dtype=torch.bool)
        starts[:, 0] = reset
        return starts
    starts = _tensor(step_reset).cpu()
    if starts.dtype != torch.bool or tuple(starts.shape) != (B, W):
        raise ValueError(
            f"`batch.step_reset` must hold one bool flag per step, shape ({B}, {W}). "
            f"Received: step_reset of dtype {starts.dtype} and shape {tuple(starts.shape)}"
        )
    if not torch.equal(starts[:, 0], reset):
        raise ValueError(
            "`batch.step_reset` must begin with `batch.reset` (column 0 flags the streams "
            f"that reset before the window). Received: reset {reset.tolist()} and step_reset "
            f"column 0 {starts[:, 0].tolist()}"
        )
    return starts


def _runs(starts: torch.Tensor, lengths: torch.Tensor, W: int) -> tuple[torch.Tensor, ...] | None:
    """The runs of the window, in row-major order, or None if it holds no real step.

    Returns ``rows``, ``cols`` (where each run begins), ``lengths``, ``carried`` (the run
    continues the state its row carries in: a row's first run, unless the row resets) and
    ``last`` (the index of each row's last run, in the order of its row).
    """
    real = torch.arange(W) < lengths[:, None]
    begins = real & starts
    begins[:, 0] = real[:, 0]  # a row's first run begins at step 0, flagged or not
    where = torch.nonzero(begins)
    if len(where) == 0:
        return None
    rows, cols = where[:, 0], where[:, 1]
    same_row = rows[1:] == rows[:-1]
    ends = lengths[rows].clone()
    ends[:-1] = torch.where(same_row, cols[1:], ends[:-1])
    is_last = torch.ones(len(rows), dtype=torch.bool)
    is_last[:-1] = ~same_row
    carried = ~starts[rows, cols]
    return rows, cols, ends - cols, carried, torch.nonzero(is_last).flatten()


def _checked_state(rnn: torch.nn.RNNBase, state: State, B: int) -> State:
    """``state`` once checked to hold ``B`` rows, or the zeros ``rnn`` starts from for None."""
    if state is None:
        weight = next(rnn.parameters())
        h = weight.new_zeros(rnn.num_layers, B, rnn.proj_size or rnn.hidden_size)
        if isinstance(rnn, torch.nn.LSTM):
            return h, weight.new_zeros(rnn.num_layers, B, rnn.hidden_size)
        return h
    for t in _leaves(state):
        if t.ndim != 3 or t.shape[1] != B:
            raise ValueError(
                "`state` must be what `rnn` takes, each tensor (num_layers, B, units) with "
                f"B={B} rows, one per stream of the batch. Received: a tensor of shape "
                f"{tuple(t.shape)}"
            )
    return state


#: Far beyond any sum of weighted inputs and state: a gate whose pre-activation it dominates
#: is 0 (at ``_SHUT``) or 1 (at ``-_SHUT``) in float32 and float64, and no sum with it
#: overflows.
_SHUT = -1e30

#: The torch kernels whose state a step of flags can zero, and hold, by kind.
_KERNELS: dict[str, Callable[..., Any]] = {
    "lstm": torch.lstm,
    "gru": torch.gru,
    "rnn_relu": torch.rnn_relu,
}


def flag_columns(kind: str, w_ih: torch.Tensor, b_ih: torch.Tensor | None) -> torch.Tensor:
    """The two columns that the flag features add to a layer's input weights ``w_ih``.

    Every other input of a flagged step is 0. At a *closing* step (the first flag) the
    layer's state becomes zero, whatever it was, through its gates alone: an LSTM's input,
    forget and output gates shut (its cell and output are then 0); a GRU's reset and update
    gates shut and its candidate's input is exactly ``-b_in + b_in = 0`` (the column holds
    ``-b_in``, so the gradient of ``b_in`` through that step cancels); a ReLU RNN's
    pre-activation is far below 0. At a *holding* step (the second flag) an LSTM's input gate
    shuts and its forget gate opens fully: its cell keeps its value exactly (its output is
    left to chance, and not read); a GRU's update gate opens fully, which keeps its state.
    At every other step both flags are 0 and the columns add nothing.
    """
    gates = w_ih.shape[0]
    key = (kind, gates, w_ih.dtype, w_ih.device)
    if key not in _FLAG_COLUMNS:
        close, hold = w_ih.new_full((gates, 1), _SHUT), w_ih.new_zeros(gates, 1)
        units = gates // {"lstm": 4, "gru": 3}.get(kind, 1)
        if kind == "lstm":  # i, f, g, o
            close[2 * units : 3 * units] = 0
            hold[:units], hold[units : 2 * units] = _SHUT, -_SHUT
        elif kind == "gru":  # r, z, n
            close[2 * units :] = 0
            hold[units : 2 * units] = -_SHUT
        else:
            hold = close
        _FLAG_COLUMNS[key] = torch.cat([close, hold], dim=1)
    columns = _FLAG_COLUMNS[key]
    if kind != "gru" or b_ih is None:
        return columns
    units = gates // 3
    n = torch.stack([-b_ih[2 * units :], b_ih.new_zeros(units)], dim=1)
    return torch.cat([columns[: 2 * units], n])


#: The flag columns that depend on no weight, by kind, gates, dtype and device.
_FLAG_COLUMNS: dict[tuple[Any, ...], torch.Tensor] = {}


def run_window_closing(
    kind: str,
    layers: list[list[torch.Tensor]],
    x: torch.Tensor,
    starts: torch.Tensor,
    lengths: torch.Tensor,
    state: State,
    units: int,
    *,
    has_biases: bool = True,
    dropout: float = 0.0,
    train: bool = False,
) -> tuple[torch.Tensor, State]:
    """:func:`run_window` in one call of the fused kernel per layer.

    Each row runs whole, its runs one after the other, with a *closing step* before each run
    that starts a series inside the window: a step of its own that zeroes the state through
    the gates, from a flag feature added to the layer's input (:func:`flag_columns`). The
    rows are as wide as the one with the most steps and closing steps (a window of 100 steps
    in which some row starts 3 series runs 103 steps wide); a row that ends earlier ends on
    *holding steps*, which keep an LSTM's cell as it is, and each row's final output is read
    where its last real step ran: an LSTM's, a GRU's and an RNN's output is its state.
    One call per layer, of the same few widths from batch to batch (torch's CPU kernel
    prepares each new shape anew), where :func:`run_window` makes up to 7.

    Args:
        kind: ``"lstm"``, ``"gru"`` or ``"rnn_relu"``, the torch kernel.
        layers: each layer's weights in torch's order, ``[w_ih, w_hh, b_ih, b_hh]`` (and
            ``w_hr`` for an LSTM with projections), without the flag columns.
        x, starts, lengths, state, units: as :func:`run_window` takes them.
        has_biases: whether ``layers`` hold biases.
        dropout, train: dropout on the outputs of every layer but the last, in training.

    Returns:
        ``(outputs, state)`` as :func:`run_window` returns them.
    """
    B, W = x.shape[0], x.shape[1]
    layout = _closing_layout(starts.numpy(), lengths.numpy(), W)
    if layout is None:
        return x.new_zeros(B, W, units), state
    sources, reads, at_last, live = (torch.from_numpy(a).to(x.device) for a in layout[:4])
    width, F = sources.shape[0], x.shape[2]
    # The window's steps, then a closing and a holding step, each with the two flags.
    flat = x.new_zeros(B * W + 2, F + 2)
    flat[: B * W, :F] = x.reshape(B * W, F)
    flat[B * W, F] = flat[B * W + 1, F + 1] = 1
    # Time-major, as the kernel runs (a batch-first call transposes its input and output).
    inputs = flat.index_select(0, sources.flatten()).view(width, B, F + 2)
    flagged = inputs[..., F:]
    carried = state
    if bool(starts[:, 0].any()):
        fresh = starts[:, 0].to(x.device).view(1, B, 1)
        carried = _map_state(lambda t: torch.where(fresh, 0, t), state)
    kernel = _KERNELS[kind]
    finals: list[list[torch.Tensor]] = []
    for layer, weights in enumerate(layers):
        w_ih, b_ih = weights[0], weights[2] if has_biases else None
        params = [torch.cat([w_ih, flag_columns(kind, w_ih, b_ih)], dim=1), *weights[1:]]
        hx = [t[layer : layer + 1] for t in _leaves(carried)]
        out, *new = kernel(
            inputs,
            tuple(hx) if kind == "lstm" else hx[0],
            params,
            has_biases,
            1,
            0.0,
            train,
            False,
            False,  # time-major
        )
        # The state after each row's last real step: its output there; an LSTM's cell, held.
        # (The last layer's are read with its outputs, in the same gather.)
        last_layer = layer + 1 == len(layers)
        flat_out = out.view(width * B, -1)
        read = flat_out.index_select(0, torch.cat([reads, at_last]) if last_layer else at_last)
        finals.append([read[-B:][None], *new[1:]])
        if not last_layer:
            if dropout and train:
                out = torch.nn.functional.dropout(out, dropout, True)
            inputs = torch.cat([torch.where(flagged.any(-1, keepdim=True), 0, out), flagged], -1)
    # Each output to its step (padding reads any place, then is zeroed).
    outputs = read[: B * W]
    if layout[4] is not None:  # padding: zeros, and no gradient
        outputs = torch.where(torch.from_numpy(layout[4]).to(x.device), outputs, 0)
    ends = iter(
        [
            finals[0][i] if len(finals) == 1 else torch.cat([f[i] for f in finals])
            for i in range(len(finals[0]))
        ]
    )
    if layout[4] is None:  # every row is real to its end
        return outputs.view(B, W, units), _map_state(lambda t: next(ends), state)
    live = live.view(1, B, 1)
    new_state = _map_state(lambda t: torch.where(live, next(ends), t), state)
    return outputs.view(B, W, units), new_state


def _closing_layout(starts: np.ndarray, lengths: np.ndarray, W: int) -> tuple[Any, ...] | None:
    """Where each step of the window runs in :func:`run_window_closing`'s call, or None if
    the window holds no real step.

    Returns ``sources`` ``(width, B)``, time-major, the flat index in ``(B, W)`` of the step
    run at each place of the call (``B * W`` for a closing step, ``B * W + 1`` for a holding
    step); ``reads`` ``(B * W,)``, the place of each step of the window in the time-major
    call (anything for padding); ``at_last`` ``(B,)``, the place of each
    row's last real step in the time-major call (anything for a row without one); ``live``
    ``(B,)``, the row has a real step; ``real`` ``(B * W, 1)``, the step is real, or None
    if the window holds no padding. In numpy: a few dozen operations on small arrays,
    where each of torch's costs several microseconds.
    """
    B = len(lengths)
    if not lengths.any():
        return None
    real = _COLS[:W] < lengths[:, None]
    inside = starts & real
    inside[:, 0] = False
    place = np.cumsum(inside, axis=1, dtype=np.int64) + _COLS[:W]
    ends = lengths + place[:, -1] - (W - 1)
    width = int(ends.max())
    # time-major places: slot s of row r is s * B + r
    where = (place * B + _COLS[:B, None])[real]
    steps = (_COLS[:B, None] * W + _COLS[:W])[real]
    sources = np.full((width, B), B * W)
    sources[_COLS[:width, None] >= ends] = B * W + 1
    sources.reshape(-1)[where] = steps
    reads = np.zeros(B * W, dtype=np.int64)
    reads[steps] = where
    at_last = (np.maximum(ends, 1) - 1) * B + _COLS[:B]
    padding = None if real.all() else real.reshape(-1, 1)
    return sources, reads, at_last, lengths > 0, padding


#: 0, 1, 2, ...: sliced, the aranges of :func:`_closing_layout`.
_COLS = np.arange(1 << 16)
