"""``seqbatch.keras.BackupAndRestore`` in one process: a ``fit()`` stopped by an exception and
started again trains on exactly the batches it had left, on every Keras backend.

The model records the first step of every row of each batch it trains on (``order_model``);
the data encodes its position. ``tests/tf/test_resume_kill.py`` kills real processes and compares
the final weights byte for byte.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

import seqbatch
from seqbatch.keras import BackupAndRestore, StatefulTraining
from tests.encoded import encoded_series
from tests.keras_models import (
    first_steps,
    numpy_weights,
    order_model,
    quiet_sequence,
    state_values,
    wave,
)
from tests.keras_runs import Interrupt, StopAt, batcher

pytestmark = pytest.mark.keras


def feed(batches: seqbatch.StreamBatcher, adapter: str) -> Any:
    if adapter == "tf.data":
        pytest.importorskip("tensorflow", reason="the tf.data adapter needs TensorFlow")
        return batches.to_tf_dataset()
    return quiet_sequence(batches, workers=2 if adapter == "2 workers" else 1)


@pytest.mark.parametrize("adapter", ["sequence", "2 workers", "tf.data"])
def test_a_stopped_fit_goes_on_with_the_batches_it_had_left(adapter: str, tmp_path: Path) -> None:
    first = batcher(seed=None)
    n = len(first)
    # Saved every 5 steps. Stopped after step 7 (saved at 5), then after 7 more steps (at
    # step 12 of n, saved at 10), then run to the end: both resumes fall mid-epoch.
    assert n > 12
    seen: list[list[float]] = []
    for stop, batches in [(7, first), (7, batcher(seed=None)), (None, batcher(seed=None))]:
        model, recorder = order_model(2, 3)
        backup = BackupAndRestore(tmp_path / "backup", save_freq=5)
        callbacks = [backup, StatefulTraining(), recorder]
        if stop is not None:
            callbacks.append(StopAt(stop))
        with contextlib.suppress(Interrupt):
            model.fit(
                feed(batches, adapter),
                shuffle=False,
                epochs=3,
                verbose=0,
                steps_per_epoch=n,
                callbacks=callbacks,
            )
        seen.append(recorder.seen)
    expected = first_steps(batcher(seed=first.seed), range(3))
    assert seen[0] == expected[:7]
    assert seen[1] == expected[5:12]
    assert seen[2] == expected[10:]
    assert not (tmp_path / "backup").exists()


def learner() -> keras.Model:
    """A model that learns, with dropout: its weights depend on every step and every mask."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input(batch_shape=(2, 3, 1)),
            keras.layers.LSTM(4, stateful=True, return_sequences=True),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(1),
        ]
    )
    numpy_weights(model, seed=1)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


@pytest.mark.parametrize("adapter", ["sequence", "2 workers", "tf.data"])
def test_a_stopped_fit_ends_with_the_weights_of_one_never_stopped(
    adapter: str, tmp_path: Path
) -> None:
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    ends = []
    for stops, backup in [([], tmp_path / "plain"), ([4, 5], tmp_path / "stopped")]:
        for stop in [*stops, None]:
            batches = seqbatch.StreamBatcher(
                [wave(9 + 4 * s, phase=s) for s in range(7)],
                batch_size=2,
                sequence_length=3,
                remainder="pad",
                shuffle=True,
                seed=4,
            )
            model = learner()
            callbacks = [BackupAndRestore(backup, save_freq=3), StatefulTraining()]
            if stop is not None:
                callbacks.append(StopAt(stop))
            with contextlib.suppress(Interrupt):
                model.fit(
                    feed(batches, adapter), shuffle=False, epochs=2, verbose=0, callbacks=callbacks
                )
        ends.append(model.get_weights() + state_values(model))
    for a, b in zip(*ends, strict=True):
        assert a.tobytes() == b.tobytes()


def test_a_checkpoint_at_an_epoch_end_starts_the_next_epoch(tmp_path: Path) -> None:
    batches = batcher(seed=1)
    n = len(batches)
    model, recorder = order_model(2, 3)
    backup = BackupAndRestore(tmp_path, save_freq="epoch", delete_checkpoint=False)
    with pytest.raises(Interrupt):
        model.fit(
            quiet_sequence(batches),
            shuffle=False,
            epochs=3,
            verbose=0,
            callbacks=[backup, StatefulTraining(), recorder, StopAt(n + 3)],
        )
    with np.load(tmp_path / "seqbatch-backup.npz") as f:
        meta = json.loads(f["meta"].tobytes())
    assert (meta["epoch"], meta["next_batch"]) == (1, 0)
    model, recorder = order_model(2, 3)
    history = model.fit(
        quiet_sequence(batcher(seed=1)),
        shuffle=False,
        epochs=3,
        verbose=0,
        callbacks=[BackupAndRestore(tmp_path), StatefulTraining(), recorder],
    )
    assert recorder.seen == first_steps(batcher(seed=1), range(1, 3))
    assert len(history.history["loss"]) == 2
    assert model._initial_epoch is None  # a later fit() of this model starts at 0 again
    assert not tmp_path.exists()


