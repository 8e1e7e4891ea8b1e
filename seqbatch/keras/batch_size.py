"""A trained stateful model for another batch size, sharing its weights."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from seqbatch import _checks
from seqbatch.keras.states import _sync_jax_state, carry_states, stateful_rnns


def with_batch_size(
    model: keras.Model, batch_size: int, streams: Sequence[int] | None = None
) -> keras.Model:
    """The same model for another batch size, sharing its weights: e.g. one stream at a time.

    A stateful model's batch size is fixed by its ``keras.Input(batch_shape=...)``. This
    builds a second model whose inputs take ``batch_size`` rows, and whose layers share the
    weight variables of ``model``: layers without a stateful RNN are the same layer objects,
    and every stateful RNN is a new layer around the same cell (the cell holds the
    weights), with its own state variables for the new batch size. Training ``model``
    later changes the new model too; the weights are never copied.

    The new states start at zero, or, given ``streams``, as copies of the current states of
    those rows of ``model``: row ``j`` of the new model goes on from stream ``streams[j]``,
    e.g. where training left it (``streams=[31]``: continue the last stream of 32).

    Args:
        model: a Functional or Sequential model built with a batch shape; nested models,
            ``Bidirectional`` and :class:`StreamReset` are handled.
        batch_size: the batch size of the new model.
        streams: ``batch_size`` row indices into ``model``'s batch (repeats allowed), whose
            states the new rows start from; None starts from zeros.

    Returns:
        A model with the same architecture and weights, taking ``batch_size`` rows.

    Raises:
        TypeError: ``batch_size`` or a stream is not an integer.
        ValueError: ``batch_size < 1``; ``model`` is not a Functional or Sequential model
            with known inputs; a layer around a stateful RNN holds weights outside the
            RNN's cell, which could not be shared; ``streams`` does not hold ``batch_size``
            rows of ``model``'s batch.

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

        Continue stream 1 from the state the first windows left it in:

        >>> seqbatch.keras.reset_states(model)
        >>> _ = model.predict(x[:, :3], verbose=0)
        >>> go_on = seqbatch.keras.with_batch_size(model, 1, streams=[1])
        >>> np.allclose(go_on.predict(x[1:, 3:], verbose=0), both[1][1:], atol=1e-6)
        True
    """
    batch_size = _checks.positive_int("batch_size", batch_size)
    rows = None if streams is None else _rows(streams, batch_size, model)
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
    for carried in (model, new_model):
        carry_states(carried)
    if rows is not None:
        _copy_states(model, new_model, rows)
    return new_model


def _rows(streams: Sequence[int], batch_size: int, model: keras.Model) -> np.ndarray:
    """``streams`` as row indices, checked against both batch sizes."""
    given = list(streams) if isinstance(streams, Sequence) else None
    if given is None or not all(
        isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in given
    ):
        raise TypeError(
            "`streams` must be a sequence of integers, the rows of the model's batch whose "
            f"states the new rows start from. Received: streams={streams!r}"
        )
    rnns = stateful_rnns(model)
    old = keras.tree.flatten(rnns[0].states)[0].shape[0] if rnns else None
    if len(given) != batch_size or (old is not None and not all(0 <= i < old for i in given)):
        raise ValueError(
            f"`streams` must hold batch_size={batch_size} rows of the model's batch of {old} "
            f"streams, one per row of the new model. Received: streams={given}"
        )
    return np.asarray(given, dtype=np.int64)


def _copy_states(model: keras.Model, new_model: keras.Model, rows: np.ndarray) -> None:
    """Start each stateful RNN of ``new_model`` from ``rows`` of its twin in ``model``."""
    _sync_jax_state(model)
    twin = {id(rnn.cell): rnn for rnn in stateful_rnns(model)}
    for rnn in stateful_rnns(new_model):
        old_states = keras.tree.flatten(twin[id(rnn.cell)].states)
        for new, old in zip(keras.tree.flatten(rnn.states), old_states, strict=True):
            new.assign(keras.ops.convert_to_numpy(old)[rows])


def _flatten(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    return list(layer._flatten_layers(include_self=True, recursive=True))


def _without_build_state(config: Any) -> Any:
    """``config`` without the ``build_config`` entries that serialized sublayers carry."""
    if isinstance(config, dict):
        return {k: _without_build_state(v) for k, v in config.items() if k != "build_config"}
    if isinstance(config, list):
        return [_without_build_state(v) for v in config]
    return config
