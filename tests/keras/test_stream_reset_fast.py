"""``StreamReset`` with per-step flags ``(B, W)``: the fused path on torch, the cell loop elsewhere.

On the torch backend a plain ``LSTM``, ``GRU`` or ``SimpleRNN`` runs each packed window cut at
its flagged steps through torch's fused kernel; every other layer, and every layer on
TensorFlow and JAX, runs its cell step by step. Whichever path runs: every real step's
output must be the output of its series run alone from zeros, and the state the layer
carries after each batch must be what a numpy RNN written out here leaves, one row and one
step at a time (zeroed at the flagged steps, stepped through padding, as the layer is). The
gradients of the fused path must be those of the cell loop: the same cell in a
``keras.layers.RNN``, which never takes the fused path. The data encodes its position
(``tests.encoded``, scaled by 1/4000). Which path ran is seen from the cell: the loop calls
it, the fused kernel does not.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import pytest

import seqbatch
from seqbatch.keras import StreamReset
from tests.encoded import encoded_series
from tests.keras_models import numpy_weights, state_values, to_numpy
from tests.replay import from_keras, lstm_step

pytestmark = pytest.mark.keras

SCALE = 4000
B, W, UNITS = 3, 4, 3
# Series 4 is one step long; series 1, 3 and 7 start inside windows, two in one window.
LENGTHS = [9, 2, 7, 3, 2, 6, 12, 4, 5]
FUSED = keras.backend.backend() == "torch"  # the only backend with a fused path here
CELLS = (keras.layers.LSTMCell, keras.layers.GRUCell, keras.layers.SimpleRNNCell)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def lstm(weights: list[np.ndarray], x: np.ndarray, state: tuple[np.ndarray, ...]) -> tuple:
    return lstm_step(from_keras(*weights), x, *state)


def gru(weights: list[np.ndarray], x: np.ndarray, state: tuple[np.ndarray, ...]) -> tuple:
    """Keras's GRU with ``reset_after=True``: gates z, r, h; bias rows input, recurrent."""
    kernel, recurrent, bias = weights
    (h,) = state
    U = len(h)
    xs, hs = x @ kernel + bias[0], h @ recurrent + bias[1]
    z = _sigmoid(xs[:U] + hs[:U])
    r = _sigmoid(xs[U : 2 * U] + hs[U : 2 * U])
    candidate = np.tanh(xs[2 * U :] + r * hs[2 * U :])
    return (z * h + (1 - z) * candidate,)


def simple_rnn(activation: Callable[[np.ndarray], np.ndarray]) -> Callable[..., tuple]:
    def step(weights: list[np.ndarray], x: np.ndarray, state: tuple[np.ndarray, ...]) -> tuple:
        kernel, recurrent, bias = weights
        return (activation(x @ kernel + state[0] @ recurrent + bias),)

    return step


KINDS: dict[str, tuple[type, type, Callable[..., tuple]]] = {
    "lstm": (keras.layers.LSTM, keras.layers.LSTMCell, lstm),
    "gru": (keras.layers.GRU, keras.layers.GRUCell, gru),
    "simple_rnn": (keras.layers.SimpleRNN, keras.layers.SimpleRNNCell, simple_rnn(np.tanh)),
}


def series() -> list[np.ndarray]:
    return [encoded_series(s, n, (1,), "float32") / SCALE for s, n in enumerate(LENGTHS)]


def packed() -> list[seqbatch.Batch]:
    batches = list(
        seqbatch.StreamBatcher(
            series(), batch_size=B, sequence_length=W, remainder="pad", series_boundary="pack"
        )
    )
    # The power of these tests: series that start inside a window, and padding.
    assert sum(int(b.step_reset[:, 1:].sum()) for b in batches) >= 3
    assert sum(int((b.sample_weight == 0).any(1).sum()) for b in batches) >= 2
    return batches


