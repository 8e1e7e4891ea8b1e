"""Training on many short series: a Keras epoch and the validation loss, packed against "reset".

``python -m benchmarks.packing [--quick]`` runs this with the rest of the packing section.

The series of the packing section's lengths hold noisy waves, each of its own frequency, phase
and amplitude, so that a model must read a series' first steps to predict the next ones and
its state matters. A stateful ``LSTM(32)`` wrapped in ``StreamReset`` learns to predict the
next step from batches laid out with ``series_boundary="reset"`` (flags ``(B,)``: the wrapped
layer runs as it is, fused where the backend has a fused kernel) and ``"pack"`` (flags
``(B, W)``: its cell runs step by step and resets at the flagged steps, except on torch, where
the window's runs between flagged steps go through torch's fused kernel), both fed by the
tf.data adapter, from the same initial weights. Each backend runs in its own process
(``python -m benchmarks.packing_fit BACKEND SIZE``), since Keras picks its backend once per
process. Three figures per backend:

* one training step on one batch, per-step flags against per-stream flags;
* the wall time of one training epoch, the median of the epochs after the first (which
  compiles), per distribution of the lengths;
* the validation loss, on a tenth as many series laid out as the training data (with exact
  resets, the loss of a model does not depend on the layout), after as many epochs, and
  after as many optimizer steps: a packed epoch makes fewer steps, each on more data.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import numpy as np

from benchmarks.report import Row, on_backend, speed_ratio
from benchmarks.sizes import FULL, QUICK, Sizes
from seqbatch import StreamBatcher

STEP_BACKENDS = ("tensorflow", "jax", "torch")
FIT_BACKENDS = ("tensorflow", "jax", "torch")
UNITS = 32
EPOCHS = {"full": 3, "quick": 2}
LAYOUTS = ("reset", "pack")
LOSS_TOLERANCE = 0.05  # the packed loss may exceed the reset one by 5 % (training noise)


def waves(lengths: np.ndarray, seed: int) -> list[np.ndarray]:
    """One float32 series ``(n, 1)`` per length: a noisy wave of its own frequency."""
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths.tolist():
        omega, phase, amplitude = (
            rng.uniform(0.05, 0.5),
            rng.uniform(0, 2 * np.pi),
            rng.uniform(0.5, 1.5),
        )
        wave = amplitude * np.sin(omega * np.arange(n) + phase) + 0.05 * rng.standard_normal(n)
        out.append(wave.astype(np.float32)[:, None])
    return out


def laid_out(sizes: Sizes, data: list[np.ndarray], layout: str, shuffle: bool) -> StreamBatcher:
    """The batches of ``data`` with ``series_boundary=layout``, every step used."""
    return StreamBatcher(
        data,
        batch_size=sizes.packing_batch_size,
        sequence_length=sizes.packing_window,
        remainder="pad",
        series_boundary=layout,  # type: ignore[arg-type]
        shuffle=shuffle,
        seed=0,
    )


def build_model(batch_size: int, width: int, flags: tuple[int, ...]) -> Any:
    import keras

    from seqbatch.keras import StreamReset

    x_in = keras.Input(batch_shape=(batch_size, width, 1))
    reset_in = keras.Input(batch_shape=flags)
    lstm = keras.layers.LSTM(UNITS, stateful=True, return_sequences=True)
    model = keras.Model(
        [x_in, reset_in], keras.layers.Dense(1)(StreamReset(lstm)([x_in, reset_in]))
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    return model


def models(batch_size: int, width: int) -> dict[str, Any]:
    """A model per layout, with the same initial weights."""
    import keras

    keras.utils.set_random_seed(0)
    out = {
        "reset": build_model(batch_size, width, (batch_size,)),
        "pack": build_model(batch_size, width, (batch_size, width)),
    }
    out["pack"].set_weights(out["reset"].get_weights())
    return out


def step_seconds(sizes: Sizes) -> dict[str, float]:
    """Seconds of one training step on one batch, per layout's flags (best of 3 x 10 steps).

    The batch is a packed one of log-uniform lengths (series start inside its windows), with
    its per-step flags ``(B, W)`` for the packed model and its per-stream flags ``(B,)`` for
    the other: on torch the cost of the per-step path depends on where the flags are set.
    """
    from benchmarks.packing import series_lengths

    B, W = sizes.packing_batch_size, sizes.packing_window
    lengths = series_lengths(sizes, "log-uniform")[: 4 * B * W // sizes.packing_lengths[0]]
    batch = laid_out(sizes, waves(lengths, seed=1), "pack", shuffle=False)[1]
    assert batch.step_reset is not None
    x, y = batch.x, batch.y
    at_start = np.zeros_like(batch.step_reset)
    at_start[:, 0] = batch.reset
    trained = models(B, W)
    runs = {
        "reset": (trained["reset"], batch.reset),
        "pack": (trained["pack"], batch.step_reset),
        # The per-step path on flags set at step 0 only, those of a "reset" batch: the cost
        # of the path itself, without the series that start inside the window.
        "pack_at_start": (trained["pack"], at_start),
    }
    out = {}
    for name, (model, flags) in runs.items():
        inputs = [x, flags.astype(np.float32)]
        model.train_on_batch(inputs, y)
        rounds = []
        for _ in range(3):
            begin = time.perf_counter()
            for _ in range(10):
                model.train_on_batch(inputs, y)
            rounds.append((time.perf_counter() - begin) / 10)
        out[name] = min(rounds)
    return out


def fits(sizes: Sizes, epochs: int) -> dict[str, dict[str, dict[str, float]]]:
    """Per distribution and layout: batches, epoch seconds, validation losses.

    Both models train ``epochs`` epochs, one epoch each in turn (a burst of load slows both
    alike). Packed epochs hold fewer batches, hence fewer optimizer steps: the packed model
    then trains on until it has made as many steps as the other, and its validation loss is
    given at both points.
    """
    import keras

    from benchmarks.packing import DISTRIBUTIONS, series_lengths
    from seqbatch.keras import StatefulTraining

    B, W = sizes.packing_batch_size, sizes.packing_window

    class Clock(keras.callbacks.Callback):
        """The training time of each epoch (to its validation), and a stop after ``steps``."""

        def __init__(self, steps: int) -> None:
            super().__init__()
            self.steps, self.done = steps, 0
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.begin = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.done += 1
            self.model.stop_training = self.done >= self.steps

        def on_test_begin(self, logs: Any = None) -> None:
            self.seconds.append(time.perf_counter() - self.begin)

    out: dict[str, dict[str, dict[str, float]]] = {}
    for distribution in DISTRIBUTIONS:
        train = waves(series_lengths(sizes, distribution), seed=1)
        count = max(B, sizes.packing_series // 10)
        validation = waves(series_lengths(sizes, distribution, seed=2, count=count), seed=3)
        train_batches = {layout: laid_out(sizes, train, layout, shuffle=True) for layout in LAYOUTS}
        datasets = {
            layout: (
                train_batches[layout].to_tf_dataset(reset_input=True),
                laid_out(sizes, validation, layout, shuffle=False).to_tf_dataset(reset_input=True),
            )
            for layout in LAYOUTS
        }
        steps = epochs * len(train_batches["reset"])
        clocks = {layout: Clock(steps) for layout in LAYOUTS}
        losses: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
        trained = models(B, W)
        for epoch in range(-(-steps // len(train_batches["pack"]))):
            for layout, model in trained.items():
                if layout == "reset" and epoch >= epochs:
                    continue
                history = model.fit(
                    datasets[layout][0],
                    validation_data=datasets[layout][1],
                    initial_epoch=epoch,
                    epochs=epoch + 1,
                    shuffle=False,
                    verbose=0,
                    callbacks=[StatefulTraining(), clocks[layout]],
                )
                losses[layout] += history.history["val_loss"]
        out[distribution] = {
            layout: {
                "batches": len(train_batches[layout]),
                "steps": clocks[layout].done,
                # Epoch 0 compiles; a last epoch cut short by the stop is not a whole one.
                "epoch": float(np.median(clocks[layout].seconds[1:epochs])),
                "val_loss": losses[layout][epochs - 1],
                "val_loss_last": losses[layout][-1],
            }
            for layout in LAYOUTS
        }
    return out


def measure(backend: str, size_name: str) -> dict[str, Any]:
    """What this process measures on its Keras backend."""
    sizes = QUICK if size_name == "quick" else FULL
    if backend == "torch":
        import torch

        # On a machine shared with other work, torch's pool of threads made these steps run
        # 2 to 150x slower than on one thread, differently from run to run.
        torch.set_num_threads(1)
    got: dict[str, Any] = {"steps": step_seconds(sizes)}
    if backend in FIT_BACKENDS:
        got["fits"] = fits(sizes, EPOCHS[size_name])
    return got


def measured(backend: str, size_name: str) -> dict[str, Any]:
    """:func:`measure` on ``backend``, in a process of its own."""
    return on_backend("benchmarks.packing_fit", backend, size_name)


def rows(sizes: Sizes) -> list[Row]:
    """The step, epoch and validation rows of every backend."""
    size_name = "quick" if sizes == QUICK else "full"
    epochs = EPOCHS[size_name]
    B, W = sizes.packing_batch_size, sizes.packing_window
    lo, hi = sizes.packing_lengths
    out = []
    for backend in STEP_BACKENDS:
        got = measured(backend, size_name)
        steps = got["steps"]
        out.append(
            Row(
                "packing",
                f"one fit step of LSTM({UNITS}) in StreamReset, {backend}: (B, W) flags "
                f"(pack) vs (B,) flags (reset), {B} streams x {W} steps",
                steps["pack"] * 1e3,
                "ms",
                peer="reset",
                peer_value=steps["reset"] * 1e3,
                ratio=speed_ratio(steps["pack"], steps["reset"]),
            )
        )
        out.append(
            Row(
                "packing",
                f"one fit step of LSTM({UNITS}) in StreamReset, {backend}: (B, W) flags set at "
                f"step 0 only vs (B,) flags (reset), {B} streams x {W} steps",
                steps["pack_at_start"] * 1e3,
                "ms",
                peer="reset",
                peer_value=steps["reset"] * 1e3,
                ratio=speed_ratio(steps["pack_at_start"], steps["reset"]),
            )
        )
        for distribution, layouts in got.get("fits", {}).items():
            pack, reset = layouts["pack"], layouts["reset"]
            what = (
                f"{backend}, {sizes.packing_series} series of {lo} to {hi} steps ({distribution})"
            )
            saved = reset["batches"] / pack["batches"]
            ratio = speed_ratio(pack["epoch"], reset["epoch"])
            out.append(
                Row(
                    "packing",
                    f"fit epoch of LSTM({UNITS}), pack ({pack['batches']:.0f} batches) vs "
                    f"reset ({reset['batches']:.0f}), {what}",
                    pack["epoch"],
                    "s",
                    peer="reset",
                    peer_value=reset["epoch"],
                    ratio=ratio,
                    target=f">= {saved:.2f}x (the batches saved)",
                    met=ratio >= saved,
                )
            )
            out.append(
                Row(
                    "packing",
                    f"validation loss after {epochs} epochs, pack ({epochs * pack['batches']:.0f}"
                    f" optimizer steps) vs reset ({epochs * reset['batches']:.0f}), {what}",
                    pack["val_loss"],
                    "mse",
                    peer="reset",
                    peer_value=reset["val_loss"],
                )
            )
            out.append(
                Row(
                    "packing",
                    f"validation loss after {reset['steps']:.0f} optimizer steps, pack "
                    f"({pack['steps'] / pack['batches']:.2f} epochs) vs reset ({epochs}), {what}",
                    pack["val_loss_last"],
                    "mse",
                    peer="reset",
                    peer_value=reset["val_loss_last"],
                    target=f"pack <= reset + {LOSS_TOLERANCE:.0%}",
                    met=pack["val_loss_last"] <= reset["val_loss_last"] * (1 + LOSS_TOLERANCE),
                )
            )
    return out


if __name__ == "__main__":
    backend, size_name = sys.argv[1:]
    assert os.environ.get("KERAS_BACKEND") == backend
    print(json.dumps(measure(backend, size_name)))
