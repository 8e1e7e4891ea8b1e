"""seqbatch.torch: padding never enters a carried state, in the PyTorch guide's loop and helpers.

Many series of unequal lengths with ``remainder="pad"`` end mid-window all the time. After
every batch, each stream's state must be the state of its series so far run alone through
the same layer (``tests.series_alone``): the guide's loop (docs/guides/pytorch.md) is run as
written, with the weights kept fixed so that the layer run alone is the same layer.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import seqbatch
from seqbatch.torch import StreamDataset, hold, real_lengths, reset_rows, run_rnn
from tests.carried import LENGTHS, at_epoch
from tests.doc_blocks import blocks
from tests.series_alone import expected_states, padded_rows

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "pytorch.md"


def guide_namespace() -> dict[str, Any]:
    """The imports, ``train_step`` and ``CharModel`` of the PyTorch guide, run as written."""
    code = [b.code for b in blocks(GUIDE.read_text(encoding="utf-8")) if b.lang == "python"]
    wanted = [code[0]] + [c for c in code if "def train_step(" in c or "class CharModel(" in c]
    assert len(wanted) == 3
    namespace: dict[str, Any] = {"__name__": "__guide__"}
    for block in wanted:
        exec(compile(block, str(GUIDE), "exec"), namespace)
    return namespace


class FixedWeights:
    """An optimizer that changes nothing: the layer run alone is then the layer trained.

    (torch.optim is not imported: it crashes a process that imported TensorFlow first.)
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.parameters = list(model.parameters())

    def zero_grad(self) -> None:
        for p in self.parameters:
            p.grad = None

    def step(self) -> None:
        assert any(p.grad is not None for p in self.parameters), "the loss had no gradient"


def char_series() -> list[np.ndarray]:
    """Series of character ids, each its own random ids, so a wrong slice cannot pass."""
    rng = np.random.default_rng(3)
    return [rng.integers(1, 128, n).astype(np.int64) for n in LENGTHS]


def test_the_guides_loop_ends_each_stream_at_its_last_real_step() -> None:
    guide = guide_namespace()
    torch.manual_seed(0)
    model = guide["CharModel"](units=6)
    optimizer = FixedWeights(model)
    data = char_series()
    inputs = [d[:-1] for d in data]  # targets="next": the last step is a target only
    batches = seqbatch.StreamBatcher(
        data, batch_size=4, sequence_length=5, remainder="pad", shuffle=True, seed=7
    )
    dataset = StreamDataset(batches)
    loader = DataLoader(dataset, batch_size=None, sampler=dataset.sampler)

    def state_of(steps: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            _, (h, _) = model.lstm(model.embed(torch.from_numpy(steps)[None]))
        return h[0, 0].numpy()

    state = None
    for epoch in (0, 1):
        reference = at_epoch(batches, epoch)
        assert padded_rows(reference) >= 8  # series end mid-window again and again
        dataset.set_epoch(epoch)
        got = []
        for b in loader:
            _, state = guide["train_step"](model, optimizer, b, state)
            got.append(state[0][0].numpy().copy())
        want = expected_states(reference, inputs, state_of, units=6)
        assert len(got) == len(want) == len(reference)
        for k, (g, w) in enumerate(zip(got, want, strict=True)):
            np.testing.assert_allclose(g, w, atol=1e-5, err_msg=f"epoch {epoch} batch {k}")
        # In words: after the epoch, each stream holds its last series' state, run alone.
        last = {i: s for b in reference for i, s in enumerate(b.series.tolist()) if s >= 0}
        for i, s in last.items():
            np.testing.assert_allclose(got[-1][i], state_of(inputs[s]), atol=1e-5)


# --- run_rnn ---------------------------------------------------------------------------------


def window_with_idle_rows() -> tuple[torch.Tensor, torch.Tensor]:
    """x (4, 5, 2) and weights: a full row, two rows that end early, an idle row."""
    lengths = torch.tensor([5, 2, 0, 4])
    weight = (torch.arange(5) < lengths[:, None]).float()
    x = torch.randn(4, 5, 2) * weight[..., None]
    return x, weight


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("start", ["zeros", "a state"])
def test_run_rnn_gives_each_row_its_state_after_its_last_real_step(
    kind: str, batch_first: bool, start: str
) -> None:
    torch.manual_seed(1)
    rnn = getattr(torch.nn, kind)(2, 3, num_layers=2, batch_first=batch_first)
    x, weight = window_with_idle_rows()
    shape = (2, 4, 3)
    state: Any = None
    if start == "a state":
        state = (torch.randn(shape), torch.randn(shape)) if kind == "LSTM" else torch.randn(shape)
    out, new = run_rnn(rnn, x if batch_first else x.transpose(0, 1), state, weight)
    out = out if batch_first else out.transpose(0, 1)
    as_tuple = (lambda s: s) if kind == "LSTM" else (lambda s: (s,))
    for i, n in enumerate([5, 2, 0, 4]):
        row = None if state is None else tuple(t[:, i : i + 1] for t in as_tuple(state))
        if n == 0:  # nothing to run: the row keeps what it came with, zeros for None
            for got, old in zip(as_tuple(new), row or [None] * 2, strict=False):
                want = torch.zeros(2, 3) if old is None else old[:, 0]
                assert torch.equal(got[:, i], want)
            assert not out[i].any()
            continue
        alone = x[i : i + 1, :n] if batch_first else x[i : i + 1, :n].transpose(0, 1)
        row_state = None if row is None else (row if kind == "LSTM" else row[0])
        want_out, want_state = rnn(alone, row_state)
        want_out = want_out if batch_first else want_out.transpose(0, 1)
        torch.testing.assert_close(out[i, :n], want_out[0], atol=1e-6, rtol=1e-5)
        assert not out[i, n:].any()
        for got, want in zip(as_tuple(new), as_tuple(want_state), strict=True):
            torch.testing.assert_close(got[:, i], want[:, 0], atol=1e-6, rtol=1e-5)


def test_run_rnn_is_differentiable_and_keeps_gradients_out_of_padding() -> None:
    torch.manual_seed(2)
    lstm = torch.nn.LSTM(2, 3, batch_first=True)
    x, weight = window_with_idle_rows()
    x.requires_grad_(True)
    start = torch.randn(1, 4, 3, requires_grad=True)
    out, (h, c) = run_rnn(lstm, x, (start, torch.zeros(1, 4, 3)), weight)
    (out.sum() + h.sum() + c.sum()).backward()
    assert x.grad is not None and start.grad is not None
    assert not x.grad[weight == 0].any() and x.grad[weight > 0].abs().min() > 0
    # The idle row's state passes through as it came: gradient 1 to its start.
    assert torch.equal(start.grad[0, 2], torch.ones(3))
    assert lstm.weight_hh_l0.grad is not None


def test_run_rnn_without_any_real_step_changes_nothing() -> None:
    gru = torch.nn.GRU(2, 3, batch_first=True)
    h = torch.randn(1, 2, 3)
    out, new = run_rnn(gru, torch.zeros(2, 4, 2), h, torch.zeros(2, 4))
    assert new is h and out.shape == (2, 4, 3) and not out.any()


def test_run_rnn_checks_its_arguments() -> None:
    x, weight = window_with_idle_rows()
    with pytest.raises(
        TypeError,
        match=re.escape("`rnn` must be a torch.nn.LSTM, GRU or RNN. Received: rnn of type Linear"),
    ):
        run_rnn(torch.nn.Linear(2, 3), x, None, weight)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`rnn` must run forward only.*bidirectional=True"):
        run_rnn(torch.nn.LSTM(2, 3, batch_first=True, bidirectional=True), x, None, weight)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`sample_weight` must have the batch and window of `x`, (B, W) = (4, 5). "
            "Received: sample_weight of shape (4, 4)"
        ),
    ):
        run_rnn(torch.nn.LSTM(2, 3, batch_first=True), x, None, weight[:, :4])


