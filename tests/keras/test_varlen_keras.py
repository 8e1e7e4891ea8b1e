"""Window lengths that vary through Keras (``to_keras_sequence()``), on every backend.

A stateful LSTM built with ``batch_shape=(B, None, F)`` trains (learning rate 0) on windows
of a drawn schedule; after every batch its states must be those of the numpy LSTM of
``tests.replay``, which carries each row's state by hand over the same windows. Under JAX,
each distinct length traces the step again: the schedule has few of them.
"""

from __future__ import annotations

import contextlib
from typing import Any

import keras
import numpy as np
import pytest

import seqbatch
from seqbatch.keras import StatefulTraining, stateful_rnns
from tests.keras_models import lstm_model, quiet_sequence, state_values, to_numpy
from tests.replay import from_keras, lstm_replay
from tests.varying import Table

pytestmark = pytest.mark.keras

B, F = 2, 3
# Two lengths (each traces the step again under JAX), one of them a single step.
SCHEDULE = Table((3, 1))
# 14 usable steps per stream: epoch 0's windows (3, 1, 3, ...) end at 12 (6 batches),
# epoch 1's (1, 3, 1, ...) at 13 (7 batches).
T = 2 * 14 + 1


def data() -> np.ndarray:
    return np.random.default_rng(7).normal(size=(T, F)).astype("float32")


class States(keras.callbacks.Callback):
    """The states of the model's LSTM after every training batch."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[list[np.ndarray]] = []

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.seen.append(state_values(self.model))


def test_a_model_with_an_open_time_axis_carries_the_replays_states() -> None:
    batches = seqbatch.StreamBatcher(data(), batch_size=B, sequence_length=SCHEDULE)
    model = lstm_model(B, None, F, F, reset_input=True)  # type: ignore[arg-type]
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    (lstm,) = stateful_rnns(model)
    weights = from_keras(*(to_numpy(w) for w in lstm.cell.weights))
    sequence = batches.to_keras_sequence(reset_input=True)
    state: Any = None
    for epoch, count in ((0, 6), (1, 7)):
        assert len(sequence) == count
        seen = States()
        model.fit(
            sequence,
            epochs=epoch + 1,
            initial_epoch=epoch,
            shuffle=False,
            verbose=0,
            callbacks=[StatefulTraining(), seen],
        )
        assert len(seen.seen) == count
        state = None  # StatefulTraining starts every epoch from zero states
        for k in range(count):
            b = batches.batch_at(epoch, k)
            _, state = lstm_replay(weights, [(b.x, b.reset)], state)
            h, c = seen.seen[k]
            np.testing.assert_allclose(h, state[0], atol=1e-5)
            np.testing.assert_allclose(c, state[1], atol=1e-5)
    assert np.abs(state[0]).max() > 0.05, "the test needs states far from zero"
    assert batches.epoch == 2


def test_one_fit_over_epochs_of_unequal_counts_is_refused() -> None:
    batches = seqbatch.StreamBatcher(data(), batch_size=B, sequence_length=SCHEDULE)
    model = lstm_model(B, None, F, F, reset_input=False)  # type: ignore[arg-type]
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    with pytest.raises(ValueError, match=r"Call fit\(\) once per epoch.*\{0: 6, 1: 7\}"):
        model.fit(
            quiet_sequence(batches),
            epochs=2,
            shuffle=False,
            verbose=0,
            callbacks=[StatefulTraining()],
        )


def test_a_model_with_a_fixed_time_axis_is_refused() -> None:
    batches = seqbatch.StreamBatcher(data(), batch_size=B, sequence_length=SCHEDULE)
    model = lstm_model(B, 3, F, F, reset_input=False)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    with pytest.raises(ValueError, match=r"keras.Input\(batch_shape=\(2, None, \.\.\.\)\)"):
        model.fit(quiet_sequence(batches), epochs=1, shuffle=False, verbose=0)


def test_the_weights_make_the_reported_loss_the_mean_over_real_steps() -> None:
    series = [np.ones((n, F), "float32") for n in (40, 31, 17, 9, 5)]
    batches = seqbatch.StreamBatcher(
        series, batch_size=B, sequence_length=SCHEDULE, remainder="pad"
    )
    sequence = quiet_sequence(batches)
    reported = 0.0
    for k in range(len(sequence)):
        _, _, weight = sequence[k]
        assert ((weight > 0) == (batches[k].sample_weight > 0)).all()
        reported += weight.sum() / weight.size  # a loss of 1 on every real step, per batch
    assert reported / len(sequence) == pytest.approx(1.0, rel=1e-6)


class Interrupt(Exception):
    pass


class StopAt(keras.callbacks.Callback):
    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.steps = at, 0

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.steps += 1
        if self.steps == self.at:
            raise Interrupt


def test_backup_and_restore_resumes_a_varying_epoch_at_the_saved_batch(tmp_path: Any) -> None:
    from seqbatch.keras import BackupAndRestore
    from tests.encoded import encoded_series
    from tests.keras_models import SeenBatches, first_steps, order_model

    def batcher() -> seqbatch.StreamBatcher:
        # Two lengths only: under JAX each distinct length traces the step again.
        series = [encoded_series(s, 9 + 4 * s, (1,), "float32") for s in range(7)]
        return seqbatch.StreamBatcher(
            series,
            batch_size=2,
            sequence_length=Table((2, 3)),
            remainder="pad",
            shuffle=True,
            seed=3,
        )

    expected = first_steps(batcher(), range(2))
    n0 = batcher().view.n_batches(0)
    assert n0 > 6
    seen: list[list[float]] = []
    # One model for the three runs: under JAX a new one would trace each length again, and
    # BackupAndRestore restores its weights and position into whichever model it is given.
    model, first = order_model(2, None)  # type: ignore[arg-type]
    # Epoch 0 stopped after step 5 (saved at 3), then run again to its end; then epoch 1.
    for stop, epoch in [(5, 0), (None, 0), (None, 1)]:
        batches = batcher()
        batches.set_epoch(epoch)
        recorder = SeenBatches(first.layer)
        callbacks = [BackupAndRestore(tmp_path / "backup", save_freq=3), StatefulTraining()]
        callbacks += [recorder] + ([StopAt(stop)] if stop else [])
        with contextlib.suppress(Interrupt):
            model.fit(
                quiet_sequence(batches),
                shuffle=False,
                epochs=epoch + 1,
                initial_epoch=epoch,
                verbose=0,
                callbacks=callbacks,
            )
        seen.append(recorder.seen)
    assert seen[0] == expected[:5]
    assert seen[1] == expected[3:n0]
    assert seen[2] == expected[n0:]
