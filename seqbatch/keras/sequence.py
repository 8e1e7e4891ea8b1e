"""The batches of a StreamBatcher as a ``keras.utils.PyDataset`` that keeps their order."""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import keras
import numpy as np

from seqbatch import _checks, _weights
from seqbatch.batcher import Batch, StreamBatcher


def _element(
    batch: Batch, reset_input: bool, sample_weight: bool, step_weight: float
) -> tuple[Any, ...]:
    """The ``fit()`` element of one batch: ``(inputs,)``, ``(inputs, y)`` or ``(inputs, y, w)``."""
    # float32 flags, as the tf.data adapter yields them: the default dtype of a Keras input.
    inputs = (batch.x, batch.reset.astype(np.float32)) if reset_input else batch.x
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
    ``reset_input=True``, ``reset`` being the ``(B,)`` flags as float32 1.0 or 0.0 (for a
    model that takes them, see :class:`StreamReset`); ``(inputs, y)`` with
    ``sample_weight=False``; ``(inputs,)`` without targets. Items are pure: reading one
    changes nothing, so Keras may probe them and read them from several workers at once.

    ``fit()`` must be called with ``shuffle=False``. Keras 3 shuffles the order of a
    finite ``PyDataset``'s batches when ``fit()`` gets ``shuffle=True``, its default, and
    gives a dataset no way to opt out; batch ``k + 1`` would no longer continue batch ``k``.
    The sequence checks the setting of the Keras data adapter that starts each epoch and
    raises ``ValueError`` before the first step rather than train on misaligned streams.
    To change the layout every epoch, build the batcher with ``shuffle=True``: each epoch
    that ``fit()`` or ``evaluate()`` runs through this sequence then advances the batcher to
    its next epoch (:meth:`~seqbatch.StreamBatcher.set_epoch`). Leave ``steps_per_epoch``
    unset so that a Keras epoch is one epoch of the batcher.

    Args:
        batches: the batcher whose batches to serve. Its batch size must be the model's.
        reset_input: also pass the ``(B,)`` reset flags (float32) as a second input.
        sample_weight: pass the weights, as the tf.data adapter does: 0 on padding and,
            on data, the epoch's weighted slots over its real ones, so that the loss Keras
            reports is the mean over real steps (repeated over every target axis but the
            last). Without them a padded step counts in the loss like data.
        **pydataset_kwargs: ``workers``, ``use_multiprocessing`` and ``max_queue_size``, as
            for ``keras.utils.PyDataset``; Keras's ordered enqueuer keeps the batch order.

    Raises:
        TypeError: ``batches`` is not a ``StreamBatcher``, or a flag is not a bool.

    Warns:
        UserWarning: with ``reset_input=False``, when some stream starts a new series after
            the first batch: without the flags, that stream's state would carry one series'
            end into the next series' start.

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
        **pydataset_kwargs: Any,
    ) -> None:
        if not isinstance(batches, StreamBatcher):
            raise TypeError(
                f"`batches` must be a seqbatch.StreamBatcher. Received: batches of type "
                f"{type(batches).__name__}"
            )
        super().__init__(**pydataset_kwargs)
        self.batches = batches
        self.reset_input = _checks.boolean("reset_input", reset_input)
        self.sample_weight = _checks.boolean("sample_weight", sample_weight)
        self._epoch_begun = False
        self._weight_of: tuple[Any, float] = (None, 1.0)
        if not reset_input and any(len(held) > 1 for held in batches.plan.assignment()):
            warnings.warn(
                "Some streams of these batches start a new series after the first batch, but "
                "the model will not see the reset flags (reset_input=False): each such "
                "stream would carry the state at one series' end into the next series. Pass "
                "reset_input=True and wrap the RNN in seqbatch.keras.StreamReset, or join "
                "the series on purpose with series_boundary='concat'.",
                UserWarning,
                stacklevel=2,
            )

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        return _element(
            self.batches[index], self.reset_input, self.sample_weight, self._real_step_weight()
        )

    def _real_step_weight(self) -> float:
        """The weight of a real step in this epoch (it depends on the layout): once per epoch."""
        plan = self.batches.plan
        if self._weight_of[0] is not plan:
            self._weight_of = (plan, _weights.real_step_weight(self.batches))
        return self._weight_of[1]

    def on_epoch_begin(self) -> None:
        """Called by Keras before each epoch: refuse a shuffled batch order."""
        adapter = self._calling_adapter()
        if adapter is not None and getattr(adapter, "shuffle", False):
            # Let the adapter close its epoch (and stop its worker threads) before failing.
            adapter.on_epoch_end()
            raise ValueError(
                "fit() was called with shuffle=True (its default) on a StreamSequence: Keras "
                "would feed its batches in a random order, so that row i of a batch no longer "
                "continues row i of the batch before, and the stateful model would train on "
                "misaligned streams. Call fit(..., shuffle=False). To change the layout every "
                "epoch, build the StreamBatcher with shuffle=True instead."
            )
        self._epoch_begun = True

    def on_epoch_end(self) -> None:
        """Called by Keras after each epoch: advance a shuffled batcher to its next epoch."""
        # Keras also calls this hook when it resets its iterator before a fit() or an
        # evaluate(), with no epoch run: only an epoch that began moves the layout on.
        if self._epoch_begun and self.batches.shuffle:
            self.batches.set_epoch(self.batches.epoch + 1)
        self._epoch_begun = False

    def _calling_adapter(self) -> Any:
        """The Keras data adapter whose epoch hook is running, or None if Keras is not the caller.

        Keras 3 hands a ``PyDataset`` neither ``fit()``'s ``shuffle`` nor a way to refuse it:
        ``PyDatasetAdapter(x, shuffle=shuffle)`` permutes ``range(num_batches)`` itself, and
        then calls this dataset's ``on_epoch_begin`` from its own. That adapter is the only
        place where the setting can be read before the first step.
        """
        frame = inspect.currentframe()
        for _ in range(4):
            if frame is None:
                return None
            frame = frame.f_back
            caller = frame.f_locals.get("self") if frame is not None else None
            if caller is not self and getattr(caller, "py_dataset", None) is self:
                return caller
        return None
