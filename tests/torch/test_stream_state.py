"""seqbatch.torch.StreamState: the carried state of every stream, saved per global stream.

Every model here runs through a ``StreamState`` and is compared, after every batch, with a
numpy reference run over each series alone from zeros (``tests.series_alone``,
``tests.recurrences``, ``tests.replay``): a state carried into the wrong stream, a reset
missed or applied twice, a state run through padding or taken from an idle row, or rows
mixed up when a checkpoint moves to another number of ranks would all disagree.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import seqbatch
from seqbatch.torch import StreamDataset, StreamState, TensorBatch, run_rnn
from tests.encoded import SERIES_STRIDE, encoded_series
from tests.recurrences import diagonal
from tests.replay import from_torch, lstm_step
from tests.series_alone import expected_packed_states, expected_states, padded_rows

LENGTHS = [23, 17, 14, 11, 9, 8, 6, 5, 3, 2]
FEATURES = (2,)
UNITS = 3
SCALE = 1.0 / SERIES_STRIDE  # the codes are thousands: keep the states in a tame range
A = np.array([0.9, 0.5, -0.7])
B = np.array([[1.0, -0.5, 0.25], [0.5, 2.0, -1.0]])


def data() -> list[np.ndarray]:
    return [encoded_series(s, n, FEATURES, "float64") for s, n in enumerate(LENGTHS)]


def inputs() -> list[np.ndarray]:
    """The input steps of each series with ``targets="next"``: all but the last."""
    return [d[:-1] for d in data()]


def batcher(boundary: str = "reset", **kwargs: Any) -> seqbatch.StreamBatcher:
    options = {"batch_size": 4, "sequence_length": 4, "remainder": "pad", **kwargs}
    return seqbatch.StreamBatcher(data(), series_boundary=boundary, **options)


def diagonal_alone(steps: np.ndarray) -> np.ndarray:
    """The state after ``steps`` of one series, run alone from zeros, with its step count."""
    _, h = diagonal(steps * SCALE, A, B)
    return np.concatenate([h, [len(steps)]])


class Diagonal(torch.nn.Module):
    """``h_t = a * h_{t-1} + x_t @ b``, reset at every flagged step, held through padding.

    The state is a dict, ``{"h": (B, U), "n": (B, 1)}`` (``n`` counts the series' steps),
    so that the test also covers a state of several tensors.
    """

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(A))
        self.b = torch.nn.Parameter(torch.tensor(B))

    def forward(self, batch: TensorBatch, state: dict[str, torch.Tensor] | None) -> Any:
        rows, width = batch.x.shape[:2]
        if state is None:
            state = {"h": torch.zeros(rows, UNITS, dtype=torch.float64), "n": torch.zeros(rows, 1)}
        h, n = state["h"], state["n"]
        # Elementwise only, so that a row's arithmetic is the same in a batch of any size.
        u = (batch.x.to(torch.float64)[..., None] * SCALE * self.b).sum(-2)
        real = batch.sample_weight > 0
        outputs = []
        for t in range(width):
            if batch.step_reset is not None:  # packed: a series starts inside the window
                start = batch.step_reset[:, t, None]
                h, n = h.masked_fill(start, 0), n.masked_fill(start, 0)
            keep = real[:, t, None]
            h = torch.where(keep, self.a * h + u[:, t], h)
            n = torch.where(keep, n + 1, n)
            outputs.append(h)
        return torch.stack(outputs, 1), {"h": h, "n": n}


def joined(state: dict[str, torch.Tensor]) -> np.ndarray:
    return torch.cat([state["h"], state["n"].to(torch.float64)], 1).numpy()


def loader(batches: seqbatch.StreamBatcher, **kwargs: Any) -> DataLoader:
    dataset = StreamDataset(batches, **kwargs)
    return DataLoader(dataset, batch_size=None, sampler=dataset.sampler)


def train(model: Diagonal, carried: StreamState, items: Any) -> list[np.ndarray]:
    """Run and backpropagate every window; the state after each."""
    states = []
    for b in items:
        outputs = carried.run(model, b)
        outputs.sum().backward()  # through this window only: a state kept attached would fail
        states.append(joined(carried.state))
    return states


def numpy_batches(batches: seqbatch.StreamBatcher) -> list[seqbatch.Batch]:
    return list(batches)


# --- The state follows each stream, against each series run alone ----------------------------


@pytest.mark.parametrize("boundary", ["reset", "pack"])
def test_each_stream_carries_its_own_series_state_over_two_shuffled_epochs(boundary: str) -> None:
    batches = batcher(boundary, shuffle=True, seed=3)
    model, carried = Diagonal(), StreamState(StreamDataset(batches))
    expect = expected_packed_states if boundary == "pack" else expected_states
    items = loader(batches)
    for epoch in (0, 1):
        items.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        batches.set_epoch(epoch)
        reference = numpy_batches(batches)
        assert padded_rows(reference) > 0 and sum(int(b.reset.sum()) for b in reference[1:]) > 0
        got = train(model, carried, items)
        want = expect(reference, inputs(), diagonal_alone, units=UNITS + 1)
        for k, (g, w) in enumerate(zip(got, want, strict=True)):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12, err_msg=f"batch {k}")
    assert not carried.state["h"].requires_grad


def test_an_idle_row_keeps_its_state_whatever_the_model_returns() -> None:
    batches = batcher()
    carried = StreamState(batches, zeros=torch.zeros(4, 2))
    idle_seen = False
    for k, b in enumerate(batches):
        tb = TensorBatch.from_batch(b)
        before = carried.state_for(tb)
        carried.update(tb, torch.full((4, 2), k + 1.0))  # in every row, idle ones too
        idle = torch.from_numpy(b.series < 0)
        idle_seen |= bool(idle.any())
        np.testing.assert_array_equal(carried.state[idle].numpy(), before[idle].numpy())
        assert (carried.state[~idle] == k + 1.0).all()
    assert idle_seen, "no idle row: the test has no power"


def test_the_first_state_returned_starts_every_stream_and_idle_rows_start_at_zero() -> None:
    batches = seqbatch.StreamBatcher(
        [np.arange(8.0), np.arange(4.0), np.arange(4.0)], targets=None, batch_size=3,
        sequence_length=4, remainder="pad",
    )  # fmt: skip
    first, second = (TensorBatch.from_batch(b) for b in batches)
    assert second.series.tolist() == [0, -1, -1]
    carried = StreamState(batches)
    assert carried.state_for(second) is None and carried.state is None
    assert carried.state_dict()["state"] is None
    carried.update(second, torch.ones(3, 2))
    assert carried.state.tolist() == [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]
    carried.update(first, carried.state + 1)
    # Resets are applied out of place, and only where flagged.
    assert carried.state_for(second).tolist() == [[2.0, 2.0], [1.0, 1.0], [1.0, 1.0]]
    assert carried.state_for(first).tolist() == [[0.0, 0.0]] * 3
    assert carried.state.tolist() == [[2.0, 2.0], [1.0, 1.0], [1.0, 1.0]]


def test_an_lstm_state_with_its_stream_axis_at_dim_1() -> None:
    """``torch.nn.LSTM``'s ``(h, c)`` are ``(layers, B, H)``: ``dim=1``, with run_rnn."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(2, UNITS, batch_first=True, dtype=torch.float64)
    weights = from_torch(*(p.detach().numpy() for p in lstm.parameters()))
    batches = batcher()
    carried = StreamState(batches, dim=1)

    def step(b: TensorBatch, state: Any) -> Any:
        return run_rnn(lstm, b.x * SCALE, state, b.sample_weight)

    got = []
    for b in loader(batches):
        out = carried.run(step, b)
        out.sum().backward()
        h, c = carried.state
        assert h.shape == c.shape == (1, 4, UNITS)
        got.append(h[0].numpy())

    def lstm_alone(steps: np.ndarray) -> np.ndarray:
        h = c = np.zeros(UNITS)
        for x in steps * SCALE:
            h, c = lstm_step(weights, x, h, c)
        return h

    want = expected_states(list(batches), inputs(), lstm_alone, units=UNITS)
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12, err_msg=f"batch {k}")


