"""seqbatch.jax.StreamState: the carried state of every stream between jitted scans.

A diagonal linear recurrence runs in ``jax.lax.scan`` over each record, through a
``StreamState``, and is compared after every record with the numpy recurrence run over each
series alone from zeros (``tests.recurrences``, ``tests.series_alone``); checkpoints move
between numbers of hosts by global stream and must continue bit for bit.
"""

from __future__ import annotations

import pickle
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqbatch
from seqbatch.jax import StreamSource, StreamState, hold
from tests.encoded import SERIES_STRIDE, encoded_series
from tests.recurrences import diagonal
from tests.series_alone import expected_packed_states, expected_states, padded_rows

LENGTHS = [23, 17, 14, 11, 9, 8, 6, 5, 3, 2]
FEATURES = (2,)
UNITS = 3
SCALE = 1.0 / SERIES_STRIDE
A = np.array([0.9, 0.5, -0.7], dtype=np.float32)
B = np.array([[1.0, -0.5, 0.25], [0.5, 2.0, -1.0]], dtype=np.float32)


def data() -> list[np.ndarray]:
    return [encoded_series(s, n, FEATURES, "float32") for s, n in enumerate(LENGTHS)]


def batcher(boundary: str, **kwargs: Any) -> seqbatch.StreamBatcher:
    options = {"batch_size": 4, "sequence_length": 4, "remainder": "pad", **kwargs}
    return seqbatch.StreamBatcher(data(), series_boundary=boundary, **options)


def alone(steps: np.ndarray) -> np.ndarray:
    _, h = diagonal(steps.astype(np.float64) * SCALE, A.astype(np.float64), B.astype(np.float64))
    return h


@jax.jit
def scan(record: dict[str, Any], h: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``h_t = a * h_{t-1} + x_t @ b`` over the window, reset at flagged steps, held on padding."""
    x = jnp.swapaxes(record["x"], 0, 1) * SCALE  # (W, B, F)
    real = jnp.swapaxes(record["sample_weight"] > 0, 0, 1)
    starts = jnp.swapaxes(record["step_reset"], 0, 1) if "step_reset" in record else None

    def step(h: jax.Array, t: Any) -> tuple[jax.Array, jax.Array]:
        x_t, real_t, start_t = t
        if start_t is not None:
            h = jnp.where(start_t[:, None], 0.0, h)
        h = hold(A * h + (x_t[..., None] * B).sum(-2), h, real_t, axis=0)
        return h, h

    h, outputs = jax.lax.scan(step, h, (x, real, starts))
    return outputs, h


def zeros(rows: int) -> jax.Array:
    return jnp.zeros((rows, UNITS), jnp.float32)


def records(source: StreamSource) -> Any:
    return source.in_order(source[i] for i in range(len(source)))


@pytest.mark.parametrize("boundary", ["reset", "pack"])
def test_each_stream_carries_its_series_state_through_the_scan(boundary: str) -> None:
    batches = batcher(boundary, shuffle=True, seed=5)
    source = StreamSource(batches, epochs=2)
    carried = StreamState(source, zeros=zeros(4))
    got = []
    for r in records(source):
        carried.run(scan, r)
        got.append(np.asarray(carried.state))
    n = len(batches)
    expect = expected_packed_states if boundary == "pack" else expected_states
    inputs = [d[:-1] for d in data()]
    for epoch in (0, 1):
        batches.set_epoch(epoch)
        reference = list(batches)
        assert padded_rows(reference) > 0
        want = expect(reference, inputs, alone, units=UNITS)
        for k, w in enumerate(want):
            np.testing.assert_allclose(
                got[epoch * n + k], w, rtol=2e-5, atol=1e-5, err_msg=f"epoch {epoch} batch {k}"
            )


def run_hosts(
    batches: seqbatch.StreamBatcher, count: int, keys: range, saved: Any = None
) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """``count`` hosts in lockstep over records ``keys``; each host's dict pickled at the end."""
    hosts = []
    for p in range(count):
        source = StreamSource(batches.shard(p, count))
        carried = StreamState(source, zeros=zeros(4 // count))
        if saved is not None:
            carried.load_state_dict(saved)
        hosts.append((source, carried))
    states = []
    for k in keys:
        for source, carried in hosts:
            carried.run(scan, source[k])
        states.append(np.concatenate([np.asarray(c.state) for _, c in hosts]))
    return states, [pickle.loads(pickle.dumps(c.state_dict())) for _, c in hosts]


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 4)])
def test_a_checkpoint_of_n_hosts_resumes_on_m_hosts_bit_for_bit(before: int, after: int) -> None:
    batches = batcher("pack")
    n = len(batches)
    whole, _ = run_hosts(batches, 1, range(n))
    first, dicts = run_hosts(batches, before, range(2))
    assert {d["next_batch"] for d in dicts} == {2}
    rest, _ = run_hosts(batches, after, range(2, n), saved=dicts)
    for k, (got, want) in enumerate(zip(first + rest, whole, strict=True)):
        np.testing.assert_array_equal(got, want, err_msg=f"batch {k}")


def test_idle_rows_keep_their_state_and_the_first_state_returned_starts_the_rest() -> None:
    batches = seqbatch.StreamBatcher(
        [np.arange(8.0), np.arange(4.0), np.arange(4.0)], targets=None, batch_size=3,
        sequence_length=4, remainder="pad",
    )  # fmt: skip
    source = StreamSource(batches)
    first, second = source[0], source[1]
    carried = StreamState(batches)
    assert carried.state_for(first) is None
    carried.update(second, {"h": jnp.ones((3, 2))})  # rows 1 and 2 are idle in batch 1
    assert carried.state["h"].tolist() == [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]
    carried.update(first, {"h": carried.state["h"] + 1})
    assert carried.state_for(first)["h"].tolist() == [[0.0, 0.0]] * 3  # batch 0 resets all


def test_refusals_name_the_rule() -> None:
    batches = batcher("reset")
    source = StreamSource(batches)
    with pytest.raises(TypeError, match=r"`batches` must be a seqbatch.StreamBatcher"):
        StreamState([1, 2])
    with pytest.raises(ValueError, match=r"`zeros` must have one row per stream along axis=0"):
        StreamState(source, zeros=zeros(3))
    carried = StreamState(source, zeros=zeros(4))
    carried.run(scan, source[0])
    with pytest.raises(ValueError, match=r"epoch 0 batch 2 where epoch 0 batch 1 was due"):
        carried.state_for(source[2])
    with pytest.raises(ValueError, match=r"one row per stream of this state, 2"):
        StreamState(batches.shard(0, 2)).state_for(source[1])
    with pytest.raises(ValueError, match=r"the structure of the state held"):
        carried.update(source[1], (zeros(4), zeros(4)))
    saved = carried.state_dict()
    with pytest.raises(ValueError, match=r"without streams \[0, 1\]"):
        StreamState(batches).load_state_dict({**saved, "streams": np.array([4, 5, 2, 3])})
