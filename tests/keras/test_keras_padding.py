"""The state of a series for forecasting: padding, idle windows and later series never enter it.

After a pass over many series, the state a stream holds has run through the padding and idle
windows that follow its last series (and a stream's earlier series are gone). Each test runs
that pass, then takes ``with_batch_size(model, 1, series=[j], batches=...)`` (or
``streams=[i], batches=...``) and compares its LSTM state with the numpy LSTM of
``tests/replay.py`` run on series ``j`` alone from zero state, with the model's weights. Run
under each Keras backend.
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np
import pytest

import seqbatch
from seqbatch.keras import StreamReset, StreamSequence, stateful_rnns, with_batch_size
from tests.encoded import SERIES_STRIDE, encoded_series
from tests.keras_models import numpy_weights, to_numpy
from tests.replay import from_keras, lstm_replay

pytestmark = pytest.mark.keras

W, U, SCALE = 4, 5, 8000
LENGTHS = [13, 9, 6, 11, 5, 7, 10]


def series_data(lengths: list[int]) -> list[np.ndarray]:
    return [encoded_series(s, n, (1,), "float32") / SCALE for s, n in enumerate(lengths)]


def model_for(batches: seqbatch.StreamBatcher, flags: str) -> keras.Model:
    """A stateful LSTM and a Dense head; behind StreamReset unless ``flags`` is "none"."""
    B = batches.batch_size
    x_in = keras.Input(batch_shape=(B, W, 1))
    lstm = keras.layers.LSTM(U, stateful=True, return_sequences=True, name="lstm")
    if flags == "none":
        inputs, h = x_in, lstm(x_in)
    else:
        reset_in = keras.Input(batch_shape=(B, W) if flags == "step" else (B,))
        inputs, h = [x_in, reset_in], StreamReset(lstm)([x_in, reset_in])
    model = keras.Model(inputs, keras.layers.Dense(1)(h))
    numpy_weights(model, seed=7)
    return model


def a_pass(model: keras.Model, batches: seqbatch.StreamBatcher, reset_input: bool) -> None:
    """predict() over the epoch from zero states: the streams end after padding and idle windows."""
    seqbatch.keras.reset_states(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.predict(StreamSequence(batches, reset_input=reset_input), verbose=0)


def lstm_state(model: keras.Model) -> np.ndarray:
    (lstm,) = stateful_rnns(model)
    return np.stack([to_numpy(s) for s in lstm.states])  # (h, c), each (rows, U)


def alone(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """(h, c) ``(2, U)`` of the numpy LSTM after ``x`` ``(T, 1)`` from zero state, with the model's weights."""
    (lstm,) = stateful_rnns(model)
    weights = from_keras(*(to_numpy(w) for w in lstm.cell.weights))
    _, (h, c) = lstm_replay(weights, [(x[None], np.array([True]))])
    return np.stack([h[0], c[0]])


def last_code(batches: seqbatch.StreamBatcher, stream: int) -> int:
    """The code (series, step) of the last real step that ``stream`` holds, read from x."""
    codes = np.concatenate([np.rint(b.x[stream, :, 0] * SCALE) for b in batches])
    return int(codes[codes > 0][-1])