# --- Checkpoints by global stream: N ranks resume on M ---------------------------------------


def run_ranks(
    batches: seqbatch.StreamBatcher,
    count: int,
    keys: range,
    saved: Any = None,
) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """``count`` ranks in lockstep over batches ``keys`` of epoch 0, each with its own state.

    Returns the whole batch's state after each batch (the ranks' rows side by side) and each
    rank's ``state_dict`` at the end, saved through ``torch.save``.
    """
    model = Diagonal()
    ranks = []
    for r in range(count):
        dataset = StreamDataset(batches, rank=r, world_size=count)
        carried = StreamState(dataset)
        if saved is not None:
            carried.load_state_dict(saved)
        ranks.append((dataset, carried))
    states = []
    for k in keys:
        rows = []
        for dataset, carried in ranks:
            carried.run(model, dataset[0, k])
            rows.append(joined(carried.state))
        states.append(np.concatenate(rows))
    dicts = []
    for _, carried in ranks:
        buffer = io.BytesIO()
        torch.save(carried.state_dict(), buffer)
        buffer.seek(0)
        dicts.append(torch.load(buffer, weights_only=True))
    return states, dicts


@pytest.mark.parametrize(("before", "after"), [(1, 2), (2, 1), (4, 2), (2, 4)])
def test_a_checkpoint_of_n_ranks_resumes_on_m_ranks_bit_for_bit(before: int, after: int) -> None:
    batches = batcher("pack")
    n = len(batches)
    whole, _ = run_ranks(batches, 1, range(n))
    first, dicts = run_ranks(batches, before, range(3))
    assert [d["next_batch"] for d in dicts] == [3] * before
    assert sorted(torch.cat([d["streams"] for d in dicts]).tolist()) == [0, 1, 2, 3]
    rest, _ = run_ranks(batches, after, range(3, n), saved=dicts)
    for k, (got, want) in enumerate(zip(first + rest, whole, strict=True)):
        np.testing.assert_array_equal(got, want, err_msg=f"batch {k}")
    want = expected_packed_states(list(batches), inputs(), diagonal_alone, units=UNITS + 1)
    np.testing.assert_allclose(rest[-1], want[-1], rtol=1e-12, atol=1e-12)


