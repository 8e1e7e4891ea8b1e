"""A trained stateful model for another batch size, sharing its weights."""

from __future__ import annotations

from typing import Any

import keras

from seqbatch import _checks
from seqbatch.keras.states import carry_states, stateful_rnns


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
    for carried in (model, new_model):
        carry_states(carried)
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