def test_a_checkpoint_of_another_model_or_other_data_is_refused(tmp_path: Path) -> None:
    model, _ = order_model(2, 3)
    model.fit(
        quiet_sequence(batcher(seed=1)),
        shuffle=False,
        epochs=1,
        verbose=0,
        callbacks=[BackupAndRestore(tmp_path, delete_checkpoint=False), StatefulTraining()],
    )
    other = keras.Sequential(
        [
            keras.Input(batch_shape=(2, 3, 1)),
            keras.layers.GRU(3, stateful=True, return_sequences=True),
            keras.layers.Dense(1),
        ]
    )
    other.compile(optimizer="sgd", loss="mse")
    with pytest.raises(
        ValueError,
        match=r"The checkpoint in `backup_dir` must be restored into the model that saved it, "
        r"with the same variables. Received: backup_dir='.*', whose checkpoint holds \d+ "
        r"variables where this model has \d+; the first that differs: saved \['weights', "
        r"'.*', \[2\], 'float32'\], here \['weights', '.*gru_cell/kernel', \[1, 9\], 'float32'\]",
    ):
        other.fit(
            quiet_sequence(batcher(seed=1)),
            shuffle=False,
            verbose=0,
            callbacks=[BackupAndRestore(tmp_path)],
        )
    model, _ = order_model(2, 3)
    longer = seqbatch.StreamBatcher(
        [encoded_series(s, 10 + 4 * s, (1,), "float32") for s in range(7)],
        batch_size=2,
        sequence_length=3,
        remainder="pad",
        shuffle=True,
        seed=1,
    )
    with pytest.raises(
        ValueError,
        match=r"`x` of fit\(\): `state` must come from a batcher of the same data and "
        r"arguments: .* Received: a state that differs in lengths: saved",
    ):
        model.fit(
            quiet_sequence(longer), shuffle=False, verbose=0, callbacks=[BackupAndRestore(tmp_path)]
        )


def test_x_must_be_seqbatch_batches(tmp_path: Path) -> None:
    model, _ = order_model(2, 3)
    with pytest.raises(
        ValueError,
        match=r"`x` of fit\(\) must be a seqbatch.keras.StreamSequence or a dataset of "
        r"seqbatch.tf.to_dataset for seqbatch.keras.BackupAndRestore, which saves and restores "
        r"where the batches stand. Received: x of type ndarray",
    ):
        model.fit(
            np.zeros((4, 3, 1)),
            np.zeros((4, 3, 1)),
            batch_size=2,
            shuffle=False,
            verbose=0,
            callbacks=[BackupAndRestore(tmp_path)],
        )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"save_freq": "batch"},
            TypeError,
            r"`save_freq` must be 'epoch' or a positive integer. Received: save_freq='batch'",
        ),
        ({"save_freq": 0}, ValueError, r"`save_freq` must be a positive integer"),
        (
            {"delete_checkpoint": 1},
            TypeError,
            r"`delete_checkpoint` must be True or False. Received: delete_checkpoint=1",
        ),
        (
            {"backup_dir": ""},
            ValueError,
            r"`backup_dir` must name a directory. Received: backup_dir=''",
        ),
    ],
)
def test_backup_and_restore_checks_its_arguments(
    kwargs: dict[str, Any], error: type, message: str, tmp_path: Path
) -> None:
    with pytest.raises(error, match=message):
        BackupAndRestore(**{"backup_dir": tmp_path, **kwargs})


def test_a_write_left_half_done_is_cleared_and_the_last_good_checkpoint_restored(
    tmp_path: Path,
) -> None:
    batches = batcher(seed=2)
    model, _ = order_model(2, 3)
    with pytest.raises(Interrupt):
        model.fit(
            quiet_sequence(batches),
            shuffle=False,
            epochs=2,
            verbose=0,
            callbacks=[BackupAndRestore(tmp_path, save_freq=3), StatefulTraining(), StopAt(4)],
        )
    (tmp_path / "seqbatch-backup.npz.tmp4242").write_bytes(b"half a checkpoint")
    model, recorder = order_model(2, 3)
    model.fit(
        quiet_sequence(batcher(seed=2)),
        shuffle=False,
        epochs=2,
        verbose=0,
        callbacks=[BackupAndRestore(tmp_path, save_freq=3), StatefulTraining(), recorder],
    )
    assert recorder.seen == first_steps(batcher(seed=2), range(2))[3:]
    assert not tmp_path.exists()


# --- Keras internals that BackupAndRestore relies on (Keras 3.15) -------------------------


def test_keras_fit_holds_the_epoch_iterator_whose_step_count_it_reads_per_epoch() -> None:
    """fit() keeps its EpochIterator in a local, ``epoch_iterator``; the iterator reads
    ``_num_batches`` (and ``steps_per_epoch``) as each epoch starts, and ``fit()`` starts at
    ``model._initial_epoch`` when it is set, as keras.callbacks.BackupAndRestore sets it."""
    from seqbatch.keras.run import running_call

    batches = batcher(seed=3)
    n = len(batches)

    class Shorten(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            call = running_call()
            assert call is not None
            self.iterator = call.arguments["epoch_iterator"]
            assert self.iterator._num_batches == n
            self.model._initial_epoch = 1

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.iterator._num_batches = n - 2 if epoch == 1 else n

    model, recorder = order_model(2, 3)
    history = model.fit(
        quiet_sequence(batches),
        shuffle=False,
        epochs=3,
        verbose=0,
        callbacks=[Shorten(), StatefulTraining(), recorder],
    )
    assert len(history.history["loss"]) == 2
    assert len(recorder.seen) == (n - 2) + n