def test_a_rank_loads_only_its_streams_in_their_order() -> None:
    batches = batcher()
    carried = StreamState(batches, zeros={"h": torch.arange(8.0).reshape(4, 2)})
    saved = carried.state_dict()
    # Dicts of two ranks, given in either order, and the rows of each rank reversed.
    halves = []
    for lo in (2, 0):
        streams = torch.tensor([lo + 1, lo])
        halves.append({**saved, "streams": streams, "state": {"h": saved["state"]["h"][streams]}})
    rank_1 = StreamState(batches.shard(1, 2))
    rank_1.load_state_dict(halves, device="cpu")
    assert rank_1.state["h"].tolist() == [[4.0, 5.0], [6.0, 7.0]]
    assert saved["streams"].tolist() == [0, 1, 2, 3]


# --- Order and refusals -----------------------------------------------------------------------


def test_a_batch_out_of_order_is_refused_before_the_state_is_handed_over() -> None:
    batches = batcher()
    dataset = StreamDataset(batches)
    carried = StreamState(dataset)
    model = Diagonal()
    carried.run(model, dataset[0, 0])
    carried.run(model, dataset[0, 1])
    with pytest.raises(ValueError, match=r"epoch 0 batch 3 where epoch 0 batch 2 was due"):
        carried.state_for(dataset[0, 3])
    carried.state_for(dataset[1, 0])  # batch 0 of an epoch resets every stream with data
    resumed = StreamState(dataset)
    resumed.load_state_dict(carried.state_dict())
    with pytest.raises(ValueError, match=r"epoch 0 batch 1 where epoch 0 batch 2 was due"):
        resumed.state_for(dataset[0, 1])
    resumed.run(model, dataset[0, 2])


def test_bad_arguments_and_checkpoints_are_refused_with_the_rule() -> None:
    batches = batcher()
    with pytest.raises(TypeError, match=r"`batches` must be a seqbatch.StreamBatcher"):
        StreamState(np.zeros(3))
    with pytest.raises(TypeError, match=r"`dim` must be an int"):
        StreamState(batches, dim=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`zeros` must have one row per stream along dim=1"):
        StreamState(batches, dim=1, zeros=torch.zeros(4, 3))
    with pytest.raises(TypeError, match=r"`state` must be a tensor, or a tuple"):
        StreamState(batches, zeros={"h": np.zeros((4, 2))})
    carried = StreamState(batches, zeros=(torch.zeros(4, 2), torch.zeros(4, 1)))
    b = TensorBatch.from_batch(batches[0])
    with pytest.raises(ValueError, match=r"`batch` must have one row per stream of this state, 2"):
        StreamState(batches.shard(0, 2)).state_for(b)
    with pytest.raises(ValueError, match=r"`new_state` must keep its structure|keep its structure"):
        carried.update(b, (torch.zeros(4, 2),))
    with pytest.raises(ValueError, match=r"`new_state` must have the shapes of the state held"):
        carried.update(b, (torch.zeros(4, 2), torch.zeros(4, 5)))
    saved = carried.state_dict()
    with pytest.raises(ValueError, match=r"without streams \[2, 3\]"):
        StreamState(batches).load_state_dict({**saved, "streams": torch.tensor([0, 1, 7, 8])})
    with pytest.raises(ValueError, match=r"each stream once"):
        StreamState(batches).load_state_dict([saved, saved])
    with pytest.raises(ValueError, match=r"saved with the stream axis of this state"):
        StreamState(batches, dim=1).load_state_dict(saved)
    with pytest.raises(ValueError, match=r"keys \['dim', 'epoch', 'next_batch', 'state'"):
        StreamState(batches).load_state_dict({"state": None})
    with pytest.raises(ValueError, match=r"one row per stream along dim=0. Received: a state of"):
        StreamState(batches).load_state_dict({**saved, "state": (torch.zeros(3, 2),) * 2})
