"""seqbatch.torch.unroll: a torch RNN over batches of every layout, exact per series.

The data encodes its own position (``tests.encoded``); the layer reads ``sin(0.37 * x)`` of
it, so that its inputs stay in range and stay distinct for every step of every series. Each
real step's output must be the layer's output at that step of its series run alone, and each
row's state after a batch the state of its last series so far run alone, with the state
carried across the batches of an epoch. Gradients are compared with a per-step loop that
resets and holds the state by hand.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any

import numpy as np
import pytest
import torch

import seqbatch
from seqbatch.torch import TensorBatch, runs, unroll
from tests.carried import FEATURES, LENGTHS
from tests.encoded import SERIES_STRIDE, decode_real, encoded_series

B, W = 3, 16
INPUTS = 2


def layer_input(x: np.ndarray) -> np.ndarray:
    """What the layer reads of encoded data: in range, distinct per step, 0 on padding."""
    return np.sin(0.37 * x).astype(np.float32)


def batcher(boundary: str, shuffle: bool = True, batch_size: int = B) -> seqbatch.StreamBatcher:
    data = [encoded_series(s, n, FEATURES, "float32") for s, n in enumerate(LENGTHS)]
    return seqbatch.StreamBatcher(
        data,
        None,
        batch_size=batch_size,
        sequence_length=W,
        remainder="pad",
        series_boundary=boundary,  # type: ignore[arg-type]
        shuffle=shuffle,
        seed=7,
    )


def series_inputs(boundary: str) -> list[np.ndarray]:
    """The layer's input of each series, by series id; ``"concat"`` joins them into series 0."""
    data = [layer_input(encoded_series(s, n, FEATURES, "float32")) for s, n in enumerate(LENGTHS)]
    return [np.concatenate(data)] if boundary == "concat" else data


