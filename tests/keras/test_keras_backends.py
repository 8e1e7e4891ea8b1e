"""JAX and torch train exactly as TensorFlow does: every public name of seqbatch.keras, in one
run, gives the same weights, states, losses and predictions on this backend as on TensorFlow.

The run starts from weights drawn by numpy and uses no randomness inside Keras, so the
backends can only differ by float32 rounding. TensorFlow's figures come from this file run as
a script with ``KERAS_BACKEND=tensorflow``, in a subprocess.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

pytestmark = [pytest.mark.keras, pytest.mark.needs_tensorflow]

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARRAY_LISTS = ("weights", "states", "plain_states")


def run() -> dict[str, Any]:
    """Train, validate, evaluate and predict on this backend; every figure, as lists."""
    import keras

    import seqbatch
    from seqbatch.keras import (
        StatefulTraining,
        StreamReset,
        StreamSequence,
        reset_states,
        stateful_rnns,
        with_batch_size,
    )
    from tests.keras_models import numpy_weights, state_values, to_numpy

    rng = np.random.default_rng(0)
    series = [
        np.sin(np.arange(n) / 4 + p).astype("float32")[:, None]
        for n, p in zip(rng.integers(15, 40, 8), rng.uniform(0, 6, 8), strict=True)
    ]
    kwargs = dict(batch_size=2, sequence_length=5, remainder="pad")
    train = seqbatch.StreamBatcher(series[:6], shuffle=True, seed=1, **kwargs)
    validation = seqbatch.StreamBatcher(series[6:], **kwargs)

    x_in = keras.Input(batch_shape=(2, 5, 1))
    reset_in = keras.Input(batch_shape=(2,))
    h = StreamReset(keras.layers.LSTM(6, stateful=True, return_sequences=True))([x_in, reset_in])
    h = keras.layers.GRU(4, stateful=True, return_sequences=True)(h)
    model = keras.Model([x_in, reset_in], keras.layers.Dense(1)(h))
    numpy_weights(model, seed=3)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    history = model.fit(
        StreamSequence(train, reset_input=True, workers=2),
        validation_data=StreamSequence(validation, reset_input=True),
        shuffle=False,
        epochs=3,
        verbose=0,
        callbacks=[StatefulTraining()],
    )
    out: dict[str, Any] = {
        "loss": history.history["loss"],
        "val_loss": history.history["val_loss"],
        "weights": [w.tolist() for w in model.get_weights()],
        "states": [s.tolist() for s in state_values(model)],
        "layout_epoch": train.epoch,
    }
    reset_states(model)
    out["evaluate"] = model.evaluate(StreamSequence(validation, reset_input=True), verbose=0)
    one = with_batch_size(model, 1)
    reset_states(one)
    stream = seqbatch.StreamBatcher([series[7]], batch_size=1, sequence_length=5, remainder="pad")
    out["predict"] = one.predict(StreamSequence(stream, reset_input=True), verbose=0).tolist()
    out["rnns"] = len(stateful_rnns(model))

    # A plain stateful LSTM (the README's model), trained in a loop of train_on_batch.
    plain = keras.Sequential(
        [
            keras.Input(batch_shape=(2, 5, 1)),
            keras.layers.LSTM(4, stateful=True, return_sequences=True),
            keras.layers.Dense(1),
        ]
    )
    numpy_weights(plain, seed=4)
    plain.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    reset_states(plain)
    one_series = seqbatch.StreamBatcher(series[0], batch_size=2, sequence_length=5)
    out["train_on_batch"] = [
        float(to_numpy(plain.train_on_batch(b.x, b.y, sample_weight=b.sample_weight)))
        for b in one_series
    ]
    out["plain_states"] = [s.tolist() for s in state_values(plain)]
    return out


@pytest.fixture(scope="module")
def tensorflow_run() -> dict[str, Any]:
    import keras

    # Before TensorFlow's run starts: on TensorFlow there is nothing to compare it with.
    if keras.backend.backend() == "tensorflow":
        pytest.skip("compares this Keras backend with TensorFlow: run it on JAX or torch")
    env = {
        **os.environ,
        "KERAS_BACKEND": "tensorflow",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, __file__], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-5000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_this_backend_trains_as_tensorflow_does(tensorflow_run: dict[str, Any]) -> None:
    here = run()
    assert here.keys() == tensorflow_run.keys()
    for key, expected in tensorflow_run.items():
        # Weights and states are lists of arrays of several shapes; the rest, one array each.
        pairs = (
            zip(here[key], expected, strict=True) if key in ARRAY_LISTS else [(here[key], expected)]
        )
        for a, b in pairs:
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5, err_msg=key)
    # Far from zero: the states were carried, the model learned.
    assert max(np.abs(np.asarray(s)).max() for s in here["states"]) > 0.1
    assert here["loss"][-1] < here["loss"][0]


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(json.dumps(run()))