def test_real_lengths_counts_the_real_prefix_of_each_row() -> None:
    w = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [2.5, 2.5, 2.5]])
    assert real_lengths(w).tolist() == [2, 0, 3]
    assert real_lengths(w).dtype == torch.int64 and real_lengths(w).device.type == "cpu"
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`sample_weight` must have padding only after the real steps of each row, as "
            "seqbatch batches have. Received: row 1 weighted [0.0, 1.0, 1.0]"
        ),
    ):
        real_lengths(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]))
    last_step = seqbatch.StreamBatcher(
        [np.arange(9.0), np.arange(4.0)],
        batch_size=2,
        sequence_length=3,
        remainder="pad",
        return_sequences=False,
    )
    weight = StreamDataset(last_step)[0, 1].sample_weight
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`sample_weight` must hold one weight per step, shape (B, W), to tell each row's "
            "real steps from its padding: build the batcher with return_sequences=True"
        )
        + ".*Received: sample_weight of shape \\(2,\\)",
    ):
        real_lengths(weight)


# --- hold ------------------------------------------------------------------------------------


def test_hold_keeps_the_old_state_in_padded_rows() -> None:
    cell = torch.nn.LSTMCell(2, 3)
    x, weight = window_with_idle_rows()
    state = reset_rows(
        (torch.randn(4, 3), torch.randn(4, 3)), torch.ones(4, dtype=torch.bool), dim=0
    )
    for t in range(5):
        state = hold(cell(x[:, t], state), state, weight[:, t] > 0, dim=0)
    for i, n in enumerate([5, 2, 0, 4]):
        alone = (torch.zeros(1, 3), torch.zeros(1, 3))
        for t in range(n):
            alone = cell(x[i : i + 1, t], alone)
        for got, want in zip(state, alone, strict=True):
            torch.testing.assert_close(got[i], want[0])


def test_hold_checks_its_arguments() -> None:
    h = torch.ones(4, 3)
    flags = torch.ones(4, dtype=torch.bool)
    with pytest.raises(ValueError, match=re.escape("`real` must hold one bool flag per stream")):
        hold(h, h, torch.ones(4), dim=0)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`new_state` and `old_state` must be states of the same structure and shapes, with "
            "one row per flag along dim=0. Received: a new state of shape (4, 3), an old one of "
            "shape (4, 2), 4 flags"
        ),
    ):
        hold(h, torch.ones(4, 2), flags, dim=0)
    with pytest.raises(ValueError, match="Received: an old state with more tensors"):
        hold(h, (h, h), flags, dim=0)
    with pytest.raises(ValueError, match="an old one of shape None"):
        hold((h, h), h, flags, dim=0)