LAYOUTS: dict[str, dict[str, Any]] = {
    # Series dealt whole onto streams, windows ending in padding, StreamReset with (B,) flags.
    "whole, padded": dict(series_boundary="reset", remainder="pad", flags="stream"),
    # Packed end to end, a series ending mid-window, StreamReset with (B, W) flags.
    "packed": dict(series_boundary="pack", remainder="pad", flags="step"),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_the_state_of_every_series_is_its_state_run_alone(layout: str) -> None:
    options = dict(LAYOUTS[layout])
    flags = options.pop("flags")
    data = series_data(LENGTHS)
    batches = seqbatch.StreamBatcher(data, None, batch_size=3, sequence_length=W, **options)
    assert any(len(held) > 1 for held in batches.plan.assignment())
    model = model_for(batches, flags)
    a_pass(model, batches, reset_input=True)
    for j, series in enumerate(data):
        end = batches.series_end(j)
        # What series_end says is what the batches hold: the series' last step, there.
        assert last_code_at(batches, end) == SERIES_STRIDE * (j + 1) + len(series) - 1
        one = with_batch_size(model, 1, series=[j], batches=batches)
        np.testing.assert_allclose(lstm_state(one)[:, 0], alone(model, series), atol=2e-5)
    # Several series at once, in the order asked, repeats allowed.
    rows = with_batch_size(model, 3, series=np.array([4, 0, 4]), batches=batches)
    expected = np.stack([alone(model, data[j]) for j in (4, 0, 4)], axis=1)
    np.testing.assert_allclose(lstm_state(rows), expected, atol=2e-5)


def last_code_at(batches: seqbatch.StreamBatcher, end: Any) -> int:
    return int(np.rint(batches[end.batch].x[end.stream, end.step, 0] * SCALE))


def test_a_plain_lstm_gets_each_streams_state_at_its_last_real_step() -> None:
    """One series per stream, no StreamReset: streams=[i] with batches= is the series' state."""
    data = series_data([13, 6, 9])
    batches = seqbatch.StreamBatcher(data, None, batch_size=3, sequence_length=W, remainder="pad")
    model = model_for(batches, "none")
    a_pass(model, batches, reset_input=False)
    stale = lstm_state(model)
    for i in range(3):
        s, t = divmod(last_code(batches, i), SERIES_STRIDE)
        expected = alone(model, data[s - 1][: t + 1])
        one = with_batch_size(model, 1, streams=[i], batches=batches)
        np.testing.assert_allclose(lstm_state(one)[:, 0], expected, atol=2e-5)
        if len(data[s - 1]) % W:
            # The state the pass left ran through padding: far from the series' state.
            assert np.abs(stale[:, i] - expected).max() > 1e-2
    with pytest.warns(UserWarning, match=r"`streams` without `batches` copies the states"):
        copied = with_batch_size(model, 2, streams=np.array([2, 0]))
    np.testing.assert_array_equal(lstm_state(copied), stale[:, [2, 0]])


def test_one_series_cut_into_streams_ends_in_the_last_stream() -> None:
    """remainder="pad": the last stream ends in padding; its state runs from its segment's start."""
    (series,) = series_data([61])
    batches = seqbatch.StreamBatcher(series, None, batch_size=3, sequence_length=W, remainder="pad")
    model = model_for(batches, "none")
    a_pass(model, batches, reset_input=False)
    end = batches.series_end(0)
    assert last_code_at(batches, end) == SERIES_STRIDE + 60
    first = int(batches[0].position[end.stream])  # where that stream's state started from zero
    one = with_batch_size(model, 1, series=[0], batches=batches)
    np.testing.assert_allclose(lstm_state(one)[:, 0], alone(model, series[first:]), atol=2e-5)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(series=[0]), ValueError, r"`series` needs `batches`"),
        (dict(series=[0], streams=[0]), ValueError, r"`series` needs `batches`.*and no `streams`"),
        (dict(series=[0, 1]), ValueError, r"`series` needs `batches`"),
        (dict(series=[0.5], batches=True), TypeError, r"`series` must be a sequence of integers"),
        (dict(series=[9], batches=True), ValueError, r"one of the 3 series.*series=9"),
        (dict(series=[0, 1], batches=True), ValueError, r"batch_size=1 entries.*Received: 2"),
        (dict(streams=[3], batches=True), ValueError, r"rows of the batches' 3 streams"),
        (dict(streams=[0], batches=[1]), TypeError, r"`batches` must be a seqbatch.StreamBatcher"),
    ],
)
def test_bad_hand_offs_are_refused(kwargs: dict[str, Any], error: type, message: str) -> None:
    data = series_data([9, 6, 5])
    batches = seqbatch.StreamBatcher(data, None, batch_size=3, sequence_length=W, remainder="pad")
    if kwargs.get("batches") is True:
        kwargs["batches"] = batches
    model = model_for(batches, "none")
    with pytest.raises(error, match=message):
        with_batch_size(model, 1, **kwargs)
