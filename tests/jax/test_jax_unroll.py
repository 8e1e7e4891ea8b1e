"""seqbatch.jax.unroll: a cell scanned over batches of every layout, exact per series.

The reference is the numpy LSTM of ``tests.replay`` run over each series alone, from zeros,
one step at a time: every real step's output of the JAX cell must equal it, and each row's
carry after a batch must be the state of its last series so far, the carry passed from batch
to batch through an epoch. The data encodes its own position (``tests.encoded``); the cell
reads ``sin(0.37 * x)`` of it. Gradients are compared with a Python loop over the steps that
resets and holds the carry by hand.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqbatch
from seqbatch.jax import StreamSource, unroll
from tests.carried import FEATURES, LENGTHS
from tests.encoded import SERIES_STRIDE, decode_real, encoded_series
from tests.replay import LSTMWeights, lstm_step

B, W, UNITS = 3, 16, 4


def layer_input(x: np.ndarray) -> np.ndarray:
    return np.sin(0.37 * x).astype(np.float32)


def weights() -> LSTMWeights:
    rng = np.random.default_rng(0)
    return LSTMWeights(
        rng.normal(0, 0.7, (FEATURES[0], 4 * UNITS)),
        rng.normal(0, 0.5, (UNITS, 4 * UNITS)),
        rng.normal(0, 0.2, 4 * UNITS),
    )


def lstm_cell(w: Any) -> Any:
    def cell(carry: Any, x_t: Any) -> Any:
        h, c = carry
        z = x_t @ w["kernel"] + h @ w["recurrent"] + w["bias"]
        i, f, g, o = jnp.split(z, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    return cell


def as_jax(w: LSTMWeights) -> dict[str, Any]:
    return {k: jnp.asarray(getattr(w, k), jnp.float32) for k in ("kernel", "recurrent", "bias")}


def batcher(boundary: str) -> seqbatch.StreamBatcher:
    data = [encoded_series(s, n, FEATURES, "float32") for s, n in enumerate(LENGTHS)]
    return seqbatch.StreamBatcher(
        data,
        None,
        batch_size=B,
        sequence_length=W,
        remainder="pad",
        series_boundary=boundary,  # type: ignore[arg-type]
        shuffle=True,
        seed=7,
    )


def series_input(s: int) -> np.ndarray:
    """What the cell reads of series ``s``."""
    return layer_input(encoded_series(int(s), LENGTHS[int(s)], FEATURES, "float32"))


def alone(w: LSTMWeights, steps: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The numpy LSTM over one series alone, from zeros: outputs ``(n, U)`` and final state."""
    h, c = np.zeros(UNITS), np.zeros(UNITS)
    outs = []
    for x in steps.astype(np.float64):
        h, c = lstm_step(w, x, h, c)
        outs.append(h)
    return np.array(outs), (h, c)


@pytest.mark.parametrize("boundary", ["pack", "reset"])
def test_every_real_step_is_the_cell_on_its_series_alone(boundary: str) -> None:
    w = weights()
    batches = batcher(boundary)
    references = [alone(w, series_input(s)) for s in range(len(LENGTHS))]
    run = jax.jit(lambda batch, state: unroll(lstm_cell(as_jax(w)), batch, state))
    source = StreamSource(batches, epochs=2)
    state = (jnp.zeros((B, UNITS)), jnp.zeros((B, UNITS)))
    want_state = np.zeros((2, B, UNITS))
    several = 0
    for record in source.in_order(source):
        batch = {k: record[k] for k in ("x", "sample_weight", "reset", "step_reset") if k in record}
        batch["x"] = layer_input(batch["x"])
        out, state = run(batch, state)
        real = record["sample_weight"] > 0
        codes = decode_real(record["x"], FEATURES)  # the series and step, from the data itself
        series, step = np.divmod(codes, SERIES_STRIDE)
        series -= 1
        np.testing.assert_array_equal(np.asarray(out)[~real], 0)
        for i, j in zip(*np.nonzero(real), strict=True):
            np.testing.assert_allclose(
                out[i, j], references[series[i, j]][0][step[i, j]], atol=1e-5, rtol=0
            )
        for i in np.flatnonzero(real[:, 0]):
            last = int(real[i].sum()) - 1
            want_state[:, i] = alone(w, series_input(series[i, last])[: step[i, last] + 1])[1]
        np.testing.assert_allclose(np.stack(state), want_state, atol=1e-5, rtol=0)
        if "step_reset" in record:
            several += int(record["step_reset"][:, 1:].any(axis=1).sum())
    assert several >= 10 if boundary == "pack" else several == 0


