"""The batches of a StreamBatcher as a ``keras.utils.PyDataset`` that keeps their order."""

from __future__ import annotations

import queue
import warnings
from typing import Any

import keras

from seqbatch import _checks, _weights
from seqbatch._reset_input import check_reset_input
from seqbatch.batch import reset_flags
from seqbatch.batcher import Batch, StreamBatcher
from seqbatch.keras.callbacks import StatefulTraining
from seqbatch.keras.checks import check_call, check_process_split, check_validation_split
from seqbatch.keras.run import KerasCall, running_call
from seqbatch.keras.states import carry_states, stateful_rnns


def _element(
    batch: Batch, reset_input: bool, sample_weight: bool, step_weight: float
) -> tuple[Any, ...]:
    """The ``fit()`` element of one batch: ``(inputs,)``, ``(inputs, y)`` or ``(inputs, y, w)``."""
    # float32 flags, as the tf.data adapter yields them: the default dtype of a Keras input.
    inputs = (batch.x, reset_flags(batch)) if reset_input else batch.x
    if batch.y is None:
        return (inputs,)
    if sample_weight:
        w = batch.sample_weight
        return (inputs, batch.y, _weights.spread(w, batch.y.shape[w.ndim :], step_weight))
    return (inputs, batch.y)


class StreamSequence(keras.utils.PyDataset):
    """The batches of a :class:`~seqbatch.StreamBatcher` as a ``keras.utils.PyDataset``.

    Item ``k`` is batch ``k`` of the batcher's current epoch, as numpy arrays, structured
    like the elements of the tf.data adapter (:func:`seqbatch.tf.to_dataset`):
    ``(x, y, sample_weight)``, or ``((x, reset), y, sample_weight)`` with
    ``reset_input=True``, ``reset`` being the ``(B,)`` flags as float32 1.0 or 0.0, or for
    packed batches (``series_boundary="pack"``) the ``(B, W)`` flags of ``step_reset`` (for
    a model that takes either, see :class:`StreamReset`); ``(inputs, y)`` with
    ``sample_weight=False``; ``(inputs,)`` without targets. Items are pure: reading one
    changes nothing, so Keras may probe them and read them from several workers at once.

    ``fit()`` must be called with ``shuffle=False``. Keras 3 shuffles the order of a
    finite ``PyDataset``'s batches when ``fit()`` gets ``shuffle=True``, its default, and
    gives a dataset no way to opt out; batch ``k + 1`` would no longer continue batch ``k``.
    The sequence checks the setting of the Keras data adapter that starts each epoch and
    raises ``ValueError`` before the first step rather than train on misaligned streams.

    Epochs: build the batcher with ``shuffle=True`` to change the layout every epoch. Epoch
    ``e`` of ``fit()``, counted as Keras counts it (from ``initial_epoch``), trains on epoch
    ``e`` of the batcher (:meth:`~seqbatch.StreamBatcher.set_epoch`), so that
    ``fit(initial_epoch=e)`` resumes with the batches of an uninterrupted run; validation
    during that epoch reads epoch ``e`` of its own batcher. After ``fit()`` the batcher is at
    the epoch after the last one trained. ``evaluate()`` and ``predict()`` called on their
    own read the batcher's current epoch and leave it. The same holds on every Keras backend,
    with any ``workers``: batches that Keras's workers read ahead for a pass that stopped
    early (the one-batch probe of JAX and torch) are dropped, not served to the next pass.

    Before the first step of every ``fit()``, ``evaluate()`` or ``predict()`` it reads, the
    sequence checks the call (``seqbatch.keras.checks``): it refuses a
    ``steps_per_epoch`` or ``validation_steps`` other than ``len(self)``, a model whose
    stateful RNNs were built for another batch size (per replica under ``tf.distribute``),
    a ``keras.distribution`` that would deal its batches to several processes by index,
    targets that a built-in loss would broadcast against the model's output, a
    ``validation_split`` (validate on a batcher of its own, ``validation_data=``), and a
    stateful RNN that runs backwards (``Bidirectional``, ``go_backwards=True``); it makes
    the model carry its states on JAX and torch (:func:`carry_states`); and it warns when a
    stateful model is fitted for several epochs, or with validation, without
    :class:`StatefulTraining`.

    Args:
        batches: the batcher whose batches to serve. Its batch size must be the model's.
        reset_input: also pass the reset flags (float32) as a second input: ``(B,)``, or
            ``(B, W)`` for packed batches.
        sample_weight: pass the weights, as the tf.data adapter does: 0 on padding and,
            on data, the epoch's weighted slots over its real ones, so that the loss Keras
            reports is the mean over real steps (repeated over every target axis but the
            last). Without them a padded step counts in the loss like data.
        workers: threads (or processes) that read batches ahead, as for
            ``keras.utils.PyDataset``; the order stays exact.
        use_multiprocessing: read with processes instead of threads.
        max_queue_size: batches read ahead at most.

    Raises:
        TypeError: ``batches`` is not a ``StreamBatcher``, a flag is not a bool, or
            ``workers`` or ``max_queue_size`` is not an integer.
        ValueError: ``workers`` or ``max_queue_size`` is below 1; packed batches whose
            streams hold several series, with ``reset_input=False``; in ``fit()``,
            ``evaluate()`` or ``predict()``, before the first step, for the refusals above.

    Warns:
        UserWarning: with ``reset_input=False``, when some stream starts a new series after
            the first batch: without the flags, that stream's state would carry one series'
            end into the next series' start. In ``fit()``, once, when
            :class:`StatefulTraining` is missing where it matters.

    Examples:
        Two streams of one series, windows of 3 steps:

        >>> import numpy as np, keras, seqbatch
        >>> data = np.arange(13.0)[:, None]  # 13 steps of 1 feature
        >>> batches = seqbatch.StreamBatcher(data, batch_size=2, sequence_length=3)
        >>> seq = seqbatch.keras.StreamSequence(batches)
        >>> len(seq)
        2
        >>> x, y, w = seq[1]
        >>> x.shape, y.shape, w.shape
        ((2, 3, 1), (2, 3, 1), (2, 3))
        >>> x[..., 0].tolist(), y[..., 0].tolist()
        ([[3.0, 4.0, 5.0], [9.0, 10.0, 11.0]], [[4.0, 5.0, 6.0], [10.0, 11.0, 12.0]])

        Train a stateful model on it, in order:

        >>> model = keras.Sequential([
        ...     keras.Input(batch_shape=(2, 3, 1)),
        ...     keras.layers.SimpleRNN(4, stateful=True, return_sequences=True),
        ...     keras.layers.Dense(1),
        ... ])
        >>> model.compile(optimizer="sgd", loss="mse")
        >>> history = model.fit(seq, shuffle=False, verbose=0,
        ...                     callbacks=[seqbatch.keras.StatefulTraining()])

        ``fit()``'s default ``shuffle=True`` stops before the first step:

        >>> model.fit(seq, verbose=0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: fit() was called with shuffle=True (its default) on a StreamSequence...
    """

    def __init__(
        self,
        batches: StreamBatcher,
        *,
        reset_input: bool = False,
        sample_weight: bool = True,
        workers: int = 1,
        use_multiprocessing: bool = False,
        max_queue_size: int = 10,
    ) -> None:
        if not isinstance(batches, StreamBatcher):
            raise TypeError(
                f"`batches` must be a seqbatch.StreamBatcher. Received: batches of type "
                f"{type(batches).__name__}"
            )
        super().__init__(
            workers=_checks.positive_int("workers", workers),
            use_multiprocessing=_checks.boolean("use_multiprocessing", use_multiprocessing),
            max_queue_size=_checks.positive_int("max_queue_size", max_queue_size),
        )
        self.batches = batches
        self.reset_input = _checks.boolean("reset_input", reset_input)
        self.sample_weight = _checks.boolean("sample_weight", sample_weight)
        self._weight_of: tuple[Any, float] = (None, 1.0)
        # The fit() epoch whose batches the running pass serves, None outside a fit() epoch.
        self._epoch: int | None = None
        # The batch that item 0 is: 0, except in the one epoch that BackupAndRestore resumes.
        self._first_batch = 0
        check_reset_input(batches, self.reset_input, stacklevel=2)

    def __len__(self) -> int:
        return len(self.batches) - self._first_batch

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        k = self._first_batch + index
        batch = self.batches[k]
        weight = self._real_step_weight()
        if self.batches.varying:
            plan = self.batches.plan
            weight = _weights.batch_step_weight(
                plan, self.batches.return_sequences, k % len(plan), self.batches.burn_in
            )
        return _element(batch, self.reset_input, self.sample_weight, weight)

    @property
    def __array__(self) -> Any:
        # Keras's fit(validation_split=...) asks whether x has `__array__` before any hook of
        # a dataset runs, and refuses what lacks it without naming a fix: the one place where
        # seqbatch's refusal can come first. Everywhere else, this sequence has none.
        call = running_call()
        if call is not None and call.method == "fit":
            steps = self._width() + self.batches.burn_in
            check_validation_split(call, (self.batches.batch_size, steps))
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '__array__'")

    def _width(self) -> int:
        """The steps of a window: the first batch's, for the checks, when they vary."""
        if self.batches.varying:
            return self.batches.plan.length(0)
        return self.batches.fixed_length("a StreamSequence")

    def _start_pass_at(self, first_batch: int) -> None:
        """Serve the rest of an epoch from ``first_batch`` on, until the pass ends.

        For ``seqbatch.keras.BackupAndRestore``, which tells Keras that this pass is shorter.
        """
        self._first_batch = first_batch

    def _real_step_weight(self) -> float:
        """The weight of a real step in this epoch (it depends on the layout): once per epoch."""
        plan = self.batches.plan
        if self._weight_of[0] is not plan:
            self._weight_of = (plan, _weights.real_step_weight(self.batches))
        return self._weight_of[1]

    def on_epoch_begin(self) -> None:
        """Called by Keras before each pass: check the call, and lay out the right epoch."""
        call = running_call(self)
        self._epoch = None
        if call is None or call.adapter is None:
            return
        try:
            self._check(call)
            carry_states(call.model)
        except Exception:
            # Let the adapter close its pass (and stop its workers) before failing.
            call.adapter.on_epoch_end()
            raise
        if call.epoch is None:
            return
        self._epoch = call.epoch
        if (self.batches.shuffle or self.batches.varying) and self.batches.epoch != call.epoch:
            self.batches.set_epoch(call.epoch)
            # Keras started the workers before this hook: they would read the old layout.
            _restart_workers(call.adapter.enqueuer)

    def on_epoch_end(self) -> None:
        """Called by Keras after each pass: drop what it prefetched, set the next epoch up."""
        call = running_call(self)
        if call is not None and call.adapter is not None:
            # Keras keeps what its workers read ahead for the next pass, which starts at
            # batch 0 again: after a probe or an early stop, every batch would be one late.
            _discard_prefetched(call.adapter.enqueuer)
        if self._epoch is not None:
            # Before the workers of the next pass start, so that they read its layout.
            self.batches.set_epoch(self._epoch + 1)
        self._epoch = None
        self._first_batch = 0

    def _check(self, call: KerasCall) -> None:
        """Refuse what would misalign the streams; warn where the states are left unguarded."""
        if call.adapter.shuffle:
            raise ValueError(
                "fit() was called with shuffle=True (its default) on a StreamSequence: Keras "
                "would feed its batches in a random order, so that row i of a batch no longer "
                "continues row i of the batch before, and the stateful model would train on "
                "misaligned streams. Call fit(..., shuffle=False). To change the layout every "
                "epoch, build the StreamBatcher with shuffle=True instead."
            )
        check_process_split()
        b = self.batches
        W = self._width()
        if b.varying:
            _check_varying(call, b, len(b))
        y_shape = None
        W += b.burn_in  # the burn-in columns in front of each window
        if b.target_shape is not None:
            steps = (W,) if b.return_sequences else ()
            y_shape = (b.batch_size, *steps, *b.target_shape)
        inputs = [(b.batch_size, W, *b.feature_shape)]
        if self.reset_input:
            per_step = b.packed or b.burn_in > 0
            inputs.append((b.batch_size, W) if per_step else (b.batch_size,))
        check_call(call, input_shapes=inputs, y_shape=y_shape, steps=len(self.batches))
        fit = call.fit
        if not call.training or not call.first_epoch or fit is None:
            return
        epochs = fit.arguments.get("epochs", 1) - fit.arguments.get("initial_epoch", 0)
        validated = fit.arguments.get("validation_data") is not None
        if (
            (epochs > 1 or validated)
            and stateful_rnns(call.model)
            and not any(isinstance(c, StatefulTraining) for c in call.callbacks)
        ):
            warnings.warn(
                f"A stateful model is fitted for {epochs} epochs"
                f"{' with validation data' if validated else ''} without "
                "seqbatch.keras.StatefulTraining: each epoch would start from the states that "
                "the last one left, and validation would run through the training states and "
                "leave its own behind. Pass callbacks=[seqbatch.keras.StatefulTraining()].",
                UserWarning,
                stacklevel=2,
            )