def model(kind: str, *, head: bool, fused_layer: bool = True, **options: Any) -> keras.Model:
    """The RNN of ``kind`` in StreamReset (a Dense head if ``head``), weights from numpy.

    ``fused_layer=False`` builds the same cell inside a ``keras.layers.RNN`` instead of the
    plain layer: the cell loop, on every backend. SGD with learning rate 1: a step's change
    of the weights is minus their gradient.
    """
    layer_type, cell_type, _ = KINDS[kind]
    if fused_layer:
        rnn = layer_type(UNITS, stateful=True, return_sequences=True, **options)
    else:
        rnn = keras.layers.RNN(cell_type(UNITS, **options), stateful=True, return_sequences=True)
    x_in = keras.Input(batch_shape=(B, W, 1))
    reset_in = keras.Input(batch_shape=(B, W))
    out = StreamReset(rnn)([x_in, reset_in])
    if head:
        out = keras.layers.Dense(1)(out)
    m = keras.Model([x_in, reset_in], out)
    numpy_weights(m, seed=5)
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0), loss="mse")
    return m


def cell_weights(m: keras.Model) -> list[np.ndarray]:
    (wrapper,) = [layer for layer in m.layers if isinstance(layer, StreamReset)]
    return [to_numpy(w).astype(np.float64) for w in wrapper.layer.cell.weights]


def zeros(kind: str) -> tuple[np.ndarray, ...]:
    return tuple(np.zeros(UNITS) for _ in range(2 if kind == "lstm" else 1))


def alone(step: Callable[..., tuple], weights: list[np.ndarray], kind: str) -> list[np.ndarray]:
    """The output of every step of every series run alone from zeros, ``(n, UNITS)`` each."""
    out = []
    for data in series():
        state, outputs = zeros(kind), []
        for x in data.astype(np.float64):
            state = step(weights, x, state)
            outputs.append(state[0])
        out.append(np.array(outputs))
    return out


def replayed_states(
    step: Callable[..., tuple], weights: list[np.ndarray], kind: str, batches: list[Any]
) -> Iterator[list[np.ndarray]]:
    """The states ``(B, UNITS)`` each after each batch: every row carried by hand, zeroed at
    its flagged steps, stepped through every step of the window (padding included)."""
    rows = [zeros(kind) for _ in range(B)]
    for b in batches:
        for i in range(B):
            for t in range(W):
                if b.step_reset[i, t]:
                    rows[i] = zeros(kind)
                rows[i] = step(weights, b.x[i, t].astype(np.float64), rows[i])
        yield [np.array([row[n] for row in rows]) for n in range(len(rows[0]))]


@pytest.fixture
def cell_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the cells called by the loop, at every call of a cell on data.

    Not the calls on torch's shape-only "meta" tensors, where Keras builds a model's outputs
    and metrics symbolically: StreamReset runs the loop there, on shapes only.
    """
    calls: list[str] = []
    for cell_type in CELLS:

        def counted(original: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(original)
            def call(self: Any, *args: Any, **kwargs: Any) -> Any:
                if getattr(getattr(args[0], "device", None), "type", None) != "meta":
                    calls.append(type(self).__name__)
                return original(self, *args, **kwargs)

            return call

        monkeypatch.setattr(cell_type, "call", counted(cell_type.call))
    return calls


def check_alone_and_carried(
    m: keras.Model, kind: str, step: Callable[..., tuple], batches: list[Any]
) -> None:
    """Every real step is its series alone; the states after each batch are the replay's."""
    expected = alone(step, cell_weights(m), kind)
    replayed = replayed_states(step, cell_weights(m), kind, batches)
    seen = np.zeros(len(LENGTHS), int)
    for k, b in enumerate(batches):
        out = to_numpy(m.predict_on_batch([b.x, b.step_reset.astype("float32")]))
        for i, t in zip(*np.nonzero(b.step_series >= 0), strict=True):
            s, p = int(b.step_series[i, t]), int(b.step_position[i, t])
            np.testing.assert_allclose(
                out[i, t], expected[s][p], atol=1e-5, err_msg=f"batch {k} row {i} step {t}"
            )
            seen[s] += 1
        for got, want in zip(state_values(m), next(replayed), strict=True):
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"state after batch {k}")
    assert seen.tolist() == [n - 1 for n in LENGTHS]  # every step with a target, once


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_real_step_is_its_series_alone_and_the_state_carries(
    kind: str, cell_calls: list[str]
) -> None:
    m = model(kind, head=False)
    cell_calls.clear()
    check_alone_and_carried(m, kind, KINDS[kind][2], packed())
    # torch: the fused kernel, never the cell; TensorFlow and JAX: the cell loop.
    assert (len(cell_calls) == 0) if FUSED else (len(cell_calls) > 0)


