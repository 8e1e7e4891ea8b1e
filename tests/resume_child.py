"""A training process that ``tests/tf/test_resume_kill.py`` kills and starts again.

Run as ``python tests/resume_child.py BACKUP_DIR OUT ADAPTER``, with the Keras backend in
``KERAS_BACKEND``. It trains a small stateful model (a reset-aware LSTM, dropout, a GRU) on a
shuffled batcher of many series, with validation, under ``seqbatch.keras.BackupAndRestore``.
After every training step it prints ``step <s> checkpoint <c> epoch <n>``: the steps trained
(the optimizer's count), the step the checkpoint on disk goes on after, and the batches per
epoch; then it waits for a line on stdin, so that the parent can kill it at an exact step. With ``BLOCK_IN_WRITE=<n>`` in its environment, its ``n``-th checkpoint write
prints ``writing`` and stops before the file reaches the disk, for the parent to kill it
mid-write. At the end it saves the weights and the RNN states to ``OUT`` (``.npz``).
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EPOCHS, SAVE_FREQ = 3, 4


def main(backup_dir: str, out: str, adapter: str) -> None:
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(0)

    import seqbatch
    from seqbatch.keras import BackupAndRestore, StatefulTraining, StreamReset, StreamSequence
    from tests.keras_models import numpy_weights, state_values, sync

    rng = np.random.default_rng(0)
    series = [
        np.sin(np.arange(n) / 4 + p).astype("float32")[:, None]
        for n, p in zip(rng.integers(12, 30, 9), rng.uniform(0, 6, 9), strict=True)
    ]
    kwargs: dict[str, Any] = dict(batch_size=2, sequence_length=4, remainder="pad")
    train = seqbatch.StreamBatcher(series[:7], shuffle=True, seed=5, **kwargs)
    validation = seqbatch.StreamBatcher(series[7:], **kwargs)

    def feed(batches: seqbatch.StreamBatcher) -> Any:
        if adapter == "tf.data":
            return batches.to_tf_dataset(reset_input=True)
        return StreamSequence(batches, reset_input=True)

    x_in = keras.Input(batch_shape=(2, 4, 1))
    reset_in = keras.Input(batch_shape=(2,))
    h = StreamReset(keras.layers.LSTM(6, stateful=True, return_sequences=True))([x_in, reset_in])
    h = keras.layers.Dropout(0.25)(h)
    h = keras.layers.GRU(4, stateful=True, return_sequences=True)(h)
    model = keras.Model([x_in, reset_in], keras.layers.Dense(1)(h))
    numpy_weights(model, seed=3)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    checkpoint = os.path.join(backup_dir, "seqbatch-backup.npz")

    n = len(train)

    class Report(keras.callbacks.Callback):
        """Says where training and its checkpoint stand after each step, then waits."""

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            sync(self.model)
            steps = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            saved = 0
            if os.path.exists(checkpoint):
                with np.load(checkpoint) as f:
                    meta = json.loads(f["meta"].tobytes())
                saved = meta["epoch"] * n + meta["next_batch"]
            print(f"step {steps} checkpoint {saved} epoch {n}", flush=True)
            sys.stdin.readline()

    writes = 0
    block_at = int(os.environ.get("BLOCK_IN_WRITE", "0"))
    fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        nonlocal writes
        writes += stat.S_ISREG(os.fstat(fd).st_mode)  # the file, not its directory
        if writes == block_at and stat.S_ISREG(os.fstat(fd).st_mode):
            print("writing", flush=True)
            time.sleep(60)  # the parent kills it here: the new file is not renamed yet
        fsync(fd)

    os.fsync = slow_fsync
    model.fit(
        feed(train),
        validation_data=feed(validation),
        shuffle=False,
        epochs=EPOCHS,
        verbose=0,
        callbacks=[BackupAndRestore(backup_dir, save_freq=SAVE_FREQ), StatefulTraining(), Report()],
    )
    arrays = [keras.ops.convert_to_numpy(w) for w in model.weights] + state_values(model)
    np.savez(out, *arrays)
    print("done", len(train), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main(*sys.argv[1:])