def _check_varying(call: KerasCall, batches: StreamBatcher, served: int) -> None:
    """Refuse what Keras cannot run on window lengths that vary, naming the fix.

    A model input with a fixed time axis cannot take them; and Keras reads the number of
    batches once per ``fit()``, so that one call may only span epochs of as many batches.
    """
    inputs = getattr(call.model, "inputs", None)
    if isinstance(inputs, list) and inputs and len(inputs[0].shape) > 1:
        steps = inputs[0].shape[1]
        if steps is not None:
            raise ValueError(
                "`sequence_length` must be an int for a model whose input has a fixed time "
                "axis: the window lengths vary. Build the model with keras.Input(batch_shape="
                f"({batches.batch_size}, None, ...)). Received: a model input of shape "
                f"{tuple(inputs[0].shape)}"
            )
    fit = call.fit
    if fit is None or not call.training or not call.first_epoch:
        return
    first = fit.arguments.get("initial_epoch", 0)
    counts = {e: batches.view.n_batches(e) for e in range(first, fit.arguments.get("epochs", 1))}
    if set(counts.values()) - {served}:
        raise ValueError(
            "`epochs` of one fit() must have as many batches each: Keras reads the number "
            "of batches once per call, and the window lengths vary, so that the epochs of "
            "this batcher differ. Call fit() once per epoch: for e in range(epochs): "
            "model.fit(sequence, epochs=e + 1, initial_epoch=e, shuffle=False). Received: "
            f"batches per epoch {counts}, of which Keras counts {served}"
        )


def _restart_workers(enqueuer: Any) -> None:
    if enqueuer is not None and enqueuer.is_running():
        enqueuer.stop()
        _discard_prefetched(enqueuer)
        enqueuer.start()


def _discard_prefetched(enqueuer: Any) -> None:
    if enqueuer is None:
        return
    while True:
        try:
            enqueuer.ready_queue.get_nowait()
        except queue.Empty:
            return