@pytest.mark.skipif(
    not FUSED,
    reason="TensorFlow and JAX have no fused path for per-step flags: both models would run "
    "the same cell loop, whose exactness the other tests check on every backend",
)
@pytest.mark.parametrize("kind", list(KINDS))
def test_the_gradients_are_the_cell_loops(kind: str, cell_calls: list[str]) -> None:
    fused, loop = model(kind, head=True), model(kind, head=True, fused_layer=False)
    loop.set_weights(fused.get_weights())
    for k, b in enumerate(packed()):
        steps = {}
        for name, m in (("fused", fused), ("loop", loop)):
            before = [to_numpy(w) for w in m.trainable_weights]
            cell_calls.clear()
            m.train_on_batch(
                [b.x, b.step_reset.astype("float32")], b.y, sample_weight=b.sample_weight
            )
            assert (len(cell_calls) > 0) == (name == "loop")
            steps[name] = [
                w - to_numpy(v) for w, v in zip(before, m.trainable_weights, strict=True)
            ]
        assert max(np.abs(g).max() for g in steps["loop"]) > 1e-3  # gradients to compare
        for got, want in zip(steps["fused"], steps["loop"], strict=True):
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"gradient, batch {k}")
        for got, want in zip(state_values(fused), state_values(loop), strict=True):
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"state after batch {k}")


def test_an_activation_the_kernel_lacks_runs_the_cell_loop_exactly(cell_calls: list[str]) -> None:
    m = model("simple_rnn", head=False, activation="relu")
    cell_calls.clear()
    check_alone_and_carried(m, "simple_rnn", simple_rnn(lambda z: np.maximum(z, 0)), packed())
    assert cell_calls  # every backend: the loop


@pytest.mark.skipif(
    not FUSED,
    reason="TensorFlow and JAX run the cell loop for every layer: no path to choose",
)
def test_dropout_in_training_runs_the_cell_loop(cell_calls: list[str]) -> None:
    m = model("lstm", head=True, dropout=0.5)
    b = packed()[0]
    cell_calls.clear()
    m.train_on_batch([b.x, b.step_reset.astype("float32")], b.y, sample_weight=b.sample_weight)
    assert cell_calls  # the masks the cell draws
    cell_calls.clear()
    m.predict_on_batch([b.x, b.step_reset.astype("float32")])  # no dropout: the fused path
    assert not cell_calls


def test_mixed_precision_runs_the_cell_loop_and_keeps_the_state(cell_calls: list[str]) -> None:
    # The fused kernel would compute in float32: the loop computes in bfloat16, as the
    # layer does, and the state fix of the torch backend keeps its state (docs/backends.md).
    m = model("lstm", head=False, dtype="mixed_bfloat16")
    batches = packed()[:2]
    cell_calls.clear()
    for b in batches:
        m.predict_on_batch([b.x, b.step_reset.astype("float32")])
    assert cell_calls
    replayed = list(replayed_states(lstm, cell_weights(m), "lstm", batches))[-1]
    for got, want in zip(state_values(m), replayed, strict=True):
        assert np.abs(want).max() > 0.1  # a state to keep
        np.testing.assert_allclose(got, want, atol=2e-2)  # bfloat16: 8 bits of mantissa