def provenance(b: seqbatch.Batch, boundary: str) -> tuple[np.ndarray, np.ndarray]:
    """``(B, W)`` series and step of every step, checked against the data; -1 on padding.

    Only packed batches name the series of every step; in the others a row holds one series
    (one joined series for ``"concat"``) from ``position`` on.
    """
    real = b.sample_weight > 0
    if b.step_series is not None:
        series, step = b.step_series, b.step_position
    else:
        series = np.where(real, b.series[:, None], -1)
        step = np.where(real, b.position[:, None] + np.arange(W), -1)
    codes = decode_real(b.x, FEATURES)
    if boundary == "concat":
        joined = np.concatenate(([0], np.cumsum(LENGTHS)))
        s, t = np.divmod(np.maximum(codes, 0), SERIES_STRIDE)
        want = np.where(real, joined[np.maximum(s - 1, 0)] + t, -1)
    else:
        want = np.where(real, codes % SERIES_STRIDE, -1)
        assert np.array_equal(np.where(real, codes // SERIES_STRIDE - 1, -1), series)
    assert np.array_equal(want, step), "the batch's provenance does not match its data"
    return series, step


def make_rnn(kind: str, num_layers: int = 2) -> torch.nn.RNNBase:
    torch.manual_seed(0)
    if kind == "LSTM-proj":
        return torch.nn.LSTM(INPUTS, 5, num_layers=num_layers, batch_first=True, proj_size=3)
    if kind == "RNN-relu":
        return torch.nn.RNN(INPUTS, 4, num_layers=num_layers, batch_first=True, nonlinearity="relu")
    rnn: torch.nn.RNNBase = getattr(torch.nn, kind)(
        INPUTS, 4, num_layers=num_layers, batch_first=True
    )
    return rnn


def leaves(state: Any) -> tuple[torch.Tensor, ...]:
    return tuple(state) if isinstance(state, tuple) else (state,)


def fed(b: seqbatch.Batch, as_numpy: bool) -> Any:
    """The batch the layer is given: its x replaced by the layer's input."""
    b = dataclasses.replace(b, x=layer_input(b.x))
    return b if as_numpy else TensorBatch.from_batch(b)


def windows_with_several_series(batches: seqbatch.StreamBatcher) -> int:
    """Rows of the epoch whose window starts a series after step 0."""
    return sum(
        int(batches[k].step_reset[:, 1:].any(axis=1).sum())  # type: ignore[index]
        for k in range(len(batches))
    )


@pytest.mark.parametrize(
    ("kind", "boundary"),
    [(kind, "pack") for kind in ("LSTM", "GRU", "RNN", "LSTM-proj", "RNN-relu")]
    + [("LSTM", "reset"), ("GRU", "reset"), ("RNN", "concat"), ("GRU", "concat")],
)
def test_every_real_step_is_the_layer_on_its_series_alone(kind: str, boundary: str) -> None:
    check_against_series_alone(make_rnn(kind), boundary)


@pytest.mark.parametrize(
    ("kind", "calls"),
    [("LSTM", 2), ("GRU", 2), ("RNN-relu", 2), ("LSTM-proj", 2), ("RNN", None)],
)
def test_gated_layers_run_each_layer_once_per_batch(
    kind: str, calls: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An LSTM, a GRU and a ReLU RNN run each packed window in one call of the kernel per
    layer, closing steps and all; a tanh RNN, which no closing step zeroes, runs its runs."""
    made: list[tuple[int, ...]] = []

    def counted(kernel: Any) -> Any:
        def call(inputs: torch.Tensor, *args: Any) -> Any:
            made.append(tuple(inputs.shape))
            return kernel(inputs, *args)

        return call

    monkeypatch.setattr(runs, "_KERNELS", {k: counted(f) for k, f in runs._KERNELS.items()})
    batches = batcher("pack")
    rnn = make_rnn(kind)
    flagged = next(k for k in range(len(batches)) if batches[k].step_reset[:, 1:].any())  # type: ignore[index]
    b = fed(batches[flagged], as_numpy=False)
    with torch.no_grad():
        unroll(rnn, b, None)
    if calls is None:
        assert made == []
    else:
        closings = int(b.step_reset[:, 1:].sum(dim=1).max())  # type: ignore[index]
        units = rnn.proj_size or rnn.hidden_size  # the second layer reads the first's outputs
        assert made == [(W + closings, B, INPUTS + 2), (W + closings, B, units + 2)][:calls]


@pytest.mark.parametrize("way", ["_bit_pieces", "_column_pieces"])
def test_both_ways_of_calling_the_layer_are_exact(
    way: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """unroll takes the way with fewer calls for a tanh RNN; each must be exact on its own."""
    if way == "_bit_pieces":
        monkeypatch.setattr(
            runs,
            "_pieces",
            lambda rows, cols, lengths, W: runs._bit_pieces(rows * W + cols, lengths),
        )
    else:
        monkeypatch.setattr(runs, "_pieces", runs._column_pieces)
    check_against_series_alone(make_rnn("RNN"), "pack")


@pytest.mark.parametrize("way", ["_bit_pieces", "_column_pieces"])
def test_the_pieces_cover_every_run_once_in_order(way: str) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        starts = torch.from_numpy(np.sort(rng.choice(60, size=rng.integers(1, 8), replace=False)))
        ends = torch.cat([starts[1:], torch.tensor([60])])
        rows, cols, lengths = torch.zeros_like(starts), starts, ends - starts
        pieces = (
            runs._bit_pieces(cols, lengths)
            if way == "_bit_pieces"
            else runs._column_pieces(rows, cols, lengths, 60)
        )
        covered: list[list[int]] = [[] for _ in range(len(starts))]
        for part, flat, width in pieces:
            for r, f in zip(part.tolist(), flat.tolist(), strict=True):
                covered[r] += range(f, f + width)
        for r in range(len(starts)):
            assert covered[r] == list(range(int(cols[r]), int(ends[r]))), (starts, r)
    if way == "_bit_pieces":
        assert len(pieces) <= 6  # at most one call per bit of a length below 64


def check_against_series_alone(rnn: torch.nn.RNNBase, boundary: str) -> None:
    """Two epochs through unroll, the state carried: every real step and every row's state
    after each batch against ``rnn`` on the series alone."""
    batches = batcher(boundary)
    inputs = series_inputs(boundary)
    if boundary == "pack":
        assert windows_with_several_series(batches) >= 5

    @functools.cache
    def alone(s: int, begin: int, stop: int | None = None) -> Any:
        """The layer's outputs and final state on series ``s`` from step ``begin``, from zeros."""
        return rnn(torch.from_numpy(inputs[s][begin:stop])[None])

    begin = np.zeros(B, dtype=np.int64)  # where each row's series began (a "concat" cut: anywhere)
    want_state: list[Any] = [None] * B
    state = None
    steps = 0
    with torch.no_grad():
        for epoch in (0, 1):
            batches.set_epoch(epoch)
            for k in range(len(batches)):
                b = batches[k]
                series, step = provenance(b, boundary)
                flags = (
                    b.step_reset
                    if b.step_reset is not None
                    else b.reset[:, None] & (np.arange(W) == 0)
                )
                out, state = unroll(rnn, fed(b, as_numpy=k % 2 == 1), state)
                assert out.shape == (B, W, rnn.proj_size or rnn.hidden_size)
                real = b.sample_weight > 0
                assert not out[torch.from_numpy(~real)].any(), "an output on padding"
                for i, j in zip(*np.nonzero(real), strict=True):  # row by row, step by step
                    s, t = int(series[i, j]), int(step[i, j])
                    if flags[i, j]:
                        begin[i] = t
                    want = alone(s, int(begin[i]))[0][0, t - begin[i]]
                    torch.testing.assert_close(out[i, j], want, atol=1e-5, rtol=0)
                    want_state[i] = alone(s, int(begin[i]), t + 1)[1]
                    steps += 1
                for i in range(B):  # each row's state after its last real step so far
                    for got, want in zip(leaves(state), leaves(want_state[i]), strict=True):
                        torch.testing.assert_close(got[:, i], want[:, 0], atol=1e-5, rtol=0)
    used = 2 * batches.plan.accounting.used
    assert steps == used and used >= 2 * sum(LENGTHS) - 2 * B * W


def test_an_idle_row_keeps_its_state_and_none_means_zeros() -> None:
    rnn = make_rnn("LSTM")
    batches = batcher("reset", shuffle=False, batch_size=8)  # 18 windows on 8 streams
    last = batches[len(batches) - 1]
    idle = last.series < 0
    assert idle.sum() == 6
    carried = (torch.randn(2, 8, 4), torch.randn(2, 8, 4))
    with torch.no_grad():
        _, state = unroll(rnn, fed(last, as_numpy=False), carried)
        _, from_none = unroll(rnn, fed(last, as_numpy=False), None)
        _, from_zeros = unroll(
            rnn, fed(last, as_numpy=False), tuple(map(torch.zeros_like, carried))
        )
    for got, came, none, zeros in zip(state, carried, from_none, from_zeros, strict=True):
        assert torch.equal(got[:, idle], came[:, idle])
        assert not torch.equal(got[:, ~idle], came[:, ~idle])
        assert torch.equal(none, zeros)
    nothing = dataclasses.replace(
        last, sample_weight=np.zeros_like(last.sample_weight), reset=np.zeros(8, bool)
    )
    out, same = unroll(rnn, fed(nothing, as_numpy=False), carried)
    assert out.shape == (8, W, 4) and not out.any()
    assert all(a is b for a, b in zip(same, carried, strict=True))


def per_step(rnn: torch.nn.RNNBase, b: TensorBatch, state: Any) -> tuple[torch.Tensor, Any]:
    """The loop one writes by hand: the layer one step at a time, the state zeroed right
    before each flagged step and kept through padding, the outputs zero on padding."""
    assert b.step_reset is not None
    outs = []
    for t in range(W):
        flag = b.step_reset[:, t].view(1, -1, 1)
        state = tuple(torch.where(flag, 0.0, s) for s in leaves(state))
        out, new = rnn(b.x[:, t : t + 1], state if len(state) == 2 else state[0])
        real = (b.sample_weight[:, t] > 0).view(1, -1, 1)
        state = tuple(torch.where(real, n, s) for n, s in zip(leaves(new), state, strict=True))
        outs.append(out[:, 0] * real[0])
    return torch.stack(outs, dim=1), state if len(state) == 2 else state[0]


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN", "RNN-relu"])
def test_gradients_are_those_of_the_per_step_loop(kind: str) -> None:
    batches = batcher("pack", shuffle=False)
    # A batch whose rows carry state in, start series mid-window and end in padding.
    k = next(
        k
        for k in range(1, len(batches))
        if (~batches[k].reset).any()
        and batches[k].step_reset[:, 1:].any()  # type: ignore[index]
        and (batches[k].sample_weight == 0).any()
    )
    b = fed(batches[k], as_numpy=False)
    torch.manual_seed(1)
    out_weight = torch.randn(B, W, 4)
    state_weight = torch.randn(2, B, 4)
    carried_in = [torch.randn(2, B, 4) for _ in range(2 if kind == "LSTM" else 1)]
    found = []
    for run in (unroll, per_step):
        rnn = make_rnn(kind)
        x = b.x.clone().requires_grad_(True)
        carried = [c.clone().requires_grad_(True) for c in carried_in]
        out, state = run(
            rnn, dataclasses.replace(b, x=x), tuple(carried) if kind == "LSTM" else carried[0]
        )
        loss = (out * out_weight).sum() + sum((s * state_weight).sum() for s in leaves(state))
        loss.backward()
        found.append(
            {
                "outputs": out.detach(),
                "state": [s.detach() for s in leaves(state)],
                "inputs": x.grad,
                "carried state": [c.grad for c in carried],
                **{name: p.grad for name, p in rnn.named_parameters()},
            }
        )
    got, want = found
    assert got.keys() == want.keys()
    for name in got:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-5, msg=name)
    # The state reaches the loss through the rows that carry it in, and no other.
    for grad in got["carried state"]:
        assert not grad[:, b.reset].any() and grad[:, ~b.reset].abs().sum() > 0


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_float64_closes_and_holds_exactly(kind: str) -> None:
    """In float64 the closing and holding steps are as exact as the kernel: against the
    per-step loop to 1e-12, on a batch that starts series inside the window and ends rows
    in padding (holding steps)."""
    batches = batcher("pack", shuffle=False)
    k = next(
        k
        for k in range(1, len(batches))
        if batches[k].step_reset[:, 1:].any()  # type: ignore[index]
        and (batches[k].sample_weight == 0).any()
    )
    b = fed(batches[k], as_numpy=False)
    b = dataclasses.replace(b, x=b.x.double())
    rnn = make_rnn(kind).double()
    carried = tuple(torch.randn(2, B, 4, dtype=torch.float64) for _ in range(2))
    state = carried if kind == "LSTM" else carried[0]
    with torch.no_grad():
        got = unroll(rnn, b, state)
        want = per_step(rnn, b, state)
    torch.testing.assert_close(got[0], want[0], atol=1e-12, rtol=0)
    for g, w in zip(leaves(got[1]), leaves(want[1]), strict=True):
        torch.testing.assert_close(g, w, atol=1e-12, rtol=0)


def test_unroll_checks_its_arguments() -> None:
    b = fed(batcher("pack")[1], as_numpy=False)
    with pytest.raises(
        TypeError,
        match=re.escape("`rnn` must be a torch.nn.LSTM, GRU or RNN. Received: rnn of type Linear"),
    ):
        unroll(torch.nn.Linear(2, 3), b, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`rnn` must run forward only.*bidirectional=True"):
        unroll(torch.nn.LSTM(2, 3, batch_first=True, bidirectional=True), b, None)
    with pytest.raises(ValueError, match=r"build it with batch_first=True.*batch_first=False"):
        unroll(torch.nn.GRU(2, 3), b, None)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`batch.x` must be (B, W, input_size) with input_size=3, the input of `rnn`"
        )
        + r".*Received: shape \(3, 16, 2\)",
    ):
        unroll(torch.nn.GRU(3, 3, batch_first=True), b, None)
    gru = torch.nn.GRU(2, 3, batch_first=True)
    with pytest.raises(ValueError, match=r"`inputs` must be \(B, W, input_size\)"):
        unroll(gru, b, None, inputs=b.x[:, :, :1])
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`batch.sample_weight` must hold one weight per step of the window, (B, W) = (3, 16)"
        )
        + r".*Received: sample_weight of shape \(3,\)",
    ):
        unroll(gru, dataclasses.replace(b, sample_weight=b.sample_weight[:, 0]), None)
    with pytest.raises(ValueError, match=r"`batch.step_reset` must begin with `batch.reset`"):
        unroll(gru, dataclasses.replace(b, reset=~b.reset), None)
    with pytest.raises(ValueError, match=re.escape("`batch.step_reset` must hold one bool flag")):
        unroll(gru, dataclasses.replace(b, step_reset=b.step_reset[:, :4]), None)  # type: ignore[index]
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`state` must be what `rnn` takes, each tensor (num_layers, B, units) with B=3 "
            "rows, one per stream of the batch. Received: a tensor of shape (1, 4, 3)"
        ),
    ):
        unroll(gru, b, torch.zeros(1, 4, 3))


def test_inputs_replace_the_batchs_x() -> None:
    torch.manual_seed(0)
    embed = torch.nn.Linear(2, 3)
    gru = torch.nn.GRU(3, 4, batch_first=True)
    batches = batcher("pack", shuffle=False)
    b = fed(batches[1], as_numpy=False)
    embedded = embed(b.x)
    out, _ = unroll(gru, b, None, inputs=embedded)
    want, _ = unroll(gru, dataclasses.replace(b, x=embedded), None)
    assert torch.equal(out, want)
    out.sum().backward()
    assert embed.weight.grad is not None and embed.weight.grad.abs().sum() > 0
