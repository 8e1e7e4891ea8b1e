"""Stateful RNNs carry their state under every dtype policy, on every Keras backend.

Keras 3.15.1 on torch keeps no state under a mixed precision policy: inside a layer's
autocast scope a torch Variable reads as a cast copy, and ``RNN.call`` assigns the last state
into that copy. :func:`seqbatch.keras.carry_states` works around it. Each policy is checked
against the numpy LSTM of ``tests.replay``, which carries each row's state by hand in float64,
within a tolerance suited to the policy's compute dtype. The global policy is restored after
each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np
import pytest

import seqbatch
from seqbatch.keras import StreamSequence, stateful_rnns
from tests.encoded import encoded_series
from tests.keras_models import lstm_model, state_values, to_numpy
from tests.replay import from_keras, lstm_replay

pytestmark = pytest.mark.keras

B, W, F, U = 3, 4, 2, 5
MIXED = ("mixed_float16", "mixed_bfloat16")
# (rtol, atol) to the float64 replay over a dozen steps: float32 rounding, then 11 and 8
# significant bits (a cell state grows past 10 in a stream never reset). A state that is not
# carried is off by its own size, above 0.2 here.
TOLERANCE = {
    "float32": (1e-5, 2e-5),
    "mixed_float16": (5e-3, 1e-2),
    "mixed_bfloat16": (2e-2, 6e-2),
}


@pytest.fixture(params=["float32", *MIXED])
def policy(request: pytest.FixtureRequest) -> Iterator[str]:
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(request.param)
    try:
        yield request.param
    finally:
        keras.config.set_dtype_policy(previous)


def series() -> list[np.ndarray]:
    # Position-encoded values, scaled into the range an LSTM is fed.
    return [encoded_series(s, n, (F,), "float32") / 4000 for s, n in enumerate([14, 9, 13, 11])]


@pytest.mark.parametrize("policy_name", MIXED)
def test_keras_on_torch_keeps_no_state_under_mixed_precision(policy_name: str) -> None:
    """The upstream bug, without seqbatch: when it fails, Keras fixed it (see carry_states)."""
    if keras.backend.backend() != "torch":
        pytest.skip("a Keras bug of the torch backend: TensorFlow and JAX carry the state")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy_name)
    try:
        lstm = keras.layers.LSTM(U, stateful=True, return_sequences=True)
        model = keras.Sequential([keras.Input(batch_shape=(B, W, F)), lstm])
        out = to_numpy(model(np.ones((B, W, F), "float32")))
    finally:
        keras.config.set_dtype_policy(previous)
    assert np.abs(out).max() > 0.1  # the layer computed...
    assert not any(to_numpy(s).any() for s in lstm.states)  # ...and kept nothing


@pytest.mark.parametrize("reset_input", [False, True])
def test_states_carry_like_the_replay_under_every_policy(policy: str, reset_input: bool) -> None:
    batches = seqbatch.StreamBatcher(series(), None, batch_size=B, sequence_length=W)
    model = lstm_model(B, W, F, U, reset_input=reset_input)
    assert model.dtype_policy.name == policy
    out = model.predict(StreamSequence(batches, reset_input=reset_input), verbose=0)
    (lstm,) = stateful_rnns(model)
    weights = from_keras(*(to_numpy(w) for w in lstm.cell.weights))
    # Without the flags, a stream runs on from one series into the next, as the model does.
    replayed = [(b.x, b.reset if reset_input else np.zeros(B, bool)) for b in batches]
    replayed[0] = (batches[0].x, np.ones(B, bool))
    expected, (h, c) = lstm_replay(weights, replayed)
    rtol, atol = TOLERANCE[policy]
    assert min(np.abs(h).max(), np.abs(c).max()) > 0.2
    got_h, got_c = state_values(model)
    np.testing.assert_allclose(got_h, h, rtol=rtol, atol=atol, err_msg="h")
    np.testing.assert_allclose(got_c, c, rtol=rtol, atol=atol, err_msg="c")
    out = out.astype("float64").reshape(len(batches), B, W, U)
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=atol, err_msg="outputs")
