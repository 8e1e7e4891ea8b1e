"""Keras 3 for stateful RNNs: a ``PyDataset`` of seqbatch batches and the helpers Keras 3 dropped.

Keras 3 trains a stateful RNN (``stateful=True``) correctly only when every batch continues
the one before, row by row, and nothing else touches the states. This module closes the gaps:

* :class:`StreamSequence` feeds :class:`~seqbatch.StreamBatcher` batches to ``fit()`` and
  refuses ``fit()``'s default batch shuffle, which would misalign every stream.
* :func:`reset_states` zeroes every stateful RNN state of a model (Keras 3 removed
  ``Model.reset_states()``).
* :class:`StreamReset` zeroes, inside the graph, the state of exactly the streams whose
  batch flags a reset: the many-series case, where streams start new series at different times.
* :class:`StatefulTraining` resets the states at every epoch and keeps validation away from
  the training states.
* :func:`with_batch_size` gives a trained model another batch size (one stream at a time,
  say) that shares its weights.

Only ``keras`` and ``keras.ops`` are used, never TensorFlow directly, so that the JAX and
torch backends stay open.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import keras
import numpy as np
from keras import ops

from seqbatch import _checks
from seqbatch.batcher import Batch, StreamBatcher

__all__ = [
    "StatefulTraining",
    "StreamReset",
    "StreamSequence",
    "reset_states",
    "stateful_rnns",
    "with_batch_size",
]


def _element(batch: Batch, reset_input: bool, sample_weight: bool) -> tuple[Any, ...]:
    """The ``fit()`` element of one batch: ``(inputs,)``, ``(inputs, y)`` or ``(inputs, y, w)``."""
    # float32 flags, as the tf.data adapter yields them: the default dtype of a Keras input.
    inputs = (batch.x, batch.reset.astype(np.float32)) if reset_input else batch.x
    if batch.y is None:
        return (inputs,)
    if sample_weight:
        return (inputs, batch.y, batch.sample_weight)
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
        sample_weight: pass the weights (0 on padding, 1 on data); without them a padded
            step counts in the loss like data.
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
        return _element(self.batches[index], self.reset_input, self.sample_weight)

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


def stateful_rnns(model: keras.layers.Layer) -> list[keras.layers.RNN]:
    """Every built stateful RNN layer in ``model``, nested models and wrappers included.

    The forward and backward layers of a ``Bidirectional`` are listed, not the wrapper.

    Args:
        model: a model or a layer.

    Returns:
        The ``keras.layers.RNN`` instances (``LSTM``, ``GRU``, ...) with ``stateful=True``
        whose states exist.

    Examples:
        >>> import keras, seqbatch
        >>> model = keras.Sequential([
        ...     keras.Input(batch_shape=(2, 3, 1)),
        ...     keras.layers.LSTM(4, stateful=True, return_sequences=True, name="lstm"),
        ...     keras.layers.Bidirectional(keras.layers.GRU(4, stateful=True, name="gru")),
        ... ])
        >>> sorted(layer.name for layer in seqbatch.keras.stateful_rnns(model))
        ['backward_gru', 'forward_gru', 'lstm']
    """
    # Keras has no public recursive listing of sublayers; `_flatten_layers` is the one that
    # Keras itself uses, and it reaches inside nested models and wrappers alike.
    return [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, keras.layers.RNN) and layer.stateful and layer.states is not None
    ]


def _sync_jax_state(model: keras.layers.Layer) -> None:
    # Under JAX, fit() and evaluate() keep the variables' values in the trainer's state: put
    # them back into the variables before reading or writing any.
    if keras.backend.backend() == "jax" and hasattr(model, "jax_state_sync"):
        model.jax_state_sync()


def _state_variables(model: keras.layers.Layer) -> list[Any]:
    return [v for layer in stateful_rnns(model) for v in keras.tree.flatten(layer.states)]


def reset_states(model: keras.layers.Layer) -> None:
    """Zero the state of every stateful RNN in ``model``: Keras 2's ``model.reset_states()``.

    Reaches RNNs inside nested models, ``Bidirectional`` and other wrappers such as
    :class:`StreamReset`. Under the JAX backend the trainer's state is synced first, so the
    function also works inside a callback.

    Args:
        model: a model or a layer.

    Examples:
        >>> import numpy as np, keras, seqbatch
        >>> inner = keras.Sequential([
        ...     keras.Input(batch_shape=(2, 3, 1)),
        ...     keras.layers.LSTM(4, stateful=True, return_sequences=True),
        ... ])
        >>> model = keras.Sequential([
        ...     keras.Input(batch_shape=(2, 3, 1)), inner,
        ...     keras.layers.Bidirectional(keras.layers.GRU(4, stateful=True)),
        ... ])
        >>> _ = model.predict(np.ones((2, 3, 1)), verbose=0)
        >>> seqbatch.keras.reset_states(model)
        >>> [float(np.abs(s.numpy()).max())
        ...  for layer in seqbatch.keras.stateful_rnns(model) for s in layer.states]
        [0.0, 0.0, 0.0, 0.0]
    """
    _sync_jax_state(model)
    for layer in stateful_rnns(model):
        layer.reset_state()


@keras.saving.register_keras_serializable(package="seqbatch")
class StreamReset(keras.layers.Wrapper):
    """A stateful RNN that zeroes the state of exactly the streams flagged in ``reset``.

    Called on ``[x, reset]``, with ``x`` of shape ``(B, W, *features)`` and ``reset`` of
    shape ``(B,)`` (bool or 0/1), it runs the wrapped layer from the initial state
    ``s * (1 - reset)`` for each of its states ``s``: the carried state for the streams that
    continue, zeros for the streams that start a new series. The multiplication happens in
    the graph, so it holds with ``steps_per_execution > 1`` and keeps the fused (cuDNN) LSTM
    path. Feed it with ``StreamSequence(batches, reset_input=True)`` or the tf.data adapter's
    ``reset_input=True``.

    Args:
        layer: a stateful RNN layer (``LSTM(..., stateful=True)``, ``GRU``, ``SimpleRNN``,
            ``keras.layers.RNN``) or a ``Bidirectional`` of one.
        **kwargs: ``keras.layers.Layer`` arguments (``name``, ...).

    Raises:
        ValueError: ``layer`` is not a stateful RNN.

    Examples:
        Stream 0 starts over in the second batch, stream 1 goes on:

        >>> import numpy as np, keras, seqbatch
        >>> x_in = keras.Input(batch_shape=(2, 3, 1))
        >>> reset_in = keras.Input(batch_shape=(2,))
        >>> rnn = keras.layers.SimpleRNN(2, stateful=True, return_sequences=True)
        >>> out = seqbatch.keras.StreamReset(rnn)([x_in, reset_in])
        >>> model = keras.Model([x_in, reset_in], out)
        >>> x = np.ones((2, 3, 1))
        >>> first = model.predict([x, np.array([True, True])], verbose=0)
        >>> second = model.predict([x, np.array([True, False])], verbose=0)
        >>> bool(np.allclose(second[0], first[0])), bool(np.allclose(second[1], first[1]))
        (True, False)
    """

    def __init__(self, layer: keras.layers.Layer, **kwargs: Any) -> None:
        if not getattr(layer, "stateful", False) or not hasattr(layer, "states"):
            raise ValueError(
                "`layer` must be a stateful RNN layer (stateful=True), or a Bidirectional "
                f"of one. Received: layer={layer!r}"
            )
        super().__init__(layer, **kwargs)

    def build(self, input_shape: Any) -> None:
        x_shape, _ = input_shape
        if not self.layer.built:
            self.layer.build(x_shape)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        x, reset = inputs
        states = list(self.layer.states)
        keep = 1 - ops.cast(ops.reshape(reset, (-1,)), states[0].dtype)

        def masked(state: Any) -> Any:
            return state * ops.reshape(keep, (-1,) + (1,) * (len(state.shape) - 1))

        return self.layer(
            x, initial_state=keras.tree.map_structure(masked, states), training=training
        )

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape[0])


class StatefulTraining(keras.callbacks.Callback):
    """The callback a stateful ``fit()`` needs: fresh states per epoch, validation kept apart.

    * At the start of every epoch it zeroes every stateful RNN state (:func:`reset_states`):
      an epoch starts every stream over.
    * Before validation (``fit(validation_data=...)``, or ``evaluate(callbacks=[...])``) it
      saves the training states and zeroes them, so that validation starts from zero states
      like training; after validation it puts the training states back. Without it, the
      validation batches run through the same state variables and leave them holding the
      end of the validation data.

    Validation data must be batched like training data: a :class:`StreamSequence` (or the
    tf.data adapter) of a batcher with the model's batch size, and ``shuffle`` plays no part
    in ``evaluate()``. Under JAX the trainer's state is synced before states are touched.

    Examples:
        >>> import numpy as np, keras, seqbatch
        >>> def sequence(data):
        ...     batcher = seqbatch.StreamBatcher(data, batch_size=2, sequence_length=3)
        ...     return seqbatch.keras.StreamSequence(batcher)
        >>> model = keras.Sequential([
        ...     keras.Input(batch_shape=(2, 3, 1)),
        ...     keras.layers.GRU(4, stateful=True, return_sequences=True),
        ...     keras.layers.Dense(1),
        ... ])
        >>> model.compile(optimizer="adam", loss="mse")
        >>> history = model.fit(
        ...     sequence(np.sin(np.arange(50.0))[:, None]),
        ...     validation_data=sequence(np.cos(np.arange(20.0))[:, None]),
        ...     shuffle=False, epochs=2, verbose=0, callbacks=[seqbatch.keras.StatefulTraining()],
        ... )
        >>> len(history.history["val_loss"])
        2
    """

    def __init__(self) -> None:
        super().__init__()
        self._training_states: list[tuple[Any, np.ndarray]] | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        reset_states(self.model)

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        _sync_jax_state(self.model)
        self._training_states = [(v, v.numpy()) for v in _state_variables(self.model)]
        reset_states(self.model)

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._training_states is None:
            return
        _sync_jax_state(self.model)
        for variable, value in self._training_states:
            variable.assign(value)
        self._training_states = None


def with_batch_size(model: keras.Model, batch_size: int) -> keras.Model:
    """The same model for another batch size, sharing its weights: e.g. one stream at a time.

    A stateful model's batch size is fixed by its ``keras.Input(batch_shape=...)``. This
    builds a second model whose inputs take ``batch_size`` rows, and whose layers share the
    weight variables of ``model``: layers without a stateful RNN are the same layer objects,
    and every stateful RNN is a new layer around the same cell (the cell holds the
    weights), with its own state variables for the new batch size, zero at first. Training
    ``model`` later changes the new model too; nothing is copied.

    Args:
        model: a Functional or Sequential model built with a batch shape; nested models,
            ``Bidirectional`` and :class:`StreamReset` are handled.
        batch_size: the batch size of the new model.

    Returns:
        A model with the same architecture and weights, taking ``batch_size`` rows.

    Raises:
        TypeError: ``batch_size`` is not an integer.
        ValueError: ``batch_size < 1``; ``model`` is not a Functional or Sequential model
            with known inputs; or a layer around a stateful RNN holds weights outside the
            RNN's cell, which could not be shared.

    Examples:
        Run the second stream of a 2-stream model on its own:

        >>> import numpy as np, keras, seqbatch
        >>> model = keras.Sequential([
        ...     keras.Input(batch_shape=(2, 3, 1)),
        ...     keras.layers.LSTM(4, stateful=True, return_sequences=True),
        ...     keras.layers.Dense(1),
        ... ])
        >>> one = seqbatch.keras.with_batch_size(model, 1)
        >>> one.input_shape
        (1, 3, 1)
        >>> x = np.arange(12.0).reshape(2, 6, 1) / 12
        >>> both = [model.predict(x[:, :3], verbose=0), model.predict(x[:, 3:], verbose=0)]
        >>> alone = [one.predict(x[1:, :3], verbose=0), one.predict(x[1:, 3:], verbose=0)]
        >>> all(np.allclose(b[1:], a, atol=1e-6) for b, a in zip(both, alone))
        True
        >>> one.weights[0] is model.weights[0]
        True
    """
    batch_size = _checks.positive_int("batch_size", batch_size)
    if isinstance(model, keras.Sequential):
        model_inputs = model.inputs[0] if model.inputs else None
    else:
        model_inputs = getattr(model, "input", None) if isinstance(model, keras.Model) else None
    if model_inputs is None:
        raise ValueError(
            "`model` must be a Functional or Sequential keras.Model built from "
            "keras.Input(batch_shape=...). Received: model of type "
            f"{type(model).__name__} without known inputs"
        )
    inputs = keras.tree.map_structure(
        lambda t: keras.Input(
            batch_shape=(batch_size, *t.shape[1:]), dtype=t.dtype, name=getattr(t, "name", None)
        ),
        model_inputs,
    )

    def copy(layer: keras.layers.Layer) -> keras.layers.Layer:
        if not stateful_rnns(layer):
            return layer
        if isinstance(layer, keras.Model):
            return with_batch_size(layer, batch_size)
        # Rebuilt from a config without build state, the new layer and the RNNs inside it
        # build for the new batch size; each RNN first gets the trained cell.
        new = layer.__class__.from_config(_without_build_state(layer.get_config()))
        for old_rnn, new_rnn in zip(_flatten(layer), _flatten(new), strict=True):
            if isinstance(old_rnn, keras.layers.RNN):
                new_rnn._tracker.untrack(new_rnn.cell)
                new_rnn.cell = old_rnn.cell
        return new

    new_model = keras.models.clone_model(model, input_tensors=inputs, clone_function=copy)
    own = {id(v) for v in model.weights}
    unshared = [v.path for v in new_model.weights if id(v) not in own]
    if unshared:
        raise ValueError(
            "Every weight of `model` outside an RNN cell must sit in a layer without a "
            "stateful RNN, so that it can be shared. Received: a model whose copy for "
            f"batch_size={batch_size} would have new weights {unshared}"
        )
    return new_model


def _flatten(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    return list(layer._flatten_layers(include_self=True, recursive=True))


def _without_build_state(config: Any) -> Any:
    """``config`` without the ``build_config`` entries that serialized sublayers carry."""
    if isinstance(config, dict):
        return {k: _without_build_state(v) for k, v in config.items() if k != "build_config"}
    if isinstance(config, list):
        return [_without_build_state(v) for v in config]
    return config
