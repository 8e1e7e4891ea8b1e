"""The demo: why a stateful RNN needs aligned streams, in numbers.

Character-level language modelling on the source of Python's own standard library, which
every Python installation carries (nothing is downloaded). The text becomes one long series
of character ids; :class:`~seqbatch.StreamBatcher` cuts it into ``batch_size`` streams and
windows of ``sequence_length`` characters, so that a stateful LSTM reads each stream from
start to end, one window per batch, and carries its state from window to window.

Two copies of one model (same initial weights) train on the same batches:

* aligned: the batches as seqbatch makes them, row ``i`` of batch ``k + 1`` continuing row
  ``i`` of batch ``k``;
* shuffled rows: the same batches with their rows permuted, a different permutation per
  batch, so that the state a row starts from belongs to some other stream: what a wrong
  reshape or ``fit()``'s default shuffle does to a hand-made stateful pipeline.

Both are validated the same, correct way: held-out modules, batched by seqbatch with the
model's batch size, from zero states (:class:`~seqbatch.keras.StatefulTraining`). Run it with
``python -m seqbatch demo``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from seqbatch._quiet_start import tensorflow_start_quiet
from seqbatch.batcher import StreamBatcher

with tensorflow_start_quiet():
    import keras

    from seqbatch.keras import StatefulTraining, StreamSequence

    # keras.utils.set_random_seed imports TensorFlow wherever it is installed, on every Keras
    # backend: it loads here instead, where its start-up log is silenced.
    if importlib.util.find_spec("tensorflow") is not None:
        importlib.import_module("tensorflow")

#: Characters with their own id: newline and printable ASCII. Id 0 stands for any other.
ALPHABET = "\n" + "".join(chr(c) for c in range(32, 127))
VOCABULARY_SIZE = len(ALPHABET) + 1
_IDS = {c: i + 1 for i, c in enumerate(ALPHABET)}


@dataclass(frozen=True)
class DemoSize:
    """How much text one size of the demo reads, and the settings it trains with by default.

    Attributes:
        train_chars: characters of training text.
        validation_chars: characters of validation text.
        epochs: epochs of training.
        batch_size: parallel streams.
        sequence_length: characters per window.
        units: LSTM units.
    """

    train_chars: int
    validation_chars: int
    epochs: int
    batch_size: int
    sequence_length: int
    units: int


#: The sizes of ``python -m seqbatch demo --size``. ``tiny`` is small enough for a test yet
#: still shows the effect: on 2 shared CPU cores (TensorFlow, load average 2) it trains and
#: validates both models in 8 s (12 s from the command to its last line; the default size:
#: 21 s and 30 s), and aligned streams beat shuffled rows by about 0.1 nats per character
#: (0.12 and 0.10 for seeds 0 and 1 with TensorFlow, 0.10 with torch). Its short windows
#: leave more of the context to the state carried from window to window, where the
#: alignment shows.
SIZES: dict[str, DemoSize] = {
    "tiny": DemoSize(80_000, 20_000, 1, batch_size=32, sequence_length=4, units=64),
    "default": DemoSize(480_000, 40_000, 1, batch_size=64, sequence_length=8, units=128),
    "large": DemoSize(2_000_000, 100_000, 2, batch_size=64, sequence_length=8, units=128),
}


@dataclass(frozen=True)
class DemoResult:
    """What the demo measured.

    Attributes:
        aligned: validation loss (nats per character) of the model trained on aligned streams.
        shuffled: the same for the model trained on the same batches with shuffled rows.
        seconds: wall time of the training and validation of both models.
    """

    aligned: float
    shuffled: float
    seconds: float


def encode(text: str) -> np.ndarray:
    """Character ids of ``text``: 1 to 96 for newline and printable ASCII, 0 for the rest.

    Examples:
        >>> encode("ab\\n\\t").tolist()
        [67, 68, 1, 0]
    """
    return np.fromiter((_IDS.get(c, 0) for c in text), dtype=np.int32, count=len(text))


def stdlib_corpus(
    train_chars: int, validation_chars: int, directory: str | Path | None = None
) -> tuple[str, str, list[str]]:
    """Training and validation text from the standard library's public top-level modules.

    The modules (``*.py`` files not starting with ``_``) are taken in alphabetical order;
    every fifth one is held out for validation, so that no file is in both texts. Files are
    joined with a blank line, and each text stops once it holds enough characters.

    Args:
        train_chars: characters of training text.
        validation_chars: characters of validation text.
        directory: where the modules are; the directory of ``os`` by default.

    Returns:
        ``(training text, validation text, names of the files read)``.

    Raises:
        ValueError: the modules hold fewer characters than asked for.

    Examples:
        >>> train, validation, files = stdlib_corpus(1_000, 200)
        >>> len(train), len(validation), files[0]
        (1000, 200, 'abc.py')
    """
    root = Path(os.__file__).parent if directory is None else Path(directory)
    modules = sorted(p for p in root.glob("*.py") if not p.name.startswith("_"))
    wanted = [train_chars, validation_chars]
    parts: list[list[str]] = [[], []]
    have = [0, 0]
    used = []
    for i, path in enumerate(modules):
        which = 1 if i % 5 == 4 else 0
        if have[which] >= wanted[which]:
            if have[1 - which] >= wanted[1 - which]:
                break
            continue
        text = path.read_text(encoding="utf-8", errors="replace") + "\n\n"
        parts[which].append(text)
        have[which] += len(text)
        used.append(path.name)
    if have[0] < wanted[0] or have[1] < wanted[1]:
        raise ValueError(
            f"The modules in {root} hold {have[0]} training and {have[1]} validation "
            f"characters. Received: train_chars={train_chars}, "
            f"validation_chars={validation_chars}"
        )
    train, validation = ("".join(p)[:n] for p, n in zip(parts, wanted, strict=True))
    return train, validation, used


class RowShuffledSequence(StreamSequence):
    """A :class:`~seqbatch.keras.StreamSequence` whose rows are permuted in every batch.

    Batch ``k``'s rows follow a permutation drawn from ``(seed, k)``: each row still holds a
    real window and its own targets, but the state it starts from was left by another stream.

    Examples:
        >>> batches = StreamBatcher(np.arange(25), batch_size=4, sequence_length=3)
        >>> x, y, w = RowShuffledSequence(batches, seed=0)[0]
        >>> sorted(x[:, 0].tolist()), bool((y == x + 1).all())
        ([0, 6, 12, 18], True)
    """

    def __init__(self, batches: StreamBatcher, *, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(batches, **kwargs)
        self.seed = seed

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        x, *rest = super().__getitem__(index)
        order = np.random.default_rng([self.seed, index]).permutation(len(x))
        return (x[order], *(a[order] for a in rest))


def build_model(batch_size: int, sequence_length: int, units: int, seed: int) -> keras.Model:
    """The demo's model: embedding, stateful LSTM, logits over the characters.

    The same ``seed`` gives the same initial weights.

    Examples:
        >>> build_model(4, 10, 8, seed=0).output_shape
        (4, 10, 97)
    """
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(batch_shape=(batch_size, sequence_length), dtype="int32"),
            keras.layers.Embedding(VOCABULARY_SIZE, 32),
            keras.layers.LSTM(
                units,
                stateful=True,
                return_sequences=True,
                # With torch (Keras 3.15.1), a stateful LSTM's default kernel fails in backward
                # ("modified by an inplace operation"); the generic one does not.
                use_cudnn=False if keras.backend.backend() == "torch" else "auto",
            ),
            keras.layers.Dense(VOCABULARY_SIZE),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.005, clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


@dataclass(frozen=True)
class DemoData:
    """The demo's text, batched.

    Attributes:
        train: batches of the training text.
        validation: batches of the validation text, with the same batch size and windows.
        files: the modules read.
        size: the size's settings; its ``epochs`` and ``units`` are the training defaults.
    """

    train: StreamBatcher
    validation: StreamBatcher
    files: list[str]
    size: DemoSize


def prepare(
    size: str = "default", *, batch_size: int | None = None, sequence_length: int | None = None
) -> DemoData:
    """Read the text of ``size`` and batch it; touch no model.

    Args:
        size: a key of :data:`SIZES`.
        batch_size: parallel streams; None takes the size's.
        sequence_length: characters per window; None takes the size's.

    Returns:
        The batched text and the size's settings.

    Raises:
        ValueError: an unknown ``size``, or a batch size and window that the text cannot
            fill.

    Examples:
        >>> data = prepare("tiny")
        >>> len(data.train), data.train.batch_size, data.validation.sequence_length
        (624, 32, 4)
        >>> prepare("tiny", batch_size=4, sequence_length=100).train.plan.accounting.used
        79600
    """
    if size not in SIZES:
        raise ValueError(f"`size` must be one of {', '.join(SIZES)}. Received: size={size!r}")
    chosen = SIZES[size]
    batch_size = chosen.batch_size if batch_size is None else batch_size
    sequence_length = chosen.sequence_length if sequence_length is None else sequence_length
    train_text, validation_text, files = stdlib_corpus(chosen.train_chars, chosen.validation_chars)
    batches = [
        StreamBatcher(encode(text), "next", batch_size=batch_size, sequence_length=sequence_length)
        for text in (train_text, validation_text)
    ]
    return DemoData(batches[0], batches[1], files, chosen)


def run(
    size: str = "default",
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    sequence_length: int | None = None,
    units: int | None = None,
    seed: int = 0,
    verbose: int | str = "auto",
    out: TextIO | None = None,
) -> DemoResult:
    """Train the aligned and the shuffled-rows model and print their validation losses.

    Args:
        size: ``"tiny"`` (8 s of training on 2 shared CPU cores, and still a clear gap),
            ``"default"`` (21 s there) or ``"large"``: how much text, and the defaults of
            the settings below (see :data:`SIZES`).
        epochs: epochs of training; None takes the size's.
        batch_size: parallel streams; None takes the size's.
        sequence_length: characters per window (the truncated-BPTT length); None takes the
            size's. Short windows leave most of the context to the state carried from
            window to window: where the alignment of the streams shows most.
        units: LSTM units; None takes the size's.
        seed: initial weights and row permutations.
        verbose: ``"auto"`` shows Keras's progress bar when ``out`` and ``sys.stdout`` are
            terminals, and one line per epoch otherwise (a log, CI); ``2``: one line per
            epoch, printed to ``out``; ``1``: Keras's progress bar, on ``sys.stdout``;
            ``0``: the report alone.
        out: where to print the report; ``sys.stdout`` by default.

    Returns:
        The two validation losses and the wall time.

    Raises:
        ValueError: see :func:`prepare`, or a ``verbose`` that is none of the above.
    """
    data = prepare(size, batch_size=batch_size, sequence_length=sequence_length)
    return train_and_compare(data, epochs=epochs, units=units, seed=seed, verbose=verbose, out=out)


class _EpochLines(keras.callbacks.Callback):
    """Prints one line per epoch, its losses and time: no progress bar, no carriage return."""

    def __init__(self, out: TextIO) -> None:
        super().__init__()
        self.out = out
        self.start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        values = ", ".join(f"{name} {float(value):.4f}" for name, value in (logs or {}).items())
        seconds = time.perf_counter() - self.start
        print(
            f"  epoch {epoch + 1}/{self.params['epochs']}: {values} ({seconds:.1f} s)",
            file=self.out,
            flush=True,
        )


def train_and_compare(
    data: DemoData,
    *,
    epochs: int | None = None,
    units: int | None = None,
    seed: int = 0,
    verbose: int | str = "auto",
    out: TextIO | None = None,
) -> DemoResult:
    """The training half of :func:`run`, on prepared data; see :func:`run` for the arguments."""
    if verbose not in ("auto", 0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(f"`verbose` must be 'auto', 0, 1 or 2. Received: verbose={verbose!r}")
    start = time.perf_counter()
    out = sys.stdout if out is None else out
    if verbose == "auto":
        verbose = 1 if out.isatty() and sys.stdout.isatty() else 2
    epochs = data.size.epochs if epochs is None else epochs
    units = data.size.units if units is None else units
    train, validation = data.train, data.validation
    print(
        f"Text: {train.plan.accounting.total:,} training and "
        f"{validation.plan.accounting.total:,} validation characters from {len(data.files)} "
        f"modules of {Path(os.__file__).parent} (every fifth held out), "
        f"{VOCABULARY_SIZE} character ids.",
        file=out,
    )
    print("Training batches:\n  " + train.describe().replace("\n", "\n  "), file=out)
    print(
        f"Model: embedding, stateful LSTM of {units} units, logits; {epochs} epoch{'' if epochs == 1 else 's'}, "
        f"seed {seed}, Keras backend {keras.backend.backend()}.",
        file=out,
    )
    runs = [
        ("aligned streams", "row i of batch k+1 continues row i of batch k", StreamSequence),
        (
            "shuffled rows",
            "the same batches, rows permuted in each: states carried into the wrong stream",
            RowShuffledSequence,
        ),
    ]
    losses = []
    for n, (name, what, sequence) in enumerate(runs, 1):
        print(f"\n[{n}/2] {name}: {what}", file=out, flush=True)
        model = build_model(train.batch_size, train.fixed_length("the demo"), units, seed)
        callbacks: list[keras.callbacks.Callback] = [StatefulTraining()]
        if verbose == 2:
            callbacks.append(_EpochLines(out))
        history = model.fit(
            sequence(train),
            validation_data=StreamSequence(validation),
            epochs=epochs,
            shuffle=False,
            verbose=1 if verbose == 1 else 0,
            callbacks=callbacks,
        )
        losses.append(float(history.history["val_loss"][-1]))
    aligned, shuffled = losses
    seconds = time.perf_counter() - start
    print(
        "\nValidation loss (nats per character, held-out modules, stateful from zero states):\n"
        f"  aligned streams  {aligned:.3f}\n"
        f"  shuffled rows    {shuffled:.3f}  ({shuffled - aligned:+.3f}, perplexity "
        f"x{np.exp(shuffled - aligned):.2f})\n"
        f"Same model, same initial weights, same batches; only the order of the rows "
        f"differs. Trained and validated in {seconds:.0f} s.",
        file=out,
    )
    return DemoResult(aligned, shuffled, seconds)