def per_step(cell: Any, batch: Any, state: Any) -> tuple[Any, Any]:
    """The loop one writes by hand: one step at a time, zeroed right before a flagged step,
    held at padding, zero outputs at padding."""
    outs = []
    for t in range(W):
        flag = batch["step_reset"][:, t][:, None]
        state = tuple(jnp.where(flag, 0.0, s) for s in state)
        new, y = cell(state, batch["x"][:, t])
        real = (batch["sample_weight"][:, t] > 0)[:, None]
        state = tuple(jnp.where(real, n, s) for n, s in zip(new, state, strict=True))
        outs.append(jnp.where(real, y, 0.0))
    return jnp.stack(outs, axis=1), state


def test_gradients_are_those_of_the_per_step_loop() -> None:
    batches = batcher("pack")
    k = next(
        k
        for k in range(1, len(batches))
        if (~batches[k].reset).any()
        and batches[k].step_reset[:, 1:].any()  # type: ignore[index]
        and (batches[k].sample_weight == 0).any()
    )
    b = batches[k]
    batch = {
        "x": jnp.asarray(layer_input(b.x)),
        "sample_weight": jnp.asarray(b.sample_weight),
        "reset": jnp.asarray(b.reset),
        "step_reset": jnp.asarray(b.step_reset),
    }
    rng = np.random.default_rng(1)
    out_weight = jnp.asarray(rng.normal(size=(B, W, UNITS)), jnp.float32)
    state_weight = jnp.asarray(rng.normal(size=(2, B, UNITS)), jnp.float32)
    carried = tuple(jnp.asarray(rng.normal(size=(B, UNITS)), jnp.float32) for _ in range(2))

    def loss(run: Any, params: Any, x: Any, state: Any) -> Any:
        out, new = run(lstm_cell(params), {**batch, "x": x}, state)
        return jnp.sum(out * out_weight) + jnp.sum(jnp.stack(new) * state_weight)

    params = as_jax(weights())
    grads = {
        run: jax.jit(jax.grad(partial(loss, run), argnums=(0, 1, 2)))(params, batch["x"], carried)
        for run in (unroll, per_step)
    }
    got, want = grads[unroll], grads[per_step]
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5)
    for grad in got[2]:  # the carry reaches the loss through the rows that do not reset
        assert not np.asarray(grad)[b.reset].any() and np.abs(grad[~b.reset]).sum() > 0


def test_unroll_takes_a_numpy_batch_and_checks_its_arguments() -> None:
    b = batcher("reset")[1]
    carry = jnp.zeros((B, 2))
    total, _ = unroll(lambda c, x_t: (c + x_t, c + x_t), b, carry)
    real = b.sample_weight > 0
    expected = np.where(real[..., None], np.cumsum(np.where(real[..., None], b.x, 0), axis=1), 0)
    np.testing.assert_allclose(total, expected, rtol=1e-6)
    with pytest.raises(
        ValueError,
        match=re.escape("`sample_weight` must hold one weight per step, shape (B, W)")
        + r".*Received: sample_weight of shape \(3,\)",
    ):
        unroll(lambda c, x: (c, x), {**vars_of(b), "sample_weight": b.sample_weight[:, 0]}, carry)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`inputs` must be (B, W, ...) with the batch and window of `sample_weight`, (B, W) "
            "= (3, 16). Received: shape (3, 15, 2)"
        ),
    ):
        unroll(lambda c, x: (c, x), b, carry, inputs=b.x[:, 1:])
    with pytest.raises(ValueError, match=re.escape("`reset` must hold one bool flag per stream")):
        unroll(lambda c, x: (c, x), {**vars_of(b), "reset": b.reset.astype(np.float32)}, carry)
    with pytest.raises(
        ValueError, match=re.escape("`step_reset` must hold one bool flag per step")
    ):
        unroll(lambda c, x: (c, x), {**vars_of(b), "step_reset": np.zeros((B, 4), bool)}, carry)
    with pytest.raises(ValueError, match=re.escape("`batch` must hold 'reset'")):
        unroll(lambda c, x: (c, x), {"x": b.x, "sample_weight": b.sample_weight}, carry)


def vars_of(b: seqbatch.Batch) -> dict[str, Any]:
    return {"x": b.x, "sample_weight": b.sample_weight, "reset": b.reset}
